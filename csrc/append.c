/*
 * append.c -- the write path: append, append_batch, growth of the active
 * segment, sealing (roll).
 *
 * The active segment's file grows as it fills: its size (`alloc`) is the
 * data rounded up to the next grow step (fallocate reserves real blocks,
 * so a write through the map can never meet a full disk as a SIGBUS: a
 * full disk is a clean error at the append that needs the space). A batch
 * smaller than PL_PWRITE_MIN is built in place in the write window (a
 * small read-write map at the write position, from the file cache); a
 * larger one is written with pwritev. Either way it is published only
 * after all its bytes and its checksum are in the page cache (invariant 2).
 * One writer at a time per topic (wlock).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "internal.h"

/* Batches of at least this many bytes are written with pwrite/pwritev;
 * smaller ones are built in the write window. Writing a large batch
 * through a map faults in and zero-fills each page of the allocation
 * before the copy overwrites it (half of the time in profiles); pwrite of
 * whole pages skips that. The page cache is shared, so readers see the
 * bytes through their maps either way. */
#define PL_PWRITE_MIN (32 * 1024)

int pl_writable(pl_topic *t) {
    if (atomic_load(&t->closed))
        return pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    if (t->cfg.readonly)
        return pl_err(PL_EREADONLY, 0, "topic %s is open read-only", t->dir);
    if (atomic_load(&t->failed))
        return pl_err(PL_EFAILED, 0,
                      "topic %s refuses writes after a failed fsync (%s); "
                      "reopen it", t->dir, t->failed_msg);
    return 0;
}

static int io_failed(const char *what, const char *path) {
    return pl_err(PL_EIO, errno, "%s %s", what, path);
}

/* The size the active file grows to for `need` bytes of data: a step at
 * a time, never past the segment's capacity unless one batch needs more. */
static int64_t grow_target(pl_topic *t, int64_t cap, int64_t need) {
    int64_t target = pl_align_up(need, t->grow_step);
    int64_t top = cap > need ? cap : need;
    if (target > top) target = top;
    if (target > PL_SEG_MAX) target = need;
    return target;
}

/* Seal the active segment at its data and start a new one at `base`; room
 * is made first for the new file to hold `then` bytes of data at once (the
 * batch that made it roll). Caller holds wlock. Returns 1, having changed
 * nothing, if making room waited (wlock was released): the caller must
 * start over. */
