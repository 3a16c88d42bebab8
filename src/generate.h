/* Text generation on a session: feed the prompt, then repeatedly choose the next token from
 * the last output (sample.h) and feed it back, one step at a time, until max_tokens, a stop
 * string, cancellation or an error. Every step goes through the model's batcher as an
 * ordinary step job, so concurrent generations and plain steps share batches.
 *
 * The engine knows nothing of HTTP: the caller passes a sink whose callbacks receive the
 * tokens and the end (v1 JSON or SSE in api_generate.c, the v2 forms in api_v2.c).
 *
 * State semantics: every token the sink receives is fed into the session before the next
 * one is chosen, and the last one is fed before done() is called, so after a generation the
 * session has consumed the prompt and all of the completion (stop string included) and a
 * later generate continues the text. A cancelled or failed generation leaves the session at
 * the last completed step (steps in the result). */
#ifndef RNND_GENERATE_H
#define RNND_GENERATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "registry.h"
#include "rnnd/errcode.h"
#include "rnnd/sample.h"
#include "session.h"

#define RNND_GEN_MAX_STOP 4    /* stop strings per request */
#define RNND_GEN_STOP_BYTES 64 /* bytes per stop string */

typedef struct rnnd_gen_params {
    int64_t max_tokens; /* >= 1 */
    rnnd_sampling sampling;
    int has_seed; /* else a random seed is drawn (and reported) */
    uint64_t seed;
    size_t n_stop;
    char stop[RNND_GEN_MAX_STOP][RNND_GEN_STOP_BYTES + 1];
} rnnd_gen_params;

/* The built-in defaults: max_tokens 64, temperature 1, top_k 0, top_p 1, no seed, no stop. */
void rnnd_gen_params_default(rnnd_gen_params *p);

/* The checks of each generation field, shared by the API (rnnd_gen_params_parse) and the
 * snapshot restore (rnnd_gen_params_check), so a value is accepted from a file exactly when a
 * request could have set it. Each returns 0 or RNND_ERR_INVALID with ERR naming the field;
 * max_tokens above MAX is RNND_ERR_LIMIT (the setting max_generate_tokens). */
int rnnd_gen_max_tokens_check(int64_t v, int64_t max, char *err, size_t errlen);
int rnnd_gen_seed_check(uint64_t seed, char *err, size_t errlen);
int rnnd_gen_stop_check(const char *s, size_t len, size_t index, char *err, size_t errlen);

/* Every field of P (max_tokens against MAX_TOKENS, the sampling, the seed, the stop strings)
 * with the checks above. Returns 0, RNND_ERR_LIMIT (max_tokens only) or RNND_ERR_INVALID. */
int rnnd_gen_params_check(const rnnd_gen_params *p, int64_t max_tokens, char *err, size_t errlen);

/* Read the sampling fields of OBJ ("max_tokens", "temperature", "top_k", "top_p", "seed",
 * "stop"; others are ignored: the caller checks unknown fields) over *P, which holds the
 * defaults on entry. max_tokens must be 1..MAX_TOKENS; seed an integer 0..2^64-1; stop a
 * string or a list of up to RNND_GEN_MAX_STOP non-empty strings. Returns 0 or
 * RNND_ERR_INVALID / RNND_ERR_LIMIT (max_tokens) with ERR naming the field. */
int rnnd_gen_params_parse(const json_t *obj, int64_t max_tokens, rnnd_gen_params *p, char *err,
                          size_t errlen);

enum rnnd_gen_finish {
    RNND_GEN_LENGTH = 0, /* max_tokens reached */
    RNND_GEN_STOP,       /* a stop string was produced */
    RNND_GEN_CANCELLED,  /* the sink said the client left */
    RNND_GEN_ERROR,      /* see code/message */
};

typedef struct rnnd_gen_result {
    int finish;             /* enum rnnd_gen_finish */
    enum rnnd_errcode code; /* RNND_GEN_ERROR: the API error code (docs/api.md) */
    char message[256];
    size_t prompt_tokens;     /* fed */
    size_t completion_tokens; /* chosen and fed */
    uint64_t steps;           /* the session's step count at the end */
    uint64_t seed;            /* the seed used */
    int stop_index;           /* RNND_GEN_STOP: which stop string, else -1 */
    const char *text;         /* the whole completion as UTF-8 (NUL-terminated) */
    size_t text_len;
    const int32_t *tokens; /* completion_tokens ids */
} rnnd_gen_result;

/* Callbacks, on worker threads (never two at once for one generation, never under a lock of
 * ours). token() receives each chosen token with the text it completes (valid UTF-8, possibly
 * empty when a character is still incomplete), its index (0-based) in the completion, and
 * STEP, the session's step count once it has been fed.
 * cancelled() is polled before every step; nonzero stops the generation. done() comes
 * exactly once, last; the result and its pointers are valid only during the call.
 * gone() (may be NULL) is asked before the first step and before each token is chosen:
 * nonzero means the session left this node (cluster mode: handed over, or dropped, while
 * the generation waited in its queue), so this copy's steps belong to no session; the
 * generation then ends at once with RNND_E_UNAVAILABLE (RNND_GEN_MOVED_MSG). */
typedef struct rnnd_gen_sink {
    void (*token)(void *arg, int32_t id, const char *text, size_t len, size_t index, uint64_t step);
    int (*cancelled)(void *arg);
    void (*done)(void *arg, const rnnd_gen_result *res);
    void *arg;
    int (*gone)(void *arg);
} rnnd_gen_sink;

#define RNND_GEN_MOVED_MSG \
    "the session moved to another node while this request waited; its steps were not kept; " \
    "retry"

/* The longest piece of E's tokenizer in bytes (1 without one). Walks the vocabulary. */
size_t rnnd_gen_max_piece(const rnnd_entry *e);

/* What a generation of up to MAX_TOKENS tokens after N_PROMPT prompt tokens holds until its
 * reply is sent (membudget.h): the engine's token ids, output row, sampler and text, and the
 * reply with TOKEN_REPLY bytes of frame per token beside the token's escaped text (an SSE
 * event's keys, or an id in a JSON list). Saturates at SIZE_MAX. */
size_t rnnd_gen_bytes(const rnnd_entry *e, size_t n_prompt, int64_t max_tokens, size_t token_reply);

/* Queue a generation on session S (a session of ENTRY's model; the engine takes its own reference),
 * counted in METRICS (generations, tokens) with PROMPT (N_PROMPT >= 1 ids, copied). Returns
 * RNND_SESSION_FOUND (0) when queued: the sink gets done() later; or the rnnd_session_submit()
 * reason S left the table, or -1 when out of memory (ERR says so): then no callback is made. */
int rnnd_generate(rnnd_metrics *metrics, rnnd_session *s, const int32_t *prompt, size_t n_prompt,
                  const rnnd_gen_params *p, const rnnd_gen_sink *sink, char *err, size_t errlen);

#endif
