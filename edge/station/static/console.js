// lineside station console: keyboard-first review. No framework, no network beyond this server.
(function () {
  "use strict";
  const REVIEWER_KEY = "lineside.reviewer";
  const page = document.body.dataset.page;
  const help = document.getElementById("help");
  const reviewer = document.getElementById("reviewer");
  const openedAt = performance.now();

  reviewer.value = localStorage.getItem(REVIEWER_KEY) || "operator";
  reviewer.addEventListener("input", () => localStorage.setItem(REVIEWER_KEY, reviewer.value.trim() || "operator"));
  reviewer.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === "Escape") reviewer.blur(); });

  function toggleHelp(show) { help.hidden = show === undefined ? !help.hidden : !show; }
  document.querySelectorAll("[data-help-toggle]").forEach((b) => b.addEventListener("click", () => toggleHelp()));
  help.addEventListener("click", (e) => { if (e.target === help) toggleHelp(false); });

  function typing(e) {
    const t = e.target;
    return t === reviewer || (t instanceof HTMLElement && (t.isContentEditable || t.tagName === "TEXTAREA"));
  }

  // ---- queue page ----
  const rows = Array.from(document.querySelectorAll("#queue tr.row"));
  let selected = 0;
  function select(i) {
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, j) => r.classList.toggle("sel", j === selected));
    rows[selected].scrollIntoView({ block: "nearest" });
  }
  rows.forEach((r, i) => r.addEventListener("click", () => { select(i); location.href = r.dataset.href; }));
  if (page === "queue") select(0);

  // ---- item page ----
  const form = document.getElementById("review-form");
  const relabel = document.getElementById("relabel");
  const relabelSelect = document.getElementById("relabel-class");
  let relabelMode = false;
  let submitting = false;

  function submitReview(decision, defectClass) {
    if (!form || submitting) return;
    const button = form.querySelector(`[data-decision="${decision}"]`);
    if (button && button.disabled) return;
    submitting = true;
    form.elements.decision.value = decision;
    form.elements.defect_class.value = decision === "relabel" ? defectClass : "";
    form.elements.reviewer.value = reviewer.value.trim() || "operator";
    form.elements.seconds_spent.value = ((performance.now() - openedAt) / 1000).toFixed(1);
    form.submit();
  }
  function setRelabel(on) {
    relabelMode = on;
    if (!relabel) return;
    relabel.classList.toggle("active", on);
    if (on) relabelSelect.focus(); else relabelSelect.blur();
  }
  if (form) {
    form.querySelectorAll("button[data-decision]").forEach((b) => b.addEventListener("click", () => {
      const d = b.dataset.decision;
      if (d === "relabel") { if (relabelMode) submitReview("relabel", relabelSelect.value); else setRelabel(true); }
      else submitReview(d);
    }));
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    if (e.key === "?") { toggleHelp(); e.preventDefault(); return; }
    if (e.key === "Escape") { toggleHelp(false); setRelabel(false); return; }
    if (!help.hidden) return;
    if (page === "queue") {
      if (e.key === "j" || e.key === "ArrowDown") { select(selected + 1); e.preventDefault(); }
      else if (e.key === "k" || e.key === "ArrowUp") { select(selected - 1); e.preventDefault(); }
      else if (e.key === "Enter" && rows.length) { location.href = rows[selected].dataset.href; }
      return;
    }
    if (page !== "item") return;
    if (relabelMode) {
      if (/^[1-9]$/.test(e.key)) {
        const option = relabelSelect.querySelector(`option[data-key="${e.key}"]`);
        e.preventDefault();
        if (option) { relabelSelect.value = option.value; submitReview("relabel", option.value); }
      } else if (e.key === "Enter") { e.preventDefault(); submitReview("relabel", relabelSelect.value); }
      return;  // arrows etc. go to the select
    }
    if (e.key === "a") submitReview("accept");
    else if (e.key === "r") submitReview("reject");
    else if (e.key === "l") { setRelabel(true); e.preventDefault(); }
    else if (e.key === "b") location.href = "/";
  }, true);  // capture: the relabel select must not see digits/Enter first
})();
