/* trainguard.ledger._speedups: the per-entry work of ledger verification in C.
 *
 * Optional: trainguard.ledger._fast falls back to pure Python when this module
 * was not built, and the tests compare the two on the same inputs. Every
 * function here computes exactly what its Python twin in _fast.py computes;
 * anything it cannot decide (a row of another shape, text outside the one
 * canonical edge form) is handed back to the caller, never guessed.
 *
 * Reads untrusted bytes (rows of a database that may have been tampered with):
 * every read is bounds-checked against the buffer's end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The SHA256_* calls are deprecated in OpenSSL 3 but still provided; they hash
 * small inputs without setting up an EVP context per call, and use the CPU's
 * SHA extensions where present. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <string.h>

/* ---- hashing (RFC 6962 section 2.1) -------------------------------------------- */

static const unsigned char LEAF_PREFIX = 0x00;
static const unsigned char NODE_PREFIX = 0x01;

/* SHA-256(prefix || a || b) into md (b may be NULL). md may alias a or b: both are
 * read before md is written. */
static void
digest_parts(unsigned char prefix, const void *a, size_t alen, const void *b, size_t blen,
             unsigned char *md)
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, &prefix, 1);
    SHA256_Update(&ctx, a, alen);
    if (b != NULL)
        SHA256_Update(&ctx, b, blen);
    SHA256_Final(md, &ctx);
}

static PyObject *
hash_bytes(const unsigned char *md)
{
    return PyBytes_FromStringAndSize((const char *)md, SHA256_DIGEST_LENGTH);
}

static PyObject *
hash_parts(unsigned char prefix, const char *a, Py_ssize_t alen, const char *b, Py_ssize_t blen)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    digest_parts(prefix, a, (size_t)alen, b, (size_t)blen, md);
    return hash_bytes(md);
}

/* ---- list helpers ----------------------------------------------------------------- */

/* One item of a list to a new reference (NULL with an exception on an error). */
typedef PyObject *(*ItemFn)(PyObject *item, Py_ssize_t i);

/* [one(item, i) for each item]; TypeError (`what`) when `list` is not a list. */
static PyObject *
map_list(PyObject *list, ItemFn one, const char *what)
{
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, what);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = one(PyList_GET_ITEM(list, i), i);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* One row to a new reference, NULL without an exception when the row is not taken,
 * or NULL with an exception on an error. */
typedef PyObject *(*RowFn)(PyObject *row, void *ctx);

/* (taken, others): one(row) of every row it takes, in order, and the positions of
 * the rest. */
static PyObject *
split_rows(PyObject *rows, RowFn one, void *ctx)
{
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *taken = PyList_New(0), *others = PyList_New(0);
    if (taken == NULL || others == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *got = one(PyList_GET_ITEM(rows, i), ctx);
        if (got == NULL && PyErr_Occurred())
            goto fail;
        int err;
        if (got != NULL) {
            err = PyList_Append(taken, got);
            Py_DECREF(got);
        } else {
            PyObject *pos = PyLong_FromSsize_t(i);
            err = pos == NULL ? -1 : PyList_Append(others, pos);
            Py_XDECREF(pos);
        }
        if (err < 0)
            goto fail;
    }
    return Py_BuildValue("(NN)", taken, others);
fail:
    Py_XDECREF(taken);
    Py_XDECREF(others);
    return NULL;
}

PyDoc_STRVAR(leaf_hashes_doc,
"leaf_hashes(datas, /)\n--\n\n"
"SHA-256(0x00 || data) of each bytes object in a list.\n\n"
"Raises TypeError for an item that is not bytes.");

static PyObject *
leaf_hash_of(PyObject *data, Py_ssize_t i)
{
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "item %zd is %.100s, not bytes", i, Py_TYPE(data)->tp_name);
        return NULL;
    }
    return hash_parts(LEAF_PREFIX, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), NULL, 0);
}

static PyObject *
leaf_hashes(PyObject *module, PyObject *datas)
{
    return map_list(datas, leaf_hash_of, "leaf_hashes expects a list of bytes");
}

PyDoc_STRVAR(perfect_levels_doc,
"perfect_levels(leaves, /)\n--\n\n"
"Every perfect subtree hash over a list of leaf hashes, level by level:\n"
"levels[l][j] = hash of leaves [j * 2**l, (j + 1) * 2**l).");

