// Drives the console (/console) or Swagger UI (/docs/) in Debian's headless Chromium with
// playwright-core. Usage: node console.mjs console|swagger, with VELO_URL, ADMIN, APP_ID,
// APP_KEY and APP_SECRET set; writes are made over plain HTTP, as curl would.
// `node console.mjs screenshots docs` takes the documentation's screenshots.
// Every wait is bounded (10 s) and prints the latency it saw; a failed step exits non-zero.

import { execFile } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import Pusher from "pusher-js";

const base = process.env.VELO_URL;
const admin = process.env.ADMIN;
const WAIT_MS = 10_000;
const mode = process.argv[2];

/// Runs `wait` (given the bound) and prints how long it took.
async function step(what, wait) {
  const started = performance.now();
  const detail = await wait(WAIT_MS);
  const ms = (performance.now() - started).toFixed(0);
  console.log(`${what}: ok after ${ms} ms${detail ? ` (${detail})` : ""}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
// Nothing the page does may break its Content-Security-Policy or throw.
const problems = [];

try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  if (mode === "console") await consoleSteps(page);
  else if (mode === "swagger") await swaggerSteps(page);
  else if (mode === "screenshots") await screenshots(page, process.argv[3]);
  else throw new Error(`unknown mode ${mode}`);
  check(problems.length === 0, problems.join("\n"));
} finally {
  await browser.close();
}

/// A plain HTTP call (as curl would make it); answers the parsed body, or throws.
async function call(method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await response.text();
  check(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/// The same call made by the curl command line tool; throws unless the answer is a 2xx.
async function curl(method, path, body) {
  const args = ["--silent", "--show-error", "--fail-with-body", "--max-time", "10", "-X", method,
    "-H", "content-type: application/json", "--data-binary", JSON.stringify(body), `${base}${path}`];
  const { stdout } = await promisify(execFile)("curl", args);
  return JSON.parse(stdout);
}

/// A signed Pusher HTTP API trigger, as the server libraries make it.
async function trigger(channel, name, data) {
  const path = `/apps/${process.env.APP_ID}/events`;
  const body = JSON.stringify({ name, channel, data });
  const params = new URLSearchParams({
    auth_key: process.env.APP_KEY,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: "1.0",
    body_md5: createHash("md5").update(body).digest("hex"),
  });
  const sorted = [...params.entries()].sort(([a], [b]) => a.localeCompare(b));
  const query = sorted.map(([key, value]) => `${key}=${value}`).join("&");
  const signature = createHmac("sha256", process.env.APP_SECRET)
    .update(`POST\n${path}\n${query}`)
    .digest("hex");
  const response = await fetch(`${base}${path}?${query}&auth_signature=${signature}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  check(response.ok, `trigger: ${response.status} ${await response.text()}`);
}

/// A pusher-js client that joined presence `channel` as `user`, authorized with the app secret
/// as a server library would.
async function join(channel, user, timeout) {
  const url = new URL(base);
  const client = new Pusher(process.env.APP_KEY, {
    wsHost: url.hostname,
    wsPort: Number(url.port),
    forceTLS: false,
    enabledTransports: ["ws"],
    cluster: "mt1",
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const channel_data = JSON.stringify({ user_id: user });
        const signature = createHmac("sha256", process.env.APP_SECRET)
          .update(`${socketId}:${channelName}:${channel_data}`)
          .digest("hex");
        callback(null, { auth: `${process.env.APP_KEY}:${signature}`, channel_data });
      },
    },
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${user} did not join ${channel}`)), timeout);
    const subscribed = client.subscribe(channel);
    subscribed.bind("pusher:subscription_succeeded", () => {
      clearTimeout(timer);
      resolve();
    });
    subscribed.bind("pusher:subscription_error", (error) => reject(new Error(JSON.stringify(error))));
  });
  return client;
}

/// A Pusher client in another browser tab (on `/health`, outside the console): connects with the app
/// key and subscribes to `channel`; answers the tab, whose socket stays open until it closes.
async function listenInAnotherTab(channel, timeout) {
  const tab = await browser.newPage();
  await tab.goto(`${base}/health`, { timeout });
  await tab.evaluate(
    ({ key, channel, timeout }) =>
      new Promise((resolve, reject) => {
        setTimeout(() => reject(new Error(`no subscription_succeeded in ${timeout} ms`)), timeout);
        const socket = new WebSocket(`ws://${location.host}/app/${key}?protocol=7`);
        window.listener = socket;
        socket.addEventListener("message", (message) => {
          const frame = JSON.parse(message.data);
          if (frame.event === "pusher:connection_established") {
            socket.send(JSON.stringify({ event: "pusher:subscribe", data: { channel } }));
          } else if (frame.event === "pusher_internal:subscription_succeeded") {
            resolve();
          }
        });
        socket.addEventListener("close", () => reject(new Error("the socket closed")));
      }),
    { key: process.env.APP_KEY, channel, timeout },
  );
  return tab;
}

