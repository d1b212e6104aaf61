// Real clients against a running server: pusher-js 8 and Laravel Echo 2 listen, the `pusher`
// server library triggers. Run by tests/real_clients.rs, which starts the server and passes:
// VELO_URL, APP_ID, APP_KEY, APP_SECRET, ALICE and BOB (user JWTs). Exits non-zero on failure.

import assert from "node:assert/strict";
import Echo from "laravel-echo";
import PusherServer from "pusher";
import Pusher from "pusher-js";

const { VELO_URL, APP_ID, APP_KEY, APP_SECRET, ALICE, BOB } = process.env;
const url = new URL(VELO_URL);
const clientOptions = {
  wsHost: url.hostname,
  wsPort: Number(url.port),
  forceTLS: false,
  enabledTransports: ["ws"],
  cluster: "mt1",
  disableStats: true,
};
const server = new PusherServer({
  appId: APP_ID,
  key: APP_KEY,
  secret: APP_SECRET,
  host: url.hostname,
  port: url.port,
  useTLS: false,
});

/** Resolves with the first value `register` passes to its callback, or rejects after `ms`. */
function within(ms, what, register) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

async function subscribe(collection, token, filter) {
  const response = await fetch(`${VELO_URL}/api/realtime/subscribe`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ collection, filter }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

async function pusherJs() {
  const { channel_name, is_public } = await subscribe("posts", null, "status = 'active'");
  assert.equal(is_public, true);
  const client = new Pusher(APP_KEY, clientOptions);
  const channel = client.subscribe(channel_name);
  await within(5000, "subscription_succeeded", (done) => channel.bind("pusher:subscription_succeeded", done));
  const socketId = client.connection.socket_id;
  assert.match(socketId, /^\d+\.\d+$/);

  const received = [];
  channel.bind("hello", (data) => received.push(data));
  // Excluded: the server must not send this one to our socket.
  await server.trigger(channel_name, "hello", { n: 1 }, { socket_id: socketId });
  const second = within(5000, "the second event", (done) => channel.bind("hello", (data) => data.n === 2 && done(data)));
  await server.trigger(channel_name, "hello", { n: 2 });
  await second;
  assert.deepEqual(received, [{ n: 2 }], "the excluded event was not delivered, the other was, parsed");

  const info = await server.get({ path: "/channels", params: { info: "subscription_count" } });
  const body = await info.json();
  assert.equal(body.channels[channel_name].subscription_count, 1);
  client.disconnect();
  console.log("pusher-js 8: subscribe, receive, exclusion by socket_id, channel info: ok");
}

function echoFor(token) {
  return new Echo({
    broadcaster: "pusher",
    key: APP_KEY,
    Pusher,
    ...clientOptions,
    authEndpoint: `${VELO_URL}/api/realtime/auth`,
    bearerToken: token,
  });
}

async function laravelEcho() {
  const { channel_name, is_public } = await subscribe("notes", ALICE);
  assert.equal(is_public, false);

  const alice = echoFor(ALICE);
  const channel = alice.private(channel_name);
  await within(5000, "Echo private subscription", (done) => channel.subscribed(done));
  const created = within(5000, "the created event", (done) => channel.listen(".created", done));
  await server.trigger(`private-${channel_name}`, "created", { action: "created", record: { id: "r1" } });
  assert.deepEqual(await created, { action: "created", record: { id: "r1" } });

  // toOthers: Echo's socket id, as Laravel forwards it, excludes this socket.
  const socketId = alice.socketId();
  const updates = [];
  channel.listen(".updated", (data) => updates.push(data));
  await server.trigger(`private-${channel_name}`, "updated", { n: 1 }, { socket_id: socketId });
  const deleted = within(5000, "the deleted event", (done) => channel.listen(".deleted", done));
  await server.trigger(`private-${channel_name}`, "deleted", { n: 2 });
  await deleted;
  assert.deepEqual(updates, [], "the excluded event was not delivered");
  console.log("laravel-echo 2: private channel authorized with a JWT at authEndpoint, events, toOthers: ok");

  const bob = echoFor(BOB);
  const refused = within(5000, "Echo .error() for another user", (done) => bob.private(channel_name).error(done));
  const error = await refused;
  assert.equal(error.status, 403, JSON.stringify(error));
  console.log("laravel-echo 2: another user's authorization is refused (403) and reaches .error(): ok");
  alice.disconnect();
  bob.disconnect();
}

try {
  await pusherJs();
  await laravelEcho();
  process.exit(0);
} catch (error) {
  console.error(error);
  process.exit(1);
}
