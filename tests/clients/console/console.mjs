// Drives the console (/console) or Swagger UI (/docs/) in Debian's headless Chromium with
// playwright-core. Usage: node console.mjs console|swagger, with VELO_URL, ADMIN, APP_ID,
// APP_KEY and APP_SECRET set; writes are made over plain HTTP, as curl would.
// `node console.mjs screenshot docs/console.png` takes the documentation's screenshot.
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
  else if (mode === "screenshot") await screenshot(page, process.argv[3]);
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

  await step("a paused tail counts what it misses and shows it no row", async (timeout) => {
    await page.click("#tail-pause");
    const title = `paused-${Date.now()}`;
    await call("POST", "/api/collections/posts/records", { title });
    await page.waitForFunction(() => document.querySelector("#tail-held").value === "1", null, { timeout });
    check(await page.locator("#tail-rows tbody tr", { hasText: title }).count() === 0, "a row while paused");
    await page.click("#tail-pause");
    check(await page.textContent("#tail-held") === "0", "the missed count resets on resume");
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

  await step("a reload stays signed in and reopens the tail", async (timeout) => {
    await page.reload({ timeout });
    await page.locator('#collection-list tr[data-name="console_made"]').waitFor({ timeout });
    await page.locator('#tail-status[data-state="live"]').waitFor({ timeout });
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

/// The screenshot in docs/console.md: a few collections, a subscription, some events, and a rule
/// error being typed.
async function screenshot(page, path) {
  await page.setViewportSize({ width: 1280, height: 1000 });
  await page.goto(`${base}/console`);
  await page.fill("#token", admin);
  await page.click("#sign-in-form button[type=submit]");
  await page.locator('#tail-status[data-state="live"]').waitFor({ timeout: WAIT_MS });
  await call("POST", "/api/collections", {
    name: "notes",
    api_rules: { list: "@request.auth.id != '' && owner = @request.auth.id", view: null, create: "@request.auth.id != ''", update: null, delete: null },
  }, admin);
  await call("POST", "/api/realtime/subscribe", { collection: "posts", filter: "status = 'published'" });
  for (const title of ["Hello", "Second post", "Third"]) {
    await call("POST", "/api/collections/posts/records", { title, status: "published" });
  }
  await trigger("news", "breaking", JSON.stringify({ headline: "Console ships" }));
  await page.locator("#tail-rows tbody tr", { hasText: "news" }).waitFor({ timeout: WAIT_MS });
  await page.click('#collection-list tr[data-name="notes"] button.edit');
  await page.fill("#rule-update", "owner = @request.auth.id &&");
  await page.waitForFunction(() => document.querySelector("#check-update").dataset.state === "invalid", null, { timeout: WAIT_MS });
  await page.waitForFunction(() => document.querySelector('#overview-collections tr[data-collection="posts"] td.count')?.textContent === "1", null, { timeout: WAIT_MS });
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ok after 0 ms (${path})`);
}
