"""``squadkit export``: a QA checkpoint -> an ONNX folder that ONNX Runtime serves, optionally int8.

The folder written::

    model.onnx             fp32 graph, dynamic batch and sequence axes (always there)
    model.int8.onnx        with --quantize int8: dynamic int8 quantization of model.onnx's weights
    config.json            the source model's config (what architecture it is)
    tokenizer files        the source's fast tokenizer (tokenizer.json, ...)
    squadkit.json          squadkit's settings saved beside the source checkpoint, if any
    squadkit_export.json   the record: source model, settings, files, exporter, versions

Decisions (see also the README section on ONNX):

* **Exporter**: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter) where torch
  still has it. It needs no extra package, exports roberta-base in about half the time of the
  dynamo exporter, and its attention pattern is the one ONNX Runtime's fusions know, which ran
  about 10 % faster here. The dynamo exporter (torch's default since 2.9) is the fallback, and
  ``exporter="dynamo"`` asks for it; it needs ``onnxscript`` (in the ``onnx`` extra). Either
  way the example inputs carry padding: traced with an all-ones mask, transformers' SDPA path
  drops the mask from the dynamo graph, and the export then silently ignores padding.
* **Verification**: every export is run once by ONNX Runtime on padded example inputs and
  compared with torch before anything is moved into place; a mismatch is an error.
* **Quantizer**: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations
  quantized on the fly), not Optimum's: Optimum's ORTQuantizer calls the same function, and
  ``optimum-onnx`` pins ``transformers<4.58``, which squadkit must not inherit.
* **File names**: int8 gets its own file, ``model.int8.onnx``, beside the fp32 ``model.onnx``
  it was made from, so an int8 model never takes the fp32 one's name. The folder serves int8
  by default when the record says so (``"default": "int8"``); ``precision="fp32"`` picks the
  other. An existing folder is never written over without ``overwrite=True`` (``--overwrite``),
  and then it is replaced whole, atomically.
* **Atomic**: everything is written to a temporary sibling folder and renamed into place.
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

from .errors import SquadkitError, first_line

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RECORD_FILE = "squadkit_export.json"
RECORD_FORMAT = "squadkit-onnx-export"
OUTPUT_NAMES = ("start_logits", "end_logits")
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
    low = max(int(getattr(tokenizer, "vocab_size", 100) or 100) // 4, 5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(low, low + 50, (batch, width), generator=gen)
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


def _check_qa_checkpoint(name: str, trust_remote_code: bool, revision: str | None) -> None:
    """Refuse a checkpoint saved for another task: exporting it would export a random QA head."""
    from transformers import AutoConfig

    from .models import _hub_error

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as exc:
        raise _hub_error(name, exc) from None
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForQuestionAnswering") for a in architectures):
        raise SquadkitError(
            f"{name}: not a question-answering checkpoint (saved as {', '.join(architectures)}); "
            "export a model fine-tuned for extractive QA"
        )


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
    from .io import staged_dir
    from .models import SETTINGS_FILE, is_onnx_folder, load_torch_model, read_settings

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
    name = str(model)
    if is_onnx_folder(name):
        raise SquadkitError(f"{name}: is already an exported ONNX folder; export the checkpoint it was made from")
    output = Path(output)
    _check_output(output, overwrite)

    _check_qa_checkpoint(name, trust_remote_code, revision)
    qa = load_torch_model(name, device="cpu", dtype="fp32", trust_remote_code=trust_remote_code, revision=revision)
    torch_model, tokenizer = qa.model, qa.tokenizer
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
        settings = read_settings(name if Path(name).is_dir() else None)
        if settings:
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        files = {"fp32": FP32_FILE}
        if quantize == "int8":
            files["int8"] = INT8_FILE
        config = torch_model.config
        record = {
            "format": RECORD_FORMAT,
            "format_version": 1,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {
                "model": name if not Path(name).exists() else str(Path(name).resolve()),
                "revision": revision,
                "model_type": getattr(config, "model_type", None),
                "architecture": type(torch_model).__name__,
                "num_hidden_layers": getattr(config, "num_hidden_layers", None),
                "hidden_size": getattr(config, "hidden_size", None),
                "num_attention_heads": getattr(config, "num_attention_heads", None),
                "intermediate_size": getattr(config, "intermediate_size", None),
                "max_position_embeddings": getattr(config, "max_position_embeddings", None),
            },
            "settings": settings,
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
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _check_output(output, overwrite)  # someone may have written there meanwhile
    return output


def read_record(folder: str | os.PathLike) -> dict:
    """The export record of a folder, or {} when it has none (a hand-made folder with model.onnx)."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SquadkitError(f"{path}: cannot read the export record: {exc}") from None
    if not isinstance(data, dict):
        raise SquadkitError(f"{path}: the export record must be a JSON object")
    return data