static PyObject *
perfect_levels(PyObject *module, PyObject *leaves)
{
    PyObject *current = PySequence_List(leaves);
    if (current == NULL)
        return NULL;
    PyObject *levels = PyList_New(0);
    if (levels == NULL || PyList_Append(levels, current) < 0)
        goto fail;
    while (PyList_GET_SIZE(current) >= 2) {
        Py_ssize_t n = PyList_GET_SIZE(current) / 2;
        PyObject *next = PyList_New(n);
        if (next == NULL)
            goto fail;
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *l = PyList_GET_ITEM(current, 2 * j), *r = PyList_GET_ITEM(current, 2 * j + 1);
            if (!PyBytes_Check(l) || !PyBytes_Check(r)) {
                Py_DECREF(next);
                PyErr_SetString(PyExc_TypeError, "tree hashes must be bytes");
                goto fail;
            }
            PyObject *h = hash_parts(NODE_PREFIX, PyBytes_AS_STRING(l), PyBytes_GET_SIZE(l),
                                     PyBytes_AS_STRING(r), PyBytes_GET_SIZE(r));
            if (h == NULL) {
                Py_DECREF(next);
                goto fail;
            }
            PyList_SET_ITEM(next, j, h);
        }
        int err = PyList_Append(levels, next);
        Py_DECREF(current);
        current = next;
        if (err < 0)
            goto fail;
    }
    Py_DECREF(current);
    return levels;
fail:
    Py_DECREF(current);
    Py_XDECREF(levels);
    return NULL;
}

/* ---- the canonical edge entry ----------------------------------------------------
 *
 * The grammar of trainguard.ledger._index.EDGE_FAST, byte for byte:
 *
 *   {"artifact_kind":S,"at":I,"digest":S,"direction":S,"kind":"edge"[,"name":S],
 *    "run_id":S[,"size":I],"v":I}
 *
 * S: '"', bytes other than '"', '\\' and 0x00-0x1f, '"', and its content must be
 * valid UTF-8 (the Python path decodes the whole entry first);
 * I: -?(0|[1-9][0-9]*).
 */

typedef struct {
    const char *p, *end;
} Cursor;

static int
lit(Cursor *c, const char *s, Py_ssize_t n)
{
    if (c->end - c->p < n || memcmp(c->p, s, (size_t)n) != 0)
        return 0;
    c->p += n;
    return 1;
}

#define LIT(c, s) lit((c), (s), (Py_ssize_t)(sizeof(s) - 1))

static int
str(Cursor *c, const char **start, Py_ssize_t *len)
{
    if (c->p >= c->end || *c->p != '"')
        return 0;
    const char *q = ++c->p;
    while (q < c->end) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '"') {
            *start = c->p;
            *len = q - c->p;
            c->p = q + 1;
            return 1;
        }
        if (ch == '\\' || ch < 0x20)
            return 0;
        q++;
    }
    return 0;
}

static int
integer(Cursor *c)
{
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p >= c->end)
        return 0;
    if (*c->p == '0') {
        c->p++;
        return 1;
    }
    if (*c->p < '1' || *c->p > '9')
        return 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return 1;
}

typedef struct {
    const char *s[4]; /* artifact_kind, digest, direction, run_id */
    Py_ssize_t n[4];
    const char *name;
    Py_ssize_t name_len;
} EdgeFields;

static int
parse_edge(const char *buf, Py_ssize_t size, EdgeFields *f)
{
    Cursor c = {buf, buf + size};
    f->name = NULL;
    f->name_len = 0;
    return LIT(&c, "{\"artifact_kind\":") && str(&c, &f->s[0], &f->n[0])
        && LIT(&c, ",\"at\":") && integer(&c)
        && LIT(&c, ",\"digest\":") && str(&c, &f->s[1], &f->n[1])
        && LIT(&c, ",\"direction\":") && str(&c, &f->s[2], &f->n[2])
        && LIT(&c, ",\"kind\":\"edge\"")
        && (!LIT(&c, ",\"name\":") || str(&c, &f->name, &f->name_len))
        && LIT(&c, ",\"run_id\":") && str(&c, &f->s[3], &f->n[3])
        && (!LIT(&c, ",\"size\":") || integer(&c))
        && LIT(&c, ",\"v\":") && integer(&c)
        && LIT(&c, "}") && c.p == c.end;
}

/* A str for a field, reusing the previous object when the bytes repeat (an
 * artifact kind or a direction takes a handful of values in a whole log). */
typedef struct {
    PyObject *obj;
} Memo;

static PyObject *
field_str(const char *s, Py_ssize_t n, Memo *memo)
{
    if (memo != NULL && memo->obj != NULL && PyUnicode_GET_LENGTH(memo->obj) == n
        && PyUnicode_KIND(memo->obj) == PyUnicode_1BYTE_KIND && PyUnicode_IS_ASCII(memo->obj)
        && memcmp(PyUnicode_DATA(memo->obj), s, (size_t)n) == 0) {
        Py_INCREF(memo->obj);
        return memo->obj;
    }
    PyObject *u = PyUnicode_DecodeUTF8(s, n, "strict");
    if (u != NULL && memo != NULL) {
        Py_XDECREF(memo->obj);
        Py_INCREF(u);
        memo->obj = u;
    }
    return u;
}

/* The values (artifact_kind, digest, direction, name or None, run_id) of one
 * canonical edge entry, as new references in out[]: 1 when read, 0 when the
 * bytes are anything else (no exception set), -1 on an error. */
