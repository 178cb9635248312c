/* kpd's compiled accelerator: the per-record loops that stay hot after the design removed
 * what it could, and the ring index accesses that need real memory ordering.
 *
 * Every function here has a pure-Python twin that stays the reference (named in each
 * comment); daemon/accel/__init__.py chooses one implementation at import, and the tests run
 * the golden vectors against both. Pure: no I/O, no clock, no global state, no allocation
 * beyond the Python objects returned. Every read of caller-supplied memory is bounds-checked
 * first: a bad length raises ValueError, never reads past a buffer.
 *
 *   append_packed(...)                RecordBatch v2 records from packed key/value columns
 *                                     (daemon/kafka/records.py append_packed_python)
 *   append_stamped(...)               the same with a timestamp per record
 *                                     (daemon/kafka/records.py append_stamped_python)
 *   stamped_lengths(section, count)   a records section's timestamp and length columns,
 *                                     checked (kpd/protocol/records.py stamped_columns)
 *   partition_keys(...)               murmur2 partition per record of a records section
 *                                     (daemon/ingest/routing.py, pure loop)
 *   gather_records(...)               a records section of chosen records, plus their
 *                                     sequence offsets (daemon/ingest/routing.py)
 *   produce_head(payload)             a PRODUCE payload's head with plain records, checked
 *                                     (kpd/protocol/records.py decode_produce_header)
 *   kafka_section(...)                a Kafka batch's records as a kpd records section, for
 *                                     the Kafka listener (daemon/kafka/sections.py)
 *   SharedWords(buffer)               u64 words with seq_cst atomic loads and stores, for the
 *                                     rings' shared indices (daemon/ring/region.py)
 *
 * murmur2 and the records-section checks are kpd-client's (clients/python/kpd/_accel.c): the
 * loops this file shares with it are in clients/python/kpd/kpd_loops.h, included, never copied.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "kpd_loops.h" /* kpd_murmur2, kpd_be_i32, kpd_plain_section: clients/python/kpd/ */

/* ---- varints (Kafka's zigzag varint / varlong, protocol "Record") -------------------- */

static inline uint64_t zigzag64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline Py_ssize_t varint_size(uint64_t u)
{
    Py_ssize_t n = 1;
    while (u >= 0x80) {
        u >>= 7;
        n++;
    }
    return n;
}

static inline char *put_varint(char *out, uint64_t u)
{
    while (u >= 0x80) {
        *out++ = (char)((u & 0x7f) | 0x80);
        u >>= 7;
    }
    *out++ = (char)u;
    return out;
}

static inline void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* partition_keys(section, count, num_partitions, null_partition) -> bytes
 * One partition per record as a u32 column in native order (array("I") reads it): Java's
 * toPositive(murmur2(key)) % num_partitions for keyed records, ``null_partition`` for null
 * keys. The pure twin is EntryPlanner's per-record loop in daemon/ingest/routing.py. */
static PyObject *accel_partition_keys(PyObject *self, PyObject *args)
{
    Py_buffer s;
    Py_ssize_t count, parts, null_partition, start;
    if (!PyArg_ParseTuple(args, "y*nnn", &s, &count, &parts, &null_partition))
        return NULL;
    if (parts <= 0 || parts > 0x7fffffff || null_partition < 0 || null_partition >= parts) {
        PyBuffer_Release(&s);
        PyErr_SetString(PyExc_ValueError, "partition_keys: bad partition count or null partition");
        return NULL;
    }
    if (kpd_plain_section(&s, count, &start) < 0) {
        PyBuffer_Release(&s);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * 4);
    if (out == NULL) {
        PyBuffer_Release(&s);
        return NULL;
    }
    uint32_t *column = (uint32_t *)PyBytes_AS_STRING(out);
    const unsigned char *b = s.buf;
    Py_ssize_t pos = start;
    for (Py_ssize_t i = 0; i < count; i++) {
        int32_t klen = kpd_be_i32(b + 1 + 4 * i), vlen = kpd_be_i32(b + 1 + 4 * (count + i));
        if (klen < 0) {
            column[i] = (uint32_t)null_partition;
        } else {
            uint32_t h = (uint32_t)kpd_murmur2(b + pos, klen) & 0x7fffffffu;
            column[i] = h % (uint32_t)parts;
            pos += klen;
        }
        if (vlen > 0)
            pos += vlen;
    }
    PyBuffer_Release(&s);
    return out;
}

/* gather_records(section, count, partitions, wanted) -> (section, seq_offsets, n)
 * The plain records section of the records whose entry in ``partitions`` (a native u32
 * column, one per record) equals ``wanted``, in order, and their indices in the frame as a
 * big-endian u32 column (the ring entry's sequence offsets). One pass over the columns. */
