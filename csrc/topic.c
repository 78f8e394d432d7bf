/*
 * topic.c -- a topic: an ordered list of segments, the last one active
 * (preallocated, mapped read-write, appended to with memcpy), the others
 * sealed (truncated to their data, mapped read-only when first read).
 *
 * Invariants (comments and checks below refer to them by number):
 *  1. Offsets are dense and strictly increasing; a segment's file name is its
 *     base offset; segment i holds exactly [base_i, base_{i+1}).
 *  2. A batch is the unit of atomicity: readers see a batch only after all of
 *     its bytes and its checksum are in the map (pub_pos is stored with
 *     release after the copy), and recovery keeps a batch only if its
 *     checksum verifies.
 *  3. An append that returned is in the page cache (the map is MAP_SHARED),
 *     so it survives a crash of the process, and is visible to every reader.
 *  4. PL_SYNC_ALWAYS: an append returns after an fdatasync that covers it
 *     (group commit: one fsync serves every waiting appender).
 *     PL_SYNC_INTERVAL: a syncer thread fdatasyncs every sync_interval_ms.
 *     durable_offset is only raised after a successful fdatasync; a failed
 *     one makes the topic fail every later append (sticky, PL_EFAILED):
 *     after a failed fsync the page cache state is unknown.
 *  5. Indexes are derived: the active one is rebuilt by the recovery scan,
 *     a sealed one is used only if its checksum and header match the
 *     segment, and a lookup through it verifies what it lands on.
 *  6. Open never fails on bad data: a torn tail of the active segment is cut
 *     (and zeroed, so stale bytes cannot come back to life); a sealed
 *     segment is checked when first read and its bad range reported.
 *  7. Open reads only the active segment; sealed ones are opened lazily, so
 *     open time and memory do not grow with the backlog.
 *  8. A map is unmapped only at its last reference (io.c): readers that
 *     hand out zero-copy views hold a reference.
 *
 * Locks, always taken in this order: wlock (one writer), slock (segment
 * list; readers share it), load_mu (lazy load of a sealed segment),
 * sync_mu (group commit). watch_mu (notify.c) is taken without these,
 * and only a notifier's own lock inside it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int64_t pl_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t round_page(int64_t n) { return (n + 4095) & ~(int64_t)4095; }

/* ---- segment files ---------------------------------------------------------- */

/* Create BASE.log with `cap` bytes preallocated and a header, mapped RW.
 * On error nothing is left on disk. */
static int segment_create(pl_topic *t, int64_t base, int64_t cap,
                          pl_segment **out) {
    int rc = -PL_ENOMEM;
    pl_segment *s = calloc(1, sizeof *s);
    if (!s) return pl_err(PL_ENOMEM, 0, "out of memory");
    s->fd = -1;
    s->base = base;
    s->bad_pos = -1;
    s->path = pl_seg_path(t->dir, base, ".log");
    if (!s->path) goto fail;
    s->fd = pl_io_open(s->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (s->fd < 0) {
        rc = pl_err(PL_EIO, errno, "cannot create segment %s", s->path);
        goto fail;
    }
    if (pl_io_fallocate(s->fd, cap) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot preallocate %" PRId64
                    " bytes for segment %s", cap, s->path);
        goto fail_unlink;
    }
    uint8_t hdr[PL_SEG_HDR];
    pl_seg_header_write(hdr, base);
    if (pl_io_pwrite(s->fd, hdr, sizeof hdr, 0) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot write the header of %s", s->path);
        goto fail_unlink;
    }
    s->map = pl_io_map(s->fd, cap, 1);
    if (!s->map) {
        rc = pl_err(PL_EIO, errno, "cannot map segment %s", s->path);
        goto fail_unlink;
    }
    if ((rc = pl_seg_index_alloc(s, cap, t->cfg.index_interval_bytes)) < 0) {
        pl_err(PL_ENOMEM, 0, "out of memory");
        goto fail_unlink;
    }
    s->cap = cap;
    s->file_bytes = cap; /* preallocated: counts against max_bytes now */
    s->end = base;
    s->trusted = 1;
    s->dirty = 1;
    atomic_store(&t->dir_dirty, 1); /* its name is not durable yet */
    atomic_store(&s->pub_pos, PL_SEG_HDR);
    *out = s;
    return 0;
fail_unlink:
    pl_io_unlink(s->path);
fail:
    pl_seg_free(s);
    return rc;
}

/* Zero [from, end) up to its last non-zero byte, so that bytes cut from a
 * torn tail, or left past a clean end by a power loss that kept a later
 * page but not an earlier one, cannot pass for batches later (invariant
 * 6). Returns the number of bytes zeroed. */
static int64_t zero_tail(uint8_t *data, int64_t from, int64_t end) {
    int64_t last = from;
    for (int64_t p = from; p < end; p += 8) {
        uint64_t w = 0;
        memcpy(&w, data + p, (size_t)(end - p < 8 ? end - p : 8));
        if (w) last = p + 8 < end ? p + 8 : end;
    }
    if (last > from) memset(data + from, 0, (size_t)(last - from));
    return last - from;
}

/* Copy the active segment's file to BASE.log.damaged before recovery
 * changes it. */
static int save_damaged(pl_segment *s, int64_t size) {
    size_t n = strlen(s->path) + 16;
    char *dst = malloc(n + 8);
    uint8_t *buf = malloc(1 << 16);
    int fd = -1, rc = 0;
    if (!dst || !buf) {
        rc = pl_err(PL_ENOMEM, 0, "out of memory");
        goto out;
    }
    /* Never over an earlier copy: .damaged, then .damaged.1, .2, ... */
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(dst, n + 8, "%s.damaged", s->path);
        else
            snprintf(dst, n + 8, "%s.damaged.%d", s->path, i);
        fd = pl_io_open(dst, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) goto io;
    for (int64_t off = 0; off < size;) {
        size_t k = size - off < (1 << 16) ? (size_t)(size - off) : 1 << 16;
        if (pl_io_pread(s->fd, buf, k, off) < 0 ||
            pl_io_pwrite(fd, buf, k, off) < 0)
            goto io;
        off += (int64_t)k;
    }
    goto out;
io:
    rc = pl_err(PL_EIO, errno, "cannot save the damaged segment %s to %s",
                s->path, dst);
out:
    pl_io_close(fd);
    free(dst);
    free(buf);
    return rc;
}

/* Open and recover the active segment (invariants 5, 6). A clean close
 * truncates it to its data; a file longer than its data means the process
 * did not close it, and the bytes past the data are checked and zeroed. */
