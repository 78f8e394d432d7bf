"""The ``pylog`` command line (pylog/_cli.py, pylog/_demo.py), end to end.

Every test runs the CLI in a child process (``python -m pylog`` and, once,
the installed ``pylog`` console script) and checks its stdout, stderr and
exit status. Logs are prepared and checked through the library in this
process, which closes them before the CLI runs (one process per log).
"""
import array
import base64
import datetime as dt
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import termios
import time

import pytest

import pylog

TIMEOUT = 60
ENV = {k: v for k, v in os.environ.items() if k != "PYLOG_DEBUG"}


def cli(*args, input=b"", cwd=None):
    """Run ``python -m pylog ARGS``; return the CompletedProcess (bytes)."""
    return subprocess.run([sys.executable, "-m", "pylog", *map(str, args)],
                          input=input, capture_output=True, timeout=TIMEOUT,
                          cwd=cwd, env=ENV)


def ok(*args, **kw):
    """Run the CLI, require success and a quiet stderr; return stdout."""
    p = cli(*args, **kw)
    assert p.returncode == 0, p.stderr.decode()
    assert b"Traceback" not in p.stderr
    return p.stdout.decode()


def lines(*args, **kw):
    return ok(*args, **kw).splitlines()


def fill(d, name, records, **config):
    """Append (key, value, timestamp, headers) records to topic name of the
    log in d through the library, then close the log."""
    with pylog.open(d) as log:
        t = log.topic(name, **config)
        for key, value, ts, headers in records:
            t.append(value, key=key, timestamp=ts, headers=headers)


def values(d, name):
    with pylog.open(d) as log:
        return [bytes(r.value) for r in log.topic(name).read()]


def segments(d, name):
    """[(base, path)] of a topic's segment files, sorted."""
    td = os.path.join(d, "topics", name)
    return sorted((int(f[:20]), os.path.join(td, f))
                  for f in os.listdir(td) if re.fullmatch(r"\d{20}\.log", f))


@pytest.fixture
def d(tmp_path):
    """A log with topic "t": values v0..v9, timestamps 1_000_000 + 1000 i."""
    path = str(tmp_path / "log")
    fill(path, "t", [(None, f"v{i}".encode(), 1_000_000 + 1000 * i, None)
                     for i in range(10)])
    return path


def read_lines(stream, n, deadline=TIMEOUT):
    """n lines from a pipe, failing (not hanging) if they do not come."""
    out, buf, end = [], b"", time.monotonic() + deadline
    fd = stream.fileno()
    while len(out) < n:
        left = end - time.monotonic()
        assert left > 0, f"only {out!r} after {deadline}s"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"stream closed after {out!r}"
            buf += chunk
            *done, buf = buf.split(b"\n")
            out += [x.decode() for x in done]
    return out


# ---- topics, describe, the console script ------------------------------------

def test_topics_lists_names_and_offsets(d):
    fill(d, "a", [(None, b"x", None, None)] * 2)
    assert ok(d, "topics") == "TOPIC\tSTART\tEND\na\t0\t2\nt\t0\t10\n"


def test_console_script_runs_topics(d):
    exe = os.path.join(sysconfig.get_path("scripts"), "pylog")
    if not os.path.exists(exe):
        exe = shutil.which("pylog")
    assert exe, "the pylog console script is not installed (pip install -e .)"
    p = subprocess.run([exe, d, "topics"], capture_output=True,
                       timeout=TIMEOUT, env=ENV)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"TOPIC\tSTART\tEND\nt\t0\t10\n"
    assert p.stderr == b""


def test_describe_prints_config_and_counters(tmp_path):
    path = str(tmp_path / "log")
    fill(path, "s", [(None, b"x" * 300, None, None)] * 10,
         segment_bytes=1024)
    out = json.loads(ok(path, "describe", "s"))
    assert out["topic"] == "s"
    assert out["config"]["segment_bytes"] == 1024
    assert out["config"]["max_record_bytes"] == 1024 * 1024
    assert (out["start_offset"], out["end_offset"]) == (0, 10)
    assert out["durable_offset"] <= 10
    assert out["segments"] == len(segments(path, "s")) > 1
    assert out["bytes_on_disk"] > 10 * 300


