/*
 * crashsim.c -- the recording half of the power-cut simulation
 * (docs/TESTING.md), in the spirit of SQLite's src/test6.c.
 *
 * Built by tests/crashsim/__init__.py with the system C compiler and loaded
 * with LD_PRELOAD into a child process. It interposes the libc calls that
 * make file data or names durable and records, outside the directory under
 * test, what a power cut could not take away. After the child is killed the
 * harness (tests/crashsim/__init__.py) replays the record and builds the
 * directory as a power cut would have left it.
 *
 * Environment (both required, or the layer stays inactive):
 *   CRASHSIM_ROOT    the directory under test; only names below it are
 *                    recorded, only files below it are shadowed
 *   CRASHSIM_SHADOW  where the record goes (same file system as ROOT:
 *                    the layer makes hard links)
 *
 * Layout of SHADOW:
 *   journal      one line per namespace operation and durability point
 *   live/INO     a hard link to each regular file below ROOT that was
 *                created, opened for writing, truncated, unlinked or
 *                renamed over: it keeps the inode alive (and its number
 *                unique) until the cut, and gives the harness the file's
 *                current content, page cache included, whatever names it
 *                has lost. A file without one is unchanged since the start
 *                and still has its name.
 *   data/INO     the durable content of file INO: its size is the durable
 *                size. Created empty for a new file; for a file present at
 *                start, a copy of its content taken before it could change
 *                (at its first open for writing or truncation). Absent: the
 *                file never changed, its content is its durable content.
 *
 * What makes data durable (the shadow copy is taken BEFORE the real call:
 * a sync covers at least what was written before it was called):
 *   fsync, fdatasync          the whole file and its size
 *   msync(MS_SYNC)            the mapped range of a MAP_SHARED file map
 *   write/pwrite/...(v)(2) through a descriptor with O_DSYNC or O_SYNC:
 *                             exactly the bytes written (after the call)
 *   sync, syncfs              every file and every name
 * Writes themselves are not followed: the shadow copy compares the file's
 * current content (read through live/INO, so writes through a MAP_SHARED
 * map count) with data/INO page by page and writes the pages that differ.
 * sync_file_range is not interposed: it makes nothing durable (it flushes
 * neither metadata nor the disk cache), so the model treats it as a no-op.
 *
 * Content that could change: an open for writing (or with O_TRUNC) and
 * truncate of a file below ROOT first keep its pre-image (data/INO, copied
 * whole through a temporary name) and a live link; an unlink or a rename
 * over a file first keeps a live link. The harness then need not copy the
 * whole directory per child.
 *
 * Names: creating a file (open/openat/creat with O_CREAT, every symbol
 * variant), mkdir, rename, unlink and rmdir below ROOT are journaled. They
 * become durable only when a directory they touch is fsync'ed (the harness
 * decides which; this layer only records). link, symlink, mknod, O_TMPFILE
 * links and RENAME_EXCHANGE below ROOT are not modeled and journaled as
 * errors ("!"), so a test cannot pass on an unmodeled operation.
 *
 * Journal lines (text, one write(2) each; names are %XX-escaped outside
 * [A-Za-z0-9._-]; DIR and INO are inode numbers, 0 = outside ROOT):
 *   "+ C DIR NAME"                  about to create file NAME in DIR
 *   "+ M DIR NAME"                  about to make directory NAME in DIR
 *   "+ R DIR NAME DIR2 NAME2 INO"   about to rename INO
 *   "+ U DIR NAME INO"              about to unlink or rmdir INO
 *   "= INO"                         it succeeded (INO: what was created)
 *   "- ERRNO"                       it failed: nothing changed
 *   "D INO"                         fsync of directory INO returned
 *   "S"                             sync or syncfs returned
 *   "! WHAT"                        an operation the model cannot represent
 * Namespace operations and directory syncs are serialized by ns_mu, so "="
 * or "-" always answers the "+" just before it, and the journal order is
 * the order of the operations. An operation whose "+" has no answer was in
 * flight at the cut.
 *
 * Not modeled: torn writes inside a page (a page is kept or lost whole),
 * a failing fsync (the shadow copy is taken before the call), several
 * processes writing one ROOT, hard links and symlinks.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096
#define CHUNK (64 * 1024) /* bytes compared per read; a multiple of PAGE */
#define MAXMAPS 4096      /* MAP_SHARED writable file maps followed at once */
#define NAMEBUF (NAME_MAX * 3 + 1)

