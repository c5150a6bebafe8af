/*
 * The fast path of OTLP trace decoding: ExportTraceServiceRequest bytes straight into the
 * columns of a SpanBatch, without building a protobuf object per span.
 *
 * It walks the whole message against the OTLP trace schema (every string checked for UTF-8,
 * every known field for its wire type) and reads what spanwatch keeps. It takes only the common
 * case: anything it is not sure of -- a malformed or truncated field, an unknown field, a wrong
 * wire type, invalid UTF-8, deep nesting -- makes decode() return None, and the caller decodes
 * the body with protobuf (upb) instead, which then accepts or refuses it with its own message.
 * So this file decides nothing on its own; tests check it against the protobuf path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BAIL (-1)
#define MAX_DEPTH 32

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

/* --- wire primitives --------------------------------------------------------------------- */

static int read_varint(Buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->p >= b->end) return BAIL;
        uint8_t byte = *b->p++;
        if (shift == 63 && byte > 1) return BAIL;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return BAIL;
}

/* A tag or a length: protobuf reads these in at most five bytes (a longer encoding, even of a
 * small number, is refused as corrupt), so a longer one is left to it. */
static int read_varint32(Buf *b, uint64_t *out) {
    const uint8_t *start = b->p;
    if (read_varint(b, out) < 0 || b->p - start > 5) return BAIL;
    return 0;
}

static int read_tag(Buf *b, uint32_t *field, uint32_t *wt) {
    uint64_t tag;
    if (read_varint32(b, &tag) < 0 || tag > UINT32_MAX) return BAIL;
    *field = (uint32_t)(tag >> 3);
    *wt = (uint32_t)(tag & 7);
    return *field == 0 ? BAIL : 0;
}

static int read_len(Buf *b, Buf *sub) {
    uint64_t n;
    if (read_varint32(b, &n) < 0 || n > (uint64_t)(b->end - b->p)) return BAIL;
    sub->p = b->p;
    sub->end = b->p + n;
    b->p += n;
    return 0;
}

static int read_fixed64(Buf *b, uint64_t *out) {
    if (b->end - b->p < 8) return BAIL;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b->p[i];
    b->p += 8;
    *out = v;
    return 0;
}

static int skip_fixed32(Buf *b) {
    if (b->end - b->p < 4) return BAIL;
    b->p += 4;
    return 0;
}

/* Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF), as protobuf requires of
 * proto3 strings. */
static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) { /* eight ASCII bytes at a time: most text is ASCII */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += len;
    }
    return 1;
}

static int read_str(Buf *b, Buf *s) {
    if (read_len(b, s) < 0) return BAIL;
    return valid_utf8(s->p, (size_t)(s->end - s->p)) ? 0 : BAIL;
}

/* --- schema walking for what is checked but not kept ------------------------------------- */

static int walk_anyvalue(Buf b, int depth);

static int walk_keyvalue(Buf b, int depth) {
    uint32_t f, wt;
    Buf s;
    if (depth > MAX_DEPTH) return BAIL;
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0 || wt != 2) return BAIL;
        if (f == 1) {
            if (read_str(&b, &s) < 0) return BAIL;
        } else if (f == 2) {
            if (read_len(&b, &s) < 0 || walk_anyvalue(s, depth + 1) < 0) return BAIL;
        } else {
            return BAIL;
        }
    }
    return 0;
}

static int walk_anyvalue(Buf b, int depth) {
    uint32_t f, wt;
    uint64_t v;
    Buf s, item;
    if (depth > MAX_DEPTH) return BAIL;
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0) return BAIL;
        switch (f) {
        case 1:
            if (wt != 2 || read_str(&b, &s) < 0) return BAIL;
            break;
        case 2:
        case 3:
            if (wt != 0 || read_varint(&b, &v) < 0) return BAIL;
            break;
        case 4:
            if (wt != 1 || read_fixed64(&b, &v) < 0) return BAIL;
            break;
        case 5: /* ArrayValue { repeated AnyValue values = 1; } */
        case 6: /* KeyValueList { repeated KeyValue values = 1; } */
            if (wt != 2 || read_len(&b, &s) < 0) return BAIL;
            while (s.p < s.end) {
                uint32_t f2, wt2;
                if (read_tag(&s, &f2, &wt2) < 0 || f2 != 1 || wt2 != 2) return BAIL;
                if (read_len(&s, &item) < 0) return BAIL;
                if ((f == 5 ? walk_anyvalue(item, depth + 1) : walk_keyvalue(item, depth + 1)) < 0)
                    return BAIL;
            }
            break;
        case 7:
            if (wt != 2 || read_len(&b, &s) < 0) return BAIL;
            break;
        default:
            return BAIL;
        }
    }
    return 0;
}

