"""Log: one directory holding topics, consumer positions and a LOCK file.

    DIR/PYLOG                marks the directory as a pylog log (format 2)
    DIR/LOCK                 flock()ed while a Log is open
    DIR/topics/NAME/         a topic: segments, indexes, checkpoint, meta
    DIR/catalog/             LMDB: consumer group positions
    DIR/pending              positions committed but not yet durable
    DIR/trash/               topics being deleted (emptied at open)

The topic directories are the truth about what exists (pylog/_registry.py);
the catalog holds how far each group read (pylog/_catalog.py, _groups.py).
Metadata -- creating or deleting a topic or a group, changing a config --
is durable when the call returns, in every sync mode. A commit's position
becomes durable only once the records it covers are (pylog/_pending.py).
"""
import errno
import fcntl
import os
import resource
import threading
import weakref

from . import _binding as B
from . import _errors as E
from . import _files
from ._catalog import Catalog
from ._consumer import Consumer
from ._grouplocks import GroupLocks
from ._groups import Groups, check_group_name
from ._pending import Pending, key_hash
from ._registry import Registry, check_name
from ._syncer import Syncer
from ._topic import Pins, Topic

lib = B.lib

FORMAT_VERSION = 2
MARKER = "PYLOG"
MARKER_MAGIC = b"PYLOGLG1"
AUTO_SEGMENT_MAX = 16 * 1024 * 1024

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
def _default_max_open_files():
    """256, or a quarter of the process's descriptor limit if lower: the
    application needs descriptors too."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(16, min(256, soft // 4))


LOG_DEFAULTS = {
    "checkpoint_interval_ms": 30_000,
    "max_open_files": None,         # 256, less under a low RLIMIT_NOFILE
    "max_map_bytes": 192 << 20,
}
FOLLOW_PERIOD_US = 1000  # read-only logs look for other processes' appends
FLOOR_PERIOD_S = 1.0     # positions other processes commit reach retention


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


check_topic_name = check_name


def check_config(config, base=None, new=False):
    """The complete config: base (or the defaults) updated with config.
    When a max_bytes cap is set -- for a new topic, or given now -- without
    segment_bytes, the default segment size follows the cap (an eighth of
    it, 1 KiB to 16 MiB), so that small budgets work with default
    options."""
    out = dict(TOPIC_DEFAULTS)
    out.update(base or {})
    for k, v in config.items():
        _check_option(k, v)
        out[k] = v
    if (out["max_bytes"] > 0 and "segment_bytes" not in config
            and (new or "max_bytes" in config)
            and out["segment_bytes"] == TOPIC_DEFAULTS["segment_bytes"]
            and out["max_bytes"] < 8 * out["segment_bytes"]):
        seg = out["max_bytes"] // 8 // 1024 * 1024
        out["segment_bytes"] = max(1024, min(AUTO_SEGMENT_MAX, seg))
    return out


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise E.InvalidConfigError(f"{name} must be an int >= {lo}, not {v!r}")
    return v


def _prepare(path):
    """Make sure path is, or can become, a pylog log; never touch a path
    that holds something else. Returns True if the log is new."""
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        with _files.wrap_os(f"cannot create log directory {path}"):
            os.makedirs(path, exist_ok=True)
        return True
    except NotADirectoryError:
        raise E.NotALogError(
            f"{path} is not a directory, so it cannot be a pylog log") from None
    except OSError as exc:
        raise _files.io_error(exc, f"cannot list {path}") from exc
    tdir = os.path.join(path, "topics")
    if os.path.lexists(tdir) and not os.path.isdir(tdir):
        raise E.PylogIOError(
            errno.ENOTDIR, f"{tdir} is not a directory: the log's topics "
            "cannot be stored there; move it away")
    if MARKER in entries or "catalog" in entries or "topics" in entries:
        return False
    others = sorted(set(entries) - {"LOCK"})
    if others:
        shown = ", ".join(repr(x) for x in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise E.NotALogError(
            f"{path} is not a pylog log: it holds {shown}{more}, which are "
            "not pylog's; nothing was changed (open an empty or new "
            "directory)")
    return True


class Log:
    """An open pylog directory. Use :func:`pylog.open`."""

    def __init__(self, path, sync="none", sync_interval_ms=1000, *,
                 checkpoint_interval_ms=LOG_DEFAULTS["checkpoint_interval_ms"],
                 max_open_files=LOG_DEFAULTS["max_open_files"],
                 max_map_bytes=LOG_DEFAULTS["max_map_bytes"],
                 readonly=False, **topic_defaults):
        if not isinstance(sync, str) or sync not in B.SYNC_MODES:
            raise E.InvalidConfigError(
                f"sync must be 'none', 'interval' or 'always', not {sync!r}")
        self.sync_interval_ms = _check_int("sync_interval_ms",
                                           sync_interval_ms, 1)
        self.checkpoint_interval_ms = _check_int(
            "checkpoint_interval_ms", checkpoint_interval_ms, 1)
        if max_open_files is None:
            max_open_files = _default_max_open_files()
        self.max_open_files = _check_int("max_open_files", max_open_files, 8)
        self.max_map_bytes = _check_int("max_map_bytes", max_map_bytes,
                                        1 << 20)
        self.path = os.path.abspath(os.fspath(path))
        self.sync = sync
        self._defaults = check_config(topic_defaults)
        self._mu = threading.RLock()
        self._topics = {}
        self._closed = True
        self._syncer = None
        self.recovery = []  # what this open found wrong (sentences)
        # Open consumers; one dropped without close() releases its group
        # when it is collected (Consumer.__del__).
        self._consumers = weakref.WeakSet()
        self._forwarders = None  # pylog.forward.Forwarders, made on first use
        self._ingests = set()    # pylog.ingest.Ingest objects not closed
        self._pins = Pins()
        self._group_locks = GroupLocks(self.path)
        self.readonly = bool(readonly)
        self._follower = None
        self._lockfd = None
        if self.readonly:
            if topic_defaults:
                raise E.ReadOnlyError(
                    errno.EROFS, "topic options cannot be given to a log "
                    f"opened read-only: {', '.join(sorted(topic_defaults))}")
            self._open_readonly()
            self._follower = B.Follower(FOLLOW_PERIOD_US)
            self._closed = False
            return
        new = _prepare(self.path)
        self._lockfd = self._lock()
        try:
            self._open_files(new)
        except BaseException:
            if getattr(self, "_catalog", None) is not None:
                self._catalog.close()
            os.close(self._lockfd)
            raise
        self._closed = False
        period = {"interval": sync_interval_ms,
                  "none": checkpoint_interval_ms}.get(sync)
        self._syncer = Syncer(self, None if period is None else period / 1000,
                              FLOOR_PERIOD_S)

    def _open_readonly(self):
        """Open without the LOCK, writing nothing: another process may be
        the writer, or none; the directory may be read-only."""
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            raise E.NotALogError(f"no pylog log at {self.path}") from None
        except NotADirectoryError:
            raise E.NotALogError(
                f"{self.path} is not a directory, so it cannot be a pylog "
                "log") from None
        except OSError as exc:
            raise _files.io_error(exc, f"cannot list {self.path}") from exc
        if MARKER not in entries and "topics" not in entries:
            raise E.NotALogError(f"{self.path} holds no pylog log")
        marker, _ = _files.read_record(os.path.join(self.path, MARKER),
                                       MARKER_MAGIC)
        if marker and marker.get("format", 0) > FORMAT_VERSION:
            raise E.FormatVersionError(
                f"log {self.path} has format version {marker['format']}; "
                f"this pylog reads version {FORMAT_VERSION}")
        self._registry = Registry(self.path)
        self._cache = B.Cache(self.max_open_files, self.max_map_bytes)
        self._pending = None
        self._slots = {}
        self._catalog = self._groups = None
        self._legacy = {}
        cat = os.path.join(self.path, "catalog")
        if os.path.lexists(cat):
            try:
                self._catalog = Catalog(cat, readonly=True)
                self._groups = Groups(self._catalog)
                if self._catalog.version == 1:
                    self._legacy = self._catalog.legacy_topics()
            except E.PylogError as exc:
                self.recovery.append(f"consumer positions unavailable: {exc}")
        else:
            self.recovery.append(
                f"the catalog {cat} is missing: consumer positions are "
                "unavailable (a writer's open rebuilds it)")

    def _read_only(self, what):
        return E.ReadOnlyError(errno.EROFS, f"cannot {what}: log {self.path} "
                               "is open read-only")

    def _lock(self):
        lock = os.path.join(self.path, "LOCK")
        with _files.wrap_os(f"cannot open {lock}"):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise E.LogLockedError(
                errno.EWOULDBLOCK,
                f"log {self.path} is already open (in this or another "
                "process): its LOCK is held") from None
        except OSError as exc:
            os.close(fd)
            raise _files.io_error(exc, f"cannot lock {lock}") from exc
        return fd

    def _open_files(self, new):
        self._registry = Registry(self.path)
        tdir = self._registry.topics_dir
        marker, state = _files.read_record(os.path.join(self.path, MARKER),
                                           MARKER_MAGIC)
        fmt = marker.get("format") if isinstance(marker, dict) else None
        if state == "ok" and (not isinstance(fmt, int) or
                              fmt > FORMAT_VERSION):
            # refused before anything is changed
            raise E.FormatVersionError(
                f"log {self.path} has format version {fmt!r}; this pylog "
                f"reads version {FORMAT_VERSION}")
        with _files.wrap_os(f"cannot create {tdir}"):
            if not os.path.isdir(tdir):
                os.makedirs(tdir)
                _files.fsync_dir(self.path)
        self._catalog = Catalog(os.path.join(self.path, "catalog"))
        self.recovery.extend(self._catalog.report)
        self._groups = Groups(self._catalog)
        if self._catalog.version == 1:
            self._migrate()
        damaged = self._registry.sweep()
        for name in damaged:
            self.recovery.append(
                f"topic {name!r}: its meta file is missing or damaged; it "
                "opens with the default config (set its options again)")
        if state != "ok" or fmt != FORMAT_VERSION:
            _files.write_record(os.path.join(self.path, MARKER),
                                MARKER_MAGIC, {"format": FORMAT_VERSION})
        self._cache = B.Cache(self.max_open_files, self.max_map_bytes)
        self._pending = Pending(os.path.join(self.path, "pending"))
        self._slots = {}
        for kh, pos, token in self._pending.load():
            self._slots[kh] = (pos, token)
        # Positions a crash left pending are settled now: the topics they
        # belong to open (and recover) at once.
        if self._slots:
            for name in self._registry.names():
                if any(key_hash(g, name) in self._slots
                       for g in self._groups_of(name)):
                    self._closed = False
                    try:
                        self.topic(name)
                    finally:
                        self._closed = True
        self._check_positions()

    def _migrate(self):
        """Format 1 kept topic configs in the catalog: move them into the
        topic directories, give positions checksums."""
        old = self._catalog.legacy_topics()
        positions = self._groups.all()
        for name, cfg in old.items():
            if not self._registry.exists(name):
                continue
            if self._registry.read(name)[2] == "ok":
                continue
            groups = [g for g, tops in positions.items() if name in tops]
            self._registry.write(name, check_config({}, cfg), groups)
        self._groups.commit_many({(g, t): p for g, tops in positions.items()
                                  for t, p in tops.items()})
        self._catalog.set_version(FORMAT_VERSION)

    def _check_positions(self):
        """The catalog against the topic directories: a group a topic lists
        without a position in the catalog lost it (a damaged or removed
        catalog): it is recorded and reported, and its next consumer says
        so with a gap."""
        have = self._groups.all()
        # lost before this open (a rebuild now records what it dropped)
        known = set(self._groups.lost()) - self._catalog.dropped
        names = set(self._registry.names())
        lost = []
        for name in sorted(names):
            for g in self._registry.read(name)[1]:
                if name not in have.get(g, {}) and (g, name) not in known:
                    lost.append((g, name))
        if lost:
            self._groups.mark_lost(lost)
        for g, name in sorted(lost):  # found now (verify lists the rest)
            if name in names:
                self.recovery.append(
                    f"group {g!r} lost its position in topic {name!r} with "
                    "the catalog; its next consumer restarts per its start "
                    "policy and reports a gap")

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

    # ---- topics ----------------------------------------------------------------
    def topic(self, name, **config):
        """The topic called name, created on first use. Options given for an
        existing topic update its stored config (segment_bytes applies to
        segments created from then on)."""
        check_name(name)
        with self._mu:
            self._check_open()
            t = self._topics.get(name)
            if t is not None and not config:
                return t
            if self.readonly:
                return self._topic_readonly(name, config)
            exists = self._registry.exists(name)
            stored, groups, state = (self._registry.read(name) if exists
                                     else (None, [], "missing"))
            cfg = check_config(config, stored or self._defaults,
                               new=stored is None)
            if not exists:
                self._registry.create(name, cfg)
            elif stored != cfg:
                self._registry.write(name, cfg, groups)
            if t is not None:
                t._close()  # same object, reopened with the new config
                t._reopen(self._open_handle(name, cfg), cfg)
            else:
                t = Topic(self, name, self._open_handle(name, cfg), cfg)
                self._topics[name] = t
                self._settle_pending(t)
            self._refresh_floor(name)
            return t

    def _topic_readonly(self, name, config):
        if config:
            raise self._read_only(f"change the config of topic {name!r}")
        if not self._registry.exists(name):
            raise self._read_only(f"create topic {name!r} (there is none)")
        stored = self._registry.read(name)[0] or self._legacy.get(name)
        cfg = check_config({}, stored or self._defaults)
        try:
            h = B.open_topic(self._registry.dir(name), cfg, self.sync,
                             self.sync_interval_ms, self._cache,
                             readonly=True)
        except E.PylogError as exc:
            if "has no segment yet" in str(exc):
                raise E.TopicNotFoundError(
                    f"topic {name!r} of log {self.path} is being created: "
                    "it has no segment yet") from None
            raise
        t = Topic(self, name, h, cfg)
        self._topics[name] = t
        return t

    def _groups_of(self, name):
        """Groups registered on topic name (its meta file and the catalog)."""
        meta = self._registry.read(name)[1] if self._registry.exists(name) \
            else []
        return set(meta) | set(self._groups.of_topic(name))

    def _open_handle(self, name, cfg):
        # Invariant 9: a position proves its offsets existed.
        floor = [p for p in self._groups.of_topic(name).values()]
        floor += [self._slots[key_hash(g, name)][0]
                  for g in self._groups_of(name)
                  if key_hash(g, name) in self._slots]
        floor += [p for (g, t), (p, _) in self._pending.items.items()
                  if t == name]
        return B.open_topic(self._registry.dir(name), cfg, self.sync,
                            self.sync_interval_ms, self._cache,
                            max(floor, default=0))

    def _settle_pending(self, t):
        """Positions a crash left in DIR/pending for topic t: trusted if
        the batch before them is still there (pylog/_pending.py)."""
        accepted = {}
        for g in self._groups_of(t.name):
            slot = self._slots.pop(key_hash(g, t.name), None)
            if slot is None:
                continue
            pos, token = slot
            if pos == self._groups.get(g, t.name):
                continue  # it reached the catalog before the crash
            # At or below the start, retention removed what it covers
            # (the group had read it): nothing is left to check. A token
            # of 0: the batch could not be read when committed.
            if pos <= t.start_offset or t._token(pos) == token or (
                    token == 0 and pos <= t.end_offset):
                accepted[(g, t.name)] = pos
        if accepted:
            # The topic was just recovered and synced: durable now.
            self._groups.commit_many(accepted)

    def topics(self):
        """Names of the topics, sorted."""
        with self._mu:
            self._check_open()
            return self._registry.names()

    def delete_topic(self, name):
        """Delete a topic and its data. Views of its records stay valid."""
        check_name(name)
        with self._mu:
            self._check_open()
            if self.readonly:
                raise self._read_only(f"delete topic {name!r}")
            if not self._registry.exists(name):
                raise E.TopicNotFoundError(
                    f"no topic {name!r} in log {self.path}")
            t = self._topics.pop(name, None)
            if t is not None:
                t._close()
            # Its groups and their positions go first: a crash between two
            # steps leaves a topic with no groups (not groups with lost
            # positions), or positions nobody reads (not positions a new
            # topic of this name would inherit: positions of a topic whose
            # directory is gone are evidence that its offsets existed).
            groups = self._groups_of(name)
            cfg, _, state = self._registry.read(name)
            if state == "ok":
                self._registry.write(name, cfg, [])
            self._pending.forget(lambda g, tn: tn == name,
                                 [(g, name) for g in groups])
            for g in groups:
                self._slots.pop(key_hash(g, name), None)
            self._groups.delete_topic(name)
            self._registry.delete(name)

    def flush(self):
        """fdatasync every topic, then make committed positions durable:
        everything appended and committed so far survives power loss."""
        with self._mu:
            self._check_open()
            if self.readonly:
                raise self._read_only("flush")
        self._sync_round(force=True)

    def _sync_round(self, force=False):
        """Sync topics with new records, then move the positions they now
        cover into the catalog (the syncer calls this periodically)."""
        with self._mu:
            if self._closed:
                return
            topics = list(self._topics.values())
        for t in topics:
            if t.closed:
                continue
            try:
                if force or lib.pl_topic_sync_needed(t._h):
                    t.flush()
            except E.ClosedError:
                continue
        with self._mu:
            if self._closed:
                return
            items = self._pending.take(self._durable_of)
            if items:
                self._groups.commit_many(items)
                self._pending.done(items)

    def _refresh_floors(self):
        """Positions other processes committed (readers with their own
        groups) reach retention and blocked appends."""
        with self._mu:
            if self._closed:
                return
            for name, t in list(self._topics.items()):
                if t.config["retain_until_consumed"] or \
                        t.config["on_full"] == "block":
                    self._refresh_floor(name)

    def _durable_of(self, name):
        t = self._topics.get(name)
        if t is None or t.closed:
            return None
        return t.durable_offset

    # ---- consumers -------------------------------------------------------------
    def consumer(self, group, topics, *, start="earliest", auto_commit=False,
                 on_gap=None, create=False):
        """A Consumer reading topics (a name or a list) for group, whose
        positions are kept in the catalog. A topic that does not exist
        raises TopicNotFoundError unless create=True. See pylog.Consumer."""
        with self._mu:
            self._check_open()
            names = [topics] if isinstance(topics, str) else list(topics)
            if create and self.readonly:
                raise self._read_only("create topics")
            if not create:
                for name in names:
                    if isinstance(name, str) and check_name(name) and \
                            not self._registry.exists(name):
                        raise E.TopicNotFoundError(
                            f"no topic {name!r} in log {self.path} (pass "
                            "create=True to create it)")
            return Consumer(self, group, topics, start=start,
                            auto_commit=auto_commit, on_gap=on_gap)

    def _register(self, group, name, initial):
        """The group's position in topic name, registering it at initial
        if it has none; (position, lost): lost if the catalog had lost it."""
        if self.readonly:
            if self._groups is None:
                return initial, False
            if not self._catalog.writable:
                pos = self._groups.get(group, name)
                return (initial if pos is None else pos), False
            return self._groups.register(group, name, initial)
        pend = self._pending.get(group, name)
        pos, lost = self._groups.register(group, name, initial)
        cfg, groups, state = self._registry.read(name)
        if group not in groups and state == "ok":
            self._registry.write(name, cfg, groups + [group])
        if pend is not None and pend > pos:
            pos = pend
        return pos, lost

    def _position(self, group, name):
        if self._pending is None:
            return None if self._groups is None else self._groups.get(group,
                                                                       name)
        pend = self._pending.get(group, name)
        return pend if pend is not None else self._groups.get(group, name)

    def _commit(self, group, positions):
        """Store a group's positions: durable now in sync "always" (after
        the records they cover), with the next sync round otherwise."""
        if self.readonly:
            # A reader makes the records durable itself, then the position.
            if self._groups is None or not self._catalog.writable:
                raise self._read_only(f"commit positions of group {group!r} "
                                      "(its catalog cannot be written)")
            for name, pos in positions.items():
                self._topics[name]._sync_to(pos)
            self._groups.commit(group, positions)
            return
        if self.sync == "always":
            for name, pos in positions.items():
                self._topics[name]._sync_to(pos)
            self._groups.commit(group, positions)
        else:
            for name, pos in positions.items():
                token = self._topics[name]._token(pos) or 0
                self._pending.put(group, name, pos, token)
        for name in positions:
            self._refresh_floor(name)

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
            if self._groups is None:
                raise E.CorruptionError(
                    f"the consumer positions of log {self.path} cannot be "
                    f"read: {'; '.join(self.recovery)}")
            out = self._groups.all()
            for (g, t), (pos, _) in (self._pending.items.items()
                                     if self._pending else ()):
                out.setdefault(g, {})[t] = pos
            return out

    def delete_group(self, group):
        """Forget a group's positions (it no longer holds back retention)."""
        check_group_name(group)
        with self._mu:
            self._check_open()
            if self.readonly:
                raise self._read_only(f"delete group {group!r}")
            topics = self.groups().get(group)
            if topics is None:
                raise E.GroupNotFoundError(
                    f"no consumer group {group!r} in log {self.path}")
            # the topics first: a crash in between leaves a position
            # without its group (forgotten), not a group without its
            # position (which would read as lost)
            for name in self._registry.names():
                cfg, groups, state = self._registry.read(name)
                if group in groups and state == "ok":
                    self._registry.write(name, cfg,
                                         [g for g in groups if g != group])
            self._groups.delete_group(group)
            self._pending.forget(lambda g, t: g == group,
                                 [(group, t) for t in self._registry.names()])
            for name in self._registry.names():
                self._slots.pop(key_hash(group, name), None)
            for name in topics:
                self._refresh_floor(name)

    def _floor(self, name):
        if self.readonly:
            return None
        pos = dict(self._groups.of_topic(name))
        for (g, t), (p, _) in self._pending.items.items():
            if t == name:
                pos[g] = p
        return min(pos.values(), default=None)

    def _refresh_floor(self, name):
        """Tell the topic the lowest position of its groups (retention)."""
        t = self._topics.get(name)
        if t is not None and not t.closed and not self.readonly:
            floor = self._floor(name)
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

    # ---- the log ----------------------------------------------------------------
    def stats(self):
        """The log's file cache: descriptors and maps held now, and since
        open: files opened, maps made, evictions."""
        with self._mu:
            self._check_open()
            return self._cache.stats()

    def close(self):
        """Close every topic (each syncs what is not yet durable, in every
        sync mode), make committed positions durable, and release the
        directory. Idempotent. Running ingests are stopped first (each
        appends and acknowledges what it took), then running forwarders
        (each commits what its upstream confirmed)."""
        for ingest in list(self._ingests):  # outside _mu: they append
            ingest.close()
        if self._forwarders is not None and not self._closed:
            self._forwarders._close_all()  # outside _mu: they commit
        with self._mu:
            if self._closed:
                return
            syncer = self._syncer
        if syncer is not None:
            syncer.stop()
        with self._mu:
            if self._closed:
                return
            self._closed = True
            for c in list(self._consumers):
                c.close()
            errs = []
            durable = set()
            for name, t in self._topics.items():
                rc = t._close()
                errs.append(rc)
                if rc == 0:
                    durable.add(name)
            self._topics.clear()
            if self._follower is not None:
                self._follower.close()
            first = None
            try:
                if self._pending is not None:
                    items = {k: p for k, (p, _) in self._pending.items.items()
                             if k[1] in durable}
                    if items:
                        self._groups.commit_many(items)
                        self._pending.done(items)
                    self._pending.close()
            except E.PylogError as exc:
                first = exc
            if self._catalog is not None:
                self._catalog.close()
            self._pins.clear()
            self._group_locks.release_all()
            if self._lockfd is not None:
                os.close(self._lockfd)
        for rc in errs:
            if rc < 0:
                raise B.error(rc, f"closing log {self.path}")
        if first is not None:
            raise first

    @property
    def closed(self):
        return self._closed


def open(path, sync="none", sync_interval_ms=1000, **options):
    """Open (creating if needed) the log in directory path.

    sync: "none" (page cache: survives a crash of the process; a
    checkpoint every checkpoint_interval_ms bounds what a power cut can
    lose), "interval" (fdatasync at most every sync_interval_ms), "always"
    (an append returns once durable; concurrent appenders share fsyncs).
    Log options: checkpoint_interval_ms (30000), max_open_files (file
    descriptors the log keeps open: 256, or a quarter of RLIMIT_NOFILE if
    that is lower), max_map_bytes (192 MiB: bytes it
    keeps mapped), readonly (False: True reads a log that another process
    may be writing, from any number of processes, and writes nothing).
    Other options are the defaults of topics created by this Log (see
    README: topic options). A path that holds something other than a
    pylog log raises NotALogError and is left alone."""
    return Log(path, sync=sync, sync_interval_ms=sync_interval_ms, **options)
