"""The power-cut simulation layer itself (tests/crashsim, docs/TESTING.md).

Each test runs a small child program under the layer once, then builds the
post-cut directory for many seeds and checks the set of outcomes: what was
made durable is there for every seed, and what was not is lost for some
seeds and kept for others (so the layer neither keeps nor drops
everything).
"""
import os
import subprocess
import sys
import textwrap

import pytest

import crashsim

SEEDS = range(40)

PRELUDE = textwrap.dedent('''
    import ctypes, mmap, os, shutil, sys
    root = sys.argv[1]

    def P(*names):
        return os.path.join(root, *names)

    def fsync_path(path):
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def create(name, data=b"", sync=True):
        fd = os.open(P(name), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)
''')


@pytest.fixture
def sim(crashsim_lib, tmp_path):
    return crashsim.Simulation(crashsim_lib, tmp_path / "root",
                               tmp_path / "work")


def run(sim, src):
    """Run src (after PRELUDE) under the layer, to its end."""
    script = sim.work / "child.py"
    script.write_text(PRELUDE + textwrap.dedent(src))
    env = sim.start()
    res = subprocess.run([sys.executable, str(script), str(sim.root)],
                         env=env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()


def outcomes(sim, see, seeds=SEEDS):
    """{seed: see(post-cut directory)} for each seed."""
    out = {}
    for seed in seeds:
        dest = sim.work / f"image-{seed}"
        sim.image(seed, dest)
        out[seed] = see(dest)
    return out


def pages(path):
    """The first byte of each page of the file (None if it is missing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return bytes(data[i] for i in range(0, len(data), crashsim.PAGE))


def test_unsynced_write_can_be_lost_and_synced_write_never_is(sim):
    run(sim, '''
        create("f", b"A" * 8192)
        fsync_path(root)
        fd = os.open(P("f"), os.O_RDWR)
        os.pwrite(fd, b"B" * 4096, 4096)
        os.pwrite(fd, b"C" * 4096, 8192)
    ''')
    seen = outcomes(sim, lambda d: pages(d / "f"))
    assert set(seen.values()) <= {b"AA", b"AB", b"AA\0", b"AAC", b"ABC",
                                  b"AB\0"}, seen
    # The synced pages always; page 1's rewrite lost for some seeds, kept
    # for others; the file grew or not.
    assert {p[1] for p in seen.values()} == {ord("A"), ord("B")}, seen
    assert {len(p) for p in seen.values()} == {2, 3}, seen


def test_a_later_page_can_survive_an_earlier_one(sim):
    run(sim, '''
        create("f")
        fsync_path(root)
        fd = os.open(P("f"), os.O_RDWR)
        os.write(fd, b"".join(bytes([65 + i]) * 4096 for i in range(4)))
    ''')
    seen = set(outcomes(sim, lambda d: pages(d / "f")).values())
    assert b"" in seen and b"ABCD" in seen, seen  # all lost, all kept
    # Page 3 kept while page 1 was lost (it reads as zeros).
    assert any(len(p) == 4 and p[3] == ord("D") and p[1] == 0
               for p in seen), seen


def test_files_present_at_start_keep_their_content_until_synced(sim):
    """The layer keeps a file's content only once it may change (open for
    writing, truncate, unlink, rename over it): each change can revert to
    the content the file had at start, and an unchanged file keeps it."""
    for name, fill, n in [("trunc", b"A", 8192), ("mod", b"B", 8192),
                          ("gone", b"C", 100), ("moved", b"D", 100),
                          ("over", b"E", 100), ("tpath", b"F", 8192),
                          ("same", b"G", 5000)]:
        (sim.root / name).write_bytes(fill * n)
    run(sim, '''
        fd = os.open(P("trunc"), os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"a" * 100)
        fd = os.open(P("mod"), os.O_RDWR)
        os.pwrite(fd, b"b" * 4096, 0)
        os.unlink(P("gone"))
        os.rename(P("moved"), P("moved2"))
        create("new", b"N")
        os.rename(P("new"), P("over"))
        os.truncate(P("tpath"), 10)
        with open(P("same"), "rb") as f:
            f.read()
    ''')

    def state(d):
        return {p.name: p.read_bytes() for p in d.iterdir()}
    seen = list(outcomes(sim, state).values())
    assert {s["trunc"] for s in seen} >= {b"A" * 8192, b"a" * 100}
    assert {s["mod"][:1] for s in seen} == {b"B", b"b"}
    assert {s.get("gone") for s in seen} == {b"C" * 100, None}
    assert {(s.get("moved"), s.get("moved2")) for s in seen} == {
        (b"D" * 100, None), (None, b"D" * 100)}
    assert {s["over"] for s in seen} == {b"E" * 100, b"N"}
    # Cut back or not (the page the truncation zeroed past byte 10 may
    # come back zeroed even where the size reverts).
    assert {s["tpath"] for s in seen} >= {b"F" * 8192, b"F" * 10}
    assert {s["tpath"][:10] for s in seen} == {b"F" * 10}
    assert {s["same"] for s in seen} == {b"G" * 5000}


def test_rename_without_directory_fsync_can_revert(sim):
    run(sim, '''
        create("f", b"O" * 10)
        fsync_path(root)
        create("tmp", b"N" * 10)
        os.rename(P("tmp"), P("f"))
    ''')
    seen = outcomes(sim, lambda d: (pages(d / "f"), pages(d / "tmp")))
    assert (b"O", None) in seen.values(), seen  # rename and create undone
    assert (b"N", None) in seen.values(), seen  # rename durable
    # Never a state no order of the operations gives: f is old or new.
    assert {f for f, _ in seen.values()} == {b"O", b"N"}, seen


def test_rename_with_directory_fsync_never_reverts(sim):
    run(sim, '''
        create("f", b"O" * 10)
        fsync_path(root)
        create("tmp", b"N" * 10)
        os.rename(P("tmp"), P("f"))
        fsync_path(root)
    ''')
    seen = outcomes(sim, lambda d: (pages(d / "f"), pages(d / "tmp")))
    assert set(seen.values()) == {(b"N", None)}, seen


def test_operations_on_one_name_stay_in_order(sim):
    """a -> b -> c, no directory fsync: the file ends at a, b or c, never
    in two places (undoing a -> b undoes b -> c too)."""
    (sim.root / "a").write_bytes(b"X")
    run(sim, '''
        os.rename(P("a"), P("b"))
        os.rename(P("b"), P("c"))
    ''')
    seen = outcomes(sim, lambda d: tuple(sorted(p.name
                                                for p in d.iterdir())))
    assert set(seen.values()) == {("a",), ("b",), ("c",)}, seen


def test_a_durable_rename_makes_the_earlier_ones_on_its_names_durable(sim):
    """d1/x -> d1/y -> d2/z, then fsync(d2): the second rename is durable
    (it touches d2), so the first one, which made its source, is too."""
    (sim.root / "d1").mkdir()
    (sim.root / "d2").mkdir()
    (sim.root / "d1" / "x").write_bytes(b"X")
    run(sim, '''
        os.rename(P("d1", "x"), P("d1", "y"))
        os.rename(P("d1", "y"), P("d2", "z"))
        fsync_path(P("d2"))
    ''')
    seen = outcomes(sim, lambda d: tuple(sorted(
        os.path.relpath(os.path.join(r, f), d)
        for r, _, fs in os.walk(d) for f in fs)))
    assert set(seen.values()) == {("d2/z",)}, seen


def test_create_and_unlink_need_a_directory_fsync(sim):
    (sim.root / "old").write_bytes(b"X")  # present at start: durable
    (sim.root / "dir").mkdir()
    run(sim, '''
        create("new", b"Y")               # data synced, name not
        os.unlink(P("old"))
        create("dir/kept", b"Z")
        fsync_path(P("dir"))              # this name is durable
    ''')
    seen = outcomes(sim, lambda d: ((d / "new").exists(),
                                    (d / "old").exists(),
                                    pages(d / "dir" / "kept")))
    assert {s[0] for s in seen.values()} == {True, False}, seen
    assert {s[1] for s in seen.values()} == {True, False}, seen
    assert {s[2] for s in seen.values()} == {b"Z"}, seen


def test_a_new_directory_needs_its_parent_synced(sim):
    run(sim, '''
        os.mkdir(P("d"))
        create("d/f", b"F")
        fsync_path(P("d"))
    ''')
    seen = outcomes(sim, lambda d: pages(d / "d" / "f"))
    assert set(seen.values()) == {b"F", None}, seen


def test_mmap_writes_are_covered(sim):
    """Writes through a MAP_SHARED map, with no write call: lost or kept
    without a sync, always kept after fsync or msync."""
    run(sim, '''
        for name in ("none", "fsync", "msync"):
            fd = os.open(P(name), os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(fd, 3 * 4096)
            os.fsync(fd)
        fsync_path(root)
        for name in ("none", "fsync", "msync"):
            fd = os.open(P(name), os.O_RDWR)
            m = mmap.mmap(fd, 3 * 4096)
            m[0:4096] = b"M" * 4096
            m[8192:12288] = b"N" * 4096
            if name == "fsync":
                os.fsync(fd)
            elif name == "msync":
                m.flush()
    ''')
    seen = outcomes(sim, lambda d: tuple(pages(d / n)
                                         for n in ("none", "fsync", "msync")))
    assert {s[1] for s in seen.values()} == {b"M\0N"}, seen
    assert {s[2] for s in seen.values()} == {b"M\0N"}, seen
    assert {b"\0\0\0", b"M\0N"} <= {s[0] for s in seen.values()}, seen


def test_o_dsync_writes_are_durable(sim):
    run(sim, '''
        create("f")
        fsync_path(root)
        sync_fd = os.open(P("f"), os.O_WRONLY | os.O_DSYNC)
        plain_fd = os.open(P("f"), os.O_WRONLY)
        os.pwrite(plain_fd, b"P" * 4096, 4096)   # page cache only
        os.pwrite(sync_fd, b"D" * 4096, 0)       # durable on return
    ''')
    seen = set(outcomes(sim, lambda d: pages(d / "f")).values())
    assert seen == {b"D", b"DP", b"D\0"} or seen == {b"D", b"DP"}, seen


LMDB_CHECK = textwrap.dedent('''
    import lmdb, sys
    try:
        env = lmdb.open(sys.argv[1], create=False)
        with env.begin() as txn:
            print(txn.get(b"k") == b"v" * 3000)
    except lmdb.Error:
        print(False)
''')


@pytest.mark.parametrize("sync", [True, False])
def test_lmdb_writes_are_covered(sim, sync):
    """The catalog's writes: liblmdb inside py-lmdb writes pages with pwrite,
    its meta page through an O_DSYNC descriptor and syncs with fdatasync.
    A commit with sync=True always survives; with sync=False it can be
    lost."""
    import lmdb
    lmdb.open(str(sim.root / "db"), map_size=1 << 20).close()
    run(sim, f'''
        import lmdb
        env = lmdb.open(P("db"), map_size=1 << 20, sync={sync},
                        metasync={sync})
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v" * 3000)
        os._exit(0)   # no close: nothing more is synced
    ''')
    check = sim.work / "check.py"
    check.write_text(LMDB_CHECK)

    def found(d):
        res = subprocess.run([sys.executable, str(check), str(d / "db")],
                             capture_output=True, text=True, timeout=60)
        return res.stdout.strip() == "True"
    seen = set(outcomes(sim, found, range(16)).values())
    assert seen == ({True} if sync else {True, False}), seen


def test_python_namespace_calls_are_all_seen(sim):
    """makedirs, rename with dir_fd, replace, rmtree (unlinkat, rmdir
    through openat), open() for writing: the replayed names match the real
    ones; after os.sync() every seed gives exactly the final state."""
    (sim.root / "gone").mkdir()
    (sim.root / "gone" / "x").write_bytes(b"x")
    run(sim, '''
        os.makedirs(P("a", "b", "c"))
        with open(P("a", "b", "c", "f"), "wb") as f:
            f.write(b"f" * 5000)
        dfd = os.open(P("a"), os.O_RDONLY | os.O_DIRECTORY)
        os.rename("b", "b2", src_dir_fd=dfd, dst_dir_fd=dfd)
        os.mkdir("e", dir_fd=dfd)
        os.replace(P("a", "b2", "c", "f"), P("a", "e", "g"))
        shutil.rmtree(P("gone"))
        os.sync()
    ''')
    want = {"a", "a/b2", "a/b2/c", "a/e", "a/e/g"}

    def state(d):
        return frozenset(os.path.relpath(os.path.join(r, n), d)
                         for r, ds, fs in os.walk(d) for n in ds + fs)
    seen = outcomes(sim, state, range(8))
    assert set(seen.values()) == {frozenset(want)}, seen
    assert (sim.work / "image-0" / "a" / "e" / "g").read_bytes() == b"f" * 5000


def test_an_operation_the_layer_did_not_see_fails_the_cut(sim):
    run(sim, '''
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(257, -100, P("raw").encode(), os.O_CREAT | os.O_WRONLY,
                          0o644)   # openat(2) without libc's wrapper
        assert fd >= 0
    ''')
    with pytest.raises(crashsim.LayerError, match="replayed names differ"):
        sim.image(0, sim.work / "image")


def test_an_operation_the_layer_does_not_model_fails_the_cut(sim):
    run(sim, '''
        create("f")
        os.link(P("f"), P("g"))
    ''')
    with pytest.raises(crashsim.LayerError, match="does not model"):
        sim.image(0, sim.work / "image")


def test_a_cut_is_reproducible(sim):
    run(sim, '''
        for i in range(20):
            create("f%d" % i, bytes([65 + i]) * 9000, sync=i % 2 == 0)
        fsync_path(root)
        for i in range(20):
            fd = os.open(P("f%d" % i), os.O_RDWR)
            os.pwrite(fd, b"z" * 6000, 3000)
    ''')

    def state(d):
        return tuple(sorted((p.name, p.read_bytes()) for p in d.iterdir()))
    a = outcomes(sim, state, range(5))
    for seed in range(5):
        sim.image(seed, sim.work / f"again-{seed}")
        assert state(sim.work / f"again-{seed}") == a[seed], seed
    assert len(set(a.values())) > 1
    # After the cut, and after the next child changed root, reimage()
    # builds the same directory again.
    sim.cut(3)
    assert state(sim.root) == a[3]
    run(sim, '''
        for i in range(20):
            os.unlink(P("f%d" % i))
    ''')
    sim.reimage(sim.work / "reimage")
    assert state(sim.work / "reimage") == a[3]


def test_a_child_killed_mid_operation_still_cuts(sim):
    """SIGKILL lands between the journal's "+" and "=" lines sometimes; the
    in-flight operation is undone and the replay still matches."""
    script = sim.work / "child.py"
    script.write_text(PRELUDE + textwrap.dedent('''
        i = 0
        while True:
            create("t", b"x" * 100, sync=i % 3 == 0)
            os.rename(P("t"), P("f%d" % (i % 7)))
            if i % 5 == 0:
                fsync_path(root)
            if i % 11 == 0 and os.path.exists(P("f3")):
                os.unlink(P("f3"))
            print(i, flush=True)
            i += 1
    '''))
    import random
    import signal
    import time
    rnd = random.Random(7)
    for cycle in range(8):
        env = sim.start()
        proc = subprocess.Popen([sys.executable, str(script), str(sim.root)],
                                env=env, stdout=subprocess.PIPE)
        proc.stdout.readline()  # running
        time.sleep(rnd.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        cut = sim.cut(cycle)
        assert cut.ops > 0
        names = {p.name for p in sim.root.iterdir()}
        assert names <= {"t"} | {f"f{i}" for i in range(7)}, names
