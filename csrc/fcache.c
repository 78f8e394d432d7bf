/*
 * fcache.c -- the file cache: every descriptor and map the core keeps open
 * between calls, under limits, like LevelDB's table cache.
 *
 * A Log has one cache; its topics share it. Three kinds of entries, each
 * held by a segment (pl_segment) and listed, most recently used first, on
 * the cache's LRU list:
 *   FD    the active segment's read-write descriptor (appends of large
 *         batches, allocation, fdatasync). Sealed segments keep none: a
 *         descriptor is opened only to map them and closed at once.
 *   RMAP  a read map of [0, file size) of a segment, with a sealed
 *         segment's index attached (pl_map.idx).
 *   WMAP  the active segment's write window: a read-write map of a few
 *         pages to 1 MiB at the write position (appends of small batches
 *         are copies into it).
 * Limits: descriptors <= max_files, mapped bytes <= max_map_bytes, maps <=
 * PL_CACHE_MAX_MAPS. Inserting past a limit evicts from the least recently
 * used end: a descriptor is closed unless a caller is inside a syscall on
 * it (busy); a map is dropped from its segment and killed (pl_map_kill),
 * so the memory goes at once unless a reader or a zero-copy view still
 * holds a reference: then it goes with the last one (io.c). A single map
 * larger than the budget is made for its caller and not kept.
 *
 * Lock: the cache's mutex guards the list, the counts and every cache-owned
 * field of every segment (fd, fd_rw, rmap, wmap, the entries). It is taken
 * inside any topic lock and never the other way round.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "internal.h"

#define PL_CACHE_MAX_MAPS 32768 /* half of vm.max_map_count (65530) */
#define BUDGET_MIN (64 * 1024)
#define WINDOW_MIN PL_GROW_ALIGN
#define WINDOW_MAX (1024 * 1024)

struct pl_cache {
    pthread_mutex_t mu;
    int64_t max_files, max_map_bytes;
    int64_t nfds, nmaps, map_bytes;
    int64_t ntopics;
    pl_centry head; /* sentinel: head.next is the most recent entry */
    atomic_int refs;
    int64_t opens, maps_made, evictions;
};

