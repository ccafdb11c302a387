/*
 * tape.c -- the node arena: creating and freeing tapes, appending nodes,
 * names, user functions and errors.  Evaluation lives in sweep.c.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "tape.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors and memory -------------------------------------------------- */

int pg__fail(pg_tape *t, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(t->errmsg, sizeof t->errmsg, fmt, ap);
    va_end(ap);
    /* A message cut short (by a long name in it) ends with a whole character. */
    if (len >= (int)sizeof t->errmsg) t->errmsg[pg__utf8_whole(t->errmsg, sizeof t->errmsg - 1)] = '\0';
    t->errcode = code;
    return code;
}

size_t pg__utf8_whole(const char *s, size_t len)
{
    /* Back over the continuation bytes at the end (3 at most) to a lead byte. */
    size_t lead = len;
    while (lead > 0 && len - lead < 3 && ((unsigned char)s[lead - 1] & 0xC0) == 0x80) lead--;
    if (lead == 0) return len;
    unsigned char c = (unsigned char)s[lead - 1];
    size_t size = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return lead - 1 + size <= len ? len : lead - 1;
}

int pg_errcode(const pg_tape *t) { return t->errcode; }
int pg_callback_code(const pg_tape *t) { return t->callback_code; }
const char *pg_errmsg(const pg_tape *t) { return t->errcode ? t->errmsg : "not an error"; }

const char *pg_errstr(int code)
{
    switch (code) {
    case PG_OK: return "not an error";
    case PG_ENOMEM: return "out of memory";
    case PG_EINVAL: return "bad argument";
    case PG_ENOTLEAF: return "not a leaf";
    case PG_EBUSY: return "the tape is in use: another thread is using it, "
                          "or a function called back into the sweep evaluating it";
    case PG_ECALLBACK: return "a user function failed";
    case PG_ENODERIV: return "a user function has no derivative of the order needed";
    case PG_EINTERRUPT: return "interrupted";
    }
    return "unknown status code";
}

/* ---- interrupts ------------------------------------------------------------ */

void pg_interrupt(pg_tape *t) { atomic_store_explicit(&t->interrupted, 1, memory_order_relaxed); }

int pg_progress_handler(pg_tape *t, int ms, pg_progress_fn fn, void *ud)
{
    if (!pg__enter(t)) return PG_EBUSY;
    int rc = PG_OK;
    if (ms < 1) rc = pg__fail(t, PG_EINVAL, "the progress interval must be at least 1 ms, not %d", ms);
    else {
        t->progress = fn;
        t->progress_ud = ud;
        t->progress_ms = ms;
    }
    pg__leave(t);
    return rc;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

int pg__progress(pg_tape *t, pg_poll *p)
{
    p->work = 0;
    double now = now_ms();
    if (p->next_ms == 0) p->next_ms = now + t->progress_ms; /* the call has become long */
    if (now < p->next_ms) return 0;
    p->next_ms = now + t->progress_ms;
    int code = t->progress(t->progress_ud);
    if (code == 0) return 0;
    t->progress_code = code;
    atomic_store_explicit(&t->interrupted, 1, memory_order_relaxed); /* stops the other threads */
    return 1;
}

int pg__interrupted(pg_tape *t)
{
    t->callback_code = t->progress_code;
    t->progress_code = 0;
    return pg__fail(t, PG_EINTERRUPT, t->callback_code ? "stopped by the progress handler" : "interrupted");
}

static void *default_alloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, size);
}

void *pg__alloc(pg_tape *t, void *ptr, size_t size) { return t->alloc(t->alloc_ud, ptr, size); }

static char *copy_string(pg_tape *t, const char *s)
{
    size_t len = strlen(s) + 1;
    char *copy = pg__alloc(t, NULL, len);
    if (copy) memcpy(copy, s, len);
    return copy;
}

