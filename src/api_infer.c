/* POST /v1/models/{model}/infer: the infer contract (docs/api.md), parsed on the request
 * thread, computed on a worker together with other waiting requests for the model (batcher.h),
 * encoded there, and sent by resuming the connection. */
#include <stdio.h>
#include <stdlib.h>

#include "api.h"
#include "rnnd/infer.h"
#include "rnnd/status.h"

struct infer_task {
    rnnd_infer_job job; /* first member */
    rnnd_req *r;
    const rnnd_entry *e;
};

static void infer_free(void *arg)
{
    struct infer_task *t = arg;
    rnnd_infer_req_free(t->job.req);
    free(t);
}

/* On the worker that ran the request's batch (or on the stopping thread). */
static void infer_finish(rnnd_infer_job *job, size_t batch_requests)
{
    (void)batch_requests;
    struct infer_task *t = (struct infer_task *)job;
    char err[512] = "";
    int rc = job->stopped ? 0 : rnnd_infer_req_status(job->req, err, sizeof err);
    if (job->stopped) {
        rnnd_reply_error(t->r, RNND_E_UNAVAILABLE, "the server is shutting down");
    } else if (rc) {
        rnnd_reply_error(t->r, rnnd_errcode_of(rc), "%s", err);
    } else {
        rnnd_buf b;
        rnnd_buf_init(&b);
        if (rnnd_infer_encode(t->e->net, job->req, t->e->name, &b) != 0) {
            rnnd_buf_free(&b);
            rnnd_reply_error(t->r, RNND_E_INTERNAL, "the request was encoded before it ran");
        } else if (b.nonfinite) {
            rnnd_buf_free(&b);
            rnnd_reply_error(t->r, RNND_E_NUMERIC_ERROR, "the computation produced NaN or Inf");
        } else {
            rnnd_reply(t->r, 200, &b);
        }
        rnnd_api_count_infer(t->r, job->req);
    }
    rnnd_req_complete(t->r);
}

void rnnd_api_infer(rnnd_req *r)
{
    if (rnnd_api_admit(r))
        return;
    const rnnd_entry *e = rnnd_api_model(r, rnnd_req_param(r, 0));
    if (!e)
        return;
    json_t *body = rnnd_req_body(r);
    if (!body) {
        rnnd_reply_error(r, RNND_E_INVALID_REQUEST,
                         "the request body is empty: expected "
                         "{\"inputs\": [SEQUENCE, ...]}");
        return;
    }
    char err[512] = "";
    rnnd_infer_req *ir = NULL;
    rnnd_infer_limits lim;
    rnnd_api_infer_limits(r, &lim);
    int rc = rnnd_infer_parse_text(e->net, e->tokenizer, body, &lim, &ir, err, sizeof err);
    if (rc) {
        rnnd_reply_error(r, rnnd_errcode_of(rc), "%s", err);
        return;
    }
    struct infer_task *t = calloc(1, sizeof *t);
    if (!t) {
        rnnd_infer_req_free(ir);
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    t->job.req = ir;
    t->job.finish = infer_finish;
    t->r = r;
    t->e = e;
    rnnd_req_on_free(r, infer_free, t);
    rnnd_req_defer(r);
    /* the model's batcher runs it together with the model's other waiting infer requests */
    if (rnnd_batcher_infer(e->batcher, &t->job)) {
        rnnd_reply_error(r, RNND_E_UNAVAILABLE, "the server is shutting down");
        rnnd_req_complete(r);
    }
}
