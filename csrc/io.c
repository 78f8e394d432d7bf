/*
 * io.c -- the I/O layer: every file-system call of the core goes through
 * here, so that tests can make any of them fail (pl_fault_set).
 *
 * Each wrapper returns 0 (or a fd / byte count) on success and -1 with errno
 * set on failure, like the call it wraps. A fault armed for an op makes the
 * chosen call fail with the chosen errno before it touches the file (or,
 * for a short write, after writing the first short_bytes bytes).
 *
 * Maps (struct pl_map) are refcounted: the file cache (fcache.c) owns one
 * reference while it keeps a map, and every reader that hands bytes to
 * Python owns one more. munmap happens at the last unref only, so a
 * zero-copy view never dangles (invariant 8 in topic.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

/* ---- fault injection ----------------------------------------------------- */
typedef struct fault {
    _Atomic int64_t countdown; /* calls left before the first failure; 0 off */
    _Atomic int64_t remaining; /* failures left once triggered (-1: forever) */
    atomic_int err;
    _Atomic int64_t short_bytes;
    atomic_int firing;
} fault;

static fault faults[PL_IO_NOPS];
static atomic_int any_fault;

void pl_fault_set(int op, int64_t nth, int err, int64_t count,
                  int64_t short_bytes) {
    if (op < 0 || op >= PL_IO_NOPS || nth < 1 || count == 0) return;
    fault *f = &faults[op];
    atomic_store(&f->firing, 0);
    atomic_store(&f->err, err);
    atomic_store(&f->short_bytes, short_bytes);
    atomic_store(&f->remaining, count);
    atomic_store(&f->countdown, nth);
    atomic_store(&any_fault, 1);
}

void pl_fault_clear(void) {
    atomic_store(&any_fault, 0);
    for (int i = 0; i < PL_IO_NOPS; i++) {
        atomic_store(&faults[i].countdown, 0);
        atomic_store(&faults[i].firing, 0);
        atomic_store(&faults[i].remaining, 0);
    }
}

/* Returns the errno to fail this call with, or 0. *shortp gets the bytes a
 * short write should still write (-1: none). */
static int fault_check(int op, int64_t *shortp) {
    if (shortp) *shortp = -1;
    if (!atomic_load_explicit(&any_fault, memory_order_relaxed)) return 0;
    fault *f = &faults[op];
    if (!atomic_load(&f->firing)) {
        int64_t c = atomic_load(&f->countdown);
        if (c <= 0) return 0;
        if (atomic_fetch_sub(&f->countdown, 1) != 1) return 0;
        atomic_store(&f->firing, 1);
    }
    int64_t r = atomic_load(&f->remaining);
    if (r == 0) {
        atomic_store(&f->firing, 0);
        return 0;
    }
    if (r > 0 && atomic_fetch_sub(&f->remaining, 1) == 1)
        atomic_store(&f->firing, 0);
    if (shortp) *shortp = atomic_load(&f->short_bytes);
    return atomic_load(&f->err);
}

#define FAULT(op)                      \
    do {                               \
        int e_ = fault_check(op, NULL); \
        if (e_) {                      \
            errno = e_;                \
            return -1;                 \
        }                              \
    } while (0)

