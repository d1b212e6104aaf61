// Real clients against a running server: pusher-js 8 and Laravel Echo 2 listen, the `pusher`
// server library triggers. Run by tests/real_clients.rs, which starts the server and passes:
// VELO_URL, APP_ID, APP_KEY, APP_SECRET, ALICE and BOB (user JWTs). Exits non-zero on failure.

import assert from "node:assert/strict";
import Echo from "laravel-echo";
import PusherServer from "pusher";
import Pusher from "pusher-js";
import { within, eventually, clientOptionsFor } from "./common.mjs";

const { VELO_URL, APP_ID, APP_KEY, APP_SECRET, ALICE, BOB, ENCRYPTION_MASTER_KEY } = process.env;
const url = new URL(VELO_URL);
const clientOptions = clientOptionsFor(url);
const server = new PusherServer({
  appId: APP_ID,
  key: APP_KEY,
  secret: APP_SECRET,
  host: url.hostname,
  port: url.port,
  useTLS: false,
  encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY,
});

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

async function cacheChannel() {
  // A cache channel: the first subscriber hears of the miss, a later one gets the last event
  // as its first, as pusher-js binds them.
  const name = `cache-price-${Date.now()}`;
  const first = new Pusher(APP_KEY, clientOptions);
  const channel = first.subscribe(name);
  await within(5000, "pusher:cache_miss", (done) => channel.bind("pusher:cache_miss", done));
  const live = within(5000, "the live event", (done) => channel.bind("price", done));
  await server.trigger(name, "price", { amount: 42 });
  assert.deepEqual(await live, { amount: 42 });
  const second = new Pusher(APP_KEY, clientOptions);
  const late = second.subscribe(name);
  const missed = [];
  late.bind("pusher:cache_miss", () => missed.push(true));
  assert.deepEqual(await within(5000, "the replayed event", (done) => late.bind("price", done)), { amount: 42 });
  assert.deepEqual(missed, [], "a channel with an event is no miss");
  first.disconnect();
  second.disconnect();
  console.log("pusher-js 8: cache channel, pusher:cache_miss then the last event replayed: ok");
}

async function presence() {
  // Laravel Echo's presence API, the channel authorized by the `pusher` server library as a
  // Laravel backend would (authorizeChannel with presence data).
  // Echo's join() adds `presence-` to the name.
  const room = `room-${Date.now()}`;
  const channel = `presence-${room}`;
  const echoAs = (userId, name) =>
    new Echo({
      broadcaster: "pusher",
      key: APP_KEY,
      Pusher,
      ...clientOptions,
      authorizer: (channel) => ({
        authorize: (socketId, callback) =>
          callback(null, server.authorizeChannel(socketId, channel.name, { user_id: userId, user_info: { name } })),
      }),
    });
  const sockets = async () => {
    const response = await server.get({ path: `/channels/${channel}`, params: { info: "subscription_count,user_count" } });
    return response.json();
  };
  const alice = echoAs("alice", "Alice");
  const joining = [];
  const leaving = [];
  const aliceHere = await within(5000, "alice's here()", (done) =>
    alice.join(room).here(done).joining((user) => joining.push(user)).leaving((user) => leaving.push(user)),
  );
  assert.deepEqual(aliceHere, [{ name: "Alice" }]);
  const bob = echoAs("bob", "Bob");
  const bobHere = await within(5000, "bob's here()", (done) => bob.join(room).here(done));
  assert.equal(bobHere.length, 2);
  await eventually(5000, "alice hears bob joining", () => joining.length === 1);
  assert.deepEqual(joining, [{ name: "Bob" }]);

  // Bob's second tab is not a new member, and its leaving is not his.
  const bobTab = echoAs("bob", "Bob");
  assert.equal((await within(5000, "the tab's here()", (done) => bobTab.join(room).here(done))).length, 2);
  assert.deepEqual(await sockets(), { occupied: true, subscription_count: 3, user_count: 2 });
  bobTab.disconnect();
  await eventually(5000, "the tab's socket to go", async () => (await sockets()).subscription_count === 2);
  bob.disconnect();
  await eventually(5000, "alice hears bob leaving", () => leaving.length === 1);
  assert.deepEqual([joining, leaving], [[{ name: "Bob" }], [{ name: "Bob" }]], "one join, one leave, for three sockets");
  const users = await (await server.get({ path: `/channels/${channel}/users` })).json();
  assert.deepEqual(users, { users: [{ id: "alice" }] });
  alice.disconnect();
  console.log("laravel-echo 2: presence .join().here().joining().leaving(), members are users not sockets: ok");
}

