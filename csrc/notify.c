/*
 * notify.c -- notifiers: how a consumer of several topics sleeps until any
 * of them gets an append, and how an event loop learns of it.
 *
 * A notifier holds a sequence number. Every publish on a watched topic
 * increments it (seq_cst), then wakes the condition variable only if a
 * thread waits, and writes the eventfd only if an event loop armed it. A
 * waiter increments `waiters` (seq_cst) before it re-reads seq, so a
 * publish either sees the waiter or the waiter sees the new seq: no lost
 * wake-up, and no cost to appends while nobody waits.
 *
 * Lifetime: refcounted. The creator (Python) owns one reference, each
 * topic watch one more; the last pl_notify_unref frees it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct pl_notify {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t seq;
    atomic_int waiters;
    atomic_int armed;
    atomic_int interrupted;
    atomic_int refs;
    int efd;
};

int pl_notify_new(pl_notify **out) {
    pl_notify *n = calloc(1, sizeof *n);
    if (!n) return pl_err(PL_ENOMEM, 0, "out of memory");
    n->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->efd < 0) {
        int e = errno;
        free(n);
        return pl_err(PL_EIO, e, "cannot create an eventfd");
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&n->refs, 1);
    *out = n;
    return 0;
}

static void notify_unref(pl_notify *n) {
    if (atomic_fetch_sub(&n->refs, 1) != 1) return;
    close(n->efd);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}

void pl_notify_free(pl_notify *n) {
    if (n) notify_unref(n);
}

static void notify_signal(pl_notify *n) {
    atomic_fetch_add(&n->seq, 1);
    if (atomic_load(&n->waiters) > 0) {
        pthread_mutex_lock(&n->mu);
        pthread_cond_broadcast(&n->cv);
        pthread_mutex_unlock(&n->mu);
    }
    if (atomic_exchange(&n->armed, 0)) {
        uint64_t one = 1;
        ssize_t w = write(n->efd, &one, sizeof one);
        (void)w; /* EAGAIN: the counter is already non-zero, fine */
    }
}

uint64_t pl_notify_seq(pl_notify *n) { return atomic_load(&n->seq); }

int pl_notify_wait(pl_notify *n, uint64_t seen, int64_t timeout_ms) {
    struct timespec dl = pl_deadline(CLOCK_MONOTONIC,
                                     timeout_ms >= 0 ? timeout_ms : 0);
    int rc = 0;
    pthread_mutex_lock(&n->mu);
    atomic_fetch_add(&n->waiters, 1);
    for (;;) {
        if (atomic_load(&n->seq) != seen) {
            rc = 1;
            break;
        }
        if (atomic_load(&n->interrupted)) {
            rc = pl_err(PL_ECLOSED, 0, "the consumer was closed");
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&n->cv, &n->mu);
        } else if (pthread_cond_timedwait(&n->cv, &n->mu, &dl) == ETIMEDOUT) {
            rc = atomic_load(&n->seq) != seen;
            break;
        }
    }
    atomic_fetch_sub(&n->waiters, 1);
    pthread_mutex_unlock(&n->mu);
    return rc;
}

int pl_notify_arm(pl_notify *n) {
    atomic_store(&n->armed, 1);
    return n->efd;
}

void pl_notify_disarm(pl_notify *n) {
    atomic_store(&n->armed, 0);
    uint64_t v;
    ssize_t r = read(n->efd, &v, sizeof v);
    (void)r; /* EAGAIN: nothing to drain */
}

void pl_notify_interrupt(pl_notify *n) {
    atomic_store(&n->interrupted, 1);
    atomic_fetch_add(&n->seq, 1);
    pthread_mutex_lock(&n->mu);
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    uint64_t one = 1;
    ssize_t w = write(n->efd, &one, sizeof one);
    (void)w;
}

/* ---- the topic side ------------------------------------------------------ */

int pl_topic_watch(pl_topic *t, pl_notify *n) {
    int rc = 0;
    pthread_mutex_lock(&t->watch_mu);
    if (atomic_load(&t->closed)) {
        rc = pl_err(PL_ECLOSED, 0, "topic %s is closed", t->dir);
        goto out;
    }
    int cnt = atomic_load(&t->nwatch);
    if (cnt == t->nwatch_cap) {
        int cap = cnt ? cnt * 2 : 4;
        pl_notify **w = realloc(t->watchers, (size_t)cap * sizeof *w);
        if (!w) {
            rc = pl_err(PL_ENOMEM, 0, "out of memory");
            goto out;
        }
        t->watchers = w;
        t->nwatch_cap = cap;
    }
    atomic_fetch_add(&n->refs, 1);
    t->watchers[cnt] = n;
    atomic_store(&t->nwatch, cnt + 1);
out:
    pthread_mutex_unlock(&t->watch_mu);
    return rc;
}

void pl_topic_unwatch(pl_topic *t, pl_notify *n) {
    pthread_mutex_lock(&t->watch_mu);
    int cnt = atomic_load(&t->nwatch);
    for (int i = 0; i < cnt; i++) {
        if (t->watchers[i] == n) {
            t->watchers[i] = t->watchers[cnt - 1];
            atomic_store(&t->nwatch, cnt - 1);
            notify_unref(n);
            break;
        }
    }
    pthread_mutex_unlock(&t->watch_mu);
}

void pl_notify_topic(pl_topic *t) {
    if (atomic_load(&t->nwatch) == 0) return; /* seq_cst: see publish() */
    pthread_mutex_lock(&t->watch_mu);
    int cnt = atomic_load(&t->nwatch);
    for (int i = 0; i < cnt; i++) notify_signal(t->watchers[i]);
    pthread_mutex_unlock(&t->watch_mu);
}

void pl_notify_detach_all(pl_topic *t) {
    pthread_mutex_lock(&t->watch_mu);
    int cnt = atomic_load(&t->nwatch);
    for (int i = 0; i < cnt; i++) {
        notify_signal(t->watchers[i]); /* let waiters see the close */
        notify_unref(t->watchers[i]);
    }
    atomic_store(&t->nwatch, 0);
    free(t->watchers);
    t->watchers = NULL;
    t->nwatch_cap = 0;
    pthread_mutex_unlock(&t->watch_mu);
}