/* ---- files ------------------------------------------------------------------ */
int pl_io_open(const char *path, int flags, int mode) {
    FAULT(PL_IO_OPEN);
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

int pl_io_close(int fd) { return fd >= 0 ? close(fd) : 0; }

#ifndef IOV_MAX
#define IOV_MAX 16 /* _XOPEN_IOV_MAX, the least POSIX allows */
#endif
/* Pieces per pwritev call: at most IOV_MAX, on the stack. */
#define PL_IOV_CHUNK (IOV_MAX < 64 ? IOV_MAX : 64)

/* Write the first `limit` bytes of the pieces (all of them if there are
 * fewer) from off: as many pwritev calls as partial writes, EINTR and
 * IOV_MAX need. The caller's array is not changed. */
static int pwritev_upto(int fd, const struct iovec *iov, int iovcnt,
                        off_t off, size_t limit) {
    int i = 0;       /* the first piece not fully written */
    size_t done = 0; /* bytes of iov[i] already written */
    while (limit > 0) {
        struct iovec v[PL_IOV_CHUNK];
        int k = 0;
        size_t want = 0;
        for (int j = i; j < iovcnt && k < PL_IOV_CHUNK && want < limit;
             j++) {
            size_t from = j == i ? done : 0;
            size_t n = iov[j].iov_len - from;
            if (n == 0) continue;
            if (n > limit - want) n = limit - want;
            v[k].iov_base = (uint8_t *)iov[j].iov_base + from;
            v[k].iov_len = n;
            k++;
            want += n;
        }
        if (k == 0) break; /* nothing left but empty pieces */
        ssize_t w = pwritev(fd, v, k, off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        off += w;
        limit -= (size_t)w;
        /* Step over what was written: whole pieces, then part of one. */
        for (size_t left = (size_t)w; left > 0;) {
            size_t rest = iov[i].iov_len - done;
            if (left < rest) {
                done += left;
                left = 0;
            } else {
                left -= rest;
                i++;
                done = 0;
            }
        }
    }
    return 0;
}

int pl_io_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off) {
    int64_t shortb;
    int e = fault_check(PL_IO_WRITE, &shortb);
    if (e) {
        size_t n = 0;
        for (int j = 0; j < iovcnt; j++) n += iov[j].iov_len;
        if (shortb > 0 && (size_t)shortb < n)
            (void)pwritev_upto(fd, iov, iovcnt, off, (size_t)shortb);
        errno = e;
        return -1;
    }
    return pwritev_upto(fd, iov, iovcnt, off, SIZE_MAX);
}

int pl_io_pwrite(int fd, const void *buf, size_t n, off_t off) {
    struct iovec v = {(void *)buf, n};
    return pl_io_pwritev(fd, &v, 1, off);
}

int pl_io_pread(int fd, void *buf, size_t n, off_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = ENODATA;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

/* The write point of an append: the batch is already built in the map at
 * dst. A fault makes it fail; a short write keeps only the first
 * short_bytes bytes (the rest is zeroed, as if the copy had been cut). */
int pl_io_write_map(uint8_t *dst, size_t n) {
    int64_t shortb;
    int e = fault_check(PL_IO_WRITE, &shortb);
    if (e) {
        size_t keep = shortb > 0 && (size_t)shortb < n ? (size_t)shortb : 0;
        memset(dst + keep, 0, n - keep);
        errno = e;
        return -1;
    }
    return 0;
}

int pl_io_fdatasync(int fd) {
    FAULT(PL_IO_FSYNC);
    int r;
    do {
        r = fdatasync(fd);
    } while (r < 0 && errno == EINTR);
    return r;
}

int pl_io_fsync_dir(const char *dir) {
    FAULT(PL_IO_FSYNC);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

/* Reserve real blocks for [off, off + len) so that writes through a map
 * cannot meet ENOSPC (which would arrive as SIGBUS); the file grows to
 * off + len if it is shorter. Where the file system has no fallocate, the
 * range past the file's end is written with zeros instead. */
int pl_io_fallocate(int fd, off_t off, off_t len) {
    FAULT(PL_IO_FALLOCATE);
    int r;
    do {
        r = fallocate(fd, 0, off, len);
    } while (r < 0 && errno == EINTR);
    if (r == 0 || (errno != EOPNOTSUPP && errno != ENOSYS)) return r;
    int64_t size;
    if (pl_io_fstat_size(fd, &size) < 0) return -1;
    static const uint8_t zeros[65536];
    for (off_t o = size > off ? size : off; o < off + len;) {
        size_t n = (size_t)(off + len - o) < sizeof zeros
                       ? (size_t)(off + len - o) : sizeof zeros;
        if (pl_io_pwrite(fd, zeros, n, o) < 0) return -1;
        o += (off_t)n;
    }
    return 0;
}

int pl_io_ftruncate(int fd, off_t len) {
    int r;
    do {
        r = ftruncate(fd, len);
    } while (r < 0 && errno == EINTR);
    return r;
}

int pl_io_fstat_size(int fd, int64_t *size) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -1;
    *size = (int64_t)st.st_size;
    return 0;
}

int pl_io_rename(const char *from, const char *to) { return rename(from, to); }
int pl_io_unlink(const char *path) { return unlink(path); }

/* ---- maps ------------------------------------------------------------------- */
pl_map *pl_io_map(int fd, int64_t off, int64_t len, int64_t vlen,
                  int writable) {
    pl_map *m = calloc(1, sizeof *m);
    if (!m) {
        errno = ENOMEM;
        return NULL;
    }
    if (vlen < len) vlen = len;
    if (vlen < 1) vlen = 1;
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *p = mmap(NULL, (size_t)vlen, prot, MAP_SHARED, fd, off);
    if (p == MAP_FAILED) {
        int e = errno;
        free(m);
        errno = e;
        return NULL;
    }
    m->base = p;
    m->len = len;
    m->vlen = vlen;
    m->off = off;
    atomic_init(&m->refs, 1);
    atomic_init(&m->dead, 0);
    return m;
}

void pl_map_ref(pl_map *m) {
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void pl_map_unref(pl_map *m) {
    if (!m) return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        munmap(m->base, (size_t)m->vlen);
        free(m->idx);
        free(m);
    }
}

void pl_map_kill(pl_map *m) {
    if (!m) return;
    atomic_store(&m->dead, 1);
    pl_map_unref(m);
}

const uint8_t *pl_map_base(const pl_map *m) { return m->base; }
int64_t pl_map_len(const pl_map *m) { return m->len; }
int pl_map_dead(const pl_map *m) { return atomic_load(&m->dead); }
