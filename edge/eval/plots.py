"""PNG figures drawn with OpenCV (no plotting library in the runtime): ROC curves, confusion matrix, example frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.findings import Region

_COLOURS = [(200, 90, 20), (40, 160, 40), (30, 30, 220), (160, 40, 160), (20, 160, 200), (90, 90, 90), (0, 110, 255)]


def lines_png(curves: dict[str, tuple[np.ndarray, np.ndarray, str]], title: str, x_label: str, path: Path,
              y_max: float = 1.0, diagonal: bool = False, markers: bool = False) -> None:
    """Curves (x in [0, 1], y in [0, y_max]) with a legend of `name value`; a dashed diagonal on request."""
    size, pad = 420, 50
    img = np.full((size + 2 * pad, size + 2 * pad + 230, 3), 255, np.uint8)
    x0, y0 = pad, pad + size
    cv2.rectangle(img, (x0, pad), (x0 + size, y0), (0, 0, 0), 1)
    if diagonal:
        cv2.line(img, (x0, y0), (x0 + size, y0 - int(size * min(1.0, 1.0 / y_max))), (200, 200, 200), 1)
    for t in np.linspace(0, 1, 6):
        cv2.putText(img, f"{t:.1f}", (x0 + int(t * size) - 10, y0 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{t * y_max:.2g}", (x0 - 36, y0 - int(t * size) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1)
    cv2.putText(img, x_label, (x0 + size // 2 - 70, y0 + 38), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, title, (x0, pad - 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    for i, (name, (x, y, value)) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        ok = np.isfinite(x) & np.isfinite(y)
        pts = np.stack([x0 + x[ok] * size, y0 - np.clip(y[ok] / y_max, 0, 1) * size], axis=1).astype(np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        if markers:
            for px, py in pts:
                cv2.circle(img, (int(px), int(py)), 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, f"{name} {value}", (x0 + size + 12, pad + 20 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str, path: Path) -> None:
    lines_png({name: (fpr, tpr, f"{auc:.3f}") for name, (fpr, tpr, auc) in curves.items()}, title,
              "false positive rate", path, diagonal=True)


def confusion_png(matrix: np.ndarray, labels: list[str], title: str, path: Path,
                  col_labels: list[str] | None = None) -> None:
    """Counts with rows = truth (`labels`) and columns = predicted (`col_labels`, the same labels by default)."""
    cols = col_labels or labels
    cell, pad = 90, 110
    img = np.full((pad + len(labels) * cell + 20, pad + len(cols) * cell + 20, 3), 255, np.uint8)
    peak = max(int(matrix.max()), 1)
    for i in range(len(labels)):
        for j in range(len(cols)):
            shade = int(255 - 180 * matrix[i, j] / peak)
            x, y = pad + j * cell, pad + i * cell
            cv2.rectangle(img, (x, y), (x + cell, y + cell), (255, shade, shade), -1)
            cv2.rectangle(img, (x, y), (x + cell, y + cell), (0, 0, 0), 1)
            cv2.putText(img, str(int(matrix[i, j])), (x + 25, y + 52), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
        cv2.putText(img, labels[i], (8, pad + i * cell + 50), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    for j, name in enumerate(cols):
        cv2.putText(img, name, (pad + j * cell + 10, pad - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, f"{title} (rows truth, cols predicted)", (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


def example_png(bgr: np.ndarray, anomaly_map: np.ndarray, regions: list[Region], headline: str,
                truth_mask: np.ndarray | None, path: Path) -> None:
    """The frame, beside it the heatmap overlay with the found boxes (green truth outline), captions below."""
    h, w = bgr.shape[:2]
    up = cv2.resize(anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(up.min()), float(up.max())
    heat = cv2.applyColorMap(((up - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    overlay = cv2.addWeighted(bgr, 0.55, heat, 0.45, 0)
    if truth_mask is not None:
        contours, _ = cv2.findContours(truth_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, contours, -1, (0, 255, 0), 1)
    for r in regions:
        cv2.rectangle(overlay, (r.x, r.y), (r.x + r.w, r.y + r.h), (255, 255, 255), 2)
    lines = [headline] + [f"{r.caption}: \"{r.description}\"" for r in regions[:3]]
    text_h = 18 * len(lines) + 8
    canvas = np.full((h + text_h, 2 * w + 8, 3), 255, np.uint8)
    canvas[:h, :w] = bgr
    canvas[:h, w + 8:] = overlay
    for i, line in enumerate(lines):
        cv2.putText(canvas, line, (4, h + 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)
