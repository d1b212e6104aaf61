// The filter playground: a filter, a list rule, a record and a subscriber go to
// `POST /api/expressions/evaluate`; the page shows whether the record would be delivered, how
// each side and each of its AND-ed parts decided, and how the subscription index decided.

import { $, row as tableRow } from "./dom.js";

/// What each `decided_by` means, in words.
const SIDE_DECIDERS = {
  empty: "no expression: every record",
  admin: "the admin bypasses every rule",
  refused: "the subscribe is refused",
  subscription: "when subscribing, from @request.auth alone",
  record: "by this record",
};

/// `api(method, path, body)` calls the API with the signed-in token; `checker(input, check,
/// kind)` checks an expression as it is typed.
export function startPlayground(api, checker) {
  const filter = $("#playground-filter");
  const rule = $("#playground-rule");
  filter.value = 'status = "published"';
  rule.value = "author = @request.auth.id";
  filter.addEventListener("input", checker(filter, $("#playground-filter-check"), "filter"));
  rule.addEventListener("input", checker(rule, $("#playground-rule-check"), "rule"));
  document.querySelector('input[name="subscriber"][value="user"]').checked = true;
  $("#playground-collection").addEventListener("change", (event) => {
    const option = event.target.selectedOptions[0];
    if (!option?.value) return;
    rule.value = option.dataset.rule;
    rule.dispatchEvent(new Event("input"));
  });
  $("#playground-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await evaluate(api);
  });
}

/// Offers each collection's list rule (`SUPERUSER_ONLY` for `null`).
export function playgroundCollections(collections) {
  const select = $("#playground-collection");
  const chosen = select.value;
  select.replaceChildren(
    new Option("(a collection)", ""),
    ...collections.map((collection) => {
      const option = new Option(collection.name, collection.name);
      option.dataset.rule = collection.api_rules.list ?? "SUPERUSER_ONLY";
      return option;
    }),
  );
  select.value = collections.some((collection) => collection.name === chosen) ? chosen : "";
}

/// A JSON textarea's text, checked to be an object; throws a message naming it when it is not.
/// The text is sent as typed: JavaScript would round integers past 2^53.
function jsonObject(id, what) {
  const text = $(id).value;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${what} must be a JSON object`);
  }
  return text;
}

/// Bumped by each evaluation: only the latest one's answer is shown.
let asked = 0;

async function evaluate(api) {
  const mine = ++asked;
  const error = $("#playground-error");
  error.textContent = "";
  $("#playground-result").hidden = true;
  const subscriber = document.querySelector('input[name="subscriber"]:checked').value;
  const fields = [
    `"filter":${JSON.stringify($("#playground-filter").value)}`,
    `"rule":${JSON.stringify($("#playground-rule").value)}`,
  ];
  try {
    fields.push(`"record":${jsonObject("#playground-record", "The record")}`);
    if (subscriber === "user") fields.push(`"auth":${jsonObject("#playground-auth", "The claims")}`);
  } catch (invalid) {
    error.textContent = invalid.message;
    return;
  }
  if (subscriber === "admin") fields.push(`"admin":true`);
  const reply = await api("POST", "/api/expressions/evaluate", `{${fields.join(",")}}`);
  if (mine !== asked) return;
  if (reply.status !== 200) {
    const fields = reply.body?.errors ?? {};
    const lines = Object.entries(fields).map(([field, messages]) => `${field}: ${messages.join("; ")}`);
    error.textContent = lines.length ? lines.join("\n") : reply.body?.message ?? `the server answered ${reply.status}`;
    $("#playground-result").hidden = true;
    return;
  }
  show(reply.body);
}

function show(verdict) {
  const result = $("#playground-result");
  result.hidden = false;
  result.dataset.matches = String(verdict.matches);
  const headline = $("#playground-verdict");
  headline.className = verdict.matches ? "verdict ok" : "verdict error";
  headline.textContent = verdict.matches
    ? "✓ Delivered: this subscriber gets this record's events."
    : "✗ Not delivered.";
  $("#playground-refused").textContent = verdict.refused
    ? `The subscribe itself is refused with ${verdict.refused.status}: ${verdict.refused.message}`
    : "";
  const rows = [];
  for (const [name, side] of [["rule", verdict.rule], ["filter", verdict.filter]]) {
    rows.push(row(name, side.expression || "(none)", side.holds, SIDE_DECIDERS[side.decided_by], "side"));
    if (side.parts.length > 1) {
      for (const part of side.parts) {
        rows.push(row("", part.expression, part.holds, SIDE_DECIDERS[part.decided_by], "part"));
      }
    }
  }
  const sides = $("#playground-sides tbody");
  sides.replaceChildren(...rows);
  const index = $("#playground-index");
  if (verdict.index) {
    index.dataset.decidedBy = verdict.index.decided_by;
    index.textContent = `Index: ${indexText(verdict.index)}`;
  } else {
    delete index.dataset.decidedBy;
    index.textContent = "";
  }
}

function row(side, expression, holds, decided, className) {
  const tr = tableRow([
    [side, "name"],
    [expression, "expression"],
    [holds ? "true" : "false", holds ? "holds ok" : "holds error"],
    [decided, "decided"],
  ]);
  tr.className = className;
  if (className === "side") tr.dataset.side = side;
  return tr;
}

/// The index's decision in a sentence.
function indexText(index) {
  const filed = {
    never: "filed nowhere: the condition is false for this subscriber whatever the record",
    scan: "in the scan set, visited by every event",
    bucket: `filed under ${index.field} = ${index.keys.join(" | ")}`,
  }[index.placement];
  const decided = {
    subscription: index.placement === "never"
      ? "decided when subscribing (never)"
      : "decided when subscribing (every record matches; no script runs)",
    index: index.candidate
      ? "decided by the bucket lookup alone: the record is under its key, and the key is the whole condition"
      : "decided by the bucket lookup alone: the record is not under its keys",
    rhai: `decided by the compiled rhai script, which answered ${index.script}`,
  }[index.decided_by];
  return `${filed}; ${decided}.`;
}
