"""Ask a question of a document collection: retrieve passages, read them, rank spans across them.

    >>> from squadkit import DocumentQA
    >>> dqa = DocumentQA("docs.sqlite", model="path/to/squad-model")
    >>> result = dqa.ask("In what country is Normandy located?", k=5, top_k=3)
    >>> result.no_answer, result.answers[0].answer, result.answers[0].document

Each passage is read in squad mode; spans of all passages are ranked on one score and the reader
abstains when the no-answer score beats the best span by more than the threshold. The rule
(``scoring``), its threshold, ``retrieval_weight`` and the calibrator in force are settings
(``settings.SETTINGS``, ask mode). Why it ranks and abstains so: docs/ask.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..abstain import Abstention, why_empty
from ..model_folder import check_ask_scoring
from ..errors import SquadkitError
from ..settings import AnswerSettings, Given, given_options, resolve
from .documents import page_at
from .store import Index
from .search import Hit, Retriever, check_k, make_retriever

_NOTED: set[str] = set()  # model folders already told they have no ask_threshold (once per process)


class AskNote(UserWarning):
    """Something about how ``ask`` answers worth saying once (e.g. a folder without ``ask_threshold``)."""


@dataclass
class Answer:
    """One answer span: ``document_text[start:end] == answer``, found in ``passage``."""

    answer: str
    score: float  # start_logit + end_logit: comparable across passages
    probability: float  # softmax over all candidate spans of all passages (ranking scores) and the no-answer score
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
    page: int | None = None  # a PDF's 1-based page holding ``start``; None for other files
    document_id: int | None = None  # the stored document (GET /v1/documents/{id}); None from a foreign retriever


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
    scoring: str = "raw"  # "raw" (logit sums, min null) or "normalized" (log-probabilities over all passages)
    retrieval_weight: float = 0.0  # answers are ordered by score + this x their passage's z-scored retrieval score
    features: list[float] | None = field(default=None, repr=False)  # calibration features of the best span
    threshold_from: str | None = None  # where ``threshold`` came from: argument, model folder or default
    min_confidence: float | None = None  # the abstain rule's cut on the calibrated confidence, when given

    @property
    def answer(self) -> str:
        """The prediction: the best span's text, or "" when abstaining (SQuAD v2's empty answer)."""
        return "" if self.no_answer or not self.answers else self.answers[0].answer

    @property
    def null_margin(self) -> float | None:
        """No-answer score minus the best span's score: what the threshold is compared with (abstain when
        above it); None without a span or a no-answer score."""
        if not self.answers or self.null_score is None:
            return None
        return self.null_score - self.answers[0].score

    def to_dict(self, with_passages: bool = False) -> dict:
        out = {"question": self.question, "answer": self.answer, "no_answer": self.no_answer,
               "null_score": self.null_score, "threshold": self.threshold,
               "answers": [asdict(a) for a in self.answers]}
        if self.confidence is not None:
            out["confidence"] = self.confidence
        if self.scoring != "raw":
            out["scoring"] = self.scoring
        if self.retrieval_weight:
            out["retrieval_weight"] = self.retrieval_weight
        if with_passages:
            out["passages"] = [h.to_dict() for h in self.passages]
        why = self.abstained
        if why is not None:
            out["abstained"] = why.to_dict()
        return out

    @property
    def abstained(self) -> "Abstention | None":
        """Why the answer is "" (``squadkit.abstain``); None when there is an answer."""
        if not self.no_answer and self.answers:
            return None
        best = self.answers[0] if self.answers else None
        return why_empty(best.answer if best else None, self.null_margin, self.threshold, self.threshold_from,
                         best.confidence if best else None, self.min_confidence)


def _calibrate(result: AskResult, calibrator, x, min_confidence: float | None) -> None:
    """The confidence of ``result``'s prediction from the calibration features ``x`` of its best span,
    and ``min_confidence``'s abstention (calibration.py)."""
    import numpy as np

    from ..calibration import NO_SPAN

    best = result.answers[0] if result.answers else None
    x = np.asarray(x if best is not None and x is not None else NO_SPAN, dtype=np.float64).reshape(1, -1)
    if best is not None:
        best.confidence = float(calibrator.answer_confidence(x)[0])
        if not result.no_answer and min_confidence is not None and best.confidence < min_confidence:
            result.no_answer = True
    result.confidence = float(calibrator.abstain_confidence(x)[0]) if result.no_answer else best.confidence


@dataclass
class Reading:
    """What the reader made of one question's passages: hits, n-best lists, windows (see ``rank_answers``)."""

    hits: list[Hit]
    nbests: list
    windows: list
    features: dict  # calibration features by "question:passage" id (single-passage calibrator)


