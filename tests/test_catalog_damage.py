"""A damaged catalog never crashes, never destroys, and loses nothing
silently (pylog/_catalog.py, pylog/_registry.py).

A log with several multi-segment topics and many consumer groups is built
once per state: closed cleanly, or left by a SIGKILL (after a sync round
moved the positions into the catalog, with one group's newest commit still
pending). Each case damages a copy of it -- ``catalog/data.mdb`` or
``catalog/lock.mdb`` deleted, truncated to 0, truncated to half, bytes
flipped at random places (several seeds); the whole ``catalog/`` deleted;
``catalog/`` replaced by a regular file -- and opens it in a child process
(this file run as a script), which must exit normally. Then:

  - no topic directory is gone, every record reads back exactly;
  - each group's position in each topic is the one committed, or the
    catalog lost it: then ``log.recovery`` names the group and the topic,
    the group's first consumer reports ``Gap(topic, ..., "position lost")``
    and starts per its ``start`` policy; a position is never moved ahead
    of the committed one otherwise;
  - where a position was lost, the damaged catalog is kept as
    ``catalog.damaged*``; a file in place of ``catalog/`` is kept whole;
  - the rebuilt catalog works: new commits survive a reopen, which finds
    nothing more to report;
  - a commit still pending at the SIGKILL is kept;
  - ``pylog DIR verify`` of the damaged log exits non-zero where something
    was lost (its own test function, at the end).
"""
import hashlib
import json
import os
import random
import shutil
import signal
import sys

import pytest

import childproc

TOPICS = ["temp", "humid", "volt", "door"]
FIRST, MORE, UNSYNCED = 240, 60, 20   # records per topic in each phase
BATCH = 10
SEGMENT_BYTES = 4096
# Named groups with hand-picked positions (at FIRST records per topic),
# plus filler groups that make the catalog span several pages.
NAMED = {
    "early": ("earliest", {"temp": 120, "humid": 0, "volt": FIRST,
                           "door": 37}),
    "late": ("latest", {"temp": 200, "humid": 150, "volt": 10,
                        "door": 233}),
}
PENDING_GROUP = "pend"   # commits after the last sync round (sigkill state)
N_FILLERS = 60


def value(topic, off):
    h = hashlib.blake2b(f"{topic}:{off}".encode(), digest_size=16).digest()
    return f"{topic}:{off}:".encode() + h * (1 + h[0] % 6)


def plan():
    """{group: (start, {topic: committed position})}, deterministic."""
    rnd = random.Random(7)
    groups = dict(NAMED)
    for i in range(N_FILLERS):
        start = "earliest" if i % 2 else "latest"
        groups[f"consumer-group-{i:03d}"] = (
            start, {t: rnd.randrange(FIRST + 1) for t in TOPICS})
    groups[PENDING_GROUP] = ("earliest", {t: FIRST + MORE - 5
                                          for t in TOPICS})
    return groups


