/*
 * batch.c -- many rows of data through one tape: eval_batch and grad_batch,
 * split over threads.
 *
 * The tape is read-only during a batch.  A batch first makes a plan: the op
 * nodes the outputs need, in evaluation order (and, for a gradient, the ones
 * the loss depends on, in reverse order), each node it touches numbered as
 * a workspace slot.  Rows then run in blocks: the workspace keeps a slot's
 * values for the block's rows side by side, val[slot * R + r], so one
 * dispatch of an instruction serves R rows and the loop over rows is plain
 * arithmetic that the compiler vectorizes.  A neuron's b + w1 x1 + ... is
 * one instruction of a plan, not two a product (fuse_chains), and a weight
 * is read as one number, not a row of copies.  The tape keeps the last plan
 * and its workspace, for the same request again (a training loop's steps).
 *
 * Each thread has its own workspace and a contiguous share of the rows, and
 * keeps partial sums that are added in thread order, so a result never
 * depends on timing.  Every row sees exactly the operations of a scalar
 * sweep, in the same order, so one thread gives the result of a Python loop
 * of set and backprop to the last bit.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "tape.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* Rows per block.  A block runs every instruction of the plan over its
   rows, so more rows spread each instruction's overhead thinner, as long as
   the block's workspace (a row of every slot's value and grad) stays in a
   core's L2 cache (1 MB or more on x86 servers since 2017): PG_BLOCK_CACHE
   bytes, and at most PG_BLOCK_MAX rows.  (512 KB split the 100 rows of a
   moons step into two blocks, 5% slower than one.)  A
   model too big for PG_LINE rows in that gets up to PG_LINE rows within
   PG_BLOCK_BYTES, and fewer, down to one, beyond. */
#define PG_BLOCK_MAX 256
#define PG_BLOCK_CACHE (768u << 10)
#define PG_BLOCK_BYTES (8u << 20)
#define PG_LINE 8 /* doubles in a 64-byte cache line */
#define PG_KEEP_BYTES (4u << 20) /* the biggest batch a tape keeps for the next call */

#define NONE UINT32_MAX

/* One op node of a plan.  i, a and b are workspace slots, not node
   indices (b is the aux index of K1 and KF ops): a plan numbers only the
   nodes it touches, so the workspace of a small model on a big tape stays
   small, and each block zeroes and fills only what it uses. */
typedef struct instr {
    uint32_t i, a, b;
    uint8_t op;
} instr;

/* A plan's own op, beyond the op table: a chain of multiply-adds run as
   one instruction (see fuse_chains).  Its a is the chain's start, and b
   indexes the plan's pairs array: the number of products n, then the two
   factors of each product, n pairs. */
#define PG_PLAN_DOT PG_OP_COUNT
/* A factor's slot has this bit when the factor is the same in every row (a
   weight): a block then reads one number of it, not a row. */
#define UNIFORM (1u << 31)
_Static_assert(PG_OP_COUNT < UINT8_MAX, "plan ops are bytes");

/* What every thread of a batch reads. */
typedef struct batch {
    const double *data; /* rows x n_in, row-major */
    size_t rows, n_in;
    const uint32_t *input_slot; /* n_in: where each column goes, NONE if unused */
    size_t slots;       /* the workspace holds val[slot * R + r] */
    size_t block;       /* rows per block, R */
    const instr *fwd, *rev;
    size_t n_fwd, n_rev;
    const uint32_t *pairs; /* the factors of PG_PLAN_DOT instructions */
    /* once[slot]: the slot's grad has one write, by a PG_PLAN_DOT, which
       stores it rather than adding; a block need not zero it first.  Each
       block zeroes the grads of slots zero[2k] to zero[2k + 1] - 1. */
    const uint8_t *once;
    const uint32_t *zero;
    size_t n_zero;
    /* Slots whose value is the same for every row (parameters, constants,
       nodes that do not depend on the inputs), copied from fixed_node. */
    const uint32_t *fixed_slot, *fixed_node;
    size_t n_fixed;
    size_t n_fixed_rows; /* the first ones; the others are read as one number (UNIFORM) */

    /* eval_batch: outputs are copied to result (rows x n_out). */
    const uint32_t *output_slot;
    size_t n_out;
    double *result;

    /* grad_batch: d loss / d wrt[k] is the grad of slot wrt_slot[k], or 0
       where it is NONE (the loss does not depend on that node). */
    uint32_t loss_slot;
    const uint32_t *wrt_slot;
    size_t n_wrt;
} batch;

/* The threads a batch started, which the calling thread waits for. */
typedef struct crew {
    pthread_mutex_t lock;
    pthread_cond_t done;
    int running;
} crew;

/* One thread's share and workspace. */
typedef struct worker {
    const batch *job;
    pg_sweep sweep;
    pg_poll *poll;      /* the calling thread's, for the progress handler; else NULL */
    int stopped;        /* by an interrupt, between segments of a block */
    crew *crew;         /* of the run, for a started thread */
    size_t r0, r1;
    void *memory;       /* the workspace's allocation; val starts at its first 64-byte line */
    double *val, *grad; /* slots x R each */
    double *grad_sum;   /* n_wrt partial sums */
    double *sum_before; /* grad_sum before the block's rows were added */
    double loss_sum;
    pthread_t thread;
    int started;
} worker;

/* ---- the block interpreter, generated from the op table ---------------------- */

/* A user function, unless the call has been stopped: a Python function may
   take milliseconds a row, and the thread Ctrl-C stops may be another. */
static inline double batch_call(pg_sweep *s, uint32_t fn, int order, double x)
{
    if (atomic_load_explicit(&s->t->interrupted, memory_order_relaxed)) return NAN;
    return pg__call(s, fn, order, x);
}
#define call(order, x) batch_call(s, ib, (order), (x))

/* The loops run over nv rows, nr rounded up to whole vectors when the
   block's rows are (whole = 1): in chunks of PG_LINE, each of which the
   compiler turns into vector operations with no remainder to handle.  The
   rows past nr compute on what the workspace holds there, which nothing
   reads; a user function runs for the nr real rows only. */
#define EACH_ROW                                                          \
    for (size_t r8 = 0; r8 < nv; r8 += (whole ? PG_LINE : 1))             \
        for (size_t r = r8; r < r8 + (whole ? PG_LINE : 1); r++)

#define FWD_K0(value)
#define FWD_K1(value) \
    EACH_ROW { double x = X[r]; V[r] = (value); }
#define FWD_K2(value)                                             \
    { const double *restrict Y = val + (size_t)ib * R;            \
      EACH_ROW { double x = X[r], y = Y[r]; V[r] = (value); } }
#define FWD_KC(value) FWD_K2(value)
#define FWD_KA(value) FWD_K2(value)
/* A user function runs for the block's real rows only. */
#define FWD_KF(value) \
    for (size_t r = 0; r < nr; r++) { double x = X[r]; V[r] = (value); }

