"""Golden-bytes tests that pin the on-disk format of docs/FORMAT.md.

The golden hex literals below are the worked examples of FORMAT.md (§3.6,
§3.7, §7.4, §8.4). The encoder and the parser in this file are written from
the spec with struct and the `xxhash` package only -- they share no code
with pylog -- so a change of layout, checksum range, checksum algorithm or
index rule in the C core or in the header encoding fails here. The rest
pins the file life cycle of FORMAT.md §5-§10: truncation at close, the
checkpoint, recovery's zeroing and .damaged copies, orphan index removal,
retention's deletions and the catalog.
"""
import dataclasses
import json
import os
import random
import re
import struct
import subprocess
import sys

import lmdb
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import pylog
from pylog import _binding as B

# ---- the spec (FORMAT.md), as constants -------------------------------------
VERSION = 1
SEG_HDR = struct.Struct("<8sIIqQ")        # §3.1: 32 bytes
BATCH_HDR = struct.Struct("<QIIqqqII")    # §3.2: 48 bytes
REC_HDR = struct.Struct("<qiII")          # §3.2: 20 bytes
IDX_HDR = struct.Struct("<Q8sIIqqqq")     # §7.1: 56 bytes
IDX_ENTRY = struct.Struct("<IIIIq")       # §7.1: 24 bytes
CKPT = struct.Struct("<8sqQ")             # §8.1: 24 bytes
H_KEY = struct.Struct("<H")               # §3.3
H_VAL = struct.Struct("<i")
I64_MIN = -(2**63)
NAME = re.compile(r"(\d{20})\.(log|idx)")
SEG0 = "00000000000000000000.log"
IDX0 = "00000000000000000000.idx"
SEG5 = "00000000000000000005.log"
IDX5 = "00000000000000000005.idx"
CKPT_NAME = "checkpoint"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024

assert (SEG_HDR.size, BATCH_HDR.size, REC_HDR.size, IDX_HDR.size,
        IDX_ENTRY.size, CKPT.size) == (32, 48, 20, 56, 24, 24)

TS = 1700000000000

# FORMAT.md §3.6: append(b"hi", key=b"k", headers=[("u", b"C")], timestamp=TS)
GOLDEN_ONE = bytes.fromhex(
    # segment header: magic, version 1, header size 32, base 0, XXH64(0..24)
    "50594c4f4753454701000000200000000000000000000000de904f7f67cac2de"
    # batch header: XXH64(batch[8..79]), length 79, count 1, base 0
    "4d7699e71452ba064f000000010000000000000000000000"
    # first_ts, max_ts, flags 0, reserved 0
    "0068e5cf8b0100000068e5cf8b0100000000000000000000"
    # record: ts, key_len 1, value_len 2, headers_len 8
    "0068e5cf8b010000010000000200000008000000"
    "6b"                    # key "k"
    "6869"                  # value "hi"
    "0100750100000043"      # headers: u16 1, "u", i32 1, "C"
)

# FORMAT.md §3.7: a batch of three records.
THREE_VALUES = [b"a", b"bc", b""]
THREE_KEYS = [None, b"k1", b""]
THREE_HEADERS = [None, {"h": None}, [("x", b""), ("yz", b"\x00\xff")]]
THREE_TS = [TS + 1, TS, TS + 5]
GOLDEN_THREE = bytes.fromhex(
    "50594c4f4753454701000000200000000000000000000000de904f7f67cac2de"
    # batch header: checksum, length 137, count 3, base 0
    "22118da1e9c43afc" "89000000" "03000000" "0000000000000000"
    # first_ts (record 0's, not the minimum), max_ts, flags, reserved
    "0168e5cf8b010000" "0568e5cf8b010000" "00000000" "00000000"
    # record 0: null key (-1), value "a", no headers
    "0168e5cf8b010000" "ffffffff" "01000000" "00000000" "61"
    # record 1: key "k1", value "bc", headers ("h", None)
    "0068e5cf8b010000" "02000000" "02000000" "07000000" "6b31" "6263"
    "0100" "68" "ffffffff"
    # record 2: empty key (0), empty value, headers ("x", b""), ("yz", 00 ff)
    "0568e5cf8b010000" "00000000" "00000000" "11000000"
    "0100" "78" "00000000" "0200" "797a" "02000000" "00ff"
)

# FORMAT.md §7.4: the index of a sealed segment.
GOLDEN_IDX = bytes.fromhex(
    "7b3ddce7e2a90008"                                   # XXH64(file[8..])
    "50594c4f47494458" "01000000" "05000000"             # magic, version, n
    "0000000000000000" "0500000000000000"                # base 0, end 5
    "9002000000000000" "1e00000000000000"                # seg_len 656, max_ts 30
    "00000000" "20000000" "20000000" "00000000" "0000000000000080"
    "01000000" "c8000000" "c8000000" "00000000" "0a00000000000000"
    "02000000" "48010000" "c8000000" "00000000" "0a00000000000000"
    "03000000" "98010000" "c8000000" "00000000" "0a00000000000000"
    "04000000" "e8010000" "e8010000" "00000000" "1e00000000000000"
)


# FORMAT.md §8.4: checkpoints of offsets 0, 1 and 3.
GOLDEN_CKPT = {
    0: bytes.fromhex("50594c4f47434b50" "0000000000000000" "cc981b9aba49e943"),
    1: bytes.fromhex("50594c4f47434b50" "0100000000000000" "e56935bdd334e2eb"),
    3: bytes.fromhex("50594c4f47434b50" "0300000000000000" "d21ac8c83e9bb3cc"),
}

# FORMAT.md §10.1: the config of a topic with the defaults.
DEFAULT_CONFIG_JSON = (
    b'{"full_timeout_ms": 10000, "index_interval_bytes": 4096, '
    b'"max_bytes": 0, "max_record_bytes": 1048576, "on_full": "reject", '
    b'"retain_until_consumed": false, "retention_bytes": 0, '
    b'"retention_ms": 0, "segment_bytes": 16777216}')


def xxh(b, seed=0):
    return xxhash.xxh64(bytes(b), seed=seed).intdigest()


def enc_checkpoint(offset, lo=0, hi=16):
    """§8.1; lo, hi: the checksum range (the spec's is 0..16)."""
    b = CKPT.pack(b"PYLOGCKP", offset, 0)[:16]
    return b + struct.pack("<Q", xxh((b + bytes(8))[lo:hi]))


# ---- an encoder written from the spec ---------------------------------------
def header_pairs(headers):
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((k, None if v is None else bytes(v)) for k, v in items)


def enc_headers(headers):
    out = b""
    for k, v in header_pairs(headers):
        kb = k.encode("utf-8")
        out += H_KEY.pack(len(kb)) + kb
        out += H_VAL.pack(-1) if v is None else H_VAL.pack(len(v)) + v
    return out


