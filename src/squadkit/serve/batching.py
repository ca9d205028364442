"""Micro-batching: pairs that arrive together share one forward pass on one worker thread."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..serve_settings import RequestOptions, ServeSettings





# ---------------------------------------------------------------------------------------------
# micro-batching
# ---------------------------------------------------------------------------------------------


class QueueFull(Exception):
    """The bounded queue cannot admit the request: the client should retry later (503)."""


class NotAccepting(Exception):
    """The server is loading or draining and admits no new work (503)."""


@dataclass
class _Item:
    """One question/context pair waiting for its answer, or one job (``job``) run on its own."""

    question: str
    context: str
    options: RequestOptions
    future: asyncio.Future
    arrived: float
    job: Optional[Callable[[], Any]] = None

    @property
    def abandoned(self) -> bool:
        """Its request timed out or went away: not worth a forward pass."""
        return self.future.done()


class MicroBatcher:
    """Gathers pairs that arrive together into one pipeline call on a single worker thread.

    Lives on the event loop: ``submit`` admits pairs (all of a request or none, within
    ``max_queue``) and ``submit_job`` one job (a callable that uses the model, such as a question
    over the documents), each returning futures; ``run`` forms micro-batches and hands them to the
    worker thread; ``drain`` answers everything admitted, then stops. A job is never batched: it
    runs alone, in its turn.
    """

    def __init__(self, qa: Any, settings: ServeSettings) -> None:
        self.qa = qa
        self.settings = settings
        self._pending: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="squadkit-model")
        self._task: Optional[asyncio.Task] = None
        self.batches_run = 0
        self.pairs_answered = 0
        self.jobs_run = 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="squadkit-batcher")

    def submit(self, pairs: list[tuple[str, str, RequestOptions]]) -> list[asyncio.Future]:
        """Admit the pairs of one request, or raise QueueFull / NotAccepting without admitting any."""
        return self._admit([(q, c, options, None) for q, c, options in pairs])

    def submit_job(self, job: Callable[[], Any]) -> list[asyncio.Future]:
        """Admit one job, run on the worker thread in its turn (one place in the queue)."""
        return self._admit([("", "", RequestOptions(), job)])

    def _admit(self, entries: list[tuple[str, str, RequestOptions, Optional[Callable[[], Any]]]]) -> list[asyncio.Future]:
        if not self._accepting:
            raise NotAccepting("the server is shutting down")
        self._compact()
        if len(self._pending) + len(entries) > self.settings.max_queue:
            raise QueueFull(f"the queue is full ({len(self._pending)} of {self.settings.max_queue} waiting)")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Item(q, c, opts, loop.create_future(), now, job) for q, c, opts, job in entries]
        self._pending.extend(items)
        self._wakeup.set()
        return [i.future for i in items]

    def _compact(self) -> None:
        """Forget pairs whose requests timed out, so they do not hold places in the queue."""
        if any(i.abandoned for i in self._pending):
            self._pending = deque(i for i in self._pending if not i.abandoned)

    async def run(self) -> None:
        """Form micro-batches until drained: wait for a first pair, let others join, answer them."""
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._pending:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather_more()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                outcomes = await loop.run_in_executor(self._executor, self._answer, batch)
            except Exception as exc:  # the worker itself failed: fail this batch, keep serving
                outcomes = [exc] * len(batch)
            self._count(batch)
            for item, outcome in zip(batch, outcomes):
                if item.future.done():
                    continue  # timed out meanwhile
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    def _count(self, batch: list[_Item]) -> None:
        if batch[0].job is not None:
            self.jobs_run += 1
        else:
            self.batches_run += 1
            self.pairs_answered += len(batch)

    async def _gather_more(self) -> None:
        """Wait until a full batch is waiting or the oldest pair has waited max_wait_ms (a job waits for none)."""
        deadline = self._pending[0].arrived + self.settings.max_wait_ms / 1000.0
        while (len(self._pending) < self.settings.max_batch_size and self._accepting
               and self._pending[0].job is None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _drop_abandoned(self) -> None:
        while self._pending and self._pending[0].abandoned:
            self._pending.popleft()

    def _take_batch(self) -> list[_Item]:
        """The next job alone, or the pairs up to max_batch_size that come before the next job."""
        batch: list[_Item] = []
        while self._pending and len(batch) < self.settings.max_batch_size:
            item = self._pending[0]
            if item.job is not None and batch:
                break
            self._pending.popleft()
            if item.abandoned:
                continue
            batch.append(item)
            if item.job is not None:
                break
        return batch

    def _answer(self, batch: list[_Item]) -> list[Any]:
        """Worker thread: a job, or one pipeline call per group of equal options; an error stays with its group."""
        if batch[0].job is not None:
            try:
                return [batch[0].job()]
            except Exception as exc:  # handed to the job's request
                return [exc]
        groups: dict[RequestOptions, list[int]] = {}
        for index, item in enumerate(batch):
            groups.setdefault(item.options, []).append(index)
        outcomes: list[Any] = [None] * len(batch)
        for options, indices in groups.items():
            inputs = [{"question": batch[i].question, "context": batch[i].context} for i in indices]
            try:
                answers = self.qa(inputs, **dataclasses.asdict(options), batch_size=self.settings.batch_size)
            except Exception as exc:  # handed to the requests of this group only
                answers = [exc] * len(indices)
            for i, answer in zip(indices, answers):
                outcomes[i] = answer
        return outcomes

    async def drain(self) -> None:
        """Admit nothing more, answer everything admitted, then stop the worker thread."""
        self._accepting = False
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)


