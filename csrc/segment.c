/*
 * segment.c -- one segment file and its index: the byte format of batches
 * and records, the validity check, the recovery scan and the index file.
 * docs/FORMAT.md is the spec; the layout, in short (all little-endian):
 *
 *   segment header (32 B): magic "PYLOGSEG" | u32 version | u32 header size
 *                          | i64 base offset | u64 XXH64 of bytes 0..24
 *   batch header (48 B):   u64 XXH64 of bytes 8..len | u32 len | u32 count
 *                          | i64 base offset | i64 first ts | i64 max ts
 *                          | u32 flags (0) | u32 reserved (0)
 *   record (20 B + data):  i64 ts | i32 key len (-1 null) | u32 value len
 *                          | u32 headers len | key | value | headers
 *
 * A batch is valid iff: its header lies inside the file, len covers the
 * header and `count` records exactly, flags and reserved are 0, the
 * checksum matches, and its base offset is the previous batch's base +
 * count (the segment's base for the first). A length of 0 where a batch
 * would start marks the clean end of the data (the rest is preallocated
 * zeros). Anything else is garbage: the scan stops there.
 *
 * The index (.idx) is derived data: an entry (relative offset, position,
 * max timestamp before that position) every index_interval_bytes of log.
 * It carries its own checksum and the size of the segment it describes;
 * one that does not match is rebuilt from the segment, never trusted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

_Static_assert(sizeof(pl_idx_entry) == PL_IDX_ENTRY, "index entry layout");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the format is little-endian; big-endian hosts need swaps");

char *pl_seg_path(const char *dir, int64_t base, const char *ext) {
    size_t n = strlen(dir) + 32 + strlen(ext);
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%020" PRId64 "%s", dir, base, ext);
    return p;
}

void pl_seg_header_write(uint8_t *h, int64_t base) {
    memcpy(h, PL_SEG_MAGIC, 8);
    put32(h + 8, PL_FORMAT_VERSION);
    put32(h + 12, PL_SEG_HDR);
    put64(h + 16, (uint64_t)base);
    put64(h + 24, pl_xxh64(h, 24, 0));
}

/* 0: valid; -PL_EFORMAT: a pylog header of another version; -PL_ECORRUPT */
int pl_seg_header_check(const uint8_t *h, int64_t base) {
    if (memcmp(h, PL_SEG_MAGIC, 8) != 0) return -PL_ECORRUPT;
    if (get64(h + 24) != pl_xxh64(h, 24, 0)) return -PL_ECORRUPT;
    if (get32(h + 8) != PL_FORMAT_VERSION) return -PL_EFORMAT;
    if (get32(h + 12) != PL_SEG_HDR || (int64_t)get64(h + 16) != base)
        return -PL_ECORRUPT;
    return 0;
}

