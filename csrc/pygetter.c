/*
 * pygetter.c -- pylog._records.Getter: Topic.get in one call (the rest of
 * the module: pyrecords.c).
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
 *
 * Getter.get releases the GIL around pl_topic_read only (as cffi does),
 * which touches no Python object.
 */
#include "pyrecords.h"

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

PyTypeObject GetterType = {
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
