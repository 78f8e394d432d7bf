/*
 * read.c -- the read path: pl_topic_read, offset_for_time, and making a
 * sealed segment readable (its map and index).
 *
 * Readers never take the writer's lock: they hold slock (read) while they
 * look at the segment list, and a reference to the map they decode from
 * (the file cache may evict it meanwhile; the reference keeps it mapped).
 * The active segment is read through a read-only map of its file as it
 * was when the map was made (pl_map.cov says which records it covers); a
 * reader that needs newer records maps the file again.
 *
 * Verification (invariant 2): batches written or recovered by this
 * process are trusted (those at or after the segment's trusted_from). Every other batch is checksummed the first time it
 * is read, and only once per process: a watermark covers the verified
 * prefix of a segment (a sequential pass), and a bitmap with a bit per
 * 64-byte unit (two batches never start in one) covers batches verified
 * out of order (random reads).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static int corrupt(pl_segment *s, int64_t pos, int64_t offset,
                   const char *what) {
    return pl_err(PL_ECORRUPT, 0, "%s in %s at byte %" PRId64
                  " (reading offset %" PRId64 ")", what, s->path, pos, offset);
}

/* ---- verification ----------------------------------------------------------- */
static int vbit(pl_segment *s, int64_t pos) {
    uint64_t *v = atomic_load_explicit(&s->vbits, memory_order_acquire);
    int64_t u = pos / 64;
    return v && (atomic_load_explicit((_Atomic uint64_t *)&v[u / 64],
                                      memory_order_relaxed) >> (u % 64)) & 1;
}

static void set_vbit(pl_segment *s, int64_t pos, int64_t seg_len) {
    uint64_t *v = atomic_load_explicit(&s->vbits, memory_order_acquire);
    if (!v) {
        size_t words = (size_t)(seg_len / 64 / 64 + 1);
        uint64_t *nv = calloc(words, sizeof *nv), *expect = NULL;
        if (!nv) return; /* verified again next time: only slower */
        if (!atomic_compare_exchange_strong(&s->vbits, &expect, nv)) {
            free(nv);
            nv = expect;
        }
        v = nv;
    }
    int64_t u = pos / 64;
    atomic_fetch_or_explicit((_Atomic uint64_t *)&v[u / 64],
                             (uint64_t)1 << (u % 64), memory_order_relaxed);
}

/* Check the batch at b (invariant 2): once per process. */
static int verify_batch(pl_segment *s, const uint8_t *d, int64_t seg_len,
                        const pl_batch *b, int64_t offset) {
    if (b->pos >= s->trusted_from ||
        b->pos + b->len <= atomic_load_explicit(&s->verified,
                                                memory_order_acquire) ||
        vbit(s, b->pos))
        return 0;
    if (!pl_batch_checksum_ok(d, b))
        return corrupt(s, b->pos, offset, "checksum mismatch");
    if (!pl_batch_records_ok(d, b))
        return corrupt(s, b->pos, offset, "records do not fill the batch");
    int64_t expect = b->pos;
    if (!atomic_compare_exchange_strong(&s->verified, &expect,
                                        b->pos + b->len))
        set_vbit(s, b->pos, seg_len);
    return 0;
}

static void start_at_first(pl_batch *b) {
    b->rec_pos = b->pos + PL_BATCH_HDR;
    b->rec_off = b->base;
}

/* What a read decodes from: a segment's bytes and index. */
typedef struct view {
    pl_segment *s;
    pl_map *m;
    const uint8_t *d;
    int64_t limit;   /* bytes that may be parsed */
    int64_t seg_end; /* offset after the segment's data */
    int more;        /* 1 if published data lies past limit (a newer map
                        of the active segment would see it) */
    const pl_idx_entry *idx;
    uint32_t nidx;
} view;

/* Find the batch holding offset, reading below v->limit; set b->rec_pos/
 * rec_off to the nearest record the index knows (invariant 5: what the
 * index points at is checked, not trusted). */
