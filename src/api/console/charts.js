// The console's charts (docs/console.md#charts): `GET /metrics` (Prometheus text, in the OpenAPI
// document) asked every second while signed in, and never otherwise; three small line charts of
// the last 60 s, drawn as SVG built with DOM calls (the page's CSP allows no inline style).
// The parser and the arithmetic are exported for the browser test to check them in the page.

import { $ } from "./dom.js";

/// How often the page asks for the metrics while signed in.
const EVERY_MS = 1000;
/// How much history each chart shows.
const WINDOW_MS = 60_000;
/// The charts' drawing box (one unit per quarter second across, any height: CSS sizes it), and
/// the room kept above the top of the scale and below 0, so that a line there stays whole.
const WIDTH = 240;
const HEIGHT = 60;
const MARGIN = 3;
const SVG = "http://www.w3.org/2000/svg";

// ---- Prometheus text format 0.0.4 -----------------------------------------------------------

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const ESCAPES = { "\\": "\\", '"': '"', n: "\n" };

/// The samples of Prometheus text: `[{name, labels, value}]`, in order. `#` lines (HELP, TYPE,
/// comments) and blank lines are skipped; a timestamp after the value is ignored. Throws on a
/// line it cannot read, saying which.
export function parsePrometheus(text) {
  const samples = [];
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    try {
      samples.push(parseSample(trimmed));
    } catch (error) {
      throw new Error(`line ${index + 1} of /metrics: ${error.message}: ${trimmed}`);
    }
  });
  return samples;
}

function parseSample(line) {
  const name = NAME.exec(line)?.[0];
  if (!name) throw new Error("no metric name");
  let at = name.length;
  const labels = {};
  if (line[at] === "{") {
    at += 1;
    for (;;) {
      at = skipSpaces(line, at);
      if (line[at] === "}") break;
      const label = LABEL.exec(line.slice(at))?.[0];
      if (!label) throw new Error(`no label name at ${at + 1}`);
      at = skipSpaces(line, at + label.length);
      if (line[at] !== "=") throw new Error(`no = after ${label}`);
      at = skipSpaces(line, at + 1);
      if (line[at] !== '"') throw new Error(`no opening quote for ${label}`);
      at += 1;
      let value = "";
      while (line[at] !== '"') {
        if (at >= line.length) throw new Error(`no closing quote for ${label}`);
        if (line[at] === "\\") {
          const escaped = ESCAPES[line[at + 1]];
          if (escaped === undefined) throw new Error(`unknown escape \\${line[at + 1] ?? ""}`);
          value += escaped;
          at += 2;
        } else {
          value += line[at];
          at += 1;
        }
      }
      labels[label] = value;
      at = skipSpaces(line, at + 1);
      if (line[at] === ",") at += 1;
      else if (line[at] !== "}") throw new Error(`expected , or } after ${label}`);
    }
    at += 1;
  }
  if (line[at] !== " " && line[at] !== "\t") throw new Error("no value");
  const [token] = line.slice(at).trim().split(/[ \t]+/);
  return { name, labels, value: parseValue(token) };
}

function skipSpaces(line, at) {
  while (line[at] === " " || line[at] === "\t") at += 1;
  return at;
}

/// A sample's value: a Go float, or `+Inf`, `-Inf`, `NaN`.
function parseValue(token) {
  switch (token) {
    case "+Inf":
    case "Inf":
      return Infinity;
    case "-Inf":
      return -Infinity;
    case "NaN":
      return NaN;
  }
  const value = Number(token);
  if (token === "" || Number.isNaN(value)) throw new Error(`not a number: ${token}`);
  return value;
}

/// The value of the sample `name` (with `labels`, if given), or undefined.
function valueOf(samples, name, labels = {}) {
  return samples.find(
    (sample) =>
      sample.name === name &&
      Object.entries(labels).every(([label, value]) => sample.labels[label] === value),
  )?.value;
}

// ---- From two scrapes to a point --------------------------------------------------------------

/// How much a counter grew between two scrapes; a counter that fell was reset (the server
/// restarted), so all of its value is growth since: never negative.
export function increase(now, before) {
  return now >= before ? now - before : now;
}

/// The match-time histogram's cumulative buckets as `[[bound, count]]`, by bound.
function matchBuckets(samples) {
  return samples
    .filter((sample) => sample.name === "velo_match_seconds_bucket")
    .map((sample) => [parseValue(sample.labels.le), sample.value])
    .sort(([a], [b]) => a - b);
}

/// The `q` quantile of the observations between two scrapes, estimated as Prometheus's
/// `histogram_quantile` does: linear within the bucket it falls in; past the last finite bound,
/// that bound. Null when nothing was observed.
export function quantile(q, now, before) {
  if (now.length === 0) return null;
  const reset = !before || before.length !== now.length || now.at(-1)[1] < before.at(-1)[1];
  const counts = reset ? now : now.map(([bound, count], index) => [bound, count - before[index][1]]);
  const total = counts.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let [lower, below] = [0, 0];
  for (const [bound, count] of counts) {
    if (count >= rank) {
      if (bound === Infinity) return lower;
      return lower + (bound - lower) * ((rank - below) / (count - below));
    }
    [lower, below] = [bound, count];
  }
  return lower;
}

// ---- The charts -------------------------------------------------------------------------------