def enc_record(ts, key, value, headers):
    h = enc_headers(headers)
    return (REC_HDR.pack(ts, -1 if key is None else len(key), len(value),
                         len(h)) + (key or b"") + value + h)


def enc_batch(base, records):
    body = b"".join(enc_record(*r) for r in records)
    length = BATCH_HDR.size + len(body)
    rest = BATCH_HDR.pack(0, length, len(records), base, records[0][0],
                          max(r[0] for r in records), 0, 0)[8:] + body
    return struct.pack("<Q", xxh(rest)) + rest


def enc_seg_header(base):
    h = SEG_HDR.pack(b"PYLOGSEG", VERSION, 32, base, 0)[:24]
    return h + struct.pack("<Q", xxh(h))


# ---- a parser written from the spec -----------------------------------------
@dataclasses.dataclass
class Rec:
    pos: int
    offset: int
    ts: int
    key: bytes
    value: bytes
    headers: tuple


@dataclasses.dataclass
class Batch:
    pos: int
    length: int
    base: int
    first_ts: int
    max_ts: int
    records: list


def dec_headers(buf):
    out, p = [], 0
    while p < len(buf):
        (kl,) = H_KEY.unpack_from(buf, p)
        assert p + 2 + kl <= len(buf), "header name overruns the block"
        k = buf[p + 2:p + 2 + kl].decode("utf-8")
        p += 2 + kl
        (vl,) = H_VAL.unpack_from(buf, p)
        p += 4
        assert vl >= -1, "header value length below -1"
        if vl == -1:
            out.append((k, None))
        else:
            assert p + vl <= len(buf), "header value overruns the block"
            out.append((k, buf[p:p + vl]))
            p += vl
    assert p == len(buf)
    return tuple(out)


def parse_segment_header(data, base):
    magic, version, size, hbase, csum = SEG_HDR.unpack_from(data, 0)
    assert magic == b"PYLOGSEG"
    assert version == VERSION
    assert size == 32
    assert hbase == base, "header base differs from the file name"
    assert csum == xxh(data[:24]), "segment header checksum (bytes 0..24)"


def parse_segment(data, base):
    """Every batch of a segment (FORMAT.md §3), checking every field and
    checksum; returns (batches, data_end, end_offset). Asserts that the data
    ends cleanly (§3.5): no garbage."""
    parse_segment_header(data, base)
    pos, expect, batches = 32, base, []
    while pos < len(data):
        if len(data) - pos < 48:
            assert not any(data[pos:]), "garbage in the last < 48 bytes"
            break
        csum, length, count, bbase, first_ts, max_ts, flags, res = \
            BATCH_HDR.unpack_from(data, pos)
        if length == 0:
            assert not any(data[pos:pos + 48]), "length 0 but not zeros"
            break
        assert 68 <= length <= len(data) - pos, (pos, length)
        assert 1 <= count <= (length - 48) // 20
        assert flags == 0 and res == 0
        assert bbase == expect, (pos, bbase, expect)
        assert csum == xxh(data[pos + 8:pos + length]), \
            f"batch checksum (bytes 8..{length}) at {pos}"
        recs, p, end = [], pos + 48, pos + length
        for j in range(count):
            assert end - p >= 20
            ts, kl, vl, hl = REC_HDR.unpack_from(data, p)
            assert kl >= -1
            k = max(kl, 0)
            assert p + 20 + k + vl + hl <= end, "record overruns its batch"
            q = p + 20
            recs.append(Rec(p, bbase + j, ts,
                            None if kl < 0 else data[q:q + k],
                            data[q + k:q + k + vl],
                            dec_headers(data[q + k + vl:q + k + vl + hl])))
            p += 20 + k + vl + hl
        assert p == end, "records do not tile the batch"
        assert first_ts == recs[0].ts
        assert max_ts == max(r.ts for r in recs)
        batches.append(Batch(pos, length, bbase, first_ts, max_ts, recs))
        pos += length
        expect += count
    return batches, pos, expect


def parse_index(idx):
    csum, magic, version, n, base, end, seg_len, max_ts = \
        IDX_HDR.unpack_from(idx, 0)
    assert csum == xxh(idx[8:]), "index checksum (bytes 8..size)"
    assert magic == b"PYLOGIDX" and version == VERSION
    assert len(idx) == 56 + 24 * n
    entries = [IDX_ENTRY.unpack_from(idx, 56 + 24 * i) for i in range(n)]
    return (base, end, seg_len, max_ts), entries


def parse_checkpoint(data):
    """The offset of a checkpoint file (§8.1), checking every field."""
    assert len(data) == 24, "a checkpoint is exactly 24 bytes"
    magic, offset, csum = CKPT.unpack(data)
    assert magic == b"PYLOGCKP"
    assert csum == xxh(data[:16]), "checkpoint checksum (bytes 0..16)"
    return offset


def expected_zeroed(data, pos, size):
    """FORMAT.md §6.1 step 7: bytes recovery overwrites past the data end
    pos of a file of size bytes: up to the end of the last 8-byte word
    (counted from pos) holding a non-zero byte, never past size."""
    last = pos
    for p in range(pos, size, 8):
        if any(data[p:min(p + 8, size)]):
            last = min(p + 8, size)
    return last - pos


def expected_entries(batches, seg_base, interval):
    """The entries FORMAT.md §7.3 says a writer produces."""
    out, last, run = [], None, I64_MIN
    for b in batches:
        if last is None or b.pos - last >= interval:
            out.append((b.base - seg_base, b.pos, b.pos, 0, run))
            last = b.pos
        if b.length > interval:
            for r in b.records:
                if r.pos - last >= interval:
                    out.append((r.offset - seg_base, r.pos, b.pos, 0, run))
                    last = r.pos
        run = max(run, b.max_ts)
    return out


def check_index_points_at_records(entries, batches, seg_base):
    """Every entry names a batch and a record with the stated offset."""
    by_pos = {b.pos: b for b in batches}
    for rel, pos, batch_pos, reserved, max_ts in entries:
        assert reserved == 0
        b = by_pos[batch_pos]  # KeyError: batch_pos is not a batch start
        if pos == batch_pos:
            assert rel == b.base - seg_base
        else:
            (r,) = [r for r in b.records if r.pos == pos]
            assert rel == r.offset - seg_base
        before = [x.max_ts for x in batches if x.pos < batch_pos]
        assert max_ts == (max(before) if before else I64_MIN)


