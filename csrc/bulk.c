/*
 * bulk.c -- whole tapes in and out: many nodes appended in one call (big
 * tapes built from arrays, copies, pickles), and what a copy needs to read
 * that the rest of the API does not give: stored values, names in bulk and
 * the function table's links.
 */
#include "tape.h"

#include <string.h>

/* The op of node j, which is either on the tape or the k-th new one. */
static int op_at(const pg_tape *t, const uint8_t *op, uint32_t j)
{
    return j < t->n ? t->op[j] : op[j - t->n];
}

/* Checks new node j (op[j - t->n], ...) as pg_leaf, pg_unary, pg_binary and
   pg_call check theirs. */
static int check_node(pg_tape *t, const uint8_t *op, const uint32_t *a, const uint32_t *b, uint32_t j)
{
    uint32_t k = j - t->n;
    int code = op[k];
    if (code >= PG_OP_COUNT) return pg__fail(t, PG_EINVAL, "node %u: op %d does not exist", (unsigned)j, code);
    int arity = pg_op_arity(code);
    if (arity >= 1 && a[k] >= j)
        return pg__fail(t, PG_EINVAL, "node %u: operand %u is not an earlier node", (unsigned)j, (unsigned)a[k]);
    if (code == PG_OP_CALL && b[k] >= t->n_fns)
        return pg__fail(t, PG_EINVAL, "node %u: function %u does not exist", (unsigned)j, (unsigned)b[k]);
    if (arity == 2 && b[k] >= j)
        return pg__fail(t, PG_EINVAL, "node %u: operand %u is not an earlier node", (unsigned)j, (unsigned)b[k]);
    if (code == PG_OP_POWC && op_at(t, op, b[k]) != PG_OP_CONST)
        return pg__fail(t, PG_EINVAL, "node %u: the exponent of POWC must be a constant node", (unsigned)j);
    return PG_OK;
}

/* An import of millions of nodes takes a fraction of a second: its loops
   check for an interrupt every 2^16 nodes, and it then appends nothing. */
static int stops(pg_tape *t, pg_poll *poll, uint32_t k)
{
    return (k & 0xFFFF) == 0xFFFF && pg__stop(t, poll, 0x10000);
}

/* Checks the names of an import: nodes in increasing order, each a new leaf
   or constant, and n_names strings inside names[0, size). */
static int check_names(pg_tape *t, uint32_t n, const uint8_t *op, uint32_t n_names, const uint32_t *named,
                       const char *names, size_t size, pg_poll *poll)
{
    size_t at = 0;
    for (uint32_t k = 0; k < n_names; k++) {
        if (stops(t, poll, k)) return pg__interrupted(t);
        uint32_t j = named[k];
        if (j < t->n || j - t->n >= n || (k > 0 && j <= named[k - 1]))
            return pg__fail(t, PG_EINVAL, "name %u: node %u is not a new node after the previous name",
                            (unsigned)k, (unsigned)j);
        int code = op[j - t->n];
        if (code != PG_OP_LEAF && code != PG_OP_CONST)
            return pg__fail(t, PG_EINVAL, "name %u: node %u is not a leaf or constant", (unsigned)k, (unsigned)j);
        const char *end = at < size ? memchr(names + at, '\0', size - at) : NULL;
        if (!end) return pg__fail(t, PG_EINVAL, "name %u runs past the end of the names", (unsigned)k);
        at = (size_t)(end - names) + 1;
    }
    return PG_OK;
}

/* Frees the first count of copies. */
static void free_copies(pg_tape *t, char **copies, uint32_t count)
{
    for (uint32_t k = 0; k < count; k++) pg__alloc(t, copies[k], 0);
    pg__alloc(t, copies, 0);
}

