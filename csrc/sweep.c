/*
 * sweep.c -- evaluation and differentiation: the three loops over the tape.
 *
 *   forward   value of every node from its operands, first to last
 *   reverse   adjoints (grads) from the output down to the first node
 *   tangent   forward-mode derivative with respect to one node
 *
 * Each loop is one switch over the op code whose cases are generated from
 * the op table in ops.h (the way CasADi's SX virtual machine and Lua's lvm.c
 * dispatch).  Nothing here recurses, so a chain of any length works.
 */
#include "tape.h"

#include <string.h>

/* The op table's `call(order, x)` runs the user function in the aux index. */
#define call(order, x) pg__call(s, ib, (order), (x))

int pg__sweep_failure(const pg_sweep *s)
{
    const char *name = s->t->fns[s->fn].name;
    if (s->status == PG_ENODERIV)
        return pg__fail(s->t, PG_ENODERIV, "function '%s' has no derivative of order %d", name, s->order);
    s->t->callback_code = s->code;
    return pg__fail(s->t, PG_ECALLBACK, "function '%s' failed (order %d)", name, s->order);
}

/* ---- the loops ---------------------------------------------------------------- */

#define FORWARD_K0(value)
#define FORWARD_K1(value) { double x = val[ia]; val[i] = (value); }
#define FORWARD_K2(value) { double x = val[ia], y = val[ib]; val[i] = (value); }
#define FORWARD_KC(value) FORWARD_K2(value)
#define FORWARD_KA(value) FORWARD_K2(value)
#define FORWARD_KF(value) FORWARD_K1(value)

/* The value and partials of every KA op, in a list for picking by index. */
#define KA_VALUE(NAME, label, kind, value, d_dx, d_dy, ...) PG_IF_KA(kind)((value),)
#define KA_D_DX(NAME, label, kind, value, d_dx, d_dy, ...) PG_IF_KA(kind)((d_dx),)
#define KA_D_DY(NAME, label, kind, value, d_dx, d_dy, ...) PG_IF_KA(kind)((d_dy),)

/* Operand a lies a few nodes back, in cache, but b may lie anywhere before
   (a parameter, a shared subexpression), and on a big tape loading it misses
   the cache.  The loops ask for b's value and grad AHEAD nodes before they
   need them: 1M-node random graph, eval + backprop 16.3 -> 13.5 ns a node.
   b is not a node for a CALL (it is the function), so an index that is not
   below the node's own is replaced by that: prefetching never reads outside
   the arrays. */
#define AHEAD 64
#if defined(__GNUC__)
#define PREFETCH(p, write) __builtin_prefetch((p), (write))
#else
#define PREFETCH(p, write) ((void)(p))
#endif
#define OPERAND_B(j) (b[j] < (j) ? b[j] : (j))

/* Values of nodes [from, to) from their operands. */
void pg__forward(pg_sweep *s, double *restrict val, uint32_t from, uint32_t to)
{
    const uint8_t *op = s->t->op;
    const uint32_t *a = s->t->a, *b = s->t->b;
    for (uint32_t i = from; i < to; i++) {
        if (to - i > AHEAD) PREFETCH(&val[OPERAND_B(i + AHEAD)], 0);
        uint32_t ia = a[i], ib = b[i];
        (void)ib;
        unsigned cheap = op[i] - PG_OP_FIRST_KA;
        if (cheap < PG_KA_COUNT) {
            double x = val[ia], y = val[ib];
            const double value[] = {PG_OPS(KA_VALUE)};
            val[i] = value[cheap];
            continue;
        }
        switch (op[i]) {
#define PG_FORWARD_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: FORWARD_##kind(value) break;
            PG_OPS(PG_FORWARD_CASE)
#undef PG_FORWARD_CASE
        }
    }
}

/* pg_chain(g, d) where g is known not to be 0: 0 when the partial d is
   (+0.0: adjoints and tangents are sums that start at +0.0 and so never
   hold -0.0, and adding either zero to them gives the same bits). */
static inline double chain_term(double g, double d) { return d != 0 ? g * d : 0.0; }

