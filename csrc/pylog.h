/*
 * pylog.h -- the C core of pylog: an append-only, segmented log per topic.
 *
 * This header is the manual of the core. The Python binding (pylog/_binding.py)
 * is its only user; docs/FORMAT.md specifies the bytes these functions write.
 *
 * Conventions
 *   - Functions return int or int64_t. A value >= 0 is success (a count, an
 *     offset or 0). A negative value is one of the PL_E* codes below. The
 *     calling thread can then ask pl_errmsg() for a message naming the file,
 *     the offset and the cause, and pl_errno() for the OS errno (0 if none).
 *     Both are thread-local: they stay valid until the thread's next call.
 *   - "On error nothing is modified" unless the function says otherwise: a
 *     failed append publishes nothing, and the bytes it may have copied past
 *     the published end are overwritten by the next append.
 *   - Every function is thread-safe. One writer at a time per topic (a mutex);
 *     readers take a read lock on the segment list only, never the writer's
 *     mutex, so readers never wait for an append.
 *   - Pointers into segment data stay valid while the pl_map that holds them
 *     is referenced (see pl_map_unref). Closing or deleting never unmaps a
 *     referenced map.
 */
#ifndef PYLOG_H
#define PYLOG_H

#include <stddef.h>
#include <stdint.h>

/* Error codes (negated in return values). Stable: Python maps them. */
#define PL_OK 0
#define PL_ECLOSED 1   /* the topic was closed */
#define PL_EINVAL 2    /* bad argument (message says which) */
#define PL_ETOOBIG 3   /* a record is larger than max_record_bytes */
#define PL_ECORRUPT 4  /* a checksum or structure check failed */
#define PL_EIO 5       /* the OS refused (pl_errno() has errno) */
#define PL_EFAILED 6   /* sticky: an earlier fsync failed; reopen the topic */
#define PL_ERANGE 7    /* offset outside [start_offset, end_offset] */
#define PL_ENOMEM 8    /* out of memory */
#define PL_EFORMAT 9   /* files of an unknown format version */
#define PL_ETIMEDOUT 10 /* a wait ended without the condition */
#define PL_ENOTFOUND 11 /* no such record (offset_for_time past the end) */
#define PL_EFULL 12     /* max_bytes reached and on_full did not make room */
#define PL_ELOST 13     /* the offset lies in a lost range (invariant 9 in
                           topic.c); pl_topic_read says which */
#define PL_EREADONLY 14 /* a write through a read-only topic */

/* Durability modes (see README and invariant 4 in topic.c). */
#define PL_SYNC_NONE 0
#define PL_SYNC_INTERVAL 1
#define PL_SYNC_ALWAYS 2

/* What an append does when a new segment would break max_bytes. */
#define PL_FULL_DROP_OLDEST 0 /* delete the oldest segments, counting them */
#define PL_FULL_REJECT 1      /* fail with PL_EFULL, write nothing */
#define PL_FULL_BLOCK 2       /* wait up to full_timeout_ms for room */

/* Values for the `op` of pl_fault_set. */
#define PL_IO_WRITE 0     /* pwrite and the copy of a batch into the map */
#define PL_IO_FSYNC 1     /* fdatasync / fsync of files and directories */
#define PL_IO_FALLOCATE 2 /* allocation as the active segment grows */
#define PL_IO_OPEN 3      /* open/creat of files */
#define PL_IO_NOPS 4

typedef struct pl_topic pl_topic;
typedef struct pl_map pl_map;
typedef struct pl_notify pl_notify;
typedef struct pl_cache pl_cache;

/*
 * The file cache (fcache.c): every descriptor and map the core keeps open
 * between calls is an entry of one, so that their number stays under
 * max_open_files and their mapped bytes under max_map_bytes, whatever the
 * number of topics and segments (least recently used entries are closed
 * or unmapped; a map still referenced by a reader or a zero-copy view
 * stays until its last reference goes). Topics of one log share a cache;
 * each holds a reference. pl_cache_new returns one reference;
 * pl_cache_free drops one. Errors: PL_EINVAL, PL_ENOMEM.
 */
