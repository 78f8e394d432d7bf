"""Forwarder: upload topics of a Log to a sink, at least once and in order.

One background thread runs the loop::

    poll a batch  ->  take its bytes from the budgets  ->  sink.send(batch)
       ^                                                      |
       |      confirmed: commit the positions   <-------------+
       |      RetryableError: back off, send what is left again
       +----  refused for good: dead-letter topic, or state "failed"

- The forwarder's name is a consumer group: its positions live in the
  catalog, and a restarted forwarder (after a crash too) continues at the
  first record the upstream had not confirmed.
- A position is committed only after the sink returned for every record
  before it (confirmed, or appended to the dead-letter topic). So a crash
  re-sends at most the batch in flight: at-least-once.
- One batch at a time, its records in offset order per topic, and a retry
  re-sends the unconfirmed records in their order before anything newer:
  records of a topic reach the upstream in offset order (per key, once
  duplicates of a retry are set aside).
- A batch is sent when it holds batch_records records or batch_bytes bytes
  (keys + values), or linger_ms after its first record was polled.
- A sink with ``begin(records) -> finish()`` (send in two halves) gets
  the next batch polled, without waiting, between the two: the log read
  overlaps the upstream's work. That batch is sent only after the current
  one is committed, so the crash bound above holds, and a retry of the
  current batch still goes first. When that batch is full, the sink's
  optional ``prepare(records)`` (HttpSink: encode the body) runs in the
  same gap.
- One thread polls, sends and commits, in that order. (A second thread
  polling and encoding the next batch while the first waited for its
  upstream made every sink slower in bench/forward.py: both threads run
  Python code, and each short GIL release of the client library let the
  other one in for a while, stretching every round trip.)
- The thread waits in C (poll), in Condition/Event waits (budgets,
  backoff) and in the clients' socket calls: never holding the GIL, never
  taking a lock an append needs.
"""
import collections
import logging
import threading
import time

from .. import _errors as E
from .._groups import check_group_name
from .._records import weigh_kv as _weigh_kv
from ._budget import Budget, check_rate
from ._errors import (ForwarderError, ForwarderFailedError, RejectedError,
                      RetryableError)
from ._retry import Backoff, check_backoff
from ._sink import batch_bytes, check_sink

log = logging.getLogger("pylog.forward")
# A library logs for applications that configure logging, never on its own.
log.addHandler(logging.NullHandler())

STATES = ("created", "running", "backoff", "stopped", "failed")
IDLE_POLL_S = 0.25      # an idle forwarder looks at stop() this often
FLUSH_SLICE_S = 0.1     # flush() looks at the positions at least this often
LINGER_SLICE_S = 0.05   # lingering polls check flush() and stop() this often
STOP_TIMEOUT_S = 30.0   # stop() waits this long for the send in flight
ERROR_HEADER = "pylog.error"
TOPIC_HEADER = "pylog.topic"
OFFSET_HEADER = "pylog.offset"


