"""User-data loaders: JSONL / CSV files and Hugging Face datasets."""

import json

import pytest

from lifelong.data.benchmarks import check_benchmark, load_stream
from lifelong.data.files import load_file
from lifelong.data.hf import from_hf_dataset
from lifelong.data.task import class_incremental
from lifelong.errors import LifelongError


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def rows_for(labels, per_class):
    return [{"text": f"{label} example {i}", "label": label} for label in labels for i in range(per_class)]


def error(path, **kw):
    with pytest.raises(LifelongError) as e:
        load_file(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- good input ---------------------------------------------------------------------------------------------


def test_jsonl_holdout(tmp_path):
    path = write_jsonl(tmp_path / "news.jsonl", rows_for("abcd", 10))
    data = load_file(path)
    assert data.name == "news" and data.source == str(path)
    assert len(data.train) == 32 and len(data.test) == 8 and data.val == []
    assert sorted(data.class_names()) == list("abcd")
    assert {y for _, y in data.test} == set("abcd")
    assert all(isinstance(x, str) and isinstance(y, str) for x, y in data.train + data.test)


def test_int_labels_and_blank_lines(tmp_path):
    path = tmp_path / "ints.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n   \n{"text": "b", "label": 1}\n{"text": "c", "label": 2}\n'
                    '{"text": "d", "label": "2"}\n')
    data = load_file(path)
    assert sorted({y for _, y in data.train + data.test}) == ["1", "2"]


def test_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    lines = ["body,sentiment"] + [f'"text, with comma {i}",{"pos" if i % 2 else "neg"}' for i in range(10)]
    path.write_text("\n".join(lines) + "\n")
    data = load_file(path, text_field="body", label_field="sentiment")
    assert data.name == "reviews"
    assert len(data.train) == 8 and len(data.test) == 2
    assert data.train[0][0].startswith("text, with comma")
    assert {y for _, y in data.test} == {"pos", "neg"}


def test_split_field(tmp_path):
    rows = [
        {"text": "t1", "label": "x", "split": "train"},
        {"text": "t2", "label": "y", "split": "TRAIN"},
        {"text": "v1", "label": "x", "split": "validation"},
        {"text": "v2", "label": "y", "split": "val"},
        {"text": "s1", "label": "x", "split": "test"},
    ]
    data = load_file(write_jsonl(tmp_path / "s.jsonl", rows))
    assert data.train == [("t1", "x"), ("t2", "y")]
    assert data.val == [("v1", "x"), ("v2", "y")]
    assert data.test == [("s1", "x")]


def test_split_field_csv(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("text,label,split\na,x,train\nb,y,train\nc,x,test\nd,y,test\n")
    data = load_file(path)
    assert data.train == [("a", "x"), ("b", "y")] and data.test == [("c", "x"), ("d", "y")]


def test_separate_test_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows_for("ab", 3))
    test = tmp_path / "test.csv"
    test.write_text("text,label\nnew a,a\nnew b,b\n")
    data = load_file(train, test_path=test)
    assert len(data.train) == 6
    assert data.test == [("new a", "a"), ("new b", "b")]


def test_holdout_is_seeded_and_keeps_every_class_in_train(tmp_path):
    rows = rows_for("abc", 7) + rows_for("d", 2) + rows_for("e", 1)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    a, b, c = load_file(path, seed=3), load_file(path, seed=3), load_file(path, seed=4)
    assert a.train == b.train and a.test == b.test
    assert a.test != c.test
    assert set(a.class_names()) == set("abcde")
    test_counts = {y: sum(1 for _, t in a.test if t == y) for y in "abcde"}
    assert test_counts == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 0}  # round(0.2 * 7) = 1; singleton stays
    assert sorted(a.train + a.test) == sorted((r["text"], r["label"]) for r in rows)


