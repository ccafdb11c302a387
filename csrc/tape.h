/*
 * tape.h -- the tape's insides, shared by tape.c (building, names, user
 * functions) and sweep.c (evaluation and differentiation).
 */
#ifndef PG_TAPE_H
#define PG_TAPE_H

#include "pyrograd.h"
#include "ops.h"

#include <pthread.h>
#include <stdatomic.h>

/* The most nodes a tape holds: indices are uint32 and n must fit too. */
#define PG_MAX_NODES ((uint64_t)UINT32_MAX - 1)

typedef struct pg_userfn {
    char *name;
    pg_fnslot order[PG_FN_ORDERS];
    int32_t deriv;    /* the function that is this one's derivative, or -1 */
    int level;        /* how many times base was differentiated to give this */
    const char *base; /* the name of the function the user gave */
} pg_userfn;

/* A node's name; kept sorted by node index, only for named nodes. */
typedef struct pg_namedef {
    uint32_t node;
    char *name;
} pg_namedef;

struct pg_tape {
    /* The nodes, struct of arrays: 25 bytes a node. */
    uint8_t *op;
    uint32_t *a, *b;      /* operands; b is the aux index of K1 ops */
    double *value, *grad;
    uint32_t n, cap;

    /* Nodes from here on may be stale: a set() happened below them. */
    uint32_t stale;

    /* Nodes below `stale` that hold no value because a user function failed
       in them or in a node they depend on (stale.c).  Only their readers
       fail; every other node reads normally.  failed[i] is a PG_FAILED_*
       state, non-zero only for failed_lo <= i <= failed_hi; failed_lo is
       PG_NONE while nothing failed.  Allocated at the first failure. */
    uint8_t *failed;
    uint32_t failed_cap, failed_lo, failed_hi;
    /* The functions that failed in the last evaluation, lowest node first,
       so that a read reports the failure that reached it. */
    struct pg_failure *failures;
    uint32_t n_failures, cap_failures;

    /* Held by the call using the tape (pg__enter), so that neither another
       thread nor a callback from the sweep can grow or edit it underfoot. */
    atomic_int busy;
    /* The thread holding it (zero when none): after a fork, the child gives
       back a tape that a thread it does not have was holding
       (pg_tape_after_fork), and only that. */
    pthread_t holder;

    /* Set by pg_interrupt; read by the call running between blocks. */
    atomic_int interrupted;
    pg_progress_fn progress;
    void *progress_ud;
    int progress_ms;
    int progress_code; /* what the handler returned when it stopped a call */

    pg_namedef *names;
    uint32_t n_names, cap_names;

    pg_userfn *fns;
    uint32_t n_fns, cap_fns;

    /* Nodes [0, indexed) by content, for derivative graphs (grad.c): open
       addressing, NONE (all ones) where empty; allocated on first use. */
    uint32_t *index;
    uint32_t index_cap, index_count, indexed;

    /* The batch run last, kept for the next call (batch.c). */
    struct pg_batch *last_batch;

    pg_alloc_fn alloc;
    void *alloc_ud;

    int errcode;
    int callback_code; /* of the last PG_ECALLBACK */
    char errmsg[256];
};

/* The state of one sweep: the first failure of a user function, if any. */
typedef struct pg_sweep {
    pg_tape *t;
    int status;
    uint32_t fn;
    int order;
    int code;       /* what a failing callback returned */
    uint32_t calls; /* user functions called so far, the failing one included */
} pg_sweep;

/* A failed node's state: it failed itself (a root: its function failed on
   good operands) or an operand of it had failed. */
enum { PG_FAILED_NOT = 0, PG_FAILED_OPERAND = 1, PG_FAILED_ROOT = 2,
       PG_FAILED_NOW = 3 /* a root that failed in this call: t->failures has it */ };
#define PG_NONE UINT32_MAX

typedef struct pg_failure {
    uint32_t node;
    int status, code;
} pg_failure;

/* Calls order `order` of user function fn.  After a failure a sweep runs
   to its end without calling anything more (no per-node check in the hot
   loop) and the caller reports the failure. */
static inline double pg__call(pg_sweep *s, uint32_t fn, int order, double x)
{
    if (s->status) return NAN;
    s->calls++;
    const pg_fnslot *slot = &s->t->fns[fn].order[order];
    if (slot->native) return slot->native(x);
    double out;
    if (!slot->callback) s->status = PG_ENODERIV;
    else if ((s->code = slot->callback(slot->ud, x, &out)) == 0) return out;
    else s->status = PG_ECALLBACK;
    s->fn = fn;
    s->order = order;
    return NAN;
}

/* Scalar sweeps run in chunks of this many nodes, with a check for an
   interrupt between chunks. */
#define PG_CHUNK (1u << 16)

/* The loops of sweep.c, on any value and grad arrays (batch.c gives each
   thread its own). */
void pg__forward(pg_sweep *s, double *val, uint32_t from, uint32_t to);
void pg__reverse(pg_sweep *s, const double *val, double *grad, uint32_t top, uint32_t bottom);

