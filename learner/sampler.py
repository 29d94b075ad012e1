"""At most ``k`` sampling requests at once, each run on one of ``k`` dedicated threads at a lower priority.

The learner's ``/sample`` and ``/density`` draw from the served snapshot and encode large JSON
bodies: seconds of CPU that must neither block the HTTP event loop nor take the training thread's
share. :class:`Sampler` holds ``k`` slots (``LearnConfig.max_concurrent_samples``) and a pool of
exactly ``k`` threads, each lowered to nice :data:`SAMPLING_NICE` once when it starts; a request
that finds no slot free is answered 429 with ``Retry-After`` at once (a job never queues), and a
slot is given back as soon as its job ends, before the reply is sent. See docs/learner.md, "HTTP".
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service_http import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a client is asked to wait after a 429.
RETRY_AFTER_SECONDS = 1
#: Nice value of the sampling threads (training runs at the process's own, 0 by default).
SAMPLING_NICE = 10


def lower_this_threads_priority(nice: int = SAMPLING_NICE) -> None:
    """Run the calling thread at ``nice`` (never raising it back); Linux only, where a TID names one thread."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.debug("cannot lower the sampling thread's priority: %s", exc)


class Sampler:
    """``slots`` sampling jobs at most, on ``slots`` threads niced at start; 429 at once beyond."""

    def __init__(self, slots: int, nice: int = SAMPLING_NICE) -> None:
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="sketchgen-sampling",
                                        initializer=lower_this_threads_priority, initargs=(nice,))

    async def run(self, job: Callable[[], T]) -> T:
        """``job()``'s result, run on a sampling thread; :class:`ApiError` 429 when every slot is taken."""
        if not self._free.acquire(blocking=False):
            raise ApiError(429, f"busy: {self.slots} sampling requests are running; retry in {RETRY_AFTER_SECONDS} s",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)})

        def held() -> T:
            try:
                return job()
            finally:
                self._free.release()  # before the reply: a client that got its answer may ask again at once

        try:
            future = self._pool.submit(held)
        except BaseException:
            self._free.release()
            raise
        return await asyncio.wrap_future(future)