/* ---- the real functions ---------------------------------------------------- */
/* Resolved on first use with dlsym(RTLD_NEXT): libraries loaded before the
 * constructor runs may already call them. */
static void *real_fn(void **slot, const char *name) {
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(RTLD_NEXT, name);
        if (!p) {
            static const char msg[] = "crashsim: a libc symbol is missing\n";
            (void)syscall(SYS_write, 2, msg, sizeof msg - 1);
            abort();
        }
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}
#define REAL(type, name) \
    ((type)real_fn(&real_##name, #name))
#define SLOT(name) static void *real_##name

SLOT(openat); SLOT(mkdirat); SLOT(renameat); SLOT(renameat2);
SLOT(unlinkat); SLOT(linkat); SLOT(link); SLOT(symlink); SLOT(symlinkat);
SLOT(mknod); SLOT(mknodat); SLOT(fsync); SLOT(fdatasync); SLOT(msync);
SLOT(sync); SLOT(syncfs); SLOT(write); SLOT(pwrite); SLOT(pwrite64);
SLOT(writev); SLOT(pwritev); SLOT(pwritev64); SLOT(pwritev2);
SLOT(mmap); SLOT(mmap64); SLOT(munmap); SLOT(mremap); SLOT(truncate);
SLOT(truncate64);

typedef int (*openat_t)(int, const char *, int, ...);
typedef int (*mkdirat_t)(int, const char *, mode_t);
typedef int (*renameat_t)(int, const char *, int, const char *);
typedef int (*renameat2_t)(int, const char *, int, const char *, unsigned);
typedef int (*unlinkat_t)(int, const char *, int);
typedef int (*linkat_t)(int, const char *, int, const char *, int);
typedef int (*link_t)(const char *, const char *);
typedef int (*symlinkat_t)(const char *, int, const char *);
typedef int (*mknod_t)(const char *, mode_t, dev_t);
typedef int (*mknodat_t)(int, const char *, mode_t, dev_t);
typedef int (*fd_t)(int);
typedef int (*truncate_t)(const char *, off_t);
typedef int (*msync_t)(void *, size_t, int);
typedef void (*sync_t)(void);
typedef ssize_t (*write_t)(int, const void *, size_t);
typedef ssize_t (*pwrite_t)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_t)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_t)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev2_t)(int, const struct iovec *, int, off_t, int);
typedef void *(*mmap_t)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_t)(void *, size_t);
typedef void *(*mremap_t)(void *, size_t, size_t, int, ...);

/* ---- state ------------------------------------------------------------------ */
static char root[PATH_MAX];
static size_t root_len;
static dev_t root_dev;
static char shadow[PATH_MAX];
static int journal_fd = -1;
static int active; /* set once the constructor has read the environment */

/* Namespace operations + their journal lines, and directory syncs. */
static pthread_mutex_t ns_mu = PTHREAD_MUTEX_INITIALIZER;
/* Shadow copies (and the buffers they use). */
static pthread_mutex_t data_mu = PTHREAD_MUTEX_INITIALIZER;
/* The map table. Taken before data_mu when both are needed. */
static pthread_mutex_t map_mu = PTHREAD_MUTEX_INITIALIZER;

static struct fmap {
    uintptr_t addr;
    size_t len;
    ino_t ino;
    off_t off;
} maps[MAXMAPS];
static int nmaps; /* read without map_mu only as a hint */

