/*
 * follow.c -- reading a log that another process writes (read-only topics).
 *
 * A read-only topic (pl_config.readonly) never writes, recovers or
 * truncates anything, and works on a read-only file system. It learns what
 * the writer published from the files alone:
 *   - Segments are the BASE.log files of the directory. A new file named
 *     after the current end means the writer rolled (it cuts the old file
 *     to its data before it creates the new one); files gone at the front
 *     were deleted by retention. The directory is listed again when the
 *     next segment's name appears and at least every PL_RELIST_MS.
 *   - The last segment's data ends at its last batch whose checksum
 *     verifies. Its tail is read with pread into a private buffer, never
 *     through a map: the writer may still cut what lies past its data (a
 *     seal, or recovery after a crash), and a touch of a mapped page past
 *     the end of a file is a SIGBUS. A batch the writer is still writing,
 *     or one a crashed writer left torn, does not verify: readers stop
 *     before it until it does, or until a new writer recovers the log.
 *   - Only verified batches are ever read through maps: bytes the writer
 *     has published are never changed or cut.
 *   - The checkpoint gives durable_offset, the counters and lost ranges,
 *     and where the writer's synced data ends: batches before that in the
 *     last segment are parsed at open (to index them) and verified when
 *     first read, like a sealed segment's.
 * A follower thread (pl_follower) refreshes the topics consumers watch
 * every period and signals their notifiers on growth, so a poll or an
 * event loop wakes within about a period of another process's append.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PL_RELIST_MS 100

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Up to n bytes at off: the count read (short at the end of the file). */
static ssize_t pread_some(int fd, void *buf, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, off + got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Room for the entries a batch of len bytes can add to s's index (the
 * array moves under slock). */
static int reserve(pl_topic *t, pl_segment *s, int64_t len) {
    pl_idx_builder *ib = &s->ib;
    int64_t want = (int64_t)ib->n + 2 + len / t->cfg.index_interval_bytes;
    if (want <= ib->cap || want > UINT32_MAX) return 0;
    int64_t nc = ib->cap ? ib->cap : 16;
    while (nc < want) nc *= 2;
    pthread_rwlock_wrlock(&t->slock);
    pl_idx_entry *e = realloc(ib->e, (size_t)nc * sizeof *e);
    if (e) {
        ib->e = e;
        ib->cap = (uint32_t)nc;
    }
    pthread_rwlock_unlock(&t->slock);
    return e ? 0 : pl_err(PL_ENOMEM, 0, "out of memory");
}

/* Verify the batches past what is known of the last segment s. Sets
 * *grew. Caller holds wlock (the one refresher). */
static int tail_scan(pl_topic *t, pl_segment *s, int *grew) {
    int fd = pl_cache_fd(t->cache, s, 0);
    if (fd < 0) {
        if (errno == ENOENT) return 0; /* deleted: the listing will say */
        return pl_err(PL_EIO, errno, "cannot open segment %s", s->path);
    }
    int rc = 0;
    int64_t pos = atomic_load(&s->pub_pos);
    if (pos < PL_SEG_HDR) { /* the header is not checked yet */
        uint8_t h[PL_SEG_HDR];
        if (pread_some(fd, h, sizeof h, 0) != PL_SEG_HDR ||
            pl_seg_header_check(h, s->base) != 0)
            goto out; /* not written yet, or not readable: nothing */
        pos = PL_SEG_HDR;
        atomic_store(&s->pub_pos, pos);
    }
    for (;;) {
        uint8_t h[PL_BATCH_HDR];
        if (pread_some(fd, h, sizeof h, pos) != PL_BATCH_HDR) break;
        int64_t len = get32(h + 8), count = get32(h + 12);
        if (len < PL_BATCH_HDR + PL_REC_HDR || count == 0 ||
            (int64_t)get64(h + 16) != s->end || pos + len > PL_SEG_MAX)
            break; /* the end, or a batch not (yet) valid */
        if (len > t->scratch_cap) {
            uint8_t *b = realloc(t->scratch, (size_t)len);
            if (!b) {
                rc = pl_err(PL_ENOMEM, 0, "out of memory");
                break;
            }
            t->scratch = b;
            t->scratch_cap = len;
        }
        uint8_t *buf = t->scratch;
        if (pread_some(fd, buf, (size_t)len, pos) != len) break;
        pl_batch b;
        if (pl_batch_parse(buf, len, 0, &b) != 1 || b.len != len ||
            !pl_batch_checksum_ok(buf, &b) || !pl_batch_records_ok(buf, &b))
            break; /* still being written, or torn by a crash */
        if ((rc = reserve(t, s, len)) < 0) break;
        b.pos = pos; /* the index wants file positions */
        (void)pl_idx_add(&s->ib, s->base, buf, &b,
                         t->cfg.index_interval_bytes);
        atomic_store_explicit(&s->nidx, s->ib.n, memory_order_release);
        if (b.max_ts > s->max_ts) s->max_ts = b.max_ts;
        pos += len;
        s->end = b.base + b.count;
        atomic_store_explicit(&s->pub_pos, pos, memory_order_release);
        atomic_store(&t->end_offset, s->end);
        *grew = 1;
    }
out:
    pl_cache_fd_done(t->cache, s);
    return rc;
}

