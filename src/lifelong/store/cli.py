"""The production loop on the command line: `init`, `learn`, `predict`, `info`, `rollback`, `serve`, and the store
half of `adapt --data` (`adapt_store`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import LifelongError
from ..options import ConfigOption, DeviceOption, QuietOption, VerboseOption, parse_sets

Model = Annotated[Path, typer.Argument(help="Model directory.")]


def init(
    model: Model,
    backbone: Annotated[str, typer.Option(help="Hugging Face model id or local path of the encoder.")] = "all-MiniLM-L6-v2",
    method: Annotated[str, typer.Option(help="Method name; `lifelong methods` lists them.")] = "adapters",
    precision: Annotated[str | None, typer.Option(help="Adapter precision: 1bit, ternary, fp16 or fp32.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any method setting as KEY=VALUE (repeatable).")] = None,
    max_length: Annotated[int, typer.Option(help="Token limit per text.")] = 128,
    from_run: Annotated[Path | None, typer.Option(help="Start from a finished `lifelong run` directory: its model becomes version 1.")] = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Create an empty model (version 0) with a backbone and a method, or one holding a finished run."""
    from .store import ModelStore

    if from_run is not None:
        store = ModelStore.from_run(model, from_run, device)
        entry = store.entry()
        typer.echo(f"created {model}: version 1 holds {sum(len(t['classes']) for t in entry['tasks'])} classes "
                   f"from {from_run}")
        return
    values = parse_sets(set_ or [])
    if precision is not None:
        values["precision"] = precision
    ModelStore.init(model, backbone, method, values, max_length, device)
    typer.echo(f"created {model} (method {method}, backbone {backbone}); add classes with `lifelong learn {model} --data FILE`")