/* InstrumentationScope, Link: strings, bytes, attributes and counters. */
static int walk_scope(Buf b) {
    uint32_t f, wt;
    uint64_t v;
    Buf s;
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0) return BAIL;
        if ((f == 1 || f == 2) && wt == 2) {
            if (read_str(&b, &s) < 0) return BAIL;
        } else if (f == 3 && wt == 2) {
            if (read_len(&b, &s) < 0 || walk_keyvalue(s, 0) < 0) return BAIL;
        } else if (f == 4 && wt == 0) {
            if (read_varint(&b, &v) < 0) return BAIL;
        } else {
            return BAIL;
        }
    }
    return 0;
}

static int walk_link(Buf b) {
    uint32_t f, wt;
    uint64_t v;
    Buf s;
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0) return BAIL;
        if ((f == 1 || f == 2) && wt == 2) {
            if (read_len(&b, &s) < 0) return BAIL;
        } else if (f == 3 && wt == 2) {
            if (read_str(&b, &s) < 0) return BAIL;
        } else if (f == 4 && wt == 2) {
            if (read_len(&b, &s) < 0 || walk_keyvalue(s, 0) < 0) return BAIL;
        } else if (f == 5 && wt == 0) {
            if (read_varint(&b, &v) < 0) return BAIL;
        } else if (f == 6 && wt == 5) {
            if (skip_fixed32(&b) < 0) return BAIL;
        } else {
            return BAIL;
        }
    }
    return 0;
}

/* --- attribute values -------------------------------------------------------------------- */

enum { V_NONE, V_STRING, V_BOOL, V_INT, V_DOUBLE, V_OTHER };

typedef struct {
    int kind;
    Buf str;
    uint64_t num;
} Scalar;

/* A KeyValue's key and the final case of its value (a later oneof field replaces an earlier
 * one, as protobuf merges them). */
static int read_keyvalue(Buf b, Buf *key, Scalar *value) {
    uint32_t f, wt;
    Buf s;
    key->p = key->end = NULL;
    value->kind = V_NONE;
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0 || wt != 2) return BAIL;
        if (f == 1) {
            if (read_str(&b, key) < 0) return BAIL;
        } else if (f == 2) {
            if (read_len(&b, &s) < 0 || walk_anyvalue(s, 1) < 0) return BAIL;
            while (s.p < s.end) { /* already checked: read the cases in order */
                uint32_t f2 = 0, wt2 = 0;
                Buf item;
                read_tag(&s, &f2, &wt2);
                switch (f2) {
                case 1:
                    read_len(&s, &value->str);
                    value->kind = V_STRING;
                    break;
                case 2:
                    read_varint(&s, &value->num);
                    value->kind = V_BOOL;
                    break;
                case 3:
                    read_varint(&s, &value->num);
                    value->kind = V_INT;
                    break;
                case 4:
                    read_fixed64(&s, &value->num);
                    value->kind = V_DOUBLE;
                    break;
                default:
                    read_len(&s, &item);
                    value->kind = V_OTHER;
                }
            }
        } else {
            return BAIL;
        }
    }
    return 0;
}

static int key_is(Buf k, const char *text, size_t n) {
    return (size_t)(k.end - k.p) == n && k.p != NULL && memcmp(k.p, text, n) == 0;
}

static PyObject *EMPTY, *TRUE_TEXT, *FALSE_TEXT;

static PyObject *text_of(Buf s) {
    if (s.p == NULL || s.p == s.end) return Py_NewRef(EMPTY);
    return PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, "strict");
}

/* Names, routes and attribute values repeat from span to span: one str object per distinct
 * text in a request, found again by a small hash table of the bytes. */
#define CACHE_SLOTS 512

typedef struct {
    const uint8_t *p;
    size_t len;
    PyObject *text;
} CacheSlot;

typedef struct {
    CacheSlot slots[CACHE_SLOTS];
} Cache;

static PyObject *cached_text(Cache *cache, Buf s) {
    if (s.p == NULL || s.p == s.end) return Py_NewRef(EMPTY);
    size_t len = (size_t)(s.end - s.p);
    if (len > 128) return text_of(s);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ s.p[i]) * 16777619u;
    CacheSlot *slot = &cache->slots[h % CACHE_SLOTS];
    if (slot->text != NULL && slot->len == len && memcmp(slot->p, s.p, len) == 0)
        return Py_NewRef(slot->text);
    PyObject *text = text_of(s);
    if (text == NULL) return NULL;
    Py_XSETREF(slot->text, Py_NewRef(text));
    slot->p = s.p;
    slot->len = len;
    return text;
}

static void clear_cache(Cache *cache) {
    for (int i = 0; i < CACHE_SLOTS; i++) Py_CLEAR(cache->slots[i].text);
}