int pl_roll_to(pl_topic *t, int64_t base, int64_t nrecords, int64_t then) {
    pl_segment *old = t->active, *s;
    int rc;
    pthread_rwlock_wrlock(&t->slock);
    rc = pl_segs_reserve(t); /* before anything changes on disk */
    pthread_rwlock_unlock(&t->slock);
    if (rc < 0) return rc;
    int64_t used = atomic_load(&old->pub_pos);
    int64_t idx_size = PL_IDX_HDR + (int64_t)old->ib.n * PL_IDX_ENTRY;
    /* The old file is cut to its data before the new one is created: the
     * files grow by the new header and the old index, less the old
     * file's unused allocation. */
    int64_t extra = used + idx_size - pl_seg_disk_bytes(old) +
                    (then > 0 ? grow_target(t, t->cfg.segment_bytes,
                                            PL_SEG_HDR + then)
                              : PL_SEG_HDR);
    rc = pl_retention_make_room(t, extra > 0 ? extra : 0, nrecords);
    if (rc != 0) return rc; /* 1: waited, `old` and `used` may be stale */
    /* In durable modes the old segment is synced here whatever its dirty
     * flag says: a concurrent sync round clears the flag before its own
     * fdatasync, which may still fail, and the checkpoint written below
     * must not vouch for it (invariant 4). Clean pages make it cheap. */
    int fd = pl_cache_fd(t->cache, old, 1);
    if (fd < 0) return io_failed("cannot open segment", old->path);
    if (t->cfg.sync_mode != PL_SYNC_NONE && t->opened) {
        if (pl_io_fdatasync(fd) < 0) {
            int e = errno;
            pl_cache_fd_done(t->cache, old);
            rc = pl_err(PL_EIO, e, "fdatasync of %s failed", old->path);
            pl_fail_sticky(t, e, pl_errmsg());
            return rc;
        }
        __atomic_store_n(&old->dirty, 0, __ATOMIC_RELEASE);
    }
    /* Best effort: a failed truncate leaves zeros the scan stops at, a
     * failed index write leaves an index the next load rebuilds. */
    int64_t file_bytes = old->alloc, idx_bytes = 0;
    if (pl_io_ftruncate(fd, used) == 0) file_bytes = old->alloc = used;
    pl_cache_fd_done(t->cache, old);
    old->file_bytes = file_bytes;
    if ((rc = pl_segment_create(
             t, base,
             then > 0 ? grow_target(t, t->cfg.segment_bytes, PL_SEG_HDR + then)
                      : 0,
             &s)) < 0)
        return rc;
    int fits = t->cfg.max_bytes <= 0 ||
               pl_disk_total(t) + PL_SEG_HDR + idx_size <= t->cfg.max_bytes;
    if (fits && pl_seg_index_write(t->dir, old->base, old->end, file_bytes,
                                   old->max_ts, old->ib.e, old->ib.n) == 0) {
        idx_bytes = idx_size;
    } else {
        char *ip = pl_seg_path(t->dir, old->base, ".idx");
        if (ip) pl_io_unlink(ip); /* none, or a stale one */
        free(ip);
    }
    pl_cache_sealed(t->cache, old);
    pthread_rwlock_wrlock(&t->slock);
    /* under slock: pl_topic_stats and readers look at these */
    old->idx_bytes = idx_bytes;
    t->segs[t->nsegs++] = s; /* reserved above */
    /* The sealed segment's index is read back from its file (or rebuilt)
     * when it is next read: the heap does not grow with the log. */
    free(old->ib.e);
    memset(&old->ib, 0, sizeof old->ib);
    atomic_store(&old->nidx, 0);
    old->sealed = 1;
    old->loaded_once = 1; /* end and max_ts are known */
    atomic_store(&old->pub_pos, file_bytes);
    /* trusted_from stays: what a clean open took without a scan is still
     * verified when first read */
    s->end = base;
    t->active = s;
    pthread_rwlock_unlock(&t->slock);
    int64_t old_end = old->end;
    if (base > old_end) {
        pl_lost_add(t, old_end, base);
        atomic_store(&t->end_offset, base);
    }
    if (t->cfg.sync_mode != PL_SYNC_NONE && t->opened) {
        if (pl_io_fsync_dir(t->dir) < 0) {
            rc = pl_err(PL_EIO, errno, "fsync of directory %s failed", t->dir);
            pl_fail_sticky(t, pl_errno(), pl_errmsg());
            return rc;
        }
        atomic_store(&t->dir_dirty, 0);
        /* Every sealed segment is on disk now: the old one was just
         * synced, earlier ones at their rolls or by the flush at open. */
        pthread_mutex_lock(&t->sync_mu);
        t->ckpt.dseg = base;
        t->ckpt.dpos = PL_SEG_HDR;
        (void)pl_checkpoint(t, base, 0, 0);
        if (base > atomic_load(&t->durable)) atomic_store(&t->durable, base);
        pthread_mutex_unlock(&t->sync_mu);
    }
    pl_retention_apply_locked(t);
    return 0;
}

/* Grow the active file so that it holds `need` bytes. 1 if making room
 * waited (start over), 0, or a negative PL_E*. Caller holds wlock. */