def test_a_log_directory_called_demo_is_a_log(tmp_path):
    fill(str(tmp_path / "demo"), "x", [(None, b"1", None, None)])
    assert ok("demo", "topics", cwd=tmp_path) == "TOPIC\tSTART\tEND\nx\t0\t1\n"


# ---- produce -----------------------------------------------------------------

def test_produce_lines_creates_the_log(tmp_path):
    path = str(tmp_path / "new")
    p = cli(path, "produce", "t", input=b"one\ntwo\n\nthree\r\nfour")
    assert p.returncode == 0, p.stderr
    assert p.stderr == b"produced 5 records to t\n"
    assert values(path, "t") == [b"one", b"two", b"", b"three", b"four"]
    assert lines(path, "consume", "t") == ["one", "two", "", "three", "four"]


def test_produce_appends_to_an_existing_topic(d):
    p = cli(d, "produce", "t", input=b"v10\n")
    assert p.returncode == 0 and p.stderr == b"produced 1 record to t\n"
    assert values(d, "t")[-2:] == [b"v9", b"v10"]


def test_produce_with_key_separator(d):
    ok(d, "produce", "k", "--key-separator", ":",
       input=b"a:1\nb:2:x\n:empty key\n")
    with pylog.open(d) as log:
        got = [(r.key, r.value) for r in log.topic("k").read()]
    assert got == [(b"a", b"1"), (b"b", b"2:x"), (b"", b"empty key")]
    assert lines(d, "consume", "k", "--format", "{key}={value}") == [
        "a=1", "b=2:x", "=empty key"]


def test_produce_key_separator_escape(d):
    ok(d, "produce", "k", "-K", r"\t", input=b"a\tb c\n")
    with pylog.open(d) as log:
        assert [(r.key, r.value) for r in log.topic("k").read()] == [
            (b"a", b"b c")]


def test_produce_line_without_separator_stops_there(d):
    p = cli(d, "produce", "k", "-K", ":", input=b"a:1\nb:2\nnokey\nc:3\n")
    assert p.returncode == 1
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "line 3" in err and "2 records before it" in err
    assert values(d, "k") == [b"1", b"2"]


BINARY = [b"\x00\xff\n\x01", b"", b"x" * 5000, "é°".encode(), b"\r\n",
          bytes(range(256))]


def test_produce_length_framing_binary(d):
    data = b"".join(struct.pack(">I", len(v)) + v for v in BINARY)
    p = cli(d, "produce", "b", "--framing", "length", input=data)
    assert p.returncode == 0, p.stderr
    assert p.stderr == f"produced {len(BINARY)} records to b\n".encode()
    assert values(d, "b") == BINARY
    got = [json.loads(x)["value"] for x in
           lines(d, "consume", "b", "--format", "json")]
    decoded = [base64.b64decode(v[7:]) if v.startswith("base64:")
               else v.encode() for v in got]
    assert decoded == BINARY
    assert got[1] == "" and got[3] == "é°"


def test_produce_length_framing_truncated_record(d):
    data = struct.pack(">I", 2) + b"ok" + struct.pack(">I", 10) + b"abc"
    p = cli(d, "produce", "b", "--framing", "length", input=data)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "inside a 10-byte record" in err
    assert values(d, "b") == [b"ok"]


def test_produce_length_framing_refuses_text(d):
    p = cli(d, "produce", "b", "--framing", "length", input=b"hello\n" * 9)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "announces a 1751477356-byte record" in err  # b"hell"
    assert values(d, "b") == []


def test_produce_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    p = cli(tmp_path / "mine", "produce", "t", input=b"x\n")
    assert p.returncode == 1
    assert b"not a pylog directory" in p.stderr
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


# ---- consume -----------------------------------------------------------------

V = [f"v{i}" for i in range(10)]


@pytest.mark.parametrize("opts, want", [
    ([], V),
    (["--from-beginning"], V),
    (["--offset", "7"], V[7:]),
    (["--offset", "0"], V),
    (["--offset", "10"], []),
    (["--offset", "-2"], V[8:]),
    (["--offset", "-20"], V),
    (["--count", "3"], V[:3]),
    (["--offset", "4", "--count", "2"], V[4:6]),
    (["--since", "1005000"], V[5:]),
    (["--since", "1004500"], V[5:]),
    (["--since", "0"], V),
    (["--since", "99999999999999"], []),
    (["--since", "1970-01-01T00:16:46+00:00"], V[6:]),
    (["--since", "1970-01-01T00:16:46Z"], V[6:]),
    (["--since", dt.datetime.fromtimestamp(1007).isoformat()], V[7:]),
])
def test_consume_positions(d, opts, want):
    assert lines(d, "consume", "t", *opts) == want