/* What the protobuf path's _scalar() makes of a value: its text, "" for lists and maps. */
static PyObject *scalar_text(Cache *cache, const Scalar *v) {
    switch (v->kind) {
    case V_STRING:
        return cached_text(cache, v->str);
    case V_BOOL:
        return Py_NewRef(v->num ? TRUE_TEXT : FALSE_TEXT);
    case V_INT: {
        PyObject *n = PyLong_FromLongLong((long long)v->num);
        if (n == NULL) return NULL;
        PyObject *t = PyObject_Str(n);
        Py_DECREF(n);
        return t;
    }
    case V_DOUBLE: {
        double d;
        memcpy(&d, &v->num, sizeof d);
        PyObject *f = PyFloat_FromDouble(d);
        if (f == NULL) return NULL;
        PyObject *t = PyObject_Repr(f);
        Py_DECREF(f);
        return t;
    }
    default:
        return Py_NewRef(EMPTY);
    }
}

/* --- the semantic-convention attributes kept as columns ---------------------------------- */

#define MAX_KEYS 64
#define MAX_COLUMNS 32

static struct {
    char *key;
    size_t len;
    int column;
    int rank;
} known[MAX_KEYS];
static int n_known, n_columns, int_column = -1;

/* A span's every attribute key is looked up here, so the known keys sit in buckets by a hash
 * of their length and three of their bytes: a key not kept (most of them) costs one probe,
 * where a scan of all the known keys cost one length compare each. */
#define N_BUCKETS 256
static signed char bucket_head[N_BUCKETS], bucket_next[MAX_KEYS];

static unsigned key_bucket(const uint8_t *p, size_t len) {
    if (len == 0) return 0;
    return (unsigned)(len * 31u + p[0] * 7u + p[len / 2] * 3u + p[len - 1]) % N_BUCKETS;
}

static void fill_buckets(void) {
    memset(bucket_head, -1, sizeof bucket_head);
    for (int i = n_known - 1; i >= 0; i--) { /* head first: the first of equal keys wins */
        unsigned h = key_bucket((const uint8_t *)known[i].key, known[i].len);
        bucket_next[i] = bucket_head[h];
        bucket_head[h] = (signed char)i;
    }
}

/* --- the columns ----------------------------------------------------------------------- */

enum {
    C_TRACE, C_SPAN, C_PARENT, C_SERVICE, C_VERSION, C_NAME, C_KIND, C_START, C_END,
    C_STATUS_CODE, C_STATUS_MESSAGE, C_EXC_TYPE, C_EXC_MESSAGE, C_SCOPE, C_SOURCE, N_CORE
};
enum { R_TRACE, R_SPAN, R_PARENT, R_START, R_ORDER, N_REFUSALS };

/* A column being filled: its items (new references) in an array that doubles as it grows,
 * made a list once the whole request is read. (A list grows by an eighth at a time when
 * appended to, copying its items again at every step: some 60 times to reach 8,192.) */
typedef struct {
    PyObject **items;
    Py_ssize_t n, cap;
} Vec;

/* Append a new reference (stolen); fails on NULL. */
static int put(Vec *v, PyObject *item) {
    if (item == NULL) return -2;
    if (v->n == v->cap) {
        Py_ssize_t cap = v->cap ? 2 * v->cap : 256;
        PyObject **items = PyMem_Realloc(v->items, (size_t)cap * sizeof *items);
        if (items == NULL) {
            Py_DECREF(item);
            PyErr_NoMemory();
            return -2;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->n++] = item;
    return 0;
}

static void vec_clear(Vec *v) {
    for (Py_ssize_t i = 0; i < v->n; i++) Py_DECREF(v->items[i]);
    PyMem_Free(v->items);
    v->items = NULL;
    v->n = v->cap = 0;
}

/* The column as a list, which takes over its items; NULL on a Python error. The list holds
 * only str, bytes and int, which refer to nothing: it cannot be in a reference cycle, and
 * the cycle collector need not walk its 8,192-odd items each time it runs while the batch
 * waits or is filed. */
static PyObject *vec_list(Vec *v) {
    PyObject *list = PyList_New(v->n);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < v->n; i++) PyList_SET_ITEM(list, i, v->items[i]);
    PyMem_Free(v->items);
    v->items = NULL;
    v->n = v->cap = 0;
    PyObject_GC_UnTrack(list);
    return list;
}

typedef struct {
    Vec core[N_CORE];
    Vec semconv[MAX_COLUMNS];
    Py_ssize_t refused[N_REFUSALS];
    Cache cache;
    PyObject *last_trace; /* borrowed: the trace id column holds it */
} Columns;

static const uint8_t ZERO[16];