static int seek_batch(const view *v, int64_t offset, pl_batch *b) {
    pl_segment *s = v->s;
    pl_idx_entry e = pl_idx_find(v->idx, v->nidx, offset - s->base);
    int64_t pos = e.batch_pos;
    for (;;) {
        int r = pl_batch_parse(v->d, v->limit, pos, b);
        if (r == 0) return corrupt(s, pos, offset, "data ends early");
        if (r < 0) return corrupt(s, pos, offset, "invalid batch header");
        if (b->base > offset) return corrupt(s, pos, offset, "offset gap");
        if (b->base + b->count > offset) break;
        pos += b->len;
    }
    start_at_first(b);
    if (b->pos == e.batch_pos && e.pos > e.batch_pos) {
        int64_t eoff = s->base + e.rel;
        /* An index entry may point at a batch's first record (when the
         * batch itself was not yet due but its first record is): such an
         * entry is valid iff it points right after the batch header. */
        if (eoff < b->base || eoff >= b->base + b->count ||
            e.pos >= b->pos + b->len ||
            (eoff == b->base && e.pos != b->pos + PL_BATCH_HDR))
            return corrupt(s, e.pos, offset, "index entry outside its batch");
        b->rec_pos = e.pos;
        b->rec_off = eoff;
    }
    return verify_batch(s, v->d, v->m->len, b, offset);
}

/* ---- making segments readable --------------------------------------------- */
pl_map *pl_sealed_map(pl_topic *t, int64_t i, int *rc) {
    pl_segment *s = t->segs[i];
    int64_t next = t->segs[i + 1]->base;
    pl_map *m = pl_cache_rmap(t->cache, s, 0);
    if (m) return m;
    pthread_mutex_lock(&t->load_mu);
    if ((m = pl_cache_rmap(t->cache, s, 0)) != NULL) goto out;
    int64_t size = 0;
    m = pl_cache_map_file(t->cache, s, &size);
    if (!m && errno == ENOENT && t->cfg.readonly) {
        /* The writer's retention deleted it: below the start now. */
        atomic_store(&t->relist, 1);
        *rc = pl_err(PL_ERANGE, 0, "segment %s was deleted by retention",
                     s->path);
        goto out;
    }
    if (!m) {
        *rc = pl_err(PL_EIO, errno, "cannot map segment %s", s->path);
        goto out;
    }
    m->cov = INT64_MAX;
    atomic_store(&s->pub_pos, m->len);
    if (m->len < PL_SEG_HDR || pl_seg_header_check(m->base, s->base) != 0) {
        s->bad_pos = 0;
    } else {
        pl_idx_entry *e = NULL;
        uint32_t n = 0;
        int64_t end = next, mts = INT64_MIN;
        int r = pl_seg_index_read(s->path, s->base, m->len, next, &e, &n,
                                  &end, &mts);
        if (r == 0) {
            pl_idx_builder ib = {NULL, 0, 0, -1, INT64_MIN};
            int64_t valid_end;
            int g = pl_seg_scan(m->base, PL_SEG_HDR, m->len, s->base,
                                s->base, next, PL_SEG_HDR,
                                t->cfg.index_interval_bytes, &ib,
                                &valid_end, &end, &mts);
            if (g < 0) {
                free(ib.e);
                r = -PL_ENOMEM;
            } else {
                int64_t vexp = PL_SEG_HDR;
                atomic_compare_exchange_strong(&s->verified, &vexp,
                                               valid_end);
                e = ib.e;
                n = ib.n;
                r = 1;
                if (g || valid_end < m->len)
                    s->bad_pos = valid_end;
                else if (!t->cfg.readonly &&
                         pl_seg_index_write(t->dir, s->base, end, m->len,
                                            mts, e, n) == 0) /* best effort */
                    s->idx_bytes = PL_IDX_HDR + (int64_t)n * PL_IDX_ENTRY;
            }
        }
        if (r < 0) {
            pl_map_unref(m);
            m = NULL;
            *rc = pl_err(PL_ENOMEM, 0, "out of memory");
            goto out;
        }
        m->idx = e;
        m->nidx = n;
        s->end = end;
        s->max_ts = mts;
        /* A clean end before the next segment's base: the records in
         * between are gone (a segment removed by hand, a power cut); a
         * damaged segment is corrupt, not lost. */
        if (end < next && s->bad_pos < 0 && !t->cfg.readonly)
            count_add(&t->n[PL_N_LOST_RECORDS], pl_lost_add(t, end, next));
        else if (end < next && s->bad_pos < 0)
            pl_lost_add(t, end, next);
    }
    if (atomic_load(&s->verified) < PL_SEG_HDR)
        atomic_store(&s->verified, PL_SEG_HDR);
    s->loaded_once = 1;
    pl_cache_set_rmap(t->cache, s, m);
out:
    pthread_mutex_unlock(&t->load_mu);
    return m;
}

