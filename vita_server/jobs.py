"""The model thread, its bounded queue and per-request jobs, shared by every route.

One worker thread runs all generation in arrival order (the model is loaded once and never runs
two requests at the same time), so the event loop stays free: /health answers while the model
works. A request holds one of `max_queue` slots while it runs or waits; more get 503. A `Job`
hands what the worker makes to the event loop in order, and stops the work at its next item when
it is cancelled (the client went away, a realtime answer was interrupted) or when it is past the
server's `--request-timeout` (counted from the request's arrival, waiting included).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from vita_core.errors import InputError
from vita_core.speech import SpeechModel
from vita_server.errors import ApiError

_END = object()


class Cancelled(Exception):
    """The job was cancelled: the worker leaves its work at the next item it hands over."""


class TimedOut(Exception):
    """The job ran past --request-timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request took longer than the server's --request-timeout {seconds:g} s; "
                         "ask for less (max_tokens, shorter input) or retry")


class Job:
    """One request's work on the model thread; `items()` on the event loop yields what it `put`s, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self._loop, self._queue = loop, asyncio.Queue()
        self._timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cancelled = threading.Event()
        self.released = False  # its queue slot was given back

    def check(self) -> None:
        """Raise Cancelled / TimedOut when the work should stop (the worker calls it between steps)."""
        if self.cancelled.is_set():
            raise Cancelled
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimedOut(self._timeout)

    def put(self, item: Any) -> None:
        """Hand `item` to the event loop (from the worker thread), after checking the job should go on."""
        self.check()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def cancel(self) -> None:
        self.cancelled.set()

    def _finish(self, outcome: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, outcome)

    async def items(self) -> AsyncIterator[Any]:
        """Everything the work put, then its end; an exception the work raised (TimedOut included) is raised here."""
        while (item := await self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass
class Runtime:
    """The loaded model, what clients call it, and the thread and slots every request shares."""

    speech: SpeechModel
    model_id: str
    max_queue: int = 8
    max_upload_mb: float = 25.0
    request_timeout: float | None = None
    worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="vita-generate"))
    queued: int = 0  # requests running or waiting; only the event loop's thread touches it

    def take_slot(self) -> None:
        if self.queued >= self.max_queue:
            raise ApiError(503, f"the server is busy ({self.queued} requests running or waiting, --max-queue "
                                f"{self.max_queue}); retry shortly", code="queue_full", headers={"Retry-After": "1"})
        self.queued += 1

    def release(self, job: Job) -> None:
        """Give the job's slot back (once): when its work ends, or as soon as its client has gone."""
        if not job.released:
            job.released = True
            self.queued -= 1

    def start(self, work: Callable[[Job], None], before: Callable[[Job], None] | None = None) -> Job:
        """Take a slot (503 when none is free) and queue `work(job)` on the model thread; call on the event loop.

        `before(job)` runs first, before the work can start (to register the job where other work finds it).
        """
        loop = asyncio.get_running_loop()
        self.take_slot()
        job = Job(loop, self.request_timeout)
        if before is not None:
            before(job)

        def run() -> None:
            outcome: Any = _END
            try:
                job.check()  # cancelled or out of time while it waited
                work(job)
            except Cancelled:
                pass
            except BaseException as exc:  # handed to the consumer of items()
                outcome = exc
            finally:  # the slot is free before the client sees the end, so its next request finds it free
                loop.call_soon_threadsafe(self.release, job)
                job._finish(outcome)

        self.worker.submit(run)
        return job

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the model thread for a request with one answer (504 past --request-timeout)."""
        self.take_slot()
        try:
            future = asyncio.wrap_future(self.worker.submit(fn, *args))
            return await asyncio.wait_for(asyncio.shield(future), self.request_timeout)
        except asyncio.TimeoutError:  # the work itself is bounded (its token budget) and finishes unseen
            raise ApiError(504, str(TimedOut(self.request_timeout)), code="request_timeout") from None
        finally:
            self.queued -= 1


def check_limits(max_queue: int, max_upload_mb: float, request_timeout: float | None = None) -> None:
    """The server's limits must let at least one request in (checked by `vita serve` before the model loads)."""
    if max_queue < 1:
        raise InputError(f"--max-queue {max_queue} must be at least 1")
    if max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb {max_upload_mb} must be above 0")
    if request_timeout is not None and request_timeout <= 0:
        raise InputError(f"--request-timeout {request_timeout} must be above 0 seconds (leave it out for no limit)")
