/* Fuzz target: the STATE JSON import (include/rnnd/state_json.h), as used by infer's
 * initial_state, session creation, reset and PUT /v1/sessions/{id}/state.
 *
 * The input is JSON text, decoded with rnnd_infer_load and parsed as a state of each of three
 * models (GRU with a head, LSTM + RNN, bidirectional LSTM). A state that parses is written
 * back with rnnd_state_write, and that text must parse again to the same floats bit for bit
 * (docs/api.md: numbers are written so that they read back exactly). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rnnd/buf.h"
#include "rnnd/infer.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"

#define FZ_ARCH_BIDI \
    "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 2}," \
    " \"layers\": [{\"type\": \"lstm\", \"hidden_size\": 3, \"direction\": \"bidirectional\"," \
    " \"proj_size\": 2}, {\"type\": \"jordan\", \"hidden_size\": 2, \"output_size\": 3," \
    " \"direction\": \"reverse\"}]}"

#define N_MODELS 3

static rnnd_model **models(void)
{
    static rnnd_model *m[N_MODELS];
    if (!m[0]) {
        m[0] = fz_model(FZ_ARCH_TOK, 1);
        m[1] = fz_model(FZ_ARCH_VEC, 2);
        m[2] = fz_model(FZ_ARCH_BIDI, 3);
    }
    return m;
}

static void check_state(const rnnd_model *m, json_t *state)
{
    size_t n = rnnd_model_state_floats(m);
    /* one float past the end, poisoned, to see that the parser stays inside the block */
    float *dst = malloc((n + 1) * sizeof *dst);
    float *back = malloc((n + 1) * sizeof *back);
    FZ_CHECK(dst && back, "out of memory");
    memset(dst, 0x7f, (n + 1) * sizeof *dst);
    char err[512] = "";
    int rc = rnnd_state_parse_at(m, state, dst, "s", err, sizeof err);
    FZ_CHECK(rc == 0 || rc == RNND_ERR_INVALID, "unexpected state parse status");
    if (rc) {
        FZ_CHECK(strncmp(err, "s", 1) == 0, "a state error must start with its path");
        free(back);
        free(dst);
        return;
    }
    unsigned char guard[sizeof(float)];
    memset(guard, 0x7f, sizeof guard);
    FZ_CHECK(memcmp(&dst[n], guard, sizeof guard) == 0, "the parser wrote past the state");

    rnnd_buf out;
    rnnd_buf_init(&out);
    rnnd_state_write(m, dst, &out);
    FZ_CHECK(!rnnd_buf_failed(&out), "a parsed state cannot be written back");
    json_t *again = NULL;
    rc = rnnd_infer_load(out.data, out.len, &again, err, sizeof err);
    FZ_CHECK(rc == 0, "rnnd_state_write wrote invalid JSON");
    rc = rnnd_state_parse(m, again, back, err, sizeof err);
    FZ_CHECK(rc == 0, "a written state does not parse back");
    FZ_CHECK(memcmp(dst, back, n * sizeof *dst) == 0, "a state does not round-trip exactly");
    json_decref(again);
    rnnd_buf_free(&out);
    free(back);
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rnnd_model **m = models();
    char err[512];
    json_t *v = NULL;
    if (rnnd_infer_load((const char *)data, size, &v, err, sizeof err))
        return 0;
    for (int i = 0; i < N_MODELS; i++)
        check_state(m[i], v);
    /* the helpers the infer parser shares, on whatever the input is */
    float f;
    (void)rnnd_json_float(v, &f, "x", err, sizeof err);
    float vec[4];
    (void)rnnd_json_floats(v, vec, 4, "x", err, sizeof err);
    FZ_CHECK(rnnd_json_type_desc(v) != NULL, "no type description");
    json_decref(v);
    return 0;
}
