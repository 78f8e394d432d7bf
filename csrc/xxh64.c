/*
 * xxh64.c -- XXH64, written from the published specification of the
 * algorithm (xxHash's XXH64: 64-bit lanes, four accumulators over 32-byte
 * stripes, then 8/4/1-byte tails and a final avalanche). The python
 * `xxhash` package is the oracle in tests/test_format.py.
 *
 * Every batch and every index file carries one of these (seed 0); changing
 * anything here changes every checksum on disk: see docs/FORMAT.md.
 */
#include <string.h>

#include "internal.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r) {
    return (x << r) | (x >> (64 - r));
}

/* Little-endian loads that never assume alignment. */
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t input) {
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t merge64(uint64_t acc, uint64_t val) {
    acc ^= round64(0, val);
    return acc * P1 + P4;
}

/* The four accumulators of a 32-byte stripe, at their start values. */
static inline void lanes_init(uint64_t v[4], uint64_t seed) {
    v[0] = seed + P1 + P2;
    v[1] = seed + P2;
    v[2] = seed;
    v[3] = seed - P1;
}

static inline void stripe(uint64_t v[4], const uint8_t *p) {
    v[0] = round64(v[0], load64(p));
    v[1] = round64(v[1], load64(p + 8));
    v[2] = round64(v[2], load64(p + 16));
    v[3] = round64(v[3], load64(p + 24));
}

static inline uint64_t converge(const uint64_t v[4]) {
    uint64_t h = rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) +
                 rotl64(v[3], 18);
    h = merge64(h, v[0]);
    h = merge64(h, v[1]);
    h = merge64(h, v[2]);
    return merge64(h, v[3]);
}

/* The end of the algorithm: add the total length, fold in the last n < 32
 * bytes at p (8, then 4, then 1 at a time), avalanche. */
static inline uint64_t finish(uint64_t h, uint64_t total, const uint8_t *p,
                              size_t n) {
    const uint8_t *end = p + n;
    h += total;
    while (p + 8 <= end) {
        h ^= round64(0, load64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)load32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t pl_xxh64(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = data;
    const uint8_t *end = p + n;
    uint64_t h;

    if (n >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v[4];
        lanes_init(v, seed);
        do {
            stripe(v, p);
            p += 32;
        } while (p <= limit);
        h = converge(v);
    } else {
        h = seed + P5;
    }
    return finish(h, (uint64_t)n, p, (size_t)(end - p));
}

/* ---- streaming: the same hash over input given in pieces ----------------
 * Whole stripes are consumed as they arrive; a partial one waits in buf
 * until the next piece completes it or digest folds it in as the tail, so
 * any split of the input gives the one-shot result. */
void pl_xxh64_reset(pl_xxh64_state *st, uint64_t seed) {
    memset(st, 0, sizeof *st);
    st->seed = seed;
    lanes_init(st->v, seed);
}

void pl_xxh64_update(pl_xxh64_state *st, const void *data, size_t n) {
    const uint8_t *p = data;
    if (n == 0) return;
    st->total += n;
    if (st->nbuf + n < 32) { /* still no whole stripe */
        memcpy(st->buf + st->nbuf, p, n);
        st->nbuf += (uint32_t)n;
        return;
    }
    if (st->nbuf > 0) { /* complete the buffered stripe */
        size_t k = 32 - st->nbuf;
        memcpy(st->buf + st->nbuf, p, k);
        stripe(st->v, st->buf);
        p += k;
        n -= k;
        st->nbuf = 0;
    }
    while (n >= 32) {
        stripe(st->v, p);
        p += 32;
        n -= 32;
    }
    if (n > 0) {
        memcpy(st->buf, p, n);
        st->nbuf = (uint32_t)n;
    }
}

uint64_t pl_xxh64_digest(const pl_xxh64_state *st) {
    uint64_t h = st->total >= 32 ? converge(st->v) : st->seed + P5;
    return finish(h, st->total, st->buf, st->nbuf);
}
