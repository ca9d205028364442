"""What a training run is told: run_squad's flags with its defaults, plus squadkit's additions.

Each field's ``help`` is what ``squadkit train --help`` shows: the CLI is generated from these
fields, so a flag cannot be added to one and forgotten in the other.
"""

from __future__ import annotations

import math
import shlex
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import defaults
from ..model_folder import ModelSettings
from ..errors import SquadkitError
from ..features import WindowSettings


class TrainWarning(UserWarning):
    """Something about a training run worth knowing that does not stop it."""


def warn_main(accelerator, message: str) -> None:
    """A TrainWarning, once (from the main process)."""
    if accelerator.is_main_process:
        warnings.warn(message, TrainWarning, stacklevel=3)


class TrainingInterrupted(RuntimeError):
    """Raised by the ``interrupt_at_step`` test hook: the run stops as if it had been killed."""


def _f(default, help: str, *, cli: bool = True, flags: tuple[str, ...] = (), cli_default=None, **kw):
    """A config field with its CLI help; ``flags``: extra spellings the CLI accepts;
    ``cli_default``: the command line's default where it differs from Python's."""
    meta = {"help": help, "cli": cli, "flags": flags}
    if cli_default is not None:
        meta["cli_default"] = cli_default
    return field(default=default, metadata=meta, **kw)


