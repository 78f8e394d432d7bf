/*
 * pyrecords.c -- pylog._records: the Record type, the two loops that move
 * many records across the Python/C line in one call, and a get in one call.
 *
 * The C core (the rest of csrc/) knows nothing of Python and is reached
 * through cffi. cffi cannot create Python objects in C, so the per-record
 * objects a read returns, and the blob an append_batch sends, would cost a
 * Python-level loop per record. This small CPython extension does those
 * loops in C instead:
 *
 *   decode(meta, n, view, topic, zero_copy_min, decode_headers) -> list
 *       n Records from the metadata pl_topic_read wrote (PL_META int64s per
 *       record: offset, timestamp, key pos, key len (-1: none), value pos,
 *       value len, headers pos, headers len) and the memoryview of the
 *       mapped segment those positions refer to. Values of zero_copy_min
 *       bytes and more are memoryview slices of `view` (zero-copy, pinning
 *       the map); smaller values and keys are bytes. A non-empty header
 *       block is handed to decode_headers(view, pos, len, where).
 *
 *   frame(values, blob, lens) -> (blob, lens) or None
 *       For a list or tuple of bytes: the values joined at the start of
 *       blob, and their lengths as native int64s at the start of lens,
 *       ready for pl_topic_append_batch. Each of the two bytearrays given
 *       is reused when large enough, else a new one is returned: a fresh
 *       100 KiB buffer per call made glibc grow and trim its heap, and
 *       each regrowth faulted in (zeroed) fresh pages (append_batch fell
 *       from 25 to 8 M records/s after other work in the process). None
 *       when an item is not exactly bytes (the caller converts and reports
 *       errors).
 *
 *   weigh(records) -> int
 *       What a sequence of Records weighs for a forwarder's budgets and
 *       stats: len() of keys, values, header names and header values (the
 *       loop pylog.forward._sink.batch_bytes ran in Python, 0.16 us a
 *       record). weigh_kv(records): keys and values only, what a
 *       poll's max_bytes counts.
 *
 *   kafka_args(records, dests, dest_of) -> list
 *       KafkaSink's produce() arguments, one positional 8-tuple per Record:
 *       (destination, value as bytes, key, -1, None, None, timestamp,
 *       headers as a list or None). dests is a dict caching destinations
 *       by pylog topic, dest_of(topic) makes a missing one. The Python
 *       loop (KafkaSink._prepare_py) cost about 0.4 us a record.
 *
 *   Getter(read_fn, meta, pins, npins, which, mapp, views, keep,
 *          zero_copy_min, decode_headers).get(topic_handle, offset, name)
 *       Topic.get in one call: pl_topic_read (reached through the function
 *       pointer read_fn, an address the cffi module hands over) of one
 *       record into the thread's buffers (meta, pins, which, mapp are the
 *       addresses of its cffi arrays, kept alive by `keep`), and when the
 *       record lies in a pinned map (views[which]) the Record decoded from
 *       it. Otherwise it returns what pl_topic_read returned (an int): 1
 *       when the map is not pinned (its new reference is in *mapp for the
 *       caller to pin), 0 or a negative error code, and 0 for an offset
 *       that is not an int within int64; the caller takes its general path
 *       then. Through cffi the same get cost a call converting nine
 *       arguments, a list and a second call.
 *
 * decode and frame hold the GIL throughout and call nothing that could run
 * Python code between reading a sequence's items and using them, so items
 * cannot change or vanish underneath them. Getter.get releases the GIL
 * around pl_topic_read only (as cffi does), which touches no Python
 * object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define META 8 /* int64s per record in decode's metadata (PL_META) */

