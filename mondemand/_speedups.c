/* mondemand._speedups: the compiled form of the per-event hot path (docs/architecture.md).

   - Receiver.drain: recvmmsg() bursts from a UDP socket straight into RawEvent objects
     (listeners/udp.py, lwes-udp), with the sender's address and port interned per socket;
   - encode_batch / decode_batch: the worker link's batch payload (mondemand/ipc.py has the
     format and the pure-Python twin that must produce and accept the very same bytes).

   RawEvent is a Python class with __slots__; `setup` reads the offsets of its slots from their
   member descriptors once, so that objects are built by storing references, without running
   __init__. Everything here has a pure-Python equivalent, chosen when this module is missing. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SPEEDUPS_API 2

enum { S_DATA, S_RECEIPT, S_IP, S_PORT, S_LISTENER, S_NAME, S_TENANT, S_STATS, NSLOTS };
static const char *slot_names[NSLOTS] = {"data", "receipt_ms", "sender_ip", "sender_port",
                                         "listener", "name", "tenant", "_stats"};
static Py_ssize_t offsets[NSLOTS];
static PyTypeObject *raw_type = NULL;
static PyObject *unset = NULL;

#define SLOT(o, i) (*(PyObject **)((char *)(o) + offsets[i]))

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *cls, *marker;
    if (!PyArg_ParseTuple(args, "O!O", &PyType_Type, &cls, &marker)) return NULL;
    PyObject *dict = ((PyTypeObject *)cls)->tp_dict;
    for (int i = 0; i < NSLOTS; i++) {
        PyObject *descr = PyDict_GetItemString(dict, slot_names[i]);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%R has no slot %s", cls, slot_names[i]);
            return NULL;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "slot %s of %R is not an object slot", slot_names[i], cls);
            return NULL;
        }
        offsets[i] = member->offset;
    }
    Py_INCREF(cls);
    Py_XSETREF(raw_type, (PyTypeObject *)cls);
    Py_INCREF(marker);
    Py_XSETREF(unset, marker);
    Py_RETURN_NONE;
}

/* A RawEvent holding new references to its arguments; `data` is stolen. */
static PyObject *new_raw(PyObject *data, PyObject *ms, PyObject *ip, PyObject *port, PyObject *listener,
                         PyObject *name, PyObject *tenant) {
    PyObject *o = raw_type->tp_alloc(raw_type, 0);
    if (o == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    SLOT(o, S_DATA) = data;
    SLOT(o, S_RECEIPT) = Py_NewRef(ms);
    SLOT(o, S_IP) = Py_NewRef(ip);
    SLOT(o, S_PORT) = Py_NewRef(port);
    SLOT(o, S_LISTENER) = Py_NewRef(listener);
    SLOT(o, S_NAME) = Py_NewRef(name);
    SLOT(o, S_TENANT) = Py_NewRef(tenant);
    SLOT(o, S_STATS) = Py_NewRef(unset);
    return o;
}

static int ready(void) {
    if (raw_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "mondemand._speedups.setup() was not called");
        return 0;
    }
    return 1;
}

/* -- Receiver ------------------------------------------------------------------------------- */

#define VLEN 64
#define SENDERS 256 /* direct-mapped cache of (address, port) -> (ip str, port int) */
#define NAMES 16    /* cache of name prefixes (length byte + name) -> name str */

typedef struct {
    int family;
    uint8_t addr[16];
    uint16_t port;
    PyObject *ip, *port_obj;
} Sender;

typedef struct {
    Py_ssize_t len;
    unsigned char prefix[256];
    PyObject *name;
} Name;

typedef struct {
    PyObject_HEAD
    int fd;
    Py_ssize_t size;
    char *buffers;
    struct mmsghdr msgs[VLEN];
    struct iovec iovs[VLEN];
    struct sockaddr_storage addrs[VLEN];
    Sender senders[SENDERS];
    Name names[NAMES];
    int nnames;
} Receiver;

