/*
 * stale.c -- which nodes hold their values.
 *
 * The tape is append-only and a node's operands come before it, so one
 * watermark says what is up to date: nodes below `stale` hold their values,
 * and a set() lowers it to just past the leaf.  Reading a node evaluates the
 * tape up to it.
 *
 * A user function may fail.  Then only the nodes that depend on the failed
 * call lose their values: the sweep goes on past it, carrying the failure
 * forward one node at a time (a node whose operand failed fails too, and
 * its function is not called), and the watermark passes them.  Those nodes
 * are marked in t->failed and hold NaN.  Reading one of them calls the
 * failed functions it depends on again (they may succeed now) and, if one
 * still fails, reports the lowest such failure; reading any other node works
 * as if nothing had failed.  A set() below a failed node clears its mark,
 * since the sweep evaluates it again anyway.
 */
#include "tape.h"

#include <string.h>

/* ---- the marks ---------------------------------------------------------------- */

void pg__forget_failures(pg_tape *t, uint32_t from)
{
    if (!pg__has_failures(t) || t->failed_hi < from) return;
    uint32_t lo = from > t->failed_lo ? from : t->failed_lo;
    memset(t->failed + lo, 0, (size_t)t->failed_hi - lo + 1);
    if (lo == t->failed_lo) t->failed_lo = PG_NONE;
    else t->failed_hi = lo - 1;
}

static int mark(pg_tape *t, uint32_t i, int state)
{
    if (i >= t->failed_cap) { /* grown by a move, as the tape's arrays are (pg__grow) */
        uint32_t cap = t->cap > i ? t->cap : i + 1;
        if (pg__grow(t, (void **)&t->failed, 1, t->failed_cap, cap))
            return pg__fail(t, PG_ENOMEM, "out of memory marking a failed node");
        memset(t->failed + t->failed_cap, 0, cap - t->failed_cap);
        t->failed_cap = cap;
    }
    t->failed[i] = (uint8_t)state;
    if (!pg__has_failures(t)) t->failed_lo = t->failed_hi = i;
    if (i < t->failed_lo) t->failed_lo = i;
    if (i > t->failed_hi) t->failed_hi = i;
    return PG_OK;
}

static int operand_failed(const pg_tape *t, uint32_t i)
{
    int arity = pg_op_arity(t->op[i]);
    return (arity >= 1 && pg__is_failed(t, t->a[i])) || (arity == 2 && pg__is_failed(t, t->b[i]));
}

/* Node i's function failed as sweep s says: mark it and keep the failure
   for the read that reaches it.  A callback that asked to stop the whole
   call (a negative code: Ctrl-C) is no failure of the node: the call fails
   at once, and the node stays stale for the next one. */
static int record(pg_tape *t, uint32_t i, const pg_sweep *s)
{
    if (s->status == PG_ECALLBACK && s->code < 0) return pg__sweep_failure(s);
    if (t->n_failures == t->cap_failures) {
        uint32_t want = t->cap_failures ? t->cap_failures * 2 : 8;
        if (pg__grow(t, (void **)&t->failures, sizeof *t->failures, t->n_failures, want))
            return pg__fail(t, PG_ENOMEM, "out of memory recording a failed function");
        t->cap_failures = want;
    }
    int rc = mark(t, i, PG_FAILED_NOW);
    if (rc) return rc;
    t->value[i] = NAN;
    t->failures[t->n_failures++] = (pg_failure){i, s->status, s->code};
    return PG_OK;
}

/* Evaluates node i alone, from operands that hold their values. */
static int evaluate(pg_tape *t, uint32_t i)
{
    pg_sweep s = {t, PG_OK, 0, 0, 0, 0};
    pg__forward(&s, t->value, i, i + 1);
    if (s.status) return record(t, i, &s);
    if (pg__is_failed(t, i)) t->failed[i] = PG_FAILED_NOT;
    return PG_OK;
}

/* Nodes [from, to), one at a time, carrying failures forward. */
static int forward_carefully(pg_tape *t, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        int rc;
        if (operand_failed(t, i)) {
            rc = mark(t, i, PG_FAILED_OPERAND);
            t->value[i] = NAN;
        } else {
            rc = evaluate(t, i);
        }
        if (rc) return rc;
    }
    return PG_OK;
}

/* ---- evaluation --------------------------------------------------------------- */

/* The node of the calls-th function call of a forward loop from node
   `from`: the one that failed, as the loop calls each CALL node once, in
   order, and none after a failure.  (Found here, after the loop, so that
   the hot loop need not carry the node into each call.) */
static uint32_t failed_call(const pg_tape *t, uint32_t from, uint32_t to, uint32_t calls)
{
    for (uint32_t i = from; i < to; i++)
        if (t->op[i] == PG_OP_CALL && --calls == 0) return i;
    return to - 1; /* not reached: the loop made `calls` calls in [from, to) */
}