static int import(pg_tape *t, uint32_t n, const uint8_t *op, const uint32_t *a, const uint32_t *b,
                  const double *value, uint32_t n_names, const uint32_t *named, const char *names,
                  size_t names_size)
{
    if (n == 0 && n_names == 0) return PG_OK;
    if (t->n + (uint64_t)n > PG_MAX_NODES)
        return pg__fail(t, PG_ENOMEM, "a tape holds at most %llu nodes, %llu were asked for",
                        (unsigned long long)PG_MAX_NODES, (unsigned long long)t->n + n);
    pg_poll poll = {0, 0};
    for (uint32_t j = t->n; j < t->n + n; j++) {
        int rc = check_node(t, op, a, b, j);
        if (rc) return rc;
        if (stops(t, &poll, j - t->n)) return pg__interrupted(t);
    }
    int rc = check_names(t, n, op, n_names, named, names, names_size, &poll);
    if (rc) return rc;

    /* Everything that can fail to allocate comes first: the names' room and
       copies, then the nodes' room.  Until the nodes are written the tape
       holds what it held (perhaps in bigger arrays). */
    char **copies = NULL;
    if (n_names) {
        uint64_t want = (uint64_t)t->n_names + n_names;
        if (want > UINT32_MAX) return pg__fail(t, PG_ENOMEM, "too many names");
        if (want > t->cap_names) {
            if (want < (uint64_t)t->cap_names * 2) want = (uint64_t)t->cap_names * 2;
            if (want > UINT32_MAX) want = UINT32_MAX;
            if (pg__grow(t, (void **)&t->names, sizeof *t->names, t->n_names, want))
                return pg__fail(t, PG_ENOMEM, "out of memory storing %u names", (unsigned)n_names);
            t->cap_names = (uint32_t)want;
        }
        copies = pg__alloc(t, NULL, (size_t)n_names * sizeof *copies);
        if (!copies) return pg__fail(t, PG_ENOMEM, "out of memory storing %u names", (unsigned)n_names);
        const char *name = names;
        for (uint32_t k = 0; k < n_names; k++) {
            if (stops(t, &poll, k)) {
                free_copies(t, copies, k);
                return pg__interrupted(t);
            }
            size_t len = strlen(name) + 1;
            copies[k] = pg__alloc(t, NULL, len);
            if (!copies[k]) {
                free_copies(t, copies, k);
                return pg__fail(t, PG_ENOMEM, "out of memory storing %u names", (unsigned)n_names);
            }
            memcpy(copies[k], name, len);
            name += len;
        }
    }
    /* Room for exactly what was asked: a big tape built in one import has
       no slack.  Imports of a few nodes at a time still grow geometrically. */
    uint64_t need = (uint64_t)t->n + n;
    if (need > t->cap) {
        uint64_t doubled = t->cap ? (uint64_t)t->cap * 2 : 64;
        if (n < t->cap / 8 && doubled <= PG_MAX_NODES) need = doubled;
        if ((rc = pg__reserve(t, need))) {
            if (copies) free_copies(t, copies, n_names);
            return rc;
        }
    }

    /* The nodes are written past the end, and count once n covers them. */
    uint32_t first = t->n, first_op = UINT32_MAX;
    for (uint32_t k = 0; k < n; k++) {
        if (stops(t, &poll, k)) {
            if (copies) free_copies(t, copies, n_names);
            return pg__interrupted(t);
        }
        uint32_t j = first + k;
        int code = op[k], arity = pg_op_arity(code);
        /* Operands an op does not have are stored as 0, as pg_unary stores them. */
        t->op[j] = (uint8_t)code;
        t->a[j] = arity >= 1 ? a[k] : 0;
        t->b[j] = arity == 2 || code == PG_OP_CALL ? b[k] : 0;
        t->value[j] = arity == 0 && value ? value[k] : 0.0;
        t->grad[j] = 0.0;
        if (arity > 0 && first_op == UINT32_MAX) first_op = j;
    }
    if (t->stale > first_op) t->stale = first_op;
    atomic_thread_fence(memory_order_release); /* counted once whole (pg_tape_after_fork) */
    t->n = first + n;
    for (uint32_t k = 0; k < n_names; k++) {
        t->names[t->n_names].node = named[k];
        t->names[t->n_names].name = copies[k];
        atomic_thread_fence(memory_order_release);
        t->n_names++;
    }
    pg__alloc(t, copies, 0);
    return PG_OK;
}

int pg_import(pg_tape *t, uint32_t n, const uint8_t *op, const uint32_t *a, const uint32_t *b,
              const double *value, uint32_t n_names, const uint32_t *named, const char *names,
              size_t names_size)
{
    PG_HOLDING(t, PG_EBUSY, import(t, n, op, a, b, value, n_names, named, names, names_size));
}

static int export_values(pg_tape *t, uint32_t from, uint32_t n, double *value)
{
    if (from > t->n || n > t->n - from)
        return pg__fail(t, PG_EINVAL, "nodes %u to %llu do not exist (the tape has %u nodes)",
                        (unsigned)from, (unsigned long long)from + n, (unsigned)t->n);
    for (uint32_t j = from; j < from + n; j++)
        value[j - from] = pg_op_arity(t->op[j]) == 0 ? t->value[j] : 0.0;
    return PG_OK;
}

