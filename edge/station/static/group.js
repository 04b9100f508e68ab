// lineside station: the look-alike group page. A grid of the group's frames; one key answers every frame still in
// it, x takes the selected one out first (it is answered alone right after), Enter takes it out and opens it now.
(function () {
  "use strict";
  const root = document.getElementById("group");
  if (document.body.dataset.page !== "group" || !root || !window.LinesideConsole) return;
  const { post, showError, csrf, answerForm, answerFields } = window.LinesideConsole;
  const groupId = root.dataset.groupId;
  const grid = document.getElementById("grid");
  const form = document.getElementById("group-form");
  const comment = document.getElementById("comment");
  const takenOut = [];
  let cells = Array.from(grid.querySelectorAll(".cell"));
  let selected = 0;

  function select(i) {
    if (!cells.length) return;
    selected = Math.max(0, Math.min(cells.length - 1, i));
    cells.forEach((c, j) => {
      c.classList.toggle("sel", j === selected);
      c.setAttribute("aria-selected", j === selected ? "true" : "false");
    });
    cells[selected].scrollIntoView({ block: "nearest" });
  }
  function perRow() {
    const top = cells.length ? cells[0].offsetTop : 0;
    const n = cells.filter((c) => c.offsetTop === top).length;
    return Math.max(1, n);
  }
  cells.forEach((c) => c.addEventListener("click", () => select(cells.indexOf(c))));

  function itemUrl(id, rest) {
    return `/items/${id}` + (rest.length ? `?then=${rest.join(",")}` : "");
  }
  async function takeOut(open) {
    const cell = cells[selected];
    if (!cell) return;
    const id = cell.dataset.itemId;
    const res = await post(`/groups/${groupId}/take-out`, { item_id: id });
    if (!res) return;
    if (open) { location.href = itemUrl(id, takenOut); return; }
    takenOut.push(id);
    cell.remove();
    cells = Array.from(grid.querySelectorAll(".cell"));
    document.getElementById("group-size").textContent = cells.length;
    const note = document.getElementById("taken-out-note");
    note.hidden = false;
    document.getElementById("taken-out-list").textContent = takenOut.map((x) => "#" + x).join(", ");
    if (!cells.length) { location.href = itemUrl(takenOut[0], takenOut.slice(1)); return; }
    select(Math.min(selected, cells.length - 1));
  }
  function answer(decision, defectClass) {
    const button = form.querySelector(`[data-decision="${decision}"]`);
    if (button && button.disabled) return;
    post(form.action, { ...answerFields(decision, defectClass, comment), taken_out: takenOut.join(",") });
  }
  const answers = answerForm(form, answer);

  // the leases on the group's frames last lease_minutes: renew them at half-time while the page stays open
  const every = Math.max(10, Number(root.dataset.leaseMinutes) * 30) * 1000;
  setInterval(async () => {
    const res = await fetch(`/api/groups/${groupId}/lease`, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
    });
    if (!res.ok) showError("Lost the frames of this group: someone else took them after your lease lapsed");
  }, every);

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target === comment) { if (e.key === "Escape") { comment.blur(); e.preventDefault(); } return; }
    const help = document.getElementById("help");
    if (help && !help.hidden) return;
    if (answers.relabelMode && e.key === "Escape") { answers.setRelabel(false); return; }
    if (answers.relabelKey(e)) return;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow(), ArrowUp: -perRow() };
    let handled = true;
    if (moves[e.key] !== undefined) select(selected + moves[e.key]);
    else if (e.key === "a") answer("accept");
    else if (e.key === "r") answer("reject");
    else if (e.key === "l") answers.setRelabel(true);
    else if (e.key === "x") takeOut(false);
    else if (e.key === "Enter") takeOut(true);
    else if (e.key === "s") post(`/groups/${groupId}/skip`);
    else if (e.key === "b") location.href = "/";
    else if (e.key === "c" && comment) comment.focus();
    else handled = false;
    if (handled) e.preventDefault();
  }, true);
})();
