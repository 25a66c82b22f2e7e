"""Adding an adapter kind is one file: a site class that declares its parameters and forward, and a wrap function
registered by name. A toy kind with a vector parameter trains, quantises and saves at every precision."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from lifelong import evaluation, methods
from lifelong.adapters import PRECISIONS
from lifelong.adapters import site as sites
from lifelong.adapters.site import AdapterSite, Param


class GainedLoRA(AdapterSite):
    """LoRA whose output is scaled per channel by a learned gain vector (a DoRA-like magnitude): (W x + B A x) * g."""

    def __init__(self, base: nn.Linear, rank: int, precision: str):
        super().__init__(base, precision)
        self.rank = rank

    def params(self):
        return {"A": Param((self.rank, self.base.in_features), init=lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5))),
                "B": Param((self.base.out_features, self.rank), init=0.0),
                "gain": Param((self.base.out_features,), quantised=False, init=1.0)}

    def forward(self, x):
        y = self.base(x)
        if self.active is None:
            return y
        w = self.weights()
        return (y + F.linear(F.linear(x, w["A"]), w["B"])) * w["gain"]


def wrap(name, module, top):
    if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in top.targets:
        return GainedLoRA(module, top.config.rank, top.config.precision)
    return None


@pytest.fixture
def gained(monkeypatch):
    monkeypatch.setitem(sites.KINDS, "gained", wrap)  # as @register_kind("gained") would, for this test only
    return "gained"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_kind_with_a_vector_parameter_at_every_precision(gained, enc, stream, tmp_path, precision):
    cls = methods.get("adapters")
    config = methods.config_from_dict(cls.Config, {"adapter": gained, "precision": precision, "rank": 2,
                                                   "epochs": 3, "lr": 0.05})
    learner = cls(enc, config)
    result = evaluation.run(learner, stream)
    assert len(result["accuracy_matrix"]) == 2
    saved = learner.save(tmp_path / "m")
    task = load_file(str(saved / "task000.safetensors"))
    gains = {k: v for k, v in task.items() if k.endswith(".gain")}
    assert gains and all(v.dtype == torch.float32 and v.ndim == 1 for v in gains.values())  # vectors stay fp32
    assert any(not torch.equal(v, torch.ones_like(v)) for v in gains.values())  # and were trained
    matrices = {k: v for k, v in task.items() if ".A." in k or ".B." in k}
    if precision == "1bit":  # the matrices went through the precision: packed bits and one scale each
        assert any(v.dtype == torch.uint8 for v in matrices.values())
    texts = list(stream.tasks[0].test.inputs) + list(stream.tasks[1].test.inputs)
    loaded = cls.load(saved, enc)
    assert torch.allclose(loaded.predict(texts), learner.predict(texts), atol=1e-5)
    # bytes: the gain vector counts as fp32, the matrices at their precision
    assert sum(learner.stored_bytes().values()) == sum(
        t.numel() * t.element_size() for f in saved.glob("*.safetensors") for t in load_file(f).values())


def test_an_unregistered_kind_is_named(enc):
    from lifelong.errors import LifelongError

    with pytest.raises(LifelongError, match="unknown adapter 'gained'; choose one of bottleneck, lora"):
        methods.config_from_dict(methods.get("adapters").Config, {"adapter": "gained"})
