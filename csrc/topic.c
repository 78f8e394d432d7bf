/*
 * topic.c -- a topic: an ordered list of segments, the last one active
 * (appended to), the others sealed (read-only, truncated to their data).
 * Open and close, the segment list, lost ranges, positions and stats; the
 * write path is in append.c, the read path in read.c, recovery in
 * recover.c, durability in sync.c, retention in retention.c.
 *
 * Invariants (comments and checks in every file refer to them by number):
 *  1. Offsets strictly increase; a segment's file name is its base offset;
 *     segment i holds offsets in [base_i, base_{i+1}), densely from base_i
 *     up to its data end. Offsets between a segment's data end and the
 *     next base are a lost range (9), never readable.
 *  2. A batch is the unit of atomicity: readers see a batch only after all
 *     of its bytes and its checksum are in the page cache (pub_pos is
 *     stored with release after the write), and recovery keeps a batch
 *     only if its checksum verifies.
 *  3. An append that returned is in the page cache (maps are MAP_SHARED,
 *     pwrite goes through it), so it survives a crash of the process, and
 *     is visible to every reader in the process.
 *  4. PL_SYNC_ALWAYS: an append returns after an fdatasync that covers it
 *     (group commit: one fsync serves every waiting appender). Otherwise
 *     the caller syncs (pl_topic_flush) on its schedule. durable_offset is
 *     only raised after a successful fdatasync; a failed one makes the
 *     topic fail every later append (sticky, PL_EFAILED).
 *  5. Indexes are derived: rebuilt by scans, trusted only if their
 *     checksum and header match the segment, and what a lookup through
 *     them lands on is verified.
 *  6. Open never fails on bad data: what does not verify above the
 *     checkpoint is cut; a sealed segment below it is checked when first
 *     read and its bad range reported.
 *  7. Open reads only what was not known durable (recover.c), so open time
 *     and memory do not grow with the backlog.
 *  8. A map is unmapped only at its last reference (io.c): the file cache
 *     and every reader handing out zero-copy views hold one.
 *  9. Offsets are never reused: whatever a crash or an operator loses, the
 *     next append gets an offset above every offset that anything durable
 *     says existed, and the missing range is recorded as lost.
 * 10. Descriptors and maps kept between calls are entries of the file
 *     cache (fcache.c), bounded by its limits; the active segment's file
 *     grows with its data, so disk follows the data.
 *
 * Locks, always taken in this order: wlock (one writer), slock (segment
 * list; readers share it), load_mu (loading a sealed segment), sync_mu
 * (group commit, the checkpoint), lost_mu, then the file cache's mutex.
 * watch_mu (notify.c) is taken without these, and only a notifier's own
 * lock inside it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

int64_t pl_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the segment list ------------------------------------------------------- */

/* Room for one more segment in the list. Callers that may race with
 * readers hold slock (write): realloc moves the array. */
int pl_segs_reserve(pl_topic *t) {
    if (t->nsegs < t->segcap) return 0;
    int64_t nc = t->segcap ? t->segcap * 2 : 16;
    pl_segment **ns = realloc(t->segs, (size_t)nc * sizeof *ns);
    if (!ns) return pl_err(PL_ENOMEM, 0, "out of memory");
    t->segs = ns;
    t->segcap = nc;
    return 0;
}