int pg_export_values(pg_tape *t, uint32_t from, uint32_t n, double *value)
{
    PG_HOLDING(t, PG_EBUSY, export_values(t, from, n, value));
}

int64_t pg_name_count(pg_tape *t) { PG_HOLDING(t, -PG_EBUSY, t->n_names); }

static int export_names(pg_tape *t, uint32_t from, uint32_t n, uint32_t *node, const char **name)
{
    if (from > t->n_names || n > t->n_names - from)
        return pg__fail(t, PG_EINVAL, "names %u to %llu do not exist (the tape has %u names)",
                        (unsigned)from, (unsigned long long)from + n, (unsigned)t->n_names);
    for (uint32_t k = 0; k < n; k++) {
        node[k] = t->names[from + k].node;
        name[k] = t->names[from + k].name;
    }
    return PG_OK;
}

int pg_export_names(pg_tape *t, uint32_t from, uint32_t n, uint32_t *node, const char **name)
{
    PG_HOLDING(t, PG_EBUSY, export_names(t, from, n, node, name));
}

static int check_fn(pg_tape *t, int fn)
{
    if (fn < 0 || (uint32_t)fn >= t->n_fns) return pg__fail(t, PG_EINVAL, "function %d does not exist", fn);
    return PG_OK;
}

/* The function whose name base points to: every base is some function's name. */
static int fn_named_by(const pg_tape *t, const char *base)
{
    for (uint32_t g = 0; g < t->n_fns; g++)
        if (t->fns[g].name == base) return (int)g;
    return -1;
}

static int fn_info(pg_tape *t, int fn, int *deriv, int *base, int *level)
{
    int rc = check_fn(t, fn);
    if (rc) return rc;
    const pg_userfn *f = &t->fns[fn];
    *deriv = f->deriv;
    *base = fn_named_by(t, f->base);
    *level = f->level;
    return PG_OK;
}

int pg_fn_info(pg_tape *t, int fn, int *deriv, int *base, int *level)
{
    PG_HOLDING(t, PG_EBUSY, fn_info(t, fn, deriv, base, level));
}

static int fn_get(pg_tape *t, int fn, int order, pg_native_fn *native, pg_callback_fn *callback, void **ud)
{
    int rc = check_fn(t, fn);
    if (rc) return rc;
    if (order < 0 || order >= PG_FN_ORDERS)
        return pg__fail(t, PG_EINVAL, "order %d is not between 0 and %d", order, PG_FN_ORDERS - 1);
    const pg_fnslot *slot = &t->fns[fn].order[order];
    *native = slot->native;
    *callback = slot->callback;
    *ud = slot->ud;
    return PG_OK;
}

int pg_fn_get(pg_tape *t, int fn, int order, pg_native_fn *native, pg_callback_fn *callback, void **ud)
{
    PG_HOLDING(t, PG_EBUSY, fn_get(t, fn, order, native, callback, ud));
}

static int export_fns(pg_tape *t, uint32_t from, uint32_t n, const char **name, int *deriv, int *base,
                      int *level, pg_native_fn *native, pg_callback_fn *callback, void **ud)
{
    if (from > t->n_fns || n > t->n_fns - from)
        return pg__fail(t, PG_EINVAL, "functions %u to %llu do not exist (the tape has %u functions)",
                        (unsigned)from, (unsigned long long)from + n, (unsigned)t->n_fns);
    for (uint32_t k = 0; k < n; k++) {
        const pg_userfn *f = &t->fns[from + k];
        if (name) name[k] = f->name;
        if (deriv) deriv[k] = f->deriv;
        if (base) base[k] = fn_named_by(t, f->base);
        if (level) level[k] = f->level;
        for (int order = 0; order < PG_FN_ORDERS; order++) {
            size_t at = (size_t)k * PG_FN_ORDERS + order;
            if (native) native[at] = f->order[order].native;
            if (callback) callback[at] = f->order[order].callback;
            if (ud) ud[at] = f->order[order].ud;
        }
    }
    return PG_OK;
}

int pg_export_fns(pg_tape *t, uint32_t from, uint32_t n, const char **name, int *deriv, int *base,
                  int *level, pg_native_fn *native, pg_callback_fn *callback, void **ud)
{
    PG_HOLDING(t, PG_EBUSY, export_fns(t, from, n, name, deriv, base, level, native, callback, ud));
}
