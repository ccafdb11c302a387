/*
 * ops.h -- the op table: every op pyrograd knows, one line each.
 *
 *   X(NAME, "label", KIND, value, d_dx, d_dy, graph_dx, graph_dy)
 *
 * value is the node's value from its operand values x and y; d_dx and d_dy
 * are the local partial derivatives, which may also use v, the node's own
 * value (exp' = v costs nothing).  Evaluation, backprop and forward-mode
 * derive are all generated from these (sweep.c, batch.c).
 *
 * graph_dx and graph_dy are the same partials built as nodes of the tape,
 * for derivatives of any order (grad.c): X_, Y_ and V_ are the operand
 * nodes and the node itself, ONE, ZERO and K(c) constants, U(OP, p) and B(OP, p, q)
 * new nodes, VALUE(n) a node's value.  Adding an op is adding a line here,
 * a math helper if it needs one, and nothing else.
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

/* max and min (and relu, max(x, 0)) propagate NaN from either side, as numpy does. */
static inline double pg_max(double x, double y) { return (x > y || x != x) ? x : y; }
static inline double pg_min(double x, double y) { return (x < y || x != x) ? x : y; }

/* At a tie the gradient is shared half and half, as in PyTorch. */
static inline double pg_dmax(double x, double y) { return x > y ? 1.0 : x == y ? 0.5 : 0.0; }

/* The chain rule's product of an adjoint or tangent g and a local partial
   d: exactly 0 when either factor is 0 (+0 or -0), even if the other is inf
   or NaN.  A flat op (relu below 0, a constant factor 0) then stops an
   infinite partial beneath it from making a NaN, as a node the output does
   not depend on (adjoint 0) always did, and every derivative mode agrees. */
static inline double pg_chain(double g, double d) { return g == 0 || d == 0 ? 0.0 : g * d; }

/* d/dx x^y = y x^(y-1), a product under the chain rule's zero: 0 for y = 0
   whatever x is (x = 0, NaN), and x = 0, y = 1 gives 1. */
static inline double pg_dpow_dx(double x, double y) { return pg_chain(y, pow(x, y - 1)); }

/* d/dy x^y = x^y log x; 0 at x = 0 (the limit for y > 0), as in PyTorch. */
static inline double pg_dpow_dy(double x, double v)
{
    return x == 0 ? 0.0 : v * log(x);
}

