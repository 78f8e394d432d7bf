/*
 * pyrecords.c -- pylog._records: the Record type and the two loops that
 * move many records across the Python/C line in one call. The module's
 * other parts: pygetter.c (Topic.get in one call), pysinks.c (what the
 * forwarders' sinks and polls compute per record); pyrecords.h is what
 * they share.
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
 * decode and frame hold the GIL throughout and call nothing that could run
 * Python code between reading a sequence's items and using them, so items
 * cannot change or vanish underneath them.
 */#include "pyrecords.h"

/* ---- Record -------------------------------------------------------------- */

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

PyTypeObject RecordType = {
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

PyObject *decode_one(const int64_t *m, const Py_buffer *vb,
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