static int grow(pl_topic *t, int64_t need, int64_t nrecords) {
    pl_segment *s = t->active;
    if (need <= s->alloc) return 0;
    /* Only what is needed if a whole step would not fit under max_bytes. */
    int64_t target = grow_target(t, s->cap, need);
    int rc = 0;
    if (target > need && t->cfg.max_bytes > 0 &&
        pl_disk_total(t) + target - s->alloc > t->cfg.max_bytes &&
        pl_disk_total(t) + need - s->alloc <= t->cfg.max_bytes)
        target = need;
    rc = pl_retention_make_room(t, target - s->alloc, nrecords);
    if (rc != 0) return rc; /* 1: waited, start over */
    int fd = pl_cache_fd(t->cache, s, 1);
    if (fd < 0) return io_failed("cannot open segment", s->path);
    int r = pl_io_fallocate(fd, s->alloc, target - s->alloc);
    int e = errno;
    pl_cache_fd_done(t->cache, s);
    if (r < 0) {
        errno = e;
        return pl_err(PL_EIO, e, "cannot grow segment %s to %" PRId64
                      " bytes", s->path, target);
    }
    s->alloc = s->file_bytes = target;
    /* retention_bytes counts the growing file too */
    if (t->cfg.retention_bytes > 0) pl_retention_apply_locked(t);
    return 0;
}

/* Make room for a batch of len bytes (nrecords records): roll when it
 * does not fit in the segment, grow the file when it does not fit in the
 * allocation. Caller holds wlock. */
static int ensure_room(pl_topic *t, int64_t len, int64_t nrecords) {
    for (;;) {
        pl_segment *s = t->active;
        int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
        int rc = 0;
        /* Only a batch larger than segment_bytes gets a segment of its
         * own past segment_bytes. */
        if (pos + len > s->cap && pos > PL_SEG_HDR)
            rc = pl_roll_to(t, atomic_load(&t->end_offset), nrecords, len);
        else
            rc = grow(t, pos + len, nrecords);
        if (rc == -PL_EFULL && t->cfg.on_full == PL_FULL_DROP_OLDEST &&
            t->nsegs == 1 && pos > PL_SEG_HDR) {
            /* Only the active segment holds data: seal it, so that
             * drop_oldest can delete it to make room for this batch. */
            rc = pl_roll_to(t, atomic_load(&t->end_offset), nrecords, 0);
            if (rc == 0) continue;
        }
        if (rc == 0 && (s != t->active || pos + len > t->active->alloc))
            continue; /* rolled: now grow the new segment */
        if (rc != 1) return rc;
        /* Waited for room (on_full=block) with wlock released: other
         * appends may have filled or rolled the active segment. */
        if ((rc = pl_writable(t)) < 0) return rc;
    }
}

/* Room in the active segment's index array for the entries a batch of len
 * bytes can add (caller holds wlock; the array moves under slock). */
static int reserve_index(pl_topic *t, int64_t len) {
    pl_idx_builder *ib = &t->active->ib;
    int64_t want = (int64_t)ib->n + 2 + len / t->cfg.index_interval_bytes;
    if (want <= ib->cap) return 0;
    if (want > UINT32_MAX) return 0; /* entries past it are dropped */
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

/* Where to build a batch of len bytes: in the write window at the write
 * position (*win gets the window's reference, which the caller drops), or
 * (for a large one) in the topic's scratch buffer. NULL on error. Caller
 * holds wlock. */
static uint8_t *batch_buf(pl_topic *t, int64_t len, pl_map **win) {
    pl_segment *s = t->active;
    int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    *win = NULL;
    if (len >= PL_PWRITE_MIN) {
        if (len > t->scratch_cap) {
            uint8_t *b = realloc(t->scratch, (size_t)len);
            if (!b) {
                pl_err(PL_ENOMEM, 0, "out of memory");
                return NULL;
            }
            t->scratch = b;
            t->scratch_cap = len;
        }
        return t->scratch;
    }
    pl_map *w = pl_cache_wmap(t->cache, s, pos, len);
    if (!w) {
        io_failed("cannot map the write window of", s->path);
        return NULL;
    }
    *win = w;
    return w->base + (pos - w->off);
}

/* Fill the batch header at h, all but its checksum (bytes 0..8), for a
 * batch at the write position; returns its base offset. */
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
    /* reserve_index made room: this adds entries without moving them */
    (void)pl_idx_add(&s->ib, s->base, h, &b, t->cfg.index_interval_bytes);
    atomic_store_explicit(&s->nidx, s->ib.n, memory_order_release);
    if (max_ts > s->max_ts) s->max_ts = max_ts;
    atomic_store_explicit(&s->pub_pos, pos + len, memory_order_release);
    s->end = base + count;
    count_add(&t->n[PL_N_APPENDED_RECORDS], count);
    count_add(&t->n[PL_N_APPENDED_BYTES], len);
    /* seq_cst: pairs with the watcher count (notify.c) */
    atomic_store(&t->end_offset, base + count);
    return base;
}

