"""``pylog DIR verify``: everything that is wrong with a log, found from its
files alone (a read-only open: it works on a live log).

It reads every byte of every segment and checks every checksum
(pylog/_inspect.py, independent of the C core), and it looks for what is
missing, not only for what is corrupt:

  CORRUPT   bytes that do not verify (with the offsets they hold)
  MISSING   offsets the files should hold and do not: a first, middle or
            last segment removed by hand, a segment that ends early, data
            below what the checkpoint vouched for, a group's committed
            position past the data
  LOST      ranges recorded as lost (a power cut, files removed by hand)
            that are still within the topic
  CATALOG   the consumer positions cannot be read, or a group's position
            was lost with a damaged catalog
  CONFIG    a topic directory without a usable meta file (its config is
            unknown: it opens with the defaults)
  NOTE      what is normal but worth knowing (a torn tail the next open of
            a writer cuts, a batch a live writer is writing)

Every line names the topic, the offsets and the file. The exit status is
non-zero if anything but a NOTE was found.
"""
import os
from collections import namedtuple

from . import _errors as E
from . import _inspect

Finding = namedtuple("Finding", "kind text")


def writer_alive(path):
    """True if a process holds the log's LOCK (from /proc/locks, which
    looking at does not disturb), False if none, None if unknown."""
    try:
        ino = os.stat(os.path.join(path, "LOCK")).st_ino
    except OSError:
        return False
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                # 1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
                if len(parts) >= 6 and parts[1] == "FLOCK":
                    dev_ino = parts[5].split(":")
                    if len(dev_ino) == 3 and int(dev_ino[2]) == ino:
                        return True
    except OSError:
        return None
    return False


class Verifier:
    def __init__(self, log, progress=None):
        self.log = log
        self.progress = progress
        self.findings = []
        self.segments = self.batches = self.records = 0
        self.live = writer_alive(log.path)

    def say(self, kind, text):
        self.findings.append(Finding(kind, text))
        if self.progress is not None:
            self.progress.clear()
        print(f"{kind} {text}", flush=True)

    @property
    def problems(self):
        return [f for f in self.findings if f.kind != "NOTE"]

    def run(self):
        log = self.log
        for line in log.recovery:
            self.say("CATALOG", line)
        names = log.topics()
        jobs = []
        for name in names:
            d = os.path.join(log.path, "topics", name)
            segs = _inspect.segment_files(d)
            jobs.append((name, d, segs))
        total = sum(os.path.getsize(p) for _, _, segs in jobs
                    for _, p in segs if os.path.exists(p))
        self.done = 0
        self.total = total
        ends = {}
        for name, d, segs in jobs:
            ends[name] = self.topic(name, d, segs)
        self.groups(ends)
        return len(names)

    # ---- one topic ----------------------------------------------------------
    def topic(self, name, d, segs):
        log = self.log
        cfg_state = log._registry.read(name)[2]
        if cfg_state != "ok":
            self.say("CONFIG", f"{name}: its meta file is {cfg_state} "
                     f"({os.path.join(d, 'meta')}); the topic opens with "
                     "the default config")
        ck = _inspect.read_checkpoint(d)
        try:
            t = log.topic(name)
            end, lost = t.end_offset, t.lost_ranges()
        except E.PylogError as exc:
            self.say("CORRUPT", f"{name}: cannot be opened: {exc}")
            return None
        if not segs:
            self.say("MISSING", f"{name}: no segment file in {d}")
            return end
        first = segs[0][0]
        if ck is not None and ck["start"] < first:
            self.say("MISSING", f"{name} offsets [{ck['start']}, {first}): "
                     f"the first segment(s) before {segs[0][1]} are gone "
                     "(removed by hand, not by retention)")
        data_end = None
        for i, (base, path) in enumerate(segs):
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            data_end, corrupt = self.segment(name, path, base, nxt, end)
            if nxt is not None and not corrupt and data_end < nxt:
                if not any(a <= data_end and nxt <= b for a, b in lost):
                    self.say("MISSING", f"{name} offsets [{data_end}, {nxt}): "
                             f"{path} ends at offset {data_end}, the next "
                             f"segment starts at {nxt} (a segment removed "
                             "by hand, or data lost)")
        if ck is not None and data_end is not None:
            vouched = max(ck["durable"], ck["end"])
            if data_end < vouched and not any(
                    a <= data_end and vouched <= b for a, b in lost):
                self.say("MISSING", f"{name} offsets [{data_end}, {vouched}):"
                         f" the checkpoint vouched for them, the last "
                         f"segment {segs[-1][1]} ends at {data_end} (removed "
                         "or cut by hand, or lost to a power cut)")
        start = first
        for a, b in lost:
            if b > start:
                self.say("LOST", f"{name} offsets [{a}, {b}) are recorded as "
                         "lost (a power cut, or files removed by hand)")
        return end

    def segment(self, name, path, base, nxt, end):
        """Scan one segment; returns (the offset after its last good batch,
        whether it is corrupt)."""
        note = f"{name} {os.path.basename(path)}"
        self.segments += 1
        last = nxt is None
        expect, corrupt = base, False
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        for item in _inspect.scan_segment(path, base):
            if isinstance(item, _inspect.Problem):
                if last and item.offset >= end:
                    # past what the log holds: a batch being written, or
                    # the torn tail of a crash (the next open cuts it)
                    self.say("NOTE", f"{name}: bytes after offset {end} at "
                             f"byte {item.pos} of {path} "
                             + ("are being written" if self.live else
                                "are a torn tail the next open of the log "
                                "cuts") + f" ({item.what})")
                else:
                    corrupt = True
                    stop = nxt if nxt is not None else end
                    self.say("CORRUPT", f"{name} offsets [{item.offset}, "
                             f"{stop}) {item.what} at byte {item.pos} of "
                             f"{item.path}")
                break
            if item.ok:
                self.batches += 1
                self.records += item.count
                expect = item.base_offset + item.count
                if self.progress is not None:
                    self.progress.update(self.done + item.pos + item.length,
                                         note)
        self.done += size
        return expect, corrupt

    # ---- groups -------------------------------------------------------------
    def groups(self, ends):
        log = self.log
        try:
            groups = log.groups()
        except E.PylogError:
            # (the reason was reported from log.recovery)
            for name in ends:
                for g in log._registry.read(name)[1]:
                    self.say("CATALOG", f"group {g!r}: its position in topic "
                             f"{name!r} cannot be read from the catalog")
            return
        for g, tops in sorted(groups.items()):
            for name, pos in sorted(tops.items()):
                end = ends.get(name)
                if end is not None and pos > end:
                    self.say("MISSING", f"{name} offsets [{end}, {pos}): "
                             f"group {g!r} committed position {pos}, past "
                             f"the end of the topic")
        if log._groups is not None:
            for g, name in sorted(log._groups.lost()):
                self.say("CATALOG", f"group {g!r} lost its position in topic "
                         f"{name!r} with a damaged catalog (its next "
                         "consumer restarts per its start policy)")
        for name in ends:
            for g in log._registry.read(name)[1]:
                if name not in groups.get(g, {}) and log._groups is not None \
                        and (g, name) not in set(log._groups.lost()):
                    self.say("CATALOG", f"group {g!r} is registered on topic "
                             f"{name!r} but has no position in the catalog")
