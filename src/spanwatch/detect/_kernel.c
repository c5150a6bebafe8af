/*
 * The detector's per-span filing loops, in C. Each function does exactly what its Python
 * reference in _filing.py does (tests check them against each other); the detector decides
 * everything else. No I/O, no state: the detector stays pure and picklable.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t value;
    Py_ssize_t index;
} Item;

#define DIGIT_BITS 11
#define DIGITS (1 << DIGIT_BITS)

/* Sort by value, stably (items start in index order): a least-significant-digit radix sort
 * of the values less the smallest, so a batch's end times (a few seconds apart, 33 bits of
 * nanoseconds) take three passes. -1 when out of memory. */
static int radix_sort(Item *items, Py_ssize_t n) {
    uint64_t low = UINT64_MAX, high = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i].value < low) low = items[i].value;
        if (items[i].value > high) high = items[i].value;
    }
    Item *spare = PyMem_Malloc((size_t)n * sizeof(Item));
    if (spare == NULL) return -1;
    Item *from = items, *to = spare;
    for (int shift = 0; shift < 64 && ((high - low) >> shift) != 0; shift += DIGIT_BITS) {
        Py_ssize_t starts[DIGITS + 1] = {0};
        for (Py_ssize_t i = 0; i < n; i++)
            starts[(((from[i].value - low) >> shift) & (DIGITS - 1)) + 1]++;
        for (int d = 0; d < DIGITS; d++) starts[d + 1] += starts[d];
        for (Py_ssize_t i = 0; i < n; i++)
            to[starts[((from[i].value - low) >> shift) & (DIGITS - 1)]++] = from[i];
        Item *t = from;
        from = to;
        to = t;
    }
    if (from != items) memcpy(items, from, (size_t)n * sizeof(Item));
    PyMem_Free(spare);
    return 0;
}

/* order(values) -> the indices that sort values, ties in index order; None when a value is
 * not an int in [0, 2**64), which the caller then sorts itself. */
static PyObject *order(PyObject *self, PyObject *values) {
    (void)self;
    if (!PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "order() takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    Item *items = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Item));
    if (items == NULL) return PyErr_NoMemory();
    int sorted = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        uint64_t u = PyLong_CheckExact(v) ? PyLong_AsUnsignedLongLong(v) : (uint64_t)-1;
        if (u == (uint64_t)-1 && (!PyLong_CheckExact(v) || PyErr_Occurred())) {
            PyErr_Clear();
            PyMem_Free(items);
            Py_RETURN_NONE;
        }
        items[i].value = u;
        items[i].index = i;
        if (i && u < items[i - 1].value) sorted = 0;
    }
    if (!sorted && radix_sort(items, n) < 0) {
        PyMem_Free(items);
        return PyErr_NoMemory();
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        PyMem_Free(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *index = PyLong_FromSsize_t(items[i].index);
        if (index == NULL) {
            Py_DECREF(out);
            PyMem_Free(items);
            return NULL;
        }
        PyList_SET_ITEM(out, i, index);
    }
    PyMem_Free(items);
    return out;
}

/* take(column, rows) -> [column[row] for row in rows]
 *
 * The rows are read into a C array first, each held while it is converted: converting one
 * that is not an int runs its __index__, which could change either list. Only then, with no
 * Python code left to run, is the column indexed, its size read once. A rows list that
 * shrinks while it is read gives the rows read so far, as a list iterator would. */
static PyObject *take(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *column, *rows;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &column, &PyList_Type, &rows)) return NULL;
    Py_ssize_t cap = PyList_GET_SIZE(rows), n = 0;
    Py_ssize_t *at = PyMem_Malloc((size_t)(cap ? cap : 1) * sizeof *at);
    if (at == NULL) return PyErr_NoMemory();
    for (; n < cap && n < PyList_GET_SIZE(rows); n++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(rows, n));
        Py_ssize_t row = PyNumber_AsSsize_t(item, PyExc_IndexError);
        Py_DECREF(item);
        if (row == -1 && PyErr_Occurred()) {
            PyMem_Free(at);
            return NULL;
        }
        at[n] = row;
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        PyMem_Free(at);
        return NULL;
    }
    Py_ssize_t size = PyList_GET_SIZE(column);
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t row = at[j] < 0 ? at[j] + size : at[j];
        if (row < 0 || row >= size) {
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            PyMem_Free(at);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, Py_NewRef(PyList_GET_ITEM(column, row)));
    }
    PyMem_Free(at);
    return out;
}