int pl_cache_new(int64_t max_open_files, int64_t max_map_bytes,
                 pl_cache **out);
void pl_cache_free(pl_cache *c);
typedef struct pl_cache_stats {
    int64_t open_files, maps, map_bytes; /* held by the cache now */
    int64_t opens, maps_made, evictions; /* since it was made */
} pl_cache_stats;
void pl_cache_get_stats(pl_cache *c, pl_cache_stats *out);

typedef struct pl_config {
    int64_t segment_bytes;        /* roll the active segment at this size */
    int64_t max_record_bytes;     /* key + value + headers of one record */
    int64_t index_interval_bytes; /* bytes of log between index entries */
    int sync_mode;                /* PL_SYNC_* */
    int64_t sync_interval_ms;     /* PL_SYNC_INTERVAL: the loss window */
    /* Retention (retention.c): whole sealed segments only, oldest first. */
    int64_t retention_ms;         /* delete when all records older (0: off) */
    int64_t retention_bytes;      /* delete while the topic is larger (0: off) */
    int retain_until_consumed;    /* never delete above the floor, and delete
                                     what every consumer has passed */
    int64_t max_bytes;            /* hard cap on the topic's files (0: off) */
    int on_full;                  /* PL_FULL_* */
    int64_t full_timeout_ms;      /* PL_FULL_BLOCK: longest wait */
    int readonly;                 /* follow a log another process writes
                                     (follow.c): never write anything */
} pl_config;

/*
 * pl_topic_open: open (creating if needed) the topic stored in directory
 * `dir`, which must exist, with its files in `cache`. Recovery
 * (recover.c): after a clean close nothing is scanned; otherwise every
 * byte not known durable is verified, in every segment above the
 * checkpoint, and what does not verify is cut. min_end is the lowest
 * offset the next append may get (the caller's evidence that offsets up
 * to it existed, e.g. consumer positions): a gap between the data's end
 * and it becomes a lost range. What recovery changed is made durable
 * before this returns. On success *out owns the topic; release it with
 * pl_topic_free().
 * Errors: PL_EINVAL (bad config), PL_EIO, PL_ENOMEM, PL_EFORMAT.
 */
int pl_topic_open(const char *dir, const pl_config *cfg, pl_cache *cache,
                  int64_t min_end, pl_topic **out);

/* Cut the active file to its data, write its index, fdatasync what is not
 * yet durable (in every sync mode) and release the topic's files. A close
 * that did all that is clean: the next open scans nothing. Idempotent.
 * After it every call returns -PL_ECLOSED. Maps still referenced by
 * readers stay mapped until their last unref. */
int pl_topic_close(pl_topic *t);

/* Close if needed and free the handle. The handle must not be used after. */
void pl_topic_free(pl_topic *t);

/* Bytes recovery cut at open (0 for a clean tail). */
int64_t pl_topic_truncated_bytes(pl_topic *t);

/*
 * pl_topic_append: append one record as a batch of one. key may be NULL
 * (klen is then ignored, the key is null); hdr is the encoded header block
 * (docs/FORMAT.md) or NULL with hlen 0. ts < 0 -- PL_TS_NOW -- stamps the
 * current time in ms. Returns the record's offset, or a negative PL_E*.
 * With PL_SYNC_ALWAYS it returns after the record is durable (group commit).
 */
#define PL_TS_NOW INT64_MIN
int64_t pl_topic_append(pl_topic *t, const uint8_t *key, int64_t klen,
                        const uint8_t *val, int64_t vlen,
                        const uint8_t *hdr, int64_t hlen, int64_t ts);

/* pl_topic_append_value: pl_topic_append of a value alone (no key, no
 * headers, the current time). Three arguments instead of eight: the cffi
 * call converts fewer, which is most of an append's cost from Python. */
int64_t pl_topic_append_value(pl_topic *t, const uint8_t *val, int64_t vlen);

/*
 * pl_topic_append_batch: append n >= 1 records atomically (one batch).
 * vals is the concatenation of the values, vlens their lengths. keys/klens
 * (klens[i] < 0: null key), hdrs/hlens and ts may each be NULL: no keys, no
 * headers, the current time. Returns the first record's offset.
 */