async function signIn() {
  // pusher-js user authentication at our endpoint with alice's JWT; the `pusher` server library
  // sends to her and ends her connections.
  const client = new Pusher(APP_KEY, {
    ...clientOptions,
    userAuthentication: {
      endpoint: `${VELO_URL}/api/realtime/user-auth`,
      transport: "ajax",
      headers: { Authorization: `Bearer ${ALICE}` },
    },
  });
  const signedIn = within(5000, "pusher:signin_success", (done) => client.bind("pusher:signin_success", done));
  client.signin();
  await signedIn;
  // The server puts her socket on her own channel when the sign-in succeeds.
  const greeting = within(5000, "the greeting", (done) => client.user.bind("greeting", done));
  await server.sendToUser("alice", "greeting", { hello: "alice" });
  assert.deepEqual(await greeting, { hello: "alice" });
  const terminated = within(5000, "the 4009 error", (done) =>
    client.connection.bind("error", (error) => error?.data?.code === 4009 && done(error)),
  );
  await server.terminateUserConnections("alice");
  await terminated;
  await eventually(5000, "pusher-js to give up", () => ["disconnected", "failed"].includes(client.connection.state));
  client.disconnect();
  console.log("pusher-js 8: signin at /api/realtime/user-auth, sendToUser, terminateUserConnections (4009): ok");
}