# ---- the child: build a log, or open a damaged one -------------------------
def child_build(path, state):
    import pylog
    log = pylog.open(path, sync="none", segment_bytes=SEGMENT_BYTES)
    topics = [log.topic(t) for t in TOPICS]

    def append(n):
        for t in topics:
            for _ in range(n // BATCH):
                off = t.end_offset
                t.append_batch([value(t.name, off + i) for i in range(BATCH)])

    append(FIRST)
    groups = plan()
    for g, (start, pos) in groups.items():
        if g == PENDING_GROUP:
            continue
        c = log.consumer(g, TOPICS, start=start)
        c.commit(pos)
        c.close()
    append(MORE)
    start, pos = groups[PENDING_GROUP]
    c = log.consumer(PENDING_GROUP, TOPICS, start=start)
    c.commit({t: 0 for t in TOPICS})
    if state == "clean":
        c.commit(pos)
        c.close()
        log.close()
        print("{}")
        return
    log.flush()          # positions so far reach the catalog
    c.commit(pos)        # this one stays pending: a SIGKILL keeps it
    append(UNSYNCED)
    print("{}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _read_topic(t):
    bad, n = [], 0
    try:
        for rec in t.read(0):
            if rec.offset != n or bytes(rec.value) != value(t.name, n):
                bad.append(n)
            n = rec.offset + 1
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        bad.append(f"{type(exc).__name__}: {exc}")
    return {"start": t.start_offset, "end": t.end_offset, "bad": bad[:20],
            "read": n}


def child_check(path):
    import pylog
    out = {}
    try:
        log = pylog.open(path, sync="none")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(out))
        return
    out["recovery"] = list(log.recovery)
    out["topics"] = log.topics()
    out["records"] = {name: _read_topic(log.topic(name))
                      for name in out["topics"]}
    positions, gaps = {}, {}
    for g, (start, _) in plan().items():
        c = log.consumer(g, TOPICS, start=start)
        positions[g] = {t: c.position(t) for t in TOPICS}
        gaps[g] = [list(x) for x in c.gaps]
        c.close()
    out["positions"], out["gaps"] = positions, gaps
    # The rebuilt catalog takes new commits.
    c = log.consumer("after", TOPICS, start="earliest")
    c.commit({t: 5 for t in TOPICS})
    c.close()
    c = log.consumer("early", TOPICS, start="earliest")
    c.commit({t: log.topic(t).end_offset for t in TOPICS})
    c.close()
    log.close()
    with pylog.open(path) as log:
        out["again"] = {"recovery": list(log.recovery),
                        "groups": log.groups(),
                        "ends": {t: log.topic(t).end_offset for t in TOPICS}}
    out["listing"] = sorted(os.listdir(path))
    out["topic_dirs"] = sorted(os.listdir(os.path.join(path, "topics")))
    print(json.dumps(out))


# ---- damage -----------------------------------------------------------------
def flip(path, seed, count=48):
    rnd = random.Random(seed)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for _ in range(count):
            data[rnd.randrange(len(data))] ^= rnd.randrange(1, 256)
        f.seek(0)
        f.write(data)


def damage(root, case):
    cat = os.path.join(root, "catalog")
    if case == "catalog-deleted":
        shutil.rmtree(cat)
        return
    if case == "catalog-is-a-file":
        shutil.rmtree(cat)
        with open(cat, "wb") as f:
            f.write(b"not a catalog\n")
        return
    name, how = case.split(":")
    path = os.path.join(cat, name)
    if how == "delete":
        os.unlink(path)
    elif how == "truncate-0":
        os.truncate(path, 0)
    elif how == "truncate-half":
        os.truncate(path, os.path.getsize(path) // 2)
    elif how.startswith("flip-"):
        flip(path, int(how[5:]))
    else:
        raise AssertionError(case)


FILE_CASES = [f"{f}:{how}" for f in ("data.mdb", "lock.mdb")
              for how in ("delete", "truncate-0", "truncate-half",
                          "flip-1", "flip-2", "flip-3", "flip-4")]
CASES = FILE_CASES + ["catalog-deleted", "catalog-is-a-file"]
# The data file is gone whole: no position can be read.
ALL_LOST = {"data.mdb:delete", "data.mdb:truncate-0", "catalog-deleted",
            "catalog-is-a-file"}
STATES = ["clean", "sigkill"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """{state: path of the undamaged log}."""
    out = {}
    for state in STATES:
        path = str(tmp_path_factory.mktemp("pristine") / state)
        childproc.build([__file__, "build", path, state],
                        killed=state == "sigkill")
        assert os.path.exists(os.path.join(path, "catalog", "data.mdb"))
        out[state] = path
    return out


_checked = {}


def damaged_copy(pristine, tmp_path, state, case, name):
    path = str(tmp_path / name)
    shutil.copytree(pristine[state], path, symlinks=True)
    damage(path, case)
    return path


def check(pristine, tmp_path, state, case):
    """The child's findings for a damaged copy (computed once per case)."""
    if (state, case) not in _checked:
        path = damaged_copy(pristine, tmp_path, state, case, "checked")
        _checked[(state, case)] = (path, childproc.run_json(
            [__file__, "check", path]))
    return _checked[(state, case)]


def ends(state):
    n = FIRST + MORE + (UNSYNCED if state == "sigkill" else 0)
    return {t: n for t in TOPICS}


def lost_pairs(found):
    return {(g, gap[0]) for g, gaps in found["gaps"].items() for gap in gaps
            if gap[3] == "position lost"}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("state", STATES)
def test_damaged_catalog_opens_and_loses_nothing_silently(
        pristine, tmp_path, state, case):
    path, found = check(pristine, tmp_path, state, case)
    assert "error" not in found, f"the log does not open: {found['error']}"
    # Topics are their directories: all there, every record intact.
    assert found["topics"] == sorted(TOPICS)
    assert found["topic_dirs"] == sorted(TOPICS)
    for t, n in ends(state).items():
        r = found["records"][t]
        assert (r["start"], r["end"], r["read"]) == (0, n, n), (t, r)
        assert r["bad"] == [], (t, r["bad"])
    # Positions: kept exactly, or lost and said so.
    lost = lost_pairs(found)
    for g, (start, committed) in plan().items():
        for t in TOPICS:
            pos = found["positions"][g][t]
            if (g, t) not in lost:
                assert pos == committed[t], (
                    f"group {g!r} topic {t!r}: position {pos}, committed "
                    f"{committed[t]}, and no 'position lost' gap reported")
                continue
            restart = 0 if start == "earliest" else ends(state)[t]
            assert pos == restart, (g, t, pos, start)
            gap = [x for x in found["gaps"][g]
                   if x[0] == t and x[3] == "position lost"]
            assert gap[0][2] == pos, gap
            assert any(g in line and t in line and "lost" in line
                       for line in found["recovery"]), (
                f"log.recovery does not report the lost position of group "
                f"{g!r} in topic {t!r}: {found['recovery']}")
    if state == "sigkill":
        assert not any(g == PENDING_GROUP for g, _ in lost), (
            "a commit that returned (still pending at the SIGKILL) is lost")
    if case in ALL_LOST:
        expected = {(g, t) for g in plan() for t in TOPICS}
        if state == "sigkill":
            expected = {(g, t) for g, t in expected if g != PENDING_GROUP}
        assert lost == expected, (
            f"the catalog's data is gone, but only {len(lost)} of "
            f"{len(expected)} positions were reported lost; "
            f"recovery: {found['recovery']}")
    if case.startswith("lock.mdb"):
        assert lost == set(), "lock.mdb holds no positions"
    # The damaged catalog is kept, never deleted.
    kept = [x for x in found["listing"] if x.startswith("catalog.damaged")]
    if lost and case != "catalog-deleted":
        assert kept, (f"positions were lost but the damaged catalog was not "
                      f"kept: {found['listing']}")
    if case == "catalog-is-a-file":
        with open(os.path.join(path, kept[0]), "rb") as f:
            assert f.read() == b"not a catalog\n"
    if lost:
        assert found["recovery"], "something was lost and nothing reported"
    # The rebuilt catalog takes commits; the next open finds it sound.
    again = found["again"]
    assert again["recovery"] == [], again["recovery"]
    assert again["ends"] == ends(state)
    assert again["groups"]["after"] == {t: 5 for t in TOPICS}
    assert again["groups"]["early"] == ends(state)
    for g in plan():
        if g != "early":
            assert again["groups"][g] == found["positions"][g], g


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("state", STATES)
def test_verify_reports_a_damaged_catalog(pristine, tmp_path, state, case):
    """`pylog DIR verify` of the damaged log (before anything opened it)
    exits non-zero and names the catalog where a position was lost."""
    path = damaged_copy(pristine, tmp_path, state, case, "verified")
    status, out = childproc.verify(path)
    _, found = check(pristine, tmp_path, state, case)
    if lost_pairs(found):
        assert status != 0, (
            f"verify exited 0 though positions were lost:\n{out}")
        assert "catalog" in out, out


if __name__ == "__main__":
    if sys.argv[1] == "build":
        child_build(sys.argv[2], sys.argv[3])
    else:
        child_check(sys.argv[2])
