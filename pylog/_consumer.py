"""Consumer: a named group's durable cursors over one or more topics.

Shapes follow confluent-kafka: poll / commit / committed / position / seek,
commit stores the next offset to read, timeouts are in seconds.
"""
import threading
import time

from . import _errors as E
from ._errors import Gap
from ._groups import check_group_name
from ._records import weigh_kv as _weigh_kv
from ._topic import READ_CHUNK, _offset


class Consumer:
    """Reads topics for a group; get one with ``Log.consumer``.

    Positions start at the group's committed positions, or for a group new
    to a topic at ``start`` ("earliest": start_offset, "latest": end_offset).
    If retention removed records the group had not read, the next poll
    reports a :class:`Gap` (appended to ``gaps``, passed to ``on_gap``) and
    continues at start_offset; with ``on_gap="raise"`` it raises
    :class:`DataLossError` instead and stays put until you seek.
    """

    def __init__(self, log, group, topics, *, start="earliest",
                 auto_commit=False, on_gap=None):
        check_group_name(group)
        if isinstance(topics, str):
            topics = [topics]
        topics = list(topics)
        if not topics or len(set(topics)) != len(topics):
            raise E.InvalidConfigError(
                "topics must be a topic name or a list of distinct names")
        if start not in ("earliest", "latest"):
            raise E.InvalidConfigError(
                f"start must be 'earliest' or 'latest', not {start!r}")
        if not (on_gap is None or on_gap == "raise" or callable(on_gap)):
            raise E.InvalidConfigError(
                "on_gap must be None, 'raise' or a callable taking a Gap")
        for other in log._consumers:
            if other.group == group:
                raise E.GroupInUseError(
                    f"consumer group {group!r} of log {log.path} is in use "
                    "by another open consumer; close it first")
        log._group_locks.acquire(group, log.path)  # other processes
        self._log = log
        self.group = group
        self._closed = True  # until the end of __init__
        self.auto_commit = bool(auto_commit)
        self.on_gap = on_gap
        self.gaps = []
        try:
            self._init(log, group, topics, start)
        except BaseException:
            log._group_locks.release(group)
            raise

    def _init(self, log, group, topics, start):
        self._topics = [log.topic(name) for name in topics]
        self._by_name = {t.name: t for t in self._topics}
        self._pos = {}
        for t in self._topics:
            initial = t.start_offset if start == "earliest" else t.end_offset
            pos, lost = log._register(group, t.name, initial)
            self._pos[t.name] = pos
            if lost:
                # The catalog lost this group's position: it restarts per
                # `start`, and says so like a gap.
                self._report(Gap(t.name, t.start_offset, pos,
                                 "position lost"))
        # A new group lowers the topic's floor (retain_until_consumed):
        # tell the core now, not at the next commit, or a roll meanwhile
        # deletes what this group has not read.
        log._on_commit(self._pos)
        self._to_commit = None
        self._rr = 0
        self._closed = False
        self._mu = threading.Lock()
        self._notifier = log._new_notifier(self._topics)
        log._consumers.add(self)

    def __repr__(self):
        return (f"<pylog.Consumer group={self.group!r} "
                f"topics={list(self._by_name)!r}>")

    # ---- lifecycle ---------------------------------------------------------
    def close(self):
        """Stop: wakes a poll blocked in another thread. Does not commit."""
        if self._closed:
            return
        self._closed = True
        self._notifier.interrupt()
        self._log._consumers.discard(self)
        self._log._group_locks.release(self.group)
        self._log._drop_notifier(self._notifier, self._topics)

    def __del__(self):
        # A consumer dropped without close() frees its group and watches.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self):
        if self._closed:
            raise E.ClosedError(f"consumer of group {self.group!r} is closed")
        self._log._check_open()

    def _topic(self, topic):
        try:
            return self._by_name[topic]
        except KeyError:
            raise E.InvalidConfigError(
                f"consumer of group {self.group!r} is not subscribed to "
                f"topic {topic!r}") from None

    # ---- reading -----------------------------------------------------------
    def poll(self, max_records=500, max_bytes=None, timeout=0.0,
             min_records=1):
        """Up to max_records records (in offset order per topic), waiting up
        to timeout seconds (None: without limit) until at least min_records
        are there or max_bytes (values + keys) is reached; at the deadline
        it returns what there is, possibly nothing. min_records=1 returns as
        soon as one record is there; a larger one batches, like Kafka's
        fetch.min.bytes with fetch.max.wait.ms. With auto_commit, first
        commits what the previous poll returned."""
        max_records = _offset(max_records, "max_records")
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        min_records = _offset(min_records, "min_records")
        if not 1 <= min_records <= max_records:
            raise ValueError(
                f"min_records must be in [1, max_records={max_records}], "
                f"not {min_records}")
        if max_bytes is not None:
            max_bytes = _offset(max_bytes, "max_bytes")
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if timeout is not None and not timeout >= 0:
            raise ValueError("timeout must be >= 0 seconds or None")
        self._check_open()
        if self.auto_commit and self._to_commit is not None:
            self.commit(self._to_commit)
            self._to_commit = None
        deadline = None if timeout is None else time.monotonic() + timeout
        out, bytes_left = [], max_bytes
        while True:
            seen = self._notifier.seq()
            # Closed by another thread while this one waited: return what
            # was read (nothing was committed), without reading on (the log
            # and its topics may be closing too).
            if self._closed:
                return self._polled(out)
            try:
                with self._mu:
                    recs = self._collect(max_records - len(out), bytes_left)
            except E.ClosedError:
                if self._closed:
                    return self._polled(out)
                # Log.topic() with new options closes and reopens the topic
                # under the log's lock (its appends wake this poll): wait
                # for that, then read again. A topic closed for good (log
                # closed, topic deleted) raises.
                with self._log._mu:
                    if self._log.closed or any(t.closed for t in self._topics):
                        raise
                continue
            except E.DataLossError:
                if out:  # return what was read; the next poll raises
                    return self._polled(out)
                raise
            if recs:
                out.extend(recs)
            if len(out) >= min_records:  # (min_records <= max_records)
                return self._polled(out)
            if recs and bytes_left is not None:  # only to read on
                bytes_left -= _weigh_kv(recs)
                if bytes_left <= 0:
                    return self._polled(out)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return self._polled(out)
            self._notifier.wait(seen, remaining)

    def _polled(self, recs):
        """What poll returns; with auto_commit, remember what to commit."""
        if recs and self.auto_commit:
            self._to_commit = dict(self._pos)
        return recs

    def _collect(self, max_records, max_bytes):
        out = []
        budget, bytes_left = max_records, max_bytes
        n = len(self._topics)
        for k in range(n):
            t = self._topics[(self._rr + k) % n]
            if t._ro:  # what another process appended since
                t.refresh()
            pos = self._pos[t.name]
            if out and self.on_gap == "raise" and pos < t.start_offset:
                break  # return what was read; the next poll raises
            pos = self._check_gap(t, pos)
            while budget > 0 and (bytes_left is None or bytes_left > 0):
                try:
                    recs = t._fetch(pos, min(budget, READ_CHUNK),
                                    bytes_left or 0)
                except E.OffsetOutOfRangeError:
                    if pos >= t.start_offset:
                        raise
                    if out and self.on_gap == "raise":
                        budget = 0  # keep what was read; the next poll raises
                        break
                    pos = self._check_gap(t, pos)  # retention moved on
                    continue
                except E.DataLossError as exc:  # a lost range
                    if out and self.on_gap == "raise":
                        budget = 0  # keep what was read; the next poll raises
                        break
                    self._report(Gap(t.name, pos, exc.gap.to_offset, "lost"))
                    pos = exc.gap.to_offset
                    self._pos[t.name] = pos
                    continue
                if not recs:
                    break
                out.extend(recs)
                budget -= len(recs)
                pos = recs[-1].offset + 1
                if bytes_left is not None:
                    bytes_left -= _weigh_kv(recs)
            self._pos[t.name] = pos
            if budget <= 0 or (bytes_left is not None and bytes_left <= 0):
                break
        self._rr = (self._rr + 1) % n  # the next poll starts elsewhere
        return out

    def _check_gap(self, t, pos):
        start = t.start_offset
        if pos >= start:
            return pos
        lost = any(a < start and b > pos for a, b in t.lost_ranges())
        self._report(Gap(t.name, pos, start, "lost" if lost else "retention"))
        self._pos[t.name] = start
        return start

    def _report(self, gap):
        """Tell the user of a gap (on_gap), or raise DataLossError."""
        if self.on_gap == "raise" and gap.reason != "position lost":
            why = ("removed by retention before they were read"
                   if gap.reason == "retention" else
                   "lost to a power cut or a file removed by hand")
            raise E.DataLossError(
                f"group {self.group!r} lost records [{gap.from_offset}, "
                f"{gap.to_offset}) of topic {gap.topic!r}: {why}; seek() to "
                "go on", gap)
        self.gaps.append(gap)
        if callable(self.on_gap):
            self.on_gap(gap)

    def __iter__(self):
        """Records as they come, until the consumer is closed."""
        while not self._closed:
            for rec in self.poll(timeout=1.0):
                yield rec

    # ---- positions ---------------------------------------------------------
    def commit(self, offsets=None):
        """Store positions atomically: the current ones for every topic, or
        {topic: next offset to read} as given."""
        self._check_open()
        if offsets is None:
            offsets = dict(self._pos)
        else:
            offsets = {self._topic(k).name: _offset(v) for k, v in
                       dict(offsets).items()}
            for k, v in offsets.items():
                if v < 0 or v > self._by_name[k].end_offset:
                    raise E.OffsetOutOfRangeError(
                        f"cannot commit offset {v} for topic {k!r}: outside "
                        f"[0, {self._by_name[k].end_offset}]")
        # Under the log's lock, so that Log.topic() reopening a topic with
        # new options is not mistaken for a deleted topic; a deleted topic
        # raises ClosedError instead of storing a position delete_topic
        # removed (a topic re-created under that name would inherit it).
        with self._log._mu:
            self._log._check_open()
            for name in offsets:
                self._by_name[name]._check_open()
            self._log._commit(self.group, offsets)

    def committed(self, topic):
        """The group's stored position for topic."""
        return self._log._position(self.group, self._topic(topic).name)

    def position(self, topic):
        """The next offset this consumer will read from topic."""
        return self._pos[self._topic(topic).name]

    def seek(self, topic, offset):
        t = self._topic(topic)
        offset = _offset(offset)
        if offset < 0 or offset > t.end_offset:
            raise E.OffsetOutOfRangeError(
                f"cannot seek topic {t.name!r} to {offset}: outside "
                f"[0, {t.end_offset}]")
        with self._mu:
            self._pos[t.name] = offset

    def _each(self, topics):
        return self._topics if topics is None else [
            self._topic(x) for x in ([topics] if isinstance(topics, str)
                                     else topics)]

    def seek_to_beginning(self, topics=None):
        for t in self._each(topics):
            self.seek(t.name, t.start_offset)

    def seek_to_end(self, topics=None):
        for t in self._each(topics):
            self.seek(t.name, t.end_offset)

    def seek_to_time(self, ms, topics=None):
        """Position each topic at its first record with timestamp >= ms (the
        end if there is none)."""
        for t in self._each(topics):
            off = t.offset_for_time(ms)
            self.seek(t.name, t.end_offset if off is None else off)

    def lag(self):
        """{topic: records between this consumer's position and the end}"""
        return {t.name: max(0, t.end_offset - max(self._pos[t.name],
                                                  t.start_offset))
                for t in self._topics}

    def topics(self):
        return list(self._by_name)