/* ---- Record -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *offset;
    PyObject *timestamp;
    PyObject *key;
    PyObject *value;
    PyObject *headers;
    PyObject *topic;
} Record;

static PyTypeObject RecordType;

static int record_traverse(Record *r, visitproc visit, void *arg) {
    Py_VISIT(r->offset);
    Py_VISIT(r->timestamp);
    Py_VISIT(r->key);
    Py_VISIT(r->value);
    Py_VISIT(r->headers);
    Py_VISIT(r->topic);
    return 0;
}

static int record_clear(Record *r) {
    Py_CLEAR(r->offset);
    Py_CLEAR(r->timestamp);
    Py_CLEAR(r->key);
    Py_CLEAR(r->value);
    Py_CLEAR(r->headers);
    Py_CLEAR(r->topic);
    return 0;
}

static void record_dealloc(Record *r) {
    PyObject_GC_UnTrack(r);
    record_clear(r);
    PyObject_GC_Del(r);
}

/* A Record owning the six references given (stolen), or NULL with all of
 * them released. Not tracked by the cycle collector: see record_new. */
static PyObject *record_make(PyObject *offset, PyObject *timestamp,
                             PyObject *key, PyObject *value,
                             PyObject *headers, PyObject *topic) {
    Record *r = NULL;
    if (offset && timestamp && key && value && headers && topic)
        r = PyObject_GC_New(Record, &RecordType);
    if (!r) {
        Py_XDECREF(offset);
        Py_XDECREF(timestamp);
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(headers);
        Py_XDECREF(topic);
        return NULL;
    }
    r->offset = offset;
    r->timestamp = timestamp;
    r->key = key;
    r->value = value;
    r->headers = headers;
    r->topic = topic;
    return (PyObject *)r;
}

/* Record(offset, timestamp, key, value, headers, topic). Records built by
 * decode hold only ints, bytes, memoryviews of a map, a tuple of str/bytes
 * pairs and a str, none of which can lead back to a Record, and fields are
 * read-only: they stay untracked (as CPython leaves atomic tuples). One
 * built from Python may hold anything, so it is tracked. */
static PyObject *record_new(PyTypeObject *type, PyObject *args,
                            PyObject *kw) {
    static char *names[] = {"offset", "timestamp", "key", "value",
                            "headers", "topic", NULL};
    PyObject *f[6];
    (void)type;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOO:Record", names, &f[0],
                                     &f[1], &f[2], &f[3], &f[4], &f[5]))
        return NULL;
    for (int i = 0; i < 6; i++) Py_INCREF(f[i]);
    PyObject *r = record_make(f[0], f[1], f[2], f[3], f[4], f[5]);
    if (r) PyObject_GC_Track(r);
    return r;
}

/* The fields compared by ==, with the value as bytes (a memoryview value
 * equals a bytes one of the same content). */
static PyObject *record_tuple(Record *r) {
    PyObject *v = PyBytes_FromObject(r->value);
    if (!v) return NULL;
    PyObject *t = PyTuple_Pack(6, r->offset, r->timestamp, r->key, v,
                               r->headers, r->topic);
    Py_DECREF(v);
    return t;
}

static PyObject *record_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(a, &RecordType) ||
        !PyObject_TypeCheck(b, &RecordType))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *ta = record_tuple((Record *)a);
    if (!ta) return NULL;
    PyObject *tb = record_tuple((Record *)b);
    if (!tb) {
        Py_DECREF(ta);
        return NULL;
    }
    PyObject *res = PyObject_RichCompare(ta, tb, op);
    Py_DECREF(ta);
    Py_DECREF(tb);
    return res;
}

static PyObject *record_repr(Record *r) {
    PyObject *v = PyBytes_FromObject(r->value);
    if (!v) return NULL;
    if (PyBytes_GET_SIZE(v) > 32) {
        PyObject *cut = PyBytes_FromFormat("%.32s...", PyBytes_AS_STRING(v));
        Py_SETREF(v, cut);
        if (!v) return NULL;
    }
    PyObject *s = PyUnicode_FromFormat(
        "Record(topic=%R, offset=%R, timestamp=%R, key=%R, value=%R, "
        "headers=%R)", r->topic, r->offset, r->timestamp, r->key, v,
        r->headers);
    Py_DECREF(v);
    return s;
}