def topic_dir(root, name="t"):
    return os.path.join(os.fspath(root), "topics", name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def patch(path, pos, data):
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(data)


def snapshot(d):
    """{name: bytes} of every file of directory d."""
    return {n: read(os.path.join(d, n)) for n in sorted(os.listdir(d))}


def checkpoint_of(root, name="t"):
    return parse_checkpoint(read(os.path.join(topic_dir(root, name),
                                              CKPT_NAME)))


# ---- (a), (b): golden bytes -------------------------------------------------
def test_golden_examples_follow_the_spec():
    """The golden literals are what the spec's layout gives by hand."""
    one = enc_seg_header(0) + enc_batch(0, [(TS, b"k", b"hi",
                                             [("u", b"C")])])
    assert one.hex() == GOLDEN_ONE.hex()
    three = enc_seg_header(0) + enc_batch(
        0, list(zip(THREE_TS, THREE_KEYS, THREE_VALUES, THREE_HEADERS)))
    assert three.hex() == GOLDEN_THREE.hex()
    assert len(GOLDEN_ONE) == 32 + 79 and len(GOLDEN_THREE) == 32 + 137


def test_golden_one_record(tmp_path):
    path = os.path.join(topic_dir(tmp_path), SEG0)
    n = len(GOLDEN_ONE)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.append(b"hi", key=b"k", headers=[("u", b"C")],
                        timestamp=TS) == 0
        # while open: preallocated, the data, then the zero tail (§2.2, §5)
        data = read(path)
        assert len(data) == DEFAULT_SEGMENT_BYTES
        assert data[:n].hex() == GOLDEN_ONE.hex()
        assert not any(data[n:])  # clean end: the zero tail
    assert sorted(os.listdir(tmp_path)) == ["LOCK", "catalog", "topics"]
    # closed: the file is exactly its data; sync none, never flushed: the
    # checkpoint is the start offset (§8.2, §8.4)
    assert sorted(os.listdir(topic_dir(tmp_path))) == [SEG0, CKPT_NAME]
    assert read(path).hex() == GOLDEN_ONE.hex()
    assert read(os.path.join(topic_dir(tmp_path), CKPT_NAME)).hex() == \
        GOLDEN_CKPT[0].hex()
    # the next open extends the file again, and reads the same data
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert os.path.getsize(path) == DEFAULT_SEGMENT_BYTES
        assert read(path)[:n] == GOLDEN_ONE
        assert [(r.key, bytes(r.value), r.headers) for r in t.read()] == \
            [(b"k", b"hi", (("u", b"C"),))]
        assert t.stats()["truncated_bytes"] == 0
    assert read(path) == GOLDEN_ONE


def test_golden_batch_of_three(tmp_path):
    path = os.path.join(topic_dir(tmp_path), SEG0)
    n = len(GOLDEN_THREE)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.append_batch(THREE_VALUES, keys=THREE_KEYS,
                              headers=THREE_HEADERS,
                              timestamps=THREE_TS) == 0
        data = read(path)
        assert data[:n].hex() == GOLDEN_THREE.hex()
        assert not any(data[n:])
    assert read(path).hex() == GOLDEN_THREE.hex()


def test_empty_topic_closes_to_a_bare_header(tmp_path):
    with pylog.open(tmp_path, segment_bytes=1024) as log:
        log.topic("t")
        assert os.path.getsize(os.path.join(topic_dir(tmp_path), SEG0)) == \
            1024
    assert snapshot(topic_dir(tmp_path)) == {SEG0: enc_seg_header(0),
                                             CKPT_NAME: GOLDEN_CKPT[0]}


@pytest.mark.parametrize("golden", ["one", "three"])
def test_golden_bytes_read_back(tmp_path, golden):
    """A segment written by hand from the spec reads back as the records."""
    if golden == "one":
        raw, expect = GOLDEN_ONE, [(TS, b"k", b"hi", (("u", b"C"),))]
    else:
        raw = GOLDEN_THREE
        expect = [(ts, k, v, header_pairs(h)) for ts, k, v, h in
                  zip(THREE_TS, THREE_KEYS, THREE_VALUES, THREE_HEADERS)]
    with pylog.open(tmp_path) as log:
        log.topic("t")
    path = os.path.join(topic_dir(tmp_path), SEG0)
    with open(path, "wb") as f:
        f.write(raw)  # as a clean close leaves it: the file ends at the data
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        got = [(r.timestamp, r.key, bytes(r.value), r.headers)
               for r in t.read()]
        assert got == expect
        assert t.end_offset == len(expect)
        assert t.offset_for_time(max(e[0] for e in expect)) == \
            [e[0] for e in expect].index(max(e[0] for e in expect))
        assert t.stats()["truncated_bytes"] == 0
    assert read(path) == raw


# ---- (c): an independent parser over mixed records --------------------------
def random_record(rng):
    r = rng.random()
    if r < 0.08:
        value = rng.randbytes(rng.randint(900, 2500))  # > segment_bytes
    elif r < 0.3:
        value = rng.randbytes(rng.randint(100, 400))
    else:
        value = rng.randbytes(rng.randint(0, 60))
    key = rng.choice([None, b"", rng.randbytes(rng.randint(1, 12))])
    headers = rng.choice([
        None, [], {"a": rng.randbytes(3)}, [("d", b"1"), ("d", None)],
        {"ключ": b"\x00" * rng.randint(0, 5), "": b""},
        [("n", None)],
    ])
    ts = rng.choice([0, 2**63 - 1, rng.randrange(2**41),
                     rng.randrange(2**63)])
    return ts, key, value, headers


def write_mixed(root, seed, n_ops, segment_bytes, interval):
    rng = random.Random(seed)
    expected = []
    with pylog.open(root, segment_bytes=segment_bytes,
                    index_interval_bytes=interval) as log:
        t = log.topic("t")
        for _ in range(n_ops):
            if rng.random() < 0.6:
                ts, k, v, h = random_record(rng)
                off = t.append(v, key=k, headers=h, timestamp=ts)
                recs = [(ts, k, v, h)]
            else:
                recs = [random_record(rng) for _ in range(rng.randint(1, 8))]
                off = t.append_batch(
                    [r[2] for r in recs], keys=[r[1] for r in recs],
                    headers=[r[3] for r in recs],
                    timestamps=[r[0] for r in recs])
            assert off == len(expected)
            expected += [(ts, k, v, header_pairs(h)) for ts, k, v, h in recs]
    return expected


def parse_topic(root):
    """Parse every file of topic t; return (segments, records) where
    segments are (base, path, batches, data_end, size)."""
    d = topic_dir(root)
    names = sorted(os.listdir(d))
    assert all(NAME.fullmatch(n) or n == CKPT_NAME for n in names), names
    logs = [n for n in names if n.endswith(".log")]
    segs, records, expect = [], [], None
    for name in logs:
        base = int(name[:20])
        data = read(os.path.join(d, name))
        assert expect is None or base == expect, "offset gap between segments"
        batches, data_end, expect = parse_segment(data, base)
        segs.append((base, os.path.join(d, name), batches, data_end,
                     len(data)))
        records += [r for b in batches for r in b.records]
    assert [r.offset for r in records] == list(range(len(records)))
    return segs, records


def test_parser_reads_every_field_and_checksum(tmp_path):
    interval = 64
    expected = write_mixed(tmp_path, seed=20240601, n_ops=160,
                           segment_bytes=1024, interval=interval)
    segs, records = parse_topic(tmp_path)
    got = [(r.ts, r.key, r.value, r.headers) for r in records]
    assert got == expected

    assert len(segs) >= 8, "the test should roll many segments"
    assert any(size > 1024 for *_, size in segs[:-1]), "no grown segment"
    d = topic_dir(tmp_path)
    for i, (base, path, batches, data_end, size) in enumerate(segs):
        idx_path = path[:-4] + ".idx"
        # closed: every segment, the active one too, ends at its data
        assert data_end == size, "a closed segment is truncated to its data"
        if i == len(segs) - 1:
            assert not os.path.exists(idx_path)  # the active one: no .idx
            continue
        (ibase, iend, seg_len, max_ts), entries = parse_index(read(idx_path))
        assert ibase == base
        assert iend == segs[i + 1][0]
        assert seg_len == size
        assert max_ts == max(b.max_ts for b in batches)
        check_index_points_at_records(entries, batches, base)
    assert sorted(os.listdir(d)) == sorted(
        [os.path.basename(s[1]) for s in segs]
        + [os.path.basename(s[1])[:-4] + ".idx" for s in segs[:-1]]
        + [CKPT_NAME])
    assert checkpoint_of(tmp_path) == 0  # sync none, never flushed


def test_index_entries_follow_the_documented_rule(tmp_path):
    interval = 64
    write_mixed(tmp_path, seed=7, n_ops=160, segment_bytes=1024,
                interval=interval)
    segs, _ = parse_topic(tmp_path)
    record_entries = 0
    for base, path, batches, _, _ in segs[:-1]:
        _, entries = parse_index(read(path[:-4] + ".idx"))
        assert entries == expected_entries(batches, base, interval)
        record_entries += sum(e[1] > e[2] for e in entries)
    assert record_entries > 0, "no entry inside a large batch was exercised"


def test_golden_index(tmp_path):
    with pylog.open(tmp_path, segment_bytes=1024,
                    index_interval_bytes=64) as log:
        t = log.topic("t")
        t.append(b"A" * 100, timestamp=10)
        t.append_batch([b"B" * 60] * 3, timestamps=[30, 20, 25])
        t.append(b"C" * 100, timestamp=15)
        t.append(b"D" * 400, timestamp=40)  # does not fit: seals segment 0
    d = topic_dir(tmp_path)
    assert sorted(os.listdir(d)) == [IDX0, SEG0, SEG5, CKPT_NAME]
    assert os.path.getsize(os.path.join(d, SEG0)) == 656
    assert os.path.getsize(os.path.join(d, SEG5)) == 32 + 48 + 20 + 400
    assert read(os.path.join(d, IDX0)).hex() == GOLDEN_IDX.hex()


def test_index_entry_at_a_batch_first_record(tmp_path):
    """§7.1/§7.3: a record entry may point at record 0 of a batch (pos =
    batch_pos + 48, rel = the batch's base) when the batch itself was not
    due; readers must accept it, in this process and from the .idx file."""
    with pylog.open(tmp_path, segment_bytes=1024,
                    index_interval_bytes=100) as log:
        t = log.topic("t")
        t.append(b"x" * 2, timestamp=1)            # batch at 32, length 70
        t.append_batch([b"a" * 30, b"b" * 30, b"c" * 30],
                       timestamps=[2, 3, 4])       # batch at 102, length 198
        assert [t.get(o).value for o in range(4)] == \
            [b"xx", b"a" * 30, b"b" * 30, b"c" * 30]
        t.append(b"z" * 900, timestamp=5)          # seals segment 0
        assert [t.get(o).value for o in range(4)] == \
            [b"xx", b"a" * 30, b"b" * 30, b"c" * 30]
    _, entries = parse_index(read(os.path.join(topic_dir(tmp_path), IDX0)))
    assert entries == [(0, 32, 32, 0, I64_MIN), (1, 150, 102, 0, 1),
                       (3, 250, 102, 0, 1)]
    with pylog.open(tmp_path) as log:  # the index now comes from the file
        t = log.topic("t")
        assert [bytes(t.get(o).value) for o in range(5)] == \
            [b"xx", b"a" * 30, b"b" * 30, b"c" * 30, b"z" * 900]


# ---- (d): the C checksum is XXH64 -------------------------------------------
def test_xxh64_published_vectors():
    assert xxh(b"") == 0xEF46DB3751D8E999  # the oracle is XXH64 itself
    assert B.xxh64(b"") == 0xEF46DB3751D8E999
    assert B.xxh64(b"abc") == xxh(b"abc")


def test_xxh64_every_length_0_to_300():
    rng = random.Random(300)
    data = rng.randbytes(300)
    for n in range(301):
        for seed in (0, rng.randrange(2**64), 2**64 - 1):
            assert B.xxh64(data[:n], seed) == xxh(data[:n], seed), (n, seed)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300), seed=st.integers(0, 2**64 - 1))
