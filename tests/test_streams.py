"""Stream builders: class ids, groups, seeded orders, domain-incremental, and their errors."""

import pytest
import torch

from lifelong.data import LabelledData, class_incremental, domain_incremental
from lifelong.errors import LifelongError


def data(classes="abcdef", per_class=3, test_per_class=2):
    train = [(f"{c} train {i}", c) for c in classes for i in range(per_class)]
    test = [(f"{c} test {i}", c) for c in classes for i in range(test_per_class)]
    return LabelledData("toy", train, test)


def test_explicit_groups_define_order_and_global_ids():
    s = class_incremental(data(), groups=[["c", "a"], ["f", "b", "e"], ["d"]], task_names=["x", "y", "z"])
    assert [t.name for t in s] == ["x", "y", "z"]
    assert s.class_names == ["c", "a", "f", "b", "e", "d"]
    assert [t.classes for t in s] == [[0, 1], [2, 3, 4], [5]]
    assert [s.seen_classes(i) for i in range(3)] == [2, 5, 6]
    t1 = s.tasks[1]
    assert len(t1.train) == 9 and len(t1.test) == 6
    assert set(t1.train.labels.tolist()) == {2, 3, 4}
    for x, y in zip(t1.train.inputs, t1.train.labels.tolist()):
        assert x.startswith(s.class_names[y])


def test_seeded_order_is_reproducible_and_partitions_classes():
    a = class_incremental(data(), classes_per_task=4, seed=1)
    b = class_incremental(data(), classes_per_task=4, seed=1)
    c = class_incremental(data(), classes_per_task=4, seed=2)
    assert a.class_names == b.class_names
    assert sorted(a.class_names) == list("abcdef")
    assert [len(t.classes) for t in a] == [4, 2]
    assert a.class_names != c.class_names  # 720 orders; seeds 1 and 2 differ


def test_group_errors():
    with pytest.raises(LifelongError, match="'z' has no training examples"):
        class_incremental(data(), groups=[["a", "z"]])
    with pytest.raises(LifelongError, match="appears in two tasks"):
        class_incremental(data(), groups=[["a"], ["a", "b"]])
    with pytest.raises(LifelongError, match="empty class group"):
        class_incremental(data(), groups=[["a"], []])
    with pytest.raises(LifelongError, match="classes_per_task"):
        class_incremental(data(), classes_per_task=0)


def test_task_without_test_examples_is_an_error():
    d = data()
    d.test = [(x, y) for x, y in d.test if y != "b"]
    with pytest.raises(LifelongError, match="no test examples"):
        class_incremental(d, groups=[["a"], ["b"]])


def test_unseen_test_label_is_an_error():
    d = data()
    d.test.append(("mystery", "q"))
    with pytest.raises(LifelongError, match="'q' never appears in the training data"):
        class_incremental(d, classes_per_task=2)


def test_domain_incremental_shares_labels():
    d1 = LabelledData("photos", [("p1", "cat"), ("p2", "dog")], [("p3", "cat"), ("p4", "dog")])
    d2 = LabelledData("sketches", [("s1", "dog"), ("s2", "cat"), ("s5", "bird")], [("s3", "cat"), ("s4", "bird")])
    s = domain_incremental([d1, d2])
    assert s.scenario == "domain-incremental"
    assert s.class_names == ["cat", "dog", "bird"]
    assert [t.classes for t in s] == [[0, 1], [2]]
    assert s.tasks[1].train.labels.tolist() == [1, 0, 2]
    assert [t.name for t in s] == ["photos", "sketches"]


def test_image_tensors_are_stacked():
    train = [(torch.full((1, 2, 2), float(i)), "even" if i % 2 == 0 else "odd") for i in range(6)]
    s = class_incremental(LabelledData("img", train, train), classes_per_task=1, seed=0)
    assert isinstance(s.tasks[0].train.inputs, torch.Tensor)
    assert s.tasks[0].train.inputs.shape == (3, 1, 2, 2)