/* Index of the segment holding offset (caller holds slock). */
int64_t pl_find_segment(pl_topic *t, int64_t offset) {
    int64_t lo = 0, hi = t->nsegs; /* first with base > offset */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (t->segs[mid]->base <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 ? lo - 1 : 0;
}

/* ---- lost ranges (invariant 9) ------------------------------------------------ */
int64_t pl_lost_add(pl_topic *t, int64_t from, int64_t to) {
    if (from >= to) return 0;
    pthread_mutex_lock(&t->lost_mu);
    int64_t known = 0; /* offsets of [from, to) already covered */
    for (int k = 0; k < t->nlost; k++) {
        int64_t a = t->lost[k].from > from ? t->lost[k].from : from;
        int64_t b = t->lost[k].to < to ? t->lost[k].to : to;
        if (b > a) known += b - a;
    }
    int64_t fresh = (to - from) - known;
    /* Merge with every range it touches; keep the list sorted. */
    int i = 0;
    while (i < t->nlost && t->lost[i].to < from) i++;
    int j = i;
    while (j < t->nlost && t->lost[j].from <= to) {
        if (t->lost[j].from < from) from = t->lost[j].from;
        if (t->lost[j].to > to) to = t->lost[j].to;
        j++;
    }
    if (j == i && t->nlost == t->lost_cap) {
        int nc = t->lost_cap ? t->lost_cap * 2 : 4;
        pl_range *nl = realloc(t->lost, (size_t)nc * sizeof *nl);
        if (!nl) { /* not recorded: reads still report what they meet */
            pthread_mutex_unlock(&t->lost_mu);
            return fresh;
        }
        t->lost = nl;
        t->lost_cap = nc;
    }
    if (j == i) {
        memmove(t->lost + i + 1, t->lost + i,
                (size_t)(t->nlost - i) * sizeof *t->lost);
        t->nlost++;
    } else if (j > i + 1) {
        memmove(t->lost + i + 1, t->lost + j,
                (size_t)(t->nlost - j) * sizeof *t->lost);
        t->nlost -= j - i - 1;
    }
    t->lost[i].from = from;
    t->lost[i].to = to;
    pthread_mutex_unlock(&t->lost_mu);
    return fresh;
}

int pl_lost_find(pl_topic *t, int64_t offset, pl_range *r) {
    int found = 0;
    pthread_mutex_lock(&t->lost_mu);
    for (int i = 0; i < t->nlost && !found; i++)
        if (t->lost[i].from <= offset && offset < t->lost[i].to) {
            *r = t->lost[i];
            found = 1;
        }
    pthread_mutex_unlock(&t->lost_mu);
    return found;
}

int pl_topic_lost(pl_topic *t, int64_t *out, int max) {
    pthread_mutex_lock(&t->lost_mu);
    int n = t->nlost;
    for (int i = 0; i < n && i < max; i++) {
        out[2 * i] = t->lost[i].from;
        out[2 * i + 1] = t->lost[i].to;
    }
    pthread_mutex_unlock(&t->lost_mu);
    return n;
}

/* ---- open / close ----------------------------------------------------------- */

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
    if (c->retention_ms < 0 || c->retention_bytes < 0 || c->max_bytes < 0 ||
        c->full_timeout_ms < 0)
        return pl_err(PL_EINVAL, 0, "retention_ms, retention_bytes, "
                      "max_bytes and full_timeout_ms must be >= 0");
    if (c->on_full < PL_FULL_DROP_OLDEST || c->on_full > PL_FULL_BLOCK)
        return pl_err(PL_EINVAL, 0, "unknown on_full policy %d", c->on_full);
    /* The cap must hold the segment being sealed and the new one, each
     * with its largest index: retention can then free a segment while a
     * full one is being written. */
    int64_t seg = c->segment_bytes + PL_IDX_HDR +
                  (c->segment_bytes / c->index_interval_bytes + 2) *
                      PL_IDX_ENTRY;
    if (c->max_bytes > 0 && c->max_bytes < 2 * seg)
        return pl_err(PL_EINVAL, 0, "max_bytes=%" PRId64 " cannot hold two "
                      "segments of segment_bytes=%" PRId64 " with their "
                      "indexes: use at least %" PRId64 " (or a smaller "
                      "segment_bytes)", c->max_bytes, c->segment_bytes,
                      2 * seg);
    return 0;
}

/* How much the active file grows at a time: 64 KiB, less for a small cap
 * (so that the cap holds data, not allocation). */
static int64_t grow_step(const pl_config *c) {
    int64_t step = 64 * 1024;
    if (c->max_bytes > 0 && c->max_bytes / 32 < step)
        step = pl_align_up(c->max_bytes / 32, PL_GROW_ALIGN);
    return step;
}

