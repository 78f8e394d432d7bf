"""Retry timing (pylog/forward/_retry.py): exponential backoff with full
jitter, Retry-After values."""
import email.utils
import random

import pytest

import pylog
from pylog.forward._retry import (MAX_RETRY_AFTER, Backoff, check_backoff,
                                  parse_retry_after)


def test_backoff_doubles_up_to_its_cap_with_full_jitter():
    b = Backoff(100, 60_000, rng=random.Random(1))
    assert [b.ceiling(n) for n in range(12)] == [
        0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60.0, 60.0]
    assert b.ceiling(10**6) == 60.0  # an uplink down for days
    for n in (0, 3, 20):
        ds = [b.delay(n) for _ in range(2000)]
        assert 0 <= min(ds) and max(ds) <= b.ceiling(n)
        # full jitter: spread over the whole range, not bunched at the top
        assert min(ds) < 0.1 * b.ceiling(n) and max(ds) > 0.9 * b.ceiling(n)


def test_retry_after_is_a_floor_for_the_delay():
    b = Backoff(100, 200)
    assert all(b.delay(0, retry_after=7) >= 7 for _ in range(100))
    assert b.delay(0, retry_after=10**9) == MAX_RETRY_AFTER


def test_parse_retry_after():
    now = 1_700_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after(future, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("99999999999") == MAX_RETRY_AFTER
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize("value", [(0, 10), (10, 5), (-1, 5), 100, "100,200",
                                   (1, 2, 3), (True, 5), (1, None)])
def test_bad_backoffs_are_refused(value):
    with pytest.raises(pylog.InvalidConfigError):
        check_backoff(value)
    assert check_backoff((100, 100)) == (100, 100)
