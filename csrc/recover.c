/*
 * recover.c -- opening a topic: what is on disk, what can be trusted, and
 * where the next append goes (docs/FORMAT.md §6).
 *
 * 1. List the directory: BASE.log files are the segments; BASE.idx.tmp
 *    files are removed; a BASE.idx without its BASE.log is removed, after
 *    its end offset is noted as evidence (step 5).
 * 2. Read the checkpoint (checkpoint.c). It says up to which offset, in
 *    which segment and at which byte, everything was fdatasync'ed (D), the
 *    start offset, the end offset when written, lost ranges and lifetime
 *    counters, and whether a clean close wrote it.
 * 3. Clean close (the active segment is exactly as that close left it):
 *    nothing is scanned; the active segment's index comes from its .idx.
 * 4. Otherwise every byte not known durable is verified: the segments from
 *    the one holding D on, each from its D position or its header. A
 *    segment whose data does not verify is cut at its first bad batch
 *    (truncated: the bytes are never read again); whatever lies between a
 *    segment's data end and the next segment's base is a lost range. Bytes
 *    below D are only parsed, to rebuild the active segment's index. With
 *    no valid checkpoint everything is verified.
 * 5. Offsets are never reused (invariant 9): if anything durable says that
 *    offsets up to N existed -- the checkpoint's durable and end offsets, an
 *    orphan index, a consumer position (min_end, from the caller) -- and
 *    the data ends below N, the active segment is sealed and a new one
 *    starts at N: [end, N) is a lost range.
 * 6. What recovery changed, and every segment above D, is fdatasync'ed and
 *    the checkpoint rewritten: D becomes the end. In sync="none", when
 *    nothing was lost and the checkpoint described every file, the syncs
 *    are left to the next checkpoint instead (the one on disk stays true).
 * Open time is bounded by the bytes above D (plus one pass over the active
 * segment's headers), not by the backlog.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

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

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* The end offset an index file vouches for (checksum verified), or -1. */
static int64_t orphan_index_end(pl_topic *t, int64_t base) {
    char *p = pl_seg_path(t->dir, base, ".idx");
    int fd = p ? pl_io_open(p, O_RDONLY, 0) : -1;
    free(p);
    int64_t size, end = -1;
    uint8_t *buf = NULL;
    if (fd >= 0 && pl_io_fstat_size(fd, &size) == 0 && size >= PL_IDX_HDR &&
        size <= (64 << 20) && (buf = malloc((size_t)size)) &&
        pl_io_pread(fd, buf, (size_t)size, 0) == 0 &&
        memcmp(buf + 8, PL_IDX_MAGIC, 8) == 0 &&
        get64(buf) == pl_xxh64(buf + 8, (size_t)size - 8, 0) &&
        (int64_t)get64(buf + 24) == base)
        end = (int64_t)get64(buf + 32);
    free(buf);
    pl_io_close(fd);
    return end;
}

/* Step 1. With `writer` 0 (a reader of a log another process writes)
 * nothing is removed and no evidence gathered. */
static int list_segments(pl_topic *t, i64vec *logs, int64_t *evidence,
                         int writer) {
    DIR *d = opendir(t->dir);
    if (!d) return pl_err(PL_EIO, errno, "cannot list topic directory %s",
                          t->dir);
    i64vec idx = {0};
    int64_t b;
    int oom = 0;
    struct dirent *de;
    while (!oom && (de = readdir(d)) != NULL) {
        if (seg_name(de->d_name, ".idx.tmp", &b)) {
            if (writer) unlink_seg_file(t, b, ".idx.tmp");
        } else if (seg_name(de->d_name, ".log", &b)) {
            oom = vec_push(logs, b) < 0;
        } else if (writer && seg_name(de->d_name, ".idx", &b)) {
            oom = vec_push(&idx, b) < 0;
        }
    }
    closedir(d);
    if (oom) {
        free(idx.v);
        return pl_err(PL_ENOMEM, 0, "out of memory");
    }
    if (logs->n > 0) /* qsort/bsearch take no NULL array */
        qsort(logs->v, (size_t)logs->n, sizeof *logs->v, cmp_i64);
    for (int64_t i = 0; i < idx.n; i++) {
        if (vec_has(logs, idx.v[i])) continue;
        int64_t e = orphan_index_end(t, idx.v[i]);
        if (e > *evidence) *evidence = e;
        unlink_seg_file(t, idx.v[i], ".idx");
    }
    free(idx.v);
    return 0;
}