/* The block loops are compiled three times on x86-64, for the baseline
   (SSE2), AVX2 and AVX-512, and the loader picks what the processor has
   (glibc's ifunc): a moons training step is a third faster with AVX2.
   Vector adds, multiplies and divides round as scalar ones do, and FMA
   contraction is off, so every version gives the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && defined(__GLIBC__)
#define PG_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define PG_VECTOR_CLONES
#endif

static inline __attribute__((always_inline)) void forward_rows(pg_sweep *s, const batch *job, double *val,
                                                                size_t from, size_t to, size_t nr, size_t nv,
                                                                int whole)
{
    const size_t R = job->block;
    for (size_t k = from; k < to; k++) {
        const instr in = job->fwd[k];
        const uint32_t ib = in.b;
        double *restrict V = val + (size_t)in.i * R;
        const double *restrict X = val + (size_t)in.a * R;
        switch (in.op) {
#define PG_FWD_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: FWD_##kind(value) break;
            PG_OPS(PG_FWD_CASE)
#undef PG_FWD_CASE
        case PG_PLAN_DOT: {
            /* v = ((start + p1 q1) + p2 q2) + ..., as the chain's nodes add up */
            const uint32_t *pq = job->pairs + ib;
            EACH_ROW V[r] = X[r];
            for (uint32_t j = 0; j < pq[0]; j++) {
                const uint32_t p = pq[1 + 2 * j], q = pq[2 + 2 * j];
                const double *restrict P = val + (size_t)(p & ~UNIFORM) * R;
                const double *restrict Q = val + (size_t)(q & ~UNIFORM) * R;
                if (p & q & UNIFORM) {
                    const double w = P[0] * Q[0];
                    EACH_ROW V[r] += w;
                } else if (p & UNIFORM) { /* the same bits: x * y is y * x */
                    const double w = P[0];
                    EACH_ROW V[r] += w * Q[r];
                } else if (q & UNIFORM) {
                    const double w = Q[0];
                    EACH_ROW V[r] += P[r] * w;
                } else {
                    EACH_ROW V[r] += P[r] * Q[r];
                }
            }
            break;
        }
        }
    }
}

/* The chain rule of sweep.c (pg_chain): a row whose adjoint is zero
   contributes nothing, nor does a zero partial, even times an infinite
   adjoint.  Grads are sums that start at +0.0 and so never hold -0.0:
   adding the select's +0.0 leaves them as they are, which gives the scalar
   sweep's skip bit for bit without a branch, and the loop vectorizes.  The
   product is computed for every row (a 0 * inf that the select then
   discards raises no trap: none are enabled).

   The select on the partial costs the loops a sixth of their instructions,
   and matters only where it turns a NaN (0 * inf) into 0.  So a block runs
   without it (guarded = 0) and again with it only if a NaN reached the
   grads it sums (see run_rows): a NaN term makes every grad below it NaN,
   so where none is NaN, no select would have changed them. */
#define CHAIN_TERM(g, d) chain_rows((g), (d), (g) * (d), guarded)
static inline double chain_rows(double g, double d, double product, int guarded)
{
    return (g != 0) & (!guarded | (d != 0)) ? product : 0.0;
}
#define REV_K0(d_dx, d_dy)
#define REV_K1(d_dx, d_dy)                                               \
    EACH_ROW {                                    \
        double g = G[r], x = X[r], v = V[r]; (void)x; (void)v;           \
        double d = (d_dx);                                               \
        GX[r] += CHAIN_TERM(g, d);                                       \
    }
/* One loop for each operand's grad, so that each loop stores to one array
   and vectorizes.  Where both operands are one node (x * x), each row still
   adds d/dx first and d/dy second, as the scalar sweep does. */
#define REV_ADD(GOUT, d)                                                 \
    { double *restrict GO = (GOUT);                                      \
      EACH_ROW {                                  \
          double g = G[r], x = X[r], y = Y[r], v = V[r]; (void)x; (void)y; (void)v; \
          double d_ = (d);                                               \
          GO[r] += CHAIN_TERM(g, d_);                                    \
      } }
#define REV_K2(d_dx, d_dy)                                               \
    { const double *restrict Y = val + (size_t)ib * R;                   \
      REV_ADD(GX, d_dx)                                                  \
      REV_ADD(grad + (size_t)ib * R, d_dy) }
#define REV_KC(d_dx, d_dy)                                               \
    { const double *restrict Y = val + (size_t)ib * R;                   \
      REV_ADD(GX, d_dx) }
#define REV_KA(d_dx, d_dy) REV_K2(d_dx, d_dy)
/* A user function is not called for rows that do not need it. */
#define REV_KF(d_dx, d_dy)                                               \
    for (size_t r = 0; r < nr; r++) {                                    \
        double g = G[r];                                                 \
        if (g == 0) continue;                                            \
        double x = X[r], d = (d_dx);                                     \
        GX[r] += guarded && d == 0 ? 0.0 : g * d;                        \
    }

/* GS[r] += term for every row, or, where this is the only write to slot s's
   grad (which no block zeroes), GS[r] = 0.0 + term: the same bits. */
#define ADD_GRAD(GS, s, term)                                            \
    if (job->once[(s)]) EACH_ROW GS[r] = 0.0 + (term); \
    else EACH_ROW GS[r] += (term)

static inline __attribute__((always_inline)) void reverse_rows(pg_sweep *s, const batch *job, const double *val,
                                                                double *grad, size_t from, size_t to, size_t nr,
                                                                size_t nv, int whole, int guarded)
{
    const size_t R = job->block;
    for (size_t k = from; k < to; k++) {
        const instr in = job->rev[k];
        const uint32_t ib = in.b;
        /* Slots i and a differ, and values never alias grads. */
        const double *restrict V = val + (size_t)in.i * R, *restrict X = val + (size_t)in.a * R;
        const double *restrict G = grad + (size_t)in.i * R;
        double *GX = grad + (size_t)in.a * R;
        switch (in.op) {
#define PG_REV_CASE(NAME, label, kind, value, d_dx, d_dy, ...) \
    case PG_OP_##NAME: REV_##kind(d_dx, d_dy) break;
            PG_OPS(PG_REV_CASE)
#undef PG_REV_CASE
        case PG_PLAN_DOT: {
            /* Every node of the chain had this grad (d/dc of c + m is 1).
               The scalar sweep adds, from the last node down: the factors'
               grads of products n, ..., 2, then the start's (at the first
               add), then product 1's; so do these loops. */
            const uint32_t *pq = job->pairs + ib;
            for (uint32_t j = pq[0]; j-- > 0;) {
                if (j == 0) ADD_GRAD(GX, in.a, CHAIN_TERM(G[r], 1));
                const uint32_t p = pq[1 + 2 * j] & ~UNIFORM, q = pq[2 + 2 * j] & ~UNIFORM;
                const double *restrict P = val + (size_t)p * R, *restrict Q = val + (size_t)q * R;
                { double *restrict GP = grad + (size_t)p * R; /* p may be q: a loop each */
                  if (pq[2 + 2 * j] & UNIFORM) { const double w = Q[0]; ADD_GRAD(GP, p, CHAIN_TERM(G[r], w)); }
                  else ADD_GRAD(GP, p, CHAIN_TERM(G[r], Q[r])); }
                { double *restrict GQ = grad + (size_t)q * R;
                  if (pq[1 + 2 * j] & UNIFORM) { const double w = P[0]; ADD_GRAD(GQ, q, CHAIN_TERM(G[r], w)); }
                  else ADD_GRAD(GQ, q, CHAIN_TERM(G[r], P[r])); }
            }
            break;
        }
        }
    }
}

