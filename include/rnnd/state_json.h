/* A session's state block <-> the STATE JSON of the infer contract:
 *   {"layers": [{"h": [[...] per direction], "c": [[...] per direction]}, ...]}
 * ("c" only for lstm and slstm layers; slstm layers also "n" and "m", after "c"). Layout of
 * the block: see rnnd/rnn.h. */
#ifndef RNND_STATE_JSON_H
#define RNND_STATE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "rnnd/model.h"
#include "rnnd/buf.h"

/* Parse STATE into DST (rnnd_model_state_floats() floats). Every layer, direction and element
 * must be present with the right count and be a finite number that fits float32; unknown keys
 * are refused. On error returns RNND_ERR_INVALID with a message naming the element
 * (e.g. "state.layers[1].h[0][17]: expected a number"), and DST may be partly written. STATE
 * is only read (not const: jansson iterates an object's keys through a json_t * alone). */
int rnnd_state_parse(const rnnd_model *m, json_t *state, float *dst, char *err, size_t errlen);

/* The same, with PATH (e.g. "initial_state[1]") in front of every element name. */
int rnnd_state_parse_at(const rnnd_model *m, json_t *state, float *dst, const char *path, char *err,
                        size_t errlen);

/* The "digest" that goes with a state (docs/state.md, "The digest"): DIGEST, the request's
 * value or NULL when absent, must be M's rnnd_model_digest(). Every path that accepts a state
 * checks it here, so all of them answer alike. REQUIRED: a missing digest is refused too.
 * Returns 0; RNND_ERR_INVALID (missing but required, or not a string) or RNND_ERR_CONFLICT
 * (another model's digest: the state would mean something else here), with ERR saying which
 * and naming both digests. */
int rnnd_state_digest_check(const rnnd_model *m, const json_t *digest, int required, char *err,
                            size_t errlen);

/* Its core, for states that come with their digest as text (snapshot records): 0 when DIGEST
 * is M's, else RNND_ERR_CONFLICT with the same message. */
int rnnd_state_digest_match(const rnnd_model *m, const char *digest, char *err, size_t errlen);

/* Append STATE JSON for SRC to OUT. */
/* A state block from elsewhere than a STATE (a snapshot record): 0 when every clockwork
 * counter in SRC (rnnd_model_state_floats() floats) is what rnnd_clock_put() writes, two
 * whole numbers in [0, 2^24); else RNND_ERR_INVALID with ERR naming the first that is not
 * (e.g. "state.layers[1].t[0]: 0.5 is not a step counter"), as the import would refuse it. */
int rnnd_state_check_counters(const rnnd_model *m, const float *src, char *err, size_t errlen);

void rnnd_state_write(const rnnd_model *m, const float *src, rnnd_buf *out);

/* Helpers shared with the infer request parser. */

/* "an object", "a list", "a string", "an integer", "a number", "true", "false", "null". */
const char *rnnd_json_type_desc(const json_t *v);

/* V as a float32: 0, or RNND_ERR_INVALID with "PATH: reason" when V is not a number (booleans
 * are not numbers) or is not finite or does not fit float32 once rounded. */
int rnnd_json_float(const json_t *v, float *out, const char *path, char *err, size_t errlen);

/* V as a token id of a model with VOCAB ids, into *OUT: 0, or RNND_ERR_INVALID with the
 * reason, without a path, in ERR: "token id 99 out of range [0, 96)" or "expected an integer
 * token id in [0, 96), got 1.5". Every parser of token ids words its errors with it, the
 * caller putting the place in front ("inputs[0][3]: ..."). */
int rnnd_json_token(const json_t *v, int vocab, int32_t *out, char *err, size_t errlen);

/* V must be a list of exactly N numbers; they go to DST. Errors as above, naming
 * "PATH: expected a list of N numbers, got M" ("1 number" for one) or "PATH[i]: ...". */
int rnnd_json_floats(const json_t *v, float *dst, size_t n, const char *path, char *err,
                     size_t errlen);

/* One step of a vector model's inputs: rnnd_json_floats(), and where N is 1 and V a number
 * (a flat list [x1, x2, ...] sent as a sequence), the message says how steps are written:
 * "PATH: expected a list of 1 number, got a number: a model with input size 1 takes each
 * step as [x], a sequence as [[x1], [x2], ...]". */
int rnnd_json_step(const json_t *v, float *dst, size_t n, const char *path, char *err,
                   size_t errlen);

#endif
