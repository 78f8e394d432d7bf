"""The ``pylog`` command line, in the spirit of kcat.

    pylog DIR topics
    pylog DIR describe TOPIC
    pylog DIR produce TOPIC [--key-separator SEP] [--framing lines|length]
    pylog DIR consume TOPIC [--group G] [--from-beginning|--offset N|--since T]
                            [--follow] [--format FMT] [--count N]
    pylog DIR groups
    pylog DIR verify
    pylog DIR dump TOPIC
    pylog DIR forward --to URL TOPIC... [--group G] [--drain] [options]
    pylog demo [--dir DIR] [--seconds S]
    pylog serve CONFIG.toml [--check]

``produce`` creates DIR if it does not exist (or is empty); every other
command needs an existing pylog directory. ``topics``, ``describe``,
``groups``, ``verify``, ``dump`` and ``consume`` open it read-only: they
work while another process writes it, and on a read-only mount.
``produce``, ``forward`` and ``demo`` hold its LOCK as its writer.

Errors go to stderr as one line, with exit status 1 (2 for bad usage, 3 for
corruption found by verify, 130/143 when interrupted); never a traceback
(set PYLOG_DEBUG=1 to get one for an unexpected error).
"""
import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import re
import select
import signal
import struct
import sys
import time

from . import _errors as E
from . import _inspect

EXIT_ERROR, EXIT_USAGE, EXIT_CORRUPT = 1, 2, 3
EXIT_INT, EXIT_TERM = 130, 143
FOLLOW_WAIT = 0.2  # seconds between checks for new records with --follow
CHUNK = 500        # records read (and committed) per step of consume
BATCH_BYTES = 1 << 20  # produce appends a batch once it holds this much


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 2)."""


class InputError(Exception):
    """stdin of produce is not in the announced framing."""


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so the log is closed cleanly."""


class _Signals:
    """SIGINT raises KeyboardInterrupt and SIGTERM Terminated, except inside
    a ``deferred()`` section (print then commit, append then forget), where
    the first one waits for the section to end; a second one does not."""

    def __init__(self):
        self.depth = 0
        self.pending = None

    def handler(self, signum, frame):
        exc = KeyboardInterrupt if signum == signal.SIGINT else Terminated
        if self.depth and self.pending is None:
            self.pending = exc
            return
        raise exc()

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                exc, self.pending = self.pending, None
                raise exc()


