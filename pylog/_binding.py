"""The binding: the only module that imports the compiled C core.

It turns the core's return codes into exceptions and hides cffi from the
rest of the package. Codes and their meaning: csrc/pylog.h.
"""
import errno as _errno
import os

from . import _errors as E
from ._native import ffi, lib

TS_NOW = -(2**63)  # PL_TS_NOW: let the core stamp the append time
META = lib.PL_META
NULL = ffi.NULL

SYNC_MODES = {"none": lib.PL_SYNC_NONE, "interval": lib.PL_SYNC_INTERVAL,
              "always": lib.PL_SYNC_ALWAYS}

_CODES = {
    lib.PL_ECLOSED: E.ClosedError,
    lib.PL_EINVAL: E.InvalidConfigError,
    lib.PL_ETOOBIG: E.RecordTooLargeError,
    lib.PL_ECORRUPT: E.CorruptionError,
    lib.PL_EFAILED: E.LogFailedError,
    lib.PL_ERANGE: E.OffsetOutOfRangeError,
    lib.PL_EFORMAT: E.FormatVersionError,
    lib.PL_EFULL: E.LogFullError,
    lib.PL_ELOST: E.DataLossError,
}


def error(rc, context=""):
    """The exception for return code rc (< 0) of the calling thread's call."""
    msg = ffi.string(lib.pl_errmsg()).decode("utf-8", "replace")
    if context:
        msg = f"{context}: {msg}"
    code = -rc
    if code == lib.PL_ENOMEM:
        return MemoryError(msg)
    if code == lib.PL_EIO:
        err = lib.pl_errno()
        cls = E.DiskFullError if err == _errno.ENOSPC else E.PylogIOError
        return cls(err, msg)
    if code == lib.PL_EFAILED:
        return E.LogFailedError(_errno.EIO, msg)
    if code == lib.PL_EREADONLY:
        return E.ReadOnlyError(_errno.EROFS, msg)
    return _CODES.get(code, E.PylogError)(msg)


def check(rc, context=""):
    if rc < 0:
        raise error(rc, context)
    return rc


_ON_FULL = {"drop_oldest": lib.PL_FULL_DROP_OLDEST,
            "reject": lib.PL_FULL_REJECT, "block": lib.PL_FULL_BLOCK}


class Cache:
    """The file cache of a log's topics (csrc/fcache.c)."""

    def __init__(self, max_open_files, max_map_bytes):
        out = ffi.new("pl_cache **")
        check(lib.pl_cache_new(max_open_files, max_map_bytes, out))
        self.handle = ffi.gc(out[0], lib.pl_cache_free)

    def stats(self):
        st = ffi.new("pl_cache_stats *")
        lib.pl_cache_get_stats(self.handle, st)
        return {f: getattr(st, f) for f in (
            "open_files", "maps", "map_bytes", "opens", "maps_made",
            "evictions")}


class Follower:
    """The thread that refreshes read-only topics consumers watch and wakes
    them (csrc/follow.c)."""

    def __init__(self, period_us):
        out = ffi.new("pl_follower **")
        check(lib.pl_follower_new(period_us, out))
        self._f = out[0]

    def add(self, topic_handle):
        check(lib.pl_follower_add(self._f, topic_handle))

    def remove(self, topic_handle):
        lib.pl_follower_remove(self._f, topic_handle)

    def close(self):
        if self._f is not None:
            lib.pl_follower_free(self._f)
            self._f = None


def open_topic(path, config, sync_mode, sync_interval_ms, cache, min_end=0,
               readonly=False):
    """Open the topic in directory path; config is a checked topic config;
    min_end: the next append's offset is at least this (invariant 9);
    readonly: follow a log another process may be writing."""
    cfg = ffi.new("pl_config *", {
        "segment_bytes": config["segment_bytes"],
        "max_record_bytes": config["max_record_bytes"],
        "index_interval_bytes": config["index_interval_bytes"],
        "sync_mode": SYNC_MODES[sync_mode],
        "sync_interval_ms": sync_interval_ms,
        "retention_ms": config["retention_ms"],
        "retention_bytes": config["retention_bytes"],
        "retain_until_consumed": int(config["retain_until_consumed"]),
        "max_bytes": config["max_bytes"],
        "on_full": _ON_FULL[config["on_full"]],
        "full_timeout_ms": config["full_timeout_ms"],
        "readonly": int(readonly),
    })
    out = ffi.new("pl_topic **")
    check(lib.pl_topic_open(os.fsencode(path), cfg, cache.handle, min_end,
                            out))
    return ffi.gc(out[0], lib.pl_topic_free)


class Notifier:
    """Wakes one waiter when any watched topic gets an append (notify.c)."""

    def __init__(self):
        out = ffi.new("pl_notify **")
        check(lib.pl_notify_new(out))
        self._n = ffi.gc(out[0], lib.pl_notify_free)

    def watch(self, topic_handle):
        check(lib.pl_topic_watch(topic_handle, self._n))

    def unwatch(self, topic_handle):
        lib.pl_topic_unwatch(topic_handle, self._n)

    def seq(self):
        return lib.pl_notify_seq(self._n)

    def wait(self, seen, timeout):
        """Block (GIL released) until seq() != seen, interrupt() or timeout
        seconds (None: no limit). True if seq moved."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return lib.pl_notify_wait(self._n, seen, ms) == 1

    def arm(self):
        """The eventfd the next signal writes to (for event loops)."""
        return lib.pl_notify_arm(self._n)

    def disarm(self):
        lib.pl_notify_disarm(self._n)

    def interrupt(self):
        lib.pl_notify_interrupt(self._n)


def pin(m):
    """A read-only memoryview of map m that holds m's reference (which the
    caller hands over) for as long as the view or any slice of it lives."""
    n = lib.pl_map_len(m)
    owner = ffi.gc(ffi.cast("uint8_t *", lib.pl_map_base(m)),
                   lambda _p, m=m: lib.pl_map_unref(m))
    return memoryview(ffi.buffer(owner, n)).toreadonly()


def address(cdata):
    """The address a cffi pointer holds, as an int (for pylog._records)."""
    return int(ffi.cast("uintptr_t", cdata))


# pl_topic_read, for pylog._records.Getter, which calls it without cffi
READ_FN = address(ffi.addressof(lib, "pl_topic_read"))


def xxh64(data, seed=0):
    """XXH64 computed by the C core (tests compare it with xxhash)."""
    data = bytes(data)
    return lib.pl_xxh64(data, len(data), seed)


_OPS = {"write": lib.PL_IO_WRITE, "fsync": lib.PL_IO_FSYNC,
        "fallocate": lib.PL_IO_FALLOCATE, "open": lib.PL_IO_OPEN}


def fault_set(op, nth=1, err=_errno.EIO, count=1, short_bytes=-1):
    lib.pl_fault_set(_OPS[op], nth, err, count, short_bytes)


def fault_clear():
    lib.pl_fault_clear()
