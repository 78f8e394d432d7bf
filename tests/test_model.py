"""Model-based test of a topic against a plain Python list.

A hypothesis state machine appends (single records and batches, with and
without keys, headers and explicit timestamps), reads, seeks by time,
reconfigures, closes and reopens, and simulates crashes that tear the tail
of the last segment file. The oracle is a list of records plus the list of
batch boundaries, from which the byte layout of docs/FORMAT.md is computed
independently of the C core.
"""
import os
import shutil
import struct
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 rule, run_state_machine_as_test)

import pylog
from conftest import (SEG_HDR, batch_size, header_pairs, now_ms,
                      segment_base, segment_files)

NAME = "m"

values = st.binary(max_size=300)
keys = st.none() | st.binary(max_size=24)
header_keys = st.text(max_size=8)
header_values = st.none() | st.binary(max_size=16)
headers = (st.none()
           | st.dictionaries(header_keys, header_values, max_size=3)
           | st.lists(st.tuples(header_keys, header_values), max_size=3))
# Explicit timestamps: small ones, and ones around the default (now), so
# that explicit and append-time stamps interleave in either order.
NOW = now_ms()
timestamps = st.none() | st.integers(0, 2**41) | st.integers(
    NOW - 10**6, NOW + 10**6)


class Rec:
    __slots__ = ("ts", "key", "value", "headers")

    def __init__(self, ts, key, value, headers):
        self.ts, self.key, self.value, self.headers = ts, key, value, headers