static PyObject *accel_gather_records(PyObject *self, PyObject *args)
{
    Py_buffer s, p;
    Py_ssize_t count, start;
    unsigned long wanted;
    PyObject *section = NULL, *offsets = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*ny*k", &s, &count, &p, &wanted))
        return NULL;
    if (kpd_plain_section(&s, count, &start) < 0)
        goto done;
    if (p.len != count * 4) {
        PyErr_SetString(PyExc_ValueError, "gather_records: one u32 partition per record");
        goto done;
    }
    const unsigned char *b = s.buf;
    const uint32_t *parts = p.buf;
    Py_ssize_t n = 0, data = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (parts[i] != wanted)
            continue;
        int32_t klen = kpd_be_i32(b + 1 + 4 * i), vlen = kpd_be_i32(b + 1 + 4 * (count + i));
        n++;
        data += (klen > 0 ? klen : 0) + (vlen > 0 ? vlen : 0);
    }
    section = PyBytes_FromStringAndSize(NULL, 1 + 8 * n + data);
    offsets = PyBytes_FromStringAndSize(NULL, 4 * n);
    if (section == NULL || offsets == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(section);
    unsigned char *seqs = (unsigned char *)PyBytes_AS_STRING(offsets);
    unsigned char *out_data = out + 1 + 8 * n;
    out[0] = 0;
    Py_ssize_t pos = start, k = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        int32_t klen = kpd_be_i32(b + 1 + 4 * i), vlen = kpd_be_i32(b + 1 + 4 * (count + i));
        Py_ssize_t size = (klen > 0 ? klen : 0) + (vlen > 0 ? vlen : 0);
        if (parts[i] == wanted) {
            memcpy(out + 1 + 4 * k, b + 1 + 4 * i, 4);
            memcpy(out + 1 + 4 * (n + k), b + 1 + 4 * (count + i), 4);
            put_be32(seqs + 4 * k, (uint32_t)i);
            memcpy(out_data, b + pos, size);
            out_data += size;
            k++;
        }
        pos += size;
    }
    result = Py_BuildValue("OOn", section, offsets, n);
done:
    Py_XDECREF(section);
    Py_XDECREF(offsets);
    PyBuffer_Release(&s);
    PyBuffer_Release(&p);
    return result;
}

/* ---- RecordBatch v2 records (Kafka implementation.html "Record") ---------------------- */

/* A column of ints: a buffer of native i32 (memoryview cast "i", array("i")) or, for
 * timestamps, of native i64 (cast "q"), read in place; or any sequence of ints. */
typedef struct {
    Py_buffer view; /* when ints or longs != NULL */
    const int32_t *ints;
    const int64_t *longs;
    PyObject *seq; /* PySequence_Fast otherwise */
    Py_ssize_t len;
} Column;

static int format_is(const char *f, char code)
{
    return f != NULL && ((f[0] == code && f[1] == 0) ||
                         ((f[0] == '@' || f[0] == '=') && f[1] == code && f[2] == 0));
}

static int column_open(Column *c, PyObject *obj)
{
    c->ints = NULL;
    c->longs = NULL;
    c->seq = NULL;
    if (PyObject_CheckBuffer(obj) && PyObject_GetBuffer(obj, &c->view, PyBUF_FORMAT) == 0) {
        const char *f = c->view.format;
        if (c->view.itemsize == 4 && format_is(f, 'i')) {
            c->ints = c->view.buf;
            c->len = c->view.len / 4;
            return 0;
        }
        if (c->view.itemsize == 8 && (format_is(f, 'q') || format_is(f, 'l'))) {
            c->longs = c->view.buf;
            c->len = c->view.len / 8;
            return 0;
        }
        PyBuffer_Release(&c->view);
    }
    PyErr_Clear();
    c->seq = PySequence_Fast(obj, "columns must be sequences of ints or i32/i64 buffers");
    if (c->seq == NULL)
        return -1;
    c->len = PySequence_Fast_GET_SIZE(c->seq);
    return 0;
}

static void column_close(Column *c)
{
    if (c->ints != NULL || c->longs != NULL)
        PyBuffer_Release(&c->view);
    Py_XDECREF(c->seq);
    c->ints = NULL;
    c->longs = NULL;
    c->seq = NULL;
}

