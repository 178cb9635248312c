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
 *   plain_section(keys, values)       a plain records section encoded (encode_section)
 *   group_by_partition(...)           send_bulk's records per partition (keyed_groups)
 *   RecordFuture(frame, index)        send()'s future (kpd/future.py RecordFuturePython)
 *   Appender(entries, ...).add(...)   send()'s hot path, Framer.add (kpd/appender.py AppenderPython)
 *   Appender.send(...)                the sync Producer's send(): lock, checks and add in one call
 *
 * The loops themselves are in kpd_loops.h, which the daemon's accelerator includes too.
 * The only statics are the interned attribute names below: constants made once at import.
 */
#include "kpd_loops.h"

#include <string.h>
#include <structmember.h>

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

/* plain_section(keys, values) -> bytes | None
 * encode_section's plain case (kpd/protocol/records.py: layout 0, no timestamps, no headers):
 * the layout byte, the big-endian i32 key and value length columns (-1: null), then each
 * record's key and value bytes, in one allocation. None when the columns are not lists or an
 * item is not bytes or None (the caller then runs the pure encoder, which takes those). */
static int column_bytes(PyObject *items, Py_ssize_t count, Py_ssize_t *total)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (item == Py_None)
            continue;
        if (!PyBytes_CheckExact(item) || PyBytes_GET_SIZE(item) > INT32_MAX)
            return 0;
        *total += PyBytes_GET_SIZE(item);
    }
    return 1;
}

static unsigned char *put_be_i32(unsigned char *p, int32_t n)
{
    uint32_t u = (uint32_t)n;
    p[0] = (unsigned char)(u >> 24);
    p[1] = (unsigned char)(u >> 16);
    p[2] = (unsigned char)(u >> 8);
    p[3] = (unsigned char)u;
    return p + 4;
}

static PyObject *accel_plain_section(PyObject *self, PyObject *args)
{
    PyObject *keys, *values;
    if (!PyArg_ParseTuple(args, "OO:plain_section", &keys, &values))
        return NULL;
    if (!PyList_CheckExact(keys) || !PyList_CheckExact(values))
        Py_RETURN_NONE;
    Py_ssize_t count = PyList_GET_SIZE(keys);
    if (count == 0 || PyList_GET_SIZE(values) != count) {
        PyErr_Format(PyExc_ValueError, "a records section needs 1+ records, got %zd keys, %zd",
                     count, PyList_GET_SIZE(values));
        return NULL;
    }
    Py_ssize_t data = 0;
    if (!column_bytes(keys, count, &data) || !column_bytes(values, count, &data))
        Py_RETURN_NONE;
    PyObject *section = PyBytes_FromStringAndSize(NULL, 1 + 8 * count + data);
    if (section == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(section);
    *p++ = 0; /* layout 0 */
    PyObject *columns[2] = {keys, values};
    for (int c = 0; c < 2; c++)
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *item = PyList_GET_ITEM(columns[c], i);
            p = put_be_i32(p, item == Py_None ? -1 : (int32_t)PyBytes_GET_SIZE(item));
        }
    for (Py_ssize_t i = 0; i < count; i++)
        for (int c = 0; c < 2; c++) {
            PyObject *item = PyList_GET_ITEM(columns[c], i);
            if (item == Py_None)
                continue;
            Py_ssize_t n = PyBytes_GET_SIZE(item);
            memcpy(p, PyBytes_AS_STRING(item), n);
            p += n;
        }
    return section;
}

/* group_by_partition(keys, values, parts, count) -> (key_lists, value_lists)
 * kpd/grouping.py keyed_groups' loop: record i's key and value appended to the lists of
 * partition parts[i], in the app's order; lists of ``count`` lists each. ValueError when the
 * three lists differ in length or a partition is outside 0..count-1. */
