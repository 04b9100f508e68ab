"""The daemon's wire item carries the frame's global embedding, from the real starter pack's image tower."""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge.capture.frame import Frame
from edge.config import LineConfig
from edge.inspect.review_item import review_item
from edge.transport.schema import ReviewItem, embedding_of
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEncoder
from tests.conftest import PACK


def test_the_review_item_carries_the_global_embedding_of_the_frame(textile_images, calibrated_profile):
    from edge.inspect.inspector import Inspector
    from edge.profile.versions import load_profile

    pack = load_pack(PACK)
    inspector = Inspector(pack, load_profile(calibrated_profile, pack_version=pack.version), "cpu")
    image = cv2.imread(str(sorted(textile_images["test_local"].iterdir())[0]))
    result = inspector.inspect(image)
    cfg = LineConfig(id="line-1", source={"kind": "folder", "path": "."})
    frame = Frame(source_id="cam0", seq=3, mono_ts=time.monotonic(), wall_ts=time.time(), image=image,
                  origin="test")
    item = review_item(cfg, frame, "line-1:cam0:b:3", result, inspector.versions)
    assert item.embedding is not None
    sent = embedding_of(ReviewItem.model_validate_json(item.model_dump_json()).embedding)
    expected = ImageEncoder(pack, "cpu").encode(image).global_
    assert sent.shape == (pack.embedding_dim,)
    assert float(sent @ expected / np.linalg.norm(sent) / np.linalg.norm(expected)) > 0.9999
