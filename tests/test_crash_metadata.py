"""SIGKILL during metadata changes (pylog/_registry.py, pylog/_groups.py,
pylog/_pending.py): creating and deleting topics, changing their configs,
registering and deleting consumer groups, committing positions.

A child process (this file run as a script) makes random metadata changes
to one log and writes each to a side file: an intent line before the call
and an acknowledgement line, with what the call returned, after it. The
parent kills it with SIGKILL at a random moment (some cycles while it is
still opening the log), opens the log, and checks it against the
acknowledged changes replayed onto what the previous cycle found:

  - the log opens;
  - every topic whose creation (or config change) returned exists with
    that config; a topic whose deletion returned is gone, and so are the
    positions groups had in it;
  - every commit and registration that returned is kept, in every sync
    mode (a SIGKILL is not a power cut: the page cache survives);
  - a deleted group stays deleted;
  - no committed position is past its topic's end_offset.

The one change in flight when the kill came may have happened or not
(either outcome is accepted, nothing in between). Cycles rotate through
the sync modes and keep working on the same log.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time


import pylog

CYCLES = int(os.environ.get("PYLOG_METADATA_CYCLES", "24"))
NAMES = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
GROUPS = ["g1", "g2", "g3", "g4"]
SYNCS = ["none", "interval", "always"]


def random_config(rnd):
    cfg = {}
    if rnd.random() < 0.7:
        cfg["segment_bytes"] = rnd.choice([4096, 8192, 65536, 1 << 20])
    if rnd.random() < 0.4:
        cfg["retention_ms"] = rnd.choice([0, 3_600_000, 86_400_000])
    if rnd.random() < 0.4:
        cfg["index_interval_bytes"] = rnd.choice([128, 1024, 4096])
    if rnd.random() < 0.3:
        cfg["max_record_bytes"] = rnd.choice([4096, 1 << 20])
    return cfg


# ---- the child --------------------------------------------------------------
def child(path, sync, seed, ack_path):
    rnd = random.Random(seed)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def say(kind, doc):
        os.write(fd, f"{kind} {json.dumps(doc)}\n".encode())

    log = pylog.open(path, sync=sync,
                     sync_interval_ms=rnd.choice([5, 50, 1000]))
    say("R", {})
    while True:
        topics = log.topics()
        r = rnd.random()
        if r < 0.15 and len(topics) < len(NAMES):
            name = rnd.choice([n for n in NAMES if n not in topics])
            cfg = random_config(rnd)
            say("I", {"op": "create", "topic": name, "cfg": cfg})
            t = log.topic(name, **cfg)
            say("A", {"op": "create", "topic": name, "config": t.config})
        elif r < 0.25 and topics:
            name = rnd.choice(topics)
            cfg = random_config(rnd) or {"segment_bytes": 16384}
            say("I", {"op": "update", "topic": name, "cfg": cfg})
            t = log.topic(name, **cfg)
            say("A", {"op": "update", "topic": name, "config": t.config})
        elif r < 0.33 and topics:
            name = rnd.choice(topics)
            say("I", {"op": "delete", "topic": name})
            log.delete_topic(name)
            say("A", {"op": "delete", "topic": name})
        elif r < 0.5 and topics:
            t = log.topic(rnd.choice(topics))
            t.append_batch([os.urandom(rnd.randrange(10, 200))
                            for _ in range(rnd.randrange(1, 30))])
        elif r < 0.9 and topics:
            g = rnd.choice(GROUPS)
            ts = rnd.sample(topics, rnd.randint(1, min(3, len(topics))))
            say("I", {"op": "register", "group": g, "topics": ts})
            c = log.consumer(g, ts, start=rnd.choice(["earliest", "latest"]))
            say("A", {"op": "register", "group": g,
                      "positions": {t: c.committed(t) for t in ts}})
            for _ in range(rnd.randint(1, 4)):
                pos = {t: rnd.randint(0, log.topic(t).end_offset)
                       for t in rnd.sample(ts, rnd.randint(1, len(ts)))}
                say("I", {"op": "commit", "group": g, "positions": pos})
                c.commit(pos)
                say("A", {"op": "commit", "group": g, "positions": pos})
            c.close()
        else:
            groups = sorted(log.groups())
            if groups:
                g = rnd.choice(groups)
                say("I", {"op": "delete_group", "group": g})
                log.delete_group(g)
                say("A", {"op": "delete_group", "group": g})


# ---- the parent -------------------------------------------------------------
def parse(path):
    """(ready, acknowledged changes, the change in flight or None)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]  # complete lines only
    except FileNotFoundError:
        return False, [], None
    ready, acks, inflight = False, [], None
    for line in lines:
        kind, _, body = line.decode().partition(" ")
        doc = json.loads(body)
        if kind == "R":
            ready = True
        elif kind == "I":
            inflight = doc
        elif kind == "A":
            assert inflight is not None and inflight["op"] == doc["op"]
            acks.append(doc)
            inflight = None
        else:
            raise AssertionError(f"bad side file line {line!r}")
    return ready, acks, inflight


