"""Command line: a thin face over the library. Parses flags, calls it, prints tables; bad input -> one line."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads stall shared CPUs

from .heap import fix as _fix_heap  # noqa: E402

_fix_heap()  # before torch loads: its first allocations already follow the heap's settings

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import LifelongError
from .options import ConfigOption, DeviceOption, QuietOption, VerboseOption, parse_sets, setup_logging

app = typer.Typer(
    add_completion=True,
    rich_markup_mode=None,  # plain click help: flags read `--oos / --no-oos`, not `--oos <bool>`
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("lifelong")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lifelong {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")] = False,
) -> None:
    """Continual learning on frozen pretrained models: learn a stream of tasks without forgetting."""


@app.command()
def run(
    benchmark: Annotated[str, typer.Option(help="Benchmark name (clinc150, clinc150:random, fashion-mnist, wordnet), a .jsonl/.csv file of labelled text, an .npz of images or an image folder.")] = "clinc150",
    method: Annotated[str, typer.Option(help="Method name; `lifelong methods` lists them.")] = "ncm",
    seed: Annotated[int, typer.Option(help="Seed for class order, initialisation and batch order.")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory for results.json, plots and summary.md.")] = Path("runs/latest"),
    backbone: Annotated[str | None, typer.Option(help="Encoder: a Hugging Face text model id or path (default all-MiniLM-L6-v2), or for images efficientnet-lite0 (default) or vit:<id or path>.")] = None,
    classes_per_task: Annotated[int | None, typer.Option(help="Classes per task when the benchmark is a data file (classes shuffled by --seed).")] = None,
    task_field: Annotated[str | None, typer.Option(help="Instead: the field/column of a data file naming each row's task (e.g. arrival batch, domain); tasks in order of first appearance.")] = None,
    tasks_file: Annotated[str | None, typer.Option("--tasks", metavar="FILE", help="Instead: a JSON file listing the tasks in arrival order, each a list of class names, covering every class.")] = None,
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
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any method setting as KEY=VALUE (repeatable).")] = None,
    save: Annotated[bool, typer.Option(help="Save the final model to OUT/model (safetensors + JSON).")] = True,
    max_length: Annotated[int, typer.Option(help="Token limit per text (longer texts are truncated).")] = 128,
    cache_dir: Annotated[Path | None, typer.Option(help="Keep frozen features here between runs (default: none).", envvar="LIFELONG_CACHE")] = None,
    oos: Annotated[bool, typer.Option("--oos/--no-oos", help="Also measure out-of-scope rejection after each task (benchmarks with out-of-scope queries: clinc150).")] = False,
    label: Annotated[str | None, typer.Option(help="Name of this run in plots and reports (default: the method).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run in OUT (without it, a finished OUT is refused).")] = False,
    log_: Annotated[str, typer.Option("--log", metavar="TRACKERS", help="Trackers beside OUT/metrics.csv, comma-separated: tensorboard (OUT/tensorboard), mlflow (the store MLFLOW_TRACKING_URI names); `pip install 'lifelong[tracking]'`.")] = "",
    nproc: Annotated[int, typer.Option(min=1, help="Processes on this machine (torchrun, gloo on CPU, NCCL on CUDA): each embeds a share of the inputs; the threads are split between them.")] = 1,
    device: DeviceOption = "auto",
    config: ConfigOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run a continual-learning benchmark end to end: learn each task, evaluate on all seen tasks, write results."""
    from .experiment import Experiment
    from .report import print_table

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .distributed import launch

        launch(nproc, ["run", *_without_nproc(sys.argv[1:])])
        return

    values = parse_sets(set_ or [])
    flags = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "adapter": adapter, "precision": precision,
             "rank": rank, "blocks": blocks, "top_k": top_k}
    values.update({k: v for k, v in flags.items() if v is not None})
    experiment = Experiment(benchmark=benchmark, method=method, seed=seed, settings=values, backbone=backbone,
                            classes_per_task=classes_per_task, task_field=task_field, tasks_file=tasks_file,
                            text_field=text_field, label_field=label_field, test_file=test_file,
                            max_length=max_length, cache_dir=cache_dir, oos=oos, save=save, label=label,
                            device=device, log=log_)
    result = experiment.run(out, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")):
        return  # with several processes the first one reports
    print_table(result)
    if oos:
        r = result["out_of_scope"]
        typer.echo(f"out-of-scope after the last task: in-scope accuracy {r['in_scope_accuracy']:.4f} "
                   f"(without rejection {r['in_scope_accuracy_no_rejection']:.4f}), "
                   f"out-of-scope recall {r['oos_recall']:.4f}, threshold {r['threshold']}")
    typer.echo(f"wrote {out / 'results.json'}")


def _without_nproc(args: list[str]) -> list[str]:
    """The command line without its --nproc option (given to each launched process)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out[1:] if out and out[0] == "run" else out


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Root directory: DIR/<benchmark>/<cell>/ per cell, then DIR/report.md and DIR/report.html.")],
    benchmarks: Annotated[str, typer.Option(help="Comma-separated benchmark names or data files (as `run --benchmark`).")] = "clinc150,wordnet,fashion-mnist",
    methods_: Annotated[list[str] | None, typer.Option("--methods", help="Comma-separated method specs NAME[:SETTING...], a SETTING being KEY=VALUE or a bare precision: ncm,adapters:1bit,adapters:fp32:rank=4 (after a comma, KEY=VALUE continues the method before it). Repeatable. [default: ncm,finetune,joint,adapters:1bit,adapters:fp32]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every cell.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per task, for every method that trains.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE for every method that has the setting (repeatable); a cell's own settings win.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Encoder of every cell (default: per benchmark, text or image).")] = None,
    classes_per_task: Annotated[int | None, typer.Option(help="Classes per task for data file benchmarks.")] = None,
    task_field: Annotated[str | None, typer.Option(help="Instead: data files' field/column naming each row's task (as `run --task-field`; registered benchmarks keep their own tasks).")] = None,
    tasks_file: Annotated[str | None, typer.Option("--tasks", metavar="FILE", help="Instead: a JSON file of class lists, one per task (as `run --tasks`; registered benchmarks keep their own tasks).")] = None,
    text_field: Annotated[str, typer.Option(help="Text field/column of data files.")] = "text",
    label_field: Annotated[str, typer.Option(help="Label field/column of data files.")] = "label",
    max_length: Annotated[int, typer.Option(help="Token limit per text.")] = 128,
    cache_dir: Annotated[Path | None, typer.Option(help="Keep frozen features here between runs.", envvar="LIFELONG_CACHE")] = None,
    save: Annotated[bool, typer.Option(help="Save each cell's final model to its model/.")] = True,
    log_: Annotated[str, typer.Option("--log", metavar="TRACKERS", help="Trackers of every cell beside its metrics.csv (as `run --log`).")] = "",
    jobs: Annotated[int, typer.Option(min=1, help="Cells run at once, the CPU threads (LIFELONG_THREADS, else all cores) split between them.")] = 1,
    device: DeviceOption = "auto",
    config: ConfigOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run a grid of benchmarks x methods, one `lifelong run` per cell (finished cells are skipped), then the report."""
    from .bench import plan, run_grid, split_methods
    from .report import write_report

    names = [b.strip() for b in benchmarks.split(",") if b.strip()]
    specs = [m for s in (methods_ or ["ncm,finetune,joint,adapters:1bit,adapters:fp32"]) for m in split_methods(s)]
    grid_settings = parse_sets(set_ or []) | ({"epochs": str(epochs)} if epochs is not None else {})
    common = {"seed": seed, "backbone": backbone, "classes_per_task": classes_per_task, "task_field": task_field,
              "tasks_file": tasks_file, "text_field": text_field, "label_field": label_field,
              "max_length": max_length, "cache_dir": cache_dir, "save": save, "device": device, "log": log_}
    cells = plan(names, specs, common, grid_settings)
    log.info("bench: %d cells (%d benchmarks x %d methods) into %s", len(cells), len(names), len(specs), out)
    try:
        failed = run_grid(cells, out, ["lifelong", *sys.argv[1:]], jobs)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished cells are kept: rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    md, page = write_report(out)
    typer.echo(f"wrote {md} and {page}")
    if failed:
        typer.echo(f"{len(failed)} of {len(cells)} cells failed:", err=True)
        for line in failed:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1)


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="Runs (a folder with results.json), folders of runs, or `lifelong bench` directories.")],
    out: Annotated[Path | None, typer.Option(help="Where report.md, report.html and the plots go (default: the one folder given).")] = None,
) -> None:
    """Compare finished runs in one report.md and report.html (runs grouped by benchmark); runs nothing."""
    from .report import write_report

    md, page = write_report(*paths, out=out)
    typer.echo(f"wrote {md} and {page}")


