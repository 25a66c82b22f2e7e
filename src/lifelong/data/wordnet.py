"""WordNet noun supersenses (benchmark `wordnet`): classify a noun synset's gloss by its lexicographer file.

Each noun synset of WordNet 3.0 (82,115 in `data.noun`) has a gloss (definition and examples) and one of 26
lexicographer classes, its supersense (noun.artifact, noun.person, noun.animal, ...; the `lex_filenum` field,
named by the fixed `lexnames` table). The benchmark keeps the 20 supersenses with at least 700 synsets, takes a
seeded sample of 300 training and 100 test glosses from each (6,000 + 2,000 texts), and cuts them into 5
class-incremental tasks of 4 supersenses in a seeded order.

`data.noun` is read from $LIFELONG_WORDNET (a folder holding it, or the file itself), else from where
`apt-get install wordnet-base` puts it (/usr/share/wordnet).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..errors import LifelongError
from .task import LabelledData, Stream, check_splits, class_incremental

WORDNET_ENV = "LIFELONG_WORDNET"
WORDNET_DEBIAN = Path("/usr/share/wordnet")
MIN_SYNSETS, TRAIN_PER_CLASS, TEST_PER_CLASS, CLASSES_PER_TASK = 700, 300, 100, 4

# lexnames(5WN): lexicographer file number -> name (0-2 and 29-44 are adjective, adverb and verb files)
LEXNAMES = {
    3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact", 7: "noun.attribute", 8: "noun.body",
    9: "noun.cognition", 10: "noun.communication", 11: "noun.event", 12: "noun.feeling", 13: "noun.food",
    14: "noun.group", 15: "noun.location", 16: "noun.motive", 17: "noun.object", 18: "noun.person",
    19: "noun.phenomenon", 20: "noun.plant", 21: "noun.possession", 22: "noun.process", 23: "noun.quantity",
    24: "noun.relation", 25: "noun.shape", 26: "noun.state", 27: "noun.substance", 28: "noun.time",
}


def locate() -> Path:
    env = os.environ.get(WORDNET_ENV)
    if env:
        p = Path(env)
        path = p / "data.noun" if p.is_dir() else p
        if not path.is_file():
            raise LifelongError(f"WordNet not found: ${WORDNET_ENV}={env} holds no data.noun; set it to the folder of "
                                "WordNet's data.noun, or unset it and `apt-get install wordnet-base`")
        return path
    path = WORDNET_DEBIAN / "data.noun"
    if not path.is_file():
        raise LifelongError(f"WordNet not found ({path} is missing): install it with `apt-get install wordnet-base`, "
                            f"or set {WORDNET_ENV} to a folder holding WordNet 3.0's data.noun")
    return path


def read_noun_glosses(path) -> list[tuple[str, str]]:
    """(gloss, supersense) for every synset line of a WordNet `data.noun` file (license lines start with 2 spaces).

    A line is `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers ... | gloss`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LifelongError(f"{path}: cannot read ({e})") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("  "):
            continue
        head, bar, gloss = line.partition(" | ")
        fields = head.split()
        if not bar or len(fields) < 4 or not fields[0].isdigit() or not fields[1].isdigit():
            raise LifelongError(f"{path}:{number}: not a WordNet data line (offset lex_filenum ss_type ... | gloss)")
        if fields[2] != "n":
            raise LifelongError(f"{path}:{number}: synset type {fields[2]!r}, expected a noun file (n)")
        lex = int(fields[1])
        if lex not in LEXNAMES:
            raise LifelongError(f"{path}:{number}: lex_filenum {lex} is not a noun supersense (3-28)")
        gloss = gloss.strip()
        if gloss:
            out.append((gloss, LEXNAMES[lex]))
    if not out:
        raise LifelongError(f"{path}: no synsets")
    return out


def load(root=None, min_synsets: int = MIN_SYNSETS, train_per_class: int = TRAIN_PER_CLASS,
         test_per_class: int = TEST_PER_CLASS, seed: int = 0) -> LabelledData:
    """Supersenses with at least `min_synsets` glosses, each sampled (seeded) to the fixed train/test sizes."""
    if root is None:
        path = locate()
    else:
        path = Path(root) / "data.noun" if Path(root).is_dir() else Path(root)
    by_class: dict[str, list[str]] = {}
    for gloss, label in read_noun_glosses(path):
        by_class.setdefault(label, []).append(gloss)
    if train_per_class < 1 or test_per_class < 1:
        raise LifelongError("wordnet: train and test sizes per class must be at least 1")
    need = max(min_synsets, train_per_class + test_per_class)
    kept = sorted(c for c, glosses in by_class.items() if len(glosses) >= need)
    if len(kept) < 2:
        raise LifelongError(f"{path}: fewer than 2 supersenses have {need} synsets")
    train, test = [], []
    for c in kept:
        sample = random.Random(f"{seed}:{c}").sample(by_class[c], train_per_class + test_per_class)
        train += [(g, c) for g in sample[:train_per_class]]
        test += [(g, c) for g in sample[train_per_class:]]
    data = LabelledData("wordnet", train, test, source=str(path))
    check_splits(data)
    return data


def stream(seed: int = 0, classes_per_task: int | None = None, **kw) -> Stream:
    """Class-incremental tasks of `classes_per_task` (default 4) supersenses, in a seeded order."""
    return class_incremental(load(seed=seed, **kw), classes_per_task=classes_per_task or CLASSES_PER_TASK, seed=seed)