def test_class_incremental_from_file(tmp_path):
    data = load_file(write_jsonl(tmp_path / "ci.jsonl", rows_for("abcde", 5)))
    stream = class_incremental(data, classes_per_task=2, seed=0)
    assert [len(t.classes) for t in stream] == [2, 2, 1]
    seen = set()
    for t in stream:
        assert not seen & set(t.classes)
        seen |= set(t.classes)
        assert set(t.train.labels.tolist()) == set(t.classes) == set(t.test.labels.tolist())
    assert sorted(stream.class_names) == list("abcde")


# --- bad input: one line naming the file and the line -------------------------------------------------------


def test_missing_file(tmp_path):
    msg = error(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in msg and "not found" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    msg = error(path)
    assert "data.txt" in msg and "'.txt'" in msg


def test_invalid_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    assert "bad.jsonl:3: invalid JSON" in error(path)


def test_line_not_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n["b", "x"]\n')
    assert "bad.jsonl:2: expected a JSON object, got list" in error(path)


def test_missing_label_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"},
                                                 {"text": "c", "lbl": "x"}])
    assert error(path).endswith("bad.jsonl:3: missing field 'label' (row has: text, lbl)")


def test_missing_text_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"sentence": "a", "label": "x"}])
    assert "bad.jsonl:1: missing field 'text' (row has: sentence, label)" in error(path)


def test_empty_text(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "x"}, {"text": "  \t", "label": "x"}])
    assert "bad.jsonl:2: empty text" in error(path)


def test_empty_label(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\na,x\nb,\n")
    assert "bad.csv:3: empty label" in error(path)


def test_invalid_utf8_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "x"}\n')
    assert "bad.jsonl:2: invalid UTF-8" in error(path)


def test_invalid_utf8_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\na,x\nb,y\n\xff\xfe,x\n")
    assert "bad.csv:4: invalid UTF-8" in error(path)


def test_unknown_split(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "x", "split": "train"},
                                                 {"text": "b", "label": "x", "split": "dev"}])
    assert "bad.jsonl:2: unknown split 'dev'" in error(path)


def test_split_on_some_rows_only(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "x", "split": "train"},
                                                 {"text": "b", "label": "x"}])
    assert "bad.jsonl:2: no 'split' value" in error(path)


def test_no_rows(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert "empty.jsonl: no rows" in error(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    assert "header.csv: no rows" in error(header_only)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    assert "blank.csv: no rows" in error(blank)


def test_csv_missing_header_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,category\na,x\n")
    assert "bad.csv:1: header has no column 'label' (columns: text, category)" in error(path)


def test_csv_short_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\na,x\nb\n")
    assert "bad.csv:3: missing field 'label' (row has: text)" in error(path)


def test_test_label_never_trained(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows_for("ab", 2))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "z", "label": "c"}])
    msg = error(train, test_path=test)
    assert "train.jsonl" in msg and "'c' never appears in the training data" in msg


def test_bad_row_in_test_file_names_test_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows_for("ab", 2))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "z", "label": "a"}, {"text": "", "label": "a"}])
    assert "test.jsonl:2: empty text" in error(train, test_path=test)