/* Finish the batch built at h (in the write window at the write position,
 * or in the scratch buffer): header, checksum, the write fault point or
 * the pwrite, then publication. Caller holds wlock. */
static int64_t publish(pl_topic *t, uint8_t *h, pl_map *win, int64_t len,
                       int64_t count, int64_t first_ts, int64_t max_ts) {
    pl_segment *s = t->active;
    int64_t pos = atomic_load_explicit(&s->pub_pos, memory_order_relaxed);
    int64_t base = batch_header(t, h, len, count, first_ts, max_ts);
    put64(h, pl_xxh64(h + 8, (size_t)len - 8, 0));
    int r;
    if (win) {
        r = pl_io_write_map(h, (size_t)len);
    } else {
        int fd = pl_cache_fd(t->cache, s, 1);
        r = fd < 0 ? -1 : pl_io_pwrite(fd, h, (size_t)len, pos);
        int e = errno;
        if (fd >= 0) pl_cache_fd_done(t->cache, s);
        errno = e;
    }
    int64_t rc = r < 0 ? write_failed(s, len, pos)
                       : published(t, h, len, count, base, first_ts, max_ts);
    pl_map_unref(win);
    return rc;
}

/* A large single-record batch (len >= PL_PWRITE_MIN) written with no copy
 * of its data: only its headers are built (on the stack), the checksum is
 * computed over the pieces in order, and one pwritev writes [headers, key,
 * value, header block] from the caller's buffers. Those must not change
 * during the call: the checksum is of the bytes as hashed, and a batch
 * whose bytes differ from it would be cut (with all after it) by
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
    struct iovec iov[4];
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
    int fd = pl_cache_fd(t->cache, s, 1);
    int r = fd < 0 ? -1 : pl_io_pwritev(fd, iov, n, pos);
    int e = errno;
    if (fd >= 0) pl_cache_fd_done(t->cache, s);
    errno = e;
    if (r < 0) return write_failed(s, len, pos);
    return published(t, h, len, 1, base, ts, ts);
}

static int64_t finish_append(pl_topic *t, int64_t first) {
    int64_t end = atomic_load(&t->end_offset);
    pthread_mutex_unlock(&t->wlock);
    if (first < 0) return first;
    pl_notify_topic(t);
    if (t->cfg.sync_mode == PL_SYNC_ALWAYS) {
        int rc = pl_sync_to(t, end);
        if (rc < 0) return rc;
    }
    return first;
}

static int record_error(pl_topic *t, int64_t klen, int64_t vlen,
                        int64_t hlen, int64_t ts, int64_t i, int64_t n) {
    if (vlen < 0 || hlen < 0 || klen > INT32_MAX)
        return pl_err(PL_EINVAL, 0, "record %" PRId64 ": bad lengths", i);
    if (ts < 0 && ts != PL_TS_NOW)
        return pl_err(PL_EINVAL, 0, "record %" PRId64 ": negative timestamp "
                      "%" PRId64, i, ts);
    int64_t size = (klen > 0 ? klen : 0) + vlen + hlen;
    count_add(&t->n[PL_N_REJECTED_RECORDS], n);
    count_add(&t->n[PL_N_REJECTED_BYTES], size);
    return pl_err(PL_ETOOBIG, 0, "record %" PRId64 " of %" PRId64
                  " bytes exceeds max_record_bytes=%" PRId64 " in %s", i,
                  size, t->cfg.max_record_bytes, t->dir);
}

/* 0, or the error for record i of n (inline: append_batch checks every
 * record, and the call showed in its profiles). */