static int
edge_values(PyObject *data, Memo memos[2], PyObject *out[5])
{
    EdgeFields f;
    if (!PyBytes_Check(data) || !parse_edge(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &f))
        return 0;
    Memo *memo[5] = {&memos[0], NULL, &memos[1], NULL, NULL};
    const char *src[5] = {f.s[0], f.s[1], f.s[2], f.name, f.s[3]};
    Py_ssize_t len[5] = {f.n[0], f.n[1], f.n[2], f.name_len, f.n[3]};
    for (int k = 0; k < 5; k++) {
        if (src[k] == NULL) { /* no name key */
            Py_INCREF(Py_None);
            out[k] = Py_None;
            continue;
        }
        out[k] = field_str(src[k], len[k], memo[k]);
        if (out[k] == NULL) {
            while (k > 0)
                Py_DECREF(out[--k]);
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear(); /* not UTF-8: the Python path reports it */
                return 0;
            }
            return -1;
        }
    }
    return 1;
}

/* The row (leaf, run_id, direction, digest, artifact_kind) of one canonical edge
 * entry; NULL without an exception when the entry is anything else. */
static PyObject *
edge_row(PyObject *leaf, PyObject *kind, PyObject *data, Memo memos[2])
{
    if (!PyUnicode_Check(kind) || PyUnicode_CompareWithASCIIString(kind, "edge") != 0)
        return NULL;
    PyObject *v[5];
    int got = edge_values(data, memos, v);
    if (got <= 0)
        return NULL;
    Py_DECREF(v[3]); /* the name: not a column */
    PyObject *row = PyTuple_New(5);
    if (row == NULL) {
        Py_DECREF(v[0]);
        Py_DECREF(v[1]);
        Py_DECREF(v[2]);
        Py_DECREF(v[4]);
        return NULL;
    }
    Py_INCREF(leaf); /* PyTuple_SET_ITEM steals each reference */
    PyTuple_SET_ITEM(row, 0, leaf);
    PyTuple_SET_ITEM(row, 1, v[4]);
    PyTuple_SET_ITEM(row, 2, v[2]);
    PyTuple_SET_ITEM(row, 3, v[1]);
    PyTuple_SET_ITEM(row, 4, v[0]);
    return row;
}

/* The edge row of one (leaf, kind, data, ...) row, if it is a canonical edge entry. */
static PyObject *
edge_row_of(PyObject *row, void *memos)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 3)
        return NULL;
    return edge_row(PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1), PyTuple_GET_ITEM(row, 2),
                    (Memo *)memos);
}

PyDoc_STRVAR(edge_rows_doc,
"edge_rows(rows, /)\n--\n\n"
"Derived edge rows of the canonical edge entries among (leaf, kind, data, ...) rows.\n\n"
"Returns (edges, others): edges holds (leaf, run_id, direction, digest,\n"
"artifact_kind) for each row whose kind is 'edge' and whose data is an edge\n"
"entry in its one canonical form, in row order; others holds the positions of\n"
"every other row, for the full parser.");

static PyObject *
edge_rows(PyObject *module, PyObject *rows)
{
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "edge_rows expects a list of rows");
        return NULL;
    }
    Memo memos[2] = {{NULL}, {NULL}};
    PyObject *out = split_rows(rows, edge_row_of, memos);
    Py_XDECREF(memos[0].obj);
    Py_XDECREF(memos[1].obj);
    return out;
}

/* ---- the canonical run entry ------------------------------------------------------
 *
 * The grammar of trainguard.ledger._index.RUN_FAST, byte for byte (S, I as above;
 * [...] optional):
 *
 *   {"accelerator_count":I,"accelerator_type":S[,"code_commit":S][,"code_diff_hash":S]
 *    [,"command":S][,"config_hash":S][,"data_manifest":S][,"ended_at":I]
 *    [,"env_baseline":S],"hosts":[[S(,S)*]][,"job":S],"kind":"run","run_id":S
 *    [,"seeds":{[S:I(,S:I)*]}],"started_at":I,"user":S,"v":I,"world_size":I}
 *
 * Every string, read or skipped, must be valid UTF-8 (the Python path decodes the
 * whole entry first).
 */

/* A string whose value is not needed: 1 when present and valid, 0 otherwise. */
static int
skip_str(Cursor *c)
{
    const char *s;
    Py_ssize_t n;
    if (!str(c, &s, &n))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80) { /* not plain ASCII: check it decodes */
            PyObject *u = PyUnicode_DecodeUTF8(s, n, "strict");
            if (u == NULL) {
                PyErr_Clear();
                return 0;
            }
            Py_DECREF(u);
            break;
        }
    }
    return 1;
}

/* An optional ,"key":S whose value is not needed: 1 unless the key is there and
 * its value is not a valid string. */
static int
opt_skip(Cursor *c, const char *key, Py_ssize_t n)
{
    return !lit(c, key, n) || skip_str(c);
}

#define OPT_SKIP(c, s) opt_skip((c), (s), (Py_ssize_t)(sizeof(s) - 1))

