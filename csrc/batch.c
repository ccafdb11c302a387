/*
 * batch.c -- many rows of data through one tape: eval_batch and grad_batch,
 * split over threads.
 *
 * The tape is read-only during a batch.  A batch first makes a plan: the op
 * nodes the outputs need, in evaluation order (and, for a gradient, the ones
 * the loss depends on, in reverse order).  Rows then run in blocks: the
 * workspace keeps a node's values for the block's rows side by side,
 * val[node * R + r], so one dispatch of an instruction serves R rows and the
 * loop over rows is plain arithmetic that the compiler vectorizes.
 *
 * Each thread has its own workspace and a contiguous share of the rows, and
 * keeps partial sums that are added in thread order, so a result never
 * depends on timing.  Every row sees exactly the operations of a scalar
 * sweep, in the same order, so one thread gives the result of a Python loop
 * of set and backprop to the last bit.
 */
#include "tape.h"

#include <pthread.h>
#include <string.h>

/* Rows per block, and the most workspace a block may take per thread. */
#define PG_BLOCK 16
#define PG_BLOCK_BYTES (8u << 20)

/* One op node of a plan. */
typedef struct instr {
    uint32_t i, a, b;
    uint8_t op;
} instr;

/* What every thread of a batch reads. */
typedef struct batch {
    const uint32_t *inputs;
    size_t n_in;
    const double *data; /* rows x n_in, row-major */
    size_t rows;
    uint32_t top;       /* the workspace holds nodes [0, top] */
    uint32_t from;      /* rows re-evaluate the nodes they need in [from, top] */
    size_t block;       /* rows per block, R */
    const instr *fwd, *rev;
    size_t n_fwd, n_rev;

    /* eval_batch: outputs are copied to result (rows x n_out). */
    const uint32_t *outputs;
    size_t n_out;
    double *result;

    /* grad_batch: the reverse sweep covers the loss's cone above bottom. */
    uint32_t loss, bottom;
    const uint32_t *wrt;
    size_t n_wrt;
} batch;

/* One thread's share and workspace. */
typedef struct worker {
    const batch *job;
    pg_sweep sweep;
    pg_poll *poll;      /* the calling thread's, for the progress handler; else NULL */
    int stopped;        /* by an interrupt, between blocks */
    size_t r0, r1;
    double *val, *grad; /* (top + 1) x R each */
    double *grad_sum;   /* n_wrt partial sums */
    double loss_sum;
    pthread_t thread;
    int started;
} worker;

/* ---- the block interpreter, generated from the op table ---------------------- */

#define call(order, x) pg__call(s, ib, (order), (x))

#define FWD_K0(value)
#define FWD_K1(value) \
    for (size_t r = 0; r < nr; r++) { double x = X[r]; V[r] = (value); }
#define FWD_K2(value)                                             \
    { const double *restrict Y = val + (size_t)ib * R;            \
      for (size_t r = 0; r < nr; r++) { double x = X[r], y = Y[r]; V[r] = (value); } }
#define FWD_KC(value) FWD_K2(value)
#define FWD_KA(value) FWD_K2(value)
#define FWD_KF(value) FWD_K1(value)

static void forward_block(pg_sweep *s, const batch *job, double *val, size_t nr)
{
    const size_t R = job->block;
    for (size_t k = 0; k < job->n_fwd; k++) {
        const instr in = job->fwd[k];
        const uint32_t ib = in.b;
        double *restrict V = val + (size_t)in.i * R;
        const double *restrict X = val + (size_t)in.a * R;
        switch (in.op) {
#define PG_FWD_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: FWD_##kind(value) break;
            PG_OPS(PG_FWD_CASE)
#undef PG_FWD_CASE
        }
    }
}

/* As in sweep.c, a row whose adjoint is zero contributes nothing: adding
   -0.0 leaves every number as it is (even -0.0), so the select gives the
   skip's result bit for bit without a branch, and the loop vectorizes.
   The product is computed for every row (a 0 * inf that the select then
   discards raises no trap: none are enabled). */
#define SKIP_ZERO(g, term) select_nonzero((g), (g) * (term))
static inline double select_nonzero(double g, double product) { return g != 0 ? product : -0.0; }
#define REV_K0(d_dx, d_dy)
#define REV_K1(d_dx, d_dy)                                               \
    for (size_t r = 0; r < nr; r++) {                                    \
        double g = G[r], x = X[r], v = V[r]; (void)x; (void)v;           \
        GX[r] += SKIP_ZERO(g, d_dx);                                     \
    }