static size_t whole_lines(size_t n) { return (n + PG_LINE - 1) / PG_LINE * PG_LINE; }

/* Instructions [from, to) of the forward (reverse) plan over a block's rows. */
PG_VECTOR_CLONES
static void forward_block(pg_sweep *s, const batch *job, double *val, size_t from, size_t to, size_t nr)
{
    if (job->block % PG_LINE == 0) forward_rows(s, job, val, from, to, nr, whole_lines(nr), 1);
    else forward_rows(s, job, val, from, to, nr, nr, 0);
}

PG_VECTOR_CLONES
static void reverse_block(pg_sweep *s, const batch *job, const double *val, double *grad, size_t from, size_t to,
                          size_t nr)
{
    if (job->block % PG_LINE == 0) reverse_rows(s, job, val, grad, from, to, nr, whole_lines(nr), 1, 0);
    else reverse_rows(s, job, val, grad, from, to, nr, nr, 0, 0);
}

/* Rarely run: one version will do (vector or not, the bits are the same). */
static void reverse_block_guarded(pg_sweep *s, const batch *job, const double *val, double *grad, size_t from,
                                  size_t to, size_t nr)
{
    reverse_rows(s, job, val, grad, from, to, nr, nr, 0, 1);
}

/* ---- running rows ------------------------------------------------------------ */

/* Writes row `row` of the data into slot r of the block's input leaves. */
static void load_row(const batch *job, double *val, size_t row, size_t r)
{
    const size_t R = job->block;
    const double *data = job->data + row * job->n_in;
    for (size_t k = 0; k < job->n_in; k++)
        if (job->input_slot[k] != NONE) val[(size_t)job->input_slot[k] * R + r] = data[k];
}

/* A block runs its plans in segments of about this many instruction-rows
   (a row of a model of millions of nodes takes milliseconds), and between
   two it stops after a failure or an interrupt. */
#define PG_SEGMENT (1u << 16)

/* Whether the block stops before its next segment: after a failure (in
   w->sweep), or an interrupt (which sets w->stopped). */
static int block_stops(worker *w, size_t instrs)
{
    if (w->sweep.status) return 1;
    return w->stopped = pg__stop(w->sweep.t, w->poll, (uint64_t)instrs * w->job->block);
}

/* Instructions per segment of a block of R rows. */
static size_t segment(size_t R) { return R < PG_SEGMENT ? PG_SEGMENT / R : 1; }

/* The grads of the first nr slots, from their values, in segments. */
static void reverse_of_block(worker *w, size_t nr, int guarded)
{
    const batch *job = w->job;
    const size_t R = job->block, step = segment(R);
    for (size_t k = 0; k < job->n_zero; k++)
        memset(w->grad + (size_t)job->zero[2 * k] * R, 0,
               (size_t)(job->zero[2 * k + 1] - job->zero[2 * k]) * R * sizeof *w->grad);
    for (size_t r = 0; r < nr; r++) w->grad[(size_t)job->loss_slot * R + r] = 1.0;
    for (size_t k = 0; k < job->n_rev; k += step) {
        if (k > 0 && block_stops(w, step)) return;
        size_t to = job->n_rev - k > step ? k + step : job->n_rev;
        if (guarded) reverse_block_guarded(&w->sweep, job, w->val, w->grad, k, to, nr);
        else reverse_block(&w->sweep, job, w->val, w->grad, k, to, nr);
    }
}

/* Forward, and for a gradient reverse, over the first nr slots. */
static void sweep_block(worker *w, size_t nr)
{
    const batch *job = w->job;
    const size_t step = segment(job->block);
    for (size_t k = 0; k < job->n_fwd; k += step) {
        if (k > 0 && block_stops(w, step)) return;
        forward_block(&w->sweep, job, w->val, k, job->n_fwd - k > step ? k + step : job->n_fwd, nr);
    }
    if (!job->output_slot && !w->sweep.status) reverse_of_block(w, nr, 0);
}

/* Whether a sum that was not NaN before the block's rows is NaN after. */
static int nan_added(const double *before, const double *after, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (after[k] != after[k] && before[k] == before[k]) return 1;
    return 0;
}

/* A block runs node by node, so the failure it meets first need not be in
   its first failing row.  It is run again a row at a time, to report the
   failure a Python loop over the rows would meet.  Not after a callback
   asked to stop the call (a negative code: Ctrl-C), nor for one row. */
static void find_first_failure(worker *w, size_t r0, size_t nr)
{
    pg_sweep first = w->sweep;
    if ((first.status == PG_ECALLBACK && first.code < 0) || nr == 1) return;
    for (size_t r = 0; r < nr; r++) {
        w->sweep.status = PG_OK;
        w->sweep.code = 0;
        load_row(w->job, w->val, r0 + r, 0);
        sweep_block(w, 1);
        if (w->stopped) break;
        if (w->sweep.status) return;
    }
    w->sweep = first; /* a function that failed once and not again */
}

/* sums[k] += the first nr rows of slot slots[k], in row order (a slot of
   NONE adds nothing: the loss does not depend on that node).  A sum in row
   order is a chain of dependent adds; four at a time run side by side. */
static void add_rows(const uint32_t *slots, size_t n, const double *grad, size_t R, size_t nr, double *sums)
{
    static const double zeros[PG_BLOCK_MAX];
    size_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const double *g[4];
        for (int j = 0; j < 4; j++) g[j] = slots[k + j] == NONE ? zeros : grad + (size_t)slots[k + j] * R;
        double s0 = sums[k], s1 = sums[k + 1], s2 = sums[k + 2], s3 = sums[k + 3];
        for (size_t r = 0; r < nr; r++) {
            s0 += g[0][r];
            s1 += g[1][r];
            s2 += g[2][r];
            s3 += g[3][r];
        }
        sums[k] = s0, sums[k + 1] = s1, sums[k + 2] = s2, sums[k + 3] = s3;
    }
    for (; k < n; k++) {
        if (slots[k] == NONE) continue;
        const double *g = grad + (size_t)slots[k] * R;
        double sum = sums[k];
        for (size_t r = 0; r < nr; r++) sum += g[r];
        sums[k] = sum;
    }
}

/* The block's rows [r0, r0 + nr) failed: finds the row a loop would have
   failed at, and stops the others when theirs is not the failure reported
   (the first share's is), or when a callback asked to stop the call
   (Ctrl-C in a Python function). */
static void stop_at_failure(worker *w, size_t r0, size_t nr)
{
    find_first_failure(w, r0, nr);
    if (w->r0 == 0 || (w->sweep.status == PG_ECALLBACK && w->sweep.code < 0))
        atomic_store_explicit(&w->sweep.t->interrupted, 1, memory_order_relaxed);
}