/* Index the part of the last segment the checkpoint says was synced
 * (parsed, not verified: it is verified when first read), so that the
 * tail scan starts there. */
static void index_synced_prefix(pl_topic *t, pl_segment *s, int64_t dpos,
                                int64_t doff) {
    int64_t size = 0;
    pl_map *m = pl_cache_map_file(t->cache, s, &size);
    if (!m) return;
    if (size >= dpos && dpos > PL_SEG_HDR &&
        pl_seg_header_check(m->base, s->base) == 0) {
        int64_t vend, eoff, mts;
        pl_seg_scan(m->base, PL_SEG_HDR, dpos, s->base, s->base, INT64_MAX,
                    dpos, t->cfg.index_interval_bytes, &s->ib, &vend, &eoff,
                    &mts);
        if (vend == dpos && eoff == doff) {
            atomic_store(&s->nidx, s->ib.n);
            s->max_ts = mts;
            s->end = eoff;
            atomic_store(&s->pub_pos, dpos);
            s->trusted_from = dpos; /* below: verified when read */
            atomic_store(&s->verified, PL_SEG_HDR);
        } else { /* not what the checkpoint said: verify it all */
            s->ib.n = 0;
            s->ib.last_pos = -1;
            s->ib.run_max_ts = INT64_MIN;
        }
    }
    pl_map_unref(m);
}