@dataclass
class TrainConfig:
    """run_squad's flags (same names, same defaults) plus squadkit's additions.

    Paths: ``train_file`` / ``predict_file`` are joined to ``data_dir`` when it is given, as in
    run_squad. ``model_type`` is only checked against the model's config (a note when they differ).
    """

    model_name_or_path: str = field(metadata={"help": "Base model: local folder or hub id (a base encoder gets a fresh QA head).", "cli": True, "flags": ("-m",), "flag": "--model"})
    output_dir: str = field(metadata={"help": "Where the model, checkpoints, log.jsonl, predictions and README.md go; must be empty unless --overwrite-output-dir or --resume-from-checkpoint.", "cli": True, "flags": ("-o",), "flag": "--output"})
    train_file: str | None = _f(None, "Training data: SQuAD JSON (v1.1/v2.0) or flat records (JSON/JSONL).")
    predict_file: str | None = _f(None, "Dev data to evaluate on (--do-eval, --eval-steps).")
    data_dir: str | None = _f(None, "Folder the data files are relative to (run_squad's).")
    model_type: str | None = _f(None, "run_squad's; checked against the model's config.")
    config_name: str | None = _f(None, "Config to use instead of the model's.")
    tokenizer_name: str | None = _f(None, "Tokenizer to use instead of the model's.")
    cache_dir: str | None = _f(None, "Hugging Face download cache; default folder of the feature cache.")
    features_cache_dir: str | None = _f(None, "Where tokenized features are cached (default: --cache-dir, else $SQUADKIT_CACHE/features, else ~/.cache/squadkit/features).")
    do_train: bool = _f(True, "Fine-tune (run_squad's --do_train: off unless given on the command line).", cli_default=False)
    do_eval: bool = _f(False, "Predict --predict-file at the end; write predictions and eval_results.json.")
    do_lower_case: bool = _f(False, "Lower-case (case-keeping tokenizers such as RoBERTa's ignore it).")
    version_2_with_negative: bool = _f(False, "SQuAD v2: train on unanswerable questions, allow the empty answer.")
    max_seq_length: int = _f(defaults.MAX_SEQ_LENGTH, "Tokens per window.")
    doc_stride: int = _f(defaults.DOC_STRIDE, "Step between window starts (run_squad's meaning).")
    max_query_length: int = _f(defaults.MAX_QUERY_LENGTH, "Questions are cut to this many tokens.")
    per_gpu_train_batch_size: int = _f(8, "Windows per device per micro-step.", flags=("--per-device-train-batch-size",))
    per_gpu_eval_batch_size: int = _f(8, "Windows per device when evaluating.", flags=("--per-device-eval-batch-size",))
    learning_rate: float = _f(5e-5, "Peak AdamW learning rate.")
    gradient_accumulation_steps: int = _f(1, "Micro-steps per optimizer step.")
    weight_decay: float = _f(0.0, "AdamW weight decay (not on biases and LayerNorm).")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: none).")
    num_train_epochs: float = _f(3.0, "Epochs (fractions allowed).")
    max_steps: int = _f(-1, "> 0: train this many optimizer steps (overrides --num-train-epochs).")
    warmup_steps: int = _f(0, "Linear warmup steps.")
    warmup_ratio: float = _f(0.0, "Warmup as a fraction of all steps (when --warmup-steps is 0).")
    n_best_size: int = _f(defaults.N_BEST_SIZE, "Candidates per question when evaluating.")
    max_answer_length: int = _f(defaults.MAX_ANSWER_LENGTH, "Longest answer, in tokens.")
    null_score_diff_threshold: float = _f(defaults.NULL_SCORE_DIFF_THRESHOLD, "Threshold for the evaluation; the best one on the dev data is saved.")
    logging_steps: int = _f(500, "Log every N steps (log.jsonl); off a terminal also every 5% and every minute.")
    save_steps: int = _f(500, "Write a resumable checkpoint-N every N steps (0: none).")
    save_total_limit: int | None = _f(None, "Keep only the newest K checkpoints.")
    eval_steps: int = _f(0, "Evaluate every N steps; keep the best weights (dev F1) in checkpoint-best.")
    keep_best: bool = _f(True, "With --eval-steps: keep checkpoint-best.")
    load_best_model_at_end: bool = _f(False, "Final model = checkpoint-best's weights, not the last step's.")
    group_by_length: bool = _f(True, "Batch windows of similar length together (less padding, same data per epoch).")
    pad_to_multiple_of: int | None = _f(
        None, "Round each batch's length up to a multiple of this: fewer distinct shapes, which a GPU runs much "
              "faster [default: 64 on a GPU, 1 (no rounding) on a CPU].")
    passage_negatives: int = _f(
        0, "Pair each question with N other paragraphs of the training file (BM25's best wrong ones, never one "
           "holding a gold answer's text) as unanswerable windows: a reader for `ask` over collections.")
    shared_norm: bool = _f(
        False, "Shared normalization: one start/end softmax over all windows of a question (its paragraph's and its "
               "negatives'), so scores compare across passages; --per-gpu-train-batch-size then counts questions.")
    ask_k: int = _f(defaults.ASK_PASSAGES, "With --passage-negatives or --shared-norm and --do-eval: passages read per dev question "
                           "when learning ask's abstain threshold (ask_threshold in squadkit.json), 1-50.")
    seed: int = _f(42, "Random seed (data order, dropout, QA head, passage negatives).")
    bf16: bool = _f(False, "bfloat16 autocast (CPU, or GPUs that support it).")
    fp16: bool = _f(False, "float16 autocast with loss scaling (CUDA only).")
    fp32: bool = _f(False, "Keep float32 on a GPU: without --bf16/--fp16/--fp32, a CUDA GPU that supports bfloat16 "
                           "trains in bf16 autocast (the CPU stays float32).")
    compile: bool = _f(False, "torch.compile the model for the training step (CUDA only; compiling takes ~30-40 s, and "
                              "once more when the padded width first changes).")
    no_cuda: bool = _f(False, "Train on the CPU even where a GPU is present.")
    overwrite_output_dir: bool = _f(False, "Train into a non-empty output folder (removes only an earlier run's checkpoints and log).")
    overwrite_cache: bool = _f(False, "Re-tokenize even when the feature cache holds this data.")
    resume_from_checkpoint: str | None = _f(None, "Continue from a checkpoint folder, or 'auto' (the newest, if any).")
    show_progress: bool = _f(False, "", cli=False)  # the CLI decides: a bar on a terminal
    quiet: bool = _f(False, "No log lines on the terminal (log.jsonl is still written).")
    command: str | None = _f(None, "", cli=False)  # the command line, for the model card
    interrupt_at_step: int | None = _f(None, "", cli=False)  # test hook: stop after this step as if killed
    # how the caller spelled each field (the CLI: the flag typed), so errors name it; the field's name where absent
    names: dict = field(default_factory=dict, metadata={"help": "", "cli": False})

    def name_of(self, field_name: str) -> str:
        """How the caller spelled ``field_name`` (the CLI's flag as typed), for errors."""
        return self.names.get(field_name, field_name)

    def validate(self) -> "TrainConfig":
        """One-line errors for values run_squad would only trip over mid-run, naming each as the caller spelled it."""
        n = self.name_of
        for name in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size", "gradient_accumulation_steps",
                     "max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length",
                     "logging_steps"):
            defaults.check_positive_int(getattr(self, name), n(name))
        if self.pad_to_multiple_of is not None:
            defaults.check_positive_int(self.pad_to_multiple_of, n("pad_to_multiple_of"))
        for name in ("warmup_steps", "save_steps", "eval_steps"):
            defaults.check_positive_int(getattr(self, name), n(name), minimum=0)
        for name in ("learning_rate", "adam_epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise SquadkitError(f"{n(name)} must be a positive number, got {value!r}", param=name)
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SquadkitError(f"{n(name)} must be a non-negative number, got {value!r}", param=name)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SquadkitError(f"{n('warmup_ratio')} must be in [0, 1), got {self.warmup_ratio!r}", param="warmup_ratio")
        if self.save_total_limit is not None:
            defaults.check_positive_int(self.save_total_limit, n("save_total_limit"))
        if self.do_train and self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise SquadkitError(f"{n('num_train_epochs')} must be positive (or give {n('max_steps')}), got {self.num_train_epochs!r}",
                                param="num_train_epochs")
        if self.bf16 + self.fp16 + self.fp32 > 1:
            raise SquadkitError(f"give at most one of {n('bf16')}, {n('fp16')} and {n('fp32')}",
                                param="fp32" if self.fp32 else "fp16")
        if not (self.do_train or self.do_eval):
            raise SquadkitError(f"nothing to do: give {n('do_train')} and/or {n('do_eval')}")
        if self.load_best_model_at_end and not self.eval_steps:
            raise SquadkitError(f"{n('load_best_model_at_end')} needs {n('eval_steps')} (evaluation during training)",
                                param="load_best_model_at_end")
        if self.load_best_model_at_end and not self.keep_best:
            raise SquadkitError(f"{n('load_best_model_at_end')} needs {n('keep_best')} (the best weights are loaded from "
                                "checkpoint-best)", param="load_best_model_at_end")
        if self.eval_steps and not self.predict_file and not self.data_dir:
            raise SquadkitError(f"{n('eval_steps')} needs a {n('predict_file')} to evaluate on", param="eval_steps")
        defaults.check_positive_int(self.passage_negatives, n("passage_negatives"), minimum=0)
        if not isinstance(self.ask_k, int) or isinstance(self.ask_k, bool) or not 1 <= self.ask_k <= defaults.MAX_PASSAGES:
            raise SquadkitError(f"{n('ask_k')} must be an integer from 1 to {defaults.MAX_PASSAGES}, got {self.ask_k!r}", param="ask_k")
        if self.doc_stride >= self.max_seq_length:
            raise SquadkitError(f"{n('doc_stride')} ({self.doc_stride}) must be smaller than {n('max_seq_length')} "
                                f"({self.max_seq_length})", param="doc_stride")
        self.window_settings().validate()
        return self

    @property
    def for_collections(self) -> bool:
        """Trained for reading several passages (issue 19's flags): ask's threshold is learned at --do-eval."""
        return self.passage_negatives > 0 or self.shared_norm

    def window_settings(self) -> WindowSettings:
        return WindowSettings("squad", self.max_seq_length, self.doc_stride, self.max_query_length)

    def decode_settings(self, threshold: float | None = None):
        from ..settings import AnswerSettings

        return AnswerSettings(mode="squad",
            max_seq_length=self.max_seq_length, doc_stride=self.doc_stride, max_query_length=self.max_query_length,
            n_best_size=self.n_best_size, max_answer_length=self.max_answer_length,
            null_score_diff_threshold=self.null_score_diff_threshold if threshold is None else threshold,
            version_2_with_negative=self.version_2_with_negative, do_lower_case=self.do_lower_case,
        )

    def model_settings(self, threshold: float, threshold_from: str | None = None, eval_results: dict | None = None,
                       **training_facts) -> ModelSettings:
        """The model folder's settings (squadkit.json) for weights trained by this run."""
        training = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("cli")}
        return ModelSettings(
            max_seq_length=self.max_seq_length, doc_stride=self.doc_stride, max_query_length=self.max_query_length,
            do_lower_case=self.do_lower_case, max_answer_length=self.max_answer_length,
            null_score_diff_threshold=float(threshold), null_score_diff_threshold_from=threshold_from,
            version_2_with_negative=self.version_2_with_negative, base_model=self.model_name_or_path,
            training={**training, "command": self.as_command(), **training_facts}, eval=eval_results,
        )

    def resolved_path(self, name: str) -> Path | None:
        value = getattr(self, name)
        if value is None:
            if self.data_dir is None:
                return None
            value = {"train_file": "train-v2.0.json" if self.version_2_with_negative else "train-v1.1.json",
                     "predict_file": "dev-v2.0.json" if self.version_2_with_negative else "dev-v1.1.json"}[name]
        return Path(self.data_dir) / value if self.data_dir is not None else Path(value)

    def as_command(self) -> str:
        """The equivalent ``squadkit train`` command line (for the model card)."""
        if self.command:
            return self.command
        defaults_ = TrainConfig(model_name_or_path="", output_dir="")
        parts = ["squadkit", "train"]
        for f in fields(self):
            if not f.metadata.get("cli"):
                continue
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.name not in ("model_name_or_path", "output_dir") and value == getattr(defaults_, f.name):
                continue
            if isinstance(value, bool):
                parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif value is not None:
                parts += [flag, str(value)]
        return shlex.join(parts)