/* Returns 0, BAIL, or -2 on a Python error. */
static int read_span(Buf b, PyObject *service, PyObject *version, PyObject *scope,
                     PyObject *source, Columns *c) {
    uint32_t f, wt;
    uint64_t v;
    Buf s, trace = {0}, span = {0}, parent = {0}, name = {0}, status_message = {0};
    Buf exc_type = {0}, exc_message = {0};
    uint64_t start = 0, end = 0;
    int32_t kind = 0, status_code = 0;
    int exception_seen = 0;
    Scalar values[MAX_COLUMNS];
    int ranks[MAX_COLUMNS];
    for (int i = 0; i < n_columns; i++) {
        values[i].kind = V_NONE;
        ranks[i] = 99;
    }
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0) return BAIL;
        switch (f) {
        case 1:
        case 2:
        case 4:
            if (wt != 2 || read_len(&b, &s) < 0) return BAIL;
            *(f == 1 ? &trace : f == 2 ? &span : &parent) = s;
            break;
        case 3:
        case 5:
            if (wt != 2 || read_str(&b, &s) < 0) return BAIL;
            if (f == 5) name = s;
            break;
        case 6:
            if (wt != 0 || read_varint(&b, &v) < 0) return BAIL;
            kind = (int32_t)(uint32_t)v;
            break;
        case 7:
        case 8:
            if (wt != 1 || read_fixed64(&b, &v) < 0) return BAIL;
            *(f == 7 ? &start : &end) = v;
            break;
        case 9: {
            Buf key;
            Scalar value;
            if (wt != 2 || read_len(&b, &s) < 0 || read_keyvalue(s, &key, &value) < 0) return BAIL;
            size_t klen = key.p ? (size_t)(key.end - key.p) : 0;
            for (int i = bucket_head[key_bucket(key.p, klen)]; i >= 0; i = bucket_next[i]) {
                if (known[i].len == klen && memcmp(known[i].key, key.p, klen) == 0) {
                    int col = known[i].column; /* below n_columns: configure() sees to it */
                    if (known[i].rank < ranks[col]) {
                        ranks[col] = known[i].rank;
                        values[col] = value;
                    }
                    break;
                }
            }
            break;
        }
        case 10:
        case 12:
        case 14:
            if (wt != 0 || read_varint(&b, &v) < 0) return BAIL;
            break;
        case 11: { /* Event: the first one named "exception" gives type and message */
            Buf e, event_name = {0}, attrs[64];
            int n_attrs = 0;
            if (wt != 2 || read_len(&b, &e) < 0) return BAIL;
            while (e.p < e.end) {
                uint32_t f2, wt2;
                if (read_tag(&e, &f2, &wt2) < 0) return BAIL;
                if (f2 == 1 && wt2 == 1) {
                    if (read_fixed64(&e, &v) < 0) return BAIL;
                } else if (f2 == 2 && wt2 == 2) {
                    if (read_str(&e, &event_name) < 0) return BAIL;
                } else if (f2 == 3 && wt2 == 2) {
                    if (read_len(&e, &s) < 0 || walk_keyvalue(s, 0) < 0) return BAIL;
                    if (n_attrs == 64) return BAIL;
                    attrs[n_attrs++] = s;
                } else if (f2 == 4 && wt2 == 0) {
                    if (read_varint(&e, &v) < 0) return BAIL;
                } else {
                    return BAIL;
                }
            }
            if (!exception_seen && key_is(event_name, "exception", 9)) {
                exception_seen = 1;
                for (int i = 0; i < n_attrs; i++) {
                    Buf key;
                    Scalar value;
                    read_keyvalue(attrs[i], &key, &value);
                    Buf text = value.kind == V_STRING ? value.str : (Buf){0};
                    if (key_is(key, "exception.type", 14))
                        exc_type = text;
                    else if (key_is(key, "exception.message", 17))
                        exc_message = text;
                }
            }
            break;
        }
        case 13:
            if (wt != 2 || read_len(&b, &s) < 0 || walk_link(s) < 0) return BAIL;
            break;
        case 15: /* Status { string message = 2; StatusCode code = 3; } */
            if (wt != 2 || read_len(&b, &s) < 0) return BAIL;
            while (s.p < s.end) {
                uint32_t f2, wt2;
                if (read_tag(&s, &f2, &wt2) < 0) return BAIL;
                if (f2 == 2 && wt2 == 2) {
                    if (read_str(&s, &status_message) < 0) return BAIL;
                } else if (f2 == 3 && wt2 == 0) {
                    if (read_varint(&s, &v) < 0) return BAIL;
                    status_code = (int32_t)(uint32_t)v;
                } else {
                    return BAIL;
                }
            }
            break;
        case 16:
            if (wt != 5 || skip_fixed32(&b) < 0) return BAIL;
            break;
        default:
            return BAIL;
        }
    }
    size_t tlen = trace.p ? (size_t)(trace.end - trace.p) : 0;
    size_t slen = span.p ? (size_t)(span.end - span.p) : 0;
    size_t plen = parent.p ? (size_t)(parent.end - parent.p) : 0;
    if (tlen != 16 || memcmp(trace.p, ZERO, 16) == 0) {
        c->refused[R_TRACE]++;
        return 0;
    }
    if (slen != 8 || memcmp(span.p, ZERO, 8) == 0) {
        c->refused[R_SPAN]++;
        return 0;
    }
    if (plen && plen != 8) {
        c->refused[R_PARENT]++;
        return 0;
    }
    if (start == 0) {
        c->refused[R_START]++;
        return 0;
    }
    if (end < start) {
        c->refused[R_ORDER]++;
        return 0;
    }
    Vec *core = c->core;
    /* A trace's spans mostly come one after another: they share one bytes object (and its
     * hash, which the detector takes twice). */
    PyObject *trace_id;
    if (c->last_trace != NULL && memcmp(PyBytes_AS_STRING(c->last_trace), trace.p, 16) == 0)
        trace_id = Py_NewRef(c->last_trace);
    else
        trace_id = PyBytes_FromStringAndSize((const char *)trace.p, 16);
    /* Borrowed only once the column holds it: a put() that fails lets go of it. */
    if (put(&core[C_TRACE], trace_id) < 0) return -2;
    c->last_trace = trace_id;
    if (put(&core[C_SPAN], PyBytes_FromStringAndSize((const char *)span.p, 8)) < 0 ||
        put(&core[C_PARENT], PyBytes_FromStringAndSize((const char *)parent.p, (Py_ssize_t)plen)) < 0 ||
        put(&core[C_SERVICE], Py_NewRef(service)) < 0 ||
        put(&core[C_VERSION], Py_NewRef(version)) < 0 ||
        put(&core[C_SCOPE], Py_NewRef(scope)) < 0 || put(&core[C_SOURCE], Py_NewRef(source)) < 0 ||
        put(&core[C_NAME], cached_text(&c->cache, name)) < 0 ||
        put(&core[C_KIND], PyLong_FromLong(kind)) < 0 ||
        put(&core[C_START], PyLong_FromUnsignedLongLong(start)) < 0 ||
        put(&core[C_END], PyLong_FromUnsignedLongLong(end)) < 0 ||
        put(&core[C_STATUS_CODE], PyLong_FromLong(status_code)) < 0 ||
        put(&core[C_STATUS_MESSAGE], cached_text(&c->cache, status_message)) < 0 ||
        put(&core[C_EXC_TYPE], cached_text(&c->cache, exc_type)) < 0 ||
        put(&core[C_EXC_MESSAGE], text_of(exc_message)) < 0)
        return -2;
    for (int col = 0; col < n_columns; col++) {
        if (col == int_column && values[col].kind == V_INT) { /* int(str(n)) is n */
            if (put(&c->semconv[col], PyLong_FromLongLong((long long)values[col].num)) < 0)
                return -2;
            continue;
        }
        if (col == int_column && (values[col].kind == V_NONE || values[col].kind == V_OTHER)) {
            /* their text is "", and int("") fails: 0, without making the error */
            if (put(&c->semconv[col], PyLong_FromLong(0)) < 0) return -2;
            continue;
        }
        PyObject *text = scalar_text(&c->cache, &values[col]);
        if (col == int_column && text != NULL) {
            /* int() of the text, 0 when it is not a number: what the protobuf path does */
            PyObject *n = PyLong_FromUnicodeObject(text, 10);
            Py_DECREF(text);
            if (n == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_ValueError)) return -2;
                PyErr_Clear();
                n = PyLong_FromLong(0);
            }
            text = n;
        }
        if (put(&c->semconv[col], text) < 0) return -2;
    }
    return 0;
}