static int segment_recover(pl_topic *t, pl_segment *s) {
    int64_t size;
    s->fd = pl_io_open(s->path, O_RDWR, 0);
    if (s->fd < 0 || pl_io_fstat_size(s->fd, &size) < 0)
        return pl_err(PL_EIO, errno, "cannot open segment %s", s->path);
    if (size > PL_SEG_MAX)
        return pl_err(PL_EFORMAT, 0, "segment %s is larger than 4 GiB",
                      s->path);
    uint8_t hdr[PL_SEG_HDR] = {0};
    int hdr_ok = 0;
    if (size > 0 && size < PL_SEG_HDR &&
        pl_io_pread(s->fd, hdr, (size_t)size, 0) == 0 &&
        !pl_all_zero(hdr, size)) {
        int r = save_damaged(s, size); /* too short to be ours: keep it */
        if (r < 0) return r;
    }
    if (size >= PL_SEG_HDR && pl_io_pread(s->fd, hdr, sizeof hdr, 0) == 0) {
        int r = pl_seg_header_check(hdr, s->base);
        if (r == -PL_EFORMAT)
            return pl_err(PL_EFORMAT, 0,
                          "segment %s has format version %u; this pylog "
                          "reads version %d", s->path, get32(hdr + 8),
                          PL_FORMAT_VERSION);
        hdr_ok = r == 0;
        /* A damaged header (not merely never written) may mean the file
         * is not ours at all: keep its bytes before recovery rewrites the
         * header and zeroes what does not verify, so that opening neither
         * fails (invariant 6) nor silently destroys anything. */
        if (!hdr_ok && !pl_all_zero(hdr, sizeof hdr) &&
            (r = save_damaged(s, size)) < 0)
            return r;
    }
    int64_t cap = size > t->cfg.segment_bytes ? size : t->cfg.segment_bytes;
    if (cap > size && pl_io_fallocate(s->fd, cap) < 0) {
        if (size < PL_SEG_HDR + PL_BATCH_HDR)
            return pl_err(PL_EIO, errno, "cannot preallocate segment %s",
                          s->path);
        cap = size; /* full disk: open anyway, the next append rolls */
    }
    s->map = pl_io_map(s->fd, cap, 1);
    if (!s->map) return pl_err(PL_EIO, errno, "cannot map %s", s->path);
    s->cap = cap;
    s->file_bytes = cap;
    if (!hdr_ok) pl_seg_header_write(s->map->base, s->base);
    if (pl_seg_index_alloc(s, cap, t->cfg.index_interval_bytes) < 0)
        return pl_err(PL_ENOMEM, 0, "out of memory");
    int64_t valid_end;
    pl_seg_scan(s, s->map->base, cap, t->cfg.index_interval_bytes,
                &valid_end);
    if (size > valid_end)
        t->truncated = zero_tail(s->map->base, valid_end, size);
    atomic_store(&s->pub_pos, valid_end);
    s->trusted = 1; /* every batch below valid_end was just verified */
    s->dirty = 1;
    return 0;
}

/* Make a sealed segment readable: map it and get its index from BASE.idx
 * or by a scan (invariants 5, 7). Caller holds slock (read). */
static int segment_load(pl_topic *t, pl_segment *s, int64_t next_base) {
    if (__atomic_load_n(&s->loaded, __ATOMIC_ACQUIRE)) return 0;
    int rc = 0;
    pthread_mutex_lock(&t->load_mu);
    if (s->loaded) goto out;
    int64_t size;
    if (s->fd < 0) s->fd = pl_io_open(s->path, O_RDONLY, 0);
    if (s->fd < 0 || pl_io_fstat_size(s->fd, &size) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot open segment %s", s->path);
        goto out;
    }
    if (!s->map) {
        if (size > PL_SEG_MAX) size = PL_SEG_MAX;
        s->map = pl_io_map(s->fd, size, 0);
        if (!s->map) {
            rc = pl_err(PL_EIO, errno, "cannot map %s", s->path);
            goto out;
        }
        s->cap = size;
        atomic_store(&s->pub_pos, size);
    }
    s->end = next_base;
    if (s->cap < PL_SEG_HDR ||
        pl_seg_header_check(s->map->base, s->base) != 0) {
        s->bad_pos = 0;
    } else if (!pl_seg_index_load(s, s->cap, next_base)) {
        int64_t valid_end;
        free(s->idx_owned);
        s->idx_owned = NULL;
        if (pl_seg_index_alloc(s, s->cap, t->cfg.index_interval_bytes) < 0) {
            rc = pl_err(PL_ENOMEM, 0, "out of memory");
            goto out;
        }
        int garbage = pl_seg_scan(s, s->map->base, s->cap,
                                  t->cfg.index_interval_bytes, &valid_end);
        atomic_store(&s->verified, valid_end);
        if (garbage || s->end != next_base) {
            s->bad_pos = valid_end;
        } else if (pl_seg_index_write(s, t->dir) == 0) { /* best effort */
            s->idx_bytes = PL_IDX_HDR +
                           (int64_t)atomic_load(&s->nidx) * PL_IDX_ENTRY;
        }
        s->end = next_base;
    }
    if (atomic_load(&s->verified) < PL_SEG_HDR)
        atomic_store(&s->verified, PL_SEG_HDR);
    __atomic_store_n(&s->loaded, 1, __ATOMIC_RELEASE);
out:
    pthread_mutex_unlock(&t->load_mu);
    return rc;
}

/* ---- open / close ----------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Parse "NNNNNNNNNNNNNNNNNNNN.ext"; returns 1 and sets *base on a match. */
static int seg_name(const char *name, const char *ext, int64_t *base) {
    size_t n = strlen(name), e = strlen(ext);
    if (n != 20 + e || strcmp(name + 20, ext) != 0) return 0;
    int64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        if (v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (name[i] - '0');
    }
    *base = v;
    return 1;
}

typedef struct i64vec {
    int64_t *v;
    int64_t n, cap;
} i64vec;

