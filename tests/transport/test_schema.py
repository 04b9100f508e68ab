"""The review item's global embedding on the wire: optional, bounded, base64 float16, validated by the station."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from edge.transport.schema import (
    MAX_EMBEDDING_CHARS,
    MAX_EMBEDDING_DIMS,
    ReviewItem,
    WireError,
    decode_item,
    embedding_b64,
    embedding_of,
    encode_item,
)

JPEG = b"\xff\xd8" + b"\x00" * 16 + b"\xff\xd9"


def _item(**over) -> ReviewItem:
    now = time.time()
    data = dict(frame_id="line-1:cam0:b:1", line_id="line-1", source_id="cam0", seq=1, captured_wall=now,
                decided_wall=now, width=64, height=48, verdict="spot", class_scores={"good": 0.4, "spot": 0.6},
                anomaly_score=1.0, anomaly_threshold=0.5, uncertainty=0.5, pack_version="p", profile_version="v")
    data.update(over)
    return ReviewItem(**data)


def test_an_embedding_travels_as_float16_and_comes_back_within_float16_precision():
    vector = np.random.default_rng(0).normal(size=256).astype(np.float32)
    vector /= np.linalg.norm(vector)
    item = _item(embedding=embedding_b64(vector))
    assert len(item.embedding) == 684  # 512 bytes of float16, base64
    back = embedding_of(decode_item(encode_item(item, JPEG))[0].embedding)
    assert back.dtype == np.float32 and back.shape == (256,)
    assert np.abs(back - vector).max() < 1e-3


def test_without_an_embedding_the_item_is_as_before():
    assert decode_item(encode_item(_item(), JPEG))[0].embedding is None
    assert "embedding" not in _item().model_dump(exclude_none=True)


@pytest.mark.parametrize(("bad", "message"), [
    ("not base64!", "not base64"),
    ("", "not 1 to"),
    (base64.b64encode(b"\x00\x3c\x00").decode(), "not 1 to"),  # an odd number of bytes
    (base64.b64encode(np.array([1.0, np.nan], "<f2").tobytes()).decode(), "not finite"),
    (base64.b64encode(np.array([np.inf], "<f2").tobytes()).decode(), "not finite"),
    (base64.b64encode(np.zeros(8, "<f2").tobytes()).decode(), "all zero"),
    (base64.b64encode(np.ones(MAX_EMBEDDING_DIMS + 1, "<f2").tobytes()).decode(), "not 1 to 2048"),
    ("A" * (MAX_EMBEDDING_CHARS + 4), "at most"),
])
def test_a_bad_embedding_is_refused_with_what_is_wrong(bad: str, message: str):
    header = json.loads(encode_item(_item(), JPEG)[1])
    frames = [b"item", json.dumps({**header, "embedding": bad}).encode(), JPEG]
    with pytest.raises(WireError, match=f"embedding.*{message}"):
        decode_item(frames)


def test_the_largest_embedding_fits_its_bound():
    text = embedding_b64(np.ones(MAX_EMBEDDING_DIMS, np.float32))
    assert len(text) <= MAX_EMBEDDING_CHARS
    assert embedding_of(text).shape == (MAX_EMBEDDING_DIMS,)
