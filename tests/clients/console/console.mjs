// Drives the console (/console) or Swagger UI (/docs/) in Debian's headless Chromium with
// playwright-core. Usage: node console.mjs console|swagger, with VELO_URL, ADMIN, APP_ID,
// APP_KEY and APP_SECRET set; writes are made over plain HTTP, as curl would.
// `node console.mjs screenshot docs/console.png` takes the documentation's screenshot.
// Every wait is bounded (10 s) and prints the latency it saw; a failed step exits non-zero.

import { createHash, createHmac } from "node:crypto";
import { chromium } from "playwright-core";

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

  await step("a record written over HTTP reaches the tail", async (timeout) => {
    const title = `tail-${Date.now()}`;
    const written = performance.now();
    await call("POST", "/api/collections/posts/records", { title });
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

  await step("a reload stays signed in and reopens the tail", async (timeout) => {
    await page.reload({ timeout });
    await page.locator('#collection-list tr[data-name="console_made"]').waitFor({ timeout });
    await page.locator('#tail-status[data-state="live"]').waitFor({ timeout });
  });

  await sendSteps(page);
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
