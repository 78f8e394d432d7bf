"""Topic: the Python face of one append-only log.

Hot paths cross into C once per call: ``append`` once per record,
``append_batch`` once per batch, ``read`` once per up to 500 records.
Record objects are built, and batches framed, by pylog._records (C), so
neither a read nor an append_batch runs a Python loop per record.
"""
import struct
import threading
from array import array

from . import _binding as B
from . import _errors as E
from ._errors import Gap
from ._records import Getter, Record, decode as _decode_records, frame as _frame

ffi, lib = B.ffi, B.lib
_append_value = lib.pl_topic_append_value

READ_CHUNK = 500       # records decoded per C call by read()
PINS = 16              # segment maps each reading thread keeps pinned
ZERO_COPY_MIN = 1024   # values this large come back as views into the map
FRAME_KEEP = 4 << 20   # append_batch keeps (per thread) a blob up to this size
_NO_FRAME = (None, None, None, None)
_H_KEY = struct.Struct("<H")
_H_VAL = struct.Struct("<i")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def to_bytes(v, what):
    """bytes for a bytes-like or str (UTF-8); InvalidRecordError otherwise."""
    if type(v) is bytes:
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    try:
        return memoryview(v).tobytes()
    except TypeError:
        raise E.InvalidRecordError(
            f"{what} must be bytes-like or str, not {type(v).__name__}"
        ) from None


def encode_headers(headers):
    """The header block of docs/FORMAT.md: per header u16 key length, UTF-8
    key, i32 value length (-1: None), value."""
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    out = bytearray()
    try:
        for k, v in items:
            if not isinstance(k, str):
                raise E.InvalidRecordError(
                    f"header keys must be str, not {type(k).__name__}")
            kb = k.encode("utf-8")
            if len(kb) > 0xFFFF:
                raise E.RecordTooLargeError(
                    f"header key of {len(kb)} bytes exceeds 65535")
            out += _H_KEY.pack(len(kb)) + kb
            if v is None:
                out += _H_VAL.pack(-1)
            else:
                vb = to_bytes(v, f"header {k!r}")
                out += _H_VAL.pack(len(vb)) + vb
    except struct.error:
        raise E.RecordTooLargeError(
            "a header value is larger than 2 GiB - 1 bytes") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, E.PylogError):
            raise
        raise E.InvalidRecordError(
            "headers must be a dict or a sequence of (str, bytes) pairs"
        ) from None
    return bytes(out) if out else None


def decode_headers(buf, pos, n, where):
    out = []
    end = pos + n
    try:
        while pos < end:
            (kl,) = _H_KEY.unpack_from(buf, pos)
            k = bytes(buf[pos + 2:pos + 2 + kl]).decode("utf-8")
            pos += 2 + kl
            (vl,) = _H_VAL.unpack_from(buf, pos)
            pos += 4
            if vl == -1:
                out.append((k, None))
            elif vl < 0:
                raise ValueError
            else:
                if pos + vl > end:
                    raise ValueError
                out.append((k, bytes(buf[pos:pos + vl])))
                pos += vl
        if pos != end:
            raise ValueError
    except (struct.error, ValueError, UnicodeDecodeError):
        raise E.CorruptionError(f"malformed headers {where}") from None
    return tuple(out)


def _offset(v, what="offset"):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    return v


def _timestamp(ts):
    if ts is None:
        return B.TS_NOW
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise E.InvalidRecordError(
            f"timestamp must be int milliseconds, not {type(ts).__name__}")
    if ts < 0 or ts >= 2**63:
        raise E.InvalidRecordError(f"timestamp {ts} is out of range")
    return ts


