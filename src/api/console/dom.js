// What the console's modules share for the page: finding an element, and table rows built from
// text (never from HTML: everything the server sends is shown as text).

export const $ = (selector) => document.querySelector(selector);

/// A table cell holding `text`, with `className` when given.
export function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/// A table row of cells, each `[text, className]`.
export function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells.map(([text, className]) => cell(text, className)));
  return tr;
}
