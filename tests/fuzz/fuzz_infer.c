/* Fuzz target: the infer request decoder (docs/api.md, section 2).
 *
 * The input is a request body. It is decoded by rnnd_infer_load (duplicate keys refused),
 * then validated against a text model (rnnd_infer_parse_text with its tokenizer, and
 * rnnd_infer_parse) and a vector model; a request that passes is computed and encoded, and
 * the response must be JSON that decodes again. Limits are small so that one input stays
 * cheap, and they must hold. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rnnd/buf.h"
#include "rnnd/infer.h"
#include "rnnd/status.h"

#define MAX_SEQ 8
#define MAX_STEPS 64
#define MAX_TOTAL 256

typedef struct fz_ctx {
    rnnd_model *tok_model, *vec_model;
    rnnd_net *tok_net, *vec_net;
    rnnd_tokenizer *tok;
} fz_ctx;

static fz_ctx *ctx(void)
{
    static fz_ctx c;
    if (!c.tok_net) {
        char err[256];
        c.tok_model = fz_model(FZ_ARCH_TOK, 1);
        c.vec_model = fz_model(FZ_ARCH_VEC, 2);
        c.tok_net = fz_net(c.tok_model);
        c.vec_net = fz_net(c.vec_model);
        FZ_CHECK(rnnd_tokenizer_new(c.tok_model, &c.tok, err, sizeof err) == 0,
                 "tokenizer of the text model");
    }
    return &c;
}

/* Run and encode a parsed request; the response must decode as JSON. */
static void run(const rnnd_net *net, rnnd_infer_req *req)
{
    char err[512];
    FZ_CHECK(rnnd_infer_req_sequences(req) >= 1 && rnnd_infer_req_sequences(req) <= MAX_SEQ,
             "sequence limit not enforced");
    FZ_CHECK(rnnd_infer_req_steps(req) <= MAX_TOTAL, "total step limit not enforced");
    int rc = rnnd_infer_run(net, req, err, sizeof err);
    FZ_CHECK(rc == 0 || rc == RNND_ERR_NUMERIC || rc == RNND_ERR_NOMEM,
             "a valid request failed to run");
    FZ_CHECK(rnnd_infer_req_status(req, err, sizeof err) == rc, "request status differs");
    if (rc)
        return;
    rnnd_buf out;
    rnnd_buf_init(&out);
    rnnd_infer_encode(net, req, "fuzz", &out);
    if (!rnnd_buf_failed(&out)) {
        json_t *back = NULL;
        FZ_CHECK(rnnd_infer_load(out.data, out.len, &back, err, sizeof err) == 0,
                 "the response is not valid JSON");
        FZ_CHECK(json_is_object(back) && json_object_get(back, "outputs"),
                 "the response has no outputs");
        json_decref(back);
    }
    rnnd_buf_free(&out);
}

static void parse_run(const rnnd_net *net, const rnnd_tokenizer *tok, int text, json_t *body)
{
    static const rnnd_infer_limits lim = {MAX_SEQ, MAX_STEPS, MAX_TOTAL, NULL, NULL};
    char err[512] = "";
    rnnd_infer_req *req = NULL;
    int rc = text ? rnnd_infer_parse_text(net, tok, body, &lim, &req, err, sizeof err)
                  : rnnd_infer_parse(net, body, &lim, &req, err, sizeof err);
    FZ_CHECK((rc == 0) == (req != NULL), "parse status and request disagree");
    if (rc) {
        FZ_CHECK(rc == RNND_ERR_INVALID || rc == RNND_ERR_LIMIT || rc == RNND_ERR_NOMEM,
                 "unexpected parse status");
        FZ_CHECK(err[0] != '\0', "a refusal without a message");
        return;
    }
    run(net, req);
    rnnd_infer_req_free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_ctx *c = ctx();
    char err[512] = "";
    json_t *body = NULL;
    int rc = rnnd_infer_load((const char *)data, size, &body, err, sizeof err);
    FZ_CHECK((rc == 0) == (body != NULL), "load status and value disagree");
    if (rc) {
        FZ_CHECK(rc == RNND_ERR_INVALID || rc == RNND_ERR_NOMEM, "unexpected load status");
        FZ_CHECK(err[0] != '\0', "a refusal without a message");
        return 0;
    }
    parse_run(c->tok_net, c->tok, 1, body);
    parse_run(c->tok_net, NULL, 1, body);
    parse_run(c->tok_net, NULL, 0, body);
    parse_run(c->vec_net, NULL, 0, body);
    json_decref(body);
    return 0;
}
