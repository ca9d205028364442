"""Retrievers: BM25 (Tantivy), dense (sentence embeddings) and their hybrid, behind one Protocol.

Why it is built this way: docs/design.md (squadkit/retrieval/search.py).
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import SquadkitError
from . import ann, engine
from .embedder import SentenceEmbedder
from .documents import page_at
from .store import Index

RETRIEVERS = ("bm25", "dense", "hybrid")
RRF_K = 60

STOP_WORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below between "
    "both but by can could did do does doing down during each few for from further had has have having he her "
    "here hers herself him himself his i if in into is it its itself just me more most my myself no nor not of "
    "off on once only or other our ours ourselves out over own same she should so some such than that the their "
    "theirs them themselves then there these they this those through to too under until up very was we were what "
    "when where which while who whom why will with would you your yours yourself yourselves how s t".split()
)
_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass
class Hit:
    """One retrieved passage: ``document_text[start:end] == text``; higher ``score`` is better."""

    passage_id: int
    document: str
    start: int
    end: int
    text: str
    score: float
    title: str = ""
    metadata: dict = field(default_factory=dict)
    page: int | None = None  # a PDF's 1-based page holding ``start``; None for other files
    document_id: int | None = None  # the stored document: ``Index.document(document_id)``, GET /v1/documents/{id}

    def to_dict(self) -> dict:
        return {"document": self.document, "start": self.start, "end": self.end, "text": self.text,
                "score": self.score, "title": self.title, "page": self.page, "document_id": self.document_id}


@runtime_checkable
class Retriever(Protocol):
    """What ``DocumentQA`` needs from a retriever: the ``k`` best passages for a query, best first."""

    def search(self, query: str, k: int) -> list[Hit]: ...


def check_k(k: Any, what: str = "k") -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SquadkitError(f"{what} must be an integer >= 1, got {k!r}")
    return k


def fts_query(query: str) -> str:
    """An SQLite FTS5 MATCH expression for a natural-language query (the quoted words, OR'ed): the
    former engine's, kept for comparisons (benchmarks) and callers with their own FTS5 tables.

    A query of stop words only is searched with those words (BM25's IDF still ranks the passages);
    a query without any word is a SquadkitError.
    """
    return _match_expression(query_words(query))


def has_words(query: str) -> bool:
    """Whether ``query`` has a word to search for (``query_words`` refuses one without)."""
    return _WORDS.search(query) is not None


def query_words(query: str) -> list[str]:
    """The query's words, lower-cased, without English stop words (all of them for a question of stop
    words only: FTS5's former rule, kept for ``fts_query``); a SquadkitError when it has no word."""
    return content_words(query) or [w.lower() for w in _WORDS.findall(query)]


def content_words(query: str) -> list[str]:
    """The query's words, lower-cased, without English stop words: what BM25 searches for. Empty for a
    query of stop words only ("the of and"), which finds nothing; a SquadkitError when it has no word."""
    words = [w.lower() for w in _WORDS.findall(query)]
    if not words:
        raise SquadkitError(f"the query has no words to search for: {query!r}")
    return [w for w in words if w not in STOP_WORDS]


def stop_words_note(query: str) -> str:
    """The one line said where a query of stop words only finds nothing."""
    return f"the query has only stop words, nothing to search for: {query!r}; no passages (add a content word)"


class StopWordsOnly(UserWarning):
    """``search`` found nothing because the query has no content word (``content_words``)."""


def finds_nothing(query: str, kind: str = "bm25") -> bool:
    """Whether ``query`` has words but none to search for, so the ``kind`` retriever returns no passage
    (bm25 and hybrid; dense embeds any text)."""
    return kind != "dense" and has_words(query) and not content_words(query)


def _match_expression(words: list[str]) -> str:
    return " OR ".join(dict.fromkeys(f'"{w}"' for w in words))


_ANALYZERS: tuple | None = None
_ANALYZERS_LOCK = threading.Lock()


def _analyzers() -> tuple:
    """The engine's analyzer, stemmed and not (built once; tantivy's analyzers are thread-safe)."""
    global _ANALYZERS
    with _ANALYZERS_LOCK:
        if _ANALYZERS is None:
            _ANALYZERS = (engine.analyzer(stem=True), engine.analyzer(stem=False))
        return _ANALYZERS


def query_terms(words: list[str]) -> list[str]:
    """The engine's terms for ``query_words``: each word through the index's analyzer (a word such as
    "e-mail" or "c_3" gives two), in order, once each."""
    stem = _analyzers()[0]
    return list(dict.fromkeys(t for w in words for t in stem.analyze(w)))


TITLE_KEY_CHARS = 6  # words match a title's by their stems' first characters (docs/design.md)


def name_keys(text: str) -> set[str]:
    """The keys of ``text``'s words (a title, a file name, a question's content words): each content
    word's stem cut to ``TITLE_KEY_CHARS`` characters."""
    stem, exact = _analyzers()
    return {t[:TITLE_KEY_CHARS] for w in exact.analyze(text) if w not in STOP_WORDS for t in stem.analyze(w)}


def document_name(title: str, name: str) -> str:
    """A document's title and file name (its last part, extension dropped), as one text; a record of a
    file (a SQuAD paragraph, a JSON line: a name with '#') is named by its title alone."""
    if "#" in name:
        return title
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{title} {base.rsplit('.', 1)[0] if '.' in base else base}"


@functools.lru_cache(maxsize=4096)
def _document_keys(title: str, name: str) -> frozenset[str]:
    return frozenset(name_keys(document_name(title, name)))


def title_share(question_keys: set[str], title: str, name: str) -> float:
    """The share of a document's title and file name keys the question holds (0 to 1)."""
    keys = _document_keys(title, name)
    return len(keys & question_keys) / len(keys) if keys else 0.0


def _within(first: Sequence[int], second: Sequence[int], window: int) -> bool:
    """Does a position in ``second`` follow one in ``first`` by 1..``window`` tokens?"""
    return any(0 < b - a <= window for a in first for b in second)


def _hits(index: Index, scored: Sequence[tuple[int, float]]) -> list[Hit]:
    records = index.passages([pid for pid, _ in scored])
    out = []
    for pid, score in scored:
        r = records.get(pid)
        if r is not None:
            out.append(Hit(pid, r.document, r.start, r.end, r.text, float(score), r.title, r.metadata,
                           page_at(r.metadata, r.start), r.document_id))
    return out


PROXIMITY_DEPTH = 30  # BM25's best passages that are re-ranked
PROXIMITY_WINDOW = 3  # a question's neighbouring words count as together at most this many tokens apart
PROXIMITY_WEIGHT = 0.4  # the bonus for all pairs together, relative to the query's best BM25 score
SENTENCE_WEIGHT = 0.6  # the bonus for a sentence holding every question word, on the same scale
EXACT_WEIGHT = 0.5  # the weight of BM25 over the question's words as written (unstemmed), on the same scale
TITLE_WEIGHT = 1.5  # the bonus for a document whose title and file name the question names in full, same scale
BM25_K1, BM25_B = 1.2, 0.75  # the engine's constants (Tantivy's, as FTS5's were)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")


@dataclass
class _Tokens:
    """Token positions by row (0: the query) and term, stemmed and as written; tokens per row; and
    the stem of each of the query's words as written."""

    stemmed: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    exact: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    lengths: dict[int, int] = field(default_factory=dict)
    stem_of: dict[str, str] = field(default_factory=dict)


def _bm25_scores(tf: list[dict[str, int]], lengths: list[int], idf: dict[str, float]) -> list[float]:
    """BM25 of each passage (its term counts and length) against the terms of ``idf``; the average
    length is the passages' own (they are the candidates being compared)."""
    average = (sum(lengths) / len(lengths)) if lengths else 0.0
    scores = []
    for counts, length in zip(tf, lengths):
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / (average or 1.0))
        scores.append(sum(w * counts[t] * (BM25_K1 + 1) / (counts[t] + norm) for t, w in idf.items() if counts.get(t)))
    return scores


def split_sentences(text: str) -> list[str]:
    """Sentences, roughly: after . ! ? and before a capital, digit or quote, and at line breaks."""
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


class BM25Retriever:
    """BM25 by the index's engine (Tantivy; k1 = 1.2, b = 0.75), the best ``PROXIMITY_DEPTH``
    passages re-ranked by word proximity (module docstring); ``proximity=False``: plain BM25."""

    name = "bm25"

    def __init__(self, index: Index, proximity: bool = True) -> None:
        self.index = index
        self.proximity = proximity

    def scored_ids(self, query: str, k: int) -> list[tuple[int, float]]:
        words = content_words(query)
        if not words:
            return []
        depth = max(k, PROXIMITY_DEPTH) if self.proximity else k  # re-ranking needs its candidates
        scored = self.index.bm25(query_terms(words), depth)
        if self.proximity and scored:
            scored = self._rerank(words, scored)
        return scored[:k]

    def _rerank(self, words: list[str], scored: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Scores ``bm25 / best bm25 + proximity + sentence coverage + exact forms`` (module docstring)
        for the first ``PROXIMITY_DEPTH`` passages, re-ordered; those after them keep
        ``bm25 / best bm25``, which is below every re-ranked score. ``words``: ``query_words``."""
        best = scored[0][1] or 1.0
        relative = [(pid, score / best) for pid, score in scored]
        head, tail = relative[:PROXIMITY_DEPTH], relative[PROXIMITY_DEPTH:]
        if len(words) < 2 or len(head) < 2:
            return relative
        texts = self.index.passages([pid for pid, _ in head])
        sentences, owner = [], []  # every candidate's sentences, and which candidate each is from
        for i, (pid, _) in enumerate(head):
            for sentence in split_sentences(texts[pid].text if pid in texts else ""):
                sentences.append(sentence)
                owner.append(i)
        tokens = self._tokenize(" ".join(words), sentences)
        positions = tokens.stemmed
        terms = [t for t, _ in sorted(((t, p) for t, ps in positions.get(0, {}).items() for p in ps), key=lambda x: x[1])]
        pairs = [(a, b) for a, b in zip(terms, terms[1:]) if a != b]
        idf = self._idf(set(terms))
        total = sum(idf.values()) or 1.0
        together: list[set] = [set() for _ in head]  # the pairs that stand together in some sentence
        coverage = [0.0] * len(head)  # the largest share of the question's IDF in one sentence
        exact_tf: list[dict[str, int]] = [{} for _ in head]  # each exact question word's count in the passage
        length = [0] * len(head)  # tokens per passage
        for row, i in enumerate(owner, start=1):
            at = positions.get(row, {})
            together[i].update(pair for pair in pairs if _within(at.get(pair[0], ()), at.get(pair[1], ()),
                                                                 PROXIMITY_WINDOW))
            coverage[i] = max(coverage[i], sum(idf[t] for t in at) / total)
            for word, offsets in tokens.exact.get(row, {}).items():
                exact_tf[i][word] = exact_tf[i].get(word, 0) + len(offsets)
            length[i] += tokens.lengths.get(row, 0)
        exact_idf = {word: idf.get(stem, 0.0) for word, stem in tokens.stem_of.items()}
        exact = _bm25_scores(exact_tf, length, exact_idf)
        top_exact = max(exact) or 1.0
        named = self._named(words, [texts.get(pid) for pid, _ in head])
        head = [(pid, score + PROXIMITY_WEIGHT * sum(idf[a] + idf[b] for a, b in together[i]) / total
                 + SENTENCE_WEIGHT * coverage[i] + EXACT_WEIGHT * exact[i] / top_exact + TITLE_WEIGHT * named[i])
                for i, (pid, score) in enumerate(head)]
        return sorted(head, key=lambda item: -item[1]) + tail

    @staticmethod
    def _named(words: list[str], records: list) -> list[float]:
        """Per candidate, ``title_share`` of its document (once per document)."""
        asked = name_keys(" ".join(words))
        shares: dict[tuple[str, str], float] = {}
        for r in records:
            if r is not None and (r.title, r.document) not in shares:
                shares[(r.title, r.document)] = title_share(asked, r.title, r.document)
        return [0.0 if r is None else shares[(r.title, r.document)] for r in records]

    def _tokenize(self, query: str, texts: list[str]) -> _Tokens:
        """The query (row 0) and ``texts`` (rows 1..) tokenized by the engine's own analyzer: once as
        the index has them (stemmed) and once without the stemmer (exact forms), token for token; only
        the positions of the query's terms are kept."""
        stem, exact = _analyzers()
        tokens = _Tokens()
        asked_stems: set[str] = set()
        asked_words: set[str] = set()
        for row, text in enumerate([query, *texts]):
            stems, words = stem.analyze(text), exact.analyze(text)
            if row == 0:
                asked_stems, asked_words = set(stems), set(words)
                if len(stems) == len(words):
                    tokens.stem_of = dict(zip(words, stems))
                else:  # not expected (the stemmer maps a token to one token); exact forms then stand alone
                    tokens.stem_of = {w: w for w in words}
            else:
                tokens.lengths[row] = len(words)
            for into, seq, asked in ((tokens.stemmed, stems, asked_stems), (tokens.exact, words, asked_words)):
                for pos, term in enumerate(seq):
                    if term in asked:
                        into.setdefault(row, {}).setdefault(term, []).append(pos)
        return tokens

    def _idf(self, terms: set[str]) -> dict[str, float]:
        """BM25's IDF of each (already analyzed) term in the whole index, from the engine's own counts."""
        n, df = self.index.doc_freqs(terms)
        return {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in terms}

    def search(self, query: str, k: int) -> list[Hit]:
        return _hits(self.index, self.scored_ids(query, check_k(k)))


class DenseRetriever:
    """Inner-product search over the index's stored embeddings: exact (numpy) for a collection below
    ``ann.EXACT_BELOW`` passages, else the approximate nearest-neighbour graph the index holds."""

    name = "dense"

    def __init__(self, index: Index, embedder: SentenceEmbedder | None = None) -> None:
        self.index = index
        recorded = index.meta.get("embedder")
        if not recorded:
            raise SquadkitError(f"{index.path}: the index has no embeddings; rebuild it with squadkit index --dense")
        self.embedder = embedder or SentenceEmbedder(recorded)
        if embedder is not None and embedder.name != recorded:
            raise SquadkitError(f"{index.path}: embedded by {recorded}, not {embedder.name}")
        self.graph = None
        if index.meta.get("ann_file") and ann.available():
            self.graph = ann.AnnSearch(index.path, index.meta["ann_file"], index.verify)
            self.ids, self.matrix = np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        else:
            self.ids, self.matrix = index.embeddings()
        self.row = {int(pid): i for i, pid in enumerate(self.ids)}

    def query_vector(self, query: str) -> np.ndarray:
        if not query.strip():
            raise SquadkitError("the query is empty")
        return self.embedder.embed([query])[0]

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` passages nearest to ``vector``: (passage id, cosine), best first."""
        if self.graph is not None:
            ids, sims = self.graph.nearest(vector, k)
        else:
            ids, sims = ann.exact_nearest(self.matrix, self.ids, vector, k)
        return [(int(i), float(s)) for i, s in zip(ids, sims)]

    def cosines(self, vector: np.ndarray, pids: Sequence[int]) -> dict[int, float]:
        """The exact cosine of ``vector`` to each of these passages (from the stored embeddings)."""
        if self.graph is None:
            return {pid: float(self.matrix[self.row[pid]] @ vector) for pid in pids if pid in self.row}
        ids, matrix = self.index.embeddings(list(pids))
        return {int(i): float(s) for i, s in zip(ids, matrix @ vector)} if len(ids) else {}

    def scored_ids(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.nearest(self.query_vector(query), k)

    def search(self, query: str, k: int) -> list[Hit]:
        return _hits(self.index, self.scored_ids(query, check_k(k)))


class HybridRetriever:
    """BM25 and dense together: ``alpha * bm25 / max(bm25) + (1 - alpha) * cosine`` over both top lists.

    Score fusion with the BM25 scores scaled to [0, 1] by the query's best one (cosines already are
    on a fixed scale). On the dev slice it beat reciprocal rank fusion, which lost recall@1 to BM25
    alone whatever its weights (benchmarks/bench_retrieval.py; the README's table): RRF throws the
    score gaps away, and a clear BM25 winner is worth keeping. ``fusion="rrf"`` gives RRF.
    A passage missing from the BM25 list gets the list's lowest score; cosines are exact for all.
    """

    name = "hybrid"

    def __init__(self, index: Index, embedder: SentenceEmbedder | None = None, depth: int = 100,
                 alpha: float = 0.5, fusion: str = "score") -> None:
        if fusion not in ("score", "rrf"):
            raise SquadkitError(f"fusion must be 'score' or 'rrf', got {fusion!r}")
        self.index = index
        self.bm25 = BM25Retriever(index)
        self.dense = DenseRetriever(index, embedder)
        self.depth = depth
        self.alpha = alpha
        self.fusion = fusion

    def scored_ids(self, query: str, k: int) -> list[tuple[int, float]]:
        depth = max(self.depth, k)
        if finds_nothing(query):
            return []
        try:
            lexical = self.bm25.scored_ids(query, depth)
        except SquadkitError:  # no searchable words: the dense side may still find something
            lexical = []
        vector = self.dense.query_vector(query)
        semantic = self.dense.nearest(vector, depth)
        fused: dict[int, float] = {}
        if self.fusion == "rrf":
            for ranked in (lexical, semantic):
                for rank, (pid, _) in enumerate(ranked, 1):
                    fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank)
        else:
            top = max((s for _, s in lexical), default=1.0) or 1.0
            lex = {pid: s / top for pid, s in lexical}
            lex_floor = min(lex.values(), default=0.0)
            cosine = dict(semantic)
            missing = [pid for pid in lex if pid not in cosine]
            cosine.update(self.dense.cosines(vector, missing))  # exact for every candidate
            for pid in lex.keys() | cosine.keys():
                fused[pid] = self.alpha * lex.get(pid, lex_floor) + (1 - self.alpha) * cosine.get(pid, 0.0)
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]

    def search(self, query: str, k: int) -> list[Hit]:
        return _hits(self.index, self.scored_ids(query, check_k(k)))


def make_retriever(index: Index, kind: str = "bm25", embedder: SentenceEmbedder | None = None) -> Retriever:
    """The retriever called ``kind`` (bm25, dense or hybrid) over ``index``."""
    if kind == "bm25":
        return BM25Retriever(index)
    if kind == "dense":
        return DenseRetriever(index, embedder)
    if kind == "hybrid":
        return HybridRetriever(index, embedder)
    raise SquadkitError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {kind!r}")


def search(index: str | Index, query: str, k: int = 5, retriever: str = "bm25") -> list[Hit]:
    """The ``k`` best passages for ``query`` in the index at ``index`` (a path or an open Index); none,
    with a ``StopWordsOnly`` warning, for a query of stop words only (bm25, hybrid)."""
    check_k(k)
    if finds_nothing(query, retriever):
        import warnings

        warnings.warn(stop_words_note(query), StopWordsOnly, stacklevel=2)
    if isinstance(index, Index):
        return make_retriever(index, retriever).search(query, k)
    with Index(index) as opened:
        return make_retriever(opened, retriever).search(query, k)
