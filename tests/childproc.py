"""Running pylog in a child process, for the tests that damage a log or
kill a process: a damaged file must never kill the interpreter, so the
code that opens it runs in a child whose exit the test inspects (a signal
death fails the test instead of killing pytest)."""
import json
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + sys.path)
    env.pop("PYLOG_DEBUG", None)
    return env


def run(args, timeout=300, **kw):
    """Run `python ARGS...` and return the CompletedProcess (bytes output).
    A child that dies on a signal fails the test, naming the signal."""
    proc = subprocess.run([sys.executable, *args], capture_output=True,
                          timeout=timeout, env=_env(), **kw)
    if proc.returncode < 0:
        raise AssertionError(
            f"child {args!r} was killed by "
            f"{signal.Signals(-proc.returncode).name}:\n"
            f"{proc.stderr.decode(errors='replace')[-4000:]}")
    return proc


def run_json(args, timeout=300):
    """Run a child that prints one JSON document as its last stdout line
    and exits 0; return the document."""
    proc = run(args, timeout=timeout)
    err = proc.stderr.decode(errors="replace")[-4000:]
    assert proc.returncode == 0, (
        f"child {args!r} exited with status {proc.returncode}:\n{err}")
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, f"child {args!r} printed nothing:\n{err}"
    return json.loads(lines[-1])


def run_killed(args, timeout=300):
    """Run a child that ends by SIGKILLing itself; fail if it ended any
    other way."""
    proc = subprocess.run([sys.executable, *args], capture_output=True,
                          timeout=timeout, env=_env())
    assert proc.returncode == -signal.SIGKILL, (
        f"child {args!r} ended with status {proc.returncode}, not SIGKILL:\n"
        f"{proc.stderr.decode(errors='replace')[-4000:]}")
    return proc


def build(args, killed, timeout=300):
    """Run a child that builds a log and prints one JSON document as its
    last stdout line, then exits 0 or (killed) SIGKILLs itself; return the
    document."""
    if not killed:
        return run_json(args, timeout=timeout)
    proc = run_killed(args, timeout=timeout)
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, f"child {args!r} printed nothing before its SIGKILL"
    return json.loads(lines[-1])


def verify(path, timeout=300):
    """`pylog DIR verify`: (exit status, stdout + stderr as text). Never
    killed by a signal, never a traceback."""
    proc = run(["-m", "pylog", os.fspath(path), "verify"], timeout=timeout)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert "Traceback" not in out, out
    return proc.returncode, out