SIGNALS = _Signals()


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal
    (and `enabled`, when given, is true)."""

    def __init__(self, total, label, enabled=True):
        self.total, self.label = max(total, 1), label
        self.on = bool(enabled) and sys.stderr.isatty()
        self.shown = False
        self.last = 0.0
        try:
            self.width = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError):
            self.width = 0
        self.width = self.width or 80

    def update(self, done, note=""):
        if not self.on:
            return
        now = time.monotonic()
        if self.shown and now - self.last < 0.1:
            return
        self.last, self.shown = now, True
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        line = f"{self.label} [{bar:<30}] {frac:6.1%} {note}"
        sys.stderr.write("\r" + line[:self.width - 1] + "\x1b[K")
        sys.stderr.flush()

    def clear(self):
        """Erase the bar (before printing a line, and at the end)."""
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


def _open(args, create=False, **kw):
    """Open DIR as its writer. Unless create, it must already be a pylog
    directory; with create it may also be missing or empty."""
    import pylog
    d = args.dir
    if not os.path.exists(d):
        if not create:
            raise E.PylogError(f"{d}: no such directory")
    elif not os.path.isdir(d):
        raise E.PylogError(f"{d} is not a directory")
    elif not _is_log(d):
        if not (create and not os.listdir(d)):
            raise E.PylogError(f"{d} is not a pylog directory")
    try:
        return pylog.open(d, **kw)
    except E.LogLockedError:
        raise E.LogLockedError(
            f"{d} is open for writing in another process (its LOCK is "
            f"held): {args.cmd} needs the writer's lock; commands that only "
            "read (topics, describe, groups, verify, dump, consume) work on "
            "a live log") from None


def _is_log(d):
    return any(os.path.exists(os.path.join(d, x))
               for x in ("PYLOG", "catalog", "topics"))


def _open_ro(args):
    """Open DIR read-only: works while another process writes it, on a
    read-only mount, and changes nothing."""
    import pylog
    d = args.dir
    if not os.path.exists(d):
        raise E.PylogError(f"{d}: no such directory")
    if not os.path.isdir(d):
        raise E.PylogError(f"{d} is not a directory")
    if not _is_log(d):
        raise E.PylogError(f"{d} is not a pylog directory")
    return pylog.open(d, readonly=True)


def _topic(log, name):
    if name not in log.topics():
        raise E.TopicNotFoundError(f"no topic {name!r} in {log.path}")
    return log.topic(name)


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _time_arg(s):
    """ms since the epoch from: an int (ms), an ISO date/time (local time
    unless it has an offset or Z), or an age such as 90s, 15m, 2h, 7d."""
    s = s.strip()
    m = _AGE.fullmatch(s)
    if m:
        mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return int((time.time() - float(m.group(1)) * mult) * 1000)
    if re.fullmatch(r"\d+", s):
        return int(s)
    iso = s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {s!r} (ms since the epoch, an ISO date/time, or an "
            "age like 90s, 15m, 2h, 7d)") from None
    if t.tzinfo is None:
        t = t.astimezone()
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


def _positive(s):
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {n}")
    return n


_ESC = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\"}


def _unescape(s):
    r"""Backslash escapes \n \t \r \0 \\ (others are kept as written)."""
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), m.group(0)), s,
                  flags=re.S)


# ---- commands ----------------------------------------------------------------

def cmd_topics(args):
    with _open_ro(args) as log:
        print("TOPIC\tSTART\tEND")
        for name in log.topics():
            t = log.topic(name)
            print(f"{name}\t{t.start_offset}\t{t.end_offset}")


def cmd_describe(args):
    with _open_ro(args) as log:
        t = _topic(log, args.topic)
        out = {"topic": t.name, "config": t.config, **t.stats()}
        print(json.dumps(out, indent=2, sort_keys=True))


def _ready(fd):
    """More input can be read from fd without waiting."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _frames(fd, framing, sep, limit):
    """Yield (key, value) for every record on fd, and None whenever no more
    input is ready (so that the caller appends what it holds instead of
    waiting for a full batch: `tail -f x | pylog DIR produce t`). A length
    prefix above limit is refused before its record is read."""
    buf = bytearray()
    line_no = 0

    def split_line(line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if sep is None:
            return None, bytes(line)
        key, found, value = bytes(line).partition(sep)
        if not found:
            raise InputError(f"line {line_no} has no key separator {sep!r}: "
                             f"{bytes(line[:60])!r}")
        return key, value

    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buf += chunk
        if framing == "length":
            pos = 0
            while len(buf) - pos >= 4:
                (n,) = struct.unpack_from(">I", buf, pos)
                if n > limit:
                    raise InputError(
                        f"a length prefix announces a {n}-byte record, more "
                        f"than max_record_bytes ({limit}): is stdin "
                        "length-framed?")
                if len(buf) - pos - 4 < n:
                    break
                yield None, bytes(buf[pos + 4:pos + 4 + n])
                pos += 4 + n
            del buf[:pos]
        else:
            lines = buf.split(b"\n")
            buf = lines.pop()
            for line in lines:
                line_no += 1
                yield split_line(line)
        if not _ready(fd):
            yield None
    if buf:
        if framing == "length":
            if len(buf) < 4:
                raise InputError("stdin ends inside a length prefix")
            (n,) = struct.unpack_from(">I", buf, 0)
            raise InputError(f"stdin ends inside a {n}-byte record "
                             f"({len(buf) - 4} bytes of it were read)")
        line_no += 1
        yield split_line(buf)  # a last line without a newline


def cmd_produce(args):
    if args.key_separator is not None:
        sep = _unescape(args.key_separator).encode()
        if not sep:
            raise UsageError("--key-separator must not be empty")
    else:
        sep = None
    n = 0
    with _open(args, create=True, sync=args.sync) as log:
        t = log.topic(args.topic)
        keys, vals = [], []
        size = 0

        def flush_batch():
            nonlocal n, size
            if vals:
                with SIGNALS.deferred():  # appended and forgotten together
                    t.append_batch(vals,
                                   keys=keys if sep is not None else None)
                    n += len(vals)
                    keys.clear()
                    vals.clear()
                    size = 0

        try:
            for item in _frames(sys.stdin.buffer.fileno(), args.framing, sep,
                                t.config["max_record_bytes"]):
                if item is None:
                    flush_batch()
                    continue
                keys.append(item[0])
                vals.append(item[1])
                size += len(item[1]) + len(item[0] or b"")
                if len(vals) >= args.batch or size >= BATCH_BYTES:
                    flush_batch()
            flush_batch()
        except (KeyboardInterrupt, Terminated):
            flush_batch()  # what was read whole is appended, then stop
            raise
        except InputError as exc:
            flush_batch()
            raise E.PylogError(f"{exc}; the {n} records before it were "
                               f"appended to topic {t.name!r}") from None
        except E.PylogError as exc:
            raise type(exc)(f"{exc}; {n} records were appended to topic "
                            f"{t.name!r} before it") from None
    print(f"produced {n} record{'' if n == 1 else 's'} to {args.topic}",
          file=sys.stderr)


def _text(b):
    """A key or value as text: UTF-8 as is; anything else (and text that
    itself starts with "base64:") as "base64:" + its base64."""
    if b is None:
        return None
    b = bytes(b)
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        s = None
    if s is None or s.startswith("base64:"):
        return "base64:" + base64.b64encode(b).decode()
    return s


class _Headers(dict):
    """{headers[name]} of a record without that header is empty."""

    def __missing__(self, key):
        return ""


def _fields(r):
    return {"topic": r.topic, "offset": r.offset, "timestamp": r.timestamp,
            "key": _text(r.key) or "", "value": _text(r.value),
            "headers": _Headers((k, _text(v) or "") for k, v in r.headers)}


def _formatter(fmt):
    """A function Record -> output line (with its newline)."""
    if fmt == "json":
        def f(r):
            return json.dumps({"topic": r.topic, "offset": r.offset,
                               "timestamp": r.timestamp, "key": _text(r.key),
                               "value": _text(r.value),
                               "headers": [[k, _text(v)]
                                           for k, v in r.headers]}) + "\n"
        return f
    if fmt == "value":
        return lambda r: _text(r.value) + "\n"
    template = _unescape(fmt)
    nl = "" if template.endswith("\n") else "\n"

    def g(r):
        return template.format(**_fields(r)) + nl

    from ._topic import Record
    try:
        g(Record(0, 0, b"k", b"v", (("h", b"v"),), "t"))
    except KeyError as exc:
        raise UsageError(
            f"--format {fmt!r}: unknown field {exc.args[0]!r} (fields: "
            f"{', '.join(_fields(Record(0, 0, None, b'', (), 't')))})"
        ) from None
    except (IndexError, ValueError, AttributeError, TypeError) as exc:
        raise UsageError(f"--format {fmt!r}: {exc}") from None
    return g


def _start_position(t, args):
    """Where --offset / --since / --from-beginning put the reader, or None
    (no such option: a group's committed position, else the start)."""
    start, end = t.start_offset, t.end_offset
    if args.offset is not None:
        off = args.offset
        if off < 0:  # from the end, as kcat's -o -N
            return max(start, end + off)
        if off > end:
            raise E.OffsetOutOfRangeError(
                f"offset {off} is beyond the end of topic {t.name!r} "
                f"(its next offset is {end})")
        if off < start:
            raise E.OffsetOutOfRangeError(
                f"offset {off} of topic {t.name!r} is no longer retained "
                f"(the topic starts at {start})")
        return off
    if args.since is not None:
        off = t.offset_for_time(args.since)
        return end if off is None else off
    if args.from_beginning:
        return start
    return None


def cmd_consume(args):
    fmt = _formatter(args.format)
    out = sys.stdout.buffer
    left = args.count

    def emit(recs):
        nonlocal left
        data = memoryview("".join(fmt(r) for r in recs).encode("utf-8"))
        while data:  # a write interrupted by a signal can be partial
            data = data[out.write(data):]
        out.flush()
        if left is not None:
            left -= len(recs)

    with _open_ro(args) as log:
        t = _topic(log, args.topic)
        pos = _start_position(t, args)
        if args.group is not None:
            # Commits after each printed batch: at-least-once, and the next
            # run continues where this one stopped.
            with log.consumer(args.group, t.name) as c:
                if pos is not None:
                    c.seek(t.name, pos)
                while left is None or left > 0:
                    recs = c.poll(max_records=min(CHUNK, left or CHUNK),
                                  timeout=FOLLOW_WAIT if args.follow else 0.0)
                    if recs:
                        with SIGNALS.deferred():  # printed means committed
                            emit(recs)
                            c.commit()
                    elif not args.follow:
                        break
            return
        # No group: read without leaving a trace in the catalog.
        pos = t.start_offset if pos is None else pos
        while left is None or left > 0:
            end = t.end_offset
            if pos >= end:
                if not args.follow:
                    break
                time.sleep(FOLLOW_WAIT)
                continue
            recs = list(t.read(pos, min(end - pos, CHUNK, left or CHUNK)))
            emit(recs)
            pos = recs[-1].offset + 1


def cmd_groups(args):
    with _open_ro(args) as log:
        names = set(log.topics())
        print("GROUP\tTOPIC\tPOSITION\tEND\tLAG")
        for group, positions in sorted(log.groups().items()):
            for topic, pos in sorted(positions.items()):
                if topic in names:
                    t = log.topic(topic)
                    end = t.end_offset
                    lag = max(0, end - max(pos, t.start_offset))
                    print(f"{group}\t{topic}\t{pos}\t{end}\t{lag}")
                else:
                    print(f"{group}\t{topic}\t{pos}\t-\t-")


def cmd_verify(args):
    from ._verify import Verifier
    with _open_ro(args) as log:
        prog_total = 0
        v = Verifier(log)
        names = log.topics()
        for name in names:
            for _, p in _inspect.segment_files(os.path.join(log.path,
                                                            "topics", name)):
                try:
                    prog_total += os.path.getsize(p)
                except OSError:
                    pass
        v.progress = Progress(prog_total, "verify")
        n = v.run()
        v.progress.clear()
        bad = v.problems
        print(f"verified {n} topics, {v.segments} segments, {v.batches} "
              f"batches, {v.records} records: "
              f"{'OK' if not bad else f'{len(bad)} problem(s)'}")
    return EXIT_CORRUPT if bad else 0


def cmd_dump(args):
    with _open_ro(args) as log:
        t = _topic(log, args.topic)
        segs = _inspect.segment_files(os.path.join(log.path, "topics", t.name))
        # With stdout on the terminal too, the listing is the progress.
        prog = Progress(sum(os.path.getsize(p) for _, p in segs), "dump",
                        enabled=not sys.stdout.isatty())
        done = 0
        for i, (base, path) in enumerate(segs):
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            size = os.path.getsize(path)
            prog.clear()
            print(f"segment {os.path.basename(path)} base={base} "
                  f"size={size}")
            end_pos, end_off, problem = _inspect.SEG_HDR, base, False
            for item in _inspect.scan_segment(path, base, nxt):
                prog.clear()
                if isinstance(item, _inspect.Problem):
                    problem = True
                    print(f"  PROBLEM at byte {item.pos} (offset "
                          f"{item.offset}): {item.what}")
                else:
                    print(f"  batch pos={item.pos} offsets={item.base_offset}.."
                          f"{item.base_offset + item.count - 1} "
                          f"count={item.count} bytes={item.length} "
                          f"ts={item.first_ts}..{item.max_ts} "
                          f"checksum={'ok' if item.ok else 'BAD'}")
                    end_pos = item.pos + item.length
                    end_off = item.base_offset + item.count
                    prog.update(done + end_pos, os.path.basename(path))
            if not problem:
                print(f"  end pos={end_pos} next_offset={end_off}")
            done += size
        prog.clear()


def _human(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _sink_options(args, scheme):
    """Sink options from -X, -H, --format, --qos; UsageError where they do
    not apply to the URL's scheme."""
    opts = {}
    kafka, mqtt = scheme == "kafka", scheme in ("mqtt", "mqtts")
    http = scheme in ("http", "https")
    for flag, value, ok in (("-X", args.property, kafka),
                            ("-H", args.header, http),
                            ("--format", args.format, http),
                            ("--qos", args.qos, mqtt)):
        if value and not ok:
            raise UsageError(f"{flag} does not apply to {scheme}:// URLs")
    if args.property:
        config = {}
        for item in args.property:
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise UsageError(f"-X takes PROPERTY=VALUE, not {item!r}")
            config[k] = v
        opts["config"] = config
    if args.header:
        headers = {}
        for item in args.header:
            k, colon, v = item.partition(":")
            if not colon or not k.strip():
                raise UsageError(f"-H takes 'Name: value', not {item!r}")
            headers[k.strip()] = v.strip()
        opts["headers"] = headers
    if args.format:
        opts["format"] = args.format
    if args.qos:
        opts["qos"] = args.qos
    if kafka:
        opts["delivery_timeout"] = args.timeout
    else:
        opts["timeout"] = args.timeout
    return opts


def cmd_forward(args):
    """Forward topics to an upstream until Ctrl-C (or, with --drain, until
    what the topics hold is confirmed), with a status line on a terminal."""
    from . import forward as F
    scheme = args.to.split("://", 1)[0].lower() if "://" in args.to else ""
    try:
        sink = F.sink_from_url(args.to, **_sink_options(args, scheme))
    except E.InvalidConfigError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise E.PylogError(str(exc)) from None
    tty = sys.stderr.isatty()
    try:
        with _open(args) as log:
            for name in args.topics:
                _topic(log, name)
            if not args.no_check:
                sink.check(timeout=args.timeout)
            fw = log.forwarder(
                args.group, args.topics, sink,
                batch_records=args.batch_records,
                batch_bytes=args.batch_bytes, linger_ms=args.linger_ms,
                max_bytes_per_s=args.max_bytes_per_s,
                max_retries=args.max_retries,
                dead_letter_topic=args.dead_letter_topic,
                start="latest" if args.from_latest else "earliest")
            try:
                with fw:  # stops (and commits) however the loop ends
                    _forward_loop(args, fw, tty)
            except (KeyboardInterrupt, Terminated):
                _forward_summary(fw, tty)
                raise
            _forward_summary(fw, tty)
    finally:
        close = getattr(sink, "close", None)
        if close is not None:
            close()


def _forward_loop(args, fw, tty):
    last_state = "running"
    while True:
        with SIGNALS.deferred():  # Ctrl-C lands between calls, not in them
            done = fw.flush(0.25)  # raises if the forwarder failed
            st = fw.stats()
        if tty:
            _forward_status(args, st)
        elif st["state"] != last_state:  # a log line, not a status line
            print(f"pylog: forward {args.group}: {st['state']}"
                  + (f": {st['last_error']}" if st["state"] == "backoff"
                     else ""), file=sys.stderr, flush=True)
        last_state = st["state"]
        if done and args.drain:
            return


def _forward_summary(fw, tty):
    st = fw.stats()
    print(("\n" if tty else "")
          + f"forwarded {st['sent_records']} records "
          f"({_human(st['sent_bytes'])}) in {st['batches']} batches, "
          f"{st['retries']} retries, {st['dead_lettered']} dead-lettered",
          file=sys.stderr)


def _forward_status(args, st):
    ago = ("never" if st["last_success_ms"] is None else
           f"{max(0.0, time.time() - st['last_success_ms'] / 1000):.1f}s ago")
    lag = sum(st["lag"].values())
    line = (f"forward {args.group} -> {args.to}  {st['state']:<7}  "
            f"sent {st['sent_records']} ({_human(st['sent_bytes'])})  "
            f"lag {lag}  retries {st['retries']}  "
            f"dead {st['dead_lettered']}  last ok {ago}")
    if st["state"] == "backoff" and st["last_error"]:
        line += f"  ({st['last_error']})"
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        width = 0
    sys.stderr.write("\r" + line[:(width or 80) - 1] + "\x1b[K")
    sys.stderr.flush()


def cmd_serve(args):
    """Run the ingests and forwarders of a config file until SIGTERM or
    Ctrl-C (exit 0); a mistake in the file is one line and exit 2."""
    from . import serve
    try:
        if args.check:
            serve.load(args.config).close()
            print(f"{args.config}: ok", file=sys.stderr)
            return 0
        return serve.run(args.config)
    except serve.ConfigError as exc:
        raise UsageError(str(exc)) from None


def cmd_demo(args):
    from . import _demo
    return _demo.main(args)


# ---- entry point -------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block)."""

    def error(self, message):
        self.exit(EXIT_USAGE,
                  f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser():
    p = _Parser(
        prog="pylog", description="Inspect and use a pylog directory.",
        epilog="pylog demo [--dir DIR] [--seconds S] runs the "
               "store-and-forward demo; pylog serve CONFIG.toml runs the "
               "ingests and forwarders of a config file.")
    p.add_argument("dir", help="the log directory")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    def cmd(name, **kw):
        return sub.add_parser(name, prog=f"pylog DIR {name}", **kw)

    cmd("topics", help="list topics with start and end offsets")
    s = cmd("describe", help="a topic's config and counters")
    s.add_argument("topic")
    s = cmd("produce", help="append records read from stdin (creates DIR "
                            "and the topic if needed)")
    s.add_argument("topic")
    s.add_argument("--key-separator", "-K", metavar="SEP",
                   help=r"lines are KEY<SEP>VALUE (escapes such as \t work)")
    s.add_argument("--framing", choices=["lines", "length"], default="lines",
                   help="lines (default) or 4-byte big-endian length prefixes")
    s.add_argument("--batch", type=_positive, default=1000,
                   help="most records per atomic batch (default 1000)")
    s.add_argument("--sync", choices=["none", "interval", "always"],
                   default="interval")
    s = cmd("consume", help="print records")
    s.add_argument("topic")
    s.add_argument("--group", "-G",
                   help="read from and commit to this consumer group")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--from-beginning", action="store_true")
    g.add_argument("--offset", "-o", type=int, metavar="N",
                   help="start at offset N (negative: N before the end)")
    g.add_argument("--since", type=_time_arg, metavar="TIME",
                   help="ms since epoch, ISO time, or an age like 15m")
    s.add_argument("--follow", "-f", action="store_true",
                   help="at the end, wait for new records (Ctrl-C stops)")
    s.add_argument("--format", default="value",
                   help=r"value (default), json, or a template such as "
                        r"'{offset} {timestamp} {key} {value}' (fields: "
                        r"topic offset timestamp key value headers; "
                        r"escapes such as \t work)")
    s.add_argument("--count", "-c", type=_positive, metavar="N",
                   help="stop after N records")
    cmd("groups", help="consumer groups: position, end and lag")
    cmd("verify", help="check every checksum; exit 3 on corruption")
    s = cmd("dump", help="list a topic's segments and batches")
    s.add_argument("topic")
    s = cmd("forward", help="upload topics to Kafka, MQTT or HTTP, at least "
                            "once, until Ctrl-C")
    s.add_argument("topics", nargs="+", metavar="TOPIC")
    s.add_argument("--to", required=True, metavar="URL",
                   help="kafka://HOST:PORT/{topic}, mqtt[s]://HOST:PORT/"
                        "gw/{topic}, http[s]://HOST/PATH")
    s.add_argument("--group", "-G", default="forward",
                   help="the forwarder's name: its consumer group "
                        "(default: forward)")
    s.add_argument("--drain", action="store_true",
                   help="exit once what the topics hold is confirmed")
    s.add_argument("--from-latest", action="store_true",
                   help="a new group starts at the end, not the beginning")
    s.add_argument("--batch-records", type=_positive, default=500,
                   metavar="N", help="records per batch (default 500)")
    s.add_argument("--batch-bytes", type=_positive, default=1 << 20,
                   metavar="N", help="bytes per batch (default 1 MiB)")
    s.add_argument("--linger-ms", type=_natural, default=200, metavar="MS",
                   help="wait this long to fill a batch (default 200)")
    s.add_argument("--max-bytes-per-s", type=_positive, metavar="N",
                   help="bandwidth cap (default: none)")
    s.add_argument("--max-retries", type=_natural, metavar="N",
                   help="give up after N retries of a batch (default: "
                        "retry for ever)")
    s.add_argument("--dead-letter-topic", metavar="TOPIC",
                   help="where records the upstream refuses go (default: "
                        "stop with an error)")
    s.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                   help="seconds to connect and to wait for confirmations "
                        "(default 10)")
    s.add_argument("--no-check", action="store_true",
                   help="start even if the upstream cannot be reached now")
    s.add_argument("-X", dest="property", action="append", metavar="P=V",
                   help="a librdkafka property (kafka://)")
    s.add_argument("-H", dest="header", action="append", metavar="'N: V'",
                   help="a request header (http[s]://)")
    s.add_argument("--format", choices=["ndjson", "raw"],
                   help="ndjson batches (default) or one raw record per "
                        "request (http[s]://)")
    s.add_argument("--qos", type=int, choices=[1, 2],
                   help="MQTT QoS (default 1)")
    return p


def _natural(s):
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {s!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {n}")
    return n


def _seconds(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {s}")
    return v


def _demo_parser():
    p = _Parser(
        prog="pylog demo",
        description="The store-and-forward loop end to end, with a crash.")
    p.add_argument("--dir", default=os.path.join(os.getcwd(), "pylog-demo"),
                   help="where to keep the demo log (default ./pylog-demo)")
    p.add_argument("--seconds", type=_seconds, default=6.0,
                   help="how long the producer runs in all (default 6)")
    p.add_argument("--child", choices=["run"], help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    return p


def _serve_parser():
    p = _Parser(
        prog="pylog serve",
        description="Run the ingests and forwarders a config file declares, "
                    "until SIGTERM or Ctrl-C.")
    p.add_argument("config", metavar="CONFIG.toml",
                   help="the config file (see examples/gateway.toml)")
    p.add_argument("--check", action="store_true",
                   help="check the file and exit (0: no mistake)")
    return p


COMMANDS = {"topics": cmd_topics, "describe": cmd_describe,
            "produce": cmd_produce, "consume": cmd_consume,
            "groups": cmd_groups, "verify": cmd_verify, "dump": cmd_dump,
            "forward": cmd_forward}


def _message(exc):
    if isinstance(exc, E.PylogError) and isinstance(exc, OSError):
        return exc.strerror or str(exc)  # no "[Errno 11]" prefix
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, (E.PylogError, UsageError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"] and (len(argv) == 1 or argv[1].startswith("-")):
        args = _demo_parser().parse_args(argv[1:])
        fn = cmd_demo
    elif argv[:1] == ["serve"] and (len(argv) == 1 or argv[1] not in COMMANDS):
        args = _serve_parser().parse_args(argv[1:])
        fn = cmd_serve
    else:  # (a log directory called "demo" still works: pylog demo topics)
        args = _parser().parse_args(argv)
        fn = COMMANDS[args.cmd]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, SIGNALS.handler)
    signal.signal(signal.SIGTERM, SIGNALS.handler)
    try:
        return fn(args) or 0
    except KeyboardInterrupt:
        return EXIT_INT
    except Terminated:
        return EXIT_TERM
    except UsageError as exc:
        print(f"pylog: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 -- one line, never a traceback
        if os.environ.get("PYLOG_DEBUG"):
            raise
        print(f"pylog: error: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
