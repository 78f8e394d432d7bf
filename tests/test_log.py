"""Log: topic names, the directory lock, the catalog, config, versions."""
import os
import subprocess
import sys
import textwrap

import lmdb
import pytest

import pylog
from conftest import segment_files, set_segment_version, topic_dir, tree


def other_process_open(path):
    """Exit status of another process that opens the log at path: 0 opened,
    3 LogLockedError."""
    code = textwrap.dedent(f"""
        import sys, pylog
        try:
            pylog.open({os.fspath(path)!r}).close()
        except pylog.LogLockedError:
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode in (0, 3), f"child failed: {proc.stderr[-2000:]}"
    return proc.returncode


def set_catalog_version(path, value):
    env = lmdb.open(os.path.join(path, "catalog"), max_dbs=8, subdir=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"format_version", value, db=meta)
    finally:
        env.close()


# ---- topic names --------------------------------------------------------------

BAD_NAMES = ["../x", "a/b", "/abs", "", ".", "..", "x" * 250, "with space",
             "ünïcode", "tab\t", "nul\0", "line\n", "a\\b", "*", "x:y",
             5, None, b"bytes", 1.5]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_topic_name_raises_and_creates_nothing(tmp_path, name):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        before = tree(tmp_path)
        with pytest.raises(pylog.InvalidTopicName) as exc:
            log.topic(name)
        assert isinstance(exc.value, ValueError)
        with pytest.raises(pylog.InvalidTopicName):
            log.topic(name, segment_bytes=2048)
        with pytest.raises(pylog.InvalidTopicName):
            log.delete_topic(name)
        assert tree(tmp_path) == before
        assert log.topics() == []


@pytest.mark.parametrize("name", ["x" * 249, "a", "A.b-c_9", "...", "-",
                                  "_x_", ".hidden"])
def test_valid_topic_names_work_and_persist(tmp_path, name):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        assert log.topic(name).append(b"v") == 0
        assert os.path.isdir(topic_dir(d, name))
    with pylog.open(d) as log:
        assert log.topics() == [name]
        assert bytes(log.topic(name).get(0).value) == b"v"


# ---- the lock -------------------------------------------------------------------

def test_second_open_in_same_process_raises_log_locked(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        log.topic("t").append(b"x")
        with pytest.raises(pylog.LogLockedError) as exc:
            pylog.open(d)
        assert isinstance(exc.value, OSError)
        assert str(d) in str(exc.value)
        # the first Log is untouched
        assert log.topic("t").append(b"y") == 1
        assert log.topics() == ["t"]


def test_open_from_another_process_raises_log_locked(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d):
        assert other_process_open(d) == 3
    assert other_process_open(d) == 0  # released at close


def test_log_opens_again_after_close(tmp_path):
    d = tmp_path / "log"
    log = pylog.open(d)
    log.topic("t").append(b"x")
    log.close()
    with pylog.open(d) as log2:
        assert log2.topic("t").end_offset == 1


def test_failed_open_releases_the_lock(tmp_path):
    d = tmp_path / "log"
    pylog.open(d).close()
    set_catalog_version(d, b"99")
    with pytest.raises(pylog.FormatVersionError) as exc:
        pylog.open(d)
    # exc keeps the traceback alive: nothing the failed open made may rely
    # on garbage collection to be released.
    set_catalog_version(d, b"1")
    with pylog.open(d) as log:  # neither LOCK nor catalog left held
        assert log.topics() == []
    assert exc.value is not None


# ---- topics, delete ----------------------------------------------------------------

def test_topics_lists_created_topics_sorted(tmp_path):
    d = tmp_path / "log"
    names = ["zeta", "Alpha", "mid.dle", "beta", "0num"]
    with pylog.open(d) as log:
        assert log.topics() == []
        for n in names:
            log.topic(n)
        assert log.topics() == sorted(names)
    with pylog.open(d) as log:
        assert log.topics() == sorted(names)


def test_delete_topic_removes_data(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("gone", segment_bytes=1024)
        for _ in range(30):
            t.append(b"x" * 100)
        log.topic("kept").append(b"k")
        log.delete_topic("gone")
        assert log.topics() == ["kept"]
        assert not os.path.exists(topic_dir(d, "gone"))
        assert "gone" not in str(tree(d))
    with pylog.open(d) as log:
        assert log.topics() == ["kept"]
        t = log.topic("gone")  # a new, empty topic of the same name
        assert t.end_offset == 0
        assert t.config["segment_bytes"] != 1024  # the old config is gone
        assert bytes(log.topic("kept").get(0).value) == b"k"


def test_delete_unknown_topic_raises_topic_not_found(tmp_path):
    with pylog.open(tmp_path / "log") as log:
        log.topic("t")
        with pytest.raises(pylog.TopicNotFoundError) as exc:
            log.delete_topic("nope")
        assert isinstance(exc.value, KeyError)
        assert "nope" in str(exc.value)
        log.delete_topic("t")
        with pytest.raises(pylog.TopicNotFoundError):
            log.delete_topic("t")  # twice


# ---- config -------------------------------------------------------------------------

CONFIG = {"segment_bytes": 2048, "max_record_bytes": 100,
          "index_interval_bytes": 128}


def test_topic_config_persists_across_reopen(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t", **CONFIG)
        assert {k: t.config[k] for k in CONFIG} == CONFIG
        t.append(b"x")
        first = dict(t.config)
    with pylog.open(d) as log:
        t = log.topic("t")
        assert t.config == first
        with pytest.raises(pylog.RecordTooLargeError):
            t.append(b"x" * 101)  # the stored max_record_bytes applies
        assert t.end_offset == 1


def test_changing_config_via_topic_updates_it(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t")
        t.append(b"x" * 50)
        t2 = log.topic("t", max_record_bytes=20, segment_bytes=4096)
        assert t2 is t
        assert t.config["max_record_bytes"] == 20
        assert t.config["segment_bytes"] == 4096
        with pytest.raises(pylog.RecordTooLargeError):
            t.append(b"x" * 21)
        assert t.append(b"y" * 20) == 1  # same data, offsets go on
        assert bytes(t.get(0).value) == b"x" * 50
        log.topic("t")  # no options: the config stays
        assert t.config["max_record_bytes"] == 20
    with pylog.open(d) as log:
        t = log.topic("t")
        assert t.config["max_record_bytes"] == 20
        assert t.config["segment_bytes"] == 4096
        t = log.topic("t", max_record_bytes=1000)
        assert t.config["segment_bytes"] == 4096  # others keep their value
        assert t.append(b"z" * 1000) == 2


def test_open_topic_defaults_apply_to_new_topics_only(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        log.topic("old")
    with pylog.open(d, segment_bytes=2048, max_record_bytes=64) as log:
        assert log.topic("new").config["segment_bytes"] == 2048
        assert log.topic("new").config["max_record_bytes"] == 64
        assert log.topic("old").config["segment_bytes"] != 2048


@pytest.mark.parametrize("opener", ["topic", "open"])
def test_unknown_config_key_raises(tmp_path, opener):
    d = tmp_path / "log"
    with pytest.raises(pylog.InvalidConfigError, match="bogus"):
        if opener == "open":
            pylog.open(d, bogus=1)
        else:
            with pylog.open(d) as log:
                log.topic("t", bogus=1)
    with pylog.open(d) as log:
        assert log.topics() == []


@pytest.mark.parametrize("key, value", [
    ("segment_bytes", 1023), ("segment_bytes", 0), ("segment_bytes", -1),
    ("segment_bytes", 2**32), ("segment_bytes", "4096"),
    ("segment_bytes", 4096.0), ("segment_bytes", True),
    ("segment_bytes", None), ("max_record_bytes", 0),
    ("max_record_bytes", -5), ("max_record_bytes", 2**40),
    ("index_interval_bytes", 63), ("index_interval_bytes", 0),
    ("index_interval_bytes", 1.5),
], ids=repr)
def test_bad_config_values_raise(tmp_path, key, value):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        with pytest.raises(pylog.InvalidConfigError) as exc:
            log.topic("t", **{key: value})
        assert isinstance(exc.value, ValueError)
        t = log.topic("u")
        config = dict(t.config)
        with pytest.raises(pylog.InvalidConfigError):
            log.topic("u", **{key: value})
        assert t.config == config  # an existing topic keeps its config
        assert log.topics() == ["u"]
    with pytest.raises(pylog.InvalidConfigError):
        pylog.open(d, **{key: value})


def test_smallest_allowed_config_values_work(tmp_path):
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("t", segment_bytes=1024, max_record_bytes=1,
                      index_interval_bytes=64)
        assert t.append(b"x") == 0
        with pytest.raises(pylog.RecordTooLargeError):
            t.append(b"xx")


@pytest.mark.parametrize("kw", [
    {"sync": "fsync"}, {"sync": "ALWAYS"}, {"sync": None}, {"sync": 1},
    {"sync": ["always"]},
    {"sync": "interval", "sync_interval_ms": 0},
    {"sync": "interval", "sync_interval_ms": -1},
    {"sync": "interval", "sync_interval_ms": 1.5},
    {"sync": "interval", "sync_interval_ms": True},
], ids=repr)
def test_bad_sync_mode_raises(tmp_path, kw):
    d = tmp_path / "log"
    with pytest.raises(pylog.InvalidConfigError):
        pylog.open(d, **kw)
    assert not d.exists()  # rejected before touching the disk


# ---- format versions ------------------------------------------------------------------

def test_catalog_format_version_mismatch_raises(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        log.topic("t").append(b"x")
    set_catalog_version(d, b"99")
    with pytest.raises(pylog.FormatVersionError) as exc:
        pylog.open(d)
    assert "99" in str(exc.value)


def test_segment_format_version_mismatch_raises_on_open(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        log.topic("t").append(b"x")
    (seg,) = segment_files(d, "t")
    set_segment_version(seg, 2)
    with pylog.open(d) as log:
        with pytest.raises(pylog.FormatVersionError) as exc:
            log.topic("t")
        assert os.path.basename(seg) in str(exc.value)
        assert log.topics() == ["t"]  # the topic is still there
    with open(seg, "rb") as f:  # and the file was left as it was
        assert f.read(12)[8:] == b"\x02\0\0\0"


def test_sealed_segment_format_version_mismatch_raises_on_read(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t", segment_bytes=1024)
        for _ in range(30):
            t.append(b"x" * 100)
    segs = segment_files(d, "t")
    assert len(segs) >= 3
    set_segment_version(segs[0], 2)
    with pylog.open(d) as log:
        t = log.topic("t")  # only the active segment is read at open
        assert bytes(t.get(t.end_offset - 1).value) == b"x" * 100
        with pytest.raises(pylog.FormatVersionError) as exc:
            t.get(0)
        assert os.path.basename(segs[0]) in str(exc.value)
        with pytest.raises(pylog.FormatVersionError):
            list(t.read())


# ---- open / sweep / close ----------------------------------------------------------------

def test_topic_directories_are_kept_and_empty_leftovers_removed(tmp_path):
    """A directory holding segment files is a topic, whatever the catalog
    and its meta file say: only delete_topic deletes data. An empty one is
    what an interrupted create leaves, and goes."""
    d = tmp_path / "log"
    with pylog.open(d) as log:
        log.topic("real").append(b"x")
    ghost = topic_dir(d, "ghost")
    os.makedirs(ghost)
    with open(os.path.join(ghost, "00000000000000000000.log"), "wb") as f:
        f.write(b"junk")
    empty = topic_dir(d, "empty")
    os.makedirs(empty)
    os.makedirs(os.path.join(d, "trash", "leftover"))
    with pylog.open(d) as log:
        assert os.path.exists(ghost)
        assert not os.path.exists(empty)
        assert not os.path.exists(os.path.join(d, "trash", "leftover"))
        assert log.topics() == ["ghost", "real"]
        assert any("'ghost'" in line and "meta" in line
                   for line in log.recovery)
        g = log.topic("ghost")
        assert g.end_offset == 0 and g.config == pylog.open.__globals__[
            "TOPIC_DEFAULTS"]
        # the junk that was no segment is kept beside it, not destroyed
        assert os.path.exists(os.path.join(
            ghost, "00000000000000000000.log.damaged"))
        assert bytes(log.topic("real").get(0).value) == b"x"


def test_context_manager_closes(tmp_path):
    d = tmp_path / "log"
    with pylog.open(d) as log:
        t = log.topic("t")
        t.append(b"x")
        assert not log.closed
    assert log.closed
    with pytest.raises(pylog.ClosedError):
        t.append(b"y")
    assert other_process_open(d) == 0  # the LOCK was released


def test_context_manager_closes_on_exception(tmp_path):
    d = tmp_path / "log"
    with pytest.raises(RuntimeError):
        with pylog.open(d) as log:
            log.topic("t").append(b"x")
            raise RuntimeError("boom")
    assert log.closed
    with pylog.open(d) as log:
        assert log.topic("t").end_offset == 1


def test_open_creates_nested_directory_and_accepts_pathlike(tmp_path):
    d = tmp_path / "a" / "b" / "log"
    with pylog.open(d) as log:
        assert log.path == str(d)
        log.topic("t")
    assert {"LOCK", "catalog", "topics"} <= set(os.listdir(d))


def test_log_flush_makes_every_topic_durable(tmp_path):
    with pylog.open(tmp_path / "log", sync="none") as log:
        ts = [log.topic(n) for n in ("a", "b", "c")]
        for i, t in enumerate(ts):
            t.append_batch([b"x"] * (i + 1))
        log.flush()
        assert [t.durable_offset for t in ts] == [1, 2, 3]
