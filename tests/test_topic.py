"""Topic: appends, reads, time lookups, durability and bad input."""
import collections
import gc
import os
import time

import pytest

import pylog
import pylog._topic
from conftest import now_ms, segment_files


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path / "log")
    yield lg
    lg.close()


@pytest.fixture
def topic(log):
    return log.topic("t")


def values_of(topic, *args):
    return [bytes(r.value) for r in topic.read(*args)]


# ---- appends ------------------------------------------------------------------

def test_append_returns_dense_offsets(topic):
    assert [topic.append(b"v%d" % i) for i in range(10)] == list(range(10))
    assert topic.start_offset == 0
    assert topic.end_offset == 10
    assert len(topic) == 10


def test_get_returns_what_was_appended(topic):
    off = topic.append(b"21.5", key=b"dev-7", headers={"unit": b"C"},
                       timestamp=1234)
    rec = topic.get(off)
    assert (rec.offset, rec.timestamp, rec.key, bytes(rec.value),
            rec.headers, rec.topic) == (0, 1234, b"dev-7", b"21.5",
                                        (("unit", b"C"),), "t")


def test_str_value_is_encoded_as_utf8(topic):
    off = topic.append("héllo €", key="ключ")
    rec = topic.get(off)
    assert bytes(rec.value) == "héllo €".encode("utf-8")
    assert rec.key == "ключ".encode("utf-8")


def test_bytes_like_values_and_keys_are_accepted(topic):
    topic.append(bytearray(b"ba"), key=memoryview(b"mv"))
    topic.append(memoryview(b"xxmvxx")[2:4])
    assert values_of(topic) == [b"ba", b"mv"]
    assert topic.get(0).key == b"mv"


def test_empty_value_round_trips(topic):
    topic.append(b"")
    assert bytes(topic.get(0).value) == b""


def test_empty_key_is_distinct_from_no_key(topic):
    topic.append(b"a", key=b"")
    topic.append(b"b")
    assert topic.get(0).key == b""
    assert topic.get(1).key is None


@pytest.mark.parametrize("bad", [5, 1.5, None, [1, 2], {"a": 1}, object()],
                         ids=repr)
def test_non_bytes_value_raises_type_error_and_writes_nothing(topic, bad):
    topic.append(b"first")
    with pytest.raises(TypeError) as exc:
        topic.append(bad)
    assert isinstance(exc.value, pylog.InvalidRecordError)
    assert topic.end_offset == 1
    assert topic.append(b"next") == 1


@pytest.mark.parametrize("bad", [5, 1.5, [1], object()], ids=repr)
def test_non_bytes_key_raises_type_error_and_writes_nothing(topic, bad):
    with pytest.raises(pylog.InvalidRecordError):
        topic.append(b"v", key=bad)
    assert topic.end_offset == 0


@pytest.mark.parametrize("bad", [
    {1: b"x"}, {"k": 5}, {"k": 1.5}, ["abc"], [("a", b"1", b"2")], 5,
    [(None, b"x")],
], ids=repr)
def test_bad_headers_raise_type_error_and_write_nothing(topic, bad):
    with pytest.raises(TypeError) as exc:
        topic.append(b"v", headers=bad)
    assert isinstance(exc.value, pylog.InvalidRecordError)
    assert topic.end_offset == 0


def test_header_key_over_65535_bytes_is_rejected(topic):
    with pytest.raises(pylog.RecordTooLargeError):
        topic.append(b"v", headers={"k" * 65536: b"x"})
    assert topic.end_offset == 0


@pytest.mark.parametrize("bad", [1.5, "5", True, -1, 2**63], ids=repr)
def test_bad_timestamp_raises_and_writes_nothing(topic, bad):
    with pytest.raises(pylog.InvalidRecordError):
        topic.append(b"v", timestamp=bad)
    with pytest.raises(pylog.InvalidRecordError):
        topic.append_batch([b"a", b"b"], timestamps=[1, bad])
    assert topic.end_offset == 0


