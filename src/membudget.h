/* The memory budget of requests (docs/security.md, "Memory"): every request charges what it
 * will hold (its body, its decoded JSON, its arrays, scratch and response) to a hold before
 * allocating it; a hold may not pass max_request_memory (413), and all holds together may not
 * pass memory_budget (429). A hold is given back when its request is freed.
 *
 * Lock-free: the budget is one atomic counter, so concurrent requests share it without a
 * lock. Lock order: none taken. */
#ifndef RNND_MEMBUDGET_H
#define RNND_MEMBUDGET_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rnnd_membudget {
    atomic_size_t used; /* bytes held by all requests */
    size_t total;       /* memory_budget */
    size_t per_request; /* max_request_memory */
} rnnd_membudget;

/* One request's share. Zero-initialised plus MB set is a valid empty hold; a budget left
 * zero-initialised (total 0) charges nothing. */
typedef struct rnnd_memhold {
    rnnd_membudget *mb; /* NULL: no budget, every charge succeeds */
    size_t held;
} rnnd_memhold;

void rnnd_membudget_init(rnnd_membudget *mb, size_t total, size_t per_request);

/* Charge BYTES more to H. Returns 0; RNND_ERR_LIMIT when the request would hold more than
 * per_request (it can never fit: 413); RNND_ERR_BUSY when the budget is spent by requests in
 * flight (it may fit later: 429). Nothing is charged on failure; ERR says which and how much. */
int rnnd_mem_charge(rnnd_memhold *h, size_t bytes, char *err, size_t errlen);

/* Give BYTES (at most what H holds) back early. */
void rnnd_mem_uncharge(rnnd_memhold *h, size_t bytes);

/* Give everything H holds back (the request is done). */
void rnnd_mem_release(rnnd_memhold *h);

/* Saturating size arithmetic for the estimates handlers charge: SIZE_MAX stays SIZE_MAX,
 * and a charge of SIZE_MAX is refused (413) rather than wrapped to a small number. */
static inline size_t rnnd_sat_add(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

static inline size_t rnnd_sat_mul(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

/* The longest text of a float in a reply (fmtfloat.h: 15 characters) with its comma. */
#define RNND_FLOAT_TEXT 16

/* json_loadb (duplicate keys refused) with every allocation jansson makes while parsing
 * charged to H as it happens: a body that decodes to more than fits stops at the first
 * allocation past the limit, not after the whole document was built. Returns 0 with *OUT;
 * RNND_ERR_LIMIT or RNND_ERR_BUSY as rnnd_mem_charge(); or RNND_ERR_INVALID with
 * "line L, column C: reason". H keeps the decoded document's bytes charged. */
int rnnd_mem_json_load(rnnd_memhold *h, const char *data, size_t len, json_t **out, char *err,
                       size_t errlen);

#endif
