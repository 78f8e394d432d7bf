"""Log: one directory holding topics, a catalog and a LOCK file.

    DIR/LOCK                 flock()ed while a Log is open
    DIR/catalog/             LMDB: format version, topic configs
    DIR/topics/NAME/         segments (BASE.log) and indexes (BASE.idx)
    DIR/trash/               topics being deleted (emptied at open)
"""
import errno
import fcntl
import os
import re
import shutil
import threading
import uuid
import weakref

from . import _binding as B
from . import _errors as E
from ._catalog import Catalog
from ._consumer import Consumer
from ._groups import Groups, check_group_name
from ._topic import Topic

_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

TOPIC_DEFAULTS = {
    "segment_bytes": 16 * 1024 * 1024,
    "max_record_bytes": 1024 * 1024,
    "index_interval_bytes": 4096,
    "retention_ms": 0,              # 0: no time limit
    "retention_bytes": 0,           # 0: no size limit
    "retain_until_consumed": False,
    "max_bytes": 0,                 # 0: no hard cap
    "on_full": "reject",
    "full_timeout_ms": 10_000,
}
_LIMITS = {
    "segment_bytes": (1024, 2**32 - 1),
    "max_record_bytes": (1, 2**32 - 1 - 1024),
    "index_interval_bytes": (64, 2**31),
    "retention_ms": (0, 2**63 - 1),
    "retention_bytes": (0, 2**63 - 1),
    "max_bytes": (0, 2**63 - 1),
    "full_timeout_ms": (0, 2**63 - 1),
}
ON_FULL = ("drop_oldest", "reject", "block")


def _check_option(k, v):
    if k == "retain_until_consumed":
        if not isinstance(v, bool):
            raise E.InvalidConfigError(
                f"topic option retain_until_consumed={v!r}: must be a bool")
        return
    if k == "on_full":
        if v not in ON_FULL:
            raise E.InvalidConfigError(
                f"topic option on_full={v!r}: must be one of "
                f"{', '.join(ON_FULL)}")
        return
    if k not in _LIMITS:
        raise E.InvalidConfigError(
            f"unknown topic option {k!r} (known: "
            f"{', '.join(sorted(TOPIC_DEFAULTS))})")
    lo, hi = _LIMITS[k]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise E.InvalidConfigError(
            f"topic option {k}={v!r}: must be an int in [{lo}, {hi}]")


def check_topic_name(name):
    if not isinstance(name, str):
        raise E.InvalidTopicName(
            f"topic name must be a str, not {type(name).__name__}")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise E.InvalidTopicName(
            f"invalid topic name {name!r}: use 1-249 characters of "
            "[A-Za-z0-9._-], not '.' or '..'")
    return name


def check_config(config, base=None):
    out = dict(TOPIC_DEFAULTS)
    out.update(base or {})
    for k, v in config.items():
        _check_option(k, v)
        out[k] = v
    return out