static int column_get(Column *c, Py_ssize_t i, int64_t *out)
{
    if (c->ints != NULL) {
        *out = c->ints[i];
        return 0;
    }
    if (c->longs != NULL) {
        *out = c->longs[i];
        return 0;
    }
    long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(c->seq, i));
    *out = v;
    return (v == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* What the records of one append share: the record head (attributes + timestampDelta) as
 * bytes, or, with a timestamps column, attributes 0 and each record's own delta. */
typedef struct {
    const char *head; /* packed: the shared head */
    Py_ssize_t head_len;
    Column *stamps; /* stamped: one timestamp per record, -1 = ``default_ts`` */
    int64_t base_ts, default_ts, max_ts;
} RecordHeads;

/* The record head's bytes of record ``i``: its timestampDelta's zigzag value in *delta
 * (stamped) and its size. */
static int head_of(RecordHeads *h, Py_ssize_t i, uint64_t *delta, Py_ssize_t *size)
{
    if (h->stamps == NULL) {
        *size = h->head_len;
        return 0;
    }
    int64_t ts;
    if (column_get(h->stamps, i, &ts) < 0)
        return -1;
    if (ts == -1)
        ts = h->default_ts;
    if (ts < 0) {
        PyErr_SetString(PyExc_ValueError, "append_stamped: a timestamp below -1");
        return -1;
    }
    if (ts > h->max_ts)
        h->max_ts = ts;
    *delta = zigzag64(ts - h->base_ts);
    *size = 1 + varint_size(*delta);
    return 0;
}

/* Appends records index.. to the bytearray ``buf`` until it holds ``max_size`` bytes (at
 * least one record when ``offset`` is 0, i.e. the batch is empty). Each record is
 *     length varint | head (attributes + timestampDelta varlong) | offsetDelta varint
 *     | keyLength varint | key | valueLength varint | value | headerCount varint (0)
 * with the key and value read back to back from ``data`` at ``pos``; -1 = null. Returns
 * (next index, next data position, bytes added), or NULL with an exception set. */
static PyObject *append_records(PyObject *buf, RecordHeads *h, Py_buffer *data,
                                PyObject *klens_obj, PyObject *vlens_obj, Py_ssize_t index,
                                Py_ssize_t pos, Py_ssize_t offset, Py_ssize_t max_size)
{
    PyObject *result = NULL;
    Column klens = {0}, vlens = {0};
    if (column_open(&klens, klens_obj) < 0 || column_open(&vlens, vlens_obj) < 0)
        goto done;
    Py_ssize_t count = klens.len;
    if (vlens.len != count || (h->stamps != NULL && h->stamps->len != count) || index < 0 ||
        offset < 0 || pos < 0) {
        PyErr_SetString(PyExc_ValueError, "append_packed: bad columns or positions");
        goto done;
    }
    /* Pass 1: how many records fit, and their bytes, lengths checked against the data. */
    const char *src = data->buf;
    Py_ssize_t start = PyByteArray_GET_SIZE(buf), size = start, end = index, p = pos, o = offset;
    while (end < count && (size < max_size || o == 0)) {
        int64_t klen, vlen;
        uint64_t delta;
        Py_ssize_t head_len;
        if (column_get(&klens, end, &klen) < 0 || column_get(&vlens, end, &vlen) < 0 ||
            head_of(h, end, &delta, &head_len) < 0)
            goto done;
        Py_ssize_t kbytes = klen > 0 ? klen : 0, vbytes = vlen > 0 ? vlen : 0;
        if (klen < -1 || vlen < -1 || kbytes > data->len - p ||
            vbytes > data->len - p - kbytes) {
            PyErr_SetString(PyExc_ValueError, "append_packed: a length runs past the data");
            goto done;
        }
        Py_ssize_t body = head_len + varint_size(zigzag64(o)) + varint_size(zigzag64(klen)) +
                          kbytes + varint_size(zigzag64(vlen)) + vbytes + 1;
        size += varint_size(zigzag64(body)) + body;
        p += kbytes + vbytes;
        o++;
        end++;
    }
    /* One resize for them all. Growing to up to twice the new size and back keeps that
     * capacity (CPython shrinks a bytearray in place while it stays above half its
     * allocation), so the next appends to this batch grow without copying it again. */
    Py_ssize_t room = size < max_size ? (2 * size < max_size ? 2 * size : max_size) : size;
    if (room > size && PyByteArray_Resize(buf, room) < 0)
        goto done;
    if (PyByteArray_Resize(buf, size) < 0)
        goto done;
    /* Pass 2: write them (every column read was checked in pass 1). */
    char *out = PyByteArray_AS_STRING(buf) + start;
    Py_ssize_t i;
    for (i = index; i < end; i++) {
        int64_t klen, vlen;
        uint64_t delta = 0;
        Py_ssize_t head_len;
        column_get(&klens, i, &klen);
        column_get(&vlens, i, &vlen);
        head_of(h, i, &delta, &head_len);
        Py_ssize_t kbytes = klen > 0 ? klen : 0, vbytes = vlen > 0 ? vlen : 0;
        uint64_t zk = zigzag64(klen), zv = zigzag64(vlen), zo = zigzag64(offset);
        Py_ssize_t body = head_len + varint_size(zo) + varint_size(zk) + kbytes +
                          varint_size(zv) + vbytes + 1;
        out = put_varint(out, zigzag64(body));
        if (h->stamps == NULL) {
            memcpy(out, h->head, head_len);
            out += head_len;
        } else {
            *out++ = 0; /* attributes */
            out = put_varint(out, delta);
        }
        out = put_varint(out, zo);
        out = put_varint(out, zk);
        memcpy(out, src + pos, kbytes);
        out += kbytes;
        out = put_varint(out, zv);
        memcpy(out, src + pos + kbytes, vbytes);
        out += vbytes;
        *out++ = 0; /* headerCount */
        pos += kbytes + vbytes;
        offset++;
    }
    result = Py_BuildValue("nnn", i, pos, size - start);
done:
    column_close(&klens);
    column_close(&vlens);
    return result;
}

/* append_packed(buf, head, data, key_lens, value_lens, index, pos, offset, max_size)
 *     -> (next index, next data position, bytes added)
 * append_records with one ``head`` (attributes + timestampDelta) shared by the records. The
 * pure twin is append_packed_python in daemon/kafka/records.py. */
static PyObject *accel_append_packed(PyObject *self, PyObject *args)
{
    PyObject *buf, *klens, *vlens, *result;
    Py_buffer head, data;
    Py_ssize_t index, pos, offset, max_size;
    if (!PyArg_ParseTuple(args, "Yy*y*OOnnnn", &buf, &head, &data, &klens, &vlens, &index, &pos,
                          &offset, &max_size))
        return NULL;
    RecordHeads h = {head.buf, head.len, NULL, 0, 0, 0};
    result = append_records(buf, &h, &data, klens, vlens, index, pos, offset, max_size);
    PyBuffer_Release(&head);
    PyBuffer_Release(&data);
    return result;
}

/* append_stamped(buf, base_ts, default_ts, timestamps, data, key_lens, value_lens, index, pos,
 *                offset, max_size) -> (next index, next data position, bytes added, max ts)
 * append_records with each record's own timestamp (-1: ``default_ts``) as its delta from the
 * batch's ``base_ts``; also the largest timestamp appended (``base_ts`` at least). The pure
 * twin is append_stamped_python in daemon/kafka/records.py. */
static PyObject *accel_append_stamped(PyObject *self, PyObject *args)
{
    PyObject *buf, *stamps_obj, *klens, *vlens, *done, *result = NULL;
    Py_buffer data;
    long long base_ts, default_ts;
    Py_ssize_t index, pos, offset, max_size;
    if (!PyArg_ParseTuple(args, "YLLOy*OOnnnn", &buf, &base_ts, &default_ts, &stamps_obj, &data,
                          &klens, &vlens, &index, &pos, &offset, &max_size))
        return NULL;
    Column stamps = {0};
    if (column_open(&stamps, stamps_obj) == 0) {
        RecordHeads h = {NULL, 0, &stamps, base_ts, default_ts, base_ts};
        done = append_records(buf, &h, &data, klens, vlens, index, pos, offset, max_size);
        if (done != NULL) {
            Py_ssize_t next, next_pos, added;
            if (PyArg_ParseTuple(done, "nnn", &next, &next_pos, &added))
                result = Py_BuildValue("nnnL", next, next_pos, added, (long long)h.max_ts);
            Py_DECREF(done);
        }
        column_close(&stamps);
    }
    PyBuffer_Release(&data);
    return result;
}

/* stamped_lengths(section, count) -> (timestamps, key_lens, value_lens, data_start)
 * The columns of a records section with timestamps and no headers (layout 1: what the Kafka
 * listener writes), checked as kpd/protocol/records.py _scan_records checks them (ValueError
 * on any fault: the caller re-runs the pure scan for the exact error): timestamps as native
 * i64 bytes (memoryview(...).cast("q")), lengths as native i32. The pure twin is
 * kpd.protocol.records.stamped_columns. */
static PyObject *accel_stamped_lengths(PyObject *self, PyObject *args)
{
    Py_buffer s;
    Py_ssize_t count;
    PyObject *stamps = NULL, *keys = NULL, *values = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*n", &s, &count))
        return NULL;
    const unsigned char *b = s.buf;
    if (count <= 0 || s.len < 1 || b[0] != 1) {
        PyErr_SetString(PyExc_ValueError, "records: not a stamped section (layout 1)");
        goto done;
    }
    if (count > (s.len - 1) / 16) {
        PyErr_SetString(PyExc_ValueError, "records: columns run past the section");
        goto done;
    }
    Py_ssize_t start = 1 + 16 * count, need = 0;
    stamps = PyBytes_FromStringAndSize(NULL, 8 * count);
    keys = PyBytes_FromStringAndSize(NULL, 4 * count);
    values = PyBytes_FromStringAndSize(NULL, 4 * count);
    if (stamps == NULL || keys == NULL || values == NULL)
        goto done;
    int64_t *t = (int64_t *)PyBytes_AS_STRING(stamps);
    int32_t *k = (int32_t *)PyBytes_AS_STRING(keys);
    int32_t *v = (int32_t *)PyBytes_AS_STRING(values);
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *q = b + 1 + 8 * i;
        uint64_t u = 0;
        for (int j = 0; j < 8; j++)
            u = (u << 8) | q[j];
        t[i] = (int64_t)u;
        k[i] = kpd_be_i32(b + 1 + 8 * count + 4 * i);
        v[i] = kpd_be_i32(b + 1 + 12 * count + 4 * i);
        if (t[i] < -1 || k[i] < -1 || v[i] < -1) {
            PyErr_SetString(PyExc_ValueError, "records: a timestamp or length below -1");
            goto done;
        }
        need += (k[i] > 0 ? k[i] : 0) + (v[i] > 0 ? v[i] : 0);
    }
    if (need != s.len - start) {
        PyErr_SetString(PyExc_ValueError, "records: lengths do not add up to the data");
        goto done;
    }
    result = Py_BuildValue("OOOn", stamps, keys, values, start);
done:
    Py_XDECREF(stamps);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    PyBuffer_Release(&s);
    return result;
}

