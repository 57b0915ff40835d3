"""Requests-per-minute and tokens-per-minute limits: one limiter per Python worker process, for the job.

``spark.apwa.llm.rpm`` / ``spark.apwa.llm.tpm`` are budgets for the whole job. A Spark task runs in
its own Python worker process, so each process takes ``budget / tasks``, where ``tasks`` is the number
of tasks that can run at once (the cluster's cores, ``SparkContext.defaultParallelism``), and the sum
never exceeds the budget. The limiter is made once per process (:func:`process_limiter`) and lives
for the whole job: every batch of rows, reduce group and redact round in that process draws from the
same buckets, instead of each starting with a full minute of burst.

Every HTTP request goes through it, the openai client's own retries included: the client's
``httpx`` request hook waits on :meth:`RateLimiter.acquire`. A 429 answer with ``Retry-After`` pauses
the whole process's limiter for that long (:meth:`RateLimiter.pause`), so the other calls in flight
in the process stop sending too, not only the request that was refused.

Method: a token bucket per limit, refilled continuously, with a burst of one minute's share.
Requests book their amount even when it is not there yet (the level goes negative) and sleep until
the refill covers it, so waiting callers are served in arrival order without holding a lock while
they sleep; the buckets are thread-safe, so event loops in different threads (one per pandas UDF
call) share them.
"""

from __future__ import annotations

import asyncio
import threading
import time

#: Seconds a process's calls fail without a request after a quota-exhausted 429 (then one is tried
#: again, so a raised quota is seen without restarting the process).
QUOTA_HOLD_SECONDS = 60.0


class _Bucket:
    """A token bucket of ``per_minute`` units a minute, full at the start (one minute's burst)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0  # units per second
        self.capacity = per_minute
        self.level = per_minute
        self.stamp = time.monotonic()

    def wait_for(self, amount: float) -> float:
        """Book ``amount`` (capped at the capacity) and return the seconds until it is covered (0: now)."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= min(amount, self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate


class RateLimiter:
    """One process's share of the job's RPM/TPM (``None``: unlimited), thread- and event-loop-safe.

    Args:
        rpm: requests per minute for the whole job, or None.
        tpm: tokens (prompt estimate + completion cap) per minute for the whole job, or None.
        tasks: tasks that may run at once; this process gets ``1 / tasks`` of the budgets.
    """

    def __init__(self, rpm: float | None, tpm: float | None, tasks: int = 1):
        share = max(tasks, 1)
        self._requests = _Bucket(rpm / share) if rpm else None
        self._tokens = _Bucket(tpm / share) if tpm else None
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._quota_until = 0.0
        self.pauses = 0  #: 429 pauses taken (for reports and tests)
        self.requests = 0  #: requests booked: every HTTP request of the process in the job, retries included

    def delay(self, tokens: int) -> float:
        """Book one request of about ``tokens`` tokens; seconds to wait before sending it (0: now)."""
        with self._lock:
            self.requests += 1
            waits = [self._paused_until - time.monotonic()]
            if self._requests:
                waits.append(self._requests.wait_for(1))
            if self._tokens:
                waits.append(self._tokens.wait_for(tokens))
            return max(0.0, *waits)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about ``tokens`` tokens fits both budgets and no pause holds."""
        delay = self.delay(tokens)  # booked now, served in arrival order
        while delay > 0:
            await asyncio.sleep(delay)
            with self._lock:  # a 429 may have paused the process meanwhile
                delay = self._paused_until - time.monotonic()

    def pause(self, seconds: float) -> None:
        """Hold every request of this process for ``seconds`` from now (a 429's ``Retry-After``)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self.pauses += 1


    def spend_quota(self) -> None:
        """Mark the endpoint's quota as spent for :data:`QUOTA_HOLD_SECONDS` (an ``insufficient_quota`` 429)."""
        self._quota_until = time.monotonic() + QUOTA_HOLD_SECONDS

    @property
    def quota_spent(self) -> bool:
        """True within :data:`QUOTA_HOLD_SECONDS` of :meth:`spend_quota`."""
        return time.monotonic() < self._quota_until


_LIMITERS: dict[tuple, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def process_limiter(run_id: str, rpm: float | None, tpm: float | None, tasks: int = 1) -> RateLimiter:
    """This process's limiter for job ``run_id`` (made on first use, then the same object for the
    rest of the job, across pandas UDF calls and their event loops)."""
    key = (run_id, rpm, tpm, max(tasks, 1))
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(rpm, tpm, tasks)
        return _LIMITERS[key]


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds in a ``Retry-After`` header (delta-seconds; an HTTP date is read as its distance from
    now, RFC 9110 §10.2.3), or None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