static void run_rows(worker *w)
{
    const batch *job = w->job;
    const size_t R = job->block;
    const double *val = w->val, *grad = w->grad;
    const uint64_t work = (uint64_t)R * (job->n_fwd + job->n_rev + 1);
    /* Blocks of even size: 100 rows in blocks of up to 72 run as 50 + 50,
       not 72 + 28 (a block costs its instructions' overhead however few
       rows it has). */
    size_t blocks = (w->r1 - w->r0 + R - 1) / R;
    size_t each = blocks ? (w->r1 - w->r0 + blocks - 1) / blocks : R;
    if (R % PG_LINE == 0) each = whole_lines(each);
    for (size_t r0 = w->r0; r0 < w->r1; r0 += each) {
        if (r0 > w->r0 && pg__stop(w->sweep.t, w->poll, work)) {
            w->stopped = 1;
            return;
        }
        size_t nr = w->r1 - r0 < each ? w->r1 - r0 : each;
        for (size_t r = 0; r < nr; r++) load_row(job, w->val, r0 + r, r);
        sweep_block(w, nr);
        if (w->sweep.status) {
            stop_at_failure(w, r0, nr);
            return;
        }
        if (w->stopped) return;
        if (job->output_slot) {
            for (size_t r = 0; r < nr; r++) {
                double *out = job->result + (r0 + r) * job->n_out;
                for (size_t k = 0; k < job->n_out; k++) out[k] = val[(size_t)job->output_slot[k] * R + r];
            }
            continue;
        }
        /* Each sum in row order, as a Python loop over the rows adds them. */
        const double *loss = val + (size_t)job->loss_slot * R;
        for (size_t r = 0; r < nr; r++) w->loss_sum += loss[r];
        memcpy(w->sum_before, w->grad_sum, job->n_wrt * sizeof *w->grad_sum);
        add_rows(job->wrt_slot, job->n_wrt, grad, R, nr, w->grad_sum);
        if (nan_added(w->sum_before, w->grad_sum, job->n_wrt)) { /* it may be a 0 * inf: see CHAIN_TERM */
            memcpy(w->grad_sum, w->sum_before, job->n_wrt * sizeof *w->grad_sum);
            reverse_of_block(w, nr, 1); /* derivative callbacks run again: see the README */
            if (w->sweep.status) stop_at_failure(w, r0, nr);
            if (w->sweep.status || w->stopped) return;
            add_rows(job->wrt_slot, job->n_wrt, grad, R, nr, w->grad_sum);
        }
    }
}

static void *thread_main(void *arg)
{
    worker *w = arg;
    run_rows(w);
    pthread_mutex_lock(&w->crew->lock);
    w->crew->running--;
    pthread_cond_signal(&w->crew->done);
    pthread_mutex_unlock(&w->crew->lock);
    return NULL;
}

/* Waits until the crew's threads have ended, running the progress handler
   meanwhile (Python runs Ctrl-C's handler on its main thread only, which
   would otherwise sit in pthread_join until the whole batch ends).  When
   the handler stops the call, the threads stop at their next check. */
