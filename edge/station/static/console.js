// lineside station console: keyboard-first review. No framework, no network beyond this server.
(function () {
  "use strict";
  const page = document.body.dataset.page;
  const help = document.getElementById("help");
  const flash = document.getElementById("flash");
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const openedAt = performance.now();

  function toggleHelp(show) { if (help) help.hidden = show === undefined ? !help.hidden : !show; }
  document.querySelectorAll("[data-help-toggle]").forEach((b) => b.addEventListener("click", () => toggleHelp()));
  if (help) help.addEventListener("click", (e) => { if (e.target === help) toggleHelp(false); });

  function showError(text) {
    if (!flash) { alert(text); return; }
    flash.textContent = text;
    flash.hidden = false;
  }

  // The next item as this page had the browser render it ahead (item.html's speculation rules): when the server
  // sends us there after an answer, the browser shows it at once; anywhere else (undo, links, reload), a fresh page.
  function aheadOf(url) {
    const ahead = document.querySelector('meta[name="next-ahead"]');
    return ahead && new URL(ahead.content, location.href).pathname === url ? ahead.content : url;
  }
  function forgetAhead() {
    if (new URLSearchParams(location.search).get("ahead") === "1") {
      history.replaceState(null, "", location.pathname);  // a reload gets a fresh page
    }
  }
  if (document.prerendering) document.addEventListener("prerenderingchange", forgetAhead, { once: true });
  else forgetAhead();

  // State-changing calls go through fetch with the CSRF header; the server answers JSON with where to go next.
  let busy = false;
  async function post(url, fields, useAhead) {
    if (busy) return null;
    busy = true;
    try {
      const res = await fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json",
                   "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(fields || {}),
      });
      let data = null;
      try { data = await res.json(); } catch (_) { /* not JSON */ }
      if (res.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return null; }
      if (!res.ok) { showError((data && data.detail) || `${res.status} ${res.statusText}`); return null; }
      if (data && data.next_url) location.href = useAhead ? aheadOf(data.next_url) : data.next_url;
      return data;
    } catch (err) {
      showError("The station did not answer: " + err);
      return null;
    } finally {
      busy = false;
    }
  }

  // An answer form (item and group pages): its buttons, and relabel mode — after l, 1–9 picks a class and saves,
  // Enter saves the selected one. submit(decision, defectClass) sends the answer.
  function answerForm(form, submit) {
    const box = document.getElementById("relabel");
    const select = document.getElementById("relabel-class");
    const state = { on: false };
    function setRelabel(on) {
      state.on = on;
      if (!box) return;
      box.classList.toggle("active", on);
      if (on) select.focus(); else select.blur();
    }
    form.addEventListener("submit", (e) => e.preventDefault());
    form.querySelectorAll("button[data-decision]").forEach((b) => b.addEventListener("click", () => {
      const d = b.dataset.decision;
      if (d === "relabel") { if (state.on) submit("relabel", select.value); else setRelabel(true); }
      else submit(d);
    }));
    function relabelKey(e) {  // true when relabel mode took the key
      if (!state.on) return false;
      if (/^[1-9]$/.test(e.key)) {
        const option = select.querySelector(`option[data-key="${e.key}"]`);
        e.preventDefault();
        if (option) { select.value = option.value; submit("relabel", option.value); }
      } else if (e.key === "Enter") { e.preventDefault(); submit("relabel", select.value); }
      return true;  // arrows etc. go to the select
    }
    return { setRelabel, relabelKey, get relabelMode() { return state.on; } };
  }

  // What every answer sends: the decision, the class of a relabel, the seconds since the page opened, the comment.
  function answerFields(decision, defectClass, comment) {
    return {
      decision: decision,
      defect_class: decision === "relabel" ? defectClass : "",
      seconds_spent: ((performance.now() - openedAt) / 1000).toFixed(1),
      comment: comment ? comment.value : "",
    };
  }

  window.LinesideConsole = { post, showError, csrf, answerForm, answerFields };  // static/group.js uses them

  function typing(e) {
    const t = e.target;
    return t instanceof HTMLElement && (t.isContentEditable || t.tagName === "TEXTAREA" ||
      (t.tagName === "INPUT" && t.type !== "hidden") || (t.tagName === "SELECT" && t.id !== "relabel-class"));
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

  // Live arrivals (Server-Sent Events, views/live.py): count new items, and items sent back for another answer,
  // under this page's filter and say so; the rows stay as they are (order and paging are the server's), r shows
  // the first page with them.
  const live = document.getElementById("live");
  const arrivals = document.getElementById("arrivals");
  let arrived = 0;
  let askedAgain = 0;
  if (page === "queue" && live && window.EventSource) {
    const params = new URLSearchParams(live.dataset.query || "");
    params.set("after_id", live.dataset.afterId || "0");
    if (live.dataset.afterAuditId) params.set("after_audit_id", live.dataset.afterAuditId);
    const stream = new EventSource("/api/events?" + params.toString());
    const baseTitle = document.title;
    stream.addEventListener("arrivals", (e) => {
      const d = JSON.parse(e.data);
      const pending = document.getElementById("pending-count");
      if (pending) pending.textContent = d.pending;
      arrived += d.new;
      askedAgain += d.asked_again || 0;
      if ((arrived > 0 || askedAgain > 0) && arrivals) {
        // "2 new items · 1 asked again", each count in bold, the parts there are
        const parts = [];
        if (arrived > 0) parts.push([arrived, arrived === 1 ? " new item" : " new items"]);
        if (askedAgain > 0) parts.push([askedAgain, " asked again"]);
        const what = document.getElementById("arrivals-what");
        what.replaceChildren();
        parts.forEach(([count, words], i) => {
          if (i > 0) what.append(" · ");
          const b = document.createElement("b");
          b.textContent = count;
          what.append(b, words);
        });
        arrivals.hidden = false;
        document.title = `(${arrived + askedAgain} new) ${baseTitle}`;
      }
    });
    window.addEventListener("pagehide", () => stream.close());
  }

  // ---- item page ----
  const itemEl = document.getElementById("item");
  const itemId = itemEl ? itemEl.dataset.itemId : null;
  const form = document.getElementById("review-form");
  const comment = document.getElementById("comment");

  function submitReview(decision, defectClass) {
    if (!form || form.classList.contains("locked")) return;
    const button = form.querySelector(`[data-decision="${decision}"]`);
    if (button && button.disabled) return;
    post(form.action, {
      ...answerFields(decision, defectClass, comment),
      boxes: editor ? editor.payload() : "",
      then: form.elements.then ? form.elements.then.value : "",
    }, true);
  }
  const answers = form ? answerForm(form, submitReview) : null;
  const relabeling = () => answers !== null && answers.relabelMode;
  const setRelabel = (on) => { if (answers) answers.setRelabel(on); };

  // The lease lasts lease_minutes; renew it at half-time while the page stays open. A page the browser fetched
  // ahead (the next item, prefetched while the previous one was open) was made without a lease: take it now.
  async function renewLease(first) {
    const res = await fetch(`/api/items/${itemId}/lease`, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
    });
    if (res.ok) {
      const lease = await res.json();
      const until = document.getElementById("lease-until");
      if (until && lease.expires_wall) {
        const d = new Date(lease.expires_wall * 1000), p = (n) => String(n).padStart(2, "0");
        until.textContent = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
          `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
        document.getElementById("lease").hidden = false;
      }
      return true;
    }
    let detail = `${res.status}`;
    try { detail = (await res.json()).detail; } catch (_) { /* keep status */ }
    showError((first ? "" : "Lost the lease on this item: ") + detail);
    if (form) form.classList.add("locked");
    return false;
  }
  function keepLease() {
    const every = Math.max(10, Number(itemEl.dataset.leaseMinutes) * 30) * 1000;
    const start = itemEl.dataset.leased === "1" ? Promise.resolve(true) : renewLease(true);
    start.then((ok) => { if (ok) setInterval(() => renewLease(false), every); });
  }
  if (itemEl && (itemEl.dataset.leased === "1" || itemEl.dataset.claim === "1")) {
    // a page the browser renders ahead (speculation rules) takes its lease only once it is shown
    if (document.prerendering) document.addEventListener("prerenderingchange", keepLease, { once: true });
    else keepLease();
  }

  // Zoom and pan: the stage (image + boxes) is scaled and moved inside the clipping frame.
  const viewport = document.getElementById("viewport");
  const stage = document.getElementById("stage");
  const zoomLabel = document.getElementById("zoom-level");
  const view = { s: 1, x: 0, y: 0 };
  function clampView() {
    const w = viewport.clientWidth, h = viewport.clientHeight;
    view.s = Math.max(1, Math.min(16, view.s));
    view.x = Math.min(0, Math.max(w - w * view.s, view.x));
    view.y = Math.min(0, Math.max(h - h * view.s, view.y));
  }
  function applyView() {
    clampView();
    stage.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.s})`;
    // the frame's pixels on the screen: the fit already scales it (a 250 px frame shown 676 px high is 270 %)
    const natural = Number(viewport.dataset.width) || viewport.clientWidth;
    if (zoomLabel) zoomLabel.textContent = `${Math.round(viewport.clientWidth * view.s / natural * 100)} %`;
  }
  function zoomAt(factor, cx, cy) {
    const s = Math.max(1, Math.min(16, view.s * factor));
    view.x = cx - (cx - view.x) * (s / view.s);
    view.y = cy - (cy - view.y) * (s / view.s);
    view.s = s;
    applyView();
  }
  if (viewport && stage) {
    viewport.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = viewport.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    let drag = null;
    // a press on a box, its corner or (in draw mode) anywhere goes to the box editor; elsewhere it pans
    viewport.addEventListener("pointerdown", (e) => {
      viewport.setPointerCapture(e.pointerId);
      if (editor && editor.pointerDown(e)) return;
      drag = { x: e.clientX - view.x, y: e.clientY - view.y };
      viewport.classList.add("dragging");
    });
    viewport.addEventListener("pointermove", (e) => {
      if (editor && editor.pointerMove(e)) return;
      if (!drag) return;
      view.x = e.clientX - drag.x; view.y = e.clientY - drag.y;
      applyView();
    });
    const endDrag = (e) => {
      if (editor && editor.pointerUp(e)) return;
      drag = null; viewport.classList.remove("dragging");
    };
    viewport.addEventListener("pointerup", endDrag);
    viewport.addEventListener("pointercancel", endDrag);
  }
  if (viewport && stage) {
    applyView();  // the zoom label says the real scale from the start
    window.addEventListener("resize", applyView);
  }
  function zoomKey(factor) {
    if (!viewport) return;
    if (factor === 0) { view.s = 1; view.x = 0; view.y = 0; applyView(); return; }
    zoomAt(factor, viewport.clientWidth / 2, viewport.clientHeight / 2);
  }
  // Overlays: boxes (o), heatmap (h: off, filled, contour lines; [ and ] its opacity), good references (g). The
  // choices carry over to the next item.
  const overlaySvg = document.querySelector("svg.overlay");
  const heatmap = document.getElementById("heatmap");
  const refs = document.getElementById("refs");
  const HEAT_MODES = ["off", "fill", "contours"];
  const shown = { boxes: true, heatmap: "off", heatOpacity: 0.8, refs: true };
  try { Object.assign(shown, JSON.parse(localStorage.getItem("lineside.overlays") || "{}")); } catch (_) { /* new */ }
  if (!HEAT_MODES.includes(shown.heatmap)) shown.heatmap = shown.heatmap === true ? "fill" : "off";
  let drawn = null;
  function applyOverlays() {
    if (overlaySvg) overlaySvg.classList.toggle("hidden-boxes", !shown.boxes);
    const boxesState = document.getElementById("boxes-state");
    if (boxesState) boxesState.textContent = shown.boxes ? "on" : "off";
    if (heatmap) {
      const on = shown.heatmap !== "off";
      heatmap.hidden = !on;
      document.getElementById("heatmap-state").textContent = { off: "off", fill: "on", contours: "contours" }[
        shown.heatmap];
      document.getElementById("heat-legend").hidden = !on;
      document.getElementById("heat-opacity").textContent = `${Math.round(shown.heatOpacity * 100)} %`;
      const want = `${shown.heatmap} ${shown.heatOpacity}`;
      if (on && drawn !== want && window.LinesideHeatmap) {
        drawn = want;
        window.LinesideHeatmap.draw(heatmap, shown.heatmap, shown.heatOpacity);
      }
    }
    if (refs) refs.hidden = !shown.refs;
  }
  function save() {
    try { localStorage.setItem("lineside.overlays", JSON.stringify(shown)); } catch (_) { /* private mode */ }
    applyOverlays();
  }
  function toggle(name, value) {
    shown[name] = value === undefined ? !shown[name] : value;
    save();
  }
  const toggleBoxes = () => toggle("boxes");
  function cycleHeatmap() {
    shown.heatmap = HEAT_MODES[(HEAT_MODES.indexOf(shown.heatmap) + 1) % HEAT_MODES.length];
    save();
  }
  function heatOpacity(step) {
    shown.heatOpacity = Math.round(Math.max(0.2, Math.min(1, shown.heatOpacity + step)) * 10) / 10;
    if (shown.heatmap === "off") shown.heatmap = "fill";
    save();
  }
  applyOverlays();

  // Box editing (static/boxes.js): the operator's boxes, saved with the review.
  let editor = null;
  const itemData = document.getElementById("item-data");
  if (itemData && overlaySvg && window.LinesideBoxes) {
    editor = window.LinesideBoxes.create(JSON.parse(itemData.textContent), {
      svg: overlaySvg, list: document.getElementById("box-list"), sourceLabel: document.getElementById("boxes-source"),
      showBoxes: () => toggle("boxes", true),
      centre: () => {
        const r = viewport.getBoundingClientRect();
        return { clientX: r.left + r.width / 2, clientY: r.top + r.height / 2 };
      },
    });
  }


  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && comment && e.target === comment) { comment.blur(); e.preventDefault(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    if (page === "login") return;
    if (e.key === "?") { toggleHelp(); e.preventDefault(); return; }
    if (help && !help.hidden) {
      if (e.key === "Escape") toggleHelp(false);
      return;
    }
    if (page === "item" && !relabeling() && editor && editor.key(e)) { e.preventDefault(); return; }
    if (e.key === "Escape") { toggleHelp(false); setRelabel(false); if (flash) flash.hidden = true; return; }
    if (e.key === "u" && !relabeling()) { post("/undo"); e.preventDefault(); return; }
    if (page === "queue") {
      if (e.key === "j" || e.key === "ArrowDown") { select(selected + 1); e.preventDefault(); }
      else if (e.key === "k" || e.key === "ArrowUp") { select(selected - 1); e.preventDefault(); }
      else if (e.key === "Enter" && rows.length) { location.href = rows[selected].dataset.href; }
      else if (e.key === "n") { post("/next"); e.preventDefault(); }
      else if (e.key === "r" && live) { location.href = live.dataset.firstPage || "/"; e.preventDefault(); }
      return;
    }
    if (page !== "item") return;
    if (answers && answers.relabelKey(e)) return;
    if (e.key === "a") submitReview("accept");
    else if (e.key === "r") submitReview("reject");
    else if (e.key === "l") { setRelabel(true); e.preventDefault(); }
    else if (e.key === "b") location.href = "/";
    else if (e.key === "s") post("/next", { skip: itemId });
    else if (e.key === "o") toggleBoxes();
    else if (e.key === "h") cycleHeatmap();
    else if (e.key === "[") heatOpacity(-0.1);
    else if (e.key === "]") heatOpacity(0.1);
    else if (e.key === "g") toggle("refs");
    else if (e.key === "c" && comment) { comment.focus(); e.preventDefault(); }
    else if (e.key === "+" || e.key === "=") zoomKey(1.25);
    else if (e.key === "-") zoomKey(0.8);
    else if (e.key === "0") zoomKey(0);
  }, true);  // capture: the relabel select must not see digits/Enter first
})();
