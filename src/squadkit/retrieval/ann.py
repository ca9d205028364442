"""Dense search at scale: an approximate nearest-neighbour (HNSW) index of the passage embeddings.

Why: exact search multiplies the query by every stored vector (1M x 384 floats: 1.5 GB in memory,
all of it read per query). An HNSW graph reads a few hundred vectors per query. Below
``EXACT_BELOW`` passages exact search is as fast and needs no build, so the index is only written
above it (benchmarks/bench_retrieval.py ``--parts ann`` measured the crossover).

Library: usearch (HNSW, a 2 MB wheel; half-precision vectors; the file is memory-mapped, so the
operating system shares and pages it; passage ids are its keys). Compared with faiss-cpu's
IndexHNSWFlat and exact numpy on the same vectors (README, "Ask your documents").

Crash consistency: the file is derived from the SQLite embeddings and written, under a new name
(``dense-<generation>.usearch`` in ``INDEX.search/``), before the SQLite transaction that names it
(``meta.ann_file``) commits; a crash before that leaves the previous file named. Its size and CRC-32
are recorded beside the name and checked on open, as the keyword engine's files are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import engine

EXACT_BELOW = 5_000  # passages; below, exact numpy search needs no build and is about as fast (measured)
CONNECTIVITY = 16  # HNSW's M: neighbours per node
EXPANSION_ADD = 128  # efConstruction
EXPANSION_SEARCH = 512  # efSearch: recall@10 against exact 0.983 at 1M, 0.996 at 100k on the benchmark (p99 8 ms, 5 ms)
BATCH = 4096  # vectors read from SQLite and added at once


def available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def new_index(dim: int):
    from usearch.index import Index as UIndex

    return UIndex(ndim=dim, metric="ip", dtype="f16", connectivity=CONNECTIVITY,
                  expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


def write_for(conn: Any, index_path: str | os.PathLike, generation: int, previous: str | None = None,
              added: Sequence[int] = (), removed: Sequence[int] = (), threads: int = 0) -> str:
    """The graph of every stored embedding, in a new file; its meta value (JSON: name, size, CRC),
    or '' when the collection is below ``EXACT_BELOW`` or usearch is not installed. With the
    ``previous`` graph's meta value, it is copied and updated (``removed`` keys out, ``added`` in)
    rather than built again: an incremental run costs what it changed."""
    n = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    if n < EXACT_BELOW or not available():
        return ""
    graph = _updated(index_path, previous, conn, added, removed, threads) if previous else None
    if graph is None:
        graph = _built(conn, n, threads)
    folder = engine.search_folder(index_path)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"dense-{generation}-{os.getpid()}.usearch"
    tmp = final.with_suffix(".tmp")
    graph.save(str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    size, crc = engine.file_sums_of([final])[final.name]
    return json.dumps({"name": final.name, "size": size, "crc": crc})


def _batches(rows) -> Any:
    while batch := rows.fetchmany(BATCH):
        keys = np.fromiter((r[0] for r in batch), dtype=np.uint64, count=len(batch))
        yield keys, np.stack([np.frombuffer(r[1], dtype=np.float16) for r in batch])


def _built(conn: Any, n: int, threads: int):
    from ..progress import ProgressLines

    graph = None
    bar = ProgressLines("index: nearest-neighbour graph", n)
    for keys, vectors in _batches(conn.execute("SELECT passage_id, vector FROM embeddings ORDER BY passage_id")):
        if graph is None:
            graph = new_index(vectors.shape[1])
        graph.add(keys, vectors, threads=threads)
        bar(len(keys))
    bar.close()
    return graph


def _updated(index_path: str | os.PathLike, previous: str, conn: Any, added: Sequence[int], removed: Sequence[int],
             threads: int):
    """The previous graph with ``removed`` taken out and ``added`` put in; None when it cannot be read
    (then the caller builds afresh) or the change is most of it."""
    from usearch.index import Index as UIndex

    info = json.loads(previous)
    path = engine.search_folder(index_path) / info["name"]
    if not path.is_file() or path.stat().st_size != info["size"]:
        return None
    try:
        graph = UIndex.restore(str(path))
    except Exception:  # noqa: BLE001 - unreadable: build afresh
        return None
    if graph is None or len(added) > len(graph):
        return None
    gone = [k for k in set(removed) | set(added) if k in graph]
    if gone:
        graph.remove(np.array(gone, dtype=np.uint64))
    for lo in range(0, len(added), BATCH):
        ids = [int(i) for i in added[lo : lo + BATCH]]
        marks = ",".join("?" * len(ids))
        for keys, vectors in _batches(conn.execute(
                f"SELECT passage_id, vector FROM embeddings WHERE passage_id IN ({marks})", ids)):
            graph.add(keys, vectors, threads=threads)
    return graph


def ann_name(meta_value: str | None) -> str:
    """The file name in a ``meta.ann_file`` value ('' for none)."""
    return json.loads(meta_value)["name"] if meta_value else ""


class AnnSearch:
    """The graph named in the index's meta, memory-mapped: ``nearest(vector, k)`` -> (ids, cosines)."""

    def __init__(self, index_path: str | os.PathLike, meta_value: str, verify: bool) -> None:
        from usearch.index import Index as UIndex

        info = json.loads(meta_value)
        self.path = engine.search_folder(index_path) / info["name"]
        engine.verify_files(self.path.parent, json.dumps({info["name"]: [info["size"], info["crc"]]}), verify)
        self.graph = engine.guarded(self.path, lambda: UIndex.restore(str(self.path), view=True))
        if self.graph is None:
            raise engine.damaged(self.path, "not a usearch index")
        self.graph.expansion_search = EXPANSION_SEARCH

    def nearest(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self.graph))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        found = engine.guarded(self.path, lambda: self.graph.search(vector.astype(np.float32), k, threads=1))
        return found.keys.astype(np.int64), (1.0 - found.distances).astype(np.float32)


def exact_nearest(matrix: np.ndarray, ids: np.ndarray, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` (the small-collection path, and the benchmark's reference)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    sims = matrix @ vector
    n = min(k, len(sims))
    top = np.argpartition(-sims, n - 1)[:n]
    top = top[np.argsort(-sims[top], kind="stable")]
    return ids[top], sims[top]


def recall_at(found: Sequence[Sequence[int]], exact: Sequence[Sequence[int]], k: int) -> float:
    """Mean share of the exact top-``k`` that the approximate top-``k`` holds."""
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / max(len(e[:k]), 1) for f, e in zip(found, exact)]))


def file_path(index_path: str | os.PathLike, meta_value: str) -> Path:
    return engine.search_folder(index_path) / ann_name(meta_value)
