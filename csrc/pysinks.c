/*
 * pysinks.c -- per-record work of the forwarders' sinks and polls, in C
 * (part of pylog._records; the rest of the module: pyrecords.c).
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
 * Both hold the GIL throughout.
 */
#include "pyrecords.h"

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
PyObject *records_weigh(PyObject *self, PyObject *arg) {
    (void)self;
    return weigh_records(arg, 1);
}

/* weigh_kv(records) -> int: values and keys only, what poll's max_bytes
 * counts. */
PyObject *records_weigh_kv(PyObject *self, PyObject *arg) {
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
PyObject *records_kafka_args(PyObject *self, PyObject *args) {
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
