"""Dynamic batching: small requests that arrive together run as one batched call.

One sentence at a time leaves most of the engine's batched throughput unused (coalescing measured
1.97x at 8 concurrent clients, benchmarks/dynamic_batching.py). Requests up to ``max_chars`` wait at most
``wait_ms`` for company and are run together, one batched call per model version (projects served
by the same version share the call); a larger request runs at once in its caller's thread so a
long text never holds up short ones. So does a request that finds nothing else queued or running:
a lone request never waits for company that is not coming.

A server can give the coalescer a home thread (``serve_here``, the process's main thread): then the
small requests, lone ones included, are computed there (with ``BATCH_WAIT_MS=0`` one at a time).
The same network runs ~6 ms slower per 45-character sentence on a server's request threads than on
its main thread (benchmarks/serving.py, README "Engine benchmark"), for reasons not found; a hand-off
costs well under a millisecond.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from .predictor import Predictor, TextResult


SHUTTING_DOWN = "the server is shutting down"


@dataclass
class _Request:
    predictor: Predictor
    texts: Sequence[str]
    deadline: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    results: list[TextResult] | None = None
    error: BaseException | None = None
    alone: bool = False  # nothing else was queued or running when it came: it waits for no company


class Coalescer:
    def __init__(self, wait_ms: float = 2.0, max_texts: int = 64, max_chars: int = 4000):
        self.wait_s = wait_ms / 1000.0
        self.max_texts = max_texts
        self.max_chars = max_chars
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._running = 0  # calls in progress: in a caller's thread, or of taken requests
        self._home: threading.Thread | None = None  # the thread that computes small requests, if one serves
        self._leave_home = False
        self.batches = 0  # calls made for queued requests, batched or at home (for tests and logs)
        if self.wait_s > 0:
            threading.Thread(target=self._serve, name="coalescer", daemon=True).start()

    def predict(self, predictor: Predictor, texts: Sequence[str], deadline: float | None = None) -> list[TextResult]:
        """One result per text, from ``predictor``. ``deadline`` bounds a request that runs on its own
        (large, alone, or alone in its call at home); one batched with others is small and runs whole."""
        if len(texts) >= self.max_texts or sum(map(len, texts)) > self.max_chars:
            return predictor.predict(texts, deadline)
        request = _Request(predictor, texts, deadline)
        with self._cond:
            request.alone = not self._queue and not self._running
            in_caller = self._home is None and (request.alone or self.wait_s <= 0)
            if in_caller:
                self._running += 1
            else:
                self._queue.append(request)
                self._cond.notify_all()  # the home thread, not the idle worker, must wake
        if in_caller:
            try:
                return predictor.predict(texts, deadline)
            finally:
                with self._cond:
                    self._running -= 1
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.results

    @property
    def has_home(self) -> bool:
        return self._home is not None

    def serve_here(self) -> None:
        """Compute the small requests on the calling thread until ``leave_home`` (blocks; returns at
        once if it was already called). A server calls it on its main thread, its HTTP server
        running on other threads; Ctrl-C there ends it, and the requests it holds are told."""
        with self._cond:
            if self._leave_home:
                return
            self._home = threading.current_thread()
        try:
            while requests := self._take():
                self._run_taken(requests)
        finally:
            with self._cond:
                self._home = None
                stranded = list(self._queue) if self.wait_s <= 0 else []  # no worker to take them over
                if stranded:
                    self._queue.clear()
                self._cond.notify_all()
            _fail(stranded)

    def leave_home(self) -> None:
        """End ``serve_here`` once the requests it holds are done (or keep it from starting); the worker
        thread, where batching is on, takes over."""
        with self._cond:
            self._leave_home = True
            self._cond.notify_all()

    def _mine(self) -> bool:
        """Whether the calling thread should take queued requests: the home thread while one serves."""
        return self._home is None or threading.current_thread() is self._home

    def _take(self) -> list[_Request]:
        """The next requests to run together; [] only when the home thread is asked to leave."""
        with self._cond:
            while True:
                while not (self._queue and self._mine()):
                    if self._leave_home and threading.current_thread() is self._home:
                        self._home = None  # under the lock: nothing is queued for a home that has gone
                        self._cond.notify_all()
                        return []
                    self._cond.wait()
                if not self._queue[0].alone and self.wait_s > 0:
                    self._cond.wait_for(lambda: not self._mine() or sum(len(r.texts) for r in self._queue)
                                        >= self.max_texts, self.wait_s)
                if self._queue and self._mine():  # another thread may have taken them meanwhile
                    break
            limit = self.max_texts if self.wait_s > 0 else 1
            taken, count = [], 0
            while (self._queue and len(taken) < limit
                   and (not taken or count + len(self._queue[0].texts) <= self.max_texts)):
                request = self._queue.popleft()
                taken.append(request)
                count += len(request.texts)
            self._running += 1  # under the same lock, so no request takes the lone path meanwhile
            return taken

    def _serve(self) -> None:
        while True:
            self._run_taken(self._take())

    def _run_taken(self, requests: list[_Request]) -> None:
        groups: dict[int, list[_Request]] = {}
        for r in requests:
            groups.setdefault(id(r.predictor), []).append(r)
        try:
            for group in groups.values():
                self._run(group)
        finally:
            _fail([r for r in requests if not r.done.is_set()])  # a Ctrl-C at home left them
            with self._cond:
                self._running -= 1

    def _run(self, requests: list[_Request]) -> None:
        try:
            deadline = requests[0].deadline if len(requests) == 1 else None
            results = requests[0].predictor.predict([t for r in requests for t in r.texts], deadline)
            self.batches += 1
            start = 0
            for r in requests:
                r.results = results[start : start + len(r.texts)]
                start += len(r.texts)
        except BaseException as exc:  # handed to every waiting caller; the worker lives on
            interrupted = not isinstance(exc, Exception)
            for r in requests:
                r.error = RuntimeError(SHUTTING_DOWN) if interrupted else exc
            if interrupted and threading.current_thread() is self._home:
                raise  # Ctrl-C (or a SIGTERM made SystemExit) on the home thread stops the server
        finally:
            for r in requests:
                r.done.set()


def _fail(requests: Sequence[_Request]) -> None:
    for r in requests:
        r.error = RuntimeError(SHUTTING_DOWN)
        r.done.set()