int pl_all_zero(const uint8_t *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

int pl_batch_parse(const uint8_t *data, int64_t limit, int64_t pos,
                   pl_batch *b) {
    if (pos >= limit) return 0;
    if (limit - pos < PL_BATCH_HDR)
        return pl_all_zero(data + pos, limit - pos) ? 0 : -1;
    const uint8_t *h = data + pos;
    uint32_t len = get32(h + 8);
    if (len == 0) return pl_all_zero(h, PL_BATCH_HDR) ? 0 : -1;
    uint32_t count = get32(h + 12);
    if (len < PL_BATCH_HDR + PL_REC_HDR || (int64_t)len > limit - pos)
        return -1;
    if (count == 0 || count > (len - PL_BATCH_HDR) / PL_REC_HDR) return -1;
    if (get32(h + 40) != 0 || get32(h + 44) != 0) return -1;
    b->pos = pos;
    b->len = len;
    b->count = count;
    b->base = (int64_t)get64(h + 16);
    b->first_ts = (int64_t)get64(h + 24);
    b->max_ts = (int64_t)get64(h + 32);
    return 1;
}

int pl_batch_checksum_ok(const uint8_t *data, const pl_batch *b) {
    const uint8_t *h = data + b->pos;
    return get64(h) == pl_xxh64(h + 8, (size_t)b->len - 8, 0);
}

/* The records of a checksummed batch tile it exactly. */
int pl_batch_records_ok(const uint8_t *data, const pl_batch *b) {
    int64_t p = b->pos + PL_BATCH_HDR, end = b->pos + b->len;
    for (int64_t i = 0; i < b->count; i++) {
        if (end - p < PL_REC_HDR) return 0;
        const uint8_t *r = data + p;
        int32_t kl = (int32_t)get32(r + 8);
        int64_t need = PL_REC_HDR + (kl > 0 ? kl : 0) + (int64_t)get32(r + 12) +
                       (int64_t)get32(r + 16);
        if (kl < -1 || need > end - p) return 0;
        p += need;
    }
    return p == end;
}

/* Make room for one more entry; -PL_ENOMEM if the array cannot grow. */
static int idx_grow(pl_idx_builder *ib) {
    if (ib->n < ib->cap) return 0;
    uint32_t nc = ib->cap ? ib->cap * 2 : 16;
    pl_idx_entry *e = realloc(ib->e, (size_t)nc * sizeof *e);
    if (!e) return -PL_ENOMEM;
    ib->e = e;
    ib->cap = nc;
    return 0;
}

static int idx_push(pl_idx_builder *ib, int64_t rel, int64_t pos,
                    int64_t batch_pos) {
    if (idx_grow(ib) < 0) return -PL_ENOMEM;
    pl_idx_entry *e = &ib->e[ib->n];
    e->rel = (uint32_t)rel;
    e->pos = (uint32_t)pos;
    e->batch_pos = (uint32_t)batch_pos;
    e->reserved = 0;
    e->max_ts = ib->run_max_ts;
    ib->n++;
    ib->last_pos = pos;
    return 0;
}

int pl_idx_add(pl_idx_builder *ib, int64_t seg_base, const uint8_t *batch,
               const pl_batch *b, int64_t interval) {
    if (ib->last_pos < 0 || b->pos - ib->last_pos >= interval) {
        if (idx_push(ib, b->base - seg_base, b->pos, b->pos) < 0)
            return -PL_ENOMEM;
    }
    if (b->len > interval) {
        int64_t p = b->pos + PL_BATCH_HDR;
        for (int64_t i = 0; i < b->count; i++) {
            if (p - ib->last_pos >= interval &&
                idx_push(ib, b->base + i - seg_base, p, b->pos) < 0)
                return -PL_ENOMEM;
            const uint8_t *r = batch + (p - b->pos);
            int32_t kl = (int32_t)get32(r + 8);
            p += PL_REC_HDR + (kl > 0 ? kl : 0) + get32(r + 12) +
                 get32(r + 16);
        }
    }
    if (b->max_ts > ib->run_max_ts) ib->run_max_ts = b->max_ts;
    return 0;
}

int pl_seg_scan(const uint8_t *data, int64_t from, int64_t limit,
                int64_t seg_base, int64_t expect, int64_t max_off,
                int64_t verify_from, int64_t interval, pl_idx_builder *ib,
                int64_t *valid_end, int64_t *end_off, int64_t *max_ts) {
    int64_t pos = from, mts = INT64_MIN;
    int garbage = 0;
    for (;;) {
        pl_batch b;
        int r = pl_batch_parse(data, limit, pos, &b);
        if (r == 0) break;
        if (r < 0 || b.base != expect || b.base + b.count > max_off ||
            (pos >= verify_from && (!pl_batch_checksum_ok(data, &b) ||
                                    !pl_batch_records_ok(data, &b)))) {
            garbage = 1;
            break;
        }
        if (ib && pl_idx_add(ib, seg_base, data + b.pos, &b, interval) < 0)
            return -PL_ENOMEM;
        if (b.max_ts > mts) mts = b.max_ts;
        expect += b.count;
        pos += b.len;
    }
    *valid_end = pos;
    *end_off = expect;
    *max_ts = mts;
    return garbage;
}

pl_idx_entry pl_idx_find(const pl_idx_entry *e, uint32_t n, int64_t rel) {
    uint32_t lo = 0, hi = n; /* first entry with rel > target */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((int64_t)e[mid].rel <= rel)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0) return e[lo - 1];
    pl_idx_entry first = {0, PL_SEG_HDR, PL_SEG_HDR, 0, INT64_MIN};
    return first;
}

