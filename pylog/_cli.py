"""The ``pylog`` command line, in the spirit of kcat.

    pylog DIR topics
    pylog DIR describe TOPIC
    pylog DIR produce TOPIC [--key-separator SEP] [--framing lines|length]
    pylog DIR consume TOPIC [--group G] [--from-beginning|--offset N|--since T]
                            [--follow] [--format FMT] [--count N]
    pylog DIR groups
    pylog DIR verify
    pylog DIR dump TOPIC
    pylog demo [--dir DIR]

Errors go to stderr as one line, with exit status 1 (2 for bad usage, 3 for
corruption found by verify); never a traceback.
"""
import argparse
import base64
import datetime as dt
import json
import os
import re
import signal
import struct
import sys
import time

from . import _errors as E
from . import _inspect

EXIT_ERROR, EXIT_USAGE, EXIT_CORRUPT = 1, 2, 3


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total, label):
        self.total, self.label = max(total, 1), label
        self.on = sys.stderr.isatty()
        self.last = 0.0

    def update(self, done, note=""):
        now = time.monotonic()
        if not self.on or now - self.last < 0.1:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} {note[:30]:<30}")
        sys.stderr.flush()

    def done(self):
        if self.on:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def _open(args, **kw):
    import pylog
    if not os.path.isdir(os.path.join(args.dir, "catalog")):
        raise E.PylogError(f"{args.dir} is not a pylog directory "
                           "(no catalog/)")
    return pylog.open(args.dir, **kw)


def _topic(log, name):
    if name not in log.topics():
        raise E.TopicNotFoundError(f"no topic {name!r} in {log.path}")
    return log.topic(name)