static PyObject *accel_group_by_partition(PyObject *self, PyObject *args)
{
    PyObject *keys, *values, *parts;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "O!O!O!n:group_by_partition", &PyList_Type, &keys,
                          &PyList_Type, &values, &PyList_Type, &parts, &count))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n || PyList_GET_SIZE(parts) != n || count <= 0) {
        PyErr_SetString(PyExc_ValueError, "group_by_partition: lengths differ or no partitions");
        return NULL;
    }
    PyObject *key_lists = PyList_New(count), *value_lists = PyList_New(count);
    if (key_lists == NULL || value_lists == NULL)
        goto fail;
    for (Py_ssize_t p = 0; p < count; p++) {
        PyObject *k = PyList_New(0), *v = PyList_New(0);
        if (k == NULL || v == NULL) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            goto fail;
        }
        PyList_SET_ITEM(key_lists, p, k);
        PyList_SET_ITEM(value_lists, p, v);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t part = PyLong_AsSsize_t(PyList_GET_ITEM(parts, i));
        if (part == -1 && PyErr_Occurred())
            goto fail;
        if (part < 0 || part >= count) {
            PyErr_Format(PyExc_ValueError, "group_by_partition: partition %zd of %zd", part,
                         count);
            goto fail;
        }
        if (PyList_Append(PyList_GET_ITEM(key_lists, part), PyList_GET_ITEM(keys, i)) < 0 ||
            PyList_Append(PyList_GET_ITEM(value_lists, part), PyList_GET_ITEM(values, i)) < 0)
            goto fail;
    }
    PyObject *result = PyTuple_Pack(2, key_lists, value_lists);
    Py_DECREF(key_lists);
    Py_DECREF(value_lists);
    return result;
fail:
    Py_XDECREF(key_lists);
    Py_XDECREF(value_lists);
    return NULL;
}

/* ---- names ------------------------------------------------------------------------- */

/* Interned once at import: the attributes and methods the twins below read by name. */
static PyObject *str_all_delivered, *str_settled, *str_future_result, *str_future_exception,
    *str_future_add_done_callback, *str_future_await, *str_key_partitions, *str_placement,
    *str_open_frames, *str_keys, *str_values, *str_size, *str_per_record, *str_count,
    *str_sticky, *str_sticky_bytes, *str_acquire, *str_release, *str_taking, *str_connected,
    *str_buffered_bytes, *str_wake;

static int intern_names(void)
{
#define INTERN(var, text)                                                                     \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                     \
        return -1;
    INTERN(str_all_delivered, "all_delivered");
    INTERN(str_settled, "settled");
    INTERN(str_future_result, "future_result");
    INTERN(str_future_exception, "future_exception");
    INTERN(str_future_add_done_callback, "future_add_done_callback");
    INTERN(str_future_await, "future_await");
    INTERN(str_key_partitions, "key_partitions");
    INTERN(str_placement, "placement");
    INTERN(str_open_frames, "open_frames");
    INTERN(str_keys, "keys");
    INTERN(str_values, "values");
    INTERN(str_size, "size");
    INTERN(str_per_record, "per_record");
    INTERN(str_count, "count");
    INTERN(str_sticky, "sticky");
    INTERN(str_sticky_bytes, "sticky_bytes");
    INTERN(str_acquire, "acquire");
    INTERN(str_release, "release");
    INTERN(str_taking, "taking");
    INTERN(str_connected, "connected");
    INTERN(str_buffered_bytes, "buffered_bytes");
    INTERN(str_wake, "wake");
#undef INTERN
    return 0;
}

/* ---- RecordFuture ---------------------------------------------------------------------- */

/* send()'s future: (frame, index), every method one call of the frame's future_* methods
 * (kpd/future.py OutcomeSource) after the same all_delivered shortcut, exactly as
 * RecordFuturePython does. No Py_TPFLAGS_HAVE_GC:
 * the cycle collector neither tracks nor counts it (see kpd/future.py on the one cycle it
 * cannot see: a pending done-callback). */
