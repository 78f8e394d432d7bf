/*
 * internal.h -- declarations shared by the C files of the core; not part of
 * the binding. Byte layouts are specified in docs/FORMAT.md; the constants
 * here are that spec in code: changing one changes the format version.
 *
 * Who calls whom (one way only):
 *   topic.c (open/close, the segment list)
 *     -> recover.c (what open finds on disk) -> checkpoint.c, segment.c
 *     -> append.c (the write path) -> retention.c -> read.c (loading)
 *     -> sync.c (durability) -> checkpoint.c
 *   read.c, append.c, sync.c, retention.c -> fcache.c -> io.c
 */
#ifndef PYLOG_INTERNAL_H
#define PYLOG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "pylog.h"

/* ---- on-disk format (docs/FORMAT.md) ---------------------------------- */
#define PL_FORMAT_VERSION 1 /* segment and index files */
#define PL_SEG_MAGIC "PYLOGSEG"
#define PL_IDX_MAGIC "PYLOGIDX"
#define PL_SEG_HDR 32   /* segment header */
#define PL_BATCH_HDR 48 /* batch header */
#define PL_REC_HDR 20   /* record header */
#define PL_IDX_HDR 56   /* index file header */
#define PL_IDX_ENTRY 24 /* one index entry */
/* Positions inside a segment are u32: a segment never exceeds this. */
#define PL_SEG_MAX ((int64_t)UINT32_MAX)
/* The smallest batch (header and one empty record): two batches never
 * start in the same 64-byte unit, which the verified-batch bitmap uses. */
#define PL_BATCH_MIN (PL_BATCH_HDR + PL_REC_HDR)

static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The absolute time ms milliseconds from now on clock clk (for the
 * pthread timed waits). */
static inline struct timespec pl_deadline(clockid_t clk, int64_t ms) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
    ts.tv_sec += ms / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    return ts;
}

static inline int64_t pl_align_up(int64_t n, int64_t a) {
    return (n + a - 1) / a * a;
}
static inline int64_t pl_align_down(int64_t n, int64_t a) {
    return n / a * a;
}

int64_t pl_now_ms(void);

/* ---- XXH64 over input in pieces (xxh64.c) ------------------------------
 * reset, update with each piece in order, digest: the result equals
 * pl_xxh64 of the pieces joined, whatever the split. */
typedef struct pl_xxh64_state {
    uint64_t v[4];     /* the accumulators of the 32-byte stripes */
    uint64_t total;    /* bytes hashed so far */
    uint64_t seed;
    uint8_t buf[32];   /* the part of a stripe not yet consumed */
    uint32_t nbuf;
} pl_xxh64_state;

void pl_xxh64_reset(pl_xxh64_state *st, uint64_t seed);
void pl_xxh64_update(pl_xxh64_state *st, const void *p, size_t n);
uint64_t pl_xxh64_digest(const pl_xxh64_state *st);

/* ---- errors (err.c) ---------------------------------------------------- */
/* Record the calling thread's error and return -code. */
int pl_err(int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- I/O layer (io.c): every file-system call of the core -------------- */
int pl_io_open(const char *path, int flags, int mode);
int pl_io_close(int fd);
int pl_io_pwrite(int fd, const void *buf, size_t n, off_t off);
/* All of the iovcnt pieces, in order, from off (any iovcnt: it is split at
 * IOV_MAX); 0 or -1. The same PL_IO_WRITE fault point as pl_io_pwrite: a
 * short write writes the first short_bytes bytes of the pieces, then
 * fails. */
int pl_io_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off);
int pl_io_pread(int fd, void *buf, size_t n, off_t off); /* full or -1 */
int pl_io_fdatasync(int fd);
int pl_io_fsync_dir(const char *dir);
/* Reserve real blocks for [off, off + len), extending the file if needed,
 * so that writes through a map cannot meet ENOSPC (a SIGBUS). */
int pl_io_fallocate(int fd, off_t off, off_t len);
int pl_io_ftruncate(int fd, off_t len);
int pl_io_fstat_size(int fd, int64_t *size);
int pl_io_rename(const char *from, const char *to);
int pl_io_unlink(const char *path);
/* The write point of an append (the batch is built in the map at dst):
 * returns 0, or -1 with errno set when a fault is armed (io.c). */
