"""Build script for the C core (used only at build time, via cffi_modules).

Out-of-line API mode: cffi compiles csrc/*.c together with a generated
wrapper into the extension ``pylog._native``. ``pylog/_binding.py`` is the
only module that imports it.

Environment:
  PYLOG_SANITIZE=1   build with AddressSanitizer + UndefinedBehaviorSanitizer
                     (see README: "Sanitizer run").
"""
import os

from cffi import FFI

CDEF = """
#define PL_ECLOSED 1
#define PL_EINVAL 2
#define PL_ETOOBIG 3
#define PL_ECORRUPT 4
#define PL_EIO 5
#define PL_EFAILED 6
#define PL_ERANGE 7
#define PL_ENOMEM 8
#define PL_EFORMAT 9
#define PL_ETIMEDOUT 10
#define PL_ENOTFOUND 11
#define PL_EFULL 12
#define PL_ELOST 13
#define PL_EREADONLY 14
#define PL_FULL_DROP_OLDEST 0
#define PL_FULL_REJECT 1
#define PL_FULL_BLOCK 2
#define PL_SYNC_NONE 0
#define PL_SYNC_INTERVAL 1
#define PL_SYNC_ALWAYS 2
#define PL_IO_WRITE 0
#define PL_IO_FSYNC 1
#define PL_IO_FALLOCATE 2
#define PL_IO_OPEN 3
#define PL_META 8

typedef struct pl_topic pl_topic;
typedef struct pl_map pl_map;
typedef struct pl_notify pl_notify;
typedef struct pl_cache pl_cache;
typedef struct pl_cache_stats {
    int64_t open_files, maps, map_bytes;
    int64_t opens, maps_made, evictions;
} pl_cache_stats;
typedef struct pl_config {
    int64_t segment_bytes;
    int64_t max_record_bytes;
    int64_t index_interval_bytes;
    int sync_mode;
    int64_t sync_interval_ms;
    int64_t retention_ms;
    int64_t retention_bytes;
    int retain_until_consumed;
    int64_t max_bytes;
    int on_full;
    int64_t full_timeout_ms;
    int readonly;
} pl_config;
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

int pl_cache_new(int64_t max_open_files, int64_t max_map_bytes,
                 pl_cache **out);
void pl_cache_free(pl_cache *c);
void pl_cache_get_stats(pl_cache *c, pl_cache_stats *out);
int pl_topic_open(const char *dir, const pl_config *cfg, pl_cache *cache,
                  int64_t min_end, pl_topic **out);
int pl_topic_close(pl_topic *t);
void pl_topic_free(pl_topic *t);
int64_t pl_topic_truncated_bytes(pl_topic *t);
int64_t pl_topic_append(pl_topic *t, const uint8_t *key, int64_t klen,
                        const uint8_t *val, int64_t vlen,
                        const uint8_t *hdr, int64_t hlen, int64_t ts);
int64_t pl_topic_append_value(pl_topic *t, const uint8_t *val, int64_t vlen);
int64_t pl_topic_append_batch(pl_topic *t, int64_t n, const uint8_t *vals,
                              const int64_t *vlens, const uint8_t *keys,
                              const int64_t *klens, const uint8_t *hdrs,
                              const int64_t *hlens, const int64_t *ts);
int pl_topic_read(pl_topic *t, int64_t offset, int max_records,
                  int64_t max_bytes, int64_t *meta, pl_map *const *pins,
                  int npins, int *pin_out, pl_map **map_out);
int64_t pl_topic_offset_for_time(pl_topic *t, int64_t ts);
int64_t pl_topic_start_offset(pl_topic *t);
int64_t pl_topic_end_offset(pl_topic *t);
int64_t pl_topic_durable_offset(pl_topic *t);
int pl_topic_flush(pl_topic *t);
int pl_topic_sync_needed(pl_topic *t);
int pl_topic_sync_to(pl_topic *t, int64_t offset);
int pl_topic_raise_end(pl_topic *t, int64_t offset);
int pl_topic_lost(pl_topic *t, int64_t *out, int max);
int pl_topic_batch_token(pl_topic *t, int64_t pos, uint64_t *token);
typedef struct pl_follower pl_follower;
int pl_topic_refresh(pl_topic *t);
int pl_topic_sync_ro(pl_topic *t, int64_t offset);
int pl_follower_new(int64_t period_us, pl_follower **out);
int pl_follower_add(pl_follower *f, pl_topic *t);
void pl_follower_remove(pl_follower *f, pl_topic *t);
void pl_follower_free(pl_follower *f);
int64_t pl_topic_segment_count(pl_topic *t);
int pl_topic_stats(pl_topic *t, pl_stats *out);
int pl_topic_set_floor(pl_topic *t, int64_t floor);
int pl_topic_apply_retention(pl_topic *t);

int pl_notify_new(pl_notify **out);
void pl_notify_free(pl_notify *n);
int pl_topic_watch(pl_topic *t, pl_notify *n);
void pl_topic_unwatch(pl_topic *t, pl_notify *n);
uint64_t pl_notify_seq(pl_notify *n);
int pl_notify_wait(pl_notify *n, uint64_t seen, int64_t timeout_ms);
int pl_notify_arm(pl_notify *n);
void pl_notify_disarm(pl_notify *n);
void pl_notify_interrupt(pl_notify *n);

const uint8_t *pl_map_base(const pl_map *m);
int64_t pl_map_len(const pl_map *m);
int pl_map_dead(const pl_map *m);
void pl_map_unref(pl_map *m);

const char *pl_errmsg(void);
int pl_errno(void);
uint64_t pl_xxh64(const void *p, size_t n, uint64_t seed);
void pl_fault_set(int op, int64_t nth, int err, int64_t count,
                  int64_t short_bytes);
void pl_fault_clear(void);
"""

SOURCES = ["csrc/append.c", "csrc/checkpoint.c", "csrc/err.c",
           "csrc/fcache.c", "csrc/follow.c", "csrc/io.c", "csrc/notify.c", "csrc/read.c",
           "csrc/recover.c", "csrc/retention.c", "csrc/segment.c",
           "csrc/sync.c", "csrc/topic.c", "csrc/xxh64.c"]

cflags = ["-std=gnu11", "-Wall", "-Wextra", "-O2"]
ldflags = ["-pthread"]
if os.environ.get("PYLOG_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined", "-g"]
    cflags = cflags[:-1] + ["-O1"] + san
    ldflags += san

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "pylog._native",
    '#include "pylog.h"',
    sources=SOURCES,
    include_dirs=["csrc"],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    depends=["csrc/pylog.h", "csrc/internal.h"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
