/* The infer contract (docs/api.md): a JSON request for a batch of whole sequences, validated
 * into flat arrays, computed by rnnd_net_forward(), and encoded as a JSON response.
 *
 * Three separate phases so the daemon can parse on a request thread, compute on a worker and
 * encode on either: rnnd_infer_parse() -> rnnd_infer_run() -> rnnd_infer_encode(). */
#ifndef RNND_INFER_H
#define RNND_INFER_H

#include <stddef.h>
#include <jansson.h>
#include "rnnd/rnn.h"
#include "rnnd/buf.h"
#include "rnnd/tokenizer.h"

typedef struct rnnd_infer_limits {
    size_t max_sequences;   /* 0 = unlimited */
    size_t max_steps;       /* per sequence; 0 = unlimited */
    size_t max_total_steps; /* over the batch; 0 = unlimited */
    /* Called once the request's shape is known and before its arrays are allocated, with
     * every byte it will need until it is answered (rnnd_infer_bytes()); nonzero refuses
     * the request with that status and ADMIT's message in ERR. NULL: no budget. */
    int (*admit)(void *ctx, size_t bytes, char *err, size_t errlen);
    void *admit_ctx;
} rnnd_infer_limits;

typedef struct rnnd_infer_req rnnd_infer_req;

/* Validate BODY (a decoded JSON object) against NET's model and LIMITS (NULL: none).
 * Returns 0, RNND_ERR_INVALID (message names the field, sequence and step, e.g.
 * "inputs[2][5]: expected 4 numbers, got 3"), RNND_ERR_LIMIT, or RNND_ERR_NOMEM.
 * Refuses unknown top-level fields. BODY is only read; it is not const because jansson
 * iterates an object's keys through a json_t * alone. */
int rnnd_infer_parse(const rnnd_net *net, json_t *body, const rnnd_infer_limits *limits,
                     rnnd_infer_req **out, char *err, size_t errlen);

/* The same, where a sequence of a token model may also be a JSON string: its text encoded
 * with TOK (docs/text.md), e.g. "inputs": ["To be", [53, 73]]. An empty string is an empty
 * sequence. Errors name the sequence and the byte: "inputs[1]: byte 3: no token for \"é\"
 * (U+00E9)". TOK NULL: a tokenizer is built from NET's model when the first string is met
 * (a model without one: "inputs[0]: model has no tokenizer: give token ids");
 * rnnd_infer_parse() is this with TOK NULL. TOK must be the tokenizer of NET's model. */
int rnnd_infer_parse_text(const rnnd_net *net, const rnnd_tokenizer *tok, json_t *body,
                          const rnnd_infer_limits *limits, rnnd_infer_req **out, char *err,
                          size_t errlen);

/* A batch as arrays: N_SEQ sequences of STEPS steps each, as N_SEQ * STEPS token ids in TOKENS
 * for a token model or N_SEQ * STEPS * input_dim floats in VECTORS for a vector model (the
 * pointer the model does not take is not read). */
typedef struct rnnd_infer_arrays {
    size_t n_seq, steps;
    const int32_t *tokens;
    const float *vectors;
} rnnd_infer_arrays;

/* A request built from arrays instead of JSON, for front ends that decode their own format
 * (KServe v2); IN's arrays are copied. Checked as rnnd_infer_parse() checks JSON, with its
 * limits and messages: ids in the vocabulary, floats finite ("inputs[B][T]..."); LIMITS' admit
 * is asked for rnnd_infer_bytes() before the arrays are allocated. Every output row is
 * returned. */
int rnnd_infer_req_new(const rnnd_net *net, const rnnd_infer_arrays *in,
                       const rnnd_infer_limits *limits, rnnd_infer_req **out, char *err,
                       size_t errlen);

/* After a successful run, sequence B's output: *ROWS rows of rnnd_net_output_dim() floats (one
 * per step; one in all for a pooled model or "outputs": "last"). NULL with *ROWS 0 before a
 * successful run or past the last sequence. Owned by REQ. */
const float *rnnd_infer_req_outputs(const rnnd_net *net, const rnnd_infer_req *req, size_t b,
                                    size_t *rows);

/* The memory REQ needs from parsing to its encoded response: its input and output arrays,
 * rnnd_net_forward()'s scratch for it, and the longest response text it can have
 * (rnnd_infer_encode() reserves that up front, so the buffer never grows past it).
 * Saturates at SIZE_MAX. */
size_t rnnd_infer_bytes(const rnnd_net *net, const rnnd_infer_req *req);

/* Compute. Returns 0, RNND_ERR_NUMERIC (NaN/Inf appeared), or another negative status.
 * rnnd_infer_run_many(net, &req, 1, ...). */
int rnnd_infer_run(const rnnd_net *net, rnnd_infer_req *req, char *err, size_t errlen);

/* Compute N requests (all parsed for NET) as one rnnd_net_forward() call over all their
 * sequences. The core is batch-invariant, so each request's results are bitwise those of
 * running it alone. Each request gets its own outcome (rnnd_infer_req_status()): a NaN/Inf
 * fails only the request it appeared in; a failure of the call itself fails all. Returns 0 when
 * every request succeeded, else the first failure's status with its message in ERR. */
int rnnd_infer_run_many(const rnnd_net *net, rnnd_infer_req *const *reqs, size_t n, char *err,
                        size_t errlen);

/* The same with PAR (rnnd_net_forward_par()): its stop flag makes every request of the call
 * fail with RNND_ERR_STOPPED between two steps. */
int rnnd_infer_run_many_par(const rnnd_net *net, rnnd_infer_req *const *reqs, size_t n,
                            const rnnd_parallel *par, char *err, size_t errlen);

/* The outcome of REQ's last run: 0, or its negative status with the message in ERR. */
int rnnd_infer_req_status(const rnnd_infer_req *req, char *err, size_t errlen);

/* Append the response JSON ({"model":..., "outputs":..., "states":...}) to OUT. Returns 0
 * (out of memory shows as a failed OUT), or RNND_ERR_INTERNAL with nothing appended when REQ
 * has not run: the caller's bug, which its front end reports in its own error shape. */
int rnnd_infer_encode(const rnnd_net *net, const rnnd_infer_req *req, const char *model_name,
                      rnnd_buf *out);

void rnnd_infer_req_free(rnnd_infer_req *req); /* NULL is a no-op */

/* Number of sequences and total steps of a parsed request (for batching and limits). */
size_t rnnd_infer_req_sequences(const rnnd_infer_req *req);
size_t rnnd_infer_req_steps(const rnnd_infer_req *req);

/* A jansson parse error's TEXT as a user should read it: jansson names its own flag for a
 * \u0000 in a string ("...without JSON_ALLOW_NUL"), which means nothing to a client. */
const char *rnnd_json_error_text(const char *text);

/* Decode a request body: JSON text of LEN bytes (need not be NUL-terminated), duplicate keys
 * refused. Returns 0 with a new reference in *OUT, or RNND_ERR_INVALID with
 * "line L, column C: reason" in ERR. */
int rnnd_infer_load(const char *data, size_t len, json_t **out, char *err, size_t errlen);

#endif