typedef struct {
    PyObject_HEAD
    PyObject *frame;
    Py_ssize_t index;
} RecordFuture;

static PyTypeObject RecordFutureType;

static PyObject *future_make(PyObject *frame, Py_ssize_t index)
{
    RecordFuture *f = PyObject_New(RecordFuture, &RecordFutureType);
    if (f == NULL)
        return NULL;
    Py_INCREF(frame);
    f->frame = frame;
    f->index = index;
    return (PyObject *)f;
}

static PyObject *future_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"frame", "index", NULL};
    PyObject *frame;
    Py_ssize_t index;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On:RecordFuture", kwlist, &frame, &index))
        return NULL;
    return future_make(frame, index);
}

static void future_dealloc(RecordFuture *f)
{
    Py_DECREF(f->frame);
    PyObject_Free(f);
}

/* frame.<name>(index, *extra) */
static PyObject *future_call(RecordFuture *f, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *index = PyLong_FromSsize_t(f->index);
    if (index == NULL)
        return NULL;
    /* argv[0] is spare: PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee borrow args[-1]. */
    PyObject *argv[5] = {NULL, f->frame, index, a, b};
    size_t nargs = 2 + (a != NULL) + (b != NULL);
    PyObject *result =
        PyObject_VectorcallMethod(name, argv + 1, nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(index);
    return result;
}

/* frame.all_delivered is True: every record settled, none failed (OutcomeSource). 1, 0, or
 * -1 with an error set. */
static int future_all_delivered(RecordFuture *f)
{
    PyObject *flag = PyObject_GetAttr(f->frame, str_all_delivered);
    if (flag == NULL)
        return -1;
    int yes = flag == Py_True;
    Py_DECREF(flag);
    return yes;
}

static PyObject *future_done(RecordFuture *f, PyObject *unused)
{
    int all = future_all_delivered(f);
    if (all != 0)
        return all < 0 ? NULL : Py_NewRef(Py_True);
    return future_call(f, str_settled, NULL, NULL);
}

static PyObject *future_false(RecordFuture *f, PyObject *unused) { Py_RETURN_FALSE; }

static PyObject *future_timeout_call(RecordFuture *f, PyObject *args, PyObject *kwargs,
                                     PyObject *name, const char *format)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, kwlist, &timeout))
        return NULL;
    return future_call(f, name, timeout, NULL);
}

static PyObject *future_result(RecordFuture *f, PyObject *args, PyObject *kwargs)
{
    return future_timeout_call(f, args, kwargs, str_future_result, "|O:result");
}

static PyObject *future_exception(RecordFuture *f, PyObject *args, PyObject *kwargs)
{
    int all = future_all_delivered(f);
    if (all != 0)
        return all < 0 ? NULL : Py_NewRef(Py_None);
    return future_timeout_call(f, args, kwargs, str_future_exception, "|O:exception");
}

static PyObject *future_add_done_callback(RecordFuture *f, PyObject *fn)
{
    return future_call(f, str_future_add_done_callback, fn, (PyObject *)f);
}

static PyObject *future_await(RecordFuture *f)
{
    return future_call(f, str_future_await, NULL, NULL);
}

static PyObject *future_repr(RecordFuture *f)
{
    PyObject *done = future_call(f, str_settled, NULL, NULL);
    if (done == NULL)
        return NULL;
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done < 0)
        return NULL;
    return PyUnicode_FromString(is_done ? "<RecordFuture done>" : "<RecordFuture pending>");
}

static PyMethodDef future_methods[] = {
    {"done", (PyCFunction)future_done, METH_NOARGS, "True once the record has its outcome."},
    {"cancelled", (PyCFunction)future_false, METH_NOARGS, "Always False."},
    {"cancel", (PyCFunction)future_false, METH_NOARGS,
     "Always False: a queued record cannot be taken back."},
    {"result", (PyCFunction)(void (*)(void))future_result, METH_VARARGS | METH_KEYWORDS,
     "The record's RecordMetadata; raises its DeliveryError, or TimeoutError."},
    {"exception", (PyCFunction)(void (*)(void))future_exception, METH_VARARGS | METH_KEYWORDS,
     "The record's DeliveryError, None if it was delivered; TimeoutError if pending."},
    {"add_done_callback", (PyCFunction)future_add_done_callback, METH_O,
     "Call fn(future) once the record has its outcome."},
    {NULL, NULL, 0, NULL},
};

