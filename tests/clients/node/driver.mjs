// pusher-js connected to server B (the "external Pusher service") receives the record events
// of server A, whose driver is `pusher`. Run by tests/real_clients.rs with A_URL, B_URL,
// APP_KEY (B's app key) and ALICE (a JWT for A) in the environment.

import assert from "node:assert/strict";
import Pusher from "pusher-js";
import { within, clientOptionsFor } from "./common.mjs";

const { A_URL, B_URL, APP_KEY, ALICE } = process.env;
const b = new URL(B_URL);

async function call(path, body, token) {
  const response = await fetch(`${A_URL}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  assert.ok(response.ok, `${path}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

const client = new Pusher(APP_KEY, {
  ...clientOptionsFor(b),
  channelAuthorization: {
    endpoint: `${A_URL}/api/realtime/auth`,
    transport: "ajax",
    headers: { Authorization: `Bearer ${ALICE}` },
  },
});

try {
  const { channel_name } = await call("/api/realtime/subscribe", { collection: "posts", filter: "status = 'active'" });
  const channel = client.subscribe(channel_name);
  await within(5000, "public subscription on B", (done) => channel.bind("pusher:subscription_succeeded", done));
  const created = [];
  channel.bind("created", (data) => created.push(data.record.title));
  await call("/api/collections/posts/records", { status: "draft", title: "WIP" });
  const arrived = within(5000, "A's created event via B", (done) =>
    channel.bind("created", (data) => data.record.title === "Hello" && done()),
  );
  await call("/api/collections/posts/records", { status: "active", title: "Hello" });
  await arrived;
  assert.deepEqual(created, ["Hello"], "the draft was filtered out by A");
  console.log("pusher-js on B: A's public record events, filtered: ok");

  const tasks = await call("/api/realtime/subscribe", { collection: "tasks" }, ALICE);
  assert.equal(tasks.is_public, false);
  const privateChannel = client.subscribe(`private-${tasks.channel_name}`);
  await within(5000, "private subscription on B signed by A", (done) =>
    privateChannel.bind("pusher:subscription_succeeded", done),
  );
  const note = within(5000, "A's private event via B", (done) => privateChannel.bind("created", done));
  await call("/api/collections/tasks/records", { owner: "alice", text: "mine" }, ALICE);
  assert.equal((await note).record.text, "mine");
  console.log("pusher-js on B: a private channel authorized by A with B's app, events: ok");

  // An encrypted collection: B only ever has the sealed data; pusher-js opens it with the
  // shared_secret A's channel authorization answers.
  const vault = await call("/api/realtime/subscribe", { collection: "vault" }, ALICE);
  assert.match(vault.pusher_channel, /^private-encrypted-/);
  const sealedChannel = client.subscribe(vault.pusher_channel);
  await within(5000, "encrypted subscription on B signed by A", (done) =>
    sealedChannel.bind("pusher:subscription_succeeded", done),
  );
  const secret = within(5000, "A's sealed event via B, decrypted", (done) => sealedChannel.bind("created", done));
  await call("/api/collections/vault/records", { owner: "alice", pin: "4711" }, ALICE);
  assert.equal((await secret).record.pin, "4711");
  console.log("pusher-js on B: an encrypted collection's events, sealed by A, decrypted: ok");
  client.disconnect();
  process.exit(0);
} catch (error) {
  console.error(error);
  process.exit(1);
}