/* Brings nodes [0, end) up to date.  The fast loop runs while nothing has
   failed; from a failure on (and while failed nodes lie below, which later
   nodes may read) the careful one does. */
/* The failures of an earlier call are plain marks now: a read retries them. */
static void settle(pg_tape *t)
{
    for (uint32_t k = 0; k < t->n_failures; k++) {
        uint32_t i = t->failures[k].node;
        if (pg__is_failed(t, i)) t->failed[i] = PG_FAILED_ROOT;
    }
    t->n_failures = 0;
}

/* failed_lo and failed_hi moved in past nodes that hold their values again. */
static void tighten(pg_tape *t)
{
    while (pg__has_failures(t) && !t->failed[t->failed_lo]) {
        if (t->failed_lo == t->failed_hi) t->failed_lo = PG_NONE;
        else t->failed_lo++;
    }
    while (pg__has_failures(t) && !t->failed[t->failed_hi]) t->failed_hi--;
}

int pg__eval_to(pg_tape *t, uint32_t end)
{
    settle(t);
    if (t->stale >= end) return PG_OK;
    pg_poll poll = {0, 0};
    while (t->stale < end) {
        uint32_t from = t->stale, to = end - from > PG_CHUNK ? from + PG_CHUNK : end;
        int rc = PG_OK;
        if (pg__has_failures(t)) {
            rc = forward_carefully(t, from, to);
        } else {
            pg_sweep s = {t, PG_OK, 0, 0, 0, 0};
            pg__forward(&s, t->value, from, to);
            if (s.status) {
                /* Nodes before the failed one hold their values; the loop
                   called no function after it, so nothing runs twice. */
                uint32_t failed = failed_call(t, from, to, s.calls);
                if (!(rc = record(t, failed, &s))) rc = forward_carefully(t, failed + 1, to);
            }
        }
        if (rc) { /* out of memory, or asked to stop: these nodes stay stale */
            pg__forget_failures(t, from);
            return rc;
        }
        t->stale = to;
        if (to < end && pg__stop(t, &poll, PG_CHUNK)) return pg__interrupted(t);
    }
    return PG_OK;
}

/* ---- reading a failed node ----------------------------------------------------- */

/* Where this call recorded node i's failure (marked PG_FAILED_NOW). */
static uint32_t failure_of(const pg_tape *t, uint32_t i)
{
    for (uint32_t k = 0; k < t->n_failures; k++)
        if (t->failures[k].node == i) return k;
    return PG_NONE;
}

static int report(pg_tape *t, uint32_t k)
{
    if (k == PG_NONE) /* cannot happen: a failed node depends on a failed function */
        return pg__fail(t, PG_ECALLBACK, "a node depends on a failed function");
    const pg_failure *f = &t->failures[k];
    pg_sweep s = {t, f->status, t->b[f->node], 0, f->code, 0};
    return pg__sweep_failure(&s);
}

/* Node i failed: evaluates again, lowest first, the failed nodes it depends
   on (calling again a function that failed before this evaluation; one that
   failed in it is not called twice), and reports the lowest failure left. */
static int retry(pg_tape *t, uint32_t i)
{
    uint32_t lo = t->failed_lo;
    uint8_t *needed = pg__alloc(t, NULL, (size_t)i - lo + 1);
    if (!needed) return pg__fail(t, PG_ENOMEM, "out of memory retrying failed nodes");
    memset(needed, 0, (size_t)i - lo + 1);
    needed[i - lo] = 1;
    for (uint32_t j = i + 1; j-- > lo;) {
        if (!needed[j - lo]) continue;
        int arity = pg_op_arity(t->op[j]);
        if (arity >= 1 && pg__is_failed(t, t->a[j])) needed[t->a[j] - lo] = 1;
        if (arity == 2 && pg__is_failed(t, t->b[j])) needed[t->b[j] - lo] = 1;
    }
    int rc = PG_OK;
    uint32_t first = PG_NONE; /* the lowest failure i depends on, in t->failures */
    for (uint32_t j = lo; j <= i && rc == PG_OK; j++) {
        if (!needed[j - lo]) continue;
        if (t->failed[j] == PG_FAILED_NOW) { /* not called twice in one call */
            if (first == PG_NONE) first = failure_of(t, j);
        } else if (operand_failed(t, j)) {
            t->failed[j] = PG_FAILED_OPERAND;
            t->value[j] = NAN;
        } else {
            uint32_t recorded = t->n_failures;
            rc = evaluate(t, j);
            if (!rc && first == PG_NONE && t->n_failures > recorded) first = recorded;
        }
    }
    pg__alloc(t, needed, 0);
    tighten(t);
    if (rc) return rc;
    return pg__is_failed(t, i) ? report(t, first) : PG_OK;
}

int pg__readable(pg_tape *t, uint32_t i) { return pg__is_failed(t, i) ? retry(t, i) : PG_OK; }