static int vec_push(i64vec *a, int64_t x) {
    if (a->n == a->cap) {
        int64_t nc = a->cap ? a->cap * 2 : 16;
        int64_t *nv = realloc(a->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return 0;
}

static int vec_has(const i64vec *a, int64_t x) {
    return a->n > 0 &&
           bsearch(&x, a->v, (size_t)a->n, sizeof x, cmp_i64) != NULL;
}

static void unlink_seg_file(pl_topic *t, int64_t base, const char *ext) {
    char *p = pl_seg_path(t->dir, base, ext);
    if (p) pl_io_unlink(p);
    free(p);
}

/* List the segment bases in dir (sorted) and remove what interrupted
 * index writes and segment deletions leave: BASE.idx.tmp files, and
 * BASE.idx files whose BASE.log is gone (retention.c). */
static int list_segments(pl_topic *t, i64vec *logs) {
    DIR *d = opendir(t->dir);
    if (!d) return pl_err(PL_EIO, errno, "cannot list topic directory %s",
                          t->dir);
    i64vec idx = {0};
    int64_t b;
    int oom = 0;
    struct dirent *de;
    while (!oom && (de = readdir(d)) != NULL) {
        if (seg_name(de->d_name, ".idx.tmp", &b))
            unlink_seg_file(t, b, ".idx.tmp");
        else if (seg_name(de->d_name, ".log", &b))
            oom = vec_push(logs, b) < 0;
        else if (seg_name(de->d_name, ".idx", &b))
            oom = vec_push(&idx, b) < 0;
    }
    closedir(d);
    if (oom) {
        free(idx.v);
        return pl_err(PL_ENOMEM, 0, "out of memory");
    }
    if (logs->n > 0) /* qsort/bsearch take no NULL array */
        qsort(logs->v, (size_t)logs->n, sizeof *logs->v, cmp_i64);
    for (int64_t i = 0; i < idx.n; i++)
        if (!vec_has(logs, idx.v[i])) unlink_seg_file(t, idx.v[i], ".idx");
    free(idx.v);
    return 0;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* ---- the durability checkpoint ---------------------------------------------
 * DIR/checkpoint (24 bytes): "PYLOGCKP" | i64 offset | u64 XXH64 of 0..16.
 * Every offset below `offset` was fdatasync'ed before the file was written,
 * so a checkpoint that exists and verifies is true; a missing or damaged
 * one only makes open more cautious (everything counts as not durable). */
#define PL_CKPT_MAGIC "PYLOGCKP"

static int64_t checkpoint_read(pl_topic *t) {
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint", t->dir);
    uint8_t b[24];
    int fd = pl_io_open(path, O_RDONLY, 0);
    int ok = fd >= 0 && pl_io_pread(fd, b, sizeof b, 0) == 0 &&
             memcmp(b, PL_CKPT_MAGIC, 8) == 0 &&
             get64(b + 16) == pl_xxh64(b, 16, 0);
    pl_io_close(fd);
    return ok ? (int64_t)get64(b + 8) : -1;
}

static void checkpoint_write(pl_topic *t, int64_t offset) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/checkpoint", t->dir);
    snprintf(tmp, sizeof tmp, "%s/checkpoint.tmp", t->dir);
    uint8_t b[24];
    memcpy(b, PL_CKPT_MAGIC, 8);
    put64(b + 8, (uint64_t)offset);
    put64(b + 16, pl_xxh64(b, 16, 0));
    int fd = pl_io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return; /* best effort: only open gets more cautious */
    int ok = pl_io_pwrite(fd, b, sizeof b, 0) == 0;
    pl_io_close(fd);
    if (!ok || pl_io_rename(tmp, path) < 0) pl_io_unlink(tmp);
}

/* Room for one more segment in the list. Callers that may race with
 * readers hold slock (write): realloc moves the array. */
static int segs_reserve(pl_topic *t) {
    if (t->nsegs < t->segcap) return 0;
    int64_t nc = t->segcap ? t->segcap * 2 : 16;
    pl_segment **ns = realloc(t->segs, (size_t)nc * sizeof *ns);
    if (!ns) return pl_err(PL_ENOMEM, 0, "out of memory");
    t->segs = ns;
    t->segcap = nc;
    return 0;
}

static int segs_push(pl_topic *t, pl_segment *s) {
    int rc = segs_reserve(t);
    if (rc == 0) t->segs[t->nsegs++] = s;
    return rc;
}

static int validate_config(const pl_config *c) {
    if (c->segment_bytes < 1024 || c->segment_bytes > PL_SEG_MAX)
        return pl_err(PL_EINVAL, 0, "segment_bytes must be in [1024, %"
                      PRId64 "], not %" PRId64, PL_SEG_MAX, c->segment_bytes);
    if (c->max_record_bytes < 1 ||
        c->max_record_bytes > PL_SEG_MAX - PL_SEG_HDR - PL_BATCH_HDR -
                                  PL_REC_HDR)
        return pl_err(PL_EINVAL, 0, "max_record_bytes out of range: %" PRId64,
                      c->max_record_bytes);
    if (c->index_interval_bytes < 64)
        return pl_err(PL_EINVAL, 0, "index_interval_bytes must be >= 64");
    if (c->sync_mode < PL_SYNC_NONE || c->sync_mode > PL_SYNC_ALWAYS)
        return pl_err(PL_EINVAL, 0, "unknown sync mode %d", c->sync_mode);
    if (c->sync_mode == PL_SYNC_INTERVAL && c->sync_interval_ms < 1)
        return pl_err(PL_EINVAL, 0, "sync_interval_ms must be >= 1");
    if (c->retention_ms < 0 || c->retention_bytes < 0 || c->max_bytes < 0 ||
        c->full_timeout_ms < 0)
        return pl_err(PL_EINVAL, 0, "retention_ms, retention_bytes, "
                      "max_bytes and full_timeout_ms must be >= 0");
    if (c->on_full < PL_FULL_DROP_OLDEST || c->on_full > PL_FULL_BLOCK)
        return pl_err(PL_EINVAL, 0, "unknown on_full policy %d", c->on_full);
    /* The cap must hold the segment being sealed and the new one, each
     * with its largest index: a roll needs both at once. */
    int64_t seg = c->segment_bytes + PL_IDX_HDR +
                  (c->segment_bytes / c->index_interval_bytes + 2) *
                      PL_IDX_ENTRY;
    if (c->max_bytes > 0 && c->max_bytes < 2 * seg)
        return pl_err(PL_EINVAL, 0, "max_bytes=%" PRId64 " cannot hold two "
                      "segments of segment_bytes=%" PRId64 " with their "
                      "indexes: use at least %" PRId64, c->max_bytes,
                      c->segment_bytes, 2 * seg);
    return 0;
}

static int sync_to(pl_topic *t, int64_t target);
static int flush_all(pl_topic *t);

static void *syncer_main(void *arg) {
    pl_topic *t = arg;
    pthread_mutex_lock(&t->sync_mu);
    while (!t->stop_syncer) {
        struct timespec ts = pl_deadline(CLOCK_REALTIME,
                                         t->cfg.sync_interval_ms);
        pthread_cond_timedwait(&t->stop_cv, &t->sync_mu, &ts);
        if (t->stop_syncer) break;
        int64_t end = atomic_load(&t->end_offset);
        if (end > atomic_load(&t->durable) && !atomic_load(&t->failed)) {
            pthread_mutex_unlock(&t->sync_mu);
            sync_to(t, end);
            pthread_mutex_lock(&t->sync_mu);
        }
    }
    pthread_mutex_unlock(&t->sync_mu);
    return NULL;
}

int pl_topic_open(const char *dir, const pl_config *cfg, pl_topic **out) {
    int rc = validate_config(cfg);
    if (rc < 0) return rc;
    pl_topic *t = calloc(1, sizeof *t);
    if (!t || !(t->dir = strdup(dir))) {
        free(t);
        return pl_err(PL_ENOMEM, 0, "out of memory");
    }
    t->cfg = *cfg;
    pthread_mutex_init(&t->wlock, NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&t->slock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&t->load_mu, NULL);
    pthread_mutex_init(&t->sync_mu, NULL);
    pthread_cond_init(&t->sync_cv, NULL);
    pthread_cond_init(&t->stop_cv, NULL);
    pthread_mutex_init(&t->watch_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->room_cv, &ca);
    pthread_condattr_destroy(&ca);

    i64vec bases = {0};
    if ((rc = list_segments(t, &bases)) < 0) goto fail;
    int64_t n = bases.n, ckpt = n ? checkpoint_read(t) : -1;
    if (n == 0) {
        pl_segment *s;
        if ((rc = segment_create(t, 0, cfg->segment_bytes, &s)) < 0)
            goto fail;
        if ((rc = segs_push(t, s)) < 0) {
            pl_seg_free(s);
            goto fail;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            pl_segment *s = calloc(1, sizeof *s);
            char *ip = NULL;
            if (!s || !(s->path = pl_seg_path(dir, bases.v[i], ".log")) ||
                !(ip = pl_seg_path(dir, bases.v[i], ".idx"))) {
                if (s) free(s->path);
                free(s);
                rc = pl_err(PL_ENOMEM, 0, "out of memory");
                goto fail;
            }
            s->fd = -1;
            s->base = bases.v[i];
            s->bad_pos = -1;
            s->sealed = i + 1 < n;
            s->end = i + 1 < n ? bases.v[i + 1] : bases.v[i];
            s->file_bytes = file_size(s->path);
            s->idx_bytes = file_size(ip);
            free(ip);
            /* Below the checkpoint: fdatasync'ed by an earlier process
             * (invariant 4); above it, a flush must sync it. */
            s->dirty = s->end > ckpt;
            if ((rc = segs_push(t, s)) < 0) {
                pl_seg_free(s);
                goto fail;
            }
        }
        if ((rc = segment_recover(t, t->segs[n - 1])) < 0) goto fail;
    }
    t->active = t->segs[t->nsegs - 1];
    int64_t start = t->segs[0]->base, end = t->active->end;
    atomic_store(&t->start_offset, start);
    atomic_store(&t->end_offset, end);
    atomic_store(&t->durable, ckpt < start ? start : ckpt > end ? end : ckpt);
    /* Recovery cut below the checkpoint (synced data was lost after all):
     * it must not go on vouching for offsets that will be rewritten. */
    if (ckpt > end) checkpoint_write(t, end);
    free(bases.v);
    bases.v = NULL;
    if (cfg->sync_mode != PL_SYNC_NONE && (rc = flush_all(t)) < 0) goto fail;
    pl_retention_apply_locked(t); /* no other thread has the handle yet */
    if (cfg->sync_mode == PL_SYNC_INTERVAL) {
        if (pthread_create(&t->syncer, NULL, syncer_main, t) != 0) {
            rc = pl_err(PL_EIO, errno, "cannot start the syncer thread");
            goto fail;
        }
        t->has_syncer = 1;
    }
    t->opened = 1;
    *out = t;
    return 0;
fail:
    free(bases.v);
    pl_topic_free(t);
    return rc;
}

int pl_topic_close(pl_topic *t) {
    int rc = 0;
    pthread_mutex_lock(&t->wlock);
    if (atomic_load(&t->closed)) {
        pthread_mutex_unlock(&t->wlock);
        return 0;
    }
    if (t->has_syncer) {
        pthread_mutex_lock(&t->sync_mu);
        t->stop_syncer = 1;
        pthread_cond_broadcast(&t->stop_cv);
        pthread_mutex_unlock(&t->sync_mu);
        pthread_join(t->syncer, NULL);
        t->has_syncer = 0;
    }
    if (t->cfg.sync_mode != PL_SYNC_NONE && !atomic_load(&t->failed))
        rc = flush_all(t);
    /* A topic whose open failed changes nothing on disk here. */
    if (t->opened) {
        checkpoint_write(t, atomic_load(&t->durable));
        /* A clean close cuts the preallocated tail: the next open then
         * knows there is nothing past the data to check (segment_recover).
         * Best effort: if it fails, open checks the tail instead. */
        pl_io_ftruncate(t->active->fd, atomic_load(&t->active->pub_pos));
    }
    pthread_rwlock_wrlock(&t->slock);
    atomic_store(&t->closed, 1);
    for (int64_t i = 0; i < t->nsegs; i++) pl_seg_free(t->segs[i]);
    t->nsegs = 0;
    t->active = NULL;
    pthread_rwlock_unlock(&t->slock);
    pthread_cond_broadcast(&t->room_cv);
    pthread_mutex_unlock(&t->wlock);
    pl_notify_detach_all(t); /* wakes consumers waiting on this topic */
    pthread_mutex_lock(&t->sync_mu);
    pthread_cond_broadcast(&t->sync_cv);
    pthread_mutex_unlock(&t->sync_mu);
    return rc;
}

void pl_topic_free(pl_topic *t) {
    if (!t) return;
    if (t->dir) pl_topic_close(t);
    for (int64_t i = 0; i < t->nsegs; i++) pl_seg_free(t->segs[i]);
    free(t->segs);
    pthread_mutex_destroy(&t->wlock);
    pthread_rwlock_destroy(&t->slock);
    pthread_mutex_destroy(&t->load_mu);
    pthread_mutex_destroy(&t->sync_mu);
    pthread_cond_destroy(&t->sync_cv);
    pthread_cond_destroy(&t->stop_cv);
    pthread_mutex_destroy(&t->watch_mu);
    pthread_cond_destroy(&t->room_cv);
    free(t->watchers);
    free(t->scratch);
    free(t->dir);
    free(t);
}

int64_t pl_topic_truncated_bytes(pl_topic *t) { return t->truncated; }

/* ---- durability --------------------------------------------------------------- */

static void fail_sticky(pl_topic *t, int err, const char *what) {
    snprintf(t->failed_msg, sizeof t->failed_msg, "%s", what);
    atomic_store(&t->failed, err ? err : EIO);
}

/* fdatasync every dirty segment; raise durable to the end seen before.
 * Caller holds neither slock nor sync_mu. */
static int sync_segments(pl_topic *t, int64_t *goal) {
    int rc = 0;
    pthread_rwlock_rdlock(&t->slock);
    if (atomic_load(&t->closed)) {
        pthread_rwlock_unlock(&t->slock);
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    }
    *goal = atomic_load(&t->end_offset);
    /* A segment created since the last round needs its directory entry
     * on disk too. */
    if (atomic_exchange(&t->dir_dirty, 0) && pl_io_fsync_dir(t->dir) < 0) {
        int e = errno;
        atomic_store(&t->dir_dirty, 1);
        rc = pl_err(PL_EIO, e, "fsync of directory %s failed", t->dir);
        fail_sticky(t, e, pl_errmsg());
    }
    for (int64_t i = 0; i < t->nsegs && rc == 0; i++) {
        pl_segment *s = t->segs[i];
        if (!__atomic_exchange_n(&s->dirty, 0, __ATOMIC_ACQ_REL)) continue;
        int fd = s->fd >= 0 ? s->fd : pl_io_open(s->path, O_RDONLY, 0);
        if (fd < 0) { /* not an fsync failure: nothing is sticky */
            __atomic_store_n(&s->dirty, 1, __ATOMIC_RELEASE);
            rc = pl_err(PL_EIO, errno, "cannot open %s to sync it", s->path);
            break;
        }
        int r = pl_io_fdatasync(fd);
        int e = errno;
        if (fd != s->fd) pl_io_close(fd);
        if (r < 0) {
            __atomic_store_n(&s->dirty, 1, __ATOMIC_RELEASE);
            rc = pl_err(PL_EIO, e, "fdatasync of %s failed", s->path);
            fail_sticky(t, e, pl_errmsg());
        }
    }
    pthread_rwlock_unlock(&t->slock);
    return rc;
}

/* Group commit: return once durable >= target (invariant 4). */
static int sync_to(pl_topic *t, int64_t target) {
    int rc = 0;
    pthread_mutex_lock(&t->sync_mu);
    while (atomic_load(&t->durable) < target) {
        if (atomic_load(&t->failed)) {
            rc = pl_err(PL_EFAILED, 0, "%s", t->failed_msg);
            break;
        }
        if (atomic_load(&t->closed)) {
            rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
            break;
        }
        if (t->syncing) {
            pthread_cond_wait(&t->sync_cv, &t->sync_mu);
            continue;
        }
        t->syncing = 1;
        pthread_mutex_unlock(&t->sync_mu);
        int64_t goal = 0;
        rc = sync_segments(t, &goal);
        pthread_mutex_lock(&t->sync_mu);
        t->syncing = 0;
        if (rc == 0 && goal > atomic_load(&t->durable))
            atomic_store(&t->durable, goal);
        pthread_cond_broadcast(&t->sync_cv);
        if (rc < 0) break;
    }
    pthread_mutex_unlock(&t->sync_mu);
    return rc;
}

/* One sync round even if durable == end: segments left by an earlier
 * process are marked dirty at open and may not be on disk yet. */
static int flush_all(pl_topic *t) {
    pthread_mutex_lock(&t->sync_mu);
    while (t->syncing) pthread_cond_wait(&t->sync_cv, &t->sync_mu);
    t->syncing = 1;
    pthread_mutex_unlock(&t->sync_mu);
    int64_t goal = 0;
    int rc = atomic_load(&t->failed)
                 ? pl_err(PL_EFAILED, 0, "%s", t->failed_msg)
                 : sync_segments(t, &goal);
    pthread_mutex_lock(&t->sync_mu);
    t->syncing = 0;
    if (rc == 0 && goal > atomic_load(&t->durable))
        atomic_store(&t->durable, goal);
    pthread_cond_broadcast(&t->sync_cv);
    pthread_mutex_unlock(&t->sync_mu);
    if (rc == 0) checkpoint_write(t, goal);
    return rc;
}

int pl_topic_flush(pl_topic *t) {
    if (atomic_load(&t->closed))
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    return flush_all(t);
}

/* ---- appends ------------------------------------------------------------------ */

static int writable(pl_topic *t) {
    if (atomic_load(&t->closed))
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    if (atomic_load(&t->failed))
        return pl_err(PL_EFAILED, 0,
                      "topic %s refuses writes after a failed fsync (%s); "
                      "reopen it", t->dir, t->failed_msg);
    return 0;
}

/* Seal the active segment and start a new one of `cap` bytes at the end
 * offset. Caller holds wlock. On error the old segment stays active.
 * Returns 1, having changed nothing, if making room waited (wlock was
 * released): the caller must start over (ensure_room). */
static int roll(pl_topic *t, int64_t cap, int64_t nrecords) {
    pl_segment *old = t->active, *s;
    int rc;
    pthread_rwlock_wrlock(&t->slock);
    rc = segs_reserve(t); /* before anything changes on disk */
    pthread_rwlock_unlock(&t->slock);
    if (rc < 0) return rc;
    int64_t used = atomic_load(&old->pub_pos);
    int64_t idx_size = PL_IDX_HDR + (int64_t)atomic_load(&old->nidx) *
                                        PL_IDX_ENTRY;
    /* The new file is created (preallocated) before the old one is cut to
     * its data and its index written: room for both moments. */
    int64_t shrink = used + idx_size - pl_seg_disk_bytes(old);
    rc = pl_retention_make_room(t, cap + (shrink > 0 ? shrink : 0), nrecords);
    if (rc != 0) return rc; /* 1: waited, `old` and `used` may be stale */
    /* In durable modes the old segment is synced here whatever its dirty
     * flag says: a concurrent sync round clears the flag before its own
     * fdatasync, which may still fail, and the checkpoint written below
     * must not vouch for it (invariant 4). Clean pages make it cheap. */
    if (t->cfg.sync_mode != PL_SYNC_NONE) {
        if (pl_io_fdatasync(old->fd) < 0) {
            rc = pl_err(PL_EIO, errno, "fdatasync of %s failed", old->path);
            fail_sticky(t, pl_errno(), pl_errmsg());
            return rc;
        }
        __atomic_store_n(&old->dirty, 0, __ATOMIC_RELEASE);
    }
    if ((rc = segment_create(t, old->end, cap, &s)) < 0) return rc;
    /* Best effort: a failed truncate leaves zeros the scan stops at, a
     * failed index write leaves an index the next load rebuilds. */
    if (pl_io_ftruncate(old->fd, used) < 0) used = old->cap;
    int64_t idx_bytes = pl_seg_index_write(old, t->dir) == 0 ? idx_size : 0;
    pthread_rwlock_wrlock(&t->slock);
    /* under slock: pl_topic_stats reads them */
    old->idx_bytes = idx_bytes;
    old->file_bytes = used;
    t->segs[t->nsegs++] = s; /* reserved above */
    /* The sealed segment drops its in-memory index: it is reloaded from
     * the file (page cache, not heap) on the next read (invariant 7). */
    free(old->idx_owned);
    old->idx_owned = NULL;
    old->idx = NULL;
    atomic_store(&old->nidx, 0);
    old->sealed = 1;
    old->loaded = 0;
    old->cap = used;
    atomic_store(&old->pub_pos, used);
    atomic_store(&old->verified, used);
    /* Its read-write map and fd go too: the next read maps it read-only
     * (segment_load), so a long log keeps only what is read mapped, and
     * no fd per sealed segment. Views of the old map keep it alive. */
    pl_map *old_map = old->map;
    int old_fd = old->fd;
    old->map = NULL;
    old->fd = -1;
    t->active = s;
    pthread_rwlock_unlock(&t->slock);
    pl_map_kill(old_map);
    pl_io_close(old_fd);
    if (t->cfg.sync_mode != PL_SYNC_NONE) {
        if (pl_io_fsync_dir(t->dir) < 0) {
            rc = pl_err(PL_EIO, errno, "fsync of directory %s failed", t->dir);
            fail_sticky(t, pl_errno(), pl_errmsg());
            return rc;
        }
        atomic_store(&t->dir_dirty, 0);
        /* Every sealed segment is on disk now: the old one was just
         * synced, earlier ones at their rolls or by the flush at open. */
        checkpoint_write(t, old->end);
        pthread_mutex_lock(&t->sync_mu);
        if (old->end > atomic_load(&t->durable))
            atomic_store(&t->durable, old->end);
        pthread_mutex_unlock(&t->sync_mu);
    }
    pl_retention_apply_locked(t);
    return 0;
}

/* Make room for a batch of len bytes (nrecords records) in the active
 * segment: roll, or grow an empty segment too small for the batch. 1 means
 * on_full=block waited with wlock released: start over (ensure_room). */
static int ensure_room_once(pl_topic *t, int64_t len, int64_t nrecords) {
    pl_segment *s = t->active;
    int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    if (pos + len <= s->cap) return 0;
    /* Only a batch larger than segment_bytes gets a bigger (page-rounded)
     * segment. Rounding the need up before comparing made rolled segments
     * larger than segment_bytes (at least 4 KiB) for small batches. */
    int64_t need = PL_SEG_HDR + len;
    int64_t cap = need > t->cfg.segment_bytes ? round_page(need)
                                              : t->cfg.segment_bytes;
    if (cap > PL_SEG_MAX) cap = need; /* rounding must not pass 4 GiB - 1 */
    if (pos > PL_SEG_HDR) return roll(t, cap, nrecords);
    /* An empty active segment too small for this batch: grow it, with an
     * index sized for the new capacity. */
    int rc = pl_retention_make_room(t, cap - s->file_bytes, nrecords);
    if (rc != 0) return rc; /* 1: waited, `s` may no longer be empty */
    if (pl_io_fallocate(s->fd, cap) < 0)
        return pl_err(PL_EIO, errno, "cannot grow segment %s to %" PRId64
                      " bytes", s->path, cap);
    pl_map *m = pl_io_map(s->fd, cap, 1);
    if (!m) return pl_err(PL_EIO, errno, "cannot map %s", s->path);
    uint8_t *old_idx = s->idx_owned;
    pthread_rwlock_wrlock(&t->slock);
    if (pl_seg_index_alloc(s, cap, t->cfg.index_interval_bytes) < 0) {
        pthread_rwlock_unlock(&t->slock);
        pl_map_kill(m);
        return pl_err(PL_ENOMEM, 0, "out of memory");
    }
    pl_map *oldm = s->map;
    s->map = m;
    s->cap = cap;
    s->file_bytes = cap;
    pthread_rwlock_unlock(&t->slock);
    free(old_idx);
    pl_map_kill(oldm);
    return 0;
}

static int ensure_room(pl_topic *t, int64_t len, int64_t nrecords) {
    int rc;
    while ((rc = ensure_room_once(t, len, nrecords)) == 1) {
        /* Waited for room (on_full=block) with wlock released: other
         * appends may have filled or rolled the active segment. */
        if ((rc = writable(t)) < 0) return rc;
    }
    return rc;
}

/* The 20-byte record header (docs/FORMAT.md) at p. */
static inline void put_record_header(uint8_t *p, int64_t ts, int64_t klen,
                                     int64_t vlen, int64_t hlen) {
    put64(p, (uint64_t)ts);
    put32(p + 8, (uint32_t)(int32_t)klen);
    put32(p + 12, (uint32_t)vlen);
    put32(p + 16, (uint32_t)hlen);
}

static inline uint8_t *put_record(uint8_t *p, int64_t ts, const uint8_t *key,
                                  int64_t klen, const uint8_t *val,
                                  int64_t vlen, const uint8_t *hdr,
                                  int64_t hlen) {
    put_record_header(p, ts, klen, vlen, hlen);
    p += PL_REC_HDR;
    if (klen > 0) {
        memcpy(p, key, (size_t)klen);
        p += klen;
    }
    memcpy(p, val, (size_t)vlen);
    p += vlen;
    if (hlen > 0) {
        memcpy(p, hdr, (size_t)hlen);
        p += hlen;
    }
    return p;
}

/* Batches of at least this many bytes are written with pwrite/pwritev;
 * smaller ones are built in the map. Writing a large batch through the
 * map faults in and zero-fills each page of the preallocated file before
 * the copy overwrites it (half of the time in profiles); pwrite of whole
 * pages skips that. The page cache is shared, so readers see the bytes
 * through the map either way. */
#define PL_PWRITE_MIN (32 * 1024)

/* Where to build a batch of len bytes: the map at the write position, or
 * (for a large one) the topic's scratch buffer. Caller holds wlock. */
static uint8_t *batch_buf(pl_topic *t, int64_t len) {
    pl_segment *s = t->active;
    uint8_t *in_map = s->map->base +
                      atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    if (len < PL_PWRITE_MIN) return in_map;
    if (len > t->scratch_cap) {
        uint8_t *b = realloc(t->scratch, (size_t)len);
        if (!b) return in_map; /* no memory: the map works too */
        t->scratch = b;
        t->scratch_cap = len;
    }
    return t->scratch;
}

/* Fill the batch header at h, all but its checksum (bytes 0..8), for a
 * batch at the write position; returns its base offset. Caller holds
 * wlock. */
static int64_t batch_header(pl_topic *t, uint8_t *h, int64_t len,
                            int64_t count, int64_t first_ts, int64_t max_ts) {
    int64_t base = atomic_load_explicit(&t->end_offset, memory_order_relaxed);
    put32(h + 8, (uint32_t)len);
    put32(h + 12, (uint32_t)count);
    put64(h + 16, (uint64_t)base);
    put64(h + 24, (uint64_t)first_ts);
    put64(h + 32, (uint64_t)max_ts);
    put32(h + 40, 0);
    put32(h + 44, 0);
    return base;
}

static int write_failed(pl_segment *s, int64_t len, int64_t pos) {
    return pl_err(PL_EIO, errno, "write of %" PRId64 " bytes at position %"
                  PRId64 " of %s failed", len, pos, s->path);
}

/* Publish the batch whose bytes are now at the write position (invariants
 * 2, 3). h holds its header and its records' headers as written (the
 * index reads record headers of a batch longer than the interval: a
 * single-record batch needs only the first, at h + PL_BATCH_HDR). */
static int64_t published(pl_topic *t, const uint8_t *h, int64_t len,
                         int64_t count, int64_t base, int64_t first_ts,
                         int64_t max_ts) {
    pl_segment *s = t->active;
    int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    pl_batch b = {pos, len, count, base, first_ts, max_ts, 0, 0};
    __atomic_store_n(&s->dirty, 1, __ATOMIC_RELAXED);
    atomic_store_explicit(&s->pub_pos, pos + len, memory_order_release);
    pl_seg_index_add(s, h, &b, t->cfg.index_interval_bytes);
    s->end = base + count;
    count_add(&t->n.appended_records, count);
    count_add(&t->n.appended_bytes, len);
    /* seq_cst: pairs with the watcher count (notify.c) */
    atomic_store(&t->end_offset, base + count);
    return base;
}

/* A batch written with pwritev (len >= PL_PWRITE_MIN) ends at a multiple
 * of this many bytes of the file, padded with zeros (never past the
 * preallocated cap). The page
 * cache gives a write large folios only at file offsets aligned to their
 * size: a write that starts where an unaligned one ended gets a run of
 * small ones (4 to 32 KiB), and the per-folio costs of the write and of
 * writeback made 64 KiB appends ~30% slower than aligned ones (and
 * append_batch of 1,000 100-byte records ~20% slower). Ending each
 * write on a boundary makes the next one start its new folios there. The
 * pad lies past the data, where the file holds zeros anyway (preallocated,
 * or zeroed by recovery), and the next write overwrites it. */
#define PL_WRITE_ALIGN (64 * 1024)
static const uint8_t zero_pad[PL_WRITE_ALIGN];

/* Append the zero pad that ends a write of len bytes at pos on a
 * PL_WRITE_ALIGN boundary (at most up to the segment's cap) to iov[n];
 * returns the new count. */
static int add_pad(const pl_segment *s, struct iovec *iov, int n,
                   int64_t pos, int64_t len) {
    int64_t end = pos + len;
    int64_t pad_end = (end + PL_WRITE_ALIGN - 1) & -(int64_t)PL_WRITE_ALIGN;
    if (pad_end > s->cap) pad_end = s->cap;
    if (pad_end > end)
        iov[n++] = (struct iovec){(void *)zero_pad, (size_t)(pad_end - end)};
    return n;
}

/* A batch built in a buffer: one pwritev of it and its pad. */
static int write_padded(const pl_segment *s, const uint8_t *h, int64_t len,
                        int64_t pos) {
    struct iovec iov[2] = {{(void *)h, (size_t)len}};
    return pl_io_pwritev(s->fd, iov, add_pad(s, iov, 1, pos, len), pos);
}

/* Finish the batch built at h (in the map at the write position, or in a
 * buffer): header, checksum, the write fault point or the pwrite, then
 * publication. Caller holds wlock. */
static int64_t publish(pl_topic *t, uint8_t *h, int64_t len, int64_t count,
                       int64_t first_ts, int64_t max_ts) {
    pl_segment *s = t->active;
    int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    int in_map = h == s->map->base + pos;
    int64_t base = batch_header(t, h, len, count, first_ts, max_ts);
    put64(h, pl_xxh64(h + 8, (size_t)len - 8, 0));
    if ((in_map ? pl_io_write_map(h, (size_t)len)
                : write_padded(s, h, len, pos)) < 0)
        return write_failed(s, len, pos);
    return published(t, h, len, count, base, first_ts, max_ts);
}

/* A large single-record batch (len >= PL_PWRITE_MIN) written with no copy
 * of its data: only its headers are built (on the stack), the checksum is
 * computed over the pieces in order, and one pwritev writes [headers, key,
 * value, header block, zero pad] from the caller's buffers. Those must not
 * change during the call: the checksum is of the bytes as hashed, and a
 * batch whose bytes differ from it would be cut (with all after it) by
 * recovery. Caller holds wlock. */
static int64_t publish_record(pl_topic *t, int64_t len, int64_t ts,
                              const uint8_t *key, int64_t klen,
                              const uint8_t *val, int64_t vlen,
                              const uint8_t *hdr, int64_t hlen) {
    pl_segment *s = t->active;
    int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    uint8_t h[PL_BATCH_HDR + PL_REC_HDR];
    int64_t base = batch_header(t, h, len, 1, ts, ts);
    put_record_header(h + PL_BATCH_HDR, ts, klen, vlen, hlen);
    struct iovec iov[5];
    int n = 0;
    iov[n++] = (struct iovec){h, sizeof h};
    if (klen > 0) iov[n++] = (struct iovec){(void *)key, (size_t)klen};
    if (vlen > 0) iov[n++] = (struct iovec){(void *)val, (size_t)vlen};
    if (hlen > 0) iov[n++] = (struct iovec){(void *)hdr, (size_t)hlen};
    /* XXH64 of bytes 8..len: the pieces, less the checksum's own 8. */
    pl_xxh64_state x;
    pl_xxh64_reset(&x, 0);
    pl_xxh64_update(&x, h + 8, sizeof h - 8);
    for (int i = 1; i < n; i++)
        pl_xxh64_update(&x, iov[i].iov_base, iov[i].iov_len);
    put64(h, pl_xxh64_digest(&x));
    n = add_pad(s, iov, n, pos, len);
    if (pl_io_pwritev(s->fd, iov, n, pos) < 0)
        return write_failed(s, len, pos);
    return published(t, h, len, 1, base, ts, ts);
}

static int64_t finish_append(pl_topic *t, int64_t first) {
    int64_t end = atomic_load(&t->end_offset);
    pthread_mutex_unlock(&t->wlock);
    if (first < 0) return first;
    pl_notify_topic(t);
    if (t->cfg.sync_mode == PL_SYNC_ALWAYS) {
        int rc = sync_to(t, end);
        if (rc < 0) return rc;
    }
    return first;
}

static int record_error(pl_topic *t, int64_t klen, int64_t vlen,
                        int64_t hlen, int64_t ts, int64_t i) {
    if (vlen < 0 || hlen < 0 || klen > INT32_MAX)
        return pl_err(PL_EINVAL, 0, "record %" PRId64 ": bad lengths", i);
    if (ts < 0 && ts != PL_TS_NOW)
        return pl_err(PL_EINVAL, 0, "record %" PRId64 ": negative timestamp "
                      "%" PRId64, i, ts);
    int64_t size = (klen > 0 ? klen : 0) + vlen + hlen;
    return pl_err(PL_ETOOBIG, 0, "record %" PRId64 " of %" PRId64
                  " bytes exceeds max_record_bytes=%" PRId64 " in %s", i,
                  size, t->cfg.max_record_bytes, t->dir);
}

/* 0, or the error for record i (inline: append_batch checks every record,
 * and the call showed in its profiles). */
static inline int check_record(pl_topic *t, int64_t klen, int64_t vlen,
                               int64_t hlen, int64_t ts, int64_t i) {
    if (vlen >= 0 && hlen >= 0 && klen <= INT32_MAX &&
        (ts >= 0 || ts == PL_TS_NOW) &&
        (klen > 0 ? klen : 0) + vlen + hlen <= t->cfg.max_record_bytes)
        return 0;
    return record_error(t, klen, vlen, hlen, ts, i);
}

int64_t pl_topic_append(pl_topic *t, const uint8_t *key, int64_t klen,
                        const uint8_t *val, int64_t vlen, const uint8_t *hdr,
                        int64_t hlen, int64_t ts) {
    if (!key) klen = -1;
    if (!hdr) hlen = 0;
    int rc = check_record(t, klen, vlen, hlen, ts, 0);
    if (rc < 0) return rc;
    int64_t len = PL_BATCH_HDR + PL_REC_HDR + (klen > 0 ? klen : 0) + vlen +
                  hlen;
    pthread_mutex_lock(&t->wlock);
    if ((rc = writable(t)) < 0 || (rc = ensure_room(t, len, 1)) < 0) {
        pthread_mutex_unlock(&t->wlock);
        return rc;
    }
    if (ts == PL_TS_NOW) ts = pl_now_ms();
    if (len >= PL_PWRITE_MIN)
        return finish_append(t, publish_record(t, len, ts, key, klen, val,
                                               vlen, hdr, hlen));
    uint8_t *h = batch_buf(t, len); /* small: in the map */
    put_record(h + PL_BATCH_HDR, ts, key, klen, val, vlen, hdr, hlen);
    return finish_append(t, publish(t, h, len, 1, ts, ts));
}

int64_t pl_topic_append_value(pl_topic *t, const uint8_t *val, int64_t vlen) {
    return pl_topic_append(t, NULL, -1, val, vlen, NULL, 0, PL_TS_NOW);
}

int64_t pl_topic_append_batch(pl_topic *t, int64_t n, const uint8_t *vals,
                              const int64_t *vlens, const uint8_t *keys,
                              const int64_t *klens, const uint8_t *hdrs,
                              const int64_t *hlens, const int64_t *ts) {
    if (n < 1 || n > UINT32_MAX)
        return pl_err(PL_EINVAL, 0, "a batch holds 1 to 2^32-1 records, not %"
                      PRId64, n);
    int64_t len = PL_BATCH_HDR;
    for (int64_t i = 0; i < n; i++) {
        int64_t kl = keys && klens ? klens[i] : -1;
        int64_t hl = hdrs && hlens ? hlens[i] : 0;
        int rc = check_record(t, kl, vlens[i], hl, ts ? ts[i] : PL_TS_NOW, i);
        if (rc < 0) return rc;
        len += PL_REC_HDR + (kl > 0 ? kl : 0) + vlens[i] + hl;
        if (len > PL_SEG_MAX - PL_SEG_HDR)
            return pl_err(PL_ETOOBIG, 0, "a batch of %" PRId64 " records "
                          "exceeds the 4 GiB segment limit", n);
    }
    pthread_mutex_lock(&t->wlock);
    int rc;
    if ((rc = writable(t)) < 0 || (rc = ensure_room(t, len, n)) < 0) {
        pthread_mutex_unlock(&t->wlock);
        return rc;
    }
    int64_t now = ts ? 0 : pl_now_ms();
    int64_t first_ts = 0, max_ts = INT64_MIN;
    uint8_t *batch = batch_buf(t, len);
    uint8_t *p = batch + PL_BATCH_HDR;
    const uint8_t *k = keys, *v = vals, *h = hdrs;
    for (int64_t i = 0; i < n; i++) {
        int64_t kl = keys && klens ? klens[i] : -1;
        int64_t hl = hdrs && hlens ? hlens[i] : 0;
        int64_t r_ts = ts && ts[i] != PL_TS_NOW ? ts[i] : (ts ? pl_now_ms()
                                                               : now);
        if (i == 0) first_ts = r_ts;
        if (r_ts > max_ts) max_ts = r_ts;
        p = put_record(p, r_ts, k, kl, v, vlens[i], h, hl);
        if (kl > 0) k += kl;
        v += vlens[i];
        if (hl > 0) h += hl;
    }
    return finish_append(t, publish(t, batch, len, n, first_ts, max_ts));
}

/* ---- reads -------------------------------------------------------------------- */

/* Index of the segment holding offset (caller holds slock). */
static int64_t find_segment(pl_topic *t, int64_t offset) {
    int64_t lo = 0, hi = t->nsegs; /* first with base > offset */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (t->segs[mid]->base <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

static int corrupt(pl_segment *s, int64_t pos, int64_t offset,
                   const char *what) {
    return pl_err(PL_ECORRUPT, 0, "%s in %s at byte %" PRId64
                  " (reading offset %" PRId64 ")", what, s->path, pos, offset);
}

/* Check the batch at b (invariant 2): trusted segments were verified when
 * written or recovered; others verify once, extending `verified` when the
 * batch continues the verified prefix. */
static int verify_batch(pl_segment *s, const pl_batch *b, int64_t offset) {
    if (s->trusted ||
        b->pos + b->len <= atomic_load_explicit(&s->verified,
                                                memory_order_acquire))
        return 0;
    const uint8_t *d = s->map->base;
    if (!pl_batch_checksum_ok(d, b))
        return corrupt(s, b->pos, offset, "checksum mismatch");
    if (!pl_batch_records_ok(d, b))
        return corrupt(s, b->pos, offset, "records do not fill the batch");
    int64_t expect = b->pos;
    atomic_compare_exchange_strong(&s->verified, &expect, b->pos + b->len);
    return 0;
}

static void start_at_first(pl_batch *b) {
    b->rec_pos = b->pos + PL_BATCH_HDR;
    b->rec_off = b->base;
}

/* Find the batch holding offset in segment s, reading below limit; set
 * b->rec_pos/rec_off to the nearest record the index knows (invariant 5:
 * what the index points at is checked, not trusted). */
static int seek_batch(pl_segment *s, int64_t limit, int64_t offset,
                      pl_batch *b) {
    const uint8_t *d = s->map->base;
    pl_idx_entry e = pl_seg_index_find(s, offset - s->base);
    int64_t pos = e.batch_pos;
    for (;;) {
        int r = pl_batch_parse(d, limit, pos, b);
        if (r == 0) return corrupt(s, pos, offset, "data ends early");
        if (r < 0) return corrupt(s, pos, offset, "invalid batch header");
        if (b->base > offset) return corrupt(s, pos, offset, "offset gap");
        if (b->base + b->count > offset) break;
        pos += b->len;
    }
    start_at_first(b);
    if (b->pos == e.batch_pos && e.pos > e.batch_pos) {
        int64_t eoff = s->base + e.rel;
        /* pl_seg_index_add may index a batch's first record (when the
         * batch itself was not yet due but its first record is): such an
         * entry is valid iff it points right after the batch header. */
        if (eoff < b->base || eoff >= b->base + b->count ||
            e.pos >= b->pos + b->len ||
            (eoff == b->base && e.pos != b->pos + PL_BATCH_HDR))
            return corrupt(s, e.pos, offset, "index entry outside its batch");
        b->rec_pos = e.pos;
        b->rec_off = eoff;
    }
    return verify_batch(s, b, offset);
}

/* Prepare segment i for reading: lazy load (invariant 7). */
static int segment_ready(pl_topic *t, int64_t i, int64_t offset) {
    pl_segment *s = t->segs[i];
    if (s->sealed) {
        int rc = segment_load(t, s, t->segs[i + 1]->base);
        if (rc < 0) return rc;
        if (s->bad_pos == 0) {
            /* A valid header of another format version is not damage:
             * say so, as segment_recover does for the active segment. */
            const uint8_t *h = s->map->base;
            if (s->cap >= PL_SEG_HDR &&
                pl_seg_header_check(h, s->base) == -PL_EFORMAT)
                return pl_err(PL_EFORMAT, 0, "segment %s has format version "
                              "%u; this pylog reads version %d (reading "
                              "offset %" PRId64 ")", s->path, get32(h + 8),
                              PL_FORMAT_VERSION, offset);
            return corrupt(s, 0, offset, "invalid segment header");
        }
    }
    return 0;
}

/* Decode the records of batch b from `offset` into meta. Returns how many
 * were written, or a negative code if the batch is malformed. */
static int decode_batch(pl_segment *s, const pl_batch *b, int64_t offset,
                        int max, int64_t *bytes, int64_t max_bytes,
                        int64_t *meta) {
    const uint8_t *d = s->map->base;
    int64_t p = b->rec_pos, end = b->pos + b->len;
    int n = 0;
    for (int64_t i = b->rec_off - b->base; i < b->count && n < max; i++) {
        if (end - p < PL_REC_HDR)
            return corrupt(s, b->pos, offset, "record overruns its batch");
        const uint8_t *r = d + p;
        int64_t klen = (int32_t)get32(r + 8), vlen = get32(r + 12),
                hlen = get32(r + 16);
        int64_t kbytes = klen > 0 ? klen : 0;
        if (klen < -1 || PL_REC_HDR + kbytes + vlen + hlen > end - p)
            return corrupt(s, b->pos, offset, "record overruns its batch");
        if (b->base + i >= offset) {
            if (max_bytes > 0 && n > 0 && *bytes >= max_bytes) break;
            int64_t *m = meta + (int64_t)PL_META * n;
            m[PL_M_OFFSET] = b->base + i;
            m[PL_M_TS] = (int64_t)get64(r);
            m[PL_M_KPOS] = p + PL_REC_HDR;
            m[PL_M_KLEN] = klen;
            m[PL_M_VPOS] = p + PL_REC_HDR + kbytes;
            m[PL_M_VLEN] = vlen;
            m[PL_M_HPOS] = p + PL_REC_HDR + kbytes + vlen;
            m[PL_M_HLEN] = hlen;
            *bytes += kbytes + vlen;
            n++;
        }
        p += PL_REC_HDR + kbytes + vlen + hlen;
    }
    return n;
}

int pl_topic_read(pl_topic *t, int64_t offset, int max_records,
                  int64_t max_bytes, int64_t *meta, pl_map *known,
                  pl_map **map_out) {
    int rc = 0, n = 0;
    *map_out = NULL;
    if (max_records < 1)
        return pl_err(PL_EINVAL, 0, "max_records must be >= 1");
    pthread_rwlock_rdlock(&t->slock);
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        goto out;
    }
    int64_t end = atomic_load_explicit(&t->end_offset, memory_order_acquire);
    int64_t start = atomic_load(&t->start_offset);
    if (offset < start || offset > end) {
        rc = pl_err(PL_ERANGE, 0, "offset %" PRId64 " is outside [%" PRId64
                    ", %" PRId64 "] of %s", offset, start, end, t->dir);
        goto out;
    }
    if (offset == end) goto out;
    int64_t i = find_segment(t, offset);
    if ((rc = segment_ready(t, i, offset)) < 0) goto out;
    pl_segment *s = t->segs[i];
    /* Load the limit after the index lookup in seek_batch could only make
     * it larger; loading it first is safe too: end_offset was published
     * after pub_pos, so every batch below `end` lies below it. */
    int64_t limit = atomic_load_explicit(&s->pub_pos, memory_order_acquire);
    int64_t seg_end = s->sealed ? s->end : end;
    pl_batch b;
    if ((rc = seek_batch(s, limit, offset, &b)) < 0) goto out;
    int64_t bytes = 0, next = offset;
    for (;;) {
        int got = decode_batch(s, &b, next, max_records - n, &bytes,
                               max_bytes, meta + (int64_t)PL_META * n);
        if (got < 0) {
            rc = got;
            break;
        }
        n += got;
        next = b.base + b.count;
        if (n >= max_records || (max_bytes > 0 && bytes >= max_bytes) ||
            next >= seg_end || next >= end)
            break;
        int r = pl_batch_parse(s->map->base, limit, b.pos + b.len, &b);
        start_at_first(&b);
        if (r <= 0 || b.base != next) {
            rc = corrupt(s, b.pos, next, r == 0 ? "data ends early"
                                                : "invalid batch");
            break;
        }
        if ((rc = verify_batch(s, &b, next)) < 0) break;
    }
    if (n > 0) {
        rc = 0; /* return what was read; the next call meets the error */
        *map_out = s->map;
        if (s->map != known) pl_map_ref(s->map);
    }
out:
    pthread_rwlock_unlock(&t->slock);
    return rc < 0 ? rc : n;
}

int64_t pl_topic_offset_for_time(pl_topic *t, int64_t ts) {
    int64_t rc = -PL_ENOTFOUND;
    pthread_rwlock_rdlock(&t->slock);
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        goto out;
    }
    int64_t end = atomic_load_explicit(&t->end_offset, memory_order_acquire);
    for (int64_t i = 0; i < t->nsegs; i++) {
        pl_segment *s = t->segs[i];
        if (s->base >= end) break;
        int r = segment_ready(t, i, s->base);
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (s->sealed && s->bad_pos < 0 && s->max_ts < ts) continue;
        int64_t limit = atomic_load_explicit(&s->pub_pos, memory_order_acquire);
        int64_t seg_end = s->sealed ? s->end : end;
        int64_t pos = pl_seg_index_find_time(s, ts), next = -1;
        pl_batch b;
        while ((r = pl_batch_parse(s->map->base, limit, pos, &b)) > 0 &&
               b.base < seg_end && (next < 0 || b.base == next)) {
            if (b.max_ts >= ts) {
                start_at_first(&b);
                if ((r = verify_batch(s, &b, b.base)) < 0) {
                    rc = r;
                    goto out;
                }
                int64_t meta[PL_META], bytes = 0;
                for (int64_t o = b.base; o < b.base + b.count; o++) {
                    if ((r = decode_batch(s, &b, o, 1, &bytes, 0, meta)) < 0) {
                        rc = r;
                        goto out;
                    }
                    if (meta[PL_M_TS] >= ts) {
                        rc = o;
                        goto out;
                    }
                }
            }
            next = b.base + b.count;
            pos += b.len;
        }
        if (next >= 0 && next < seg_end) {
            rc = corrupt(s, pos, next, "invalid batch");
            goto out;
        }
    }
    pl_err(PL_ENOTFOUND, 0, "no record with timestamp >= %" PRId64 " in %s",
           ts, t->dir);
out:
    pthread_rwlock_unlock(&t->slock);
    return rc;
}

int64_t pl_topic_start_offset(pl_topic *t) {
    return atomic_load(&t->start_offset);
}
int64_t pl_topic_end_offset(pl_topic *t) { return atomic_load(&t->end_offset); }
int64_t pl_topic_durable_offset(pl_topic *t) {
    int64_t d = atomic_load(&t->durable), s = atomic_load(&t->start_offset);
    return d > s ? d : s; /* retention may have moved start past it */
}

int64_t pl_topic_segment_count(pl_topic *t) {
    pthread_rwlock_rdlock(&t->slock);
    int64_t n = t->nsegs;
    pthread_rwlock_unlock(&t->slock);
    return n;
}

int pl_seg_ensure_loaded(pl_topic *t, int64_t i) {
    pthread_rwlock_rdlock(&t->slock);
    int rc = t->segs[i]->sealed ? segment_load(t, t->segs[i],
                                               t->segs[i + 1]->base)
                                : 0;
    pthread_rwlock_unlock(&t->slock);
    return rc;
}