#define REV_K2(d_dx, d_dy)                                               \
    { const double *Y = val + (size_t)ib * R;                            \
      double *GY = grad + (size_t)ib * R;                                \
      for (size_t r = 0; r < nr; r++) {                                  \
          double g = G[r], x = X[r], y = Y[r], v = V[r]; (void)x; (void)y; (void)v; \
          GX[r] += SKIP_ZERO(g, d_dx);                                   \
          GY[r] += SKIP_ZERO(g, d_dy);                                   \
      } }
#define REV_KC(d_dx, d_dy)                                               \
    { const double *Y = val + (size_t)ib * R;                            \
      for (size_t r = 0; r < nr; r++) {                                  \
          double g = G[r], x = X[r], y = Y[r], v = V[r]; (void)x; (void)y; (void)v; \
          GX[r] += SKIP_ZERO(g, d_dx);                                   \
      } }
#define REV_KA(d_dx, d_dy) REV_K2(d_dx, d_dy)
/* A user function is not called for rows that do not need it. */
#define REV_KF(d_dx, d_dy)                                               \
    for (size_t r = 0; r < nr; r++) {                                    \
        double g = G[r];                                                 \
        if (g == 0) continue;                                            \
        double x = X[r];                                                 \
        GX[r] += g * (d_dx);                                             \
    }

static void reverse_block(pg_sweep *s, const batch *job, const double *val, double *grad, size_t nr)
{
    const size_t R = job->block;
    for (size_t k = 0; k < job->n_rev; k++) {
        const instr in = job->rev[k];
        const uint32_t ib = in.b;
        const double *V = val + (size_t)in.i * R, *X = val + (size_t)in.a * R;
        const double *G = grad + (size_t)in.i * R;
        double *GX = grad + (size_t)in.a * R;
        switch (in.op) {
#define PG_REV_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: REV_##kind(d_dx, d_dy) break;
            PG_OPS(PG_REV_CASE)
#undef PG_REV_CASE
        }
    }
}

/* ---- running rows ------------------------------------------------------------ */

/* Writes row `row` of the data into slot r of the block's input leaves. */
static void load_row(const batch *job, double *val, size_t row, size_t r)
{
    const size_t R = job->block;
    const double *data = job->data + row * job->n_in;
    for (size_t k = 0; k < job->n_in; k++)
        if (job->inputs[k] <= job->top) /* else nothing here depends on it */
            val[(size_t)job->inputs[k] * R + r] = data[k];
}

/* Forward, and for a gradient reverse, over the first nr slots. */
static void sweep_block(worker *w, size_t nr)
{
    const batch *job = w->job;
    const size_t R = job->block;
    forward_block(&w->sweep, job, w->val, nr);
    if (job->outputs) return;
    memset(w->grad + (size_t)job->bottom * R, 0, ((size_t)job->loss - job->bottom + 1) * R * sizeof *w->grad);
    for (size_t r = 0; r < nr; r++) w->grad[(size_t)job->loss * R + r] = 1.0;
    reverse_block(&w->sweep, job, w->val, w->grad, nr);
}

/* A block runs node by node, so the failure it meets first need not be in
   its first failing row.  It is run again a row at a time, to report the
   failure a Python loop over the rows would meet. */
static void find_first_failure(worker *w, size_t r0, size_t nr)
{
    pg_sweep first = w->sweep;
    for (size_t r = 0; r < nr; r++) {
        w->sweep.status = PG_OK;
        load_row(w->job, w->val, r0 + r, 0);
        sweep_block(w, 1);
        if (w->sweep.status) return;
    }
    w->sweep = first; /* a function that failed once and not again */
}