/* Read-only, as RecordFuturePython's slots: where the future reads its outcome. */
static PyMemberDef future_members[] = {
    {"_frame", T_OBJECT_EX, offsetof(RecordFuture, frame), READONLY, NULL},
    {"_index", T_PYSSIZET, offsetof(RecordFuture, index), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyAsyncMethods future_async = {(unaryfunc)future_await, NULL, NULL, NULL};

static PyTypeObject RecordFutureType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kpd._accel.RecordFuture",
    .tp_doc = "The future of one record: RecordMetadata, or DeliveryError as its exception.",
    .tp_basicsize = sizeof(RecordFuture),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = future_new,
    .tp_dealloc = (destructor)future_dealloc,
    .tp_repr = (reprfunc)future_repr,
    .tp_as_async = &future_async,
    .tp_methods = future_methods,
    .tp_members = future_members,
};

/* ---- Appender ------------------------------------------------------------------------- */

/* send()'s hot path, AppenderPython's twin (kpd/appender.py is the specification: same
 * decisions, same frames, same memo). add() appends a plain record and returns its future,
 * or hands the call to ``general`` unchanged. */
typedef struct {
    PyObject_HEAD
    PyObject *entries; /* TopicTable.entries: topic -> TopicEntry */
    PyObject *general; /* the framer's path for every record not taken here */
    PyObject *opener;  /* opener(entry, partition) -> a new open frame; NULL: none */
    Py_ssize_t batch_limit, sticky_limit, memo_limit;
    /* send()'s gate (set by gate(), NULL before): the Producer's lock's bound acquire and
     * release, its session and link (read under the lock), its general send path. */
    PyObject *acquire, *release, *session, *link, *send_general, *woke;
    Py_ssize_t buffer_limit;
} Appender;

static int appender_init(Appender *a, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"entries", "batch_limit", "sticky_limit", "memo_limit", "general",
                             "opener", NULL};
    PyObject *entries, *general, *opener = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nnnO|O:Appender", kwlist, &PyDict_Type,
                                     &entries, &a->batch_limit, &a->sticky_limit,
                                     &a->memo_limit, &general, &opener))
        return -1;
    Py_XSETREF(a->entries, Py_NewRef(entries));
    Py_XSETREF(a->general, Py_NewRef(general));
    Py_XSETREF(a->opener, opener == Py_None ? NULL : Py_NewRef(opener));
    return 0;
}

static int appender_traverse(Appender *a, visitproc visit, void *arg)
{
    Py_VISIT(a->entries);
    Py_VISIT(a->general);
    Py_VISIT(a->opener);
    Py_VISIT(a->woke);
    Py_VISIT(a->acquire);
    Py_VISIT(a->release);
    Py_VISIT(a->session);
    Py_VISIT(a->link);
    Py_VISIT(a->send_general);
    return 0;
}

static int appender_clear(Appender *a)
{
    Py_CLEAR(a->entries);
    Py_CLEAR(a->general);
    Py_CLEAR(a->opener);
    Py_CLEAR(a->woke);
    Py_CLEAR(a->acquire);
    Py_CLEAR(a->release);
    Py_CLEAR(a->session);
    Py_CLEAR(a->link);
    Py_CLEAR(a->send_general);
    return 0;
}

