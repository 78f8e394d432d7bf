"""Which topics exist, and their configs: the topic directories.

``DIR/topics/NAME/`` is a topic. Its ``meta`` file (a record file,
pylog/_files.py, magic ``PYLOGTM1``) holds its name, its config and the
consumer groups registered on it, and is rewritten durably whenever one of
them changes: metadata is durable when the call that changes it returns,
in every sync mode, and survives the loss of the catalog.

A directory is deleted only by ``delete_topic``: it is renamed into
``DIR/trash/`` (both directories fsynced), then removed; open empties
``trash/``. A topic directory whose meta file is missing or damaged is
still a topic if it holds segment files (its config falls back to the
defaults and the damage is reported); an empty one is what an interrupted
create leaves, and open removes it. Nothing else ever deletes a directory.
"""
import os
import re
import shutil
import uuid

from . import _errors as E
from . import _files

META = "meta"
META_MAGIC = b"PYLOGTM1"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SEGMENT = re.compile(r"\d{20}\.log")


def valid_name(name):
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


class Registry:
    def __init__(self, root):
        self.root = root
        self.topics_dir = os.path.join(root, "topics")
        self.trash = os.path.join(root, "trash")

    def dir(self, name):
        return os.path.join(self.topics_dir, name)

    def _has_segments(self, d):
        try:
            return any(_SEGMENT.fullmatch(f) for f in os.listdir(d))
        except OSError:
            return False

    def names(self):
        """Sorted names of the topics (directories that are topics)."""
        with _files.wrap_os(f"cannot list {self.topics_dir}"):
            try:
                entries = os.listdir(self.topics_dir)
            except FileNotFoundError:
                return []
        out = []
        for name in entries:
            d = self.dir(name)
            if valid_name(name) and os.path.isdir(d) and (
                    os.path.exists(os.path.join(d, META))
                    or self._has_segments(d)):
                out.append(name)
        return sorted(out)

    def exists(self, name):
        d = self.dir(name)
        return os.path.isdir(d) and (os.path.exists(os.path.join(d, META))
                                     or self._has_segments(d))

    def read(self, name):
        """(config or None, groups, state): state is "ok", "missing" or
        "damaged" (the meta file); groups a list of group names."""
        doc, state = _files.read_record(os.path.join(self.dir(name), META),
                                        META_MAGIC)
        if state == "ok" and (not isinstance(doc, dict)
                              or doc.get("name") != name
                              or not isinstance(doc.get("config"), dict)
                              or not isinstance(doc.get("groups", []), list)):
            return None, [], "damaged"
        if state != "ok":
            return None, [], state
        return doc["config"], [g for g in doc.get("groups", [])
                               if isinstance(g, str)], "ok"

    def write(self, name, config, groups):
        _files.write_record(os.path.join(self.dir(name), META), META_MAGIC,
                            {"name": name, "config": config,
                             "groups": sorted(set(groups))})

    def create(self, name, config):
        """Make the directory (durably) and its meta file."""
        d = self.dir(name)
        with _files.wrap_os(f"cannot create topic directory {d}"):
            os.makedirs(self.topics_dir, exist_ok=True)
            os.makedirs(d, exist_ok=True)
            _files.fsync_dir(self.topics_dir)
        self.write(name, config, [])

    def delete(self, name):
        """Rename the topic's directory into trash/ durably, then remove it."""
        d = self.dir(name)
        with _files.wrap_os(f"cannot delete topic directory {d}"):
            os.makedirs(self.trash, exist_ok=True)
            dest = os.path.join(self.trash, uuid.uuid4().hex)
            os.rename(d, dest)
            _files.fsync_dir(self.topics_dir)
            _files.fsync_dir(self.trash)
        shutil.rmtree(dest, ignore_errors=True)

    def sweep(self):
        """Empty trash/; remove topic directories an interrupted create
        left empty. Returns the names of topic directories without a
        usable meta file (kept: they hold data)."""
        if os.path.isdir(self.trash):
            shutil.rmtree(self.trash, ignore_errors=True)
        damaged = []
        try:
            entries = os.listdir(self.topics_dir)
        except OSError:
            return damaged
        for name in entries:
            d = self.dir(name)
            if not valid_name(name) or not os.path.isdir(d) or \
                    os.path.islink(d):
                continue
            if os.path.exists(os.path.join(d, META)):
                if self.read(name)[2] != "ok":
                    damaged.append(name)
                continue
            if self._has_segments(d):
                damaged.append(name)
            elif not any(f for f in os.listdir(d) if not f.startswith(META)):
                shutil.rmtree(d, ignore_errors=True)
        return sorted(damaged)


def check_name(name):
    if not isinstance(name, str):
        raise E.InvalidTopicName(
            f"topic name must be a str, not {type(name).__name__}")
    if not valid_name(name):
        raise E.InvalidTopicName(
            f"invalid topic name {name!r}: use 1-249 characters of "
            "[A-Za-z0-9._-], not '.' or '..'")
    return name
