/*
 * optim.c -- optimizers that update a tape's parameter leaves in place, with
 * PyTorch's update rules (torch.optim, foreach=False), and the training loop
 * that alternates grad_batch and a step without returning to Python.
 */
#include "tape.h"

#include <math.h>

static int check_params(pg_tape *t, const pg_optimizer *o)
{
    for (size_t k = 0; k < o->n; k++) {
        PG_CHECK_NODE(t, o->params[k]);
        if (t->op[o->params[k]] != PG_OP_LEAF)
            return pg__fail(t, PG_ENOTLEAF, "parameter %zu (node %u) is a %s, not a leaf", k,
                            (unsigned)o->params[k], pg_op_name(t->op[o->params[k]]));
    }
    if (o->kind < PG_SGD || o->kind > PG_ADAGRAD)
        return pg__fail(t, PG_EINVAL, "unknown optimizer kind %d", o->kind);
    return PG_OK;
}

/* The new value of one parameter p with gradient g; k indexes the state. */
static double update(pg_optimizer *o, size_t k, double p, double g, double lr, int64_t step)
{
    double *s1 = o->state1, *s2 = o->state2;
    if (o->weight_decay != 0) g += o->weight_decay * p;
    switch (o->kind) {
    case PG_SGD:
        if (o->momentum != 0) {
            s1[k] = step == 1 ? g : o->momentum * s1[k] + g;
            g = o->nesterov ? g + o->momentum * s1[k] : s1[k];
        }
        return p - lr * g;
    case PG_ADAM: {
        s1[k] += (g - s1[k]) * (1 - o->beta1); /* torch's lerp */
        s2[k] = o->beta2 * s2[k] + (1 - o->beta2) * g * g;
        double bias1 = 1 - pow(o->beta1, (double)step);
        double bias2 = 1 - pow(o->beta2, (double)step);
        double denom = sqrt(s2[k]) / sqrt(bias2) + o->eps;
        return p - lr / bias1 * (s1[k] / denom);
    }
    case PG_RMSPROP: {
        s2[k] = o->alpha * s2[k] + (1 - o->alpha) * g * g;
        double avg = sqrt(s2[k]) + o->eps;
        if (o->momentum > 0) {
            s1[k] = o->momentum * s1[k] + g / avg;
            return p - lr * s1[k];
        }
        return p - lr * (g / avg);
    }
    default: { /* PG_ADAGRAD */
        double clr = lr / (1 + (double)(step - 1) * o->lr_decay);
        s2[k] += g * g;
        return p - clr * (g / (sqrt(s2[k]) + o->eps));
    }
    }
}

static void step(pg_tape *t, pg_optimizer *o, double lr)
{
    int64_t n = ++o->steps;
    for (size_t k = 0; k < o->n; k++) {
        uint32_t p = o->params[k];
        t->value[p] = update(o, k, t->value[p], t->grad[p], lr, n);
        pg__invalidate(t, p + 1);
    }
}

static int optimizer_step(pg_tape *t, pg_optimizer *o)
{
    int rc = check_params(t, o);
    if (rc) return rc;
    step(t, o, o->lr);
    return PG_OK;
}

int pg_optimizer_step(pg_tape *t, pg_optimizer *o) { PG_HOLDING(t, PG_EBUSY, optimizer_step(t, o)); }

/* An interrupted run keeps the steps it took (o->steps counts them). */
static int optimizer_run(pg_tape *t, pg_optimizer *o, uint32_t loss, int64_t penalty, const uint32_t *inputs, size_t n_in,
                         const double *data, size_t rows, int mean, int threads, size_t epochs,
                         const double *lrs, double *losses)
{
    int rc = check_params(t, o);
    if (rc) return rc;
    pg_batch *b;
    pg_poll poll = {0, 0};
    rc = pg__batch_open_grad(t, loss, penalty, inputs, n_in, data, rows, o->params, o->n, mean, threads, &poll, &b);
    if (rc) return rc;
    /* pg__batch_grad returns the gradient here and also leaves it in
       t->grad, which is where step() reads it. */
    double *grads = pg__alloc(t, NULL, (o->n ? o->n : 1) * sizeof *grads);
    if (!grads) rc = pg__fail(t, PG_ENOMEM, "out of memory for %zu gradients", o->n);
    for (size_t e = 0; e < epochs && rc == PG_OK; e++) {
        /* A check between epochs too: an epoch of few rows is one block,
           and a batch checks only between blocks.  loss + 1 nodes bound
           the work of a row. */
        if (e > 0 && pg__stop(t, &poll, (uint64_t)rows * (loss + 1))) rc = pg__interrupted(t);
        else rc = pg__batch_grad(b, &poll, &losses[e], grads);
        if (rc == PG_OK) step(t, o, lrs ? lrs[e] : o->lr);
    }
    pg__alloc(t, grads, 0);
    pg__batch_close(b);
    return rc;
}

int pg_optimizer_run(pg_tape *t, pg_optimizer *o, uint32_t loss, int64_t penalty, const uint32_t *inputs, size_t n_in,
                     const double *data, size_t rows, int mean, int threads, size_t epochs,
                     const double *lrs, double *losses)
{
    PG_HOLDING(t, PG_EBUSY,
               optimizer_run(t, o, loss, penalty, inputs, n_in, data, rows, mean, threads, epochs, lrs, losses));
}