/* --- resource identity ------------------------------------------------------------------ */

/* The resource attributes that make a service's scope (each to a slot, with a rank: lower wins
 * when an old and a new name are both set), and those that name the instance, first wins. */
#define MAX_SLOTS 8
#define MAX_RESOURCE_KEYS 16
#define MAX_INSTANCE_KEYS 4

typedef struct {
    char *key;
    size_t len;
    int slot;
    int rank;
} ResourceKey;

static ResourceKey resource_keys[MAX_RESOURCE_KEYS], instance_keys[MAX_INSTANCE_KEYS];
static int n_resource_keys, n_instance_keys, n_slots;
static PyObject *SEPARATOR;

typedef struct {
    Buf service, version, instance;
    int instance_rank;
    Buf slot[MAX_SLOTS];
    int rank[MAX_SLOTS];
} Resource;

static const ResourceKey *find_key(const ResourceKey *keys, int n, Buf key) {
    for (int i = 0; i < n; i++)
        if (key_is(key, keys[i].key, keys[i].len)) return &keys[i];
    return NULL;
}

/* Resource: service.name, service.version, the scope's attributes and the instance; the last
 * of a repeated key wins, as in the protobuf path. */
static int read_resource(Buf b, Resource *r) {
    uint32_t f, wt;
    uint64_t v;
    Buf s;
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0) return BAIL;
        if (f == 1 && wt == 2) {
            Buf key;
            Scalar value;
            if (read_len(&b, &s) < 0 || read_keyvalue(s, &key, &value) < 0) return BAIL;
            Buf text = value.kind == V_STRING ? value.str : (Buf){0};
            const ResourceKey *hit;
            if (key_is(key, "service.name", 12)) {
                r->service = text;
            } else if (key_is(key, "service.version", 15)) {
                r->version = text;
            } else if ((hit = find_key(resource_keys, n_resource_keys, key)) != NULL) {
                if (hit->rank <= r->rank[hit->slot]) {
                    r->rank[hit->slot] = hit->rank;
                    r->slot[hit->slot] = text;
                }
            } else if ((hit = find_key(instance_keys, n_instance_keys, key)) != NULL) {
                if (hit->rank <= r->instance_rank) {
                    r->instance_rank = hit->rank;
                    r->instance = text;
                }
            }
        } else if (f == 2 && wt == 0) {
            if (read_varint(&b, &v) < 0) return BAIL;
        } else {
            return BAIL;
        }
    }
    return 0;
}

