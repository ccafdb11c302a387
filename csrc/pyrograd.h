/*
 * pyrograd.h -- the C core of pyrograd: a tape of scalar operations with
 * forward evaluation, reverse-mode backprop and forward-mode derivatives.
 *
 * The shape follows SQLite's C interface: one opaque handle (pg_tape *) passed
 * first, functions that return a status code, and the message of the last
 * failure kept on the handle (pg_errmsg).  There is no global mutable state,
 * so separate tapes may be used from separate threads at the same time.
 *
 * Threads: every function that reads or changes a tape first takes the
 * tape's busy flag (an atomic compare-and-swap, a few nanoseconds) and gives
 * it back on return.  A call that finds the flag taken -- by another thread,
 * or by a user function calling back into the sweep that runs it -- fails at
 * once with PG_EBUSY and touches nothing: it does not wait (a batch's worker
 * threads calling back into the tape would wait for ever), and it does not
 * record a message (pg_errstr(PG_EBUSY) describes it).  pg_errcode, pg_errmsg
 * and pg_callback_code describe the last failure of a call that held the
 * flag; when threads share a tape, that may be another thread's failure.
 *
 * Nodes are appended in topological order: a node's operands always have
 * smaller indices.  Every sweep is therefore a plain loop over the tape.
 *
 * Functions that build a node return its index (>= 0), or a negated status
 * code on failure.  Functions that read a value return a status and write
 * the value to an out parameter, so that a result never depends on state
 * another thread may change.
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
    PG_EBUSY = 4,       /* the tape is in use: by another thread, or by the sweep
                           that called the function calling back into it */
    PG_ECALLBACK = 5,   /* a user function reported failure; the sweep stopped */
    PG_ENODERIV = 6,    /* a user function has no derivative of the needed order */
    PG_EINTERRUPT = 7   /* pg_interrupt or the progress handler stopped the call */
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
   row order, that failed), so the caller can tell failures apart.  *out is
   read only after a 0.  A positive code is the function's failure at x; a
   negative one asks to stop the whole call (Ctrl-C arrived in the
   function): the call then neither retries the function nor runs rows
   again to find an earlier failure, and a batch stops every thread. */
typedef int (*pg_callback_fn)(void *ud, double x, double *out);

pg_tape *pg_tape_new(void);
pg_tape *pg_tape_new_with_alloc(pg_alloc_fn alloc, void *ud);
void pg_tape_free(pg_tape *t);

int pg_errcode(const pg_tape *t);
const char *pg_errmsg(const pg_tape *t);
int pg_callback_code(const pg_tape *t);
const char *pg_errstr(int code); /* what a status code means, in English */

/* In the child of a fork, before anything else uses the tape: a tape that
   a thread other than the one that forked was holding (the child has no
   such thread, so it would stay busy for ever) is given back, as a failed
   call leaves it: nodes, names and functions whole (a node that was being
   appended is there or not; the names of an import may be missing), values
   re-evaluated when next read, grads zero.  Returns 1 when it was given
   back, else 0 (idle, or held by the thread that forked, inside a user
   function, which gives it back on return). */
int pg_tape_after_fork(pg_tape *t);

int64_t pg_size(pg_tape *t);                /* number of nodes, or -PG_EBUSY */
int pg_reserve(pg_tape *t, uint64_t nodes); /* room for this many nodes in all */
int64_t pg_memory(pg_tape *t);              /* bytes held by the tape, or -PG_EBUSY */

/* Stopping a long call (a batch, a training run, a sweep of a long tape),
   as sqlite3_interrupt does: safe to call from any thread, or from a signal
   handler.  The call running on the tape fails with PG_EINTERRUPT at its
   next check, which comes between blocks of rows (never inside the loop
   over nodes), within microseconds to milliseconds; the tape stays as a
   failed call leaves it.  A call that starts afterwards clears the request. */
void pg_interrupt(pg_tape *t);

/* The progress handler: a long call calls fn(ud) about every `ms`
   milliseconds, on the thread that made the call.  A non-zero return stops
   the call with PG_EINTERRUPT, and pg_callback_code() then gives the value
   returned.  Short calls never call it (nor read the clock).  fn runs while
   the tape is held, so it must not call into the tape.  NULL removes it. */
typedef int (*pg_progress_fn)(void *ud);
int pg_progress_handler(pg_tape *t, int ms, pg_progress_fn fn, void *ud);

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
/* pg_binary of the arithmetic ops, one call each: an argument less costs a
   Python binding (cffi) some 10 ns of the 100 that the call costs. */
int64_t pg_add(pg_tape *t, uint32_t a, uint32_t b);
int64_t pg_sub(pg_tape *t, uint32_t a, uint32_t b);
int64_t pg_mul(pg_tape *t, uint32_t a, uint32_t b);
int64_t pg_div(pg_tape *t, uint32_t a, uint32_t b);
int64_t pg_pow(pg_tape *t, uint32_t a, uint32_t b);
/* a op k (or k op a when k_first), appending the constant k too. */
int64_t pg_binary_const(pg_tape *t, int op, uint32_t a, double k, int k_first);
int64_t pg_call(pg_tape *t, int fn, uint32_t a);