def test_xxh64_matches_xxhash(data, seed):
    assert B.xxh64(data, seed) == xxh(data, seed)


@settings(max_examples=20, deadline=None)
@given(size=st.sampled_from([4096, 65536 + 31, (1 << 20) + 7, 3 << 20]),
       seed=st.integers(0, 2**64 - 1), salt=st.integers(0, 2**32))
def test_xxh64_large_inputs(size, seed, salt):
    data = random.Random(salt).randbytes(size)
    assert B.xxh64(data, seed) == xxh(data, seed)


@pytest.mark.parametrize("shift", range(8))
def test_xxh64_unaligned_input(shift):
    buf = bytearray(random.Random(shift).randbytes(1000 + 8))
    p = B.ffi.cast("uint8_t *", B.ffi.from_buffer(buf)) + shift
    for n in (0, 7, 31, 32, 33, 999):
        assert B.lib.pl_xxh64(p, n, shift) == \
            xxh(buf[shift:shift + n], shift)


def large_records(rng):
    """Records whose batches are 32 KiB give or take a few bytes (a batch
    of >= 32 KiB goes out as pieces -- headers, key, value, header block --
    checksummed piece by piece; a smaller one is built in the map), and a
    few far larger ones. The key and header lengths move the boundaries
    between the pieces across every position of XXH64's 32-byte stripes."""
    keys = [None, b"", b"k", rng.randbytes(5), rng.randbytes(31),
            rng.randbytes(32), rng.randbytes(33), rng.randbytes(61)]
    headers = [None, [("a", b"")], [("hdr", rng.randbytes(13))],
               [("x", None), ("yy", rng.randbytes(40))]]
    out, i = [], 0
    for k in keys:
        for h in headers:
            for delta in (-3, -1, 0, 1, 7, 31, 32, 33, 63):
                i += 1
                size = 32 * 1024 + delta + rng.randrange(0, 3) * 32
                vlen = size - 68 - (len(k) if k else 0) - headers_size(h)
                out.append((TS + i, k, rng.randbytes(vlen), h))
    for size in (64 * 1024 - 68, 64 * 1024 + 1, 100_003, (1 << 20) - 100):
        i += 1
        out.append((TS + i, rng.choice(keys), rng.randbytes(size),
                    rng.choice(headers)))
    return out


