"""An inspected frame as the wire item the station receives (edge.transport.schema.ReviewItem)."""

from __future__ import annotations

import time
from base64 import b64encode

import cv2
import numpy as np

from edge.capture.frame import Frame
from edge.config import LineConfig
from edge.inspect.inspector import Inspection
from edge.transport.schema import HEATMAP_Z_MAX, ReviewItem, ReviewReason, embedding_b64


def review_item(cfg: LineConfig, frame: Frame, frame_id: str, result: Inspection, versions: tuple[str, str],
                reason: ReviewReason = "uncertain") -> ReviewItem:
    height, width = frame.image.shape[:2]
    # the map the regions were cut from, for the console's heatmap overlay, on its own grid (a few KB, not a
    # frame-sized image), on a fixed scale (good-image standard deviations up to HEATMAP_Z_MAX, or the line model's
    # defect probability), so that a quiet frame looks quiet rather than stretched
    if result.region_map is not None and result.region_map_is_logit:
        level = 1.0 / (1.0 + np.exp(-np.clip(result.region_map, -50, 50)))
    else:
        level = (result.anomaly_map if result.region_map is None else result.region_map) / HEATMAP_Z_MAX
    grey = np.round(np.clip(level, 0.0, 1.0) * 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", grey)
    return ReviewItem(
        frame_id=frame_id, line_id=cfg.id, source_id=frame.source_id, seq=frame.seq,
        captured_wall=frame.wall_ts, decided_wall=time.time(), width=width, height=height,
        verdict=result.verdict, class_scores=result.class_scores, anomaly_score=result.anomaly_score,
        anomaly_threshold=result.anomaly_threshold, reason=reason,
        # an OoD frame's p(wrong) means nothing (the predictor never saw anything like it): first in the queue
        uncertainty=1.0 if reason == "ood" else result.uncertainty.value,
        regions=list(result.regions),
        pack_version=versions[0], profile_version=versions[1],
        heatmap_png=b64encode(png.tobytes()).decode("ascii") if ok else None,
        # the global embedding (float16, ~0.7 KB base64 for 256-d): the station groups look-alike frames by it
        embedding=embedding_b64(result.embedding) if result.embedding is not None else None)
