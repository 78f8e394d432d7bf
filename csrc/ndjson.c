/*
 * ndjson.c -- pylog.forward._ndjson: the body of an HTTP NDJSON batch.
 *
 * Not part of the C core: a small CPython extension for HttpSink
 * (pylog/forward/_http.py), whose per-record Python loop (two base64
 * encodings and a dozen pieces per record, ~0.65 us) cost as much as the
 * POST it fed. One call turns a list of Records into the whole body:
 *
 *   encode(records) -> bytes
 *       For each record, one line (docs: README, "Forwarding"):
 *       {"topic":T,"offset":O,"timestamp":S,"key":K,"headers":H,"value":V}\n
 *       T is a JSON string; O and S are integers; K is the base64 of the
 *       key as a JSON string, or null; H is a list of [name, base64 value
 *       or null] pairs; V is the base64 of the value. Base64 is RFC 4648
 *       with padding. Strings are escaped as JSON requires (", \ and
 *       control characters); other UTF-8 passes through.
 *
 * A record is any object with the attributes topic (str), offset and
 * timestamp (int), key (bytes-like or None), headers (a sequence of
 * (str, bytes-like or None) pairs, or empty/None) and value (bytes-like).
 * Anything else raises TypeError; nothing is returned half-done.
 *
 * It holds the GIL throughout. Attribute lookups may run Python code (for
 * objects that are not Records), so each record's fields are fetched into
 * owned references before they are encoded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} buf;

/* Room for n more bytes; on failure sets MemoryError, returns -1. */
static int reserve(buf *b, Py_ssize_t n) {
    if (b->len + n <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put(buf *b, const char *s, Py_ssize_t n) {
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LIT(b, lit) put((b), (lit), (Py_ssize_t)sizeof(lit) - 1)

static int put_i64(buf *b, PyObject *o, const char *what) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        PyErr_Format(PyExc_OverflowError, "%s does not fit in 64 bits", what);
        return -1;
    }
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    return put(b, tmp, n);
}

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The base64 of a bytes-like object, between double quotes. */
static int put_b64(buf *b, PyObject *o, const char *what) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like, not %.100s",
                     what, Py_TYPE(o)->tp_name);
        return -1;
    }
    const unsigned char *s = view.buf;
    Py_ssize_t n = view.len;
    int rc = -1;
    if (n > (PY_SSIZE_T_MAX - 2) / 4 * 3 - 3)
        PyErr_NoMemory();
    else if (reserve(b, (n + 2) / 3 * 4 + 2) == 0) {
        char *d = b->p + b->len;
        *d++ = '"';
        Py_ssize_t i = 0;
        for (; i + 3 <= n; i += 3) {
            uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
            d[0] = B64[v >> 18];
            d[1] = B64[(v >> 12) & 63];
            d[2] = B64[(v >> 6) & 63];
            d[3] = B64[v & 63];
            d += 4;
        }
        if (n - i == 1) {
            uint32_t v = (uint32_t)s[i] << 16;
            d[0] = B64[v >> 18];
            d[1] = B64[(v >> 12) & 63];
            d[2] = d[3] = '=';
            d += 4;
        } else if (n - i == 2) {
            uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
            d[0] = B64[v >> 18];
            d[1] = B64[(v >> 12) & 63];
            d[2] = B64[(v >> 6) & 63];
            d[3] = '=';
            d += 4;
        }
        *d++ = '"';
        b->len = d - b->p;
        rc = 0;
    }
    PyBuffer_Release(&view);
    return rc;
}

/* Control characters with a short escape (as Python's json writes them). */
static const char *SHORT[0x20] = {
    ['\b'] = "b", ['\f'] = "f", ['\n'] = "n", ['\r'] = "r", ['\t'] = "t",
};

/* A str as a JSON string: quotes, backslashes and control characters
 * escaped (\n and the like, else \u00XX), the rest as UTF-8: what
 * json.dumps(s, ensure_ascii=False) writes. */
