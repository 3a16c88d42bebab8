/* The API handlers, one file per resource (api_models.c, api_infer.c, api_sessions.c,
 * api_generate.c, api_health.c, api_web.c; the KServe v2 ones in api_v2*.c: api_v2.c, api_v2_config.c,
 * api_v2_binary.c, api_v2_generate.c), with the helpers they share in api_util.c, routed by
 * http.c. Each
 * runs on a request thread with the body decoded and either replies at once or defers (see
 * http.h). */
#ifndef RNND_API_H
#define RNND_API_H

#include "app.h"
#include "http.h"

/* The built-in web page (api_web.c; its files are web_assets.h's): 404 when web_ui is off. */
void rnnd_api_web_index(rnnd_req *r); /* GET /            */
void rnnd_api_web_js(rnnd_req *r);    /* GET /ui/app.js   */
void rnnd_api_web_css(rnnd_req *r);   /* GET /ui/app.css  */

void rnnd_api_models_list(rnnd_req *r); /* GET  /v1/models */
void rnnd_api_model_get(rnnd_req *r);   /* GET  /v1/models/{model} */
void rnnd_api_infer(rnnd_req *r);       /* POST /v1/models/{model}/infer */

void rnnd_api_sessions_create(rnnd_req *r); /* POST   /v1/sessions */
void rnnd_api_sessions_list(rnnd_req *r);   /* GET    /v1/sessions */
void rnnd_api_session_get(rnnd_req *r);     /* GET    /v1/sessions/{id} */
void rnnd_api_session_delete(rnnd_req *r);  /* DELETE /v1/sessions/{id} */
void rnnd_api_session_step(rnnd_req *r);    /* POST   /v1/sessions/{id}/step */
/* The same for steps already decoded (a WebSocket's binary frame, checked against the
 * session's model: width and token range): SC's arrays are taken or freed. */
struct rnnd_step_scan;
void rnnd_api_session_step_scanned(rnnd_req *r, struct rnnd_step_scan *sc);
/* The step body of LEN bytes at BODY through the scanner (rnnd/step_scan.h) alone: returns 0
 * once the step is queued or answered, 1 (nothing done) when the scanner declines it and the
 * caller must take the JSON path, which gives the same result and reports any error. */
int rnnd_api_session_step_text(rnnd_req *r, const char *body, size_t len);
void rnnd_api_session_reset(rnnd_req *r); /* POST   /v1/sessions/{id}/reset */
void rnnd_api_session_fork(rnnd_req *r);  /* POST   /v1/sessions/{id}/fork */
void rnnd_api_state_get(rnnd_req *r);     /* GET    /v1/sessions/{id}/state */
void rnnd_api_state_put(rnnd_req *r);     /* PUT    /v1/sessions/{id}/state */

void rnnd_api_session_generate(rnnd_req *r); /* POST /v1/sessions/{id}/generate */
void rnnd_api_session_ws(rnnd_req *r);       /* GET  /v1/sessions/{id}/ws (ws_handshake.c) */
void rnnd_api_model_generate(rnnd_req *r);   /* POST /v1/models/{model}/generate */

void rnnd_api_healthz(rnnd_req *r); /* GET /healthz */
void rnnd_api_readyz(rnnd_req *r);  /* GET /readyz */
void rnnd_api_metrics(rnnd_req *r); /* GET /metrics */

/* ---- shared by the handlers (api_util.c) ---- */
#include "session.h"

/* Refuse any field of BODY not in ALLOWED (NULL-terminated): replies 400, returns -1. */
int rnnd_api_check_fields(rnnd_req *r, json_t *body, const char *const *allowed);
/* A fresh session of E (zero state, the table's ttl) owned by R's API key: rnnd_session_create's
 * status, *OUT one reference for the caller. Replies nothing. */
int rnnd_api_session_new(rnnd_req *r, rnnd_entry *e, rnnd_session **out, char *err, size_t errlen);
/* The session named by the path's first parameter (one reference), or NULL after replying
 * 404 / 410. */
rnnd_session *rnnd_api_session_lookup(rnnd_req *r);
/* Admit a compute request (step, infer, generate) under max_pending_requests until it is
 * freed, or reply 429 overloaded (with Retry-After) and return -1. */
int rnnd_api_admit(rnnd_req *r);

/* The daemon's infer limits, with the request's memory budget as their admit callback: a
 * parsed request is charged to R's hold before its arrays are allocated (membudget.h). */
void rnnd_api_infer_limits(rnnd_req *r, rnnd_infer_limits *out);
/* Count one answered infer request (v1 and v2 alike) in R's metrics. */
void rnnd_api_count_infer(rnnd_req *r, const rnnd_infer_req *req);
/* Charge BYTES, what the request will hold until its reply is sent, to R's memory hold
 * (membudget.h) before allocating it, or reply 413 limit_exceeded / 429 overloaded and
 * return -1. The hold is given back when the request is freed. */
int rnnd_api_charge(rnnd_req *r, size_t bytes);
/* The current version of model NAME, kept alive until the request is freed (a reload may
 * retire it meanwhile), or NULL after replying 404. */
rnnd_entry *rnnd_api_model(rnnd_req *r, const char *name);
/* Reply for a job refused because its session left the table (rnnd_session_submit's WHY). */
void rnnd_api_reply_left(rnnd_req *r, int why);