def test_consume_since_relative_age(tmp_path):
    path = str(tmp_path / "log")
    now = int(time.time() * 1000)
    ages_min = [3 * 60, 90, 30, 2]
    fill(path, "r", [(None, f"{a}m ago".encode(), now - a * 60_000, None)
                     for a in ages_min])
    assert lines(path, "consume", "r", "--since", "10m") == ["2m ago"]
    assert lines(path, "consume", "r", "--since", "1h") == ["30m ago",
                                                             "2m ago"]
    assert lines(path, "consume", "r", "--since", "2h") == [
        "90m ago", "30m ago", "2m ago"]
    assert lines(path, "consume", "r", "--since", "1d") == [
        f"{a}m ago" for a in ages_min]
    assert lines(path, "consume", "r", "--since", "300s") == ["2m ago"]


def test_consume_formats(tmp_path):
    path = str(tmp_path / "log")
    fill(path, "f", [
        (b"k", b"v", 1000, {"h": b"x", "n": None}),
        (None, b"\xff\x00", 2000, None),
        (b"\xfe", "21.5°C".encode(), 3000, None),
        (None, b"base64:abc", 4000, None),
    ])
    assert lines(path, "consume", "f", "--format", "json") == [
        '{"topic": "f", "offset": 0, "timestamp": 1000, "key": "k", '
        '"value": "v", "headers": [["h", "x"], ["n", null]]}',
        '{"topic": "f", "offset": 1, "timestamp": 2000, "key": null, '
        '"value": "base64:/wA=", "headers": []}',
        '{"topic": "f", "offset": 2, "timestamp": 3000, "key": "base64:/g==", '
        '"value": "21.5\\u00b0C", "headers": []}',
        # text that looks like the binary escape is escaped itself
        '{"topic": "f", "offset": 3, "timestamp": 4000, "key": null, '
        '"value": "base64:YmFzZTY0OmFiYw==", "headers": []}',
    ]
    assert lines(path, "consume", "f", "--format", "value") == [
        "v", "base64:/wA=", "21.5°C", "base64:YmFzZTY0OmFiYw=="]
    assert ok(path, "consume", "f", "--count", "3", "--format",
              r"{offset:>3}\t{timestamp}\t{key}\t{value}\n") == (
        "  0\t1000\tk\tv\n  1\t2000\t\tbase64:/wA=\n"
        "  2\t3000\tbase64:/g==\t21.5°C\n")
    assert ok(path, "consume", "f", "--count", "2", "--format",
              "[{topic}] {headers[h]} → {value}") == (
        "[f] x → v\n[f]  → base64:/wA=\n")


def test_consume_group_commits_and_continues(d):
    assert lines(d, "consume", "t", "--group", "g", "--count", "4") == V[:4]
    assert ok(d, "groups") == ("GROUP\tTOPIC\tPOSITION\tEND\tLAG\n"
                               "g\tt\t4\t10\t6\n")
    assert lines(d, "consume", "t", "--group", "g", "--count", "2") == V[4:6]
    assert lines(d, "consume", "t", "-G", "g") == V[6:]
    assert lines(d, "consume", "t", "--group", "g") == []
    ok(d, "produce", "t", input=b"v10\nv11\n")
    assert ok(d, "groups") == ("GROUP\tTOPIC\tPOSITION\tEND\tLAG\n"
                               "g\tt\t10\t12\t2\n")
    # an explicit position overrides the committed one, and is committed
    assert lines(d, "consume", "t", "-G", "g", "--offset", "8",
                 "--count", "1") == ["v8"]
    assert lines(d, "consume", "t", "-G", "g", "--count", "1") == ["v9"]


