/*
 * retention.c -- bounded disk: retention and the max_bytes cap.
 *
 * Only whole sealed segments are deleted, oldest first, so start_offset
 * moves forward and offsets stay dense above it (invariant 1). The active
 * segment is never deleted.
 *
 * Deleting a segment (delete_first):
 *   1. under slock (write): take it off the list, raise start_offset;
 *   2. unlink BASE.log, then BASE.idx;
 *   3. drop the segment's map reference (views of it stay valid: inv. 8).
 * A crash between 1 and 2 leaves the file: it is a segment again at the
 * next open (nothing lost that was not meant to be). A crash between the
 * two unlinks leaves an .idx without its .log, which open removes.
 *
 * Policy, evaluated at open, at every roll, at pl_topic_set_floor and at
 * pl_topic_apply_retention (all under wlock):
 *   - retain_until_consumed: a segment wholly below the floor (every group
 *     has committed past it) is deleted; one above it is protected from
 *     retention_ms and retention_bytes.
 *   - retention_ms: a segment whose newest record is older is deleted.
 *   - retention_bytes: the oldest segments go while the topic is larger.
 *   - max_bytes (pl_retention_make_room, before a segment is created or
 *     grown): if the new total would exceed it, first retention as above,
 *     then on_full: drop_oldest deletes (even protected) segments and counts
 *     them; reject fails the append; block waits on room_cv (woken by
 *     pl_topic_set_floor and pl_topic_apply_retention) up to
 *     full_timeout_ms, then fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

enum { DROP_RETENTION, DROP_FULL };

int64_t pl_seg_disk_bytes(const pl_segment *s) {
    return s->file_bytes + s->idx_bytes;
}

int64_t pl_disk_total(pl_topic *t) {
    int64_t sum = 0;
    for (int64_t i = 0; i < t->nsegs; i++) sum += pl_seg_disk_bytes(t->segs[i]);
    return sum;
}

/* Lost ranges wholly below the start are history: drop them. */
static void prune_lost(pl_topic *t, int64_t start) {
    pthread_mutex_lock(&t->lost_mu);
    int k = 0;
    while (k < t->nlost && t->lost[k].to <= start) k++;
    if (k) {
        memmove(t->lost, t->lost + k, (size_t)(t->nlost - k) * sizeof *t->lost);
        t->nlost -= k;
    }
    pthread_mutex_unlock(&t->lost_mu);
}

/* Delete the oldest segment (it must be sealed). Caller holds wlock. The
 * new start is made durable in the checkpoint first, so that an open
 * after a crash tells a deletion from a segment that went missing. */
static void delete_first(pl_topic *t, int why) {
    pl_segment *s = t->segs[0];
    int64_t next = t->segs[1]->base;
    int64_t records = (s->loaded_once ? s->end : next) - s->base;
    int64_t bytes = pl_seg_disk_bytes(s);
    pthread_rwlock_wrlock(&t->slock);
    memmove(t->segs, t->segs + 1, (size_t)(t->nsegs - 1) * sizeof *t->segs);
    t->nsegs--;
    atomic_store(&t->start_offset, next);
    pthread_rwlock_unlock(&t->slock);
    prune_lost(t, next);
    pthread_mutex_lock(&t->sync_mu);
    (void)pl_checkpoint(t, -1, 0, 1); /* best effort, like the unlink */
    pthread_mutex_unlock(&t->sync_mu);
    pl_io_unlink(s->path);
    char *idx = pl_seg_path(t->dir, s->base, ".idx");
    if (idx) pl_io_unlink(idx);
    free(idx);
    if (why == DROP_FULL) {
        count_add(&t->n[PL_N_FULL_RECORDS], records);
        count_add(&t->n[PL_N_FULL_BYTES], bytes);
    } else {
        count_add(&t->n[PL_N_RETENTION_RECORDS], records);
        count_add(&t->n[PL_N_RETENTION_BYTES], bytes);
    }
    pl_seg_free(s);
}

