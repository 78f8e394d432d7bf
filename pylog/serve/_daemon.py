"""The ``pylog serve`` daemon: one log, its ingests and forwarders from a
config file, until SIGTERM or Ctrl-C.

Start: open the log, make the declared topics, the ingests (which make
their topics), then check that every forwarded topic exists, make the
forwarders and the status endpoint; start the forwarders, then the
ingests. Stop (SIGTERM, SIGINT): stop the ingests (each appends and
acknowledges what it took), give the forwarders up to flush_timeout
seconds to upload what the log holds, stop them (each commits what its
upstream confirmed), close the status endpoint, close the log; exit 0. A
second signal cuts the flush short.

On a terminal, stderr shows one live status line per ingest and
forwarder; otherwise one line per state change (with the last error when
it is not running).
"""
import os
import signal
import sys
import threading
import time

from .. import _errors as E
from ._config import ConfigError
from ._status import StatusServer

REFRESH_S = 0.25  # the status lines and state checks, this often


def _human(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


class Daemon:
    """Runs a checked Config (see _config.py); run() returns the exit
    status."""

    def __init__(self, cfg, err=None, tty=None):
        self.cfg = cfg
        self.err = err or sys.stderr
        self.tty = self.err.isatty() if tty is None else tty
        self.log = None
        self.ingests, self.forwarders = [], []
        self.status = None
        self._stop = threading.Event()
        self._signals = 0
        self._states = {}
        self._drawn = 0

    # ---- output ------------------------------------------------------------
    def say(self, msg):
        """One log line (after clearing the status lines on a terminal)."""
        self._clear()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} pylog serve: {msg}", file=self.err, flush=True)

    def _clear(self):
        if self._drawn:
            self.err.write(f"\x1b[{self._drawn}A\x1b[J")
            self._drawn = 0

    def _draw(self, lines):
        try:
            width = os.get_terminal_size(self.err.fileno()).columns
        except (OSError, ValueError):
            width = 80
        out = "".join(f"\r{line[:width - 1]}\x1b[K\n" for line in lines)
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        self.err.write(up + out)
        self.err.flush()
        self._drawn = len(lines)

    @staticmethod
    def ingest_line(st):
        line = (f"ingest {st['name']} <- {st['source']}  {st['state']:<10} "
                f"recv {st['received']}  appended {st['appended']}  acked "
                f"{st['acked']}  in flight {st['in_flight']}  rejected "
                f"{st['rejected']}")
        if st["state"] not in ("running",) and st["last_error"]:
            line += f"  ({st['last_error']})"
        return line

    @staticmethod
    def forward_line(st):
        ago = ("never" if st["last_success_ms"] is None else
               f"{max(0.0, time.time() - st['last_success_ms'] / 1e3):.1f}s"
               " ago")
        line = (f"forward {st['name']}  {st['state']:<8} sent "
                f"{st['sent_records']} ({_human(st['sent_bytes'])})  lag "
                f"{sum(st['lag'].values())}  retries {st['retries']}  dead "
                f"{st['dead_lettered']}  last ok {ago}")
        if st["state"] not in ("running",) and st["last_error"]:
            line += f"  ({st['last_error']})"
        return line

    # ---- status ------------------------------------------------------------
    def collect(self):
        """The status dict the endpoint serves."""
        log = self.log
        topics = {}
        for name in log.topics():
            try:
                topics[name] = log.topic(name).stats()
            except E.PylogError:
                continue
        return {"log": log.path, "sync": log.sync,
                "time_ms": time.time_ns() // 1_000_000,
                "ingests": {i.name: i.stats() for i in self.ingests},
                "forwarders": {f.name: f.stats() for f in self.forwarders},
                "topics": topics}

    # Short states between two refreshes show in counters: a retry means
    # the forwarder backed off, a new full count that the ingest was full,
    # a new connection that it was connecting.
    MISSED = {"forward": (("retries", "backoff"),),
              "ingest": (("full", "full"), ("connects", "connecting"))}

    def _transitions(self, kind, st):
        """The states st went through since the last refresh."""
        key = (kind, st["name"])
        prev = self._states.get(key)
        seen = []
        if prev is not None:
            state, counts = prev
            for field, missed in self.MISSED[kind]:
                grew = st.get(field, 0) > counts.get(field, 0)
                first = field == "connects" and counts.get(field, 0) == 0
                if grew and not first and missed not in (state, st["state"]):
                    seen.append(missed)
            if seen or st["state"] != state:
                seen.append(st["state"])
        elif st["state"] != "running":
            seen.append(st["state"])
        self._states[key] = (st["state"], {
            f: st.get(f, 0) for f, _ in self.MISSED[kind]})
        return seen

    def _refresh(self):
        stats = [("ingest", i.stats()) for i in self.ingests] + \
                [("forward", f.stats()) for f in self.forwarders]
        for kind, st in stats:
            for state in self._transitions(kind, st):
                why = (f": {st['last_error']}" if state != "running"
                       and st["last_error"] else "")
                if not self.tty or state == "failed":
                    self.say(f"{kind} {st['name']}: {state}{why}")
        if self.tty:
            self._draw([self.ingest_line(st) if kind == "ingest" else
                        self.forward_line(st) for kind, st in stats])

    # ---- lifecycle -----------------------------------------------------------
    def _on_signal(self, signum, frame):
        self._signals += 1
        self._stop.set()
        if self._signals > 1:
            raise KeyboardInterrupt  # cuts the shutdown's flush short

    def run(self):
        import pylog
        cfg = self.cfg
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.log = pylog.open(cfg.log, **cfg.open_options)
            try:
                self._build()
                self._start()
                self.say(f"running: log {self.log.path}, "
                         f"{len(self.ingests)} ingest(s), "
                         f"{len(self.forwarders)} forwarder(s)"
                         + (f", status at {self.status.url}" if self.status
                            else ""))
                while not self._stop.is_set():
                    self._refresh()
                    self._stop.wait(REFRESH_S)
                self._refresh()
                self._clear()
                self.say("stopping")
            finally:
                self._shutdown()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return 0

    def _build(self):
        cfg, log = self.cfg, self.log
        for name, opts in cfg.topics.items():
            try:
                log.topic(name, **opts)
            except E.InvalidConfigError as exc:
                raise cfg.error(f"topics.{name}", str(exc)) from None
        for spec in cfg.ingests:
            try:
                self.ingests.append(log.ingest(spec.topic, spec.source,
                                               **spec.options))
            except (E.InvalidConfigError, TypeError) as exc:
                raise cfg.error(spec.where, str(exc)) from None
        known = set(log.topics())
        for spec in cfg.forwards:
            names = [spec.topics] if isinstance(spec.topics, str) \
                else spec.topics
            for t in names:
                if t not in known:
                    raise cfg.error(
                        f"{spec.where}.topics",
                        f"no topic {t!r} in log {log.path}: declare it "
                        f"([topics.{t}]) or ingest into it")
        if cfg.max_bytes_per_s is not None:
            log.forwarders.max_bytes_per_s = cfg.max_bytes_per_s
        for spec in cfg.forwards:
            try:
                self.forwarders.append(log.forwarder(
                    spec.name, spec.topics, spec.sink, **spec.options))
            except (E.InvalidConfigError, E.InvalidTopicName,
                    TypeError) as exc:
                raise cfg.error(spec.where, str(exc)) from None
        if cfg.status is not None:
            host, port = cfg.status
            try:
                self.status = StatusServer(host, port, self.collect)
            except OSError as exc:
                raise E.PylogError(
                    f"status endpoint: cannot listen on {host}:{port}: "
                    f"{exc.strerror or exc}") from None

    def _start(self):
        for fw in self.forwarders:
            fw.start()
        for ingest in self.ingests:
            ingest.start()
        if self.status is not None:
            self.status.start()

    def _shutdown(self):
        """Ingests, forwarders (flushed, then stopped), status, log."""
        try:
            for ingest in self.ingests:
                if ingest.state != "created":
                    ingest.close()
            self._flush()
            for fw in self.forwarders:
                fw.close()
            for kind, objs in (("ingest", self.ingests),
                               ("forward", self.forwarders)):
                for o in objs:
                    st = o.stats()
                    if kind == "ingest":
                        self.say(f"ingest {st['name']}: {st['appended']} "
                                 f"appended, {st['acked']} acknowledged")
                    else:
                        self.say(f"forward {st['name']}: {st['sent_records']}"
                                 f" sent, lag {sum(st['lag'].values())}")
        finally:
            if self.status is not None:
                self.status.close()
            if self.log is not None:
                self.log.close()

    def _flush(self):
        """Give the running forwarders flush_timeout seconds together to
        upload what the log holds; a second signal ends the wait."""
        deadline = time.monotonic() + self.cfg.flush_timeout
        try:
            for fw in self.forwarders:
                if fw.state not in ("running", "backoff"):
                    continue
                try:
                    while not fw.flush(min(REFRESH_S, max(
                            0.0, deadline - time.monotonic()))):
                        self._refresh()
                        if time.monotonic() >= deadline:
                            self.say(f"forward {fw.name}: not all uploaded "
                                     f"within flush_timeout: the next start "
                                     f"sends the rest")
                            break
                except E.PylogError:
                    pass  # failed or stopped: its state says so
                self._refresh()
        except KeyboardInterrupt:
            self.say("second signal: not waiting for the forwarders")


def run(path, err=None, tty=None):
    """Run the config file at path until SIGTERM or SIGINT; the exit
    status. Raises ConfigError for a mistake in the file (exit status 2),
    PylogError for what keeps it from running."""
    from . import _config
    cfg = _config.load(path)
    try:
        return Daemon(cfg, err, tty).run()
    except ConfigError:
        raise
    finally:
        cfg.close()