/* A read map of the active segment covering offset (caller holds slock
 * read), with a new reference, or NULL and *rc. */
static pl_map *active_map(pl_topic *t, pl_segment *s, int64_t offset,
                          int *rc) {
    pl_map *m = pl_cache_rmap(t->cache, s, 0);
    if (m && offset < m->cov) return m;
    pl_map_unref(m);
    /* Every record below the end loaded first lies below pub_pos, and
     * the file is at least that long (invariant 2). Nothing past pub_pos
     * is ever looked at through the map (a writer may still cut it). */
    int64_t cov = atomic_load_explicit(&t->end_offset, memory_order_acquire);
    int64_t pub = atomic_load_explicit(&s->pub_pos, memory_order_acquire);
    int64_t size;
    m = pl_cache_map_file(t->cache, s, &size);
    if (!m) {
        *rc = pl_err(PL_EIO, errno, "cannot map segment %s", s->path);
        return NULL;
    }
    if (m->len > pub) m->len = pub;
    m->cov = cov;
    pl_cache_set_rmap(t->cache, s, m);
    return m;
}

/* The view of segment i for reading offset (and, if `all`, everything
 * published up to end); its map holds a reference the caller drops.
 * Caller holds slock (read). */
static int open_view(pl_topic *t, int64_t i, int64_t offset, int64_t end,
                     int all, view *v) {
    pl_segment *s = t->segs[i];
    int rc = 0;
    memset(v, 0, sizeof *v);
    v->s = s;
    if (s->sealed) {
        if (!(v->m = pl_sealed_map(t, i, &rc))) return rc;
        if (s->bad_pos == 0) {
            /* A valid header of another format version is not damage. */
            const uint8_t *h = v->m->base;
            if (v->m->len >= PL_SEG_HDR &&
                pl_seg_header_check(h, s->base) == -PL_EFORMAT)
                return pl_err(PL_EFORMAT, 0, "segment %s has format version "
                              "%u; this pylog reads version %d (reading "
                              "offset %" PRId64 ")", s->path, get32(h + 8),
                              PL_FORMAT_VERSION, offset);
            return corrupt(s, 0, offset, "invalid segment header");
        }
        v->limit = v->m->len;
        v->seg_end = s->end;
        v->idx = v->m->idx;
        v->nidx = v->m->nidx;
    } else {
        int64_t pub = atomic_load_explicit(&s->pub_pos, memory_order_acquire);
        if (!(v->m = active_map(t, s, all && end > offset ? end - 1 : offset,
                                &rc)))
            return rc;
        v->limit = pub < v->m->len ? pub : v->m->len;
        v->more = pub > v->m->len;
        v->seg_end = end;
        v->idx = s->ib.e;
        v->nidx = atomic_load_explicit(&s->nidx, memory_order_acquire);
    }
    v->d = v->m->base;
    return 0;
}