int pg__grow(pg_tape *t, void **array, size_t elem, uint64_t keep, uint64_t new_cap)
{
    if (new_cap > SIZE_MAX / elem) return PG_ENOMEM;
    void *grown = pg__alloc(t, NULL, (size_t)new_cap * elem);
    if (!grown) return PG_ENOMEM;
    void *old = *array;
    if (keep) memcpy(grown, old, (size_t)keep * elem);
    atomic_thread_fence(memory_order_release); /* whole before it is in place */
    *array = grown;
    if (old) pg__alloc(t, old, 0);
    return PG_OK;
}

/* ---- the tape ------------------------------------------------------------- */

pg_tape *pg_tape_new_with_alloc(pg_alloc_fn alloc, void *ud)
{
    if (!alloc) alloc = default_alloc;
    pg_tape *t = alloc(ud, NULL, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    atomic_init(&t->busy, 0);
    atomic_init(&t->interrupted, 0);
    t->alloc = alloc;
    t->alloc_ud = ud;
    t->failed_lo = PG_NONE;
    return t;
}

pg_tape *pg_tape_new(void) { return pg_tape_new_with_alloc(NULL, NULL); }

void pg_tape_free(pg_tape *t)
{
    if (!t) return;
    pg__batch_free(t->last_batch);
    for (uint32_t i = 0; i < t->n_names; i++) pg__alloc(t, t->names[i].name, 0);
    for (uint32_t i = 0; i < t->n_fns; i++) pg__alloc(t, t->fns[i].name, 0);
    pg__alloc(t, t->names, 0);
    pg__alloc(t, t->fns, 0);
    pg__alloc(t, t->index, 0);
    pg__alloc(t, t->failed, 0);
    pg__alloc(t, t->failures, 0);
    pg__alloc(t, t->op, 0);
    pg__alloc(t, t->a, 0);
    pg__alloc(t, t->b, 0);
    pg__alloc(t, t->value, 0);
    pg__alloc(t, t->grad, 0);
    t->alloc(t->alloc_ud, t, 0);
}

int64_t pg_size(pg_tape *t)
{
    if (!pg__enter(t)) return -PG_EBUSY;
    int64_t n = t->n;
    pg__leave(t);
    return n;
}

static size_t memory(const pg_tape *t)
{
    size_t bytes = sizeof *t + (size_t)t->cap * (1 + 4 + 4 + 8 + 8);
    bytes += (size_t)t->cap_names * sizeof *t->names + (size_t)t->cap_fns * sizeof *t->fns;
    bytes += (size_t)t->index_cap * sizeof *t->index;
    bytes += t->failed_cap + (size_t)t->cap_failures * sizeof *t->failures;
    for (uint32_t i = 0; i < t->n_names; i++) bytes += strlen(t->names[i].name) + 1;
    return bytes + pg__batch_bytes(t->last_batch);
}

int64_t pg_memory(pg_tape *t)
{
    if (!pg__enter(t)) return -PG_EBUSY;
    int64_t bytes = (int64_t)memory(t);
    pg__leave(t);
    return bytes;
}

int pg__reserve(pg_tape *t, uint64_t nodes)
{
    if (nodes <= t->cap) return PG_OK;
    if (nodes > PG_MAX_NODES)
        return pg__fail(t, PG_ENOMEM, "a tape holds at most %llu nodes, %llu were asked for",
                        (unsigned long long)PG_MAX_NODES, (unsigned long long)nodes);
    if (pg__grow(t, (void **)&t->op, sizeof *t->op, t->n, nodes) ||
        pg__grow(t, (void **)&t->a, sizeof *t->a, t->n, nodes) ||
        pg__grow(t, (void **)&t->b, sizeof *t->b, t->n, nodes) ||
        pg__grow(t, (void **)&t->value, sizeof *t->value, t->n, nodes) ||
        pg__grow(t, (void **)&t->grad, sizeof *t->grad, t->n, nodes))
        return pg__fail(t, PG_ENOMEM, "out of memory growing the tape to %llu nodes",
                        (unsigned long long)nodes);
    t->cap = (uint32_t)nodes;
    return PG_OK;
}

int pg_reserve(pg_tape *t, uint64_t nodes)
{
    PG_HOLDING(t, PG_EBUSY, pg__reserve(t, nodes));
}

/* Appends one node and returns its index, or a negated status. */
static int64_t append(pg_tape *t, int op, uint32_t a, uint32_t b, double value)
{
    if (t->n == t->cap) {
        uint64_t want = t->cap ? (uint64_t)t->cap * 2 : 64;
        if (want > PG_MAX_NODES) want = PG_MAX_NODES;
        if (t->n == want) return -pg__fail(t, PG_ENOMEM, "the tape is full (%u nodes)", (unsigned)t->n);
        int rc = pg__reserve(t, want);
        if (rc) return -rc;
    }
    uint32_t i = t->n;
    t->op[i] = (uint8_t)op;
    t->a[i] = a;
    t->b[i] = b;
    t->value[i] = value;
    t->grad[i] = 0.0;
    /* An appended op node has no value yet. */
    if (op != PG_OP_LEAF && op != PG_OP_CONST && t->stale > i) t->stale = i;
    /* Counted once whole: the child of a fork in the middle sees all or nothing of it. */
    atomic_thread_fence(memory_order_release);
    t->n = i + 1;
    return i;
}

/* Names are appended in node order, so the array stays sorted. */
static int add_name(pg_tape *t, uint32_t node, const char *name)
{
    if (t->n_names == t->cap_names) {
        uint64_t want = t->cap_names ? (uint64_t)t->cap_names * 2 : 16;
        if (pg__grow(t, (void **)&t->names, sizeof *t->names, t->n_names, want)) return PG_ENOMEM;
        t->cap_names = (uint32_t)want;
    }
    char *copy = copy_string(t, name);
    if (!copy) return PG_ENOMEM;
    t->names[t->n_names].node = node;
    t->names[t->n_names].name = copy;
    atomic_thread_fence(memory_order_release); /* counted once whole, as nodes are */
    t->n_names++;
    return PG_OK;
}

/* A leaf or constant, named or not. */
static int64_t append_value(pg_tape *t, int op, double value, const char *name)
{
    int64_t i = append(t, op, 0, 0, value);
    if (i < 0 || !name) return i;
    if (add_name(t, (uint32_t)i, name)) {
        t->n--; /* take the node back: the tape is as it was */
        return -pg__fail(t, PG_ENOMEM, "out of memory storing a name");
    }
    return i;
}

/* The public builders; a negative index passes a status through. */
int64_t pg_leaf(pg_tape *t, double value, const char *name)
{
    PG_HOLDING(t, -PG_EBUSY, append_value(t, PG_OP_LEAF, value, name));
}

int64_t pg_const(pg_tape *t, double value, const char *name)
{
    PG_HOLDING(t, -PG_EBUSY, append_value(t, PG_OP_CONST, value, name));
}

static int op_has_kind(int op, int operands)
{
    return op >= 0 && op < PG_OP_COUNT && op != PG_OP_CALL && pg_op_arity(op) == operands;
}

static int64_t unary(pg_tape *t, int op, uint32_t a)
{
    if (!op_has_kind(op, 1)) return -pg__fail(t, PG_EINVAL, "op %d is not a unary op", op);
    if (a >= t->n) return -pg__fail(t, PG_EINVAL, "node %u does not exist", (unsigned)a);
    return append(t, op, a, 0, 0.0);
}

static int64_t binary(pg_tape *t, int op, uint32_t a, uint32_t b)
{
    if (!op_has_kind(op, 2)) return -pg__fail(t, PG_EINVAL, "op %d is not a binary op", op);
    if (a >= t->n || b >= t->n)
        return -pg__fail(t, PG_EINVAL, "node %u does not exist", (unsigned)(a >= t->n ? a : b));
    if (op == PG_OP_POWC && t->op[b] != PG_OP_CONST)
        return -pg__fail(t, PG_EINVAL, "the exponent of POWC must be a constant node");
    return append(t, op, a, b, 0.0);
}

static int64_t binary_const(pg_tape *t, int op, uint32_t a, double k, int k_first)
{
    if (!op_has_kind(op, 2)) return -pg__fail(t, PG_EINVAL, "op %d is not a binary op", op);
    if (a >= t->n) return -pg__fail(t, PG_EINVAL, "node %u does not exist", (unsigned)a);
    if (op == PG_OP_POWC && k_first)
        return -pg__fail(t, PG_EINVAL, "the exponent of POWC must be the constant");
    /* Make room for both nodes first, so that we never leave half a result. */
    if (t->n + 2ull > t->cap) {
        int rc = pg__reserve(t, t->cap ? (uint64_t)t->cap * 2 : 64);
        if (rc) return -rc;
    }
    int64_t c = append(t, PG_OP_CONST, 0, 0, k);
    if (c < 0) return c;
    return k_first ? append(t, op, (uint32_t)c, a, 0.0) : append(t, op, a, (uint32_t)c, 0.0);
}

static int64_t call(pg_tape *t, int fn, uint32_t a)
{
    if (fn < 0 || (uint32_t)fn >= t->n_fns)
        return -pg__fail(t, PG_EINVAL, "function %d does not exist", fn);
    if (a >= t->n) return -pg__fail(t, PG_EINVAL, "node %u does not exist", (unsigned)a);
    return append(t, PG_OP_CALL, a, (uint32_t)fn, 0.0);
}

int64_t pg_unary(pg_tape *t, int op, uint32_t a) { PG_HOLDING(t, -PG_EBUSY, unary(t, op, a)); }
int64_t pg_binary(pg_tape *t, int op, uint32_t a, uint32_t b) { PG_HOLDING(t, -PG_EBUSY, binary(t, op, a, b)); }
int64_t pg_add(pg_tape *t, uint32_t a, uint32_t b) { return pg_binary(t, PG_OP_ADD, a, b); }
int64_t pg_sub(pg_tape *t, uint32_t a, uint32_t b) { return pg_binary(t, PG_OP_SUB, a, b); }
int64_t pg_mul(pg_tape *t, uint32_t a, uint32_t b) { return pg_binary(t, PG_OP_MUL, a, b); }
int64_t pg_div(pg_tape *t, uint32_t a, uint32_t b) { return pg_binary(t, PG_OP_DIV, a, b); }
int64_t pg_pow(pg_tape *t, uint32_t a, uint32_t b) { return pg_binary(t, PG_OP_POW, a, b); }
int64_t pg_binary_const(pg_tape *t, int op, uint32_t a, double k, int k_first)
{
    PG_HOLDING(t, -PG_EBUSY, binary_const(t, op, a, k, k_first));
}
int64_t pg_call(pg_tape *t, int fn, uint32_t a) { PG_HOLDING(t, -PG_EBUSY, call(t, fn, a)); }

/* ---- user functions --------------------------------------------------------- */

/* Room in the table for `more` functions; ids are ints. */
static int fn_room(pg_tape *t, uint64_t more)
{
    uint64_t need = (uint64_t)t->n_fns + more;
    if (need > (uint64_t)INT32_MAX) return pg__fail(t, PG_ENOMEM, "too many functions");
    if (need <= t->cap_fns) return PG_OK;
    uint64_t want = t->cap_fns ? (uint64_t)t->cap_fns * 2 : 8;
    if (want < need) want = need;
    if (pg__grow(t, (void **)&t->fns, sizeof *t->fns, t->n_fns, want))
        return pg__fail(t, PG_ENOMEM, "out of memory adding a function");
    t->cap_fns = (uint32_t)want;
    return PG_OK;
}

int pg__fn_new(pg_tape *t, const char *name)
{
    int rc = fn_room(t, 1);
    if (rc) return -rc;
    char *copy = copy_string(t, name);
    if (!copy) return -pg__fail(t, PG_ENOMEM, "out of memory adding a function");
    pg_userfn *f = &t->fns[t->n_fns];
    memset(f, 0, sizeof *f);
    f->name = copy;
    f->deriv = -1;
    f->base = copy;
    atomic_thread_fence(memory_order_release); /* counted once whole, as nodes are */
    return (int)t->n_fns++;
}

/* Entry k of a pg_fn_define, checked before anything is defined. */
static int check_def(pg_tape *t, const pg_fndef *defs, int n, int k)
{
    const pg_fndef *d = &defs[k];
    if (d->fn >= 0) {
        if ((uint32_t)d->fn >= t->n_fns) return pg__fail(t, PG_EINVAL, "entry %d: function %d does not exist", k, d->fn);
        return PG_OK;
    }
    if (d->fn != -1)
        return pg__fail(t, PG_EINVAL, "entry %d: fn is -1 (a new function) or a function id, not %d", k, d->fn);
    if (!d->name) return pg__fail(t, PG_EINVAL, "entry %d: a function needs a name", k);
    for (int order = 0; order < PG_FN_ORDERS; order++)
        if (d->order[order].native && d->order[order].callback)
            return pg__fail(t, PG_EINVAL, "function '%s', order %d: give a native function or a callback, not both",
                            d->name, order);
    if (d->deriv < -1 || d->deriv >= n)
        return pg__fail(t, PG_EINVAL, "function '%s': its derivative, entry %d, does not exist", d->name, d->deriv);
    if (d->base < -1 || d->base >= n)
        return pg__fail(t, PG_EINVAL, "function '%s': its base, entry %d, does not exist", d->name, d->base);
    if (d->level < 0) return pg__fail(t, PG_EINVAL, "function '%s': a derivative's level is at least 0, not %d",
                                      d->name, d->level);
    return PG_OK;
}

static int fn_define(pg_tape *t, const pg_fndef *defs, int n, int *ids)
{
    if (n < 0) return pg__fail(t, PG_EINVAL, "a negative number of functions (%d)", n);
    uint32_t fresh = 0;
    for (int k = 0; k < n; k++) {
        int rc = check_def(t, defs, n, k);
        if (rc) return rc;
        fresh += defs[k].fn < 0;
    }
    int rc = fn_room(t, fresh);
    if (rc) return rc;
    /* The names are all that is left to allocate: they go into the room
       past the table's end, which counts only once every one is there. */
    uint32_t id = t->n_fns;
    for (int k = 0; k < n; k++) {
        if (defs[k].fn >= 0) {
            ids[k] = defs[k].fn;
            continue;
        }
        char *copy = copy_string(t, defs[k].name);
        if (!copy) {
            while (id > t->n_fns) pg__alloc(t, t->fns[--id].name, 0);
            return pg__fail(t, PG_ENOMEM, "out of memory adding a function");
        }
        t->fns[id].name = copy;
        ids[k] = (int)id++;
    }
    for (int k = 0; k < n; k++) {
        const pg_fndef *d = &defs[k];
        if (d->fn >= 0) continue;
        pg_userfn *f = &t->fns[ids[k]];
        memcpy(f->order, d->order, sizeof f->order);
        f->deriv = d->deriv >= 0 ? ids[d->deriv] : -1;
        f->base = t->fns[ids[d->base >= 0 ? d->base : k]].name;
        f->level = d->level;
    }
    /* No node calls a new function yet, so no value is stale. */
    t->n_fns = id;
    return PG_OK;
}

int pg_fn_define(pg_tape *t, const pg_fndef *defs, int n, int *ids)
{
    PG_HOLDING(t, PG_EBUSY, fn_define(t, defs, n, ids));
}

int pg_fn_count(pg_tape *t)
{
    if (!pg__enter(t)) return -PG_EBUSY;
    int n = (int)t->n_fns;
    pg__leave(t);
    return n;
}

int pg_fn_name(pg_tape *t, int fn, const char **name)
{
    if (!pg__enter(t)) return PG_EBUSY;
    int rc = PG_OK;
    if (fn < 0 || (uint32_t)fn >= t->n_fns) rc = pg__fail(t, PG_EINVAL, "function %d does not exist", fn);
    else *name = t->fns[fn].name;
    pg__leave(t);
    return rc;
}

/* ---- reading the structure ---------------------------------------------------- */

int pg_op(pg_tape *t, uint32_t i)
{
    if (!pg__enter(t)) return -PG_EBUSY;
    int op = i < t->n ? t->op[i] : -pg__fail(t, PG_EINVAL, "node %u does not exist", (unsigned)i);
    pg__leave(t);
    return op;
}

static const char *name_of(const pg_tape *t, uint32_t i)
{
    /* Binary search: names are sorted by node. */
    uint32_t lo = 0, hi = t->n_names;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->names[mid].node < i) lo = mid + 1;
        else hi = mid;
    }
    return lo < t->n_names && t->names[lo].node == i ? t->names[lo].name : NULL;
}

