// Live lists kept by pusher-js 8 against a running server, while tests/live_convergence.rs
// writes: each subscriber takes a snapshot with a live subscription, joins its channel with
// its own pusher-js client, applies the numbered events (fetching missed ones, or taking a new
// snapshot when they are gone), and in the end must hold exactly what the list API answers.
//
// Environment: VELO_URL, APP_KEY, LIVE_SPEC (JSON: {"subscribers": [{"name", "token" (null:
// a guest), "collection", "filter" (or null), "drops" (its socket is cut on `drop`),
// "forbidden" (strings that must never reach it), "late" (it subscribes on `drop`, while
// the writes go on), "slowJoin" (its channel authorizations after the first take 400 ms
// more: its socket joins again well after the connection is back)}]}).
// Standard input, one command a line: `drop` (disconnect the subscribers that drop),
// `reconnect`, `done` (the writes are over: converge and report).
// Standard output: `ready`, `dropped`, `reconnected`, then one `result {json}` a subscriber.
// Exits non-zero when a subscriber fails; ends itself after 90 s, however it goes.

import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import Pusher from "pusher-js";
import { within, clientOptionsFor } from "./common.mjs";

const { VELO_URL, APP_KEY, LIVE_SPEC } = process.env;
const spec = JSON.parse(LIVE_SPEC);
const clientOptions = clientOptionsFor(new URL(VELO_URL));
const EVENTS = ["created", "updated", "deleted", "left", "ended"];