/* The scope column's text: the slots' values joined, "" when none is set (make_scope). */
static PyObject *scope_of(const Resource *r) {
    int any = 0;
    for (int i = 0; i < n_slots; i++) any |= r->slot[i].p != NULL && r->slot[i].p != r->slot[i].end;
    if (!any) return Py_NewRef(EMPTY);
    PyObject *parts = PyList_New(n_slots);
    if (parts == NULL) return NULL;
    for (int i = 0; i < n_slots; i++) {
        PyObject *text = text_of(r->slot[i]);
        if (text == NULL) {
            Py_DECREF(parts);
            return NULL;
        }
        PyList_SET_ITEM(parts, i, text);
    }
    PyObject *scope = PyUnicode_Join(SEPARATOR, parts);
    Py_DECREF(parts);
    return scope;
}

static PyObject *UNKNOWN_SERVICE;

static int read_resource_spans(Buf b, Columns *c) {
    uint32_t f = 0, wt = 0;
    Buf s;
    Resource r;
    memset(&r, 0, sizeof r);
    r.instance_rank = 99;
    for (int i = 0; i < MAX_SLOTS; i++) r.rank[i] = 99;
    Buf first = b;
    /* The resource may come after the spans on the wire: find it first. */
    while (b.p < b.end) {
        if (read_tag(&b, &f, &wt) < 0 || wt != 2) return BAIL;
        if (f == 1) {
            if (read_len(&b, &s) < 0 || read_resource(s, &r) < 0) return BAIL;
        } else if (f == 2) {
            if (read_len(&b, &s) < 0) return BAIL;
        } else if (f == 3) {
            if (read_str(&b, &s) < 0) return BAIL;
        } else {
            return BAIL;
        }
    }
    PyObject *svc = (r.service.p && r.service.p != r.service.end) ? text_of(r.service)
                                                                  : Py_NewRef(UNKNOWN_SERVICE);
    PyObject *ver = text_of(r.version);
    PyObject *scope = scope_of(&r);
    PyObject *instance = text_of(r.instance);
    PyObject *source = NULL;
    int rc = 0;
    if (svc == NULL || ver == NULL || scope == NULL || instance == NULL) {
        rc = -2;
    } else { /* make_source */
        source = PyUnicode_FromFormat("%U%U%U%U%U", svc, SEPARATOR, scope, SEPARATOR, instance);
        if (source == NULL) rc = -2;
    }
    b = first;
    while (rc == 0 && b.p < b.end) {
        read_tag(&b, &f, &wt);
        read_len(&b, &s);
        if (f != 2) continue;
        while (rc == 0 && s.p < s.end) { /* ScopeSpans */
            uint32_t f2, wt2;
            Buf item;
            if (read_tag(&s, &f2, &wt2) < 0 || wt2 != 2 || read_len(&s, &item) < 0) {
                rc = BAIL;
            } else if (f2 == 1) {
                rc = walk_scope(item);
            } else if (f2 == 2) {
                rc = read_span(item, svc, ver, scope, source, c);
            } else if (f2 == 3) {
                rc = valid_utf8(item.p, (size_t)(item.end - item.p)) ? 0 : BAIL;
            } else {
                rc = BAIL;
            }
        }
    }
    Py_XDECREF(svc);
    Py_XDECREF(ver);
    Py_XDECREF(scope);
    Py_XDECREF(instance);
    Py_XDECREF(source);
    return rc;
}

