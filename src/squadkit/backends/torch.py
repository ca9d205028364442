"""The torch backend: a transformers ``AutoModelForQuestionAnswering`` on a torch device."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model_folder import (
    check_head_loaded,
    check_qa_checkpoint,
    config_window_limit,
    hub_error,
    load_config,
    load_tokenizer,
    quiet_transformers,
    resolve_model_source,
)
from ..errors import SquadkitError
from ..features import Batch

DTYPES = ("fp32", "bf16", "fp16", "auto")


def pick_device(device: str | int | None = None) -> str:
    """'cuda' when a GPU is there and none was asked for; ints mean a CUDA index, -1 the CPU."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    return str(device)


@dataclass
class TorchQAModel:
    """A transformers QA model on a torch device, with its tokenizer."""

    model: Any
    tokenizer: Any
    name_or_path: str
    device: str = "cpu"
    window_limit: int | None = None
    backend: str = "torch"
    head_sha256: str | None = None  # fingerprint of the QA head's weights (torch_head_fingerprint)
    # each batch's width rounded up to this (features.padded_width). 1 on every device: unlike training,
    # answering on a GPU gained nothing from 64 (benchmarks/bench_gpu_predict.py: 0.93-1.03x on an H200)
    pad_multiple: int = 1

    @property
    def input_names(self) -> tuple[str, ...]:
        names = tuple(n for n in self.tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids"))
        return names if "input_ids" in names else ("input_ids", "attention_mask")

    def _forward(self, batch: Batch):
        """float32 start and end logits of ``batch`` as torch tensors on the model's device."""
        import torch

        arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.input_names and batch.token_type_ids is not None:
            arrays["token_type_ids"] = batch.token_type_ids
        with torch.inference_mode():
            out = self.model(**{k: to_device(v, self.device) for k, v in arrays.items()})
            return out.start_logits.float(), out.end_logits.float()

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        start, end = self._forward(batch)
        return start.cpu().numpy(), end.cpu().numpy()

    def device_logits(self, batch: Batch):
        """Start and end logits as float32 torch tensors left on a CUDA device (None elsewhere: use
        ``logits``), for span scoring there (``nbest.squad_batch_nbest``)."""
        return self._forward(batch) if str(self.device).startswith("cuda") else None


def to_device(array: np.ndarray, device):
    """A host array as a tensor on ``device``: on CUDA through pinned memory, copied without blocking (the
    copy overlaps the work already queued); elsewhere a plain copy."""
    import torch

    tensor = torch.from_numpy(array)
    if str(device).startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _torch_dtype(dtype: str | None):
    import torch

    table = {None: None, "auto": "auto", "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise SquadkitError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}", param="dtype")
    return table[dtype]


def load_torch_model(
    name_or_path: str | os.PathLike,
    tokenizer=None,
    device: str | int | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> TorchQAModel:
    """Load a QA checkpoint (hub id or folder) and its tokenizer for inference.

    Refuses, before loading weights, a path that does not exist, an unreachable hub id, and a
    checkpoint saved without a QA head; after loading, a checkpoint whose QA head was missing.
    """
    source = resolve_model_source(name_or_path, revision)  # before importing torch: a bad path fails at once
    import torch
    from transformers import AutoModelForQuestionAnswering

    torch_dtype = _torch_dtype(dtype)
    config = load_config(source, trust_remote_code, revision)
    check_qa_checkpoint(config, source.name)
    # half precision is applied after the head's fingerprint is taken: a calibrator fitted on the
    # stored weights belongs to the same model loaded in bf16 or fp16 (as export's fp16 and int8 files)
    half = torch_dtype in (torch.bfloat16, torch.float16)
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None and not half else {}
    try:
        with quiet_transformers():
            model, info = AutoModelForQuestionAnswering.from_pretrained(
                source.name, config=config, trust_remote_code=trust_remote_code, revision=revision,
                output_loading_info=True, **source.hub_kwargs(), **kwargs,
            )
    except (OSError, ValueError) as exc:
        raise hub_error(source.name, exc) from None
    check_head_loaded(list(info.get("missing_keys", [])), source.name)
    if tokenizer is None:
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code, revision=revision)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer), trust_remote_code=trust_remote_code)
    head = torch_head_fingerprint(model)
    if half:
        model.to(torch_dtype)
    device = pick_device(device)
    model.to(device).eval()
    return TorchQAModel(model, tokenizer, source.name, device, config_window_limit(config, tokenizer), head_sha256=head)


def wrap_torch_model(model, tokenizer, device: str | int | None = None) -> TorchQAModel:
    """An in-memory transformers QA model (and its tokenizer, or a tokenizer folder) as a backend."""
    if tokenizer is None:
        raise SquadkitError("pass the tokenizer along with an in-memory model", param="tokenizer")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer))
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", "") or type(model).__name__
    dev = str(next(model.parameters()).device) if device is None else pick_device(device)
    model.to(dev).eval()
    return TorchQAModel(model, tokenizer, name, dev, config_window_limit(config, tokenizer),
                        head_sha256=torch_head_fingerprint(model))


def head_fingerprint_from_arrays(weight: np.ndarray, bias: np.ndarray | None) -> str:
    """sha256 of the QA head: its weight as float32 (2, hidden), then its bias as float32 (2,)."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError("the QA head's weight must be a matrix")
    if w.shape[0] != 2 and w.shape[1] == 2:
        w = w.T
    digest = hashlib.sha256(np.ascontiguousarray(w).tobytes())
    if bias is not None:
        digest.update(np.ascontiguousarray(np.asarray(bias, dtype=np.float32)).tobytes())
    return digest.hexdigest()


def torch_head_fingerprint(model) -> str | None:
    """The fingerprint of a transformers QA model's head (``qa_outputs``), or None when it has none:
    what a calibrator saved in ``squadkit.json`` is checked against."""
    params = dict(model.named_parameters())
    weight = next((v for k, v in params.items() if k.endswith("qa_outputs.weight")), None)
    bias = next((v for k, v in params.items() if k.endswith("qa_outputs.bias")), None)
    if weight is None:
        return None
    to_np = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    return head_fingerprint_from_arrays(to_np(weight), to_np(bias) if bias is not None else None)
