"""Golden-bytes tests that pin the on-disk format of docs/FORMAT.md.

The golden hex literals below are the worked examples of FORMAT.md (§3.6,
§3.7, §7.4). The encoder and the parser in this file are written from the
spec with struct and the `xxhash` package only -- they share no code with
pylog -- so a change of layout, checksum range, checksum algorithm or index
rule in the C core or in the header encoding fails here.
"""
import dataclasses
import json
import os
import random
import re
import struct

import lmdb
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import pylog
from pylog import _binding as B

# ---- the spec (FORMAT.md), as constants ------------------------------------
VERSION = 1
SEG_HDR = struct.Struct("<8sIIqQ")        # §3.1: 32 bytes
BATCH_HDR = struct.Struct("<QIIqqqII")    # §3.2: 48 bytes
REC_HDR = struct.Struct("<qiII")          # §3.2: 20 bytes
IDX_HDR = struct.Struct("<Q8sIIqqqq")     # §7.1: 56 bytes
IDX_ENTRY = struct.Struct("<IIIIq")       # §7.1: 24 bytes
H_KEY = struct.Struct("<H")               # §3.3
H_VAL = struct.Struct("<i")
I64_MIN = -(2**63)
NAME = re.compile(r"(\d{20})\.(log|idx)")
SEG0 = "00000000000000000000.log"
IDX0 = "00000000000000000000.idx"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024

assert (SEG_HDR.size, BATCH_HDR.size, REC_HDR.size, IDX_HDR.size,
        IDX_ENTRY.size) == (32, 48, 20, 56, 24)

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


def xxh(b, seed=0):
    return xxhash.xxh64(bytes(b), seed=seed).intdigest()


# ---- an encoder written from the spec -------------------------------------
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


# ---- a parser written from the spec ---------------------------------------
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
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.append(b"hi", key=b"k", headers=[("u", b"C")],
                        timestamp=TS) == 0
    assert sorted(os.listdir(tmp_path)) == ["LOCK", "catalog", "topics"]
    assert os.listdir(topic_dir(tmp_path)) == [SEG0]
    data = read(os.path.join(topic_dir(tmp_path), SEG0))
    n = len(GOLDEN_ONE)
    assert data[:n].hex() == GOLDEN_ONE.hex()
    assert len(data) == DEFAULT_SEGMENT_BYTES  # preallocated
    assert not any(data[n:])  # clean end: the zero tail