def test_no_test_examples(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", rows_for("abc", 1))
    assert "one.jsonl: no test examples" in error(path)
    split = write_jsonl(tmp_path / "s.jsonl", [{"text": "a", "label": "x", "split": "train"}])
    assert "s.jsonl: no test examples" in error(split)


# --- tasks from a field of the rows or a tasks file ------------------------------------------------------------


def batch_rows():
    """Classes b, a arrive in batch "2", c and d in batch 1 (an int: it becomes "1"); one test row per class."""
    rows = []
    for label, batch in (("b", "2"), ("a", "2"), ("c", 1), ("b", "2"), ("d", 1), ("a", "2"), ("c", 1), ("d", 1)):
        rows.append({"text": f"{label} {len(rows)}", "label": label, "batch": batch, "split": "train"})
    rows += [{"text": f"{label} test", "label": label, "batch": batch, "split": "test"}
             for label, batch in (("d", 1), ("a", "2"), ("c", 1), ("b", "2"))]
    return rows


def task_classes(stream):
    return [[stream.class_names[c] for c in t.classes] for t in stream]


def stream_error(benchmark, **kw):
    with pytest.raises(LifelongError) as e:
        load_stream(str(benchmark), **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_task_field_gives_tasks_in_order_of_first_appearance(tmp_path):
    stream = load_stream(str(write_jsonl(tmp_path / "b.jsonl", batch_rows())), task_field="batch")
    assert [t.name for t in stream] == ["2", "1"]
    assert task_classes(stream) == [["b", "a"], ["c", "d"]]
    assert stream.class_names == ["b", "a", "c", "d"] and [t.classes for t in stream] == [[0, 1], [2, 3]]
    assert [len(t.train) for t in stream] == [4, 4] and [len(t.test) for t in stream] == [2, 2]
    assert set(stream.tasks[1].test.labels.tolist()) == {2, 3}


def test_task_field_csv_with_hold_out_and_a_test_file_without_the_field(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,domain\n" + "".join(f"{c} {i},{c},{d}\n" for i in range(3)
                                                    for c, d in (("x", "shop"), ("y", "bank"), ("z", "shop"))))
    stream = load_stream(str(path), task_field="domain")
    assert [t.name for t in stream] == ["shop", "bank"] and task_classes(stream) == [["x", "z"], ["y"]]
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "x?", "label": "x"}, {"text": "y?", "label": "y"},
                                                 {"text": "z?", "label": "z", "domain": "shop"}])
    stream = load_stream(str(path), task_field="domain", test_file=str(test))
    assert task_classes(stream) == [["x", "z"], ["y"]] and [len(t.test) for t in stream] == [2, 1]


@pytest.mark.parametrize("value", [None, "", "  ", "absent"])
def test_task_field_missing_on_a_row(tmp_path, value):
    rows = batch_rows()
    rows[9] = {**rows[9], "batch": value} if value != "absent" else {"text": "a?", "label": "a", "split": "test"}
    msg = stream_error(write_jsonl(tmp_path / "b.jsonl", rows), task_field="batch")
    assert msg.endswith("b.jsonl:10: missing field 'batch' (row has: text, label, split)")


def test_task_field_missing_from_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,x\nb,x\n")
    msg = stream_error(path, task_field="domain")
    assert msg.endswith("d.csv:1: header has no column 'domain' (columns: text, label)")
    path.write_text("text,label,domain\na,x,shop\nb,x,\n")
    assert stream_error(path, task_field="domain").endswith("d.csv:3: missing field 'domain' (row has: text, label)")


def test_class_in_two_tasks_names_the_line_and_class(tmp_path):
    rows = batch_rows()
    rows[5]["batch"] = 1  # a train row of class a, line 6
    msg = stream_error(write_jsonl(tmp_path / "b.jsonl", rows), task_field="batch")
    assert msg.startswith(f"{tmp_path / 'b.jsonl'}:6: class 'a' has batch '1' here but '2' at ")
    assert msg.endswith("b.jsonl:2 (a class belongs to one task)")
    rows = batch_rows()
    rows[8]["batch"] = "2"  # the test row of class d, line 9
    assert "b.jsonl:9: class 'd' has batch '2' here but '1' at" in stream_error(
        write_jsonl(tmp_path / "b.jsonl", rows), task_field="batch")
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "c?", "label": "c"},
                                                 {"text": "d?", "label": "d", "batch": 3}])
    rows = [r for r in batch_rows() if r["split"] == "train"]
    assert "test.jsonl:2: class 'd' has batch '3' here but '1' at" in stream_error(
        write_jsonl(tmp_path / "b.jsonl", rows), task_field="batch", test_file=str(test))


