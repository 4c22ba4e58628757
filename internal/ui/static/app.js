// Live pages: an element with data-live listens to server-sent events
// and updates in place with HTML the server rendered from the page's own
// templates. "row" events replace, add or remove one <tr data-name> of a
// table; "replace" events swap a summary's content. Without JavaScript
// every page still works; it only needs a reload to show changes.
//
// Copy buttons: a button with data-copy="#id" copies that element's text.
"use strict";
(function () {
  function fromHTML(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }
  function onRow(table, d) {
    const tbody = table.tBodies[0];
    const tr = tbody.querySelector('tr[data-name="' + CSS.escape(d.name) + '"]');
    if (d.deleted) { if (tr) tr.remove(); return; }
    const next = fromHTML(d.html);
    if (!next) return;
    if (tr) {
      // Unchanged rows stay, so a click on one is never lost to a
      // redraw of the same thing.
      if (tr.outerHTML !== next.outerHTML) tr.replaceWith(next);
      return;
    }
    // A new row goes in name order, as the server lists them.
    let before = null;
    for (const r of tbody.rows) {
      if (r.dataset.name > d.name) { before = r; break; }
    }
    tbody.insertBefore(next, before);
    table.hidden = false;
    const empty = table.closest(".table-wrap");
    if (empty && empty.previousElementSibling && empty.previousElementSibling.classList.contains("empty")) {
      empty.previousElementSibling.hidden = true;
    }
  }
  const shown = new WeakMap(); // element → the HTML it shows
  function onReplace(el, d) {
    if (shown.get(el) === d.html) return;
    shown.set(el, d.html);
    el.innerHTML = d.html;
  }
  if (window.EventSource) {
    for (const el of document.querySelectorAll("[data-live]")) {
      const es = new EventSource(el.dataset.live);
      es.addEventListener("row", function (ev) { onRow(el, JSON.parse(ev.data)); });
      es.addEventListener("replace", function (ev) { onReplace(el, JSON.parse(ev.data)); });
    }
  }

  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", function () {
      const src = document.querySelector(b.dataset.copy);
      if (!src) return;
      const text = src.textContent.trim();
      const done = function (ok) {
        b.textContent = ok ? "Copied" : "Select and copy";
        if (!ok) window.getSelection().selectAllChildren(src);
        setTimeout(function () { b.textContent = "Copy"; }, 2500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      } else {
        done(false);
      }
    });
  }
})();
