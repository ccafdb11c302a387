/*
 * pyrograd.h -- the C core of pyrograd: a tape of scalar operations with
 * forward evaluation, reverse-mode backprop and forward-mode derivatives.
 *
 * The shape follows SQLite's C interface: one opaque handle (pg_tape *) passed
 * first, functions that return a status code, and the message of the last
 * failure kept on the handle (pg_errmsg).  There is no global mutable state,
 * so separate tapes may be used from separate threads at the same time.
 *
 * Nodes are appended in topological order: a node's operands always have
 * smaller indices.  Every sweep is therefore a plain loop over the tape.
 *
 * Functions that build a node return its index (>= 0), or a negated status
 * code on failure.  Functions that return a double return NaN on failure and
 * leave the status in pg_errcode(); a NaN with pg_errcode() == PG_OK is a
 * genuine NaN result.
 *
 * The declarations between the "cdef" markers are read by cffi as they are
 * (build_ffi.py), so they stay free of macros and includes.
 */
#ifndef PYROGRAD_H
#define PYROGRAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- cdef begin --- */

typedef struct pg_tape pg_tape;

/* Status codes. */
enum {
    PG_OK = 0,
    PG_ENOMEM = 1,      /* an allocation failed; the tape is as it was */
    PG_EINVAL = 2,      /* a bad argument: unknown node, op or function */
    PG_ENOTLEAF = 3,    /* set() on a node that is not a leaf */
    PG_EBUSY = 4,       /* the tape was changed from inside one of its own sweeps */
    PG_ECALLBACK = 5,   /* a user function reported failure; the sweep stopped */
    PG_ENODERIV = 6     /* a user function has no derivative of the needed order */
};

/* How many derivative orders a user function can carry: f, df, d2f. */
enum { PG_FN_ORDERS = 3 };

/* The allocator: like realloc(ptr, size), and free(ptr) when size is 0.
   ud is the pointer given to pg_tape_new_with_alloc. */
typedef void *(*pg_alloc_fn)(void *ud, void *ptr, size_t size);

/* A native unary function, evaluated without leaving C. */
typedef double (*pg_native_fn)(double x);

/* A unary function with context (a Python callable behind cffi): writes
   f(x) to *out and returns 0, or returns a non-zero code to stop the sweep.
   The sweep then fails with PG_ECALLBACK, and pg_callback_code() gives the
   code of the failure it reports (in a batch: that of the first thread, in
   row order, that failed), so the caller can tell failures apart. */
typedef int (*pg_callback_fn)(void *ud, double x, double *out);

pg_tape *pg_tape_new(void);
pg_tape *pg_tape_new_with_alloc(pg_alloc_fn alloc, void *ud);
void pg_tape_free(pg_tape *t);

int pg_errcode(const pg_tape *t);
const char *pg_errmsg(const pg_tape *t);
int pg_callback_code(const pg_tape *t);

uint32_t pg_size(const pg_tape *t);         /* number of nodes */
int pg_reserve(pg_tape *t, uint64_t nodes); /* room for this many nodes in all */
size_t pg_memory(const pg_tape *t);         /* bytes held by the tape */

/* The op table, for bindings and graph export. */
int pg_op_count(void);
const char *pg_op_name(int op);  /* a stable identifier, e.g. "ADD" */
const char *pg_op_label(int op); /* how it is drawn, e.g. "+" */
int pg_op_arity(int op);         /* operand nodes: 0, 1 or 2 */
int pg_op_code(const char *name);/* the op named so, or -1 */

/* Building.  Each returns the new node's index or a negated status. */
int64_t pg_leaf(pg_tape *t, double value, const char *name);
int64_t pg_const(pg_tape *t, double value, const char *name);
int64_t pg_unary(pg_tape *t, int op, uint32_t a);
int64_t pg_binary(pg_tape *t, int op, uint32_t a, uint32_t b);
/* a op k (or k op a when k_first), appending the constant k too. */
int64_t pg_binary_const(pg_tape *t, int op, uint32_t a, double k, int k_first);
int64_t pg_call(pg_tape *t, int fn, uint32_t a);

/* User unary functions: pg_fn_new returns an id (>= 0) or a negated status.
   Order 0 is f, 1 is df, 2 is d2f; give either a native pointer or a callback. */
int pg_fn_new(pg_tape *t, const char *name);
int pg_fn_set(pg_tape *t, int fn, int order, pg_native_fn native,
              pg_callback_fn callback, void *ud);
/* Says that function dfn is fn's derivative, so derivative graphs of fn
   call dfn (and dfn's own derivative, to any order). */
int pg_fn_link(pg_tape *t, int fn, int dfn);
int pg_fn_count(const pg_tape *t);
const char *pg_fn_name(pg_tape *t, int fn);

/* Reading the structure. */
int pg_op(pg_tape *t, uint32_t i);    /* -PG_EINVAL for a bad index */
const char *pg_name(pg_tape *t, uint32_t i); /* NULL when unnamed */
/* Copies nodes [from, from + n) into the given arrays (any may be NULL). */
int pg_export(pg_tape *t, uint32_t from, uint32_t n,
              uint8_t *op, uint32_t *a, uint32_t *b);