static int receiver_init(Receiver *r, PyObject *args, PyObject *kwds) {
    int fd;
    Py_ssize_t size;
    static char *kwlist[] = {"fd", "size", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "in", kwlist, &fd, &size)) return -1;
    if (size < 1 || size > 65535) {
        PyErr_SetString(PyExc_ValueError, "size must be 1..65535");
        return -1;
    }
    PyMem_Free(r->buffers);
    r->buffers = PyMem_Malloc((size_t)size * VLEN);
    if (r->buffers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    r->fd = fd;
    r->size = size;
    for (int i = 0; i < VLEN; i++) {
        r->iovs[i].iov_base = r->buffers + (size_t)size * i;
        r->iovs[i].iov_len = (size_t)size;
        memset(&r->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
        r->msgs[i].msg_hdr.msg_iov = &r->iovs[i];
        r->msgs[i].msg_hdr.msg_iovlen = 1;
        r->msgs[i].msg_hdr.msg_name = &r->addrs[i];
    }
    return 0;
}

static void receiver_dealloc(Receiver *r) {
    for (int i = 0; i < SENDERS; i++) {
        Py_CLEAR(r->senders[i].ip);
        Py_CLEAR(r->senders[i].port_obj);
    }
    for (int i = 0; i < r->nnames; i++) Py_CLEAR(r->names[i].name);
    PyMem_Free(r->buffers);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* The sender's address as Python shows it (a.b.c.d; an IPv4-mapped IPv6 address as a.b.c.d) and its port:
   borrowed references from the cache. */
static int sender_of(Receiver *r, struct sockaddr_storage *ss, PyObject **ip, PyObject **port) {
    uint8_t addr[16];
    uint16_t p;
    int family, alen;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        memcpy(addr, &sin->sin_addr, 4);
        p = ntohs(sin->sin_port);
        family = AF_INET;
        alen = 4;
    } else if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        p = ntohs(sin6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            memcpy(addr, sin6->sin6_addr.s6_addr + 12, 4);
            family = AF_INET;
            alen = 4;
        } else {
            memcpy(addr, sin6->sin6_addr.s6_addr, 16);
            family = AF_INET6;
            alen = 16;
        }
    } else {
        *ip = NULL;
        return 0;
    }
    uint32_t h = p * 2654435761u;
    for (int i = 0; i < alen; i++) h = (h ^ addr[i]) * 16777619u;
    Sender *s = &r->senders[(h >> 8) % SENDERS];
    if (s->ip != NULL && s->family == family && s->port == p && memcmp(s->addr, addr, alen) == 0) {
        *ip = s->ip;
        *port = s->port_obj;
        return 0;
    }
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family, addr, text, sizeof text) == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *ip_obj = PyUnicode_FromString(text);
    PyObject *port_obj = PyLong_FromLong(p);
    if (ip_obj == NULL || port_obj == NULL) {
        Py_XDECREF(ip_obj);
        Py_XDECREF(port_obj);
        return -1;
    }
    Py_XSETREF(s->ip, ip_obj);
    Py_XSETREF(s->port_obj, port_obj);
    s->family = family;
    s->port = p;
    memcpy(s->addr, addr, alen);
    *ip = ip_obj;
    *port = port_obj;
    return 0;
}

/* The name of a datagram, borrowed, when this prefix is known (here or in `names`); NULL otherwise. */
static PyObject *name_of(Receiver *r, const unsigned char *buf, Py_ssize_t len, PyObject *names) {
    if (len == 0) return NULL;
    Py_ssize_t end = 1 + (Py_ssize_t)buf[0];
    if (end > len) return NULL;
    for (int i = 0; i < r->nnames; i++) {
        if (r->names[i].len == end && memcmp(r->names[i].prefix, buf, end) == 0) return r->names[i].name;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)buf, end);
    if (key == NULL) return NULL;
    PyObject *name = PyDict_GetItemWithError(names, key);
    Py_DECREF(key);
    if (name == NULL || !PyUnicode_CheckExact(name)) return NULL;
    if (r->nnames < NAMES) {
        Name *n = &r->names[r->nnames++];
        n->len = end;
        memcpy(n->prefix, buf, end);
        n->name = Py_NewRef(name);
    }
    return name;
}