/* For a finite adjoint g, the plain product g * d is already the chain
   rule's term: a zero partial gives +0 or -0, and either leaves a grad's
   bits as they are (above).  Only an infinite or NaN adjoint needs the
   guard against 0 * inf, which as a select costs the hot loop a tenth of
   its instructions; such nodes take a copy of the loop body with it. */
#define TERM(g, d) (guarded ? chain_term((g), (d)) : (g) * (d))
#define REVERSE_K0(d_dx, d_dy)
#define REVERSE_K1(d_dx, d_dy) \
    { double x = val[ia], v = val[i]; (void)x; (void)v; grad[ia] += TERM(g, d_dx); }
#define REVERSE_K2(d_dx, d_dy) \
    { double x = val[ia], y = val[ib], v = val[i]; (void)x; (void)y; (void)v; \
      grad[ia] += TERM(g, d_dx); grad[ib] += TERM(g, d_dy); }
#define REVERSE_KF(d_dx, d_dy) REVERSE_K1(d_dx, d_dy)
#define REVERSE_KA(d_dx, d_dy) REVERSE_K2(d_dx, d_dy)
#define REVERSE_KC(d_dx, d_dy) \
    { double x = val[ia], y = val[ib], v = val[i]; (void)x; (void)y; (void)v; grad[ia] += TERM(g, d_dx); }

/* Adds node i's adjoint g (not 0) times each local partial into its
   operands' grads. */
static inline __attribute__((always_inline)) void reverse_node(pg_sweep *s, const double *restrict val,
                                                                double *restrict grad, const uint8_t *op,
                                                                const uint32_t *a, const uint32_t *b, uint32_t i,
                                                                double g, int guarded)
{
    uint32_t ia = a[i], ib = b[i];
    (void)ib;
    unsigned cheap = op[i] - PG_OP_FIRST_KA;
    if (cheap < PG_KA_COUNT) {
        double x = val[ia], y = val[ib], v = val[i];
        (void)v;
        const double d_dx[] = {PG_OPS(KA_D_DX)}, d_dy[] = {PG_OPS(KA_D_DY)};
        grad[ia] += TERM(g, d_dx[cheap]);
        grad[ib] += TERM(g, d_dy[cheap]);
        return;
    }
    switch (op[i]) {
#define PG_REVERSE_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: REVERSE_##kind(d_dx, d_dy) break;
        PG_OPS(PG_REVERSE_CASE)
#undef PG_REVERSE_CASE
    }
}

/* g == 0 || !isfinite(g) in one compare, as the hot loop asks it of every
   node: doubling the bits drops the sign, and 1 less wraps 0 to the top. */
static inline int zero_or_not_finite(double g)
{
    uint64_t bits;
    memcpy(&bits, &g, sizeof bits);
    return (bits << 1) - 1 >= (UINT64_C(0x7ff0000000000000) << 1) - 1;
}

static void reverse_guarded(pg_sweep *s, const double *restrict val, double *restrict grad, uint32_t i, double g)
{
    reverse_node(s, val, grad, s->t->op, s->t->a, s->t->b, i, g, 1);
}

/* Adds each node's adjoint into its operands', from node `top` down to
   `bottom`, by the chain rule of pg_chain: a node with a zero adjoint is
   skipped (the output does not depend on it, and its operands get 0 from
   it whatever its partials are), and a zero partial gives 0 even times an
   infinite adjoint. */
void pg__reverse(pg_sweep *s, const double *restrict val, double *restrict grad, uint32_t top, uint32_t bottom)
{
    const uint8_t *op = s->t->op;
    const uint32_t *a = s->t->a, *b = s->t->b;
    for (uint32_t i = top + 1; i-- > bottom;) {
        if (i - bottom >= AHEAD) {
            PREFETCH(&val[OPERAND_B(i - AHEAD)], 0);
            PREFETCH(&grad[OPERAND_B(i - AHEAD)], 1);
        }
        double g = grad[i];
        if (zero_or_not_finite(g)) {
            if (g != 0) reverse_guarded(s, val, grad, i, g);
            continue;
        }
        reverse_node(s, val, grad, op, a, b, i, g, 0);
    }
}