class Pins(threading.local):
    """Per thread, the maps its reads decode from, pinned (PINS of them),
    and its read buffers. The core matches the map of a read against the
    pins (pl_topic_read), so a read of a record in a pinned map makes no
    new memoryview and takes no reference. Dropping a pin lets the map go
    once no record view uses it; dead maps are dropped at the next read
    that misses the pins, so a thread holds at most PINS maps beyond the
    file cache's."""

    def __init__(self):
        self.arr = ffi.new("pl_map *[]", PINS)
        self.views = [None] * PINS
        self.next = 0
        self.meta = ffi.new("int64_t[]", B.META * READ_CHUNK)
        self.metaview = ffi.buffer(self.meta)
        self.mapp = ffi.new("pl_map **")
        self.which = ffi.new("int *")
        self.getter = Getter(
            B.READ_FN, B.address(self.meta), B.address(self.arr), PINS,
            B.address(self.which), B.address(self.mapp), self.views,
            (self.meta, self.arr, self.which, self.mapp), ZERO_COPY_MIN,
            decode_headers)

    def take(self, m):
        """The view of map m, which the core handed over with a new
        reference: pinned in a free slot (dead maps are let go first),
        else in the next slot in turn."""
        self.purge()  # a miss: let go of every dead map now
        views = self.views
        for i in range(PINS):
            if views[i] is None:
                break
        else:
            i = self.next
            self.next = (i + 1) % PINS
        arr = self.arr
        arr[i] = m
        views[i] = v = B.pin(m)  # the old view goes: its reference too
        return v

    def purge(self):
        """Let go of dead maps: those the file cache evicted or whose
        segment is gone (its disk space is freed when the last map goes)."""
        for i in range(PINS):
            if self.views[i] is not None and lib.pl_map_dead(self.arr[i]):
                self.arr[i] = B.NULL
                self.views[i] = None

    def clear(self):
        for i in range(PINS):
            self.arr[i] = B.NULL
            self.views[i] = None


