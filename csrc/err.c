/*
 * err.c -- the calling thread's last error. Each failing function records a
 * message naming the file, offset and cause; the binding reads it right
 * after the call that failed (the same OS thread: cffi does not migrate).
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char errbuf[1024];
static _Thread_local int errnum_tls;

int pl_err(int code, int errnum, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    if (errnum != 0 && n >= 0 && (size_t)n < sizeof errbuf)
        snprintf(errbuf + n, sizeof errbuf - (size_t)n, ": %s",
                 strerror(errnum));
    errnum_tls = errnum;
    return -code;
}

const char *pl_errmsg(void) { return errbuf; }
int pl_errno(void) { return errnum_tls; }
