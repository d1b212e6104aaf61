// The console page: signs in with the admin token and calls the documented API
// (docs/console.md). No framework and no build step; served by the binary itself.

import { $, cell, row as tableRow } from "./dom.js";
import { playgroundCollections, startPlayground } from "./playground.js";
import { startCharts, stopCharts } from "./charts.js";
import { listCollections, startSend } from "./send.js";

const TOKEN_KEY = "velo.console.token";
const RULES = ["list", "view", "create", "update", "delete"];
const SUPERUSER_ONLY = "SUPERUSER_ONLY";
/// How long typing must pause before the expression is sent to the parser.
const CHECK_DELAY_MS = 120;


/// Calls the API with the stored token; answers `{status, body, text}` (body parsed when JSON),
/// or status 0 with a message when the server could not be reached. A string `body` is sent as
/// it is, JSON text already: what a user typed goes as typed (JavaScript's numbers would round
/// integers past 2^53, which the server keeps exact).
async function api(method, path, body, token = sessionStorage.getItem(TOKEN_KEY)) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  let text;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined || typeof body === "string" ? body : JSON.stringify(body),
    });
    text = await response.text();
  } catch (error) {
    return { status: 0, body: { message: `the server did not answer (${error.message})` } };
  }
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { message: text };
  }
  return { status: response.status, body: parsed, text };
}

function show(section) {
  $("#sign-in").hidden = section !== "sign-in";
  $("#collections").hidden = section !== "collections";
  $("#send").hidden = section !== "collections";
  $("#tail").hidden = section !== "collections";
  $("#overview").hidden = section !== "collections";
  $("#playground").hidden = section !== "collections";
  $("#charts").hidden = section !== "collections";
  $("#sign-out").hidden = section === "sign-in";
}

// ---- Sign-in ---------------------------------------------------------------------------