static PyObject *record_reduce(Record *r, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("O(OOOOOO)", Py_TYPE(r), r->offset, r->timestamp,
                         r->key, r->value, r->headers, r->topic);
}

static PyMethodDef record_methods[] = {
    {"__reduce__", (PyCFunction)record_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef record_members[] = {
    {"offset", T_OBJECT, offsetof(Record, offset), READONLY,
     "the record's offset in its topic (int)"},
    {"timestamp", T_OBJECT, offsetof(Record, timestamp), READONLY,
     "int milliseconds since the Unix epoch"},
    {"key", T_OBJECT, offsetof(Record, key), READONLY, "bytes or None"},
    {"value", T_OBJECT, offsetof(Record, value), READONLY,
     "bytes, or a read-only memoryview into the mapped segment for large "
     "values"},
    {"headers", T_OBJECT, offsetof(Record, headers), READONLY,
     "tuple of (str, bytes or None) pairs"},
    {"topic", T_OBJECT, offsetof(Record, topic), READONLY,
     "name of the topic the record was read from"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylog.Record",
    .tp_basicsize = sizeof(Record),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR(
        "Record(offset, timestamp, key, value, headers, topic)\n\n"
        "One record, as read from a topic. ``value`` is bytes, or for values "
        "of ZERO_COPY_MIN bytes and more a read-only memoryview into the "
        "mapped segment (valid for as long as it lives, even after the log "
        "is closed). ``key`` is bytes or None, ``headers`` a tuple of (str, "
        "bytes or None) pairs, ``timestamp`` int milliseconds since the Unix "
        "epoch. Fields are read-only."),
    .tp_new = record_new,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_traverse = (traverseproc)record_traverse,
    .tp_clear = (inquiry)record_clear,
    .tp_repr = (reprfunc)record_repr,
    .tp_richcompare = record_richcompare,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_methods = record_methods,
    .tp_members = record_members,
};

/* ---- decode ---------------------------------------------------------------- */

/* Is [pos, pos + len) inside a buffer of size n? */
static int in_bounds(int64_t pos, int64_t len, Py_ssize_t n) {
    return pos >= 0 && len >= 0 && pos <= (int64_t)n && len <= (int64_t)n - pos;
}

static PyObject *decode_one(const int64_t *m, const Py_buffer *vb,
                            PyObject *view, PyObject *topic, int64_t zc,
                            PyObject *decode_headers, PyObject *empty) {
    int64_t kp = m[2], kl = m[3], vp = m[4], vl = m[5], hp = m[6], hl = m[7];
    const char *base = vb->buf;
    if ((kl >= 0 && !in_bounds(kp, kl, vb->len)) ||
        !in_bounds(vp, vl, vb->len) || !in_bounds(hp, hl, vb->len)) {
        PyErr_Format(PyExc_SystemError, "record at offset %lld lies outside "
                     "its segment map", (long long)m[0]);
        return NULL;
    }
    PyObject *key;
    if (kl < 0) {
        key = Py_None;
        Py_INCREF(key);
    } else {
        key = PyBytes_FromStringAndSize(base + kp, (Py_ssize_t)kl);
    }
    PyObject *value;
    if (vl >= zc) {
        PyObject *a = PyLong_FromLongLong(vp);
        PyObject *b = PyLong_FromLongLong(vp + vl);
        PyObject *sl = a && b ? PySlice_New(a, b, NULL) : NULL;
        value = sl ? PyObject_GetItem(view, sl) : NULL;
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(sl);
    } else {
        value = PyBytes_FromStringAndSize(base + vp, (Py_ssize_t)vl);
    }
    PyObject *headers;
    if (hl == 0) {
        headers = empty;
        Py_INCREF(headers);
    } else {
        headers = PyObject_CallFunction(decode_headers, "OLLN", view,
                                        (long long)hp, (long long)hl,
                                        PyUnicode_FromFormat(
                                            "at offset %lld of %R",
                                            (long long)m[0], topic));
    }
    Py_INCREF(topic);
    return record_make(PyLong_FromLongLong(m[0]), PyLong_FromLongLong(m[1]),
                       key, value, headers, topic);
}

static PyObject *records_decode(PyObject *self, PyObject *args) {
    PyObject *meta, *view, *topic, *decode_headers;
    Py_ssize_t n;
    long long zc;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnOOLO:decode", &meta, &n, &view, &topic,
                          &zc, &decode_headers))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "decode: negative count");
        return NULL;
    }
    Py_buffer mb, vb;
    if (PyObject_GetBuffer(meta, &mb, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(view, &vb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&mb);
        return NULL;
    }
    PyObject *out = NULL, *empty = PyTuple_New(0);
    if (!empty) goto done;
    if (mb.len / (Py_ssize_t)(META * sizeof(int64_t)) < n) {
        PyErr_SetString(PyExc_ValueError, "decode: metadata is too short");
        goto done;
    }
    out = PyList_New(n);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t m[META];
        memcpy(m, (const char *)mb.buf + i * META * sizeof(int64_t),
               sizeof m);
        PyObject *r = decode_one(m, &vb, view, topic, zc, decode_headers,
                                 empty);
        if (!r) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, r);
    }