__attribute__((constructor)) static void crashsim_init(void) {
    const char *r = getenv("CRASHSIM_ROOT"), *s = getenv("CRASHSIM_SHADOW");
    if (!r || !s) return;
    struct stat st;
    if (!realpath(r, root) || stat(root, &st) < 0 || !realpath(s, shadow)) {
        fprintf(stderr, "crashsim: cannot resolve CRASHSIM_ROOT %s or "
                "CRASHSIM_SHADOW %s: %s\n", r, s, strerror(errno));
        _exit(97);
    }
    root_len = strlen(root);
    root_dev = st.st_dev;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/journal", shadow);
    journal_fd = REAL(openat_t, openat)(
        AT_FDCWD, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (journal_fd < 0) {
        fprintf(stderr, "crashsim: cannot open %s: %s\n", path,
                strerror(errno));
        _exit(97);
    }
    active = 1;
}

/* ---- journal ---------------------------------------------------------------- */
static void jline(const char *fmt, ...) {
    char buf[4 * NAMEBUF + 128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    int e = errno;
    (void)REAL(write_t, write)(journal_fd, buf, (size_t)n);
    errno = e;
}

static void escape(char *out, const char *name) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *name; name++) {
        unsigned char c = (unsigned char)*name;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-') {
            *out++ = (char)c;
        } else {
            *out++ = '%';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out = 0;
}

/* ---- where a path is ---------------------------------------------------------- */
/* Whether the open directory dfd is ROOT or below it. */
static int dirfd_in_root(int dfd, ino_t *ino) {
    struct stat st;
    if (fstat(dfd, &st) < 0 || st.st_dev != root_dev || !S_ISDIR(st.st_mode))
        return 0;
    char link[64], p[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", dfd);
    ssize_t n = readlink(link, p, sizeof p - 1);
    if (n < 0) return 0;
    p[n] = 0;
    if (strncmp(p, root, root_len) != 0 ||
        (p[root_len] != '/' && p[root_len] != 0))
        return 0;
    *ino = st.st_ino;
    return 1;
}

/* Whether the directory holding `path` (relative to dirfd) is ROOT or below
 * it. If so, *dino gets its inode and `name` the escaped last component. */
static int locate(int dirfd, const char *path, ino_t *dino, char *name) {
    if (!active || !path) return 0;
    size_t len = strlen(path);
    if (len == 0 || len >= PATH_MAX) return 0;
    char buf[PATH_MAX];
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = 0;
    char *slash = strrchr(buf, '/');
    const char *dir = ".", *last = buf;
    if (slash) {
        last = slash + 1;
        if (slash == buf) {
            dir = "/";
        } else {
            *slash = 0;
            dir = buf;
        }
    }
    if (!*last || !strcmp(last, ".") || !strcmp(last, "..")) return 0;
    int dfd = REAL(openat_t, openat)(dirfd, dir,
                                     O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return 0;
    int in = dirfd_in_root(dfd, dino);
    close(dfd);
    if (in) escape(name, last);
    return in;
}

/* ---- shadow copies ---------------------------------------------------------------- */
static char cur_buf[CHUNK], old_buf[CHUNK]; /* under data_mu */

static ssize_t pread_full(int fd, char *buf, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* SHADOW/dir/INO */
static void shadow_path(char *out, size_t n, const char *dir, ino_t ino) {
    snprintf(out, n, "%s/%s/%lu", shadow, dir, (unsigned long)ino);
}

/* Make [from, to) of file `ino` durable in the shadow file dp; to < 0:
 * the whole file and its size. Caller holds data_mu. Files with no
 * live/INO have not changed since the start and are left alone. */
static void shadow_copy_to(ino_t ino, const char *dp, off_t from, off_t to) {
    char lp[PATH_MAX + 64];
    shadow_path(lp, sizeof lp, "live", ino);
    int e = errno;
    openat_t op = REAL(openat_t, openat);
    int lf = op(AT_FDCWD, lp, O_RDONLY | O_CLOEXEC);
    if (lf < 0) {
        errno = e;
        return;
    }
    int df = op(AT_FDCWD, dp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat ls, ds;
    if (df < 0 || fstat(lf, &ls) < 0 || fstat(df, &ds) < 0) {
        jline("! shadow-copy %lu: %s", (unsigned long)ino, strerror(errno));
        goto out;
    }
    off_t size = ls.st_size, dsize = ds.st_size;
    int whole = to < 0;
    if (whole) {
        from = 0;
        to = size;
    } else if (to > size) {
        to = size;
    }
    pwrite_t pw = REAL(pwrite_t, pwrite);
    for (off_t off = from & ~(off_t)(PAGE - 1); off < to; off += CHUNK) {
        size_t n = (size_t)(to - off < CHUNK ? to - off : CHUNK);
        ssize_t got = pread_full(lf, cur_buf, n, off);
        if (got < (ssize_t)n) n = got < 0 ? 0 : (size_t)got;
        ssize_t had = off < dsize ? pread_full(df, old_buf, n, off) : 0;
        if (had < 0) had = 0;
        for (size_t p = 0; p < n; p += PAGE) {
            off_t lo = off + (off_t)p, hi = lo + PAGE;
            if (hi > off + (off_t)n) hi = off + (off_t)n;
            if (lo < from) lo = from;
            if (lo >= hi) continue;
            size_t at = (size_t)(lo - off), k = (size_t)(hi - lo);
            if (at + k <= (size_t)had &&
                memcmp(cur_buf + at, old_buf + at, k) == 0)
                continue;
            if (pw(df, cur_buf + at, k, lo) != (ssize_t)k)
                jline("! shadow-write %lu: %s", (unsigned long)ino,
                      strerror(errno));
        }
    }
    if (whole && ftruncate(df, size) < 0)
        jline("! shadow-truncate %lu: %s", (unsigned long)ino,
              strerror(errno));
out:
    if (df >= 0) close(df);
    close(lf);
    errno = e;
}

/* ... in data/INO, in place: a copy cut short by the kill leaves some
 * pages new, as a sync cut short by a power cut would. */
static void shadow_copy(ino_t ino, off_t from, off_t to) {
    char dp[PATH_MAX + 64];
    shadow_path(dp, sizeof dp, "data", ino);
    shadow_copy_to(ino, dp, from, to);
}

static void shadow_copy_locked(ino_t ino, off_t from, off_t to) {
    pthread_mutex_lock(&data_mu);
    shadow_copy(ino, from, to);
    pthread_mutex_unlock(&data_mu);
}

/* Keep inode st->st_ino (the regular file at dirfd/path) alive in live/,
 * so that its content is there for the harness whatever happens to its
 * names. Caller holds ns_mu. */
static void keep_inode(int dirfd, const char *path, const struct stat *st) {
    char lp[PATH_MAX + 64];
    shadow_path(lp, sizeof lp, "live", st->st_ino);
    int e = errno;
    if (REAL(linkat_t, linkat)(dirfd, path, AT_FDCWD, lp, 0) < 0 &&
        errno != EEXIST)
        jline("! live link %s: %s", lp, strerror(errno));
    errno = e;
}

/* The regular file at dirfd/path is about to change: unless its durable
 * content is already recorded (data/INO exists: created in this run, or
 * kept before), record its current content as durable, and keep its
 * inode. Caller holds ns_mu. */
static void keep_content(int dirfd, const char *path, const struct stat *st) {
    char dp[PATH_MAX + 64], tmp[PATH_MAX + 80];
    shadow_path(dp, sizeof dp, "data", st->st_ino);
    if (access(dp, F_OK) == 0) return;
    keep_inode(dirfd, path, st);
    /* Whole or not at all: a partial pre-image would pass for a durable
     * size smaller than the file's. */
    snprintf(tmp, sizeof tmp, "%s.tmp", dp);
    pthread_mutex_lock(&data_mu);
    shadow_copy_to(st->st_ino, tmp, 0, -1);
    int e = errno;
    if (REAL(renameat_t, renameat)(AT_FDCWD, tmp, AT_FDCWD, dp) < 0)
        jline("! %s: %s", dp, strerror(errno));
    errno = e;
    pthread_mutex_unlock(&data_mu);
}

/* A regular file below ROOT's file system: its inode, or 0. */
static ino_t file_ino(int fd) {
    struct stat st;
    int e = errno;
    ino_t ino = fstat(fd, &st) == 0 && st.st_dev == root_dev &&
                S_ISREG(st.st_mode) ? st.st_ino : 0;
    errno = e;
    return ino;
}

/* After a write of n bytes at off (off < 0: ending at the file position)
 * through fd: if fd is O_DSYNC (O_SYNC includes it), those bytes are
 * durable. */
static void after_write(int fd, off_t off, ssize_t n) {
    if (!active || n <= 0) return;
    int e = errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DSYNC)) {
        ino_t ino = file_ino(fd);
        if (ino) {
            if (off < 0) off = lseek(fd, 0, SEEK_CUR) - n;
            if (off >= 0) shadow_copy_locked(ino, off, off + n);
        }
    }
    errno = e;
}

/* Everything below ROOT becomes durable (sync, syncfs). */
static void all_durable_begin(void) {
    pthread_mutex_lock(&ns_mu);
    pthread_mutex_lock(&data_mu);
    char lp[PATH_MAX + 16];
    snprintf(lp, sizeof lp, "%s/live", shadow);
    DIR *d = opendir(lp);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        shadow_copy((ino_t)strtoul(de->d_name, NULL, 10), 0, -1);
    }
    if (d) closedir(d);
    pthread_mutex_unlock(&data_mu);
}

static void all_durable_end(void) {
    jline("S");
    pthread_mutex_unlock(&ns_mu);
}

/* ---- data durability ------------------------------------------------------------ */
static int sync_fd(int fd, fd_t real) {
    if (!active) return real(fd);
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_dev != root_dev) return real(fd);
    if (S_ISDIR(st.st_mode)) {
        ino_t dino;
        pthread_mutex_lock(&ns_mu);
        int r = real(fd);
        int e = errno;
        if (r == 0 && dirfd_in_root(fd, &dino)) jline("D %lu",
                                                      (unsigned long)dino);
        pthread_mutex_unlock(&ns_mu);
        errno = e;
        return r;
    }
    if (S_ISREG(st.st_mode)) shadow_copy_locked(st.st_ino, 0, -1);
    return real(fd);
}

int fsync(int fd) { return sync_fd(fd, REAL(fd_t, fsync)); }
int fdatasync(int fd) { return sync_fd(fd, REAL(fd_t, fdatasync)); }

void sync(void) {
    if (active) all_durable_begin();
    REAL(sync_t, sync)();
    if (active) all_durable_end();
}

int syncfs(int fd) {
    struct stat st;
    int all = active && fstat(fd, &st) == 0 && st.st_dev == root_dev;
    if (all) all_durable_begin();
    int r = REAL(fd_t, syncfs)(fd);
    if (all) {
        int e = errno;
        all_durable_end();
        errno = e;
    }
    return r;
}

int msync(void *addr, size_t len, int flags) {
    if (active && (flags & MS_SYNC) && __atomic_load_n(&nmaps,
                                                        __ATOMIC_RELAXED)) {
        uintptr_t a = (uintptr_t)addr, b = a + len;
        pthread_mutex_lock(&map_mu);
        for (int i = 0; i < nmaps; i++) {
            struct fmap *m = &maps[i];
            uintptr_t lo = a > m->addr ? a : m->addr;
            uintptr_t hi = b < m->addr + m->len ? b : m->addr + m->len;
            if (lo < hi)
                shadow_copy_locked(m->ino, m->off + (off_t)(lo - m->addr),
                                   m->off + (off_t)(hi - m->addr));
        }
        pthread_mutex_unlock(&map_mu);
    }
    return REAL(msync_t, msync)(addr, len, flags);
}

/* ---- maps (for msync) ---------------------------------------------------------- */
static void map_add(void *p, size_t len, int prot, int flags, int fd,
                    off_t off) {
    if (!active || p == MAP_FAILED || fd < 0 || !(flags & MAP_SHARED) ||
        !(prot & PROT_WRITE) || (flags & MAP_ANONYMOUS))
        return;
    ino_t ino = file_ino(fd);
    if (!ino) return;
    pthread_mutex_lock(&map_mu);
    if (nmaps < MAXMAPS) {
        maps[nmaps] = (struct fmap){(uintptr_t)p, len, ino, off};
        __atomic_store_n(&nmaps, nmaps + 1, __ATOMIC_RELAXED);
    } else {
        jline("! more than %d shared file maps", MAXMAPS);
    }
    pthread_mutex_unlock(&map_mu);
}

/* Forget the maps that overlap [addr, addr+len): a partly unmapped map is
 * forgotten whole, so a later msync of its rest counts as not durable
 * (pessimistic, never optimistic). */
static void map_drop(void *addr, size_t len) {
    if (!__atomic_load_n(&nmaps, __ATOMIC_RELAXED)) return;
    uintptr_t a = (uintptr_t)addr, b = a + len;
    pthread_mutex_lock(&map_mu);
    for (int i = 0; i < nmaps;) {
        if (maps[i].addr < b && a < maps[i].addr + maps[i].len) {
            maps[i] = maps[nmaps - 1];
            __atomic_store_n(&nmaps, nmaps - 1, __ATOMIC_RELAXED);
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&map_mu);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    void *p = REAL(mmap_t, mmap)(addr, len, prot, flags, fd, off);
    map_add(p, len, prot, flags, fd, off);
    return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd,
             off_t off) {
    void *p = REAL(mmap_t, mmap64)(addr, len, prot, flags, fd, off);
    map_add(p, len, prot, flags, fd, off);
    return p;
}

int munmap(void *addr, size_t len) {
    int r = REAL(munmap_t, munmap)(addr, len);
    if (r == 0) map_drop(addr, len);
    return r;
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...) {
    void *want = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        want = va_arg(ap, void *);
        va_end(ap);
    }
    void *p = REAL(mremap_t, mremap)(old, old_len, new_len, flags, want);
    if (p != MAP_FAILED && __atomic_load_n(&nmaps, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&map_mu);
        for (int i = 0; i < nmaps; i++)
            if (maps[i].addr == (uintptr_t)old && maps[i].len == old_len) {
                maps[i].addr = (uintptr_t)p;
                maps[i].len = new_len;
            }
        pthread_mutex_unlock(&map_mu);
    }
    return p;
}

/* ---- writes through O_DSYNC descriptors ---------------------------------------- */
ssize_t write(int fd, const void *buf, size_t n) {
    ssize_t r = REAL(write_t, write)(fd, buf, n);
    after_write(fd, -1, r);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    ssize_t r = REAL(pwrite_t, pwrite)(fd, buf, n, off);
    after_write(fd, off, r);
    return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    ssize_t r = REAL(pwrite_t, pwrite64)(fd, buf, n, off);
    after_write(fd, off, r);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    ssize_t r = REAL(writev_t, writev)(fd, iov, cnt);
    after_write(fd, -1, r);
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    ssize_t r = REAL(pwritev_t, pwritev)(fd, iov, cnt, off);
    after_write(fd, off, r);
    return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    ssize_t r = REAL(pwritev_t, pwritev64)(fd, iov, cnt, off);
    after_write(fd, off, r);
    return r;
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off,
                 int flags) {
    ssize_t r = REAL(pwritev2_t, pwritev2)(fd, iov, cnt, off, flags);
    /* off -1: at the file position; RWF_DSYNC/RWF_SYNC: durable too. */
    if (r > 0 && (flags & (RWF_DSYNC | RWF_SYNC))) {
        ino_t ino = file_ino(fd);
        off_t at = off >= 0 ? off : lseek(fd, 0, SEEK_CUR) - r;
        if (active && ino && at >= 0) shadow_copy_locked(ino, at, at + r);
    } else {
        after_write(fd, off, r);
    }
    return r;
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off,
                    int flags) {
    return pwritev2(fd, iov, cnt, off, flags);
}

/* ---- names ---------------------------------------------------------------------- */
/* Answer the "+" line of the operation that returned r (with "= 0" or
 * "- ERRNO") and release ns_mu; errno is kept. */
static int answer_unlock(int r) {
    int e = errno;
    if (r == 0)
        jline("= 0");
    else
        jline("- %d", e);
    pthread_mutex_unlock(&ns_mu);
    errno = e;
    return r;
}

/* Release ns_mu after an operation that wrote no "+" line. */
static int unlock_keep_errno(int r) {
    int e = errno;
    pthread_mutex_unlock(&ns_mu);
    errno = e;
    return r;
}

/* Every open variant lands here. An open below ROOT that may create a name
 * is journaled, one that may change an existing file keeps its pre-image;
 * both run under ns_mu so that nothing else changes the directory between
 * the check and the open. */
static int do_open(int dirfd, const char *path, int flags, mode_t mode) {
    openat_t op = REAL(openat_t, openat);
    ino_t dino;
    char name[NAMEBUF];
    int writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
    if (!(flags & O_CREAT) && !writes) return op(dirfd, path, flags, mode);
    if (!locate(dirfd, path, &dino, name)) return op(dirfd, path, flags, mode);
    pthread_mutex_lock(&ns_mu);
    struct stat st;
    int exists = fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists || !(flags & O_CREAT)) {
        if (exists && writes && S_ISREG(st.st_mode))
            keep_content(dirfd, path, &st);
        return unlock_keep_errno(op(dirfd, path, flags, mode));
    }
    jline("+ C %lu %s", (unsigned long)dino, name);
    int fd = op(dirfd, path, flags, mode);
    int e = errno;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        char from[64], to[PATH_MAX + 64];
        snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
        shadow_path(to, sizeof to, "live", st.st_ino);
        if (REAL(linkat_t, linkat)(AT_FDCWD, from, AT_FDCWD, to,
                                   AT_SYMLINK_FOLLOW) < 0)
            jline("! live link %s: %s", to, strerror(errno));
        shadow_path(to, sizeof to, "data", st.st_ino);
        int dfd = op(AT_FDCWD, to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                     0644); /* nothing of a new file is durable yet */
        if (dfd < 0)
            jline("! %s: %s", to, strerror(errno));
        else
            close(dfd);
        jline("= %lu", (unsigned long)st.st_ino);
    } else if (fd >= 0) {
        jline("! fstat after create: %s", strerror(errno));
    } else {
        jline("- %d", e);
    }
    pthread_mutex_unlock(&ns_mu);
    errno = e;
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE
               ? (mode_t)va_arg(ap, int)
               : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags | O_LARGEFILE, mode);
}