/* Staleness and failures (stale.c).  eval_to brings nodes [0, end) up to
   date, carrying a user function's failure only to the nodes that depend on
   it; readable says whether node i (below the watermark) holds its value,
   retrying the failed functions it depends on, and reports the failure that
   reaches it.  invalidate marks nodes from `from` on stale, after a leaf's
   value changed there. */
int pg__eval_to(pg_tape *t, uint32_t end);
int pg__readable(pg_tape *t, uint32_t i);
void pg__forget_failures(pg_tape *t, uint32_t from);
static inline int pg__has_failures(const pg_tape *t) { return t->failed_lo != PG_NONE; }
static inline void pg__invalidate(pg_tape *t, uint32_t from)
{
    if (t->stale <= from) return;
    t->stale = from;
    if (pg__has_failures(t) && t->failed_hi >= from) pg__forget_failures(t, from);
}
static inline int pg__is_failed(const pg_tape *t, uint32_t i)
{
    return i >= t->failed_lo && i <= t->failed_hi && t->failed[i];
}
int pg__backprop(pg_tape *t, uint32_t y); /* pg_backprop, for a caller holding the tape */
int pg__sweep_failure(const pg_sweep *s);

/* Records a failure on the tape and returns code, for `return fail(...)`. */
int pg__fail(pg_tape *t, int code, const char *fmt, ...);
/* The length of s[0, len), the start of UTF-8 text cut short, without the
   part of a character it may end with (names go back to Python as UTF-8). */
size_t pg__utf8_whole(const char *s, size_t len);
void *pg__alloc(pg_tape *t, void *ptr, size_t size);
/* Grows *array to new_cap elements of size elem, keeping the first keep.
   On failure the array is untouched, so the caller can stop halfway through
   a struct of arrays and still leave a consistent tape.  It moves rather than
   reallocs: the new array is in place before the old one is freed, so the
   child of a fork in the middle (pg_tape_after_fork) holds one whole array or
   the other, never a pointer into memory that realloc was handing back. */
int pg__grow(pg_tape *t, void **array, size_t elem, uint64_t keep, uint64_t new_cap);
int pg__reserve(pg_tape *t, uint64_t nodes);
int pg__fn_new(pg_tape *t, const char *name);

/* Every public function that reads or changes the tape runs between these:
   enter takes the busy flag (false when it is taken: PG_EBUSY, and nothing
   touched) and clears an interrupt left from before; leave gives it back. */
static inline int pg__enter(pg_tape *t)
{
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&t->busy, &idle, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        return 0;
    t->holder = pthread_self();
    atomic_store_explicit(&t->interrupted, 0, memory_order_relaxed);
    return 1;
}

static inline void pg__leave(pg_tape *t)
{
    t->holder = (pthread_t){0};
    atomic_store_explicit(&t->busy, 0, memory_order_release);
}

/* Checks for an interrupt between blocks of work.  One pg_poll belongs to
   the thread that made the call, which alone runs the progress handler;
   other threads pass NULL and only read the flag.  `work` counts node
   evaluations since the last check: the clock is read only after enough of
   them, so short calls never read it. */
typedef struct pg_poll {
    uint64_t work;
    double next_ms; /* when the handler is due; 0 before the first look */
} pg_poll;

int pg__progress(pg_tape *t, pg_poll *p); /* 1 when the call must stop */

static inline int pg__stop(pg_tape *t, pg_poll *p, uint64_t work)
{
    if (atomic_load_explicit(&t->interrupted, memory_order_relaxed)) return 1;
    if (!p || !t->progress) return 0;
    p->work += work;
    return p->work >= (1u << 16) && pg__progress(t, p);
}

/* The failure of a call that pg__stop stopped. */
int pg__interrupted(pg_tape *t);

/* The body of a public function: `call` holding the tape, or busy_result
   at once when the tape is held. */
#define PG_HOLDING(t, busy_result, call)      \
    do {                                      \
        if (!pg__enter(t)) return busy_result; \
        int64_t result_ = (call);             \
        pg__leave(t);                         \
        return result_;                       \
    } while (0)

/* A grad_batch planned once and run many times (optim.c runs one per epoch). */
typedef struct pg_batch pg_batch;
int pg__batch_open_grad(pg_tape *t, uint32_t loss, int64_t penalty, const uint32_t *inputs, size_t n_in,
                        const double *data, size_t rows, const uint32_t *wrt, size_t n_wrt, int mean,
                        int threads, pg_poll *poll, pg_batch **out);
int pg__batch_grad(pg_batch *b, pg_poll *poll, double *loss_out, double *grads_out);
void pg__batch_close(pg_batch *b);  /* the tape keeps it, for the same request again */
void pg__batch_free(pg_batch *b);
size_t pg__batch_bytes(const pg_batch *b);

#define PG_CHECK_NODE(t, i)                                                  \
    do {                                                                     \
        if ((i) >= (t)->n)                                                   \
            return pg__fail((t), PG_EINVAL,                                  \
                            "node %u does not exist (the tape has %u nodes)", \
                            (unsigned)(i), (unsigned)(t)->n);                \
    } while (0)

#endif /* PG_TAPE_H */
