"""Per-step timing of one line's frame path: encode, raw scores (zero- + few-shot), combine + smooth, inspect.

    .venv/bin/python scripts/profile_inspect.py [--frames 40]

Calibrates a throwaway profile on 30 textile train good images (as `lineside bench` does), then times each step
over the first N textile test frames, one after the other, in this process. Quote ratios from one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge.datasets import textile_split
from edge.demo import default_pack_dir
from edge.fit.calibrate import calibrate
from edge.grounding.anomaly import combine, raw_scores, smooth
from edge.images import read_image
from edge.inspect.inspector import Inspector
from edge.vlm.pack import load_pack
from edge.vlm.vocabulary import load_vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    pack = load_pack(default_pack_dir())
    good = [p for p, label in textile_split("train") if label == "nominal"][:30]
    with tempfile.TemporaryDirectory() as tmp:
        profile = calibrate(pack, load_vocabulary(), good, "profile", Path(tmp), provider="cpu")
    inspector = Inspector(pack, profile, "cpu")
    frames = [read_image(p) for p, _ in textile_split("test")[: args.frames]]
    embs = [inspector.image_encoder.encode(f) for f in frames]
    text, scale = inspector.text_bank, pack.logit_scale
    raws = [raw_scores(e, profile.bank, text.class_embeddings, scale) for e in embs]

    def timed(name: str, step: Callable[[int], object]) -> None:
        started = time.perf_counter()
        for i in range(len(frames)):
            step(i)
        print(f"{name:24s} {(time.perf_counter() - started) / len(frames) * 1000:7.2f} ms")

    timed("encode", lambda i: inspector.image_encoder.encode(frames[i]))
    timed("raw_scores", lambda i: raw_scores(embs[i], profile.bank, text.class_embeddings, scale))
    timed("combine + smooth", lambda i: smooth(combine(raws[i], profile.patch_stats, profile.weights)))
    timed("inspect_embedding", lambda i: inspector.inspect_embedding(embs[i], frames[i]))
    timed("inspect (all)", lambda i: inspector.inspect(frames[i]))


if __name__ == "__main__":
    main()
