/* kpd-client's compiled accelerator (``kpd._accel``): the client-side hot loops of the kpd
 * protocol and the partitioner.
 *
 * Every function here has a pure-Python twin that stays the reference; kpd/accel.py chooses
 * one implementation at import (``KPD_PURE_PYTHON=1`` forces the twins), and the tests run
 * the golden vectors against both. Pure: no I/O, no clock, no global state. Every read of
 * caller-supplied memory is bounds-checked first: a bad length raises ValueError.
 *
 *   murmur2(key)                      Java Utils.murmur2 (kpd/murmur2.py)
 *   scan_plain, plain_lengths         a plain records section validated / its length
 *                                     columns (kpd/protocol/records.py _scan_records)
 *
 * The loops themselves are in kpd_loops.h, which the daemon's accelerator includes too.
 */
#include "kpd_loops.h"

static PyObject *accel_murmur2(PyObject *self, PyObject *arg)
{
    Py_buffer key;
    if (PyObject_GetBuffer(arg, &key, PyBUF_SIMPLE) < 0)
        return NULL;
    int32_t h = kpd_murmur2(key.buf, key.len);
    PyBuffer_Release(&key);
    return PyLong_FromLong(h);
}

/* scan_plain(section, count) -> keyless
 * Validates a plain records section as kpd/protocol/records.py _scan_records does (raises
 * ValueError on any fault; the caller re-runs the pure scan for the exact error) and says
 * whether every key is null. */
static PyObject *accel_scan_plain(PyObject *self, PyObject *args)
{
    Py_buffer s;
    Py_ssize_t count, start;
    if (!PyArg_ParseTuple(args, "y*n", &s, &count))
        return NULL;
    if (kpd_plain_section(&s, count, &start) < 0) {
        PyBuffer_Release(&s);
        return NULL;
    }
    const unsigned char *b = s.buf;
    int keyless = 1;
    for (Py_ssize_t i = 0; i < count && keyless; i++)
        keyless = kpd_be_i32(b + 1 + 4 * i) == -1;
    PyBuffer_Release(&s);
    return PyBool_FromLong(keyless);
}

/* plain_lengths(section, count) -> (key_lens, value_lens, data_start)
 * The length columns of a plain records section as native i32 bytes (memoryview(...).cast("i")
 * reads them as ints; append_packed reads them without an int object per record). */
static PyObject *accel_plain_lengths(PyObject *self, PyObject *args)
{
    Py_buffer s;
    Py_ssize_t count, start;
    if (!PyArg_ParseTuple(args, "y*n", &s, &count))
        return NULL;
    if (kpd_plain_section(&s, count, &start) < 0) {
        PyBuffer_Release(&s);
        return NULL;
    }
    PyObject *keys = PyBytes_FromStringAndSize(NULL, 4 * count);
    PyObject *values = PyBytes_FromStringAndSize(NULL, 4 * count);
    PyObject *result = NULL;
    if (keys != NULL && values != NULL) {
        const unsigned char *b = s.buf;
        int32_t *k = (int32_t *)PyBytes_AS_STRING(keys);
        int32_t *v = (int32_t *)PyBytes_AS_STRING(values);
        for (Py_ssize_t i = 0; i < count; i++) {
            k[i] = kpd_be_i32(b + 1 + 4 * i);
            v[i] = kpd_be_i32(b + 1 + 4 * (count + i));
        }
        result = Py_BuildValue("OOn", keys, values, start);
    }
    Py_XDECREF(keys);
    Py_XDECREF(values);
    PyBuffer_Release(&s);
    return result;
}

/* ---- module --------------------------------------------------------------------------- */

static PyMethodDef accel_methods[] = {
    {"murmur2", accel_murmur2, METH_O, "Java Utils.murmur2 of a bytes-like key (signed int)."},
    {"scan_plain", accel_scan_plain, METH_VARARGS,
     "Validate a plain records section; True if every key is null."},
    {"plain_lengths", accel_plain_lengths, METH_VARARGS,
     "The length columns of a plain records section as native i32 bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT, "kpd._accel", "kpd-client's compiled accelerator.", -1, accel_methods,
};

PyMODINIT_FUNC PyInit__accel(void) { return PyModule_Create(&accel_module); }
