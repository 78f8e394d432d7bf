/*
 * internal.h -- declarations shared by the C files of the core; not part of
 * the binding. Byte layouts are specified in docs/FORMAT.md; the constants
 * here are that spec in code: changing one changes the format version.
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
#define PL_FORMAT_VERSION 1
#define PL_SEG_MAGIC "PYLOGSEG"
#define PL_IDX_MAGIC "PYLOGIDX"
#define PL_SEG_HDR 32   /* segment file header */
#define PL_BATCH_HDR 48 /* batch header */
#define PL_REC_HDR 20   /* record header */
#define PL_IDX_HDR 56   /* index file header */
#define PL_IDX_ENTRY 24 /* one index entry */
/* Positions inside a segment are u32: a segment never exceeds this. */
#define PL_SEG_MAX ((int64_t)UINT32_MAX)

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
int pl_io_fallocate(int fd, off_t len);
int pl_io_ftruncate(int fd, off_t len);
int pl_io_fstat_size(int fd, int64_t *size);
int pl_io_rename(const char *from, const char *to);
int pl_io_unlink(const char *path);
/* The write point of an append (the batch is built in the map at dst):
 * returns 0, or -1 with errno set when a fault is armed (io.c). */
int pl_io_write_map(uint8_t *dst, size_t n);
/* A refcounted mapping; pl_io_map returns it with one reference. */
pl_map *pl_io_map(int fd, int64_t len, int writable);
void pl_map_ref(pl_map *m);
void pl_map_kill(pl_map *m); /* mark dead and drop the owner's reference */

struct pl_map {
    uint8_t *base;
    int64_t len;
    atomic_int refs;
    atomic_int dead;
};

/* ---- counters (single writer: updated under wlock, read relaxed) ------- */
typedef struct pl_counters {
    _Atomic int64_t appended_records, appended_bytes;
    _Atomic int64_t retention_records, retention_bytes;
    _Atomic int64_t full_records, full_bytes;
    _Atomic int64_t rejected_records;
} pl_counters;

static inline void count_add(_Atomic int64_t *c, int64_t v) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

/* ---- segments (segment.c) ---------------------------------------------- */
typedef struct pl_idx_entry {
    uint32_t rel;       /* offset - segment base */
    uint32_t pos;       /* byte position of that offset's record */
    uint32_t batch_pos; /* byte position of the batch holding it */
    uint32_t reserved;  /* 0 */
    int64_t max_ts;     /* max timestamp of the batches before batch_pos */
} pl_idx_entry;

typedef struct pl_segment {
    int64_t base;        /* base offset = file name */
    char *path;          /* .../BASE.log */
    int fd;              /* -1 until opened */
    pl_map *map;         /* NULL until loaded */
    int sealed;          /* not the active segment */
    int loaded;          /* sealed: map and index ready */
    int dirty;           /* written since the last fdatasync */
    int trusted;         /* every batch below pub_pos verified already */
    _Atomic int64_t pub_pos;   /* bytes readers may read (header incl.) */
    _Atomic int64_t verified;  /* sealed: batches below are verified */
    int64_t end;         /* next offset after this segment's last record */
    int64_t cap;         /* mapped length */
    int64_t bad_pos;     /* sealed: first position that failed (-1) */
    int64_t max_ts;      /* max timestamp in the segment */
    /* index: active: malloc'd; sealed: points into idx_map */
    pl_idx_entry *idx;
    _Atomic uint32_t nidx;
    uint32_t idx_cap;
    uint8_t *idx_owned;  /* malloc'd block behind idx, or NULL */
    pl_map *idx_map;
    int64_t last_idx_pos;
    int64_t run_max_ts;  /* running max while appending */
    int64_t idx_bytes;   /* size of its .idx file (0 if none) */
    int64_t file_bytes;  /* size of its .log file (preallocation incl.) */
} pl_segment;

/* Result of checking the batch at `pos`. */
typedef struct pl_batch {
    int64_t pos, len, count, base, first_ts, max_ts;
    int64_t rec_pos, rec_off; /* where decoding starts: the first record,
                                 or a record an index entry points at */
} pl_batch;