int pl_io_write_map(uint8_t *dst, size_t n);

/* ---- maps (io.c) --------------------------------------------------------
 * A refcounted mapping of [off, off + vlen) of a file. `len` <= vlen is
 * how much of it the file backed when it was made: nothing past base +
 * len is ever read (the rest may lie past the end of the file, where a
 * touch is a SIGBUS). Read maps (off 0) of sealed segments carry the
 * segment's index, freed with the map: a reader holding the map holds
 * the index. */
typedef struct pl_idx_entry {
    uint32_t rel;       /* offset - segment base */
    uint32_t pos;       /* byte position of that offset's record */
    uint32_t batch_pos; /* byte position of the batch holding it */
    uint32_t reserved;  /* 0 */
    int64_t max_ts;     /* max timestamp of the batches before batch_pos */
} pl_idx_entry;

struct pl_map {
    uint8_t *base;
    int64_t len;  /* bytes backed by the file (readers stay below) */
    int64_t vlen; /* bytes mapped */
    int64_t off;  /* file offset of base */
    int64_t cov;  /* read maps: every record below this offset lies in
                     [0, len) (INT64_MAX for a sealed segment) */
    atomic_int refs;
    atomic_int dead;
    pl_idx_entry *idx; /* sealed read maps: the index (malloc'd), or NULL */
    uint32_t nidx;
};

/* pl_io_map returns a new map with one reference, or NULL (errno). */
pl_map *pl_io_map(int fd, int64_t off, int64_t len, int64_t vlen,
                  int writable);
void pl_map_ref(pl_map *m);
void pl_map_kill(pl_map *m); /* mark dead and drop the owner's reference */

/* ---- counters (single writer: updated under wlock, read relaxed) -------
 * Lifetime counters: kept in the checkpoint (checkpoint.c) across opens. */
enum {
    PL_N_APPENDED_RECORDS, PL_N_APPENDED_BYTES,
    PL_N_RETENTION_RECORDS, PL_N_RETENTION_BYTES,
    PL_N_FULL_RECORDS, PL_N_FULL_BYTES,
    PL_N_REJECTED_RECORDS, PL_N_LOST_RECORDS, PL_N_REJECTED_BYTES,
    PL_NCOUNTERS
};