/* User unary functions.  One order of a function: a native pointer, or a
   callback and its ud; all NULL when the function lacks that order. */
typedef struct pg_fnslot {
    pg_native_fn native;
    pg_callback_fn callback;
    void *ud;
} pg_fnslot;

/* A function for pg_fn_define.  deriv and base name entries of the same
   call by their index, so that a chain of derivatives, even one that
   cycles (exp is its own derivative), is defined at once.  An entry with
   fn >= 0 stands for that existing function, for the others to name; its
   other fields are ignored. */
typedef struct pg_fndef {
    int fn;           /* -1: a new function, the fields below; or an existing one */
    const char *name;
    pg_fnslot order[PG_FN_ORDERS]; /* f, df, d2f */
    int deriv;        /* the entry that is this one's derivative, or -1: graphs of
                         this one's derivative call it (and its derivative, ...) */
    int base;         /* the entry of the user's function that this one is the
                         level-th derivative of, or -1: itself */
    int level;        /* >= 0 */
} pg_fndef;

/* Defines the new functions of n entries under one hold of the tape, all
   of them or (on any failure) none, so a failure leaves nothing behind.
   On success ids[k] is entry k's function id, for pg_call. */
int pg_fn_define(pg_tape *t, const pg_fndef *defs, int n, int *ids);
int pg_fn_count(pg_tape *t);      /* or -PG_EBUSY */
int pg_fn_name(pg_tape *t, int fn, const char **name);

/* Reading the structure.  A name stays valid as long as the tape. */
int pg_op(pg_tape *t, uint32_t i);    /* the op, or -PG_EINVAL for a bad index */
int pg_name(pg_tape *t, uint32_t i, const char **name); /* NULL when unnamed */
/* Copies nodes [from, from + n) into the given arrays (any may be NULL). */
int pg_export(pg_tape *t, uint32_t from, uint32_t n,
              uint8_t *op, uint32_t *a, uint32_t *b);

/* Values and sweeps.  Values are never stale: reading one evaluates what a
   set() made stale first. */
int pg_set(pg_tape *t, uint32_t leaf, double value);
int pg_value(pg_tape *t, uint32_t i, double *value);
int pg_derive(pg_tape *t, uint32_t y, uint32_t x, double *dydx); /* forward mode */
int pg_backprop(pg_tape *t, uint32_t y);  /* every grad becomes dy/dnode */
int pg_grad(pg_tape *t, uint32_t i, double *grad);
/* The fast path of bindings: node i's value (or grad) when it can be read
   at once, else NaN -- when it is stale, i is bad or the tape is busy.  They
   never evaluate, fail or record anything; after a NaN, pg_value (pg_grad)
   gives the value or the status.  (An out parameter costs a Python binding
   more than the whole call.) */
double pg_peek_value(pg_tape *t, uint32_t i);
double pg_peek_grad(pg_tape *t, uint32_t i);

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
/* The sum (or mean) over rows of loss, plus the node penalty (-1 for none:
   a term such as an L2 penalty that must not depend on the inputs, so it is
   evaluated once, not once a row), and the gradient of that with respect
   to each wrt node, which is also left in those nodes' grads. */
int pg_grad_batch(pg_tape *t, uint32_t loss, int64_t penalty, const uint32_t *inputs,
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
int pg_optimizer_run(pg_tape *t, pg_optimizer *o, uint32_t loss, int64_t penalty,
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
/* How many names the tape holds; names [from, from + n) in node order, in
   one call: their nodes and
   strings (valid as long as the tape).  Names, nodes and functions are only
   ever appended, so a copy taken from counts read first, in a few calls,
   is consistent while another thread extends the tape. */
int64_t pg_name_count(pg_tape *t); /* or -PG_EBUSY */
int pg_export_names(pg_tape *t, uint32_t from, uint32_t n, uint32_t *node, const char **name);
/* The function table beyond pg_fn_name: fn's derivative (pg_fndef.deriv,
   or -1); base, the user's function that fn is the level-th derivative of
   (fn itself and 0 for a function the user gave); each order's pointers. */
int pg_fn_info(pg_tape *t, int fn, int *deriv, int *base, int *level);
int pg_fn_get(pg_tape *t, int fn, int order, pg_native_fn *native,
              pg_callback_fn *callback, void **ud);
/* Functions [from, from + n) in one call: what pg_fn_name, pg_fn_info and
   pg_fn_get give, with PG_FN_ORDERS entries a function in native, callback
   and ud (any of the arrays may be NULL). */
int pg_export_fns(pg_tape *t, uint32_t from, uint32_t n, const char **name, int *deriv, int *base,
                  int *level, pg_native_fn *native, pg_callback_fn *callback, void **ud);

/* --- cdef end --- */

#ifdef __cplusplus
}
#endif

#endif /* PYROGRAD_H */