function echoFor(token) {
  return new Echo({
    broadcaster: "pusher",
    key: APP_KEY,
    Pusher,
    ...clientOptions,
    authEndpoint: `${VELO_URL}/api/realtime/auth`,
    bearerToken: token,
    // Echo writes the bearer token into `auth.headers`, which its defaults share between
    // instances: a fresh object per instance keeps two users in one process apart.
    auth: { headers: {} },
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

async function write(method, path, token, body, socketId) {
  const response = await fetch(`${VELO_URL}${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(socketId ? { "X-Socket-ID": socketId } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${await response.clone().text()}`);
  return response.status === 204 ? null : (await response.json()).data;
}

/** Collects a channel's events; `next(name)` waits for the next one of that name. */
function recorder(channel, names) {
  const seen = [];
  const waiting = [];
  for (const name of names) {
    channel.listen(`.${name}`, (data) => {
      seen.push({ name, data });
      waiting.splice(0).forEach((wake) => wake());
    });
  }
  return {
    seen,
    async next(name, ms = 5000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const index = seen.findIndex((event) => event.name === name);
        if (index >= 0) return seen.splice(index, 1)[0].data;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${name}`);
        await new Promise((resolve) => {
          waiting.push(resolve);
          setTimeout(resolve, 100);
        });
      }
    },
  };
}

async function channelRules() {
  // App channels authorized by our own endpoint through the [[channels]] rules: no PHP backend.
  const alice = echoFor(ALICE);
  const bob = echoFor(BOB);
  const here = await within(5000, "alice's here() on team.red", (done) => alice.join("team.red").here(done));
  assert.deepEqual(here, [{ sub: "alice" }], "user_info from the rule's claims");
  const refused = await within(5000, "bob refused by the rule", (done) => bob.join("team.red").error(done));
  assert.equal(refused.status, 403, JSON.stringify(refused));
  const blue = await within(5000, "team.blue refused", (done) => alice.private("team.blue").error(done));
  assert.equal(blue.status, 403, JSON.stringify(blue));
  const undeclared = await within(5000, "an undeclared channel refused", (done) => alice.private("payroll").error(done));
  assert.equal(undeclared.status, 403, JSON.stringify(undeclared));
  alice.disconnect();
  bob.disconnect();
  console.log("laravel-echo 2: [[channels]] rules authorize presence and private app channels at /api/realtime/auth: ok");
}

async function encryptedChannel() {
  // The server library encrypts for private-encrypted-team.red; we relay the ciphertext and
  // our auth endpoint gives pusher-js the channel's shared_secret, so pusher-js decrypts.
  const alice = echoFor(ALICE);
  const channel = alice.encryptedPrivate("team.red");
  await within(5000, "the encrypted subscription", (done) => channel.subscribed(done));
  const secret = within(5000, "the decrypted event", (done) => channel.listen(".secret", done));
  await server.trigger("private-encrypted-team.red", "secret", { code: 1234 });
  assert.deepEqual(await secret, { code: 1234 });
  alice.disconnect();
  console.log("pusher-js 8: encrypted channel, shared_secret from /api/realtime/auth, decrypted: ok");
}

async function encryptedCollection() {
  // An encrypted collection: alice's subscription is delivered on its private-encrypted-
  // channel; pusher-js gets the channel's shared_secret from our auth endpoint and opens each
  // sealed record event with tweetnacl.
  const { channel_name, is_public, pusher_channel } = await subscribe("vault", ALICE);
  assert.equal(is_public, false);
  assert.equal(pusher_channel, `private-encrypted-${channel_name}`);
  const client = new Pusher(APP_KEY, {
    ...clientOptions,
    channelAuthorization: {
      endpoint: `${VELO_URL}/api/realtime/auth`,
      transport: "ajax",
      headers: { Authorization: `Bearer ${ALICE}` },
    },
  });
  const channel = client.subscribe(pusher_channel);
  await within(5000, "the encrypted subscription", (done) => channel.bind("pusher:subscription_succeeded", done));
  const created = within(5000, "the decrypted created event", (done) => channel.bind("created", done));
  const record = await write("POST", "/api/collections/vault/records", ALICE, { owner: "alice", pin: "4711" });
  assert.deepEqual(await created, { action: "created", record });
  client.disconnect();
  console.log("pusher-js 8: an encrypted collection's record event, sealed by the server, decrypted: ok");
}

async function records() {
  // A guest, filter `status = 'active'`, with Echo on the public channel.
  const { channel_name } = await subscribe("posts", null, "status = 'active'");
  const guest = new Echo({ broadcaster: "pusher", key: APP_KEY, Pusher, ...clientOptions });
  const channel = guest.channel(channel_name);
  await within(5000, "public subscription", (done) => channel.subscribed(done));
  const events = recorder(channel, ["created", "updated", "deleted"]);

  const post = await write("POST", "/api/collections/posts/records", null, { status: "active", title: "Hello World" });
  const created = await events.next("created");
  assert.deepEqual(created, { action: "created", record: post });
  assert.equal(created.record.status, "active");
  await write("POST", "/api/collections/posts/records", null, { status: "draft", title: "WIP" });
  const updated = await write("PATCH", `/api/collections/posts/records/${post.id}`, null, { title: "Hello again" });
  assert.deepEqual(await events.next("updated"), { action: "updated", record: updated });
  await write("DELETE", `/api/collections/posts/records/${post.id}`, null);
  assert.deepEqual(await events.next("deleted"), { action: "deleted", record: updated });
  assert.deepEqual(events.seen, [], "the draft was never sent");

  // toOthers: a write carrying Echo's socket id is not echoed to it.
  await write("POST", "/api/collections/posts/records", null, { status: "active", title: "mine" }, guest.socketId());
  const marker = await write("POST", "/api/collections/posts/records", null, { status: "active", title: "marker" });
  assert.deepEqual((await events.next("created")).record, marker, "only the marker arrives");
  guest.disconnect();
  console.log("laravel-echo 2: created/updated/deleted payloads, a draft filtered out, X-Socket-ID not echoed: ok");

  // Per-user rule `@request.auth.id = owner`: each user receives only their own records.
  const alicesName = (await subscribe("tasks", ALICE)).channel_name;
  const bobsName = (await subscribe("tasks", BOB)).channel_name;
  const alice = echoFor(ALICE);
  const bob = echoFor(BOB);
  const alicesChannel = alice.private(alicesName);
  const bobsChannel = bob.private(bobsName);
  // Bound at once: `.subscribed()` misses a subscription that succeeded before it was bound.
  await Promise.all([
    within(5000, "alice's subscription", (done) => alicesChannel.subscribed(done)),
    within(5000, "bob's subscription", (done) => bobsChannel.subscribed(done)),
  ]);
  const alices = recorder(alicesChannel, ["created"]);
  const bobs = recorder(bobsChannel, ["created"]);
  await write("POST", "/api/collections/tasks/records", ALICE, { owner: "alice", text: "a" });
  await write("POST", "/api/collections/tasks/records", BOB, { owner: "bob", text: "b" });
  assert.equal((await alices.next("created")).record.owner, "alice");
  assert.equal((await bobs.next("created")).record.owner, "bob");
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual([alices.seen, bobs.seen], [[], []], "nobody received another user's record");
  alice.disconnect();
  bob.disconnect();
  console.log("laravel-echo 2: a private per-user subscription receives only its user's records: ok");
}

try {
  await pusherJs();
  await cacheChannel();
  await presence();
  await signIn();
  await laravelEcho();
  await records();
  await channelRules();
  await encryptedChannel();
  await encryptedCollection();
  process.exit(0);
} catch (error) {
  console.error(error);
  process.exit(1);
}