static PyObject *receiver_drain(Receiver *r, PyObject *args) {
    Py_ssize_t max_count, max_bytes;
    PyObject *listener, *tenant, *names;
    if (!PyArg_ParseTuple(args, "nnUUO!", &max_count, &max_bytes, &listener, &tenant, &PyDict_Type, &names))
        return NULL;
    if (!ready()) return NULL;
    PyObject *events = PyList_New(0), *slow = PyList_New(0);
    if (events == NULL || slow == NULL) goto fail;
    Py_ssize_t received = 0, nbytes = 0;
    int err = 0;
    while (received < max_count && nbytes < max_bytes) {
        unsigned want = (unsigned)(max_count - received < VLEN ? max_count - received : VLEN);
        for (unsigned i = 0; i < want; i++) r->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = recvmmsg(r->fd, r->msgs, want, MSG_DONTWAIT, NULL);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) goto fail;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        PyObject *ms = PyLong_FromLongLong((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        if (ms == NULL) goto fail;
        for (int i = 0; i < n; i++) {
            const unsigned char *buf = (const unsigned char *)r->iovs[i].iov_base;
            Py_ssize_t len = r->msgs[i].msg_len;
            nbytes += len;
            PyObject *ip, *port;
            if (sender_of(r, &r->addrs[i], &ip, &port) < 0) {
                Py_DECREF(ms);
                goto fail;
            }
            PyObject *data = PyBytes_FromStringAndSize((const char *)buf, len);
            if (data == NULL) {
                Py_DECREF(ms);
                goto fail;
            }
            PyObject *name = ip == NULL ? NULL : name_of(r, buf, len, names);
            if (name == NULL && PyErr_Occurred()) {
                Py_DECREF(data);
                Py_DECREF(ms);
                goto fail;
            }
            PyObject *item;
            if (name != NULL) {
                item = new_raw(data, ms, ip, port, listener, name, tenant);
                if (item == NULL || PyList_Append(events, item) < 0) {
                    Py_XDECREF(item);
                    Py_DECREF(ms);
                    goto fail;
                }
            } else { /* unknown name or odd address: the Python side decides */
                item = ip == NULL ? Py_BuildValue("(NOsi)", data, ms, "", 0)
                                  : Py_BuildValue("(NOOO)", data, ms, ip, port);
                if (item == NULL || PyList_Append(slow, item) < 0) {
                    Py_XDECREF(item);
                    Py_DECREF(ms);
                    goto fail;
                }
            }
            Py_DECREF(item);
        }
        Py_DECREF(ms);
        received += n;
        if ((unsigned)n < want) break; /* the socket is empty (or nearly): back to poll() */
    }
    return Py_BuildValue("(NNnni)", events, slow, received, nbytes, err);
fail:
    Py_XDECREF(events);
    Py_XDECREF(slow);
    return NULL;
}

static PyMethodDef receiver_methods[] = {
    {"drain", (PyCFunction)receiver_drain, METH_VARARGS,
     "drain(max_count, max_bytes, listener, tenant, names) -> (events, slow, received, nbytes, errno)\n\n"
     "Read up to max_count datagrams without blocking, stopping once max_bytes are read (a burst of\n"
     "recvmmsg may pass it by one call's datagrams). `events` are RawEvents of known names; `slow` holds\n"
     "(data, receipt_ms, ip, port) of datagrams whose name prefix is not in `names` (for the caller to\n"
     "learn or count as malformed); errno is a receive error other than EAGAIN, or 0."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mondemand._speedups.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Receiver(fd, size): recvmmsg() bursts from a non-blocking UDP socket into RawEvents.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)receiver_init,
    .tp_dealloc = (destructor)receiver_dealloc,
    .tp_methods = receiver_methods,
};

/* -- the link's batch payload (format: mondemand/ipc.py) --------------------------------------- */

#define REC_SIZE 26 /* <qIIIIH: receipt_ms, length, ip, listener, tenant (string indexes), port */

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = v & 0xff;
    p[1] = (v >> 8) & 0xff;
    p[2] = (v >> 16) & 0xff;
    p[3] = (v >> 24) & 0xff;
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Index of `s` in the string table, adding it when new; the last string looked up is remembered by identity. */
static Py_ssize_t intern_str(PyObject *table, PyObject *list, PyObject *s, PyObject **last, Py_ssize_t *last_i) {
    if (s == *last) return *last_i;
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "RawEvent string field is not a str");
        return -1;
    }
    PyObject *found = PyDict_GetItemWithError(table, s);
    Py_ssize_t i;
    if (found != NULL) {
        i = PyLong_AsSsize_t(found);
    } else {
        if (PyErr_Occurred()) return -1;
        i = PyList_GET_SIZE(list);
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL) return -1;
        int bad = PyDict_SetItem(table, s, index) < 0 || PyList_Append(list, s) < 0;
        Py_DECREF(index);
        if (bad) return -1;
    }
    *last = s;
    *last_i = i;
    return i;
}

