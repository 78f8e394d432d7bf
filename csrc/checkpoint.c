/*
 * checkpoint.c -- topics/NAME/checkpoint: what a writer knew about the topic
 * when it last synced (docs/FORMAT.md §8).
 *
 * The file holds two 512-byte slots. Each write fills the slot after the
 * one last written, whole (one pwrite), with a sequence number one higher;
 * a reader takes the valid slot with the higher sequence number. A torn or
 * lost write therefore leaves the previous state readable. Slot layout
 * (little-endian):
 *
 *     0  8  magic "PYLOGCK2"
 *     8  8  u64 sequence number
 *    16  4  u32 flags: bit 0 = written by a clean close
 *    20  4  u32 number of lost ranges (<= 22)
 *    24  8  i64 durable: every offset below it was fdatasync'ed
 *    32  8  i64 base of the segment holding `durable`
 *    40  8  i64 a batch boundary in that segment at or below `durable`
 *    48  8  i64 start_offset when written
 *    56  8  i64 end_offset when written
 *    64  8  i64 clean close: the active segment's data end (its size)
 *    72 64  i64[8] lifetime counters (PL_N_*, the first eight)
 *   136 352 lost ranges: (i64 from, i64 to) each
 *   488  8  i64 the ninth counter (rejected bytes)
 *   496  8  zero
 *   504  8  u64 XXH64 of bytes 0..504
 *
 * Every claim a slot makes was true when it was written: `durable` only
 * after the fdatasyncs it vouches for returned. A slot is not synced unless
 * the caller asks (before a segment deletion, the start it records must be
 * on disk first): a lost write only makes the next open more cautious.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define SLOT 512
#define MAGIC "PYLOGCK2"

static void path_of(const char *dir, char *out, size_t n) {
    snprintf(out, n, "%s/checkpoint", dir);
}

static int decode(const uint8_t *b, pl_ckpt *ck) {
    if (memcmp(b, MAGIC, 8) != 0 || get64(b + 504) != pl_xxh64(b, 504, 0))
        return 0;
    uint32_t nlost = get32(b + 20);
    if (nlost > PL_CKPT_MAXLOST) return 0;
    memset(ck, 0, sizeof *ck);
    ck->seq = get64(b + 8);
    ck->clean = get32(b + 16) & 1;
    ck->nlost = (int)nlost;
    ck->durable = (int64_t)get64(b + 24);
    ck->dseg = (int64_t)get64(b + 32);
    ck->dpos = (int64_t)get64(b + 40);
    ck->start = (int64_t)get64(b + 48);
    ck->end = (int64_t)get64(b + 56);
    ck->clean_pos = (int64_t)get64(b + 64);
    for (int i = 0; i < 8; i++)
        ck->counters[i] = (int64_t)get64(b + 72 + 8 * i);
    ck->counters[PL_N_REJECTED_BYTES] = (int64_t)get64(b + 488);
    for (int i = 0; i < ck->nlost; i++) {
        ck->lost[i].from = (int64_t)get64(b + 136 + 16 * i);
        ck->lost[i].to = (int64_t)get64(b + 144 + 16 * i);
    }
    /* Values no writer produces are damage, not a state to trust. */
    if (ck->durable < 0 || ck->start < 0 || ck->end < ck->start ||
        ck->dseg < 0 || ck->dpos < 0)
        return 0;
    return 1;
}

int pl_ckpt_read(const char *dir, pl_ckpt *ck) {
    char path[4096];
    path_of(dir, path, sizeof path);
    if (access(path, F_OK) != 0) return 0; /* none (yet) */
    int fd = pl_io_open(path, O_RDONLY, 0);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    uint8_t b[2 * SLOT];
    int64_t size = 0;
    int got = 0;
    if (pl_io_fstat_size(fd, &size) < 0) {
        pl_io_close(fd);
        return -1;
    }
    if (size > (int64_t)sizeof b) size = sizeof b;
    if (size > 0 && pl_io_pread(fd, b, (size_t)size, 0) < 0) {
        pl_io_close(fd);
        return -1;
    }
    pl_io_close(fd);
    pl_ckpt slot;
    for (int i = 0; i < 2; i++) {
        if (size < (i + 1) * SLOT || !decode(b + i * SLOT, &slot)) continue;
        if (!got || slot.seq > ck->seq) *ck = slot;
        got = 1;
    }
    return got;
}

int pl_ckpt_write(const char *dir, pl_ckpt *ck, int sync) {
    char path[4096];
    path_of(dir, path, sizeof path);
    uint8_t b[SLOT] = {0};
    ck->seq++;
    memcpy(b, MAGIC, 8);
    put64(b + 8, ck->seq);
    put32(b + 16, ck->clean ? 1 : 0);
    put32(b + 20, (uint32_t)ck->nlost);
    put64(b + 24, (uint64_t)ck->durable);
    put64(b + 32, (uint64_t)ck->dseg);
    put64(b + 40, (uint64_t)ck->dpos);
    put64(b + 48, (uint64_t)ck->start);
    put64(b + 56, (uint64_t)ck->end);
    put64(b + 64, (uint64_t)ck->clean_pos);
    for (int i = 0; i < 8; i++)
        put64(b + 72 + 8 * i, (uint64_t)ck->counters[i]);
    put64(b + 488, (uint64_t)ck->counters[PL_N_REJECTED_BYTES]);
    for (int i = 0; i < ck->nlost; i++) {
        put64(b + 136 + 16 * i, (uint64_t)ck->lost[i].from);
        put64(b + 144 + 16 * i, (uint64_t)ck->lost[i].to);
    }
    put64(b + 504, pl_xxh64(b, 504, 0));
    int created = 0;
    int fd = pl_io_open(path, O_WRONLY, 0);
    if (fd < 0 && errno == ENOENT) {
        fd = pl_io_open(path, O_WRONLY | O_CREAT, 0644);
        created = 1;
    }
    if (fd < 0)
        return pl_err(PL_EIO, errno, "cannot open checkpoint %s", path);
    int rc = 0;
    if (pl_io_pwrite(fd, b, SLOT, (off_t)(ck->seq % 2) * SLOT) < 0)
        rc = pl_err(PL_EIO, errno, "cannot write checkpoint %s", path);
    else if ((sync || created) && pl_io_fdatasync(fd) < 0)
        rc = pl_err(PL_EIO, errno, "fdatasync of checkpoint %s failed", path);
    else if (created && pl_io_fsync_dir(dir) < 0) /* its name, once */
        rc = pl_err(PL_EIO, errno, "fsync of directory %s failed", dir);
    pl_io_close(fd);
    return rc;
}
