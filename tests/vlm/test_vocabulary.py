import pytest

from edge.vlm.vocabulary import VocabularyError, load_vocabulary, parse_vocabulary


def test_vocabulary_needs_good_and_a_defect() -> None:
    with pytest.raises(VocabularyError, match="'good'"):
        parse_vocabulary({"classes": {"spot": ["x"]}}, "v.yaml")
    with pytest.raises(VocabularyError, match="at least one defect"):
        parse_vocabulary({"classes": {"good": ["x"]}}, "v.yaml")
    with pytest.raises(VocabularyError, match="template"):
        parse_vocabulary({"templates": ["no slot"], "classes": {"good": ["x"], "spot": ["y"]}}, "v.yaml")
    vocab = load_vocabulary()
    assert "good" in vocab.classes and vocab.defect_classes