static void run_rows(worker *w)
{
    const batch *job = w->job;
    const size_t R = job->block;
    const double *val = w->val, *grad = w->grad;
    const uint64_t work = (uint64_t)R * (job->n_fwd + job->n_rev + 1);
    for (size_t r0 = w->r0; r0 < w->r1; r0 += R) {
        if (r0 > w->r0 && pg__stop(w->sweep.t, w->poll, work)) {
            w->stopped = 1;
            return;
        }
        size_t nr = w->r1 - r0 < R ? w->r1 - r0 : R;
        for (size_t r = 0; r < nr; r++) load_row(job, w->val, r0 + r, r);
        sweep_block(w, nr);
        if (w->sweep.status) {
            find_first_failure(w, r0, nr);
            /* The failure of the first share is the one reported, whatever
               the others meet: they may stop (a KeyboardInterrupt raised in
               a Python function on the calling thread ends up here). */
            if (w->r0 == 0) atomic_store_explicit(&w->sweep.t->interrupted, 1, memory_order_relaxed);
            return;
        }
        if (job->outputs) {
            for (size_t r = 0; r < nr; r++) {
                double *out = job->result + (r0 + r) * job->n_out;
                for (size_t k = 0; k < job->n_out; k++) out[k] = val[(size_t)job->outputs[k] * R + r];
            }
            continue;
        }
        /* Each sum in row order, as a Python loop over the rows adds them. */
        const double *loss = val + (size_t)job->loss * R;
        for (size_t r = 0; r < nr; r++) w->loss_sum += loss[r];
        for (size_t k = 0; k < job->n_wrt; k++) {
            if (job->wrt[k] > job->loss) continue; /* the loss cannot depend on it */
            const double *g = grad + (size_t)job->wrt[k] * R;
            double sum = w->grad_sum[k];
            for (size_t r = 0; r < nr; r++) sum += g[r];
            w->grad_sum[k] = sum;
        }
    }
}

static void *thread_main(void *arg)
{
    run_rows(arg);
    return NULL;
}

/* ---- plans ------------------------------------------------------------------- */

/* The op nodes in [from, top] that the marked nodes need, in evaluation
   order (backward = 0) or reverse order (backward = 1).  mark[i] says that
   node i is needed; it is spread to the operands here.  Returns the count
   written to plan. */
static size_t make_plan(const pg_tape *t, uint8_t *mark, uint32_t from, uint32_t top, int backward,
                        instr *plan)
{
    size_t n = 0;
    for (uint32_t i = top + 1; i-- > from;) {
        if (!mark[i]) continue;
        int operands = pg_op_arity(t->op[i]);
        if (operands == 0) continue; /* a leaf or constant: nothing to run */
        mark[t->a[i]] = 1;
        if (operands == 2) mark[t->b[i]] = 1;
        plan[n++] = (instr){i, t->a[i], t->b[i], t->op[i]};
    }
    if (!backward)
        for (size_t k = 0; k < n / 2; k++) {
            instr tmp = plan[k];
            plan[k] = plan[n - 1 - k];
            plan[n - 1 - k] = tmp;
        }
    return n;
}

/* ---- a batch, ready to run as often as needed --------------------------------- */

struct pg_batch {
    pg_tape *t;
    batch job;
    instr *plan;   /* job.fwd and job.rev point into it */
    worker *w;
    int threads;
    int mean;
};

/* Brings the nodes below the first input up to date on the tape: rows copy
   them.  Nodes from the first input on are left alone: evaluating them at
   the inputs' own values could fail where every row would succeed. */
static int eval_fixed(pg_tape *t, const batch *job)
{
    return pg__eval_to(t, job->from <= job->top ? job->from : job->top + 1);
}

void pg__batch_close(pg_batch *b)
{
    if (!b) return;
    pg_tape *t = b->t;
    for (int k = 0; k < b->threads; k++) pg__alloc(t, b->w[k].val, 0);
    pg__alloc(t, b->w, 0);
    pg__alloc(t, b->plan, 0);
    pg__alloc(t, b, 0);
}

/* Plans the job and allocates its workers.  job->top, from, loss, bottom and
   the arrays are set by the caller, who has checked every index. */
