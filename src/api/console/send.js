// The console's "Send" panel (docs/console.md): create, update or delete a record through the
// records API, and trigger a Pusher event through POST /api/console/events, with the admin
// token. Each form shows the server's answer under it. A record's JSON is checked here first
// (text that is not a JSON object is never sent), then sent as typed.

import { $ } from "./dom.js";

/// `api(method, path, body)` from app.js: answers `{status, body}`.
let api = null;

/// Binds the forms; `call` is the page's API client.
export function startSend(call) {
  api = call;
  // Which of create, update and delete a key press means is not for the page to guess: only the
  // buttons send.
  $("#record-form").addEventListener("submit", (event) => event.preventDefault());
  $("#record-create").addEventListener("click", () => writeRecord("create"));
  $("#record-update").addEventListener("click", () => writeRecord("update"));
  $("#record-delete").addEventListener("click", () => writeRecord("delete"));
  $("#record-body").addEventListener("input", () => markJson(false));
  $("#trigger-form").addEventListener("submit", triggerEvent);
}

/// Lists `collections` (as `GET /api/collections` gives them) in the record form, keeping the
/// one chosen if it is still there.
export function listCollections(collections) {
  const select = $("#record-collection");
  const chosen = select.value;
  select.replaceChildren(
    ...collections.map(({ name }) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    }),
  );
  if (collections.some(({ name }) => name === chosen)) select.value = chosen;
}

// ---- Records ---------------------------------------------------------------------------

/// Flags the record's JSON text as invalid, or clears the flag.
function markJson(invalid) {
  const body = $("#record-body");
  if (invalid) body.setAttribute("aria-invalid", "true");
  else body.removeAttribute("aria-invalid");
}

/// The record form's JSON text, checked to be an object (`fields`, as parsed), or a message
/// saying why it is not one.
function recordFields() {
  const text = $("#record-body").value;
  let fields;
  try {
    fields = JSON.parse(text);
  } catch (error) {
    return { error: `The fields are not valid JSON (nothing was sent): ${error.message}` };
  }
  if (fields === null || typeof fields !== "object" || Array.isArray(fields)) {
    return { error: "The fields must be a JSON object, like {\"title\": \"Hello\"} (nothing was sent)." };
  }
  return { text, fields };
}

/// The JSON text of an object with `id` added in front.
function withId(text, id) {
  const inner = text.trim().slice(1);
  const rest = inner.trim().startsWith("}") ? inner : `,${inner}`;
  return `{"id":${JSON.stringify(id)}${rest}`;
}

async function writeRecord(action) {
  const answer = answerOf("record");
  answer.clear();
  const collection = $("#record-collection").value;
  const id = $("#record-id").value.trim();
  if (!collection) return answer.refuse("Choose a collection (create one above first).");
  if (action !== "create" && !id) return answer.refuse(`Give the id of the record to ${action}.`);
  const records = `/api/collections/${encodeURIComponent(collection)}/records`;
  let reply;
  if (action === "delete") {
    reply = await api("DELETE", `${records}/${encodeURIComponent(id)}`);
  } else {
    const { text, fields, error } = recordFields();
    markJson(error !== undefined);
    if (error) return answer.refuse(error);
    // Sent as typed; an id typed for a new record is the record's id (the API accepts one).
    const body = action === "create" && id && fields.id === undefined ? withId(text, id) : text;
    reply = action === "create"
      ? await api("POST", records, body)
      : await api("PATCH", `${records}/${encodeURIComponent(id)}`, body);
  }
  answer.show(reply);
  const ok = { create: 201, update: 200, delete: 204 }[action];
  if (reply.status !== ok) return;
  if (action === "delete") {
    answer.status(`Deleted ${id} from ${collection}.`);
  } else {
    const record = reply.body.data;
    $("#record-id").value = record.id;
    answer.status(`${action === "create" ? "Created" : "Updated"} ${record.id} in ${collection}.`);
  }
}

// ---- Pusher events -----------------------------------------------------------------------

async function triggerEvent(event) {
  event.preventDefault();
  const answer = answerOf("trigger");
  answer.clear();
  // Channel names may hold commas: they are separated by spaces or lines.
  const channels = $("#trigger-channels").value.split(/\s+/).filter(Boolean);
  const body = { channels, event: $("#trigger-event").value, data: $("#trigger-data").value };
  const socket = $("#trigger-socket").value.trim();
  if (socket) body.socket_id = socket;
  const reply = await api("POST", "/api/console/events", body);
  answer.show(reply);
  if (reply.status === 200) {
    const { channels: sent, sockets } = reply.body;
    answer.status(
      `Sent ${body.event} to ${sent} channel${sent === 1 ? "" : "s"}, queued to ${sockets} of this server's sockets.`,
    );
  }
}

// ---- Answers -----------------------------------------------------------------------------

/// A reply's JSON indented, unless a long run of digits (an integer JavaScript would round) or
/// text that is not JSON makes its own text the faithful one.
function readable(reply) {
  if (/\d{16,}/.test(reply.text)) return reply.text;
  try {
    return JSON.stringify(JSON.parse(reply.text), null, 2);
  } catch {
    return reply.text;
  }
}

/// The answer area under a form (`#<form>-error`, `-status`, `-answer`).
function answerOf(form) {
  const error = $(`#${form}-error`);
  const status = $(`#${form}-status`);
  const shown = $(`#${form}-answer`);
  return {
    clear() {
      error.textContent = "";
      status.textContent = "";
      shown.textContent = "";
      shown.hidden = true;
    },
    refuse(message) {
      error.textContent = message;
    },
    status(message) {
      status.textContent = message;
    },
    /// The status and body as the server gave them (its text: numbers exactly as sent); an
    /// error's message and field errors above.
    show(reply) {
      shown.hidden = false;
      shown.dataset.status = String(reply.status);
      shown.textContent = reply.text ? `${reply.status}\n${readable(reply)}` : `${reply.status}`;
      if (reply.status >= 400 || reply.status === 0) {
        const message = reply.body?.message ?? `the server answered ${reply.status}`;
        // Each field's errors, unless the message is already that one field's error.
        const fields = Object.entries(reply.body?.errors ?? {})
          .map(([field, messages]) => `${field}: ${messages.join("; ")}`)
          .filter((line) => line !== message && !line.endsWith(`: ${message}`));
        error.textContent = [message, ...fields].join("\n");
      }
    },
  };
}
