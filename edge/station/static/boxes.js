// lineside station: the box editor of the item page. The operator's boxes live here until the review is saved;
// console.js routes the keys and pointer events of the page to it and sends `payload()` with the review.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";

  // data: {boxes: [{x, y, w, h, class}], source: "model" | "operator", classes, verdict, width, height,
  //        label_size, colors}; ui: {svg, list, sourceLabel, centre() -> {clientX, clientY}, showBoxes()}
  function create(data, ui) {
    const W = data.width, H = data.height, L = data.label_size;
    const step = Math.max(1, Math.round(Math.max(W, H) / 100));  // one arrow press: 1 % of the frame
    const defects = data.classes.filter((c) => c !== "good");
    const defaultClass = defects.includes(data.verdict) ? data.verdict : defects[0];
    let boxes = data.boxes.map((b) => ({ x: b.x, y: b.y, w: b.w, h: b.h, cls: b["class"] }));
    const initial = JSON.stringify(boxes);
    let selected = -1;
    let drawing = false;
    let gesture = null;
    const history = [];

    const dirty = () => JSON.stringify(boxes) !== initial;
    function remember() {
      history.push(JSON.stringify({ boxes: boxes, selected: selected }));
      if (history.length > 200) history.shift();
    }
    function clamp(b) {
      b.w = Math.max(2, Math.min(W, Math.round(b.w)));
      b.h = Math.max(2, Math.min(H, Math.round(b.h)));
      b.x = Math.max(0, Math.min(W - b.w, Math.round(b.x)));
      b.y = Math.max(0, Math.min(H - b.h, Math.round(b.y)));
    }
    function el(name, attrs, parent) {
      const node = document.createElementNS(NS, name);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (parent) parent.appendChild(node);
      return node;
    }

    function render() {
      ui.svg.replaceChildren();
      boxes.forEach((b, i) => {
        const color = data.colors[b.cls] || "#ffffff";
        const g = el("g", { class: "region" + (i === selected ? " sel" : ""), "data-region": i + 1, "data-index": i },
          ui.svg);
        el("rect", { class: "box", x: b.x, y: b.y, width: b.w, height: b.h, stroke: color }, g);
        const text = `${i + 1} ${b.cls}`;
        const at = labelAt(b, text);
        const label = el("text", { x: at.x, y: at.y, "text-anchor": at.anchor, "font-size": L.toFixed(1),
          fill: color }, g);
        label.textContent = text;
        if (i === selected) {
          for (const [corner, cx, cy] of [["nw", b.x, b.y], ["ne", b.x + b.w, b.y], ["sw", b.x, b.y + b.h],
            ["se", b.x + b.w, b.y + b.h]]) {
            el("circle", { class: "handle", "data-handle": corner, cx: cx, cy: cy, r: (L * 0.35).toFixed(1),
              stroke: color }, g);
          }
        }
      });
      if (ui.list) {
        ui.list.replaceChildren(...boxes.map((b, i) => {
          const li = document.createElement("li");
          li.style.setProperty("--c", data.colors[b.cls] || "#ffffff");
          li.className = i === selected ? "sel" : "";
          li.textContent = `${b.cls} `;
          const size = document.createElement("span");
          size.className = "muted";
          size.textContent = `${b.w}×${b.h} at ${b.x}, ${b.y}`;
          li.appendChild(size);
          return li;
        }));
      }
      if (ui.sourceLabel && dirty()) ui.sourceLabel.textContent = "edited by you — saved with your review";
      ui.svg.classList.toggle("drawing", drawing);
    }

    // where a box's label goes so that all of it stays on the frame: above the box, else below it, else inside
    // its top; from its left edge, or ending at its right edge when it would run past the frame's
    function labelAt(b, text) {
      const width = text.length * L * 0.62;
      let y = b.y - L * 0.3;
      if (b.y < L * 1.1) y = b.y + b.h + L * 0.95 <= H ? b.y + b.h + L * 0.95 : b.y + L * 0.95;
      if (b.x + width <= W) return { x: b.x, y: y, anchor: "start" };
      return { x: Math.max(width, Math.min(W, b.x + b.w)), y: y, anchor: "end" };
    }

    function toImage(clientX, clientY) {
      const p = new DOMPoint(clientX, clientY).matrixTransform(ui.svg.getScreenCTM().inverse());
      return { x: p.x, y: p.y };
    }
    function select(i) {
      selected = boxes.length ? ((i % boxes.length) + boxes.length) % boxes.length : -1;
      render();
    }
    function addBox(b) {
      remember();
      clamp(b);
      boxes.push(b);
      selected = boxes.length - 1;
      drawing = false;
      render();
    }

    // ---- pointer: drag a box to move it, a corner to resize it; in draw mode, drag out a new one ----
    function pointerDown(e) {
      const handle = e.target.closest ? e.target.closest("[data-handle]") : null;
      const g = e.target.closest ? e.target.closest("g.region") : null;
      const at = toImage(e.clientX, e.clientY);
      if (drawing) {
        remember();
        boxes.push({ x: at.x, y: at.y, w: 0, h: 0, cls: defaultClass });
        selected = boxes.length - 1;
        drawing = false;
        gesture = { kind: "draw", x0: at.x, y0: at.y };
        render();
        return true;
      }
      if (g && ui.svg.contains(g)) {
        selected = Number(g.dataset.index);
        remember();
        gesture = { kind: handle ? handle.dataset.handle : "move", start: at, orig: { ...boxes[selected] },
          moved: false };
        render();
        return true;
      }
      if (selected >= 0) { selected = -1; render(); }
      return false;  // the page pans
    }
    function pointerMove(e) {
      if (!gesture) return false;
      const at = toImage(e.clientX, e.clientY);
      const b = boxes[selected];
      if (gesture.kind === "draw") {
        b.x = Math.min(gesture.x0, at.x); b.y = Math.min(gesture.y0, at.y);
        b.w = Math.abs(at.x - gesture.x0); b.h = Math.abs(at.y - gesture.y0);
      } else {
        const dx = at.x - gesture.start.x, dy = at.y - gesture.start.y, o = gesture.orig;
        gesture.moved = gesture.moved || Math.abs(dx) + Math.abs(dy) > 0.5;
        if (gesture.kind === "move") { b.x = o.x + dx; b.y = o.y + dy; } else {
          const left = gesture.kind.includes("w"), top = gesture.kind.includes("n");
          const x0 = left ? o.x + dx : o.x, x1 = left ? o.x + o.w : o.x + o.w + dx;
          const y0 = top ? o.y + dy : o.y, y1 = top ? o.y + o.h : o.y + o.h + dy;
          b.x = Math.min(x0, x1); b.w = Math.abs(x1 - x0); b.y = Math.min(y0, y1); b.h = Math.abs(y1 - y0);
        }
      }
      clamp(b);
      render();
      return true;
    }
    function pointerUp() {
      if (!gesture) return false;
      const b = boxes[selected];
      if (gesture.kind === "draw" && b.w < 4 && b.h < 4) {  // a click, not a drag: a default box centred there
        const side = Math.round(Math.min(W, H) * 0.15);
        Object.assign(b, { x: gesture.x0 - side / 2, y: gesture.y0 - side / 2, w: side, h: side });
      } else if (gesture.kind !== "draw" && !gesture.moved) {
        history.pop();  // a click that only selected: nothing to undo
      }
      clamp(b);
      gesture = null;
      render();
      return true;
    }

    // ---- keys (console.js asks first; true = handled) ----
    function key(e) {
      if (drawing) {
        if (e.key === "Enter") {
          const c = ui.centre();
          const at = toImage(c.clientX, c.clientY);
          const side = Math.round(Math.min(W, H) * 0.2);
          addBox({ x: at.x - side / 2, y: at.y - side / 2, w: side, h: side, cls: defaultClass });
          return true;
        }
        if (e.key === "Escape") { drawing = false; render(); return true; }
      }
      if (e.key === "d") {
        if (!defaultClass) return false;  // no defect class to give a box
        ui.showBoxes();
        drawing = true;
        render();
        return true;
      }
      if (e.key === "z") {
        const last = history.pop();
        if (last) { const state = JSON.parse(last); boxes = state.boxes; selected = state.selected; render(); }
        return true;
      }
      if (e.key === "Tab" && boxes.length) {
        ui.showBoxes();
        select(selected < 0 ? (e.shiftKey ? boxes.length - 1 : 0) : selected + (e.shiftKey ? -1 : 1));
        return true;
      }
      if (selected < 0) return false;
      const b = boxes[selected];
      const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (arrows[e.key]) {
        remember();
        const [dx, dy] = arrows[e.key];
        if (e.shiftKey) { b.w += dx * step; b.h += dy * step; } else { b.x += dx * step; b.y += dy * step; }
        clamp(b);
        render();
        return true;
      }
      if (e.key === "Delete" || e.key === "Backspace") {
        remember();
        boxes.splice(selected, 1);
        selected = Math.min(selected, boxes.length - 1);
        render();
        return true;
      }
      if (/^[1-9]$/.test(e.key)) {
        const cls = data.classes[Number(e.key) - 1];
        if (cls && cls !== "good" && cls !== b.cls) { remember(); b.cls = cls; render(); }
        return true;
      }
      if (e.key === "Escape") { selected = -1; render(); return false; }  // Escape also closes help etc.
      return false;
    }

    render();
    return {
      pointerDown, pointerMove, pointerUp, key,
      get selected() { return selected; },
      get drawing() { return drawing; },
      get count() { return boxes.length; },
      // the operator's boxes for the review; "" keeps the model's (nothing edited, and none of a person's before)
      payload() {
        if (!dirty() && data.source !== "operator") return "";
        return JSON.stringify(boxes.map((b) => ({ x: b.x, y: b.y, w: b.w, h: b.h, class: b.cls })));
      },
    };
  }

  window.LinesideBoxes = { create };
})();