static int64_t size_of(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

static pl_segment *ro_segment(pl_topic *t, int64_t base, int sealed,
                              int64_t next) {
    pl_segment *s = pl_seg_new(t, base);
    if (!s) return NULL;
    s->file_bytes = size_of(s->path);
    char *ip = pl_seg_path(t->dir, base, ".idx");
    s->idx_bytes = size_of(ip);
    free(ip);
    s->sealed = sealed;
    s->end = sealed ? next : base;
    if (!sealed) {
        s->trusted_from = PL_SEG_HDR; /* the tail scan verifies */
        atomic_store(&s->pub_pos, 0); /* header not checked yet */
    }
    return s;
}

/* The checkpoint's view: durable offset, counters, lost ranges. */
static void read_checkpoint(pl_topic *t, pl_ckpt *ck, int *have) {
    *have = pl_ckpt_read(t->dir, ck) == 1;
    if (!*have) return;
    for (int i = 0; i < PL_NCOUNTERS; i++)
        atomic_store(&t->n[i], ck->counters[i]);
    for (int i = 0; i < ck->nlost; i++)
        pl_lost_add(t, ck->lost[i].from, ck->lost[i].to);
    atomic_store(&t->durable, ck->durable);
}

int pl_follow_open(pl_topic *t) {
    int64_t *bases = NULL, n = 0;
    int rc = pl_list_segments(t, &bases, &n);
    if (rc < 0) return rc;
    if (n == 0) {
        free(bases);
        return pl_err(PL_ENOTFOUND, 0, "topic %s has no segment yet",
                      t->dir);
    }
    pl_ckpt ck;
    int have;
    read_checkpoint(t, &ck, &have);
    for (int64_t i = 0; i < n && rc == 0; i++) {
        pl_segment *s = ro_segment(t, bases[i], i + 1 < n,
                                   i + 1 < n ? bases[i + 1] : 0);
        if (!s || pl_segs_reserve(t) < 0) {
            pl_seg_free(s);
            rc = pl_err(PL_ENOMEM, 0, "out of memory");
            break;
        }
        t->segs[t->nsegs++] = s;
    }
    free(bases);
    if (rc < 0) return rc;
    t->active = t->segs[t->nsegs - 1];
    if (have && ck.dseg == t->active->base)
        index_synced_prefix(t, t->active, ck.dpos, ck.durable);
    int grew = 0;
    pthread_mutex_lock(&t->wlock);
    rc = tail_scan(t, t->active, &grew);
    pthread_mutex_unlock(&t->wlock);
    atomic_store(&t->start_offset, t->segs[0]->base);
    atomic_store(&t->end_offset, t->active->end);
    t->last_list_ms = mono_ms();
    return rc;
}

/* The directory changed: drop segments retention deleted, take the
 * segments the writer added (sealing the last one we knew). Caller holds
 * wlock. */
static int relist(pl_topic *t, int *grew) {
    int64_t *bases = NULL, n = 0;
    int rc = pl_list_segments(t, &bases, &n);
    t->last_list_ms = mono_ms();
    if (rc < 0 || n == 0) {
        free(bases);
        return rc;
    }
    /* Retention deleted the oldest segments. */
    while (t->nsegs > 1 && t->segs[0]->base < bases[0]) {
        pl_segment *s = t->segs[0];
        pthread_rwlock_wrlock(&t->slock);
        memmove(t->segs, t->segs + 1,
                (size_t)(t->nsegs - 1) * sizeof *t->segs);
        t->nsegs--;
        atomic_store(&t->start_offset, t->segs[0]->base);
        pthread_rwlock_unlock(&t->slock);
        pl_seg_free(s);
        *grew = 1;
    }
    /* The writer rolled: the last segment we knew is sealed now. */
    pl_segment *last = t->segs[t->nsegs - 1];
    int64_t k = 0;
    while (k < n && bases[k] <= last->base) k++;
    if (k < n) {
        /* what the writer wrote before it rolled */
        if ((rc = tail_scan(t, last, grew)) < 0) goto out;
        for (int64_t i = k; i < n; i++) {
            pl_segment *s = ro_segment(t, bases[i], 0, 0);
            pthread_rwlock_wrlock(&t->slock);
            rc = s ? pl_segs_reserve(t) : pl_err(PL_ENOMEM, 0, "out of "
                                                 "memory");
            if (rc == 0) {
                pl_segment *prev = t->segs[t->nsegs - 1];
                prev->sealed = 1;
                prev->end = s->base; /* until loaded (read.c) */
                prev->loaded_once = 0;
                free(prev->ib.e);
                memset(&prev->ib, 0, sizeof prev->ib);
                atomic_store(&prev->nidx, 0);
                prev->trusted_from = INT64_MAX;
                t->segs[t->nsegs++] = s;
                t->active = s;
            }
            pthread_rwlock_unlock(&t->slock);
            if (rc < 0) {
                pl_seg_free(s);
                goto out;
            }
            /* its maps were of the growing file: map it anew, whole (a
             * reader may be mapping it now: its descriptor stays then) */
            pl_cache_sealed(t->cache, t->segs[t->nsegs - 2]);
        }
        *grew = 1;
        if ((rc = tail_scan(t, t->active, grew)) < 0) goto out;
    }
    pl_ckpt ck;
    int have;
    read_checkpoint(t, &ck, &have);
out:
    free(bases);
    return rc;
}

int pl_topic_refresh(pl_topic *t) {
    if (!t->cfg.readonly) return 0;
    pthread_mutex_lock(&t->wlock);
    int grew = 0, rc = 0;
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        goto out;
    }
    /* Until nothing more: a roll found by the listing leaves new batches
     * in the new segment, which may itself have rolled meanwhile. */
    for (int round = 0; round < 64; round++) {
        int more = 0;
        if ((rc = tail_scan(t, t->active, &more)) < 0) goto out;
        /* A file named after the end: the writer rolled. */
        char *next = pl_seg_path(t->dir, atomic_load(&t->end_offset), ".log");
        struct stat st;
        int rolled = next && stat(next, &st) == 0;
        free(next);
        int listed = 0;
        if (rolled || atomic_exchange(&t->relist, 0) ||
            (!grew && !more &&
             mono_ms() - t->last_list_ms >= PL_RELIST_MS)) {
            if ((rc = relist(t, &listed)) < 0) goto out;
        }
        grew |= more | listed;
        if (!listed) break;
    }
out:
    pthread_mutex_unlock(&t->wlock);
    return rc < 0 ? rc : grew;
}

