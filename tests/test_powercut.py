"""Power cuts, simulated (docs/TESTING.md; tests/crashsim).

In each sync mode, cycle after cycle on the same directory: a child process
(powercut_workload.py) opens the log under the simulation layer, dumps what
it finds, then appends, creates and deletes topics, polls and commits,
flushes and reads durable_offset, reporting each operation to a side file,
until it is killed with SIGKILL. The simulation then turns the directory
into what a power cut at that moment could have left, and the next child
opens that. Its dump is checked against everything the earlier children
were told:

  opens      the log opens (the child reaches its dump)
  readable   no read fails (no hole that reads fail on): a read may only
             meet a lost range the topic reports (stats, DataLossError with
             its gap), and then goes on after it
  exact      every record returned is one that was written, byte for byte
  offsets    every record is at an offset in [start_offset, end_offset), in
             order
  reused     no offset ever names two different records: an offset that
             held a record after a cut, or that was durable, keeps it
  acked      in sync="always", every acknowledged record is there
  durable    in every mode, every record below a durable_offset read
             before the cut is there
  kept       every record seen after an earlier cut is still there
  position   no group's committed position is past end_offset
  committed  in sync="always", no group is behind a commit that returned
  topics     a topic whose creation returned, or that was there after an
             earlier cut, exists; one whose deletion returned does not
             (metadata is durable on return)
  works      no operation of the workload raises on the recovered log

Records below start_offset of "r..." topics (max_bytes with drop_oldest)
are exempt from acked/durable/kept: retention may have deleted them. A topic
whose deletion was in flight at the cut may or may not exist, whole or not.

Environment: PYLOG_POWERCUT_CUTS (cuts per mode, default 50),
PYLOG_POWERCUT_SEED (default 0), PYLOG_POWERCUT_KEEP_GOING=1 (report every
finding of the whole run with a count per check instead of stopping at the
first cut that has one).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

import crashsim
import powercut_workload

CUTS = int(os.environ.get("PYLOG_POWERCUT_CUTS", "50"))
SEED = int(os.environ.get("PYLOG_POWERCUT_SEED", "0"))
KEEP_GOING = os.environ.get("PYLOG_POWERCUT_KEEP_GOING") == "1"
WORKLOAD = Path(powercut_workload.__file__)
EARLY = 7  # every EARLY-th cut lands at a random moment of the child's start


class Acks:
    """A child's side file: ready, each operation with its answer, and the
    errors operations raised."""

    def __init__(self, path):
        self.ready = False
        self.ops = []     # [intent words, answer words or None]
        self.errors = []  # messages of operations that raised
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.decode().split("\n")[:-1]:
            words = line.split()
            if words[0] == "R":
                self.ready = True
            elif words[0] == "I":
                self.ops.append([words[1:], None])
            elif words[:2] == ["A", "durable"]:
                self.ops.append([words[1:], words[1:]])
            elif words[0] == "E":
                self.errors.append(line[2:])
                if self.ops and self.ops[-1][1] is None:
                    self.ops[-1][1] = ["error"]
            elif words[0] == "A":
                assert self.ops and self.ops[-1][1] is None and \
                    self.ops[-1][0][0] == words[1], f"unpaired {line!r}"
                self.ops[-1][1] = words[1:]
            else:
                raise AssertionError(f"bad ack line {line!r}")


class Model:
    """What the children were told, and so what must be true after a cut."""

    def __init__(self, sync):
        self.sync = sync
        self.named = defaultdict(dict)  # topic -> {offset: "cycle:topic:seq"}
        self.alive = set()              # creation returned, no deletion
        self.deleted = set()            # deletion returned
        self.unsure = set()             # create/delete in flight at the cut
        self.commits = {}               # (group, topic) -> position
        self.intended = {}              # (cycle, topic) -> seqs begun
        self.findings = []              # (check, message)

    def find(self, check, msg):
        self.findings.append((check, msg))

    # ---- what a child did ---------------------------------------------------
    def learn(self, cycle, acks):
        """Take in the operations of the child of `cycle`."""
        acked = defaultdict(dict)  # this child's acks: topic -> {off: ident}
        self.unsure = set()
        for intent, answer in acks.ops:
            kind = intent[0]
            if answer == ["error"]:  # raised: nothing was done
                answer = None
                if kind in ("append", "commit", "durable"):
                    continue
            if kind == "append":
                name, seq, n = intent[1], int(intent[2]), int(intent[3])
                self.intended[(cycle, name)] = seq + n
                if answer is None:
                    continue
                off = int(answer[2])
                for i in range(n):
                    ident = f"{cycle}:{name}:{seq + i}"
                    acked[name][off + i] = ident
                    if self.sync == "always":
                        self.named[name][off + i] = ident
            elif kind == "durable":
                name, d = answer[1], int(answer[2])
                for off, ident in acked[name].items():
                    if off < d:
                        self.named[name][off] = ident
            elif kind == "create":
                if answer is None:
                    self.unsure.add(intent[1])
                else:
                    self.alive.add(intent[1])
            elif kind == "delete":
                name = intent[1]
                if answer is None:
                    self.unsure.add(name)
                    continue
                self.alive.discard(name)
                self.deleted.add(name)
                self.named.pop(name, None)
                for key in [k for k in self.commits if k[1] == name]:
                    del self.commits[key]
            elif kind == "commit" and answer is not None:
                if self.sync == "always":
                    for pair in answer[2:]:
                        name, pos = pair.split("=")
                        self.commits[(answer[1], name)] = int(pos)

    # ---- what the next child found ---------------------------------------------
    def check(self, dump):
        topics = dump["topics"]
        for name in sorted(self.alive - self.unsure - set(topics)):
            self.find("topics", f"topic {name}, whose creation returned, is "
                                "gone")
            self.alive.discard(name)
            self.named.pop(name, None)
        for name in sorted((self.deleted - self.unsure) & set(topics)):
            self.find("topics", f"topic {name}, whose deletion returned, is "
                                "back")
        for name in sorted(self.unsure - set(topics)):
            self.alive.discard(name)
            self.named.pop(name, None)
        for name, info in sorted(topics.items()):
            self.check_topic(name, info, lenient=name in self.unsure)
        # A topic there after a cut is on disk: it must stay (until a
        # deletion returns), like its records.
        self.alive |= set(topics)
        self.deleted -= set(topics)
        ends = {n: info["end"] for n, info in topics.items()}
        for group, positions in sorted(dump["groups"].items()):
            for name, pos in sorted(positions.items()):
                if name in ends and pos > ends[name]:
                    self.find("position", f"group {group} is at {pos} in "
                              f"{name}, past end_offset {ends[name]}")
        for (group, name), pos in sorted(self.commits.items()):
            got = dump["groups"].get(group, {}).get(name)
            if name in ends and name not in self.unsure and \
                    (got is None or got < pos):
                self.find("committed", f"group {group} committed {pos} in "
                          f"{name} (returned), is at {got}")
                self.commits[(group, name)] = got or 0

    def check_topic(self, name, info, lenient):
        start, end = info["start"], info["end"]
        for off, msg in info["errors"]:
            self.find("readable", f"{name}: reading at offset {off} fails: "
                                  f"{msg}")
        named = self.named[name]
        present, last = {}, None
        for off, ident, exact in info["records"]:
            if not start <= off < end or (last is not None and off <= last):
                self.find("offsets", f"{name}: record at {off} after {last} "
                          f"in [{start}, {end})")
            last = off
            if ident is None:
                self.find("exact", f"{name}@{off}: a value that names no "
                                   f"record: {exact}...")
                continue
            cycle, topic, seq = ident.split(":")
            if not exact or topic != name or \
                    int(seq) >= self.intended.get((int(cycle), topic), 0):
                self.find("exact", f"{name}@{off}: {ident} "
                          + ("is not what was written" if not exact else
                             "was never written to this topic"))
                continue
            if named.get(off, ident) != ident:
                self.find("reused", f"{name}@{off} held {named[off]}, now "
                                    f"{ident}")
            present[off] = ident
        floor = start if name.startswith("r") else 0
        missing = sorted(o for o in named if o >= floor and o not in present)
        if missing and not lenient:
            check = ("acked" if self.sync == "always" else "durable")
            self.find(check, f"{name}: {len(missing)} records that must be "
                      f"there are missing: {_ranges(missing)} (topic now "
                      f"[{start}, {end}), {len(present)} records)")
        for off in missing:
            del named[off]
        named.update(present)


def _ranges(offs):
    out, lo = [], offs[0]
    for a, b in zip(offs, offs[1:] + [None]):
        if b != a + 1:
            out.append(f"{lo}..{a}" if a != lo else str(a))
            lo = b
    return ", ".join(out[:6]) + (" ..." if len(out) > 6 else "")


def run_child(env, log_dir, sync, cycle, seed, acks, dump, stderr, rnd,
              check_only=False):
    """Run the workload; kill it (SIGKILL) at a random moment unless
    check_only. Returns its exit status (-SIGKILL when we killed it)."""
    args = [sys.executable, str(WORKLOAD), str(log_dir), sync, str(cycle),
            str(seed), str(acks), str(dump)]
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(args + (["--check"] if check_only else []),
                                env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            if check_only:
                return proc.wait(timeout=300)
            if cycle % EARLY == EARLY - 1:
                delay = rnd.uniform(0.05, 1.0)  # start, open, recovery, dump
            else:
                delay = rnd.uniform(0.0, 0.4)
                deadline = time.monotonic() + 120
                while proc.poll() is None and not Acks(acks).ready:
                    assert time.monotonic() < deadline, "child never ready"
                    time.sleep(0.005)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            return proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("sync", ["none", "interval", "always"])
def test_power_cuts_keep_acknowledged_and_durable_records(
        sync, tmp_path, crashsim_lib):
    rnd = random.Random(f"{SEED}-{sync}")
    log_dir = tmp_path / "log"
    sim = crashsim.Simulation(crashsim_lib, log_dir, tmp_path / "sim")
    model = Model(sync)
    report = []  # (cycle, check, message), with KEEP_GOING
    stats = defaultdict(int)
    prev_cut = None  # (cycle, Cut) of the cut the next dump checks

    def judge(dump_path, what, errors=()):
        model.findings = []
        model.check(json.loads(dump_path.read_text()))
        for msg in dict.fromkeys(errors):  # each distinct message once
            model.find("works", f"an operation on the recovered log "
                                f"raised {msg}")
        stats["checked"] += 1
        if not model.findings:
            return
        if not KEEP_GOING:
            cut = prev_cut[1] if prev_cut else None
            if cut:  # the directory as the cut left it, before the reopen
                sim.reimage(tmp_path / "after-cut")
            pytest.fail(
                f"sync={sync}: {what} (PYLOG_POWERCUT_SEED={SEED}; {cut}; "
                f"the directory it left is rebuilt in {tmp_path}/after-cut)"
                "\n"
                + "\n".join(f"  [{c}] {m}" for c, m in model.findings[:20])
                + (f"\n  the cut undid: {'; '.join(cut.undone_ops[:12])}"
                   if cut and cut.undone_ops else ""))
        report.extend((prev_cut[0] if prev_cut else None, c, m)
                      for c, m in model.findings)

    for cycle in range(CUTS):
        acks, dump = tmp_path / f"acks-{cycle}", tmp_path / f"dump-{cycle}"
        stderr = tmp_path / f"stderr-{cycle}"
        env = sim.start()
        status = run_child(env, log_dir, sync, cycle, rnd.randrange(1 << 30),
                           acks, dump, stderr, rnd)
        got = Acks(acks)
        if got.ready:
            judge(dump, f"after the cut of cycle {prev_cut[0]}"
                  if prev_cut else "at the first open", got.errors)
            model.learn(cycle, got)
            stats["acked"] += sum(int(i[3]) for i, a in got.ops
                                  if i[0] == "append" and a
                                  and a != ["error"])
        if status != -signal.SIGKILL:
            pytest.fail(f"sync={sync}: cycle {cycle}: "
                        f"[{'works' if got.ready else 'opens'}] the child "
                        f"ended by itself with status {status} after "
                        f"{prev_cut[1] if prev_cut else 'no cut'}:\n"
                        + stderr.read_text()[-3000:])
        cut = sim.cut(rnd.randrange(1 << 30))
        for k in ("pending", "undone", "pages", "pages_lost"):
            stats[k] += getattr(cut, k)
        prev_cut = (cycle, cut)

    # The last cut, checked by a child that only opens and dumps.
    dump, stderr = tmp_path / "dump-final", tmp_path / "stderr-final"
    status = run_child(None, log_dir, sync, CUTS, 0, tmp_path / "acks-final",
                       dump, stderr, rnd, check_only=True)
    if status != 0:
        pytest.fail(f"sync={sync}: [opens] the log does not open after "
                    f"{prev_cut[1]}:\n" + stderr.read_text()[-3000:])
    judge(dump, f"after the cut of cycle {prev_cut[0]}")

    if report:
        counts = defaultdict(list)
        for cycle, check, msg in report:
            counts[check].append((cycle, msg))
        pytest.fail(f"sync={sync}: {len(report)} findings over {CUTS} cuts "
                    f"(PYLOG_POWERCUT_SEED={SEED}; {dict(stats)}):\n"
                    + "\n".join(
                        f"  [{c}] {len(v)} after {len({x for x, _ in v})} "
                        f"cuts, first after the cut of cycle {v[0][0]}: "
                        f"{v[0][1]}"
                        for c, v in sorted(counts.items())))
    # The run exercised what it claims: cuts were checked, records acked,
    # and the cuts undid namespace operations and dropped pages.
    assert stats["checked"] >= CUTS * 0.7, dict(stats)
    assert stats["acked"] > 20 * CUTS, dict(stats)
    assert stats["undone"] > 0 and stats["pages_lost"] > 0, dict(stats)
