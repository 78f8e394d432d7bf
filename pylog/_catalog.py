"""The catalog: consumer group positions in LMDB (``DIR/catalog/``).

Databases:
  meta     b"format_version" -> ascii int (2)
  cursors  group NUL topic   -> i64 position | u64 XXH64(key | position)
  lost     group NUL topic   -> b"" : a position the catalog lost (damage)

The catalog is not the truth about what exists: topics are their
directories (pylog/_registry.py), and which groups read a topic is
recorded there too. What only the catalog knows is how far each group
read; if it is damaged, open rebuilds it from what it can still read and
records the positions it could not as lost, so that the consumer reports
them instead of guessing.

Opening never lets LMDB read a damaged file in this process (it maps the
file and trusts its pointers: a short or damaged data.mdb would be a
SIGBUS). A clean close records the size and XXH64 of data.mdb in
``catalog/clean``; an open whose data.mdb matches opens at once. Any other
catalog is read first by a child process (pylog/_catalog_check.py); if the
child does not finish, the catalog is moved aside to ``catalog.damaged``
(never deleted) and a new one is built from the entries it printed.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import threading

import lmdb
import xxhash

from . import _errors as E
from . import _files

FORMAT_VERSION = 2
MAP_SIZE = 64 << 20   # address space reserved; the file grows as needed
MAX_DBS = 16
CLEAN_MAGIC = b"PYLOGCC1"
CHECK_TIMEOUT = 120   # seconds for the child that reads a catalog
_CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "_catalog_check.py")


# LMDB allows one environment per file per process: a Log and a read-only
# Log of the same directory in one process share it (refcounted), also when
# they reach it by different paths (a bind mount).
_ENVS = {}  # (st_dev, st_ino) of the directory -> [environment, references]
_ENVS_MU = threading.Lock()


def _env_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return (st.st_dev, st.st_ino)


def lmdb_error(exc, what):
    """The pylog exception for an lmdb.Error."""
    if isinstance(exc, (lmdb.MapFullError,)):
        return E.DiskFullError(errno.ENOSPC, f"{what}: catalog full: {exc}")
    if isinstance(exc, lmdb.DiskError) or "No space" in str(exc):
        err = errno.ENOSPC if "space" in str(exc).lower() else errno.EIO
        cls = E.DiskFullError if err == errno.ENOSPC else E.PylogIOError
        return cls(err, f"{what}: {exc}")
    if isinstance(exc, lmdb.ReadonlyError):
        return E.ReadOnlyError(errno.EROFS, f"{what}: {exc}")
    if isinstance(exc, (lmdb.CorruptedError, lmdb.InvalidError,
                        lmdb.PageNotFoundError, lmdb.VersionMismatchError)):
        return E.CorruptionError(f"{what}: {exc}")
    return E.PylogIOError(errno.EIO, f"{what}: {exc}")


class _Guard:
    """Context manager: lmdb and OS errors become pylog errors."""

    def __init__(self, what):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, E.PylogError):
            return False
        if isinstance(exc, lmdb.Error):
            raise lmdb_error(exc, self.what) from exc
        if isinstance(exc, OSError):
            raise _files.io_error(exc, self.what) from exc
        return False


def guard(what):
    return _Guard(what)


def _digest(path):
    """(size, XXH64) of a file, or None."""
    try:
        with open(path, "rb") as f:
            h = xxhash.xxh64()
            n = 0
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
        return n, h.intdigest()
    except OSError:
        return None


def _read_in_child(path, write_test=True):
    """(complete, entries, why): entries {db name: {key: value}} printed by
    the checker before it ended or died."""
    import tempfile
    scratch = tempfile.mkdtemp(prefix="pylog-catalog-") if write_test \
        else None
    try:
        proc = subprocess.run([sys.executable, "-S", _CHECKER, path]
                              + ([scratch] if scratch else []),
                              capture_output=True, timeout=CHECK_TIMEOUT,
                              env=dict(os.environ,
                                       PYTHONPATH=os.pathsep.join(sys.path)))
    except subprocess.TimeoutExpired:
        return False, {}, "reading it did not finish"
    except OSError as exc:
        return False, {}, f"cannot run the catalog check: {exc}"
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    entries, why, done = {}, None, False
    for line in proc.stdout.splitlines():
        if line == b"END":
            done = True
            break
        try:
            doc = json.loads(line)
        except ValueError:
            why = "unreadable check output"
            break
        if "error" in doc:
            why = doc["error"]
            break
        entries.setdefault(bytes.fromhex(doc["db"]), {})[
            bytes.fromhex(doc["k"])] = bytes.fromhex(doc["v"])
    if not done and why is None:
        why = (f"reading it killed the reader (signal {-proc.returncode})"
               if proc.returncode < 0 else
               f"reading it failed (exit status {proc.returncode})")
    if done and proc.returncode == 0:
        bad = _bad_entries(entries)
        if bad:
            for db, k in bad:
                entries[db].pop(k, None)
                if db == b"cursors" and _good_key(k):
                    # a position that cannot be trusted is a lost one
                    entries.setdefault(b"lost", {})[k] = b""
            return False, entries, (f"{len(bad)} entr"
                                    f"{'y' if len(bad) == 1 else 'ies'} "
                                    "failed their checksums")
    return done and proc.returncode == 0, entries, why


def _bad_entries(entries):
    """Entries no pylog wrote: a position whose checksum fails, a key that
    is not GROUP NUL TOPIC in UTF-8, an unknown database."""
    from ._groups import unpack
    bad = []
    for db, kv in entries.items():
        if db not in (b"meta", b"cursors", b"lost", b"topics"):
            bad.extend((db, k) for k in kv)
            continue
        if db not in (b"cursors", b"lost"):
            continue
        for k, v in kv.items():
            if not _good_key(k) or (db == b"cursors" and unpack(k, v) is None):
                bad.append((db, k))
    return bad


def _good_key(k):
    """GROUP NUL TOPIC, both UTF-8, a valid topic name."""
    from ._registry import valid_name
    g, sep, t = k.partition(b"\0")
    try:
        return bool(sep and g) and valid_name(t.decode()) and bool(g.decode())
    except UnicodeDecodeError:
        return False


class Catalog:
    """The LMDB environment of a log, opened safely (module docstring).

    ``report``: what opening found wrong, as sentences; ``rebuilt``: True
    if the catalog was rebuilt (some positions may be lost)."""

    def __init__(self, path, readonly=False):
        self.path = path
        self.readonly = readonly
        self.report = []
        self.rebuilt = False
        self.dropped = set()  # (group, topic) positions a rebuild dropped
        self.env = None
        data = os.path.join(path, "data.mdb")
        with _ENVS_MU:
            shared = _ENVS.get(_env_key(path))
            if shared is not None:  # opened (and checked) in this process
                shared[1] += 1
                self.env = shared[0]
        if shared is not None:
            self._open_dbs()
            return
        if not os.path.lexists(path):
            state = "missing"
        elif not os.path.isdir(path) or os.path.islink(path):
            state = "damaged"
            self.report.append(f"{path} is not a directory")
        elif not os.path.lexists(data):
            state = "missing" if not os.listdir(path) else "lost"
        elif not os.path.isfile(data) or os.path.getsize(data) == 0:
            state = "lost"
        else:
            state = "check"
        entries = {}
        if state == "check":
            mark, _ = _files.read_record(os.path.join(path, "clean"),
                                         CLEAN_MAGIC)
            dig = _digest(data)
            if not (mark and dig and [mark.get("size"), mark.get("xxh64")]
                    == list(dig)):
                ok, entries, why = _read_in_child(path)
                if ok:
                    self._mark_clean()
                else:
                    state = "damaged"
                    self.report.append(f"catalog {path} is damaged ({why})")
        if state == "lost":
            self.report.append(f"catalog {path} lost its data file")
        if state in ("lost", "damaged") and readonly:
            raise E.CorruptionError(
                f"catalog {path} is damaged ({'; '.join(self.report)}); "
                "open the log read-write once to rebuild it")
        if state in ("lost", "damaged"):
            from ._groups import split_key
            self.dropped = {split_key(k)
                            for k in entries.get(b"lost", {})}
            self._rebuild(entries)
        self._open(create=state in ("missing", "lost", "damaged"))

    # ---- opening -----------------------------------------------------------
    def _open(self, create):
        with guard(f"cannot open catalog {self.path}"):
            if self.readonly:
                # Without write access to the directory (a read-only mount
                # or permission), LMDB cannot use its lock file either.
                writable = os.access(self.path, os.W_OK)
                self.env = lmdb.open(self.path, map_size=MAP_SIZE,
                                     max_dbs=MAX_DBS, subdir=True,
                                     readonly=not writable, lock=writable,
                                     create=False)
            else:
                fresh = not os.path.isdir(self.path)
                self.env = lmdb.open(self.path, map_size=MAP_SIZE,
                                     max_dbs=MAX_DBS, subdir=True, sync=True,
                                     metasync=True, create=True)
                if fresh or create:
                    # LMDB syncs its files, not the directories that name
                    # them.
                    _files.fsync_dir(self.path)
                    _files.fsync_dir(os.path.dirname(self.path))
        with _ENVS_MU:
            _ENVS[_env_key(self.path)] = [self.env, 1]
        self._open_dbs()

    def _open_dbs(self):
        try:
            with guard(f"cannot open catalog {self.path}"):
                ro = self.env.flags()["readonly"]
                self.writable = not ro
                self.meta = self.env.open_db(b"meta", create=not ro)
                self.cursors = self.env.open_db(b"cursors", create=not ro)
                self.lost = self.env.open_db(b"lost", create=not ro)
                self.old_topics = None
                with self.env.begin(write=not ro) as txn:
                    v = txn.get(b"format_version", db=self.meta)
                    if v is None and not ro:
                        txn.put(b"format_version",
                                str(FORMAT_VERSION).encode(), db=self.meta)
                    elif v is not None and v not in (b"1", b"2"):
                        raise E.FormatVersionError(
                            f"catalog {self.path} has format version "
                            f"{v.decode('ascii', 'replace')}; this pylog "
                            f"reads version {FORMAT_VERSION}")
                    self.version = int(v) if v else FORMAT_VERSION
        except BaseException:
            # Never leave the environment open behind a failed open: LMDB
            # forbids a second open of it in this process.
            self._release()
            raise

    def _rebuild(self, entries):
        """Move the damaged catalog aside and build a new one holding the
        entries that could be read."""
        parent = os.path.dirname(self.path)
        with _files.wrap_os(f"cannot rebuild catalog {self.path}"):
            if os.path.lexists(self.path):
                dest = self.path + ".damaged"
                n = 1
                while os.path.lexists(dest):
                    dest = f"{self.path}.damaged.{n}"
                    n += 1
                os.rename(self.path, dest)
                self.report.append(f"the damaged catalog was kept as {dest}")
            tmp = self.path + ".new"
            if os.path.lexists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            with guard(f"cannot rebuild catalog {self.path}"):
                env = lmdb.open(tmp, map_size=MAP_SIZE, max_dbs=MAX_DBS,
                                subdir=True, sync=True, metasync=True)
                try:
                    for name, kv in entries.items():
                        db = env.open_db(name)
                        with env.begin(write=True, db=db) as txn:
                            for k, v in kv.items():
                                txn.put(k, v)
                finally:
                    env.close()
            _files.fsync_dir(tmp)
            os.rename(tmp, self.path)
            _files.fsync_dir(parent)
        self.rebuilt = True

    def _mark_clean(self):
        """Record that data.mdb, as it is now, was read whole."""
        if self.readonly:
            return
        dig = _digest(os.path.join(self.path, "data.mdb"))
        if dig:
            try:
                _files.write_record(os.path.join(self.path, "clean"),
                                    CLEAN_MAGIC,
                                    {"size": dig[0], "xxh64": dig[1]})
            except E.PylogError:
                pass  # only the next open is slower

    def legacy_topics(self):
        """Topic configs of a format-1 catalog ({name: config}), or {}."""
        with guard(f"cannot read catalog {self.path}"):
            with self.env.begin() as txn:
                if txn.get(b"topics") is None:
                    return {}
            db = self.env.open_db(b"topics", create=False)
            out = {}
            with self.env.begin(db=db) as txn:
                for k, v in txn.cursor():
                    try:
                        out[k.decode()] = json.loads(v)
                    except ValueError:
                        continue
            return out

    def set_version(self, version):
        with guard(f"cannot write catalog {self.path}"):
            with self.env.begin(write=True, db=self.meta) as txn:
                txn.put(b"format_version", str(version).encode())
        self.version = version

    def _release(self):
        """Drop this catalog's reference; True if it closed the env."""
        env, self.env = self.env, None
        if env is None:
            return False
        with _ENVS_MU:
            key = next((k for k, v in _ENVS.items() if v[0] is env), None)
            shared = _ENVS.get(key)
            if shared is not None and shared[0] is env:
                shared[1] -= 1
                if shared[1] > 0:
                    return False
                del _ENVS[key]
        env.close()
        return True

    def close(self):
        if self._release():
            self._mark_clean()