/* Values and sweeps.  Values are never stale: reading one evaluates what a
   set() made stale first. */
int pg_set(pg_tape *t, uint32_t leaf, double value);
double pg_value(pg_tape *t, uint32_t i);
double pg_derive(pg_tape *t, uint32_t y, uint32_t x); /* forward mode dy/dx */
int pg_backprop(pg_tape *t, uint32_t y);  /* every grad becomes dy/dnode */
double pg_grad(pg_tape *t, uint32_t i);

/* Derivatives as graphs: out[k] becomes a node (appended, or found on the
   tape) whose value is dy/dxs[k], built with constant folding and sharing
   of identical nodes.  Fails with PG_ENODERIV, the tape as it was, when a
   user function has no derivative of the order needed. */
int pg_grad_graph(pg_tape *t, uint32_t y, const uint32_t *xs, size_t n_xs, uint32_t *out);

/* Many nodes in one call; idx holds n node indices. */
int pg_values(pg_tape *t, const uint32_t *idx, size_t n, double *out);
int pg_grads(pg_tape *t, const uint32_t *idx, size_t n, double *out);
int pg_zero_grads(pg_tape *t, const uint32_t *idx, size_t n);
int pg_set_grads(pg_tape *t, const uint32_t *idx, size_t n, const double *in);
int pg_set_values(pg_tape *t, const uint32_t *idx, size_t n, const double *in);

/* Batches: row r of data (rows x n_in, row-major) is written into the input
   leaves, then the tape is evaluated; the tape's own values are untouched.
   threads >= 1; partial results are combined in a fixed order. */
int pg_eval_batch(pg_tape *t, const uint32_t *outputs, size_t n_out,
                  const uint32_t *inputs, size_t n_in, const double *data,
                  size_t rows, int threads, double *result /* rows x n_out */);
/* The sum (or mean) over rows of loss, and its gradient with respect to each
   wrt node, which is also left in those nodes' grads. */
int pg_grad_batch(pg_tape *t, uint32_t loss, const uint32_t *inputs,
                  size_t n_in, const double *data, size_t rows,
                  const uint32_t *wrt, size_t n_wrt, int mean, int threads,
                  double *loss_out, double *grads_out /* n_wrt */);

/* Optimizers, with PyTorch's update rules.  The caller owns the struct and
   its arrays (state1 and state2 hold n values each, zero at the start). */
enum { PG_SGD = 0, PG_ADAM = 1, PG_RMSPROP = 2, PG_ADAGRAD = 3 };

typedef struct pg_optimizer {
    int kind;
    size_t n;
    const uint32_t *params;  /* leaves */
    double lr, weight_decay, momentum, beta1, beta2, alpha, eps, lr_decay;
    int nesterov;
    int64_t steps;           /* steps taken so far */
    double *state1, *state2; /* momentum or first moment; squares */
} pg_optimizer;

/* One step from the params' grads (backprop or grad_batch leave them). */
int pg_optimizer_step(pg_tape *t, pg_optimizer *o);
/* epochs x (grad_batch over all rows, then a step); lrs (epochs values) or
   NULL for o->lr; losses receives each epoch's loss. */
int pg_optimizer_run(pg_tape *t, pg_optimizer *o, uint32_t loss,
                     const uint32_t *inputs, size_t n_in, const double *data,
                     size_t rows, int mean, int threads, size_t epochs,
                     const double *lrs, double *losses);

/* Whole tapes in and out (bulk.c): for copies, pickles and tapes too big
   to build one call per node. */

/* Appends n nodes: node t->n + k is op[k] on operands a[k], b[k] (node
   indices; CALL's b is its function), with value[k] for a leaf or constant
   (value may be NULL: zeros).  Operands an op does not have are ignored.
   Each node is checked as pg_leaf, pg_unary, pg_binary and pg_call check
   theirs; n_names of the new leaves and constants, named[k] in increasing
   order, get the NUL-terminated strings that follow one another in
   names[0, names_size).  On any failure nothing is appended. */
int pg_import(pg_tape *t, uint32_t n, const uint8_t *op, const uint32_t *a, const uint32_t *b,
              const double *value, uint32_t n_names, const uint32_t *named, const char *names,
              size_t names_size);
/* The stored values of leaves and constants in [from, from + n), and 0 for
   op nodes (pg_values evaluates those): what pg_import takes back. */
int pg_export_values(pg_tape *t, uint32_t from, uint32_t n, double *value);
/* The k-th name in node order, and its node. */
uint32_t pg_name_count(const pg_tape *t);
const char *pg_name_at(pg_tape *t, uint32_t k, uint32_t *node);
/* The function table beyond pg_fn_name: fn's derivative (pg_fn_link, or
   -1); base, the user's function that fn is the level-th derivative of
   (fn itself and 0 for a function the user gave); each order's pointers. */
int pg_fn_info(pg_tape *t, int fn, int *deriv, int *base, int *level);
int pg_fn_get(pg_tape *t, int fn, int order, pg_native_fn *native,
              pg_callback_fn *callback, void **ud);
int pg_fn_set_origin(pg_tape *t, int fn, int base, int level);

/* --- cdef end --- */

#ifdef __cplusplus
}
#endif

#endif /* PYROGRAD_H */
