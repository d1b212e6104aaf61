// The console's "Send" panel (docs/console.md): create, update or delete a record through the
// records API, and trigger a Pusher event through POST /api/console/events, with the admin
// token. Each form shows the server's answer under it. A record's JSON is parsed here first: text
// that is not a JSON object is never sent.

const $ = (selector) => document.querySelector(selector);

/// `api(method, path, body)` from app.js: answers `{status, body}`.
let api = null;

/// Binds the forms; `call` is the page's API client.
export function startSend(call) {
  api = call;
  $("#record-form").addEventListener("submit", (event) => {
    event.preventDefault();
    writeRecord("create");
  });
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

/// The record form's JSON as an object, or a message saying why it is not one.
function recordFields() {
  let fields;
  try {
    fields = JSON.parse($("#record-body").value);
  } catch (error) {
    return { error: `The fields are not valid JSON (nothing was sent): ${error.message}` };
  }
  if (fields === null || typeof fields !== "object" || Array.isArray(fields)) {
    return { error: "The fields must be a JSON object, like {\"title\": \"Hello\"} (nothing was sent)." };
  }
  return { fields };
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
    const { fields, error } = recordFields();
    markJson(error !== undefined);
    if (error) return answer.refuse(error);
    // An id typed for a new record is the record's id (the API accepts one).
    if (action === "create" && id && fields.id === undefined) fields.id = id;
    reply = action === "create"
      ? await api("POST", records, fields)
      : await api("PATCH", `${records}/${encodeURIComponent(id)}`, fields);
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
    /// The status and body as the server gave them; an error's message and field errors above.
    show(reply) {
      shown.hidden = false;
      shown.dataset.status = String(reply.status);
      const body = reply.body === null ? "" : `\n${JSON.stringify(reply.body, null, 2)}`;
      shown.textContent = `${reply.status}${body}`;
      if (reply.status >= 400) {
        const message = reply.body?.message ?? `the server answered ${reply.status}`;
        // Each field's errors, unless the message is already that one field's error.
        const fields = Object.entries(reply.body?.errors ?? {})
          .filter(([, messages]) => messages.join("; ") !== message)
          .map(([field, messages]) => `${field}: ${messages.join("; ")}`);
        error.textContent = [message, ...fields].join("\n");
      }
    },
  };
}