def test_golden_batch_of_three(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.append_batch(THREE_VALUES, keys=THREE_KEYS,
                              headers=THREE_HEADERS,
                              timestamps=THREE_TS) == 0
    data = read(os.path.join(topic_dir(tmp_path), SEG0))
    n = len(GOLDEN_THREE)
    assert data[:n].hex() == GOLDEN_THREE.hex()
    assert not any(data[n:])


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
        f.write(raw)  # a short file: the clean end is the end of the file
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        got = [(r.timestamp, r.key, bytes(r.value), r.headers)
               for r in t.read()]
        assert got == expect
        assert t.end_offset == len(expect)
        assert t.offset_for_time(max(e[0] for e in expect)) == \
            [e[0] for e in expect].index(max(e[0] for e in expect))


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
    assert all(NAME.fullmatch(n) for n in names), names
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
        if i == len(segs) - 1:
            # the active segment: preallocated, zeros after the data, no .idx
            assert size >= data_end
            assert not os.path.exists(idx_path)
            continue
        assert data_end == size, "a sealed segment is truncated to its data"
        (ibase, iend, seg_len, max_ts), entries = parse_index(read(idx_path))
        assert ibase == base
        assert iend == segs[i + 1][0]
        assert seg_len == size
        assert max_ts == max(b.max_ts for b in batches)
        check_index_points_at_records(entries, batches, base)
    assert sorted(os.listdir(d)) == sorted(
        [os.path.basename(s[1]) for s in segs]
        + [os.path.basename(s[1])[:-4] + ".idx" for s in segs[:-1]])


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
    assert sorted(os.listdir(d)) == [IDX0, SEG0,
                                     "00000000000000000005.log"]
    assert os.path.getsize(os.path.join(d, SEG0)) == 656
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


def test_header_checksummed_over_0_to_24_is_accepted(tmp_path):
    """Version 2 with a checksum over bytes 0..24 is a valid header of
    another version: open refuses it and leaves the file alone."""
    path = one_record_log(tmp_path)
    h = bytearray(read(path)[:32])
    h[8:12] = struct.pack("<I", 2)
    h[24:32] = struct.pack("<Q", xxh(h[:24]))
    patch(path, 0, h)
    before = read(path)
    with pylog.open(tmp_path) as log:
        with pytest.raises(pylog.FormatVersionError):
            log.topic("t")
    assert read(path) == before


@pytest.mark.parametrize("lo,hi", [(0, 16), (8, 24), (0, 32), (0, 23)])
def test_header_checksummed_over_other_ranges_is_torn(tmp_path, lo, hi):
    """A checksum over any other range does not match: the header counts as
    torn, the active segment's header is rewritten and its data kept."""
    path = one_record_log(tmp_path)
    good = read(path)[:32]
    h = bytearray(good)
    h[8:12] = struct.pack("<I", 2)
    h[24:32] = bytes(8)
    h[24:32] = struct.pack("<Q", xxh(h[lo:hi]))
    patch(path, 0, h)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert [bytes(r.value) for r in t.read()] == [b"hi"]
    assert read(path)[:32] == good


def test_batch_checksum_covers_bytes_8_to_length(tmp_path):
    path = one_record_log(tmp_path)
    data = bytearray(read(path))
    length = struct.unpack_from("<I", data, 32 + 8)[0]
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
        assert log.topic("t").end_offset == 0
    assert not any(read(path)[32:])  # the torn tail was zeroed (§6.1)


# ---- recovery and versions ---------------------------------------------------
def test_torn_tail_is_cut_and_zeroed(tmp_path):
    path = one_record_log(tmp_path)
    end = 32 + 48 + 20 + 1 + 2
    patch(path, end, b"\x01" + bytes(100) + b"garbage")
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.end_offset == 1
        assert B.lib.pl_topic_truncated_bytes(t._h) > 0
    data = read(path)
    assert not any(data[end:])
    parse_segment(data, 0)


def test_unknown_version_of_a_sealed_segment_is_refused(tmp_path):
    with pylog.open(tmp_path, segment_bytes=1024) as log:
        t = log.topic("t")
        for i in range(20):
            t.append(b"v" * 100, timestamp=i)
    path = os.path.join(topic_dir(tmp_path), SEG0)
    h = bytearray(read(path)[:32])
    h[8:12] = struct.pack("<I", 2)
    h[24:32] = struct.pack("<Q", xxh(h[:24]))
    patch(path, 0, h)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        with pytest.raises((pylog.CorruptionError, pylog.FormatVersionError)):
            t.get(0)
    assert read(path)[:32] == bytes(h)


def test_catalog_layout(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        log.topic("u", segment_bytes=4096)
    env = lmdb.open(os.path.join(tmp_path, "catalog"), readonly=True,
                    max_dbs=8, lock=False)
    try:
        with env.begin() as txn:  # named dbs are keys of the main db
            assert {b"meta", b"topics"} <= {k for k, _ in txn.cursor()}
        meta = env.open_db(b"meta", create=False)
        topics = env.open_db(b"topics", create=False)
        with env.begin() as txn:
            assert dict(txn.cursor(db=meta)) == {b"format_version": b"1"}
            got = dict(txn.cursor(db=topics))
    finally:
        env.close()
    assert got == {
        b"t": b'{"index_interval_bytes": 4096, "max_record_bytes": 1048576,'
              b' "segment_bytes": 16777216}',
        b"u": b'{"index_interval_bytes": 4096, "max_record_bytes": 1048576,'
              b' "segment_bytes": 4096}',
    }
    assert json.loads(got[b"u"])["segment_bytes"] == 4096


def test_unknown_catalog_version_is_refused(tmp_path):
    path = one_record_log(tmp_path)
    before = read(path)
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
    assert read(path) == before
    assert os.listdir(topic_dir(tmp_path)) == [SEG0]


# ---- known deviation (FORMAT.md §10) ---------------------------------------
@pytest.mark.xfail(strict=True, reason="recovery zeroes the tail only after "
                   "garbage, not after a clean-end marker: a stale batch "
                   "past a zeroed gap comes back (FORMAT.md §10)")
def test_stale_batch_after_a_clean_end_stays_dead(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        for v in (b"A" * 10, b"B" * 10, b"C" * 10):  # batches of 78 bytes
            t.append(v, timestamp=1)
    path = os.path.join(topic_dir(tmp_path), SEG0)
    # power loss: the page of batch 1 never reached the disk, batch 2's did
    patch(path, 32 + 78, bytes(78))
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.end_offset == 1
        t.append(b"X" * 10, timestamp=2)  # offset 1, same length as B
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert [bytes(r.value) for r in t.read()] == [b"A" * 10, b"X" * 10]