/* An integer token: records where it is. */
static int
int_at(Cursor *c, const char **start, Py_ssize_t *len)
{
    *start = c->p;
    if (!integer(c))
        return 0;
    *len = c->p - *start;
    return 1;
}

/* A new int from an integer token; NULL with ValueError (too many digits) cleared
 * and *defer set, or NULL with another exception. */
static PyObject *
int_from(const char *s, Py_ssize_t n, int *defer)
{
    char small[32], *buf = small;
    if (n >= (Py_ssize_t)sizeof(small)) {
        buf = PyMem_Malloc((size_t)n + 1);
        if (buf == NULL)
            return PyErr_NoMemory();
    }
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    PyObject *v = PyLong_FromString(buf, NULL, 10);
    if (buf != small)
        PyMem_Free(buf);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear(); /* beyond int()'s digit limit: the Python path reports it */
        *defer = 1;
    }
    return v;
}

typedef struct {
    const char *n[4]; /* accelerator_count, ended_at, started_at, world_size (ints) */
    Py_ssize_t nl[4];
    const char *s[4]; /* accelerator_type, env_baseline, run_id, user */
    Py_ssize_t sl[4];
    const char *hosts; /* the list's inner text */
    Py_ssize_t hosts_len;
} RunFields;

static int
parse_run(const char *buf, Py_ssize_t size, RunFields *f)
{
    Cursor c = {buf, buf + size};
    f->n[1] = NULL;
    f->s[1] = NULL;
    if (!(LIT(&c, "{\"accelerator_count\":") && int_at(&c, &f->n[0], &f->nl[0])
          && LIT(&c, ",\"accelerator_type\":") && str(&c, &f->s[0], &f->sl[0])
          && OPT_SKIP(&c, ",\"code_commit\":") && OPT_SKIP(&c, ",\"code_diff_hash\":")
          && OPT_SKIP(&c, ",\"command\":") && OPT_SKIP(&c, ",\"config_hash\":")
          && OPT_SKIP(&c, ",\"data_manifest\":")))
        return 0;
    if (LIT(&c, ",\"ended_at\":") && !int_at(&c, &f->n[1], &f->nl[1]))
        return 0;
    if (LIT(&c, ",\"env_baseline\":") && !str(&c, &f->s[1], &f->sl[1]))
        return 0;
    if (!LIT(&c, ",\"hosts\":["))
        return 0;
    f->hosts = c.p;
    if (c.p < c.end && *c.p == '"') {
        do {
            if (!skip_str(&c))
                return 0;
        } while (LIT(&c, ","));
    }
    f->hosts_len = c.p - f->hosts;
    if (!(LIT(&c, "]") && OPT_SKIP(&c, ",\"job\":") && LIT(&c, ",\"kind\":\"run\",\"run_id\":")
          && str(&c, &f->s[2], &f->sl[2])))
        return 0;
    if (LIT(&c, ",\"seeds\":{")) {
        if (c.p < c.end && *c.p == '"') {
            do {
                if (!(skip_str(&c) && LIT(&c, ":") && integer(&c)))
                    return 0;
            } while (LIT(&c, ","));
        }
        if (!LIT(&c, "}"))
            return 0;
    }
    return LIT(&c, ",\"started_at\":") && int_at(&c, &f->n[2], &f->nl[2])
        && LIT(&c, ",\"user\":") && str(&c, &f->s[3], &f->sl[3]) && LIT(&c, ",\"v\":")
        && integer(&c) && LIT(&c, ",\"world_size\":") && int_at(&c, &f->n[3], &f->nl[3])
        && LIT(&c, "}") && c.p == c.end;
}

/* The hosts of a parsed run entry as a tuple of str (the list's strings are known
 * to be plain and valid). */
static PyObject *
run_hosts(const RunFields *f)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Cursor c = {f->hosts, f->hosts + f->hosts_len};
    while (c.p < c.end) {
        const char *s;
        Py_ssize_t n;
        if (!str(&c, &s, &n)) /* cannot happen: parse_run read these */
            break;
        PyObject *h = PyUnicode_DecodeUTF8(s, n, "strict");
        if (h == NULL || PyList_Append(out, h) < 0) {
            Py_XDECREF(h);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(h);
        LIT(&c, ",");
    }
    PyObject *t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;
}

/* (run_id, user, accelerator_type, accelerator_count, world_size, started_at,
 * ended_at, env_baseline, hosts) of one canonical run entry: a new tuple; None
 * (new reference) for anything else; NULL on an error. */
