"""Read every entry of an LMDB catalog, in a child process.

    python3 _catalog_check.py CATALOG_DIR

LMDB maps its file and trusts what it reads: a truncated or damaged
data.mdb can make it touch memory past the end of the file (SIGBUS) or
follow a garbage pointer. pylog never lets that happen in the user's
process: before it opens a catalog whose content it has not seen closed
cleanly (pylog/_catalog.py), it runs this script, which opens the catalog
read-only and without its lock file and prints every entry of every named
database as a JSON line, flushed, then ``END``. If the child dies on a
signal or stops early, the parent knows the catalog is damaged and keeps
the entries printed before that (a salvage).

Standalone on purpose: it imports only lmdb, so it starts quickly and
never loads the C core.
"""
import json
import sys

import lmdb


def main(path):
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
    out.write("END\n")
    out.flush()
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