def replay(state, acks):
    """The state (topics {name: config}, positions {(group, topic): pos})
    after the acknowledged changes."""
    topics = dict(state[0])
    pos = dict(state[1])
    for a in acks:
        op = a["op"]
        if op in ("create", "update"):
            topics[a["topic"]] = a["config"]
        elif op == "delete":
            topics.pop(a["topic"])
            pos = {k: v for k, v in pos.items() if k[1] != a["topic"]}
        elif op in ("register", "commit"):
            for t, p in a["positions"].items():
                pos[(a["group"], t)] = p
        elif op == "delete_group":
            pos = {k: v for k, v in pos.items() if k[0] != a["group"]}
    return topics, pos


def observe(path):
    """(topics {name: config}, positions {(group, topic): pos},
    end offsets {name: end})."""
    with pylog.open(path) as log:
        topics, ends = {}, {}
        for name in log.topics():
            t = log.topic(name)
            topics[name] = dict(t.config)
            ends[name] = t.end_offset
        pos = {(g, t): p for g, tops in log.groups().items()
               for t, p in tops.items()}
    return topics, pos, ends


def check(expected, observed, ends, inflight, where, before):
    """Every way observed differs from expected (sentences). before: what
    the previous cycle found (a problem found then is not reported
    again)."""
    problems = []
    etop, epos = expected
    otop, opos = observed
    op = (inflight or {}).get("op")
    itopic = (inflight or {}).get("topic")
    for name in sorted(set(etop) | set(otop)):
        got, want = otop.get(name), etop.get(name)
        if name == itopic and op in ("create", "update", "delete"):
            if op == "delete":
                ok = got in (want, None)
            else:
                ok = got == want or (got is not None and all(
                    got.get(k) == v for k, v in inflight["cfg"].items()))
            if not ok:
                problems.append(
                    f"{where}: topic {name!r} in flight ({op}): {got}")
        elif got != want:
            problems.append(
                f"{where}: topic {name!r} should be {want}, found {got}")
    for key in sorted(set(epos) | set(opos)):
        got, want = opos.get(key), epos.get(key)
        g, t = key
        stale_before = t not in before[0] and before[1].get(key) == got
        if got is not None and t not in otop and not stale_before:
            problems.append(
                f"{where}: group {g!r} has position {got} in topic {t!r}, "
                "which does not exist (a topic re-created under that name "
                f"would inherit it; in flight: {inflight})")
        elif got is not None and t in otop and got > ends[t]:
            problems.append(
                f"{where}: group {g!r} position {got} is past end_offset "
                f"{ends[t]} of topic {t!r}")
        if got == want or (got is not None and t not in otop):
            continue
        if op == "register" and inflight["group"] == g and \
                t in inflight["topics"] and want is None:
            continue  # registered, or not
        if op == "commit" and inflight["group"] == g and \
                t in inflight["positions"] and \
                got == inflight["positions"][t]:
            continue
        if op == "delete_group" and inflight["group"] == g and got is None:
            continue
        if op == "delete" and itopic == t and got is None and t not in otop:
            continue
        problems.append(
            f"{where}: group {g!r} topic {t!r}: position should be {want}, "
            f"found {got} (in flight: {inflight})")
    return problems


def run_cycle(path, sync, seed, ack_path, delay, from_ready):
    proc = subprocess.Popen(
        [sys.executable, __file__, path, sync, str(seed), ack_path],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if from_ready:
            deadline = time.monotonic() + 60
            while proc.poll() is None and not parse(ack_path)[0]:
                assert time.monotonic() < deadline, "child never got ready"
                time.sleep(0.005)
        time.sleep(delay)
        early = proc.poll()
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert early is None, f"child exited by itself: {err.decode()[-3000:]}"
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_metadata_changes(tmp_path):
    path = str(tmp_path / "log")
    rnd = random.Random(int(os.environ.get("PYLOG_METADATA_SEED", "8128")))
    state = ({}, {})
    changes = 0
    problems = []
    for cycle in range(CYCLES):
        sync = SYNCS[cycle % len(SYNCS)]
        ack_path = str(tmp_path / f"acks-{cycle}")
        from_ready = cycle % 6 != 5
        delay = rnd.uniform(0.05, 0.6) if from_ready else rnd.uniform(0, 0.4)
        run_cycle(path, sync, rnd.randrange(1 << 30), ack_path, delay,
                  from_ready)
        ready, acks, inflight = parse(ack_path)
        changes += len(acks)
        where = f"cycle {cycle} (sync={sync}, {len(acks)} changes)"
        expected = replay(state, acks)
        topics, pos, ends = observe(path)  # the log opens
        problems += check(expected, (topics, pos), ends, inflight, where,
                          state)
        state = (topics, pos)  # the next cycle goes on from what is there
    assert not problems, (f"{len(problems)} problems in {CYCLES} cycles:\n"
                          + "\n".join(problems[:30]))
    # The kills landed while changes were being made, not only in idle time.
    assert changes >= 10 * CYCLES // 2, changes


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