/* May retention delete the oldest segment? */
static int retention_due(pl_topic *t, int64_t now) {
    if (t->nsegs < 2) return 0;
    int64_t floor = atomic_load(&t->floor);
    if (t->cfg.retain_until_consumed)
        /* protected until every group has passed it */
        return t->segs[1]->base <= floor;
    if (t->cfg.retention_bytes > 0 && pl_disk_total(t) > t->cfg.retention_bytes)
        return 1;
    if (t->cfg.retention_ms > 0) {
        int64_t mts;
        if (pl_first_max_ts(t, &mts) < 0) return 0; /* unreadable: keep */
        if (mts != INT64_MIN && mts < now - t->cfg.retention_ms) return 1;
    }
    return 0;
}

int pl_retention_apply_locked(pl_topic *t) {
    int n = 0;
    int64_t now = pl_now_ms();
    while (retention_due(t, now)) {
        delete_first(t, DROP_RETENTION);
        n++;
    }
    if (n) pthread_cond_broadcast(&t->room_cv);
    return n;
}

/* Returns 0 when there is room and wlock was held throughout; 1 when there
 * is room but the call waited on room_cv, which releases wlock: other
 * appends may have run meanwhile (filled or rolled the active segment), so
 * whatever the caller computed before the call is stale and it must start
 * over (append.c: ensure_room). Using stale state here once truncated a
 * sealed segment below records appended during the wait.
 * With on_full=drop_oldest and only the active segment left, the active
 * segment itself is sealed (and then deleted) when that makes room: a
 * batch smaller than max_bytes always finds room. */
int pl_retention_make_room(pl_topic *t, int64_t extra, int64_t nrecords) {
    if (t->cfg.max_bytes <= 0) return 0;
    int waited = 0;
    struct timespec dl = pl_deadline(CLOCK_MONOTONIC, t->cfg.full_timeout_ms);
    for (;;) {
        if (atomic_load(&t->closed))
            return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        int64_t total = pl_disk_total(t) + extra;
        if (total <= t->cfg.max_bytes) return waited;
        if (retention_due(t, pl_now_ms())) {
            delete_first(t, DROP_RETENTION);
            continue;
        }
        if (t->nsegs >= 2 && t->cfg.on_full == PL_FULL_DROP_OLDEST) {
            delete_first(t, DROP_FULL);
            continue;
        }
        if (t->cfg.on_full == PL_FULL_BLOCK && t->nsegs >= 2 &&
            pthread_cond_timedwait(&t->room_cv, &t->wlock, &dl) != ETIMEDOUT) {
            waited = 1;
            continue;
        }
        (void)nrecords; /* counted by the append that gives up */
        return pl_err(PL_EFULL, 0, "topic %s is full: %" PRId64 " bytes on "
                      "disk, %" PRId64 " more needed, max_bytes=%" PRId64
                      " (on_full=%s)", t->dir, total - extra, extra,
                      t->cfg.max_bytes,
                      t->cfg.on_full == PL_FULL_BLOCK ? "block, timed out"
                      : t->cfg.on_full == PL_FULL_REJECT ? "reject"
                                                          : "drop_oldest");
    }
}

int pl_topic_set_floor(pl_topic *t, int64_t floor) {
    pthread_mutex_lock(&t->wlock);
    int rc = 0;
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    } else if (t->cfg.readonly) {
        rc = 0; /* the writer applies retention */
    } else {
        atomic_store(&t->floor, floor);
        rc = pl_retention_apply_locked(t);
        pthread_cond_broadcast(&t->room_cv);
    }
    pthread_mutex_unlock(&t->wlock);
    return rc;
}

int pl_topic_apply_retention(pl_topic *t) {
    pthread_mutex_lock(&t->wlock);
    int rc = atomic_load(&t->closed)
                 ? pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir)
             : t->cfg.readonly
                 ? pl_err(PL_EREADONLY, 0, "topic %s is open read-only",
                          t->dir)
                 : pl_retention_apply_locked(t);
    pthread_mutex_unlock(&t->wlock);
    return rc;
}

