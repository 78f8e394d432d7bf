/*
 * sync.c -- durability: fdatasync of the topic's dirty segments, group
 * commit for sync="always", the checkpoint written after each sync
 * (invariant 4 in topic.c).
 *
 * durable_offset is raised only after every fdatasync covering it
 * returned. A failed fdatasync makes the topic refuse appends until it is
 * reopened (sticky, PL_EFAILED): after a failed fsync the state of the
 * page cache is unknown. Periodic syncs (sync="interval", and the
 * checkpoint of sync="none") are driven by the caller (the Python Log's
 * syncer thread calls pl_topic_flush), so a log needs one thread, not one
 * per topic.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

void pl_fail_sticky(pl_topic *t, int err, const char *what) {
    snprintf(t->failed_msg, sizeof t->failed_msg, "%s", what);
    atomic_store(&t->failed, err ? err : EIO);
}

int pl_checkpoint(pl_topic *t, int64_t durable, int clean, int sync) {
    pl_ckpt *ck = &t->ckpt;
    ck->clean = clean;
    ck->start = atomic_load(&t->start_offset);
    ck->end = atomic_load(&t->end_offset);
    if (durable >= 0) ck->durable = durable;
    ck->clean_pos = clean ? atomic_load(&t->active->pub_pos) : 0;
    for (int i = 0; i < PL_NCOUNTERS; i++)
        ck->counters[i] = atomic_load(&t->n[i]);
    pthread_mutex_lock(&t->lost_mu);
    /* The newest ranges fit; older ones are left out (never merged: a
     * merged range would cover records that exist). A range left out is
     * still found by reads where segments end before the next begins. */
    int skip = t->nlost > PL_CKPT_MAXLOST ? t->nlost - PL_CKPT_MAXLOST : 0;
    ck->nlost = t->nlost - skip;
    for (int i = 0; i < ck->nlost; i++) ck->lost[i] = t->lost[skip + i];
    pthread_mutex_unlock(&t->lost_mu);
    return pl_ckpt_write(t->dir, ck, sync);
}

/* fdatasync every dirty segment, and the directory if a segment file was
 * created since it was last synced. *goal, *gseg, *gpos: the end offset
 * the syncs cover, its segment and byte position. Caller holds wlock if
 * `locked`, and neither slock nor sync_mu. */
static int sync_segments(pl_topic *t, int locked, int64_t *goal,
                         int64_t *gseg, int64_t *gpos) {
    int rc = 0;
    if (!locked) pthread_mutex_lock(&t->wlock);
    pthread_rwlock_rdlock(&t->slock);
    if (!locked) pthread_mutex_unlock(&t->wlock);
    if (atomic_load(&t->closed)) {
        pthread_rwlock_unlock(&t->slock);
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    }
    /* Under wlock (or with appends shut out by slock), these three agree:
     * appends publish under wlock and roll under slock. */
    *goal = atomic_load(&t->end_offset);
    *gseg = t->active->base;
    *gpos = atomic_load(&t->active->pub_pos);
    if (atomic_exchange(&t->dir_dirty, 0) && pl_io_fsync_dir(t->dir) < 0) {
        int e = errno;
        atomic_store(&t->dir_dirty, 1);
        rc = pl_err(PL_EIO, e, "fsync of directory %s failed", t->dir);
        pl_fail_sticky(t, e, pl_errmsg());
    }
    for (int64_t i = 0; i < t->nsegs && rc == 0; i++) {
        pl_segment *s = t->segs[i];
        if (!__atomic_exchange_n(&s->dirty, 0, __ATOMIC_ACQ_REL)) continue;
        int cached = !s->sealed;
        int fd = cached ? pl_cache_fd(t->cache, s, 1)
                        : pl_io_open(s->path, O_RDONLY, 0);
        if (fd < 0) { /* not an fsync failure: nothing is sticky */
            __atomic_store_n(&s->dirty, 1, __ATOMIC_RELEASE);
            rc = pl_err(PL_EIO, errno, "cannot open %s to sync it", s->path);
            break;
        }
        int r = pl_io_fdatasync(fd);
        int e = errno;
        if (cached)
            pl_cache_fd_done(t->cache, s);
        else
            pl_io_close(fd);
        if (r < 0) {
            __atomic_store_n(&s->dirty, 1, __ATOMIC_RELEASE);
            rc = pl_err(PL_EIO, e, "fdatasync of %s failed", s->path);
            pl_fail_sticky(t, e, pl_errmsg());
        }
    }
    pthread_rwlock_unlock(&t->slock);
    return rc;
}

