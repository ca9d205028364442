"""A drop-in for transformers' question-answering pipeline (removed from transformers in 5.3).

    >>> from squadkit import pipeline
    >>> qa = pipeline("question-answering", model="mrm8488/roberta-base-1B-1-finetuned-squadv2")
    >>> qa(question="Where do I live?", context="My name is Wolfgang and I live in Berlin")
    {'score': ..., 'start': 34, 'end': 40, 'answer': 'Berlin'}

Why it is built this way: docs/design.md (squadkit/pipeline.py).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .errors import SquadkitError
from .settings import AnswerSettings, Given, given_options, resolve

TASK_NAMES = ("question-answering", "question_answering", "qa")


def _pairs_from_call(args: tuple, question, context) -> tuple[list[tuple[Any, Any]], bool]:
    """Normalise the pipeline's call forms to (question, context) pairs; the flag says 'one input'."""
    if question is not None or context is not None:
        if args:
            raise SquadkitError("pass either question=/context= or positional inputs, not both")
        if question is None or context is None:
            raise SquadkitError("both question and context are needed")
        if isinstance(question, (list, tuple)):
            contexts = list(context) if isinstance(context, (list, tuple)) else [context] * len(question)
            if len(contexts) != len(question):
                raise SquadkitError(f"got {len(question)} questions but {len(contexts)} contexts")
            return list(zip(question, contexts)), False
        if isinstance(context, (list, tuple)):
            raise SquadkitError("a list of contexts needs a list of questions")
        return [(question, context)], True
    if len(args) == 1:
        item = args[0]
        if isinstance(item, dict):
            return [_pair_from_dict(item, 0)], True
        if isinstance(item, (list, tuple)) or hasattr(item, "__iter__") and not isinstance(item, str):
            items = list(item)
            return [_pair_from_dict(x, i) for i, x in enumerate(items)], False
    if len(args) > 1 and all(isinstance(x, dict) for x in args):
        return [_pair_from_dict(x, i) for i, x in enumerate(args)], False
    raise SquadkitError("call with question=..., context=..., a dict {'question', 'context'} or a list of such dicts")


def _pair_from_dict(item, index: int) -> tuple[Any, Any]:
    if not isinstance(item, dict):
        raise SquadkitError(f"input {index} must be a dict with 'question' and 'context', got {type(item).__name__}")
    for key in ("question", "context"):
        if key not in item:
            raise SquadkitError(f"input {index} has no '{key}' field")
    return item["question"], item["context"]


_NO_EFFECT = ("padding", "num_workers")  # transformers' keywords, accepted for compatibility


def _options(options: dict, where: str) -> Given:
    """The pipeline's options under their canonical names (transformers' spellings accepted), each checked
    once; unknown keywords are refused (a typo would otherwise be ignored)."""
    return given_options({k: v for k, v in options.items() if k not in _NO_EFFECT}, "pipeline", where)


