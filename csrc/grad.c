/*
 * grad.c -- derivatives as graphs: pg_grad_graph appends to the tape the
 * nodes that compute dy/dx, so a derivative is an ordinary node that
 * re-evaluates after a set and can be differentiated again, to any order.
 *
 * It is reverse mode done symbolically: one walk down the tape from y,
 * building each node's adjoint from the op table's graph partials, an
 * adjoint times a partial being a CHAIN node (0 when either is 0, as in
 * the sweeps: the graph and backprop agree however the values move).  Two
 * things keep the graphs small.  Constant folding: x * 1, x * 0, x + 0 and
 * operations on constants are never built.  Hash-consing: an index of the
 * tape's nodes by (op, operands) finds an identical node in O(1), so a
 * subexpression is built once however often the rules ask for it.
 */
#include "tape.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#define NONE UINT32_MAX

/* ---- the index of nodes by content ---------------------------------------------- */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* Constants are the same when their bits are: -0.0 is not 0.0 (1/x tells
   them apart), and a NaN is the same NaN. */
static uint64_t bits_of(double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static uint64_t const_key(double value) { return mix(bits_of(value) ^ 0x9e3779b97f4a7c15ULL); }

static uint64_t op_key(int op, uint32_t a, uint32_t b)
{
    return mix(((uint64_t)a << 32 | b) ^ mix((uint64_t)op + 1));
}

static uint64_t node_key(const pg_tape *t, uint32_t i)
{
    return t->op[i] == PG_OP_CONST ? const_key(t->value[i]) : op_key(t->op[i], t->a[i], t->b[i]);
}

static void index_insert(pg_tape *t, uint32_t i)
{
    uint32_t mask = t->index_cap - 1;
    uint32_t slot = (uint32_t)node_key(t, i) & mask;
    while (t->index[slot] != NONE) slot = (slot + 1) & mask;
    t->index[slot] = i;
    t->index_count++;
}

/* Makes room for `more` nodes in the index and adds the nodes it lacks.
   Leaves are never indexed: two leaves are two variables.  Indexing ten
   million nodes takes a fraction of a second: an interrupt stops it, the
   index holding nodes [0, indexed). */
static int index_update(pg_tape *t, uint32_t more, pg_poll *poll)
{
    uint64_t need = ((uint64_t)t->n + more) * 2;
    if (need > t->index_cap) {
        uint64_t cap = 1024;
        while (cap < need) cap *= 2;
        if (cap > UINT32_MAX) return PG_ENOMEM;
        uint32_t *index = pg__alloc(t, NULL, (size_t)cap * sizeof *index);
        if (!index) return PG_ENOMEM;
        /* Emptied a megabyte at a time, with a check between: fresh pages
           fault in, a tenth of a second for a hundred million slots. */
        for (size_t at = 0, piece = 1u << 18; at < cap; at += piece) {
            if (pg__stop(t, poll, 0x10000)) {
                pg__alloc(t, index, 0);
                return PG_EINTERRUPT;
            }
            memset(index + at, 0xff, (cap - at < piece ? cap - at : piece) * sizeof *index);
        }
        pg__alloc(t, t->index, 0);
        t->index = index;
        t->index_cap = (uint32_t)cap;
        t->index_count = 0;
        t->indexed = 0;
    }
    for (; t->indexed < t->n; t->indexed++) {
        if ((t->indexed & 0xFFF) == 0 && pg__stop(t, poll, 0x10000)) return PG_EINTERRUPT;
        if (t->op[t->indexed] != PG_OP_LEAF) index_insert(t, t->indexed);
    }
    return PG_OK;
}

/* The indexed node equal to (op, a, b), or to the constant value; NONE if
   there is none. */
static uint32_t index_find(const pg_tape *t, int op, uint32_t a, uint32_t b, double value)
{
    uint32_t mask = t->index_cap - 1;
    uint64_t key = op == PG_OP_CONST ? const_key(value) : op_key(op, a, b);
    for (uint32_t slot = (uint32_t)key & mask; t->index[slot] != NONE; slot = (slot + 1) & mask) {
        uint32_t i = t->index[slot];
        if (t->op[i] != op) continue;
        if (op == PG_OP_CONST ? bits_of(t->value[i]) == bits_of(value) : t->a[i] == a && t->b[i] == b)
            return i;
    }
    return NONE;
}

/* ---- building with folding and sharing --------------------------------------------- */

/* A build in progress: the first failure sticks, and every builder returns
   some valid node after it, so the rules need no error checks. */
typedef struct builder {
    pg_tape *t;
    pg_poll *poll;
    int status;
    uint32_t zero, one;
} builder;

static uint32_t append_node(builder *g, int op, uint32_t a, uint32_t b, double value)
{
    pg_tape *t = g->t;
    if (g->status) return 0;
    if (t->n == t->cap && pg__reserve(t, t->cap ? (uint64_t)t->cap * 2 : 64)) {
        g->status = PG_ENOMEM;
        return 0;
    }
    if (t->index_count + 1 > t->index_cap / 2 && (g->status = index_update(t, t->cap - t->n + 1, g->poll)))
        return 0;
    uint32_t i = t->n;
    t->op[i] = (uint8_t)op;
    t->a[i] = a;
    t->b[i] = b;
    t->value[i] = value;
    t->grad[i] = 0.0;
    if (op != PG_OP_CONST && t->stale > i) t->stale = i;
    atomic_thread_fence(memory_order_release); /* counted once whole (pg_tape_after_fork) */
    t->n = i + 1;
    index_insert(t, i);
    t->indexed = t->n;
    return i;
}

static uint32_t konst(builder *g, double value)
{
    if (g->status) return 0;
    uint32_t i = index_find(g->t, PG_OP_CONST, 0, 0, value);
    return i != NONE ? i : append_node(g, PG_OP_CONST, 0, 0, value);
}

/* The value an op gives on constant operands, for folding (never CALL). */
#define call(order, x) NAN
static double fold(int op, double x, double y)
{
    switch (op) {
#define PG_FOLD_CASE(NAME, label, kind, value, ...) \
    case PG_OP_##NAME: return (value);
        PG_OPS(PG_FOLD_CASE)
#undef PG_FOLD_CASE
    }
    return NAN;
}
#undef call

static int is_const(const builder *g, uint32_t i, double c)
{
    return !g->status && g->t->op[i] == PG_OP_CONST && g->t->value[i] == c;
}

/* op applied to a (and b): folded, found, or appended. */
static uint32_t build(builder *g, int op, uint32_t a, uint32_t b)
{
    pg_tape *t = g->t;
    if (g->status) return 0;
    int binary = pg_op_arity(op) == 2;
    if (op != PG_OP_CALL && t->op[a] == PG_OP_CONST && (!binary || t->op[b] == PG_OP_CONST))
        return konst(g, fold(op, t->value[a], binary ? t->value[b] : 0));
    switch (op) {
    case PG_OP_ADD:
        if (is_const(g, a, 0)) return b;
        if (is_const(g, b, 0)) return a;
        break;
    case PG_OP_SUB:
        if (is_const(g, b, 0)) return a;
        if (is_const(g, a, 0)) return build(g, PG_OP_NEG, b, 0);
        break;
    case PG_OP_MUL:
    case PG_OP_CHAIN: /* 0 times anything folds to 0: the chain rule's zero */
        if (is_const(g, a, 0) || is_const(g, b, 0)) return g->zero;
        if (is_const(g, a, 1)) return b;
        if (is_const(g, b, 1)) return a;
        if (is_const(g, a, -1)) return build(g, PG_OP_NEG, b, 0);
        if (is_const(g, b, -1)) return build(g, PG_OP_NEG, a, 0);
        break;
    case PG_OP_DIV:
        if (is_const(g, a, 0)) return g->zero;
        if (is_const(g, b, 1)) return a;
        break;
    case PG_OP_POWC:
        if (is_const(g, b, 1)) return a;
        if (is_const(g, b, 0)) return g->one;
        break;
    case PG_OP_NEG:
        if (t->op[a] == PG_OP_NEG) return t->a[a];
        break;
    }
    if (!binary) b = op == PG_OP_CALL ? b : 0;
    uint32_t i = index_find(t, op, a, b, 0);
    return i != NONE ? i : append_node(g, op, a, b, 0.0);
}

/* ---- the graph partials of the op table ---------------------------------------- */

/* The derivative of user function fn as a function of its own: a linked
   one (pg_fndef.deriv), or else one made from fn's next orders. */
static int derivative_fn(builder *g, uint32_t fn, uint32_t *out)
{
    pg_tape *t = g->t;
    pg_userfn *f = &t->fns[fn];
    if (f->deriv >= 0) {
        *out = (uint32_t)f->deriv;
        return PG_OK;
    }
    /* Levels come from the user (pg_fn_define) and may be as big as an int. */
    long long order = (long long)f->level + 1;
    if (!f->order[1].native && !f->order[1].callback)
        return pg__fail(t, PG_ENODERIV,
                        "function '%s' has no derivative of order %lld: give the derivative "
                        "function (d2f for a second derivative, or a pg.unary op that "
                        "knows its own)", f->base, order);
    if (order > INT_MAX)
        return pg__fail(t, PG_ENODERIV, "function '%s': a derivative of order %lld is past the last "
                        "one counted (%d)", f->base, order, INT_MAX);
    /* f's name and a prime, kept short: a whole character is cut, never half. */
    char name[256];
    size_t len = strlen(f->name);
    snprintf(name, sizeof name, "%.*s'", (int)pg__utf8_whole(f->name, len < 200 ? len : 200), f->name);
    int d = pg__fn_new(t, name);
    if (d < 0) return -d;
    f = &t->fns[fn]; /* pg__fn_new may have moved the table */
    pg_userfn *df = &t->fns[d];
    for (int k = 0; k + 1 < PG_FN_ORDERS; k++) df->order[k] = f->order[k + 1];
    df->level = (int)order;
    df->base = f->base;
    f->deriv = d;
    *out = (uint32_t)d;
    return PG_OK;
}

static uint32_t call_derivative(builder *g, uint32_t i)
{
    uint32_t d = 0;
    if (g->status) return 0;
    int rc = derivative_fn(g, g->t->b[i], &d);
    if (rc) {
        g->status = rc;
        return 0;
    }
    return build(g, PG_OP_CALL, g->t->a[i], d);
}

/* Names the table's graph rules use. */
#define ZERO (g->zero)
#define ONE (g->one)
#define K(c) konst(g, (c))
#define VALUE(n) (g->t->value[n])
#define U(OP, p) build(g, PG_OP_##OP, (p), 0)
#define B(OP, p, q) build(g, PG_OP_##OP, (p), (q))
#define CALL_DERIVATIVE call_derivative(g, i)

/* d node_i / d operand (0: a, 1: b) as a node. */
static uint32_t partial(builder *g, uint32_t i, int operand)
{
    uint32_t X_ = g->t->a[i], Y_ = g->t->b[i], V_ = i;
    (void)X_, (void)Y_, (void)V_;
    switch (g->t->op[i]) {
#define PG_PARTIAL_CASE(NAME, label, kind, value, d_dx, d_dy, graph_dx, graph_dy) \
    case PG_OP_##NAME: return operand == 0 ? (graph_dx) : (graph_dy);
        PG_OPS(PG_PARTIAL_CASE)
#undef PG_PARTIAL_CASE
    }
    return g->zero;
}

/* ---- reverse mode on graphs ---------------------------------------------------- */

/* Puts the tape back as it was before a failed pg_grad_graph, which had n
   nodes and n_fns functions: derivative functions made since go too, and
   so do the links to them. */
static void roll_back(pg_tape *t, uint32_t n, uint32_t n_fns)
{
    t->n = n;
    pg__invalidate(t, n);
    /* Uncounted before freed, so that a child forked meanwhile reads no
       freed name (pg_tape_after_fork). */
    uint32_t made = t->n_fns;
    t->n_fns = n_fns;
    atomic_thread_fence(memory_order_release);
    for (uint32_t f = n_fns; f < made; f++) pg__alloc(t, t->fns[f].name, 0);
    for (uint32_t f = 0; f < n_fns; f++)
        if (t->fns[f].deriv >= (int32_t)n_fns) t->fns[f].deriv = -1;
    pg__alloc(t, t->index, 0); /* rebuilt on the next call */
    t->index = NULL;
    t->index_cap = t->index_count = t->indexed = 0;
}

static int grad_graph(pg_tape *t, uint32_t y, const uint32_t *xs, size_t n_xs, uint32_t *out)
{
    PG_CHECK_NODE(t, y);
    for (size_t k = 0; k < n_xs; k++) PG_CHECK_NODE(t, xs[k]);
    uint32_t n0 = t->n, fns0 = t->n_fns;
    /* Everything but the new nodes is allocated before the first is built. */
    uint32_t *adj = pg__alloc(t, NULL, ((size_t)y + 1) * sizeof *adj);
    uint8_t *reach = pg__alloc(t, NULL, (size_t)y + 1);
    pg_poll poll = {0, 0};
    int rc = adj && reach ? index_update(t, 64, &poll) : PG_ENOMEM;
    if (rc) {
        pg__alloc(t, adj, 0);
        pg__alloc(t, reach, 0);
        if (rc == PG_EINTERRUPT) return pg__interrupted(t);
        return pg__fail(t, PG_ENOMEM, "out of memory building a derivative of %u nodes", (unsigned)y + 1);
    }
    builder g = {t, &poll, PG_OK, 0, 0};
    g.zero = konst(&g, 0.0);
    g.one = konst(&g, 1.0);

    /* Only nodes on a path from some x to y need an adjoint, and only
       operands on such a path need a partial: nothing is built for the rest
       (no 2^x log 2 term for a constant base, no derivative a user function
       lacks but the result does not need). */
    uint32_t lowest = y;
    for (size_t k = 0; k < n_xs; k++)
        if (xs[k] < lowest) lowest = xs[k];
    memset(reach, 0, (size_t)y + 1);
    for (size_t k = 0; k < n_xs; k++)
        if (xs[k] <= y) reach[xs[k]] = 1;
    for (uint32_t i = lowest; i <= y && !g.status; i++) {
        if ((i & 0xFFFF) == 0 && pg__stop(t, &poll, 0x10000)) g.status = PG_EINTERRUPT;
        int operands = pg_op_arity(t->op[i]);
        if ((operands >= 1 && reach[t->a[i]]) || (operands == 2 && reach[t->b[i]])) reach[i] = 1;
    }

    memset(adj, 0xff, ((size_t)y + 1) * sizeof *adj); /* NONE */
    adj[y] = g.one;
    /* Adjoints flow from y down to the lowest x; a node's adjoint is
       complete once every node above it has passed. */
    for (uint32_t i = y; i > lowest && !g.status; i--) {
        /* A node may cost microseconds here (its partials are found or
           built): a check every 4096. */
        if ((i & 0xFFF) == 0 && pg__stop(t, &poll, 0x10000)) g.status = PG_EINTERRUPT;
        if (adj[i] == NONE || !reach[i]) continue;
        int operands = pg_op_arity(t->op[i]);
        for (int k = 0; k < operands; k++) {
            uint32_t operand = k == 0 ? t->a[i] : t->b[i];
            if (!reach[operand]) continue; /* also POWC's constant exponent */
            uint32_t step = build(&g, PG_OP_CHAIN, adj[i], partial(&g, i, k));
            if (is_const(&g, step, 0)) continue;
            adj[operand] = adj[operand] == NONE ? step : build(&g, PG_OP_ADD, adj[operand], step);
        }
    }
    pg__alloc(t, reach, 0);
    for (size_t k = 0; k < n_xs; k++)
        out[k] = xs[k] > y || adj[xs[k]] == NONE ? g.zero : adj[xs[k]];
    pg__alloc(t, adj, 0);
    if (g.status) {
        int code = g.status;
        char message[sizeof t->errmsg];
        memcpy(message, t->errmsg, sizeof message);
        roll_back(t, n0, fns0);
        if (code == PG_EINTERRUPT) return pg__interrupted(t);
        if (code == PG_ENOMEM) return pg__fail(t, PG_ENOMEM, "out of memory building a derivative");
        return pg__fail(t, code, "%s", message);
    }
    return PG_OK;
}

int pg_grad_graph(pg_tape *t, uint32_t y, const uint32_t *xs, size_t n_xs, uint32_t *out)
{
    PG_HOLDING(t, PG_EBUSY, grad_graph(t, y, xs, n_xs, out));
}