/* One sync round; raises durable and, if `ckpt`, writes the checkpoint. */
static int sync_round(pl_topic *t, int locked, int ckpt, int clean) {
    int64_t goal = 0, gseg = 0, gpos = 0;
    int rc = sync_segments(t, locked, &goal, &gseg, &gpos);
    pthread_mutex_lock(&t->sync_mu);
    if (rc == 0 && goal > atomic_load(&t->durable))
        atomic_store(&t->durable, goal);
    if (rc == 0 && ckpt) {
        t->ckpt.dseg = gseg;
        t->ckpt.dpos = gpos;
        /* best effort: a checkpoint not written only makes the next open
         * verify more */
        (void)pl_checkpoint(t, goal, clean, 0);
    }
    pthread_mutex_unlock(&t->sync_mu);
    return rc;
}

/* Group commit: return once durable >= target (invariant 4). */
int pl_sync_to(pl_topic *t, int64_t target) {
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
        rc = sync_round(t, 0, 0, 0);
        pthread_mutex_lock(&t->sync_mu);
        t->syncing = 0;
        pthread_cond_broadcast(&t->sync_cv);
        if (rc < 0) break;
    }
    pthread_mutex_unlock(&t->sync_mu);
    return rc;
}

/* One sync round even if durable == end (segments recovery marked dirty
 * may not be on disk yet), then the checkpoint. `locked`: the caller
 * holds wlock (close). */
static int flush_locked(pl_topic *t, int locked, int clean) {
    pthread_mutex_lock(&t->sync_mu);
    while (t->syncing) pthread_cond_wait(&t->sync_cv, &t->sync_mu);
    t->syncing = 1;
    pthread_mutex_unlock(&t->sync_mu);
    int rc = atomic_load(&t->failed)
                 ? pl_err(PL_EFAILED, 0, "%s", t->failed_msg)
                 : sync_round(t, locked, 1, clean);
    pthread_mutex_lock(&t->sync_mu);
    t->syncing = 0;
    pthread_cond_broadcast(&t->sync_cv);
    pthread_mutex_unlock(&t->sync_mu);
    return rc;
}

int pl_flush_all(pl_topic *t, int locked, int clean) {
    return flush_locked(t, locked, clean);
}

int pl_topic_flush(pl_topic *t) {
    if (atomic_load(&t->closed))
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    if (t->cfg.readonly)
        return pl_err(PL_EREADONLY, 0, "topic %s is open read-only", t->dir);
    return pl_flush_all(t, 0, 0);
}

int pl_topic_sync_needed(pl_topic *t) {
    if (t->cfg.readonly || atomic_load(&t->closed) || atomic_load(&t->failed))
        return 0;
    if (atomic_load(&t->end_offset) > atomic_load(&t->durable)) return 1;
    /* counters the last checkpoint does not have (rejected records) */
    for (int i = 0; i < PL_NCOUNTERS; i++)
        if (atomic_load(&t->n[i]) != t->ckpt.counters[i]) return 1;
    return 0;
}

int pl_topic_sync_to(pl_topic *t, int64_t offset) {
    if (t->cfg.readonly) return pl_topic_sync_ro(t, offset);
    int64_t end = atomic_load(&t->end_offset);
    return pl_sync_to(t, offset < end ? offset : end);
}
