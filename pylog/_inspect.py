"""Offline inspection of segment files (``pylog dump`` and ``pylog verify``).

A read-only parser of the format in docs/FORMAT.md, written against the spec
rather than sharing the C core's code, so that it checks every checksum of
every batch whatever the core trusts in memory. Hashing is the xxhash
package's XXH64.
"""
import mmap
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


def _xxh64(buf, lo, hi):
    return xxhash.xxh64_intdigest(buf[lo:hi])


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


def scan_segment(path, base, next_base=None):
    """Yield Batch for every batch of the segment, then stop at the clean
    end; yield a Problem (and stop) where the data is not valid."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < SEG_HDR:
            yield Problem(path, 0, base, "file shorter than its header")
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            buf = memoryview(m)
            try:
                yield from _scan(buf, size, path, base, next_base)
            finally:
                buf.release()


def _scan(buf, size, path, base, next_base):
    magic, version, hlen, hbase, hsum = _SEG.unpack_from(buf, 0)
    if (magic != b"PYLOGSEG" or hlen != SEG_HDR or hbase != base
            or hsum != _xxh64(buf, 0, 24)):
        yield Problem(path, 0, base, "invalid segment header")
        return
    if version != 1:
        yield Problem(path, 0, base, f"unknown format version {version}")
        return
    pos, expect = SEG_HDR, base
    while pos < size:
        if size - pos < BATCH_HDR:
            if any(buf[pos:size]):
                yield Problem(path, pos, expect, "truncated batch header")
                return
            break
        csum, length, count, boff, first_ts, max_ts, flags, res = \
            _BATCH.unpack_from(buf, pos)
        if length == 0:
            if any(buf[pos:pos + BATCH_HDR]):
                yield Problem(path, pos, expect, "invalid batch header")
                return
            break
        if (length < BATCH_HDR + REC_HDR or pos + length > size or count == 0
                or count > (length - BATCH_HDR) // REC_HDR
                or flags or res or boff != expect):
            yield Problem(path, pos, expect, "invalid batch header")
            return
        ok = csum == _xxh64(buf, pos + 8, pos + length)
        yield Batch(pos, length, boff, count, first_ts, max_ts, ok)
        if not ok:
            yield Problem(path, pos, expect, "checksum mismatch")
            return
        if not _records_tile(buf, pos, length, count):
            yield Problem(path, pos, expect, "records do not fill the batch")
            return
        expect += count
        pos += length
    if next_base is not None and expect != next_base:
        yield Problem(path, pos, expect,
                      f"segment ends at offset {expect}, the next starts at "
                      f"{next_base}")
