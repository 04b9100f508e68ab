"""How far apart the starter pack's global embeddings lie, by kind of textile frame: what the station's
look-alike distance (``station.group_distance``, cosine) is set against.

    .venv/bin/python -m edge.bench.lookalike [--frames 120]

Encodes ``--frames`` textile test frames (a fixed random draw) with the starter pack's image tower and prints, for
each pair of kinds (good, local defect, global defect), the 5th, 50th and 95th percentile of the cosine distance
between two frames, and the distance of one frame to itself brightened by 20 grey levels, shifted by 7 px,
mirrored and blurred.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from edge.datasets import textile_split

KINDS = ("nominal", "local", "global")


def _read(path: object) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    args = ap.parse_args(argv)
    from edge.demo import default_pack_dir
    from edge.vlm.pack import load_pack
    from edge.vlm.runtime import ImageEncoder

    encoder = ImageEncoder(load_pack(default_pack_dir()), "cpu")
    files = textile_split("test")
    chosen = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:args.frames]]
    images = [_read(p) for p, _ in chosen]
    g = np.array([_unit(encoder.encode(im).global_.astype(np.float32)) for im in images])
    labels = np.array([label for _, label in chosen])
    distance = 1 - g @ g.T
    print(f"cosine distance between two frames ({args.frames} textile test frames): p5 / p50 / p95")
    for i, a in enumerate(KINDS):
        for b in KINDS[i:]:
            block = distance[np.ix_(labels == a, labels == b)]
            if a == b:
                block = block[~np.eye(len(block), dtype=bool)]
            p5, p50, p95 = np.percentile(block, [5, 50, 95])
            print(f"  {a:8s} – {b:8s} {p5:.3f} / {p50:.3f} / {p95:.3f}")
    image = images[0]
    changed: dict[str, np.ndarray] = {
        "brighter by 20": cv2.convertScaleAbs(image, alpha=1, beta=20), "shifted 7 px": np.roll(image, 7, 1),
        "mirrored": np.ascontiguousarray(image[:, ::-1]), "blurred (σ 1.5)": cv2.GaussianBlur(image, (0, 0), 1.5)}
    print("one frame against itself:")
    for name, other in changed.items():
        print(f"  {name:16s} {1 - float(g[0] @ _unit(encoder.encode(other).global_.astype(np.float32))):.3f}")


if __name__ == "__main__":
    main()