int64_t pl_topic_append_batch(pl_topic *t, int64_t n, const uint8_t *vals,
                              const int64_t *vlens, const uint8_t *keys,
                              const int64_t *klens, const uint8_t *hdrs,
                              const int64_t *hlens, const int64_t *ts);

/*
 * pl_topic_read: decode up to max_records records starting at `offset`,
 * from one segment only (call again with the next offset to go on).
 * For record i, meta[PL_META * i + k] holds, for k in PL_M_*: its offset,
 * timestamp, key position (relative to the map base) and key length (-1 for
 * a null key), value position and length, headers position and length.
 * Stops early once the keys and values returned reach max_bytes (if > 0; at
 * least one record is returned). Returns the number of records (0 when
 * offset == end_offset) and sets *map_out to the map holding the bytes:
 * if it is pins[k] (maps the caller holds), *pin_out = k and no reference
 * is taken; otherwise *pin_out = -1 and the caller receives a new
 * reference and must pl_map_unref() it.
 * Errors: PL_ERANGE (offset < start or > end), PL_ECORRUPT (a batch failed
 * its checksum; records decoded before it are returned first), PL_ELOST
 * (offset lies in a lost range: meta[0] and meta[1] hold it, [from, to)),
 * PL_EIO.
 */
#define PL_META 8
#define PL_M_OFFSET 0
#define PL_M_TS 1
#define PL_M_KPOS 2
#define PL_M_KLEN 3
#define PL_M_VPOS 4
#define PL_M_VLEN 5
#define PL_M_HPOS 6
#define PL_M_HLEN 7
int pl_topic_read(pl_topic *t, int64_t offset, int max_records,
                  int64_t max_bytes, int64_t *meta, pl_map *const *pins,
                  int npins, int *pin_out, pl_map **map_out);

/* Earliest offset whose timestamp is >= ts, or -PL_ENOTFOUND if none. */
int64_t pl_topic_offset_for_time(pl_topic *t, int64_t ts);

/* First retained offset; next offset to be written; first offset not yet
 * durable on power loss (every offset below it has been fdatasync'ed). */
int64_t pl_topic_start_offset(pl_topic *t);
int64_t pl_topic_end_offset(pl_topic *t);
int64_t pl_topic_durable_offset(pl_topic *t);

/* Make every appended record durable (fdatasync of each dirty segment)
 * and write the checkpoint. A log calls it for each topic on its sync
 * schedule (sync="interval", and the periodic checkpoint of "none"). */
int pl_topic_flush(pl_topic *t);
/* Return once every offset below `offset` (at most the end) is durable:
 * group commit, as appends in sync="always" do. */
int pl_topic_sync_to(pl_topic *t, int64_t offset);
/* 1 if records were appended since the last sync (a flush has work). */
int pl_topic_sync_needed(pl_topic *t);

/*
 * Read-only topics (pl_config.readonly; follow.c). pl_topic_refresh reads
 * what the writer published since the last call (new batches, a roll,
 * segments retention deleted); returns 1 if anything changed, 0 if not.
 * pl_topic_sync_ro makes every record below offset durable (a reader's
 * commit). A follower thread refreshes the topics added to it that
 * consumers watch, every period_us, and signals their notifiers.
 */
typedef struct pl_follower pl_follower;
int pl_topic_refresh(pl_topic *t);
int pl_topic_sync_ro(pl_topic *t, int64_t offset);
int pl_follower_new(int64_t period_us, pl_follower **out);
int pl_follower_add(pl_follower *f, pl_topic *t);
void pl_follower_remove(pl_follower *f, pl_topic *t);
void pl_follower_free(pl_follower *f);

/* Make the next append get an offset >= offset: [end, offset) becomes a
 * lost range (the caller has evidence that those offsets existed). */
int pl_topic_raise_end(pl_topic *t, int64_t offset);

/* The lost ranges known (at most max pairs [from, to) into out); returns
 * how many there are. */
int pl_topic_lost(pl_topic *t, int64_t *out, int max);

