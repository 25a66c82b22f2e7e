"""User-data loaders: JSONL / CSV files and Hugging Face datasets."""

import json

import pytest

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