done:
    Py_XDECREF(empty);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&mb);
    return out;
}

/* ---- Getter ---------------------------------------------------------------- */

typedef int (*read_fn)(void *topic, int64_t offset, int max_records,
                       int64_t max_bytes, int64_t *meta, void *const *pins,
                       int npins, int *pin_out, void **map_out);

typedef struct {
    PyObject_HEAD
    read_fn read;
    int64_t *meta;
    void **pins;
    int npins;
    int *which;
    void **mapp;
    PyObject *views; /* list of npins: memoryview of pins[i], or None */
    PyObject *keep;  /* owns meta, pins, which, mapp */
    PyObject *decode_headers;
    PyObject *empty;
    long long zc;
} Getter;

static int getter_traverse(Getter *g, visitproc visit, void *arg) {
    Py_VISIT(g->views);
    Py_VISIT(g->keep);
    Py_VISIT(g->decode_headers);
    return 0;
}

static int getter_clear(Getter *g) {
    Py_CLEAR(g->views);
    Py_CLEAR(g->keep);
    Py_CLEAR(g->decode_headers);
    Py_CLEAR(g->empty);
    return 0;
}

static void getter_dealloc(Getter *g) {
    PyObject_GC_UnTrack(g);
    getter_clear(g);
    PyObject_GC_Del(g);
}

static void *address(PyObject *o) {
    return PyLong_Check(o) ? PyLong_AsVoidPtr(o) : NULL;
}

static PyObject *getter_new(PyTypeObject *type, PyObject *args,
                            PyObject *kw) {
    PyObject *fn, *meta, *pins, *which, *mapp, *views, *keep, *dh;
    int npins;
    long long zc;
    if (kw && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "Getter takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOiOOOOLO:Getter", &fn, &meta, &pins,
                          &npins, &which, &mapp, &views, &keep, &zc, &dh))
        return NULL;
    void *a[5] = {address(fn), address(meta), address(pins), address(which),
                  address(mapp)};
    if (PyErr_Occurred()) return NULL;
    for (int i = 0; i < 5; i++)
        if (!a[i]) {
            PyErr_SetString(PyExc_ValueError, "Getter: a null address");
            return NULL;
        }
    if (!PyList_CheckExact(views) || PyList_GET_SIZE(views) != npins ||
        npins < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "Getter: views must be a list of npins entries");
        return NULL;
    }
    Getter *g = PyObject_GC_New(Getter, type);
    if (!g) return NULL;
    g->read = (read_fn)a[0];
    g->meta = a[1];
    g->pins = a[2];
    g->which = a[3];
    g->mapp = a[4];
    g->npins = npins;
    g->zc = zc;
    Py_INCREF(views);
    g->views = views;
    Py_INCREF(keep);
    g->keep = keep;
    Py_INCREF(dh);
    g->decode_headers = dh;
    g->empty = PyTuple_New(0);
    PyObject_GC_Track(g);
    if (!g->empty) {
        Py_DECREF(g);
        return NULL;
    }
    return (PyObject *)g;
}

