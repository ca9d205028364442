"""``train(TrainConfig(...))``: every input checked before anything is written, the model made, the loop run,
the final folder saved (with its dev threshold, calibrator and ask rule)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path


from ..errors import SquadkitError
from ..io import atomic_write_json, atomic_write_text
from .card import model_card
from .checkpoints import (
    BEST_CHECKPOINT,
    LOG_FILE,
    README_FILE,
    check_output_dir,
    check_resume_compatible,
    clear_previous_run,
    list_checkpoints,
    resolve_resume,
    save_final,
)
from .config import TrainConfig, TrainingInterrupted, TrainResult, warn_main
from .dataset import load_features
from .events import _threshold_of, abstention_at_chance, evaluate
from .loop import ASK_EVAL_FILE, train_loop

# ----------------------------------------------------------------------------------------------
# train: checks, then the loop, then the model folder
# ----------------------------------------------------------------------------------------------


def _lowercases(tokenizer) -> bool:
    a = tokenizer("Paris Hello", add_special_tokens=False)["input_ids"]
    b = tokenizer("paris hello", add_special_tokens=False)["input_ids"]
    return a == b


def make_accelerator(config: TrainConfig):
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not config.no_cuda
    if config.compile and not cuda:
        raise SquadkitError(f"{config.name_of('compile')} needs a CUDA GPU and none is in use here (on the CPU the "
                            "step is not launch-bound; compiling would cost more than it saves)", param="compile")
    if config.fp16 and not cuda:
        raise SquadkitError(f"{config.name_of('fp16')} needs a CUDA GPU and none is in use here; use bf16 (CPU autocast) or neither",
                            param="fp16")
    if config.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise SquadkitError(f"{config.name_of('bf16')}: this GPU does not support bfloat16; use fp16", param="bf16")
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "no"
    if precision == "no" and cuda and not config.fp32 and torch.cuda.is_bf16_supported():
        precision = "bf16"  # chosen for the user on a GPU that has it; --fp32 keeps float32
    return Accelerator(mixed_precision=precision, cpu=config.no_cuda or not cuda)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune (``do_train``) and/or evaluate (``do_eval``) as run_squad did; see the module doc.

    Every check on the input happens before anything is written: a bad flag, missing file, model
    without a QA architecture, windows longer than the model's positions or data without usable
    examples is a SquadkitError, and the output folder is left as it was.
    """
    from ..model_folder import hub_error, quiet_transformers, resolve_model_source
    from ..data import load_squad

    output_dir, train_path, predict_path, resume = _check_inputs(config)
    # model and tokenizer: from the checkpoint when resuming, else the base model (checked before heavy imports)
    source = resolve_model_source(str(resume) if resume is not None else config.model_name_or_path)

    import torch
    from transformers import AutoModelForQuestionAnswering
    from transformers.trainer_utils import set_seed

    accelerator = make_accelerator(config)
    hub = {"cache_dir": config.cache_dir} if config.cache_dir else {}
    model_config, tokenizer = _config_and_tokenizer(config, accelerator, source, resume, hub)
    eval_data = load_squad(predict_path) if (config.do_eval or config.eval_steps) else None
    result = TrainResult(output_dir=output_dir, resumed_from=resume, is_main_process=accelerator.is_main_process)
    set_seed(config.seed)
    try:
        # float32 master weights whatever the checkpoint is stored in (transformers 5 loads a half-precision
        # checkpoint as half by default); --bf16/--fp16 are autocast, as in run_squad. Quietly: transformers
        # 5's weight-loading bar would come before any one-line error that follows.
        with quiet_transformers():
            model = AutoModelForQuestionAnswering.from_pretrained(source.name, config=model_config,
                                                                  dtype=torch.float32, **source.hub_kwargs(), **hub)
    except (OSError, ValueError) as exc:
        raise hub_error(source.name, exc) from None
    features = load_features(config, accelerator, train_path, tokenizer, result) if config.do_train else None

    # -- nothing was written to output_dir before this line; a bad input has already raised --
    accelerator.wait_for_everyone()  # every process has checked the output folder before it changes
    created = not output_dir.exists()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.do_train and config.overwrite_output_dir and resume is None:
            clear_previous_run(output_dir)
    accelerator.wait_for_everyone()
    try:
        _run(config, accelerator, model, tokenizer, features, eval_data, resume, result, train_path, predict_path)
    except BaseException as exc:
        # a run that failed before writing anything worth keeping leaves no folder to block the next
        if (created and accelerator.is_main_process and not isinstance(exc, TrainingInterrupted)
                and not list_checkpoints(output_dir) and not (output_dir / BEST_CHECKPOINT).exists()):
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    result.checkpoints = list_checkpoints(output_dir)
    return result