int pg_name(pg_tape *t, uint32_t i, const char **name)
{
    if (!pg__enter(t)) return PG_EBUSY;
    int rc = PG_OK;
    if (i >= t->n) rc = pg__fail(t, PG_EINVAL, "node %u does not exist", (unsigned)i);
    else *name = name_of(t, i);
    pg__leave(t);
    return rc;
}

static int export(pg_tape *t, uint32_t from, uint32_t n, uint8_t *op, uint32_t *a, uint32_t *b)
{
    if (from > t->n || n > t->n - from)
        return pg__fail(t, PG_EINVAL, "nodes %u to %llu do not exist (the tape has %u nodes)",
                        (unsigned)from, (unsigned long long)from + n, (unsigned)t->n);
    if (n == 0) return PG_OK; /* an empty tape has no arrays to copy from */
    if (op) memcpy(op, t->op + from, n * sizeof *op);
    if (a) memcpy(a, t->a + from, n * sizeof *a);
    if (b) memcpy(b, t->b + from, n * sizeof *b);
    return PG_OK;
}

int pg_export(pg_tape *t, uint32_t from, uint32_t n, uint8_t *op, uint32_t *a, uint32_t *b)
{
    PG_HOLDING(t, PG_EBUSY, export(t, from, n, op, a, b));
}