static PyObject *
run_values(PyObject *data)
{
    RunFields f;
    if (!PyBytes_Check(data) || !parse_run(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &f))
        Py_RETURN_NONE;
    PyObject *v[9] = {NULL};
    int defer = 0;
    /* strings: run_id, user, accelerator_type, env_baseline */
    const int str_slot[4] = {2, 3, 0, 1}, str_pos[4] = {0, 1, 2, 7};
    for (int k = 0; k < 4; k++) {
        int i = str_slot[k];
        if (f.s[i] == NULL) {
            Py_INCREF(Py_None);
            v[str_pos[k]] = Py_None;
            continue;
        }
        v[str_pos[k]] = PyUnicode_DecodeUTF8(f.s[i], f.sl[i], "strict");
        if (v[str_pos[k]] == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                goto fail;
            PyErr_Clear();
            defer = 1;
            goto fail;
        }
    }
    /* ints: accelerator_count, world_size, started_at, ended_at */
    const int int_slot[4] = {0, 3, 2, 1}, int_pos[4] = {3, 4, 5, 6};
    for (int k = 0; k < 4; k++) {
        int i = int_slot[k];
        if (f.n[i] == NULL) {
            Py_INCREF(Py_None);
            v[int_pos[k]] = Py_None;
            continue;
        }
        v[int_pos[k]] = int_from(f.n[i], f.nl[i], &defer);
        if (v[int_pos[k]] == NULL)
            goto fail;
    }
    v[8] = run_hosts(&f);
    if (v[8] == NULL)
        goto fail;
    PyObject *out = PyTuple_New(9);
    if (out == NULL)
        goto fail;
    for (int k = 0; k < 9; k++)
        PyTuple_SET_ITEM(out, k, v[k]);
    return out;
fail:
    for (int k = 0; k < 9; k++)
        Py_XDECREF(v[k]);
    if (defer)
        Py_RETURN_NONE;
    return NULL;
}

static PyObject *
run_values_at(PyObject *data, Py_ssize_t i)
{
    return run_values(data);
}

PyDoc_STRVAR(run_fields_doc,
"run_fields(datas, /)\n--\n\n"
"(run_id, user, accelerator_type, accelerator_count, world_size, started_at,\n"
"ended_at, env_baseline, hosts) of each canonical run entry in a list of entry\n"
"bytes (ended_at and env_baseline None when absent, hosts a tuple); None for any\n"
"other item.");

static PyObject *
run_fields(PyObject *module, PyObject *datas)
{
    return map_list(datas, run_values_at, "run_fields expects a list");
}

/* 1 when a row's column is a str whose UTF-8 is exactly s[0:n], else 0. */
static int
column_is(PyObject *col, const char *s, Py_ssize_t n)
{
    if (!PyUnicode_Check(col))
        return 0;
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(col, &len);
    if (u == NULL) { /* a lone surrogate: no entry says that */
        PyErr_Clear();
        return 0;
    }
    return len == n && memcmp(u, s, (size_t)n) == 0;
}

/* What checked_edges carries from row to row: the dict it fills, and the last
 * artifact kind and direction made (repeated across a whole answer). */
typedef struct {
    PyObject *checked;
    Memo memos[2];
} EdgeCheck;

/* The checked edge of one row (leaf, run_id, data, leaf_hash): (leaf, run_id,
 * direction, digest, artifact_kind, name) as the entry says them, when the entry
 * is intact, a canonical edge entry, and names the row's run id; NULL without an
 * exception otherwise. Records the entry in checked first (see checked_edges). */
static PyObject *
checked_edge(PyObject *row, EdgeCheck *ctx)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 4)
        return NULL;
    PyObject *leaf = PyTuple_GET_ITEM(row, 0), *run_id = PyTuple_GET_ITEM(row, 1);
    PyObject *data = PyTuple_GET_ITEM(row, 2), *stored = PyTuple_GET_ITEM(row, 3);
    if (!PyLong_CheckExact(leaf) || !PyBytes_Check(data))
        return NULL;
    unsigned char md[SHA256_DIGEST_LENGTH];
    digest_parts(LEAF_PREFIX, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), NULL, 0,
                 md);
    int intact = PyBytes_Check(stored) && PyBytes_GET_SIZE(stored) == SHA256_DIGEST_LENGTH
                 && memcmp(PyBytes_AS_STRING(stored), md, SHA256_DIGEST_LENGTH) == 0;
    PyObject *pair = PyTuple_Pack(2, data, intact ? stored : Py_None);
    if (pair == NULL)
        return NULL;
    int err = PyDict_SetItem(ctx->checked, leaf, pair);
    Py_DECREF(pair);
    if (err < 0)
        return NULL;
    EdgeFields f;
    if (!intact || !parse_edge(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &f)
        || !column_is(run_id, f.s[3], f.n[3]))
        return NULL;
    PyObject *edge = PyTuple_New(6);
    if (edge == NULL)
        return NULL;
    Py_INCREF(leaf); /* PyTuple_SET_ITEM steals each reference */
    PyTuple_SET_ITEM(edge, 0, leaf);
    Py_INCREF(run_id);
    PyTuple_SET_ITEM(edge, 1, run_id);
    /* columns 2-5: direction, digest, artifact_kind, name (EdgeFields order: kind,
     * digest, direction, run_id) */
    const char *src[4] = {f.s[2], f.s[1], f.s[0], f.name};
    Py_ssize_t len[4] = {f.n[2], f.n[1], f.n[0], f.name_len};
    Memo *memo[4] = {&ctx->memos[1], NULL, &ctx->memos[0], NULL};
    for (int k = 0; k < 4; k++) {
        PyObject *v = Py_None;
        if (src[k] == NULL) /* no name key */
            Py_INCREF(v);
        else if ((v = field_str(src[k], len[k], memo[k])) == NULL) {
            Py_DECREF(edge);
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                PyErr_Clear(); /* not UTF-8: the Python path reports it */
            return NULL;
        }
        PyTuple_SET_ITEM(edge, k + 2, v);
    }
    return edge;
}

