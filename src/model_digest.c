/* A model's state digest (docs/state.md, "The digest"): SHA-256 over a canonical record of
 * what a session's state means - the architecture as the kernels see it and the weight values
 * they compute with - and nothing else, so the same weights under another name, vocabulary
 * text or storage type give the same digest and can exchange states. Another tool must be
 * able to recompute it from the docs alone: any change here is a new record version there. */
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>
#include "rnnd/status.h"
#include "sha256.h"

/* Bumped with any change to the record below (and docs/state.md with it). */
static const char record_magic[12] = {'r', 'n', 'n', 'd', '-', 's', 't', 'a', 't', 'e', '-', '1'};

/* Which of alpha and beta each op reads (docs/model-format.md's table); the others are
 * written as 0, so a value given for a parameter the op ignores changes nothing. */
static const unsigned char act_uses[RNND_ACT_COUNT][2] = {
    [RNND_ACT_HARDSIGMOID] = {1, 1},     [RNND_ACT_LEAKYRELU] = {1, 0},
    [RNND_ACT_THRESHOLDEDRELU] = {1, 0}, [RNND_ACT_SCALEDTANH] = {1, 1},
    [RNND_ACT_AFFINE] = {1, 1},          [RNND_ACT_ELU] = {1, 0},
};

static void put_u32(rnnd_sha256 *h, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    rnnd_sha256_update(h, b, 4);
}

static void put_f32(rnnd_sha256 *h, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(h, v);
}

/* The record's type codes (docs/state.md), fixed whatever order the enum has: 6 is the
 * clockwork layer's. */
static const uint32_t type_code[RNND_CELL_COUNT] = {
    [RNND_CELL_RNN] = 0,       [RNND_CELL_LSTM] = 1,   [RNND_CELL_GRU] = 2,
    [RNND_CELL_JORDAN] = 3,    [RNND_CELL_MINGRU] = 4, [RNND_CELL_MINLSTM] = 5,
    [RNND_CELL_CLOCKWORK] = 6, [RNND_CELL_SLSTM] = 7,
};

static void put_layer(rnnd_sha256 *h, const rnnd_layer_spec *L)
{
    int lstm = L->cell == RNND_CELL_LSTM;
    put_u32(h, type_code[L->cell]);
    put_u32(h, (uint32_t)L->direction);
    put_u32(h, (uint32_t)L->hidden);
    put_u32(h, L->has_clip ? 1 : 0);
    put_f32(h, L->has_clip ? L->clip : 0.0f);
    put_u32(h, lstm ? (uint32_t)L->input_forget : 0);
    put_u32(h, lstm ? (uint32_t)L->peepholes : 0);
    put_u32(h, lstm ? (uint32_t)L->forget_gate : 0);
    put_u32(h, lstm ? (uint32_t)L->proj_size : 0);
    put_u32(h, L->cell == RNND_CELL_GRU ? (uint32_t)L->linear_before_reset : 0);
    put_u32(h, L->cell == RNND_CELL_JORDAN ? (uint32_t)L->output_size : 0);
    /* The depth gate came later: written only when set, so every other layer's record (and
     * every digest of a model without one) stays what it was. */
    if (L->depth_gate)
        rnnd_sha256_update(h, "depth_gate", 10);
    /* sLSTM came later: its two fields follow for it alone, so no other record changes */
    if (L->cell == RNND_CELL_SLSTM) {
        put_u32(h, (uint32_t)L->heads);
        put_u32(h, L->exp_forget ? 1 : 0);
    }
    /* clockwork only, so the records of every other type stay what they were */
    if (L->cell == RNND_CELL_CLOCKWORK) {
        put_u32(h, (uint32_t)L->n_periods);
        for (int k = 0; k < L->n_periods; k++)
            put_u32(h, (uint32_t)L->periods[k]);
    }
    for (int d = 0; d < L->num_directions; d++) {
        for (int k = 0; k < L->n_act; k++) {
            const rnnd_activation *a = &L->act[d][k];
            put_u32(h, (uint32_t)a->kind);
            put_f32(h, act_uses[a->kind][0] ? a->alpha : 0.0f);
            put_f32(h, act_uses[a->kind][1] ? a->beta : 0.0f);
        }
    }
}

int rnnd_model_state_digest_compute(rnnd_model_spec *s, char out[65])
{
    rnnd_req_tensor *t = malloc(RNND_ARCH_MAX_TENSORS * sizeof *t);
    if (!t)
        return RNND_ERR_NOMEM;
    rnnd_sha256 h;
    rnnd_sha256_init(&h);
    rnnd_sha256_update(&h, record_magic, sizeof record_magic);
    int tokens = s->input_kind == RNND_INPUT_TOKENS;
    put_u32(&h, tokens ? 0 : 1);
    put_u32(&h, tokens ? (uint32_t)s->vocab_size : 0);
    put_u32(&h, (uint32_t)s->input_dim);
    put_u32(&h, (uint32_t)s->n_layers);
    for (int l = 0; l < s->n_layers; l++)
        put_layer(&h, &s->layers[l]);
    put_u32(&h, s->has_head ? 1 : 0);
    put_u32(&h, s->has_head ? (uint32_t)s->head_out : 0);
    put_u32(&h, s->has_head ? (uint32_t)s->head_norm : 0);
    /* Pooling came later: written only when set, so every digest of a model without it
     * stays what it was. */
    if (s->pool != RNND_POOL_NONE) {
        rnnd_sha256_update(&h, "pool", 4);
        put_u32(&h, (uint32_t)s->pool);
    }
    /* Head layers came later too: a head that is one linear (either form) writes nothing
     * more, so it keeps the digest it had. */
    if (s->has_head && !(s->head_n == 1 && s->head_layers[0].op == RNND_HEAD_LINEAR)) {
        rnnd_sha256_update(&h, "headlayers", 10);
        put_u32(&h, (uint32_t)s->head_n);
        for (int k = 0; k < s->head_n; k++) {
            const rnnd_head_layer *hl = &s->head_layers[k];
            int ln = hl->op == RNND_HEAD_LAYERNORM;
            put_u32(&h, (uint32_t)hl->op);
            put_u32(&h, (uint32_t)hl->in_dim);
            put_u32(&h, (uint32_t)hl->out_dim);
            put_u32(&h, ln ? (uint32_t)hl->affine : 0);
            put_f32(&h, ln ? hl->eps : 0.0f);
        }
    }
    /* The values the kernels read, after any half rounding: the host is little-endian
     * (model.c refuses others), so the floats' bytes are already the record's. */
    size_t n = rnnd_arch_required(s, t);
    for (size_t i = 0; i < n; i++) {
        size_t count = (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
        rnnd_sha256_update(&h, *t[i].dst, count * sizeof(float));
    }
    /* int8 came later: its matrices above are their integers q; the row scales follow, for
     * int8 models alone, so every other digest stays what it was */
    if (s->weights == RNND_WEIGHTS_I8) {
        rnnd_sha256_update(&h, "int8", 4);
        for (size_t i = 0; i < n; i++)
            if (t[i].matrix)
                rnnd_sha256_update(&h, *t[i].scale, (size_t)t[i].shape[0] * sizeof(float));
    }
    free(t);
    rnnd_sha256_final_hex(&h, out);
    return RNND_OK;
}