static void appender_dealloc(Appender *a)
{
    PyObject_GC_UnTrack(a);
    appender_clear(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* An int attribute as Py_ssize_t; -1 with an error set on failure. */
static Py_ssize_t ssize_attr(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    Py_ssize_t n = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return n;
}

static int set_ssize_attr(PyObject *obj, PyObject *name, Py_ssize_t n)
{
    PyObject *v = PyLong_FromSsize_t(n);
    if (v == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

/* The partition of a keyed record without an explicit one: the memo's, else
 * toPositive(murmur2(key)) % count noted in the memo (TopicPlacement.for_key).
 * New reference; Py_None (new ref) when the count is unknown; NULL on error. */
static PyObject *key_partition(Appender *a, PyObject *entry, PyObject *placement, PyObject *key)
{
    PyObject *known = PyObject_GetAttr(entry, str_key_partitions);
    if (known == NULL)
        return NULL;
    PyObject *partition = PyDict_GetItemWithError(known, key);
    Py_DECREF(known);
    if (partition != NULL) {
        Py_INCREF(partition);
        return partition;
    }
    if (PyErr_Occurred())
        return NULL;
    if (placement == Py_None)
        Py_RETURN_NONE;
    Py_ssize_t count = ssize_attr(placement, str_count);
    if (count <= 0)
        return count < 0 && PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    int32_t hashed = kpd_murmur2((const unsigned char *)PyBytes_AS_STRING(key),
                                 PyBytes_GET_SIZE(key));
    partition = PyLong_FromSsize_t((Py_ssize_t)(hashed & 0x7fffffff) % count);
    PyObject *memo = partition ? PyObject_GetAttr(placement, str_keys) : NULL;
    if (memo == NULL || !PyDict_Check(memo)) {
        if (memo != NULL)
            PyErr_SetString(PyExc_TypeError, "TopicPlacement.keys must be a dict");
        Py_XDECREF(memo);
        Py_XDECREF(partition);
        return NULL;
    }
    if (PyDict_GET_SIZE(memo) >= a->memo_limit)
        PyDict_Clear(memo);
    int rc = PyDict_SetItem(memo, key, partition);
    Py_DECREF(memo);
    if (rc < 0) {
        Py_DECREF(partition);
        return NULL;
    }
    return partition;
}

/* A plain record's future, or None (a new reference) having changed nothing: not plain. */
static PyObject *appender_plain(Appender *a, PyObject *topic, PyObject *key, PyObject *value,
                                PyObject *partition)
{
    if ((key != Py_None && !PyBytes_CheckExact(key)) ||
        (value != Py_None && !PyBytes_CheckExact(value)) || a->entries == NULL)
        Py_RETURN_NONE;
    PyObject *entry = PyDict_GetItemWithError(a->entries, topic); /* borrowed */
    if (entry == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(entry);
    Py_ssize_t data = (key == Py_None ? 0 : PyBytes_GET_SIZE(key)) +
                      (value == Py_None ? 0 : PyBytes_GET_SIZE(value));
    PyObject *result = NULL, *placement = NULL, *frames = NULL, *frame = NULL;
    PyObject *keys = NULL, *values = NULL;
    int sticky = 0;
    placement = PyObject_GetAttr(entry, str_placement);
    if (placement == NULL)
        goto done;
    if (partition != Py_None) {
        if (!PyLong_CheckExact(partition) || _PyLong_Sign(partition) < 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        Py_INCREF(partition);
    } else if (key != Py_None) {
        partition = key_partition(a, entry, placement, key);
        if (partition == NULL)
            goto done;
        if (partition == Py_None) {
            result = partition; /* the count is unknown: the general path waits for it */
            goto done;
        }
    } else if (placement == Py_None) {
        partition = PyLong_FromLong(-1); /* kpd keeps a keyless frame on one partition */
        if (partition == NULL)
            goto done;
    } else {
        Py_ssize_t count = ssize_attr(placement, str_count);
        Py_ssize_t run = count < 0 ? -1 : ssize_attr(placement, str_sticky_bytes);
        if (run < 0 && PyErr_Occurred())
            goto done;
        partition = PyObject_GetAttr(placement, str_sticky);
        if (partition == NULL)
            goto done;
        Py_ssize_t current = PyLong_AsSsize_t(partition);
        if (current == -1 && PyErr_Occurred()) {
            Py_CLEAR(partition);
            goto done;
        }
        if (current < 0 || current >= count || run >= a->sticky_limit) {
            Py_CLEAR(partition); /* the run moves: Partitioner.sticky picks the next one */
            result = Py_NewRef(Py_None);
            goto done;
        }
        sticky = 1;
    }
    frames = PyObject_GetAttr(entry, str_open_frames);
    if (frames == NULL)
        goto done_partition;
    frame = PyDict_GetItemWithError(frames, partition);
    if (frame != NULL) {
        Py_INCREF(frame);
    } else if (PyErr_Occurred()) {
        goto done_partition;
    } else if (a->opener == NULL) {
        result = Py_NewRef(Py_None);
        goto done_partition;
    } else {
        PyObject *open_args[2] = {entry, partition};
        frame = PyObject_Vectorcall(a->opener, open_args, 2, NULL); /* Framer._open */
        if (frame == NULL)
            goto done_partition;
    }
    Py_ssize_t size = ssize_attr(frame, str_size);
    Py_ssize_t per_record = size < 0 ? -1 : ssize_attr(frame, str_per_record);
    if (per_record < 0 && PyErr_Occurred())
        goto done_partition;
    size += per_record + data;
    if (size >= a->batch_limit) {
        result = Py_NewRef(Py_None);
        goto done_partition;
    }
    keys = PyObject_GetAttr(frame, str_keys);
    values = keys ? PyObject_GetAttr(frame, str_values) : NULL;
    if (values == NULL)
        goto done_partition;
    if (!PyList_CheckExact(keys) || !PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "an open frame's keys and values must be lists");
        goto done_partition;
    }
    if (sticky) {
        Py_ssize_t run = ssize_attr(placement, str_sticky_bytes);
        if ((run < 0 && PyErr_Occurred()) ||
            set_ssize_attr(placement, str_sticky_bytes, run + data) < 0)
            goto done_partition;
    }
    /* Nothing below fails halfway but by running out of memory. */
    PyObject *future = future_make(frame, PyList_GET_SIZE(keys));
    if (future == NULL)
        goto done_partition;
    if (PyList_Append(keys, key) < 0 || PyList_Append(values, value) < 0 ||
        set_ssize_attr(frame, str_size, size) < 0) {
        Py_DECREF(future);
        goto done_partition;
    }
    result = future;
done_partition:
    Py_DECREF(partition);
done:
    Py_XDECREF(keys);
    Py_XDECREF(values);
    Py_XDECREF(frame);
    Py_XDECREF(frames);
    Py_XDECREF(placement);
    Py_DECREF(entry);
    return result;
}

/* The six arguments of add() and send() into ``full`` (which holds the defaults, NULL for a
 * required one, when called): positional, then by keyword. ``needed``: how many leading
 * arguments are required. 0, or -1 with a TypeError naming ``fname`` set. */
static int parse_six(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     const char *const names[6], Py_ssize_t needed, const char *fname,
                     PyObject *full[6])
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs > 6) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 6 arguments (%zd given)", fname,
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        full[i] = args[i];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int i = 0; i < 6 && slot < 0; i++)
            if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
                slot = i;
        if (slot < 0 || slot < nargs) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected or repeated argument %R",
                         fname, name);
            return -1;
        }
        full[slot] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < needed; i++)
        if (full[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() needs its first %zd arguments", fname, needed);
            return -1;
        }
    return 0;
}