static PyObject *
checked_edge_of(PyObject *row, void *ctx)
{
    return checked_edge(row, (EdgeCheck *)ctx);
}

PyDoc_STRVAR(checked_edges_doc,
"checked_edges(rows, checked, /)\n--\n\n"
"A run's edges from their entries, in one pass over rows (leaf, run_id, data,\n"
"leaf_hash).\n\n"
"Sets checked[leaf] = (data, leaf_hash, or None where SHA-256(0x00 || data)\n"
"differs from it) for every row with an int leaf and bytes data. Returns\n"
"(edges, others): edges holds (leaf, run_id, direction, digest, artifact_kind,\n"
"name or None), as the entry says them, for each row whose entry is intact, is\n"
"an edge entry in its one canonical form and names the row's run id, in row\n"
"order; others holds the positions of every other row, for the full checks.");

static PyObject *
checked_edges(PyObject *module, PyObject *args)
{
    EdgeCheck ctx = {NULL, {{NULL}, {NULL}}};
    PyObject *rows;
    if (!PyArg_ParseTuple(args, "O!O!:checked_edges", &PyList_Type, &rows, &PyDict_Type,
                          &ctx.checked))
        return NULL;
    PyObject *out = split_rows(rows, checked_edge_of, &ctx);
    Py_XDECREF(ctx.memos[0].obj);
    Py_XDECREF(ctx.memos[1].obj);
    return out;
}

/* ---- batch inclusion proofs (trainguard.ledger._multiproof) ------------------------
 *
 * The walk of a batch proof over the pieces of a tree (the perfect subtrees of
 * decompose(0, size)), up to the last piece holding a proven leaf: a piece with
 * no proven leaf takes one proof hash; in a piece with some, level by level from
 * the leaves up and left to right, every known node whose sibling is not known
 * takes its sibling from the proof. batch_plan_keys lists those siblings' keys,
 * batch_piece_hashes recomputes each piece's hash from leaf hashes and a proof.
 */

typedef struct {
    long long idx;
    unsigned char h[SHA256_DIGEST_LENGTH];
} Known;

/* indexes: a list of ints, strictly increasing, in [0, size). */
static long long *
read_indexes(PyObject *list, long long size, Py_ssize_t *n)
{
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "indexes must be a list of ints");
        return NULL;
    }
    *n = PyList_GET_SIZE(list);
    long long *out = PyMem_Malloc(sizeof(long long) * (size_t)(*n > 0 ? *n : 1));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        long long v = PyLong_CheckExact(item) ? PyLong_AsLongLong(item) : -1;
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
        if (!PyLong_CheckExact(item) || v < 0 || v >= size || (i > 0 && v <= out[i - 1])) {
            PyMem_Free(out);
            PyErr_SetString(PyExc_ValueError,
                            "indexes must be increasing ints inside the tree");
            return NULL;
        }
        out[i] = v;
    }
    return out;
}

static int
take_hash(PyObject *seq, Py_ssize_t *pos, unsigned char *dst)
{
    if (*pos >= PyList_GET_SIZE(seq)) {
        PyErr_SetString(PyExc_ValueError, "the batch proof is too short");
        return -1;
    }
    PyObject *h = PyList_GET_ITEM(seq, *pos);
    if (!PyBytes_Check(h) || PyBytes_GET_SIZE(h) != SHA256_DIGEST_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "tree hashes must be 32 bytes");
        return -1;
    }
    memcpy(dst, PyBytes_AS_STRING(h), SHA256_DIGEST_LENGTH);
    (*pos)++;
    return 0;
}

static void
node(const unsigned char *l, const unsigned char *r, unsigned char *dst)
{
    digest_parts(NODE_PREFIX, l, SHA256_DIGEST_LENGTH, r, SHA256_DIGEST_LENGTH, dst);
}

static int
append_hash(PyObject *out, const unsigned char *md)
{
    PyObject *b = hash_bytes(md);
    if (b == NULL)
        return -1;
    int err = PyList_Append(out, b);
    Py_DECREF(b);
    return err;
}

static int
append_key(PyObject *keys, int level, long long index)
{
    PyObject *key = Py_BuildValue("(iL)", level, index);
    if (key == NULL)
        return -1;
    int err = PyList_Append(keys, key);
    Py_DECREF(key);
    return err;
}

/* One walk; plan mode (hashes == NULL) appends sibling keys to out, hash mode
 * appends piece hashes to out and counts the proof hashes it consumed. */