def test_extreme_timestamps_round_trip(topic):
    topic.append(b"a", timestamp=0)
    topic.append(b"b", timestamp=2**63 - 1)
    assert [r.timestamp for r in topic.read()] == [0, 2**63 - 1]


def test_default_timestamp_is_append_time(topic):
    before = now_ms()
    topic.append(b"a")
    topic.append_batch([b"b", b"c"])
    after = now_ms()
    for rec in topic.read():
        assert before <= rec.timestamp <= after


def test_record_over_max_record_bytes_is_rejected_and_nothing_written(
        tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t", max_record_bytes=100)
        assert t.append(b"x" * 100) == 0          # exactly the limit
        too_big = [
            dict(value=b"x" * 101),
            dict(value=b"x" * 51, key=b"k" * 50),  # key + value count
            dict(value=b"x" * 90, headers={"k": b"v" * 10}),  # 2+1+4+10
        ]
        for kw in too_big:
            with pytest.raises(pylog.RecordTooLargeError) as exc:
                t.append(**kw)
            assert isinstance(exc.value, ValueError)
        with pytest.raises(pylog.RecordTooLargeError):
            t.append_batch([b"ok", b"x" * 101, b"ok"])
        assert t.end_offset == 1
        assert t.append(b"next") == 1
    with pylog.open(d) as log:  # and nothing reached the disk
        assert values_of(log.topic("t")) == [b"x" * 100, b"next"]


def test_record_larger_than_segment_bytes_is_stored(tmp_path):
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("t", segment_bytes=1024)
        t.append(b"small")
        t.append(b"B" * 5000)
        t.append_batch([b"C" * 3000, b"D" * 3000])
        t.append(b"after")
        assert values_of(t) == [b"small", b"B" * 5000, b"C" * 3000,
                                b"D" * 3000, b"after"]


# ---- headers --------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ({"unit": b"C", "none": None, "ünï": b"\x00\xff"},
     (("unit", b"C"), ("none", None), ("ünï", b"\x00\xff"))),
    ([("a", b"1"), ("a", b"2"), ("b", None)],
     (("a", b"1"), ("a", b"2"), ("b", None))),
    ((("s", "str value"), ("e", b"")), (("s", b"str value"), ("e", b""))),
    ({}, ()),
    ([], ()),
    (None, ()),
], ids=["dict", "pairs", "tuple-of-pairs-str-value", "empty-dict",
        "empty-list", "none"])
def test_headers_round_trip(topic, given, expected):
    small = topic.append(b"v", headers=given)
    large = topic.append(b"L" * 2000, headers=given)  # the zero-copy path
    first = topic.append_batch([b"x", b"y"], headers=[given, None])
    assert topic.get(small).headers == expected
    assert topic.get(large).headers == expected
    assert [r.headers for r in topic.read()] == [expected, expected,
                                                 expected, ()]
    assert topic.get(first + 1).headers == ()


# ---- append_batch ---------------------------------------------------------------

class CountingLib:
    """Stands in for the compiled module and counts append calls."""

    def __init__(self, lib):
        self._lib = lib
        self.calls = collections.Counter()

    def __getattr__(self, name):
        fn = getattr(self._lib, name)
        if not name.startswith("pl_topic_append"):
            return fn

        def counted(*args):
            self.calls[name] += 1
            return fn(*args)
        return counted