def test_groups_lists_every_group_and_topic(d):
    fill(d, "u", [(None, b"x", None, None)] * 3)
    ok(d, "consume", "t", "-G", "b", "--count", "1")
    ok(d, "consume", "u", "-G", "b")
    ok(d, "consume", "t", "-G", "a", "--offset", "9")
    assert ok(d, "groups") == ("GROUP\tTOPIC\tPOSITION\tEND\tLAG\n"
                               "a\tt\t10\t10\t0\n"
                               "b\tt\t1\t10\t9\n"
                               "b\tu\t3\t3\t0\n")


def test_consume_without_group_leaves_no_group(d):
    ok(d, "consume", "t", "--count", "2")
    assert ok(d, "groups") == "GROUP\tTOPIC\tPOSITION\tEND\tLAG\n"


def _follow(args):
    return subprocess.Popen([sys.executable, "-m", "pylog", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=ENV)


def test_follow_waits_until_terminated(d):
    p = _follow([d, "consume", "t", "--follow", "--offset", "7"])
    try:
        assert read_lines(p.stdout, 3) == V[7:]
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1.0)  # at the end, it waits for more
        p.terminate()
        rc = p.wait(timeout=TIMEOUT)
    finally:
        p.kill()
        p.wait()
    err = p.stderr.read()
    # 143: it was still following and unwound on SIGTERM (closing the log)
    assert rc == 143, (rc, err)
    assert b"Traceback" not in err
    assert ok(d, "groups") == "GROUP\tTOPIC\tPOSITION\tEND\tLAG\n"


def test_follow_with_group_commits_what_it_printed(d):
    p = _follow([d, "consume", "t", "--follow", "--group", "g"])
    try:
        assert read_lines(p.stdout, 10) == V
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1.0)  # at the end, it waits for more
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=TIMEOUT)
    finally:
        p.kill()
        p.wait()
    assert rc == 130
    assert b"Traceback" not in p.stderr.read()
    assert ok(d, "groups").splitlines()[1] == "g\tt\t10\t10\t0"


def test_interrupt_while_printing_still_commits_what_was_printed(tmp_path):
    # The child blocks writing a 500-record batch into a full pipe; Ctrl-C
    # then must not lose the commit of what it goes on to print.
    path = str(tmp_path / "log")
    with pylog.open(path) as log:
        log.topic("w").append_batch([b"%04d" % i + b"." * 996
                                     for i in range(500)])
    p = _follow([path, "consume", "w", "-G", "g"])
    try:
        end = time.monotonic() + TIMEOUT
        n = array.array("i", [0])
        full = fcntl.fcntl(p.stdout.fileno(), fcntl.F_GETPIPE_SZ)
        assert full < 500 * 1000
        while n[0] < full:  # the pipe is full: the child waits in write
            assert time.monotonic() < end and p.poll() is None
            fcntl.ioctl(p.stdout.fileno(), termios.FIONREAD, n)
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        out = p.stdout.read()
        rc = p.wait(timeout=TIMEOUT)
    finally:
        p.kill()
        p.wait()
    assert rc == 130
    assert b"Traceback" not in p.stderr.read()
    assert out.count(b"\n") == 500
    assert ok(path, "groups").splitlines()[1] == "g\tw\t500\t500\t0"


def test_follow_stops_at_count(d):
    p = cli(d, "consume", "t", "--follow", "--offset", "5", "--count", "3")
    assert p.returncode == 0 and p.stderr == b""
    assert p.stdout.decode().splitlines() == V[5:8]


def test_consume_into_a_closed_pipe_no_traceback(tmp_path):
    path = str(tmp_path / "log")
    with pylog.open(path) as log:
        log.topic("big").append_batch([b"x" * 100] * 50_000)
    p = _follow([path, "consume", "big"])
    p.stdout.readline()
    p.stdout.close()
    p.wait(timeout=TIMEOUT)
    assert p.stderr.read() == b""  # like head(1)'s other writers: quiet


# ---- verify and dump ---------------------------------------------------------

VAL = 200
BATCH = 48 + 20 + VAL  # one record of VAL bytes, no key, no headers


@pytest.fixture
def multi(tmp_path):
    """Topic "m" of 40 one-record batches over several small segments."""
    path = str(tmp_path / "log")
    fill(path, "m", [(None, bytes([65 + i % 26]) * VAL, 5000 + i, None)
                     for i in range(40)], segment_bytes=1024)
    segs = segments(path, "m")
    assert len(segs) >= 3
    return path, segs