static PyObject *getter_get(Getter *g, PyObject *const *args,
                            Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "get(topic_handle, offset, name) takes 3 arguments");
        return NULL;
    }
    void *t = address(args[0]);
    if (!t) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "get: a null topic handle");
        return NULL;
    }
    if (!PyLong_CheckExact(args[1])) return PyLong_FromLong(0);
    int overflow = 0;
    long long off = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (overflow) return PyLong_FromLong(0);
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = g->read(t, (int64_t)off, 1, 0, g->meta, g->pins, g->npins, g->which,
                g->mapp);
    Py_END_ALLOW_THREADS
    int w = *g->which;
    if (n != 1 || w < 0 || w >= g->npins) return PyLong_FromLong(n);
    PyObject *view = PyList_GET_ITEM(g->views, w);
    Py_buffer vb;
    if (PyObject_GetBuffer(view, &vb, PyBUF_SIMPLE) < 0) return NULL;
    Py_INCREF(view); /* decode_headers may run Python code */
    PyObject *r = decode_one(g->meta, &vb, view, args[2], g->zc,
                             g->decode_headers, g->empty);
    PyBuffer_Release(&vb);
    Py_DECREF(view);
    return r;
}

static PyMethodDef getter_methods[] = {
    {"get", (PyCFunction)(void (*)(void))getter_get, METH_FASTCALL,
     "get(topic_handle, offset, name) -> Record, or the int pl_topic_read "
     "returned when the record is not in a pinned map"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylog._records.Getter",
    .tp_basicsize = sizeof(Getter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("One thread's Topic.get in one call (internal)."),
    .tp_new = getter_new,
    .tp_dealloc = (destructor)getter_dealloc,
    .tp_traverse = (traverseproc)getter_traverse,
    .tp_clear = (inquiry)getter_clear,
    .tp_methods = getter_methods,
};

/* ---- frame ----------------------------------------------------------------- */

/* buf if it is a bytearray of at least n bytes, else a new bytearray of n
 * bytes (never resized in place: a cffi view of it may still be alive). */
static PyObject *room(PyObject *buf, Py_ssize_t n) {
    if (PyByteArray_CheckExact(buf) && PyByteArray_GET_SIZE(buf) >= n) {
        Py_INCREF(buf);
        return buf;
    }
    return PyByteArray_FromStringAndSize(NULL, n > 0 ? n : 1);
}

static PyObject *records_frame(PyObject *self, PyObject *args) {
    PyObject *values, *blob_in, *lens_in;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:frame", &values, &blob_in, &lens_in))
        return NULL;
    if (!PyList_Check(values) && !PyTuple_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "frame takes a list or a tuple");
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_CheckExact(items[i])) Py_RETURN_NONE;
        Py_ssize_t len = PyBytes_GET_SIZE(items[i]);
        if (len > PY_SSIZE_T_MAX - total) return PyErr_NoMemory();
        total += len;
    }
    if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(int64_t))
        return PyErr_NoMemory();
    /* Nothing below runs Python code: the items stay as checked. */
    PyObject *blob = room(blob_in, total);
    if (!blob) return NULL;
    PyObject *lens = room(lens_in, n * (Py_ssize_t)sizeof(int64_t));
    if (!lens) {
        Py_DECREF(blob);
        return NULL;
    }
    char *p = PyByteArray_AS_STRING(blob);
    char *l = PyByteArray_AS_STRING(lens);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = PyBytes_GET_SIZE(items[i]);
        int64_t len64 = (int64_t)len;
        memcpy(p, PyBytes_AS_STRING(items[i]), (size_t)len);
        memcpy(l + i * (Py_ssize_t)sizeof(int64_t), &len64, sizeof len64);
        p += len;
    }
    return Py_BuildValue("(NN)", blob, lens);
}

