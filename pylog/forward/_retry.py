"""Retry timing: exponential backoff with full jitter, and Retry-After.

Full jitter (the n-th retry waits a uniform time in [0, min(cap, base * 2**n)])
spreads the retries of many gateways that lost the same upstream at the same
moment, instead of bringing them back in waves; the cap bounds the wait once
an uplink has been down for long (it can be down for days).
"""
import datetime
import email.utils
import random
import time

from .._errors import InvalidConfigError

MAX_RETRY_AFTER = 24 * 3600.0  # seconds; a larger Retry-After is clamped


def check_backoff(value):
    """(base_ms, cap_ms) as given to a Forwarder, validated."""
    try:
        base, cap = value
    except (TypeError, ValueError):
        raise InvalidConfigError(
            f"retry_backoff_ms must be a pair (base_ms, cap_ms), not "
            f"{value!r}") from None
    for v in (base, cap):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise InvalidConfigError(
                f"retry_backoff_ms must be two numbers >= 0, not {value!r}")
    if not 0 < base <= cap:
        raise InvalidConfigError(
            f"retry_backoff_ms=({base}, {cap}): need 0 < base <= cap")
    return base, cap


class Backoff:
    """Delays for consecutive retries of one send."""

    def __init__(self, base_ms, cap_ms, rng=None):
        self.base = base_ms / 1000.0
        self.cap = cap_ms / 1000.0
        self.rng = rng or random.Random()

    def ceiling(self, attempt):
        """The longest wait before retry number attempt (0 = the first)."""
        return min(self.cap, self.base * 2.0 ** min(attempt, 64))

    def delay(self, attempt, retry_after=None):
        """Seconds to wait before retry number attempt; at least retry_after
        when the upstream asked for it."""
        d = self.rng.uniform(0.0, self.ceiling(attempt))
        if retry_after is not None:
            d = max(d, min(float(retry_after), MAX_RETRY_AFTER))
        return d


def parse_retry_after(value, now=None):
    """Seconds from an HTTP Retry-After value (delay-seconds or an
    HTTP-date), or None if it is missing or malformed."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": UTC without a zone of its own
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)