static void clear(Columns *c) {
    clear_cache(&c->cache);
    for (int i = 0; i < N_CORE; i++) vec_clear(&c->core[i]);
    for (int i = 0; i < n_columns; i++) vec_clear(&c->semconv[i]);
}

static PyObject *decode(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Columns c;
    memset(&c, 0, sizeof c);
    int rc = 0;
    Buf b = {view.buf, (const uint8_t *)view.buf + view.len};
    while (rc == 0 && b.p < b.end) {
        uint32_t f, wt;
        Buf s;
        if (read_tag(&b, &f, &wt) < 0 || f != 1 || wt != 2 || read_len(&b, &s) < 0)
            rc = BAIL;
        else
            rc = read_resource_spans(s, &c);
    }
    PyBuffer_Release(&view);
    clear_cache(&c.cache);
    if (rc != 0) {
        clear(&c);
        if (rc == BAIL) Py_RETURN_NONE;
        return NULL;
    }
    PyObject *core = PyTuple_New(N_CORE), *semconv = PyTuple_New(n_columns);
    PyObject *refused = PyTuple_New(N_REFUSALS);
    if (core == NULL || semconv == NULL || refused == NULL) {
        Py_XDECREF(core);
        Py_XDECREF(semconv);
        Py_XDECREF(refused);
        clear(&c);
        return NULL;
    }
    for (int i = 0; i < N_CORE; i++) {
        PyObject *list = vec_list(&c.core[i]);
        if (list == NULL) goto fail;
        PyTuple_SET_ITEM(core, i, list);
    }
    for (int i = 0; i < n_columns; i++) {
        PyObject *list = vec_list(&c.semconv[i]);
        if (list == NULL) goto fail;
        PyTuple_SET_ITEM(semconv, i, list);
    }
    for (int i = 0; i < N_REFUSALS; i++) {
        PyObject *n = PyLong_FromSsize_t(c.refused[i]);
        if (n == NULL) goto fail;
        PyTuple_SET_ITEM(refused, i, n);
    }
    return Py_BuildValue("(NNN)", core, semconv, refused);
fail: /* the tuples let go of the lists made so far, clear() of the columns not yet made */
    Py_DECREF(core);
    Py_DECREF(semconv);
    Py_DECREF(refused);
    clear(&c);
    return NULL;
}

/* --- counting spans without decoding them ------------------------------------------------ */

static int skip_field(Buf *b, uint32_t wt) {
    uint64_t v;
    Buf s;
    switch (wt) {
    case 0: return read_varint(b, &v);
    case 1: return read_fixed64(b, &v);
    case 2: return read_len(b, &s);
    case 5: return skip_fixed32(b);
    default: return BAIL;
    }
}

/* Spans under ``b``, ``depth`` levels below the request: resource_spans (field 1),
 * scope_spans (field 2), spans (field 2). Other fields are skipped, not checked. */
static Py_ssize_t count_in(Buf b, int depth) {
    Py_ssize_t n = 0;
    while (b.p < b.end) {
        uint32_t f, wt;
        Buf s;
        if (read_tag(&b, &f, &wt) < 0) return BAIL;
        if (f == (depth == 0 ? 1u : 2u) && wt == 2) {
            if (read_len(&b, &s) < 0) return BAIL;
            if (depth == 2) {
                n++;
            } else {
                Py_ssize_t k = count_in(s, depth + 1);
                if (k < 0) return BAIL;
                n += k;
            }
        } else if (skip_field(&b, wt) < 0) {
            return BAIL;
        }
    }
    return n;
}

static PyObject *count_spans(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Buf b = {view.buf, (const uint8_t *)view.buf + view.len};
    Py_ssize_t n = count_in(b, 0);
    PyBuffer_Release(&view);
    if (n < 0) Py_RETURN_NONE;
    return PyLong_FromSsize_t(n);
}

/* Replaces the kept attributes all at once: every entry is checked and copied aside first,
 * so a failure part-way leaves the previous configuration whole (read_span() reads ranks[]
 * and values[] only below n_columns, which every known column must be). */