/* `not headers` when there is no timestamp, as AppenderPython asks: 1, 0, or -1 on error. */
static int plain_extras(PyObject *timestamp, PyObject *headers)
{
    if (timestamp != Py_None)
        return 0;
    return headers == Py_None ? 1 : PyObject_Not(headers);
}

/* add(topic, key, value, partition=None, timestamp=None, headers=None) -> RecordFuture */
static const char *const add_names[6] = {"topic",     "key",       "value",
                                         "partition", "timestamp", "headers"};

static PyObject *appender_add(Appender *a, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *full[6] = {NULL, NULL, NULL, Py_None, Py_None, Py_None};
    if (parse_six(args, nargs, kwnames, add_names, 3, "add", full) < 0)
        return NULL;
    int plain = plain_extras(full[4], full[5]);
    if (plain < 0)
        return NULL;
    if (plain) {
        PyObject *future = appender_plain(a, full[0], full[1], full[2], full[3]);
        if (future != Py_None)
            return future; /* the future, or NULL with the error set */
        Py_DECREF(future);
    }
    if (a->general == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Appender not initialised");
        return NULL;
    }
    return PyObject_Vectorcall(a->general, full, 6, NULL);
}

/* gate(lock, session, link, buffer_limit, general): see AppenderPython.gate */
static PyObject *appender_gate(Appender *a, PyObject *args)
{
    PyObject *lock, *session, *link, *general, *woke;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOOnOO:gate", &lock, &session, &link, &limit, &general,
                          &woke))
        return NULL;
    PyObject *acquire = PyObject_GetAttr(lock, str_acquire);
    PyObject *release = acquire ? PyObject_GetAttr(lock, str_release) : NULL;
    if (release == NULL) {
        Py_XDECREF(acquire);
        return NULL;
    }
    Py_XSETREF(a->acquire, acquire);
    Py_XSETREF(a->release, release);
    Py_XSETREF(a->session, Py_NewRef(session));
    Py_XSETREF(a->link, Py_NewRef(link));
    Py_XSETREF(a->send_general, Py_NewRef(general));
    Py_XSETREF(a->woke, Py_NewRef(woke));
    a->buffer_limit = limit;
    Py_RETURN_NONE;
}

