"""Requests-per-minute and tokens-per-minute limits: one limiter per Python worker process, for the job.

``spark.apwa.llm.rpm`` / ``spark.apwa.llm.tpm`` are budgets for the whole job. A Spark task runs in
its own Python worker process, so each process takes ``budget / n``. ``n`` is the number of
processes *actually sending* requests: each limiter reports to the driver's job server
(:class:`~apwa_spark.llm.budget.BudgetServer`, route ``share``) at most every
:data:`SHARE_REFRESH_SECONDS` while it books requests (and at once when a booking reaches further
than it last said by more than that), with how long its booked requests will keep it sending, and
the server counts the processes still sending or heard from in the last
:data:`~apwa_spark.llm.budget.ACTIVE_SECONDS`. (At a low rate a process books a request and waits
longer than that for it: it still counts, so that the others do not take its share; and a process
with a request in flight keeps reporting until it is answered, :meth:`RateLimiter.sending`.) A stage of 2 partitions on a
16-core cluster then gives each of its 2 processes half the budget, not a sixteenth; a process
that stops sending drops out of the count. Without the server (a limiter made outside a job),
``n`` is the ``tasks`` it is given (``SparkContext.defaultParallelism``: the most that can run).
A process starts at that ``n`` and believes a smaller count only :data:`STARTUP_SECONDS` after its
first report, when the others would have reported too.

The limiter is made once per process (:func:`process_limiter`) and lives for the whole job: every
batch of rows, reduce group and redact round in that process draws from the same buckets.

Every HTTP request goes through it, the openai client's own retries included: the client's
``httpx`` request hook waits on :meth:`RateLimiter.acquire`. A 429 answer with ``Retry-After`` pauses
the whole process's limiter for that long (:meth:`RateLimiter.pause`), so the other calls in flight
in the process stop sending too, not only the request that was refused.

Method: a token bucket per limit (GCRA-like), refilled continuously. The burst is small (one
request; a tenth of a minute's tokens) and the refill is the share less that burst, so that any
60-second window holds at most the process's share, and the processes' shares sum to the job's
budget: a sliding minute never sees more than ``rpm`` requests (hosted endpoints enforce their
limits over windows shorter than a minute too). Requests book their amount even when it is not
there yet (the level goes negative) and sleep until the refill covers it, so waiting callers are
served in arrival order without holding a lock while they sleep; the buckets are thread-safe, so
event loops in different threads (one per pandas UDF call) share them. When the share changes,
the refill rate changes; a share shrinking while a new process joins is seen within
:data:`SHARE_REFRESH_SECONDS`, the one time the sum may pass the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time

import httpx

#: Seconds between a sending process's reports to the job server (and updates of its share).
SHARE_REFRESH_SECONDS = 2.0
#: Seconds a process keeps at least its starting share of ``1 / tasks`` after its first report: the job
#: server cannot count the others before they have started and reported, so a count below ``tasks``
#: is believed only after this long (the server's activity window, ``budget.ACTIVE_SECONDS``).
STARTUP_SECONDS = 10.0
#: Seconds a process's calls fail without a request after a quota-exhausted 429 (then one is tried
#: again, so a raised quota is seen without restarting the process).
QUOTA_HOLD_SECONDS = 60.0


class _Bucket:
    """A token bucket admitting at most ``per_minute`` units in any 60-second window: ``burst`` units
    at once, refilled at ``per_minute - burst`` a minute; full at the start."""

    def __init__(self, per_minute: float, burst: float):
        self.capacity = self.level = burst
        self.stamp, self.rate = time.monotonic(), 0.0
        self.set_rate(per_minute)

    def set_rate(self, per_minute: float) -> None:
        """A new share (units per minute) from now on: the time since the last booking refills at the
        rate it had; the burst stays, and the window bound holds at the new rate."""
        self._refill()
        self.per_minute = per_minute
        self.rate = max(per_minute - self.capacity, per_minute / 2) / 60.0  # units per second

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Book ``amount`` (capped at the capacity) and return the seconds until it is covered (0: now)."""
        self._refill()
        self.level -= min(amount, self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate


class RateLimiter:
    """One process's share of the job's RPM/TPM (``None``: unlimited), thread- and event-loop-safe.

    Args:
        rpm: requests per minute for the whole job, or None.
        tpm: tokens (prompt estimate + completion cap) per minute for the whole job, or None.
        tasks: the processes assumed to share the budgets until the job server says how many do; a
            smaller count is taken only ``startup_seconds`` after the first report (the others may
            not have reported yet: of two processes starting together, the first to report once took the whole rate).
        share_url: the driver's job server (:attr:`~apwa_spark.llm.budget.BudgetServer.url`), which
            counts the processes sending; None: the share stays ``1 / tasks``.
    """

    def __init__(self, rpm: float | None, tpm: float | None, tasks: int = 1, share_url: str | None = None,
                 startup_seconds: float = STARTUP_SECONDS):
        self.rpm, self.tpm, self.processes = rpm, tpm, max(tasks, 1)
        self._startup = startup_seconds
        self._first_report: float | None = None
        self._requests = _Bucket(rpm / self.processes, min(1.0, rpm / self.processes / 2)) if rpm else None
        self._tokens = _Bucket(tpm / self.processes, tpm / self.processes / 10) if tpm else None
        self._share_url = share_url
        self._process = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._refreshed = -SHARE_REFRESH_SECONDS
        self._booked_until = 0.0  # monotonic time the last booked request may be sent
        self._reported_until = 0.0  # the time the job server was last told this process sends until
        self._lock = threading.Lock()
        self._in_flight = 0  # requests sent and not answered yet (:meth:`sending`)
        self._heartbeat: threading.Thread | None = None  # reports while requests are in flight
        self._reporting = False  # a report to the job server is under way
        self._paused_until = 0.0
        self._quota_until = 0.0
        self.pauses = 0  #: 429 pauses taken (for reports and tests)
        self.requests = 0  #: requests booked: every HTTP request of the process in the job, retries included

    def _refresh_share(self) -> None:
        """Tell the job server this process is sending, with its requests booked up to now (it sends
        until the last is sent), and take ``budget / processes sending``. Called after each
        booking and by :meth:`sending`'s thread, without the lock held: the report is an HTTP call,
        made outside it so that the process's bookings do not wait on it. It reports at most every
        :data:`SHARE_REFRESH_SECONDS` (one report at a time), and at once when a booking reaches
        further than the server was told by more than that: a process sending one request every
        12 s (a low share) would otherwise drop out of the count between two reports, and the others
        would take its share meanwhile. An unreachable server leaves the share as it is."""
        with self._lock:
            now = time.monotonic()
            due = now - self._refreshed >= SHARE_REFRESH_SECONDS or \
                self._booked_until > self._reported_until + SHARE_REFRESH_SECONDS
            if self._share_url is None or not due or self._reporting:
                return
            self._refreshed, self._reporting = now, True
            busy = max(0.0, self._booked_until - now)  # requests booked but not sent yet: still sending till then
            self._reported_until = now + busy
        try:
            active = int(httpx.post(f"{self._share_url}/share", json={"process": self._process, "busy": busy},
                                    timeout=2.0, trust_env=False).json()["active"])
        except (httpx.HTTPError, ValueError, KeyError):
            active = None
        with self._lock:
            self._reporting = False
            # a booking made during the report that reaches further than it said: told at once, as above
            again = active is not None and self._booked_until > self._reported_until + SHARE_REFRESH_SECONDS
            if active is None:
                self._refreshed = time.monotonic()  # after a timeout too: the next try is a full interval away
            else:
                self._first_report = now if self._first_report is None else self._first_report
                # a smaller count only once the others would have reported too
                if active >= self.processes or now - self._first_report >= self._startup:
                    self.processes = max(active, 1)
                    if self._requests:
                        self._requests.set_rate(self.rpm / self.processes)
                    if self._tokens:
                        self._tokens.set_rate(self.tpm / self.processes)
        if again:
            self._refresh_share()

    def delay(self, tokens: int) -> float:
        """Book one request of about ``tokens`` tokens; seconds to wait before sending it (0: now)."""
        with self._lock:
            self.requests += 1
            waits = [self._paused_until - time.monotonic()]
            if self._requests:
                waits.append(self._requests.wait_for(1))
            if self._tokens:
                waits.append(self._tokens.wait_for(tokens))
            wait = max(0.0, *waits)
            self._booked_until = max(self._booked_until, time.monotonic() + wait)
        self._refresh_share()  # after the booking, so the server hears how long this one keeps the process sending
        return wait

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about ``tokens`` tokens fits both budgets and no pause holds."""
        delay = self.delay(tokens)  # booked now, served in arrival order
        while delay > 0:
            await asyncio.sleep(delay)
            with self._lock:  # a 429 may have paused the process meanwhile
                delay = self._paused_until - time.monotonic()

    @contextlib.contextmanager
    def sending(self):
        """Count one request in flight while the block runs. While any is, a thread of this limiter
        reports to the job server every :data:`SHARE_REFRESH_SECONDS`, as bookings do: a process
        whose requests all take longer than the server's activity window (a long answer at
        concurrency 1) books nothing meanwhile, and would otherwise drop out of the count while it
        still sends at its share, so that the others took the whole rate (by arithmetic: two
        processes, one sending requests of 20 s at its share, the other then at twice its share half
        of the time, is 1.25 × the rpm in a minute). It stays counted as long as the job server
        answers. The thread ends when no request is in flight."""
        with self._lock:
            self._in_flight += 1
            if self._share_url is not None and self._heartbeat is None:
                self._heartbeat = threading.Thread(target=self._beat, name="apwa-rate-share", daemon=True)
                self._heartbeat.start()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _beat(self) -> None:
        """:meth:`sending`'s reports, until no request is in flight."""
        while True:
            time.sleep(SHARE_REFRESH_SECONDS)
            with self._lock:
                if not self._in_flight:
                    self._heartbeat = None
                    return
            self._refresh_share()

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


def process_limiter(run_id: str, rpm: float | None, tpm: float | None, tasks: int = 1,
                    share_url: str | None = None) -> RateLimiter:
    """This process's limiter for job ``run_id`` (made on first use, then the same object for the
    rest of the job, across pandas UDF calls and their event loops)."""
    key = (run_id, rpm, tpm, max(tasks, 1), share_url)
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(rpm, tpm, tasks, share_url)
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