int pl_list_segments(pl_topic *t, int64_t **bases, int64_t *n) {
    i64vec v = {0};
    int64_t ev = 0;
    int rc = list_segments(t, &v, &ev, 0);
    *bases = v.v;
    *n = v.n;
    return rc;
}

int pl_segment_create(pl_topic *t, int64_t base, int64_t alloc,
                      pl_segment **out) {
    pl_segment *s = pl_seg_new(t, base);
    if (!s) return pl_err(PL_ENOMEM, 0, "out of memory");
    int rc = 0;
    int fd = pl_io_open(s->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = pl_err(PL_EIO, errno, "cannot create segment %s", s->path);
        goto fail;
    }
    uint8_t hdr[PL_SEG_HDR];
    pl_seg_header_write(hdr, base);
    if (alloc < PL_SEG_HDR) alloc = PL_SEG_HDR;
    if (pl_io_pwrite(fd, hdr, sizeof hdr, 0) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot write the header of %s", s->path);
    } else if (alloc > PL_SEG_HDR &&
               pl_io_fallocate(fd, PL_SEG_HDR, alloc - PL_SEG_HDR) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot allocate %" PRId64 " bytes for "
                    "segment %s", alloc, s->path);
    }
    pl_io_close(fd);
    if (rc < 0) {
        pl_io_unlink(s->path);
        goto fail;
    }
    s->cap = t->cfg.segment_bytes;
    s->alloc = alloc;
    s->file_bytes = alloc;
    s->trusted_from = PL_SEG_HDR;
    s->dirty = 1;
    atomic_store(&t->dir_dirty, 1); /* its name is not durable yet */
    atomic_store(&s->pub_pos, PL_SEG_HDR);
    *out = s;
    return 0;
fail:
    pl_seg_free(s);
    return rc;
}

/* Copy the file behind fd (size bytes) to PATH.damaged (or .damaged.N)
 * before recovery changes it: never over an earlier copy. */
static int save_damaged(pl_segment *s, int fd, int64_t size) {
    size_t n = strlen(s->path) + 24;
    char *dst = malloc(n);
    uint8_t *buf = malloc(1 << 16);
    int out = -1, rc = 0;
    if (!dst || !buf) {
        rc = pl_err(PL_ENOMEM, 0, "out of memory");
        goto done;
    }
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(dst, n, "%s.damaged", s->path);
        else
            snprintf(dst, n, "%s.damaged.%d", s->path, i);
        out = pl_io_open(dst, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (out >= 0 || errno != EEXIST) break;
    }
    if (out < 0) goto io;
    for (int64_t off = 0; off < size;) {
        size_t k = size - off < (1 << 16) ? (size_t)(size - off) : 1 << 16;
        if (pl_io_pread(fd, buf, k, off) < 0 ||
            pl_io_pwrite(out, buf, k, off) < 0)
            goto io;
        off += (int64_t)k;
    }
    goto done;
io:
    rc = pl_err(PL_EIO, errno, "cannot save the damaged segment %s to %s",
                s->path, dst);
done:
    pl_io_close(out);
    free(dst);
    free(buf);
    return rc;
}

/* Does [from, size) of the file hold a non-zero byte? */
static int tail_nonzero(int fd, int64_t from, int64_t size) {
    uint8_t buf[1 << 14];
    for (int64_t off = from; off < size;) {
        size_t k = size - off < (int64_t)sizeof buf ? (size_t)(size - off)
                                                    : sizeof buf;
        if (pl_io_pread(fd, buf, k, off) < 0) return 1; /* assume so */
        if (!pl_all_zero(buf, (int64_t)k)) return 1;
        off += (int64_t)k;
    }
    return 0;
}