static int
walk(long long size, const long long *idx, Py_ssize_t n, PyObject *hashes, PyObject *proof,
     PyObject *out, Py_ssize_t *used)
{
    Known *cur = PyMem_Malloc(sizeof(Known) * (size_t)(n > 0 ? n : 1));
    if (cur == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t k = 0;
    long long start = 0;
    for (int level = 62; level >= 0 && k < n; level--) {
        if (!((size >> level) & 1))
            continue;
        long long index = start >> level, lo = start, hi = start + (1LL << level);
        start = hi;
        Py_ssize_t m = 0;
        for (; k < n && idx[k] < hi; k++, m++) {
            Py_ssize_t at = k;
            cur[m].idx = idx[k] - lo;
            if (hashes != NULL && take_hash(hashes, &at, cur[m].h) < 0)
                goto fail;
        }
        if (m == 0) {
            if (hashes == NULL) {
                if (append_key(out, level, index) < 0)
                    goto fail;
            } else {
                unsigned char h[SHA256_DIGEST_LENGTH];
                if (take_hash(proof, used, h) < 0 || append_hash(out, h) < 0)
                    goto fail;
            }
            continue;
        }
        for (int lv = 0; lv < level; lv++) {
            long long base = index << (level - lv);
            Py_ssize_t j = 0, w = 0;
            while (j < m) {
                long long i = cur[j].idx;
                unsigned char sib[SHA256_DIGEST_LENGTH];
                if (!(i & 1) && j + 1 < m && cur[j + 1].idx == i + 1) {
                    if (hashes != NULL)
                        node(cur[j].h, cur[j + 1].h, sib);
                    j += 2;
                } else {
                    if (hashes == NULL) {
                        if (append_key(out, lv, base + (i ^ 1)) < 0)
                            goto fail;
                    } else {
                        if (take_hash(proof, used, sib) < 0)
                            goto fail;
                        if (i & 1)
                            node(sib, cur[j].h, sib);
                        else
                            node(cur[j].h, sib, sib);
                    }
                    j += 1;
                }
                cur[w].idx = i >> 1;
                if (hashes != NULL)
                    memcpy(cur[w].h, sib, SHA256_DIGEST_LENGTH);
                w++;
            }
            m = w;
        }
        if (hashes != NULL && append_hash(out, cur[0].h) < 0)
            goto fail;
    }
    PyMem_Free(cur);
    return 0;
fail:
    PyMem_Free(cur);
    return -1;
}

PyDoc_STRVAR(batch_plan_keys_doc,
"batch_plan_keys(size, indexes, /)\n--\n\n"
"The (level, index) of each hash a batch proof of indexes lists, in order, up to\n"
"the last piece holding a proven leaf. Raises ValueError unless indexes are\n"
"increasing ints inside the tree.");

static PyObject *
batch_plan_keys(PyObject *module, PyObject *args)
{
    long long size;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "LO:batch_plan_keys", &size, &list))
        return NULL;
    Py_ssize_t n;
    long long *idx = read_indexes(list, size, &n);
    if (idx == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    Py_ssize_t used = 0;
    if (out == NULL || walk(size, idx, n, NULL, NULL, out, &used) < 0) {
        Py_XDECREF(out);
        out = NULL;
    }
    PyMem_Free(idx);
    return out;
}

PyDoc_STRVAR(batch_piece_hashes_doc,
"batch_piece_hashes(size, indexes, hashes, proof, /)\n--\n\n"
"(piece hashes, proof hashes consumed): each piece's hash up to the last piece\n"
"holding a proven leaf, from the leaf hashes of indexes and the proof. Raises\n"
"ValueError if the proof is too short or indexes are not increasing ints inside\n"
"the tree, TypeError for a hash that is not 32 bytes.");

static PyObject *
batch_piece_hashes(PyObject *module, PyObject *args)
{
    long long size;
    PyObject *list, *hashes, *proof;
    if (!PyArg_ParseTuple(args, "LOO!O!:batch_piece_hashes", &size, &list, &PyList_Type,
                          &hashes, &PyList_Type, &proof))
        return NULL;
    Py_ssize_t n;
    long long *idx = read_indexes(list, size, &n);
    if (idx == NULL)
        return NULL;
    if (PyList_GET_SIZE(hashes) != n) {
        PyMem_Free(idx);
        PyErr_SetString(PyExc_ValueError, "one hash per index");
        return NULL;
    }
    PyObject *out = PyList_New(0), *result = NULL;
    Py_ssize_t used = 0;
    if (out != NULL && walk(size, idx, n, hashes, proof, out, &used) == 0)
        result = Py_BuildValue("(On)", out, used);
    Py_XDECREF(out);
    PyMem_Free(idx);
    return result;
}

/* ---- one step of a blast radius's closure (trainguard.ledger._blast_search) ------- */

static int
is_produced(PyObject *direction)
{
    return PyUnicode_Check(direction) &&
           PyUnicode_CompareWithASCIIString(direction, "produced") == 0;
}