class Topic:
    """A named append-only log. Get one with ``Log.topic(name)``."""

    def __init__(self, log, name, handle, config):
        self._log = log
        self.name = name
        self._h = handle
        self._addr = B.address(handle)  # for Getter.get
        self.config = dict(config)
        self._tls = threading.local()
        self._pins = log._pins  # per thread: pinned maps, read buffers
        self._ro = log.readonly
        self._closed = False
        self._watchers = set()  # Notifiers of consumers reading this topic

    def __repr__(self):
        if self._closed:
            return f"<pylog.Topic {self.name!r} closed>"
        return f"<pylog.Topic {self.name!r} [{self.start_offset}, {self.end_offset})>"

    def _check_open(self):
        if self._closed:
            raise E.ClosedError(f"topic {self.name!r} is closed")

    @property
    def closed(self):
        """True once the topic's Log was closed or the topic deleted."""
        return self._closed

    def _fail(self, rc):
        return B.error(rc, f"topic {self.name!r}")

    # ---- writes ------------------------------------------------------------
    def append(self, value, key=None, headers=None, timestamp=None):
        """Append one record; return its offset."""
        if type(value) is not bytes:
            value = to_bytes(value, "value")
        if key is None and headers is None and timestamp is None:
            off = _append_value(self._h, value, len(value))
        else:
            if key is not None:
                key = to_bytes(key, "key")
            hdr = encode_headers(headers)
            off = lib.pl_topic_append(
                self._h, B.NULL if key is None else key,
                -1 if key is None else len(key), value, len(value),
                B.NULL if hdr is None else hdr, 0 if hdr is None else len(hdr),
                _timestamp(timestamp))
        if off < 0:
            raise self._fail(off)
        return off

    def append_batch(self, values, *, keys=None, timestamps=None,
                     headers=None):
        """Append records atomically (all or none after any crash); return
        the first offset. keys, timestamps and headers, when given, are
        sequences as long as values (None entries allowed)."""
        if isinstance(values, (bytes, str)) or not hasattr(values, "__iter__"):
            raise E.InvalidRecordError(
                "append_batch takes a sequence of values")
        vals = values if type(values) in (list, tuple) else list(values)
        n = len(vals)
        if n == 0:
            raise E.InvalidRecordError("append_batch needs at least one value")
        kblob = klens = hblob = hlens = tsa = B.NULL
        if keys is not None:
            keys = self._parallel(keys, n, "keys")
            kl = [None if k is None else to_bytes(k, f"key {i}")
                  for i, k in enumerate(keys)]
            kblob = b"".join(k for k in kl if k is not None) or b"\0"
            klens = ffi.from_buffer(
                "int64_t[]", array("q", (-1 if k is None else len(k)
                                         for k in kl)))
        if headers is not None:
            headers = self._parallel(headers, n, "headers")
            hl = [encode_headers(h) or b"" for h in headers]
            hblob = b"".join(hl) or b"\0"
            hlens = ffi.from_buffer("int64_t[]", array("q", map(len, hl)))
        if timestamps is not None:
            timestamps = self._parallel(timestamps, n, "timestamps")
            tsa = ffi.from_buffer("int64_t[]",
                                  array("q", map(_timestamp, timestamps)))
        # Last, so that no Python code (iterables, mappings given above)
        # can run between framing into this thread's buffer and the call.
        tls = self._tls
        spare = getattr(tls, "frame", _NO_FRAME)
        framed = _frame(vals, spare[0], spare[1])
        if framed is None:  # not all bytes: convert, with clear errors
            framed = _frame([to_bytes(v, f"value {i}")
                             for i, v in enumerate(vals)], spare[0], spare[1])
        blob, vlens = framed
        if blob is spare[0] and vlens is spare[1]:
            cblob, cvlens = spare[2], spare[3]
        else:
            cblob = ffi.from_buffer(blob)
            cvlens = ffi.from_buffer("int64_t[]", vlens)
            if len(blob) <= FRAME_KEEP:  # kept for this thread's next batch
                tls.frame = (blob, vlens, cblob, cvlens)
        off = lib.pl_topic_append_batch(
            self._h, n, cblob, cvlens,
            kblob, klens, hblob, hlens, tsa)
        if off < 0:
            raise self._fail(off)
        return off

    @staticmethod
    def _parallel(seq, n, what):
        seq = list(seq)
        if len(seq) != n:
            raise E.InvalidRecordError(
                f"{what} has {len(seq)} entries for {n} values")
        return seq

    def flush(self):
        """fdatasync every segment of this topic."""
        B.check(lib.pl_topic_flush(self._h), f"topic {self.name!r}")

    # ---- reads -------------------------------------------------------------
    def _fetch(self, offset, max_records, max_bytes=0):
        """Up to max_records records from offset (one segment at most)."""
        p = self._pins
        n = lib.pl_topic_read(self._h, offset, max_records, max_bytes, p.meta,
                              p.arr, PINS, p.which, p.mapp)
        if n <= 0:
            if n == 0:
                return []
            raise self._read_error(n, offset)
        w = p.which[0]
        view = p.views[w] if w >= 0 else p.take(p.mapp[0])
        return _decode_records(p.metaview, n, view, self.name, ZERO_COPY_MIN,
                               decode_headers)

    def _read_error(self, n, offset):
        """The exception for pl_topic_read's error code n."""
        if n == -lib.PL_ELOST:
            p = self._pins
            gap = Gap(self.name, p.meta[0], p.meta[1], "lost")
            return E.DataLossError(
                f"topic {self.name!r}: offsets [{gap.from_offset}, "
                f"{gap.to_offset}) are lost (a power cut or a file "
                f"removed by hand; reading offset {offset})", gap)
        return self._fail(n)

    def get(self, offset):
        """The record at offset; OffsetOutOfRangeError if there is none."""
        r = self._pins.getter.get(self._addr, offset, self.name)
        if r.__class__ is not int:  # a Record, from a pinned map
            return r
        return self._get(offset, r)

    def _get(self, offset, n):
        """get, where Getter.get returned n: 1 if it read the record from a
        map not pinned yet, < 0 the read's error; 0 if there was no record
        or the offset is not an int within int64 (then it is read again
        here: a record may have been written since)."""
        p = self._pins
        if n == 1:
            return _decode_records(p.metaview, 1, p.take(p.mapp[0]),
                                   self.name, ZERO_COPY_MIN,
                                   decode_headers)[0]
        if n < 0:  # not read again: that could hide a transient error
            raise self._read_error(n, offset)
        if type(offset) is not int:
            offset = _offset(offset)
        if not _I64_MIN <= offset <= _I64_MAX:  # beyond int64_t: no record
            self._check_open()
            raise E.OffsetOutOfRangeError(
                f"offset {offset} of topic {self.name!r} is out of range")
        recs = self._fetch(offset, 1)  # the error, or a record just written
        if not recs:
            raise E.OffsetOutOfRangeError(
                f"offset {offset} of topic {self.name!r} is not written yet "
                f"(end_offset is {self.end_offset})")
        return recs[0]

    def read(self, from_offset=None, max_records=None):
        """Iterate records from from_offset (default: start_offset) up to the
        end_offset at the time of the call, at most max_records of them."""
        start = self.start_offset
        off = start if from_offset is None else _offset(from_offset,
                                                        "from_offset")
        end = self.end_offset
        if off < start or off > end:
            raise E.OffsetOutOfRangeError(
                f"from_offset {off} is outside [{start}, {end}] of topic "
                f"{self.name!r}")
        if max_records is not None:
            max_records = _offset(max_records, "max_records")
            if max_records < 0:
                raise ValueError("max_records must be >= 0")
            end = min(end, off + max_records)
        return self._iter(off, end)

    def _iter(self, off, end):
        while off < end:
            recs = self._fetch(off, min(READ_CHUNK, end - off))
            if not recs:
                return
            yield from recs
            off = recs[-1].offset + 1

    def offset_for_time(self, ms):
        """Earliest offset whose timestamp is >= ms, or None if none is."""
        ms = _offset(ms, "timestamp")
        if ms > _I64_MAX:  # timestamps are int64: none is this late
            self._check_open()
            return None
        r = lib.pl_topic_offset_for_time(self._h, max(ms, _I64_MIN + 1))
        if r == -lib.PL_ENOTFOUND:
            return None
        if r < 0:
            raise self._fail(r)
        return r

    # ---- positions ---------------------------------------------------------
    @property
    def start_offset(self):
        """First offset still retained."""
        self._check_open()
        if self._ro:
            self.refresh()
        return lib.pl_topic_start_offset(self._h)

    @property
    def end_offset(self):
        """Next offset to be written (in a log opened read-only: the end of
        what the writer has published)."""
        self._check_open()
        if self._ro:
            self.refresh()
        return lib.pl_topic_end_offset(self._h)

    def refresh(self):
        """Read-only logs: take in what the writing process published since
        (appends, rolls, deletions by retention). True if anything changed.
        Reads and consumers do this themselves."""
        self._check_open()
        if not self._ro:
            return False
        return B.check(lib.pl_topic_refresh(self._h),
                       f"topic {self.name!r}") > 0

    @property
    def durable_offset(self):
        """Every offset below this one has been fdatasync'ed."""
        self._check_open()
        return lib.pl_topic_durable_offset(self._h)

    def __len__(self):
        return self.end_offset - self.start_offset

    # ---- bounded disk --------------------------------------------------------
    def stats(self):
        """Offsets, bytes on disk, and lifetime counters (kept across opens):
        appended, dropped by retention, dropped by on_full, rejected and
        lost records, with the lost ranges [from, to) known."""
        self._check_open()
        st = ffi.new("pl_stats *")
        B.check(lib.pl_topic_stats(self._h, st), f"topic {self.name!r}")
        out = {f: getattr(st, f) for f in (
            "start_offset", "end_offset", "durable_offset", "segments",
            "bytes_on_disk", "truncated_bytes", "appended_records",
            "appended_bytes", "retention_dropped_records",
            "retention_dropped_bytes", "full_dropped_records",
            "full_dropped_bytes", "rejected_records", "rejected_bytes",
            "lost_records")}
        out["lost_ranges"] = self.lost_ranges()
        return out

    def lost_ranges(self):
        """[(from, to)]: offset ranges lost to a power cut or to files
        removed by hand (reads of them raise DataLossError)."""
        self._check_open()
        buf = ffi.new("int64_t[]", 128)
        n = lib.pl_topic_lost(self._h, buf, 64)
        if n > 64:
            buf = ffi.new("int64_t[]", 2 * n)
            n = lib.pl_topic_lost(self._h, buf, n)
        return [(buf[2 * i], buf[2 * i + 1]) for i in range(n)]

    describe = stats

    def apply_retention(self):
        """Delete what retention allows now (it also runs at every segment
        roll, at every commit and at open); return segments deleted."""
        self._check_open()
        n = B.check(lib.pl_topic_apply_retention(self._h),
                    f"topic {self.name!r}")
        self._pins.purge()
        return n

    def _set_floor(self, floor):
        B.check(lib.pl_topic_set_floor(self._h, floor), f"topic {self.name!r}")
        self._pins.purge()

    def _sync_to(self, offset):
        """Return once every record below offset is durable."""
        B.check(lib.pl_topic_sync_to(self._h, offset), f"topic {self.name!r}")

    def _token(self, pos):
        """The checksum of the batch holding pos - 1 (pylog/_pending.py), or
        None if there is no such record."""
        tok = ffi.new("uint64_t *")
        if lib.pl_topic_batch_token(self._h, pos, tok) < 0:
            return None
        return tok[0]

    def _watch(self, n):
        n.watch(self._h)
        self._watchers.add(n)
        if self._ro:  # another process appends: the follower looks
            self._log._follower.add(self._h)

    def _unwatch(self, n):
        if n in self._watchers:
            self._watchers.discard(n)
            if not self._closed:
                n.unwatch(self._h)

    def _reopen(self, handle, config):
        self._h = handle
        self._addr = B.address(handle)  # for Getter.get
        self.config = dict(config)
        self._closed = False
        for n in self._watchers:
            n.watch(handle)

    def _close(self):
        self._closed = True
        if self._ro and self._log._follower is not None:
            self._log._follower.remove(self._h)
        rc = lib.pl_topic_close(self._h)
        self._pins.purge()
        return rc
