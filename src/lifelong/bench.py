"""A grid of experiments, benchmarks x methods, each cell a `lifelong run` into DIR/<benchmark>/<cell>/.

Method specs: `NAME[:SETTING[:SETTING...]]`, a SETTING being `KEY=VALUE` or a bare value, short for
`precision=VALUE`: `adapters:1bit`, `adapters:fp32:rank=4`. In a comma-separated list a `KEY=VALUE` item continues
the method before it, so `ncm,adapters:precision=fp32,rank=4` is two methods. Grid-wide settings (`--epochs`, `--set`)
go to every method that has them; a cell's own settings win.

Every cell is checked before any runs. A cell runs in a process of its own (its peak memory is its own, a crash
stays in it), logging to DIR/<benchmark>/<cell>.log. A cell whose results.json exists (written last, atomically)
finished earlier and is skipped, so rerunning the command resumes an interrupted grid. With `jobs` > 1 that many
cells run at once, the CPU threads split between them (LIFELONG_THREADS, else every core, divided by `jobs`): cells
are independent, so a grid of small cells fills a machine that one cell would leave idle. Timings of cells that ran
together are not comparable with cells that ran alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .devices import split_threads
from .errors import LifelongError
from .experiment import Experiment
from .io import write_json
from .layout import BENCH_MANIFEST

log = logging.getLogger("lifelong")
FILE_TASKS = ("task_field", "tasks_file")  # Experiment fields that define a data file's tasks


@dataclasses.dataclass
class Cell:
    benchmark: str  # directory name under the bench root
    name: str  # directory name under the benchmark
    experiment: Experiment

    @property
    def path(self) -> str:
        return f"{self.benchmark}/{self.name}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("._") or "_"


def split_methods(specs: str) -> list[str]:
    """'ncm,adapters:precision=fp32,rank=4' -> ['ncm', 'adapters:precision=fp32:rank=4']."""
    out: list[str] = []
    for item in (s.strip() for s in specs.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item:
            if not out:
                raise LifelongError(f"method spec {item!r}: a setting needs a method before it, e.g. adapters:{item}")
            out[-1] += ":" + item
        else:
            out.append(item)
    return out


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """'adapters:1bit:rank=4' -> ('adapters', {'precision': '1bit', 'rank': '4'})."""
    name, *items = (s.strip() for s in spec.split(":"))
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = (key.strip().replace("-", "_"), value.strip()) if sep else ("precision", item)
        if not key or not value:
            raise LifelongError(f"method spec {spec!r}: bad setting {item!r}; expected KEY=VALUE or a precision")
        values[key] = value
    if not name:
        raise LifelongError(f"method spec {spec!r}: no method name")
    return name, values


def _label(name: str, values: dict[str, str]) -> str:
    return ":".join([name, *(v if k == "precision" else f"{k}={v}" for k, v in values.items())])


def _cell_name(name: str, values: dict[str, str]) -> str:
    return _safe("-".join([name, *(v if k == "precision" else f"{k}{v}" for k, v in values.items())]))


def plan(benchmarks: list[str], method_specs: list[str], common: dict, grid_settings: dict[str, str]) -> list[Cell]:
    """The grid's cells, every one checked (method, settings, benchmark) before anything runs.
    `common`: Experiment fields shared by all cells; `grid_settings` go to each method that has them."""
    from . import methods
    from .data.benchmarks import BENCHMARKS, check_benchmark

    if not benchmarks or not method_specs:
        raise LifelongError("bench needs at least one benchmark and one method")
    parsed = [parse_method(s) for s in method_specs]
    unused = set(grid_settings)
    for name, _ in parsed:
        unused -= set(methods.settings(methods.get(name).Config))
    if unused:
        raise LifelongError(f"setting {min(unused)!r} is a setting of none of the methods in the grid")

    def shared(benchmark):
        """A registered benchmark defines its own tasks: a grid's --task-field / --tasks are for its data files."""
        return {k: v for k, v in common.items() if k not in FILE_TASKS} if benchmark in BENCHMARKS else common

    for benchmark in benchmarks:
        c = shared(benchmark)
        check_benchmark(benchmark, c.get("classes_per_task"), c.get("task_field"), c.get("tasks_file"))
    cells, seen = [], {}
    for benchmark in benchmarks:
        bench_dir = benchmark if benchmark in BENCHMARKS else _safe(Path(benchmark).stem)
        for name, values in parsed:
            own = methods.settings(methods.get(name).Config)
            settings = {k: v for k, v in grid_settings.items() if k in own} | values
            exp = Experiment(benchmark=benchmark, method=name, settings=settings, label=_label(name, values),
                             **shared(benchmark))
            try:
                exp.check()
            except LifelongError as e:
                raise LifelongError(f"method {exp.label!r}: {e}") from None
            cell = Cell(bench_dir, _cell_name(name, values), exp)
            if cell.path in seen:
                raise LifelongError(f"{seen[cell.path]!r} and {benchmark}/{exp.label} both make the cell {cell.path}")
            seen[cell.path] = f"{benchmark}/{exp.label}"
            cells.append(cell)
    return cells


def _last_error(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else "no output")


def run_cell(cell: Cell, root: Path, env: dict | None = None) -> str | None:
    """Run one cell as `lifelong run` in a child process; None when it finished, else the reason it did not."""
    out, log_path = root / cell.path, root / cell.benchmark / f"{cell.name}.log"
    args = cell.experiment.argv(out)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as f:
        f.write(f"$ lifelong {shlex.join(args)}\n")
        f.flush()
        code = subprocess.run([sys.executable, "-m", "lifelong.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                              check=False, env=env).returncode
    if code == 0 and (out / "results.json").exists():
        return None
    return f"exit {code}: {_last_error(log_path)}"


def cell_env(jobs: int) -> dict | None:
    """The environment of each cell when `jobs` run at once: the threads split between them (None: inherit)."""
    if jobs <= 1:
        return None
    return {**os.environ, "LIFELONG_THREADS": split_threads(jobs)}


def run_grid(cells: list[Cell], root: Path, argv: list[str] | None = None, jobs: int = 1) -> list[str]:
    """Run every unfinished cell, `jobs` at a time, going on past failures; returns 'cell: reason' per failed
    cell, in grid order."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / BENCH_MANIFEST, {"command": argv, "jobs": jobs, "cells": [
        {"benchmark": c.benchmark, "cell": c.name, "label": c.experiment.label,
         "argv": c.experiment.argv(root / c.path)} for c in cells]})
    env = cell_env(jobs)

    def one(k: int, cell: Cell) -> str | None:
        tag = f"[{k}/{len(cells)}] {cell.path}"
        if (root / cell.path / "results.json").exists():
            log.info("%s: skip, finished earlier (results.json exists)", tag)
            return None
        log.info("%s: running %s (log: %s.log)", tag, cell.experiment.label, root / cell.path)
        t0 = time.perf_counter()
        reason = run_cell(cell, root, env)
        if reason:
            log.error("%s: FAILED after %.1fs, %s", tag, time.perf_counter() - t0, reason)
            return f"{cell.path}: {reason}"
        final = json.loads((root / cell.path / "results.json").read_text()).get("final_accuracy")
        log.info("%s: done in %.1fs, final accuracy %s", tag, time.perf_counter() - t0,
                 f"{100 * final:.2f}%" if isinstance(final, float) else final)
        return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, range(1, len(cells) + 1), cells))
    return [reason for reason in outcomes if reason]
