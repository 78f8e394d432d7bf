"""Ingest: records from a source (an MQTT broker, HTTP clients) into topics
of a Log, acknowledged only once appended.

A source receives; the Ingest appends and says when to acknowledge:

- A stream source (MqttSource) hands each message to ``_offer``; they are
  taken in batches (``batch_records``, or what came within ``linger_ms``
  of the first), each appended with one ``append_batch``, and only then
  does the source acknowledge its messages, in the order they came (see
  "the loop of a stream source" below for which thread does it). A crash between the append and the
  acknowledgement makes the publisher send again: a duplicate, never a
  loss.
- A request source (HttpSource) appends each request's records itself
  (``_append``, one ``append_batch`` per request, from the request's
  thread) and answers 2xx only after it returned.
- ``ack="appended"`` (the default) acknowledges once ``append_batch``
  returned: in sync="always" the records are durable then, in the other
  modes they survive a crash of the process. ``ack="durable"`` waits until
  ``topic.durable_offset`` passed them (the interval sync, or a flush when
  half of the source's window waits), so they survive a power cut too.
- Back-pressure: when the topic is full (max_bytes with on_full "reject" or
  "block") or the disk is, nothing is acknowledged. A stream source stops
  acknowledging and retries the batch with backoff (the broker holds the
  rest, up to the window the source allows in flight); a request source
  answers 503 with Retry-After. Nothing is acknowledged that was not
  appended, and nothing appended is counted until append_batch returned.
- A record over the topic's max_record_bytes is rejected: a stream source
  acknowledges it anyway (the broker would redeliver it for ever), counts
  it and, with ``dead_letter_topic``, appends its metadata there; a
  request source refuses the request (413) and appends nothing of it.
"""
import collections
import logging
import threading
import time

from .. import _errors as E
from ..forward._forwarder import topic_list
from ..forward._retry import Backoff
from ._errors import IngestError
from ._mapping import (KeyTemplate, check_int, record_size, too_large)

log = logging.getLogger("pylog.ingest")
log.addHandler(logging.NullHandler())

STATES = ("created", "connecting", "running", "full", "stopped", "failed")
ACK_MODES = ("appended", "durable")
IDLE_WAIT_S = 0.25       # an idle loop looks at stop() this often
QUIET_S = 0.005          # no message for this long: the loop stores a
                         # lingered batch (else the network thread does)
DURABLE_SLICE_S = 0.005  # waits for durable_offset look this often
DURABLE_POLL_S = 0.02    # the loop looks at durable_offset this often
FULL_BACKOFF_MS = (20, 1000)  # retries of a batch that found the topic full
STOP_TIMEOUT_S = 30.0
ERROR_HEADER = "pylog.error"
TOPIC_HEADER = "pylog.topic"


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


def check_options(topic, source, *, key=None, batch_records=100,
                  linger_ms=20, dead_letter_topic=None, ack="appended",
                  name=None):
    """Check the options of Log.ingest (all but the topic options); the
    list of topic names, or InvalidConfigError."""
    from .._log import check_topic_name
    topics = topic_list(topic, "topic")
    if not callable(getattr(source, "_bind", None)):
        raise TypeError(
            f"source must be an MqttSource or an HttpSource, not "
            f"{type(source).__name__}")
    if len(topics) > 1 and not source.MULTI_TOPIC:
        raise E.InvalidConfigError(
            f"a {type(source).__name__} feeds one topic, not {topics!r}")
    check_int(batch_records, "batch_records")
    check_int(linger_ms, "linger_ms", 0)
    if ack not in ACK_MODES:
        raise E.InvalidConfigError(
            f"ack must be 'appended' or 'durable', not {ack!r}")
    if dead_letter_topic is not None:
        check_topic_name(dead_letter_topic)
        if dead_letter_topic in topics:
            raise E.InvalidConfigError(
                f"dead_letter_topic {dead_letter_topic!r} is also a "
                "topic the ingest appends to")
    if name is not None and (not isinstance(name, str) or not name):
        raise E.InvalidConfigError(
            f"name must be a non-empty str, not {name!r}")
    KeyTemplate(key, source.KEY_FIELDS)
    return topics


class _HandOver(Exception):
    """The network thread cannot store this batch now: the loop will."""