/// `velo_connections` as `/metrics` serves it now.
async function connectionsServed() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((line) => line.startsWith("velo_connections "));
  return Number(line.split(" ")[1]);
}

/// The number an `<output>` shows (NaN for "–").
function shown(page, selector) {
  return page.evaluate((selector) => Number(document.querySelector(selector).value), selector);
}

/// Waits for a tail row whose text contains `text`; answers it.
async function tailRowWith(page, text, timeout) {
  const row = page.locator("#tail-rows tbody tr", { hasText: text });
  await row.first().waitFor({ timeout });
  return row.first();
}

async function consoleSteps(page) {
  await step("console page loads under its CSP", async (timeout) => {
    const response = await page.goto(`${base}/console`, { timeout });
    const csp = response.headers()["content-security-policy"];
    check(csp === "default-src 'self'", `CSP header: ${csp}`);
    await page.locator("#sign-in-form").waitFor({ timeout });
  });

  await step("a wrong token shows an error", async (timeout) => {
    await page.fill("#token", "not-the-admin-token");
    await page.click("#sign-in-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#sign-in-error").textContent !== "", null, { timeout });
    check(await page.locator("#collections").isHidden(), "collections shown after a wrong token");
    return await page.textContent("#sign-in-error");
  });

  await step("the admin token signs in and lists collections", async (timeout) => {
    await page.fill("#token", admin);
    await page.click("#sign-in-form button[type=submit]");
    await page.locator('#collection-list tr[data-name="posts"]').waitFor({ timeout });
    const stored = await page.evaluate(() => sessionStorage.getItem("velo.console.token"));
    check(stored === admin, "the token is in session storage");
  });

  await step("a bad rule is marked at its position as it is typed", async (timeout) => {
    await page.fill("#rule-create", "status = 'a' && )");
    await page.waitForFunction(
      () => document.querySelector("#check-create").dataset.state === "invalid",
      null,
      { timeout },
    );
    const position = await page.getAttribute("#check-create", "data-position");
    const marked = await page.textContent("#check-create mark");
    const message = await page.textContent("#check-create .message");
    check(position === "17", `position ${position}`);
    check(marked === ")", `marked ${JSON.stringify(marked)}`);
    check(message.includes("position 17"), message);
    check(await page.getAttribute("#rule-create", "aria-invalid") === "true", "aria-invalid");
    return `position ${position}, marked ${JSON.stringify(marked)}: ${message}`;
  });

  await step("the fixed rule is valid", async (timeout) => {
    await page.fill("#rule-create", "@request.auth.id != ''");
    await page.waitForFunction(
      () => document.querySelector("#check-create").dataset.state === "valid",
      null,
      { timeout },
    );
  });

  await step("a collection created through the form is listed", async (timeout) => {
    await page.fill("#collection-name", "console_made");
    await page.fill("#rule-list", "");
    await page.fill("#rule-view", "");
    await page.click("#form-submit");
    await page.locator('#collection-list tr[data-name="console_made"]').waitFor({ timeout });
  });

  await step("its rules are edited through the form", async (timeout) => {
    await page.click('#collection-list tr[data-name="console_made"] button.edit');
    await page.fill("#rule-update", "@request.auth.id = author");
    await page.click("#form-submit");
    await page.waitForFunction(
      () =>
        document.querySelector('#collection-list tr[data-name="console_made"] td:nth-child(6)')
          ?.textContent === "@request.auth.id = author",
      null,
      { timeout },
    );
  });

  await step("the live tail connects with a one-time ticket", async (timeout) => {
    await page.locator('#tail-status[data-state="live"]').waitFor({ timeout });
  });

  // A subscription for the record events to go to (no socket listens: sockets 0).
  await step("a subscription made over HTTP appears under Now", async (timeout) => {
    const count = page.locator('#overview-collections tr[data-collection="posts"] td.count');
    await count.waitFor({ timeout });
    const before = Number(await count.textContent());
    const made = performance.now();
    await call("POST", "/api/realtime/subscribe", { collection: "posts" });
    await page.waitForFunction(
      (expected) =>
        document.querySelector('#overview-collections tr[data-collection="posts"] td.count')
          ?.textContent === expected,
      String(before + 1),
      { timeout },
    );
    return `${before} -> ${before + 1}, ${(performance.now() - made).toFixed(0)} ms after the subscribe`;
  });

  await step("presence members joined with pusher-js appear under Now", async (timeout) => {
    const joined = performance.now();
    const clients = await Promise.all(["console-bob", "console-alice"].map((user) => join("presence-lobby", user, timeout)));
    await page.waitForFunction(
      () => document.querySelector('#overview-channels tr[data-channel="presence-lobby"] td.members')
        ?.textContent === "2: console-alice, console-bob",
      null,
      { timeout },
    );
    const latency = (performance.now() - joined).toFixed(0);
    const sockets = await page.textContent('#overview-channels tr[data-channel="presence-lobby"] td.count');
    for (const client of clients) client.disconnect();
    check(sockets === "2", `sockets ${sockets}`);
    return `${latency} ms from the joins to the row`;
  });

  await step("a record written with curl reaches the tail", async (timeout) => {
    const title = `tail-${Date.now()}`;
    const written = performance.now();
    await curl("POST", "/api/collections/posts/records", { title });
    const row = await tailRowWith(page, title, timeout);
    const latency = (performance.now() - written).toFixed(0);
    check(await row.locator("td.event").textContent() === "created", "event created");
    check(await row.locator("td.source").textContent() === "record", "source record");
    return `${latency} ms from the write to the row`;
  });

  await step("a Pusher trigger reaches the tail", async (timeout) => {
    const written = performance.now();
    await trigger("console-news", "breaking", JSON.stringify({ headline: "console" }));
    const row = await tailRowWith(page, "console-news", timeout);
    const latency = (performance.now() - written).toFixed(0);
    check(await row.locator("td.event").textContent() === "breaking", "event breaking");
    check(await row.locator("td.sockets").textContent() === "0", "no socket listens");
    return `${latency} ms from the trigger to the row`;
  });

  await step("a paused tail holds its rows and shows them on resume", async (timeout) => {
    await page.click("#tail-pause");
    const title = `paused-${Date.now()}`;
    await call("POST", "/api/collections/posts/records", { title });
    await page.waitForFunction(() => document.querySelector("#tail-held").value === "1", null, { timeout });
    check(await page.locator("#tail-rows tbody tr", { hasText: title }).count() === 0, "a row while paused");
    await page.click("#tail-pause");
    check(await page.textContent("#tail-held") === "0", "the held count resets on resume");
    check(await page.locator("#tail-rows tbody tr", { hasText: title }).count() === 1, "the held row is shown");
  });

  await step("the tail's filter hides the rows that do not match", async (timeout) => {
    const title = `filtered-${Date.now()}`;
    await call("POST", "/api/collections/posts/records", { title });
    const row = await tailRowWith(page, title, timeout);
    await page.fill("#tail-filter", title);
    await page.locator("#tail-rows tbody tr", { hasText: "console-news" }).waitFor({ state: "hidden", timeout });
    check(await row.isVisible(), "the matching row stays");
    await page.fill("#tail-filter", "");
  });

  await step("a bad filter in the playground is marked at its position as it is typed", async (timeout) => {
    await page.fill("#playground-filter", "status = 'published' && views >");
    await page.waitForFunction(
      () => document.querySelector("#playground-filter-check").dataset.state === "invalid",
      null,
      { timeout },
    );
    const position = await page.getAttribute("#playground-filter-check", "data-position");
    const marked = await page.textContent("#playground-filter-check mark");
    check(position === "32", `position ${position}`);
    check(marked === " ", `marked ${JSON.stringify(marked)}: one past the end`);
    check(await page.getAttribute("#playground-filter", "aria-invalid") === "true", "aria-invalid");
    return `position ${position}: ${await page.textContent("#playground-filter-check .message")}`;
  });

  await step("the playground shows a record delivered, decided by rhai after the index", async (timeout) => {
    await page.selectOption("#playground-collection", "console_made");
    await page.waitForFunction(() => document.querySelector("#playground-rule").value === "", null, { timeout });
    await page.fill("#playground-rule", "author = @request.auth.id");
    await page.fill("#playground-filter", "status = 'published' && views > 10");
    await page.check('input[name="subscriber"][value="user"]');
    await page.fill("#playground-auth", '{"sub": "u1"}');
    await page.fill("#playground-record", '{"author": "u1", "status": "published", "views": 11}');
    await page.click("#playground-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#playground-result").dataset.matches === "true", null, { timeout });
    const decided = await page.getAttribute("#playground-index", "data-decided-by");
    check(decided === "rhai", `decided by ${decided}`);
    const index = await page.textContent("#playground-index");
    check(index.includes('author = "u1"'), index);
    const parts = await page.locator("#playground-sides tr.part td.holds").allTextContents();
    check(parts.join() === "true,true", `filter parts ${parts}`);
    return index;
  });

  await step("the playground shows which part fails, and a guest refused by the rule", async (timeout) => {
    await page.fill("#playground-record", '{"author": "u1", "status": "published", "views": 3}');
    await page.click("#playground-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#playground-result").dataset.matches === "false", null, { timeout });
    const parts = await page.locator("#playground-sides tr.part td.holds").allTextContents();
    check(parts.join() === "true,false", `filter parts ${parts}`);
    await page.fill("#playground-rule", "@request.auth.id != ''");
    await page.check('input[name="subscriber"][value="guest"]');
    await page.click("#playground-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#playground-refused").textContent.includes("401"), null, { timeout });
    check(await page.locator("#playground-index").textContent() === "", "no index for a refused subscribe");
    await page.fill("#playground-record", "{not json");
    await page.click("#playground-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#playground-error").textContent.includes("not JSON"), null, { timeout });
    await page.fill("#playground-record", '{"author": "u1"}');
    return await page.textContent("#playground-refused");
  });

  await step("integers past 2^53 go as typed, from the playground and from Send", async (timeout) => {
    await page.fill("#playground-filter", "n = 9007199254740993");
    await page.fill("#playground-rule", "");
    await page.check('input[name="subscriber"][value="guest"]');
    await page.fill("#playground-record", '{"n": 9007199254740993}');
    await page.click("#playground-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#playground-result").dataset.matches === "true", null, { timeout });
    await page.selectOption("#record-collection", "posts");
    await page.fill("#record-id", "");
    await page.fill("#record-body", '{"n": 9007199254740993}');
    await page.click("#record-create");
    await page.locator("#record-answer", { hasText: "9007199254740993" }).waitFor({ timeout });
    const id = await page.inputValue("#record-id");
    const stored = await (await fetch(`${base}/api/collections/posts/records/${id}`)).text();
    check(stored.includes('"n":9007199254740993'), stored);
    return `stored ${stored.match(/"n":\d+/)[0]}`;
  });

  await step("the charts' parser reads Prometheus text, escapes and resets included", async () => {
    const results = await page.evaluate(async () => {
      const { parsePrometheus, quantile, increase } = await import("/console/charts.js");
      const text = [
        "# HELP velo_x A help text with \\\\ and \\n, and a \"quote\".",
        "# TYPE velo_x counter",
        "velo_x_total 3",
        'velo_y{a="say \\"hi\\"",b="back\\\\slash",c="two\\nlines",d="{,}"} 1.5e-06',
        'velo_z_bucket{le="+Inf",} +Inf 1700000000000',
        "  velo_w   NaN",
        "",
      ].join("\n");
      const histogram = (counts) => [1, 2, 4, Infinity].map((bound, at) => [bound, counts[at]]);
      return {
        samples: parsePrometheus(text),
        bad: (() => {
          try {
            parsePrometheus('velo_v{a="unclosed} 1');
            return "no error";
          } catch (error) {
            return error.message;
          }
        })(),
        // 100 observations in the last second: 50 under 1, 49 more under 2, 1 more under 4.
        p99: quantile(0.99, histogram([60, 109, 110, 110]), histogram([10, 10, 10, 10])),
        p99PastTheBounds: quantile(0.99, histogram([0, 0, 0, 5]), histogram([0, 0, 0, 0])),
        nothing: quantile(0.99, histogram([3, 3, 3, 3]), histogram([3, 3, 3, 3])),
        reset: increase(4, 1000),
        growth: increase(1005, 1000),
      };
    });
    const [x, y, z, w] = results.samples;
    check(results.samples.length === 4, JSON.stringify(results.samples));
    check(x.name === "velo_x_total" && x.value === 3, JSON.stringify(x));
    check(
      JSON.stringify(y.labels) === JSON.stringify({ a: 'say "hi"', b: "back\\slash", c: "two\nlines", d: "{,}" }),
      JSON.stringify(y.labels),
    );
    check(y.value === 1.5e-6, `${y.value}`);
    // Playwright hands Infinity and NaN back as such.
    check(z.labels.le === "+Inf" && z.value === Infinity, JSON.stringify(z));
    check(w.name === "velo_w" && Number.isNaN(w.value), JSON.stringify(w));
    check(/line 1 of \/metrics: no closing quote/.test(results.bad), results.bad);
    check(results.p99 === 2, `p99 ${results.p99}`);
    check(results.p99PastTheBounds === 4, `p99 past the bounds ${results.p99PastTheBounds}`);
    check(results.nothing === null, `p99 of nothing ${results.nothing}`);
    check(results.reset === 4 && results.growth === 5, `increase ${results.reset}, ${results.growth}`);
  });

  // Deliveries count frames queued to sockets: a socket listens to a subscription's channel.
  await step("the charts show deliveries per second, connections and match time", async (timeout) => {
    const { pusher_channel: channel } = await call("POST", "/api/realtime/subscribe", { collection: "posts" });
    const tab = await listenInAnotherTab(channel, timeout);
    try {
      // The chart shows what /metrics says (a second late at most): poll both until they agree.
      const deadline = performance.now() + timeout;
      for (;;) {
        const served = await connectionsServed();
        const charted = await shown(page, "#chart-connections-now");
        if (served >= 1 && charted === served) break;
        check(performance.now() < deadline, `connections: charted ${charted}, served ${served}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      let writes = 0;
      let writing = true;
      const writer = (async () => {
        while (writing) {
          await call("POST", "/api/collections/posts/records", { title: `chart-${writes}` });
          writes += 1;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      const written = performance.now();
      try {
        await page.waitForFunction(
          () =>
            Number(document.querySelector("#chart-deliveries-now").value) > 0 &&
            Number(document.querySelector("#chart-match-now").value) > 0 &&
            Number(document.querySelector("#chart-match-p99").value) > 0 &&
            document.querySelectorAll("#chart-deliveries svg polyline").length > 0,
          null,
          { timeout },
        );
      } finally {
        writing = false;
        await writer;
      }
      const seen = performance.now() - written;
      const [deliveries, now, match, p99] = await Promise.all(
        ["#chart-deliveries-now", "#chart-connections-now", "#chart-match-now", "#chart-match-p99"].map(
          (selector) => shown(page, selector),
        ),
      );
      check(await page.textContent("#charts-error") === "", await page.textContent("#charts-error"));
      return `${deliveries} deliveries/s, ${now} connections, match mean ${match} µs, p99 ${p99} µs; ` +
        `${seen.toFixed(0)} ms and ${writes} writes after the first write`;
    } finally {
      await tab.close();
    }
  });

  await sendSteps(page);

  await step("a reload stays signed in and reopens the tail", async (timeout) => {
    await page.reload({ timeout });
    await page.locator('#collection-list tr[data-name="console_made"]').waitFor({ timeout });
    await page.locator('#tail-status[data-state="live"]').waitFor({ timeout });
  });

  await step("signing out stops asking for /metrics and the overview", async (timeout) => {
    const polled = ["/metrics", "/api/console/overview"];
    const asked = [];
    page.on("request", (request) => {
      if (polled.includes(new URL(request.url()).pathname)) asked.push(request);
    });
    await page.waitForRequest((request) => new URL(request.url()).pathname === "/metrics", { timeout });
    await page.click("#sign-out");
    await page.locator("#sign-in").waitFor({ timeout });
    check(await page.locator("#charts").isHidden(), "the charts are hidden");
    const before = asked.length;
    // Two and a half polling periods with no request.
    await page.waitForTimeout(2500);
    check(asked.length === before, `${asked.length - before} requests for /metrics or the overview after sign-out`);
    return `${before} seen while signed in, none in the 2.5 s after signing out`;
  });
}

/// The "Send" panel: a record created, updated and deleted through its form, each reaching the
/// tail; invalid JSON refused in the page; a Pusher event triggered through its form.
async function sendSteps(page) {
  const title = `sent-${Date.now()}`;
  let id = null;

  await step("a record created through the Send form reaches the tail", async (timeout) => {
    await page.selectOption("#record-collection", "posts", { timeout });
    await page.fill("#record-id", "");
    await page.fill("#record-body", JSON.stringify({ title }));
    const clicked = performance.now();
    await page.click("#record-create");
    const row = await tailRowWith(page, title, timeout);
    const latency = (performance.now() - clicked).toFixed(0);
    check(await row.locator("td.event").textContent() === "created", "event created");
    check(await row.locator("td.source").textContent() === "record", "source record");
    await page.waitForFunction(() => document.querySelector("#record-id").value !== "", null, { timeout });
    id = await page.inputValue("#record-id");
    const answer = await page.textContent("#record-answer");
    check(answer.startsWith("201") && answer.includes(title), `answer ${answer}`);
    return `${latency} ms from the click to the row; id ${id}`;
  });

  /// The tail's row for the record's `event`.
  const recordRow = (event) =>
    page
      .locator("#tail-rows tbody tr", { hasText: id })
      .filter({ has: page.locator("td.event", { hasText: new RegExp(`^${event}$`) }) })
      .first();

  await step("it is updated through the form and the tail shows `updated`", async (timeout) => {
    await page.fill("#record-body", JSON.stringify({ title: `${title}-updated` }));
    const clicked = performance.now();
    await page.click("#record-update");
    const row = recordRow("updated");
    await row.waitFor({ timeout });
    const latency = (performance.now() - clicked).toFixed(0);
    const data = await row.locator("td.data").textContent();
    check(data.includes(`${title}-updated`), `data ${data}`);
    check((await page.textContent("#record-answer")).startsWith("200"), "answer 200");
    return `${latency} ms from the click to the row`;
  });

  await step("it is deleted through the form and the tail shows `deleted`", async (timeout) => {
    const clicked = performance.now();
    await page.click("#record-delete");
    await recordRow("deleted").waitFor({ timeout });
    const latency = (performance.now() - clicked).toFixed(0);
    check((await page.textContent("#record-answer")).startsWith("204"), "answer 204");
    return `${latency} ms from the click to the row`;
  });

  await step("invalid JSON in the record form shows an error and sends nothing", async (timeout) => {
    const sent = [];
    const watch = (request) => {
      if (request.url().includes("/records")) sent.push(`${request.method()} ${request.url()}`);
    };
    page.on("request", watch);
    await page.fill("#record-id", "");
    await page.fill("#record-body", '{"title": "no closing brace"');
    await page.click("#record-create");
    await page.waitForFunction(() => document.querySelector("#record-error").textContent !== "", null, { timeout });
    // A request, had one been made, would be seen by now: the page sends before it answers.
    page.off("request", watch);
    const error = await page.textContent("#record-error");
    check(sent.length === 0, `sent ${sent.join(", ")}`);
    check(/not valid JSON/.test(error), `error ${error}`);
    check(await page.getAttribute("#record-body", "aria-invalid") === "true", "aria-invalid");
    check(await page.locator("#record-answer").isHidden(), "an answer shown");
    return error;
  });

  await step("a Pusher event triggered through the form reaches the tail", async (timeout) => {
    const channel = `console-send-${Date.now()}`;
    await page.fill("#trigger-channels", channel);
    await page.fill("#trigger-event", "sent-from-form");
    await page.fill("#trigger-data", JSON.stringify({ headline: "from the form" }));
    const clicked = performance.now();
    await page.click("#trigger-submit");
    const row = await tailRowWith(page, channel, timeout);
    const latency = (performance.now() - clicked).toFixed(0);
    check(await row.locator("td.source").textContent() === "trigger", "source trigger");
    check(await row.locator("td.event").textContent() === "sent-from-form", "event name");
    check(await row.locator("td.channel").textContent() === channel, "channel");
    await page.waitForFunction(() => document.querySelector("#trigger-status").textContent !== "", null, { timeout });
    const answer = await page.textContent("#trigger-answer");
    check(answer.startsWith("200"), `answer ${answer}`);
    return `${latency} ms from the click to the row`;
  });

  await step("a trigger the server refuses shows its 422 and the field under the form", async (timeout) => {
    await page.fill("#trigger-channels", "not!a!channel");
    await page.click("#trigger-submit");
    await page.waitForFunction(() => document.querySelector("#trigger-error").textContent !== "", null, { timeout });
    const answer = await page.textContent("#trigger-answer");
    const error = await page.textContent("#trigger-error");
    check(answer.startsWith("422") && answer.includes('"channels"'), `answer ${answer}`);
    check(error.includes("not!a!channel"), `error ${error}`);
    return error;
  });
}

async function swaggerSteps(page) {
  await step("Swagger UI loads", async (timeout) => {
    await page.goto(`${base}/docs/`, { timeout });
    await page.locator("#operations-Realtime-subscribe").waitFor({ timeout });
  });

  await step("Try it out, Execute: subscribe with the pre-filled example answers 200", async (timeout) => {
    const operation = page.locator("#operations-Realtime-subscribe");
    await operation.locator(".opblock-summary").first().click({ timeout });
    await operation.locator(".try-out__btn").click({ timeout });
    await operation.locator(".execute").click({ timeout });
    const status = operation.locator(".live-responses-table tr.response .response-col_status").first();
    await status.waitFor({ timeout });
    const text = (await status.textContent()).trim();
    check(text.startsWith("200"), `status ${text}`);
    return `status ${text}`;
  });
}

/// The screenshots in docs/console.md, written to the folder `dir`: the whole page
/// (`console.png`: collections with a rule error being typed, Now with a presence channel's
/// members, the charts, live events), then the filter playground with its verdict
/// (`console-playground.png`) and the Send panel with an answer (`console-send.png`).
async function screenshots(page, dir) {
  await page.setViewportSize({ width: 1280, height: 1000 });
  await page.goto(`${base}/console`);
  await page.fill("#token", admin);
  await page.click("#sign-in-form button[type=submit]");
  await page.locator('#tail-status[data-state="live"]').waitFor({ timeout: WAIT_MS });
  await call("POST", "/api/collections", {
    name: "notes",
    api_rules: { list: "@request.auth.id != '' && owner = @request.auth.id", view: null, create: "@request.auth.id != ''", update: null, delete: null },
  }, admin);
  const { pusher_channel: channel } = await call("POST", "/api/realtime/subscribe", { collection: "posts", filter: "status = 'published'" });
  const members = await Promise.all(["alice", "bob"].map((user) => join("presence-lobby", user, WAIT_MS)));
  // A socket listens, so that the charts have deliveries to draw: a write a second.
  await listenInAnotherTab(channel, WAIT_MS);
  // Writes keep coming until the pictures are taken, a few a second.
  let writing = true;
  const writer = (async () => {
    for (let n = 1; writing; n += 1) {
      await call("POST", "/api/collections/posts/records", { title: `Post ${n}`, status: "published" });
      await new Promise((resolve) => setTimeout(resolve, 50 + (n % 7) * 60));
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 8000));
  await trigger("news", "breaking", JSON.stringify({ headline: "Console ships" }));
  await page.locator("#tail-rows tbody tr", { hasText: "news" }).waitFor({ timeout: WAIT_MS });
  await page.click('#collection-list tr[data-name="notes"] button.edit');
  await page.fill("#rule-update", "owner = @request.auth.id &&");
  await page.waitForFunction(() => document.querySelector("#check-update").dataset.state === "invalid", null, { timeout: WAIT_MS });
  await page.waitForFunction(() => document.querySelector('#overview-collections tr[data-collection="posts"] td.count')?.textContent === "1", null, { timeout: WAIT_MS });
  await page.locator('#overview-channels tr[data-channel="presence-lobby"] td.members', { hasText: "alice, bob" }).waitFor({ timeout: WAIT_MS });

  await page.fill("#playground-filter", "status = 'published' && views > 10");
  await page.fill("#playground-record", '{"title": "Hello", "author": "u1", "status": "published", "views": 3}');
  await page.click("#playground-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#playground-result").dataset.matches === "false", null, { timeout: WAIT_MS });

  await page.selectOption("#record-collection", "posts");
  await page.fill("#record-body", JSON.stringify({ title: "Sent from the console", status: "published" }));
  await page.click("#record-create");
  await page.locator("#record-answer", { hasText: "201" }).waitFor({ timeout: WAIT_MS });

  await page.screenshot({ path: `${dir}/console.png`, fullPage: true });
  await page.locator("#playground").screenshot({ path: `${dir}/console-playground.png` });
  await page.locator("#send").screenshot({ path: `${dir}/console-send.png` });
  console.log(`screenshots: ok after 0 ms (${dir}/console.png, console-playground.png, console-send.png)`);
  writing = false;
  await writer;
  for (const member of members) member.disconnect();
}