static inline int check_record(pl_topic *t, int64_t klen, int64_t vlen,
                               int64_t hlen, int64_t ts, int64_t i,
                               int64_t n) {
    if (vlen >= 0 && hlen >= 0 && klen <= INT32_MAX &&
        (ts >= 0 || ts == PL_TS_NOW) &&
        (klen > 0 ? klen : 0) + vlen + hlen <= t->cfg.max_record_bytes)
        return 0;
    return record_error(t, klen, vlen, hlen, ts, i, n);
}

/* Take wlock and make room for a batch of len bytes. */
static int begin_append(pl_topic *t, int64_t len, int64_t n) {
    pthread_mutex_lock(&t->wlock);
    int rc;
    if ((rc = pl_writable(t)) < 0 || (rc = ensure_room(t, len, n)) < 0 ||
        (rc = reserve_index(t, len)) < 0) {
        if (rc == -PL_EFULL) {
            count_add(&t->n[PL_N_REJECTED_RECORDS], n);
            count_add(&t->n[PL_N_REJECTED_BYTES], len - PL_BATCH_HDR -
                                                      n * PL_REC_HDR);
        }
        pthread_mutex_unlock(&t->wlock);
        return rc;
    }
    return 0;
}

int64_t pl_topic_append(pl_topic *t, const uint8_t *key, int64_t klen,
                        const uint8_t *val, int64_t vlen, const uint8_t *hdr,
                        int64_t hlen, int64_t ts) {
    if (!key) klen = -1;
    if (!hdr) hlen = 0;
    int rc = check_record(t, klen, vlen, hlen, ts, 0, 1);
    if (rc < 0) return rc;
    int64_t len = PL_BATCH_HDR + PL_REC_HDR + (klen > 0 ? klen : 0) + vlen +
                  hlen;
    if ((rc = begin_append(t, len, 1)) < 0) return rc;
    if (ts == PL_TS_NOW) ts = pl_now_ms();
    if (len >= PL_PWRITE_MIN)
        return finish_append(t, publish_record(t, len, ts, key, klen, val,
                                               vlen, hdr, hlen));
    pl_map *win;
    uint8_t *h = batch_buf(t, len, &win); /* small: in the window */
    if (!h) return finish_append(t, -PL_EIO);
    put_record(h + PL_BATCH_HDR, ts, key, klen, val, vlen, hdr, hlen);
    return finish_append(t, publish(t, h, win, len, 1, ts, ts));
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
        int rc = check_record(t, kl, vlens[i], hl, ts ? ts[i] : PL_TS_NOW, i,
                              n);
        if (rc < 0) return rc;
        len += PL_REC_HDR + (kl > 0 ? kl : 0) + vlens[i] + hl;
        if (len > PL_SEG_MAX - PL_SEG_HDR) {
            count_add(&t->n[PL_N_REJECTED_RECORDS], n);
            count_add(&t->n[PL_N_REJECTED_BYTES], len);
            return pl_err(PL_ETOOBIG, 0, "a batch of %" PRId64 " records "
                          "exceeds the 4 GiB segment limit", n);
        }
    }
    int rc = begin_append(t, len, n);
    if (rc < 0) return rc;
    int64_t now = ts ? 0 : pl_now_ms();
    int64_t first_ts = 0, max_ts = INT64_MIN;
    pl_map *win;
    uint8_t *batch = batch_buf(t, len, &win);
    if (!batch) return finish_append(t, -PL_EIO);
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
    return finish_append(t, publish(t, batch, win, len, n, first_ts, max_ts));
}

int pl_topic_raise_end(pl_topic *t, int64_t offset) {
    pthread_mutex_lock(&t->wlock);
    int rc = pl_writable(t);
    if (rc == 0 && offset > atomic_load(&t->end_offset)) {
        int64_t from = atomic_load(&t->end_offset);
        while ((rc = pl_roll_to(t, offset, 0, 0)) == 1)
            if ((rc = pl_writable(t)) < 0) break;
        if (rc == 0) count_add(&t->n[PL_N_LOST_RECORDS], offset - from);
    }
    pthread_mutex_unlock(&t->wlock);
    return rc;
}
