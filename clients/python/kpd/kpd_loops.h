/* The kpd-client's hot loops that the daemon's accelerator needs too, shared as ONE header so
 * the C exists once: kpd/_accel.c (the client's extension) and daemon/accel/_accel.c (the
 * daemon's, which includes this file from clients/python/kpd/ through its setup.py) both use
 * them. Pure: no I/O, no clock, no global state; ``static inline`` so each extension gets its
 * own copy of the machine code and neither links against the other.
 *
 *   kpd_murmur2(data, len)               Java Utils.murmur2 (kpd/murmur2.py murmur2_python)
 *   kpd_be_i32(p)                        a big-endian i32 of the kpd protocol
 *   kpd_plain_section(s, count, &start)  a plain records section's columns checked
 *                                        (kpd/protocol/records.py _scan_records)
 */
#ifndef KPD_LOOPS_H
#define KPD_LOOPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* ---- murmur2 ------------------------------------------------------------------------- */

/* Java Utils.murmur2: MurmurHash2 32-bit, seed 0x9747b28c, blocks read little-endian, the
 * tail switch falling through 3 -> 2 -> 1. Returns Java's signed int. */
static inline int32_t kpd_murmur2(const unsigned char *data, Py_ssize_t length)
{
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    Py_ssize_t i, tail = length & ~(Py_ssize_t)3;
    for (i = 0; i < tail; i += 4) {
        uint32_t k = (uint32_t)data[i] | ((uint32_t)data[i + 1] << 8) |
                     ((uint32_t)data[i + 2] << 16) | ((uint32_t)data[i + 3] << 24);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)data[tail + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[tail + 1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)data[tail];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

/* ---- records sections (docs/protocol.md section 6; kpd/protocol/records.py) ------------ */

static inline int32_t kpd_be_i32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

/* A plain records section (layout 0: no timestamps, no headers) of ``count`` records:
 * checks the column bounds and that the lengths add up; on success fills the data start. */
static inline int kpd_plain_section(const Py_buffer *s, Py_ssize_t count, Py_ssize_t *data_start)
{
    const unsigned char *b = s->buf;
    if (count <= 0 || s->len < 1 || b[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "records: not a plain section (layout 0) of 1+ records");
        return -1;
    }
    if (count > (s->len - 1) / 8) {
        PyErr_SetString(PyExc_ValueError, "records: columns run past the section");
        return -1;
    }
    Py_ssize_t start = 1 + 8 * count, need = 0;
    for (Py_ssize_t i = 0; i < 2 * count; i++) {
        int32_t n = kpd_be_i32(b + 1 + 4 * i);
        if (n < -1) {
            PyErr_SetString(PyExc_ValueError, "records: length below -1");
            return -1;
        }
        if (n > 0)
            need += n;
    }
    if (need != s->len - start) {
        PyErr_SetString(PyExc_ValueError, "records: lengths do not add up to the data");
        return -1;
    }
    *data_start = start;
    return 0;
}

#endif /* KPD_LOOPS_H */
