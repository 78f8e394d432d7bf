"""Offline inspection of segment files (``pylog dump`` and ``pylog verify``).

A read-only parser of the format in docs/FORMAT.md, written against the spec
rather than sharing the C core's code, so that it checks every checksum of
every batch whatever the core trusts in memory. Hashing is the xxhash
package's XXH64.
"""
import os
import re
import struct
from collections import namedtuple

import xxhash

SEG_HDR = 32
BATCH_HDR = 48
REC_HDR = 20
_SEG = struct.Struct("<8sIIqQ")
_BATCH = struct.Struct("<QIIqqqII")
_REC = struct.Struct("<qiII")
_NAME = re.compile(r"^(\d{20})\.log$")

Batch = namedtuple("Batch", "pos length base_offset count first_ts max_ts ok")
Problem = namedtuple("Problem", "path pos offset what")


def segment_files(topic_dir):
    """[(base offset, path)] of a topic directory, sorted."""
    out = []
    for name in os.listdir(topic_dir):
        m = _NAME.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(topic_dir, name)))
    return sorted(out)


def _records_tile(buf, pos, length, count):
    """The count records of the batch fill it exactly."""
    p, end = pos + BATCH_HDR, pos + length
    for _ in range(count):
        if end - p < REC_HDR:
            return False
        _ts, kl, vl, hl = _REC.unpack_from(buf, p)
        if kl < -1:
            return False
        p += REC_HDR + max(kl, 0) + vl + hl
        if p > end:
            return False
    return p == end


class _Reader:
    """A file read with pread through a chunk cache: never a map, so that
    a live writer cutting the file (a seal, a recovery) cannot turn a read
    into a SIGBUS; reads past the end come back short."""

    CHUNK = 4 << 20

    def __init__(self, fd):
        self.fd = fd
        self.lo, self.data = 0, b""

    def get(self, lo, hi):
        if self.lo <= lo and hi <= self.lo + len(self.data):
            return self.data[lo - self.lo:hi - self.lo]
        if hi - lo > self.CHUNK:
            return os.pread(self.fd, hi - lo, lo)
        self.lo, self.data = lo, os.pread(self.fd, self.CHUNK, lo)
        return self.data[:hi - lo]


def scan_segment(path, base, next_base=None):
    """Yield Batch for every batch of the segment, then stop at the clean
    end; yield a Problem (and stop) where the data is not valid."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < SEG_HDR:
            yield Problem(path, 0, base, "file shorter than its header")
            return
        yield from _scan(_Reader(f.fileno()), size, path, base, next_base)


def _scan(r, size, path, base, next_base):
    magic, version, hlen, hbase, hsum = _SEG.unpack_from(r.get(0, SEG_HDR))
    if (magic != b"PYLOGSEG" or hlen != SEG_HDR or hbase != base
            or hsum != xxhash.xxh64_intdigest(r.get(0, 24))):
        yield Problem(path, 0, base, "invalid segment header")
        return
    if version != 1:
        yield Problem(path, 0, base, f"unknown format version {version}")
        return
    pos, expect = SEG_HDR, base
    while pos < size:
        head = r.get(pos, pos + BATCH_HDR)
        if len(head) < BATCH_HDR:
            if any(head):
                yield Problem(path, pos, expect, "truncated batch header")
                return
            break
        csum, length, count, boff, first_ts, max_ts, flags, res = \
            _BATCH.unpack_from(head)
        if length == 0:
            if any(head):
                yield Problem(path, pos, expect, "invalid batch header")
                return
            break
        if (length < BATCH_HDR + REC_HDR or pos + length > size or count == 0
                or count > (length - BATCH_HDR) // REC_HDR
                or flags or res or boff != expect):
            yield Problem(path, pos, expect, "invalid batch header")
            return
        body = r.get(pos, pos + length)
        ok = len(body) == length and csum == xxhash.xxh64_intdigest(body[8:])
        yield Batch(pos, length, boff, count, first_ts, max_ts, ok)
        if not ok:
            yield Problem(path, pos, expect, "checksum mismatch")
            return
        if not _records_tile(body, 0, length, count):
            yield Problem(path, pos, expect, "records do not fill the batch")
            return
        expect += count
        pos += length
    if next_base is not None and expect != next_base:
        yield Problem(path, pos, expect,
                      f"segment ends at offset {expect}, the next starts at "
                      f"{next_base}")


# ---- the checkpoint (docs/FORMAT.md) ----------------------------------------
_CKPT_SLOT = 512
_CKPT = struct.Struct("<8sQIIqqqqqq8q")


def read_checkpoint(topic_dir):
    """The valid checkpoint slot with the higher sequence number, as a dict
    (durable, dseg, dpos, start, end, clean, lost), or None."""
    try:
        with open(os.path.join(topic_dir, "checkpoint"), "rb") as f:
            data = f.read(2 * _CKPT_SLOT)
    except OSError:
        return None
    best = None
    for i in range(2):
        b = data[i * _CKPT_SLOT:(i + 1) * _CKPT_SLOT]
        if len(b) < _CKPT_SLOT or b[:8] != b"PYLOGCK2":
            continue
        if struct.unpack_from("<Q", b, 504)[0] != xxhash.xxh64_intdigest(
                b[:504]):
            continue
        (_, seq, flags, nlost, durable, dseg, dpos, start, end, clean_pos,
         *counters) = _CKPT.unpack_from(b)
        if nlost > 22:
            continue
        lost = [struct.unpack_from("<qq", b, 136 + 16 * k)
                for k in range(nlost)]
        slot = {"seq": seq, "clean": bool(flags & 1), "durable": durable,
                "dseg": dseg, "dpos": dpos, "start": start, "end": end,
                "clean_pos": clean_pos, "counters": counters, "lost": lost}
        if best is None or seq > best["seq"]:
            best = slot
    return best
