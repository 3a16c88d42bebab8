/* The request memory budget (membudget.h). */
#include "membudget.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "rnnd/infer.h"
#include "rnnd/status.h"

void rnnd_membudget_init(rnnd_membudget *mb, size_t total, size_t per_request)
{
    atomic_init(&mb->used, 0);
    mb->total = total;
    mb->per_request = per_request;
}

static double mib(size_t n) { return (double)n / (1024.0 * 1024.0); }

int rnnd_mem_charge(rnnd_memhold *h, size_t bytes, char *err, size_t errlen)
{
    rnnd_membudget *mb = h->mb;
    if (!mb || !mb->total || !bytes) /* a zero (never initialised) budget: no limit */
        return 0;
    if (bytes > mb->per_request || h->held > mb->per_request - bytes) {
        snprintf(err, errlen,
                 "this request needs more than max_request_memory (%.1f MiB): "
                 "%.1f MiB more on top of %.1f MiB",
                 mib(mb->per_request), mib(bytes), mib(h->held));
        return RNND_ERR_LIMIT;
    }
    size_t used = atomic_load(&mb->used);
    do {
        if (bytes > mb->total || used > mb->total - bytes) {
            snprintf(err, errlen,
                     "requests in flight hold %.1f MiB of memory_budget "
                     "(%.1f MiB); this one needs %.1f MiB more; retry later",
                     mib(used), mib(mb->total), mib(bytes));
            return RNND_ERR_BUSY;
        }
    } while (!atomic_compare_exchange_weak(&mb->used, &used, used + bytes));
    h->held += bytes;
    return 0;
}

void rnnd_mem_uncharge(rnnd_memhold *h, size_t bytes)
{
    if (!h->mb)
        return;
    if (bytes > h->held)
        bytes = h->held;
    atomic_fetch_sub(&h->mb->used, bytes);
    h->held -= bytes;
}

void rnnd_mem_release(rnnd_memhold *h) { rnnd_mem_uncharge(h, h->held); }

/* ---- metered JSON decoding --------------------------------------------------------------
 * jansson allocates through one pair of process-wide functions. Ours pass through unless the
 * calling thread is inside rnnd_mem_json_load(), whose meter then counts the blocks live
 * (malloc_usable_size plus the allocator's header) and charges the hold in steps as the
 * count grows; a charge that fails makes that allocation fail, and jansson gives up. */

#define METER_STEP ((size_t)64 << 10) /* charge in steps: fewer atomics on the budget */
#define BLOCK_HEADER sizeof(size_t)   /* glibc's per-block overhead */

typedef struct meter {
    rnnd_memhold *h;
    size_t live;    /* bytes of jansson's blocks alive now */
    size_t charged; /* charged to H for this parse so far */
    int failed;     /* the status of a failed charge */
    char err[256];
} meter;

static _Thread_local meter *cur_meter;

static void *metered_malloc(size_t n)
{
    meter *m = cur_meter;
    if (!m)
        return malloc(n);
    if (m->failed)
        return NULL;
    void *p = malloc(n);
    if (!p)
        return NULL;
    m->live += malloc_usable_size(p) + BLOCK_HEADER;
    if (m->live > m->charged) {
        size_t step = m->live - m->charged;
        step = step < METER_STEP ? METER_STEP : step;
        int rc = rnnd_mem_charge(m->h, step, m->err, sizeof m->err);
        if (rc) {
            m->live -= malloc_usable_size(p) + BLOCK_HEADER;
            free(p);
            m->failed = rc;
            return NULL;
        }
        m->charged += step;
    }
    return p;
}

static void metered_free(void *p)
{
    meter *m = cur_meter;
    if (m && p) {
        size_t n = malloc_usable_size(p) + BLOCK_HEADER;
        m->live = n < m->live ? m->live - n : 0;
    }
    free(p);
}

static void install_hooks(void) { json_set_alloc_funcs(metered_malloc, metered_free); }

int rnnd_mem_json_load(rnnd_memhold *h, const char *data, size_t len, json_t **out, char *err,
                       size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_hooks);

    meter m = {.h = h};
    json_error_t jerr;
    cur_meter = &m;
    *out = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    cur_meter = NULL;
    if (m.failed) {
        json_decref(*out);
        *out = NULL;
        rnnd_mem_uncharge(h, m.charged);
        snprintf(err, errlen, "%s", m.err);
        return m.failed;
    }
    if (!*out) {
        rnnd_mem_uncharge(h, m.charged);
        snprintf(err, errlen, "line %d, column %d: %s", jerr.line, jerr.column,
                 rnnd_json_error_text(jerr.text));
        return RNND_ERR_INVALID;
    }
    /* keep what the document holds; the parser's own buffers are gone */
    if (m.charged > m.live)
        rnnd_mem_uncharge(h, m.charged - m.live);
    return 0;
}