setTimeout(() => {
  console.log("timeout: live.mjs ran for 90 s");
  process.exit(3);
}, 90_000).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class LiveList {
  constructor({ name, token, collection, filter, drops, forbidden, late, slowJoin }) {
    Object.assign(this, { name, token, collection, filter, drops, late, forbidden: forbidden ?? [] });
    this.headers = token ? { authorization: `Bearer ${token}` } : {};
    this.rows = new Map();
    this.last = 0;
    this.pending = new Map(); // seq -> {event, data}, not applied yet
    this.applied = new Map(); // seq -> {event, data}, applied
    this.generation = 0;
    this.recovering = null;
    this.errors = [];
    this.stats = { applied: 0, socket: 0, fromRecovery: 0, recoveries: 0, restarts: 0, left: 0, gone: 0, ended: 0 };
    const endpoint = `${VELO_URL}/api/realtime/auth`;
    let authorizations = 0;
    const slowly = async ({ socketId, channelName }, callback) => {
      if (++authorizations > 1) await sleep(400);
      try {
        const reply = await this.call("POST", "/api/realtime/auth", { socket_id: socketId, channel_name: channelName });
        callback(reply.status === 200 ? null : new Error(JSON.stringify(reply)), reply.body);
      } catch (error) {
        callback(error, null);
      }
    };
    this.pusher = new Pusher(APP_KEY, {
      ...clientOptions,
      channelAuthorization: slowJoin
        ? { customHandler: slowly }
        : { endpoint, transport: "ajax", headers: this.headers },
    });
  }

  fail(message) {
    this.errors.push(message);
  }

  /** Nothing a subscriber may not see reaches it, in any answer or event. */
  inspect(what, payload) {
    const text = typeof payload === "string" ? payload : JSON.stringify(payload);
    for (const secret of this.forbidden) {
      if (text.includes(secret)) this.fail(`${what} carried ${secret}: ${text}`);
    }
  }

  async call(method, path, body) {
    const response = await fetch(`${VELO_URL}${path}`, {
      method,
      headers: { ...this.headers, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    this.inspect(`${method} ${path}`, text);
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  /** A live subscription with a snapshot, and its channel joined. */
  async start() {
    const generation = ++this.generation;
    const reply = await this.call("POST", "/api/realtime/subscribe", {
      collection: this.collection,
      ...(this.filter === null ? {} : { filter: this.filter }),
      snapshot: true,
      leave_events: true,
      per_page: 500,
    });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal(reply.body.seq, 0);
    this.rows = new Map(reply.body.records.map((record) => [record.id, record]));
    this.last = 0;
    this.pending.clear();
    this.applied.clear();
    this.channelName = reply.body.channel_name;
    const channel = this.pusher.subscribe(reply.body.pusher_channel);
    this.channel = channel;
    let joins = 0;
    // What the socket delivers in one join: strictly one after another.
    let socketLast = null;
    const joined = within(10_000, `${this.name} joining`, (done) =>
      channel.bind("pusher:subscription_succeeded", () => {
        if (generation !== this.generation) return;
        joins += 1;
        socketLast = null;
        done();
        // Joined again after a dropped connection: the events meanwhile were not sent.
        if (joins > 1) this.recover();
      }),
    );
    channel.bind("pusher:subscription_error", (error) => this.fail(`subscription_error ${JSON.stringify(error)}`));
    for (const event of EVENTS) {
      channel.bind(event, (data) => {
        if (generation !== this.generation) return;
        this.stats.socket += 1;
        if (joins === 1 && socketLast === null && data.seq !== 1) {
          this.fail(`the first event on the first socket is seq ${data.seq}, not 1`);
        }
        if (socketLast !== null && data.seq !== socketLast + 1) {
          this.fail(`the socket sent seq ${data.seq} after ${socketLast}`);
        }
        socketLast = data.seq;
        this.receive(event, data);
      });
    }
    await joined;
  }

  receive(event, data) {
    this.inspect(`event ${event}`, data);
    if (!Number.isInteger(data?.seq) || data.seq < 1) return this.fail(`${event} without a seq: ${JSON.stringify(data)}`);
    if (data.action !== event) this.fail(`event ${event} with action ${data.action}`);
    // Applied already (fetched, then sent on the socket, or the other way): the same event.
    const known = data.seq <= this.last ? this.applied.get(data.seq) : this.pending.get(data.seq);
    if (known && canonical(known) !== canonical({ event, data })) {
      this.fail(`seq ${data.seq} is two events: ${JSON.stringify(known)} and ${JSON.stringify({ event, data })}`);
    }
    if (data.seq <= this.last) return;
    this.pending.set(data.seq, { event, data });
    this.drain();
  }

  drain() {
    while (this.pending.has(this.last + 1)) {
      const { event, data } = this.pending.get(this.last + 1);
      this.pending.delete(this.last + 1);
      this.last += 1;
      this.applied.set(this.last, { event, data });
      this.stats.applied += 1;
      const id = data.record?.id;
      if (event === "created" || event === "updated") this.rows.set(id, data.record);
      if (event === "deleted") this.rows.delete(id);
      if (event === "left") {
        this.stats.left += 1;
        const keys = Object.keys(data.record).sort().join(",");
        if (keys !== "collection_id,id") this.fail(`left carries more than the id: ${JSON.stringify(data)}`);
        this.rows.delete(id);
      }
      if (event === "ended") {
        // The list rule changed: which records it may see is not worked out again; a new
        // snapshot is.
        this.stats.ended += 1;
        if (data.reason !== "rule_changed") this.fail(`ended: ${JSON.stringify(data)}`);
        this.restarting = this.restart()
          .catch((error) => this.fail(`restarting: ${error.stack}`))
          .finally(() => (this.restarting = null));
        return;
      }
    }
    if (this.pending.size > 0) this.recover();
  }

  /** Fetches the events after the last applied one; a new snapshot when they are gone. */
  recover() {
    if (this.recovering) {
      this.recoverAgain = true;
      return this.recovering;
    }
    this.recovering = (async () => {
      try {
        do {
          this.recoverAgain = false;
          this.stats.recoveries += 1;
          const generation = this.generation;
          const reply = await this.call(
            "GET",
            `/api/realtime/subscriptions/${this.channelName}/events?after=${this.last}`,
          );
          if (generation !== this.generation) continue;
          if (reply.status === 200) {
            for (const { event, data } of reply.body.events) {
              if (data.seq > this.last) this.stats.fromRecovery += 1;
              this.receive(event, data);
            }
          } else if (reply.status === 410 || reply.status === 404) {
            this.stats.gone += 1;
            await this.restart();
          } else {
            this.fail(`recovery answered ${reply.status} ${JSON.stringify(reply.body)}`);
            return;
          }
          // Events numbered after the answer may still be missing: ask again, not too often.
          if (this.pending.size > 0) {
            this.recoverAgain = true;
            await sleep(50);
          }
        } while (this.recoverAgain && this.errors.length === 0);
      } catch (error) {
        this.fail(`recovery: ${error.stack}`);
      } finally {
        this.recovering = null;
      }
    })();
    return this.recovering;
  }

  async restart() {
    this.stats.restarts += 1;
    this.pusher.unsubscribe(this.channel.name);
    const ended = await this.call("DELETE", `/api/realtime/subscriptions/${this.channelName}`);
    if (![204, 404].includes(ended.status)) this.fail(`unsubscribing answered ${ended.status}`);
    await this.start();
  }

  /** The list API's answer for the same user and filter. */
  async expected() {
    const params = new URLSearchParams({ per_page: "500" });
    if (this.filter !== null) params.set("filter", this.filter);
    const reply = await this.call("GET", `/api/collections/${this.collection}/records?${params}`);
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.ok(reply.body.meta.total <= 500, "the collection stays on one page");
    return reply.body.data;
  }

  difference(list) {
    const want = new Map(list.map((record) => [record.id, record]));
    const missing = [...want.keys()].filter((id) => !this.rows.has(id));
    const extra = [...this.rows.keys()].filter((id) => !want.has(id));
    const different = [...want.keys()].filter(
      (id) => this.rows.has(id) && canonical(this.rows.get(id)) !== canonical(want.get(id)),
    );
    if (missing.length + extra.length + different.length === 0) return null;
    return { missing, extra, different: different.map((id) => ({ want: want.get(id), have: this.rows.get(id) })) };
  }

  /** Waits (up to `ms`) until the list equals the API's and nothing is left to fetch. */
  async converge(ms) {
    const deadline = Date.now() + ms;
    let why;
    for (;;) {
      const list = await this.expected();
      const difference = this.difference(list);
      if (this.restarting) {
        why = "taking a new snapshot";
      } else if (difference === null && this.pending.size === 0 && !this.recovering) {
        const rest = await this.call("GET", `/api/realtime/subscriptions/${this.channelName}/events?after=${this.last}`);
        if (rest.status === 200 && rest.body.events.length === 0) break;
        why = `the server has more events after ${this.last}: ${rest.status} ${JSON.stringify(rest.body)}`;
      } else {
        why = `last ${this.last}, pending ${[...this.pending.keys()]}, difference ${JSON.stringify(difference)}`;
      }
      if (Date.now() > deadline) return this.fail(`no convergence within ${ms} ms: ${why}`);
      await sleep(100);
    }
    // Still so a moment later: no late event takes it away from the list.
    await sleep(300);
    const late = this.difference(await this.expected());
    if (late !== null) this.fail(`diverged after converging: ${JSON.stringify(late)}`);
  }
}

function sorted(record) {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** JSON with every object's keys in order: equal values, equal texts. */
function canonical(value) {
  return JSON.stringify(value, (_, v) => (v && typeof v === "object" && !Array.isArray(v) ? sorted(v) : v));
}

const lists = spec.subscribers.map((subscriber) => new LiveList(subscriber));
await Promise.all(lists.filter((list) => !list.late).map((list) => (list.started = list.start())));
console.log("ready");

const commands = createInterface({ input: process.stdin });
for await (const command of commands) {
  const dropping = lists.filter((list) => list.drops);
  if (command === "drop") {
    for (const list of dropping) list.pusher.disconnect();
    for (const list of lists.filter((list) => list.late)) list.started = list.start();
    console.log("dropped");
  } else if (command === "reconnect") {
    for (const list of dropping) list.pusher.connect();
    console.log("reconnected");
  } else if (command === "done") {
    break;
  }
}

const converged = async (list) => {
  await list.started;
  await list.converge(20_000);
};
await Promise.all(lists.map((list) => converged(list).catch((error) => list.fail(error.stack))));
let failed = false;
for (const list of lists) {
  list.pusher.disconnect();
  const result = { name: list.name, records: list.rows.size, last: list.last, ...list.stats, errors: list.errors };
  console.log(`result ${JSON.stringify(result)}`);
  failed ||= list.errors.length > 0;
}
process.exit(failed ? 1 : 0);
