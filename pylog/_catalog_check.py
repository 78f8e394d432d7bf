"""Read every entry of an LMDB catalog, in a child process.

    python3 _catalog_check.py CATALOG_DIR [SCRATCH_DIR]

LMDB maps its file and trusts what it reads: a truncated or damaged
data.mdb can make it touch memory past the end of the file (SIGBUS) or
follow a garbage pointer. pylog never lets that happen in the user's
process: before it opens a catalog whose content it has not seen closed
cleanly (pylog/_catalog.py), it runs this script, which opens the catalog
read-only and without its lock file and prints every entry of every named
database as a JSON line, flushed, then ``END``. If the child dies on a
signal or stops early, the parent knows the catalog is damaged and keeps
the entries printed before that (a salvage). With SCRATCH_DIR, it then
copies data.mdb there and commits a write to every database of the copy:
LMDB walks its free list and rewrites branch pages on a write, which a
read does not exercise, so a catalog that reads but cannot be written is
found here too (``WRITE-FAILED``, or the child's death).

Standalone on purpose: it imports only lmdb, so it starts quickly and
never loads the C core.
"""
import json
import os
import sys

import lmdb


def write_test(path, scratch, names):
    """Commit a put and a delete in every database of a copy of the
    catalog."""
    import shutil
    shutil.copyfile(os.path.join(path, "data.mdb"),
                    os.path.join(scratch, "data.mdb"))
    env = lmdb.open(scratch, lock=False, subdir=True, max_dbs=16,
                    map_size=256 << 20, sync=False, metasync=False)
    try:
        for name in names:
            db = env.open_db(name)
            with env.begin(write=True, db=db) as txn:
                txn.put(b"\xffpylog-check", b"x")
            with env.begin(write=True, db=db) as txn:
                txn.delete(b"\xffpylog-check")
    finally:
        env.close()


def main(path, scratch=None):
    out = sys.stdout
    try:
        env = lmdb.open(path, readonly=True, lock=False, subdir=True,
                        max_dbs=16, map_size=256 << 20, readahead=False)
    except lmdb.Error as exc:
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 2
    with env.begin() as txn:
        names = [k for k, _ in txn.cursor()]
    for name in names:
        try:
            db = env.open_db(name, create=False)
        except lmdb.Error as exc:
            out.write(json.dumps({"error": f"db {name.hex()}: {exc}"}) + "\n")
            out.flush()
            return 3
        with env.begin(db=db) as txn:
            for k, v in txn.cursor():
                out.write(json.dumps({"db": name.hex(), "k": k.hex(),
                                      "v": v.hex()}) + "\n")
                out.flush()
    env.close()
    if scratch is not None:
        try:
            write_test(path, scratch, names)
        except lmdb.Error as exc:
            out.write(json.dumps({"error": f"WRITE-FAILED {exc}"}) + "\n")
            out.flush()
            return 4
    out.write("END\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
