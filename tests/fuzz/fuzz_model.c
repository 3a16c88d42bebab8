/* Fuzz target: the model file loader (docs/model-format.md, "Validation").
 *
 * The input is a whole .rnnd file. It is loaded from memory and from a file, which must agree
 * (same status, same digest); a model that loads is packed into a net and run one step from
 * zeros (rnnd_net_step when it is forward-only) and one whole sequence of one step
 * (rnnd_net_forward), so every tensor the loader accepted is read by the kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rnnd/rnn.h"
#include "rnnd/status.h"

static void run_model(rnnd_model *m)
{
    char err[512];
    rnnd_net *net = NULL;
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    FZ_CHECK(k != NULL, "no kernels");
    int rc = rnnd_net_new(m, k, &net, err, sizeof err);
    if (rc) {
        /* the loader validated every size: only memory may run out here */
        FZ_CHECK(rc == RNND_ERR_NOMEM, "rnnd_net_new refused a model the loader accepted");
        return;
    }
    const rnnd_model_spec *sp = rnnd_model_get_spec(m);
    size_t nstate = rnnd_net_state_floats(net);
    size_t odim = (size_t)rnnd_net_output_dim(net);
    FZ_CHECK(nstate == rnnd_model_state_floats(m), "state sizes of model and net differ");
    FZ_CHECK(odim == (size_t)rnnd_model_output_dim(m), "output sizes of model and net differ");
    float *state = calloc(nstate ? nstate : 1, sizeof *state);
    float *final = calloc(nstate ? nstate : 1, sizeof *final);
    float *out = calloc(odim ? odim : 1, sizeof *out);
    float *vec = calloc((size_t)sp->input_dim, sizeof *vec);
    int32_t tok = 0;
    rnnd_work *w = rnnd_work_new(net, 1);
    if (state && final && out && vec && w) {
        float *states[1] = {state};
        int is_tok = sp->input_kind == RNND_INPUT_TOKENS;
        rc = rnnd_net_step(net, w, 1, is_tok ? &tok : NULL, is_tok ? NULL : vec, states, out, err,
                           sizeof err);
        if (rnnd_model_is_stateful(m))
            FZ_CHECK(rc == 0, "rnnd_net_step failed on a forward-only model");
        else
            FZ_CHECK(rc == RNND_ERR_UNSUPPORTED, "rnnd_net_step ran a bidirectional model");

        size_t len = 1;
        const int32_t *toks[1] = {&tok};
        const float *vecs[1] = {vec};
        float *outs[1] = {out};
        float *finals[1] = {final};
        rc = rnnd_net_forward(net,
                              &(rnnd_seq_batch){1, &len, is_tok ? toks : NULL, is_tok ? NULL : vecs,
                                                NULL, outs, finals},
                              err, sizeof err);
        FZ_CHECK(rc == 0 || rc == RNND_ERR_NOMEM || rc == RNND_ERR_NUMERIC,
                 "rnnd_net_forward failed on a valid model");
    }
    rnnd_work_free(w);
    free(vec);
    free(out);
    free(final);
    free(state);
    rnnd_net_free(net);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], err2[512];
    rnnd_model *m = NULL, *m2 = NULL;
    int rc = rnnd_model_from_buffer(data, size, "fuzz.rnnd", &m, err, sizeof err);
    FZ_CHECK(rc <= 0, "loader returned a positive status");
    FZ_CHECK((rc == 0) == (m != NULL), "loader status and model disagree");
    if (rc)
        FZ_CHECK(err[0] != '\0' && memchr(err, '\n', strlen(err)) == NULL,
                 "a refusal must be one non-empty line");

    char path[4200];
    snprintf(path, sizeof path, "%s/fuzz.rnnd", fz_tmpdir());
    fz_write_file(path, data, size);
    int rc2 = rnnd_model_open(path, &m2, err2, sizeof err2);
    FZ_CHECK(rc2 == rc, "rnnd_model_open and rnnd_model_from_buffer disagree");
    if (m && m2)
        FZ_CHECK(strcmp(rnnd_model_digest(m), rnnd_model_digest(m2)) == 0,
                 "digests of the same bytes differ");
    rnnd_model_unref(m2);

    if (m)
        run_model(m);
    rnnd_model_unref(m);
    return 0;
}