/* Tangents live in dot[0 .. top - seed]; nodes below the seed have none. */
#define TANGENT(j) ((j) >= seed ? dot[(j) - seed] : 0.0)
#define TANGENT_K0(d_dx, d_dy)
#define TANGENT_K1(d_dx, d_dy) \
    { double tx = TANGENT(ia); \
      if (tx != 0) { double x = val[ia], v = val[i]; (void)x; (void)v; r = chain_term(tx, d_dx); } }
#define TANGENT_K2(d_dx, d_dy) \
    { double tx = TANGENT(ia), ty = TANGENT(ib); \
      if (tx != 0 || ty != 0) { double x = val[ia], y = val[ib], v = val[i]; (void)x; (void)y; (void)v; \
        if (tx != 0) r += chain_term(tx, d_dx); \
        if (ty != 0) r += chain_term(ty, d_dy); } }
#define TANGENT_KF(d_dx, d_dy) TANGENT_K1(d_dx, d_dy)
#define TANGENT_KA(d_dx, d_dy) TANGENT_K2(d_dx, d_dy)
#define TANGENT_KC(d_dx, d_dy) \
    { double tx = TANGENT(ia); \
      if (tx != 0) { double x = val[ia], y = val[ib], v = val[i]; (void)x; (void)y; (void)v; r = chain_term(tx, d_dx); } }

/* d node / d seed for every node in (from, to]; dot[0] is 1, for the seed
   itself.  The chain rule is reverse's: zero tangents are skipped, and a
   zero partial gives 0 even times an infinite tangent.  With `needed`
   (indexed from seed), nodes it does not mark are skipped too. */
static void tangent(pg_sweep *s, const double *restrict val, double *restrict dot, uint32_t seed, uint32_t from,
                    uint32_t to, const uint8_t *needed)
{
    const uint8_t *op = s->t->op;
    const uint32_t *a = s->t->a, *b = s->t->b;
    for (uint32_t i = from + 1; i <= to; i++) {
        uint32_t ia = a[i], ib = b[i];
        (void)ib;
        double r = 0;
        if (needed && !needed[i - seed]) {
            dot[i - seed] = 0;
            continue;
        }
        switch (op[i]) {
#define PG_TANGENT_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: TANGENT_##kind(d_dx, d_dy) break;
            PG_OPS(PG_TANGENT_CASE)
#undef PG_TANGENT_CASE
        }
        dot[i - seed] = r;
    }
}

/* The nodes in [seed, top] that top depends on, marked 1 (indexed from
   seed); NULL when out of memory. */
static uint8_t *depended_on(pg_tape *t, uint32_t seed, uint32_t top)
{
    uint8_t *needed = pg__alloc(t, NULL, (size_t)top - seed + 1);
    if (!needed) return NULL;
    memset(needed, 0, (size_t)top - seed + 1);
    needed[top - seed] = 1;
    for (uint32_t i = top; i > seed; i--) {
        if (!needed[i - seed]) continue;
        int operands = pg_op_arity(t->op[i]);
        if (operands >= 1 && t->a[i] >= seed) needed[t->a[i] - seed] = 1;
        if (operands == 2 && t->b[i] >= seed) needed[t->b[i] - seed] = 1;
    }
    return needed;
}

/* ---- the public sweeps -------------------------------------------------------- */

static int set(pg_tape *t, uint32_t leaf, double value)
{
    PG_CHECK_NODE(t, leaf);
    if (t->op[leaf] != PG_OP_LEAF)
        return pg__fail(t, PG_ENOTLEAF, "node %u is a %s, not a leaf: only leaves can be set",
                        (unsigned)leaf, pg_op_name(t->op[leaf]));
    t->value[leaf] = value;
    pg__invalidate(t, leaf + 1);
    return PG_OK;
}

static int value(pg_tape *t, uint32_t i, double *out)
{
    PG_CHECK_NODE(t, i);
    int rc = pg__eval_to(t, i + 1);
    if (rc == PG_OK && (rc = pg__readable(t, i)) == PG_OK) *out = t->value[i];
    return rc;
}