static int open_batch(pg_tape *t, const batch *job, int threads, int mean, pg_batch **out)
{
    if (threads < 1) return pg__fail(t, PG_EINVAL, "threads must be at least 1, not %d", threads);
    if ((size_t)threads > job->rows) threads = job->rows ? (int)job->rows : 1;
    int rc = eval_fixed(t, job);
    if (rc) return rc;

    int grads = job->outputs == NULL;
    size_t nodes = (size_t)job->top + 1;
    size_t per_node = grads ? 2 : 1;
    size_t R = PG_BLOCK_BYTES / (nodes * per_node * sizeof(double));
    R = R < 1 ? 1 : R > PG_BLOCK ? PG_BLOCK : R;
    if (nodes > SIZE_MAX / sizeof(double) / per_node / PG_BLOCK / 2)
        return pg__fail(t, PG_ENOMEM, "a batch over %zu nodes is too big", nodes);
    size_t doubles = nodes * R * per_node + job->n_wrt;

    pg_batch *b = pg__alloc(t, NULL, sizeof *b);
    if (!b) return pg__fail(t, PG_ENOMEM, "out of memory for a batch");
    *b = (pg_batch){t, *job, NULL, NULL, 0, mean};
    b->job.block = R;
    b->plan = pg__alloc(t, NULL, nodes * 2 * sizeof *b->plan);
    uint8_t *mark = pg__alloc(t, NULL, nodes);
    b->w = pg__alloc(t, NULL, (size_t)threads * sizeof *b->w);
    if (!b->plan || !mark || !b->w) goto nomem;

    memset(mark, 0, nodes);
    if (grads) mark[job->loss] = 1;
    else
        for (size_t k = 0; k < job->n_out; k++) mark[job->outputs[k]] = 1;
    b->job.fwd = b->plan;
    b->job.n_fwd = make_plan(t, mark, job->from, job->top, 0, b->plan);
    b->job.rev = b->plan + nodes;
    if (grads) {
        memset(mark, 0, nodes);
        mark[job->loss] = 1;
        b->job.n_rev = make_plan(t, mark, job->bottom + 1, job->loss, 1, b->plan + nodes);
    }
    pg__alloc(t, mark, 0);
    mark = NULL;

    for (; b->threads < threads; b->threads++) {
        int k = b->threads;
        double *block = pg__alloc(t, NULL, doubles * sizeof *block);
        if (!block) goto nomem;
        b->w[k] = (worker){&b->job, {t, PG_OK, 0, 0, 0}, NULL, 0, job->rows * k / threads,
                           job->rows * (k + 1) / threads, block, grads ? block + nodes * R : NULL,
                           block + doubles - job->n_wrt, 0.0, 0, 0};
    }
    *out = b;
    return PG_OK;

nomem:
    pg__alloc(t, mark, 0);
    pg__batch_close(b);
    return pg__fail(t, PG_ENOMEM, "out of memory for a batch over %zu nodes and %d threads", nodes, threads);
}

/* Runs every row once, from the tape's current values.  poll is the calling
   thread's: the rows this thread runs itself check the progress handler. */
static int run_batch(pg_batch *b, pg_poll *poll)
{
    pg_tape *t = b->t;
    int rc = eval_fixed(t, &b->job); /* parameters may have moved */
    if (rc) return rc;
    size_t nodes = (size_t)b->job.top + 1, R = b->job.block;
    for (int k = 0; k < b->threads; k++) {
        worker *w = &b->w[k];
        /* Every row starts from the tape's values (parameters, constants). */
        for (size_t i = 0; i < nodes; i++)
            for (size_t r = 0; r < R; r++) w->val[i * R + r] = t->value[i];
        memset(w->grad_sum, 0, b->job.n_wrt * sizeof *w->grad_sum);
        w->loss_sum = 0.0;
        w->sweep.status = PG_OK;
        w->stopped = 0;
        w->poll = NULL;
    }

    for (int k = 1; k < b->threads; k++)
        b->w[k].started = pthread_create(&b->w[k].thread, NULL, thread_main, &b->w[k]) == 0;
    if (b->threads) {
        b->w[0].poll = poll;
        run_rows(&b->w[0]);
    }
    for (int k = 1; k < b->threads; k++) {
        if (b->w[k].started) pthread_join(b->w[k].thread, NULL);
        else { /* no thread to be had: do its share here */
            b->w[k].poll = poll;
            run_rows(&b->w[k]);
        }
    }

    /* A failure in a row comes before an interrupt: a loop over the rows
       would have met it. */
    int stopped = 0;
    for (int k = 0; k < b->threads; k++) {
        if (b->w[k].sweep.status) return pg__sweep_failure(&b->w[k].sweep);
        if (b->w[k].stopped) stopped = 1;
    }
    return stopped ? pg__interrupted(t) : PG_OK;
}

/* ---- eval_batch and grad_batch ------------------------------------------------- */

static int check_inputs(pg_tape *t, const uint32_t *inputs, size_t n_in, uint32_t *from)
{
    *from = UINT32_MAX;
    for (size_t k = 0; k < n_in; k++) {
        PG_CHECK_NODE(t, inputs[k]);
        if (t->op[inputs[k]] != PG_OP_LEAF)
            return pg__fail(t, PG_ENOTLEAF, "input %zu (node %u) is a %s, not a leaf", k,
                            (unsigned)inputs[k], pg_op_name(t->op[inputs[k]]));
        if (inputs[k] < *from) *from = inputs[k];
    }
    return PG_OK;
}