async function signIn(token) {
  const reply = await api("GET", "/api/collections", undefined, token);
  if (reply.status !== 200) {
    return reply.body?.message ?? `the server answered ${reply.status}`;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  show("collections");
  renderCollections(reply.body.data);
  openTail();
  startOverview();
  startCharts();
  return null;
}

function signOut() {
  closeTail();
  stopOverview();
  stopCharts();
  sessionStorage.removeItem(TOKEN_KEY);
  resetForm();
  $("#token").value = "";
  show("sign-in");
}

// ---- Collections -----------------------------------------------------------------------

/// The collections by id, as last listed.
let collections = new Map();
/// The id of the collection the form edits, or null for a new one.
let editing = null;

async function refreshCollections() {
  const reply = await api("GET", "/api/collections");
  if (reply.status === 401 || reply.status === 403) return signOut();
  if (reply.status === 200) renderCollections(reply.body.data);
}

function renderCollections(list) {
  collections = new Map(list.map((collection) => [collection.id, collection]));
  const body = $("#collection-list tbody");
  body.replaceChildren(
    ...list.map((collection) => {
      const row = tableRow([[collection.name, "name"], [collection.id, "id"]]);
      row.dataset.name = collection.name;
      for (const rule of RULES) {
        const text = collection.api_rules[rule];
        row.append(
          text === null
            ? cell(SUPERUSER_ONLY, "rule superuser")
            : cell(text === "" ? "(anyone)" : text, "rule"),
        );
      }
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = "Edit";
      edit.className = "edit";
      edit.setAttribute("aria-label", `Edit ${collection.name}`);
      edit.addEventListener("click", () => startEditing(collection.id));
      const actions = document.createElement("td");
      actions.append(edit);
      row.append(actions);
      return row;
    }),
  );
  $("#list-empty").hidden = list.length > 0;
  playgroundCollections(list);
  listCollections(list);
}

function ruleInput(rule) {
  return $(`#rule-${rule}`);
}

function buildRuleInputs() {
  const container = $("#rules");
  for (const rule of RULES) {
    const label = document.createElement("label");
    label.htmlFor = `rule-${rule}`;
    label.textContent = `${rule} rule`;
    const input = document.createElement("input");
    input.id = `rule-${rule}`;
    input.name = rule;
    input.className = "expression";
    input.autocomplete = "off";
    input.spellcheck = false;
    input.setAttribute("aria-describedby", `check-${rule}`);
    const check = document.createElement("div");
    check.id = `check-${rule}`;
    check.className = "check";
    check.setAttribute("aria-live", "polite");
    const checker = expressionChecker(input, check, "rule");
    input.addEventListener("input", checker);
    input.checkNow = checker;
    container.append(label, input, check);
  }
}

/// Checks `input`'s expression with the server's parser after each pause in typing and shows
/// the verdict in `check`: the message, and the text with the character it points at marked.
function expressionChecker(input, check, kind) {
  let timer = null;
  let latest = 0;
  return () => {
    clearTimeout(timer);
    check.dataset.state = "pending";
    const asked = ++latest;
    timer = setTimeout(async () => {
      if (!sessionStorage.getItem(TOKEN_KEY)) return; // signed out meanwhile
      const expression = input.value;
      const reply = await api("POST", "/api/expressions/check", { expression, kind });
      if (asked !== latest) return; // a newer check is on its way
      if (reply.status !== 200) {
        check.dataset.state = "error";
        check.textContent = reply.body?.message ?? `the server answered ${reply.status}`;
        return;
      }
      showVerdict(input, check, expression, reply.body);
    }, CHECK_DELAY_MS);
  };
}

function showVerdict(input, check, expression, verdict) {
  if (verdict.valid) {
    check.dataset.state = "valid";
    delete check.dataset.position;
    check.textContent = "✓ valid";
    input.removeAttribute("aria-invalid");
    input.setCustomValidity("");
    return;
  }
  check.dataset.state = "invalid";
  check.dataset.position = verdict.position;
  input.setAttribute("aria-invalid", "true");
  input.setCustomValidity(verdict.message);
  // `position` counts characters from 1; one past the end when the text ended too early.
  const characters = Array.from(expression);
  const at = verdict.position - 1;
  const mark = document.createElement("mark");
  mark.textContent = characters[at] ?? " ";
  mark.title = `position ${verdict.position}`;
  const shown = document.createElement("pre");
  const code = document.createElement("code");
  code.append(characters.slice(0, at).join(""), mark, characters.slice(at + 1).join(""));
  shown.append(code);
  const message = document.createElement("div");
  message.className = "message";
  message.textContent = verdict.message;
  check.replaceChildren(shown, message);
}

function resetForm() {
  editing = null;
  $("#form-title").textContent = "New collection";
  $("#form-submit").textContent = "Create";
  $("#form-cancel").hidden = true;
  $("#collection-name").value = "";
  for (const rule of RULES) setRule(rule, SUPERUSER_ONLY);
  $("#form-error").textContent = "";
}

function setRule(rule, text) {
  const input = ruleInput(rule);
  input.value = text === null ? SUPERUSER_ONLY : text;
  const check = $(`#check-${rule}`);
  check.replaceChildren();
  delete check.dataset.state;
  input.removeAttribute("aria-invalid");
  input.setCustomValidity("");
}

function startEditing(id) {
  const collection = collections.get(id);
  if (!collection) return;
  editing = id;
  $("#form-title").textContent = `Edit ${collection.name}`;
  $("#form-submit").textContent = "Save";
  $("#form-cancel").hidden = false;
  $("#collection-name").value = collection.name;
  for (const rule of RULES) setRule(rule, collection.api_rules[rule]);
  $("#form-error").textContent = "";
  $("#form-status").textContent = "";
  $("#collection-name").focus();
}

/// The form's rules as the API takes them: `SUPERUSER_ONLY` alone is `null`.
function formRules() {
  const rules = {};
  for (const rule of RULES) {
    const text = ruleInput(rule).value;
    rules[rule] = text.trim() === SUPERUSER_ONLY ? null : text;
  }
  return rules;
}

async function submitCollection(event) {
  event.preventDefault();
  $("#form-error").textContent = "";
  $("#form-status").textContent = "";
  const name = $("#collection-name").value.trim();
  const api_rules = formRules();
  let reply;
  if (editing === null) {
    reply = await api("POST", "/api/collections", { name, api_rules });
  } else {
    const body = { api_rules };
    if (name !== collections.get(editing)?.name) body.name = name;
    reply = await api("PATCH", `/api/collections/${encodeURIComponent(editing)}`, body);
  }
  if (reply.status === 200 || reply.status === 201) {
    $("#form-status").textContent =
      reply.status === 201 ? `Created ${reply.body.data.name}.` : `Saved ${reply.body.data.name}.`;
    resetForm();
    await refreshCollections();
    return;
  }
  if (reply.status === 404 && editing !== null) {
    // Deleted (or deleted and made again, with a new id) elsewhere since it was listed.
    const name = collections.get(editing)?.name ?? "This collection";
    resetForm();
    $("#form-error").textContent =
      `${name} no longer exists as it was listed (deleted elsewhere?): the list is fresh now; edit it again.`;
    await refreshCollections();
    return;
  }
  const fields = reply.body?.errors ?? {};
  const lines = Object.entries(fields).map(([field, messages]) => `${field}: ${messages.join("; ")}`);
  $("#form-error").textContent = lines.length ? lines.join("\n") : reply.body?.message ?? `the server answered ${reply.status}`;
}

// ---- Now: connections, subscriptions, channels --------------------------------------------

/// How often the page asks for the overview while it is open (nothing is asked when closed).
const OVERVIEW_EVERY_MS = 1000;
let overviewTimer = null;
/// Bumped by each start and stop: a reply for an older run is ignored.
let overviewRun = 0;
/// Collections are listed again every this many overviews (their rules may have changed).
const RELIST_EVERY_TICKS = 5;
let overviewTicks = 0;

/// Asks for the overview a second after each answer (never two at once) until stopped.
function startOverview() {
  stopOverview();
  const mine = overviewRun;
  const tick = async () => {
    await refreshOverview(mine);
    if (mine === overviewRun) overviewTimer = setTimeout(tick, OVERVIEW_EVERY_MS);
  };
  tick();
}

function stopOverview() {
  overviewRun += 1;
  clearTimeout(overviewTimer);
  overviewTimer = null;
}

async function refreshOverview(mine) {
  const reply = await api("GET", "/api/console/overview");
  if (mine !== overviewRun) return;
  if (reply.status === 401 || reply.status === 403) return signOut();
  if (reply.status !== 200) {
    $("#overview-error").textContent = reply.body?.message ?? `the server answered ${reply.status}`;
    return;
  }
  const now = reply.body;
  // A collection made, renamed or deleted elsewhere: list them again at once; rules changed
  // elsewhere (which the overview does not show) within a few seconds.
  const listed = [...collections.values()].map((collection) => collection.name).sort().join();
  overviewTicks += 1;
  if (
    now.collections.map(({ collection }) => collection).sort().join() !== listed ||
    overviewTicks % RELIST_EVERY_TICKS === 0
  ) {
    refreshCollections();
  }
  $("#overview-error").textContent = "";
  $("#overview-connections").value = now.connections;
  $("#overview-channel-count").value = now.channel_count;
  $("#overview-watchers").value = now.tail_watchers;
  $("#overview-collections tbody").replaceChildren(
    ...now.collections.map(({ collection, subscriptions }) =>
      countRow(collection, subscriptions, "collection"),
    ),
  );
  $("#overview-node").hidden = !now.node;
  $("#overview-node-name").value = now.node ?? "";
  $("#overview-channels tbody").replaceChildren(
    ...now.channels.map(({ channel, sockets, members }) => {
      const row = countRow(channel, sockets, "channel");
      const more = members && members.count > members.user_ids.length ? ", …" : "";
      const text = members ? `${members.count}: ${members.user_ids.join(", ")}${more}` : "";
      row.append(cell(text, "members"));
      return row;
    }),
  );
}

function countRow(name, count, kind) {
  const row = tableRow([[name, "name"], [String(count), "count"]]);
  row.dataset[kind] = name;
  return row;
}

// ---- Live event tail ---------------------------------------------------------------------

/// Rows kept on the page; older ones are removed.
const TAIL_ROWS = 500;
/// The tail's socket, while signed in.
let tail = null;
let paused = false;
/// Bumped by each close: a ticket that arrives after it opens nothing.
let tailRun = 0;
/// Events that came while paused (the newest TAIL_ROWS), shown on resume.
let held = [];

function tailState(state) {
  const status = $("#tail-status");
  status.dataset.state = state;
  status.textContent = state;
}

/// Opens the tail's WebSocket with a one-time ticket (a browser's WebSocket cannot send
/// `Authorization`); reopens it a second after it closes, while signed in.
async function openTail() {
  closeTail();
  const mine = tailRun;
  tailState("connecting");
  const reply = await api("POST", "/api/console/tickets");
  if (mine !== tailRun) return; // closed (signed out) meanwhile
  if (reply.status === 401 || reply.status === 403) return signOut();
  if (reply.status !== 201) {
    tailState("closed");
    setTimeout(reopenTail, 1000);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${reply.body.path}`);
  tail = socket;
  socket.addEventListener("open", () => tail === socket && tailState("live"));
  socket.addEventListener("message", (message) => tail === socket && onTailMessage(JSON.parse(message.data)));
  socket.addEventListener("close", () => {
    if (tail !== socket) return;
    tail = null;
    tailState("closed");
    setTimeout(reopenTail, 1000);
  });
}

function reopenTail() {
  if (tail === null && sessionStorage.getItem(TOKEN_KEY)) openTail();
}

function closeTail() {
  tailRun += 1;
  const socket = tail;
  tail = null;
  socket?.close();
  tailState("closed");
}

function onTailMessage(message) {
  $("#tail-dropped").value = message.dropped;
  if (message.type !== "event") return;
  if (paused) {
    // Kept for the resume: the page shows no more than its last TAIL_ROWS rows anyway.
    held.push(message.event);
    if (held.length > TAIL_ROWS) held.shift();
    $("#tail-held").value = held.length;
    return;
  }
  addTailRow(message.event);
}

function addTailRow(event) {
  const row = tailRow(event);
  row.hidden = !matchesTailFilter(row);
  const body = $("#tail-rows tbody");
  body.prepend(row);
  while (body.rows.length > TAIL_ROWS) body.lastElementChild.remove();
}

function tailRow(event) {
  const time = new Date(event.at_ms).toISOString().slice(11, 23);
  const data = event.cut ? `${event.data}…` : event.data;
  return tableRow([
    [time, "time"],
    [event.source, "source"],
    [event.event, "event"],
    [event.channel, "channel"],
    [String(event.channels), "channels"],
    [String(event.sockets), "sockets"],
    [data, "data"],
  ]);
}

function matchesTailFilter(row) {
  const wanted = $("#tail-filter").value.trim().toLowerCase();
  return wanted === "" || row.textContent.toLowerCase().includes(wanted);
}

function startTailControls() {
  $("#tail-pause").addEventListener("click", () => {
    paused = !paused;
    $("#tail-pause").textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      for (const event of held) addTailRow(event);
      held = [];
      $("#tail-held").value = 0;
    }
  });
  $("#tail-filter").addEventListener("input", () => {
    for (const row of $("#tail-rows tbody").rows) row.hidden = !matchesTailFilter(row);
  });
  $("#tail-clear").addEventListener("click", () => $("#tail-rows tbody").replaceChildren());
}

// ---- Start -----------------------------------------------------------------------------

function start() {
  buildRuleInputs();
  startTailControls();
  startPlayground(api, expressionChecker);
  startSend(api);
  resetForm();
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#sign-in-error").textContent = "";
    const error = await signIn($("#token").value);
    if (error) $("#sign-in-error").textContent = error;
  });
  $("#sign-out").addEventListener("click", signOut);
  $("#collection-form").addEventListener("submit", submitCollection);
  $("#form-cancel").addEventListener("click", resetForm);

  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    signIn(token).then((error) => {
      if (error) signOut();
    });
  } else {
    show("sign-in");
  }
  document.body.dataset.ready = "true";
}

start();
