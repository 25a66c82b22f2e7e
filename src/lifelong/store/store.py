"""A versioned model directory that keeps learning: `init`, then one new version per `learn`, `rollback` to any.

    MODEL/manifest.json         backbone (name, weights hash), method, settings, current version, version history
    MODEL/versions/v0003/       one published version: learner files (safetensors + JSON), version.json; beside
                                the learner's files, an image model's norm.safetensors (its source statistics) and,
                                once adapted (`adapt`), backbone.safetensors (the adapted backbone's tensors)
    MODEL/lock                  held (flock) by whoever writes: learn, calibrate, adapt, rollback
    MODEL/cache/v0003.safetensors   per-row results of the newest version's held-out rows, for the next learn
                                (store/memo.py; not part of any version, safe to delete)

Published versions never change. A new version is built in a temporary directory, published by one rename, and
only then made current by an atomic rewrite of the manifest, so a writer killed at any moment leaves the previous
version current and loadable; leftovers of a killed writer are removed by the next one. Files identical to the
parent version's (an `adapters` model's earlier tasks) are hard links, so a version costs only what it adds.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import methods, oos
from ..data.task import Examples, Task
from ..errors import LifelongError
from ..evaluation import accuracy, best_scores
from ..data.rows import check_label, check_rows, hold_out
from ..io import fsync_dir as _fsync_dir
from ..io import crash_point, write_json
from ..model import Model
from . import memo, schema

log = logging.getLogger(__name__)

FORMAT = 1
MODE, DIR_MODE = 0o600, 0o700  # every file and folder of a model: its owner's, like the weights
WRITE_ERRORS = (OSError, SafetensorError)
NORM = "norm.safetensors"  # additive input statistics of every normalisation layer over the images learned so far
BACKBONE = "backbone.safetensors"  # an adapted version's backbone tensors (all of them, by state_dict name)


class StoreBusy(LifelongError):
    """Another writer holds the model's lock."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ModelStore:
    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        """`device`: where the backbone runs when this store loads it (devices.py); not part of the model, whose
        files are the same whatever the device."""
        self.path = Path(path)
        self.device = device
        self.manifest_path = self.path / "manifest.json"
        self._backbones: dict[tuple, object] = {}

    def __repr__(self) -> str:
        try:
            manifest = self.manifest()
            about = f"method {manifest['method']!r}, version {manifest['current']}"
        except LifelongError:
            about = "no model yet"
        return f"ModelStore({str(self.path)!r}: {about})"

    # -- creating and reading ----------------------------------------------------------------------------
    @classmethod
    def init(cls, path, backbone: str, method: str, settings: dict, max_length: int = 128,
             device: str = "auto") -> ModelStore:
        """A new, empty model (version 0): checks the method and its settings now, not at the first `learn`."""
        from ..backbones import load_backbone

        store = cls(path, device)
        if store.manifest_path.exists():
            raise LifelongError(f"{store.manifest_path}: a model already exists here")
        if store.path.exists() and any(store.path.iterdir()):
            raise LifelongError(f"{store.path}: directory is not empty")
        learner_cls = methods.get(method)
        config = methods.config_from_dict(learner_cls.Config, settings)
        encoder = load_backbone(backbone, max_length=max_length, device=device)
        store._backbones[(backbone, max_length)] = encoder
        manifest = {
            "format": FORMAT,
            "backbone": {"name": backbone, "sha256": encoder.weights_hash(), "max_length": max_length},
            "method": method,
            "settings": asdict(config),
            "current": 0,
            "versions": [{"version": 0, "created": _now(), "parent": None, "tasks": [], "threshold": None,
                          "metrics": None, "files": {}, "bytes": 0, "new_bytes": 0}],
        }
        try:
            (store.path / "versions").mkdir(parents=True, exist_ok=True)
            write_json(store.manifest_path, manifest, MODE)
        except OSError as e:
            raise LifelongError(f"{store.path}: cannot create the model ({e.strerror})") from None
        return store

    @classmethod
    def from_run(cls, path, run: str | os.PathLike, device: str = "auto") -> ModelStore:
        """A model whose version 1 is a finished `lifelong run` (its saved model, class names, and the
        out-of-scope threshold when the run measured one): a benchmarked learner goes straight to serving."""
        run = Path(run)
        try:
            result = json.loads((run / "results.json").read_text(encoding="utf-8"))
            config = result["config"]
        except (OSError, ValueError, KeyError) as e:
            raise LifelongError(f"{run / 'results.json'}: not a finished run ({e})") from None
        if not (run / "model").is_dir():
            raise LifelongError(f"{run}: the run saved no model (it ran with --no-save)")
        existed = Path(path).exists()
        store = cls.init(path, config["backbone"] or "all-MiniLM-L6-v2", config["method"], config["settings"],
                         config.get("max_length", 128), device)
        try:
            store._import(run, result, config)
        except BaseException:
            if not existed:
                shutil.rmtree(store.path, ignore_errors=True)  # no half-made model left behind
            raise
        return store

    def _import(self, run: Path, result: dict, config: dict) -> None:
        manifest = self.manifest()
        learner = methods.get(manifest["method"]).load(run / "model", self.backbone(manifest))
        rejection = result.get("out_of_scope")
        parent = self.entry(0, manifest)
        entry = {
            "version": 1,
            "created": _now(),
            "parent": 0,
            "tasks": [{"name": n, "classes": c, "version": 1, "train_examples": None, "source": str(run)}
                      for n, c in zip(result["task_names"], config["task_classes"])],
            "threshold": rejection["threshold"] if rejection else None,
            "calibrated": bool(rejection),
            "metrics": {**(rejection or {}), "final_accuracy": result["final_accuracy"], "on": "test split of the run"},
            "learn_seconds": round(sum(result["seconds_per_task"]), 3),
        }
        tensors = self._run_statistics(learner.backbone, run, config) if _normalised(learner.backbone) else {}
        with self.lock():
            self._commit(manifest, learner, entry, parent, tensors)

    def _run_statistics(self, encoder, run: Path, config: dict) -> dict:
        """{NORM: statistics of the run's training images} when its benchmark can be loaded again here (same
        options, same seed, so the same images); else nothing, and `adapt` will say so."""
        from ..data import load_stream

        try:
            stream = load_stream(config["benchmark"], config["seed"], config.get("classes_per_task"),
                                 config.get("text_field", "text"), config.get("label_field", "label"),
                                 config.get("test_file"), config.get("task_field"), config.get("tasks_file"))
            return {NORM: _statistics(encoder, [x for task in stream.tasks for x in task.train.inputs])}
        except (LifelongError, OSError, KeyError) as e:
            log.warning("%s: no source statistics recorded, its benchmark's training images are not at hand (%s); "
                        "`lifelong adapt` will refuse this model", run, e)
            return {}

    def manifest(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LifelongError(f"{self.path}: not a model (no manifest.json; create one with `lifelong init`)") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise LifelongError(f"{self.manifest_path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "versions" not in manifest:
            raise LifelongError(f"{self.manifest_path}: not a lifelong model manifest (format {FORMAT})")
        schema.check(schema.Manifest, manifest, self.manifest_path)
        return manifest

    def entry(self, version: int | None = None, manifest: dict | None = None) -> dict:
        manifest = manifest or self.manifest()
        version = manifest["current"] if version is None else version
        for e in manifest["versions"]:
            if e["version"] == version:
                return e
        known = ", ".join(str(e["version"]) for e in manifest["versions"])
        raise LifelongError(f"{self.path}: no version {version} (versions: {known})")

    def version_dir(self, version: int) -> Path:
        return self.path / "versions" / f"v{version:04d}"

    # -- loading a version ---------------------------------------------------------------------------------
    def backbone(self, manifest: dict):
        from ..backbones import load_backbone

        b = manifest["backbone"]
        key = (b["name"], b["max_length"])
        if key not in self._backbones:
            encoder = load_backbone(b["name"], max_length=b["max_length"], device=self.device)
            if encoder.weights_hash() != b["sha256"]:
                raise LifelongError(f"{self.manifest_path}: backbone {b['name']!r} here has other weights than the "
                                    "ones this model was trained on")
            self._backbones[key] = encoder
        return self._backbones[key]

    def load(self, version: int | None = None) -> Model:
        """The learner of a version, its class names and threshold; every file is checked against its SHA-256."""
        manifest = self.manifest()
        entry = self.entry(version, manifest)
        learner_cls = methods.get(manifest["method"])
        encoder = self.backbone(manifest)
        if entry["version"] == 0:
            learner = learner_cls(encoder, methods.config_from_dict(learner_cls.Config, manifest["settings"]))
        else:
            folder = self.check_files(entry)
            try:
                if BACKBONE in entry["files"]:  # its own copy: the cached backbone stays the other versions'
                    encoder = copy.deepcopy(encoder)
                    encoder.model.load_state_dict(load_file(folder / BACKBONE), strict=True)
                learner = learner_cls.load(folder, encoder)
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError, SafetensorError) as e:
                # every file passed its checksum and its schema, so this is a file whose contents were made to
                # fit both: still one line, not a traceback
                raise LifelongError(f"{folder}: unexpected contents ({type(e).__name__}: {e})") from None
        classes = [c for t in entry["tasks"] for c in t["classes"]]
        return Model(learner, classes, entry["threshold"], entry["version"])

    def check_files(self, entry: dict) -> Path:
        """A published version's files against the manifest's SHA-256, then version.json, learner.json and every
        tensor header against their schemas; returns its learner folder. A file shared by hard links with other
        versions is named as such: damaging it damages them all."""
        folder = self.version_dir(entry["version"]) / "learner"
        for name, digest in entry["files"].items():
            file = folder / name
            try:
                ok = _sha256(file) == digest
                links = file.stat().st_nlink
            except OSError as e:
                raise LifelongError(f"{file}: cannot read ({e.strerror})") from None
            if not ok:
                shared = f"; the file is shared with {links - 1} other version(s), which are damaged too" if links > 1 else ""
                raise LifelongError(f"{file}: checksum mismatch (truncated or modified){shared}; "
                                    f"older versions may still load (`lifelong rollback`)")
        version_file = folder.parent / "version.json"
        if schema.read_json(schema.VersionEntry, version_file)["version"] != entry["version"]:
            raise LifelongError(f"{version_file}: field version: not {entry['version']}")
        if "learner.json" in entry["files"]:
            schema.read_json(schema.LearnerMeta, folder / "learner.json")
        for name in entry["files"]:
            if name.endswith(".safetensors"):
                schema.check_safetensors(folder / name)
        return folder

    # -- writing -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, wait: float = 0.0):
        """Exclusive writer lock (filelock: flock on Unix, LockFileEx on Windows, so writers on any OS and on
        shared storage that honours them stay serial); waits up to `wait` seconds for another writer, then fails
        with one line naming the holder's pid."""
        from filelock import FileLock, Timeout

        self.manifest()  # a clear error if this is not a model
        path = self.path / "lock"

        def note_holder(fd: int) -> None:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except (OSError, AttributeError):  # the pid is for the busy message only
                pass

        lock = FileLock(path, timeout=max(wait, 0.0), mode=MODE, poll_interval=0.2, fallback_to_soft=False,
                        preserve_lock_file=True, on_acquired=note_holder)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = path.read_text(errors="replace").strip()[:64] or "unknown"
            except OSError:
                holder = "unknown"
            raise StoreBusy(f"{self.path}: another learn or rollback is running (pid {holder}); "
                            "try again when it ends") from None
        except OSError as e:
            raise LifelongError(f"{path}: cannot open the writer lock ({e.strerror or e})") from None
        try:
            self._clean_leftovers()
            yield
        finally:
            lock.release()

    def _clean_leftovers(self) -> None:
        """Under the lock: temporary and unpublished version directories of a writer that was killed."""
        known = {self.version_dir(e["version"]).name for e in self.manifest()["versions"]}
        for d in (self.path / "versions").iterdir():
            if d.name not in known:
                log.warning("removing %s, left by an interrupted learn", d)
                shutil.rmtree(d, ignore_errors=True)

    def learn(self, rows: list[tuple[str, str]], name: str = "", calibration: list[tuple[str, str]] | None = None,
              oos_label: str = "oos", holdout: float = 0.1, seed: int = 0, wait: float = 60.0,
              source: str = "data", min_examples: int = 5) -> dict:
        """Learn the classes in `rows` (text, label) as the next task; returns the new version's entry.

        `calibration` (held-out rows: known classes, and `oos_label` for out-of-scope) sets the rejection threshold
        and the metrics recorded; without it a stratified `holdout` fraction of `rows` is held out for that. With
        neither, the version keeps its parent's threshold and is marked `calibrated: false`. A class with fewer
        than `min_examples` rows is refused: a class learned from one example is a class the server would answer
        with on the next request. `seed` draws the hold-out and, with the task's index, the new task's initial
        weights (the caller's random state is left as it was).
        """
        name = check_label(name, source, "name", reserved=()) if name else ""  # written into the manifest
        rows = check_rows(rows, source, oos_label)  # before the lock: a bad row costs nothing and changes nothing
        calibration = None if calibration is None else check_rows(calibration, source, allow_oos=True)
        with self.lock(wait):
            manifest = self.manifest()
            parent = self.entry(None, manifest)
            model = self.load(parent["version"])
            known = {c: t["name"] for t in parent["tasks"] for c in t["classes"]}
            for _, label in rows:
                if label == oos_label:
                    raise LifelongError(f"{source}: training rows cannot be labelled {oos_label!r} (out of scope)")
                if label in known:
                    raise LifelongError(f"{source}: class {label!r} was already learned (task {known[label]!r}); "
                                        "a learn call brings new classes only")
            new_classes = list(dict.fromkeys(label for _, label in rows))
            if not new_classes:
                raise LifelongError(f"{source}: no training rows")
            counts = {c: 0 for c in new_classes}
            for _, label in rows:
                counts[label] += 1
            few = [f"{c!r} ({n})" for c, n in counts.items() if n < min_examples]
            if few:
                raise LifelongError(f"{source}: {len(few)} class(es) with fewer than {min_examples} examples: "
                                    f"{', '.join(few[:5])}{' ...' if len(few) > 5 else ''}; add examples, or "
                                    "lower the minimum (--min-examples)")
            if calibration is None and holdout > 0:
                rows, calibration = hold_out(rows, holdout, seed)
            class_names = model.classes + new_classes
            ids = {c: i for i, c in enumerate(class_names)}
            index = len(parent["tasks"])
            task = Task(index, [ids[c] for c in new_classes],
                        Examples([t for t, _ in rows], torch.tensor([ids[c] for _, c in rows])), None,
                        Examples([], torch.empty(0, dtype=torch.long)), name or f"task{index}")
            t0 = time.perf_counter()
            # a new task's random draws (an adapter's and a head's initial weights, dropout) from a generator seeded
            # by `seed` and the task's index: the same learn gives the same version, in any process (before, each
            # learn drew from an unseeded generator, and one task's epochs chosen on held-out data ranged 2 to 5)
            with torch.random.fork_rng():
                torch.manual_seed(seed + index)
                model.learner.learn(task)
            model.learner.class_names = class_names
            tensors = self._add_statistics(manifest, parent, task.train.inputs)
            seconds = time.perf_counter() - t0
            threshold, metrics = parent["threshold"], None
            if calibration:
                memo.load(self.path, parent["version"], model.learner)  # rows this learn need not compute again
                threshold, metrics = _calibrate(model.learner, calibration, ids, oos_label, source)
            else:
                log.warning("%s: no held-out rows, so the threshold (%s) is not calibrated for the new classes; "
                            "set it with `lifelong calibrate`", source, threshold)
            version = max(e["version"] for e in manifest["versions"]) + 1
            entry = {
                "version": version,
                "created": _now(),
                "parent": parent["version"],
                "tasks": parent["tasks"] + [{"name": task.name, "classes": new_classes, "version": version,
                                             "train_examples": len(rows), "source": source}],
                "threshold": threshold,
                "calibrated": bool(calibration),
                "metrics": metrics,
                "learn_seconds": round(seconds, 3),
            }
            entry = self._commit(manifest, model.learner, entry, parent, tensors)
            if calibration:
                memo.save(self.path, version, model.learner, [t for t, _ in calibration])
            return entry

    def _add_statistics(self, manifest: dict, parent: dict, images) -> dict:
        """{NORM: the parent's source statistics plus those of `images`} for an image model, measured through the
        pristine backbone (what `adapt` folds them into); nothing for text, or after tasks learned without them
        (a total missing those tasks' images would misstate the source data)."""
        encoder = self.backbone(manifest)
        if not _normalised(encoder):
            return {}
        if NORM not in parent["files"] and parent["tasks"]:
            log.warning("version %d has no source statistics, so this version records none either",
                        parent["version"])
            return {}
        stats = _statistics(encoder, images)
        if NORM in parent["files"]:
            old = load_file(self.version_dir(parent["version"]) / "learner" / NORM)
            stats = {k: old[k] + v for k, v in stats.items()}
        return {NORM: stats}

    def adapt(self, images, method: str, settings: dict | None = None, batch_size: int = 64, wait: float = 60.0,
              seed: int = 0, source: str = "images") -> dict:
        """Adapt the current version's backbone to unlabeled `images` (paths, read in order) with a test-time
        adaptation method (tta/) and publish it as a new version: the same learner files (linked), the adapted
        backbone's tensors, the same classes and threshold (marked not calibrated: confidences move). Rollback to
        the parent gives back its backbone.

        Adaptation always starts from the pristine backbone with the source statistics folded in (those are
        measured through it), not from an earlier adaptation: each adapted version is the source model adapted
        to the images given, so adaptations do not compound. Every image is decoded before anything runs."""
        from .. import tta
        from ..backbones.image import _read
        from ..tta.sources import fold_statistics, source_from_learner

        cls = tta.get(method)
        config = methods.config_from_dict(cls.Config, settings or {})
        if len(images) == 0:
            raise LifelongError(f"{source}: no images to adapt on")
        with self.lock(wait):
            manifest, parent, model = self._current()
            try:
                source_from_learner(model.learner)  # an image backbone, a method that scores frozen features
            except LifelongError as e:
                raise LifelongError(f"{self.path}: {e}") from None
            pristine = self.backbone(manifest)
            if not _normalised(pristine):
                raise LifelongError(f"{self.path}: backbone {pristine.name!r} has no batch normalisation layers, "
                                    "which test-time adaptation adapts; use efficientnet-lite0")
            if NORM not in parent["files"]:
                raise LifelongError(f"{self.path}: version {parent['version']} has no source statistics (the "
                                    "backbone's normalisation statistics on the images learned), which adaptation "
                                    "starts from; they are recorded when an image model learns its tasks with "
                                    "`lifelong learn`, or imports a run whose benchmark data is at hand")
            decoded = [_read(x) for x in images]  # a file that does not decode is named before anything runs
            folder = self.version_dir(parent["version"]) / "learner"
            t0 = time.perf_counter()
            encoder = copy.deepcopy(pristine)
            fold_statistics(encoder.model, load_file(folder / NORM))
            learner = methods.get(manifest["method"]).load(folder, encoder)
            learner.class_names = model.classes
            adapter = cls(source_from_learner(learner), config)
            batches = _batches(decoded, batch_size)
            torch.manual_seed(seed)
            try:
                for batch in batches:
                    adapter.adapt(encoder.pixels(batch, normalise=False))
                encoder.model.load_state_dict(adapter.state(), strict=True)
                if cls.adapts != "nothing":
                    _estimate_statistics(encoder, batches)
            except ValueError as e:  # batch statistics of a batch too small for them
                raise LifelongError(f"{source}: cannot adapt on these images ({e})") from None
            tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
            version = max(e["version"] for e in manifest["versions"]) + 1
            entry = {
                "version": version,
                "created": _now(),
                "parent": parent["version"],
                "tasks": parent["tasks"],
                "threshold": parent["threshold"],
                "calibrated": False,
                "metrics": None,
                "learn_seconds": round(time.perf_counter() - t0, 3),
                "adapted": {"method": method, "settings": asdict(config), "images": len(decoded), "source": source,
                            "seed": seed},
            }
            return self._commit(manifest, model.learner, entry, parent, {BACKBONE: tensors})

    def calibrate(self, calibration: list[tuple[str, str]], oos_label: str = "oos", wait: float = 60.0,
                  source: str = "data") -> dict:
        """A new version of the current one with only the rejection threshold (and metrics) set anew from
        held-out rows: for a threshold that drifted, or one set with another confidence score."""
        calibration = check_rows(calibration, source, allow_oos=True)
        with self.lock(wait):
            manifest, parent, model = self._current()
            ids = {c: i for i, c in enumerate(model.classes)}
            memo.load(self.path, parent["version"], model.learner)
            threshold, metrics = _calibrate(model.learner, calibration, ids, oos_label, source)
            version = max(e["version"] for e in manifest["versions"]) + 1
            entry = {"version": version, "created": _now(), "parent": parent["version"], "tasks": parent["tasks"],
                     "threshold": threshold, "calibrated": True, "metrics": metrics, "learn_seconds": 0.0}
            entry = self._commit(manifest, model.learner, entry, parent)
            memo.save(self.path, version, model.learner, [t for t, _ in calibration])
            return entry

    def _current(self) -> tuple[dict, dict, Model]:
        """(manifest, current entry, its model) for a writer that derives a version from a trained one."""
        manifest = self.manifest()
        parent = self.entry(None, manifest)
        model = self.load(parent["version"])
        if not model.classes:
            raise LifelongError(f"{self.path}: the model has learned no classes yet")
        return manifest, parent, model

    def _commit(self, manifest: dict, learner, entry: dict, parent: dict, tensors: dict | None = None) -> dict:
        """Publish the version's files, then make it current: the manifest rewrite is the moment it exists.
        A failed write (disk full, read-only, no permission) is one line, and the model stays as it was.
        `tensors`: backbone files (NORM, BACKBONE) written anew; the parent's others are carried over."""
        tensors = tensors or {}
        if BACKBONE in parent["files"] and BACKBONE not in tensors and parent.get("adapted"):
            entry.setdefault("adapted", parent["adapted"])  # a learn or calibrate keeps the adapted backbone
        try:
            entry.update(self._publish(learner, entry, parent, tensors))
        except WRITE_ERRORS as e:
            raise self._write_failed(e) from None
        manifest["versions"].append(entry)
        manifest["current"] = entry["version"]
        crash_point("before-manifest")
        try:
            write_json(self.manifest_path, manifest, MODE)
        except OSError as e:
            shutil.rmtree(self.version_dir(entry["version"]), ignore_errors=True)  # published, never current
            raise self._write_failed(e) from None
        return entry

    def _write_failed(self, e: Exception) -> LifelongError:
        why = getattr(e, "strerror", None) or str(e)
        return LifelongError(f"{self.path}: cannot write the new version ({why}); the model is unchanged")

    def _publish(self, learner, entry: dict, parent: dict, tensors: dict) -> dict:
        """Write the version into a temporary directory, link unchanged files to the parent's, rename it in."""
        final = self.version_dir(entry["version"])
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            learner.save(tmp / "learner")
            old = self.version_dir(parent["version"]) / "learner"
            for name in (NORM, BACKBONE):
                if name in tensors:
                    save_file(tensors[name], tmp / "learner" / name)
                elif name in parent["files"]:
                    os.link(old / name, tmp / "learner" / name)
            crash_point("after-save")
            files, total, new = {}, 0, 0
            for f in sorted((tmp / "learner").iterdir()):
                digest, size = _sha256(f), f.stat().st_size
                files[f.name] = digest
                total += size
                if parent["files"].get(f.name) == digest and (old / f.name).is_file():
                    if not f.samefile(old / f.name):
                        link = f.with_name(f.name + ".link")
                        os.link(old / f.name, link)
                        os.replace(link, f)
                else:
                    new += size
            info = {"files": files, "bytes": total, "new_bytes": new}
            write_json(tmp / "version.json", {**entry, **info}, MODE)
            for f in (tmp / "learner").iterdir():
                if f.stat().st_nlink == 1:  # a linked file is the parent's, already set
                    os.chmod(f, MODE)
            os.chmod(tmp / "learner", DIR_MODE)
            os.chmod(tmp, DIR_MODE)
            _fsync_dir(tmp / "learner")
            _fsync_dir(tmp)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            crash_point("after-publish")
            return info
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def rollback(self, version: int, wait: float = 60.0) -> dict:
        """Make an older (or newer) version current; the next `learn` builds on it. Nothing is deleted."""
        with self.lock(wait):
            manifest = self.manifest()
            entry = self.entry(version, manifest)
            self.load(version)  # refuse to roll back to a version that does not load
            manifest["current"] = version
            try:
                write_json(self.manifest_path, manifest, MODE)
            except OSError as e:
                raise LifelongError(f"{self.manifest_path}: cannot write ({e.strerror}); the model is unchanged") from None
            return entry


def _calibrate(learner, calibration, ids: dict[str, int], oos_label: str, source: str) -> tuple[float | None, dict]:
    """Threshold and metrics from held-out rows: known classes, and `oos_label` for out-of-scope queries."""
    in_scope = [(t, c) for t, c in calibration if c != oos_label]
    for _, c in in_scope:
        if c not in ids:
            raise LifelongError(f"{source}: held-out class {c!r} was never learned")
    out_texts = [t for t, c in calibration if c == oos_label]
    examples = Examples([t for t, _ in in_scope], torch.tensor([ids[c] for _, c in in_scope], dtype=torch.long))
    hits, scores, _ = accuracy(learner, examples)
    oos_scores = best_scores(learner, out_texts) if out_texts else None
    threshold = oos.calibrate(scores, hits, oos_scores)
    metrics = asdict(oos.Rejection.measure(threshold, scores, hits, oos_scores))
    metrics.update(in_scope_examples=len(in_scope), out_of_scope_examples=len(out_texts))
    return metrics["threshold"], metrics


def _normalised(encoder) -> bool:
    """An image backbone with batch normalisation: what test-time adaptation adapts and NORM describes."""
    from ..tta.base import norm_layers

    return getattr(encoder, "modality", "text") == "image" and any(True for _ in norm_layers(encoder.model))


def _statistics(encoder, images, chunk: int = 256) -> dict[str, torch.Tensor]:
    """`norm_statistics` of images (paths or arrays) of any sizes: decoded a chunk at a time, one pass per shape."""
    from ..backbones.image import _read
    from ..tta.sources import norm_statistics

    total: dict[str, torch.Tensor] = {}
    for s in range(0, len(images), chunk):
        for batch in _batches([_read(x) for x in images[s : s + chunk]], chunk):
            for k, v in norm_statistics(encoder, batch).items():
                total[k] = total[k] + v if k in total else v
    return total


def _batches(images: list[torch.Tensor], batch_size: int) -> list[list[torch.Tensor]]:
    """Decoded images in batches of one shape (they are stacked), in order within each shape, of near-equal
    sizes up to `batch_size`: a trailing batch of one image has no batch statistics."""
    by_shape: dict[tuple, list[torch.Tensor]] = {}
    for t in images:
        by_shape.setdefault((tuple(t.shape), t.dtype), []).append(t)
    out = []
    for group in by_shape.values():
        size = -(-len(group) // -(-len(group) // batch_size))
        out += [group[s : s + size] for s in range(0, len(group), size)]
    return out


@torch.no_grad()
def _estimate_statistics(encoder, batches) -> None:
    """The adapted network's running statistics re-estimated on the adapt images (averaged over the batches):
    served in inference mode, it then normalises with the target's statistics, as it did while adapting."""
    from ..tta.base import norm_layers

    net = encoder.model.eval()
    layers = list(norm_layers(net))
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum, m.track_running_stats = None, True
        m.train()
    for batch in batches:
        net(encoder.pixels(batch))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
        m.eval()
