"""`lifelong export MODEL --format peft`: each task's LoRA adapter as a PEFT LoRA directory, so the adapted encoder
runs wherever PEFT does (`PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), DIR/task000)`).

    OUT/task000/adapter_config.json        PEFT's LoRA config: rank, alpha, the exact modules adapted
    OUT/task000/adapter_model.safetensors  lora_A / lora_B per module (1-bit and ternary weights dequantised)
    OUT/task000/head.safetensors           the task's classifier over the mean-pooled last hidden state
    OUT/task000/head.json                  its class names, in column order

PEFT's LoRA computes W x + (lora_alpha / r) B A x, the update `adapters/lora.py` trains, so the exported adapter
gives the same hidden states. Routing between tasks and the class model are this library's own and stay out.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from .errors import LifelongError
from .io import atomic_dir


def export_peft(model, out: str | Path) -> list[Path]:
    """Write one PEFT LoRA directory per task of a loaded `adapters` model (a `lifelong.Model`)."""
    learner = model.learner
    if learner.name != "adapters":
        raise LifelongError(f"PEFT export needs an `adapters` model; this one is {learner.name!r}")
    config = learner.config
    if config.adapter != "lora":
        raise LifelongError(f"PEFT export writes LoRA adapters; this model's are {config.adapter!r}")
    if getattr(learner.top, "image", False):
        raise LifelongError("PEFT export is for text backbones (Hugging Face models); this model is an image model")
    if not learner.heads:
        raise LifelongError("the model has learned no tasks yet")
    sites = learner.top.sites
    layers = list(range(learner.top.split, learner.top.split + len(learner.top.blocks)))
    written = []

    def write_task(t: int):
        def write(tmp: Path) -> None:
            tensors = {}
            for name, site in sites.items():
                w = site.bank[t]
                tensors[f"base_model.model.{name}.lora_A.weight"] = w["A"].detach().float().cpu().contiguous()
                tensors[f"base_model.model.{name}.lora_B.weight"] = w["B"].detach().float().cpu().contiguous()
            save_file(tensors, str(tmp / "adapter_model.safetensors"))
            peft_config = {
                "peft_type": "LORA",
                "task_type": None,
                "base_model_name_or_path": learner.backbone.name,
                "r": config.rank,
                "lora_alpha": config.alpha,
                "lora_dropout": 0.0,
                "bias": "none",
                "fan_in_fan_out": False,
                "target_modules": sorted(sites),
                "inference_mode": True,
                "init_lora_weights": True,
            }
            (tmp / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
            head = learner.heads[t]
            save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
                      str(tmp / "head.safetensors"))
            first, k = learner.offsets[t], head.weight.shape[0]
            names = model.classes[first : first + k]
            (tmp / "head.json").write_text(json.dumps({
                "task": t, "classes": names, "pooling": "mean over the attention mask of the last hidden state",
                "precision": config.precision, "layers": layers}, indent=2))

        return atomic_dir(Path(out) / f"task{t:03d}", write)

    for t in range(len(learner.heads)):
        written.append(write_task(t))
    return written


def check_format(fmt: str) -> str:
    if fmt != "peft":
        raise LifelongError(f"unknown export format {fmt!r}; choose peft")
    return fmt


__all__ = ["check_format", "export_peft"]
