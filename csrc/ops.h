/*
 * ops.h -- the op table: every op pyrograd knows, one line each.
 *
 *   X(NAME, "label", KIND, value, d_dx, d_dy)
 *
 * value is the node's value from its operand values x and y; d_dx and d_dy
 * are the local partial derivatives, which may also use v, the node's own
 * value (exp' = v costs nothing).  Evaluation, backprop and forward-mode
 * derive are all generated from these lines (sweep.c), so adding an op is
 * adding a line here, a math helper if it needs one, and nothing else.
 *
 * KIND says which operands the op has:
 *   K0  none (leaves and constants; their value is stored, not computed)
 *   K1  one operand node x = a;  b is free for an aux index (CALL: function id)
 *   K2  two operand nodes x = a, y = b
 *   KA  like K2, and cheap (a few flops, no calls): scalar sweeps compute
 *       every KA op's result and pick one by index instead of jumping, as
 *       a random mix of ops makes the jump mispredict (eval + backprop of
 *       bench/'s random graph: 23 ns a node before, 14 after).  KA ops are
 *       listed together.
 *   KC  like K2, but y is a constant: no gradient flows to it (x ** 2)
 *   KF  like K1, for a call out of the tape (a user function): sweeps call
 *       it only where it is needed
 *
 * CALL runs the tape's user function b; call() is defined by the sweep.
 */
#ifndef PG_OPS_H
#define PG_OPS_H

#include <math.h>

static inline double pg_sigmoid(double x)
{
    /* Two branches so that exp never overflows. */
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static inline double pg_softplus(double x)
{
    /* log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|). */
    return (x > 0 ? x : 0) + log1p(exp(-fabs(x)));
}

static inline double pg_sign(double x) { return (x > 0) - (x < 0); }

/* max and min propagate NaN from either side, as numpy does. */
static inline double pg_max(double x, double y) { return (x > y || x != x) ? x : y; }
static inline double pg_min(double x, double y) { return (x < y || x != x) ? x : y; }

/* At a tie the gradient is shared half and half, as in PyTorch. */
static inline double pg_dmax(double x, double y) { return x > y ? 1.0 : x == y ? 0.5 : 0.0; }

/* d/dx x^y = y x^(y-1); written so that x = 0, y = 1 gives 1, not 0 * inf. */
static inline double pg_dpow_dx(double x, double y)
{
    return y == 0 ? 0.0 : y * pow(x, y - 1);
}

/* d/dy x^y = x^y log x; 0 at x = 0 (the limit for y > 0), as in PyTorch. */
static inline double pg_dpow_dy(double x, double v)
{
    return x == 0 ? 0.0 : v * log(x);
}

#define PG_OPS(X)                                                              \
    X(LEAF,     "leaf",    K0, 0,                0,                0)          \
    X(CONST,    "const",   K0, 0,                0,                0)          \
    X(ADD,      "+",       KA, x + y,            1,                1)          \
    X(SUB,      "-",       KA, x - y,            1,                -1)         \
    X(MUL,      "*",       KA, x * y,            y,                x)          \
    X(DIV,      "/",       K2, x / y,            1 / y,            -v * (1 / y)) \
    X(POW,      "pow",     K2, pow(x, y),        pg_dpow_dx(x, y), pg_dpow_dy(x, v)) \
    X(POWC,     "pow",     KC, pow(x, y),        pg_dpow_dx(x, y), 0)          \
    X(MAX,      "max",     K2, pg_max(x, y),     pg_dmax(x, y),    pg_dmax(y, x)) \
    X(MIN,      "min",     K2, pg_min(x, y),     pg_dmax(y, x),    pg_dmax(x, y)) \
    X(NEG,      "neg",     K1, -x,               -1,               0)          \
    X(ABS,      "abs",     K1, fabs(x),          pg_sign(x),       0)          \
    X(EXP,      "exp",     K1, exp(x),           v,                0)          \
    X(LOG,      "log",     K1, log(x),           1 / x,            0)          \
    X(SQRT,     "sqrt",    K1, sqrt(x),          0.5 / v,          0)          \
    X(SIN,      "sin",     K1, sin(x),           cos(x),           0)          \
    X(COS,      "cos",     K1, cos(x),           -sin(x),          0)          \
    X(TAN,      "tan",     K1, tan(x),           1 + v * v,        0)          \
    X(TANH,     "tanh",    K1, tanh(x),          1 - v * v,        0)          \
    X(SIGMOID,  "sigmoid", K1, pg_sigmoid(x),    v * (1 - v),      0)          \
    X(RELU,     "relu",    K1, x > 0 ? x : 0,    x > 0,            0)          \
    X(SOFTPLUS, "softplus",K1, pg_softplus(x),   pg_sigmoid(x),    0)          \
    X(CALL,     "call",    KF, call(0, x),       call(1, x),       0)

enum {
#define PG_OP_ENUM(NAME, label, kind, value, d_dx, d_dy) PG_OP_##NAME,
    PG_OPS(PG_OP_ENUM)
#undef PG_OP_ENUM
    PG_OP_COUNT
};

/* PG_IF_KA(kind)(text) is text for KA ops and nothing for the others. */
#define PG_IF_KA(kind) PG_IF_KA_##kind
#define PG_IF_KA_KA(...) __VA_ARGS__
#define PG_IF_KA_K0(...)
#define PG_IF_KA_K1(...)
#define PG_IF_KA_K2(...)
#define PG_IF_KA_KC(...)
#define PG_IF_KA_KF(...)

/* The KA ops are PG_OP_FIRST_KA, ..., PG_OP_FIRST_KA + PG_KA_COUNT - 1. */
enum {
#define PG_KA_ENUM(NAME, label, kind, value, d_dx, d_dy) PG_IF_KA(kind)(PG_KA_##NAME,)
    PG_OPS(PG_KA_ENUM)
#undef PG_KA_ENUM
    PG_KA_COUNT
};
#define PG_OP_FIRST_KA PG_OP_ADD
#define PG_KA_CHECK(NAME, label, kind, value, d_dx, d_dy) \
    PG_IF_KA(kind)(_Static_assert(PG_OP_##NAME == PG_OP_FIRST_KA + PG_KA_##NAME, \
                                  "KA ops must be listed together, starting with ADD");)
PG_OPS(PG_KA_CHECK)
#undef PG_KA_CHECK

#endif /* PG_OPS_H */