def test_append_batch_is_one_call_and_dense(topic, monkeypatch):
    topic.append(b"before")
    counting = CountingLib(pylog._topic.lib)
    monkeypatch.setattr(pylog._topic, "lib", counting)
    before = now_ms()
    first = topic.append_batch([b"a", b"b", b"c", b"d"],
                               keys=[b"k", None, b"", b"k4"],
                               timestamps=[10, None, 30, 40],
                               headers=[{"h": b"1"}, None, [], [("x", None)]])
    assert counting.calls == {"pl_topic_append_batch": 1}
    monkeypatch.undo()
    assert first == 1
    assert topic.end_offset == 5
    assert topic.append(b"after") == 5
    recs = list(topic.read(1, 4))
    assert [r.offset for r in recs] == [1, 2, 3, 4]
    assert [bytes(r.value) for r in recs] == [b"a", b"b", b"c", b"d"]
    assert [r.key for r in recs] == [b"k", None, b"", b"k4"]
    assert [r.headers for r in recs] == [(("h", b"1"),), (), (),
                                         (("x", None),)]
    assert [recs[i].timestamp for i in (0, 2, 3)] == [10, 30, 40]
    assert before <= recs[1].timestamp <= now_ms()  # None: append time


def test_append_batch_accepts_any_iterable_and_str(topic):
    assert topic.append_batch(iter([b"a", "é"])) == 0
    assert topic.append_batch((b"c",), keys=iter(["k"])) == 2
    assert values_of(topic) == [b"a", "é".encode(), b"c"]
    assert topic.get(2).key == b"k"


@pytest.mark.parametrize("what", ["keys", "timestamps", "headers"])
@pytest.mark.parametrize("length", [2, 4, 0])
def test_append_batch_rejects_mismatched_keys_length(topic, what, length):
    filler = {"keys": b"k", "timestamps": 5, "headers": {"h": b"v"}}[what]
    with pytest.raises(pylog.InvalidRecordError, match=what):
        topic.append_batch([b"a", b"b", b"c"], **{what: [filler] * length})
    assert topic.end_offset == 0


@pytest.mark.parametrize("bad", [[], (), b"abc", "abc", 5, None],
                         ids=repr)
def test_append_batch_rejects_empty_and_non_sequences(topic, bad):
    with pytest.raises(pylog.InvalidRecordError):
        topic.append_batch(bad)
    assert topic.end_offset == 0


def test_append_batch_with_one_bad_value_writes_nothing(topic):
    with pytest.raises(TypeError):
        topic.append_batch([b"a", b"b", 5])
    with pytest.raises(TypeError):
        topic.append_batch([b"a", b"b"], keys=[b"k", 5])
    assert topic.end_offset == 0


def values_of_from(t, off):
    return [bytes(r.value) for r in t.read(off)]


