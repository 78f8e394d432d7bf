"""Bandwidth budgets: a token bucket that serves waiters by priority.

Every forwarder with ``max_bytes_per_s`` owns a Budget; the forwarders of a
Log share one more (``log.forwarders.max_bytes_per_s``). A send takes its
bytes (keys, values and headers of its records) from both before it goes.

Tokens accrue at ``rate`` bytes per second up to one second's worth. A
waiter is served once the bucket is not in debt, and takes all it needs,
even if that drives the bucket into debt: a batch larger than the bucket
still goes (it is never split to fit), and the waiters after it wait until
the debt is paid. Over any long run the bytes sent stay within rate.

Priority is strict: among the waiters, the lowest priority number is
served first (ties in arrival order), so a forwarder of live alarms
(priority 0) goes before a forwarder draining a sensor backlog (priority
10) whenever both have something to send; the backlog gets what the alarms
leave. Waiting is a Condition wait: the GIL is released.
"""
import heapq
import itertools
import threading
import time

from .._errors import InvalidConfigError

BURST_S = 1.0      # the bucket holds this many seconds of rate
MAX_WAIT_S = 1.0   # waits are re-checked at least this often


def check_rate(value, what="max_bytes_per_s"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not value > 0 or value != value or value == float("inf"):
        raise InvalidConfigError(
            f"{what} must be None or a number > 0, not {value!r}")
    return value


class Budget:
    """A rate in bytes per second (None: unlimited) shared by priority."""

    def __init__(self, rate=None, clock=time.monotonic):
        self._clock = clock
        self._cv = threading.Condition(threading.Lock())
        self._rate = check_rate(rate)
        self._tokens = self._capacity()
        self._stamp = clock()
        self._queue = []       # heap of (priority, seq)
        self._seq = itertools.count()
        self.granted = 0       # bytes handed out, for stats and tests

    def _capacity(self):
        return 0.0 if self._rate is None else self._rate * BURST_S

    @property
    def rate(self):
        return self._rate

    @rate.setter
    def rate(self, value):
        value = check_rate(value)
        with self._cv:
            self._refill()
            self._rate = value
            self._tokens = min(self._tokens, self._capacity())
            self._cv.notify_all()

    def _refill(self):
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._capacity(),
                               self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def acquire(self, nbytes, priority=0, cancelled=None):
        """Block until nbytes may be sent (True), or until cancelled() is
        true (False; call wake() to make waiters look at it)."""
        with self._cv:
            if self._rate is None and not self._queue:
                self.granted += nbytes
                return True
            ticket = (priority, next(self._seq))
            heapq.heappush(self._queue, ticket)
            try:
                while True:
                    if cancelled is not None and cancelled():
                        return False
                    self._refill()
                    first = self._queue[0] == ticket
                    if first and (self._rate is None or self._tokens >= 0):
                        if self._rate is not None:
                            self._tokens -= nbytes
                        self.granted += nbytes
                        return True
                    if first:  # in debt: wait until it is paid
                        wait = min(MAX_WAIT_S, -self._tokens / self._rate)
                    else:      # someone before us: wait for its turn
                        wait = MAX_WAIT_S
                    self._cv.wait(max(wait, 0.001))
            finally:
                self._queue.remove(ticket)
                heapq.heapify(self._queue)
                self._cv.notify_all()

    def wake(self):
        """Make every waiter re-check (after a cancellation)."""
        with self._cv:
            self._cv.notify_all()
