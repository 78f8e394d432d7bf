"""Consumer group positions, stored in the LMDB catalog (db ``cursors``).

Key: group (UTF-8) + NUL + topic (UTF-8). Value: the position as a
little-endian signed 64-bit integer: the next offset the group will read
(Kafka's convention for committed offsets). A group is registered on a topic
the first time a consumer of that group subscribes to it: its entry then
holds the starting position, so retention that waits for consumers
(retain_until_consumed) waits for it too. A commit of several topics is one
LMDB transaction: all positions are stored or none.
"""
import struct

from . import _errors as E

_POS = struct.Struct("<q")


def check_group_name(group):
    if not isinstance(group, str) or not 1 <= len(group) <= 249 or "\0" in group:
        raise E.InvalidConfigError(
            f"group name must be a str of 1-249 characters without NUL, "
            f"not {group!r}")
    return group


def _key(group, topic):
    return group.encode() + b"\0" + topic.encode()


class Groups:
    def __init__(self, env):
        self.env = env
        self.db = env.open_db(b"cursors")

    def get(self, group, topic):
        with self.env.begin(db=self.db) as txn:
            v = txn.get(_key(group, topic))
        return None if v is None else _POS.unpack(v)[0]

    def register(self, group, topic, position):
        """Store position unless the group already has one; return the
        stored position."""
        with self.env.begin(write=True, db=self.db) as txn:
            k = _key(group, topic)
            v = txn.get(k)
            if v is not None:
                return _POS.unpack(v)[0]
            txn.put(k, _POS.pack(position))
            return position

    def commit(self, group, positions):
        with self.env.begin(write=True, db=self.db) as txn:
            for topic, pos in positions.items():
                txn.put(_key(group, topic), _POS.pack(pos))

    def all(self):
        """{group: {topic: position}}"""
        out = {}
        with self.env.begin(db=self.db) as txn:
            for k, v in txn.cursor():
                g, _, t = k.partition(b"\0")
                out.setdefault(g.decode(), {})[t.decode()] = _POS.unpack(v)[0]
        return out

    def floor(self, topic):
        """The lowest position of any group registered on topic, or None."""
        low = None
        suffix = b"\0" + topic.encode()
        with self.env.begin(db=self.db) as txn:
            for k, v in txn.cursor():
                if k.endswith(suffix) and k.count(b"\0") == 1:
                    p = _POS.unpack(v)[0]
                    low = p if low is None else min(low, p)
        return low

    def delete_group(self, group):
        prefix = group.encode() + b"\0"
        with self.env.begin(write=True, db=self.db) as txn:
            keys = [k for k, _ in txn.cursor() if k.startswith(prefix)]
            for k in keys:
                txn.delete(k)
        return bool(keys)

    def delete_topic(self, topic, txn):
        """Delete every group's position in topic, in the caller's txn."""
        suffix = b"\0" + topic.encode()
        keys = [k for k, _ in txn.cursor(db=self.db) if k.endswith(suffix)]
        for k in keys:
            txn.delete(k, db=self.db)