static inline void count_add(_Atomic int64_t *c, int64_t v) {
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* ---- the file cache (fcache.c) ------------------------------------------
 * Every descriptor and map the core keeps open is an entry of the topic's
 * cache (one per Log), so that their number and mapped bytes stay under
 * its limits whatever the number of topics and segments. Entries live in
 * their segment (struct pl_segment) and on the cache's LRU list; all of
 * them are guarded by the cache's mutex. */
typedef struct pl_centry {
    struct pl_centry *prev, *next; /* LRU list, most recent first */
    struct pl_segment *seg;
    int kind;  /* PL_CE_* */
    int busy;  /* FD: callers inside a syscall on it (not evictable) */
    int64_t bytes; /* maps: bytes mapped */
} pl_centry;

enum { PL_CE_FD, PL_CE_RMAP, PL_CE_WMAP };

/* ---- segments ----------------------------------------------------------- */
/* The growing index of a segment being written or scanned. */
typedef struct pl_idx_builder {
    pl_idx_entry *e;
    uint32_t n, cap;
    int64_t last_pos, run_max_ts;
} pl_idx_builder;

typedef struct pl_segment {
    int64_t base;        /* base offset = file name */
    char *path;          /* .../BASE.log */
    struct pl_topic *topic;
    /* cache-owned (fcache.c; under the cache mutex) */
    int fd;              /* -1 when not open */
    int fd_rw;           /* fd was opened read-write */
    pl_centry fd_e;
    pl_map *rmap;        /* read map [0, len) */
    pl_centry rmap_e;
    pl_map *wmap;        /* active: the write window */
    pl_centry wmap_e;
    /* state */
    int sealed;          /* not the active segment */
    int dirty;           /* written since the last fdatasync */
    int64_t trusted_from; /* batches starting here or later were written
                             or verified by this process */
    int loaded_once;     /* sealed: end, max_ts, bad_pos are known */
    _Atomic int64_t pub_pos;   /* bytes readers may read (header incl.) */
    _Atomic int64_t verified;  /* sealed: batches below are verified */
    _Atomic(uint64_t *) vbits; /* sealed: batches verified out of order,
                                  1 bit per 64-byte unit of their start */
    int64_t end;         /* next offset after this segment's data; for a
                            sealed segment not yet loaded, the next base */
    int64_t bad_pos;     /* sealed: first position that failed (-1) */
    int64_t max_ts;      /* max timestamp in the segment */
    int64_t cap;         /* active: roll before the data passes this */
    int64_t alloc;       /* active: bytes allocated (the file's size) */
    /* the active segment's index: the writer adds entries (wlock), the
     * array grows under slock (write), readers see nidx entries */
    pl_idx_builder ib;
    _Atomic uint32_t nidx;
    int64_t idx_bytes;   /* size of its .idx file (0 if none) */
    int64_t file_bytes;  /* size of its .log file (allocation incl.) */
} pl_segment;

/* Result of checking the batch at `pos`. */
typedef struct pl_batch {
    int64_t pos, len, count, base, first_ts, max_ts;
    int64_t rec_pos, rec_off; /* where decoding starts: the first record,
                                 or a record an index entry points at */
} pl_batch;

/* segment.c: the byte format of one segment and its index file.
 * pl_batch_parse: the batch header at pos (bounds and fields, no
 * checksum). 1 for a batch, 0 for the clean end (zeros), -1 for garbage. */
int pl_batch_parse(const uint8_t *data, int64_t limit, int64_t pos,
                   pl_batch *b);
int pl_batch_checksum_ok(const uint8_t *data, const pl_batch *b);
int pl_batch_records_ok(const uint8_t *data, const pl_batch *b);
void pl_seg_header_write(uint8_t *hdr, int64_t base);
int pl_seg_header_check(const uint8_t *hdr, int64_t base);
char *pl_seg_path(const char *dir, int64_t base, const char *ext);
int pl_all_zero(const uint8_t *p, int64_t n);
/* Add the entries due for batch b (bytes at `batch`): one at the batch if
 * `interval` bytes have passed since the last entry, and, in a batch
 * longer than interval, one at each record that starts interval bytes
 * after the last entry. -PL_ENOMEM if the array could not grow. */
int pl_idx_add(pl_idx_builder *ib, int64_t seg_base, const uint8_t *batch,
               const pl_batch *b, int64_t interval);
/* Scan the batches of data[from, limit) whose base offsets continue from
 * `expect` and end at or below max_off; batches starting at or after
 * verify_from are checksummed (those before were verified earlier and
 * are only parsed). Index them into ib (may be NULL). Sets *valid_end to
 * the position after the last good batch, *end_off to the offset after it
 * and *max_ts. Returns 1 if it stopped at garbage (not a clean end), 0
 * otherwise, or -PL_ENOMEM. */
int pl_seg_scan(const uint8_t *data, int64_t from, int64_t limit,
                int64_t seg_base, int64_t expect, int64_t max_off,
                int64_t verify_from, int64_t interval, pl_idx_builder *ib,
                int64_t *valid_end, int64_t *end_off, int64_t *max_ts);
/* Write BASE.idx (tmp file, then rename; not synced). */
int pl_seg_index_write(const char *dir, int64_t base, int64_t end,
                       int64_t seg_len, int64_t max_ts,
                       const pl_idx_entry *e, uint32_t n);
/* Read BASE.idx if it describes this segment: same base, end <= max_end
 * (the next segment's base; INT64_MAX for none) and the file size
 * seg_len, and passes its checksum. Returns 1 with a malloc'd array in
 * *out, 0 if missing or not usable, -PL_ENOMEM. */
int pl_seg_index_read(const char *seg_path, int64_t base, int64_t seg_len,
                      int64_t max_end, pl_idx_entry **out, uint32_t *n,
                      int64_t *end, int64_t *max_ts);
/* The last index entry with rel <= target_rel; an entry pointing at the
 * segment's first batch if there is none. */
pl_idx_entry pl_idx_find(const pl_idx_entry *e, uint32_t n, int64_t rel);
int64_t pl_idx_find_time(const pl_idx_entry *e, uint32_t n, int64_t ts);
pl_segment *pl_seg_new(struct pl_topic *t, int64_t base);
/* Drop the segment's cache entries and free it. */
void pl_seg_free(pl_segment *s);

/* ---- the file cache (fcache.c) ---------------------------------------- */
/* A descriptor of s's file (read-write if rw) marked busy: the caller
 * calls pl_cache_fd_done when its syscall returned. -1 with errno. */
int pl_cache_fd(pl_cache *c, pl_segment *s, int rw);
void pl_cache_fd_done(pl_cache *c, pl_segment *s);
/* The read map of s with a new reference, if cached and at least `need`
 * bytes long (need <= 0: any), else NULL. */
pl_map *pl_cache_rmap(pl_cache *c, pl_segment *s, int64_t need);
/* Install m as s's read map (the cache takes its own reference; an older
 * read map is killed). */
void pl_cache_set_rmap(pl_cache *c, pl_segment *s, pl_map *m);
/* A read map of [0, file size) of s made now (not cached), or NULL with
 * errno. */
pl_map *pl_cache_map_file(pl_cache *c, pl_segment *s, int64_t *size);
/* The write window of the active segment s covering [pos, pos + len),
 * with a new reference (made if needed), or NULL with errno. */
pl_map *pl_cache_wmap(pl_cache *c, pl_segment *s, int64_t pos, int64_t len);
/* s is being sealed: drop its maps (they cover the growing file) and
 * close its descriptor unless a reader is using it (eviction closes it
 * later). */
void pl_cache_sealed(pl_cache *c, pl_segment *s);
/* Drop every entry of s (s is being freed). */
void pl_cache_forget(pl_cache *c, pl_segment *s);
void pl_cache_ref(pl_cache *c);
void pl_cache_add_topic(pl_cache *c, int delta);

/* ---- the checkpoint (checkpoint.c) ---------------------------------------
 * topics/NAME/checkpoint: two 512-byte slots written in turn (docs/
 * FORMAT.md), each a complete, checksummed state; the valid slot with
 * the higher sequence number wins. */
#define PL_CKPT_MAXLOST 22
typedef struct pl_range {
    int64_t from, to; /* [from, to) */
} pl_range;

typedef struct pl_ckpt {
    uint64_t seq;
    int clean;           /* written by a clean close */
    int64_t durable;     /* every offset below was fdatasync'ed */
    int64_t dseg;        /* base of the segment holding `durable` */
    int64_t dpos;        /* a batch boundary in it at or below durable */
    int64_t start;       /* start_offset when written */
    int64_t end;         /* end_offset when written */
    int64_t clean_pos;   /* clean: the active segment's data end */
    int64_t counters[PL_NCOUNTERS];
    int nlost;
    pl_range lost[PL_CKPT_MAXLOST];
} pl_ckpt;

/* 1 and *ck if a slot verifies, 0 if none, -1 on an I/O error. */
int pl_ckpt_read(const char *dir, pl_ckpt *ck);
/* Write ck (its seq is advanced) to the slot after the last one; with
 * `sync`, fdatasync it before returning. 0 or a negative PL_E*. */
int pl_ckpt_write(const char *dir, pl_ckpt *ck, int sync);

/* ---- the topic ------------------------------------------------------------ */
struct pl_topic {
    char *dir;
    pl_config cfg;
    pl_cache *cache;
    pthread_mutex_t wlock;
    pthread_rwlock_t slock;
    pthread_mutex_t load_mu;
    pl_segment **segs; /* sorted by base; guarded by slock */
    int64_t nsegs, segcap;
    pl_segment *active;
    _Atomic int64_t end_offset;
    _Atomic int64_t start_offset;
    _Atomic int64_t durable;
    atomic_int closed;
    int opened;        /* pl_topic_open succeeded */
    atomic_int dir_dirty; /* a segment file was created since the last
                             fsync of the directory */
    atomic_int failed; /* errno of the fsync that failed (sticky) */
    char failed_msg[512];
    int64_t truncated;
    int64_t grow_step; /* the active file grows by this much */
    int fresh;         /* open created the topic's first segment */
    int64_t last_list_ms; /* read-only: when the directory was last listed */
    atomic_int relist;    /* read-only: a segment file went missing */
    /* group commit */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    int syncing;
    /* the checkpoint as last written (sync_mu) */
    pl_ckpt ckpt;
    /* lost ranges (invariant 9), guarded by lost_mu */
    pthread_mutex_t lost_mu;
    pl_range *lost;
    int nlost, lost_cap;
    /* notifiers watching this topic (notify.c) */
    pthread_mutex_t watch_mu;
    struct pl_notify **watchers;
    int nwatch_cap;
    atomic_int nwatch;
    /* retention and the disk cap (retention.c); guarded by wlock */
    pthread_cond_t room_cv;     /* appends blocked by on_full=block */
    _Atomic int64_t floor;      /* consumers' lowest committed offset */
    _Atomic int64_t n[PL_NCOUNTERS]; /* lifetime counters */
    uint8_t *scratch;   /* large batches are built here (append.c); wlock */
    int64_t scratch_cap;
};

/* topic.c */
int pl_segs_reserve(pl_topic *t);
int64_t pl_find_segment(pl_topic *t, int64_t offset);
/* Record [from, to) as lost (merged with what is known); returns how many
 * of its offsets were not known lost before. */
int64_t pl_lost_add(pl_topic *t, int64_t from, int64_t to);
/* The lost range holding offset, if any: 1 and *r. */
int pl_lost_find(pl_topic *t, int64_t offset, pl_range *r);

/* recover.c: build the segment list from the directory and recover what
 * was not known durable (caller: pl_topic_open). */
int pl_recover(pl_topic *t, int64_t min_end);
/* The segment files' bases, sorted (malloc'd); nothing is removed. */
int pl_list_segments(pl_topic *t, int64_t **bases, int64_t *n);
/* follow.c: open a read-only topic (caller: pl_topic_open). */
int pl_follow_open(pl_topic *t);
/* Allocation steps and write windows start on this boundary. */
#define PL_GROW_ALIGN 4096
/* Make a new active segment file with base `base`: its header, and real
 * blocks for `alloc` bytes in all (on error nothing is left on disk). */
int pl_segment_create(pl_topic *t, int64_t base, int64_t alloc,
                      pl_segment **out);

/* sync.c */
int pl_sync_to(pl_topic *t, int64_t target);
/* One sync round and the checkpoint (`locked`: caller holds wlock;
 * `clean`: a clean close, the active file cut and its index written). */
int pl_flush_all(pl_topic *t, int locked, int clean);
void pl_fail_sticky(pl_topic *t, int err, const char *what);
/* Write the checkpoint from the topic's state (durable = `durable`). */
int pl_checkpoint(pl_topic *t, int64_t durable, int clean, int sync);

/* append.c */
int pl_writable(pl_topic *t);
/* Seal the active segment at its data and start a new one at `base`
 * (>= the end: a larger base makes [end, base) a lost range), with room
 * made for `then` bytes in it. Caller holds wlock. */
int pl_roll_to(pl_topic *t, int64_t base, int64_t nrecords, int64_t then);

/* read.c */
/* Make sealed segment i readable; returns its read map with a new
 * reference (index attached), or NULL with the error recorded in *rc.
 * Caller holds slock (read). */
pl_map *pl_sealed_map(pl_topic *t, int64_t i, int *rc);
/* max_ts of sealed segment 0 (loading it if needed); -1 if unreadable. */
int pl_first_max_ts(pl_topic *t, int64_t *max_ts);

/* retention.c */
int64_t pl_seg_disk_bytes(const pl_segment *s);
int64_t pl_disk_total(pl_topic *t);
/* Make room for `extra` more bytes of files under max_bytes, applying
 * on_full (caller holds wlock). 0; 1 if it waited for room (on_full=
 * block), which released wlock: the caller must re-check its state; or
 * -PL_EFULL / -PL_ECLOSED. */
int pl_retention_make_room(pl_topic *t, int64_t extra, int64_t nrecords);
/* Delete what retention allows (caller holds wlock). Segments deleted. */
int pl_retention_apply_locked(pl_topic *t);

/* notify.c */
void pl_notify_topic(pl_topic *t);
void pl_notify_detach_all(pl_topic *t);

#endif