/* A lost range holding offset, told to the caller through meta[0..1]. */
static int lost(pl_topic *t, pl_segment *s, int64_t offset, int64_t next,
                int64_t *meta) {
    pl_range r;
    if (!pl_lost_find(t, offset, &r)) {
        r.from = s->end;
        r.to = next;
    }
    meta[0] = r.from;
    meta[1] = r.to;
    return pl_err(PL_ELOST, 0, "offsets [%" PRId64 ", %" PRId64 ") of %s "
                  "are lost (reading offset %" PRId64 ")", r.from, r.to,
                  t->dir, offset);
}

/* Decode the records of batch b from `offset` into meta. Returns how many
 * were written, or a negative code if the batch is malformed. */
static int decode_batch(pl_segment *s, const uint8_t *d, const pl_batch *b,
                        int64_t offset, int max, int64_t *bytes,
                        int64_t max_bytes, int64_t *meta) {
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
                  int64_t max_bytes, int64_t *meta, pl_map *const *pins,
                  int npins, int *pin_out, pl_map **map_out) {
    int rc = 0, n = 0;
    view v = {0};
    *map_out = NULL;
    *pin_out = -1;
    if (max_records < 1)
        return pl_err(PL_EINVAL, 0, "max_records must be >= 1");
    pthread_rwlock_rdlock(&t->slock);
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        goto out;
    }
    int64_t end = atomic_load_explicit(&t->end_offset, memory_order_acquire);
    int64_t start = atomic_load(&t->start_offset);
    pl_range lr;
    if (offset < start && offset >= 0 && pl_lost_find(t, offset, &lr)) {
        meta[0] = lr.from; /* a missing first segment, not retention */
        meta[1] = lr.to;
        rc = pl_err(PL_ELOST, 0, "offsets [%" PRId64 ", %" PRId64 ") of %s "
                    "are lost (reading offset %" PRId64 ")", lr.from, lr.to,
                    t->dir, offset);
        goto out;
    }
    if (offset < start || offset > end) {
        rc = pl_err(PL_ERANGE, 0, "offset %" PRId64 " is outside [%" PRId64
                    ", %" PRId64 "] of %s", offset, start, end, t->dir);
        goto out;
    }
    if (offset == end) goto out;
    int64_t i = pl_find_segment(t, offset);
    if ((rc = open_view(t, i, offset, end, 0, &v)) < 0) goto out;
    pl_segment *s = v.s;
    if (s->sealed && offset >= s->end) {
        /* past its data: damage from bad_pos on, or a lost range */
        rc = s->bad_pos >= 0
                 ? corrupt(s, s->bad_pos, offset, "damaged segment")
                 : lost(t, s, offset, t->segs[i + 1]->base, meta);
        goto out;
    }
    pl_batch b;
    if ((rc = seek_batch(&v, offset, &b)) < 0) goto out;
    int64_t bytes = 0, next = offset;
    for (;;) {
        int got = decode_batch(s, v.d, &b, next, max_records - n, &bytes,
                               max_bytes, meta + (int64_t)PL_META * n);
        if (got < 0) {
            rc = got;
            break;
        }
        n += got;
        next = b.base + b.count;
        if (n >= max_records || (max_bytes > 0 && bytes >= max_bytes) ||
            next >= v.seg_end || next >= end)
            break;
        if (v.more && b.pos + b.len >= v.limit) break; /* a newer map */
        int r = pl_batch_parse(v.d, v.limit, b.pos + b.len, &b);
        start_at_first(&b);
        if (r <= 0 || b.base != next) {
            rc = corrupt(s, b.pos, next, r == 0 ? "data ends early"
                                                : "invalid batch");
            break;
        }
        if ((rc = verify_batch(s, v.d, v.m->len, &b, next)) < 0) break;
    }
    if (n > 0) {
        rc = 0; /* return what was read; the next call meets the error */
        *map_out = v.m;
        for (int k = 0; k < npins; k++)
            if (pins[k] == v.m) { /* the caller holds one reference */
                *pin_out = k;
                pl_map_unref(v.m);
                break;
            }
        v.m = NULL;
    }