def test_tasks_file_gives_the_groups(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", rows_for("abcde", 4))
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([["e", "a"], ["c"], ["b", "d"]]))
    stream = load_stream(str(data), tasks_file=str(tasks))
    assert task_classes(stream) == [["e", "a"], ["c"], ["b", "d"]]
    assert [t.name for t in stream] == ["task0", "task1", "task2"] and stream.class_names == list("eacbd")
    assert all(len(t.test) > 0 for t in stream)


@pytest.mark.parametrize("content, problem", [
    ('[["a"], ["b"', "tasks.json:1: invalid JSON"),
    ('{"first": ["a"]}', "tasks.json: expected a JSON list of tasks, each a list of class names, got dict"),
    ("[]", "tasks.json: expected a JSON list of tasks, each a list of class names, got an empty list"),
    ('["a", "b"]', "tasks.json: task 1: expected a JSON list of tasks, each a list of class names, got str"),
    ('[["a"], ["b", 3]]', 'tasks.json: task 2: class names must be strings, got 3 (write "3")'),
    ('[["a", "b"], ["c"], []]', "tasks.json: task 3 is empty"),
    ('[["a", "b"], ["c", "a"]]', "tasks.json: class 'a' is in task 1 and task 2"),
    ('[["a", "b"], ["c", "zebra"]]', "tasks.json: class 'zebra' (task 2) has no training examples in "),
    ('[["c", "a"]]', "tasks.json: no task holds 1 of the 3 classes of "),
])
def test_bad_tasks_file(tmp_path, content, problem):
    data = write_jsonl(tmp_path / "d.jsonl", rows_for("abc", 4))
    tasks = tmp_path / "tasks.json"
    tasks.write_text(content)
    assert problem.replace("tasks.json", str(tasks)) in stream_error(data, tasks_file=str(tasks))