/* What recovering one segment found. */
typedef struct seg_result {
    int64_t end_off;    /* offset after its last good batch */
    int changed;        /* the file was changed (cut, header rewritten) */
    int suspect;        /* the checkpoint did not describe the file */
} seg_result;

/*
 * Recover segment i: verify its batches from pos0 (those before are only
 * parsed), cut the file after its last good batch, and, for the active
 * segment, rebuild the in-memory index and set the write position.
 * max_off bounds the offsets it may hold (the next segment's base).
 */
static int recover_segment(pl_topic *t, int64_t i, int64_t pos0,
                           int64_t expect0, seg_result *res) {
    pl_segment *s = t->segs[i];
    int active = i == t->nsegs - 1;
    int64_t max_off = active ? INT64_MAX : t->segs[i + 1]->base;
    int64_t size = 0;
    int rc = 0, fd = pl_io_open(s->path, O_RDWR, 0);
    pl_map *m = NULL;
    memset(res, 0, sizeof *res);
    if (fd < 0 || pl_io_fstat_size(fd, &size) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot open segment %s", s->path);
        goto out;
    }
    if (size > PL_SEG_MAX) {
        rc = pl_err(PL_EFORMAT, 0, "segment %s is larger than 4 GiB",
                    s->path);
        goto out;
    }
    uint8_t hdr[PL_SEG_HDR] = {0};
    int hdr_ok = 0;
    if (size > 0 && pl_io_pread(fd, hdr, (size_t)(size < PL_SEG_HDR
                                                      ? size : PL_SEG_HDR),
                                0) < 0) {
        rc = pl_err(PL_EIO, errno, "cannot read segment %s", s->path);
        goto out;
    }
    if (size >= PL_SEG_HDR) {
        int r = pl_seg_header_check(hdr, s->base);
        if (r == -PL_EFORMAT) {
            rc = pl_err(PL_EFORMAT, 0, "segment %s has format version %u; "
                        "this pylog reads version %d", s->path,
                        get32(hdr + 8), PL_FORMAT_VERSION);
            goto out;
        }
        hdr_ok = r == 0;
    }
    if (!hdr_ok) {
        /* A damaged header (not merely never written) may mean the file
         * is not ours at all: keep its bytes before the header is
         * rewritten and what does not verify is cut, so that opening
         * neither fails (invariant 6) nor destroys anything. */
        int64_t n = size < PL_SEG_HDR ? size : PL_SEG_HDR;
        if (!pl_all_zero(hdr, n) && (rc = save_damaged(s, fd, size)) < 0)
            goto out;
        pl_seg_header_write(hdr, s->base);
        if (pl_io_pwrite(fd, hdr, PL_SEG_HDR, 0) < 0) {
            rc = pl_err(PL_EIO, errno, "cannot rewrite the header of %s",
                        s->path);
            goto out;
        }
        if (size < PL_SEG_HDR) size = PL_SEG_HDR;
        /* whatever follows a damaged header is verified, batch by batch */
        pos0 = PL_SEG_HDR;
        expect0 = s->base;
        res->changed = 1;
        res->suspect = 1;
    }
    int64_t valid_end = PL_SEG_HDR, end_off = s->base, mts = INT64_MIN;
    if (size > PL_SEG_HDR) {
        m = pl_io_map(fd, 0, size, size, 0);
        if (!m) {
            rc = pl_err(PL_EIO, errno, "cannot map %s", s->path);
            goto out;
        }
        /* The index is rebuilt for the active segment only: a sealed one
         * gets its .idx when first read (read.c). */
        int r = pl_seg_scan(m->base, active ? PL_SEG_HDR : pos0, size,
                            s->base, active ? s->base : expect0, max_off,
                            pos0, t->cfg.index_interval_bytes,
                            active ? &s->ib : NULL, &valid_end, &end_off,
                            &mts);
        if (r < 0) {
            rc = pl_err(PL_ENOMEM, 0, "out of memory");
            goto out;
        }
        if (active && valid_end < pos0) {
            /* The part below the checkpoint does not parse: the
             * checkpoint did not describe this file. Verify it all. */
            res->suspect = 1;
            s->ib.n = 0;
            s->ib.last_pos = -1;
            s->ib.run_max_ts = INT64_MIN;
            r = pl_seg_scan(m->base, PL_SEG_HDR, size, s->base, s->base,
                            max_off, PL_SEG_HDR,
                            t->cfg.index_interval_bytes, &s->ib, &valid_end,
                            &end_off, &mts);
            if (r < 0) {
                rc = pl_err(PL_ENOMEM, 0, "out of memory");
                goto out;
            }
        }
        if (valid_end < size) {
            /* A torn tail, bytes a power loss kept past a lost page, or
             * the zeros of an unfilled allocation: cut them, so nothing
             * stale can pass for a batch once appends fill the gap. */
            if (tail_nonzero(fd, valid_end, size))
                t->truncated += size - valid_end;
            if (pl_io_ftruncate(fd, valid_end) < 0) {
                rc = pl_err(PL_EIO, errno, "cannot cut segment %s at %"
                            PRId64, s->path, valid_end);
                goto out;
            }
            res->changed = 1;
            size = valid_end;
        }
    }
    res->end_off = end_off;
    s->end = end_off;
    s->max_ts = mts;
    s->file_bytes = size;
    atomic_store(&s->nidx, s->ib.n);
    if (active) {
        /* The active segment's index lives in memory (a stale file would
         * count against max_bytes). */
        char *ip = pl_seg_path(t->dir, s->base, ".idx");
        if (ip) pl_io_unlink(ip);
        free(ip);
        s->idx_bytes = 0;
        s->alloc = size;
        s->cap = t->cfg.segment_bytes;
        atomic_store(&s->pub_pos, valid_end);
        /* Batches from pos0 were just verified; those before it were
         * only parsed (synced earlier): verified when first read. */
        s->trusted_from = pos0 > PL_SEG_HDR ? pos0 : PL_SEG_HDR;
        atomic_store(&s->verified, PL_SEG_HDR);
    } else {
        s->loaded_once = 0; /* its index is made at first read */
    }
    s->dirty = 1;
out:
    pl_map_unref(m);
    pl_io_close(fd);
    return rc;
}