int64_t pl_idx_find_time(const pl_idx_entry *e, uint32_t n, int64_t ts) {
    uint32_t lo = 0, hi = n; /* first entry with max_ts >= ts */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (e[mid].max_ts < ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 ? PL_SEG_HDR : (int64_t)e[lo - 1].batch_pos;
}

int pl_seg_index_write(const char *dir, int64_t base, int64_t end,
                       int64_t seg_len, int64_t max_ts,
                       const pl_idx_entry *e, uint32_t n) {
    size_t size = PL_IDX_HDR + (size_t)n * PL_IDX_ENTRY;
    uint8_t *buf = malloc(size);
    char *tmp = pl_seg_path(dir, base, ".idx.tmp");
    char *fin = pl_seg_path(dir, base, ".idx");
    int rc = -PL_ENOMEM, fd = -1;
    if (!buf || !tmp || !fin) goto out;
    memcpy(buf + 8, PL_IDX_MAGIC, 8);
    put32(buf + 16, PL_FORMAT_VERSION);
    put32(buf + 20, n);
    put64(buf + 24, (uint64_t)base);
    put64(buf + 32, (uint64_t)end);
    put64(buf + 40, (uint64_t)seg_len);
    put64(buf + 48, (uint64_t)max_ts);
    if (n) memcpy(buf + PL_IDX_HDR, e, (size_t)n * PL_IDX_ENTRY);
    put64(buf, pl_xxh64(buf + 8, size - 8, 0));
    fd = pl_io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || pl_io_pwrite(fd, buf, size, 0) < 0 ||
        pl_io_rename(tmp, fin) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot write index %s", fin);
        if (fd >= 0) pl_io_unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    pl_io_close(fd);
    free(buf);
    free(tmp);
    free(fin);
    return rc;
}

int pl_seg_index_read(const char *seg_path, int64_t base, int64_t seg_len,
                      int64_t max_end, pl_idx_entry **out, uint32_t *nout,
                      int64_t *end, int64_t *max_ts) {
    char *path = strdup(seg_path);
    if (!path) return -PL_ENOMEM;
    memcpy(path + strlen(path) - 4, ".idx", 4);
    int fd = pl_io_open(path, O_RDONLY, 0);
    free(path);
    if (fd < 0) return 0;
    int64_t size;
    uint8_t *buf = NULL;
    int rc = 0;
    if (pl_io_fstat_size(fd, &size) < 0 || size < PL_IDX_HDR ||
        (size - PL_IDX_HDR) % PL_IDX_ENTRY != 0 ||
        size > PL_IDX_HDR + (seg_len / PL_REC_HDR + 2) * PL_IDX_ENTRY)
        goto bad;
    buf = malloc((size_t)size);
    if (!buf) {
        rc = -PL_ENOMEM;
        goto bad;
    }
    if (pl_io_pread(fd, buf, (size_t)size, 0) < 0) goto bad;
    uint32_t n = get32(buf + 20);
    int64_t e_end = (int64_t)get64(buf + 32);
    if (memcmp(buf + 8, PL_IDX_MAGIC, 8) != 0 ||
        get32(buf + 16) != PL_FORMAT_VERSION ||
        (int64_t)n != (size - PL_IDX_HDR) / PL_IDX_ENTRY ||
        (int64_t)get64(buf + 24) != base || e_end < base ||
        e_end > max_end || (int64_t)get64(buf + 40) != seg_len ||
        get64(buf) != pl_xxh64(buf + 8, (size_t)size - 8, 0))
        goto bad;
    /* Entries must point inside the segment, in order. */
    const pl_idx_entry *e = (const pl_idx_entry *)(buf + PL_IDX_HDR);
    for (uint32_t i = 0; i < n; i++) {
        if (e[i].batch_pos < PL_SEG_HDR || e[i].pos < e[i].batch_pos ||
            (int64_t)e[i].pos >= seg_len || e[i].reserved != 0 ||
            (int64_t)e[i].rel >= e_end - base ||
            (i > 0 && (e[i].pos <= e[i - 1].pos || e[i].rel <= e[i - 1].rel ||
                       e[i].batch_pos < e[i - 1].batch_pos ||
                       e[i].max_ts < e[i - 1].max_ts)))
            goto bad;
    }
    *max_ts = (int64_t)get64(buf + 48);
    *end = e_end;
    *nout = n;
    /* The entries move to the front of the block the caller owns. */
    memmove(buf, buf + PL_IDX_HDR, (size_t)n * PL_IDX_ENTRY);
    *out = (pl_idx_entry *)buf;
    pl_io_close(fd);
    return 1;
bad:
    free(buf);
    pl_io_close(fd);
    return rc;
}

pl_segment *pl_seg_new(struct pl_topic *t, int64_t base) {
    pl_segment *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->path = pl_seg_path(t->dir, base, ".log");
    if (!s->path) {
        free(s);
        return NULL;
    }
    s->topic = t;
    s->base = base;
    s->end = base;
    s->fd = -1;
    s->bad_pos = -1;
    s->trusted_from = INT64_MAX;
    s->max_ts = INT64_MIN;
    s->ib.last_pos = -1;
    s->ib.run_max_ts = INT64_MIN;
    return s;
}

void pl_seg_free(pl_segment *s) {
    if (!s) return;
    pl_cache_forget(s->topic->cache, s);
    free(s->ib.e);
    free(atomic_load(&s->vbits));
    free(s->path);
    free(s);
}