def _count(value, what, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise E.InvalidConfigError(f"{what} must be an int >= {low}, not "
                                   f"{value!r}")
    return value


def topic_list(topics, what):
    """A topic name or an iterable of distinct names, as a list; else
    InvalidConfigError (InvalidTopicName for a bad name)."""
    from .._log import check_topic_name
    if isinstance(topics, str):
        topics = [topics]
    try:
        topics = list(topics)
    except TypeError:
        raise E.InvalidConfigError(
            f"{what} must be a topic name or a list of names") from None
    if not topics or len(set(topics)) != len(topics):
        raise E.InvalidConfigError(
            f"{what} must be a topic name or a list of distinct names")
    for t in topics:
        check_topic_name(t)
    return topics


def check_options(name, topics, sink, *, batch_records=500,
                  batch_bytes=1 << 20, linger_ms=200, priority=0,
                  max_bytes_per_s=None, retry_backoff_ms=(100, 60_000),
                  max_retries=None, dead_letter_topic=None,
                  start="earliest"):
    """Check the options of Log.forwarder (InvalidConfigError, TypeError
    for a sink without send); the list of topic names."""
    from .._log import check_topic_name
    check_group_name(name)
    topics = topic_list(topics, "topics")
    check_sink(sink)
    _count(batch_records, "batch_records")
    _count(batch_bytes, "batch_bytes")
    _count(linger_ms, "linger_ms", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise E.InvalidConfigError(
            f"priority must be an int, not {priority!r}")
    check_rate(max_bytes_per_s)
    check_backoff(retry_backoff_ms)
    if max_retries is not None:
        _count(max_retries, "max_retries", 0)
    if dead_letter_topic is not None:
        check_topic_name(dead_letter_topic)
        if dead_letter_topic in topics:
            raise E.InvalidConfigError(
                f"dead_letter_topic {dead_letter_topic!r} is also a "
                "topic to forward: its records would come back to it")
    if start not in ("earliest", "latest"):
        raise E.InvalidConfigError(
            f"start must be 'earliest' or 'latest', not {start!r}")
    return topics


class _Failure(Exception):
    """Raised inside the loop: stop in state "failed" with .error."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _key(r):
    return (r.topic, r.offset)


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


class Forwarder:
    """Uploads topics of a Log to a sink; get one with ``Log.forwarder``.

    ``start()`` runs it in a background thread (or use it as a context
    manager); ``stats()``, ``flush(timeout)``, ``stop()``. See the README
    for the options and the delivery guarantees.
    """

    def __init__(self, log, name, topics, sink, *, batch_records=500,
                 batch_bytes=1 << 20, linger_ms=200, priority=0,
                 max_bytes_per_s=None, retry_backoff_ms=(100, 60_000),
                 max_retries=None, dead_letter_topic=None,
                 start="earliest"):
        topics = check_options(
            name, topics, sink, batch_records=batch_records,
            batch_bytes=batch_bytes, linger_ms=linger_ms, priority=priority,
            max_bytes_per_s=max_bytes_per_s,
            retry_backoff_ms=retry_backoff_ms, max_retries=max_retries,
            dead_letter_topic=dead_letter_topic, start=start)
        self.batch_records, self.batch_bytes = batch_records, batch_bytes
        self.linger_ms, self.priority = linger_ms, priority
        self.max_bytes_per_s = max_bytes_per_s
        self.retry_backoff_ms = tuple(retry_backoff_ms)
        self.max_retries = max_retries
        known = set(log.topics())  # ClosedError for a closed log
        missing = [t for t in topics if t not in known]
        if missing:
            raise E.TopicNotFoundError(
                f"cannot forward topic {missing[0]!r}: no such topic in log "
                f"{log.path}")
        self.name = name
        self.sink = sink
        self.dead_letter_topic = dead_letter_topic
        self._log = log
        self._registry = log.forwarders
        self._backoff = Backoff(*self.retry_backoff_ms)
        self._budget = (Budget(self.max_bytes_per_s)
                        if self.max_bytes_per_s is not None else None)
        # _mu: a plain Lock (its C-level __enter__ cannot be left half-done
        # by a KeyboardInterrupt) for the lifecycle; the thread updates its
        # counters alone and stats() reads them without a lock. flush()
        # waits on _progress, which the thread only ever notifies with a
        # non-blocking acquire: nothing a user's thread holds can stall it.
        self._mu = threading.Lock()
        self._progress = threading.Condition(threading.Lock())
        self._stopping = threading.Event()
        self._state = "created"
        self._stop_called = False
        self._released = False
        self._flushes = 0
        self._thread = None
        self._error = None
        self._sent_records = self._sent_bytes = self._batches = 0
        self._retries = self._dead = 0
        self._in_flight = 0
        self._last_error = None
        self._last_success_ms = None
        # begin(records) -> finish(): a sink's send in two halves (optional)
        begin = getattr(sink, "begin", None)
        self._begin = begin if callable(begin) else None
        prepare = getattr(sink, "prepare", None)
        self._prepare = prepare if callable(prepare) and self._begin else None
        self._ahead_error = None
        # Raises GroupInUseError (a consumer or forwarder of this name is
        # open) before anything is written.
        self._registry._add(self, lambda: log.consumer(name, topics,
                                                       start=start))
        c = self._consumer
        self._topics = [c._by_name[t] for t in topics]
        self._committed = {t: c.committed(t) for t in topics}

    def __repr__(self):
        return (f"<pylog.forward.Forwarder {self.name!r} "
                f"{[t.name for t in self._topics]!r} {self._state}>")

    # ---- lifecycle ---------------------------------------------------------
    def start(self):
        """Start the background thread; returns self."""
        with self._mu:
            if self._released and self._state == "created":
                raise ForwarderError(f"forwarder {self.name!r} was closed")
            if self._state != "created":
                raise ForwarderError(
                    f"forwarder {self.name!r} was started already (a "
                    "stopped forwarder does not restart: make a new one "
                    "with log.forwarder)")
            self._log._check_open()
            self._state = "running"
            self._thread = threading.Thread(
                target=self._run, daemon=True,
                name=f"pylog-forwarder-{self.name}")
            self._thread.start()
        return self

    def stop(self, timeout=STOP_TIMEOUT_S):
        """Stop: let the send in flight finish (up to timeout seconds, then
        interrupt it), commit what the upstream confirmed, join the thread
        and release the group. Records not confirmed are sent by the next
        forwarder of this name."""
        if timeout is not None and not timeout >= 0:
            raise ValueError("timeout must be >= 0 seconds or None")
        with self._mu:
            if self._state == "created":
                raise ForwarderError(
                    f"forwarder {self.name!r} was not started (close() "
                    "releases it)")
            if self._stop_called:
                raise ForwarderError(
                    f"forwarder {self.name!r} is stopped already")
            self._stop_called = True
            self._stopping.set()
        self._wake_budgets()
        self._thread.join(timeout)
        if self._thread.is_alive():
            interrupt = getattr(self.sink, "interrupt", None)
            if callable(interrupt):
                interrupt()
            self._thread.join()
        self._release()
        with self._mu:
            if self._state != "failed":
                self._state = "stopped"
        self._notify()

    def close(self):
        """Stop if running and release the group; idempotent."""
        with self._mu:
            stop = self._state != "created" and not self._stop_called
        if stop:
            self.stop()
        else:
            self._release()

    def _release(self):
        with self._mu:
            if self._released:
                return
            self._released = True
        try:
            self._consumer.close()
        finally:
            self._registry._remove(self)
            close = getattr(self.sink, "close", None)
            if callable(close) and self._state != "created":
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    log.warning("forwarder %r: closing its sink: %s",
                                self.name, _describe(exc))

    def __enter__(self):
        if self._state == "created":
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def _wake_budgets(self):
        if self._budget is not None:
            self._budget.wake()
        self._registry.budget.wake()

    # ---- status ------------------------------------------------------------
    @property
    def state(self):
        return self._state

    @property
    def error(self):
        """The exception that made the forwarder fail, or None."""
        return self._error

    def lag(self):
        """{topic: records appended but not yet confirmed upstream}"""
        out = {}
        for t in self._topics:
            try:
                end, start = t.end_offset, t.start_offset
            except E.ClosedError:
                continue
            pos = self._committed.get(t.name) or 0
            out[t.name] = max(0, end - max(pos, start))
        return out

    def stats(self):
        """A dict: state, sent_records, sent_bytes, batches, retries,
        dead_lettered, gaps, in_flight, last_error, last_success_ms, lag."""
        return {
            "name": self.name,
            "state": self._state,
            "sent_records": self._sent_records,
            "sent_bytes": self._sent_bytes,
            "batches": self._batches,
            "retries": self._retries,
            "dead_lettered": self._dead,
            "gaps": len(self._consumer.gaps),
            "in_flight": self._in_flight,
            "last_error": self._last_error,
            "last_success_ms": self._last_success_ms,
            "priority": self.priority,
            "lag": self.lag(),
        }

    def flush(self, timeout=10.0):
        """Wait until every record appended to the topics before this call
        is confirmed upstream (or dead-lettered). True if so, False if
        timeout seconds passed first (None: no limit). Raises
        ForwarderFailedError if the forwarder fails, ForwarderError if it
        is not running."""
        if timeout is not None and not timeout >= 0:
            raise ValueError("timeout must be >= 0 seconds or None")
        targets = {t.name: t.end_offset for t in self._topics}
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._state == "created":
            raise ForwarderError(f"forwarder {self.name!r} was not started")
        with self._progress:
            self._flushes += 1
            try:
                while True:
                    lag = self._lag_to(targets)
                    if not lag:
                        return True
                    if self._state == "failed":
                        err = self._error
                        raise ForwarderFailedError(
                            str(err) if isinstance(err, ForwarderFailedError)
                            else f"forwarder {self.name!r} failed: "
                                 f"{_describe(err)}", err)
                    if self._state == "stopped":
                        raise ForwarderError(
                            f"forwarder {self.name!r} is {self._state}: "
                            f"{sum(lag.values())} record(s) not forwarded")
                    left = None if deadline is None else \
                        deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._progress.wait(FLUSH_SLICE_S if left is None
                                        else min(left, FLUSH_SLICE_S))
            finally:
                self._flushes -= 1

    def _notify(self):
        """Wake flush() waiters, never waiting for their lock."""
        if self._progress.acquire(blocking=False):
            try:
                self._progress.notify_all()
            finally:
                self._progress.release()

    def _lag_to(self, targets):
        out = {}
        for t in self._topics:
            pos = max(self._committed.get(t.name) or 0, t.start_offset)
            if pos < targets[t.name]:
                out[t.name] = targets[t.name] - pos
        return out

    # ---- the loop ----------------------------------------------------------
    def _fail(self, err):
        with self._mu:
            if self._error is None:
                self._error = err
                self._last_error = _describe(err)
                self._state = "failed"
        self._stopping.set()
        self._notify()
        log.error("forwarder %r failed: %s", self.name, _describe(err))

    def _run(self):
        """Poll a batch, send it, commit it; until stop() or a failure."""
        c = self._consumer
        ahead = None
        try:
            while not self._stopping.is_set():
                batch = self._next_batch(ahead)
                ahead = None
                if batch:
                    positions = {t.name: c.position(t.name)
                                 for t in self._topics}
                    ahead = self._deliver(batch, positions)
        except _Failure as f:
            self._fail(f.error)
        except BaseException as exc:  # noqa: BLE001 - the thread's end
            self._fail(exc)

    def _next_batch(self, ahead=None):
        """Poll a batch: wait for a first record, then linger for more.
        ahead: (records, monotonic time) polled while the previous batch
        was on its way, the start of this one."""
        c = self._consumer
        if ahead is not None:
            recs, polled = ahead
        else:
            recs = c.poll(max_records=self.batch_records,
                          max_bytes=self.batch_bytes, timeout=IDLE_POLL_S)
            polled = time.monotonic()
        if recs and self.linger_ms and len(recs) < self.batch_records:
            n = len(recs)
            room = self.batch_bytes - _weigh_kv(recs)
            deadline = polled + self.linger_ms / 1000.0
            while n < self.batch_records and room > 0:
                left = deadline - time.monotonic()
                if left <= 0 or self._flushes or self._stopping.is_set():
                    break
                more = c.poll(max_records=self.batch_records - n,
                              max_bytes=room,
                              timeout=min(left, LINGER_SLICE_S),
                              min_records=self.batch_records - n)
                if more:
                    recs.extend(more)
                    n += len(more)
                    room -= _weigh_kv(more)
        if self._stopping.is_set():
            return None  # not sent, not committed: the next run sends it
        return recs

    def _poll_ahead(self):
        """The start of the next batch, polled without waiting while the
        sink's upstream works on the current one: (records, time) or None.
        An error is kept for after the current batch is committed."""
        try:
            recs = self._consumer.poll(max_records=self.batch_records,
                                       max_bytes=self.batch_bytes,
                                       timeout=0)
        except Exception as exc:  # noqa: BLE001 - raised after the commit
            self._ahead_error = exc
            return None
        return (recs, time.monotonic()) if recs else None

    def _prepare_ahead(self, records):
        """sink.prepare on a full batch read ahead (no linger will grow it).
        A hint only: its errors are left for begin to meet again."""
        try:
            self._prepare(records)
        except Exception as exc:  # noqa: BLE001 - begin meets it again
            log.debug("forwarder %r: sink.prepare: %s", self.name,
                      _describe(exc))

    def _deliver(self, batch, positions):
        """Send a batch until every record is confirmed or refused (or the
        forwarder stops), then commit: positions, lowered to the first
        record of each topic that is neither. Returns what _poll_ahead
        read (None if it did not run)."""
        parts = collections.deque([batch])
        pending = None  # made at the first trouble: {key: unconfirmed record}
        attempt = 0
        begin = self._begin  # for the first send of the whole batch
        ahead = None
        self._in_flight = len(batch)
        try:
            while parts:
                part = parts[0]
                if attempt and self._stopping.is_set():
                    break  # retrying at stop: the next run sends the rest
                size = batch_bytes(part)
                if not self._acquire(size):
                    break
                try:
                    if begin is not None:
                        # The sink's upstream works on the batch while
                        # this thread polls the next one.
                        finish, begin = begin(part), None
                        ahead = self._poll_ahead()
                        if ahead is not None and self._prepare is not None \
                                and len(ahead[0]) >= self.batch_records:
                            self._prepare_ahead(ahead[0])
                        finish()
                    else:
                        self.sink.send(part)
                except RetryableError as exc:
                    pending = self._pending(pending, batch)
                    left = self._subset(part, exc.records)
                    self._confirm(part, left, pending)
                    if not left:
                        parts.popleft()
                        attempt = 0
                        continue
                    parts[0] = left
                    attempt += 1
                    self._retry(exc, attempt)
                    continue
                except RejectedError as exc:
                    pending = self._pending(pending, batch)
                    refused = self._subset(part, exc.records)
                    self._confirm(part, refused, pending)
                    if exc.isolate and len(refused) > 1:
                        parts[0] = refused  # find the ones it is about
                        self._split(parts)
                        continue
                    self._reject(refused, exc, pending)
                except Exception as exc:  # noqa: BLE001 - refused for good
                    pending = self._pending(pending, batch)
                    if len(part) > 1:  # find the records it is about
                        self._split(parts)
                        continue
                    self._reject(part, exc, pending)
                else:
                    self._confirm(part, (), pending, size)
                parts.popleft()
                attempt = 0
        except _Failure:
            self._commit(positions, self._left(pending, parts), quiet=True)
            raise
        finally:
            self._in_flight = 0
        self._commit(positions, self._left(pending, parts))
        if self._ahead_error is not None:
            exc, self._ahead_error = self._ahead_error, None
            raise exc
        return ahead

    @staticmethod
    def _pending(pending, batch):
        if pending is None:
            pending = {_key(r): r for r in batch}
        return pending

    @staticmethod
    def _left(pending, parts):
        """The records neither confirmed nor refused."""
        if pending is None:  # no trouble: only what was never sent
            return [r for p in parts for r in p]
        return list(pending.values())

    @staticmethod
    def _split(parts):
        part = parts.popleft()
        half = len(part) // 2
        parts.appendleft(part[half:])
        parts.appendleft(part[:half])

    @staticmethod
    def _subset(part, records):
        """The records of part named by records (all if None), in order."""
        if records is None:
            return part
        keys = {_key(r) for r in records}
        return [r for r in part if _key(r) in keys]

    def _acquire(self, nbytes):
        stopping = self._stopping.is_set
        if self._budget is not None and not self._budget.acquire(
                nbytes, self.priority, stopping):
            return False
        return self._registry.budget.acquire(nbytes, self.priority, stopping)

    def _confirm(self, part, unconfirmed, pending, size=None):
        """Every record of part not in unconfirmed is safe upstream."""
        if unconfirmed:
            keys = {_key(r) for r in unconfirmed}
            done = [r for r in part if _key(r) not in keys]
            size = None
        else:
            done = part
        if not done:
            return
        if pending is not None:
            for r in done:
                pending.pop(_key(r), None)
        n = batch_bytes(done) if size is None else size
        self._sent_records += len(done)
        self._sent_bytes += n
        self._batches += 1
        self._in_flight -= len(done)
        self._last_success_ms = time.time_ns() // 1_000_000

    def _retry(self, exc, attempt):
        self._retries += 1
        self._last_error = _describe(exc)
        if self.max_retries is not None and attempt > self.max_retries:
            raise _Failure(ForwarderFailedError(
                f"forwarder {self.name!r} gave up after {self.max_retries} "
                f"retries: {_describe(exc)}", exc))
        delay = self._backoff.delay(attempt - 1, exc.retry_after)
        with self._mu:
            if self._stopping.is_set():
                return
            self._state = "backoff"
        self._stopping.wait(delay)
        with self._mu:
            if self._state == "backoff":
                self._state = "running"

    def _reject(self, records, exc, pending):
        """Records the upstream refused for good: to the dead-letter topic
        (with headers naming the error, the topic and the offset), or fail."""
        if not records:
            return
        self._last_error = _describe(exc)
        first = records[0]
        if self.dead_letter_topic is None:
            raise _Failure(ForwarderFailedError(
                f"forwarder {self.name!r}: the upstream refused "
                f"{len(records)} record(s), the first topic "
                f"{first.topic!r} offset {first.offset}: {_describe(exc)} "
                "(no dead_letter_topic: stopped; nothing was committed past "
                "them)", exc))
        reasons = getattr(exc, "reasons", None)
        if reasons is None or len(reasons) != len(records):
            reasons = [_describe(exc)] * len(records)
        headers = [tuple(r.headers or ()) + (
            (ERROR_HEADER, str(why)), (TOPIC_HEADER, r.topic),
            (OFFSET_HEADER, str(r.offset))) for r, why in zip(records, reasons)]
        try:
            self._log.topic(self.dead_letter_topic).append_batch(
                [r.value for r in records], keys=[r.key for r in records],
                timestamps=[r.timestamp for r in records], headers=headers)
        except E.PylogError as dl_exc:
            raise _Failure(ForwarderFailedError(
                f"forwarder {self.name!r}: cannot append {len(records)} "
                f"refused record(s) to dead-letter topic "
                f"{self.dead_letter_topic!r}: {dl_exc}", dl_exc)) from dl_exc
        for r in records:
            pending.pop(_key(r), None)
        self._dead += len(records)
        self._in_flight -= len(records)
        log.warning("forwarder %r: %d record(s) refused upstream went to "
                    "topic %r (first: %r offset %d): %s", self.name,
                    len(records), self.dead_letter_topic, first.topic,
                    first.offset, _describe(exc))

    def _commit(self, positions, unconfirmed, quiet=False):
        """Commit positions (those right after the batch), each lowered to
        the first unconfirmed record of its topic."""
        c = self._consumer
        try:
            pos = dict(positions)
            for r in unconfirmed:
                pos[r.topic] = min(pos[r.topic], r.offset)
            c.commit(pos)
        except E.PylogError as exc:
            if quiet:
                log.error("forwarder %r: commit failed: %s", self.name,
                          _describe(exc))
                return
            raise _Failure(exc) from exc
        self._committed.update(pos)
        self._notify()
