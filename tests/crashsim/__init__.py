"""A power-cut simulation for the test suite (docs/TESTING.md).

crashsim.c, loaded with LD_PRELOAD into a child process, records what the
child made durable (file content at each sync, names at each directory
sync). This module compiles it, snapshots the directory under test before
the child starts, and once the child is dead builds the directory a power
cut at that moment could have left:

    lib = crashsim.build(build_dir)            # once
    sim = crashsim.Simulation(lib, root, work)
    env = sim.start()                          # before each child
    ...run the child with env, SIGKILL it...
    cut = sim.cut(seed)                        # root now holds the post-cut state
    sim.reimage(dest)                          # that state again, to debug

The post-cut directory is the durable state plus, for each change that was
not durable, a seeded random choice:

  - file content, page by page (4096 bytes): each page whose current content
    differs from its durable content is kept or lost on its own, so a later
    page may survive an earlier one; a page never written durably comes
    back as zeros;
  - file size: the current size or the durable one;
  - names: each create, mkdir, rename, unlink or rmdir not yet made durable
    by an fsync of a directory it touches is kept or undone, atomically
    (a rename moves its file or leaves it where it was), and per name in
    order (once an operation on a name is undone, the later ones on that
    name are undone too, so a file is never in two places).

Between cuts the directory counts as fully durable: the next child starts
from what the cut left, as a machine that rebooted would.
"""
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
SOURCE = Path(__file__).with_name("crashsim.c")


class LayerError(AssertionError):
    """The simulation cannot represent what the child did (an operation it
    does not model, or one it did not see): a defect of the layer, never of
    the code under test."""


def build(out_dir):
    """Compile crashsim.c into out_dir with the system C compiler ($CC or
    cc); returns the path of the shared library."""
    out = Path(out_dir) / "libcrashsim.so"
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
           "-o", str(out), str(SOURCE), "-ldl", "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise LayerError(f"cannot build {SOURCE}: {' '.join(cmd)}\n"
                         f"{res.stdout}{res.stderr}")
    return out


@dataclass
class Cut:
    """What one cut did; every count is of things that were not durable."""
    seed: int
    ops: int = 0             # namespace operations the child completed
    pending: int = 0         # ... not durable at the cut
    undone: int = 0          # ... of which the cut undid
    inflight: str = None     # the operation in flight (always undone)
    pages: int = 0           # pages whose durable and current content differ
    pages_lost: int = 0      # ... of which the cut kept the durable content
    sizes_reverted: int = 0  # files cut back (or grown back) to durable size
    files: int = 0           # files in the post-cut directory
    choices: dict = field(default_factory=dict)  # the cut's probabilities
    undone_ops: list = field(default_factory=list)  # journal text of each

    def __str__(self):
        return (f"cut seed={self.seed}: {self.undone}/{self.pending} pending "
                f"namespace ops undone, {self.pages_lost}/{self.pages} "
                f"changed pages lost, {self.sizes_reverted} sizes reverted"
                + (f", in flight: {self.inflight}" if self.inflight else ""))


