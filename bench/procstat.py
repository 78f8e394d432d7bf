"""What a process and a directory cost the machine, read from /proc and /sys.

Used by the gateway benchmarks (bench/edge.py) and bench/compare.py. Linux
only; every reader returns None where the kernel does not offer the file.

    fds()              open file descriptors of this process (/proc/self/fd)
    maps(prefix)       mappings of this process: count, and bytes of the
                       file-backed ones whose path starts with prefix, in
                       all and by subdirectory
    memory()           VmRSS, RssAnon, RssFile, VmHWM, VmSize in bytes
    io()               /proc/self/io counters (write_bytes, ...)
    allocated(path)    bytes allocated (st_blocks * 512) and apparent bytes
                       (st_size) of every file under path
    device_of(path)    the block device holding path, as /sys/dev/block/M:N
    sectors_written(dev)  512-byte sectors the device has written since boot
"""
import os

SECTOR = 512    # /sys/block/*/stat counts in 512-byte units on every device


def fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def maps(prefix=None):
    """{"maps": number of mappings, "mapped_bytes": bytes of the file-backed
    mappings whose path starts with prefix (all file-backed ones if None),
    "mapped_files": how many such mappings, "mapped_by_dir": those bytes
    by the first path component below prefix (e.g. "topics", "catalog")}."""
    n = nbytes = nfiles = 0
    by_dir = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                n += 1
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                path = parts[5].rstrip("\n")
                if not path.startswith("/"):
                    continue
                if prefix is not None and not path.startswith(prefix):
                    continue
                lo, hi = parts[0].split("-")
                size = int(hi, 16) - int(lo, 16)
                nbytes += size
                nfiles += 1
                if prefix is not None:
                    top = path[len(prefix):].lstrip("/").split("/", 1)[0]
                    by_dir[top] = by_dir.get(top, 0) + size
    except OSError:
        return {"maps": None, "mapped_bytes": None, "mapped_files": None,
                "mapped_by_dir": None}
    return {"maps": n, "mapped_bytes": nbytes, "mapped_files": nfiles,
            "mapped_by_dir": by_dir}


def memory():
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM",
                         "VmSize"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def io():
    """/proc/self/io: write_bytes counts the bytes this process caused to be
    sent to storage, charged when a page cache page is dirtied (a page that
    is written back and dirtied again counts again); cancelled_write_bytes
    the dirty bytes that were dropped before reaching storage (truncate,
    delete). rchar/wchar count read()/write() calls, cached or not."""
    out = {}
    try:
        with open("/proc/self/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except OSError:
        return None
    return out


def allocated(path):
    """{"allocated": sum of st_blocks * 512, "apparent": sum of st_size,
    "files": count} over every file under path (directories included in
    allocated, since a directory's blocks are disk too)."""
    alloc = apparent = files = 0
    for root, dirs, names in os.walk(path):
        for name in dirs + names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue        # deleted while we walked
            alloc += st.st_blocks * 512
            if name in names:
                apparent += st.st_size
                files += 1
    return {"allocated": alloc, "apparent": apparent, "files": files}


def device_of(path):
    """(sysfs directory of the block device holding path, name) or
    (None, reason) when path is not on a block device (tmpfs, overlay)."""
    st = os.stat(path)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    sysdir = f"/sys/dev/block/{major}:{minor}"
    if not os.path.exists(os.path.join(sysdir, "stat")):
        return None, f"device {major}:{minor} of {path} is not a block device"
    return sysdir, os.path.basename(os.path.realpath(sysdir))


def sectors_written(sysdir):
    """Sectors written by the device (field 7 of its stat file): every
    writer on the machine, the file system's journal and metadata
    included."""
    if sysdir is None:
        return None
    try:
        with open(os.path.join(sysdir, "stat")) as f:
            return int(f.read().split()[6])
    except (OSError, IndexError, ValueError):
        return None


def snapshot(prefix=None):
    """fds, maps, mapped bytes under prefix and memory, in one dict."""
    out = {"fds": fds()}
    out.update(maps(prefix))
    out.update(memory())
    return out
