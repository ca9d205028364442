"""``squadkit export``: a QA checkpoint -> an ONNX folder that ONNX Runtime serves, optionally int8.

Why it is built this way: docs/design.md (squadkit/export.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .backends.onnx import FP32_FILE, INT8_FILE, OUTPUT_NAMES, RECORD_FILE, RECORD_FORMAT, read_record
from .errors import SquadkitError, first_line

__all__ = ["export_model", "quantize_int8", "read_record", "FP32_FILE", "INT8_FILE", "RECORD_FILE"]

DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")
VERIFY_ATOL = 1e-4


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("squadkit", "torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _example_inputs(input_names: tuple[str, ...], tokenizer) -> dict[str, Any]:
    """Two windows, the second padded, question and context with different token types."""
    import torch

    batch, width = 2, 16
    vocab = int(len(tokenizer) or 100)
    low = min(max(vocab // 4, 5), vocab - 1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(low, min(low + 50, vocab), (batch, width), generator=gen)
    mask = torch.ones(batch, width, dtype=torch.long)
    mask[1, -5:] = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids[1, -5:] = pad
    types = torch.zeros(batch, width, dtype=torch.long)
    types[:, width // 2 :] = 1
    types[1, -5:] = 0
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: values[name] for name in input_names}


def _torch_export(model, inputs: dict, path: Path, opset: int, exporter: str) -> str:
    """Write ``path`` with the chosen exporter; returns the exporter actually used."""
    import torch

    names = list(inputs)
    if exporter in ("auto", "torchscript"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
                torch.onnx.export(
                    model, (), str(path), kwargs=inputs, input_names=names, output_names=list(OUTPUT_NAMES),
                    dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + list(OUTPUT_NAMES)},
                    opset_version=opset, do_constant_folding=True, dynamo=False,
                )
            return "torchscript"
        except TypeError as exc:  # a torch without the TorchScript exporter (or without the dynamo flag)
            if exporter == "torchscript":
                raise SquadkitError(f"this torch ({torch.__version__}) has no TorchScript ONNX exporter: {exc}") from None
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise SquadkitError("the dynamo ONNX exporter needs onnxscript: pip install 'squadkit[onnx]'") from None
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (), str(path), kwargs=inputs, input_names=names, output_names=list(OUTPUT_NAMES),
            dynamic_shapes={n: {0: batch, 1: seq} for n in names}, opset_version=max(opset, 18),
            dynamo=True, external_data=False, verbose=False,
        )
    return "dynamo"


def _verify(path: Path, model, inputs: dict, atol: float) -> float:
    """Run the exported graph in ONNX Runtime and compare its logits with torch's; returns the max difference."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in inputs.items()}
    start, end = session.run(list(OUTPUT_NAMES), feed)
    with torch.inference_mode():
        out = model(**inputs)
    mask = feed["attention_mask"].astype(bool)
    diff = max(
        float(np.abs(start - out.start_logits.float().numpy())[mask].max()),
        float(np.abs(end - out.end_logits.float().numpy())[mask].max()),
    )
    if not np.isfinite(diff) or diff > atol:
        raise SquadkitError(f"the exported ONNX graph does not reproduce the torch model (max logit difference {diff:.3g} > {atol:g})")
    return diff


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, per_channel: bool = False) -> dict:
    """Dynamic int8 quantization of an fp32 ONNX graph's weights (MatMul, Gather, ...); returns its settings."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # needed once ORT has fused ops in the graph
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice ("consider pre-processing") on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=False,
                extra_options=options,
            )
    finally:
        root.setLevel(level)
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weights": "int8 (QInt8, symmetric)",
        "activations": "uint8, quantized at run time",
        "per_channel": per_channel,
        "reduce_range": False,
    }


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise SquadkitError(f"{output}: exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        what = "an ONNX export" if (output / FP32_FILE).exists() or (output / INT8_FILE).exists() else "files"
        raise SquadkitError(f"{output}: already holds {what}; pass --overwrite to replace the folder")


def export_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    quantize: str | None = None,
    opset: int | None = None,
    overwrite: bool = False,
    exporter: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    verify: bool = True,
) -> Path:
    """Export a QA checkpoint (hub id or folder) to an ONNX folder; ``quantize="int8"`` adds model.int8.onnx."""
    from .backends import is_onnx_folder
    from .model_folder import write_settings
    from .io import staged_dir

    quantize, opset = _check_export_options(quantize, opset, exporter)
    name = str(model)
    if is_onnx_folder(name):
        raise SquadkitError(f"{name}: is already an exported ONNX folder; export the checkpoint it was made from")
    output = Path(output)
    _check_output(output, overwrite)

    from .model import load

    # load refuses, before any work, to carry a calibrator fitted on other weights
    qa = load(name, backend="torch", device="cpu", dtype="fp32", trust_remote_code=trust_remote_code,
              revision=revision)
    torch_model, tokenizer = qa.runner.model, qa.tokenizer
    torch_model.config.return_dict = True
    # Graph inputs in the order of forward()'s parameters: the TorchScript exporter flattens
    # keyword inputs in that order, and input_names are given to them positionally.
    import inspect

    params = list(inspect.signature(torch_model.forward).parameters)
    input_names = tuple(sorted(qa.input_names, key=lambda n: params.index(n) if n in params else len(params)))
    inputs = _example_inputs(input_names, tokenizer)

    with staged_dir(output) as tmp:
        try:
            used = _torch_export(torch_model, inputs, tmp / FP32_FILE, opset, exporter)
        except SquadkitError:
            raise
        except Exception as exc:  # the exporters raise many types; one line is what the user needs
            first = first_line(exc)
            raise SquadkitError(f"{name}: ONNX export failed: {first}") from None
        diff = _verify(tmp / FP32_FILE, torch_model, inputs, VERIFY_ATOL) if verify else None
        quant_info = None
        if quantize == "int8":
            quant_info = quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE)
        torch_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        settings = qa.settings
        if not settings.is_empty():
            write_settings(tmp, settings)
        record = _export_record(name, revision, qa, settings, quantize, input_names, opset, used, diff, quant_info,
                                verify)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _check_output(output, overwrite)  # someone may have written there meanwhile
    return output


def _check_export_options(quantize: str | None, opset: int | None, exporter: str) -> tuple[str | None, int]:
    """One-line refusals of export's options, before anything loads; (quantize or None, opset)."""
    if quantize not in (None, "none", "int8"):
        raise SquadkitError(f"quantize must be 'int8' (or none), got {quantize!r}")
    quantize = None if quantize == "none" else quantize
    if exporter not in EXPORTERS:
        raise SquadkitError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    opset = DEFAULT_OPSET if opset is None else opset
    if not isinstance(opset, int) or isinstance(opset, bool) or not 14 <= opset <= 23:
        raise SquadkitError(f"opset must be an integer from 14 to 23, got {opset!r}")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SquadkitError("exporting needs onnx and onnxruntime: pip install 'squadkit[onnx]'") from None
    return quantize, opset