@dataclass
class _Example:
    id: str
    question: str
    context: str


def reader_threshold(model: Any) -> float:
    """The no-answer threshold ``ask`` uses for ``model`` when not told (``settings.resolve`` in ask mode)."""
    return float(resolve(model, "ask").null_score_diff_threshold)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _normalizer(windows: Sequence[Sequence[tuple]]) -> float:
    """log Z over every window of every passage: sum over windows of exp(log start + end normalisers)."""
    norms = [w[2] for ws in windows for w in ws if w[2] is not None and math.isfinite(w[2])]
    return _logsumexp(norms) if norms else 0.0


def retrieval_prior(hits: Sequence[Hit], weight: float) -> list[float]:
    """``weight`` x each passage's retrieval score, z-scored over ``hits`` (0 for all where the scores
    do not differ): what ``retrieval_weight`` adds to the score of the spans found in each passage."""
    n = len(hits)
    if not weight or n < 2:
        return [0.0] * n
    mean = sum(h.score for h in hits) / n
    spread = math.sqrt(sum((h.score - mean) ** 2 for h in hits) / n)
    if not spread > 1e-12 * max(1.0, abs(mean)) or not math.isfinite(spread):
        return [0.0] * n
    return [weight * (h.score - mean) / spread for h in hits]


Span = tuple[float, int, int, int, int]  # (score, passage index, start, end in the passage, tokens)


def _spans_and_nulls(hits: Sequence[Hit], nbests: Sequence[Sequence[Any]]) -> tuple[list[Span], list[float | None]]:
    """Every passage's candidate spans with their raw score, and each passage's null score (CLS start + end)."""
    spans: list[Span] = []
    passage_nulls: list[float | None] = [None] * len(hits)
    for j, (hit, nbest) in enumerate(zip(hits, nbests)):
        for e in nbest:
            if e.text == "" and e.start is None:
                passage_nulls[j] = e.start_logit + e.end_logit
            elif e.start is not None and e.end is not None and 0 <= e.start < e.end <= len(hit.text):
                spans.append((e.start_logit + e.end_logit, j, e.start, e.end, e.tokens or 1))
    return spans, passage_nulls


def _normalized(spans: list[Span], windows: Sequence[Sequence[tuple]], log_z: float):
    """Spans as log-probabilities under one softmax over every window of every passage; each passage's and
    the question's no-answer log-probability."""
    cls = [[w[0] + w[1] for w in ws] for ws in windows]
    flat = [x for c in cls for x in c]
    return ([(score - log_z, *rest) for score, *rest in spans], [(_logsumexp(c) - log_z) if c else None for c in cls],
            _logsumexp(flat) - log_z if flat else None)


def _answers(spans: list[Span], hits: Sequence[Hit], prior: Sequence[float]) -> tuple[list[Answer], list[float]]:
    """``spans`` (best first by score + their passage's prior) as answers, each span once (passages overlap)."""
    answers: list[Answer] = []
    ranked: list[float] = []  # each answer's ranking score
    seen: set[tuple[str, int, int]] = set()
    for score, j, s, e, _ in spans:
        hit = hits[j]
        key = (hit.document, hit.start + s, hit.start + e)
        if key in seen:
            continue
        seen.add(key)
        ranked.append(score + prior[j])
        answers.append(Answer(hit.text[s:e], score, 0.0, hit.document, hit.title, hit.start + s, hit.start + e,
                              hit.text, hit.start, hit.end, hit.score, j + 1, page=page_at(hit.metadata, hit.start + s),
                              document_id=hit.document_id))
    return answers, ranked


def _set_probabilities(answers: list[Answer], ranked: list[float], null_score: float | None, scoring: str) -> None:
    """Each answer's probability: its own (normalized), or a softmax over the ranking scores and the null (raw)."""
    scores = ranked + ([null_score] if null_score is not None else [])
    if scoring == "normalized":
        for a in answers:
            a.probability = math.exp(a.score)
    elif scores:
        top = max(scores)
        total = sum(math.exp(x - top) for x in scores)
        for a, x in zip(answers, ranked):
            a.probability = math.exp(x - top) / total