def learn(
    model: Model,
    data: Annotated[Path, typer.Option(help="JSONL or CSV of labelled examples of the new classes.")],
    eval_: Annotated[Path | None, typer.Option("--eval", help="Held-out JSONL/CSV (classes learned so far, and out-of-scope rows) for the threshold and the metrics recorded.")] = None,
    name: Annotated[str, typer.Option(help="Task name (default: taskN).")] = "",
    text_field: Annotated[str, typer.Option(help="Text field/column.")] = "text",
    label_field: Annotated[str, typer.Option(help="Label field/column.")] = "label",
    oos_label: Annotated[str, typer.Option(help="Label of out-of-scope rows in --eval.")] = "oos",
    holdout: Annotated[float, typer.Option(help="Without --eval: fraction of the new data held out to calibrate the threshold (0: none).")] = 0.1,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another learn on the same model.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed for the hold-out and, with the task's index, for the new task's initial weights: the same learn gives the same version.")] = 0,
    min_examples: Annotated[int, typer.Option(min=1, help="Refuse a class with fewer training examples than this.")] = 5,
    device: DeviceOption = "auto",
    config: ConfigOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Learn the classes in DATA as the next task: a new version, the older ones kept."""
    from ..devices import set_threads
    from ..data.files import read_rows
    from .store import ModelStore

    set_threads()
    if not 0 <= holdout < 1:
        raise LifelongError(f"--holdout must be in [0, 1), got {holdout}")
    rows = [(t, c) for _, t, c, *_ in read_rows(data, text_field, label_field, None)]
    held = [(t, c) for _, t, c, *_ in read_rows(eval_, text_field, label_field, None)] if eval_ else None
    entry = ModelStore(model, device).learn(rows, name, held, oos_label, holdout, seed, wait, source=str(data),
                                            min_examples=min_examples)
    task = entry["tasks"][-1]
    typer.echo(f"version {entry['version']}: learned {len(task['classes'])} classes from {task['train_examples']} "
               f"examples in {entry['learn_seconds']:.1f}s; {entry['new_bytes']:,} new bytes")
    if entry["metrics"]:
        typer.echo(_held_out_line(entry["metrics"]))
    else:
        typer.echo(f"no held-out rows: threshold {entry['threshold']} is not calibrated for the new classes "
                   f"(`lifelong calibrate {model} --eval FILE` sets it)")


def _held_out_line(m: dict) -> str:
    recall = "-" if m["oos_recall"] is None else f"{m['oos_recall']:.4f}"
    return (f"held out: in-scope accuracy {m['in_scope_accuracy']:.4f} (without rejection "
            f"{m['in_scope_accuracy_no_rejection']:.4f}), out-of-scope recall {recall}, threshold {m['threshold']}")


def calibrate(
    model: Model,
    eval_: Annotated[Path, typer.Option("--eval", help="Held-out JSONL/CSV: rows of learned classes, and out-of-scope rows.")],
    text_field: Annotated[str, typer.Option(help="Text field/column.")] = "text",
    label_field: Annotated[str, typer.Option(help="Label field/column.")] = "label",
    oos_label: Annotated[str, typer.Option(help="Label of out-of-scope rows.")] = "oos",
    wait: Annotated[float, typer.Option(help="Seconds to wait for another writer.")] = 60.0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Set the out-of-scope threshold anew from held-out data: a new version, same weights (hard links)."""
    from ..devices import set_threads
    from ..data.files import read_rows
    from .store import ModelStore

    set_threads()
    held = [(t, c) for _, t, c, *_ in read_rows(eval_, text_field, label_field, None)]
    entry = ModelStore(model, device).calibrate(held, oos_label, wait, source=str(eval_))
    typer.echo(f"version {entry['version']}: new threshold, {entry['new_bytes']:,} new bytes")
    typer.echo(_held_out_line(entry["metrics"]))


def predict(
    model: Model,
    text: Annotated[list[str] | None, typer.Option(help="A text to classify (repeatable).")] = None,
    file: Annotated[Path | None, typer.Option(help="JSONL/CSV with a text field, or plain text with one query per line.")] = None,
    text_field: Annotated[str, typer.Option(help="Text field of --file.")] = "text",
    top_k: Annotated[int, typer.Option(help="Labels returned per text.")] = 1,
    version: Annotated[int | None, typer.Option(help="Version to use (default: current).")] = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Classify texts; prints one JSON object per text (label `out_of_scope` below the threshold)."""
    from ..devices import set_threads
    from ..data.rows import check_text
    from .store import ModelStore

    set_threads()
    texts = [check_text(t, f"--text {i}") for i, t in enumerate(text or [], 1)]
    texts += _read_texts(file, text_field) if file else []
    if not texts:
        raise LifelongError("nothing to classify: give --text or --file")
    loaded = ModelStore(model, device).load(version)
    for s in range(0, len(texts), 256):
        for t, p in zip(texts[s : s + 256], loaded.predict_top(texts[s : s + 256], top_k)):
            sys.stdout.write(json.dumps({"text": t, **p}) + "\n")


def _read_texts(path: Path, text_field: str) -> list[str]:
    """Every text through the loaders' check: a lone surrogate or an invisible-only line is named, not sent."""
    from ..data.rows import check_text

    from ..data.files import FORMATS

    if path.suffix.lower() in FORMATS:
        from ..data.files import records

        out = []
        for line, row in records(path, text_field, text_field):
            if row.get(text_field) is None:
                raise LifelongError(f"{path}:{line}: missing text field {text_field!r}")
            out.append(check_text(row[text_field], f"{path}:{line}", text_field))
        return out
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LifelongError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    return [check_text(t, f"{path}:{i}", "line") for i, t in enumerate(lines, 1) if t.strip()]


def info(model: Model, as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
         check: Annotated[bool, typer.Option("--check", help="Verify every version's files (checksums, schemas).")] = False) -> None:
    """Versions, classes and bytes of a model."""
    from rich.console import Console
    from rich.table import Table

    from ..report.summary import human_bytes
    from .store import ModelStore

    store = ModelStore(model)
    manifest = store.manifest()
    if check:
        return _check(store, manifest)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    entry = store.entry(None, manifest)
    b = manifest["backbone"]
    console = Console(width=160)
    typer.echo(f"{model}: method {manifest['method']}, backbone {b['name']} ({b['sha256'][:12]}), "
                  f"current version {manifest['current']}, {sum(len(t['classes']) for t in entry['tasks'])} classes")
    table = Table("version", "created", "parent", "tasks", "classes", "bytes", "new bytes", "threshold",
                  "in-scope acc", "oos recall")
    for e in manifest["versions"]:
        m = e.get("metrics") or {}
        mark = " (current)" if e["version"] == manifest["current"] else ""
        table.add_row(f"{e['version']}{mark}", e["created"], str(e["parent"]), str(len(e["tasks"])),
                      str(sum(len(t["classes"]) for t in e["tasks"])), human_bytes(e["bytes"]),
                      human_bytes(e["new_bytes"]), _threshold(e), _fmt(m.get("in_scope_accuracy")),
                      _fmt(m.get("oos_recall")))
    console.print(table)
    for t in entry["tasks"]:
        typer.echo(f"  task {t['name']!r} (version {t['version']}): {', '.join(t['classes'])}")
    if entry.get("adapted"):
        a = entry["adapted"]
        typer.echo(f"  backbone adapted with {a.get('method')} on {a.get('images')} images from {a.get('source')}")


def _check(store, manifest: dict) -> None:
    """Every version's files, not only the current one's: a task file shared by hard links is damaged in all the
    versions that link it, and this names each of them."""
    damaged = []
    for e in manifest["versions"]:
        if e["version"] == 0:
            continue
        try:
            store.check_files(e)
            typer.echo(f"version {e['version']}: ok")
        except LifelongError as err:
            damaged.append(str(e["version"]))
            typer.echo(f"version {e['version']}: damaged: {err}".encode("utf-8", "backslashreplace").decode())
    if damaged:
        raise LifelongError(f"{store.path}: {len(damaged)} damaged version(s): {', '.join(damaged)}")


def _threshold(entry: dict) -> str:
    """A threshold that was carried over without held-out data is shown as such."""
    if entry.get("calibrated", True) or entry["version"] == 0:
        return _fmt(entry["threshold"])
    return f"{_fmt(entry['threshold'])} (not calibrated)"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def rollback(model: Model, to: Annotated[int, typer.Option(help="Version to make current.")], wait: float = 60.0) -> None:
    """Make an earlier version current (nothing is deleted; the next learn builds on it)."""
    from .store import ModelStore

    entry = ModelStore(model).rollback(to, wait)
    typer.echo(f"{model}: current version is now {entry['version']}")


def serve(
    model: Model,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    learn_token: Annotated[str | None, typer.Option(help="Enable POST /learn for requests bearing this token.", envvar="LIFELONG_LEARN_TOKEN")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes on the port, each with the model loaded; the CPU threads (LIFELONG_THREADS, else all cores) split between them.")] = 1,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Answer predictions over HTTP: POST /predict, GET /health, GET /info (POST /learn with a token)."""
    from ..devices import set_threads
    from .server import create_app, run, run_workers

    if workers > 1:
        run_workers(model, learn_token, device, host, port, workers)
        return
    set_threads()
    run(create_app(model, learn_token, device), host, port)


def adapt_store(model: Path | None, data: Path, method: str, settings: dict, batch_size: int, seed: int,
                device: str, wait: float = 60.0) -> None:
    """`lifelong adapt MODEL --data FOLDER`: the store's current version adapted on the folder's images (read
    recursively, in path order), published as a new version."""
    from ..data.images import IMAGE_SUFFIXES
    from ..devices import set_threads
    from .store import ModelStore

    set_threads()
    if model is None or not (model / "manifest.json").is_file():
        raise LifelongError(f"{model or 'MODEL'}: not a model store (no manifest.json); --data adapts a store's "
                            "current version and publishes a new one")
    if not data.is_dir():
        raise LifelongError(f"{data}: not a folder of images")
    files = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LifelongError(f"{data}: no images in the folder or below ({', '.join(sorted(IMAGE_SUFFIXES))})")
    entry = ModelStore(model, device).adapt([str(f) for f in files], method, settings, batch_size, wait, seed,
                                            source=str(data))
    typer.echo(f"version {entry['version']}: backbone adapted with {method} on {len(files)} images in "
               f"{entry['learn_seconds']:.1f}s; {entry['new_bytes']:,} new bytes")
    typer.echo(f"threshold {entry['threshold']} carried over, not calibrated for the adapted backbone "
               f"(`lifelong calibrate {model} --eval FILE` sets it); `lifelong rollback {model} --to "
               f"{entry['parent']}` undoes the adaptation")


def register(app: typer.Typer) -> None:
    for command in (init, learn, calibrate, predict, info, rollback, serve):
        app.command()(command)