def test_torn_batch_is_dropped_whole_on_reopen(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t")
        t.append(b"single")
        t.append_batch([b"x" * 50] * 4)
    seg = segment_files(d, "t")[0]
    # Cut inside the last record of the batch: 32 + (48 + 20 + 6) + 48 +
    # 4 * 70 bytes of data end at 434; keep all but its last 10 bytes.
    os.truncate(seg, 434 - 10)
    # No checkpoint: the file was cut before anything vouched for the batch
    # (with the clean close's checkpoint, see the next test).
    os.unlink(os.path.join(os.path.dirname(seg), "checkpoint"))
    with pylog.open(d) as log:
        t = log.topic("t")
        assert t.end_offset == 1
        assert values_of(t) == [b"single"]
        assert t.append(b"again") == 1


def test_a_cut_below_a_vouched_end_is_a_lost_range_not_reused(tmp_path):
    """A clean close recorded end_offset 5: offsets 1..4 existed. Cut from
    the file afterwards, they are reported lost; new records never take
    their offsets (invariant 9)."""
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t")
        t.append(b"single")
        t.append_batch([b"x" * 50] * 4)
    seg = segment_files(d, "t")[0]
    os.truncate(seg, 434 - 10)
    with pylog.open(d) as log:
        t = log.topic("t")
        assert (t.start_offset, t.end_offset) == (0, 5)
        st = t.stats()
        assert st["lost_ranges"] == [(1, 5)] and st["lost_records"] == 4
        assert bytes(t.get(0).value) == b"single"
        with pytest.raises(pylog.DataLossError) as exc:
            t.get(3)
        assert exc.value.gap == pylog.Gap("t", 1, 5, "lost")
        assert t.append(b"again") == 5
        with pytest.raises(pylog.DataLossError):
            list(t.read(0))
        assert values_of_from(t, 5) == [b"again"]
        c = log.consumer("g", "t")
        assert [bytes(r.value) for r in c.poll()] == [b"single", b"again"]
        assert c.gaps == [pylog.Gap("t", 1, 5, "lost")]
        strict = log.consumer("s", "t", on_gap="raise")
        assert [bytes(r.value) for r in strict.poll()] == [b"single"]
        with pytest.raises(pylog.DataLossError):
            strict.poll()
        assert strict.position("t") == 1  # it stays put
    with pylog.open(d) as log:  # and it stays reported
        assert log.topic("t").stats()["lost_ranges"] == [(1, 5)]


# ---- reads -----------------------------------------------------------------------

def test_negative_offset_raises(topic):
    topic.append(b"a")
    for off in (-1, -(2**63), -(2**70)):
        with pytest.raises(pylog.OffsetOutOfRangeError) as exc:
            topic.get(off)
        assert isinstance(exc.value, IndexError)
        with pytest.raises(pylog.OffsetOutOfRangeError):
            topic.read(off)


def test_future_offset_raises(topic):
    with pytest.raises(pylog.OffsetOutOfRangeError):
        topic.get(0)  # empty topic
    topic.append(b"a")
    for off in (1, 2, 2**63 - 1, 2**63, 2**70):
        with pytest.raises(pylog.OffsetOutOfRangeError):
            topic.get(off)
    assert list(topic.read(1)) == []  # end_offset itself is a valid start
    for off in (2, 2**70):
        with pytest.raises(pylog.OffsetOutOfRangeError):
            topic.read(off)


@pytest.mark.parametrize("bad", [True, False, 1.0, 0.0, "0", None],
                         ids=repr)
def test_bool_and_float_offsets_raise_type_error(topic, bad):
    topic.append(b"a")
    topic.append(b"b")
    with pytest.raises(TypeError):
        topic.get(bad)
    if bad is not None:  # read(None) means "from start_offset"
        with pytest.raises(TypeError):
            topic.read(bad)
        with pytest.raises(TypeError):
            topic.read(0, bad)
        with pytest.raises(TypeError):
            topic.offset_for_time(bad)


def test_get_takes_int_subclasses_and_reads_past_its_pinned_maps(tmp_path):
    """get's one-call path takes exact ints; an int subclass, and a record
    in a segment not pinned yet, take the general path with the same
    result. 40 segments > the 16 maps a thread pins, read in turn twice."""
    class Off(int):
        pass

    with pylog.open(tmp_path / "log") as log:
        t = log.topic("t", segment_bytes=1024)
        want = [b"%04d" % i + b"x" * 96 for i in range(400)]
        for v in want:
            t.append(v)
        assert len(segment_files(tmp_path / "log", "t")) >= 40
        for _ in range(2):
            for off in range(0, 400, 7):
                assert t.get(off).value == want[off]
                r = t.get(Off(off))
                assert (r.offset, r.value) == (off, want[off])
                assert type(r.offset) is int


def test_small_values_are_bytes(topic):
    topic.append(b"s" * 1023)
    assert type(topic.get(0).value) is bytes
    assert [type(r.value) for r in topic.read()] == [bytes]


def test_large_value_is_zero_copy_view_that_outlives_close(tmp_path):
    d = tmp_path / "log"
    log = pylog.open(d)
    t = log.topic("t")
    t.append(b"A" * 1024)
    t.append(b"s" * 10)
    t.append_batch([b"B" * 4000, b"C" * 1500])
    got = t.get(0).value
    read = [r.value for r in t.read()]
    assert isinstance(got, memoryview) and got.readonly
    assert [type(v) for v in read] == [memoryview, bytes, memoryview,
                                       memoryview]
    with pytest.raises(TypeError):
        got[0] = 0
    part = read[2][10:20]
    log.close()
    del log, t
    gc.collect()
    assert bytes(got) == b"A" * 1024
    assert bytes(read[2]) == b"B" * 4000
    assert bytes(read[3]) == b"C" * 1500
    assert bytes(part) == b"B" * 10
    # ... and after the topic's files are deleted
    with pylog.open(d) as log:
        t = log.topic("t")
        view = t.get(2).value
        log.delete_topic("t")
        assert not os.path.exists(os.path.join(d, "topics", "t"))
        assert bytes(view) == b"B" * 4000
        assert bytes(got) == b"A" * 1024
    assert bytes(view[-5:]) == b"B" * 5


def test_record_fields_are_read_only(topic):
    topic.append(b"v", key=b"k")
    rec = topic.get(0)
    for field in ("offset", "timestamp", "key", "value", "headers", "topic"):
        with pytest.raises(AttributeError):
            setattr(rec, field, None)
    with pytest.raises(AttributeError):
        rec.extra = 1
    assert (rec.offset, rec.key, rec.value, rec.topic) == (0, b"k", b"v", "t")


def test_record_equality_repr_hash_and_pickle(tmp_path):
    import pickle
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("t")
        t.append(b"L" * 2000, key=b"k", headers={"h": b"1"}, timestamp=5)
        t.append(b"s", timestamp=6)
        big, small = list(t.read())
        assert isinstance(big.value, memoryview)
        # a memoryview value equals a bytes value of the same content
        assert big == pylog.Record(0, 5, b"k", b"L" * 2000, (("h", b"1"),),
                                   "t")
        assert big != pylog.Record(0, 5, b"k", b"L" * 1999, (("h", b"1"),),
                                   "t")
        assert small == t.get(1) and not small != t.get(1)
        assert small != big and (small == 1) is False
        assert repr(big) == ("Record(topic='t', offset=0, timestamp=5, "
                             "key=b'k', value=b'" + "L" * 32 + "...', "
                             "headers=(('h', b'1'),))")
        with pytest.raises(TypeError):
            hash(small)
        assert pickle.loads(pickle.dumps(small)) == small
        with pytest.raises(TypeError):  # a view of the map is not picklable
            pickle.dumps(big)


def test_record_constructor_checks_arity_and_tracks_cycles():
    with pytest.raises(TypeError):
        pylog.Record(0, 0, None, b"v", ())
    r = pylog.Record(offset=1, timestamp=2, key=None, value=b"v",
                     headers=(), topic="t")
    assert (r.offset, r.timestamp, r.key, r.value, r.headers, r.topic) == (
        1, 2, None, b"v", (), "t")
    # a Record built from Python may hold a container that refers back to it
    gc.collect()
    box = []
    r = pylog.Record(0, 0, None, b"v", box, "t")
    box.append(r)
    assert gc.is_tracked(r)
    del box, r
    assert gc.collect() >= 2


def test_append_batch_mixes_bytes_and_other_bytes_likes(topic):
    values = [b"a", bytearray(b"b"), memoryview(b"cc"), "d", b""]
    assert topic.append_batch(values) == 0
    assert topic.append_batch(tuple(values)) == 5
    assert values_of(topic) == [b"a", b"b", b"cc", b"d", b""] * 2
    with pytest.raises(pylog.InvalidRecordError, match="value 3"):
        topic.append_batch([b"a", b"b", bytearray(b"c"), 4.5])
    assert topic.end_offset == 10


def test_read_max_records(topic):
    for i in range(10):
        topic.append(b"%d" % i)
    assert values_of(topic, 0, 3) == [b"0", b"1", b"2"]
    assert values_of(topic, 8, 5) == [b"8", b"9"]
    assert values_of(topic, 4, 1) == [b"4"]
    assert values_of(topic, 0, 0) == []
    assert values_of(topic, None, 2) == [b"0", b"1"]
    assert len(values_of(topic)) == 10
    with pytest.raises(ValueError):
        topic.read(0, -1)


def test_read_stops_at_end_offset_at_time_of_call(topic):
    for i in range(5):
        topic.append(b"%d" % i)
    it = topic.read()
    topic.append(b"later")
    assert [r.offset for r in it] == [0, 1, 2, 3, 4]


def test_read_more_than_one_chunk(topic):
    n = pylog._topic.READ_CHUNK * 2 + 37
    topic.append_batch([b"%d" % i for i in range(n)])
    offs = [r.offset for r in topic.read()]
    assert offs == list(range(n))
    assert [r.offset for r in topic.read(n - 40, 30)] == list(
        range(n - 40, n - 10))


def test_read_spans_many_segments(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t", segment_bytes=4096, index_interval_bytes=128)
        expect = [(b"%04d" % i) * 25 for i in range(300)]
        for i, v in enumerate(expect):
            if i % 7 == 0:
                t.append_batch([v])
            else:
                t.append(v, key=b"%d" % i)
        assert len(segment_files(d, "t")) >= 8
        assert values_of(t) == expect
        for start in range(0, 300, 13):
            assert values_of(t, start, 40) == expect[start:start + 40]
        for off in range(300):
            assert bytes(t.get(off).value) == expect[off]
    with pylog.open(d) as log:  # sealed segments, loaded lazily
        t = log.topic("t")
        assert values_of(t, 150) == expect[150:]
        assert values_of(t) == expect
        assert t.get(299).key == b"299"


def test_sealed_segments_do_not_exceed_segment_bytes(tmp_path):
    """segment_bytes: "roll the active segment at this size" (pylog.h)."""
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t", segment_bytes=1024)
        for _ in range(60):
            t.append(b"v" * 100)  # 168-byte batches
    segs = segment_files(d, "t")
    sizes = {os.path.basename(p): os.path.getsize(p) for p in segs[:-1]}
    assert len(segs) >= 10, sizes
    assert all(s <= 1024 for s in sizes.values()), sizes


def test_records_survive_reopen(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t")
        t.append(b"a", key=b"k", headers={"h": None}, timestamp=7)
        t.append_batch([b"b", b"c"])
    with pylog.open(d) as log:
        t = log.topic("t")
        assert t.end_offset == 3
        assert t.get(0) == pylog.Record(0, 7, b"k", b"a", (("h", None),), "t")
        assert values_of(t) == [b"a", b"b", b"c"]
        assert t.append(b"d") == 3


# ---- offset_for_time ---------------------------------------------------------------

def test_offset_for_time_with_explicit_timestamps(topic):
    assert topic.offset_for_time(0) is None  # empty topic
    for ts in (100, 200, 200, 300):
        topic.append(b"v", timestamp=ts)
    cases = {-5: 0, 0: 0, 100: 0, 101: 1, 200: 1, 201: 3, 300: 3, 301: None,
             2**63 - 1: None, 2**64: None}
    assert {ms: topic.offset_for_time(ms) for ms in cases} == cases


def test_offset_for_time_with_out_of_order_timestamps(topic):
    topic.append_batch([b"a", b"b", b"c"], timestamps=[500, 100, 300])
    topic.append(b"d", timestamp=50)
    topic.append(b"e", timestamp=900)
    cases = {0: 0, 50: 0, 101: 0, 500: 0, 501: 4, 900: 4, 901: None}
    assert {ms: topic.offset_for_time(ms) for ms in cases} == cases


def test_offset_for_time_across_segments(tmp_path):
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("t", segment_bytes=4096, index_interval_bytes=64)
        stamps = [1000 + 10 * i - (25 if i % 5 == 0 else 0)
                  for i in range(400)]
        for i in range(0, 400, 4):
            t.append_batch([b"x" * 60] * 4, timestamps=stamps[i:i + 4])
        assert len(segment_files(tmp_path / "log", "t")) >= 5
        for ms in range(stamps[0] - 30, max(stamps) + 30, 7):
            expect = next((o for o, s in enumerate(stamps) if s >= ms), None)
            assert t.offset_for_time(ms) == expect, ms


# ---- durability ------------------------------------------------------------------------

@pytest.mark.parametrize("sync", ["none", "interval", "always"])
def test_durable_offset_after_flush(tmp_path, sync):
    d = tmp_path / "log"
    with pylog.open(d, sync=sync, sync_interval_ms=60_000) as log:
        t = log.topic("t")
        u = log.topic("u")
        for i in range(3):
            t.append(b"%d" % i)
            assert t.durable_offset <= t.end_offset
            if sync == "always":
                assert t.durable_offset == t.end_offset
        if sync == "none":
            assert t.durable_offset == 0  # nothing was fdatasync'ed yet
        t.flush()
        assert t.durable_offset == t.end_offset == 3
        t.append_batch([b"a", b"b"])
        u.append(b"u")
        log.flush()
        assert t.durable_offset == t.end_offset == 5
        assert u.durable_offset == u.end_offset == 1


def test_interval_mode_syncs_within_interval(tmp_path):
    with pylog.open(tmp_path / "log", sync="interval",
                    sync_interval_ms=20) as log:
        t = log.topic("t")
        t.append_batch([b"a", b"b", b"c"])
        deadline = time.monotonic() + 30
        while t.durable_offset < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.durable_offset == 3


# ---- closed ----------------------------------------------------------------------------------

TOPIC_OPS = {
    "append": lambda t: t.append(b"x"),
    "append_batch": lambda t: t.append_batch([b"x"]),
    "get": lambda t: t.get(0),
    "read": lambda t: t.read(),
    "read_past_end": lambda t: t.read(1),
    "offset_for_time": lambda t: t.offset_for_time(0),
    "flush": lambda t: t.flush(),
    "start_offset": lambda t: t.start_offset,
    "end_offset": lambda t: t.end_offset,
    "durable_offset": lambda t: t.durable_offset,
    "len": len,
}


@pytest.mark.parametrize("op", TOPIC_OPS)
@pytest.mark.parametrize("records", [0, 1])
def test_use_after_close_raises_closed_error(tmp_path, op, records):
    log = pylog.open(tmp_path / "log")
    t = log.topic("t")
    for _ in range(records):
        t.append(b"r")
    log.close()
    assert t.closed
    with pytest.raises(pylog.ClosedError):
        TOPIC_OPS[op](t)
    assert "closed" in repr(t)


LOG_OPS = {
    "topic": lambda lg: lg.topic("t"),
    "topic_new": lambda lg: lg.topic("new"),
    "topics": lambda lg: lg.topics(),
    "delete_topic": lambda lg: lg.delete_topic("t"),
    "flush": lambda lg: lg.flush(),
}


@pytest.mark.parametrize("op", LOG_OPS)
def test_log_use_after_close_raises_closed_error(tmp_path, op):
    log = pylog.open(tmp_path / "log")
    log.topic("t").append(b"x")
    log.close()
    assert log.closed
    with pytest.raises(pylog.ClosedError):
        LOG_OPS[op](log)
    log.close()  # idempotent


def test_topic_of_deleted_topic_raises_closed_error(log):
    t = log.topic("t")
    t.append(b"x")
    log.delete_topic("t")
    with pytest.raises(pylog.ClosedError):
        t.append(b"y")
    with pytest.raises(pylog.ClosedError):
        list(t.read())
    fresh = log.topic("t")
    assert fresh is not t
    assert fresh.end_offset == 0


def test_topic_is_one_object_per_name(log):
    assert log.topic("t") is log.topic("t")
    assert log.topic("t") is not log.topic("u")
