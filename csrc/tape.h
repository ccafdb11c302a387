/*
 * tape.h -- the tape's insides, shared by tape.c (building, names, user
 * functions) and sweep.c (evaluation and differentiation).
 */
#ifndef PG_TAPE_H
#define PG_TAPE_H

#include "pyrograd.h"
#include "ops.h"

/* One derivative order of a user function: native pointer or callback. */
typedef struct pg_fnslot {
    pg_native_fn native;
    pg_callback_fn callback;
    void *ud;
} pg_fnslot;

typedef struct pg_userfn {
    char *name;
    pg_fnslot order[PG_FN_ORDERS];
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

    /* Set while a sweep runs, so a callback cannot grow or edit the tape
       under the sweep's feet. */
    int busy;

    pg_namedef *names;
    uint32_t n_names, cap_names;

    pg_userfn *fns;
    uint32_t n_fns, cap_fns;

    pg_alloc_fn alloc;
    void *alloc_ud;

    int errcode;
    char errmsg[256];
};

/* Records a failure on the tape and returns code, for `return fail(...)`. */
int pg__fail(pg_tape *t, int code, const char *fmt, ...);
void *pg__alloc(pg_tape *t, void *ptr, size_t size);

#define PG_CHECK_NODE(t, i)                                                  \
    do {                                                                     \
        if ((i) >= (t)->n)                                                   \
            return pg__fail((t), PG_EINVAL,                                  \
                            "node %u does not exist (the tape has %u nodes)", \
                            (unsigned)(i), (unsigned)(t)->n);                \
    } while (0)

#endif /* PG_TAPE_H */