static int derive(pg_tape *t, uint32_t y, uint32_t x, double *out)
{
    PG_CHECK_NODE(t, y);
    PG_CHECK_NODE(t, x);
    int rc = pg__eval_to(t, y + 1);
    if (rc || (rc = pg__readable(t, y))) return rc;
    if (x > y) { /* y was built before x, so cannot depend on it */
        *out = 0.0;
        return PG_OK;
    }
    double *dot = pg__alloc(t, NULL, ((size_t)y - x + 1) * sizeof *dot);
    if (!dot) return pg__fail(t, PG_ENOMEM, "out of memory for %u tangents", (unsigned)(y - x + 1));
    /* Failed nodes hold NaN, and y does not depend on them (it holds its
       value): leave them out, rather than call a derivative at NaN. */
    uint8_t *needed = NULL;
    if (pg__has_failures(t) && t->failed_hi > x && !(needed = depended_on(t, x, y))) {
        pg__alloc(t, dot, 0);
        return pg__fail(t, PG_ENOMEM, "out of memory for %u tangents", (unsigned)(y - x + 1));
    }
    pg_sweep s = {t, PG_OK, 0, 0, 0, 0};
    pg_poll poll = {0, 0};
    int stopped = 0;
    dot[0] = 1.0;
    for (uint32_t from = x; from < y && !stopped && !s.status; from += PG_CHUNK) {
        uint32_t to = y - from > PG_CHUNK ? from + PG_CHUNK : y;
        tangent(&s, t->value, dot, x, from, to, needed);
        stopped = to < y && pg__stop(t, &poll, PG_CHUNK);
    }
    if (s.status && s.code >= 0 && !needed && (needed = depended_on(t, x, y))) {
        /* The failure may be in a node y does not depend on (a derivative
           graph's call of a function with no next derivative, between x and
           y): y's derivative does not need it, so sweep again without it.
           Not after a callback asked to stop the call (a negative code). */
        s = (pg_sweep){t, PG_OK, 0, 0, 0, 0};
        tangent(&s, t->value, dot, x, x, y, needed);
    }
    pg__alloc(t, needed, 0);
    double result = dot[y - x];
    pg__alloc(t, dot, 0);
    if (s.status) return pg__sweep_failure(&s);
    if (stopped) return pg__interrupted(t);
    *out = result;
    return PG_OK;
}

int pg__backprop(pg_tape *t, uint32_t y)
{
    PG_CHECK_NODE(t, y);
    int rc = pg__eval_to(t, y + 1);
    if (rc || (rc = pg__readable(t, y))) return rc;
    memset(t->grad, 0, (size_t)t->n * sizeof *t->grad);
    t->grad[y] = 1.0;
    pg_sweep s = {t, PG_OK, 0, 0, 0, 0};
    pg_poll poll = {0, 0};
    int stopped = 0;
    for (uint32_t top = y + 1; top > 0 && !stopped && !s.status;) {
        uint32_t bottom = top > PG_CHUNK ? top - PG_CHUNK : 0;
        pg__reverse(&s, t->value, t->grad, top - 1, bottom);
        top = bottom;
        stopped = top > 0 && pg__stop(t, &poll, PG_CHUNK);
    }
    if (stopped || s.status) {
        memset(t->grad, 0, (size_t)t->n * sizeof *t->grad); /* no half-made grads */
        return s.status ? pg__sweep_failure(&s) : pg__interrupted(t);
    }
    return PG_OK;
}

/* The public sweeps hold the tape from start to end. */
int pg_set(pg_tape *t, uint32_t leaf, double v) { PG_HOLDING(t, PG_EBUSY, set(t, leaf, v)); }

int pg_value(pg_tape *t, uint32_t i, double *out) { PG_HOLDING(t, PG_EBUSY, value(t, i, out)); }

int pg_derive(pg_tape *t, uint32_t y, uint32_t x, double *out) { PG_HOLDING(t, PG_EBUSY, derive(t, y, x, out)); }

int pg_backprop(pg_tape *t, uint32_t y) { PG_HOLDING(t, PG_EBUSY, pg__backprop(t, y)); }

