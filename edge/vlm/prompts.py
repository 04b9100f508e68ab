"""Text bank: the line vocabulary embedded once by the pack's text tower (prompt ensembles, WinCLIP-style)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.findings import GOOD
from edge.vlm.runtime import TextEncoder
from edge.vlm.vocabulary import Vocabulary


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


@dataclass(frozen=True)
class TextBank:
    classes: list[str]  # "good" first, then the defect classes
    class_embeddings: np.ndarray  # [C, D] unit-norm mean over states × templates
    state_embeddings: dict[str, np.ndarray]  # class -> [S, D] one per state (mean over templates)
    states: dict[str, list[str]]

    @property
    def defect_classes(self) -> list[str]:
        return self.classes[1:]


def build_text_bank(vocabulary: Vocabulary, encoder: TextEncoder) -> TextBank:
    classes = [GOOD] + vocabulary.defect_classes
    state_embeddings: dict[str, np.ndarray] = {}
    class_rows = []
    for cls in classes:
        per_state = []
        for sentences in vocabulary.prompts(cls):
            per_state.append(_unit(encoder.encode(sentences).mean(axis=0)))
        states = np.stack(per_state)
        state_embeddings[cls] = states
        class_rows.append(_unit(states.mean(axis=0)))
    return TextBank(classes, np.stack(class_rows).astype(np.float32), state_embeddings,
                    {c: list(vocabulary.classes[c]) for c in classes})