def _time_arg(s):
    """ms since the epoch from: an int (ms), an ISO date/time, or a
    relative age such as 90s, 15m, 2h, 7d."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", s)
    if m:
        mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return int((time.time() - float(m.group(1)) * mult) * 1000)
    if re.fullmatch(r"\d+", s):
        return int(s)
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {s!r} (ms, ISO date, or 15m/2h/7d)") from None
    if t.tzinfo is None:
        t = t.astimezone()
    return int(t.timestamp() * 1000)


# ---- commands ----------------------------------------------------------------

def cmd_topics(args):
    with _open(args) as log:
        for name in log.topics():
            t = log.topic(name)
            print(f"{name}\t{t.start_offset}\t{t.end_offset}")


def cmd_describe(args):
    with _open(args) as log:
        t = _topic(log, args.topic)
        info = t.stats() if hasattr(t, "stats") else {}
        info.setdefault("start_offset", t.start_offset)
        info.setdefault("end_offset", t.end_offset)
        info.setdefault("durable_offset", t.durable_offset)
        out = {"topic": t.name, "config": t.config, **info}
        print(json.dumps(out, indent=2, sort_keys=True))


def _read_frames(stream, framing, sep):
    if framing == "length":
        while True:
            head = stream.read(4)
            if not head:
                return
            if len(head) < 4:
                raise E.PylogError("stdin ends inside a length prefix")
            (n,) = struct.unpack(">I", head)
            data = stream.read(n)
            if len(data) < n:
                raise E.PylogError(f"stdin ends inside a {n}-byte record")
            yield None, data
    else:
        for line in stream:
            line = line.rstrip(b"\n").rstrip(b"\r")
            if sep is not None:
                key, found, value = line.partition(sep)
                if not found:
                    raise E.PylogError(
                        f"line without key separator {sep!r}: {line[:60]!r}")
                yield key, value
            else:
                yield None, line


def cmd_produce(args):
    sep = args.key_separator.encode() if args.key_separator else None
    n = 0
    with _open(args, sync=args.sync) as log:
        t = log.topic(args.topic)
        keys, vals = [], []

        def flush_batch():
            nonlocal n
            if vals:
                t.append_batch(vals, keys=keys if sep is not None else None)
                n += len(vals)
                keys.clear()
                vals.clear()

        for key, value in _read_frames(sys.stdin.buffer, args.framing, sep):
            keys.append(key)
            vals.append(value)
            if len(vals) >= args.batch:
                flush_batch()
        flush_batch()
    print(f"produced {n} records to {args.topic}", file=sys.stderr)


def _text(b):
    if b is None:
        return None
    b = bytes(b)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(b).decode()


def _formatter(fmt):
    if fmt == "json":
        def f(r):
            return json.dumps({"topic": r.topic, "offset": r.offset,
                               "timestamp": r.timestamp, "key": _text(r.key),
                               "value": _text(r.value),
                               "headers": [[k, _text(v)] for k, v in r.headers]})
        return f
    if fmt == "value":
        return lambda r: _text(r.value)
    template = fmt.encode().decode("unicode_escape")

    def g(r):
        return template.format(offset=r.offset, timestamp=r.timestamp,
                               key=_text(r.key) or "", value=_text(r.value),
                               topic=r.topic, headers=dict(r.headers))
    return g


def cmd_consume(args):
    fmt = _formatter(args.format)
    with _open(args) as log:
        t = _topic(log, args.topic)
        c = log.consumer(args.group or f"_cli-{os.getpid()}", args.topic,
                         start="earliest")
        try:
            if args.offset is not None:
                c.seek(args.topic, args.offset)
            elif args.since is not None:
                c.seek_to_time(args.since)
            elif args.from_beginning or not args.group:
                c.seek_to_beginning()
            left = args.count
            out = sys.stdout
            while left is None or left > 0:
                batch = c.poll(max_records=min(500, left or 500),
                               timeout=0.5 if args.follow else 0.0)
                if not batch:
                    if args.follow:
                        continue
                    break
                for r in batch:
                    out.write(fmt(r) + "\n")
                out.flush()
                if left is not None:
                    left -= len(batch)
                if args.group:
                    c.commit()
        finally:
            c.close()
            if not args.group:
                log.delete_group(c.group)
        _ = t


def cmd_groups(args):
    with _open(args) as log:
        for group, positions in sorted(log.groups().items()):
            for topic, pos in sorted(positions.items()):
                if topic in log.topics():
                    end = log.topic(topic).end_offset
                    print(f"{group}\t{topic}\t{pos}\t{end}\t{max(0, end - pos)}")
                else:
                    print(f"{group}\t{topic}\t{pos}\t-\t-")


def cmd_verify(args):
    bad = 0
    with _open(args) as log:
        names = log.topics()
        jobs = []
        for name in names:
            t = log.topic(name)
            segs = _inspect.segment_files(os.path.join(log.path, "topics", name))
            for i, (base, path) in enumerate(segs):
                nxt = segs[i + 1][0] if i + 1 < len(segs) else None
                jobs.append((name, base, path, nxt, t))
        total = sum(os.path.getsize(j[2]) for j in jobs)
        prog = Progress(total, "verify")
        done = 0
        batches = records = 0
        for name, base, path, nxt, t in jobs:
            for item in _inspect.scan_segment(path, base, nxt):
                if isinstance(item, _inspect.Problem):
                    bad += 1
                    end = nxt if nxt is not None else t.end_offset
                    prog.done()
                    print(f"CORRUPT {name} offsets [{item.offset}, {end}) "
                          f"{item.what} at byte {item.pos} of {item.path}")
                else:
                    batches += 1
                    records += item.count
                    prog.update(done + item.pos, f"{name}/{base}")
            done += os.path.getsize(path)
        prog.done()
        print(f"verified {len(names)} topics, {len(jobs)} segments, "
              f"{batches} batches, {records} records: "
              f"{'OK' if not bad else f'{bad} corrupt range(s)'}")
    return EXIT_CORRUPT if bad else 0


def cmd_dump(args):
    with _open(args) as log:
        t = _topic(log, args.topic)
        segs = _inspect.segment_files(os.path.join(log.path, "topics", t.name))
        prog = Progress(sum(os.path.getsize(p) for _, p in segs), "dump")
        done = 0
        for i, (base, path) in enumerate(segs):
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            print(f"segment {os.path.basename(path)} base={base} "
                  f"size={os.path.getsize(path)}")
            for item in _inspect.scan_segment(path, base, nxt):
                if isinstance(item, _inspect.Problem):
                    print(f"  PROBLEM at byte {item.pos} (offset {item.offset}):"
                          f" {item.what}")
                else:
                    print(f"  batch pos={item.pos} offsets={item.base_offset}.."
                          f"{item.base_offset + item.count - 1} "
                          f"count={item.count} bytes={item.length} "
                          f"ts={item.first_ts}..{item.max_ts} "
                          f"checksum={'ok' if item.ok else 'BAD'}")
                    prog.update(done + item.pos)
            done += os.path.getsize(path)
        prog.done()


def cmd_demo(args):
    from . import _demo
    return _demo.main(args)


# ---- entry point -------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(
        prog="pylog", description="Inspect and use a pylog directory.")
    p.add_argument("dir", help="the log directory")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("topics", help="list topics with start and end offsets")
    s = sub.add_parser("describe", help="a topic's config and counters")
    s.add_argument("topic")
    s = sub.add_parser("produce", help="append records read from stdin")
    s.add_argument("topic")
    s.add_argument("--key-separator", "-K", metavar="SEP",
                   help="lines are KEY<SEP>VALUE")
    s.add_argument("--framing", choices=["lines", "length"], default="lines",
                   help="lines (default) or 4-byte big-endian length prefixes")
    s.add_argument("--batch", type=int, default=1000,
                   help="records per atomic batch (default 1000)")
    s.add_argument("--sync", choices=["none", "interval", "always"],
                   default="interval")
    s = sub.add_parser("consume", help="print records")
    s.add_argument("topic")
    s.add_argument("--group", "-G", help="read and commit as this group")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--from-beginning", action="store_true")
    g.add_argument("--offset", type=int, metavar="N")
    g.add_argument("--since", type=_time_arg, metavar="TIME",
                   help="ms since epoch, ISO time, or an age like 15m")
    s.add_argument("--follow", "-f", action="store_true",
                   help="wait for new records (Ctrl-C stops)")
    s.add_argument("--format", default="value",
                   help="value (default), json, or a template such as "
                        "'{offset} {timestamp} {key} {value}'")
    s.add_argument("--count", "-c", type=int, metavar="N",
                   help="stop after N records")
    sub.add_parser("groups", help="consumer groups: position, end and lag")
    sub.add_parser("verify", help="check every checksum; exit 3 on corruption")
    s = sub.add_parser("dump", help="list a topic's segments and batches")
    s.add_argument("topic")
    return p


def _demo_parser():
    p = argparse.ArgumentParser(
        prog="pylog demo",
        description="The store-and-forward loop end to end, with a crash.")
    p.add_argument("--dir", default=os.path.join(os.getcwd(), "pylog-demo"),
                   help="where to keep the demo log (default ./pylog-demo)")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="how long the producer runs in all")
    p.add_argument("--child", choices=["run"], help=argparse.SUPPRESS)
    return p


COMMANDS = {"topics": cmd_topics, "describe": cmd_describe,
            "produce": cmd_produce, "consume": cmd_consume,
            "groups": cmd_groups, "verify": cmd_verify, "dump": cmd_dump}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "demo":
        args = _demo_parser().parse_args(argv[1:])
        fn = cmd_demo
    else:
        args = _parser().parse_args(argv)
        fn = COMMANDS[args.cmd]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return fn(args) or 0
    except KeyboardInterrupt:
        return 130
    except (E.PylogError, OSError, ValueError, TypeError) as exc:
        print(f"pylog: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