/* obj.<name> is True: 1, 0, or -1 with an error set. */
static int attr_is_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int yes = v == Py_True;
    Py_DECREF(v);
    return yes;
}

/* Under the lock: what Producer.send checks before it adds (the session takes records, the
 * connection is up, the buffer is within its bound). 1, 0, or -1 with an error set. */
static int gate_open(Appender *a)
{
    int yes = attr_is_true(a->session, str_taking);
    if (yes == 1)
        yes = attr_is_true(a->link, str_connected);
    if (yes != 1)
        return yes;
    Py_ssize_t buffered = ssize_attr(a->session, str_buffered_bytes);
    if (buffered == -1 && PyErr_Occurred())
        return -1;
    return buffered <= a->buffer_limit;
}

/* send(topic, value, key=None, partition=None, timestamp_ms=None, headers=None) */
static const char *const send_names[6] = {"topic",     "value",        "key",
                                          "partition", "timestamp_ms", "headers"};

static PyObject *appender_send(Appender *a, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    PyObject *full[6] = {NULL, NULL, Py_None, Py_None, Py_None, Py_None};
    if (parse_six(args, nargs, kwnames, send_names, 2, "send", full) < 0)
        return NULL;
    if (a->send_general == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Appender.send before gate()");
        return NULL;
    }
    int plain = plain_extras(full[4], full[5]);
    if (plain < 0)
        return NULL;
    if (plain) {
        PyObject *no = Py_False;
        PyObject *got = PyObject_Vectorcall(a->acquire, &no, 1, NULL);
        if (got == NULL)
            return NULL;
        int locked = got == Py_True;
        Py_DECREF(got);
        if (locked) {
            PyObject *future = NULL;
            int open = gate_open(a);
            if (open == 1) {
                future = appender_plain(a, full[0], full[2], full[1], full[3]);
                /* A frame opened and raised the session's wake: the Producer's follow-up
                 * (write it now, or ring the I/O thread), still under the lock. */
                int wake = future != NULL && future != Py_None
                               ? attr_is_true(a->session, str_wake)
                               : 0;
                PyObject *followed = wake == 1 ? PyObject_Vectorcall(a->woke, NULL, 0, NULL)
                                               : NULL;
                if (wake < 0 || (wake == 1 && followed == NULL))
                    Py_CLEAR(future);
                Py_XDECREF(followed);
            } else if (open == 0)
                future = Py_NewRef(Py_None);
            /* Released whatever happened; an error of the release wins (it is worse). */
            PyObject *released = PyObject_Vectorcall(a->release, NULL, 0, NULL);
            if (released == NULL) {
                Py_XDECREF(future);
                return NULL;
            }
            Py_DECREF(released);
            if (future != Py_None)
                return future; /* the future, or NULL with the error set */
            Py_DECREF(future);
        }
    }
    return PyObject_Vectorcall(a->send_general, full, 6, NULL);
}