class Log:
    """An open pylog directory. Use :func:`pylog.open`."""

    def __init__(self, path, sync="none", sync_interval_ms=1000,
                 **topic_defaults):
        if not isinstance(sync, str) or sync not in B.SYNC_MODES:
            raise E.InvalidConfigError(
                f"sync must be 'none', 'interval' or 'always', not {sync!r}")
        if (isinstance(sync_interval_ms, bool)
                or not isinstance(sync_interval_ms, int)
                or sync_interval_ms < 1):
            raise E.InvalidConfigError(
                f"sync_interval_ms must be an int >= 1, not {sync_interval_ms!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.sync = sync
        self.sync_interval_ms = sync_interval_ms
        self._defaults = check_config(topic_defaults)
        self._mu = threading.RLock()
        self._topics = {}
        self._closed = True
        self._forwarders = None  # pylog.forward.Forwarders, made on first use
        self._ingests = set()    # pylog.ingest.Ingest objects not closed
        os.makedirs(self.path, exist_ok=True)
        self._lockfd = os.open(os.path.join(self.path, "LOCK"),
                               os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise E.LogLockedError(
                errno.EWOULDBLOCK,
                f"log {self.path} is already open (in this or another "
                "process): its LOCK is held") from None
        # Open consumers; one dropped without close() releases its group
        # when it is collected (Consumer.__del__).
        self._consumers = weakref.WeakSet()
        try:
            self._catalog = Catalog(os.path.join(self.path, "catalog"),
                                    durable=sync != "none")
            self._groups = Groups(self._catalog.env)
        except BaseException:
            os.close(self._lockfd)
            raise
        try:
            self._topics_dir = os.path.join(self.path, "topics")
            self._trash = os.path.join(self.path, "trash")
            os.makedirs(self._topics_dir, exist_ok=True)
            self._sweep()
        except BaseException:
            self._catalog.close()
            os.close(self._lockfd)
            raise
        self._closed = False

    def _sweep(self):
        """Remove what interrupted deletes and creates left behind."""
        if os.path.isdir(self._trash):
            shutil.rmtree(self._trash, ignore_errors=True)
        known = self._catalog.topics()
        for name in os.listdir(self._topics_dir):
            if name not in known:
                self._discard(os.path.join(self._topics_dir, name))

    def _discard(self, path):
        os.makedirs(self._trash, exist_ok=True)
        dest = os.path.join(self._trash, uuid.uuid4().hex)
        os.rename(path, dest)
        shutil.rmtree(dest, ignore_errors=True)

    def __repr__(self):
        state = "closed" if self._closed else f"sync={self.sync!r}"
        return f"<pylog.Log {self.path!r} {state}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self):
        if self._closed:
            raise E.ClosedError(f"log {self.path} is closed")

    def topic(self, name, **config):
        """The topic called name, created on first use. Options given for an
        existing topic update its stored config (segment_bytes applies to
        segments created from then on)."""
        check_topic_name(name)
        with self._mu:
            self._check_open()
            t = self._topics.get(name)
            if t is not None and not config:
                return t
            stored = self._catalog.get_topic(name)
            cfg = check_config(config, stored or self._defaults)
            if t is not None and cfg != t.config:
                t._close()  # same object, reopened with the new config
                t._reopen(self._open_handle(name, cfg), cfg)
            elif t is None:
                t = Topic(self, name, self._open_handle(name, cfg), cfg)
                self._topics[name] = t
            if stored != cfg:  # only once the topic opened with it
                self._catalog.put_topic(name, cfg)
            self._refresh_floor(name)
            return t

    def _open_handle(self, name, cfg):
        d = os.path.join(self._topics_dir, name)
        if not os.path.isdir(d):
            os.makedirs(d, exist_ok=True)
            if self.sync != "none":  # the new directory's name, durably
                fd = os.open(self._topics_dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return B.open_topic(d, cfg, self.sync, self.sync_interval_ms)

    # ---- consumers -----------------------------------------------------------
    def consumer(self, group, topics, *, start="earliest", auto_commit=False,
                 on_gap=None):
        """A Consumer reading topics (a name or a list) for group, whose
        positions are kept in the catalog. See pylog.Consumer."""
        with self._mu:
            self._check_open()
            return Consumer(self, group, topics, start=start,
                            auto_commit=auto_commit, on_gap=on_gap)

    # ---- forwarders (pylog/forward) ----------------------------------------
    def forwarder(self, name, topics, sink, **options):
        """A Forwarder uploading topics to sink, at least once and in order;
        name is its consumer group. Not started: call start(), or use it as
        a context manager. See pylog.forward.Forwarder for the options."""
        from .forward import Forwarder
        return Forwarder(self, name, topics, sink, **options)

    # ---- ingest (pylog/ingest) ----------------------------------------------
    def ingest(self, topic, source, **options):
        """An Ingest appending what source (an MqttSource or HttpSource)
        receives to topic (created if missing, with the topic options
        among options), acknowledged only once appended. Not started: call
        start(), or use it as a context manager. See pylog.ingest.Ingest
        for the options."""
        from .ingest import Ingest
        return Ingest(self, topic, source, **options)

    @property
    def forwarders(self):
        """The log's forwarders by name, and the bandwidth cap they share
        (``log.forwarders.max_bytes_per_s``)."""
        with self._mu:
            self._check_open()
            if self._forwarders is None:
                from .forward._forwarders import Forwarders
                self._forwarders = Forwarders(self)
            return self._forwarders

    def groups(self):
        """{group: {topic: committed position}} of every consumer group."""
        with self._mu:
            self._check_open()
            return self._groups.all()

    def delete_group(self, group):
        """Forget a group's positions (it no longer holds back retention)."""
        check_group_name(group)
        with self._mu:
            self._check_open()
            topics = self._groups.all().get(group)
            if topics is None:
                raise E.GroupNotFoundError(
                    f"no consumer group {group!r} in log {self.path}")
            self._groups.delete_group(group)
            for name in topics:
                self._refresh_floor(name)

    def _refresh_floor(self, name):
        """Tell the topic the lowest position of its groups (retention)."""
        t = self._topics.get(name)
        if t is not None and not t.closed:
            floor = self._groups.floor(name)
            t._set_floor(0 if floor is None else floor)

    def _on_commit(self, positions):
        with self._mu:
            for name in positions:
                self._refresh_floor(name)

    def _new_notifier(self, topics):
        n = B.Notifier()
        for t in topics:
            t._watch(n)
        return n

    def _drop_notifier(self, n, topics):
        for t in topics:
            t._unwatch(n)

    def topics(self):
        """Names of the topics, sorted."""
        with self._mu:
            self._check_open()
            return sorted(self._catalog.topics())

    def delete_topic(self, name):
        """Delete a topic and its data. Views of its records stay valid."""
        check_topic_name(name)
        with self._mu:
            self._check_open()
            if self._catalog.get_topic(name) is None:
                raise E.TopicNotFoundError(
                    f"no topic {name!r} in log {self.path}")
            t = self._topics.pop(name, None)
            if t is not None:
                t._close()
            with self._catalog.env.begin(write=True) as txn:
                self._catalog.delete_topic(name, txn)
                self._groups.delete_topic(name, txn)
            d = os.path.join(self._topics_dir, name)
            if os.path.isdir(d):
                self._discard(d)

    def flush(self):
        """fdatasync every topic: everything appended so far is durable."""
        with self._mu:
            self._check_open()
            for t in self._topics.values():
                t.flush()

    def close(self):
        """Close every topic (flushing in sync modes other than 'none') and
        release the directory. Idempotent. Running ingests are stopped
        first (each appends and acknowledges what it took), then running
        forwarders (each commits what its upstream confirmed)."""
        for ingest in list(self._ingests):  # outside _mu: they append
            ingest.close()
        if self._forwarders is not None and not self._closed:
            self._forwarders._close_all()  # outside _mu: they commit
        with self._mu:
            if self._closed:
                return
            self._closed = True
            for c in list(self._consumers):
                c.close()
            errs = [t._close() for t in self._topics.values()]
            self._topics.clear()
            self._catalog.close()
            os.close(self._lockfd)
        for rc in errs:
            if rc < 0:
                raise B.error(rc, f"closing log {self.path}")

    @property
    def closed(self):
        return self._closed


def open(path, sync="none", sync_interval_ms=1000, **topic_defaults):
    """Open (creating if needed) the log in directory path.

    sync: "none" (page cache: survives a crash of the process), "interval"
    (fdatasync at most every sync_interval_ms), "always" (an append returns
    once durable; concurrent appenders share fsyncs). topic_defaults are the
    options of topics created by this Log (see README: topic options)."""
    return Log(path, sync=sync, sync_interval_ms=sync_interval_ms,
               **topic_defaults)
