"""The profile's frame graph on disk: `frame.onnx` (what the profile computes per frame, after the image tower;
edge.fit.frame_graph builds it) and `frame_reference.npz` (tower outputs of a few of the line's own images and what
the graph must return for them). Both are listed with their sha256 in profile.json; loading a version checks the
digests and runs the graph on the reference inputs: a profile whose files or outputs do not match is refused with
one line, as a model pack is.

A version may also hold `frame_int8.onnx`: the same graph with the few-shot products over the memory bank in int8
(ONNX Runtime dynamic quantisation: the patches quantised per frame, the bank per tensor at fit time) — about half
the graph's time on a CPU with VNNI. It is checked against the same references within `INT8_ATOL`, and only where
it is to run (edge.inspect.inspector picks it): its digest must match like the others, but a CPU on which its
outputs drift from the references gets the float graph and a warning, not a refused profile.

    frame_reference.npz: in_<input name> (float16, the tower's outputs), out_<output name> (float32), atol
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.durable import npz_bytes

GRAPH_FILE = "frame.onnx"
INT8_FILE = "frame_int8.onnx"
REFERENCE_FILE = "frame_reference.npz"
ATOL = 2e-3  # the outputs are z-scores, cosines and logits of order 1; float32 kernels differ by ~1e-5
INT8_ATOL = 0.1  # int8 products move a map's z-scores by ~0.02 and the line model's logits by ~0.005


class GraphError(ValueError):
    """A frame graph that does not match its digest or its reference outputs; one line."""


@dataclass
class FrameGraphFiles:
    """The graph's ONNX bytes and its reference arrays; `path` is the ONNX file once the version is on disk."""

    onnx: bytes = field(repr=False)
    reference: dict[str, np.ndarray] = field(repr=False)
    input_names: list[str]  # the graph's inputs in order (the image tower's outputs)
    path: Path | None = None
    int8: bytes | None = field(default=None, repr=False)  # the graph with int8 few-shot products, where it has any
    int8_path: Path | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()

    @property
    def int8_sha256(self) -> str:
        return hashlib.sha256(self.int8).hexdigest() if self.int8 is not None else ""

    def write(self, directory: Path) -> dict[str, Any]:
        """Write both files into `directory`; the spec profile.json keeps for them."""
        reference = npz_bytes(self.reference)
        (directory / GRAPH_FILE).write_bytes(self.onnx)
        (directory / REFERENCE_FILE).write_bytes(reference)
        spec = {"file": GRAPH_FILE, "sha256": self.sha256, "reference": REFERENCE_FILE,
                "reference_sha256": hashlib.sha256(reference).hexdigest(), "inputs": self.input_names,
                "outputs": sorted(k[4:] for k in self.reference if k.startswith("out_"))}
        if self.int8 is not None:
            (directory / INT8_FILE).write_bytes(self.int8)
            spec |= {"int8_file": INT8_FILE, "int8_sha256": self.int8_sha256}
        return spec

    @classmethod
    def read(cls, directory: Path, spec: dict[str, Any]) -> FrameGraphFiles:
        """Both files, their digests checked against `spec`; GraphError names the file that differs."""
        onnx = (directory / spec["file"]).read_bytes()
        reference = (directory / spec["reference"]).read_bytes()
        int8 = (directory / spec["int8_file"]).read_bytes() if spec.get("int8_file") else None
        checks = [(spec["file"], onnx, spec["sha256"]), (spec["reference"], reference, spec["reference_sha256"])]
        if int8 is not None:
            checks.append((spec["int8_file"], int8, spec["int8_sha256"]))
        for name, data, want in checks:
            if hashlib.sha256(data).hexdigest() != want:
                raise GraphError(f"{name}: sha256 differs from profile.json (changed or damaged on disk)")
        with np.load(io.BytesIO(reference)) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls(onnx, arrays, list(spec["inputs"]), directory / spec["file"], int8,
                   directory / spec["int8_file"] if int8 is not None else None)

    def inputs(self) -> list[np.ndarray]:
        return [np.asarray(self.reference[f"in_{n}"], np.float32) for n in self.input_names]

    def verify(self) -> None:
        """Run the graph on its reference inputs (ONNX Runtime, CPU, as the pack check does) and compare;
        GraphError naming the first output that differs."""
        self._verify(self.onnx, GRAPH_FILE, float(self.reference.get("atol", ATOL)))

    def verify_int8(self) -> None:
        """The same for the int8 graph, within INT8_ATOL (on this CPU's int8 kernels)."""
        if self.int8 is None:
            raise GraphError(f"{INT8_FILE}: this profile version has none")
        self._verify(self.int8, INT8_FILE, INT8_ATOL)

    def _verify(self, onnx: bytes, file: str, atol: float) -> None:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise GraphError(f"{file}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, dict(zip(self.input_names, self.inputs(), strict=True))),
                       strict=True))
        for key, want in self.reference.items():
            if not key.startswith("out_"):
                continue
            name = key[4:]
            if name not in got:
                raise GraphError(f"{file}: has no output '{name}'")
            diff = float(np.abs(np.asarray(got[name], np.float64) - want).max()) if want.size else 0.0
            if not diff <= atol:
                raise GraphError(f"{file}: output '{name}' differs from its reference by {diff:.2g} "
                                 f"(limit {atol:g})")