/* The _FORTIFY_SOURCE entry points (no mode: O_CREAT is refused there). */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
int __open_2(const char *path, int flags) {
    return do_open(AT_FDCWD, path, flags, 0);
}
int __open64_2(const char *path, int flags) {
    return do_open(AT_FDCWD, path, flags | O_LARGEFILE, 0);
}
int __openat_2(int dirfd, const char *path, int flags) {
    return do_open(dirfd, path, flags, 0);
}
int __openat64_2(int dirfd, const char *path, int flags) {
    return do_open(dirfd, path, flags | O_LARGEFILE, 0);
}

int creat(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC | O_LARGEFILE,
                   mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
    mkdirat_t real = REAL(mkdirat_t, mkdirat);
    ino_t dino;
    char name[NAMEBUF];
    if (!locate(dirfd, path, &dino, name)) return real(dirfd, path, mode);
    pthread_mutex_lock(&ns_mu);
    jline("+ M %lu %s", (unsigned long)dino, name);
    int r = real(dirfd, path, mode);
    int e = errno;
    struct stat st;
    if (r == 0 && fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
        jline("= %lu", (unsigned long)st.st_ino);
    else if (r == 0)
        jline("! stat after mkdir: %s", strerror(errno));
    else
        jline("- %d", e);
    pthread_mutex_unlock(&ns_mu);
    errno = e;
    return r;
}

int mkdir(const char *path, mode_t mode) {
    return mkdirat(AT_FDCWD, path, mode);
}

static int do_rename(int ofd, const char *op, int nfd, const char *np,
                     unsigned flags) {
    renameat2_t real2 = REAL(renameat2_t, renameat2);
    renameat_t real = REAL(renameat_t, renameat);
#define RUN() (flags ? real2(ofd, op, nfd, np, flags) : real(ofd, op, nfd, np))
    ino_t od = 0, nd = 0;
    char on[NAMEBUF] = "-", nn[NAMEBUF] = "-";
    int a = locate(ofd, op, &od, on), b = locate(nfd, np, &nd, nn);
    if (!a && !b) return RUN();
    pthread_mutex_lock(&ns_mu);
    struct stat st;
    if (flags & RENAME_EXCHANGE) {
        jline("! RENAME_EXCHANGE below ROOT");
        return unlock_keep_errno(RUN());
    }
    if (fstatat(ofd, op, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return unlock_keep_errno(RUN()); /* fails: nothing to rename */
    struct stat victim;
    if (b && fstatat(nfd, np, &victim, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(victim.st_mode))
        keep_inode(nfd, np, &victim); /* it loses its name */
    jline("+ R %lu %s %lu %s %lu", (unsigned long)(a ? od : 0), on,
          (unsigned long)(b ? nd : 0), nn, (unsigned long)st.st_ino);
    return answer_unlock(RUN());
#undef RUN
}

int rename(const char *op, const char *np) {
    return do_rename(AT_FDCWD, op, AT_FDCWD, np, 0);
}
int renameat(int ofd, const char *op, int nfd, const char *np) {
    return do_rename(ofd, op, nfd, np, 0);
}
int renameat2(int ofd, const char *op, int nfd, const char *np,
              unsigned flags) {
    return do_rename(ofd, op, nfd, np, flags);
}

int unlinkat(int dirfd, const char *path, int flags) {
    unlinkat_t real = REAL(unlinkat_t, unlinkat);
    ino_t dino;
    char name[NAMEBUF];
    struct stat st;
    if (!locate(dirfd, path, &dino, name)) return real(dirfd, path, flags);
    pthread_mutex_lock(&ns_mu);
    if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return unlock_keep_errno(real(dirfd, path, flags)); /* fails */
    if (S_ISREG(st.st_mode)) keep_inode(dirfd, path, &st);
    jline("+ U %lu %s %lu", (unsigned long)dino, name,
          (unsigned long)st.st_ino);
    return answer_unlock(real(dirfd, path, flags));
}

/* truncate by name changes content: keep the pre-image first. */
static int do_truncate(const char *path, off_t len, truncate_t real) {
    ino_t dino;
    char name[NAMEBUF];
    struct stat st;
    if (!locate(AT_FDCWD, path, &dino, name)) return real(path, len);
    pthread_mutex_lock(&ns_mu);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_dev == root_dev)
        keep_content(AT_FDCWD, path, &st);
    return unlock_keep_errno(real(path, len));
}

int truncate(const char *path, off_t len) {
    return do_truncate(path, len, REAL(truncate_t, truncate));
}
int truncate64(const char *path, off_t len) {
    return do_truncate(path, len, REAL(truncate_t, truncate64));
}

int unlink(const char *path) { return unlinkat(AT_FDCWD, path, 0); }
int rmdir(const char *path) { return unlinkat(AT_FDCWD, path, AT_REMOVEDIR); }

/* Not modeled: journaled as errors when they name something below ROOT. */
static void unmodeled(int dirfd, const char *path, const char *what) {
    ino_t dino;
    char name[NAMEBUF];
    if (locate(dirfd, path, &dino, name)) jline("! %s %s", what, name);
}

int link(const char *from, const char *to) {
    unmodeled(AT_FDCWD, to, "link");
    return REAL(link_t, link)(from, to);
}
int linkat(int ofd, const char *from, int nfd, const char *to, int flags) {
    unmodeled(nfd, to, "linkat");
    return REAL(linkat_t, linkat)(ofd, from, nfd, to, flags);
}
int symlink(const char *target, const char *path) {
    unmodeled(AT_FDCWD, path, "symlink");
    return REAL(link_t, symlink)(target, path);
}
int symlinkat(const char *target, int dirfd, const char *path) {
    unmodeled(dirfd, path, "symlinkat");
    return REAL(symlinkat_t, symlinkat)(target, dirfd, path);
}
int mknod(const char *path, mode_t mode, dev_t dev) {
    unmodeled(AT_FDCWD, path, "mknod");
    return REAL(mknod_t, mknod)(path, mode, dev);
}
int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev) {
    unmodeled(dirfd, path, "mknodat");
    return REAL(mknodat_t, mknodat)(dirfd, path, mode, dev);
}