static int eval_batch(pg_tape *t, const uint32_t *outputs, size_t n_out, const uint32_t *inputs, size_t n_in,
                      const double *data, size_t rows, int threads, double *result)
{
    batch job = {.inputs = inputs, .n_in = n_in, .data = data, .rows = rows,
                 .outputs = outputs, .n_out = n_out, .result = result};
    int rc = check_inputs(t, inputs, n_in, &job.from);
    if (rc) return rc;
    for (size_t k = 0; k < n_out; k++) {
        PG_CHECK_NODE(t, outputs[k]);
        if (outputs[k] > job.top) job.top = outputs[k];
    }
    if (threads < 1) return pg__fail(t, PG_EINVAL, "threads must be at least 1, not %d", threads);
    if (n_out == 0 || rows == 0) return PG_OK;
    pg_batch *b;
    rc = open_batch(t, &job, threads, 0, &b);
    if (rc) return rc;
    pg_poll poll = {0, 0};
    rc = run_batch(b, &poll);
    pg__batch_close(b);
    return rc;
}

int pg_eval_batch(pg_tape *t, const uint32_t *outputs, size_t n_out, const uint32_t *inputs, size_t n_in,
                  const double *data, size_t rows, int threads, double *result)
{
    PG_HOLDING(t, PG_EBUSY, eval_batch(t, outputs, n_out, inputs, n_in, data, rows, threads, result));
}

int pg__batch_open_grad(pg_tape *t, uint32_t loss, const uint32_t *inputs, size_t n_in, const double *data,
                        size_t rows, const uint32_t *wrt, size_t n_wrt, int mean, int threads, pg_batch **out)
{
    batch job = {.inputs = inputs, .n_in = n_in, .data = data, .rows = rows, .top = loss,
                 .loss = loss, .bottom = loss, .wrt = wrt, .n_wrt = n_wrt};
    PG_CHECK_NODE(t, loss);
    int rc = check_inputs(t, inputs, n_in, &job.from);
    if (rc) return rc;
    for (size_t k = 0; k < n_wrt; k++) {
        PG_CHECK_NODE(t, wrt[k]);
        if (wrt[k] < job.bottom) job.bottom = wrt[k];
    }
    if (mean && rows == 0) return pg__fail(t, PG_EINVAL, "the mean of no rows is undefined");
    return open_batch(t, &job, threads, mean, out);
}

int pg__batch_grad(pg_batch *b, pg_poll *poll, double *loss_out, double *grads_out)
{
    pg_tape *t = b->t;
    const batch *job = &b->job;
    int rc = run_batch(b, poll);
    if (rc) return rc;
    /* Partial sums in thread order: the same result however threads ran. */
    double total = 0.0;
    for (size_t j = 0; j < job->n_wrt; j++) grads_out[j] = 0.0;
    for (int k = 0; k < b->threads; k++) {
        total += b->w[k].loss_sum;
        for (size_t j = 0; j < job->n_wrt; j++) grads_out[j] += b->w[k].grad_sum[j];
    }
    if (b->mean) {
        total /= (double)job->rows;
        for (size_t j = 0; j < job->n_wrt; j++) grads_out[j] /= (double)job->rows;
    }
    /* Leave the gradient where an optimizer looks for it. */
    memset(t->grad, 0, (size_t)t->n * sizeof *t->grad);
    for (size_t j = 0; j < job->n_wrt; j++) t->grad[job->wrt[j]] = grads_out[j];
    *loss_out = total;
    return PG_OK;
}

static int grad_batch(pg_tape *t, uint32_t loss, const uint32_t *inputs, size_t n_in, const double *data,
                      size_t rows, const uint32_t *wrt, size_t n_wrt, int mean, int threads, double *loss_out,
                      double *grads_out)
{
    pg_batch *b;
    int rc = pg__batch_open_grad(t, loss, inputs, n_in, data, rows, wrt, n_wrt, mean, threads, &b);
    if (rc) return rc;
    pg_poll poll = {0, 0};
    rc = pg__batch_grad(b, &poll, loss_out, grads_out);
    pg__batch_close(b);
    return rc;
}

int pg_grad_batch(pg_tape *t, uint32_t loss, const uint32_t *inputs, size_t n_in, const double *data,
                  size_t rows, const uint32_t *wrt, size_t n_wrt, int mean, int threads, double *loss_out,
                  double *grads_out)
{
    PG_HOLDING(t, PG_EBUSY, grad_batch(t, loss, inputs, n_in, data, rows, wrt, n_wrt, mean, threads, loss_out,
                                       grads_out));
}