static void wait_for(crew *c, pg_tape *t, pg_poll *poll)
{
    int stopped = 0;
    pthread_mutex_lock(&c->lock);
    while (c->running > 0) {
        if (!poll || !t->progress || stopped) {
            pthread_cond_wait(&c->done, &c->lock);
            continue;
        }
        /* A look a few times a handler interval: Ctrl-C waits at most that
           longer than in the calling thread's own rows. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long ns = until.tv_nsec + (long)(t->progress_ms > 4 ? t->progress_ms / 4 : 1) * 1000000L;
        until.tv_sec += ns / 1000000000L;
        until.tv_nsec = ns % 1000000000L;
        if (pthread_cond_timedwait(&c->done, &c->lock, &until) != ETIMEDOUT) continue;
        pthread_mutex_unlock(&c->lock); /* the handler may wait for a callback on another thread */
        stopped = pg__progress(t, poll);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
}

/* ---- plans ------------------------------------------------------------------- */

/* What the caller asks for, in node indices; checked before planning. */
typedef struct request {
    const uint32_t *inputs;
    size_t n_in;
    const double *data;
    size_t rows;
    uint32_t top;  /* the highest node needed */
    uint32_t from; /* the first input: nodes below it are the same for every row */
    /* eval_batch */
    const uint32_t *outputs;
    size_t n_out;
    double *result;
    /* grad_batch: the reverse sweep covers the loss's cone above bottom */
    uint32_t loss, bottom, penalty;
    const uint32_t *wrt;
    size_t n_wrt;
} request;

/* Planning walks every node below the top, tens of milliseconds for ten
   million: each loop over nodes or instructions checks for an interrupt
   every 2^16 steps (at step k, k a multiple of that), and stops when one
   came.  The planner then frees what it made. */
typedef struct planner {
    pg_tape *t;
    pg_poll *poll;
    int stopped;
} planner;

static int plan_stops(planner *p, size_t k)
{
    if ((k & 0xFFFF) == 0 && !p->stopped) p->stopped = pg__stop(p->t, p->poll, 0x10000);
    return p->stopped;
}

/* memset(memory, 0, size) a megabyte at a time, with a check between (a
   workspace of a model of millions of nodes takes tens of megabytes, and
   fresh pages fault in); 1 when it stopped. */
static int plan_clears(planner *p, void *memory, size_t size)
{
    for (size_t at = 0, piece = 1u << 20; at < size; at += piece) {
        if (plan_stops(p, 0)) return 1;
        memset((char *)memory + at, 0, size - at < piece ? size - at : piece);
    }
    return 0;
}

/* The op nodes in [from, top] that the marked nodes need, in evaluation
   order (backward = 0) or reverse order (backward = 1).  mark[i] says that
   node i is needed; it is spread to the operands here, so afterwards every
   node the plan reads is marked.  Returns the count written to plan, whose
   entries still hold node indices. */
static size_t make_plan(planner *p, uint8_t *mark, uint32_t from, uint32_t top, int backward, instr *plan)
{
    const pg_tape *t = p->t;
    size_t n = 0;
    for (uint32_t i = top + 1; i-- > from;) {
        if (plan_stops(p, i)) return 0;
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

/* Renumbers a plan's node indices as slots (but not the factors of fused
   chains: factor_slots does). */
static void to_slots(planner *p, const uint32_t *slot, instr *plan, size_t n)
{
    const pg_tape *t = p->t;
    for (size_t k = 0; k < n && !plan_stops(p, k); k++) {
        plan[k].a = slot[plan[k].a];
        if (plan[k].op != PG_PLAN_DOT && pg_op_arity(t->op[plan[k].i]) == 2) plan[k].b = slot[plan[k].b];
        plan[k].i = slot[plan[k].i];
    }
}

/* Renumbers the factors of the fused chains in a forward plan as slots
   (the reverse plan shares them).  fixed[i] says node i is the same in
   every row. */
static void factor_slots(planner *p, const uint32_t *slot, const uint8_t *fixed, const instr *fwd, size_t n,
                         size_t slots, uint32_t *pairs)
{
    for (size_t k = 0; k < n && !plan_stops(p, k); k++) {
        if (fwd[k].op != PG_PLAN_DOT) continue;
        uint32_t *pq = pairs + fwd[k].b;
        for (uint32_t j = 1; j <= 2 * pq[0]; j++)
            pq[j] = slot[pq[j]] | (fixed[pq[j]] && slots <= UNIFORM ? UNIFORM : 0);
    }
}

/* row[s]: whether a plan reads slot s's values as a row (everything but
   the factors of fused chains, unless all_rows: then those too). */
static void read_as_rows(planner *p, const batch *job, int all_rows, uint8_t *row)
{
    memset(row, all_rows, job->slots);
    for (size_t k = 0; k < job->n_fwd && !plan_stops(p, k); k++) {
        const instr in = job->fwd[k];
        row[in.a] = 1;
        if (in.op != PG_PLAN_DOT && pg_op_arity(in.op) == 2) row[in.b] = 1;
    }
    for (size_t k = 0; k < job->n_rev && !plan_stops(p, k); k++) {
        const instr in = job->rev[k];
        if (in.op == PG_PLAN_DOT) continue; /* it reads values of the factors only */
        row[in.i] = row[in.a] = 1;
        if (pg_op_arity(in.op) == 2) row[in.b] = 1;
    }
    for (size_t k = 0; k < job->n_out; k++) row[job->output_slot[k]] = 1;
    if (!job->output_slot) row[job->loss_slot] = 1;
}

/* ---- fused multiply-add chains ------------------------------------------------ */

/* Whether c is x + y (in either order). */
static int adds(instr c, uint32_t x, uint32_t y)
{
    return c.op == PG_OP_ADD && ((c.a == x && c.b == y) || (c.a == y && c.b == x));
}

/* A neuron's b + w1 x1 + w2 x2 + ... is, on the tape, the nodes
   m1 = w1 * x1, c1 = b + m1, m2 = w2 * x2, c2 = c1 + m2, ...  A plan runs
   such a chain as one PG_PLAN_DOT: its inner nodes (the m's, and the c's
   but the last) get no slot, and a block keeps the running sum in one row
   instead of writing and reading two rows for every product.

   The bits do not change.  An inner node is read by the chain's next node
   alone and is none of the nodes asked for, and the chain's nodes are
   consecutive in the plan, so nothing runs between them: the forward sum
   and the order of the adds into every grad are the scalar sweep's.

   uses and fused_at are scratch, one entry a node.  Drops the inner nodes
   from both plans and from mark (so they get no slot), and sets once[x]
   for the nodes whose grad only a chain writes (see batch.once); returns
   the length of pairs used. */
#define PINNED (1u << 31) /* in uses: a node asked for, which keeps its slot */
static size_t fuse_chains(planner *p, const request *req, uint8_t *mark, uint8_t *once, uint32_t *uses,
                          uint32_t *fused_at, instr *fwd, size_t *n_fwd, instr *rev, size_t *n_rev,
                          uint32_t *pairs)
{
    size_t nodes = (size_t)req->top + 1;
    if (plan_clears(p, uses, nodes * sizeof *uses) || plan_clears(p, once, nodes)) return 0;
    for (size_t k = 0; k < *n_fwd; k++) {
        if (plan_stops(p, k)) return 0;
        uses[fwd[k].a]++;
        if (pg_op_arity(fwd[k].op) == 2) uses[fwd[k].b]++;
    }
    if (req->outputs) {
        for (size_t k = 0; k < req->n_out; k++) uses[req->outputs[k]] |= PINNED;
    } else {
        uses[req->loss] |= PINNED;
        for (size_t k = 0; k < req->n_wrt; k++)
            if (req->wrt[k] < nodes) uses[req->wrt[k]] |= PINNED;
    }
    /* For a gradient, an inner node must be in the reverse plan too. */
    const uint32_t lowest = req->outputs ? 0 : req->bottom + 1;
#define INNER(x) (uses[(x)] == 1 && (x) >= lowest)

    size_t n = *n_fwd, w = 0, used = 0;
    for (size_t k = 0; k < n;) {
        if (plan_stops(p, w)) return 0; /* w counts the iterations */
        instr m = fwd[k];
        if (!(k + 1 < n && m.op == PG_OP_MUL && INNER(m.i) && fwd[k + 1].op == PG_OP_ADD &&
              (fwd[k + 1].a == m.i || fwd[k + 1].b == m.i))) {
            fused_at[fwd[k].i] = NONE;
            fwd[w++] = fwd[k++];
            continue;
        }
        instr c = fwd[k + 1];
        uint32_t start = c.a == m.i ? c.b : c.a, at = (uint32_t)used;
        pairs[used++] = 1;
        pairs[used++] = m.a;
        pairs[used++] = m.b;
        mark[m.i] = 0;
        for (k += 2; k + 1 < n && fwd[k].op == PG_OP_MUL && INNER(fwd[k].i) && INNER(c.i) &&
                     adds(fwd[k + 1], c.i, fwd[k].i);
             k += 2) {
            pairs[at]++;
            pairs[used++] = fwd[k].a;
            pairs[used++] = fwd[k].b;
            mark[fwd[k].i] = mark[c.i] = 0;
            c = fwd[k + 1];
        }
        fused_at[c.i] = (uint32_t)w;
        fwd[w++] = (instr){c.i, start, at, PG_PLAN_DOT};
        /* Read by this chain alone among the nodes rows run (ones below the
           first input come after it in the reverse sweep): one write a row. */
        if (!req->outputs) {
            once[start] = (uses[start] & ~PINNED) == 1;
            for (uint32_t j = 1; j <= 2 * pairs[at]; j++) once[pairs[at + j]] = (uses[pairs[at + j]] & ~PINNED) == 1;
        }
    }
#undef INNER
    *n_fwd = w;

    /* The reverse plan: the last node of a chain runs it, inner ones go. */
    w = 0;
    for (size_t k = 0; k < *n_rev; k++) {
        if (plan_stops(p, k)) return 0;
        uint32_t i = rev[k].i;
        if (!mark[i]) continue;
        rev[w++] = i >= req->from && fused_at[i] != NONE ? fwd[fused_at[i]] : rev[k];
    }
    *n_rev = w;
    return used;
}

/* ---- a batch, ready to run as often as needed --------------------------------- */

struct pg_batch {
    pg_tape *t;
    batch job;
    uint32_t from, top, penalty;
    uint32_t fixed_end;  /* the fixed op nodes rows read lie below this */
    pg_batch *penalty_batch; /* grad_batch's penalty, as a batch of one row */
    const uint32_t *wrt; /* node indices (a copy), for the grads left on the tape */
    void *plan;          /* one allocation: instrs, then the uint32 arrays */
    worker *w;
    int threads;
    int mean;
    /* The request it was planned for, to be run again when the same one
       comes back (a training loop asks for the same batch every step). */
    request asked;       /* its arrays point to copies in plan */
    int threads_asked;
    size_t bytes;
};

void pg__batch_free(pg_batch *b)
{
    if (!b) return;
    pg_tape *t = b->t;
    pg__batch_free(b->penalty_batch);
    for (int k = 0; k < b->threads; k++) pg__alloc(t, b->w[k].memory, 0);
    pg__alloc(t, b->w, 0);
    pg__alloc(t, b->plan, 0);
    pg__alloc(t, b, 0);
}

/* The tape keeps the batch it ran last, plan and workspace, for the next
   call: planning and allocating cost a training step of a small model as
   much as its arithmetic.  A big batch is not kept: its planning is cheap
   next to its run, and many tapes should not each hold megabytes.  The
   tape frees what it keeps with itself. */
void pg__batch_close(pg_batch *b)
{
    if (!b) return;
    if (b->bytes > PG_KEEP_BYTES) {
        pg__batch_free(b);
        return;
    }
    pg__batch_free(b->t->last_batch);
    b->t->last_batch = b;
}

size_t pg__batch_bytes(const pg_batch *b) { return b ? b->bytes : 0; }

static int same_nodes(const uint32_t *x, const uint32_t *y, size_t n)
{
    return n == 0 || memcmp(x, y, n * sizeof *x) == 0;
}

/* Whether b was planned for this request.  The tape only grows, so a plan
   over nodes [0, top] stays right as long as it is asked for again. */
static int planned_for(const pg_batch *b, const request *req, int threads, int mean)
{
    const request *a = &b->asked;
    return b->threads_asked == threads && b->mean == mean && a->rows == req->rows &&
           (a->outputs == NULL) == (req->outputs == NULL) && a->top == req->top && a->loss == req->loss &&
           a->penalty == req->penalty && a->n_in == req->n_in && a->n_out == req->n_out &&
           a->n_wrt == req->n_wrt && same_nodes(a->inputs, req->inputs, req->n_in) &&
           same_nodes(a->outputs, req->outputs, req->n_out) && same_nodes(a->wrt, req->wrt, req->n_wrt);
}

static int plan_batch(pg_tape *t, const request *req, int threads, int mean, pg_poll *poll, pg_batch **out);

/* The request's batch: the one the tape kept, if it was planned for the
   same request, else a new plan.  Every index in req has been checked by
   the caller. */
static int open_batch(pg_tape *t, const request *req, int threads, int mean, pg_poll *poll, pg_batch **out)
{
    if (threads < 1) return pg__fail(t, PG_EINVAL, "threads must be at least 1, not %d", threads);
    pg_batch *last = t->last_batch;
    if (last && planned_for(last, req, threads, mean)) {
        t->last_batch = NULL;
        last->job.data = req->data;
        last->job.result = req->result;
        *out = last;
        return PG_OK;
    }
    return plan_batch(t, req, threads, mean, poll, out);
}

/* A penalty (grad_batch's term of the parameters alone) runs as a batch of
   one row, in which every op node of it is computed (from = 0): its sums
   of squares are fused chains, several times faster than a scalar sweep. */
static int plan_penalty(pg_tape *t, const request *req, pg_poll *poll, pg_batch **out)
{
    static const double no_data[1];
    request pen = {.data = no_data, .rows = 1, .top = req->penalty, .from = 0, .loss = req->penalty,
                   .bottom = req->bottom, .penalty = NONE, .wrt = req->wrt, .n_wrt = req->n_wrt};
    return plan_batch(t, &pen, 1, 0, poll, out);
}

/* Plans the request and allocates its workers. */
static int plan_batch(pg_tape *t, const request *req, int threads, int mean, pg_poll *poll, pg_batch **out)
{
    int threads_asked = threads;
    if ((size_t)threads > req->rows) threads = req->rows ? (int)req->rows : 1;

    int grads = req->outputs == NULL;
    size_t nodes = (size_t)req->top + 1;
    if (nodes > SIZE_MAX / (2 * sizeof(instr) + 8 * sizeof(uint32_t)) / 2)
        return pg__fail(t, PG_ENOMEM, "a batch over %zu nodes is too big", nodes);

    /* One allocation for the plans (at most nodes instrs each way), the
       factors of fused chains (fewer than two a node), the slot arrays and
       the ranges of grads to zero (at most one a slot, plus one); mark and
       slot are scratch (each twice over, for fuse_chains), freed before
       returning. */
    size_t n_small = req->n_in + req->n_out + req->n_wrt;
    size_t plan_bytes = nodes * 2 * sizeof(instr) + (2 * n_small + 6 * nodes + 2) * sizeof(uint32_t) + nodes;
    pg_batch *b = pg__alloc(t, NULL, sizeof *b);
    uint8_t *mark = pg__alloc(t, NULL, 2 * nodes);
    uint32_t *slot = pg__alloc(t, NULL, 2 * nodes * sizeof *slot);
    void *plan = pg__alloc(t, NULL, plan_bytes);
    if (!b || !mark || !slot || !plan) {
        pg__alloc(t, b, 0);
        pg__alloc(t, mark, 0);
        pg__alloc(t, slot, 0);
        pg__alloc(t, plan, 0);
        return pg__fail(t, PG_ENOMEM, "out of memory planning a batch over %zu nodes", nodes);
    }
    instr *fwd = plan, *rev = fwd + nodes;
    uint32_t *input_slot = (uint32_t *)(rev + nodes), *output_slot = input_slot + req->n_in;
    uint32_t *wrt_slot = output_slot + req->n_out;
    uint32_t *fixed_slot = wrt_slot + req->n_wrt, *fixed_node = fixed_slot + nodes;
    uint32_t *asked = fixed_node + nodes; /* copies of the request's node arrays */
    uint32_t *pairs = asked + n_small, *zero = pairs + 2 * nodes;
    uint8_t *once = (uint8_t *)(zero + 2 * nodes + 2), *once_node = mark + nodes;
    if (req->n_in) memcpy(asked, req->inputs, req->n_in * sizeof *asked);
    if (req->n_out) memcpy(asked + req->n_in, req->outputs, req->n_out * sizeof *asked);
    if (req->n_wrt) memcpy(asked + req->n_in + req->n_out, req->wrt, req->n_wrt * sizeof *asked);
    *b = (pg_batch){.t = t, .from = req->from, .top = req->top, .penalty = req->penalty,
                    .wrt = asked + req->n_in + req->n_out, .plan = plan, .mean = mean, .asked = *req,
                    .threads_asked = threads_asked, .bytes = sizeof *b + plan_bytes};
    b->asked.inputs = asked;
    b->asked.outputs = req->outputs ? asked + req->n_in : NULL;
    b->asked.wrt = b->wrt;
    batch *job = &b->job;
    planner p = {t, poll, 0};
    *job = (batch){.data = req->data, .rows = req->rows, .n_in = req->n_in, .input_slot = input_slot,
                   .fwd = fwd, .rev = rev, .fixed_slot = fixed_slot, .fixed_node = fixed_node,
                   .n_out = req->n_out, .result = req->result, .n_wrt = req->n_wrt,
                   .wrt_slot = wrt_slot, .pairs = pairs, .once = once, .zero = zero};

    /* The reverse plan first, while mark holds only its cone: which wrt
       nodes the loss depends on. */
    if (plan_clears(&p, mark, nodes)) goto stopped;
    if (grads) {
        mark[req->loss] = 1;
        job->n_rev = make_plan(&p, mark, req->bottom + 1, req->loss, 1, rev);
        for (size_t k = 0; k < req->n_wrt; k++)
            wrt_slot[k] = req->wrt[k] <= req->loss && mark[req->wrt[k]] ? 0 : NONE;
    } else {
        for (size_t k = 0; k < req->n_out; k++) mark[req->outputs[k]] = 1;
    }
    /* The forward plan adds what rows compute to the marks (a superset of
       the reverse cone above the first input). */
    job->n_fwd = make_plan(&p, mark, req->from, req->top, 0, fwd);
    fuse_chains(&p, req, mark, once_node, slot, slot + nodes, fwd, &job->n_fwd, rev, &job->n_rev, pairs);
    if (p.stopped) goto stopped;

    /* Slots in node order, for every marked node. */
    uint32_t slots = 0;
    for (size_t i = 0; i < nodes; i++) {
        if (plan_stops(&p, i)) goto stopped;
        if (!mark[i]) {
            slot[i] = NONE;
            continue;
        }
        once[slots] = once_node[i];
        slot[i] = slots++;
    }
    job->slots = slots;
    /* The grads a block zeroes: runs of slots not written once. */
    for (uint32_t k = 0; k < slots;) {
        if (once[k]) { k++; continue; }
        zero[2 * job->n_zero] = k;
        while (k < slots && !once[k]) k++;
        zero[2 * job->n_zero++ + 1] = k;
    }
    to_slots(&p, slot, fwd, job->n_fwd);
    to_slots(&p, slot, rev, job->n_rev);
    if (p.stopped) goto stopped;
    for (size_t k = 0; k < req->n_in; k++) input_slot[k] = req->inputs[k] <= req->top ? slot[req->inputs[k]] : NONE;
    for (size_t k = 0; k < req->n_out; k++) output_slot[k] = slot[req->outputs[k]];
    if (grads) {
        job->loss_slot = slot[req->loss];
        for (size_t k = 0; k < req->n_wrt; k++)
            if (wrt_slot[k] != NONE) wrt_slot[k] = slot[req->wrt[k]];
    } else {
        job->output_slot = output_slot;
    }
    /* Fixed: marked nodes that no row computes or loads (inputs are leaves
       at or above from, and every op node there is in the forward plan). */
    for (size_t k = 0; k < req->n_in; k++)
        if (input_slot[k] != NONE) mark[req->inputs[k]] = 2;
    for (size_t i = 0; i < nodes && !plan_stops(&p, i); i++)
        mark[i] = mark[i] == 1 && (i < req->from || pg_op_arity(t->op[i]) == 0);
    /* Those read as rows come first; the factors of fused chains only are
       read as one number (UNIFORM), and a block fills one number of them. */
    uint8_t *row = once_node; /* by slot, now */
    read_as_rows(&p, job, slots > UNIFORM, row);
    for (int rows = 1; rows >= 0; rows--) {
        for (size_t i = 0; i < nodes && !plan_stops(&p, i); i++)
            if (mark[i] && row[slot[i]] == rows) {
                fixed_slot[job->n_fixed] = slot[i];
                fixed_node[job->n_fixed++] = (uint32_t)i;
                if (pg_op_arity(t->op[i]) > 0) b->fixed_end = (uint32_t)i + 1;
            }
        if (rows) job->n_fixed_rows = job->n_fixed;
    }
    factor_slots(&p, slot, mark, fwd, job->n_fwd, slots, pairs);
    if (p.stopped) goto stopped;
    pg__alloc(t, mark, 0);
    pg__alloc(t, slot, 0);
    mark = NULL;
    slot = NULL;

    size_t per_node = grads ? 2 : 1, room = slots ? slots : 1;
    size_t row_bytes = room * per_node * sizeof(double);
    size_t R = PG_BLOCK_CACHE / row_bytes;
    if (R > PG_BLOCK_MAX) R = PG_BLOCK_MAX;
    if (R < PG_LINE) {
        R = PG_BLOCK_BYTES / row_bytes;
        R = R < 1 ? 1 : R > PG_LINE ? PG_LINE : R;
    }
    /* No more rows than a thread's share. */
    size_t share = (req->rows + (size_t)threads - 1) / (size_t)threads;
    share = share ? (share + PG_LINE - 1) / PG_LINE * PG_LINE : PG_LINE;
    if (R > share) R = share;
    /* Whole cache lines a slot, from a line's start: a vector load never
       straddles two lines (that made the AVX-512 loops a third slower). */
    job->block = R = R >= PG_LINE ? R / PG_LINE * PG_LINE : R;
    size_t doubles = room * R * per_node + 2 * req->n_wrt;
    b->w = pg__alloc(t, NULL, (size_t)threads * sizeof *b->w);
    if (!b->w) goto nomem;
    b->bytes += (size_t)threads * (sizeof *b->w + (doubles + PG_LINE) * sizeof(double));
    for (; b->threads < threads; b->threads++) {
        int k = b->threads;
        void *memory = pg__alloc(t, NULL, (doubles + PG_LINE) * sizeof(double));
        if (!memory) goto nomem;
        if (plan_clears(&p, memory, (doubles + PG_LINE) * sizeof(double))) { /* rows past a block's end are read */
            pg__alloc(t, memory, 0);
            goto stopped;
        }
        double *block = (double *)(((uintptr_t)memory + PG_LINE * sizeof(double) - 1) &
                                   ~(uintptr_t)(PG_LINE * sizeof(double) - 1));
        b->w[k] = (worker){.job = job, .sweep = {t, PG_OK, 0, 0, 0}, .r0 = req->rows * k / threads,
                           .r1 = req->rows * (k + 1) / threads, .memory = memory, .val = block,
                           .grad = grads ? block + room * R : NULL, .sum_before = block + doubles - 2 * req->n_wrt,
                           .grad_sum = block + doubles - req->n_wrt};
    }
    if (req->penalty != NONE) {
        int rc = plan_penalty(t, req, poll, &b->penalty_batch);
        if (rc) {
            pg__batch_free(b);
            return rc;
        }
        b->bytes += b->penalty_batch->bytes;
    }
    *out = b;
    return PG_OK;

nomem:
    pg__batch_free(b);
    return pg__fail(t, PG_ENOMEM, "out of memory for a batch over %zu nodes and %d threads", nodes, threads);

stopped:
    if (mark) pg__alloc(t, mark, 0);
    if (slot) pg__alloc(t, slot, 0);
    pg__batch_free(b);
    return pg__interrupted(t);
}

/* Runs every row once, from the tape's current values.  poll is the calling
   thread's: the rows this thread runs itself check the progress handler. */
static int run_batch(pg_batch *b, pg_poll *poll)
{
    pg_tape *t = b->t;
    const batch *job = &b->job;
    /* The op nodes below the first input that rows read, brought up to date
       on the tape (parameters may have moved); leaves and constants always
       are.  Nodes past them are left alone: evaluating them at the inputs'
       own values could fail where every row would succeed, and ones no row
       reads (a penalty, say) need not be evaluated at all. */
    int rc = pg__eval_to(t, b->fixed_end);
    for (size_t f = 0; f < job->n_fixed && rc == PG_OK; f++) rc = pg__readable(t, job->fixed_node[f]);
    if (rc) return rc;
    const size_t R = job->block;
    for (int k = 0; k < b->threads; k++) {
        worker *w = &b->w[k];
        /* Every row starts from the tape's values (parameters, constants). */
        for (size_t f = 0; f < job->n_fixed; f++) {
            double v = t->value[job->fixed_node[f]], *slot = w->val + (size_t)job->fixed_slot[f] * R;
            size_t n = f < job->n_fixed_rows ? R : 1;
            for (size_t r = 0; r < n; r++) slot[r] = v;
        }
        memset(w->grad_sum, 0, job->n_wrt * sizeof *w->grad_sum);
        w->loss_sum = 0.0;
        w->sweep.status = PG_OK;
        w->sweep.code = 0;
        w->stopped = 0;
        w->poll = NULL;
    }

    crew c = {.running = 0};
    if (b->threads > 1) {
        pthread_mutex_init(&c.lock, NULL);
        pthread_cond_init(&c.done, NULL);
        pthread_mutex_lock(&c.lock);
        for (int k = 1; k < b->threads; k++) {
            b->w[k].crew = &c;
            b->w[k].started = pthread_create(&b->w[k].thread, NULL, thread_main, &b->w[k]) == 0;
            c.running += b->w[k].started;
        }
        pthread_mutex_unlock(&c.lock);
    }
    if (b->threads) {
        b->w[0].poll = poll;
        run_rows(&b->w[0]);
    }
    for (int k = 1; k < b->threads; k++)
        if (!b->w[k].started) { /* no thread to be had: do its share here */
            b->w[k].poll = poll;
            run_rows(&b->w[k]);
        }
    if (b->threads > 1) {
        wait_for(&c, t, poll);
        for (int k = 1; k < b->threads; k++)
            if (b->w[k].started) pthread_join(b->w[k].thread, NULL);
        pthread_cond_destroy(&c.done);
        pthread_mutex_destroy(&c.lock);
    }

    /* A failure in a row comes before an interrupt: a loop over the rows
       would have met it.  An interrupt during the call stops it, even
       where it only kept user functions from running (batch_call). */
    for (int k = 0; k < b->threads; k++)
        if (b->w[k].sweep.status) return pg__sweep_failure(&b->w[k].sweep);
    return atomic_load_explicit(&t->interrupted, memory_order_relaxed) ? pg__interrupted(t) : PG_OK;
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
    request req = {.inputs = inputs, .n_in = n_in, .data = data, .rows = rows,
                   .outputs = outputs, .n_out = n_out, .result = result, .penalty = NONE};
    int rc = check_inputs(t, inputs, n_in, &req.from);
    if (rc) return rc;
    for (size_t k = 0; k < n_out; k++) {
        PG_CHECK_NODE(t, outputs[k]);
        if (outputs[k] > req.top) req.top = outputs[k];
    }
    if (threads < 1) return pg__fail(t, PG_EINVAL, "threads must be at least 1, not %d", threads);
    if (n_out == 0 || rows == 0) return PG_OK;
    pg_batch *b;
    pg_poll poll = {0, 0};
    rc = open_batch(t, &req, threads, 0, &poll, &b);
    if (rc) return rc;
    rc = run_batch(b, &poll);
    pg__batch_close(b);
    return rc;
}

int pg_eval_batch(pg_tape *t, const uint32_t *outputs, size_t n_out, const uint32_t *inputs, size_t n_in,
                  const double *data, size_t rows, int threads, double *result)
{
    PG_HOLDING(t, PG_EBUSY, eval_batch(t, outputs, n_out, inputs, n_in, data, rows, threads, result));
}

/* Fails unless node `penalty` is the same for every row: it must not
   depend on an input. */
static int check_penalty(pg_tape *t, uint32_t penalty, const uint32_t *inputs, size_t n_in, uint32_t from,
                         pg_poll *poll)
{
    if (penalty < from) return PG_OK; /* built before any input */
    size_t n = (size_t)penalty - from + 1;
    uint8_t *mark = pg__alloc(t, NULL, n);
    if (!mark) return pg__fail(t, PG_ENOMEM, "out of memory checking the penalty");
    memset(mark, 0, n);
    mark[n - 1] = 1;
    for (uint32_t i = penalty + 1; i-- > from;) {
        if ((i & 0xFFFF) == 0 && pg__stop(t, poll, 0x10000)) {
            pg__alloc(t, mark, 0);
            return pg__interrupted(t);
        }
        if (!mark[i - from]) continue;
        int operands = pg_op_arity(t->op[i]);
        if (operands >= 1 && t->a[i] >= from) mark[t->a[i] - from] = 1;
        if (operands == 2 && t->b[i] >= from) mark[t->b[i] - from] = 1;
    }
    for (size_t k = 0; k < n_in; k++)
        if (inputs[k] <= penalty && mark[inputs[k] - from]) {
            pg__alloc(t, mark, 0);
            return pg__fail(t, PG_EINVAL, "the penalty (node %u) depends on input %zu (node %u): "
                            "it must be the same for every row", (unsigned)penalty, k, (unsigned)inputs[k]);
        }
    pg__alloc(t, mark, 0);
    return PG_OK;
}

int pg__batch_open_grad(pg_tape *t, uint32_t loss, int64_t penalty, const uint32_t *inputs, size_t n_in,
                        const double *data, size_t rows, const uint32_t *wrt, size_t n_wrt, int mean,
                        int threads, pg_poll *poll, pg_batch **out)
{
    request req = {.inputs = inputs, .n_in = n_in, .data = data, .rows = rows, .top = loss,
                   .loss = loss, .bottom = loss, .penalty = NONE, .wrt = wrt, .n_wrt = n_wrt};
    PG_CHECK_NODE(t, loss);
    int rc = check_inputs(t, inputs, n_in, &req.from);
    if (rc) return rc;
    for (size_t k = 0; k < n_wrt; k++) {
        PG_CHECK_NODE(t, wrt[k]);
        if (wrt[k] < req.bottom) req.bottom = wrt[k];
    }
    if (penalty >= 0) {
        if (penalty >= (int64_t)t->n)
            return pg__fail(t, PG_EINVAL, "the penalty, node %lld, does not exist (the tape has %u nodes)",
                            (long long)penalty, (unsigned)t->n);
        rc = check_penalty(t, (uint32_t)penalty, inputs, n_in, req.from, poll);
        if (rc) return rc;
        req.penalty = (uint32_t)penalty;
    }
    if (mean && rows == 0) return pg__fail(t, PG_EINVAL, "the mean of no rows is undefined");
    return open_batch(t, &req, threads, mean, poll, out);
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
    /* The penalty, once: its value and gradient, as a backprop of it would
       give them (a sum over one row is 0.0 plus that row's). */
    if (b->penalty_batch) {
        const worker *p = &b->penalty_batch->w[0];
        rc = run_batch(b->penalty_batch, poll);
        if (rc) return rc;
        total += p->loss_sum;
        for (size_t j = 0; j < job->n_wrt; j++) grads_out[j] += p->grad_sum[j];
    }
    /* Leave the gradient where an optimizer looks for it. */
    memset(t->grad, 0, (size_t)t->n * sizeof *t->grad);
    for (size_t j = 0; j < job->n_wrt; j++) t->grad[b->wrt[j]] = grads_out[j];
    *loss_out = total;
    return PG_OK;
}

static int grad_batch(pg_tape *t, uint32_t loss, int64_t penalty, const uint32_t *inputs, size_t n_in,
                      const double *data, size_t rows, const uint32_t *wrt, size_t n_wrt, int mean, int threads,
                      double *loss_out, double *grads_out)
{
    pg_batch *b;
    pg_poll poll = {0, 0};
    int rc = pg__batch_open_grad(t, loss, penalty, inputs, n_in, data, rows, wrt, n_wrt, mean, threads, &poll, &b);
    if (rc) return rc;
    rc = pg__batch_grad(b, &poll, loss_out, grads_out);
    pg__batch_close(b);
    return rc;
}

int pg_grad_batch(pg_tape *t, uint32_t loss, int64_t penalty, const uint32_t *inputs, size_t n_in,
                  const double *data, size_t rows, const uint32_t *wrt, size_t n_wrt, int mean, int threads,
                  double *loss_out, double *grads_out)
{
    PG_HOLDING(t, PG_EBUSY, grad_batch(t, loss, penalty, inputs, n_in, data, rows, wrt, n_wrt, mean, threads,
                                       loss_out, grads_out));
}
