/*
 * pyrecords.h -- what the parts of pylog._records share: the Record
 * object's layout and type, decode_one, and the functions and types the
 * module (pyrecords.c) lists.
 */
#ifndef PYLOG_PYRECORDS_H
#define PYLOG_PYRECORDS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define META 8 /* int64s per record in decode's metadata (PL_META) */

typedef struct {
    PyObject_HEAD
    PyObject *offset;
    PyObject *timestamp;
    PyObject *key;
    PyObject *value;
    PyObject *headers;
    PyObject *topic;
} Record;

extern PyTypeObject RecordType; /* pyrecords.c */
extern PyTypeObject GetterType; /* pygetter.c */

/* pyrecords.c: the Record of one record's metadata (META int64s at m) in
 * the map behind view/vb; values of zc bytes and more are slices of view. */
PyObject *decode_one(const int64_t *m, const Py_buffer *vb, PyObject *view,
                     PyObject *topic, int64_t zc, PyObject *decode_headers,
                     PyObject *empty);

/* pysinks.c */
PyObject *records_weigh(PyObject *self, PyObject *arg);
PyObject *records_weigh_kv(PyObject *self, PyObject *arg);
PyObject *records_kafka_args(PyObject *self, PyObject *args);

#endif