int pl_topic_open(const char *dir, const pl_config *cfg, pl_cache *cache,
                  int64_t min_end, pl_topic **out) {
    int rc = validate_config(cfg);
    if (rc < 0) return rc;
    if (!cache) return pl_err(PL_EINVAL, 0, "no file cache");
    pl_topic *t = calloc(1, sizeof *t);
    if (!t || !(t->dir = strdup(dir))) {
        free(t);
        return pl_err(PL_ENOMEM, 0, "out of memory");
    }
    t->cfg = *cfg;
    t->cache = cache;
    pl_cache_ref(cache);
    pl_cache_add_topic(cache, 1);
    t->grow_step = grow_step(cfg);
    pthread_mutex_init(&t->wlock, NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&t->slock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&t->load_mu, NULL);
    pthread_mutex_init(&t->sync_mu, NULL);
    pthread_mutex_init(&t->lost_mu, NULL);
    pthread_cond_init(&t->sync_cv, NULL);
    pthread_mutex_init(&t->watch_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->room_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (cfg->readonly) {
        if ((rc = pl_follow_open(t)) < 0) goto fail;
    } else {
        if ((rc = pl_recover(t, min_end)) < 0) goto fail;
        pl_retention_apply_locked(t); /* no other thread has it yet */
        if (t->fresh) {
            /* A new topic's write window, its first page written (a zero
             * over a zero) after the sync that ended the open: the first
             * append then takes no fault (a write fault after a sync costs
             * the file system a journal update). */
            pl_map *w = pl_cache_wmap(t->cache, t->active, PL_SEG_HDR, 1);
            if (w) {
                ((volatile uint8_t *)w->base)[PL_SEG_HDR - w->off] = 0;
                pl_map_unref(w);
            }
        }
    }
    t->opened = 1;
    *out = t;
    return 0;
fail:
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
    /* A topic whose open failed changes nothing on disk here. A clean
     * close cuts the active file to its data, writes its index and syncs
     * everything, so the next open trusts it without a scan (recover.c).
     * Best effort for the cut and the index: without them the next open
     * scans instead. */
    if (t->opened && !atomic_load(&t->failed) && !t->cfg.readonly) {
        pl_segment *s = t->active;
        int64_t used = atomic_load(&s->pub_pos);
        int fd = pl_cache_fd(t->cache, s, 1);
        int cut = fd >= 0 && pl_io_ftruncate(fd, used) == 0;
        if (fd >= 0) pl_cache_fd_done(t->cache, s);
        if (cut) {
            s->alloc = s->file_bytes = used;
            if (pl_seg_index_write(t->dir, s->base, s->end, used, s->max_ts,
                                   s->ib.e, s->ib.n) < 0)
                cut = 0;
        }
        s->dirty = 1;
        rc = pl_flush_all(t, 1, cut);
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
    if (t->opened) pl_topic_close(t);
    for (int64_t i = 0; i < t->nsegs; i++) pl_seg_free(t->segs[i]);
    free(t->segs);
    pthread_mutex_destroy(&t->wlock);
    pthread_rwlock_destroy(&t->slock);
    pthread_mutex_destroy(&t->load_mu);
    pthread_mutex_destroy(&t->sync_mu);
    pthread_mutex_destroy(&t->lost_mu);
    pthread_cond_destroy(&t->sync_cv);
    pthread_mutex_destroy(&t->watch_mu);
    pthread_cond_destroy(&t->room_cv);
    free(t->watchers);
    free(t->scratch);
    free(t->lost);
    free(t->dir);
    if (t->cache) {
        pl_cache_add_topic(t->cache, -1);
        pl_cache_free(t->cache);
    }
    free(t);
}

int64_t pl_topic_truncated_bytes(pl_topic *t) { return t->truncated; }

/* ---- positions and stats -------------------------------------------------------- */

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

int pl_topic_stats(pl_topic *t, pl_stats *o) {
    pthread_rwlock_rdlock(&t->slock);
    if (atomic_load(&t->closed)) {
        pthread_rwlock_unlock(&t->slock);
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    }
    o->segments = t->nsegs;
    o->bytes_on_disk = pl_disk_total(t);
    pthread_rwlock_unlock(&t->slock);
    o->start_offset = atomic_load(&t->start_offset);
    o->end_offset = atomic_load(&t->end_offset);
    o->durable_offset = pl_topic_durable_offset(t);
    o->truncated_bytes = t->truncated;
    o->appended_records = atomic_load(&t->n[PL_N_APPENDED_RECORDS]);
    o->appended_bytes = atomic_load(&t->n[PL_N_APPENDED_BYTES]);
    o->retention_dropped_records = atomic_load(&t->n[PL_N_RETENTION_RECORDS]);
    o->retention_dropped_bytes = atomic_load(&t->n[PL_N_RETENTION_BYTES]);
    o->full_dropped_records = atomic_load(&t->n[PL_N_FULL_RECORDS]);
    o->full_dropped_bytes = atomic_load(&t->n[PL_N_FULL_BYTES]);
    o->rejected_records = atomic_load(&t->n[PL_N_REJECTED_RECORDS]);
    o->lost_records = atomic_load(&t->n[PL_N_LOST_RECORDS]);
    o->rejected_bytes = atomic_load(&t->n[PL_N_REJECTED_BYTES]);
    pthread_mutex_lock(&t->lost_mu);
    o->lost_ranges = t->nlost;
    pthread_mutex_unlock(&t->lost_mu);
    return 0;
}