/* ---- SharedWords: ordered u64 words in shared memory ---------------------------------- */

/* The rings' shared indices (write_pos, release_pos, the wake_at flags) are read and written
 * by two processes. seq_cst loads and stores give what the ring protocol needs on any CPU:
 * release/acquire for publish -> read and read -> release, and the store -> load order of the
 * announce-then-sleep wake-up protocol (daemon/ring/wakeup.py). A plain aligned 8-byte access
 * gives the first only on x86-64 (TSO), the second nowhere. */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int held;
    Py_ssize_t words;
} SharedWords;

static int SharedWords_init(SharedWords *self, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "O", &obj))
        return -1;
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    self->held = 1;
    if (((uintptr_t)self->view.buf) % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "SharedWords: the buffer must be 8-byte aligned");
        return -1;
    }
    self->words = self->view.len / 8;
    return 0;
}

static void SharedWords_dealloc(SharedWords *self)
{
    if (self->held)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static _Atomic uint64_t *word_at(SharedWords *self, PyObject *key)
{
    if (!self->held) {
        PyErr_SetString(PyExc_ValueError, "SharedWords: released");
        return NULL;
    }
    Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= self->words) {
        PyErr_SetString(PyExc_IndexError, "SharedWords: index out of range");
        return NULL;
    }
    return (_Atomic uint64_t *)self->view.buf + i;
}