class Ingest:
    """Records from a source into topics of a Log; get one with
    ``Log.ingest``. ``start()``, ``stats()``, ``stop()``; also a context
    manager. See the README for the options and what each sync mode
    promises a publisher."""

    def __init__(self, log, topic, source, *, key=None, batch_records=100,
                 linger_ms=20, dead_letter_topic=None, ack="appended",
                 name=None, **topic_options):
        topics = check_options(
            topic, source, key=key, batch_records=batch_records,
            linger_ms=linger_ms, dead_letter_topic=dead_letter_topic,
            ack=ack, name=name)
        self.batch_records, self.linger_ms = batch_records, linger_ms
        self.key = KeyTemplate(key, source.KEY_FIELDS)
        self.name = name or f"{topics[0]}-{source.scheme}"
        self.ack, self.source = ack, source
        self.dead_letter_topic = dead_letter_topic
        self._log = log
        self._sync = log.sync
        log._check_open()
        # Topic options are checked by log.topic; say which ones are known
        # when a name is neither an ingest option nor a topic option.
        from .._log import TOPIC_DEFAULTS
        unknown = sorted(set(topic_options) - set(TOPIC_DEFAULTS))
        if unknown:
            raise E.InvalidConfigError(
                f"unknown option(s) {unknown} of log.ingest: neither an "
                "ingest option (key, batch_records, linger_ms, "
                "dead_letter_topic, ack, name) nor a topic option ("
                + ", ".join(sorted(TOPIC_DEFAULTS)) + ")")
        self._topics = {t: log.topic(t, **topic_options) for t in topics}
        self.topic_names = topics
        self._mu = threading.Lock()        # lifecycle and counters
        self._cv = threading.Condition(threading.Lock())  # the queue
        self._queue = collections.deque()
        self._stopping = threading.Event()  # stop() or a failure
        self._stop_called = False
        self._paused = False               # stop(): take nothing new
        self._store_mu = threading.Lock()  # one batch stored at a time
        self._held = False                 # the loop stores the head now
        self._head_since = 0.0             # when the queue's head came
        self._last_offer = 0.0             # when the last item came
        self._linger_s = linger_ms / 1000.0
        # The network thread stores whole batches itself unless their
        # acknowledgements must wait for durability (the loop's job).
        self._inline = source.STREAM and (ack == "appended"
                                          or log.sync == "always")
        self._state = "created"
        self._full = False
        self._error = None
        self._thread = None
        self._received = self._appended = self._acked = 0
        self._rejected = self._dead = self._dropped = self._deferred = 0
        self._full_count = self._batches = 0
        self._last_error = None
        self._last_append_ms = None
        self._backoff = Backoff(*FULL_BACKOFF_MS)
        source._bind(self)  # IngestError if another ingest uses it
        log._ingests.add(self)

    def __repr__(self):
        return (f"<pylog.ingest.Ingest {self.name!r} {self.source!r} -> "
                f"{self.topic_names!r} {self.state}>")

    # ---- lifecycle ---------------------------------------------------------
    def start(self):
        """Connect (MQTT) or listen (HTTP) and start taking records;
        returns self. A broker that cannot be reached yet is retried in the
        background (state "connecting"); a port that cannot be listened on
        raises IngestError."""
        with self._mu:
            if self._state != "created":
                raise IngestError(
                    f"ingest {self.name!r} was started already (a stopped "
                    "ingest does not restart: make a new one)")
            self._log._check_open()
            self._state = "running"
        try:
            if self.source.STREAM:
                self._thread = threading.Thread(
                    target=self._run, daemon=True,
                    name=f"pylog-ingest-{self.name}")
                self._thread.start()
            self.source._start()
        except BaseException:
            self._stopping.set()
            if self._thread is not None:
                self._thread.join()
            with self._mu:
                self._state = "stopped"
            self._release()
            raise
        return self

    def stop(self, timeout=STOP_TIMEOUT_S):
        """Stop taking records, append and acknowledge what was taken
        (up to timeout seconds), disconnect and release the source. What
        the source received after that is not acknowledged: the broker
        sends it again to the next ingest of the same session. A failed
        ingest is stopped the same way (it stays "failed")."""
        with self._mu:
            if self._state == "created":
                raise IngestError(f"ingest {self.name!r} was not started")
            if self._stop_called:
                raise IngestError(f"ingest {self.name!r} is stopped already")
            self._stop_called = True
            self._stopping.set()
        with self._cv:
            self._paused = True
            self._cv.notify_all()
        try:
            if self._thread is not None:
                self._thread.join(timeout)
        finally:
            self.source._close()
            if self._thread is not None:
                self._thread.join()
            with self._mu:
                if self._state != "failed":
                    self._state = "stopped"
            self._release()

    def close(self):
        """Stop if running and release the source; idempotent."""
        with self._mu:
            running = self._state != "created" and not self._stop_called
        if running:
            self.stop()
        else:
            self._stopping.set()
            self._release()

    def _release(self):
        self._log._ingests.discard(self)

    def __enter__(self):
        if self._state == "created":
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- status ------------------------------------------------------------
    @property
    def state(self):
        s = self._state
        if s != "running":
            return s
        if self._full:
            return "full"
        if not self.source.connected:
            return "connecting"
        return "running"

    @property
    def error(self):
        """The exception that made the ingest fail, or None."""
        return self._error

    def stats(self):
        """A dict: name, state, topics, source, received, appended, acked,
        rejected, dead_lettered, dropped, deferred, full, batches,
        in_flight, last_error, last_append_ms, and the source's own
        figures (see the README)."""
        with self._mu:
            st = {
                "name": self.name,
                "state": self.state,
                "topics": list(self.topic_names),
                "source": self.source.url,
                "received": self._received,
                "appended": self._appended,
                "acked": self._acked,
                "rejected": self._rejected,
                "dead_lettered": self._dead,
                "dropped": self._dropped,
                "deferred": self._deferred,
                "full": self._full_count,
                "batches": self._batches,
                "last_error": self._last_error,
                "last_append_ms": self._last_append_ms,
            }
        st["in_flight"] = max(0, st["received"] - st["acked"]
                              - st["rejected"] - st["dropped"]
                              - st["deferred"])
        st.update(self.source._stats())
        return st

    # ---- for sources -------------------------------------------------------
    def _count(self, **deltas):
        with self._mu:
            for k, v in deltas.items():
                setattr(self, "_" + k, getattr(self, "_" + k) + v)

    def _note_error(self, msg):
        with self._mu:
            self._last_error = msg

    def _offer(self, item, droppable=False, limit=0):
        """A stream source received item (from its network thread). False
        if it is not taken: stopping (it stays unacknowledged), or
        droppable (no acknowledgement will be asked, QoS 0) while limit
        items wait already. Once batch_records items wait, the calling
        thread appends and acknowledges them itself (see _store_inline)."""
        with self._cv:
            if self._paused:
                return False
            q = self._queue
            if droppable and len(q) >= limit:
                self._dropped += 1
                self._received += 1
                return False
            q.append(item)
            self._received += 1
            n = len(q)
            now = self._last_offer = time.monotonic()
            if n == 1:
                self._head_since = now
            inline = self._inline and not self._held and (
                n >= self.batch_records
                or now - self._head_since >= self._linger_s)
            if n == 1 or (n == self.batch_records and not inline):
                self._cv.notify()
        if inline and self._store_mu.acquire(blocking=False):
            try:
                self._store_inline()
            finally:
                self._store_mu.release()
        return True

    def _queued(self):
        """Items offered and not yet taken by the loop."""
        return len(self._queue)

    def _topic(self, name=None):
        return self._topics[name or self.topic_names[0]]

    def _check_sizes(self, topic, values, keys, headers, uniform=False):
        """Indexes of the records over the topic's max_record_bytes, with
        their sizes. uniform: every record has the key and headers of the
        first (an HTTP request): one size of those for all."""
        limit = topic.config["max_record_bytes"]
        if uniform:
            extra = record_size(b"", None if keys is None else keys[0],
                                None if headers is None else headers[0])
            if max(map(len, values)) + extra <= limit:
                return []
            return [(i, len(v) + extra) for i, v in enumerate(values)
                    if len(v) + extra > limit]
        bad = []
        for i, v in enumerate(values):
            size = record_size(v, None if keys is None else keys[i],
                               None if headers is None else headers[i])
            if size > limit:
                bad.append((i, size))
        return bad

    def _append(self, topic, values, keys=None, headers=None,
                timestamps=None):
        """append_batch, counted; the first offset. LogFullError and
        DiskFullError mean full (counted, state "full" until an append
        succeeds); the caller acknowledges nothing then."""
        try:
            first = topic.append_batch(values, keys=keys, headers=headers,
                                       timestamps=timestamps)
        except (E.LogFullError, E.DiskFullError) as exc:
            with self._mu:
                self._full = True
                self._full_count += 1
                self._last_error = _describe(exc)
            raise
        now = time.time_ns() // 1_000_000
        with self._mu:
            self._full = False
            self._appended += len(values)
            self._batches += 1
            self._last_append_ms = now
        return first

    def _wait_durable(self, topic, end):
        """Block until topic.durable_offset >= end (ack="durable" for a
        request source): the interval sync, or a flush."""
        if self._sync == "always":
            return
        if self._sync == "interval":
            deadline = time.monotonic() + 2 * self._log.sync_interval_ms / 1e3
            while topic.durable_offset < end and time.monotonic() < deadline:
                time.sleep(DURABLE_SLICE_S)
        if topic.durable_offset < end:
            topic.flush()

    def _fail(self, exc):
        with self._mu:
            if self._error is None:
                self._error = exc
                self._last_error = _describe(exc)
            self._state = "failed"
        self._stopping.set()
        with self._cv:
            self._paused = True
        log.error("ingest %r failed: %s", self.name, _describe(exc))

    # ---- the loop of a stream source ---------------------------------------
    # Batches are stored (appended, then acknowledged) in the order their
    # items came, one at a time under _store_mu, by two threads:
    # - the source's network thread, inline in _offer, whenever a whole
    #   batch waits (ack="appended"): no thread switch per batch, so the
    #   network thread never waits for the GIL behind the loop's Python;
    # - the loop thread, for the rest: a partial batch after linger_ms,
    #   retries while the topic is full, rejected records, ack="durable".
    # When the network thread cannot store a batch (full topic, a record
    # too large) it puts it back and sets _held: the loop stores the head
    # of the queue from then on, until it succeeds.
    def _wait(self, idle=IDLE_WAIT_S):
        """Wait until the loop has a batch to store: batch_records items
        that the network thread does not store itself, or items of which
        the first waited linger_ms (when the network thread stores batches
        itself: and no message came for QUIET_S, else it stores them with
        the next message; nothing at all at stop)."""
        n, linger = self.batch_records, self._linger_s
        inline = self._inline
        with self._cv:
            q = self._queue
            if not q and not self._paused:
                self._cv.wait(idle)
            while q and not self._paused:
                held = self._held
                if len(q) >= n and (held or not inline):
                    return
                now = time.monotonic()
                left = linger - (now - self._head_since)
                if inline and not held:
                    left = max(left, QUIET_S - (now - self._last_offer))
                if left <= 0:
                    return
                self._cv.wait(left)

    def _take(self):
        """Up to batch_records items from the head of the queue (under
        _store_mu)."""
        n = self.batch_records
        with self._cv:
            q = self._queue
            if len(q) <= n:
                items = list(q)
                q.clear()
            else:
                items = [q.popleft() for _ in range(n)]
        return items

    def _run(self):
        pending = collections.deque()  # (topic, end, items, n): "durable"
        try:
            while True:
                # acknowledgements waiting for durability: look often
                self._wait(DURABLE_POLL_S if pending else IDLE_WAIT_S)
                with self._store_mu:
                    items = self._take()
                    if items and not self._store(items, pending):
                        break  # stopping while full: nothing acknowledged
                    if pending:
                        self._release_durable(pending, force=self._paused)
                if self._paused and not self._queue:
                    break
        except BaseException as exc:  # noqa: BLE001 - the thread's end
            self._fail(exc)
            return
        if pending:  # stopping while full: these were appended
            try:
                self._release_durable(pending, force=True)
            except E.PylogError as exc:
                self._fail(exc)

    def _store_inline(self):
        """Store batches from the network thread (holding _store_mu): whole
        ones, or what waited linger_ms; hand the head to the loop when one
        cannot be stored at once."""
        n = self.batch_records
        while True:
            with self._cv:
                q = self._queue
                now = time.monotonic()
                if self._held or self._paused or not q or (
                        len(q) < n and now - self._head_since
                        < self._linger_s):
                    return
                items = [q.popleft() for _ in range(min(n, len(q)))]
                self._head_since = now  # the new head's age
            try:
                self._store(items, None, inline=True)
            except _HandOver:
                with self._cv:
                    self._queue.extendleft(reversed(items))
                    self._held = True
                    self._cv.notify()
                return
            except BaseException as exc:  # noqa: BLE001 - the ingest's end
                self._fail(exc)
                return

    def _store(self, items, pending, inline=False):
        """Append a batch of a stream source and acknowledge it (or queue
        its acknowledgement until durable). False if stop() came while the
        topic was full: nothing of it was appended or acknowledged. inline
        (the network thread): raise _HandOver instead of waiting or
        rejecting."""
        source, topic = self.source, self._topic()
        values, keys, headers = source._records(items, self.key)
        bad = self._check_sizes(topic, values, keys, headers)
        n = len(values) - len(bad)  # acknowledged as appended
        if bad and inline:
            raise _HandOver
        if bad:
            self._reject(items, bad, values, keys, headers, topic)
            skip = {i for i, _ in bad}
            keep = [i for i in range(len(values)) if i not in skip]
            values = [values[i] for i in keep]
            keys = None if keys is None else [keys[i] for i in keep]
            headers = None if headers is None else [headers[i] for i in keep]
        attempt = 0
        while values:
            try:
                first = self._append(topic, values, keys, headers)
                break
            except (E.LogFullError, E.DiskFullError):
                if inline:
                    raise _HandOver from None
                if self._stopping.wait(self._backoff.delay(attempt)):
                    return False
                attempt += 1
        else:
            first = None
        self._held = False
        if self.ack == "durable" and self._sync != "always" \
                and first is not None:
            pending.append((topic, first + len(values), items, n))
            waiting = sum(len(p[2]) for p in pending)
            if self._sync == "none" or waiting * 2 >= source.window:
                self._release_durable(pending, force=True)
        elif pending:  # keep the acknowledgements in order
            pending.append((topic, 0, items, n))
        else:
            self._acknowledge(items, n)
        return True

    def _release_durable(self, pending, force=False):
        """Acknowledge the batches durable by now (all of them, after a
        flush, if force)."""
        if force and pending:
            pending[-1][0].flush()
        while pending:
            topic, end, items, n = pending[0]
            if end and topic.durable_offset < end:
                return
            pending.popleft()
            self._acknowledge(items, n)

    def _acknowledge(self, items, n):
        """Acknowledge items to the source; n of them were appended (the
        others were rejected)."""
        self.source._ack(items)
        with self._mu:
            self._acked += n

    def _reject(self, items, bad, values, keys, headers, topic):
        """Records over max_record_bytes of a stream source: counted,
        their metadata to the dead-letter topic, acknowledged with the
        batch."""
        limit = topic.config["max_record_bytes"]
        for i, size in bad:
            why = str(too_large(size, limit, topic.name))
            log.warning("ingest %r: %s", self.name, why)
        self._count(rejected=len(bad))
        self._note_error(str(too_large(bad[0][1], limit, topic.name)))
        if self.dead_letter_topic is None:
            return
        dl = self._log.topic(self.dead_letter_topic)
        meta = []
        for i, size in bad:
            h = [(ERROR_HEADER, str(too_large(size, limit, topic.name))),
                 (TOPIC_HEADER, topic.name), ("pylog.value_bytes", str(
                     len(values[i])))]
            h += self.source._metadata(items[i])
            meta.append(h)
        attempt = 0
        while True:
            try:
                dl.append_batch([b""] * len(bad), headers=meta)
                break
            except (E.LogFullError, E.DiskFullError) as exc:
                self._note_error(f"dead-letter topic "
                                 f"{self.dead_letter_topic!r}: {exc}")
                if self._stopping.wait(self._backoff.delay(attempt)):
                    return
                attempt += 1
        self._count(dead=len(bad))
