"""The catalog: small transactional metadata in LMDB (``DIR/catalog``).

Databases:
  meta    b"format_version" -> ascii int
  topics  name (utf-8)       -> JSON object of the topic's config

Segment data never goes here. The catalog is the source of truth for which
topics exist: a topic directory without a catalog entry is a leftover of an
interrupted create or delete and is removed when the log opens.
"""
import json

import lmdb

from . import _errors as E

FORMAT_VERSION = 1
MAP_SIZE = 256 << 20  # address space reserved; the file grows as needed


class Catalog:
    def __init__(self, path, durable):
        try:
            self.env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=8,
                                 subdir=True, sync=durable, metasync=durable)
        except lmdb.Error as exc:
            raise E.PylogIOError(f"cannot open catalog {path}: {exc}") from exc
        self.path = path
        try:
            self.meta = self.env.open_db(b"meta")
            self.topics_db = self.env.open_db(b"topics")
            with self.env.begin(write=True) as txn:
                v = txn.get(b"format_version", db=self.meta)
                if v is None:
                    txn.put(b"format_version", str(FORMAT_VERSION).encode(),
                            db=self.meta)
                elif v != str(FORMAT_VERSION).encode():
                    raise E.FormatVersionError(
                        f"catalog {path} has format version "
                        f"{v.decode('ascii', 'replace')}; this pylog reads "
                        f"version {FORMAT_VERSION}")
        except BaseException:
            # Never leave the environment open behind a failed open: LMDB
            # forbids a second open of it in this process.
            self.env.close()
            raise

    def topics(self):
        with self.env.begin(db=self.topics_db) as txn:
            return {k.decode(): json.loads(v) for k, v in txn.cursor()}

    def get_topic(self, name):
        with self.env.begin(db=self.topics_db) as txn:
            v = txn.get(name.encode())
        return None if v is None else json.loads(v)

    def put_topic(self, name, config):
        with self.env.begin(write=True, db=self.topics_db) as txn:
            txn.put(name.encode(), json.dumps(config, sort_keys=True).encode())

    def delete_topic(self, name, txn):
        """Delete the topic's record inside the caller's write txn (so that
        the topic and its consumer positions go in one transaction)."""
        return txn.delete(name.encode(), db=self.topics_db)

    def close(self):
        self.env.close()
