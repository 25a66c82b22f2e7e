"""Command line: a thin face over the library. Parses flags, calls it, prints tables; bad input -> one line."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads stall shared CPUs

import dataclasses
import datetime
import logging
import platform
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import LifelongError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Continual learning on frozen pretrained models: learn a stream of tasks without forgetting.",
)
log = logging.getLogger("lifelong")


def _environment() -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise LifelongError(f"--set {p!r}: expected KEY=VALUE")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


@app.command()
def run(
    benchmark: Annotated[str, typer.Option(help="Benchmark name (clinc150, fashion-mnist, wordnet), a .jsonl/.csv file of labelled text, an .npz of images or an image folder.")] = "clinc150",
    method: Annotated[str, typer.Option(help="Method name; `lifelong methods` lists them.")] = "ncm",
    seed: Annotated[int, typer.Option(help="Seed for class order, initialisation and batch order.")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory for results.json, plots and summary.md.")] = Path("runs/latest"),
    backbone: Annotated[str | None, typer.Option(help="Encoder: a Hugging Face text model id or path (default all-MiniLM-L6-v2), or for images efficientnet-lite0 (default) or vit:<id or path>.")] = None,
    classes_per_task: Annotated[int | None, typer.Option(help="Classes per task when the benchmark is a data file.")] = None,
    text_field: Annotated[str, typer.Option(help="Text field/column of a data file.")] = "text",
    label_field: Annotated[str, typer.Option(help="Label field/column of a data file.")] = "label",
    test_file: Annotated[str | None, typer.Option(help="Separate test file for a data file benchmark (else its `split` field, else a 20% hold-out).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per task (methods that train).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (methods that train).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size (methods that train).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Adapter type for `adapters`: lora or bottleneck.")] = None,
    precision: Annotated[str | None, typer.Option(help="Adapter weight precision: 1bit, ternary, fp16 or fp32.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank or bottleneck width.")] = None,
    blocks: Annotated[int | None, typer.Option(help="Adapt only the top N transformer blocks (0: all).")] = None,
    top_k: Annotated[int | None, typer.Option(help="Tasks whose adapters are mixed per query (routing).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any method setting as KEY=VALUE (repeatable).")] = [],
    save: Annotated[bool, typer.Option(help="Save the final model to OUT/model (safetensors + JSON).")] = True,
    max_length: Annotated[int, typer.Option(help="Token limit per text (longer texts are truncated).")] = 128,
    cache_dir: Annotated[Path | None, typer.Option(help="Keep frozen features here between runs (default: none).", envvar="LIFELONG_CACHE")] = None,
    oos: Annotated[bool, typer.Option("--oos", help="Also measure out-of-scope rejection after each task (benchmarks with out-of-scope queries: clinc150).")] = False,
) -> None:
    """Run a continual-learning benchmark end to end: learn each task, evaluate on all seen tasks, write results."""
    from . import evaluation, methods
    from .backbones import FeatureCache, check_modality, default_backbone, load_backbone
    from .backbones.text import set_threads
    from .data import load_stream
    from .io import write_json, write_text
    from .report import accuracy_curve, accuracy_heatmap, markdown, print_table

    set_threads()
    learner_cls = methods.get(method)
    values = _parse_sets(set_)
    flags = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "adapter": adapter, "precision": precision,
             "rank": rank, "blocks": blocks, "top_k": top_k}
    for key, value in flags.items():
        if value is not None:
            values[key] = value
    if "seed" in methods.settings(learner_cls.Config):
        values.setdefault("seed", seed)
    config = methods.config_from_dict(learner_cls.Config, values)
    stream = load_stream(benchmark, seed, classes_per_task, text_field, label_field, test_file)
    log.info("%s: %d tasks, %d classes", stream.name, len(stream), len(stream.class_names))

    import torch

    torch.manual_seed(seed)
    backbone = backbone or default_backbone(stream)
    encoder = load_backbone(backbone, max_length=max_length)
    check_modality(encoder, stream)
    features = FeatureCache(encoder, cache_dir)
    learner = learner_cls(encoder, config, features)

    def progress(i, row):
        acc = sum(row["accuracy"]) / len(row["accuracy"])
        log.info("after task %d: average accuracy %.4f, learn %.1fs", i + 1, acc, row["seconds"])
        features.save()

    result = evaluation.run(learner, stream, on_task_end=progress, oos_protocol=oos)
    result = {
        "method": method,
        "benchmark": stream.name,
        **result,
        "config": {
            "benchmark": benchmark,
            "method": method,
            "seed": seed,
            "backbone": backbone,
            "max_length": max_length,
            "classes_per_task": classes_per_task,
            "settings": dataclasses.asdict(config),
            "task_classes": [[stream.class_names[c] for c in t.classes] for t in stream],
        },
        "environment": _environment(),
    }
    out.mkdir(parents=True, exist_ok=True)
    if save:
        learner.save(out / "model")
        result["model_files"] = {p.name: p.stat().st_size for p in sorted((out / "model").iterdir())}
        if hasattr(learner, "file_bytes"):
            result["file_bytes_per_task"] = learner.file_bytes(out / "model")
    accuracy_curve([result], out / "accuracy_curve.png")
    accuracy_heatmap(result, out / "accuracy_matrix.png")
    write_text(out / "summary.md", markdown(result))
    write_json(out / "results.json", result)  # last: its presence means the run finished
    print_table(result)
    if oos:
        r = result["out_of_scope"]
        typer.echo(f"out-of-scope after the last task: in-scope accuracy {r['in_scope_accuracy']:.4f} "
                   f"(without rejection {r['in_scope_accuracy_no_rejection']:.4f}), "
                   f"out-of-scope recall {r['oos_recall']:.4f}, threshold {r['threshold']}")
    typer.echo(f"wrote {out / 'results.json'}")


@app.command("methods")
def list_methods() -> None:
    """List the methods with a one-line description, their settings and whether they keep examples."""
    from rich.console import Console
    from rich.table import Table

    from . import methods

    table = Table("method", "description", "keeps examples", "settings (defaults)")
    for name in sorted(methods.METHODS):
        cls = methods.METHODS[name]
        sets = ", ".join(f"{k}={v}" for k, v in methods.settings(cls.Config).items()) or "-"
        table.add_row(name, cls.description, "yes" if cls.keeps_examples else "no", sets)
    Console(width=160).print(table)


from .store.cli import register as _register_store_commands  # noqa: E402  (init, learn, predict, info, rollback, serve)

_register_store_commands(app)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        app()
    except LifelongError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; no results written", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