/* (api_generate.c) A token sequence given as text (a string, encoded with E's tokenizer) or
 * as a list of ids: 1 to max_steps_per_request ids in a new array (*IDS, *N). NAME is the
 * field name for messages. Replies 400/413 and returns -1 on error. */
int rnnd_api_tokens(rnnd_req *r, const rnnd_entry *e, const json_t *v, const char *name,
                    int32_t **ids, size_t *n);
/* The fewest ids that V, given to rnnd_api_tokens, can give when it gives any: a charge for
 * that many goes before the text is encoded, so a request the memory budget refuses is not
 * tokenized first (trial 34: 4,000 characters a step, refused 429 some 4,000 times a second,
 * were tokenized on the WebSocket event loop first). 0 when V is not a string of E's
 * tokenizer, or its fewest ids are over max_steps_per_request (rnnd_api_tokens refuses it). */
size_t rnnd_api_least_tokens(rnnd_req *r, const rnnd_entry *e, const json_t *v);
/* The "generate" field of POST /v1/sessions (NULL V: none): sampling defaults for the
 * session's generations, in a new block (*OUT, NULL when V is NULL). Replies on error. */
#include "generate.h"
int rnnd_api_gen_defaults(rnnd_req *r, const rnnd_entry *e, json_t *v, rnnd_gen_params **out);

/* ---- the KServe v2 / Triton protocol (api_v2*.c; docs/v2.md) ---- */
/* What GET /v2 lists in "extensions" (JSON strings). */
#define RNND_V2_EXTENSIONS \
    "\"sequence\",\"sequence(string_id)\",\"generate\",\"model_configuration\"," \
    "\"statistics\",\"model_repository\",\"binary_tensor_data\""
/* The tensors' names: every model has INPUT and OUTPUT; a model with a tokenizer also takes
 * its text as the BYTES input TEXT (or as BYTES under INPUT). */
#define RNND_V2_INPUT "INPUT"
#define RNND_V2_TEXT "TEXT"
#define RNND_V2_OUTPUT "OUTPUT"

void rnnd_api_v2_server_meta(rnnd_req *r);     /* GET  /v2 */
void rnnd_api_v2_live(rnnd_req *r);            /* GET  /v2/health/live */
void rnnd_api_v2_ready(rnnd_req *r);           /* GET  /v2/health/ready */
void rnnd_api_v2_model_meta(rnnd_req *r);      /* GET  /v2/models/{m}[/versions/{v}] */
void rnnd_api_v2_model_ready(rnnd_req *r);     /* GET  /v2/models/{m}[/versions/{v}]/ready */
void rnnd_api_v2_infer(rnnd_req *r);           /* POST /v2/models/{m}[/versions/{v}]/infer */
void rnnd_api_v2_generate(rnnd_req *r);        /* POST .../generate */
void rnnd_api_v2_generate_stream(rnnd_req *r); /* POST .../generate_stream (SSE) */
/* api_v2_config.c: what Triton clients ask about models besides metadata */
void rnnd_api_v2_model_config(rnnd_req *r);     /* GET  /v2/models/{m}[/versions/{v}]/config */
void rnnd_api_v2_model_stats(rnnd_req *r);      /* GET  /v2/models/{m}[/versions/{v}]/stats */
void rnnd_api_v2_stats_all(rnnd_req *r);        /* GET  /v2/models/stats */
void rnnd_api_v2_repository_index(rnnd_req *r); /* POST /v2/repository/index */

/* api_v2_binary.c: Triton's binary tensor data, little-endian. The header's value as a byte
 * count (decimal digits only): 0 or -1. */
#define RNND_V2_HEADER_LENGTH "Inference-Header-Content-Length"
int rnnd_v2_header_length(const char *v, size_t *out);
/* Where the JSON object that LEN bytes at S begin with ends (past its '}' and the blanks after
 * it): the bytes of binary tensor data sent without the header begin there. 0 when S does not
 * begin with a whole object (by its braces and strings alone: the decoder judges the rest). */
size_t rnnd_v2_json_end(const char *s, size_t len);
/* N float32 from SRC (4*N bytes) into OUT; -1 with *BAD the index of a NaN or Inf. */
int rnnd_v2_binary_floats(const char *src, size_t n, float *out, size_t *bad);
/* N token ids, int32 or (WIDE) int64, from SRC into OUT; -1 with *BAD and *BADVAL for an id
 * outside [0, VOCAB). */
int rnnd_v2_binary_tokens(const char *src, size_t n, int wide, int vocab, int32_t *out, size_t *bad,
                          int64_t *badval);
/* Append N floats to B as little-endian float32. */
void rnnd_v2_binary_append(rnnd_buf *b, const float *x, size_t n);

/* rnnd_api_charge() for the v2 routes: Triton's 400 (past max_request_memory) or 503 with
 * Retry-After (memory_budget spent for now), as v2 infer answers the same refusals. */
int rnnd_v2_charge(rnnd_req *r, size_t bytes);
/* The model of the path ({m}, and {v} when the route has one), or NULL after replying 400
 * as Triton does for an unknown model or version. */
rnnd_entry *rnnd_v2_model(rnnd_req *r);

#endif