/* Parse the batch header at pos (bounds and fields, no checksum).
 * Returns 1 for a batch, 0 for the clean end (zeros), -1 for garbage. */
int pl_batch_parse(const uint8_t *data, int64_t limit, int64_t pos,
                   pl_batch *b);
int pl_batch_checksum_ok(const uint8_t *data, const pl_batch *b);
void pl_seg_header_write(uint8_t *hdr, int64_t base);
int pl_seg_header_check(const uint8_t *hdr, int64_t base);
char *pl_seg_path(const char *dir, int64_t base, const char *ext);
/* Add the index entries due for batch b, whose bytes are at `batch`
 * (caller holds the writer lock): one at the batch if interval bytes have
 * passed since the last entry, and, in a batch longer than interval, one
 * at each record that starts interval bytes after the last entry. */
void pl_seg_index_add(pl_segment *s, const uint8_t *batch, const pl_batch *b,
                      int64_t interval);
int pl_seg_index_alloc(pl_segment *s, int64_t cap_bytes, int64_t interval);
/* Scan batches from the header on; fills index, end, max_ts; returns the
 * position after the last valid batch in *valid_end. 1 if the scan stopped
 * at garbage (not at a clean end), 0 otherwise. */
int pl_seg_scan(pl_segment *s, const uint8_t *data, int64_t limit,
                int64_t interval, int64_t *valid_end);
int pl_seg_index_write(const pl_segment *s, const char *dir);
/* Load a sealed segment's index file if it matches the segment. */
int pl_seg_index_load(pl_segment *s, int64_t seg_len, int64_t next_base);
/* The last index entry with rel <= target_rel; an entry pointing at the
 * segment's first batch if there is none. */
pl_idx_entry pl_seg_index_find(const pl_segment *s, int64_t rel);
int64_t pl_seg_index_find_time(const pl_segment *s, int64_t ts);
void pl_seg_free(pl_segment *s);

int64_t pl_now_ms(void);
int pl_batch_records_ok(const uint8_t *data, const pl_batch *b);
int pl_all_zero(const uint8_t *p, int64_t n);

struct pl_topic {
    char *dir;
    pl_config cfg;
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
    /* group commit */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    int syncing;
    /* interval syncer */
    pthread_t syncer;
    int has_syncer, stop_syncer;
    pthread_cond_t stop_cv;
    /* notifiers watching this topic (notify.c) */
    pthread_mutex_t watch_mu;
    struct pl_notify **watchers;
    int nwatch_cap;
    atomic_int nwatch;
    /* retention and the disk cap (retention.c); guarded by wlock */
    pthread_cond_t room_cv;     /* appends blocked by on_full=block */
    _Atomic int64_t floor;      /* consumers' lowest committed offset */
    _Atomic int64_t disk_bytes; /* every segment and index file */
    pl_counters n;
    uint8_t *scratch;   /* large batches are built here (topic.c); wlock */
    int64_t scratch_cap;
};

/* ---- topic internals shared by topic.c, retention.c, notify.c ---------- */
/* Bytes of the files of segment s: its .log (size or preallocation) and
 * its .idx. */
int64_t pl_seg_disk_bytes(const pl_segment *s);
/* Make room for a new segment of new_cap bytes under max_bytes, applying
 * on_full (caller holds wlock). 0; 1 if it waited for room (on_full=block),
 * which released wlock: the caller must re-check its state from the start;
 * or -PL_EFULL / -PL_ECLOSED. */
int pl_retention_make_room(pl_topic *t, int64_t new_cap, int64_t nrecords);
/* Delete what retention allows (caller holds wlock). Segments deleted. */
int pl_retention_apply_locked(pl_topic *t);
/* Load sealed segment i (map, index) if needed (topic.c). */
int pl_seg_ensure_loaded(pl_topic *t, int64_t i);
/* Signal every notifier watching t (publish path). */
void pl_notify_topic(pl_topic *t);
/* Drop every watcher (close). */
void pl_notify_detach_all(pl_topic *t);

#endif
