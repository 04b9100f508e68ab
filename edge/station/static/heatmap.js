// lineside station: the anomaly heatmap of the item page. It comes as an 8-bit grey PNG on the model's grid (e.g.
// 32×32; grey = clip(z / 8, 0, 1) × 255, z in σ of the line's good frames); the canvas stretches over the frame.
// Two ways to draw it: "fill", coloured through a lookup table, transparent below 1 σ, at the chosen opacity; and
// "contours", lines at 2, 4 and 6 σ on a smooth 8× upsampling, which leave the defect's own pixels visible.
(function () {
  "use strict";
  const STOPS = [[0, 0, 0, 4], [0.25, 87, 16, 110], [0.5, 188, 55, 84], [0.75, 249, 142, 9], [1, 252, 255, 164]];
  const LEVELS = [[0.75, [255, 80, 80]], [0.5, [255, 200, 40]], [0.25, [90, 200, 255]]];  // 6 σ, 4 σ, 2 σ
  const UPSAMPLE = 8;
  const greys = new WeakMap();

  function heatColour(t) {
    let i = 1;
    while (i < STOPS.length - 1 && t > STOPS[i][0]) i++;
    const [t0, ...a] = STOPS[i - 1], [t1, ...b] = STOPS[i];
    const f = Math.max(0, Math.min(1, (t - t0) / (t1 - t0)));
    return a.map((v, k) => Math.round(v + (b[k] - v) * f));
  }
  function grey(canvas, done) {
    if (greys.has(canvas)) { done(greys.get(canvas)); return; }
    const png = new Image();
    png.onload = () => {
      const src = document.createElement("canvas");
      src.width = png.naturalWidth; src.height = png.naturalHeight;
      const ctx = src.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(png, 0, 0);
      greys.set(canvas, src);
      done(src);
    };
    png.src = "data:image/png;base64," + canvas.dataset.png;
  }
  function fill(canvas, src, opacity) {
    canvas.width = src.width; canvas.height = src.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const px = src.getContext("2d").getImageData(0, 0, src.width, src.height);
    for (let i = 0; i < px.data.length; i += 4) {
      const t = px.data[i] / 255;
      const [r, g, b] = heatColour(t);
      px.data[i] = r; px.data[i + 1] = g; px.data[i + 2] = b;
      px.data[i + 3] = Math.round(255 * opacity * Math.max(0, Math.min(1, (t - 0.125) / 0.375)));
    }
    ctx.putImageData(px, 0, 0);
  }
  function contours(canvas, src, opacity) {
    const w = src.width * UPSAMPLE, h = src.height * UPSAMPLE;
    const big = document.createElement("canvas");
    big.width = w; big.height = h;
    const bctx = big.getContext("2d", { willReadFrequently: true });
    bctx.imageSmoothingEnabled = true;
    bctx.imageSmoothingQuality = "high";
    bctx.drawImage(src, 0, 0, w, h);
    const v = bctx.getImageData(0, 0, w, h).data;
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const out = ctx.createImageData(w, h);
    const alpha = Math.round(255 * Math.max(0.6, opacity));
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (y * w + x) * 4, t = v[i] / 255;
        const right = x + 1 < w ? v[i + 4] / 255 : t, down = y + 1 < h ? v[i + 4 * w] / 255 : t;
        for (const [level, rgb] of LEVELS) {
          if ((t >= level) !== (right >= level) || (t >= level) !== (down >= level)) {
            out.data[i] = rgb[0]; out.data[i + 1] = rgb[1]; out.data[i + 2] = rgb[2]; out.data[i + 3] = alpha;
            break;
          }
        }
      }
    }
    ctx.putImageData(out, 0, 0);
  }
  // draw(canvas, "fill" | "contours", opacity 0..1): paints the canvas, then marks it data-ready="<mode>"
  function draw(canvas, mode, opacity) {
    grey(canvas, (src) => {
      if (mode === "contours") contours(canvas, src, opacity); else fill(canvas, src, opacity);
      canvas.dataset.ready = mode;
    });
  }
  window.LinesideHeatmap = { draw };
})();