static int grad(pg_tape *t, uint32_t i, double *out)
{
    PG_CHECK_NODE(t, i);
    *out = t->grad[i];
    return PG_OK;
}

int pg_grad(pg_tape *t, uint32_t i, double *out) { PG_HOLDING(t, PG_EBUSY, grad(t, i, out)); }

double pg_peek_value(pg_tape *t, uint32_t i)
{
    if (!pg__enter(t)) return NAN;
    double v = i < t->stale && i < t->n ? t->value[i] : NAN;
    pg__leave(t);
    return v;
}

double pg_peek_grad(pg_tape *t, uint32_t i)
{
    if (!pg__enter(t)) return NAN;
    double g = i < t->n ? t->grad[i] : NAN;
    pg__leave(t);
    return g;
}

/* ---- many nodes at once ----------------------------------------------------------- */

/* Checks every index before anything is read or written; gives the largest. */
static int check_nodes(pg_tape *t, const uint32_t *idx, size_t n, uint32_t *max)
{
    uint32_t m = 0;
    for (size_t k = 0; k < n; k++) {
        PG_CHECK_NODE(t, idx[k]);
        if (idx[k] > m) m = idx[k];
    }
    *max = m;
    return PG_OK;
}

static int values(pg_tape *t, const uint32_t *idx, size_t n, double *out)
{
    uint32_t max = 0;
    int rc = check_nodes(t, idx, n, &max);
    if (rc) return rc;
    if (n && (rc = pg__eval_to(t, max + 1))) return rc;
    for (size_t k = 0; k < n; k++)
        if ((rc = pg__readable(t, idx[k]))) return rc;
    for (size_t k = 0; k < n; k++) out[k] = t->value[idx[k]];
    return PG_OK;
}

static int grads(pg_tape *t, const uint32_t *idx, size_t n, double *out)
{
    uint32_t max = 0;
    int rc = check_nodes(t, idx, n, &max);
    if (rc) return rc;
    for (size_t k = 0; k < n; k++) out[k] = t->grad[idx[k]];
    return PG_OK;
}

static int set_grads(pg_tape *t, const uint32_t *idx, size_t n, const double *in)
{
    uint32_t max = 0;
    int rc = check_nodes(t, idx, n, &max);
    if (rc) return rc;
    for (size_t k = 0; k < n; k++) t->grad[idx[k]] = in ? in[k] : 0.0;
    return PG_OK;
}

static int set_values(pg_tape *t, const uint32_t *idx, size_t n, const double *in)
{
    uint32_t max = 0;
    int rc = check_nodes(t, idx, n, &max);
    if (rc) return rc;
    for (size_t k = 0; k < n; k++)
        if (t->op[idx[k]] != PG_OP_LEAF)
            return pg__fail(t, PG_ENOTLEAF, "node %u is a %s, not a leaf: only leaves can be set",
                            (unsigned)idx[k], pg_op_name(t->op[idx[k]]));
    for (size_t k = 0; k < n; k++) {
        t->value[idx[k]] = in[k];
        pg__invalidate(t, idx[k] + 1);
    }
    return PG_OK;
}

/* Each holds the tape, as the sweeps do. */
int pg_values(pg_tape *t, const uint32_t *idx, size_t n, double *out) { PG_HOLDING(t, PG_EBUSY, values(t, idx, n, out)); }
int pg_grads(pg_tape *t, const uint32_t *idx, size_t n, double *out) { PG_HOLDING(t, PG_EBUSY, grads(t, idx, n, out)); }
int pg_set_grads(pg_tape *t, const uint32_t *idx, size_t n, const double *in)
{
    PG_HOLDING(t, PG_EBUSY, set_grads(t, idx, n, in));
}
int pg_zero_grads(pg_tape *t, const uint32_t *idx, size_t n) { PG_HOLDING(t, PG_EBUSY, set_grads(t, idx, n, NULL)); }
int pg_set_values(pg_tape *t, const uint32_t *idx, size_t n, const double *in)
{
    PG_HOLDING(t, PG_EBUSY, set_values(t, idx, n, in));
}