/// Each chart: its element ids' stem, and how a point is read from this scrape and the last.
const CHARTS = [
  {
    id: "deliveries",
    // Event frames queued to sockets, per second.
    point: (now, before, seconds) =>
      before && increase(now.deliveries, before.deliveries) / seconds,
    format: (value) => (value < 10 ? value.toFixed(1) : String(Math.round(value))),
  },
  {
    id: "connections",
    point: (now) => now.connections,
    format: (value) => String(value),
  },
  {
    id: "match",
    // The mean time to match one change over the second, in µs; none without a change.
    point: (now, before) => {
      if (!before) return null;
      const count = increase(now.matchCount, before.matchCount);
      if (count <= 0) return null;
      const reset = now.matchCount < before.matchCount;
      const seconds = reset ? now.matchSum : now.matchSum - before.matchSum;
      return (seconds / count) * 1e6;
    },
    format: (value) => (value < 10 ? value.toFixed(1) : String(Math.round(value))),
    // The 99th percentile over the same second, from the buckets.
    extra: (now, before) => {
      const seconds = before && quantile(0.99, now.matchBuckets, before.matchBuckets);
      return seconds === null || seconds === undefined ? null : seconds * 1e6;
    },
  },
];

/// What the charts read from one scrape.
function reading(samples) {
  return {
    deliveries: valueOf(samples, "velo_deliveries_total") ?? 0,
    connections: valueOf(samples, "velo_connections") ?? 0,
    matchSum: valueOf(samples, "velo_match_seconds_sum") ?? 0,
    matchCount: valueOf(samples, "velo_match_seconds_count") ?? 0,
    matchBuckets: matchBuckets(samples),
  };
}

/// Each chart's points, `[{at, value, extra}]` (value null: nothing to show for that second).
let series = new Map();
/// The last scrape's reading and when it arrived.
let last = null;
let timer = null;
/// Bumped by each start and stop: a reply for an older run is ignored.
let run = 0;

/// Starts asking for `/metrics` every second; restarts the charts empty.
export function startCharts() {
  stopCharts();
  const mine = run;
  const tick = async () => {
    await scrape(mine);
    if (mine === run) timer = setTimeout(tick, EVERY_MS);
  };
  tick();
}

/// Stops asking, and empties the charts.
export function stopCharts() {
  run += 1;
  clearTimeout(timer);
  timer = null;
  last = null;
  series = new Map(CHARTS.map(({ id }) => [id, []]));
  for (const chart of CHARTS) draw(chart, performance.now());
  $("#charts-error").textContent = "";
}

async function scrape(mine) {
  let text;
  try {
    const response = await fetch("/metrics", { cache: "no-store" });
    text = await response.text();
    if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
  } catch (error) {
    if (mine === run) $("#charts-error").textContent = error.message;
    return;
  }
  if (mine !== run) return;
  const at = performance.now();
  let now;
  try {
    now = reading(parsePrometheus(text));
  } catch (error) {
    $("#charts-error").textContent = error.message;
    return;
  }
  $("#charts-error").textContent = "";
  const before = last;
  const seconds = before ? (at - before.at) / 1000 : 0;
  for (const chart of CHARTS) {
    const points = series.get(chart.id);
    const value = chart.point(now, before?.reading, seconds);
    const extra = chart.extra?.(now, before?.reading) ?? null;
    points.push({ at, value: value ?? null, extra });
    while (points.length && points[0].at < at - WINDOW_MS) points.shift();
    draw(chart, at);
  }
  last = { at, reading: now };
}

/// Redraws one chart's lines, scale and current value, as of `at`.
function draw(chart, at) {
  const points = series.get(chart.id) ?? [];
  const latest = points.at(-1);
  const show = (value) => (value === null || value === undefined ? "–" : chart.format(value));
  $(`#chart-${chart.id}-now`).value = show(latest?.value);
  const extraOutput = $(`#chart-${chart.id}-p99`);
  if (extraOutput) extraOutput.value = show(latest?.extra);
  const values = points.flatMap(({ value, extra }) => [value, extra]).filter(Number.isFinite);
  const top = scaleTop(Math.max(0, ...values));
  $(`#chart-${chart.id}-top`).value = String(top);
  const svg = $(`#chart-${chart.id} svg`);
  const lines = [polylines(points, "value", at, top, "line")];
  if (chart.extra) lines.push(polylines(points, "extra", at, top, "line extra"));
  svg.replaceChildren(...lines.flat());
}

/// The chart's top: the smallest of 1, 2, 5 × 10ⁿ at or above `peak` (1 at least).
function scaleTop(peak) {
  if (peak <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(peak));
  return [1, 2, 5, 10].map((step) => step * power).find((top) => top >= peak);
}

/// One `<polyline>` per run of points that have `key` (a gap where a second has none).
function polylines(points, key, at, top, className) {
  const runs = [[]];
  for (const point of points) {
    if (Number.isFinite(point[key])) runs.at(-1).push(point);
    else if (runs.at(-1).length) runs.push([]);
  }
  return runs
    .filter((run) => run.length)
    .map((run) => {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", className);
      line.setAttribute(
        "points",
        run
          .map((point) => {
            const x = WIDTH - ((at - point.at) / WINDOW_MS) * WIDTH;
            const y = HEIGHT - MARGIN - (Math.min(point[key], top) / top) * (HEIGHT - 2 * MARGIN);
            return `${x.toFixed(1)},${y.toFixed(1)}`;
          })
          .join(" "),
      );
      return line;
    });
}
