"""WordNet supersenses from a data.noun snippet written here (license header, synset lines), and its errors."""

import pytest

from lifelong.data import load_stream, wordnet
from lifelong.errors import LifelongError

LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by  \n  2 Princeton University.  \n"


def synset(offset, lex, word, gloss, pointers="001 @ 00001740 n 0000"):
    return f"{offset:08d} {lex:02d} n 01 {word} 0 {pointers} | {gloss}  \n"


def write_noun_file(folder, per_class=None):
    """Supersenses with 6 (animal), 6 (food), 5 (plant) and 2 (motive) synsets."""
    per_class = per_class or {5: ("dog", 6), 13: ("bread", 6), 20: ("oak", 5), 16: ("goal", 2)}
    lines, offset = [LICENSE], 100
    for lex, (word, n) in per_class.items():
        for i in range(n):
            lines.append(synset(offset, lex, f"{word}_{i}", f"a kind of {word} number {i}; \"the {word} {i}\""))
            offset += 50
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.noun").write_text("".join(lines))
    return folder


def test_reads_glosses_and_supersenses(tmp_path):
    rows = wordnet.read_noun_glosses(write_noun_file(tmp_path) / "data.noun")
    assert len(rows) == 19
    assert rows[0] == ('a kind of dog number 0; "the dog 0"', "noun.animal")
    assert {label for _, label in rows} == {"noun.animal", "noun.food", "noun.plant", "noun.motive"}


def test_keeps_large_classes_with_fixed_seeded_sizes(tmp_path):
    root = write_noun_file(tmp_path)
    data = wordnet.load(root, min_synsets=5, train_per_class=3, test_per_class=2, seed=0)
    assert sorted(data.class_names()) == ["noun.animal", "noun.food", "noun.plant"]  # motive has 2 synsets
    assert len(data.train) == 9 and len(data.test) == 6
    assert not {x for x, _ in data.train} & {x for x, _ in data.test}
    again = wordnet.load(root, min_synsets=5, train_per_class=3, test_per_class=2, seed=0)
    assert again.train == data.train and again.test == data.test
    others = [wordnet.load(root, min_synsets=5, train_per_class=3, test_per_class=2, seed=s).train for s in range(1, 6)]
    assert any(o != data.train for o in others)
    # a class needs train + test synsets, whatever min_synsets says
    assert len(wordnet.load(root, min_synsets=1, train_per_class=4, test_per_class=2).class_names()) == 2


def test_stream_from_env_folder_or_file(tmp_path, monkeypatch):
    root = write_noun_file(tmp_path)
    for target in (root, root / "data.noun"):
        monkeypatch.setenv("LIFELONG_WORDNET", str(target))
        s = wordnet.stream(seed=0, classes_per_task=1, min_synsets=5, train_per_class=3, test_per_class=2)
        assert len(s) == 3 and s.name == "wordnet" and all(len(t.classes) == 1 for t in s)
        assert isinstance(s.tasks[0].train.inputs[0], str)


def test_registered_benchmark_reads_the_env(tmp_path, monkeypatch):
    # the registered sizes (300 + 100 per class, 700 synsets) do not fit the snippet: the error names the file
    monkeypatch.setenv("LIFELONG_WORDNET", str(write_noun_file(tmp_path)))
    with pytest.raises(LifelongError, match="data.noun: fewer than 2 supersenses have 700 synsets"):
        load_stream("wordnet")


def test_missing_data_names_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFELONG_WORDNET", raising=False)
    monkeypatch.setattr(wordnet, "WORDNET_DEBIAN", tmp_path / "nowhere")
    with pytest.raises(LifelongError) as e:
        load_stream("wordnet")
    assert "apt-get install wordnet-base" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("LIFELONG_WORDNET", str(tmp_path))
    with pytest.raises(LifelongError, match="LIFELONG_WORDNET=.* holds no data.noun"):
        load_stream("wordnet")


@pytest.mark.parametrize("line,message", [
    ("garbage without a gloss\n", "data.noun:3: not a WordNet data line"),
    (synset(5, 35, "run", "move fast").replace(" n ", " v "), "data.noun:3: synset type 'v'"),
    (synset(5, 35, "run", "move fast"), "data.noun:3: lex_filenum 35 is not a noun supersense"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    (tmp_path / "data.noun").write_text(LICENSE + line)
    with pytest.raises(LifelongError, match=message):
        wordnet.read_noun_glosses(tmp_path / "data.noun")


def test_license_only_file_has_no_synsets(tmp_path):
    (tmp_path / "data.noun").write_text(LICENSE)
    with pytest.raises(LifelongError, match="data.noun: no synsets"):
        wordnet.read_noun_glosses(tmp_path / "data.noun")


@pytest.mark.skipif(not (wordnet.WORDNET_DEBIAN / "data.noun").is_file(), reason="wordnet-base not installed")
def test_debian_wordnet(monkeypatch):
    monkeypatch.delenv("LIFELONG_WORDNET", raising=False)
    s = wordnet.stream()
    assert len(s) == 5 and len(s.class_names) == 20
    assert sum(len(t.train) for t in s) == 6000 and sum(len(t.test) for t in s) == 2000