class TopicModel(RuleBasedStateMachine):
    root = None  # set by the test to its tmp_path

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(dir=self.root)
        self.log = None
        self.records = []   # the oracle: Rec per offset
        self.batches = []   # (first offset, count, bytes) per batch appended

    # ---- helpers -----------------------------------------------------------
    def open(self, **config):
        self.log = pylog.open(self.dir, sync=self.sync, sync_interval_ms=20)
        self.topic = self.log.topic(NAME, **config)

    def check_record(self, rec, off):
        exp = self.records[off]
        assert rec.offset == off
        assert rec.timestamp == exp.ts
        assert rec.key == exp.key
        assert bytes(rec.value) == exp.value
        assert rec.headers == exp.headers
        assert rec.topic == NAME

    def check_all(self):
        got = list(self.topic.read())
        assert len(got) == len(self.records)
        for off, rec in enumerate(got):
            self.check_record(rec, off)

    def stamp(self, offsets, before, after, explicit):
        """Record the timestamps of freshly appended offsets; those the core
        stamped must be append times."""
        for off, ts in zip(offsets, explicit):
            got = self.topic.get(off).timestamp
            if ts is None:
                assert before <= got <= after
            else:
                assert got == ts
            self.records[off].ts = got

    # ---- rules -------------------------------------------------------------
    @initialize(segment_bytes=st.integers(1024, 4096),
                index_interval_bytes=st.integers(64, 512),
                sync=st.sampled_from(["none", "none", "always", "interval"]))
    def setup(self, segment_bytes, index_interval_bytes, sync):
        self.sync = sync
        self.open(segment_bytes=segment_bytes,
                  index_interval_bytes=index_interval_bytes)

    @rule(value=values, key=keys, hdrs=headers, ts=timestamps)
    def append(self, value, key, hdrs, ts):
        before = now_ms()
        off = self.topic.append(value, key=key, headers=hdrs, timestamp=ts)
        after = now_ms()
        assert off == len(self.records)
        self.records.append(Rec(None, key, value, header_pairs(hdrs)))
        self.batches.append((off, 1, batch_size([(key, value, hdrs)])))
        self.stamp([off], before, after, [ts])

    @rule(recs=st.lists(st.tuples(values, keys, timestamps), min_size=1,
                        max_size=30))
    def append_many(self, recs):
        """Many single appends: long enough logs to roll segments and fill
        indexes."""
        for value, key, ts in recs:
            self.append(value, key, None, ts)

    @rule(data=st.data(), n=st.integers(1, 20))
    def append_batch(self, data, n):
        vals = data.draw(st.lists(values, min_size=n, max_size=n))
        ks = data.draw(st.none() | st.lists(keys, min_size=n, max_size=n))
        hs = data.draw(st.none() | st.lists(headers, min_size=n, max_size=n))
        tss = data.draw(st.none()
                        | st.lists(timestamps, min_size=n, max_size=n))
        before = now_ms()
        first = self.topic.append_batch(vals, keys=ks, timestamps=tss,
                                        headers=hs)
        after = now_ms()
        assert first == len(self.records)
        ks = ks or [None] * n
        hs = hs or [None] * n
        for k, v, h in zip(ks, vals, hs):
            self.records.append(Rec(None, k, v, header_pairs(h)))
        self.batches.append((first, n, batch_size(list(zip(ks, vals, hs)))))
        offsets = range(first, first + n)
        self.stamp(offsets, before, after, tss or [None] * n)
        if tss is None:  # one append time for the whole batch
            assert len({self.records[o].ts for o in offsets}) == 1

    @rule(data=st.data())
    def get(self, data):
        off = data.draw(st.integers(-3, len(self.records) + 3))
        if 0 <= off < len(self.records):
            self.check_record(self.topic.get(off), off)
        else:
            try:
                self.topic.get(off)
            except pylog.OffsetOutOfRangeError:
                pass
            else:
                raise AssertionError(f"get({off}) of {len(self.records)} "
                                     "records did not raise")

    @rule(data=st.data())
    def read(self, data):
        n = len(self.records)
        start = data.draw(st.none() | st.integers(-2, n + 2))
        limit = data.draw(st.none() | st.integers(0, n + 2))
        first = 0 if start is None else start
        if not 0 <= first <= n:
            try:
                self.topic.read(start, limit)
            except pylog.OffsetOutOfRangeError:
                return
            raise AssertionError(f"read({start}) of {n} records did not raise")
        got = list(self.topic.read(start, limit))
        last = n if limit is None else min(n, first + limit)
        assert [r.offset for r in got] == list(range(first, last))
        for rec in got:
            self.check_record(rec, rec.offset)

    @rule(data=st.data())
    def offset_for_time(self, data):
        known = [r.ts for r in self.records]
        # Draws must not depend on the clock: pick known stamps by index.
        kind = data.draw(st.sampled_from(["known", "small", "recent"]))
        if kind == "known" and known:
            i = data.draw(st.integers(0, len(known) - 1))
            ms = known[i] + data.draw(st.sampled_from([-1, 0, 1]))
        elif kind == "recent":
            ms = NOW + data.draw(st.integers(-10**6, 10**7))
        else:
            ms = data.draw(st.integers(-5, 2**41 + 5))
        expect = next((o for o, ts in enumerate(known) if ts >= ms), None)
        assert self.topic.offset_for_time(ms) == expect

    @rule()
    def flush(self):
        self.log.flush()
        assert self.topic.durable_offset == self.topic.end_offset

    @rule()
    def reopen(self):
        self.log.close()
        self.open()
        self.check_all()

    @rule(segment_bytes=st.integers(1024, 4096),
          index_interval_bytes=st.integers(64, 512))
    def reconfigure(self, segment_bytes, index_interval_bytes):
        t = self.log.topic(NAME, segment_bytes=segment_bytes,
                           index_interval_bytes=index_interval_bytes)
        assert t is self.topic
        assert t.config["segment_bytes"] == segment_bytes
        assert t.config["index_interval_bytes"] == index_interval_bytes
        assert t.end_offset == len(self.records)

    @rule(data=st.data())
    def crash(self, data):
        """Tear the last segment at a byte inside its data, then reopen:
        batches wholly below the cut survive, the rest vanish whole."""
        self.log.close()
        path = segment_files(self.dir, NAME)[-1]
        base = segment_base(path)
        bounds = [b for b in self.batches if b[0] >= base]
        assert base == (bounds[0][0] if bounds else len(self.records)), \
            f"segment {path} does not start at a batch boundary"
        # Lay the batches out as the format says and check the file agrees.
        with open(path, "rb") as f:
            blob = f.read()
        layout, pos = [], SEG_HDR
        for first, count, size in bounds:
            assert struct.unpack_from("<IIq", blob, pos + 8) == (
                size, count, first), f"batch of offset {first} at byte {pos}"
            layout.append((first, pos + size))
            pos += size
        assert not any(blob[pos:pos + 48]), "bytes after the last batch"
        cut = data.draw(st.integers(SEG_HDR, pos))
        os.truncate(path, cut)
        # As a crash before the tail was ever synced: no checkpoint vouches
        # for the offsets cut (with one, they would be a lost range).
        os.unlink(os.path.join(os.path.dirname(path), "checkpoint"))
        # A batch is torn iff the cut falls inside it (recovery reads the
        # file as long as it is: the bytes past its end are gone, zeros or
        # not).
        survivors = next((first for first, end in layout if end > cut),
                         len(self.records))
        self.open()
        assert self.topic.end_offset == survivors
        del self.records[survivors:]
        self.batches = [b for b in self.batches if b[0] < survivors]
        self.check_all()

    # ---- invariants ----------------------------------------------------------
    @invariant()
    def offsets_are_consistent(self):
        if self.log is None:
            return
        t = self.topic
        start, end, durable = t.start_offset, t.end_offset, t.durable_offset
        assert start == 0
        assert start <= end
        assert end == start + len(self.records)
        assert len(t) == len(self.records)
        assert durable <= end
        if self.sync == "always":
            assert durable == end

    def teardown(self):
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_topic_matches_list_model(tmp_path):
    class Model(TopicModel):
        root = str(tmp_path)

    run_state_machine_as_test(Model, settings=settings(
        max_examples=300, stateful_step_count=50, deadline=None,
        suppress_health_check=[HealthCheck.too_slow,
                               HealthCheck.filter_too_much,
                               HealthCheck.data_too_large]))
