"""A drop-in for transformers' question-answering pipeline (removed from transformers in 5.3).

    >>> from squadkit import pipeline
    >>> qa = pipeline("question-answering", model="mrm8488/roberta-base-1B-1-finetuned-squadv2")
    >>> qa(question="Where do I live?", context="My name is Wolfgang and I live in Berlin")
    {'score': ..., 'start': 34, 'end': 40, 'answer': 'Berlin'}

Same call forms, keyword names, defaults and answers as the transformers pipeline
(4.x-5.2), with batches sorted by length and decoding vectorized. Differences, on purpose:
a list of inputs always gives a list (transformers unwrapped a one-item list), and top_k > 1
always gives a list (transformers gave a dict when only one answer was found).

This module imports torch and transformers only when a model is loaded.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .errors import SquadkitError

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


def check_options(top_k: int = 1, max_answer_len: int = 15, doc_stride: int | None = None, max_seq_len: int = 384,
                  max_question_len: int = 64):
    """Validate the pipeline's options (a clear ValueError); returns the window settings.

    Callable before any model is loaded, so the CLI refuses bad flags at once.
    """
    from .features import WindowSettings

    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise SquadkitError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not isinstance(max_answer_len, int) or isinstance(max_answer_len, bool) or max_answer_len < 1:
        raise SquadkitError(f"max_answer_len must be an integer >= 1, got {max_answer_len!r}")
    return WindowSettings("pipeline", max_seq_len, doc_stride, max_question_len).validate()


class QuestionAnswerer:
    """Answers questions about contexts with an extractive QA model.

    ``model`` is a hub id, a checkpoint folder, an exported ONNX folder (served by ONNX
    Runtime without being told) or an in-memory transformers model with its ``tokenizer``.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        backend: str = "auto",
        device: str | int | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        trust_remote_code: bool = False,
        revision: str | None = None,
        **backend_options,
    ) -> None:
        from .models import load_model

        self.model = load_model(
            model, tokenizer, backend=backend, device=device, dtype=dtype,
            trust_remote_code=trust_remote_code, revision=revision, **backend_options,
        )
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # the transformers pipeline's public attributes, for code written against it
    @property
    def device(self) -> str:
        return getattr(self.model, "device", "cpu")

    def __call__(
        self,
        *args,
        question: str | Sequence[str] | None = None,
        context: str | Sequence[str] | None = None,
        top_k: int = 1,
        topk: int | None = None,
        doc_stride: int | None = None,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        batch_size: int | None = None,
        **kwargs,
    ):
        """Answer one input (a dict back; a list for top_k > 1) or many (a list back)."""
        if kwargs:
            allowed = {"padding", "num_workers"}  # accepted for compatibility, no effect here
            unknown = set(kwargs) - allowed
            if unknown:
                raise SquadkitError(f"unknown argument(s): {', '.join(sorted(unknown))}")
        options = dict(
            top_k=topk if topk is not None else top_k,
            doc_stride=doc_stride,
            max_answer_len=max_answer_len,
            max_seq_len=max_seq_len,
            max_question_len=max_question_len,
            handle_impossible_answer=handle_impossible_answer,
            align_to_words=align_to_words,
        )
        pairs, single = _pairs_from_call(args, question, context)
        results = self.answer_pairs(pairs, batch_size=batch_size, **options)
        if options["top_k"] == 1:
            results = [r[0] if r else {"score": 0.0, "start": 0, "end": 0, "answer": ""} for r in results]
        return results[0] if single else results

    def answer_pairs(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        top_k: int = 1,
        doc_stride: int | None = None,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        batch_size: int | None = None,
        chunk_size: int = 256,
    ) -> list[list[dict]]:
        """The ``top_k`` best answers of every (question, context) pair, best first.

        Pairs are processed ``chunk_size`` at a time, and each window is reduced to its best
        spans as soon as the model has scored it, so memory stays bounded for long inputs.
        """
        from .decode import allowed_tokens, pipeline_answers, pipeline_window_spans
        from .features import build_windows, iter_batches

        if max_seq_len is None:
            max_seq_len = min(int(getattr(self.tokenizer, "model_max_length", 384) or 384), 384)
        settings = check_options(top_k, max_answer_len, doc_stride, max_seq_len, max_question_len)
        batch_size = batch_size or self.batch_size
        pre_topk = top_k * 2 + 10 if align_to_words else top_k
        pairs = list(pairs)
        results: list[list[dict]] = []
        for lo in range(0, len(pairs), chunk_size):
            chunk = pairs[lo : lo + chunk_size]
            questions = [q for q, _ in chunk]
            contexts = [c for _, c in chunk]
            windows = build_windows(self.tokenizer, questions, contexts, settings, first_example_index=lo)
            spans = [None] * len(windows)
            for batch in iter_batches(windows, batch_size, self._pad_id):
                start, end = self.model.logits(batch)
                batch_windows = [windows[i] for i in batch.window_indices]
                allowed = allowed_tokens(batch_windows, start.shape[1]) & batch.attention_mask.astype(bool)
                for i, s in zip(batch.window_indices, pipeline_window_spans(start, end, allowed, pre_topk, max_answer_len)):
                    spans[i] = s
            by_example: dict[int, list[int]] = {}
            for i, window in enumerate(windows):
                by_example.setdefault(window.example_index - lo, []).append(i)
            for j, context_text in enumerate(contexts):
                idx = by_example.get(j, [])
                results.append(
                    pipeline_answers(
                        context_text,
                        [windows[i] for i in idx],
                        [spans[i] for i in idx],
                        top_k=top_k,
                        handle_impossible_answer=handle_impossible_answer,
                        align_to_words=align_to_words,
                    )
                )
        return results


def pipeline(task: str = "question-answering", model: Any = None, tokenizer: Any = None, **kwargs) -> QuestionAnswerer:
    """``pipeline("question-answering", model=...)``, as in transformers; returns a QuestionAnswerer."""
    if task not in TASK_NAMES:
        raise SquadkitError(f"squadkit only provides the 'question-answering' task, got {task!r}")
    return QuestionAnswerer(model, tokenizer, **kwargs)
