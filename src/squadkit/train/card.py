"""The model card (README.md) that ``train`` writes beside the model, in the shape of the card's."""

from __future__ import annotations

import json
from pathlib import Path

from ..model_folder import SETTINGS_FILE, ModelSettings
from .config import TrainConfig


def _ask_lines(config: TrainConfig, settings: ModelSettings) -> list[str]:
    """The card's section on asking a collection, for a folder with a learned ask rule."""
    if settings.ask_threshold is None:
        return []
    return ["", "## Asking a collection (`squadkit ask`)", "",
          f"Trained for collections (passage negatives: {config.passage_negatives} per question; shared "
          f"normalization: {'on' if config.shared_norm else 'off'}). `squadkit ask` "
          + ("scores spans as log-probabilities under one softmax over every passage it reads and abstains "
             "when the no-answer mass of all passages"
             if settings.ask_rule == "normalized" else
             "ranks spans across passages on their logit sums and abstains when the lowest null score of "
             "the passages")
          + f" beats the best span by more than {settings.ask_threshold:.4f} (`ask_threshold` for "
          f"`ask_scoring` {settings.ask_rule}, "
          f"{settings.ask_threshold_from}); it reads {settings.ask_k} passages unless told."
          + (f" Spans are ranked on their score + {settings.ask_retrieval_weight:g} x their passage's "
             f"retrieval score, z-scored over the passages read (`ask_retrieval_weight`)."
             if settings.ask_retrieval_weight else "")]


def model_card(config: TrainConfig, train_path: Path | None, predict_path: Path | None, results: dict | None,
               stats: dict | None, global_step: int, settings: ModelSettings) -> str:
    """Base model, data, the command, the results, and how the saved settings are used (true to the code)."""
    name = Path(config.output_dir).name
    v2 = config.version_2_with_negative
    lines = [f"# {name}", "", f"`{config.model_name_or_path}` fine-tuned for extractive question answering "
             f"(SQuAD{' v2' if v2 else ''} style) with `squadkit train`.", "",
             "## Details of the language model", "", f"Base model: `{config.model_name_or_path}`", "",
             "## Details of the downstream task (Q&A) - Dataset", ""]
    if train_path is not None:
        lines.append(f"- train: `{train_path.name}`" + (
            f" ({stats['examples_used']} questions used of {stats['examples']}, {stats['windows']} windows)"
            if stats else ""))
    if predict_path is not None:
        lines.append(f"- dev: `{predict_path.name}`")
    lines += ["", "## Model training", "", f"Trained for {global_step} steps with:", "", "```bash",
              config.as_command(), "```", ""]
    if results:
        lines += ["## Results", "", "| Metric | # Value |", "| ------ | --------- |",
                  f"| **EM** | **{results['exact']:.2f}** |", f"| **F1** | **{results['f1']:.2f}** |", "",
                  "```json", json.dumps(results, indent=2), "```", ""]
    threshold = settings.null_score_diff_threshold or 0.0
    lines += [
        "## How squadkit uses this folder", "",
        f"`{SETTINGS_FILE}` holds what training decided, and every squadkit command reads it unless told otherwise "
        f"by an explicit argument (`squadkit answer --explain` shows the settings in force and where each came from):",
        "",
        f"- windows of {config.max_seq_length} tokens, questions cut to {config.max_query_length} tokens, answers of "
        f"at most {config.max_answer_length} tokens{', lower-cased text recovery' if config.do_lower_case else ''};",
        f"- the null-score threshold {threshold:.4f}"
        + (f" ({settings.null_score_diff_threshold_from})" if settings.null_score_diff_threshold_from else "") + ".",
        "",
        f"`squadkit predict` answers \"\" when the null score minus the best span's score exceeds {threshold:.4f} "
        f"(run_squad's rule), with windows stepping by {config.doc_stride} tokens.",
    ]
    lines += _ask_lines(config, settings)
    lines += _calibration_lines(settings)
    if v2:
        lines += ["",
                  "`squadkit answer`, `squadkit serve` and `squadkit.pipeline(...)` may answer \"\" "
                  "(`handle_impossible_answer` is on for this model); the empty answer ranks as if its probability "
                  f"were p_null × e^(−{threshold:.4f}), which within one window is the same rule in probabilities. "
                  "Their windows overlap by the pipeline's default (min(max_seq_length // 2, 128) tokens)."]
    else:
        lines += ["", "Trained without unanswerable questions: the pipeline does not offer the empty answer "
                      "unless asked (`handle_impossible_answer=True`)."]
    return "\n".join(lines) + "\n"


def _calibration_lines(settings: ModelSettings) -> list[str]:
    """The card's section on the confidence calibrator, when the folder has one."""
    lines: list[str] = []
    calibration = settings.calibration or {}
    fitted = calibration.get("fitted_on") or {}
    if calibration:
        lines += ["", "## Calibrated confidence", "",
                  f"A confidence calibrator (logistic regression on the top span's logit margin over the null, window "
                  f"log-probability and length) was fitted on the {fitted.get('questions', '?')} dev questions: every "
                  f"answer carries `confidence`, the probability that it is an exact match (for \"\": that the "
                  f"question has no answer), and `--min-confidence P` abstains below P."]
        cross = fitted.get("cross_fit")
        if cross:
            lines += ["", f"Cross-fitted on the dev data ({' / '.join(map(str, cross['folds']))}: fit on the others, "
                          f"measured on each), so never measured where fitted:", "",
                      "| | ECE |", "| --- | --- |",
                      f"| raw score (window softmax) | {cross['ece_raw_score']:.3f} |",
                      f"| calibrated confidence | {cross['ece']:.3f} |", "",
                      "| confidence at least | answered | precision (EM) |", "| --- | --- | --- |"]
            for cut, row in cross["at_confidence"].items():
                precision = f"{row['precision'] * 100:.1f}%" if row["precision"] is not None else "-"
                lines.append(f"| {cut} | {row['coverage'] * 100:.1f}% | {precision} |")
        else:
            lines += ["", f"In-sample ECE (measured on the data it was fitted on): {fitted.get('ece_in_sample', 0):.3f}."]
    return lines