def _check_inputs(config: TrainConfig) -> tuple[Path, Path | None, Path | None, Path | None]:
    """(output folder, train file, dev file, checkpoint to resume) once every input checked out
    without writing anything: flags, data files, the resumable checkpoint, the output folder."""
    config.validate()
    output_dir = Path(config.output_dir)
    train_path, predict_path = config.resolved_path("train_file"), config.resolved_path("predict_file")
    if config.do_train and train_path is None:
        raise SquadkitError(f"{config.name_of('do_train')} needs a {config.name_of('train_file')}", param="train_file")
    if config.do_eval and predict_path is None:
        raise SquadkitError(f"{config.name_of('do_eval')} needs a {config.name_of('predict_file')}", param="predict_file")
    for p, param in ((train_path if config.do_train else None, "train_file"),
                     (predict_path if (config.do_eval or config.eval_steps) else None, "predict_file")):
        if p is not None and not p.is_file():
            raise SquadkitError(f"{p}: data file not found", param=param)
    resume = resolve_resume(config, output_dir) if config.do_train else None
    if resume is not None:
        check_resume_compatible(resume, config.group_by_length, config.passage_negatives, config.shared_norm)
    check_output_dir(config, output_dir, resume)
    return output_dir, train_path, predict_path, resume


def _config_and_tokenizer(config: TrainConfig, accelerator, source, resume, hub: dict):
    """The model's config (a QA architecture) and tokenizer, and windows that fit the model."""
    from ..model_folder import (check_qa_architecture, check_window_fits, config_window_limit, load_config,
                              load_tokenizer, resolve_model_source)

    config_source = resolve_model_source(config.config_name, what="config") \
        if (config.config_name and resume is None) else source
    model_config = load_config(config_source, **hub)
    check_qa_architecture(model_config, config_source.name)
    if config.model_type and config.model_type.lower() != model_config.model_type:
        warn_main(accelerator, f"--model_type {config.model_type} differs from the model's config "
                               f"('{model_config.model_type}'); the config decides")
    tok_source = resolve_model_source(config.tokenizer_name, what="tokenizer") \
        if (config.tokenizer_name and resume is None) else source
    tokenizer = load_tokenizer(tok_source, **hub, **({"do_lower_case": True} if config.do_lower_case else {}))
    check_window_fits(config.max_seq_length, config_window_limit(model_config, tokenizer),
                      f"model {config.model_name_or_path}", param=config.name_of("max_seq_length"))
    if config.do_lower_case and not _lowercases(tokenizer):
        warn_main(accelerator, f"--do_lower_case has no effect on {type(tokenizer).__name__}: this tokenizer keeps case "
                               f"(as with run_squad's RoBERTa); it only changes how answer texts are projected back")
    return model_config, tokenizer