/* Clean close: take the active segment as that close left it, with the
 * index it wrote. 1 if it could, 0 if it must be scanned after all. */
static int clean_active(pl_topic *t, const pl_ckpt *ck) {
    pl_segment *s = t->active;
    int64_t size = file_size(s->path);
    if (!ck->clean || ck->dseg != s->base || ck->durable != ck->end ||
        size != ck->clean_pos || size < PL_SEG_HDR)
        return 0;
    /* The header decides as in a scan: another format version is refused
     * (recover_segment says so), damage is recovered. */
    uint8_t hdr[PL_SEG_HDR];
    int fd = pl_io_open(s->path, O_RDONLY, 0);
    if (fd < 0)
        return pl_err(PL_EIO, errno, "cannot open segment %s", s->path);
    int ok = pl_io_pread(fd, hdr, sizeof hdr, 0) == 0 &&
             pl_seg_header_check(hdr, s->base) == 0;
    pl_io_close(fd);
    if (!ok) return 0;
    pl_idx_entry *e = NULL;
    uint32_t n = 0;
    int64_t end, mts;
    if (pl_seg_index_read(s->path, s->base, size, INT64_MAX, &e, &n, &end,
                          &mts) != 1)
        return 0;
    if (end != ck->end) {
        free(e);
        return 0;
    }
    /* The index of an active segment is the writer's, in memory, from now
     * on: the file would be stale (and count against max_bytes). */
    char *ip = pl_seg_path(t->dir, s->base, ".idx");
    if (ip) pl_io_unlink(ip);
    free(ip);
    s->idx_bytes = 0;
    s->ib.e = e;
    s->ib.n = s->ib.cap = n;
    s->ib.last_pos = n ? (int64_t)e[n - 1].pos : -1;
    s->ib.run_max_ts = mts;
    atomic_store(&s->nidx, n);
    s->end = end;
    s->max_ts = mts;
    s->alloc = s->file_bytes = size;
    s->cap = t->cfg.segment_bytes;
    atomic_store(&s->pub_pos, size);
    /* What the clean close left is verified when first read, like a
     * sealed segment's batches; what this process appends is trusted. */
    s->trusted_from = size;
    atomic_store(&s->verified, PL_SEG_HDR);
    return 1;
}