class QuestionAnswerer:
    """Answers questions about contexts with an extractive QA model.

    ``model`` is a hub id, a checkpoint folder, an exported ONNX folder (served by ONNX
    Runtime without being told), an in-memory transformers model with its ``tokenizer``, or a loaded
    ``squadkit.model.Model``. Loading keywords (``backend``, ``device``, ``dtype``, ``trust_remote_code``,
    ``revision``; ONNX Runtime's ``precision``, ``threads``, ``providers``) go to ``squadkit.model.load``;
    the other keyword options (``top_k``, ``max_seq_length``, ``handle_impossible_answer``, ...; see
    ``squadkit.settings``, transformers' ``max_seq_len`` spellings accepted too) become the defaults of
    every call.
    """

    def __init__(self, model: Any = None, tokenizer: Any = None, *, given: Given | None = None, **options) -> None:
        from .backends import RUNNER_OPTIONS
        from .model import load

        settings = {k: v for k, v in options.items() if k not in RUNNER_OPTIONS}
        self._given = _options(settings, "to the pipeline")
        if given is not None:  # checked where it came in (the CLI)
            self._given = given.merged(self._given)
        self.model = load(model, tokenizer, **{k: v for k, v in options.items() if k in RUNNER_OPTIONS})
        self.tokenizer = self.model.tokenizer
        # the folder's confidence calibrator: every answer then carries "confidence" (see calibration.py)
        self.calibrator = self.model.calibrator
        # resolved once (refusing now what every call would refuse, e.g. windows too long); calls add their own
        self._in_force = resolve(self.model, "pipeline", self._given)

    @property
    def options(self) -> dict:
        """The options given when the pipeline was made (canonical names): the defaults of every call."""
        return dict(self._given.values)

    # the transformers pipeline's public attributes, for code written against it
    @property
    def device(self) -> str:
        return self.model.device

    @property
    def model_file(self) -> str | None:
        """The file the model runs from: an export's ``model.onnx`` or ``model.int8.onnx`` (full path);
        None for a torch model (its folder is ``model.name_or_path``)."""
        return self.model.model_file

    @property
    def batch_size(self) -> int:
        return self._in_force.batch_size

    def settings_in_force(self, **call_options) -> AnswerSettings:
        """Each answering option's value for a call with ``call_options``, and where it came from:
        the call or the pipeline's construction ("argument"), the model folder, or the default
        (``squadkit.settings.resolve`` in pipeline mode)."""
        if not call_options:
            return self._in_force
        return resolve(self.model, "pipeline", self._given.merged(_options(call_options, "to the call")))

    def __call__(self, *args, question: str | Sequence[str] | None = None, context: str | Sequence[str] | None = None,
                 **options):
        """Answer one input (a dict back; a list for top_k > 1) or many (a list back)."""
        pairs, single = _pairs_from_call(args, question, context)
        in_force = self.settings_in_force(**options)
        results = self._answer(pairs, in_force)
        if in_force.top_k == 1:
            results = [r[0] if r else empty_answer(in_force) for r in results]
        return results[0] if single else results

    def answer_pairs(self, pairs: Iterable[tuple[str, str]], *, chunk_size: int = 256, progress=None,
                     window_progress=None, **options) -> list[list[dict]]:
        """The ``top_k`` best answers of every (question, context) pair, best first.

        Options not given are those in force (see ``settings_in_force``). ``progress(n)`` is
        called with the number of pairs finished after each chunk, ``window_progress(done, total)``
        after each batch of windows (see ``window_scoring.score_pairs``).
        """
        return self._answer(pairs, self.settings_in_force(**options), chunk_size, progress, window_progress)

    def _answer(self, pairs: Iterable[tuple[str, str]], o: AnswerSettings, chunk_size: int = 256, progress=None,
                window_progress=None) -> list[list[dict]]:
        """``answer_pairs`` with the options already resolved (``settings_in_force(...)``)."""
        from .decode import allowed_tokens, pipeline_answers, pipeline_window_spans
        from .window_scoring import score_pairs

        pre_topk = o.top_k * 2 + 10 if o.align_to_words else o.top_k
        calibrated = self.calibrator is not None  # only then are the calibration features worth computing

        def reduce(start, end, batch, rows):
            allowed = allowed_tokens(rows, start.shape[1]) & batch.attention_mask.astype(bool)
            return pipeline_window_spans(start, end, allowed, pre_topk, o.max_answer_length,
                                         calibration_inputs=calibrated)

        pairs = list(pairs)
        questions = [q for q, _ in pairs]
        contexts = [c for _, c in pairs]
        return [
            pipeline_answers(contexts[item.index], item.windows, item.reduced, top_k=o.top_k,
                             handle_impossible_answer=o.handle_impossible_answer,
                             align_to_words=o.align_to_words,
                             null_score_diff_threshold=o.null_score_diff_threshold,
                             calibrator=self.calibrator, min_confidence=o.min_confidence,
                             threshold_from=o.sources.get("null_score_diff_threshold"))
            for item in score_pairs(self.model, questions, contexts, o.window_settings(), reduce, o.batch_size,
                                    chunk_size, progress, window_progress)
        ]


def empty_answer(in_force: AnswerSettings) -> dict:
    """The answer when no span was found at all (top_k 1): "" with why (``abstained``, reason no_span)."""
    from .abstain import why_empty

    why = why_empty(None, None, in_force.null_score_diff_threshold, in_force.sources.get("null_score_diff_threshold"))
    return {"score": 0.0, "start": 0, "end": 0, "answer": "", "abstained": why.to_dict()}


def pipeline(task: str = "question-answering", model: Any = None, tokenizer: Any = None, **kwargs) -> QuestionAnswerer:
    """``pipeline("question-answering", model=...)``, as in transformers; returns a QuestionAnswerer.

    Keyword options are the defaults of every call (``pipeline(..., top_k=3)``).
    """
    if task not in TASK_NAMES:
        raise SquadkitError(f"squadkit only provides the 'question-answering' task, got {task!r}", param="task")
    return QuestionAnswerer(model, tokenizer, **kwargs)