/* artifacts[digest] = cls((digest, kind, name, depth, (run_id,), 0, (leaf,))) and
 * new[digest] = row for a produced row first reaching its digest. */
static int
add_artifact(PyObject *row, PyObject *artifacts, PyObject *new, PyObject *depth,
             PyTypeObject *cls)
{
    PyObject *leaf = PyTuple_GET_ITEM(row, 0), *run = PyTuple_GET_ITEM(row, 1);
    PyObject *digest = PyTuple_GET_ITEM(row, 3);
    PyObject *runs = PyTuple_Pack(1, run), *leaves = PyTuple_Pack(1, leaf);
    PyObject *zero = PyLong_FromLong(0), *fields = NULL, *args = NULL, *art = NULL;
    int rc = -1;
    if (runs == NULL || leaves == NULL || zero == NULL)
        goto done;
    fields = PyTuple_Pack(7, digest, PyTuple_GET_ITEM(row, 4), PyTuple_GET_ITEM(row, 5), depth,
                          runs, zero, leaves);
    args = fields ? PyTuple_Pack(1, fields) : NULL;
    /* tuple.__new__(cls, fields): the one way to make an instance of a tuple subclass */
    art = args ? PyTuple_Type.tp_new(cls, args, NULL) : NULL;
    if (art == NULL || PyDict_SetItem(artifacts, digest, art) < 0)
        goto done;
    rc = PyDict_SetItem(new, digest, row);
done:
    Py_XDECREF(runs);
    Py_XDECREF(leaves);
    Py_XDECREF(zero);
    Py_XDECREF(fields);
    Py_XDECREF(args);
    Py_XDECREF(art);
    return rc;
}

PyDoc_STRVAR(reach_doc,
"reach(edges, artifacts, depth, cls, /)\n--\n\n"
"One closure step of a blast radius over edges rows (leaf, run_id, direction,\n"
"digest, artifact_kind, name). Each row whose direction is 'produced' and whose\n"
"digest is not in the dict artifacts adds artifacts[digest] =\n"
"cls((digest, artifact_kind, name, depth, (run_id,), 0, (leaf,))) (cls a tuple\n"
"subclass) and new[digest] = row. Returns (new, again, own): again\n"
"holds the later 'produced' rows of a digest this call added, in row order (the\n"
"caller merges them); own every other row whose digest is in new, in row order.");

static PyObject *
reach(PyObject *module, PyObject *args)
{
    PyObject *edges, *artifacts, *depth;
    PyTypeObject *cls;
    if (!PyArg_ParseTuple(args, "O!O!OO!:reach", &PyList_Type, &edges, &PyDict_Type, &artifacts,
                          &depth, &PyType_Type, &cls))
        return NULL;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "reach expects a tuple subclass");
        return NULL;
    }
    PyObject *new = PyDict_New(), *again = PyList_New(0), *own = PyList_New(0), *out = NULL;
    if (new == NULL || again == NULL || own == NULL)
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(edges);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(edges, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 6) {
            PyErr_SetString(PyExc_TypeError, "reach expects rows of 6 values");
            goto done;
        }
        if (!is_produced(PyTuple_GET_ITEM(row, 2)))
            continue;
        PyObject *digest = PyTuple_GET_ITEM(row, 3);
        if (PyDict_GetItemWithError(artifacts, digest) == NULL) {
            if (PyErr_Occurred() || add_artifact(row, artifacts, new, depth, cls) < 0)
                goto done;
            continue;
        }
        int ours = PyDict_Contains(new, digest);
        if (ours < 0 || (ours && PyList_Append(again, row) < 0))
            goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(edges, i);
        if (is_produced(PyTuple_GET_ITEM(row, 2)))
            continue;
        int ours = PyDict_Contains(new, PyTuple_GET_ITEM(row, 3));
        if (ours < 0 || (ours && PyList_Append(own, row) < 0))
            goto done;
    }
    out = PyTuple_Pack(3, new, again, own);
done:
    Py_XDECREF(new);
    Py_XDECREF(again);
    Py_XDECREF(own);
    return out;
}

static PyMethodDef methods[] = {
    {"leaf_hashes", leaf_hashes, METH_O, leaf_hashes_doc},
    {"perfect_levels", perfect_levels, METH_O, perfect_levels_doc},
    {"edge_rows", edge_rows, METH_O, edge_rows_doc},
    {"checked_edges", checked_edges, METH_VARARGS, checked_edges_doc},
    {"run_fields", run_fields, METH_O, run_fields_doc},
    {"batch_plan_keys", batch_plan_keys, METH_VARARGS, batch_plan_keys_doc},
    {"batch_piece_hashes", batch_piece_hashes, METH_VARARGS, batch_piece_hashes_doc},
    {"reach", reach, METH_VARARGS, reach_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trainguard.ledger._speedups",
    .m_doc = "Compiled per-entry work of the ledger (see _fast.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
