/* The stable API error codes (docs/api.md "Errors"), from one list: each code's name in
 * {"error":{"code":...}}, and two HTTP statuses. The first is the one every reply of
 * rnnd_reply_error() carries: all v1 errors, and the HTTP layer's refusals on any route,
 * /v2 included (401, 404, 405, 413, 503 while draining; docs/v2.md "Errors"). The second is
 * the one the KServe v2 handlers answer with through rnnd_v2_error(), as Triton does (400 for
 * a bad request, an unknown model or a limit, 503 for "retry later", 500 for the server's own
 * fault, including a model that fails to run). A code is an enum constant, so a typo fails to
 * compile instead of becoming a 500. */
#ifndef RNND_ERRCODE_H
#define RNND_ERRCODE_H

#include "rnnd/buf.h"

/* X(ENUM_SUFFIX, name, HTTP status, v2 handlers' HTTP status) */
#define RNND_ERRCODES(X) \
    X(INVALID_JSON, "invalid_json", 400, 400) \
    X(INVALID_REQUEST, "invalid_request", 400, 400) \
    X(NUMERIC_ERROR, "numeric_error", 400, 400) \
    X(UNAUTHORIZED, "unauthorized", 401, 400) \
    X(FORBIDDEN, "forbidden", 403, 400) \
    X(NOT_FOUND, "not_found", 404, 400) \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405, 400) \
    X(UNSUPPORTED, "unsupported", 409, 400) \
    X(CONFLICT, "conflict", 409, 400) \
    X(GONE, "gone", 410, 400) \
    X(LIMIT_EXCEEDED, "limit_exceeded", 413, 400) \
    X(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415, 400) \
    X(OVERLOADED, "overloaded", 429, 503) \
    X(INTERNAL, "internal", 500, 500) \
    X(MODEL_ERROR, "model_error", 503, 500) \
    X(OUT_OF_MEMORY, "out_of_memory", 503, 503) \
    X(UNAVAILABLE, "unavailable", 503, 503) \
    X(NO_MODELS, "no_models", 503, 503)

enum rnnd_errcode {
#define RNND_ERRCODE_ENUM(e, name, v1, v2) RNND_E_##e,
    RNND_ERRCODES(RNND_ERRCODE_ENUM)
#undef RNND_ERRCODE_ENUM
        RNND_E_COUNT
};

/* Append the v1 error body {"error":{"code":CODE's name,"message":MESSAGE}} to OUT. */
void rnnd_errcode_json(rnnd_buf *out, enum rnnd_errcode code, const char *message);
/* Room for rnnd_errcode_oom_json()'s body and its NUL. */
#define RNND_ERRCODE_OOM_CAP 96
/* The v1 body of out_of_memory, {"error":{"code":"out_of_memory","message":"out of memory"}},
 * into OUT (CAP bytes, RNND_ERRCODE_OOM_CAP suffice) without allocating: for the replies made
 * when memory ran out. Returns its length. */
size_t rnnd_errcode_oom_json(char *out, size_t cap);
/* The code's name ("invalid_request"); "internal" for a value outside the list. */
const char *rnnd_errcode_name(enum rnnd_errcode e);
/* The status rnnd_reply_error() answers E with; 500 outside the list. */
unsigned rnnd_errcode_http(enum rnnd_errcode e);
/* The status the KServe v2 handlers answer E with (rnnd_v2_error); 500 outside the list. */
unsigned rnnd_errcode_v2(enum rnnd_errcode e);
/* The code for a status of rnnd/status.h (RNND_ERR_INVALID: invalid_request, ...). */
enum rnnd_errcode rnnd_errcode_of(int status);

#endif
