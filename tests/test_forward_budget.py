"""Bandwidth budgets (pylog/forward/_budget.py): a token bucket served by
priority. Rates are checked as upper bounds on what was granted by each
moment (a slow machine can only grant less), never as timed targets."""
import threading
import time

import pytest

import pylog
from pylog.forward._budget import BURST_S, Budget


def test_an_unlimited_budget_grants_at_once():
    b = Budget(None)
    assert all(b.acquire(10**9) for _ in range(1000))
    assert b.granted == 1000 * 10**9


def test_grants_never_run_ahead_of_the_rate():
    RATE, CHUNK = 500_000, 100_000
    b = Budget(RATE)
    t0 = time.monotonic()
    total = 0
    for _ in range(10):
        assert b.acquire(CHUNK)
        total += CHUNK
        # a full bucket (one second) plus the chunk just taken
        assert total <= RATE * (time.monotonic() - t0) + RATE * BURST_S + CHUNK
    assert b.granted == 10 * CHUNK


def test_a_request_larger_than_the_bucket_still_goes_and_is_paid_after():
    b = Budget(10_000)
    t0 = time.monotonic()
    assert b.acquire(20_000)          # from a full bucket, into debt
    assert b.acquire(1)               # waits until the debt is paid
    assert time.monotonic() - t0 >= (20_000 - 10_000) / 10_000 - 0.05


def test_lower_priority_numbers_are_served_first():
    """Two threads want many chunks of a slow budget; while priority 0 has
    a request waiting, priority 10 gets nothing (but the start's)."""
    b = Budget(100_000)
    b.acquire(100_000)  # empty the bucket: everyone waits from here
    order = []
    started = threading.Barrier(2)

    def take(prio, n):
        started.wait()
        for _ in range(n):
            assert b.acquire(20_000, priority=prio)
            order.append(prio)

    ths = [threading.Thread(target=take, args=(p, 6)) for p in (10, 0)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
        assert not th.is_alive()
    last_high = max(i for i, p in enumerate(order) if p == 0)
    assert order[:last_high].count(10) <= 1, order


def test_a_cancelled_wait_returns_false_and_wake_makes_it_look():
    b = Budget(10)
    b.acquire(1000)  # deep in debt: the next wait would be long
    stop = threading.Event()
    res = []
    th = threading.Thread(target=lambda: res.append(
        b.acquire(10, cancelled=stop.is_set)))
    th.start()
    time.sleep(0.05)
    stop.set()
    b.wake()
    th.join(10)
    assert res == [False]
    assert b.granted == 1000


def test_lifting_the_rate_releases_waiters():
    b = Budget(10)
    b.acquire(1000)
    res = []
    th = threading.Thread(target=lambda: res.append(b.acquire(10)))
    th.start()
    time.sleep(0.05)
    b.rate = None
    th.join(10)
    assert res == [True]


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan"), "1k",
                                  True])
def test_bad_rates_are_refused(rate):
    with pytest.raises(pylog.InvalidConfigError):
        Budget(rate)
    b = Budget(None)
    with pytest.raises(pylog.InvalidConfigError):
        b.rate = rate
    assert b.rate is None