int pl_cache_new(int64_t max_files, int64_t max_map_bytes, pl_cache **out) {
    if (max_files < 1 || max_map_bytes < BUDGET_MIN)
        return pl_err(PL_EINVAL, 0, "max_open_files must be >= 1 and "
                      "max_map_bytes >= %d", BUDGET_MIN);
    pl_cache *c = calloc(1, sizeof *c);
    if (!c) return pl_err(PL_ENOMEM, 0, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->max_files = max_files;
    c->max_map_bytes = max_map_bytes;
    c->head.next = c->head.prev = &c->head;
    atomic_init(&c->refs, 1);
    *out = c;
    return 0;
}

void pl_cache_ref(pl_cache *c) { atomic_fetch_add(&c->refs, 1); }

void pl_cache_free(pl_cache *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    /* Every topic dropped its reference: its segments forgot their
     * entries, so the list is empty. */
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void pl_cache_get_stats(pl_cache *c, pl_cache_stats *o) {
    pthread_mutex_lock(&c->mu);
    o->open_files = c->nfds;
    o->maps = c->nmaps;
    o->map_bytes = c->map_bytes;
    o->opens = c->opens;
    o->maps_made = c->maps_made;
    o->evictions = c->evictions;
    pthread_mutex_unlock(&c->mu);
}

void pl_cache_add_topic(pl_cache *c, int delta) {
    pthread_mutex_lock(&c->mu);
    c->ntopics += delta;
    pthread_mutex_unlock(&c->mu);
}

/* ---- the LRU list (c->mu held) -------------------------------------------- */
static int listed(const pl_centry *e) { return e->next != NULL; }

static void unlink_entry(pl_centry *e) {
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = NULL;
}

static void push_front(pl_cache *c, pl_centry *e) {
    e->next = c->head.next;
    e->prev = &c->head;
    c->head.next->prev = e;
    c->head.next = e;
}

static void touch(pl_cache *c, pl_centry *e) {
    if (c->head.next == e) return;
    unlink_entry(e);
    push_front(c, e);
}

/* Remove entry e and release what it holds. */
static void drop(pl_cache *c, pl_centry *e) {
    pl_segment *s = e->seg;
    unlink_entry(e);
    if (e->kind == PL_CE_FD) {
        pl_io_close(s->fd);
        s->fd = -1;
        c->nfds--;
        return;
    }
    pl_map **slot = e->kind == PL_CE_RMAP ? &s->rmap : &s->wmap;
    pl_map *m = *slot;
    *slot = NULL;
    c->nmaps--;
    c->map_bytes -= e->bytes;
    pl_map_kill(m);
}

static int over(const pl_cache *c) {
    return c->nfds > c->max_files || c->map_bytes > c->max_map_bytes ||
           c->nmaps > PL_CACHE_MAX_MAPS;
}

/* Evict least recently used entries while over a limit; busy descriptors
 * and `keep` stay. */
static void evict(pl_cache *c, const pl_centry *keep) {
    pl_centry *e = c->head.prev;
    while (over(c) && e != &c->head) {
        pl_centry *prev = e->prev;
        int wanted = e->kind == PL_CE_FD ? c->nfds > c->max_files
                                         : c->map_bytes > c->max_map_bytes ||
                                               c->nmaps > PL_CACHE_MAX_MAPS;
        if (wanted && e != keep && !(e->kind == PL_CE_FD && e->busy)) {
            drop(c, e);
            c->evictions++;
        }
        e = prev;
    }
}

/* ---- descriptors ------------------------------------------------------------- */
/* Open s's file into the cache (c->mu held); its fd, or -1 with errno. */
static int open_fd(pl_cache *c, pl_segment *s, int rw) {
    if (s->fd >= 0) {
        if (s->fd_rw >= rw) return s->fd;
        if (s->fd_e.busy) { /* cannot happen: one mode per segment */
            errno = EBUSY;
            return -1;
        }
        drop(c, &s->fd_e);
    }
    int fd = pl_io_open(s->path, rw ? O_RDWR : O_RDONLY, 0);
    if (fd < 0) return -1;
    c->opens++;
    s->fd = fd;
    s->fd_rw = rw;
    s->fd_e.seg = s;
    s->fd_e.kind = PL_CE_FD;
    s->fd_e.busy = 0;
    c->nfds++;
    push_front(c, &s->fd_e);
    return fd;
}

int pl_cache_fd(pl_cache *c, pl_segment *s, int rw) {
    pthread_mutex_lock(&c->mu);
    int fd = open_fd(c, s, rw);
    if (fd >= 0) {
        s->fd_e.busy++;
        touch(c, &s->fd_e);
        evict(c, &s->fd_e);
    }
    int e = errno;
    pthread_mutex_unlock(&c->mu);
    errno = e;
    return fd;
}

void pl_cache_fd_done(pl_cache *c, pl_segment *s) {
    pthread_mutex_lock(&c->mu);
    s->fd_e.busy--;
    if (over(c)) evict(c, NULL);
    pthread_mutex_unlock(&c->mu);
}

/* ---- maps ---------------------------------------------------------------------- */
pl_map *pl_cache_rmap(pl_cache *c, pl_segment *s, int64_t need) {
    pthread_mutex_lock(&c->mu);
    pl_map *m = s->rmap;
    if (m && m->len >= need) {
        pl_map_ref(m);
        touch(c, &s->rmap_e);
    } else {
        m = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return m;
}

void pl_cache_set_rmap(pl_cache *c, pl_segment *s, pl_map *m) {
    pthread_mutex_lock(&c->mu);
    if (s->rmap) drop(c, &s->rmap_e);
    pl_map_ref(m);
    s->rmap = m;
    s->rmap_e.seg = s;
    s->rmap_e.kind = PL_CE_RMAP;
    s->rmap_e.bytes = m->vlen;
    c->nmaps++;
    c->map_bytes += m->vlen;
    c->maps_made++;
    push_front(c, &s->rmap_e);
    evict(c, NULL);
    pthread_mutex_unlock(&c->mu);
}

pl_map *pl_cache_map_file(pl_cache *c, pl_segment *s, int64_t *size) {
    int fd = -1, cached = 0;
    pthread_mutex_lock(&c->mu);
    if (s->fd >= 0) { /* the active segment's descriptor */
        fd = s->fd;
        s->fd_e.busy++;
        cached = 1;
    }
    pthread_mutex_unlock(&c->mu);
    if (!cached) fd = pl_io_open(s->path, O_RDONLY, 0);
    pl_map *m = NULL;
    int e = 0;
    if (fd < 0 || pl_io_fstat_size(fd, size) < 0) {
        e = errno;
    } else {
        int64_t n = *size > PL_SEG_MAX ? PL_SEG_MAX : *size;
        m = pl_io_map(fd, 0, n, n, 0);
        if (!m) e = errno;
    }
    if (cached)
        pl_cache_fd_done(c, s);
    else
        pl_io_close(fd);
    errno = e;
    return m;
}

/* The size of a new write window: a share of the map budget, so that
 * every topic can keep one, within [WINDOW_MIN, WINDOW_MAX]. */
static int64_t window_size(const pl_cache *c) {
    int64_t n = c->ntopics > 0 ? c->ntopics : 1;
    int64_t w = c->max_map_bytes / (4 * n), p = WINDOW_MIN;
    while (p * 2 <= w && p < WINDOW_MAX) p *= 2;
    return p;
}

pl_map *pl_cache_wmap(pl_cache *c, pl_segment *s, int64_t pos, int64_t len) {
    pthread_mutex_lock(&c->mu);
    pl_map *m = s->wmap;
    if (m && pos >= m->off && pos + len <= m->off + m->vlen) {
        pl_map_ref(m);
        touch(c, &s->wmap_e);
        pthread_mutex_unlock(&c->mu);
        return m;
    }
    int e = 0;
    int fd = open_fd(c, s, 1);
    if (fd < 0) {
        e = errno;
        m = NULL;
        goto out;
    }
    int64_t off = pl_align_down(pos, PL_GROW_ALIGN);
    int64_t vlen = window_size(c);
    int64_t need = pl_align_up(pos + len - off, PL_GROW_ALIGN);
    if (vlen < need) vlen = need;
    s->fd_e.busy++; /* not evicted by the insert below */
    m = pl_io_map(fd, off, vlen, vlen, 1);
    e = errno;
    s->fd_e.busy--;
    if (!m) goto out;
    if (s->wmap) drop(c, &s->wmap_e);
    s->wmap = m;
    s->wmap_e.seg = s;
    s->wmap_e.kind = PL_CE_WMAP;
    s->wmap_e.bytes = vlen;
    c->nmaps++;
    c->map_bytes += vlen;
    c->maps_made++;
    push_front(c, &s->wmap_e);
    pl_map_ref(m); /* the caller's */
    evict(c, &s->wmap_e);
out:
    pthread_mutex_unlock(&c->mu);
    errno = e;
    return m;
}

void pl_cache_sealed(pl_cache *c, pl_segment *s) {
    pthread_mutex_lock(&c->mu);
    if (s->wmap) drop(c, &s->wmap_e);
    /* A read map made while the segment was active covers only what was
     * written then, and carries no index: a sealed segment is mapped
     * anew, with its index, when next read. */
    if (s->rmap) drop(c, &s->rmap_e);
    if (s->fd >= 0 && !s->fd_e.busy) drop(c, &s->fd_e);
    pthread_mutex_unlock(&c->mu);
}

void pl_cache_forget(pl_cache *c, pl_segment *s) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    if (s->wmap) drop(c, &s->wmap_e);
    if (s->rmap) drop(c, &s->rmap_e);
    if (s->fd >= 0 && listed(&s->fd_e)) drop(c, &s->fd_e);
    pthread_mutex_unlock(&c->mu);
}
