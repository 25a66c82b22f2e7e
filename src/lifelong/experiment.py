"""One experiment end to end: load the stream, build the learner, run the protocol, write the run directory.

`lifelong run` is one `Experiment.run`; `lifelong bench` checks a grid of experiments up front (`check` loads no
data), then runs each as `lifelong run` in a process of its own (`argv`), so peak memory is the cell's own.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from . import heap
from .errors import LifelongError
from .methods.settings import Positive

log = logging.getLogger("lifelong")


def environment(device=None) -> dict:
    import torch
    import transformers

    gpu = {}
    if device is not None and torch.device(device).type == "cuda":
        gpu = {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    return {
        **gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@dataclasses.dataclass
class Experiment:
    """Everything `lifelong run` takes. `settings` are the method's settings (strings are parsed by type)."""

    benchmark: str = "clinc150"
    method: str = "ncm"
    seed: int = 0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone: str | None = None
    classes_per_task: Positive | None = None
    text_field: str = "text"
    label_field: str = "label"
    test_file: str | None = None
    task_field: str | None = None  # a data file's tasks from this field of its rows
    tasks_file: str | None = None  # or from a JSON file of class lists (`--tasks`)
    max_length: Positive = 128
    cache_dir: Path | None = None
    oos: bool = False
    save: bool = True
    label: str | None = None  # the run's name in plots and reports (default: the method)
    device: str = "auto"  # where the backbone runs: auto | cpu | cuda | mps (devices.py)
    log: str = ""  # trackers beside metrics.csv, comma-separated: tensorboard, mlflow (tracking.py)

    def check_options(self) -> None:
        """The run's own options by type and range (a method's settings are checked by `config`)."""
        try:
            TypeAdapter(Experiment).validate_python(dataclasses.asdict(self))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            raise LifelongError(f"option {key!r}: {err['msg'][0].lower()}{err['msg'][1:]} "
                                f"(got {err.get('input')!r})") from None

    def config(self):
        """(learner class, its config); a LifelongError names an unknown method or a bad setting."""
        from . import methods

        learner_cls = methods.get(self.method)
        values = dict(self.settings)
        if "seed" in methods.settings(learner_cls.Config):
            values.setdefault("seed", self.seed)
        return learner_cls, methods.config_from_dict(learner_cls.Config, values)

    def check(self) -> None:
        """Every mistake that can be found without loading data or a model: method, settings, benchmark and how
        its tasks are defined (a --tasks file is read and checked)."""
        from .adapters.quant import check_precision
        from .data.benchmarks import check_benchmark
        from .devices import resolve_device
        from .tracking import check as check_trackers

        resolve_device(self.device)
        check_trackers(self.log.split(","))
        self.check_options()
        _, config = self.config()
        if isinstance(getattr(config, "precision", None), str):
            check_precision(config.precision)
        check_benchmark(self.benchmark, self.classes_per_task, self.task_field, self.tasks_file)

    def argv(self, out: Path) -> list[str]:
        """The `lifelong run` arguments that run this experiment into `out`."""
        args = ["run", "--benchmark", self.benchmark, "--method", self.method, "--seed", str(self.seed),
                "--out", str(out), "--max-length", str(self.max_length),
                "--text-field", self.text_field, "--label-field", self.label_field, "--device", self.device]
        optional = {"--backbone": self.backbone, "--classes-per-task": self.classes_per_task,
                    "--task-field": self.task_field, "--tasks": self.tasks_file, "--test-file": self.test_file,
                    "--cache-dir": self.cache_dir, "--label": self.label, "--log": self.log or None}
        args += [x for flag, value in optional.items() if value is not None for x in (flag, str(value))]
        args += ["--oos"] if self.oos else []
        args += [] if self.save else ["--no-save"]
        for key, value in self.settings.items():
            args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
        return args

    def run(self, out: Path, overwrite: bool = False) -> dict:
        """Learn the stream task by task and write out/: model/, the plots, summary.md and, last, results.json.
        A finished run in `out` (its results.json) is refused unless `overwrite`."""
        import torch

        from . import distributed, evaluation
        from .backbones import (
            FeatureCache,
            check_modality,
            default_backbone,
            load_backbone,
        )
        from .data import load_stream
        from .devices import frozen_pass_name, resolve_device, set_threads, training_name
        from .io import crash_point, write_json, write_text
        from .report import accuracy_curve, accuracy_heatmap, markdown
        from .tracking import check as check_trackers
        from .tracking import trackers

        set_threads()
        out = Path(out)
        if (out / "results.json").exists() and not overwrite:
            raise LifelongError(f"{out}: holds a finished run; choose another --out, or pass --overwrite")
        self.check_options()
        check_trackers(self.log.split(","))
        learner_cls, config = self.config()
        # before out/ exists, so bad data (or a bad tasks file) leaves nothing behind
        stream = load_stream(self.benchmark, self.seed, self.classes_per_task, self.text_field, self.label_field,
                             self.test_file, self.task_field, self.tasks_file)
        log.info("%s: %d tasks, %d classes", stream.name, len(stream), len(stream.class_names))
        distributed.setup(resolve_device(self.device))  # with torchrun: join the group; only the main rank writes
        main = distributed.is_main()
        shared = learner_cls.frozen_features or learner_cls.shares_processes
        if distributed.world() > 1 and main and not shared:
            # its training (`fit`) and evaluation are shared like any method's, but the rest of its run (its own
            # passes over the data, dropout drawn per rank) is not checked to give what one process gives
            log.warning("%s is not checked with several processes: training and evaluation are shared between the "
                        "%d, its other work repeated in each", self.method, distributed.world())
        if main:
            (out / "results.json").unlink(missing_ok=True)  # overwriting: not a finished run until the end

        torch.manual_seed(self.seed)
        backbone = self.backbone or default_backbone(stream)
        encoder = load_backbone(backbone, max_length=self.max_length, device=self.device)
        log.info("backbone %s on %s, frozen pass in %s, training in %s", backbone, encoder.device,
                 frozen_pass_name(encoder), training_name(encoder))
        check_modality(encoder, stream)
        features = FeatureCache(encoder, self.cache_dir)
        learner = learner_cls(encoder, config, features)
        options = {**{k: v for k, v in dataclasses.asdict(self).items() if k != "settings"},
                   "backbone": backbone, "settings": dataclasses.asdict(config)}
        tracked = trackers(self.log.split(","), out, options) if main else []

        def progress(i, row):
            crash_point(f"rank{distributed.rank()}-task{i}")  # fault injection (tests): a rank dying mid-run
            if not main:
                return
            acc = sum(row["accuracy"]) / len(row["accuracy"])
            log.info("after task %d: average accuracy %.4f, learn %.1fs", i + 1, acc, row["seconds"])
            features.save()
            for tracker in tracked:
                tracker.log_task(i, stream.tasks[i].name, row)

        result = evaluation.run(learner, stream, on_task_end=progress, oos_protocol=self.oos)
        result["chosen"] = learner.chosen()  # settings chosen on held-out data inside learn
        learner.clear_cache()  # every test input's features: saving and the report need none of them
        heap.trim()  # before the plots (see heap.trim)
        result = {
            "method": self.method,
            **({"label": self.label} if self.label else {}),
            "benchmark": stream.name,
            **result,
            "config": {
                "benchmark": self.benchmark,
                "method": self.method,
                "seed": self.seed,
                "backbone": backbone,
                "max_length": self.max_length,
                "device": str(encoder.device),
                "classes_per_task": self.classes_per_task,
                "task_field": self.task_field,
                "tasks_file": self.tasks_file,
                "text_field": self.text_field,
                "label_field": self.label_field,
                "test_file": self.test_file,
                "oos": self.oos,
                "label": self.label,
                "save": self.save,
                "log": self.log,
                "settings": dataclasses.asdict(config),
                "task_classes": [[stream.class_names[c] for c in t.classes] for t in stream],
            },
            "environment": {**environment(encoder.device), "processes": distributed.world(),
                            "frozen_pass": frozen_pass_name(encoder),
                            "training": training_name(encoder)},
        }
        if not main:
            distributed.teardown()
            return result
        out.mkdir(parents=True, exist_ok=True)
        if self.save:
            learner.save(out / "model")
            result["model_files"] = {p.name: p.stat().st_size for p in sorted((out / "model").iterdir())}
            if hasattr(learner, "file_bytes"):
                result["file_bytes_per_task"] = learner.file_bytes(out / "model")
        accuracy_curve([result], out / "accuracy_curve.png")
        accuracy_heatmap(result, out / "accuracy_matrix.png")
        # the process's peak so far (it only grows), the model's saving and the plots included
        result["peak_memory_mb"] = evaluation.peak_memory_mb()
        write_text(out / "summary.md", markdown(result))
        write_json(out / "results.json", result)  # last: its presence means the run finished
        for tracker in tracked:
            tracker.finish(result)
        distributed.teardown()
        return result
