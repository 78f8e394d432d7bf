"""Consumer group positions, stored in the catalog (db ``cursors``).

Key: group (UTF-8) + NUL + topic (UTF-8). Value: the position as a
little-endian signed 64-bit integer (the next offset the group will read:
Kafka's convention for committed offsets) followed by the XXH64 of key and
position, so that a damaged value is never taken for a position. A group
is registered on a topic the first time a consumer of that group
subscribes to it: its entry then holds the starting position, so that
retention that waits for consumers (retain_until_consumed) waits for it
too. A commit of several topics is one LMDB transaction: all positions are
stored or none. Positions the catalog lost to damage are listed in db
``lost`` until their group registers again.
"""
import struct

import xxhash

from . import _errors as E
from ._catalog import guard

_POS = struct.Struct("<q")
_SUM = struct.Struct("<Q")


def check_group_name(group):
    if not isinstance(group, str) or not 1 <= len(group) <= 249 or "\0" in group:
        raise E.InvalidConfigError(
            f"group name must be a str of 1-249 characters without NUL, "
            f"not {group!r}")
    return group


def key(group, topic):
    return group.encode() + b"\0" + topic.encode()


def split_key(k):
    g, _, t = k.partition(b"\0")
    return g.decode(), t.decode()


def pack(k, pos):
    p = _POS.pack(pos)
    return p + _SUM.pack(xxhash.xxh64_intdigest(k + p))


def unpack(k, v):
    """The position in value v of key k, or None if v is damaged. A value
    of 8 bytes is a position of format 1 (no checksum)."""
    if len(v) == 8:
        return _POS.unpack(v)[0]
    if len(v) != 16 or _SUM.unpack_from(v, 8)[0] != \
            xxhash.xxh64_intdigest(k + v[:8]):
        return None
    pos = _POS.unpack_from(v)[0]
    return pos if pos >= 0 else None


class Groups:
    def __init__(self, catalog):
        self.cat = catalog
        self.env = catalog.env
        self.db = catalog.cursors

    def _txn(self, write=False):
        return self.env.begin(write=write, db=self.db)

    def get(self, group, topic):
        k = key(group, topic)
        with guard(f"cannot read catalog {self.cat.path}"):
            with self._txn() as txn:
                v = txn.get(k)
        return None if v is None else unpack(k, v)

    def register(self, group, topic, position):
        """Store position unless the group already has one; return (the
        stored position, whether the catalog had lost it)."""
        k = key(group, topic)
        with guard(f"cannot write catalog {self.cat.path}"):
            with self._txn(write=True) as txn:
                v = txn.get(k)
                if v is not None and unpack(k, v) is not None:
                    return unpack(k, v), False
                lost = txn.delete(k, db=self.cat.lost) or v is not None
                txn.put(k, pack(k, position))
                return position, lost

    def commit(self, group, positions):
        self.commit_many({(group, t): p for t, p in positions.items()})

    def commit_many(self, items):
        """Store {(group, topic): position} in one transaction."""
        with guard(f"cannot write catalog {self.cat.path}"):
            with self._txn(write=True) as txn:
                for (group, topic), pos in items.items():
                    k = key(group, topic)
                    txn.put(k, pack(k, pos))
                    txn.delete(k, db=self.cat.lost)  # known again

    def all(self):
        """{group: {topic: position}} (damaged entries left out)."""
        out = {}
        with guard(f"cannot read catalog {self.cat.path}"):
            with self._txn() as txn:
                for k, v in txn.cursor():
                    pos = unpack(k, v)
                    if pos is not None:
                        g, t = split_key(k)
                        out.setdefault(g, {})[t] = pos
        return out

    def of_topic(self, topic):
        """{group: position} of the groups registered on topic."""
        suffix = b"\0" + topic.encode()
        out = {}
        with guard(f"cannot read catalog {self.cat.path}"):
            with self._txn() as txn:
                for k, v in txn.cursor():
                    if k.endswith(suffix) and k.count(b"\0") == 1:
                        pos = unpack(k, v)
                        if pos is not None:
                            out[split_key(k)[0]] = pos
        return out

    def lost(self):
        """[(group, topic)] whose positions the catalog lost."""
        with guard(f"cannot read catalog {self.cat.path}"):
            with self.env.begin(db=self.cat.lost) as txn:
                return [split_key(k) for k, _ in txn.cursor()]

    def mark_lost(self, pairs):
        with guard(f"cannot write catalog {self.cat.path}"):
            with self.env.begin(write=True, db=self.cat.lost) as txn:
                for g, t in pairs:
                    txn.put(key(g, t), b"")

    def delete_group(self, group):
        prefix = group.encode() + b"\0"
        with guard(f"cannot write catalog {self.cat.path}"):
            with self._txn(write=True) as txn:
                keys = [k for k, _ in txn.cursor() if k.startswith(prefix)]
                for k in keys:
                    txn.delete(k)
                for k in [k for k, _ in txn.cursor(db=self.cat.lost)
                          if k.startswith(prefix)]:
                    txn.delete(k, db=self.cat.lost)
        return bool(keys)

    def delete_topic(self, topic):
        """Delete every group's position in topic."""
        suffix = b"\0" + topic.encode()
        with guard(f"cannot write catalog {self.cat.path}"):
            with self._txn(write=True) as txn:
                for db in (self.db, self.cat.lost):
                    keys = [k for k, _ in txn.cursor(db=db)
                            if k.endswith(suffix)]
                    for k in keys:
                        txn.delete(k, db=db)