@dataclass
class TrainResult:
    """What a run produced; every path is inside ``output_dir``."""

    output_dir: Path
    global_step: int = 0
    train_loss: float | None = None  # mean loss over the last logging window
    train_seconds: float = 0.0
    samples_per_second: float | None = None  # training windows per second (all processes)
    examples_used: int = 0
    examples_skipped: dict = field(default_factory=dict)
    train_windows: int = 0
    negative_windows: int = 0  # of train_windows, from passage negatives
    eval_results: dict | None = None
    null_score_diff_threshold: float | None = None
    best_metric: float | None = None
    best_step: int | None = None
    checkpoints: list[Path] = field(default_factory=list)
    resumed_from: Path | None = None
    features_cache: Path | None = None
    features_cached: bool = False  # True when tokenization was skipped thanks to the cache
    is_main_process: bool = True  # under a launcher, only the main process writes and reports

    def summary(self) -> dict:
        """What ``squadkit train`` prints: the run's outcome as JSON-ready values."""
        return {
            "output_dir": str(self.output_dir), "global_step": self.global_step, "train_loss": self.train_loss,
            "samples_per_second": self.samples_per_second, "examples_used": self.examples_used,
            "examples_skipped": self.examples_skipped, "train_windows": self.train_windows,
            "features_cache": str(self.features_cache) if self.features_cache else None,
            "features_cached": self.features_cached, "null_score_diff_threshold": self.null_score_diff_threshold,
            "eval_results": self.eval_results, "best_metric": self.best_metric, "best_step": self.best_step,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
        }