def test_verify_healthy_log(multi):
    path, segs = multi
    fill(path, "other", [(b"k", b"v", None, None)] * 3)
    assert ok(path, "verify") == (
        f"verified 2 topics, {len(segs) + 1} segments, 43 batches, "
        "43 records: OK\n")


def flip(path, pos):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))


def test_verify_reports_corrupt_range(multi):
    path, segs = multi
    (b1, p1), (b2, _) = segs[1], segs[2]
    assert b2 - b1 >= 3
    batch_pos = 32 + 2 * BATCH  # the third batch: offset b1 + 2
    flip(p1, batch_pos + 48 + 20 + 7)  # inside its record's value
    p = cli(path, "verify")
    assert p.returncode == 3, p.stderr
    assert p.stderr == b""
    out = p.stdout.decode().splitlines()
    assert out == [
        f"CORRUPT m offsets [{b1 + 2}, {b2}) checksum mismatch at byte "
        f"{batch_pos} of {p1}",
        f"verified 1 topics, {len(segs)} segments, {40 - (b2 - b1 - 2)} "
        f"batches, {40 - (b2 - b1 - 2)} records: 1 problem(s)",
    ]


def test_verify_corrupt_segment_header(multi):
    path, segs = multi
    (b1, p1), (b2, _) = segs[1], segs[2]
    flip(p1, 17)  # base_offset in the segment header
    p = cli(path, "verify")
    assert p.returncode == 3
    assert (f"CORRUPT m offsets [{b1}, {b2}) invalid segment header at byte "
            f"0 of {p1}") in p.stdout.decode().splitlines()


def test_verify_notes_a_torn_tail_cut_at_open(d):
    """verify reads without changing anything: a torn tail past the end is
    a note (not corruption); the next open by a writer cuts it."""
    (_, active), = segments(d, "t")
    with open(active, "r+b") as f:  # 10 one-record batches of 2-byte values
        f.seek(32 + 10 * (48 + 20 + 2))
        f.write(b"\x01" * 100)  # a batch that never finished
    out = ok(d, "verify").splitlines()
    assert out == [
        f"NOTE t: bytes after offset 10 at byte 732 of {active} are a torn "
        "tail the next open of the log cuts (invalid batch header)",
        "verified 1 topics, 1 segments, 10 batches, 10 records: OK"]
    assert lines(d, "verify") == out  # verify changed nothing
    with pylog.open(d) as log:
        assert log.topic("t").stats()["truncated_bytes"] == 100
    assert lines(d, "verify") == [out[1]]  # the writer's open cut it


def test_dump_lists_segments_and_batches(tmp_path):
    path = str(tmp_path / "log")
    with pylog.open(path) as log:
        t = log.topic("d")
        t.append_batch([b"a", b"b", b"c"], timestamps=[1000, 3000, 2000])
        t.append(b"xyz", key=b"k", timestamp=5000)
    out = ok(path, "dump", "d").splitlines()
    m = re.fullmatch(r"segment 00000000000000000000\.log base=0 size=(\d+)",
                     out[0])
    assert m and int(m.group(1)) >= 215, out[0]
    assert out[1:] == [
        "  batch pos=32 offsets=0..2 count=3 bytes=111 ts=1000..3000 "
        "checksum=ok",
        "  batch pos=143 offsets=3..3 count=1 bytes=72 ts=5000..5000 "
        "checksum=ok",
        "  end pos=215 next_offset=4",
    ]


def test_dump_sealed_segments_exactly(multi):
    path, segs = multi
    out = ok(path, "dump", "m").splitlines()
    for (base, p), (nxt, _) in zip(segs, segs[1:]):
        n = nxt - base
        i = out.index(f"segment {os.path.basename(p)} base={base} "
                      f"size={32 + n * BATCH}")
        assert out[i + 1:i + n + 2] == [
            f"  batch pos={32 + j * BATCH} offsets={base + j}..{base + j} "
            f"count=1 bytes={BATCH} ts={5000 + base + j}..{5000 + base + j} "
            "checksum=ok" for j in range(n)] + [
            f"  end pos={32 + n * BATCH} next_offset={nxt}"]
    assert sum(x.startswith("  batch ") for x in out) == 40