/* ---- fork ------------------------------------------------------------------------ */

int pg_tape_after_fork(pg_tape *t)
{
    if (!atomic_load_explicit(&t->busy, memory_order_acquire) || pthread_equal(t->holder, pthread_self()))
        return 0;
    /* The call holding the tape ran on a thread that the child does not
       have, and stopped anywhere.  Nodes, names and functions are whole
       (each is written before it is counted); values, grads and the
       derivative index may be half made, as when a call fails. */
    t->stale = 0;
    if (t->n) memset(t->grad, 0, (size_t)t->n * sizeof *t->grad);
    /* The index and the batch kept may be half freed: left, not freed again. */
    t->index = NULL;
    t->index_cap = t->index_count = t->indexed = 0;
    t->last_batch = NULL;
    /* Values are all stale now, so no node is marked failed (stale.c). */
    t->failed = NULL;
    t->failures = NULL;
    t->failed_cap = t->n_failures = t->cap_failures = 0;
    t->failed_lo = PG_NONE;
    t->holder = (pthread_t){0};
    atomic_store_explicit(&t->interrupted, 0, memory_order_relaxed);
    atomic_store_explicit(&t->busy, 0, memory_order_release);
    return 1;
}

/* ---- the op table, as data ------------------------------------------------------ */

#define K0 0
#define K1 1
#define K2 2
#define KC 2
#define KF 1
#define KA 2

static const struct {
    const char *name, *label;
    int arity;
} op_info[PG_OP_COUNT] = {
#define PG_OP_INFO(NAME, label, kind, value, d_dx, d_dy, ...) {#NAME, label, kind},
    PG_OPS(PG_OP_INFO)
#undef PG_OP_INFO
};

int pg_op_count(void) { return PG_OP_COUNT; }
const char *pg_op_name(int op) { return op >= 0 && op < PG_OP_COUNT ? op_info[op].name : NULL; }
const char *pg_op_label(int op) { return op >= 0 && op < PG_OP_COUNT ? op_info[op].label : NULL; }
int pg_op_arity(int op) { return op >= 0 && op < PG_OP_COUNT ? op_info[op].arity : -1; }

int pg_op_code(const char *name)
{
    for (int op = 0; op < PG_OP_COUNT; op++)
        if (strcmp(op_info[op].name, name) == 0) return op;
    return -1;
}
