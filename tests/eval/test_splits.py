from edge.datasets import elpv_per_class, elpv_split


def test_elpv_split_is_stratified_seeded_and_disjoint() -> None:
    train, test = elpv_split(0)
    assert len(train) + len(test) == 2624
    assert not {c.path for c in train} & {c.path for c in test}
    assert [c.path for c in elpv_split(0)[1]] == [c.path for c in test]
    for label in ("0", "0.33", "0.67", "1"):
        n_train = sum(c.label == label for c in train)
        n_test = sum(c.label == label for c in test)
        assert abs(n_train / (n_train + n_test) - 0.75) < 0.02
    few = elpv_per_class(train, 50, 0)
    assert sum(c.defective for c in few) == 50 and sum(not c.defective for c in few) == 50
    assert {c.path for c in few} <= {c.path for c in train}