def headers_size(headers):
    return len(enc_headers(headers))


@pytest.mark.parametrize("segment_bytes", [200_000, DEFAULT_SEGMENT_BYTES])
def test_large_appends_checksum_their_pieces(tmp_path, segment_bytes):
    """The streaming XXH64 of a large append equals xxhash.xxh64 of the
    batch's bytes 8..length on disk, for split points at every offset
    modulo 32; the records read back, before and after a reopen, and the
    index entries of the batches follow the documented rule."""
    rng = random.Random(32768)
    recs = large_records(rng)
    small = (TS, b"s", b"small", [("z", b"1")])  # in the map, between them
    want = []
    with pylog.open(tmp_path, segment_bytes=segment_bytes) as log:
        t = log.topic("t")
        for j, (ts, k, v, h) in enumerate(recs):
            assert t.append(v, key=k, headers=h, timestamp=ts) == len(want)
            want.append((ts, k, v, header_pairs(h)))
            if j % 5 == 0:
                t.append(small[2], key=small[1], headers=small[3],
                         timestamp=small[0])
                want.append(small[:3] + (header_pairs(small[3]),))
        got = [(r.timestamp, r.key, bytes(r.value), r.headers)
               for r in t.read(0, max_records=len(want))]
        assert got == want
    segs, records = parse_topic(tmp_path)  # checks every batch checksum
    assert [(r.ts, r.key, r.value, r.headers) for r in records] == want
    assert sum(b.length >= 32 * 1024 for _, _, bs, _, _ in segs
               for b in bs) > len(recs) // 2
    for base, path, batches, data_end, size in segs:
        assert data_end == size
        if path != segs[-1][1]:
            _, entries = parse_index(read(path[:-4] + ".idx"))
            assert entries == expected_entries(batches, base, 4096)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert B.lib.pl_topic_truncated_bytes(t._h) == 0
        got = [(r.timestamp, r.key, bytes(r.value), r.headers)
               for r in t.read(0, max_records=len(want))]
        assert got == want


def test_large_appends_leave_zeros_past_the_data(tmp_path):
    """A large append may write zeros past its batch (to align the page
    cache, csrc/topic.c): the file past the data end stays all zeros, so a
    crash right after it leaves nothing for recovery to cut."""
    d = topic_dir(tmp_path)
    seg = os.path.join(d, SEG0)
    sizes = [40_000, 65_536, 70_001, 33_333, 5, 131_072]
    with pylog.open(tmp_path, segment_bytes=1_000_003) as log:
        t = log.topic("t")
        for n in sizes:
            t.append(b"\xa5" * n)
            data = read(seg)
            assert len(data) == 1_000_003  # preallocated, not extended
            _, data_end, _ = parse_segment(data, 0)
            assert not any(data[data_end:])
        # a large batch (written from a buffer) is padded the same way
        t.append_batch([b"\x3c" * 100] * 400)
        data = read(seg)
        _, data_end, _ = parse_segment(data, 0)
        assert data_end % 65536 and not any(data[data_end:])
        # A batch ending 10 bytes before the cap: no pad past the cap.
        last = 1_000_003 - data_end - 68 - 10
        t.append(b"\x5a" * last)
        data = read(seg)
        assert len(data) == 1_000_003
        assert parse_segment(data, 0)[1] == 1_000_003 - 10
        assert data[-10:] == bytes(10)
        at_crash = snapshot(d)
    for name, data in at_crash.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert B.lib.pl_topic_truncated_bytes(t._h) == 0
        assert [len(r.value) for r in t.read(0)] == \
            sizes + [100] * 400 + [last]
        assert t.append(b"\x5a" * 5) == len(sizes) + 401  # no room: rolls
    assert [n for n in sorted(os.listdir(d)) if n.endswith(".log")] == \
        [SEG0, "%020d.log" % (len(sizes) + 401)]


# ---- (e): the segment header checksum covers bytes 0..24 --------------------
def one_record_log(root):
    with pylog.open(root) as log:
        log.topic("t").append(b"hi", key=b"k", timestamp=TS)
    return os.path.join(topic_dir(root), SEG0)


def test_segment_header_checksum_covers_bytes_0_to_24(tmp_path):
    path = one_record_log(tmp_path)
    h = read(path)[:32]
    (stored,) = struct.unpack_from("<Q", h, 24)
    assert stored == xxh(h[:24])
    # other plausible ranges give other values: the assert above decides
    assert stored not in (xxh(h[:16]), xxh(h[8:24]), xxh(h[:8]),
                          xxh(h[:24] + bytes(8)))


def make_version_2(path):
    """Rewrite the segment header at path as a valid header of version 2;
    return the header written."""
    h = bytearray(read(path)[:32])
    h[8:12] = struct.pack("<I", 2)
    h[24:32] = struct.pack("<Q", xxh(h[:24]))
    patch(path, 0, h)
    return bytes(h)


def test_header_checksummed_over_0_to_24_is_accepted(tmp_path):
    """Version 2 with a checksum over bytes 0..24 is a valid header of
    another version: open refuses it and leaves the file alone."""
    path = one_record_log(tmp_path)
    make_version_2(path)
    before = read(path)
    with pylog.open(tmp_path) as log:
        with pytest.raises(pylog.FormatVersionError):
            log.topic("t")
    assert read(path) == before


@pytest.mark.parametrize("lo,hi", [(0, 16), (8, 24), (0, 32), (0, 23)])
def test_header_checksummed_over_other_ranges_is_torn(tmp_path, lo, hi):
    """A checksum over any other range does not match: the header counts as
    damaged, the file is saved to .damaged (§6.1 step 3), the active
    segment's header is rewritten and its data kept."""
    path = one_record_log(tmp_path)
    good = read(path)[:32]
    h = bytearray(good)
    h[8:12] = struct.pack("<I", 2)
    h[24:32] = bytes(8)
    h[24:32] = struct.pack("<Q", xxh(h[lo:hi]))
    patch(path, 0, h)
    before = read(path)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert [bytes(r.value) for r in t.read()] == [b"hi"]
    assert read(path)[:32] == good
    assert read(path + ".damaged") == before


def test_batch_checksum_covers_bytes_8_to_length(tmp_path):
    path = one_record_log(tmp_path)
    data = bytearray(read(path))
    length = struct.unpack_from("<I", data, 32 + 8)[0]
    assert len(data) == 32 + length  # closed: the file is its data
    vpos = 32 + 48 + 20 + 1  # the value, after key "k"
    data[vpos:vpos + 2] = b"HI"
    data[32:40] = struct.pack("<Q", xxh(data[40:32 + length]))
    patch(path, 0, data[:32 + length])
    with pylog.open(tmp_path) as log:
        assert [bytes(r.value) for r in log.topic("t").read()] == [b"HI"]
    # the same edit with a checksum over the records only is garbage
    data[32:40] = struct.pack("<Q", xxh(data[80:32 + length]))
    patch(path, 0, data[:32 + length])
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.end_offset == 0
        assert t.stats()["truncated_bytes"] == length  # §6.1 step 7
        assert not any(read(path)[32:])  # the torn tail was zeroed
    assert read(path) == enc_seg_header(0)  # and cut at close


