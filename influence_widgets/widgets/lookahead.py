"""Scoring the gallery's visible test points ahead of the clicks, in a background thread.

A click shows the top training points of one test point: s_test = H^-1 grad L(z_test, theta_hat)
(one solve) and then g_i . s_test for every training point i (one pass over the training set).
On a small model that takes milliseconds; on a network of 10^6 parameters the pass alone takes
seconds. When the first test point of the page takes at least ``LOOKAHEAD_SECONDS``, the explorer
scores the other test points of the visible page in the background, one at a time and in gallery
order, so that a click on one of them is a lookup; otherwise it stops after that first point (the
clicks are fast anyway and the CPU stays free). It starts over when the page, the class filter or
``k`` changes and keeps only the top-k lists (k helpful, k harmful per test point), never a row of
n scores. Its thread is a job of the explorer's :class:`~influence_widgets.widgets.jobs.JobRunner`:
at interpreter exit it stops after its current test point and is waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from influence_widgets.widgets.jobs import Job, JobRunner, exiting

__all__ = ["LOOKAHEAD_SECONDS", "PageLookahead"]

log = logging.getLogger("influence_widgets")

LOOKAHEAD_SECONDS = 0.5  # a test point at least this slow to score makes the page scored ahead

Result = TypeVar("Result")


class PageLookahead(Generic[Result]):
    """A cache of per-test-point results and the background thread that fills it for a page.

    Args:
        score: ``score(test_index)`` -> the result a click shows (the explorer's top-k lists),
            called in the background thread; it must serialise itself with the clicks.
        on_progress: ``on_progress(done, total)`` after each test point of the page, and with
            ``done == total`` when the page is complete.
        jobs: the explorer's job runner, whose job the thread is.
    """

    def __init__(
        self,
        score: Callable[[int], Result],
        on_progress: Callable[[int, int], None],
        jobs: JobRunner,
    ) -> None:
        self._score = score
        self._on_progress = on_progress
        self._results: dict[int, Result] = {}
        self._page: list[int] = []
        self._generation = 0  # bumped by forget(): a result computed before it is dropped
        self._slow: bool | None = None  # unknown until the first point is timed
        self._lock = threading.Lock()
        self._job: Job | None = None  # while a thread scores the page
        self.jobs = jobs

    @property
    def running(self) -> bool:
        """Whether a thread is scoring the page (it ends when the work does)."""
        with self._lock:
            return self._job is not None

    @property
    def active(self) -> bool:
        """Whether pages are scored ahead (clicks were found slow); False until known."""
        return bool(self._slow)

    def cached(self, index: int) -> Result | None:
        with self._lock:
            return self._results.get(index)

    def store(self, index: int, result: Result, seconds: float | None = None) -> None:
        """Keep a result computed by a click; ``seconds`` it took tells whether clicks are slow."""
        with self._lock:
            self._results[index] = result
            if seconds is not None and self._slow is None:
                self._slow = seconds >= LOOKAHEAD_SECONDS
                self._start_if_needed()

    def forget(self) -> None:
        """Drop every result (``k`` changed): the page is scored again."""
        with self._lock:
            self._results.clear()
            self._generation += 1
            self._start_if_needed()

    def follow(self, page: Sequence[int]) -> None:
        """Score these test points ahead (the visible page, in gallery order), replacing the last
        page; starts the background thread on the first call."""
        with self._lock:
            self._page = [int(i) for i in page]
            self._start_if_needed()

    def remaining(self) -> list[int]:
        """The test points of the page not scored yet."""
        with self._lock:
            return [i for i in self._page if i not in self._results]

    def _work(self) -> tuple[int, int, bool] | None:
        """The next test point to score, (index, generation, timed), or None. Holds _lock."""
        todo = [i for i in self._page if i not in self._results]
        first = self._slow is None
        return (todo[0], self._generation, first) if todo and (first or self._slow) else None

    def _start_if_needed(self) -> None:
        """Start the thread when there is work and none runs. Holds _lock. The thread ends when
        the work does, so that an explorer nobody shows any more can be garbage-collected."""
        if self._job is None and self._work() is not None:
            self._job = self.jobs.spawn(self._run)

    def _next(self) -> tuple[int, int, bool] | None:
        """The next test point to score, or None after marking the thread finished."""
        with self._lock:
            work = None if exiting() else self._work()
            if work is None:
                self._job = None
            return work

    def _run(self) -> None:
        while (work := self._next()) is not None:
            index, generation, timed = work
            if self.cached(index) is not None:
                continue  # a click scored it meanwhile
            start = time.perf_counter()
            try:
                result = self._score(index)
            except Exception:  # the click on this point shows the error; nothing to do here
                log.debug("scoring test point %d ahead failed", index, exc_info=True)
                with self._lock:
                    self._page = [i for i in self._page if i != index]
                continue
            seconds = time.perf_counter() - start
            with self._lock:
                if generation != self._generation:
                    continue
                self._results[index] = result
                if timed and self._slow is None:
                    self._slow = seconds >= LOOKAHEAD_SECONDS
                done = sum(i in self._results for i in self._page)
                total = len(self._page)
                report = self._slow and index in self._page
            if report:
                self._on_progress(done, total)
