"""Ask a question of a document collection: retrieve passages, read them, rank spans across them.

    >>> from squadkit import DocumentQA
    >>> dqa = DocumentQA("docs.sqlite", model="path/to/squad-model")
    >>> result = dqa.ask("In what country is Normandy located?", k=5, top_k=3)
    >>> result.no_answer, result.answers[0].answer, result.answers[0].document

Ranking and abstaining, and why:

* Each retrieved passage is one SQuAD example, read in squad mode (run_squad's decoding,
  ``predict_squad``). A span's score is its raw ``start_logit + end_logit``; spans from all
  passages are ranked on that score. Per-passage probabilities are not comparable: a softmax is
  normalised inside its own passage, so a passage with one weak candidate would give it a high
  probability. Logit sums are what run_squad already compares across the windows of one long
  context, and the retrieved passages are treated exactly as the windows of one document.
* The same view decides abstention: the no-answer score is the minimum over passages of each
  passage's null score (CLS start + end logit), as run_squad takes the minimum over windows, and
  the reader abstains when ``min null - best span score > threshold``, with the threshold saved
  beside the model (``null_score_diff_threshold`` in ``squadkit.json``, tuned on dev data by
  ``squadkit train``; 0.0 without one). So a model's threshold means the same here as in
  ``squadkit predict``.
* The retrieval score is not mixed into the span score. benchmarks/bench_retrieval.py measures
  adding the z-scored BM25 score (x0.5, x1.0): +0.3 / +1.0 EM on the dev slice, all of it from
  extra abstentions (HasAns EM unchanged), with a weak model whose threshold was tuned on that
  same slice: not evidence enough to put a second, uncalibrated scale into the ranking.
* The other abstain rule (the best span's own passage's null score) measured +1.6 EM there, for
  the same reason (more abstentions). The minimum over passages is kept: it is the rule the
  saved threshold was tuned under (windows of one context), and it does not let an irrelevant
  passage's confident null veto a span found elsewhere; re-measure with a stronger model before
  switching.
* Answers carry offsets into the stored document text: ``document_text[start:end] == answer``,
  exactly, with the passage they were found in.
* With a calibrator in the model folder (``squadkit calibrate``, issue 12), the result carries
  ``confidence``: of the best span (``calibration``'s ``answer`` part, on that span's features in
  its own passage, which is where it is that passage's best span), or of the abstention. The best
  answer carries it too. ``min_confidence`` is the calibration module's one abstain rule: the
  reader abstains when the best span's confidence is below it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..defaults import MAX_SEQ_LENGTH
from ..errors import SquadkitError
from .index import Index
from .search import Hit, Retriever, check_k, make_retriever

DEFAULT_PASSAGES = 5


@dataclass
class Answer:
    """One answer span: ``document_text[start:end] == answer``, found in ``passage``."""

    answer: str
    score: float  # start_logit + end_logit: comparable across passages
    probability: float  # softmax over all candidate spans of all passages and the no-answer score
    document: str
    title: str
    start: int
    end: int
    passage: str
    passage_start: int
    passage_end: int
    retrieval_score: float
    retrieval_rank: int  # 1 = the retriever's best passage
    confidence: float | None = None  # calibrated P(exact match), for the best answer (with a calibrator)


@dataclass
class AskResult:
    """The answers to one question, best first; ``no_answer`` when the reader abstains."""

    question: str
    no_answer: bool
    answers: list[Answer]
    null_score: float | None  # min over passages of CLS start + end logit
    threshold: float
    passages: list[Hit] = field(default_factory=list)
    passage_null_scores: list[float | None] = field(default_factory=list)  # per passage, in retrieval order
    confidence: float | None = None  # of the prediction (span or abstention), with a calibrator

    @property
    def answer(self) -> str:
        """The prediction: the best span's text, or "" when abstaining (SQuAD v2's empty answer)."""
        return "" if self.no_answer or not self.answers else self.answers[0].answer

    def to_dict(self, with_passages: bool = False) -> dict:
        out = {"question": self.question, "answer": self.answer, "no_answer": self.no_answer,
               "null_score": self.null_score, "threshold": self.threshold,
               "answers": [asdict(a) for a in self.answers]}
        if self.confidence is not None:
            out["confidence"] = self.confidence
        if with_passages:
            out["passages"] = [h.to_dict() for h in self.passages]
        return out


def _calibrate(result: AskResult, calibrator, features: dict, question_index: int,
               min_confidence: float | None) -> None:
    """The confidence of ``result``'s prediction, and ``min_confidence``'s abstention (calibration.py)."""
    import numpy as np

    from ..calibration import NO_SPAN

    best = result.answers[0] if result.answers else None
    x = np.asarray([features.get(f"{question_index}:{best.retrieval_rank - 1}", NO_SPAN) if best else NO_SPAN],
                   dtype=np.float64).reshape(1, -1)
    if best is not None:
        best.confidence = float(calibrator.answer_confidence(x)[0])
        if not result.no_answer and min_confidence is not None and best.confidence < min_confidence:
            result.no_answer = True
    result.confidence = float(calibrator.abstain_confidence(x)[0]) if result.no_answer else best.confidence


@dataclass
class _Example:
    id: str
    question: str
    context: str


def reader_threshold(model: Any) -> float:
    """The no-answer threshold saved beside the model (``squadkit.json``), else 0.0.

    The one place that reads it, so the settings schema can change under it.
    """
    value = getattr(getattr(model, "settings", None), "null_score_diff_threshold", None)
    return float(value) if value is not None else 0.0


def rank_answers(question: str, hits: Sequence[Hit], nbests: Sequence[Sequence[Any]], threshold: float,
                 top_k: int = 1) -> AskResult:
    """Rank the reader's spans of every retrieved passage and decide whether to abstain.

    ``nbests[j]`` is the n-best list (``NBestEntry``: text, start_logit, end_logit, start, end in
    passage characters, "" for the null answer) of passage ``hits[j]``. See the module docstring.
    """
    check_k(top_k, "top_k")
    spans: list[tuple[float, int, int, int]] = []  # (score, passage index, start, end)
    nulls: list[float] = []
    passage_nulls: list[float | None] = [None] * len(hits)
    for j, (hit, nbest) in enumerate(zip(hits, nbests)):
        for e in nbest:
            if e.text == "" and e.start is None:
                nulls.append(e.start_logit + e.end_logit)
                passage_nulls[j] = e.start_logit + e.end_logit
            elif e.start is not None and e.end is not None and 0 <= e.start < e.end <= len(hit.text):
                spans.append((e.start_logit + e.end_logit, j, e.start, e.end))
    spans.sort(key=lambda s: -s[0])
    null_score = min(nulls) if nulls else None
    answers: list[Answer] = []
    seen: set[tuple[str, int, int]] = set()
    for score, j, s, e in spans:
        hit = hits[j]
        key = (hit.document, hit.start + s, hit.start + e)
        if key in seen:  # the same span read in two overlapping passages
            continue
        seen.add(key)
        answers.append(Answer(hit.text[s:e], score, 0.0, hit.document, hit.title, hit.start + s, hit.start + e,
                              hit.text, hit.start, hit.end, hit.score, j + 1))
    scores = [a.score for a in answers] + ([null_score] if null_score is not None else [])
    if scores:
        top = max(scores)
        total = sum(math.exp(x - top) for x in scores)
        for a in answers:
            a.probability = math.exp(a.score - top) / total
    no_answer = not answers or (null_score is not None and null_score - answers[0].score > threshold)
    return AskResult(question, no_answer, answers[:top_k], null_score, threshold, list(hits), passage_nulls)


class DocumentQA:
    """A reader over an index: ``ask(question)`` retrieves ``k`` passages and answers from them.

    ``model`` is anything ``QuestionAnswerer`` loads (a folder, an exported ONNX folder, a hub id);
    or pass a loaded ``qa`` (a QuestionAnswerer) to share one model with a server. ``retriever`` is
    bm25, dense, hybrid, or any object with ``search(query, k) -> list[Hit]`` (the ``Retriever``
    Protocol), in which case ``index`` may be None: a search engine can stand in for the index.
    """

    def __init__(self, index: str | os.PathLike | Index | None, model: Any = None, *, qa: Any = None,
                 retriever: str | Retriever = "bm25", k: int = DEFAULT_PASSAGES, threshold: float | None = None,
                 max_seq_length: int | None = None, doc_stride: int | None = None,
                 max_answer_length: int | None = None, n_best_size: int | None = None, batch_size: int | None = None,
                 backend: str = "auto", device: str | None = None) -> None:
        self.k = check_k(k)
        if isinstance(retriever, str):
            if index is None:
                raise SquadkitError("DocumentQA needs an index (or a retriever object)")
            self.index = index if isinstance(index, Index) else Index(index)
            self.retriever: Retriever = make_retriever(self.index, retriever)
        else:  # any object with search(query, k) -> list[Hit]: e.g. a client of a search engine
            self.index = index if isinstance(index, Index) or index is None else Index(index)
            self.retriever = retriever
        if qa is None:
            if model is None:
                raise SquadkitError("DocumentQA needs a model (a folder or hub id) or a loaded qa")
            from ..pipeline import QuestionAnswerer

            try:
                qa = QuestionAnswerer(model, backend=backend, device=device)
            except BaseException:
                if self.index is not None and self.index is not index:  # the one opened here: let it go
                    self.index.close()
                raise
        self.qa = qa
        self.model = qa.model
        self.threshold = reader_threshold(self.model) if threshold is None else float(threshold)
        from ..backends import default_batch_size
        from ..predict import decode_settings_for

        # the model folder's windows and answer length unless told (the contract every consumer honours);
        # a window never longer than the model can take
        limit = getattr(self.model, "window_limit", None)
        if max_seq_length is None and self.model.settings.max_seq_length is None and limit:
            max_seq_length = min(limit, MAX_SEQ_LENGTH)
        self.decode, _, _ = decode_settings_for(
            self.model, max_seq_length=max_seq_length, doc_stride=doc_stride, n_best_size=n_best_size,
            max_answer_length=max_answer_length, null_score_diff_threshold=self.threshold,
            version_2_with_negative=True)
        self.batch_size = batch_size or default_batch_size(self.model)

    def ask(self, question: str, k: int | None = None, top_k: int = 1,
            min_confidence: float | None = None) -> AskResult:
        """The ``top_k`` best answers to ``question`` from the ``k`` best passages (see the module docstring)."""
        return self.ask_many([question], k=k, top_k=top_k, min_confidence=min_confidence)[0]

    def ask_many(self, questions: Sequence[str], k: int | None = None, top_k: int = 1,
                 min_confidence: float | None = None) -> list[AskResult]:
        """``ask`` for many questions, their passages read in shared batches."""
        from ..calibration import calibrator_of, check_min_confidence
        from ..predict import predict_squad

        k = check_k(self.k if k is None else k)
        check_k(top_k, "top_k")
        calibrator = calibrator_of(self.model)
        check_min_confidence(min_confidence, calibrated=calibrator is not None)
        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise SquadkitError("the question is empty")
        all_hits = [self.retriever.search(q, k) for q in questions]
        examples = [_Example(f"{i}:{j}", q, h.text) for i, (q, hits) in enumerate(zip(questions, all_hits))
                    for j, h in enumerate(hits)]
        preds = predict_squad(self.model, examples, self.decode, batch_size=self.batch_size) if examples else None
        results = []
        for i, (q, hits) in enumerate(zip(questions, all_hits)):
            nbests = [preds.nbest[f"{i}:{j}"] for j in range(len(hits))] if hits else []
            result = rank_answers(q, hits, nbests, self.threshold, top_k)
            if calibrator is not None:
                _calibrate(result, calibrator, preds.features if preds is not None else {}, i, min_confidence)
            results.append(result)
        return results

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def ask(index: str | os.PathLike, question: str, model: Any, k: int = DEFAULT_PASSAGES, top_k: int = 1,
        retriever: str = "bm25", **options: Any) -> AskResult:
    """One question over an index: ``DocumentQA(index, model, ...).ask(question, k, top_k)``."""
    dqa = DocumentQA(index, model, retriever=retriever, k=k, **options)
    try:
        return dqa.ask(question, k=k, top_k=top_k)
    finally:
        dqa.close()