def test_classes_in_no_task_are_named_up_to_five(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", rows_for("abcdefghij", 2))
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[["j", "a"], ["e"]]')
    msg = stream_error(data, tasks_file=str(tasks))
    assert msg == (f"{tasks}: no task holds 7 of the 10 classes of {data}: 'b', 'c', 'd', 'f', 'g' and 2 more; "
                   "add them to a task or remove their rows")


def test_tasks_file_is_checked_without_data(tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[["a"], []]')
    with pytest.raises(LifelongError, match="task 2 is empty"):
        check_benchmark("nowhere.jsonl", tasks_file=str(tasks))
    with pytest.raises(LifelongError, match="missing.json: file not found"):
        check_benchmark("nowhere.jsonl", tasks_file=str(tmp_path / "missing.json"))


@pytest.mark.parametrize("kw, problem", [
    ({}, "d.jsonl: a data file needs exactly one of --classes-per-task, --task-field or --tasks to define its "
         "tasks (got none)"),
    ({"classes_per_task": 2, "task_field": "batch"}, "(got --classes-per-task and --task-field)"),
    ({"task_field": "batch", "tasks_file": "t.json"}, "(got --task-field and --tasks)"),
    ({"classes_per_task": 0}, "--classes-per-task must be a positive integer, got 0"),
])
def test_exactly_one_task_definition(kw, problem):
    with pytest.raises(LifelongError) as e:
        check_benchmark("d.jsonl", **kw)
    assert problem in str(e.value)


def test_task_definitions_of_images_and_registered_benchmarks(tmp_path):
    np = pytest.importorskip("numpy")
    x = np.random.default_rng(0).integers(0, 255, (12, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "shapes.npz", x=x, y=np.array(["a", "b", "c"] * 4))
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[["c"], ["a", "b"]]')
    assert task_classes(load_stream(str(tmp_path / "shapes.npz"), tasks_file=str(tasks))) == [["c"], ["a", "b"]]
    with pytest.raises(LifelongError, match="--task-field is for JSONL/CSV data files"):
        check_benchmark(str(tmp_path / "shapes.npz"), task_field="batch")
    with pytest.raises(LifelongError, match=r"an image data set needs exactly one of --classes-per-task or --tasks"):
        check_benchmark(str(tmp_path / "shapes.npz"))
    with pytest.raises(LifelongError, match="clinc150: --task-field and --tasks are for data files"):
        check_benchmark("clinc150", tasks_file=str(tasks))


# --- Hugging Face datasets ----------------------------------------------------------------------------------


class FakeClassLabel:
    def __init__(self, names):
        self.names = names


class FakeDataset:
    """The slice of `datasets.Dataset` the loader relies on."""

    def __init__(self, columns, features=None):
        self._columns = columns
        self.column_names = list(columns)
        self.features = features or {}

    def __getitem__(self, column):
        return self._columns[column]


def test_hf_fake_classlabel():
    names = FakeClassLabel(["neg", "pos"])
    ds = {
        "train": FakeDataset({"text": ["a", "b", "c"], "label": [0, 1, 1]}, {"label": names}),
        "validation": FakeDataset({"text": ["v"], "label": [1]}, {"label": names}),
        "test": FakeDataset({"text": ["t", "u"], "label": [1, 0]}, {"label": names}),
        "unsupervised": FakeDataset({"text": ["?"]}),
    }
    data = from_hf_dataset(ds, name="imdb")
    assert data.name == "imdb"
    assert data.train == [("a", "neg"), ("b", "pos"), ("c", "pos")]
    assert data.val == [("v", "pos")] and data.test == [("t", "pos"), ("u", "neg")]


def test_hf_fake_plain_labels_and_val_split():
    ds = {
        "train": FakeDataset({"sentence": ["a", "b"], "y": [3, 4]}),
        "val": FakeDataset({"sentence": ["v"], "y": [3]}),
        "test": FakeDataset({"sentence": ["t"], "y": [4]}),
    }
    data = from_hf_dataset(ds, text_field="sentence", label_field="y")
    assert data.train == [("a", "3"), ("b", "4")] and data.val == [("v", "3")] and data.test == [("t", "4")]


def test_hf_fake_errors():
    train = FakeDataset({"text": ["a"], "label": ["x"]})
    with pytest.raises(LifelongError, match=r"hf: no 'test' split \(splits: train\)"):
        from_hf_dataset({"train": train})
    with pytest.raises(LifelongError, match=r"split 'test' has no column 'label' \(columns: text, gold\)"):
        from_hf_dataset({"train": train, "test": FakeDataset({"text": ["b"], "gold": ["x"]})})
    with pytest.raises(LifelongError, match="test label 'y' never appears"):
        from_hf_dataset({"train": train, "test": FakeDataset({"text": ["b"], "label": ["y"]})})
    hidden = FakeDataset({"text": ["b"], "label": [-1]}, {"label": FakeClassLabel(["x"])})
    with pytest.raises(LifelongError, match=r"split 'test' row 0: label -1 is not a class id"):
        from_hf_dataset({"train": train, "test": hidden})
    with pytest.raises(LifelongError, match="expected a DatasetDict"):
        from_hf_dataset(train)


def test_hf_real_datasets():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["sports", "tech", "world"])}
    )

    def make(texts, labels):
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)

    ds = datasets.DatasetDict(
        train=make(["a", "b", "c", "d"], [0, 1, 2, 1]),
        validation=make(["v"], [2]),
        test=make(["t", "u", "w"], [1, 0, 2]),
    )
    data = from_hf_dataset(ds, name="news")
    assert data.train == [("a", "sports"), ("b", "tech"), ("c", "world"), ("d", "tech")]
    assert data.val == [("v", "world")]
    assert data.test == [("t", "tech"), ("u", "sports"), ("w", "world")]
    stream = class_incremental(data, classes_per_task=2, seed=0)
    assert sorted(stream.class_names) == ["sports", "tech", "world"]

    with pytest.raises(LifelongError, match=r"split 'train' has no column 'sentence' \(columns: text, label\)"):
        from_hf_dataset(ds, text_field="sentence")
    with pytest.raises(LifelongError, match="no 'test' split"):
        from_hf_dataset(datasets.DatasetDict(train=ds["train"]))
