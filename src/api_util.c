/* Pieces shared by the API handlers: field checks and session lookups with their replies. */
#include <string.h>

#include "api.h"
#include "cluster.h"

/* Refuse any field of BODY not in ALLOWED (NULL-terminated). */
int rnnd_api_check_fields(rnnd_req *r, json_t *body, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val) {
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = !strcmp(key, allowed[i]);
        if (!ok) {
            char list[256] = "";
            for (size_t i = 0; allowed[i]; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, allowed[i], sizeof list - strlen(list) - 1);
            }
            rnnd_reply_error(r, RNND_E_INVALID_REQUEST, "unknown field \"%.64s\" (allowed: %s)",
                             key, list);
            return -1;
        }
    }
    return 0;
}

/* Look the {id} of the path up, or reply 404/410. Another key's session, live or gone,
 * answers 404 exactly as an id that never existed. */
rnnd_session *rnnd_api_session_lookup(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    if (app->cluster)
        return rnnd_cluster_lookup(r);
    const char *id = rnnd_req_param(r, 0);
    rnnd_session *s = NULL;
    uint64_t owner = rnnd_req_owner(r);
    switch (rnnd_session_get_as(app->sessions, id, rnnd_req_admin(r) ? NULL : &owner, &s)) {
    case RNND_SESSION_FOUND: return s;
    case RNND_SESSION_EXPIRED:
        rnnd_reply_error(r, RNND_E_GONE,
                         "session %s expired (idle past its ttl); its state is "
                         "lost",
                         id);
        return NULL;
    case RNND_SESSION_EVICTED:
        rnnd_reply_error(r, RNND_E_GONE, "session %s was evicted to make room; its state is lost",
                         id);
        return NULL;
    default: rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", id); return NULL;
    }
}

/* The reply for a job refused because its session left the table meanwhile. */
void rnnd_api_reply_left(rnnd_req *r, int why)
{
    if (why == RNND_SESSION_EXPIRED || why == RNND_SESSION_EVICTED)
        rnnd_reply_error(r, RNND_E_GONE, "session %s %s; its state is lost", rnnd_req_param(r, 0),
                         why == RNND_SESSION_EXPIRED ? "expired" : "was evicted");
    else
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no session %.64s", rnnd_req_param(r, 0));
}

static void release_pending(void *arg) { atomic_fetch_sub(&((rnnd_app *)arg)->pending, 1); }

int rnnd_api_admit(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    long max = (long)app->cfg->max_pending_requests;
    if (atomic_fetch_add(&app->pending, 1) >= max) {
        atomic_fetch_sub(&app->pending, 1);
        rnnd_reply_error(r, RNND_E_OVERLOADED,
                         "%ld compute requests are queued or running "
                         "(max_pending_requests); retry later",
                         max);
        return -1;
    }
    rnnd_req_hold(r, release_pending, app);
    return 0;
}

static int admit_memory(void *ctx, size_t bytes, char *err, size_t errlen)
{
    return rnnd_mem_charge(ctx, bytes, err, errlen);
}

int rnnd_api_charge(rnnd_req *r, size_t bytes)
{
    char err[256];
    int rc = rnnd_mem_charge(rnnd_req_mem(r), bytes, err, sizeof err);
    if (rc)
        rnnd_reply_error(r, rnnd_errcode_of(rc), "%s", err);
    return rc ? -1 : 0;
}

void rnnd_api_infer_limits(rnnd_req *r, rnnd_infer_limits *out)
{
    *out = rnnd_req_app(r)->infer_limits;
    out->admit = admit_memory;
    out->admit_ctx = rnnd_req_mem(r);
}

rnnd_entry *rnnd_api_model(rnnd_req *r, const char *name)
{
    rnnd_entry *e = rnnd_catalog_get(&rnnd_req_app(r)->models, name);
    if (!e) {
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no model named \"%.64s\"", name);
        return NULL;
    }
    rnnd_req_hold(r, rnnd_entry_unref_v, e);
    return e;
}

int rnnd_api_session_new(rnnd_req *r, rnnd_entry *e, rnnd_session **out, char *err, size_t errlen)
{
    rnnd_session_init si = {.model = e,
                            .state_floats = e->state_floats,
                            .owner = rnnd_req_owner(r)};
    return rnnd_session_create(rnnd_req_app(r)->sessions, &si, out, err, errlen);
}

void rnnd_api_count_infer(rnnd_req *r, const rnnd_infer_req *req)
{
    rnnd_app *app = rnnd_req_app(r);
    atomic_fetch_add(&app->metrics.infer_requests, 1);
    atomic_fetch_add(&app->metrics.infer_sequences, rnnd_infer_req_sequences(req));
    atomic_fetch_add(&app->metrics.infer_steps, rnnd_infer_req_steps(req));
}