def rank_answers(question: str, hits: Sequence[Hit], nbests: Sequence[Sequence[Any]], threshold: float,
                 top_k: int = 1, windows: Sequence[Sequence[tuple]] | None = None,
                 scoring: str | None = None, retrieval_weight: float = 0.0) -> AskResult:
    """Rank the reader's spans of every retrieved passage and decide whether to abstain.

    ``nbests[j]`` is the n-best list (``NBestEntry``) of passage ``hits[j]``; ``windows`` each passage's
    windows' (CLS start, CLS end, log normaliser) (``predict_squad(keep_windows=True)``). ``scoring`` is
    "normalized" (needs ``windows``; their default) or "raw"; ``retrieval_weight`` orders spans by score +
    ``retrieval_prior``. Why: docs/ask.md.
    """
    check_k(top_k, "top_k")
    scoring = scoring or ("raw" if windows is None else "normalized")
    check_ask_scoring(scoring, "scoring", param="scoring")
    if scoring == "normalized" and windows is None:
        raise SquadkitError("scoring normalized needs the passages' windows (predict_squad(keep_windows=True))",
                            param="scoring")
    spans, passage_nulls = _spans_and_nulls(hits, nbests)
    nulls = [n for n in passage_nulls if n is not None]
    null_score = min(nulls) if nulls else None
    log_z = _normalizer(windows) if windows is not None else 0.0
    if scoring == "normalized":
        spans, passage_nulls, null_score = _normalized(spans, windows, log_z)
    prior = retrieval_prior(hits, retrieval_weight)
    spans.sort(key=lambda span: -(span[0] + prior[span[1]]))  # stable: ties keep the passages' order
    best_tokens = spans[0][4] if spans else None
    answers, ranked = _answers(spans, hits, prior)
    _set_probabilities(answers, ranked, null_score, scoring)
    result = AskResult(question, not answers, answers[:top_k], null_score, threshold, list(hits), passage_nulls,
                       scoring=scoring, retrieval_weight=float(retrieval_weight))
    result.no_answer = result.no_answer or (result.null_margin is not None and result.null_margin > threshold)
    if windows is not None and answers:  # the margin the rule decides on, the log-probability, the length
        from ..calibration import answer_features

        shift = 0.0 if scoring == "normalized" else log_z
        result.features = answer_features(answers[0].score, null_score if null_score is not None else -50.0, shift,
                                          best_tokens)[0].tolist()
    return result