static PyObject *encode_batch(PyObject *self, PyObject *args) {
    PyObject *name, *events;
    if (!PyArg_ParseTuple(args, "UO!", &name, &PyList_Type, &events)) return NULL;
    if (!ready()) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(events);
    PyObject *table = PyDict_New(), *strings = PyList_New(0), *out = NULL;
    unsigned char *recs = NULL;
    if (table == NULL || strings == NULL) goto done;
    PyObject *last[3] = {NULL, NULL, NULL};
    Py_ssize_t last_i[3] = {0, 0, 0}, zero = 0;
    PyObject *none = NULL;
    if (intern_str(table, strings, name, &none, &zero) < 0) goto done;
    recs = PyMem_Malloc(count * REC_SIZE + 1);
    if (recs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t blob = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *o = PyList_GET_ITEM(events, k);
        if (Py_TYPE(o) != raw_type) {
            PyErr_SetString(PyExc_TypeError, "not a RawEvent");
            goto done;
        }
        PyObject *data = SLOT(o, S_DATA), *ms = SLOT(o, S_RECEIPT), *port = SLOT(o, S_PORT);
        PyObject *fields[3] = {SLOT(o, S_IP), SLOT(o, S_LISTENER), SLOT(o, S_TENANT)};
        if (data == NULL || ms == NULL || port == NULL || !PyBytes_Check(data)) {
            PyErr_SetString(PyExc_TypeError, "RawEvent without bytes data, receipt_ms or sender_port");
            goto done;
        }
        unsigned char *rec = recs + k * REC_SIZE;
        long long ms_value = PyLong_AsLongLong(ms);
        long port_value = PyLong_AsLong(port);
        if (PyErr_Occurred()) goto done;
        if (port_value < 0 || port_value > 65535) {
            PyErr_SetString(PyExc_ValueError, "sender_port out of range");
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        if (len > 0xffffffffLL) {
            PyErr_SetString(PyExc_ValueError, "datagram too large");
            goto done;
        }
        uint64_t u = (uint64_t)ms_value;
        for (int b = 0; b < 8; b++) rec[b] = (u >> (8 * b)) & 0xff;
        put_u32(rec + 8, (uint32_t)len);
        for (int f = 0; f < 3; f++) {
            if (fields[f] == NULL) {
                PyErr_SetString(PyExc_TypeError, "RawEvent without sender_ip, listener or tenant");
                goto done;
            }
            Py_ssize_t i = intern_str(table, strings, fields[f], &last[f], &last_i[f]);
            if (i < 0) goto done;
            put_u32(rec + 12 + 4 * f, (uint32_t)i);
        }
        rec[24] = port_value & 0xff;
        rec[25] = (port_value >> 8) & 0xff;
        blob += len;
    }
    Py_ssize_t nstrings = PyList_GET_SIZE(strings), head = 8;
    for (Py_ssize_t i = 0; i < nstrings; i++) {
        Py_ssize_t n;
        if (PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(strings, i), &n) == NULL) goto done;
        head += 4 + n;
    }
    out = PyBytes_FromStringAndSize(NULL, head + count * REC_SIZE + blob);
    if (out == NULL) goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    put_u32(p, (uint32_t)count);
    put_u32(p + 4, (uint32_t)nstrings);
    p += 8;
    for (Py_ssize_t i = 0; i < nstrings; i++) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(strings, i), &n);
        put_u32(p, (uint32_t)n);
        memcpy(p + 4, utf8, n);
        p += 4 + n;
    }
    memcpy(p, recs, count * REC_SIZE);
    p += count * REC_SIZE;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *data = SLOT(PyList_GET_ITEM(events, k), S_DATA);
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        memcpy(p, PyBytes_AS_STRING(data), len);
        p += len;
    }
done:
    PyMem_Free(recs);
    Py_XDECREF(table);
    Py_XDECREF(strings);
    return out;
}

static PyObject *bad_frame(PyObject *error, const char *what) {
    PyErr_Format(error, "batch payload: %s", what);
    return NULL;
}