#define PG_OPS(X)                                                                                   \
    /* NAME     label       kind  value            d/dx              d/dy                           \
                                  d/dx as a graph  /  d/dy as a graph */                            \
    X(LEAF,     "leaf",     K0,  0,               0,                0,                              \
                                  ZERO, ZERO)                                                       \
    X(CONST,    "const",    K0,  0,               0,                0,                              \
                                  ZERO, ZERO)                                                       \
    X(ADD,      "+",        KA,  x + y,           1,                1,                              \
                                  ONE, ONE)                                                         \
    X(SUB,      "-",        KA,  x - y,           1,                -1,                             \
                                  ONE, K(-1))                                                       \
    X(MUL,      "*",        KA,  x * y,           y,                x,                              \
                                  Y_, X_)                                                           \
    /* d/dy is -(v / y), as its graph computes it (-v * (1 / y) was 0 * inf at x = 0, y = 5e-324) */ \
    X(DIV,      "/",        K2,  x / y,           1 / y,            -(v / y),                       \
                                  B(DIV, ONE, Y_), U(NEG, B(DIV, V_, Y_)))                          \
    X(POW,      "pow",      K2,  pow(x, y),       pg_dpow_dx(x, y), pg_dpow_dy(x, v),               \
                                  B(CHAIN, Y_, B(POW, X_, B(SUB, Y_, ONE))), B(XLOG, X_, V_))       \
    X(POWC,     "pow",      KC,  pow(x, y),       pg_dpow_dx(x, y), 0,                              \
                                  B(CHAIN, Y_, B(POWC, X_, K(VALUE(Y_) - 1))), ZERO)                \
    X(MAX,      "max",      K2,  pg_max(x, y),    pg_dmax(x, y),    pg_dmax(y, x),                  \
                                  B(DMAX, X_, Y_), B(DMAX, Y_, X_))                                 \
    X(MIN,      "min",      K2,  pg_min(x, y),    pg_dmax(y, x),    pg_dmax(x, y),                  \
                                  B(DMAX, Y_, X_), B(DMAX, X_, Y_))                                 \
    X(NEG,      "neg",      K1,  -x,              -1,               0,                              \
                                  K(-1), ZERO)                                                      \
    X(ABS,      "abs",      K1,  fabs(x),         pg_sign(x),       0,                              \
                                  U(SIGN, X_), ZERO)                                                \
    X(EXP,      "exp",      K1,  exp(x),          v,                0,                              \
                                  V_, ZERO)                                                         \
    X(LOG,      "log",      K1,  log(x),          1 / x,            0,                              \
                                  B(DIV, ONE, X_), ZERO)                                            \
    X(SQRT,     "sqrt",     K1,  sqrt(x),         0.5 / v,          0,                              \
                                  B(DIV, K(0.5), V_), ZERO)                                         \
    X(SIN,      "sin",      K1,  sin(x),          cos(x),           0,                              \
                                  U(COS, X_), ZERO)                                                 \
    X(COS,      "cos",      K1,  cos(x),          -sin(x),          0,                              \
                                  U(NEG, U(SIN, X_)), ZERO)                                         \
    X(TAN,      "tan",      K1,  tan(x),          1 + v * v,        0,                              \
                                  B(ADD, ONE, B(MUL, V_, V_)), ZERO)                                \
    X(TANH,     "tanh",     K1,  tanh(x),         1 - v * v,        0,                              \
                                  B(SUB, ONE, B(MUL, V_, V_)), ZERO)                                \
    X(SIGMOID,  "sigmoid",  K1,  pg_sigmoid(x),   v * (1 - v),      0,                              \
                                  B(MUL, V_, B(SUB, ONE, V_)), ZERO)                                \
    X(RELU,     "relu",     K1,  pg_max(x, 0),    x > 0,            0,                              \
                                  U(STEP, X_), ZERO)                                                \
    X(SOFTPLUS, "softplus", K1,  pg_softplus(x),  pg_sigmoid(x),    0,                              \
                                  U(SIGMOID, X_), ZERO)                                             \
    X(CALL,     "call",     KF,  call(0, x),      call(1, x),       0,                              \
                                  CALL_DERIVATIVE, ZERO)                                            \
    /* Derivatives of the ops above, flat wherever they are defined. */                             \
    X(STEP,     "step",     K1,  x > 0,           0,                0,                              \
                                  ZERO, ZERO)                                                       \
    X(SIGN,     "sign",     K1,  pg_sign(x),      0,                0,                              \
                                  ZERO, ZERO)                                                       \
    X(DMAX,     "dmax",     K2,  pg_dmax(x, y),   0,                0,                              \
                                  ZERO, ZERO)                                                       \
    /* y log x, and 0 at x = 0 (d/dy x^y = x^y log x has that limit); so is d/dy, xlog(x, 1). */    \
    X(XLOG,     "xlog",     K2,  pg_dpow_dy(x, y), y / x,           x == 0 ? 0 : log(x),            \
                                  B(DIV, Y_, X_), B(XLOG, X_, ONE))                                 \
    /* The chain rule's product (pg_chain): derivative graphs multiply an      \
       adjoint by a partial with it, so that they follow the sweeps' rule. */  \
    X(CHAIN,    "chain",    K2,  pg_chain(x, y),  y,                x,                              \
                                  Y_, X_)                                                           \

enum {
#define PG_OP_ENUM(NAME, label, kind, value, d_dx, d_dy, ...) PG_OP_##NAME,
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
#define PG_KA_ENUM(NAME, label, kind, value, d_dx, d_dy, ...) PG_IF_KA(kind)(PG_KA_##NAME,)
    PG_OPS(PG_KA_ENUM)
#undef PG_KA_ENUM
    PG_KA_COUNT
};
#define PG_OP_FIRST_KA PG_OP_ADD
#define PG_KA_CHECK(NAME, label, kind, value, d_dx, d_dy, ...) \
    PG_IF_KA(kind)(_Static_assert(PG_OP_##NAME == PG_OP_FIRST_KA + PG_KA_##NAME, \
                                  "KA ops must be listed together, starting with ADD");)
PG_OPS(PG_KA_CHECK)
#undef PG_KA_CHECK

#endif /* PG_OPS_H */