/* group(keys, start, stop) -> {key: [j, ...]} for j in range(start, stop), in order. */
static PyObject *group(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *keys;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "O!nn", &PyList_Type, &keys, &start, &stop)) return NULL;
    if (start < 0 || stop > PyList_GET_SIZE(keys) || start > stop) {
        PyErr_SetString(PyExc_IndexError, "group() range out of the list");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    /* A key's __hash__ and __eq__ are Python code that may change keys, so the size is read
     * again at each step and the key and its rows are held while they are used. */
    for (Py_ssize_t j = start; j < stop && j < PyList_GET_SIZE(keys); j++) {
        PyObject *key = Py_NewRef(PyList_GET_ITEM(keys, j));
        PyObject *rows = PyDict_GetItemWithError(out, key); /* borrowed */
        if (rows != NULL) {
            Py_INCREF(rows);
        } else {
            if (PyErr_Occurred()) goto fail_key;
            rows = PyList_New(0);
            if (rows == NULL) goto fail_key;
            if (PyDict_SetItem(out, key, rows) < 0) {
                Py_DECREF(rows);
                goto fail_key;
            }
        }
        Py_DECREF(key);
        PyObject *index = PyLong_FromSsize_t(j);
        int rc = index == NULL ? -1 : PyList_Append(rows, index);
        Py_XDECREF(index);
        Py_DECREF(rows);
        if (rc < 0) goto fail;
        continue;
    fail_key:
        Py_DECREF(key);
        goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* Whether trace_ids and each column still hold n items. */
static int lists_intact(PyObject *trace_ids, PyObject *columns, Py_ssize_t n) {
    if (PyList_GET_SIZE(trace_ids) != n) return 0;
    for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(columns); c++)
        if (PyList_GET_SIZE(PyTuple_GET_ITEM(columns, c)) != n) return 0;
    return 1;
}

/* keep_traces(traces, trace_ids, columns, max_traces, max_values): for each span i, its
 * values (column[i] of each column) go at the end of traces[trace_ids[i]], a flat list; a new
 * trace goes last, and the first trace goes when there are more than max_traces; a trace
 * takes no more values once it holds max_values. traces is an OrderedDict; trace ids are
 * bytes. */
static PyObject *keep_traces(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *traces, *trace_ids, *columns;
    Py_ssize_t max_traces, max_values;
    if (!PyArg_ParseTuple(args, "O!O!O!nn", &PyDict_Type, &traces, &PyList_Type, &trace_ids,
                          &PyTuple_Type, &columns, &max_traces, &max_values))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(trace_ids), width = PyTuple_GET_SIZE(columns);
    if (width == 0) {
        PyErr_SetString(PyExc_ValueError, "keep_traces() needs columns");
        return NULL;
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyTuple_GET_ITEM(columns, c);
        if (!PyList_Check(column) || PyList_GET_SIZE(column) != n) {
            PyErr_SetString(PyExc_ValueError, "keep_traces() columns must be lists as long as trace_ids");
            return NULL;
        }
    }
    PyObject *popitem = PyUnicode_InternFromString("popitem");
    if (popitem == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Storing into traces (a subclass's __setitem__, popitem), letting go of an evicted
         * trace (a value's __del__) and comparing with a kept key that is not bytes may run
         * Python code that changes the lists: they are checked again before each read. */
        if (!lists_intact(trace_ids, columns, n)) goto changed;
        PyObject *trace_id = PyList_GET_ITEM(trace_ids, i);
        if (!PyBytes_CheckExact(trace_id)) { /* whose hash and == run no Python code */
            PyErr_SetString(PyExc_TypeError, "trace ids must be bytes");
            goto fail;
        }
        Py_INCREF(trace_id);
        /* An OrderedDict keeps its items in its dict: reading them there is reading it. */
        PyObject *kept = PyDict_GetItemWithError(traces, trace_id);
        Py_XINCREF(kept);
        if (kept == NULL && PyErr_Occurred()) {
            Py_DECREF(trace_id);
            goto fail;
        }
        if (!lists_intact(trace_ids, columns, n)) {
            Py_DECREF(trace_id);
            Py_XDECREF(kept);
            goto changed;
        }
        if (kept == NULL) {
            PyObject *values = PyList_New(width);
            if (values == NULL) {
                Py_DECREF(trace_id);
                goto fail;
            }
            for (Py_ssize_t c = 0; c < width; c++) {
                PyObject *v = PyList_GET_ITEM(PyTuple_GET_ITEM(columns, c), i);
                PyList_SET_ITEM(values, c, Py_NewRef(v));
            }
            /* A trace holds ids, numbers, keys and names, none of which can refer back to it:
             * it can never be part of a reference cycle, so the cycle collector need not walk
             * it. Tens of thousands of them, each tens of values long, made most of the
             * collector's work. */
            PyObject_GC_UnTrack(values);
            /* through the mapping protocol, so the OrderedDict keeps its order */
            int rc = PyObject_SetItem(traces, trace_id, values);
            Py_DECREF(values);
            Py_DECREF(trace_id);
            if (rc < 0) goto fail;
            if (PyDict_GET_SIZE(traces) > max_traces) {
                PyObject *gone = PyObject_CallMethodOneArg(traces, popitem, Py_False);
                if (gone == NULL) goto fail;
                Py_DECREF(gone);
            }
        } else {
            Py_DECREF(trace_id);
            if (!PyList_Check(kept)) {
                Py_DECREF(kept);
                PyErr_SetString(PyExc_TypeError, "a kept trace must be a list");
                goto fail;
            }
            /* appending runs no Python code: the columns stay as checked */
            Py_ssize_t held = PyList_GET_SIZE(kept);
            for (Py_ssize_t c = 0; held < max_values && c < width; c++) {
                if (PyList_Append(kept, PyList_GET_ITEM(PyTuple_GET_ITEM(columns, c), i)) < 0) {
                    Py_DECREF(kept);
                    goto fail;
                }
            }
            Py_DECREF(kept);
        }
    }
    Py_DECREF(popitem);
    Py_RETURN_NONE;
changed:
    PyErr_SetString(PyExc_RuntimeError, "keep_traces() lists changed size while filing");
fail:
    Py_DECREF(popitem);
    return NULL;
}

static PyMethodDef methods[] = {
    {"order", order, METH_O,
     "order(values) -> indices sorting the ints, ties in index order; None if not uint64."},
    {"take", take, METH_VARARGS, "take(column, rows) -> [column[row] for row in rows]."},
    {"group", group, METH_VARARGS, "group(keys, start, stop) -> {key: [index, ...]}."},
    {"keep_traces", keep_traces, METH_VARARGS,
     "keep_traces(traces, trace_ids, columns, max_traces, max_values): add spans to traces."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "spanwatch.detect._kernel",
    .m_doc = "The detector's per-span filing loops.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