/* ---- weigh ------------------------------------------------------------------ */

/* len(obj) added to *n; -1 with an exception set on failure. */
static int add_len(PyObject *obj, long long *n) {
    Py_ssize_t len = PyBytes_CheckExact(obj) ? PyBytes_GET_SIZE(obj)
                                             : PyObject_Size(obj);
    if (len < 0) return -1;
    *n += len;
    return 0;
}

/* The weight of one header block: len(name) + len(value) per pair, a None
 * value weighing nothing. */
static int add_headers(PyObject *h, long long *n) {
    PyObject *seq = PySequence_Fast(h, "Record headers must be a sequence");
    if (!seq) return -1;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, j);
        Py_INCREF(pair);
        PyObject *kv = PySequence_Fast(pair, "a header must be a pair");
        int rc = -1;
        if (kv && PySequence_Fast_GET_SIZE(kv) == 2) {
            PyObject *v = PySequence_Fast_GET_ITEM(kv, 1);
            rc = add_len(PySequence_Fast_GET_ITEM(kv, 0), n);
            if (rc == 0 && v != Py_None)
                rc = add_len(v, n);
        } else if (kv) {
            PyErr_SetString(PyExc_TypeError, "a header must be a pair");
        }
        Py_XDECREF(kv);
        Py_DECREF(pair);
        if (rc < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* What records weigh: len() of values and keys, and with headers != 0 of
 * header names and values too. */
static PyObject *weigh_records(PyObject *arg, int headers) {
    PyObject *seq = PySequence_Fast(arg, "weigh() needs a sequence");
    if (!seq) return NULL;
    long long n = 0;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(item, &RecordType)) {
            PyErr_Format(PyExc_TypeError, "weigh() needs Records, not %.100s",
                         Py_TYPE(item)->tp_name);
            Py_DECREF(seq);
            return NULL;
        }
        /* Fields are read-only, but a size of a Python-made field may run
         * code that empties the list: hold the Record meanwhile. */
        Py_INCREF(item);
        Record *r = (Record *)item;
        int rc = add_len(r->value, &n);
        if (rc == 0 && r->key != Py_None)
            rc = add_len(r->key, &n);
        if (rc == 0 && headers && r->headers != Py_None) {
            int full = PyObject_IsTrue(r->headers);
            rc = full < 0 ? -1 : full ? add_headers(r->headers, &n) : 0;
        }
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    return PyLong_FromLongLong(n);
}

/* weigh(records) -> int: what records weigh for a forwarder's budgets and
 * stats (pylog.forward._sink.batch_bytes): keys, values, header names and
 * values. TypeError for an item that is not a Record. */
static PyObject *records_weigh(PyObject *self, PyObject *arg) {
    (void)self;
    return weigh_records(arg, 1);
}

/* weigh_kv(records) -> int: values and keys only, what poll's max_bytes
 * counts. */
static PyObject *records_weigh_kv(PyObject *self, PyObject *arg) {
    (void)self;
    return weigh_records(arg, 0);
}

/* ---- kafka_args -------------------------------------------------------------- */

/* The produce() arguments of one Record, a new 8-tuple: (destination,
 * value as bytes, key, -1, None, None, timestamp, headers as a list or
 * None). dests caches destinations by pylog topic; dest_of(topic) makes a
 * missing one. */
