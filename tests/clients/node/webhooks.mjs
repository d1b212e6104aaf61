// Webhooks as the `pusher` Node library reads them: every request the server sends here must
// pass `webhook({ headers, rawBody }).isValid()`. pusher-js makes the channel activity.
// Run by tests/real_clients.rs: this script listens first and prints `listening {port}`; the
// test then starts the server with VELO_WEBHOOK_URLS pointing here and writes the server's URL
// on stdin. Exits non-zero on failure.

import assert from "node:assert/strict";
import http from "node:http";
import readline from "node:readline";
import PusherServer from "pusher";
import Pusher from "pusher-js";
import { within, eventually, clientOptionsFor } from "./common.mjs";

const { APP_ID, APP_KEY, APP_SECRET } = process.env;
// However it goes, the script ends.
setTimeout(() => {
  console.error("webhooks.mjs: timed out");
  process.exit(1);
}, 60_000).unref();

const requests = [];
const receiver = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    requests.push({ headers: request.headers, rawBody: Buffer.concat(chunks).toString("utf8") });
    response.writeHead(200).end();
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
console.log(`listening ${receiver.address().port}`);

const lines = readline.createInterface({ input: process.stdin });
const VELO_URL = (await lines[Symbol.asyncIterator]().next()).value.trim();
lines.close();
const url = new URL(VELO_URL);
const server = new PusherServer({
  appId: APP_ID,
  key: APP_KEY,
  secret: APP_SECRET,
  host: url.hostname,
  port: url.port,
  useTLS: false,
});
const clientOptions = clientOptionsFor(url);

/** A pusher-js client whose presence authorizations name `userId`. */
function clientAs(userId) {
  return new Pusher(APP_KEY, {
    ...clientOptions,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, server.authorizeChannel(socketId, channelName, { user_id: userId, user_info: { name: userId } })),
    },
  });
}

async function joined(client, name) {
  const channel = client.subscribe(name);
  await within(5000, `${name} subscription_succeeded`, (done) => channel.bind("pusher:subscription_succeeded", done));
  return channel;
}

/** Every event received so far, checked with the library: `name channel [user_id]`. */
function received() {
  const events = [];
  for (const request of requests) {
    const webhook = server.webhook(request);
    assert.equal(webhook.isValid(), true, `isValid() for ${JSON.stringify(request)}`);
    assert.ok(webhook.getTime() instanceof Date);
    for (const event of webhook.getEvents()) {
      events.push([event.name, event.channel, event.user_id].filter(Boolean).join(" "));
    }
  }
  return events;
}

try {
  const room = `presence-room-${Date.now()}`;
  const news = `cache-news-${Date.now()}`;
  const alice = clientAs("alice");
  const aliceRoom = await joined(alice, room);
  const aliceSocket = alice.connection.socket_id;
  const bob = clientAs("bob");
  await joined(bob, room);
  const bobTab = clientAs("bob");
  await joined(bobTab, room);
  const typing = within(5000, "alice's client event at bob", (done) => bob.channel(room).bind("client-typing", done));
  assert.equal(aliceRoom.trigger("client-typing", { text: "hi" }), true);
  assert.deepEqual(await typing, { text: "hi" });
  bobTab.disconnect();
  await eventually(5000, "the tab to leave", async () => {
    const info = await (await server.get({ path: `/channels/${room}`, params: { info: "subscription_count" } })).json();
    return info.subscription_count === 2;
  });
  bob.disconnect();
  await eventually(5000, "bob's member_removed", () => received().includes(`member_removed ${room} bob`));
  const cache = alice.subscribe(news);
  await within(5000, "pusher:cache_miss", (done) => cache.bind("pusher:cache_miss", done));
  alice.disconnect();

  const expected = [
    `channel_occupied ${room}`,
    `member_added ${room} alice`,
    `member_added ${room} bob`,
    `client_event ${room} alice`,
    `member_removed ${room} bob`,
    `channel_occupied ${news}`,
    `cache_miss ${news}`,
  ];
  // Alice's socket ends: she leaves both channels, in either order; on the room, she leaves
  // before it is vacant.
  const last = [`member_removed ${room} alice`, `channel_vacated ${room}`, `channel_vacated ${news}`];
  await eventually(10_000, "every webhook", () => received().length === expected.length + last.length);
  const events = received();
  assert.deepEqual(events.slice(0, expected.length), expected);
  const tail = events.slice(expected.length);
  assert.deepEqual([...tail].sort(), [...last].sort());
  assert.ok(tail.indexOf(last[0]) < tail.indexOf(last[1]), tail.join(", "));
  const clientEvent = requests
    .flatMap((request) => server.webhook(request).getEvents())
    .find((event) => event.name === "client_event");
  assert.equal(clientEvent.event, "client-typing");
  assert.deepEqual(JSON.parse(clientEvent.data), { text: "hi" });
  assert.equal(clientEvent.socket_id, aliceSocket);
  console.log(
    `the pusher library: ${requests.length} webhook requests, each isValid(), occupied/vacated per channel, member events per user, client_event, cache_miss: ok`,
  );

  // The check can fail: a body changed in transit is not valid.
  const tampered = { ...requests[0], rawBody: requests[0].rawBody.replace("channel", "chanel") };
  assert.equal(server.webhook(tampered).isValid(), false);
  process.exit(0);
} catch (error) {
  console.error(error);
  process.exit(1);
}