static PyObject *configure(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *keys;
    int columns, int_col;
    if (!PyArg_ParseTuple(args, "O!ii", &PyList_Type, &keys, &columns, &int_col)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (n > MAX_KEYS || columns < 0 || columns > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "too many semantic-convention keys or columns");
        return NULL;
    }
    if (int_col < -1 || int_col >= columns) {
        PyErr_SetString(PyExc_ValueError, "int column out of range");
        return NULL;
    }
    struct {
        char *key;
        size_t len;
        int column;
        int rank;
    } staged[MAX_KEYS];
    int n_staged = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *key;
        Py_ssize_t len;
        int column, rank;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(keys, i), "s#ii", &key, &len, &column, &rank))
            goto fail;
        if (column < 0 || column >= columns) {
            PyErr_SetString(PyExc_ValueError, "column out of range");
            goto fail;
        }
        char *copy = PyMem_Malloc(len ? (size_t)len : 1);
        if (copy == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(copy, key, (size_t)len);
        staged[n_staged].key = copy;
        staged[n_staged].len = (size_t)len;
        staged[n_staged].column = column;
        staged[n_staged].rank = rank;
        n_staged++;
    }
    for (int i = 0; i < n_known; i++) PyMem_Free(known[i].key);
    for (int i = 0; i < n_staged; i++) {
        known[i].key = staged[i].key;
        known[i].len = staged[i].len;
        known[i].column = staged[i].column;
        known[i].rank = staged[i].rank;
    }
    n_known = n_staged;
    fill_buckets();
    n_columns = columns;
    int_column = int_col;
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < n_staged; i++) PyMem_Free(staged[i].key);
    return NULL;
}

static void free_keys(ResourceKey *keys, int *n) {
    for (int i = 0; i < *n; i++) PyMem_Free(keys[i].key);
    *n = 0;
}

/* Replaces ``keys`` with the list's; on failure leaves none. */
static int take_keys(PyObject *list, ResourceKey *keys, int max, int *n, int with_slot) {
    free_keys(keys, n);
    if (PyList_GET_SIZE(list) > max) {
        PyErr_SetString(PyExc_ValueError, "too many resource attributes");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        const char *key;
        Py_ssize_t len;
        int slot = 0, rank = (int)i;
        if (with_slot ? !PyArg_ParseTuple(item, "s#ii", &key, &len, &slot, &rank)
                      : !PyArg_Parse(item, "s#", &key, &len)) {
            free_keys(keys, n);
            return -1;
        }
        if (slot < 0 || slot >= MAX_SLOTS) {
            free_keys(keys, n);
            PyErr_SetString(PyExc_ValueError, "slot out of range");
            return -1;
        }
        char *copy = PyMem_Malloc(len ? (size_t)len : 1);
        if (copy == NULL) {
            free_keys(keys, n);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(copy, key, (size_t)len);
        keys[*n] = (ResourceKey){copy, (size_t)len, slot, rank};
        (*n)++;
    }
    return 0;
}

static PyObject *configure_resource(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *keys, *instances;
    int slots;
    if (!PyArg_ParseTuple(args, "O!iO!", &PyList_Type, &keys, &slots, &PyList_Type, &instances))
        return NULL;
    if (slots < 0 || slots > MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many identity attributes");
        return NULL;
    }
    n_slots = 0; /* nothing half-configured is read if a step below fails */
    if (take_keys(keys, resource_keys, MAX_RESOURCE_KEYS, &n_resource_keys, 1) < 0 ||
        take_keys(instances, instance_keys, MAX_INSTANCE_KEYS, &n_instance_keys, 0) < 0) {
        free_keys(resource_keys, &n_resource_keys);
        return NULL;
    }
    for (int i = 0; i < n_resource_keys; i++)
        if (resource_keys[i].slot >= slots) {
            free_keys(resource_keys, &n_resource_keys);
            PyErr_SetString(PyExc_ValueError, "slot out of range");
            return NULL;
        }
    n_slots = slots;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O,
     "decode(body) -> (core columns, semconv columns, refusals), or None: use protobuf."},
    {"count_spans", count_spans, METH_O,
     "count_spans(body) -> the spans in a request without decoding it, or None if unsure."},
    {"configure", configure, METH_VARARGS,
     "configure([(key, column, rank), ...], columns, int_column): the attributes to keep."},
    {"configure_resource", configure_resource, METH_VARARGS,
     "configure_resource([(key, slot, rank), ...], slots, [instance key, ...]): identity."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "spanwatch.otlp._wire",
    .m_doc = "OTLP trace requests straight into columns.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    EMPTY = PyUnicode_FromString("");
    TRUE_TEXT = PyUnicode_InternFromString("true");
    FALSE_TEXT = PyUnicode_InternFromString("false");
    UNKNOWN_SERVICE = PyUnicode_InternFromString("unknown_service");
    SEPARATOR = PyUnicode_FromString("\x1f");
    fill_buckets(); /* none known until configure(): every bucket empty */
    if (SEPARATOR == NULL || EMPTY == NULL || TRUE_TEXT == NULL || FALSE_TEXT == NULL || UNKNOWN_SERVICE == NULL)
        return NULL;
    return PyModule_Create(&module);
}