static PyObject *kafka_tuple(Record *r, PyObject *dests, PyObject *dest_of) {
    PyObject *dest = PyDict_GetItemWithError(dests, r->topic);
    if (dest) {
        Py_INCREF(dest);
    } else {
        if (PyErr_Occurred()) return NULL;
        dest = PyObject_CallFunctionObjArgs(dest_of, r->topic, NULL);
        if (!dest || PyDict_SetItem(dests, r->topic, dest) < 0) {
            Py_XDECREF(dest);
            return NULL;
        }
    }
    PyObject *value;
    if (PyBytes_CheckExact(r->value)) {
        value = r->value;
        Py_INCREF(value);
    } else { /* values of 1 KiB and more are memoryviews of a map */
        value = PyBytes_FromObject(r->value);
    }
    PyObject *headers = Py_None;
    int full = r->headers == Py_None ? 0 : PyObject_IsTrue(r->headers);
    if (full > 0)
        headers = PySequence_List(r->headers);
    else if (full == 0)
        Py_INCREF(headers);
    else
        headers = NULL;
    PyObject *t = NULL;
    if (value && headers)
        t = PyTuple_New(8);
    if (!t) {
        Py_DECREF(dest);
        Py_XDECREF(value);
        Py_XDECREF(headers);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, dest);
    PyTuple_SET_ITEM(t, 1, value);
    Py_INCREF(r->key);
    PyTuple_SET_ITEM(t, 2, r->key);
    PyTuple_SET_ITEM(t, 3, PyLong_FromLong(-1)); /* a cached small int */
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(t, 4, Py_None);
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(t, 5, Py_None);
    Py_INCREF(r->timestamp);
    PyTuple_SET_ITEM(t, 6, r->timestamp);
    PyTuple_SET_ITEM(t, 7, headers);
    return t;
}

/* kafka_args(records, dests, dest_of) -> list of produce() argument
 * tuples (KafkaSink._prepare); TypeError for an item that is not a
 * Record. */
static PyObject *records_kafka_args(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *records, *dests, *dest_of;
    if (!PyArg_ParseTuple(args, "OO!O:kafka_args", &records, &PyDict_Type,
                          &dests, &dest_of))
        return NULL;
    PyObject *seq = PySequence_Fast(records, "kafka_args() needs a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (!out) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* dest_of may run code that changes the list: re-check the size */
        if (i >= PySequence_Fast_GET_SIZE(seq)) {
            PyErr_SetString(PyExc_RuntimeError,
                            "kafka_args(): the list changed");
            goto fail;
        }
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(item, &RecordType)) {
            PyErr_Format(PyExc_TypeError,
                         "kafka_args() needs Records, not %.100s",
                         Py_TYPE(item)->tp_name);
            goto fail;
        }
        Py_INCREF(item);
        PyObject *t = kafka_tuple((Record *)item, dests, dest_of);
        Py_DECREF(item);
        if (!t) goto fail;
        PyList_SET_ITEM(out, i, t);
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_DECREF(seq);
    Py_DECREF(out); /* unset items are NULL, which list dealloc skips */
    return NULL;
}

/* ---- module ---------------------------------------------------------------- */

static PyMethodDef records_methods[] = {
    {"decode", records_decode, METH_VARARGS,
     "decode(meta, n, view, topic, zero_copy_min, decode_headers) -> list "
     "of n Records"},
    {"frame", records_frame, METH_VARARGS,
     "frame(values, blob, lens) -> (blob, lens): a list or tuple of bytes "
     "joined into blob and its int64 lengths into lens (bytearrays, reused "
     "when large enough, else new), or None if an item is not bytes"},
    {"weigh", records_weigh, METH_O,
     "weigh(records) -> int: keys, values, header names and values of a "
     "sequence of Records"},
    {"weigh_kv", records_weigh_kv, METH_O,
     "weigh_kv(records) -> int: keys and values of a sequence of Records"},
    {"kafka_args", records_kafka_args, METH_VARARGS,
     "kafka_args(records, dests, dest_of) -> list of produce() argument "
     "tuples"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef records_module = {
    PyModuleDef_HEAD_INIT, "pylog._records",
    "Record objects built and framed in C (see csrc/pyrecords.c).", -1,
    records_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void) {
    if (PyType_Ready(&RecordType) < 0 || PyType_Ready(&GetterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&records_module);
    if (!m) return NULL;
    Py_INCREF(&RecordType);
    if (PyModule_AddObject(m, "Record", (PyObject *)&RecordType) < 0) {
        Py_DECREF(&RecordType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&GetterType);
    if (PyModule_AddObject(m, "Getter", (PyObject *)&GetterType) < 0) {
        Py_DECREF(&GetterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
