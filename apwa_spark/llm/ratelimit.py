"""Requests-per-minute and tokens-per-minute limits, shared out across a job's concurrent tasks.

``spark.apwa.llm.rpm`` / ``spark.apwa.llm.tpm`` are budgets for the whole job. Each Spark task
runs its own :class:`RateLimiter` with ``budget / tasks``, where ``tasks`` is the number of tasks
that can run at once (the cluster's cores, ``SparkContext.defaultParallelism``), so the sum never
exceeds the budget. 429 answers are retried by the openai client with backoff (``Retry-After``).
Method: a token bucket per limit, refilled continuously, with a one-minute burst.
"""

from __future__ import annotations

import asyncio
import time


class _Bucket:
    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0  # units per second
        self.capacity = per_minute
        self.level = per_minute
        self.stamp = time.monotonic()

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0: take it now)."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        amount = min(amount, self.capacity)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate


class RateLimiter:
    """Async limiter for one task's share of the job's RPM/TPM (``None``: unlimited).

    Args:
        rpm: requests per minute for the whole job, or None.
        tpm: tokens (prompt + completion cap) per minute for the whole job, or None.
        tasks: tasks that may run at once; each gets ``1 / tasks`` of the budgets.
    """

    def __init__(self, rpm: float | None, tpm: float | None, tasks: int = 1):
        tasks = max(tasks, 1)
        self._buckets = [(b, kind) for b, kind in ((rpm, "requests"), (tpm, "tokens")) if b]
        self._buckets = [(_Bucket(limit / tasks), kind) for limit, kind in self._buckets]
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about ``tokens`` tokens fits both budgets."""
        if not self._buckets:
            return
        async with self._lock:
            for bucket, kind in self._buckets:
                amount = 1 if kind == "requests" else tokens
                while (delay := bucket.wait_for(amount)) > 0:
                    await asyncio.sleep(delay)