def _unescape(s):
    out, i = bytearray(), 0
    b = s.encode("ascii")
    while i < len(b):
        if b[i:i + 1] == b"%":
            out.append(int(b[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return os.fsdecode(bytes(out))


class _Op:
    """A namespace operation as a set of directory-entry assignments
    ((dir, name) -> object, or None for removal), applied atomically."""
    __slots__ = ("text", "assign", "keys", "dirs", "durable")

    def __init__(self, text, assign):
        self.text = text
        self.assign = assign
        self.keys = {k for k, _ in assign}
        self.dirs = {d for d, _ in self.keys}
        self.durable = False

    def apply(self, entries):
        for (d, name), obj in self.assign:
            if obj is None:
                entries.setdefault(d, {}).pop(name, None)
            else:
                entries.setdefault(d, {})[name] = obj


class _Replay:
    """The journal replayed over the snapshot taken by start()."""

    def __init__(self, kind, ino, entries):
        self.kind = dict(kind)          # obj -> "d" | "f"
        self.ino = dict(ino)            # obj -> inode number
        self.initial = {d: dict(e) for d, e in entries.items()}
        self.cur = {d: dict(e) for d, e in entries.items()}
        self.dir_by_ino = {i: o for o, i in ino.items() if kind[o] == "d"}
        self.file_by_ino = {i: o for o, i in ino.items() if kind[o] == "f"}
        self.ops = []
        self.inflight = None

    def _new(self, kind, ino):
        obj = len(self.kind)
        self.kind[obj] = kind
        self.ino[obj] = ino
        if kind == "d":
            self.dir_by_ino[ino] = obj
            self.initial[obj] = {}
            self.cur[obj] = {}
        else:
            if ino in self.file_by_ino:
                raise LayerError(f"inode {ino} created twice (its live "
                                 "link should have kept it)")
            self.file_by_ino[ino] = obj
        return obj

    def _dir(self, ino, line):
        d = self.dir_by_ino.get(ino)
        if d is None:
            raise LayerError(f"journal line {line!r}: directory inode {ino} "
                             "was never seen below ROOT")
        return d

    def _entry(self, d, name, ino, line):
        obj = self.cur.get(d, {}).get(name)
        if obj is None or self.ino[obj] != ino:
            raise LayerError(f"journal line {line!r}: the replay has "
                             f"{obj and self.ino[obj]} there")
        return obj

    def op(self, intent, result):
        """The _Op of a completed intent ("+ ..." then "= result")."""
        line = " ".join(intent)
        k = intent[0]
        if k in ("C", "M"):
            d = self._dir(int(intent[1]), line)
            obj = self._new("f" if k == "C" else "d", result)
            return _Op(line, [((d, _unescape(intent[2])), obj)])
        if k == "R":
            od, on, nd, nn, ino = (int(intent[1]), intent[2], int(intent[3]),
                                   intent[4], int(intent[5]))
            if not od:
                raise LayerError(f"{line!r}: moved into ROOT from outside")
            d = self._dir(od, line)
            obj = self._entry(d, _unescape(on), ino, line)
            assign = [((d, _unescape(on)), None)]
            if nd:
                assign.append(((self._dir(nd, line), _unescape(nn)), obj))
            return _Op(line, assign)
        if k == "U":
            d = self._dir(int(intent[1]), line)
            self._entry(d, _unescape(intent[2]), int(intent[3]), line)
            return _Op(line, [((d, _unescape(intent[2])), None)])
        raise LayerError(f"unknown journal operation {line!r}")

    def durable_dir(self, d):
        """fsync of directory d: every operation on it so far is durable,
        with every earlier operation on a name those touch."""
        keys = set()
        for op in reversed(self.ops):
            if not op.durable and (d in op.dirs or op.keys & keys):
                op.durable = True
                keys |= op.keys

    def run(self, lines):
        intent = None
        for line in lines:
            tag, *f = line.split(" ")
            if tag == "+":
                if intent is not None:
                    raise LayerError(f"two operations in flight: {intent} "
                                     f"and {f}")
                intent = f
            elif tag == "=":
                op = self.op(intent, int(f[0]))
                op.apply(self.cur)
                self.ops.append(op)
                intent = None
            elif tag == "-":
                intent = None
            elif tag == "D":
                d = self.dir_by_ino.get(int(f[0]))
                if d is None:
                    raise LayerError(f"fsync of directory inode {f[0]} "
                                     "that was never seen below ROOT")
                self.durable_dir(d)
            elif tag == "S":
                for op in self.ops:
                    op.durable = True
            elif tag == "!":
                raise LayerError("the child did what the simulation does "
                                 f"not model: {' '.join(f)}")
            else:
                raise LayerError(f"bad journal line {line!r}")
        self.inflight = intent

    def tree(self, entries):
        """{relative path: (kind, inode)} reachable from the root (obj 0);
        an object reachable twice is a defect of the replay."""
        out, seen, stack = {}, {0}, [(0, "")]
        while stack:
            d, prefix = stack.pop()
            for name, obj in entries.get(d, {}).items():
                if obj in seen:
                    raise LayerError(f"object {self.ino[obj]} is reachable "
                                     "twice")
                seen.add(obj)
                path = prefix + name
                out[path] = (self.kind[obj], self.ino[obj], obj)
                if self.kind[obj] == "d":
                    stack.append((obj, path + "/"))
        return out


def _walk(root):
    """{relative path: (kind, inode)} of the real directory."""
    out, stack = {}, [(root, "")]
    while stack:
        path, prefix = stack.pop()
        for de in os.scandir(path):
            st = de.stat(follow_symlinks=False)
            if de.is_dir(follow_symlinks=False):
                out[prefix + de.name] = ("d", st.st_ino)
                stack.append((de.path, prefix + de.name + "/"))
            elif de.is_file(follow_symlinks=False):
                out[prefix + de.name] = ("f", st.st_ino)
            else:
                raise LayerError(f"{de.path}: not a file or a directory")
    return out


def _pick(rnd):
    """A probability for one cut: all-or-nothing half of the time (a cut
    right after a sync, or a mere process crash), else uniform."""
    r = rnd.random()
    return 0.0 if r < 0.25 else 1.0 if r < 0.5 else rnd.random()


class _Run:
    """One child's record: the snapshot taken before it, its shadow, and
    the directory it left (root until the cut, then the place the cut moved
    it to, kept so that the cut can be built again)."""

    def __init__(self, snapshot, shadow, tree):
        self.snapshot, self.shadow, self.tree = snapshot, shadow, tree
        self.seed = None

    def journal(self):
        """The complete lines of the child's journal."""
        try:
            data = (self.shadow / "journal").read_text("ascii")
        except FileNotFoundError:  # killed before the layer started
            return []
        return data.split("\n")[:-1]

    def replay(self):
        rp = _Replay(*self.snapshot)
        rp.run(self.journal())
        return rp

    def remove(self):
        shutil.rmtree(self.shadow)
        shutil.rmtree(self.tree)


class Simulation:
    """Power cuts of the directory `root`, with scratch space in `work`
    (same file system as root: the layer makes hard links)."""

    def __init__(self, lib, root, work):
        self.lib = Path(lib)
        self.root = Path(root).resolve()
        self.work = Path(work).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.run = None   # the current child's record
        self.last = None  # the record of the last cut

    @property
    def shadow(self):
        return self.run.shadow

    def start(self):
        """Take root as it is now as durable and return the environment to
        run a child under the layer with. Only names and inode numbers are
        noted: the layer keeps the content of a file before it changes."""
        self.n += 1
        shadow = self.work / f"shadow-{self.n}"
        (shadow / "live").mkdir(parents=True)
        (shadow / "data").mkdir()
        kind, ino, entries = {0: "d"}, {0: os.stat(self.root).st_ino}, {0: {}}
        stack = [(self.root, 0)]
        while stack:
            path, d = stack.pop()
            for de in os.scandir(path):
                obj = len(kind)
                ino[obj] = de.inode()
                entries[d][de.name] = obj
                if de.is_dir(follow_symlinks=False):
                    kind[obj] = "d"
                    entries[obj] = {}
                    stack.append((de.path, obj))
                elif de.is_file(follow_symlinks=False):
                    kind[obj] = "f"
                else:
                    raise LayerError(f"{de.path}: not a file or a directory")
        self.run = _Run((kind, ino, entries), shadow, self.root)
        env = dict(os.environ)
        env["CRASHSIM_ROOT"] = str(self.root)
        env["CRASHSIM_SHADOW"] = str(shadow)
        env["LD_PRELOAD"] = ":".join(
            p for p in (env.get("LD_PRELOAD"), str(self.lib)) if p)
        return env

    def journal(self):
        """The complete lines of the journal of the current child."""
        return self.run.journal()

    def image(self, seed, dest):
        """Build at dest (which must not exist) the directory a power cut
        chosen by seed would leave; root and the record stay as they are.
        Call once the child is dead. Returns a Cut."""
        return self._image(self.run, seed, dest)

    def cut(self, seed):
        """Replace root with the post-cut state chosen by seed. Call once
        the child is dead. Returns a Cut. The directory the child left is
        moved aside and kept with its record until the next cut, so that
        reimage() can build this cut again."""
        run = self.run
        new = self.root.with_name(self.root.name + ".cut")
        if new.exists():
            shutil.rmtree(new)
        cut = self._image(run, seed, new)
        run.tree = self.work / f"precut-{self.n}"
        os.rename(self.root, run.tree)
        os.rename(new, self.root)
        run.seed = seed
        if self.last is not None:
            self.last.remove()
        self.last, self.run = run, None
        return cut

    def reimage(self, dest):
        """Build again at dest the directory the last cut left (root has
        changed since: the next child opened it)."""
        return self._image(self.last, self.last.seed, dest)

    def _check_replay(self, rp, tree):
        """The replayed names must be the real ones (only the in-flight
        operation may differ): otherwise the layer missed an operation."""
        want = {p: v[:2] for p, v in rp.tree(rp.cur).items()}
        real = _walk(tree)
        if want == real:
            return
        if rp.inflight:
            k = rp.inflight[0]
            cur = {d: dict(e) for d, e in rp.cur.items()}
            try:
                if k in ("C", "M"):
                    dirs = {v[2]: p for p, v in rp.tree(rp.cur).items()
                            if v[0] == "d"}
                    dirs[0] = None
                    d = rp.dir_by_ino[int(rp.inflight[1])]
                    name = _unescape(rp.inflight[2])
                    path = name if dirs[d] is None else dirs[d] + "/" + name
                    if path in real:
                        rp.op(rp.inflight, real[path][1]).apply(cur)
                else:
                    rp.op(rp.inflight, 0).apply(cur)
                if {p: v[:2] for p, v in rp.tree(cur).items()} == real:
                    return
            except (KeyError, LayerError):
                pass
        missing = sorted(set(want.items()) - set(real.items()))[:10]
        extra = sorted(set(real.items()) - set(want.items()))[:10]
        raise LayerError(
            f"the replayed names differ from {tree}: replay only "
            f"{missing}, real only {extra} (an operation the layer did not "
            "see: a libc entry point it does not interpose?)")

    def _image(self, run, seed, dest):
        rnd = random.Random(seed)
        cut = Cut(seed)
        rp = run.replay()
        self._check_replay(rp, run.tree)
        cut.ops = len(rp.ops)
        cut.inflight = " ".join(rp.inflight) if rp.inflight else None
        p_name, p_page, p_size = _pick(rnd), _pick(rnd), _pick(rnd)
        cut.choices = {"names": p_name, "pages": p_page, "sizes": p_size}

        state = {d: dict(e) for d, e in rp.initial.items()}
        for op in rp.ops:
            if op.durable:
                op.apply(state)
        undone = set()  # names with an undone operation
        for op in rp.ops:
            if op.durable:
                continue
            cut.pending += 1
            if op.keys & undone or rnd.random() >= p_name:
                undone |= op.keys
                cut.undone += 1
                cut.undone_ops.append(op.text)
            else:
                op.apply(state)

        # Where each file is in the directory the child left, for the files
        # the layer kept no live link to (unchanged, still named).
        where = {obj: path for path, (_, _, obj) in rp.tree(rp.cur).items()}
        dest = Path(dest)
        dest.mkdir()
        for path, (kind, ino, obj) in sorted(rp.tree(state).items()):
            if kind == "d":
                (dest / path).mkdir()
            else:
                cut.files += 1
                (dest / path).write_bytes(self._content(
                    run, ino, where.get(obj), rnd, p_page, p_size, cut))
        return cut

    @staticmethod
    def _content(run, ino, path, rnd, p_page, p_size, cut):
        """The post-cut bytes of file ino (at path in run.tree, if it is
        still named there)."""
        live = run.shadow / "live" / str(ino)
        if not live.exists():
            if path is None:
                raise LayerError(f"file inode {ino} lost its name but the "
                                 "layer kept no live link to it")
            live = run.tree / path
        cur = live.read_bytes()
        try:
            dur = (run.shadow / "data" / str(ino)).read_bytes()
        except FileNotFoundError:
            return cur  # unchanged since the child started
        if cur == dur:
            return cur
        size = len(cur)
        if len(dur) != len(cur) and rnd.random() >= p_size:
            size = len(dur)
            cut.sizes_reverted += 1
        out = bytearray(size)
        for at in range(0, size, PAGE):
            if at >= len(cur):  # a truncation that did not survive
                page = dur[at:at + PAGE]
            else:
                c = cur[at:at + PAGE].ljust(PAGE, b"\0")
                d = dur[at:at + PAGE].ljust(PAGE, b"\0")
                page = c
                if c != d:
                    cut.pages += 1
                    if rnd.random() >= p_page:
                        page = d
                        cut.pages_lost += 1
            page = page[:size - at]
            out[at:at + len(page)] = page
        return bytes(out)