def test_dump_flags_bad_checksum(multi):
    path, segs = multi
    (b1, p1) = segs[1]
    flip(p1, 32 + BATCH + 100)  # the second batch of segment 1
    p = cli(path, "dump", "m")
    assert p.returncode == 0 and p.stderr == b""
    out = p.stdout.decode().splitlines()
    i = out.index(f"  batch pos={32 + BATCH} offsets={b1 + 1}..{b1 + 1} "
                  f"count=1 bytes={BATCH} ts={5001 + b1}..{5001 + b1} "
                  "checksum=BAD")
    assert out[i + 1] == (f"  PROBLEM at byte {32 + BATCH} (offset {b1 + 1}):"
                          " checksum mismatch")
    assert out[i + 2].startswith("segment ")  # the next segment goes on


# ---- errors --------------------------------------------------------------------

@pytest.mark.parametrize("args, rc, says", [
    ([], 2, "required"),
    (["{d}"], 2, "required: COMMAND"),
    (["{d}", "frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["{d}", "consume"], 2, "required: topic"),
    (["{d}", "describe"], 2, "required: topic"),
    (["{d}", "consume", "t", "--offset", "abc"], 2, "invalid int value"),
    (["{d}", "consume", "t", "--count", "0"], 2, "must be >= 1"),
    (["{d}", "consume", "t", "--since", "yesterday"], 2, "not a time"),
    (["{d}", "consume", "t", "--from-beginning", "--offset", "1"], 2,
     "not allowed with"),
    (["{d}", "consume", "t", "--format", "{nope}"], 2, "unknown field 'nope'"),
    (["{d}", "consume", "t", "--format", "{value"], 2, "--format"),
    (["{d}", "produce", "t", "--framing", "xml"], 2, "invalid choice"),
    (["{d}", "produce", "t", "-K", ""], 2, "must not be empty"),
    (["{missing}", "topics"], 1, "no such directory"),
    (["{missing}", "consume", "t"], 1, "no such directory"),
    (["{foreign}", "verify"], 1, "not a pylog directory"),
    (["{d}", "consume", "nope"], 1, "no topic 'nope'"),
    (["{d}", "describe", "nope"], 1, "no topic 'nope'"),
    (["{d}", "dump", "nope"], 1, "no topic 'nope'"),
    (["{d}", "consume", "t", "--offset", "11"], 1,
     "offset 11 is beyond the end of topic 't'"),
    (["{d}", "consume", "t", "--group", ""], 1, "group name"),
    (["{d}", "produce", "no/slash"], 1, "invalid topic name"),
    (["demo", "--seconds", "-1"], 2, "must be > 0"),
])
def test_bad_arguments_one_line_error(d, tmp_path, args, rc, says):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    missing = tmp_path / "missing"
    where = {"{d}": d, "{missing}": str(missing), "{foreign}": str(foreign)}
    args = [where.get(a, a) for a in args]
    p = cli(*args)
    err = p.stderr.decode()
    assert p.returncode == rc, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("pylog") and "error: " in err, err
    assert says in err, err
    assert p.stdout == b""
    assert not missing.exists()  # only produce creates a log
    assert os.listdir(foreign) == ["data.csv"]


def test_log_held_open_elsewhere(d):
    """Read commands open the log read-only: they work while its writer
    (here, this process) holds it; produce needs the writer's lock and
    says so."""
    with pylog.open(d) as log:
        log.topic("t").append(b"live")
        assert lines(d, "topics") == ["TOPIC\tSTART\tEND", "t\t0\t11"]
        assert lines(d, "verify")[-1].endswith("11 records: OK")
        assert lines(d, "consume", "t")[-1] == "live"
        p = cli(d, "produce", "t", input=b"x\n")
        assert p.returncode == 1
        err = p.stderr.decode()
        assert err.startswith(f"pylog: error: {d} is open for writing in "
                              "another process (its LOCK is held): produce "
                              "needs the writer's lock"), err
        assert err.count("\n") == 1
    assert lines(d, "consume", "t", "--count", "1") == ["v0"]


# ---- progress bar --------------------------------------------------------------

BAR = re.compile(rb"(verify|dump) \[#* *\] +\d+\.\d%")


@pytest.fixture
def big(tmp_path):
    path = str(tmp_path / "log")
    with pylog.open(path) as log:
        t = log.topic("big", segment_bytes=256 * 1024)
        for i in range(40):
            t.append_batch([b"%06d" % i + b"." * 200] * 500)
    return path


def on_pty(args, stdout=None):
    """Run the CLI with stderr (and stdout unless given) on a new pseudo-
    terminal; return (status, what the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "pylog", *args],
                         stdin=slave, stdout=stdout or slave, stderr=slave,
                         env=ENV)
    os.close(slave)
    shown = b""
    try:
        while True:
            if not select.select([master], [], [], TIMEOUT)[0]:
                pytest.fail(f"no output for {TIMEOUT}s: {shown!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        rc = p.wait(timeout=TIMEOUT)
    return rc, shown


def test_verify_progress_bar_on_a_terminal(big):
    rc, shown = on_pty([big, "verify"])
    assert rc == 0
    assert BAR.search(shown), shown[:500]
    assert b"verified 1 topics" in shown


def test_verify_no_progress_bar_into_a_pipe(big):
    p = cli(big, "verify")
    assert p.returncode == 0
    assert p.stderr == b""
    assert not BAR.search(p.stdout)
    assert p.stdout.startswith(b"verified 1 topics")


def test_dump_progress_bar_when_listing_goes_to_a_file(big, tmp_path):
    with open(tmp_path / "dump.txt", "wb") as f:
        rc, shown = on_pty([big, "dump", "big"], stdout=f)
    assert rc == 0
    assert BAR.search(shown) and b"dump [" in shown, shown[:500]
    listing = (tmp_path / "dump.txt").read_bytes()
    assert listing.count(b"  batch ") == 40 and not BAR.search(listing)
    p = cli(big, "dump", "big")
    assert p.returncode == 0 and p.stderr == b""


# ---- demo ----------------------------------------------------------------------

def test_demo_store_and_forward(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pylog", "demo", "--dir",
                        str(tmp_path / "demo"), "--seconds", "4"],
                       capture_output=True, timeout=TIMEOUT, env=ENV)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, out + err
    assert "Traceback" not in err

    def count(label):
        m = re.search(rf"^{label}\s+(\d+)$", out, re.M)
        assert m, (label, out)
        return int(m.group(1))

    produced, uploaded = count("produced"), count("uploaded")
    assert produced == uploaded > 0
    assert count("lost") == 0
    # At-least-once: only the batch in flight at the kill is sent again.
    assert 0 <= count("duplicated") <= 200
    # The sink itself holds every record produced, whatever the demo says.
    sink = (tmp_path / "demo" / "sink.txt").read_bytes().splitlines()
    ids = {json.loads(x)["id"] for x in sink if x.endswith(b"}")}
    assert ids == set(range(produced))
    m = re.search(r"^disk\s+peak (\d+) bytes of a (\d+)-byte cap$", out, re.M)
    assert m, out
    assert 0 < int(m.group(1)) <= int(m.group(2))
    assert "killed with SIGKILL" in out
    # While the uplink is down, records pile up on disk.
    down = [int(x) for x in re.findall(
        r"uplink DOWN\s+produced\s+\d+\s+buffered\s+(\d+) records", out)]
    assert len(down) >= 4 and max(down) > 0, out


def test_demo_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    p = cli("demo", "--dir", tmp_path, "--seconds", "1")
    assert p.returncode == 1
    assert b"not a pylog demo directory" in p.stderr
    assert b"Traceback" not in p.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_consume_follow_sees_another_process_appending(tmp_path):
    """`consume --follow` on a live log: the writer (this process) holds
    it; the command, in another process, prints what it appends."""
    d = str(tmp_path / "log")
    with pylog.open(d) as log:
        t = log.topic("t")
        t.append(b"before")
        p = subprocess.Popen([sys.executable, "-m", "pylog", d, "consume",
                              "t", "--follow", "--count", "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=ENV)
        try:
            assert p.stdout.readline() == b"before\n"
            for i in range(3):
                t.append(b"live-%d" % i)
                assert p.stdout.readline() == b"live-%d\n" % i
            assert p.wait(timeout=TIMEOUT) == 0, p.stderr.read().decode()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