static PyObject *SharedWords_getitem(SharedWords *self, PyObject *key)
{
    _Atomic uint64_t *word = word_at(self, key);
    if (word == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load_explicit(word, memory_order_seq_cst));
}

static int SharedWords_setitem(SharedWords *self, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "SharedWords: words cannot be deleted");
        return -1;
    }
    _Atomic uint64_t *word = word_at(self, key);
    if (word == NULL)
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    atomic_store_explicit(word, (uint64_t)v, memory_order_seq_cst);
    return 0;
}

static Py_ssize_t SharedWords_len(SharedWords *self) { return self->held ? self->words : 0; }

static PyObject *SharedWords_release(SharedWords *self, PyObject *unused)
{
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    Py_RETURN_NONE;
}

static PyMappingMethods SharedWords_mapping = {
    .mp_length = (lenfunc)SharedWords_len,
    .mp_subscript = (binaryfunc)SharedWords_getitem,
    .mp_ass_subscript = (objobjargproc)SharedWords_setitem,
};

static PyMethodDef SharedWords_methods[] = {
    {"release", (PyCFunction)SharedWords_release, METH_NOARGS,
     "Give the buffer back (the mapping can then be closed)."},
    {NULL},
};

static PyTypeObject SharedWordsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "daemon.accel._accel.SharedWords",
    .tp_basicsize = sizeof(SharedWords),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "u64 words of a writable buffer, read and written with seq_cst atomics.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SharedWords_init,
    .tp_dealloc = (destructor)SharedWords_dealloc,
    .tp_as_mapping = &SharedWords_mapping,
    .tp_methods = SharedWords_methods,
};