static int put_str(buf *b, PyObject *o, const char *what) {
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s)
        return -1;
    if (n > (PY_SSIZE_T_MAX - 2) / 6 || reserve(b, n * 6 + 2) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    char *d = b->p + b->len;
    *d++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c < 0x20 ? SHORT[c] : NULL;
        if (c == '"' || c == '\\') {
            *d++ = '\\';
            *d++ = (char)c;
        } else if (esc) {
            *d++ = '\\';
            *d++ = *esc;
        } else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            memcpy(d, "\\u00", 4);
            d[4] = hex[c >> 4];
            d[5] = hex[c & 15];
            d += 6;
        } else {
            *d++ = (char)c;
        }
    }
    *d++ = '"';
    b->len = d - b->p;
    return 0;
}

static int put_headers(buf *b, PyObject *headers) {
    if (PUT_LIT(b, "[") < 0)
        return -1;
    if (headers != Py_None) {
        PyObject *seq = PySequence_Fast(headers, "headers must be a sequence");
        if (!seq)
            return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError,
                                "each header must be a (name, value) tuple");
                Py_DECREF(seq);
                return -1;
            }
            PyObject *v = PyTuple_GET_ITEM(pair, 1);
            if ((i && PUT_LIT(b, ",") < 0) || PUT_LIT(b, "[") < 0
                || put_str(b, PyTuple_GET_ITEM(pair, 0), "a header name") < 0
                || PUT_LIT(b, ",") < 0
                || (v == Py_None ? PUT_LIT(b, "null")
                                 : put_b64(b, v, "a header value")) < 0
                || PUT_LIT(b, "]") < 0) {
                Py_DECREF(seq);
                return -1;
            }
        }
        Py_DECREF(seq);
    }
    return PUT_LIT(b, "]");
}

static const char *FIELDS[] = {"topic", "offset", "timestamp", "key",
                               "headers", "value"};
#define NFIELDS 6
static PyObject *names[NFIELDS]; /* interned at import */

static int put_record(buf *b, PyObject *r) {
    PyObject *f[NFIELDS] = {NULL};
    int rc = -1;
    for (int i = 0; i < NFIELDS; i++)
        if (!(f[i] = PyObject_GetAttr(r, names[i])))
            goto out;
    if (PUT_LIT(b, "{\"topic\":") < 0 || put_str(b, f[0], "topic") < 0
        || PUT_LIT(b, ",\"offset\":") < 0 || put_i64(b, f[1], "offset") < 0
        || PUT_LIT(b, ",\"timestamp\":") < 0
        || put_i64(b, f[2], "timestamp") < 0
        || PUT_LIT(b, ",\"key\":") < 0
        || (f[3] == Py_None ? PUT_LIT(b, "null") : put_b64(b, f[3], "key")) < 0
        || PUT_LIT(b, ",\"headers\":") < 0 || put_headers(b, f[4]) < 0
        || PUT_LIT(b, ",\"value\":") < 0 || put_b64(b, f[5], "value") < 0
        || PUT_LIT(b, "}\n") < 0)
        goto out;
    rc = 0;
out:
    for (int i = 0; i < NFIELDS; i++)
        Py_XDECREF(f[i]);
    return rc;
}

static PyObject *encode(PyObject *self, PyObject *records) {
    (void)self;
    PyObject *seq = PySequence_Fast(records, "encode takes a list of records");
    if (!seq)
        return NULL;
    buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < PY_SSIZE_T_MAX / 512 && reserve(&b, n * 256) < 0)
        goto done; /* a guess that saves most regrowths */
    for (Py_ssize_t i = 0; i < n; i++)
        if (put_record(&b, PySequence_Fast_GET_ITEM(seq, i)) < 0)
            goto done;
    out = PyBytes_FromStringAndSize(b.p ? b.p : "", b.len);
done:
    PyMem_Free(b.p);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_O,
     "encode(records) -> bytes: the NDJSON body of records (see ndjson.c)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pylog.forward._ndjson",
    "The NDJSON body of an HTTP batch, in C (csrc/ndjson.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ndjson(void) {
    for (int i = 0; i < NFIELDS; i++)
        if (!names[i] && !(names[i] = PyUnicode_InternFromString(FIELDS[i])))
            return NULL;
    return PyModule_Create(&module);
}
