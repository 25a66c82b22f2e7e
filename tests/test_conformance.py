"""One conformance check run over every registered method (as scikit-learn's check_estimator runs over every
estimator), and over a method defined here in a throwaway module: the protocol, the save format, the byte count."""

import math

import pytest
import torch
from safetensors.torch import load_file

from lifelong import evaluation, methods
from lifelong.errors import LifelongError
from lifelong.methods import Learner

QUICK = {"epochs": 1, "projection": 32, "buffer": 8, "align_epochs": 1, "align_samples": 16, "max_iter": 20,
         "fisher_batches": 2, "importance_batches": 2}


def quick_config(cls):
    own = methods.settings(cls.Config)
    return methods.config_from_dict(cls.Config, {k: v for k, v in QUICK.items() if k in own})


def check_learner(cls, backbone, stream, tmp_path):
    learner = cls(backbone, quick_config(cls))
    result = evaluation.run(learner, stream)

    # the protocol: after the last task, a score per input and per class seen, finite, no test data needed
    R = result["accuracy_matrix"]
    assert len(R) == 2 and R[0][1] is None and all(0 <= a <= 1 for row in R for a in row if a is not None)
    texts = list(stream.tasks[0].test.inputs) + list(stream.tasks[1].test.inputs)
    scores = learner.predict(texts)
    assert scores.shape == (len(texts), len(stream.class_names)) and torch.isfinite(scores).all()
    assert learner.num_classes == len(stream.class_names)
    assert learner.class_names == stream.class_names
    routed, weights = learner.predict_routed(texts)
    assert torch.equal(routed, scores) or torch.allclose(routed, scores, atol=1e-6)
    assert weights is None or weights.shape == (len(texts), 2)
    in_task = learner.predict_in_task(texts, 1, stream.tasks[1].classes)
    assert in_task.shape == (len(texts), len(stream.tasks[1].classes))
    with pytest.raises(TypeError, match="not one str"):
        learner.predict(texts[0])
    if cls.frozen_features:  # what test-time adaptation differentiates through scores as predict does
        assert torch.allclose(learner.score_features(learner.features(texts)), scores, atol=1e-6)

    # bytes: what the method reports is what its files hold, tensor for tensor; a method that keeps examples
    # also counts them (the field's memory budget), though it needs them to learn, not to predict
    saved = learner.save(tmp_path / cls.name)
    on_disk = sum(t.numel() * t.element_size() for f in saved.glob("*.safetensors") for t in load_file(f).values())
    reported = learner.stored_bytes()
    examples = reported.pop("examples", 0)
    assert on_disk == sum(reported.values())
    assert (examples > 0) == cls.keeps_examples
    assert result["stored_bytes"][-1] == learner.stored_bytes()  # the run reports what the learner holds

    # save -> load (through the base class, which finds the method) -> the same scores and names
    loaded = Learner.load(saved, backbone)
    assert type(loaded) is cls and loaded.class_names == stream.class_names
    again = loaded.predict(texts)
    assert torch.allclose(again, scores, atol=1e-5), (again - scores).abs().max()

    # a damaged file is refused with a LifelongError, never loaded
    victim = sorted(saved.glob("*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    victim.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(LifelongError):
        Learner.load(saved, backbone)
    return result


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_keeps_the_protocol(name, enc, stream, tmp_path):
    check_learner(methods.get(name), enc, stream, tmp_path)


def test_a_method_is_one_file_and_nothing_else(enc, stream, tmp_path, monkeypatch):
    """A method written in a module of its own, registered by name, passes the same check."""
    import importlib.util
    import sys

    source = tmp_path / "nearest_mean_plus.py"
    source.write_text('''
import dataclasses
import torch
import torch.nn.functional as F
from lifelong.methods import Learner, register
from lifelong.methods.settings import PositiveFloat


@dataclasses.dataclass
class Config:
    temperature: PositiveFloat = 1.0


@register
class NearestMeanPlus(Learner):
    name = "nearest_mean_plus"
    description = "cosine to class means, a test of the registry"
    Config = Config

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.means = torch.zeros(0, backbone.dim)

    def _learn(self, task):
        x = self.features(task.train.inputs)
        new = torch.stack([x[task.train.labels == c].mean(0) for c in task.classes])
        self.means = torch.cat([self.means, new])

    def predict(self, inputs):
        x = F.normalize(self.features(inputs), dim=-1)
        return x @ F.normalize(self.means, dim=-1).T / self.config.temperature

    def state(self):
        return {"classes.means": self.means}

    def load_state(self, tensors):
        self.means = tensors["classes.means"]
''')
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))  # the registration ends with the test
    spec = importlib.util.spec_from_file_location("nearest_mean_plus", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "nearest_mean_plus", module)
    spec.loader.exec_module(module)
    cls = methods.get("nearest_mean_plus")
    result = check_learner(cls, enc, stream, tmp_path)
    assert not math.isnan(result["final_accuracy"])
    with pytest.raises(LifelongError, match="setting 'temperature'"):
        methods.config_from_dict(cls.Config, {"temperature": "0"})
