// Two users listen over pusher-js to the same collection while a `realtime_broadcast` hook
// hides `email` from whoever does not own the record (per-user redaction). Run by
// tests/hooks.rs with VELO_URL, APP_KEY, ALICE, BOB and ADMIN in the environment.

import assert from "node:assert/strict";
import Pusher from "pusher-js";
import { within, eventually, clientOptionsFor } from "./common.mjs";

const { VELO_URL, APP_KEY, ALICE, BOB, ADMIN } = process.env;
const url = new URL(VELO_URL);

async function call(path, body, token) {
  const response = await fetch(`${VELO_URL}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  assert.ok(response.ok, `${path}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

/** A user's pusher-js client on their own subscription to `contacts`; resolves with what it receives. */
async function listen(token) {
  const client = new Pusher(APP_KEY, {
    ...clientOptionsFor(url),
    channelAuthorization: {
      endpoint: `${VELO_URL}/api/realtime/auth`,
      transport: "ajax",
      headers: { Authorization: `Bearer ${token}` },
    },
  });
  const { pusher_channel } = await call("/api/realtime/subscribe", { collection: "contacts" }, token);
  const channel = client.subscribe(pusher_channel);
  await within(5000, `${pusher_channel} subscribed`, (done) => channel.bind("pusher:subscription_succeeded", done));
  const received = [];
  channel.bind("created", (data) => received.push(data.record));
  return { client, received };
}

const alice = await listen(ALICE);
const bob = await listen(BOB);
try {
  await call("/api/collections/contacts/records", { id: "c1", owner: "alice", name: "Alice", email: "alice@example.com" }, ADMIN);
  await call("/api/collections/contacts/records", { id: "c2", owner: "bob", name: "Bob", email: "bob@example.com" }, ADMIN);
  await eventually(5000, "both records at both users", () => alice.received.length === 2 && bob.received.length === 2);
  const byId = (who) => Object.fromEntries(who.received.map((record) => [record.id, record]));
  const a = byId(alice);
  const b = byId(bob);
  assert.equal(a.c1.email, "alice@example.com", "alice sees her own email");
  assert.equal(a.c2.email, undefined, "alice does not see bob's");
  assert.equal(a.c2.name, "Bob");
  assert.equal(b.c2.email, "bob@example.com", "bob sees his own email");
  assert.equal(b.c1.email, undefined, "bob does not see alice's");
  assert.equal(b.c1.name, "Alice");
  console.log("per-user redaction by realtime_broadcast, seen by two pusher-js users: ok");
} finally {
  alice.client.disconnect();
  bob.client.disconnect();
}