# ---- recovery: what lies past the data (§6.1) -------------------------------
def test_torn_tail_is_cut_and_zeroed(tmp_path):
    path = one_record_log(tmp_path)
    end = 32 + 48 + 20 + 1 + 2
    assert os.path.getsize(path) == end
    patch(path, end, b"\x01" + bytes(100) + b"garbage")
    raw = read(path)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.end_offset == 1
        assert t.stats()["truncated_bytes"] == \
            expected_zeroed(raw, end, len(raw)) == len(raw) - end
        data = read(path)
        assert len(data) == DEFAULT_SEGMENT_BYTES
        assert not any(data[end:])
        parse_segment(data, 0)
    assert os.path.getsize(path) == end


@pytest.mark.parametrize("file_size", ["closed", "preallocated"])
def test_stale_batch_after_a_clean_end_stays_dead(tmp_path, file_size):
    """§6.1 step 7: bytes past a clean end (a later batch whose page reached
    the disk when an earlier one's did not) are zeroed too, so an append
    filling the gap cannot bring them back."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        for v in (b"A" * 10, b"B" * 10, b"C" * 10):  # batches of 78 bytes
            t.append(v, timestamp=1)
    path = os.path.join(topic_dir(tmp_path), SEG0)
    assert os.path.getsize(path) == 32 + 3 * 78
    if file_size == "preallocated":  # as a process that did not close
        os.truncate(path, DEFAULT_SEGMENT_BYTES)
    # power loss: the page of batch 1 never reached the disk, batch 2's did
    patch(path, 32 + 78, bytes(78))
    raw = read(path)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.end_offset == 1
        zeroed = expected_zeroed(raw, 32 + 78, len(raw))
        assert zeroed == (156 if file_size == "closed" else 160)
        assert t.stats()["truncated_bytes"] == zeroed
        assert not any(read(path)[32 + 78:])
        t.append(b"X" * 10, timestamp=2)  # offset 1, same length as B
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert [bytes(r.value) for r in t.read()] == [b"A" * 10, b"X" * 10]
        assert t.end_offset == 2


def test_a_file_not_closed_keeps_its_preallocation(tmp_path):
    """A process that dies leaves the active segment at its capacity and no
    checkpoint (sync none, no flush); the next open keeps the data."""
    code = (f"import os, pylog\n"
            f"log = pylog.open({str(tmp_path)!r}, segment_bytes=4096)\n"
            f"t = log.topic('t')\n"
            f"t.append(b'hi', key=b'k', headers=[('u', b'C')], "
            f"timestamp={TS})\n"
            f"os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    d = topic_dir(tmp_path)
    path = os.path.join(d, SEG0)
    assert os.listdir(d) == [SEG0]
    data = read(path)
    assert len(data) == 4096
    assert data[:len(GOLDEN_ONE)] == GOLDEN_ONE
    assert not any(data[len(GOLDEN_ONE):])
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.end_offset == 1
        assert t.durable_offset == 0
        assert t.stats()["truncated_bytes"] == 0
    assert read(path) == GOLDEN_ONE


# ---- damaged active headers: the .damaged copy (§6.1 step 3) ----------------
@pytest.mark.parametrize("kind", ["flipped", "foreign"])
def test_damaged_active_header_is_saved_and_the_topic_opens(tmp_path, kind):
    path = one_record_log(tmp_path)
    if kind == "flipped":  # a pylog segment with one header byte changed
        patch(path, 3, b"X")
        kept = [b"hi"]
    else:  # not a pylog file at all
        with open(path, "wb") as f:
            f.write(b"\x7fELF" + random.Random(5).randbytes(296))
        kept = []
    before = read(path)
    d = topic_dir(tmp_path)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert [bytes(r.value) for r in t.read()] == kept
        assert read(path + ".damaged") == before
        assert read(path)[:32] == enc_seg_header(0)
    assert sorted(os.listdir(d)) == [SEG0, SEG0 + ".damaged", CKPT_NAME]
    with pylog.open(tmp_path) as log:  # the copy is never read nor changed
        assert [bytes(r.value) for r in log.topic("t").read()] == kept
    assert read(path + ".damaged") == before
    if kind == "foreign":
        assert read(path) == enc_seg_header(0)


def test_unwritten_header_is_rewritten_without_a_copy(tmp_path):
    path = one_record_log(tmp_path)
    patch(path, 0, bytes(32))
    with pylog.open(tmp_path) as log:
        assert [bytes(r.value) for r in log.topic("t").read()] == [b"hi"]
    assert sorted(os.listdir(topic_dir(tmp_path))) == [SEG0, CKPT_NAME]
    assert read(path)[:32] == enc_seg_header(0)


# ---- file names: leftovers removed at open (§2.1, §6 step 1) ----------------
def test_orphan_index_files_are_removed_at_open(tmp_path):
    with pylog.open(tmp_path, segment_bytes=1024) as log:
        t = log.topic("t")
        for i in range(12):  # 5 records of 168 bytes per segment
            t.append(b"v" * 100, timestamp=i)
    d = topic_dir(tmp_path)
    seg10 = "00000000000000000010.log"
    assert sorted(os.listdir(d)) == [IDX0, SEG0, IDX5, SEG5, seg10,
                                     CKPT_NAME]
    # retention unlinks B.log, then B.idx (§9): a crash between the two
    os.unlink(os.path.join(d, SEG0))
    for name in ("00000000000000000005.idx.tmp",   # interrupted .idx write
                 "00000000000000000099.idx",       # no 99.log either
                 "5.idx", "00000000000000000000.idx.bak"):  # not our names
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"leftover")
    idx5 = read(os.path.join(d, IDX5))
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert sorted(os.listdir(d)) == sorted(
            [IDX5, SEG5, seg10, CKPT_NAME, "5.idx",
             "00000000000000000000.idx.bak"])
        assert t.start_offset == 5
        assert [t.get(o).timestamp for o in range(5, 12)] == \
            list(range(5, 12))
    assert read(os.path.join(d, IDX5)) == idx5  # kept: its segment exists


# ---- segment sizes (§4) -----------------------------------------------------
def test_segment_capacity_rule(tmp_path):
    """A new segment is segment_bytes long while active, unless its first
    batch needs more: then 32 + length rounded up to 4096. An empty active
    segment grows instead of rolling. Closed, every file is its data."""
    d = topic_dir(tmp_path)

    def size(name, topic="t"):
        return os.path.getsize(os.path.join(topic_dir(tmp_path, topic), name))

    with pylog.open(tmp_path, segment_bytes=1024) as log:
        t = log.topic("t")
        t.append(b"a", timestamp=1)          # length 69
        t.append(b"b" * 924, timestamp=2)    # length 992: 32 + 992 = 1024
        assert size("00000000000000000001.log") == 1024
        t.append(b"c" * 933, timestamp=3)    # length 1001: 1033 > 1024
        assert size("00000000000000000002.log") == 4096
        t.append(b"d" * 5000, timestamp=4)   # length 5068: 5100
        assert size("00000000000000000003.log") == 8192
        u = log.topic("u")
        u.append(b"e" * 2000, timestamp=5)   # empty segment: grown
        assert os.listdir(topic_dir(tmp_path, "u")) == [SEG0]
        assert size(SEG0, "u") == 4096
    assert [size(n) for n in sorted(os.listdir(d)) if n.endswith(".log")] \
        == [32 + 69, 32 + 992, 32 + 1001, 32 + 5068]
    assert size(SEG0, "u") == 32 + 2068


# ---- the checkpoint (§8) ----------------------------------------------------
def test_golden_checkpoints_follow_the_spec():
    for offset, golden in GOLDEN_CKPT.items():
        assert enc_checkpoint(offset).hex() == golden.hex()
        assert parse_checkpoint(golden) == offset


@pytest.mark.parametrize("sync", ["none", "interval", "always"])
def test_golden_checkpoint(tmp_path, sync):
    ckpt = os.path.join(topic_dir(tmp_path), CKPT_NAME)
    with pylog.open(tmp_path, sync=sync, sync_interval_ms=3_600_000) as log:
        t = log.topic("t")
        if sync == "none":
            assert not os.path.exists(ckpt)
        else:  # the flush at open (§6 step 6)
            assert read(ckpt).hex() == GOLDEN_CKPT[0].hex()
        t.append(b"x", timestamp=1)
        t.flush()
        assert read(ckpt).hex() == GOLDEN_CKPT[1].hex()
        t.append(b"y", timestamp=2)
        t.append(b"z", timestamp=3)
        assert read(ckpt) == GOLDEN_CKPT[1]  # appends do not write it
    expect = 1 if sync == "none" else 3     # close: the durable offset
    assert read(ckpt).hex() == GOLDEN_CKPT[expect].hex()
    assert sorted(os.listdir(topic_dir(tmp_path))) == [SEG0, CKPT_NAME]
    with pylog.open(tmp_path) as log:  # sync none: it is where open starts
        assert log.topic("t").durable_offset == expect


def test_checkpoint_checksum_covers_bytes_0_to_16(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        t.append(b"x")
        t.flush()
    b = read(os.path.join(topic_dir(tmp_path), CKPT_NAME))
    (stored,) = struct.unpack_from("<Q", b, 16)
    assert stored == xxh(b[:16])
    # other plausible ranges and seeds give other values
    assert stored not in (xxh(b[8:16]), xxh(b[:8]), xxh(b[:16], 1),
                          xxh(b[:16] + bytes(8)))


@pytest.mark.parametrize("sync", ["none", "interval", "always"])
def test_checkpoint_at_roll(tmp_path, sync):
    """§8.2: a roll writes the sealed segment's end in sync modes interval
    and always, and nothing in sync mode none."""
    ckpt = os.path.join(topic_dir(tmp_path), CKPT_NAME)
    with pylog.open(tmp_path, sync=sync, sync_interval_ms=3_600_000,
                    segment_bytes=1024) as log:
        t = log.topic("t")
        for i in range(6):  # 5 records of 168 bytes per segment
            t.append(b"v" * 100, timestamp=i)
        assert SEG5 in os.listdir(topic_dir(tmp_path))
        if sync == "none":
            assert not os.path.exists(ckpt)
        else:
            assert read(ckpt).hex() == enc_checkpoint(5).hex()


# (content of the checkpoint file, expected durable_offset at open) with
# start_offset 5 and end_offset 20
_FORGED = {
    "valid": (enc_checkpoint(12), 12),
    "valid, longer file": (enc_checkpoint(12) + b"\0", 12),
    "above the end": (enc_checkpoint(99), 20),
    "below the start": (enc_checkpoint(2), 5),
    "checksum over 8..16": (enc_checkpoint(12, 8, 16), 5),
    "checksum over 0..8": (enc_checkpoint(12, 0, 8), 5),
    "checksum over 0..24": (enc_checkpoint(12, 0, 24), 5),
    "other magic": (b"PYLOGCKQ" + enc_checkpoint(12)[8:16]
                    + struct.pack("<Q", xxh(b"PYLOGCKQ"
                                            + enc_checkpoint(12)[8:16])), 5),
    "short": (enc_checkpoint(12)[:23], 5),
    "missing": (None, 5),
}


def segments_from_5(root):
    """Segments 5 and 10 (sealed, 5 records each) and 15 (active): 20
    records are written to segments 0, 5, 10, 15, then segment 0 is removed
    as retention removes it (§9). start_offset 5, end_offset 20."""
    with pylog.open(root, segment_bytes=1024) as log:
        t = log.topic("t")
        for i in range(20):
            t.append(b"v" * 100, timestamp=i)
    d = topic_dir(root)
    os.unlink(os.path.join(d, SEG0))
    os.unlink(os.path.join(d, IDX0))
    return d


def put_checkpoint(d, content):
    path = os.path.join(d, CKPT_NAME)
    if content is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        with open(path, "wb") as f:
            f.write(content)


@pytest.mark.parametrize("case", list(_FORGED))
def test_checkpoint_is_where_durable_offset_starts(tmp_path, case):
    content, durable = _FORGED[case]
    d = segments_from_5(tmp_path)
    put_checkpoint(d, content)
    with pylog.open(tmp_path) as log:  # sync none: no flush at open
        t = log.topic("t")
        assert (t.start_offset, t.end_offset) == (5, 20)
        assert t.durable_offset == durable


@pytest.mark.parametrize("ckpt,fsyncs", [(20, 1), (15, 1), (14, 2), (10, 2),
                                          (9, 3), (None, 3)])
def test_sealed_segments_below_the_checkpoint_are_not_synced(tmp_path, ckpt,
                                                             fsyncs):
    """§6 steps 3 and 6: the flush at open syncs the active segment and the
    sealed segments whose end is above the checkpoint, and no others.
    Segments 5 and 10 end at 10 and 15, the active one at 20. The count of
    fdatasyncs is observed by failing the nth one."""
    d = segments_from_5(tmp_path)
    content = None if ckpt is None else enc_checkpoint(ckpt)
    for nth, ok in ((fsyncs + 1, True), (fsyncs, False)):
        put_checkpoint(d, content)
        with pylog.open(tmp_path, sync="always") as log:
            B.fault_set("fsync", nth=nth)
            try:
                if ok:
                    t = log.topic("t")
                    assert t.durable_offset == t.end_offset == 20
                else:
                    with pytest.raises(pylog.PylogIOError):
                        log.topic("t")
            finally:
                B.fault_clear()


# ---- retention: whole segments, oldest first (§9) ---------------------------
def test_retention_deletes_whole_segments_oldest_first(tmp_path):
    with pylog.open(tmp_path, segment_bytes=1024) as log:
        t = log.topic("t")
        for i in range(20):  # segments 0, 5, 10 (sealed) and 15
            t.append(b"v" * 100, timestamp=i)
    d = topic_dir(tmp_path)
    before = snapshot(d)
    gone = {SEG0, IDX0, SEG5, IDX5}
    assert gone < set(before)
    with pylog.open(tmp_path) as log:
        # 3 x (872 + 80) + 1024 preallocated = 3880 bytes: two segments go
        t = log.topic("t", retention_bytes=2500)
        assert sorted(os.listdir(d)) == sorted(set(before) - gone)
        assert t.start_offset == 10
        assert t.stats()["retention_dropped_records"] == 10
        assert bytes(t.get(10).value) == b"v" * 100
    # nothing else was written: the rest is byte for byte what it was
    assert snapshot(d) == {k: v for k, v in before.items() if k not in gone}


# ---- versions ---------------------------------------------------------------
def test_unknown_version_of_a_sealed_segment_is_refused(tmp_path):
    with pylog.open(tmp_path, segment_bytes=1024) as log:
        t = log.topic("t")
        for i in range(20):
            t.append(b"v" * 100, timestamp=i)
    path = os.path.join(topic_dir(tmp_path), SEG0)
    h = make_version_2(path)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        with pytest.raises(pylog.FormatVersionError):
            t.get(0)
        assert bytes(t.get(19).value) == b"v" * 100  # other segments read
    assert read(path)[:32] == h


# ---- the catalog (§10) ------------------------------------------------------
def catalog_dbs(root):
    env = lmdb.open(os.path.join(root, "catalog"), readonly=True,
                    max_dbs=8, lock=False)
    try:
        with env.begin() as txn:  # named dbs are keys of the main db
            out = {b"": {k for k, _ in txn.cursor()}}
        for name in out[b""]:
            db = env.open_db(name, create=False)
            with env.begin() as txn:
                out[name] = dict(txn.cursor(db=db))
    finally:
        env.close()
    return out


def test_catalog_layout(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        log.topic("u", segment_bytes=4096, retention_ms=60_000,
                  on_full="block", retain_until_consumed=True,
                  max_bytes=1 << 20)
        for _ in range(5):
            t.append(b"x")
        with log.consumer("g", ["t", "u"]) as c:
            c.commit({"t": 3})
        with log.consumer("gé", "t", start="latest"):
            pass
    dbs = catalog_dbs(tmp_path)
    assert dbs[b""] == {b"cursors", b"meta", b"topics"}
    assert dbs[b"meta"] == {b"format_version": b"1"}
    assert dbs[b"topics"] == {
        b"t": DEFAULT_CONFIG_JSON,
        b"u": b'{"full_timeout_ms": 10000, "index_interval_bytes": 4096, '
              b'"max_bytes": 1048576, "max_record_bytes": 1048576, '
              b'"on_full": "block", "retain_until_consumed": true, '
              b'"retention_bytes": 0, "retention_ms": 60000, '
              b'"segment_bytes": 4096}',
    }
    assert dbs[b"cursors"] == {
        b"g\x00t": bytes.fromhex("0300000000000000"),
        b"g\x00u": bytes.fromhex("0000000000000000"),
        "gé".encode() + b"\x00t": bytes.fromhex("0500000000000000"),
    }
    assert json.loads(dbs[b"topics"][b"u"])["retain_until_consumed"] is True


def test_catalog_of_a_new_log_has_every_db(tmp_path):
    pylog.open(tmp_path).close()
    dbs = catalog_dbs(tmp_path)
    assert dbs == {b"": {b"cursors", b"meta", b"topics"},
                   b"meta": {b"format_version": b"1"}, b"topics": {},
                   b"cursors": {}}


def test_topic_config_without_the_new_keys_is_completed(tmp_path):
    one_record_log(tmp_path)
    env = lmdb.open(os.path.join(tmp_path, "catalog"), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"topics")) as txn:
        txn.put(b"t", b'{"index_interval_bytes": 4096, "max_record_bytes": '
                      b'1048576, "segment_bytes": 16777216}')
    env.close()
    # the log's topic defaults do not fill a stored record: the table's do
    with pylog.open(tmp_path, retention_ms=5, on_full="drop_oldest") as log:
        t = log.topic("t")
        assert t.config == json.loads(DEFAULT_CONFIG_JSON)
        assert [bytes(r.value) for r in t.read()] == [b"hi"]
    assert catalog_dbs(tmp_path)[b"topics"] == {b"t": DEFAULT_CONFIG_JSON}


def test_unknown_catalog_version_is_refused(tmp_path):
    one_record_log(tmp_path)
    d = topic_dir(tmp_path)
    before = snapshot(d)
    assert sorted(before) == [SEG0, CKPT_NAME]
    env = lmdb.open(os.path.join(tmp_path, "catalog"), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format_version", b"2")
    env.close()
    with pytest.raises(pylog.FormatVersionError):
        pylog.open(tmp_path)
    env = lmdb.open(os.path.join(tmp_path, "catalog"), max_dbs=8)
    with env.begin(db=env.open_db(b"meta")) as txn:
        assert txn.get(b"format_version") == b"2"
    env.close()
    assert snapshot(d) == before


# ---- open and recovery leave no surprises on disk -----------------------------
def test_refused_active_segment_leaves_the_directory_alone(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        t.append(b"hi", timestamp=TS)
        t.flush()  # checkpoint 1
    d = topic_dir(tmp_path)
    path = os.path.join(d, SEG0)
    make_version_2(path)
    before = snapshot(d)
    with pylog.open(tmp_path) as log:
        with pytest.raises(pylog.FormatVersionError):
            log.topic("t")
    assert snapshot(d) == before


def test_short_foreign_file_is_saved(tmp_path):
    path = one_record_log(tmp_path)
    with open(path, "wb") as f:
        f.write(b"short")
    with pylog.open(tmp_path) as log:
        assert log.topic("t").end_offset == 0
    assert os.path.exists(path + ".damaged")
    assert read(path + ".damaged") == b"short"


def test_a_second_damaged_header_keeps_the_first_copy(tmp_path):
    path = one_record_log(tmp_path)
    d = topic_dir(tmp_path)
    copies = []
    for i in range(2):
        patch(path, 0, b"FOREIGN%d" % i)
        copies.append(read(path))
        with pylog.open(tmp_path) as log:
            assert [bytes(r.value) for r in log.topic("t").read()] == [b"hi"]
    saved = [read(os.path.join(d, n)) for n in os.listdir(d)
             if n.startswith(SEG0 + ".damaged")]
    assert sorted(saved) == sorted(copies)