@app.command()
def adapt(
    model: Annotated[Path | None, typer.Argument(help="Source model: a run, a saved model or a store (current version) of an image benchmark whose method reads frozen features (ncm, lda, ranpac, analytic, probe). Default: the backbone with a linear probe fitted on the benchmark's clean training images.")] = None,
    data: Annotated[Path | None, typer.Option(help="Instead of a benchmark: a folder of unlabeled images (read recursively) to adapt the store MODEL on; publishes a new version (`lifelong rollback` undoes it). --benchmark, --protocol, --severity, --corruptions, --images, --out and --overwrite are then ignored.")] = None,
    benchmark: Annotated[str, typer.Option(help="Shift benchmark: fashion-mnist-c, or an .npz of images or an image folder whose test images are corrupted.")] = "fashion-mnist-c",
    method: Annotated[str, typer.Option(help="Test-time adaptation method; `lifelong methods` lists them.")] = "tent",
    protocol: Annotated[str, typer.Option(help="continual (corruptions one after another, no reset), reset (reset before each), gradual (severity 1->5->1 per corruption) or mixed (all shuffled).")] = "continual",
    severity: Annotated[int, typer.Option(help="Corruption severity, 1 to 5 (gradual runs through all).")] = 5,
    corruptions: Annotated[str | None, typer.Option(help="Comma-separated corruptions in stream order (default: the 15 of ImageNet-C).")] = None,
    images: Annotated[int | None, typer.Option(min=1, help="Test images per corruption (default: all the benchmark has).")] = None,
    batch_size: Annotated[int, typer.Option(min=2, help="Unlabeled images per adaptation step.")] = 64,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any method setting as KEY=VALUE (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the corruptions, the subsample and the methods' randomness.")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory: results.json, plots, adapted.safetensors.")] = Path("runs/adapt"),
    backbone: Annotated[str, typer.Option(help="Image encoder of the default source model.")] = "efficientnet-lite0",
    cache_dir: Annotated[Path | None, typer.Option(help="Keep corrupted images and frozen features here between runs.", envvar="LIFELONG_CACHE")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run in OUT.")] = False,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Adapt an image model to shifting inputs without labels: on a corruption stream, measuring its error, or
    (--data) on a folder of images, publishing the adapted model as a store's new version."""
    from .adaptation import adapt_benchmark
    from .data.shift import CORRUPTIONS, check_corruptions, check_protocol, check_severity
    from .tta import get

    get(method)
    if data is not None:
        from .store.cli import adapt_store

        return adapt_store(model, data, method, parse_sets(set_ or []), batch_size, seed, device)
    check_protocol(protocol)
    check_severity(severity)
    chosen = check_corruptions(corruptions.split(",")) if corruptions else list(CORRUPTIONS)
    if (out / "results.json").exists() and not overwrite:
        raise LifelongError(f"{out}: holds a finished run; give --overwrite to replace it or another --out")
    result = adapt_benchmark(benchmark, method, out, protocol, severity, chosen, parse_sets(set_ or []), seed,
                             batch_size, images, backbone, device, cache_dir, model, progress=not quiet)
    from .report.summary import md_table

    rows = [[seg["name"], f"{seg['error']:.2f}"] for seg in result["segments"]]
    typer.echo(md_table(["segment", "error %"], rows, ["---", "--:"]))
    typer.echo(f"{method}, {protocol}: mean error {result['mean_error']:.2f}% (source on clean images "
               f"{result['source']['clean_error']:.2f}%), {result['seconds_per_batch']:.3f} s per batch")
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
    from . import tta

    table = Table("method", "description", "adapts", "settings (defaults)", title="test-time adaptation (lifelong adapt)")
    for name in sorted(tta.METHODS):
        cls = tta.METHODS[name]
        sets = ", ".join(f"{k}={v}" for k, v in methods.settings(cls.Config).items()) or "-"
        table.add_row(name, cls.description, cls.adapts, sets)
    Console(width=160).print(table)


@app.command("export")
def export(
    model: Annotated[Path, typer.Argument(help="A run, a saved model or a model store (its current version).")],
    out: Annotated[Path, typer.Option(help="Output directory: one folder per task.")],
    format_: Annotated[str, typer.Option("--format", help="Export format: peft (a PEFT LoRA directory per task).")] = "peft",
    version: Annotated[int | None, typer.Option(help="Store version (default: current).")] = None,
) -> None:
    """Write each task's adapter in another library's format (peft: `PeftModel.from_pretrained` loads it)."""
    from .api import load
    from .export import check_format, export_peft

    check_format(format_)
    dirs = export_peft(load(model, version=version, device="cpu"), out)
    typer.echo(f"wrote {len(dirs)} PEFT LoRA adapter(s) under {out}")


from .store.cli import register as _register_store_commands

_register_store_commands(app)


def main() -> None:
    setup_logging()
    try:
        app()
    except LifelongError as e:
        # escaped: a message quoting a bad value must still print, whatever the value or the terminal
        typer.echo(f"error: {e}".encode("utf-8", "backslashreplace").decode("utf-8"), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; no results written", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