static PyObject *appender_get_batch_limit(Appender *a, void *closure)
{
    return PyLong_FromSsize_t(a->batch_limit);
}

static int appender_set_batch_limit(Appender *a, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "batch_limit cannot be deleted");
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(value);
    if (n == -1 && PyErr_Occurred())
        return -1;
    a->batch_limit = n;
    return 0;
}

static PyGetSetDef appender_getset[] = {
    {"batch_limit", (getter)appender_get_batch_limit, (setter)appender_set_batch_limit,
     "A frame is sealed at this size.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef appender_methods[] = {
    {"add", (PyCFunction)(void (*)(void))appender_add, METH_FASTCALL | METH_KEYWORDS,
     "add(topic, key, value, partition=None, timestamp=None, headers=None): the record's "
     "RecordFuture, appended here or returned by general(...)."},
    {"gate", (PyCFunction)appender_gate, METH_VARARGS,
     "gate(lock, session, link, buffer_limit, general, woke): make send() usable."},
    {"send", (PyCFunction)(void (*)(void))appender_send, METH_FASTCALL | METH_KEYWORDS,
     "send(topic, value, key=None, partition=None, timestamp_ms=None, headers=None): the "
     "sync Producer's send(), under its lock, or its general path."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kpd._accel.Appender",
    .tp_doc = "send()'s hot path (kpd/appender.py AppenderPython is its specification).",
    .tp_basicsize = sizeof(Appender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)appender_init,
    .tp_traverse = (traverseproc)appender_traverse,
    .tp_clear = (inquiry)appender_clear,
    .tp_dealloc = (destructor)appender_dealloc,
    .tp_methods = appender_methods,
    .tp_getset = appender_getset,
};

/* ---- module --------------------------------------------------------------------------- */

static PyMethodDef accel_methods[] = {
    {"murmur2", accel_murmur2, METH_O, "Java Utils.murmur2 of a bytes-like key (signed int)."},
    {"scan_plain", accel_scan_plain, METH_VARARGS,
     "Validate a plain records section; True if every key is null."},
    {"plain_lengths", accel_plain_lengths, METH_VARARGS,
     "The length columns of a plain records section as native i32 bytes."},
    {"group_by_partition", accel_group_by_partition, METH_VARARGS,
     "Keys and values grouped per partition, in order: (key_lists, value_lists)."},
    {"plain_section", accel_plain_section, METH_VARARGS,
     "A plain records section (layout 0) of bytes-or-None keys and values; None for "
     "other item types."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT, "kpd._accel", "kpd-client's compiled accelerator.", -1, accel_methods,
};

PyMODINIT_FUNC PyInit__accel(void)
{
    if (intern_names() < 0 || PyType_Ready(&RecordFutureType) < 0 ||
        PyType_Ready(&AppenderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&accel_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "RecordFuture", (PyObject *)&RecordFutureType) < 0 ||
        PyModule_AddObjectRef(module, "Appender", (PyObject *)&AppenderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
