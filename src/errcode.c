/* The API error codes' table, expanded from RNND_ERRCODES. */
#include "config.h"
#include "rnnd/errcode.h"

#include <stdio.h>

#include "rnnd/status.h"

static const struct {
    const char *name;
    unsigned v1, v2;
} table[RNND_E_COUNT] = {
#define RNND_ERRCODE_ROW(e, name, v1, v2) [RNND_E_##e] = {name, v1, v2},
    RNND_ERRCODES(RNND_ERRCODE_ROW)
#undef RNND_ERRCODE_ROW
};

static int known(enum rnnd_errcode e) { return (unsigned)e < RNND_E_COUNT; }

const char *rnnd_errcode_name(enum rnnd_errcode e)
{
    return table[known(e) ? e : RNND_E_INTERNAL].name;
}

unsigned rnnd_errcode_http(enum rnnd_errcode e) { return known(e) ? table[e].v1 : 500; }

unsigned rnnd_errcode_v2(enum rnnd_errcode e) { return known(e) ? table[e].v2 : 500; }

void rnnd_errcode_json(rnnd_buf *out, enum rnnd_errcode code, const char *message)
{
    rnnd_buf_puts(out, "{\"error\":{\"code\":");
    rnnd_buf_json_string(out, rnnd_errcode_name(code));
    rnnd_buf_puts(out, ",\"message\":");
    rnnd_buf_json_string(out, message ? message : "");
    rnnd_buf_puts(out, "}}");
}

size_t rnnd_errcode_oom_json(char *out, size_t cap)
{
    /* the name is one of the list's literals: nothing in it to escape */
    int n = snprintf(out, cap, "{\"error\":{\"code\":\"%s\",\"message\":\"out of memory\"}}",
                     table[RNND_E_OUT_OF_MEMORY].name);
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap ? cap - 1 : 0;
}

enum rnnd_errcode rnnd_errcode_of(int status)
{
    switch (status) {
    case RNND_ERR_INVALID: return RNND_E_INVALID_REQUEST;
    case RNND_ERR_LIMIT: return RNND_E_LIMIT_EXCEEDED;
    case RNND_ERR_UNSUPPORTED: return RNND_E_UNSUPPORTED;
    case RNND_ERR_CONFLICT: return RNND_E_CONFLICT;
    case RNND_ERR_NUMERIC: return RNND_E_NUMERIC_ERROR;
    case RNND_ERR_IO:
    case RNND_ERR_FORMAT: return RNND_E_MODEL_ERROR;
    case RNND_ERR_NOMEM: return RNND_E_OUT_OF_MEMORY;
    case RNND_ERR_BUSY: return RNND_E_OVERLOADED;
    case RNND_ERR_STOPPED: return RNND_E_UNAVAILABLE;
    default: return RNND_E_INTERNAL;
    }
}