static PyObject *decode_batch(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *error;
    if (!PyArg_ParseTuple(args, "y*O", &view, &error)) return NULL;
    if (!ready()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = view.buf, *end = p + view.len;
    PyObject *strings = NULL, *events = NULL, *ms = NULL, *port = NULL, *result = NULL;
    if (view.len < 8) {
        bad_frame(error, "cut short");
        goto done;
    }
    uint32_t count = get_u32(p), nstrings = get_u32(p + 4);
    p += 8;
    if (nstrings == 0 || nstrings > (uint64_t)(end - p) / 4) {
        bad_frame(error, "bad string table");
        goto done;
    }
    strings = PyList_New(nstrings);
    if (strings == NULL) goto done;
    for (uint32_t i = 0; i < nstrings; i++) {
        if (end - p < 4 || get_u32(p) > (uint64_t)(end - p - 4)) {
            bad_frame(error, "string runs past the end");
            goto done;
        }
        uint32_t n = get_u32(p);
        PyObject *s = PyUnicode_DecodeUTF8((const char *)p + 4, n, "strict");
        if (s == NULL) goto done;
        PyList_SET_ITEM(strings, i, s);
        p += 4 + n;
    }
    if ((uint64_t)count * REC_SIZE > (uint64_t)(end - p)) {
        bad_frame(error, "records run past the end");
        goto done;
    }
    const unsigned char *recs = p, *blob = p + (size_t)count * REC_SIZE;
    events = PyList_New(count);
    if (events == NULL) goto done;
    PyObject *name = PyList_GET_ITEM(strings, 0);
    long long last_ms = 0;
    long last_port = -1;
    for (uint32_t k = 0; k < count; k++) {
        const unsigned char *rec = recs + (size_t)k * REC_SIZE;
        uint64_t u = 0;
        for (int b = 7; b >= 0; b--) u = (u << 8) | rec[b];
        uint32_t len = get_u32(rec + 8), idx[3] = {get_u32(rec + 12), get_u32(rec + 16), get_u32(rec + 20)};
        long port_value = rec[24] | (rec[25] << 8);
        if (idx[0] >= nstrings || idx[1] >= nstrings || idx[2] >= nstrings) {
            bad_frame(error, "string index out of range");
            goto done;
        }
        if (len > (uint64_t)(end - blob)) {
            bad_frame(error, "datagram runs past the end");
            goto done;
        }
        if (ms == NULL || (long long)u != last_ms) { /* events of one burst share their receipt time */
            Py_XSETREF(ms, PyLong_FromLongLong((long long)u));
            if (ms == NULL) goto done;
            last_ms = (long long)u;
        }
        if (port_value != last_port) {
            Py_XSETREF(port, PyLong_FromLong(port_value));
            if (port == NULL) goto done;
            last_port = port_value;
        }
        PyObject *data = PyBytes_FromStringAndSize((const char *)blob, len);
        if (data == NULL) goto done;
        blob += len;
        PyObject *raw = new_raw(data, ms, PyList_GET_ITEM(strings, idx[0]), port, PyList_GET_ITEM(strings, idx[1]),
                                name, PyList_GET_ITEM(strings, idx[2]));
        if (raw == NULL) goto done;
        PyList_SET_ITEM(events, k, raw);
    }
    if (blob != end) {
        bad_frame(error, "bytes left after the last datagram");
        goto done;
    }
    result = Py_NewRef(events);
done:
    Py_XDECREF(events);
    Py_XDECREF(strings);
    Py_XDECREF(ms);
    Py_XDECREF(port);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(RawEvent, unset): learn RawEvent's slot offsets and its unset marker."},
    {"encode_batch", encode_batch, METH_VARARGS, "encode_batch(name, events) -> bytes: a link batch payload."},
    {"decode_batch", decode_batch, METH_VARARGS,
     "decode_batch(payload, error_class) -> [RawEvent]: the events of a link batch payload."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mondemand._speedups",
                                    "The compiled per-event hot path (see mondemand/_speedups.c).", -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&ReceiverType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ReceiverType);
    if (PyModule_AddObject(m, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(&ReceiverType);
        Py_DECREF(m);
        return NULL;
    }
    /* Bumped whenever a call's arguments change: mondemand.envelope refuses a build of another version. */
    if (PyModule_AddIntConstant(m, "API", SPEEDUPS_API) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