out:
    pl_map_unref(v.m);
    pthread_rwlock_unlock(&t->slock);
    return rc < 0 ? rc : n;
}

int64_t pl_topic_offset_for_time(pl_topic *t, int64_t ts) {
    int64_t rc = -PL_ENOTFOUND;
    view v = {0};
    pthread_rwlock_rdlock(&t->slock);
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        goto out;
    }
    int64_t end = atomic_load_explicit(&t->end_offset, memory_order_acquire);
    for (int64_t i = 0; i < t->nsegs; i++) {
        pl_segment *s = t->segs[i];
        if (s->base >= end) break;
        /* Sealed segments whose newest record is older are skipped
         * without being read, once their max_ts is known. */
        if (s->sealed && s->loaded_once && s->bad_pos < 0 && s->max_ts < ts)
            continue;
        int r = open_view(t, i, s->base, end, 1, &v);
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (s->sealed && s->bad_pos < 0 && s->max_ts < ts) {
            pl_map_unref(v.m);
            v.m = NULL;
            continue;
        }
        int64_t pos = pl_idx_find_time(v.idx, v.nidx, ts), next = -1;
        pl_batch b;
        while ((r = pl_batch_parse(v.d, v.limit, pos, &b)) > 0 &&
               b.base < v.seg_end && (next < 0 || b.base == next)) {
            if (b.max_ts >= ts) {
                start_at_first(&b);
                if ((r = verify_batch(s, v.d, v.m->len, &b, b.base)) < 0) {
                    rc = r;
                    goto out;
                }
                int64_t meta[PL_META], bytes = 0;
                for (int64_t o = b.base; o < b.base + b.count; o++) {
                    if ((r = decode_batch(s, v.d, &b, o, 1, &bytes, 0,
                                          meta)) < 0) {
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
        if (next >= 0 && next < v.seg_end && !v.more) {
            rc = corrupt(s, pos, next, "invalid batch");
            goto out;
        }
        pl_map_unref(v.m);
        v.m = NULL;
    }
    pl_err(PL_ENOTFOUND, 0, "no record with timestamp >= %" PRId64 " in %s",
           ts, t->dir);
out:
    pl_map_unref(v.m);
    pthread_rwlock_unlock(&t->slock);
    return rc;
}

int pl_topic_batch_token(pl_topic *t, int64_t pos, uint64_t *token) {
    *token = 0;
    pthread_rwlock_rdlock(&t->slock);
    int rc = 0;
    view v = {0};
    int64_t end = atomic_load_explicit(&t->end_offset, memory_order_acquire);
    int64_t start = atomic_load(&t->start_offset), off = pos - 1;
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
    } else if (off >= end) {
        rc = pl_err(PL_ERANGE, 0, "position %" PRId64 " is past the end %"
                    PRId64 " of %s", pos, end, t->dir);
    } else if (off >= start) {
        int64_t i = pl_find_segment(t, off);
        pl_batch b;
        if ((rc = open_view(t, i, off, end, 0, &v)) == 0 &&
            !(v.s->sealed && off >= v.s->end) &&
            (rc = seek_batch(&v, off, &b)) == 0)
            *token = get64(v.d + b.pos);
    }
    pl_map_unref(v.m);
    pthread_rwlock_unlock(&t->slock);
    return rc;
}

int pl_first_max_ts(pl_topic *t, int64_t *max_ts) {
    pthread_rwlock_rdlock(&t->slock);
    pl_segment *s = t->segs[0];
    int rc = 0;
    if (!s->loaded_once) {
        pl_map *m = pl_sealed_map(t, 0, &rc);
        pl_map_unref(m);
    }
    *max_ts = s->max_ts;
    if (rc == 0 && s->bad_pos == 0) rc = -PL_ECORRUPT;
    pthread_rwlock_unlock(&t->slock);
    return rc;
}
