"""Experiment tracking: after each task the protocol loop hands its row (accuracy on every task seen, time, bytes,
routing) to the trackers of the run. `metrics.csv` in the run directory always; TensorBoard and MLflow when
installed (`pip install 'lifelong[tracking]'`), chosen with `--log tensorboard,mlflow`.

A tracker writes nothing until the first task has been learned, so a run refused at start leaves no files.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .errors import LifelongError
from .io import write_text

KINDS = ("csv", "tensorboard", "mlflow")


def _scalars(row: dict) -> dict[str, float]:
    """The numbers of one task's row, flat: average accuracy, accuracy on each task seen, time, bytes."""
    acc = row["accuracy"]
    out = {"average_accuracy": sum(acc) / len(acc), "learn_seconds": row["seconds"]}
    for key in ("eval_seconds", "routing_accuracy", "peak_memory_mb"):
        if row.get(key) is not None:
            out[key] = row[key]
    out["stored_bytes"] = sum(row.get("stored_bytes", {}).values())
    if row.get("out_of_scope"):
        out["oos_recall"] = row["out_of_scope"]["oos_recall"]
        out["in_scope_accuracy"] = row["out_of_scope"]["in_scope_accuracy"]
    out.update({f"accuracy_task{j}": a for j, a in enumerate(acc)})
    return out


class CSVTracker:
    """metrics.csv: one row per task learned, rewritten whole (atomically) after each task."""

    def __init__(self, out: Path):
        self.path, self.rows = out / "metrics.csv", []

    def log_task(self, i: int, name: str, row: dict) -> None:
        self.rows.append({"task": i + 1, "name": name, **_scalars(row)})
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, buf.getvalue())

    def finish(self, result: dict) -> None:
        pass


class TensorBoardTracker:
    """Scalars per task (step = tasks learned) under OUT/tensorboard: `tensorboard --logdir OUT`."""

    def __init__(self, out: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (checked in `make`)

        self.writer_cls, self.dir, self.config, self.writer = SummaryWriter, out / "tensorboard", config, None

    def log_task(self, i: int, name: str, row: dict) -> None:
        if self.writer is None:
            self.writer = self.writer_cls(str(self.dir))
            self.writer.add_text("config", f"```\n{json.dumps(self.config, indent=2, default=str)}\n```")
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, i + 1)
        self.writer.flush()

    def finish(self, result: dict) -> None:
        if self.writer is not None:
            for key in ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer"):
                if isinstance(result.get(key), (int, float)):
                    self.writer.add_scalar(f"final/{key}", result[key], len(result["accuracy_matrix"]))
            self.writer.close()


class MLflowTracker:
    """One MLflow run in the store MLFLOW_TRACKING_URI names (a tracking server, or a database): the run's options as parameters, each task's row as
    metrics at step = tasks learned, the final metrics, and results.json as an artifact."""

    def __init__(self, out: Path, config: dict):
        import mlflow

        self.mlflow, self.out, self.config, self.run = mlflow, out, config, None
        try:
            mlflow.MlflowClient()  # reaches the tracking store now: a bad URI fails before any learning
        except Exception as e:  # MlflowException and whatever its store backends raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LifelongError(f"--log mlflow: cannot use the tracking store {mlflow.get_tracking_uri()!r} "
                                f"({first[:300]}); set MLFLOW_TRACKING_URI") from None

    def log_task(self, i: int, name: str, row: dict) -> None:
        if self.run is None:
            self.run = self.mlflow.start_run(run_name=self.config.get("label") or self.config.get("method"))
            flat = {k: v for k, v in self.config.items() if k != "settings"}
            flat.update({f"settings.{k}": v for k, v in (self.config.get("settings") or {}).items()})
            self.mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        self.mlflow.log_metrics(_scalars(row), step=i + 1)

    def finish(self, result: dict) -> None:
        if self.run is None:
            return
        final = {k: result[k] for k in ("final_accuracy", "average_incremental_accuracy", "forgetting",
                                        "backward_transfer") if isinstance(result.get(k), (int, float))}
        self.mlflow.log_metrics(final)
        if (self.out / "results.json").exists():
            self.mlflow.log_artifact(str(self.out / "results.json"))
        self.mlflow.end_run()


def check(names: list[str]) -> list[str]:
    """The tracker kinds asked for (csv always), each known and importable: a one-line error otherwise."""
    kinds = list(dict.fromkeys(["csv", *(n.strip().lower() for n in names if n.strip())]))
    for kind in kinds:
        if kind not in KINDS:
            raise LifelongError(f"--log {kind!r}: unknown tracker; choose from {', '.join(KINDS)}")
        module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(kind)
        if module:
            import importlib.util

            if importlib.util.find_spec(module) is None:
                raise LifelongError(f"--log {kind}: the {module} package is not installed "
                                    "(pip install 'lifelong[tracking]')")
    return kinds


def trackers(names: list[str], out: Path, config: dict) -> list:
    kinds = check(names)
    made = {"csv": lambda: CSVTracker(out), "tensorboard": lambda: TensorBoardTracker(out, config),
            "mlflow": lambda: MLflowTracker(out, config)}
    return [made[k]() for k in kinds]