/* *token: the checksum of the batch holding offset pos - 1 (0 when pos is
 * at or below start_offset): a consumer position written before its
 * records were durable is trusted after a crash only if the batch it
 * follows is still the same. Errors: PL_ERANGE (pos - 1 >= end),
 * PL_ECORRUPT, PL_ELOST, PL_EIO. */
int pl_topic_batch_token(pl_topic *t, int64_t pos, uint64_t *token);

/* Number of segment files (bytes on disk: pl_topic_stats). */
int64_t pl_topic_segment_count(pl_topic *t);

/* Lifetime counters (kept in the checkpoint across opens), and the state
 * that goes with them. */
typedef struct pl_stats {
    int64_t start_offset, end_offset, durable_offset;
    int64_t segments, bytes_on_disk, truncated_bytes;
    int64_t appended_records, appended_bytes;
    int64_t retention_dropped_records, retention_dropped_bytes;
    int64_t full_dropped_records, full_dropped_bytes;
    int64_t rejected_records;
    int64_t lost_records, lost_ranges;
    int64_t rejected_bytes;
} pl_stats;
int pl_topic_stats(pl_topic *t, pl_stats *out);

/*
 * pl_topic_set_floor: the lowest position any consumer group registered on
 * the topic has committed (0 at open: nothing is consumed). With
 * retain_until_consumed, segments wholly below it are deleted and nothing
 * above it is deleted by retention (only on_full=drop_oldest may). Applies
 * retention and wakes appends blocked by on_full=block. Returns the number
 * of segments deleted, or a negative PL_E*.
 */
int pl_topic_set_floor(pl_topic *t, int64_t floor);

/* Apply retention now (it also runs at every segment roll and at open).
 * Returns the number of segments deleted. */
int pl_topic_apply_retention(pl_topic *t);

/*
 * Notifiers: one waiter (a consumer) watching several topics. Every append
 * to a watched topic increments the notifier's sequence number and wakes
 * pl_notify_wait; if the notifier is armed, it also writes its eventfd
 * (for event loops). pl_notify_new returns one reference; each watch holds
 * another until unwatched or the topic closes; pl_notify_free drops the
 * creator's. Waking costs an append nothing while nobody waits.
 */
int pl_notify_new(pl_notify **out);
void pl_notify_free(pl_notify *n);
int pl_topic_watch(pl_topic *t, pl_notify *n);
void pl_topic_unwatch(pl_topic *t, pl_notify *n);
uint64_t pl_notify_seq(pl_notify *n);
/* Wait until seq != seen, pl_notify_interrupt, or timeout_ms (< 0: none).
 * Returns 1 if seq moved, 0 on timeout, -PL_ECLOSED if interrupted. */
int pl_notify_wait(pl_notify *n, uint64_t seen, int64_t timeout_ms);
/* Arm: the next signal writes the eventfd returned (read it to disarm). */
int pl_notify_arm(pl_notify *n);
void pl_notify_disarm(pl_notify *n);
/* Wake every waiter for good (the consumer is closing). */
void pl_notify_interrupt(pl_notify *n);

/* Maps: the memory behind zero-copy views. */
const uint8_t *pl_map_base(const pl_map *m);
int64_t pl_map_len(const pl_map *m);
/* 1 once the segment behind the map was deleted or its topic closed: the
 * map stays valid for its holders, but new reads will not return it. */
int pl_map_dead(const pl_map *m);
/* Drop a reference; the last one unmaps. */
void pl_map_unref(pl_map *m);

/* Thread-local details of the calling thread's last error. */
const char *pl_errmsg(void);
int pl_errno(void);

/* XXH64 of n bytes (the published algorithm; csrc/xxh64.c). */
uint64_t pl_xxh64(const void *p, size_t n, uint64_t seed);

/*
 * Fault injection (tests only; process-wide). Arms op (PL_IO_*): the nth
 * call from now (1 = the next) fails with errno `err`, and so do the
 * `count - 1` calls after it (count < 0: every call from then on). For
 * PL_IO_WRITE, short_bytes >= 0 makes the failing call first write that
 * many bytes (a short write). pl_fault_clear disarms every op.
 */
void pl_fault_set(int op, int64_t nth, int err, int64_t count,
                  int64_t short_bytes);
void pl_fault_clear(void);

#endif