class DocumentQA:
    """A reader over an index: ``ask(question)`` retrieves ``k`` passages and answers from them.

    ``model`` is anything ``QuestionAnswerer`` loads (a folder, an exported ONNX folder, a hub id);
    or pass a loaded ``qa`` (a QuestionAnswerer) to share one model with a server. ``retriever`` is
    bm25, dense, hybrid, or any object with ``search(query, k) -> list[Hit]`` (the ``Retriever``
    Protocol), in which case ``index`` may be None: a search engine can stand in for the index.
    """

    def __init__(self, index: str | os.PathLike | Index | None, model: Any = None, *, qa: Any = None,
                 retriever: str | Retriever = "bm25", backend: str = "auto", device: str | None = None,
                 given: Given | None = None, **options: Any) -> None:
        # every ask setting (k, the threshold, scoring, retrieval_weight, windows, ...; older spellings too),
        # checked here once (``given``: already checked where it came in), before the index opens or the model loads
        self._given = given_options(options, "ask", "to DocumentQA")
        if given is not None:
            self._given = given.merged(self._given)
        if isinstance(retriever, str):
            if index is None:
                raise SquadkitError("DocumentQA needs an index (or a retriever object)")
            self.index = index if isinstance(index, Index) else Index(index)
            self.retriever: Retriever = make_retriever(self.index, retriever)
        else:  # any object with search(query, k) -> list[Hit]: e.g. a client of a search engine
            self.index = index if isinstance(index, Index) or index is None else Index(index)
            self.retriever = retriever
        if qa is None and model is None:
            raise SquadkitError("DocumentQA needs a model (a folder or hub id) or a loaded qa")
        try:
            from ..model import load

            self.model = qa.model if qa is not None else load(model, backend=backend, device=device)
            self.settings = resolve(self.model, "ask", self._given)
        except BaseException:
            if self.index is not None and self.index is not index:  # the one opened here: let it go
                self.index.close()
            raise
        self.qa = qa
        self._note_first_rule()

    def _note_first_rule(self) -> None:
        """Say once per model folder when ask answers by its first rule because the folder learned none."""
        name = str(self.model.name_or_path or id(self.model))
        if self.settings.sources["scoring"] == "default" and name not in _NOTED:
            _NOTED.add(name)
            warnings.warn(f"{name or 'the model'} has no ask rule (ask_threshold): squadkit train learns one only with "
                          f"--passage-negatives or --shared-norm and --do-eval; ask ranks raw span scores and "
                          f"abstains on the single-passage threshold", AskNote, stacklevel=3)

    def settings_for(self, **call_options: Any) -> AnswerSettings:
        """The settings in force for a call with ``call_options`` (checked once, here)."""
        call = given_options(call_options, "ask", "to ask")
        return resolve(self.model, "ask", self._given.merged(call)) if call.values else self.settings

    def ask(self, question: str, k: int | None = None, top_k: int | None = None,
            min_confidence: float | None = None, null_score_diff_threshold: float | None = None,
            retrieval_weight: float | None = None) -> AskResult:
        """The ``top_k`` best answers to ``question`` from the ``k`` best passages (see the module docstring)."""
        return self.ask_many([question], k=k, top_k=top_k, min_confidence=min_confidence,
                             null_score_diff_threshold=null_score_diff_threshold, retrieval_weight=retrieval_weight)[0]

    def ask_many(self, questions: Sequence[str], k: int | None = None, top_k: int | None = None,
                 min_confidence: float | None = None, null_score_diff_threshold: float | None = None,
                 retrieval_weight: float | None = None) -> list[AskResult]:
        """``ask`` for many questions, their passages read in shared batches; the call's settings (None: the
        reader's) replace the reader's for this call."""
        settings = self.settings_for(k=k, top_k=top_k, min_confidence=min_confidence,
                                     null_score_diff_threshold=null_score_diff_threshold,
                                     retrieval_weight=retrieval_weight)
        calibrator = {"single": self.model.calibrator, "ask": self.model.ask_calibrator}.get(settings.calibrator)
        results = []
        for i, (q, read) in enumerate(zip(questions, self.read(questions, settings=settings))):
            result = self.rank(q, read, settings=settings)
            if calibrator is not None:  # ask-mode features of the best span, or its own passage's (single)
                best = result.answers[0] if result.answers else None
                single = settings.calibrator == "single"
                x = read.features.get(f"{i}:{best.retrieval_rank - 1}") if single and best else result.features
                _calibrate(result, calibrator, x, settings.min_confidence)
            results.append(result)
        return results

    def read(self, questions: Sequence[str], k: int | None = None,
             settings: AnswerSettings | None = None) -> list["Reading"]:
        """Retrieve ``k`` passages per question and read them (one shared ``predict_squad``)."""
        settings = settings or self.settings
        k = settings.k if k is None else k
        from ..predict import predict_squad

        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise SquadkitError("the question is empty")
        all_hits = [self.retriever.search(q, k) for q in questions]
        examples = [_Example(f"{i}:{j}", q, h.text) for i, (q, hits) in enumerate(zip(questions, all_hits))
                    for j, h in enumerate(hits)]
        # min_confidence is ask's own rule over the passages (``_calibrate``), not each passage's
        passage_settings = dataclasses.replace(settings, min_confidence=None)
        preds = predict_squad(self.model, examples, passage_settings, keep_windows=True) if examples else None
        out = []
        for i, hits in enumerate(all_hits):
            ids = [f"{i}:{j}" for j in range(len(hits))]
            out.append(Reading(list(hits), [preds.nbest[x] for x in ids] if hits else [],
                               [preds.windows[x] for x in ids] if hits else [],
                               preds.features if preds is not None else {}))
        return out

    def rank(self, question: str, read: "Reading", k: int | None = None, *, threshold: float | None = None,
             retrieval_weight: float | None = None, settings: AnswerSettings | None = None) -> AskResult:
        """Answers from the first ``k`` (default: all) passages of ``read``, by the rule of ``settings``
        (default: this reader's); ``threshold`` and ``retrieval_weight`` replace theirs (train's fits)."""
        s = settings or self.settings
        n = len(read.hits) if k is None else k
        result = rank_answers(question, read.hits[:n], read.nbests[:n],
                              s.null_score_diff_threshold if threshold is None else threshold, s.top_k,
                              read.windows[:n], s.scoring,
                              s.retrieval_weight if retrieval_weight is None else retrieval_weight)
        result.threshold_from = s.sources["null_score_diff_threshold"] if threshold is None else "argument"
        result.min_confidence = s.min_confidence
        return result

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def ask(index: str | os.PathLike, question: str, model: Any, k: int | None = None, top_k: int | None = None,
        retriever: str = "bm25", **options: Any) -> AskResult:
    """One question over an index: ``DocumentQA(index, model, k=k, top_k=top_k, ...).ask(question)``."""
    dqa = DocumentQA(index, model, retriever=retriever, k=k, top_k=top_k, **options)
    try:
        return dqa.ask(question)
    finally:
        dqa.close()