/* ---- kafka_section: a Kafka batch's records as a kpd records section ------------------- */

/* kafka_section(payload, count, base_timestamp, fixed_timestamp, fixed) -> (bytes, keyless)
 * The records of one decompressed RecordBatch v2 laid out as kpd's records section: a
 * timestamp column, key and value length columns, a header length column when a record has
 * headers, then each record's key, value and header blob. The pure twin and the reference is
 * daemon/kafka/sections.py kafka_section_python: same checks, same order, same bytes. A
 * failure raises ValueError(kind, message): 0 a record does not decode, 1 a timestamp below -1
 * or beyond i64, 2 an offsetDelta that is not the record's index. */

#define KS_CORRUPT 0
#define KS_TIMESTAMP 1
#define KS_OFFSET 2
#define KS_MAX_HEADER_NAME 0xFFFF

static PyObject *ks_fail(int kind, const char *message)
{
    PyObject *args = Py_BuildValue("(is)", kind, message);
    if (args != NULL) {
        PyErr_SetObject(PyExc_ValueError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* A zig-zag varint of at most 10 bytes whose value fits 64 bits; -1 when corrupt. */
static inline int ks_varint(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos, int64_t *out)
{
    uint64_t raw = 0;
    int shift = 0;
    Py_ssize_t p = *pos;
    for (;;) {
        if (p >= n)
            return -1;
        unsigned char byte = b[p++];
        if (shift == 63 && byte > 1)
            return -1; /* beyond 64 bits, or an 11th byte */
        raw |= (uint64_t)(byte & 0x7f) << shift;
        if (byte < 0x80)
            break;
        shift += 7;
    }
    *pos = p;
    *out = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
    return 0;
}

/* A nullable byte string: its length (-1: null) and start; -1 when it does not fit. */
static inline int ks_nullable(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos,
                              int64_t *length, Py_ssize_t *start)
{
    if (ks_varint(b, n, pos, length) < 0)
        return -1;
    if (*length < 0) {
        *length = -1;
        return 0;
    }
    if (*length > (int64_t)(n - *pos))
        return -1;
    *start = *pos;
    *pos += (Py_ssize_t)*length;
    return 0;
}

static inline void put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* One record's fields, as the two passes read them. */
typedef struct {
    int64_t ts_delta, offset_delta, key_len, value_len, header_count;
    Py_ssize_t key_start, value_start, headers_start, end;
} KsRecord;

/* Read the record at *pos (bounds-checked against the whole payload, as the twin does) and
 * the byte size of its kpd header blob; 0, or -1 with *why set when it is corrupt. */
static int ks_record(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos, KsRecord *r,
                     int64_t *blob_bytes, int check_names, const char **why)
{
    int64_t length;
    *why = "a record does not decode";
    if (ks_varint(b, n, pos, &length) < 0)
        return -1;
    if (length < 0 || length > (int64_t)(n - *pos)) {
        *why = "a record length exceeds the batch";
        return -1;
    }
    r->end = *pos + (Py_ssize_t)length;
    *pos += 1; /* record attributes: unused */
    Py_ssize_t start = 0;
    if (ks_varint(b, n, pos, &r->ts_delta) < 0 || ks_varint(b, n, pos, &r->offset_delta) < 0 ||
        ks_nullable(b, n, pos, &r->key_len, &r->key_start) < 0 ||
        ks_nullable(b, n, pos, &r->value_len, &r->value_start) < 0 ||
        ks_varint(b, n, pos, &r->header_count) < 0)
        return -1;
    if (r->header_count < 0) {
        *why = "a negative header count";
        return -1;
    }
    r->headers_start = *pos;
    *blob_bytes = 0;
    for (int64_t h = 0; h < r->header_count; h++) {
        int64_t name_len, value_len;
        if (ks_varint(b, n, pos, &name_len) < 0)
            return -1;
        if (name_len < 0 || name_len > (int64_t)(n - *pos) || name_len > KS_MAX_HEADER_NAME) {
            *why = "a header name length out of range";
            return -1;
        }
        if (check_names) {
            PyObject *name = PyUnicode_DecodeUTF8((const char *)b + *pos, (Py_ssize_t)name_len,
                                                  "strict");
            if (name == NULL) {
                PyErr_Clear();
                *why = "a header name is not UTF-8";
                return -1;
            }
            Py_DECREF(name);
        }
        *pos += (Py_ssize_t)name_len;
        if (ks_nullable(b, n, pos, &value_len, &start) < 0)
            return -1;
        *blob_bytes += 2 + name_len + 4 + (value_len > 0 ? value_len : 0);
    }
    if (*pos != r->end) {
        *why = "a record's fields do not end at its length";
        return -1;
    }
    return 0;
}

static PyObject *accel_kafka_section(PyObject *self, PyObject *args)
{
    Py_buffer payload;
    Py_ssize_t count;
    long long base_ts, fixed_ts;
    int fixed;
    if (!PyArg_ParseTuple(args, "y*nLLp", &payload, &count, &base_ts, &fixed_ts, &fixed))
        return NULL;
    const unsigned char *b = payload.buf;
    Py_ssize_t n = payload.len;
    PyObject *result = NULL;
    if (count < 1 || count > n) {
        ks_fail(KS_CORRUPT, "the record count does not fit the batch");
        goto done;
    }
    /* Pass 1: every record decodes (corruption first, anywhere), then the sizes. */
    Py_ssize_t pos = 0, data_bytes = 0;
    int any_headers = 0, keyless = 1;
    const char *why = NULL;
    KsRecord r;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t blob = 0;
        if (ks_record(b, n, &pos, &r, &blob, 1, &why) < 0) {
            ks_fail(KS_CORRUPT, why);
            goto done;
        }
        data_bytes += (r.key_len > 0 ? r.key_len : 0) + (r.value_len > 0 ? r.value_len : 0) + blob;
        any_headers |= r.header_count > 0;
        keyless &= r.key_len < 0;
    }
    if (pos != n) {
        ks_fail(KS_CORRUPT, "bytes after the last record");
        goto done;
    }
    /* The timestamps and offset deltas, record by record, as the twin checks them. */
    pos = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t blob;
        ks_record(b, n, &pos, &r, &blob, 0, &why);
        int64_t stamp = fixed_ts;
        if (!fixed && __builtin_add_overflow((int64_t)base_ts, r.ts_delta, &stamp)) {
            ks_fail(KS_TIMESTAMP, "a timestamp beyond 64 bits");
            goto done;
        }
        if (stamp < -1) {
            ks_fail(KS_TIMESTAMP, "a timestamp below -1");
            goto done;
        }
        if (r.offset_delta != i) {
            ks_fail(KS_OFFSET, "an offset delta that is not the record's index");
            goto done;
        }
    }
    Py_ssize_t columns = any_headers ? 4 : 3;
    Py_ssize_t head = 1 + 8 * count + 4 * (columns - 1) * count;
    PyObject *section = PyBytes_FromStringAndSize(NULL, head + data_bytes);
    if (section == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(section);
    out[0] = 0x01 | (any_headers ? 0x02 : 0); /* LAYOUT_HAS_TIMESTAMPS | LAYOUT_HAS_HEADERS */
    unsigned char *stamps = out + 1, *key_lens = stamps + 8 * count;
    unsigned char *value_lens = key_lens + 4 * count, *header_lens = value_lens + 4 * count;
    unsigned char *data = out + head;
    /* Pass 2: write. Everything was checked above; only copies are left. */
    pos = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t blob;
        ks_record(b, n, &pos, &r, &blob, 0, &why);
        put_be64(stamps + 8 * i, (uint64_t)(fixed ? (int64_t)fixed_ts : base_ts + r.ts_delta));
        put_be32(key_lens + 4 * i, (uint32_t)(int32_t)r.key_len);
        put_be32(value_lens + 4 * i, (uint32_t)(int32_t)r.value_len);
        if (r.key_len > 0) {
            memcpy(data, b + r.key_start, (size_t)r.key_len);
            data += r.key_len;
        }
        if (r.value_len > 0) {
            memcpy(data, b + r.value_start, (size_t)r.value_len);
            data += r.value_len;
        }
        if (any_headers)
            put_be32(header_lens + 4 * i, (uint32_t)blob);
        Py_ssize_t hp = r.headers_start;
        for (int64_t h = 0; h < r.header_count; h++) {
            int64_t name_len, value_len;
            Py_ssize_t value_start = 0;
            ks_varint(b, n, &hp, &name_len);
            data[0] = (unsigned char)(name_len >> 8);
            data[1] = (unsigned char)name_len;
            memcpy(data + 2, b + hp, (size_t)name_len);
            data += 2 + name_len;
            hp += (Py_ssize_t)name_len;
            ks_nullable(b, n, &hp, &value_len, &value_start);
            put_be32(data, (uint32_t)(int32_t)value_len);
            data += 4;
            if (value_len > 0) {
                memcpy(data, b + value_start, (size_t)value_len);
                data += value_len;
            }
        }
    }
    result = Py_BuildValue("(NO)", section, keyless ? Py_True : Py_False);
done:
    PyBuffer_Release(&payload);
    return result;
}

/* ---- produce_head: a PRODUCE payload's head and plain records, checked ------------------ */

/* produce_head(payload) -> (base_seq, count, partition, ack, topic, records_start, keyless)
 * or None. What kpd/protocol/records.py decode_produce_header (the twin and the reference)
 * returns for a PRODUCE payload whose records section has the plain layout, and None for
 * every other payload: another layout, or anything decode_produce_header refuses (the caller
 * then runs it for the exact error). Layout: base_seq u64 | count u32 | partition i32 | ack u8
 * | topic (u16 length + UTF-8) | records section. */
static PyObject *accel_produce_head(PyObject *self, PyObject *arg)
{
    Py_buffer p;
    if (PyObject_GetBuffer(arg, &p, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = p.buf;
    Py_ssize_t n = p.len;
    PyObject *result = NULL, *topic = NULL;
    if (n < 19) /* the fixed fields and the topic's length */
        goto refuse;
    uint64_t base_seq = 0;
    for (int i = 0; i < 8; i++)
        base_seq = (base_seq << 8) | b[i];
    uint32_t count = (uint32_t)kpd_be_i32(b + 8);
    int32_t partition = kpd_be_i32(b + 12);
    unsigned ack = b[16];
    /* count 0, sequence numbers past 2**64, partition below -1, ack above CONNECTION_DEFAULT */
    if (count == 0 || base_seq > UINT64_MAX - count + 1 || partition < -1 || ack > 3)
        goto refuse;
    Py_ssize_t topic_len = ((Py_ssize_t)b[17] << 8) | b[18];
    Py_ssize_t start = 19 + topic_len;
    if (start >= n || b[start] != 0) /* no records section, or not the plain layout */
        goto refuse;
    Py_buffer section = p;
    section.buf = (void *)(b + start);
    section.len = n - start;
    Py_ssize_t data_start;
    if (kpd_plain_section(&section, (Py_ssize_t)count, &data_start) < 0) {
        PyErr_Clear();
        goto refuse;
    }
    int keyless = 1;
    for (uint32_t i = 0; i < count && keyless; i++)
        keyless = kpd_be_i32(b + start + 1 + 4 * (Py_ssize_t)i) == -1;
    topic = PyUnicode_DecodeUTF8((const char *)b + 19, topic_len, NULL);
    if (topic == NULL) {
        PyErr_Clear();
        goto refuse;
    }
    result = Py_BuildValue("(KIiBNnO)", (unsigned long long)base_seq, (unsigned int)count,
                           (int)partition, (unsigned char)ack, topic, start,
                           keyless ? Py_True : Py_False);
    PyBuffer_Release(&p);
    return result;
refuse:
    PyBuffer_Release(&p);
    Py_RETURN_NONE;
}

/* ---- module --------------------------------------------------------------------------- */

static PyMethodDef accel_methods[] = {
    {"partition_keys", accel_partition_keys, METH_VARARGS,
     "A native u32 column of each record's key partition."},
    {"gather_records", accel_gather_records, METH_VARARGS,
     "The records section and sequence offsets of one partition's records."},
    {"append_packed", accel_append_packed, METH_VARARGS,
     "Append packed records to a RecordBatch v2 bytearray."},
    {"append_stamped", accel_append_stamped, METH_VARARGS,
     "Append packed records with a timestamp each to a RecordBatch v2 bytearray."},
    {"stamped_lengths", accel_stamped_lengths, METH_VARARGS,
     "The timestamp and length columns of a records section with timestamps, checked."},
    {"produce_head", accel_produce_head, METH_O,
     "A PRODUCE payload's head and plain records, checked; None for anything else."},
    {"kafka_section", accel_kafka_section, METH_VARARGS,
     "A Kafka batch's decompressed records as a kpd records section, and whether keyless."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT, "daemon.accel._accel", "kpd's compiled accelerator.", -1,
    accel_methods,
};

PyMODINIT_FUNC PyInit__accel(void)
{
    if (PyType_Ready(&SharedWordsType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&accel_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&SharedWordsType);
    if (PyModule_AddObject(module, "SharedWords", (PyObject *)&SharedWordsType) < 0) {
        Py_DECREF(&SharedWordsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