int pl_topic_sync_ro(pl_topic *t, int64_t offset) {
    /* A reader's commit must not be durable before its records: it syncs
     * them itself (fdatasync works on a read-only descriptor). */
    int rc = 0;
    pthread_rwlock_rdlock(&t->slock);
    int64_t durable = atomic_load(&t->durable);
    for (int64_t i = 0; i < t->nsegs && rc == 0; i++) {
        pl_segment *s = t->segs[i];
        int64_t next = i + 1 < t->nsegs ? t->segs[i + 1]->base : INT64_MAX;
        if (next <= durable || s->base >= offset) continue;
        int fd = pl_io_open(s->path, O_RDONLY, 0);
        if (fd < 0) {
            if (errno == ENOENT) continue; /* deleted by retention */
            rc = pl_err(PL_EIO, errno, "cannot open %s to sync it", s->path);
        } else if (pl_io_fdatasync(fd) < 0) {
            rc = pl_err(PL_EIO, errno, "fdatasync of %s failed", s->path);
        }
        pl_io_close(fd);
    }
    pthread_rwlock_unlock(&t->slock);
    if (rc == 0 && offset > atomic_load(&t->durable))
        atomic_store(&t->durable, offset);
    return rc;
}

/* ---- the follower thread ---------------------------------------------------- */
struct pl_follower {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pl_topic **topics;
    int n, cap;
    int stop;
    int64_t period_us;
};

static void *follower_main(void *arg) {
    pl_follower *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        for (int i = 0; i < f->n; i++) {
            pl_topic *t = f->topics[i];
            if (atomic_load(&t->nwatch) > 0 && pl_topic_refresh(t) > 0)
                pl_notify_topic(t);
        }
        struct timespec dl = pl_deadline(CLOCK_MONOTONIC, 0);
        int64_t ns = dl.tv_nsec + f->period_us * 1000;
        dl.tv_sec += ns / 1000000000;
        dl.tv_nsec = ns % 1000000000;
        while (!f->stop &&
               pthread_cond_timedwait(&f->cv, &f->mu, &dl) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int pl_follower_new(int64_t period_us, pl_follower **out) {
    if (period_us < 100)
        return pl_err(PL_EINVAL, 0, "a follower period is >= 100 us");
    pl_follower *f = calloc(1, sizeof *f);
    if (!f) return pl_err(PL_ENOMEM, 0, "out of memory");
    f->period_us = period_us;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&f->th, NULL, follower_main, f) != 0) {
        int e = errno;
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->cv);
        free(f);
        return pl_err(PL_EIO, e, "cannot start the follower thread");
    }
    *out = f;
    return 0;
}

int pl_follower_add(pl_follower *f, pl_topic *t) {
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n; i++)
        if (f->topics[i] == t) goto out;
    if (f->n == f->cap) {
        int nc = f->cap ? f->cap * 2 : 8;
        pl_topic **nt = realloc(f->topics, (size_t)nc * sizeof *nt);
        if (!nt) {
            rc = pl_err(PL_ENOMEM, 0, "out of memory");
            goto out;
        }
        f->topics = nt;
        f->cap = nc;
    }
    f->topics[f->n++] = t;
out:
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void pl_follower_remove(pl_follower *f, pl_topic *t) {
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n; i++)
        if (f->topics[i] == t) {
            f->topics[i] = f->topics[--f->n];
            break;
        }
    pthread_mutex_unlock(&f->mu);
}

void pl_follower_free(pl_follower *f) {
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->topics);
    free(f);
}
