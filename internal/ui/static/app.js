// Live status: the tunnels table listens to server-sent events and
// updates its rows in place. Without JavaScript the page still works; it
// only needs a reload to show changes.
"use strict";
(function () {
  const table = document.querySelector("table[data-live]");
  if (!table || !window.EventSource) return;
  const tbody = table.tBodies[0];
  function setStatus(tr, t) {
    const cell = tr.querySelector("td.status");
    if (!cell) return;
    cell.textContent = "";
    const state = document.createElement("span");
    state.className = "state " + t.state;
    state.textContent = t.state;
    cell.append(state, " ");
    const reason = document.createElement("span");
    reason.className = "reason";
    const msg = document.createElement("div");
    msg.className = "message";
    if (t.state !== "ready") { reason.textContent = t.reason; msg.textContent = t.message; }
    cell.append(reason, msg);
  }
  function addRow(t) {
    const tr = document.createElement("tr");
    tr.dataset.name = t.name;
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/ui/tunnels/" + encodeURIComponent(t.name);
    a.textContent = t.name;
    name.append(a);
    const host = document.createElement("td"); host.className = "host"; host.textContent = t.hostname;
    const target = document.createElement("td"); target.className = "target"; target.textContent = t.agent + " → " + t.target;
    const status = document.createElement("td"); status.className = "status";
    tr.append(name, host, target, status);
    tbody.append(tr);
    table.hidden = false;
    return tr;
  }
  const es = new EventSource(table.dataset.live);
  es.addEventListener("tunnel", function (ev) {
    const t = JSON.parse(ev.data);
    let tr = tbody.querySelector('tr[data-name="' + CSS.escape(t.name) + '"]');
    if (t.deleted) { if (tr) tr.remove(); return; }
    if (!tr) tr = addRow(t);
    setStatus(tr, t);
  });
})();