/* No segment file at all: start one at `base`. */
static int create_first(pl_topic *t, int64_t base) {
    pl_segment *s;
    /* A new topic gets its first grow step and its write window now, so
     * that its first append costs what later ones do (a topic is created
     * once; a log with thousands of them appends to each soon after). */
    int64_t step = t->grow_step < t->cfg.segment_bytes ? t->grow_step
                                                       : t->cfg.segment_bytes;
    int rc = pl_segment_create(t, base, step, &s);
    if (rc < 0) return rc;
    if ((rc = pl_segs_reserve(t)) < 0) {
        pl_io_unlink(s->path);
        pl_seg_free(s);
        return rc;
    }
    t->segs[t->nsegs++] = s;
    t->fresh = 1; /* pl_topic_open maps its write window */
    return 0;
}

int pl_recover(pl_topic *t, int64_t min_end) {
    i64vec bases = {0};
    int64_t evidence = min_end > 0 ? min_end : 0;
    int rc = list_segments(t, &bases, &evidence, 1);
    if (rc < 0) goto out;
    pl_ckpt ck;
    int have_ck = pl_ckpt_read(t->dir, &ck) == 1;
    if (have_ck) {
        t->ckpt = ck;
        for (int i = 0; i < PL_NCOUNTERS; i++)
            atomic_store(&t->n[i], ck.counters[i]);
        for (int i = 0; i < ck.nlost; i++)
            pl_lost_add(t, ck.lost[i].from, ck.lost[i].to);
        if (ck.durable > evidence) evidence = ck.durable;
        if (ck.end > evidence) evidence = ck.end;
    } else {
        memset(&t->ckpt, 0, sizeof t->ckpt);
    }
    int clean = 0, suspect = !have_ck, nlost0 = t->nlost;
    if (bases.n == 0) {
        /* Nothing on disk (a new topic, or every segment removed by
         * hand): the first segment starts where the evidence says. */
        if ((rc = create_first(t, evidence)) < 0) goto out;
        if (have_ck && ck.start < evidence)
            count_add(&t->n[PL_N_LOST_RECORDS],
                      pl_lost_add(t, ck.start, evidence));
    } else {
        for (int64_t i = 0; i < bases.n; i++) {
            pl_segment *s = pl_seg_new(t, bases.v[i]);
            if (!s || pl_segs_reserve(t) < 0) {
                pl_seg_free(s);
                rc = pl_err(PL_ENOMEM, 0, "out of memory");
                goto out;
            }
            s->sealed = i + 1 < bases.n;
            s->end = s->sealed ? bases.v[i + 1] : bases.v[i];
            s->file_bytes = file_size(s->path);
            char *ip = pl_seg_path(t->dir, bases.v[i], ".idx");
            s->idx_bytes = ip ? file_size(ip) : 0;
            free(ip);
            t->segs[t->nsegs++] = s;
        }
        t->active = t->segs[t->nsegs - 1];
        /* A segment wholly below the recorded start was being deleted by
         * retention when the process stopped: finish that. */
        while (have_ck && t->nsegs > 1 && t->segs[1]->base <= ck.start) {
            pl_segment *s = t->segs[0];
            pl_io_unlink(s->path);
            unlink_seg_file(t, s->base, ".idx");
            memmove(t->segs, t->segs + 1,
                    (size_t)(t->nsegs - 1) * sizeof *t->segs);
            t->nsegs--;
            pl_seg_free(s);
            atomic_store(&t->dir_dirty, 1);
        }
        /* A missing first segment: the start moved with no deletion. */
        if (have_ck && ck.start < t->segs[0]->base)
            count_add(&t->n[PL_N_LOST_RECORDS],
                      pl_lost_add(t, ck.start, t->segs[0]->base));
        if (have_ck && (clean = clean_active(t, &ck)) < 0) {
            rc = clean;
            goto out;
        }
        if (!clean) {
            /* Where verification starts: the checkpoint's position, or
             * the first segment if there is no usable one. */
            int64_t k = 0, pos0 = PL_SEG_HDR, expect0 = t->segs[0]->base;
            if (have_ck && ck.durable >= t->segs[0]->base) {
                k = pl_find_segment(t, ck.durable);
                if (t->segs[k]->base == ck.dseg &&
                    ck.dpos >= PL_SEG_HDR &&
                    ck.dpos <= file_size(t->segs[k]->path)) {
                    pos0 = ck.dpos;
                    expect0 = ck.durable;
                } else {
                    expect0 = t->segs[k]->base;
                }
            }
            /* The active segment's index needs its whole data parsed,
             * whichever segment verification starts in. */
            for (int64_t i = k; i < t->nsegs; i++) {
                seg_result r;
                int64_t p0 = i == k ? pos0 : PL_SEG_HDR;
                int64_t e0 = i == k ? expect0 : t->segs[i]->base;
                if ((rc = recover_segment(t, i, p0, e0, &r)) < 0) goto out;
                suspect |= r.suspect;
                if (i + 1 < t->nsegs && r.end_off < t->segs[i + 1]->base)
                    count_add(&t->n[PL_N_LOST_RECORDS],
                              pl_lost_add(t, r.end_off, t->segs[i + 1]->base));
                if (r.changed) atomic_store(&t->dir_dirty, 1);
            }
        }
    }
    t->active = t->segs[t->nsegs - 1];
    int64_t start = t->segs[0]->base, end = t->active->end;
    atomic_store(&t->start_offset, start);
    atomic_store(&t->end_offset, end);
    atomic_store(&t->durable, clean ? end : start);
    if (evidence > end) {
        /* Step 5: [end, evidence) existed and is gone. */
        pthread_mutex_lock(&t->wlock);
        rc = pl_roll_to(t, evidence, 0, 0);
        pthread_mutex_unlock(&t->wlock);
        if (rc < 0) goto out;
        count_add(&t->n[PL_N_LOST_RECORDS], evidence - end);
        clean = 0;
    }
    if (!clean) {
        /* Step 6: what was verified and changed is made durable, and the
         * checkpoint says so. */
        for (int64_t i = 0; i < t->nsegs; i++)
            if (t->segs[i]->end > (have_ck ? ck.durable : -1) ||
                t->segs[i] == t->active)
                t->segs[i]->dirty = 1;
        if (t->cfg.sync_mode == PL_SYNC_NONE && !suspect && bases.n > 0 &&
            t->nlost == nlost0 && ck.durable <= end) {
            /* sync="none", nothing was lost and the checkpoint on disk
             * still says what is durable: leave the syncs to the next
             * checkpoint (the syncer, or close), as the writer would
             * have. Syncing here made open time follow the unsynced
             * bytes: 3.4 s for 1 GiB a killed writer left in the page
             * cache, where verifying it takes 0.4 s. A power cut before
             * then finds the same checkpoint and verifies the same bytes
             * again. (In "always" and "interval" little is unsynced, and
             * durable_offset is the end after open.) */
            atomic_store(&t->durable, ck.durable > start ? ck.durable
                                                          : start);
        } else if ((rc = pl_flush_all(t, 0, 0)) < 0) {
            goto out;
        }
    }
out:
    free(bases.v);
    return rc;
}
