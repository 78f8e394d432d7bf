"""The child program of tests/test_powercut.py.

    python powercut_workload.py DIR SYNC CYCLE SEED ACKS DUMP [--check]

Opens the log in DIR, writes what it finds to DUMP (JSON: every topic's
offsets and records, every group's positions; this is the parent's check
of the power cut before), writes "R" to ACKS, then runs until it is killed:
appends single records and batches to several topics, creates and deletes
topics, polls and commits with two consumer groups, flushes and reads
durable_offset. Every operation is reported to ACKS, a line before the
call ("I ...") and one after it returned ("A ..."); the parent reads only
complete lines. An operation that raises is reported ("E ...") and the run
goes on. With --check it stops after the dump and closes the log.

Topic names say what a topic is: "k..." topics keep everything, "r..."
topics have max_bytes with on_full="drop_oldest" (segments get deleted).
kbase and rbase live through the whole run; the others come and go.
Record (cycle, topic, seq) is make(cycle, topic, seq); its value starts
with "cycle:topic:seq:" so that any record read back names where it came
from.
"""
import hashlib
import json
import os
import random
import sys

GROUPS = ("g0", "g1")
BASE = ("kbase", "rbase")  # created by the first child, never deleted
MAX_TOPICS = 10


def make(cycle, topic, seq):
    """(key, value, headers) of record seq of topic in cycle."""
    tag = b"%d:%s:%d:" % (cycle, topic.encode(), seq)
    h = hashlib.blake2b(tag, digest_size=16).digest()
    r = int.from_bytes(h[:4], "little")
    n = r % 300 if r % 40 else 1000 + r % 3000  # some zero-copy values
    value = tag + (h * (n // 16 + 1))[:n]
    key = None if seq % 3 else b"k%d" % seq
    headers = {"s": b"%d" % seq} if seq % 5 == 0 else None
    return key, value, headers


def identify(rec):
    """("cycle:topic:seq", exact) of a record read back: exact says whether
    key, value and headers are the bytes make() gives. (None, hex prefix)
    if the value names no record."""
    value = bytes(rec.value)
    parts = value.split(b":", 3)
    try:
        cycle, topic, seq = int(parts[0]), parts[1].decode(), int(parts[2])
        if len(parts) != 4:
            raise ValueError
    except (IndexError, ValueError, UnicodeDecodeError):
        return None, value[:48].hex()
    key, val, headers = make(cycle, topic, seq)
    exact = (val == value and rec.key == key
             and rec.headers == (tuple(headers.items()) if headers else ()))
    return f"{cycle}:{topic}:{seq}", exact


def dump_topic(pylog, t):
    """Offsets, records and read errors of topic t."""
    start, end = t.start_offset, t.end_offset
    info = {"start": start, "end": end, "records": [], "errors": [],
            "lost": [list(r) for r in t.lost_ranges()]}
    pos = start
    while pos < end:
        got, error = [], None
        try:
            for rec in t.read(pos, max_records=1000):
                got.append(rec)
        except pylog.DataLossError as exc:
            # A lost range is reported, not a hole: it must be one the
            # topic lists, and reading goes on after it.
            gap = exc.gap
            if gap is not None and [gap.from_offset, gap.to_offset] in \
                    [list(r) for r in t.lost_ranges()] and \
                    gap.from_offset <= pos + len(got) < gap.to_offset:
                for rec in got:
                    info["records"].append([rec.offset, *identify(rec)])
                pos = gap.to_offset
                continue
            error = f"{type(exc).__name__}: {exc}"
        except pylog.PylogError as exc:
            error = f"{type(exc).__name__}: {exc}"
        for rec in got:
            info["records"].append([rec.offset, *identify(rec)])
        if got:
            pos = got[-1].offset + 1
        if error is None and not got:
            info["errors"].append([pos, "read() returned nothing below "
                                        f"end_offset {end}"])
            break
        if error is not None:
            info["errors"].append([pos, error])
            pos += 1  # past the first offset that fails, to the next good
            while pos < end:
                try:
                    t.get(pos)
                    break
                except pylog.PylogError:
                    pos += 1
    return info


def dump(pylog, log, path):
    out = {"topics": {}, "groups": log.groups()}
    for name in log.topics():
        out["topics"][name] = dump_topic(pylog, log.topic(name))
    with open(path, "w") as f:
        json.dump(out, f)


class Workload:
    def __init__(self, log, cycle, rnd, say):
        self.log, self.cycle, self.rnd, self.say = log, cycle, rnd, say
        self.topics = {n: log.topic(n) for n in log.topics()}
        self.seq = {}
        self.created = 0
        self.consumers = {}  # group -> (consumer, [topic names])

    def create_topic(self, name=None):
        kind = name[0] if name else self.rnd.choice("kr")
        if name is None:
            name = f"{kind}{self.cycle}_{self.created}"
            self.created += 1
        seg = self.rnd.choice([16384, 32768])
        cfg = {"segment_bytes": seg}
        if kind == "r":
            cfg.update(max_bytes=12 * seg, on_full="drop_oldest")
        self.say("I create", name)
        self.topics[name] = self.log.topic(name, **cfg)
        self.say("A create", name)

    def delete_topic(self):
        held = {n for _, names in self.consumers.values() for n in names}
        free = sorted(set(self.topics) - held - set(BASE))
        if len(self.topics) <= 3 or not free:
            return
        name = self.rnd.choice(free)
        self.say("I delete", name)
        self.log.delete_topic(name)
        del self.topics[name]
        self.say("A delete", name)

    def append(self, n):
        name = self.rnd.choice(sorted(self.topics))
        t = self.topics[name]
        seq = self.seq.get(name, 0)
        self.seq[name] = seq + n
        recs = [make(self.cycle, name, seq + i) for i in range(n)]
        self.say("I append", name, seq, n)
        if n == 1 and self.rnd.random() < 0.7:
            key, value, headers = recs[0]
            off = t.append(value, key=key, headers=headers)
        else:
            off = t.append_batch([r[1] for r in recs],
                                 keys=[r[0] for r in recs],
                                 headers=[r[2] for r in recs])
        self.say("A append", name, off, seq, n)

    def subscribe(self, group):
        old = self.consumers.pop(group, None)
        if old:
            old[0].close()
        names = self.rnd.sample(sorted(self.topics),
                                min(3, len(self.topics)))
        self.consumers[group] = (self.log.consumer(group, names), names)

    def poll_commit(self):
        group = self.rnd.choice(GROUPS)
        if group not in self.consumers:
            self.subscribe(group)
        c, names = self.consumers[group]
        c.poll(max_records=self.rnd.randint(1, 300), timeout=0)
        self.say("I commit", group)
        c.commit()
        self.say("A commit", group,
                 *(f"{n}={c.committed(n)}" for n in names))

    def flush(self):
        if self.rnd.random() < 0.2:
            self.say("I logflush")
            self.log.flush()
            self.say("A logflush")
            names = sorted(self.topics)
        else:
            names = [self.rnd.choice(sorted(self.topics))]
            self.say("I flush", names[0])
            self.topics[names[0]].flush()
            self.say("A flush", names[0])
        for n in names:
            self.say("A durable", n, self.topics[n].durable_offset)

    def durable(self):
        name = self.rnd.choice(sorted(self.topics))
        self.say("A durable", name, self.topics[name].durable_offset)

    def run(self):
        for name in BASE:
            if name not in self.topics:
                self.create_topic(name)
        while len(self.topics) < 3:
            self.create_topic()
        while True:
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - reported, and on
                self.say("E", f"{type(exc).__module__}.{type(exc).__name__}:"
                         f" {exc}".replace("\n", " "))

    def step(self):
        """One random operation."""
        r = self.rnd.random()
        if r < 0.50:
            self.append(1)
        elif r < 0.70:
            self.append(self.rnd.randint(2, 20))
        elif r < 0.80:
            self.poll_commit()
        elif r < 0.83:
            self.subscribe(self.rnd.choice(GROUPS))
        elif r < 0.88:
            self.flush()
        elif r < 0.985:
            self.durable()
        elif r < 0.995:
            if len(self.topics) < MAX_TOPICS:
                self.create_topic()
        else:
            self.delete_topic()


def main():
    path, sync, cycle, seed, ack_path, dump_path = sys.argv[1:7]
    import pylog
    rnd = random.Random(int(seed))
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def say(*words):
        os.write(fd, (" ".join(map(str, words)) + "\n").encode())
    log = pylog.open(path, sync=sync,
                     sync_interval_ms=rnd.choice([20, 50, 200]))
    dump(pylog, log, dump_path)
    say("R")
    if "--check" in sys.argv[7:]:
        log.close()
        return
    Workload(log, int(cycle), rnd, say).run()


if __name__ == "__main__":
    main()
