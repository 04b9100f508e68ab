"""The line's defect vocabulary: its classes, each with descriptions of its states, and the prompt templates that
turn a description into sentences for the text tower (prompt ensembles, WinCLIP-style).

    templates: ["a photo of {} fabric.", ...]
    classes: {good: [flawless, normal, ...], spot: [a dark spot on, ...], ...}   # "good" and ≥ 1 defect class
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.findings import GOOD

DEFAULT_VOCAB = Path(__file__).with_name("default_vocab.yaml")


class VocabularyError(ValueError):
    """A vocabulary that cannot be used; one line naming the file and the problem."""


@dataclass(frozen=True)
class Vocabulary:
    templates: list[str]
    classes: dict[str, list[str]]  # class -> states; must contain "good" and at least one defect class

    @property
    def defect_classes(self) -> list[str]:
        return [c for c in self.classes if c != GOOD]

    def prompts(self, cls: str) -> list[list[str]]:
        """For each state of a class, its sentence in every template."""
        return [[t.format(state) for t in self.templates] for state in self.classes[cls]]

    def to_dict(self) -> dict[str, Any]:
        return {"templates": self.templates, "classes": self.classes}


def parse_vocabulary(data: Any, source: str) -> Vocabulary:
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise VocabularyError(f"{source}: vocabulary needs 'classes:' (class -> list of descriptions)")
    templates = data.get("templates") or ["{}"]
    if not all(isinstance(t, str) and "{}" in t for t in templates):
        raise VocabularyError(f"{source}: every template needs one '{{}}' where the description goes")
    classes: dict[str, list[str]] = {}
    for name, states in data["classes"].items():
        if not isinstance(states, list) or not states or not all(isinstance(s, str) and s for s in states):
            raise VocabularyError(f"{source}: class '{name}' needs a non-empty list of descriptions")
        classes[str(name)] = [str(s) for s in states]
    if GOOD not in classes:
        raise VocabularyError(f"{source}: vocabulary needs a '{GOOD}' class")
    if len(classes) < 2:
        raise VocabularyError(f"{source}: vocabulary needs at least one defect class besides '{GOOD}'")
    return Vocabulary(list(templates), classes)


def load_vocabulary(path: Path | None = None) -> Vocabulary:
    path = path or DEFAULT_VOCAB
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise VocabularyError(f"{path}: cannot read vocabulary: {exc}") from None
    return parse_vocabulary(data, str(path))