def _with_calibration(settings, net, eval_data, preds, predict_path):
    """The settings with a confidence calibrator fitted on the final dev predictions (see
    calibration.py); unchanged, with a warning, where the dev data cannot fit one (too few questions)."""
    import dataclasses
    import warnings

    from ..backends.torch import torch_head_fingerprint
    from ..errors import SquadkitError
    from ..calibrate import fit_calibration

    source = Path(predict_path).name if predict_path is not None else "dev data"
    try:
        calibration, _ = fit_calibration(eval_data, preds, torch_head_fingerprint(net), source)
    except SquadkitError as exc:
        warnings.warn(f"no confidence calibrator saved: {exc}", stacklevel=2)
        return settings
    return dataclasses.replace(settings, calibration=calibration)


def _with_ask_threshold(config, settings, output_dir: Path, predict_path, train_path, accelerator):
    """Learn ask's threshold (train/ask_eval.py) on the saved model; written into squadkit.json and
    ask_eval_results.json. Timed and logged: it reads ``ask_k`` passages per dev question."""
    import dataclasses

    from ..model_folder import write_settings
    from .ask_eval import fit_ask

    start = time.perf_counter()
    fit = fit_ask(output_dir, predict_path, train_path, config.ask_k, batch_size=config.per_gpu_eval_batch_size,
                  device=str(accelerator.device))
    if fit.refused is not None:
        warn_main(accelerator, fit.refused)
    else:
        settings = dataclasses.replace(settings, ask_threshold=fit.threshold, ask_k=fit.k, ask_threshold_from=fit.source,
                                       ask_calibration=fit.calibration, ask_scoring=fit.scoring,
                                       ask_retrieval_weight=fit.retrieval_weight)
        write_settings(output_dir, settings)
    atomic_write_json(output_dir / ASK_EVAL_FILE, {**fit.results, "seconds": round(time.perf_counter() - start, 1)})
    with open(output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": "ask_threshold", **fit.results}) + "\n")
    return settings


def _run(config, accelerator, model, tokenizer, features, eval_data, resume, result, train_path, predict_path):
    """Train and/or evaluate, then write the model folder (main process)."""
    threshold = (float(config.null_score_diff_threshold), None)
    preds = None
    if config.do_train:
        model, threshold = train_loop(config, accelerator, model, tokenizer, features, eval_data, resume, result)
    else:
        model = accelerator.prepare(model)
    output_dir = Path(config.output_dir)
    if config.do_eval:
        results, preds = evaluate(accelerator, model, tokenizer, eval_data, config.decode_settings(),
                                  config.per_gpu_eval_batch_size, show_progress=not config.quiet)
        if accelerator.is_main_process:
            from ..prediction_files import EVAL_RESULTS_FILE, write_prediction_files

            write_prediction_files(preds, output_dir)
            atomic_write_json(output_dir / EVAL_RESULTS_FILE, results)
            result.eval_results = results
            threshold = _threshold_of(results, config, "the end of training")
            note = abstention_at_chance(eval_data, preds.null_odds, threshold[0], predict_path)
            if note:
                warn_main(accelerator, note)
    result.null_score_diff_threshold = threshold[0]
    if config.do_train and accelerator.is_main_process:
        settings = config.model_settings(threshold[0], threshold[1], result.eval_results,
                                         global_step=result.global_step, examples_used=result.examples_used,
                                         train_windows=result.train_windows,
                                         **({"negative_windows": result.negative_windows}
                                            if config.for_collections else {}))
        if config.do_eval and preds is not None:
            settings = _with_calibration(settings, accelerator.unwrap_model(model), eval_data, preds, predict_path)
        save_final(accelerator.unwrap_model(model), tokenizer, output_dir, settings)
        if config.do_eval and config.for_collections:
            settings = _with_ask_threshold(config, settings, output_dir, predict_path, train_path, accelerator)
        card = model_card(config, train_path, predict_path if config.do_eval else None, result.eval_results,
                          features.stats, result.global_step, settings)
        atomic_write_text(output_dir / README_FILE, card)
        with open(output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": result.global_step, "final": True, "eval": result.eval_results,
                                     "null_score_diff_threshold": result.null_score_diff_threshold}) + "\n")
    accelerator.wait_for_everyone()