def _export_record(name: str, revision: str | None, qa, settings, quantize: str | None, input_names, opset: int,
                   used: str, diff, quant_info, verify: bool) -> dict:
    """``squadkit_export.json``: where the graph came from, its files, inputs, opset and verification."""
    config = qa.runner.model.config
    files = {"fp32": FP32_FILE, **({"int8": INT8_FILE} if quantize == "int8" else {})}
    return {
        "format": RECORD_FORMAT,
        "format_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "model": name if not Path(name).exists() else str(Path(name).resolve()),
            "revision": revision,
            "model_type": getattr(config, "model_type", None),
            "architecture": type(qa.runner.model).__name__,
            "num_hidden_layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "num_attention_heads": getattr(config, "num_attention_heads", None),
            "intermediate_size": getattr(config, "intermediate_size", None),
            "max_position_embeddings": getattr(config, "max_position_embeddings", None),
            "pad_token_id": getattr(config, "pad_token_id", None),
            "head_sha256": qa.head_sha256,  # what a calibrator in squadkit.json is checked against
        },
        "settings": settings.to_json() if not settings.is_empty() else {},
        "files": files,
        "default": "int8" if quantize == "int8" else "fp32",
        "inputs": list(input_names),
        "outputs": list(OUTPUT_NAMES),
        "dynamic_axes": {"0": "batch", "1": "sequence"},
        "opset": opset if used == "torchscript" else max(opset, 18),
        "exporter": f"torch.onnx.export ({used})",
        "verification": {"max_abs_logit_diff": diff, "atol": VERIFY_ATOL} if verify else None,
        "quantization": quant_info,
        "versions": _versions(),
    }
