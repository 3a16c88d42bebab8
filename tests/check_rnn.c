/* The recurrent core: batch invariance of the step path (bitwise), step vs whole-sequence
 * agreement, avx2 == avx512 end to end, and input errors that change nothing. Every test runs
 * on every kernel path this machine has. */
#include "config.h"

#include <cblas.h>
#include <check.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/status.h"
#include "half.h"
#include "testutil.h"

#define ACT(op) "{\"op\":\"" op "\"}"

#define MLP_ARCH_TOKENS \
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":50," \
    "\"embedding_dim\":13},\"layers\":[{\"type\":\"gru\",\"hidden_size\":29}]," \
    "\"head\":{\"in_dim\":29,\"out_dim\":50,\"norm\":\"log_softmax\",\"layers\":[" \
    "{\"op\":\"layernorm\",\"eps\":0.001},{\"op\":\"linear\",\"in_dim\":29,\"out_dim\":45}," \
    "{\"op\":\"gelu\"},{\"op\":\"linear\",\"in_dim\":45,\"out_dim\":50}]}}"
#define MLP_ARCH_VECTORS \
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":[" \
    "{\"type\":\"lstm\",\"hidden_size\":37}]," \
    "\"head\":{\"in_dim\":37,\"out_dim\":7,\"norm\":\"softmax\",\"layers\":[" \
    "{\"op\":\"linear\",\"in_dim\":37,\"out_dim\":33},{\"op\":\"relu\"}," \
    "{\"op\":\"layernorm\",\"affine\":false},{\"op\":\"tanh\"},{\"op\":\"sigmoid\"}," \
    "{\"op\":\"gelu_tanh\"},{\"op\":\"layernorm\"},{\"op\":\"linear\",\"in_dim\":33," \
    "\"out_dim\":7}]}}"

/* Stateful architectures covering every cell type and option. */
static const char *const archs[] = {
    /* 3-layer Elman with odd sizes and a softmax head */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"rnn\",\"hidden_size\":37,\"direction\":\"forward\"},"
    "{\"type\":\"rnn\",\"hidden_size\":21,\"direction\":\"forward\","
    "\"activations\":[[" ACT(
        "Relu") "]]},"
                "{\"type\":\"rnn\",\"hidden_size\":37,\"direction\":\"forward\"}],"
                "\"head\":{\"out_dim\":19,\"in_dim\":37,\"norm\":\"softmax\"}}",
    /* token LSTM with peepholes, clip and a log-softmax head */
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":50,"
    "\"embedding_dim\":13},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":37,\"direction\":\"forward\",\"peepholes\":true,"
    "\"clip\":3.0},"
    "{\"type\":\"lstm\",\"hidden_size\":40,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":50,\"in_dim\":40,\"norm\":\"log_softmax\"}}",
    /* projected LSTM */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":37,\"direction\":\"forward\",\"proj_size\":11},"
    "{\"type\":\"lstm\",\"hidden_size\":20,\"direction\":\"forward\",\"proj_size\":5}]}",
    /* the 1997 LSTM, and the coupled input/forget gate */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":5},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":33,\"direction\":\"forward\",\"forget_gate\":false},"
    "{\"type\":\"lstm\",\"hidden_size\":17,\"direction\":\"forward\",\"input_forget\":true}]}",
    /* GRU both ways */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"gru\",\"hidden_size\":37,\"direction\":\"forward\",\"linear_before_reset\":0},"
    "{\"type\":\"gru\",\"hidden_size\":29,\"direction\":\"forward\",\"linear_before_reset\":1,"
    "\"clip\":2.5}],\"head\":{\"out_dim\":3,\"in_dim\":29,\"norm\":\"none\"}}",
    /* Jordan */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"jordan\",\"hidden_size\":37,\"direction\":\"forward\",\"output_size\":7,"
    "\"activations\":[[" ACT("Tanh") "," ACT("Sigmoid") "]]}]}",
    /* every activation, one Elman layer each */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":6},\"layers\":["
    "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[[" ACT(
        "Sigmoid") "]]},"
                   "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[[" ACT(
                       "Relu") "]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[["
                               "{\"op\":\"HardSigmoid\",\"alpha\":0.3,\"beta\":0.4}]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[["
                               "{\"op\":\"LeakyRelu\",\"alpha\":0.05}]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[["
                               "{\"op\":\"ThresholdedRelu\",\"alpha\":0.1}]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[["
                               "{\"op\":\"ScaledTanh\",\"alpha\":1.5,\"beta\":0.7}]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[["
                               "{\"op\":\"Affine\",\"alpha\":0.5,\"beta\":0.1}]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[["
                               "{\"op\":\"Elu\",\"alpha\":0.9}]]},"
                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[[" ACT(
                                   "Softsign") "]]},"
                                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[[" ACT(
                                                   "Softplus") "]]},"
                                                               "{\"type\":\"rnn\",\"hidden_size\":17,\"direction\":\"forward\",\"activations\":[[" ACT(
                                                                   "Tanh") "]]}]}",
    /* minGRU: odd sizes, the identity and tanh candidates, a softmax head */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"mingru\",\"hidden_size\":37,\"direction\":\"forward\"},"
    "{\"type\":\"mingru\",\"hidden_size\":21,\"direction\":\"forward\","
    "\"activations\":[[" ACT("Sigmoid") "," ACT(
        "Tanh") "]]},"
                "{\"type\":\"mingru\",\"hidden_size\":37,\"direction\":\"forward\"}],"
                "\"head\":{\"out_dim\":19,\"in_dim\":37,\"norm\":\"softmax\"}}",
    /* token minLSTM beside an LSTM, a log-softmax head */
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":50,"
    "\"embedding_dim\":13},\"layers\":["
    "{\"type\":\"minlstm\",\"hidden_size\":37,\"direction\":\"forward\"},"
    "{\"type\":\"lstm\",\"hidden_size\":20,\"direction\":\"forward\"},"
    "{\"type\":\"minlstm\",\"hidden_size\":29,\"direction\":\"forward\","
    "\"activations\":[[{\"op\":\"HardSigmoid\",\"alpha\":0.3,\"beta\":0.4},"
    "{\"op\":\"Affine\",\"alpha\":0.5,\"beta\":0.1}]]}],"
    "\"head\":{\"out_dim\":50,\"in_dim\":29,\"norm\":\"log_softmax\"}}",
    /* MLP heads (docs/model-format.md, "The head"): every op, odd widths */
    MLP_ARCH_TOKENS,
    MLP_ARCH_VECTORS,
    /* clockwork: modules of 9 and 10 units (not panel multiples), a softsign layer, a head */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"clockwork\",\"hidden_size\":36,\"direction\":\"forward\","
    "\"periods\":[1,3,7,16]},"
    "{\"type\":\"clockwork\",\"hidden_size\":40,\"direction\":\"forward\","
    "\"periods\":[1,2,5,8],\"activations\":[[" ACT(
        "Softsign") "]]}],"
                    "\"head\":{\"out_dim\":7,\"in_dim\":40,\"norm\":\"softmax\"}}",
    /* token clockwork beside a GRU: 32-unit modules (two panels each, split by threads) */
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":50,"
    "\"embedding_dim\":13},\"layers\":["
    "{\"type\":\"clockwork\",\"hidden_size\":64,\"direction\":\"forward\","
    "\"periods\":[1,2]},"
    "{\"type\":\"gru\",\"hidden_size\":20,\"direction\":\"forward\"},"
    "{\"type\":\"clockwork\",\"hidden_size\":33,\"direction\":\"forward\","
    "\"periods\":[1,3,7]}],"
    "\"head\":{\"out_dim\":50,\"in_dim\":33,\"norm\":\"log_softmax\"}}",
    /* sLSTM: odd d (35 / 5 = 7), one head (d = H), both forget modes, beside a GRU */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"slstm\",\"hidden_size\":35,\"heads\":5,\"forget\":\"exp\","
    "\"direction\":\"forward\"},"
    "{\"type\":\"gru\",\"hidden_size\":20,\"direction\":\"forward\"},"
    "{\"type\":\"slstm\",\"hidden_size\":33,\"heads\":1,\"forget\":\"sigmoid\","
    "\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":11,\"in_dim\":33,\"norm\":\"softmax\"}}",
    /* an MLP head after the newer cells: clockwork, sLSTM and minLSTM layers */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"clockwork\",\"hidden_size\":36,\"direction\":\"forward\","
    "\"periods\":[1,3,7,16]},"
    "{\"type\":\"slstm\",\"hidden_size\":35,\"heads\":5,\"forget\":\"exp\","
    "\"direction\":\"forward\"},"
    "{\"type\":\"minlstm\",\"hidden_size\":21,\"direction\":\"forward\"}],"
    "\"head\":{\"in_dim\":21,\"out_dim\":6,\"norm\":\"softmax\",\"layers\":["
    "{\"op\":\"layernorm\",\"eps\":0.001},{\"op\":\"linear\",\"in_dim\":21,\"out_dim\":27},"
    "{\"op\":\"gelu_tanh\"},{\"op\":\"sigmoid\"},{\"op\":\"linear\",\"in_dim\":27,"
    "\"out_dim\":6}]}}",
    /* depth-gated LSTMs (issue 16): three of H 37 over an lstm, the middle one with
     * peepholes and clip, the top one coupled; a GRU between two more of H 21 */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":37,\"direction\":\"forward\"},"
    "{\"type\":\"lstm\",\"hidden_size\":37,\"direction\":\"forward\",\"depth_gate\":true},"
    "{\"type\":\"lstm\",\"hidden_size\":37,\"direction\":\"forward\",\"depth_gate\":true,"
    "\"peepholes\":true,\"clip\":2.5},"
    "{\"type\":\"lstm\",\"hidden_size\":37,\"direction\":\"forward\",\"depth_gate\":true,"
    "\"input_forget\":true},"
    "{\"type\":\"gru\",\"hidden_size\":21,\"direction\":\"forward\"},"
    "{\"type\":\"lstm\",\"hidden_size\":21,\"direction\":\"forward\"},"
    "{\"type\":\"lstm\",\"hidden_size\":21,\"direction\":\"forward\",\"depth_gate\":true,"
    "\"forget_gate\":false}],"
    "\"head\":{\"out_dim\":19,\"in_dim\":21,\"norm\":\"softmax\"}}",
};
#define N_ARCHS (sizeof archs / sizeof archs[0])

static const char *const bidir_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":5},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":9,\"direction\":\"bidirectional\"}]}";

/* A small deterministic generator so failures reproduce. */
static unsigned long long rng_state;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

typedef struct fixture {
    rnnd_model *model;
    rnnd_net *net;
    const rnnd_model_spec *spec;
    size_t S, T, state_n, out_n;
    int32_t *tok;      /* [S*T] */
    float *vec;        /* [S*T*D] */
    const float *init; /* [S*state_n] the sessions' first states, or NULL for zeros */
} fixture;

/* The compute mode the next fixtures' bf16 models run (enum rnnd_compute): the bf16 compute
 * tests set it around their runs, everything else leaves it F32. */
static int fixture_compute = RNND_COMPUTE_F32;

/* A fixture around MODEL (whose reference it takes over). */
static void fixture_from(fixture *fx, rnnd_model *model, unsigned seed, const rnnd_kernels *k,
                         size_t S, size_t T)
{
    char err[512];
    memset(fx, 0, sizeof *fx);
    fx->model = model;
    if (fixture_compute != RNND_COMPUTE_F32)
        ck_assert_int_eq(rnnd_model_set_compute(model, fixture_compute), RNND_OK);
    int rc = rnnd_net_new(fx->model, k, &fx->net, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    fx->spec = rnnd_model_get_spec(fx->model);
    fx->S = S;
    fx->T = T;
    fx->state_n = rnnd_net_state_floats(fx->net);
    fx->out_n = (size_t)rnnd_net_output_dim(fx->net);
    ck_assert_uint_eq(fx->state_n, rnnd_model_state_floats(fx->model));
    size_t D = (size_t)fx->spec->input_dim;
    fx->tok = malloc(S * T * sizeof *fx->tok);
    fx->vec = malloc(S * T * D * sizeof *fx->vec);
    rng_state = seed * 7919ULL + 1;
    for (size_t i = 0; i < S * T; i++)
        fx->tok[i] = (int32_t)(urand() * fx->spec->vocab_size);
    for (size_t i = 0; i < S * T * D; i++)
        fx->vec[i] = (float)(urand() * 4.0 - 2.0);
}

static void fixture_open(fixture *fx, const char *arch, unsigned seed, const rnnd_kernels *k,
                         size_t S, size_t T)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/rnn_%u.rnnd", tu_tmpdir(), seed);
    ck_assert_int_eq(tu_write_random_model(path, arch, seed), 0);
    rnnd_model *m = NULL;
    int rc = rnnd_model_open(path, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    fixture_from(fx, m, seed, k, S, T);
}

static void fixture_close(fixture *fx)
{
    rnnd_net_free(fx->net);
    rnnd_model_unref(fx->model);
    free(fx->tok);
    free(fx->vec);
}

/* Run every session alone, one step per call: the reference the batched runs must equal. */
static void run_solo(const fixture *fx, float *outs, float *states)
{
    char err[256];
    size_t D = (size_t)fx->spec->input_dim;
    rnnd_work *w = rnnd_work_new(fx->net, 1);
    ck_assert_ptr_nonnull(w);
    if (fx->init)
        memcpy(states, fx->init, fx->S * fx->state_n * sizeof(float));
    else
        memset(states, 0, fx->S * fx->state_n * sizeof(float));
    for (size_t s = 0; s < fx->S; s++) {
        float *st = states + s * fx->state_n;
        for (size_t t = 0; t < fx->T; t++) {
            size_t i = s * fx->T + t;
            int rc = rnnd_net_step(fx->net, w, 1, fx->tok + i, fx->vec + i * D, &st,
                                   outs + i * fx->out_n, err, sizeof err);
            ck_assert_msg(rc == 0, "%s", err);
        }
    }
    rnnd_work_free(w);
}

/* Run all sessions with random batch compositions at every step: random order, random
 * group sizes, so each session meets different neighbours and positions each step. */
static void run_shuffled(const fixture *fx, float *outs, float *states)
{
    char err[256];
    size_t S = fx->S, D = (size_t)fx->spec->input_dim;
    rnnd_work *w = rnnd_work_new(fx->net, S);
    size_t *perm = malloc(S * sizeof *perm);
    float **sp = malloc(S * sizeof *sp);
    int32_t *tok = malloc(S * sizeof *tok);
    float *vec = malloc(S * D * sizeof *vec);
    float *out = malloc(S * fx->out_n * sizeof *out);
    if (fx->init)
        memcpy(states, fx->init, S * fx->state_n * sizeof(float));
    else
        memset(states, 0, S * fx->state_n * sizeof(float));
    for (size_t t = 0; t < fx->T; t++) {
        for (size_t i = 0; i < S; i++)
            perm[i] = i;
        for (size_t i = S; i > 1; i--) {
            size_t j = (size_t)(urand() * i);
            size_t x = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = x;
        }
        for (size_t g0 = 0; g0 < S;) {
            size_t gn = 1 + (size_t)(urand() * (double)(S - g0));
            if (t == 0)
                gn = S - g0; /* the whole batch at once at least once */
            for (size_t i = 0; i < gn; i++) {
                size_t s = perm[g0 + i], src = s * fx->T + t;
                sp[i] = states + s * fx->state_n;
                tok[i] = fx->tok[src];
                memcpy(vec + i * D, fx->vec + src * D, D * sizeof(float));
            }
            int rc = rnnd_net_step(fx->net, w, gn, tok, vec, sp, out, err, sizeof err);
            ck_assert_msg(rc == 0, "%s", err);
            for (size_t i = 0; i < gn; i++) {
                size_t s = perm[g0 + i];
                memcpy(outs + (s * fx->T + t) * fx->out_n, out + i * fx->out_n,
                       fx->out_n * sizeof(float));
            }
            g0 += gn;
        }
    }
    free(perm);
    free(sp);
    free(tok);
    free(vec);
    free(out);
    rnnd_work_free(w);
}

static void check_batch_invariance(const rnnd_kernels *k, const char *arch, unsigned seed, size_t S,
                                   size_t T)
{
    fixture fx;
    fixture_open(&fx, arch, seed, k, S, T);
    float *o1 = malloc(S * T * fx.out_n * sizeof(float));
    float *o2 = malloc(S * T * fx.out_n * sizeof(float));
    float *s1 = malloc(S * fx.state_n * sizeof(float));
    float *s2 = malloc(S * fx.state_n * sizeof(float));
    run_solo(&fx, o1, s1);
    run_shuffled(&fx, o2, s2);
    for (size_t i = 0; i < S * T * fx.out_n; i++)
        ck_assert_msg(!memcmp(&o1[i], &o2[i], sizeof(float)) && isfinite(o1[i]),
                      "%s seed %u: output %zu differs: %.9g vs %.9g", k->name, seed, i, o1[i],
                      o2[i]);
    ck_assert_msg(!memcmp(s1, s2, S * fx.state_n * sizeof(float)),
                  "%s seed %u: final states differ", k->name, seed);
    free(o1);
    free(o2);
    free(s1);
    free(s2);
    fixture_close(&fx);
}

static const rnnd_kernels *path_for(int i)
{
    const char *const *names = rnnd_kernels_available();
    const rnnd_kernels *k = rnnd_kernels_by_name(names[i]);
    ck_assert_ptr_nonnull(k);
    return k;
}

static int n_paths(void)
{
    int n = 0;
    for (const char *const *p = rnnd_kernels_available(); *p; p++)
        n++;
    return n;
}

START_TEST(test_batch_invariance)
{
    int np = n_paths();
    for (int p = 0; p < np; p++)
        check_batch_invariance(path_for(p), archs[_i], 100 + (unsigned)_i, 24, 10);
}
END_TEST

/* Clockwork sessions at different counters batched together: each row runs its own modules
 * (a module is multiplied when any row runs it), bitwise as alone, and rnnd_net_forward()
 * from the same states (its counters included) gives the same outputs and final states, a
 * counter wrapping at 2^48 included. */
START_TEST(test_clock_counters)
{
    static const int clock_archs[] = {(int)N_ARCHS - 2, (int)N_ARCHS - 1};
    const char *arch = archs[clock_archs[_i]];
    char err[256];
    for (int p = 0; p < n_paths(); p++) {
        fixture fx;
        size_t S = 12, T = 20, D;
        fixture_open(&fx, arch, 500 + (unsigned)_i, path_for(p), S, T);
        D = (size_t)fx.spec->input_dim;
        float *init = calloc(S * fx.state_n, sizeof(float));
        size_t off = 0;
        for (int l = 0; l < fx.spec->n_layers; l++) {
            const rnnd_layer_spec *L = &fx.spec->layers[l];
            for (size_t s = 0; s < S; s++) {
                for (int j = 0; j < L->out_dim; j++)
                    init[s * fx.state_n + off + (size_t)j] = (float)(urand() - 0.5);
                /* 0, 1, ..., one past 2^24, and one that wraps at 2^48 part way */
                if (L->cell == RNND_CELL_CLOCKWORK)
                    rnnd_clock_put(init + s * fx.state_n + off + (size_t)L->out_dim,
                                   s == S - 1       ? (1ULL << 24) + 5
                                       : s == S - 2 ? RNND_CLOCK_WRAP - 7
                                                    : s * 5 + s % 3);
            }
            off += (size_t)L->out_dim + rnnd_layer_extra_state(L);
        }
        ck_assert_uint_eq(off, fx.state_n);
        fx.init = init;
        float *o1 = malloc(S * T * fx.out_n * sizeof(float));
        float *o2 = malloc(S * T * fx.out_n * sizeof(float));
        float *s1 = malloc(S * fx.state_n * sizeof(float));
        float *s2 = malloc(S * fx.state_n * sizeof(float));
        run_solo(&fx, o1, s1);
        run_shuffled(&fx, o2, s2);
        ck_assert_msg(!memcmp(o1, o2, S * T * fx.out_n * sizeof(float)),
                      "%s arch %d: batched outputs differ from solo", path_for(p)->name, _i);
        ck_assert_msg(!memcmp(s1, s2, S * fx.state_n * sizeof(float)),
                      "%s arch %d: batched states differ from solo", path_for(p)->name, _i);
        size_t lens[12];
        const int32_t *tp[12];
        const float *vp[12], *ip[12];
        float *op[12], *fp[12];
        for (size_t s = 0; s < S; s++) {
            lens[s] = T;
            tp[s] = fx.tok + s * T;
            vp[s] = fx.vec + s * T * D;
            ip[s] = init + s * fx.state_n;
            op[s] = o2 + s * T * fx.out_n;
            fp[s] = s2 + s * fx.state_n;
        }
        int rc = rnnd_net_forward(fx.net, &(rnnd_seq_batch){S, lens, tp, vp, ip, op, fp}, err,
                                  sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
        ck_assert_msg(!memcmp(o1, o2, S * T * fx.out_n * sizeof(float)),
                      "%s arch %d: forward outputs differ from steps", path_for(p)->name, _i);
        ck_assert_msg(!memcmp(s1, s2, S * fx.state_n * sizeof(float)),
                      "%s arch %d: forward final states differ", path_for(p)->name, _i);
        /* every counter moved on by T */
        off = 0;
        for (int l = 0; l < fx.spec->n_layers; l++) {
            const rnnd_layer_spec *L = &fx.spec->layers[l];
            for (size_t s = 0; L->cell == RNND_CELL_CLOCKWORK && s < S; s++) {
                size_t at = s * fx.state_n + off + (size_t)L->out_dim;
                ck_assert_uint_eq(rnnd_clock_get(s1 + at),
                                  (rnnd_clock_get(init + at) + T) % RNND_CLOCK_WRAP);
            }
            off += (size_t)L->out_dim + rnnd_layer_extra_state(L);
        }
        free(o1);
        free(o2);
        free(s1);
        free(s2);
        free(init);
        fixture_close(&fx);
    }
}
END_TEST

/* A session alone vs with 255 others: the brief's own words. */
START_TEST(test_batch_invariance_256)
{
    int np = n_paths();
    for (int p = 0; p < np; p++)
        check_batch_invariance(path_for(p), archs[1], 7, 256, 5);
}
END_TEST

/* The whole-sequence path equals the step path bitwise (own kernels) or within float
 * tolerance (OpenBLAS). */
START_TEST(test_step_vs_forward)
{
    int np = n_paths();
    char err[256];
    for (int p = 0; p < np; p++) {
        fixture fx;
        size_t S = 5, T = 17, D;
        fixture_open(&fx, archs[_i], 200 + (unsigned)_i, path_for(p), S, T);
        D = (size_t)fx.spec->input_dim;
        float *o1 = malloc(S * T * fx.out_n * sizeof(float));
        float *s1 = malloc(S * fx.state_n * sizeof(float));
        float *s2 = malloc(S * fx.state_n * sizeof(float));
        float *o2 = malloc(S * T * fx.out_n * sizeof(float));
        run_solo(&fx, o1, s1);
        /* different lengths per sequence: a prefix of each session's steps */
        size_t lens[5];
        const int32_t *tp[5];
        const float *vp[5];
        float *op[5], *fp[5];
        for (size_t s = 0; s < S; s++) {
            lens[s] = T - 3 * s;
            tp[s] = fx.tok + s * T;
            vp[s] = fx.vec + s * T * D;
            op[s] = o2 + s * T * fx.out_n;
            fp[s] = s2 + s * fx.state_n;
        }
        for (int blas = 0; blas < 2; blas++) {
            rnnd_net_use_openblas(fx.net, blas);
            int rc = rnnd_net_forward(fx.net, &(rnnd_seq_batch){S, lens, tp, vp, NULL, op, fp}, err,
                                      sizeof err);
            ck_assert_msg(rc == 0, "%s", err);
            /* own kernels: bitwise the step path; OpenBLAS: within float tolerance */
            float tol = blas ? 1e-4f : 0.0f;
            for (size_t s = 0; s < S; s++)
                for (size_t i = 0; i < lens[s] * fx.out_n; i++) {
                    float a = o1[s * T * fx.out_n + i], b = o2[s * T * fx.out_n + i];
                    ck_assert_msg(blas ? fabsf(a - b) <= tol + tol * fabsf(a)
                                       : !memcmp(&a, &b, sizeof a),
                                  "arch %d %s blas %d seq %zu elem %zu: step %.9g forward %.9g", _i,
                                  rnnd_net_kernels(fx.net)->name, blas, s, i, a, b);
                }
            /* the first sequence ran all T steps: its final state is the solo run's */
            for (size_t i = 0; i < fx.state_n; i++) {
                float a = s1[i], b = s2[i];
                ck_assert_msg(blas ? fabsf(a - b) <= tol + tol * fabsf(a)
                                   : !memcmp(&a, &b, sizeof a),
                              "blas %d state %zu", blas, i);
            }
        }
        free(o1);
        free(o2);
        free(s1);
        free(s2);
        fixture_close(&fx);
    }
}
END_TEST

/* The two SIMD paths share their polynomials and their reduction order: whole networks give
 * bitwise identical results on either. */
START_TEST(test_avx2_equals_avx512)
{
    const rnnd_kernels *a = rnnd_kernels_by_name("avx2"), *b = rnnd_kernels_by_name("avx512");
    if (!a || !b)
        return; /* this CPU lacks one of them: nothing to compare */
    fixture fa, fb;
    fixture_open(&fa, archs[_i], 300 + (unsigned)_i, a, 6, 9);
    fixture_open(&fb, archs[_i], 300 + (unsigned)_i, b, 6, 9);
    size_t n = 6 * 9 * fa.out_n;
    float *o1 = malloc(n * sizeof(float)), *o2 = malloc(n * sizeof(float));
    float *s1 = malloc(6 * fa.state_n * sizeof(float)), *s2 = malloc(6 * fa.state_n * 4);
    run_solo(&fa, o1, s1);
    run_solo(&fb, o2, s2);
    ck_assert_msg(!memcmp(o1, o2, n * sizeof(float)), "arch %d: avx2 and avx512 differ", _i);
    ck_assert(!memcmp(s1, s2, 6 * fa.state_n * sizeof(float)));
    free(o1);
    free(o2);
    free(s1);
    free(s2);
    fixture_close(&fa);
    fixture_close(&fb);
}
END_TEST

/* sLSTM alone (no layer whose scalar activations are libm's): every path gives the scalar
 * path's bits, stepping and whole sequences (a bidirectional layer too), since its row runs
 * kernels_vmath.h on every path and the products are the common gemv chain. */
START_TEST(test_slstm_paths_bitwise)
{
    static const char *const sl_archs[2] = {
        "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":9},\"layers\":["
        "{\"type\":\"slstm\",\"hidden_size\":21,\"heads\":7,\"forget\":\"exp\"},"
        "{\"type\":\"slstm\",\"hidden_size\":16,\"heads\":2,\"forget\":\"sigmoid\"}],"
        "\"head\":{\"out_dim\":5,\"in_dim\":16}}",
        "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":9},\"layers\":["
        "{\"type\":\"slstm\",\"hidden_size\":21,\"heads\":3,\"forget\":\"sigmoid\","
        "\"direction\":\"bidirectional\"},"
        "{\"type\":\"slstm\",\"hidden_size\":10,\"heads\":5,\"forget\":\"exp\","
        "\"direction\":\"reverse\"}]}",
    };
    const size_t S = 5, T = 31;
    int np = n_paths();
    for (int a = 0; a < 2; a++) {
        fixture ref;
        fixture_open(&ref, sl_archs[a], 900 + (unsigned)a, path_for(0), S, T);
        size_t n = S * T * ref.out_n, sn = S * ref.state_n, D = (size_t)ref.spec->input_dim;
        float *o0 = calloc(n, sizeof(float)), *s0 = calloc(sn, sizeof(float));
        float *o1 = calloc(n, sizeof(float)), *s1 = calloc(sn, sizeof(float));
        for (int p = 0; p < np; p++) {
            fixture fx;
            fixture_open(&fx, sl_archs[a], 900 + (unsigned)a, path_for(p), S, T);
            float *o = p ? o1 : o0, *st = p ? s1 : s0;
            if (a == 0) {
                run_solo(&fx, o, st);
            } else { /* whole sequences, every one T long */
                char err[256];
                size_t lens[5];
                const float *vp[5];
                float *op[5], *fp[5];
                for (size_t b = 0; b < S; b++) {
                    lens[b] = T;
                    vp[b] = fx.vec + b * T * D;
                    op[b] = o + b * T * fx.out_n;
                    fp[b] = st + b * fx.state_n;
                }
                ck_assert_msg(rnnd_net_forward(fx.net,
                                               &(rnnd_seq_batch){S, lens, NULL, vp, NULL, op, fp},
                                               err, sizeof err) == 0,
                              "%s", err);
            }
            if (p)
                ck_assert_msg(!memcmp(o0, o1, n * sizeof(float)) &&
                                  !memcmp(s0, s1, sn * sizeof(float)),
                              "slstm arch %d: %s differs from scalar", a,
                              rnnd_net_kernels(fx.net)->name);
            fixture_close(&fx);
        }
        free(o0);
        free(o1);
        free(s0);
        free(s1);
        fixture_close(&ref);
    }
}
END_TEST

START_TEST(test_bad_token_changes_nothing)
{
    char err[256];
    fixture fx;
    fixture_open(&fx, archs[1], 11, path_for(0), 3, 1);
    rnnd_work *w = rnnd_work_new(fx.net, 3);
    float *st = calloc(3 * fx.state_n, sizeof(float));
    float *sp[3] = {st, st + fx.state_n, st + 2 * fx.state_n};
    for (size_t i = 0; i < 3 * fx.state_n; i++)
        st[i] = 0.25f;
    int32_t tok[3] = {1, 50, 2};
    int rc = rnnd_net_step(fx.net, w, 3, tok, NULL, sp, NULL, err, sizeof err);
    ck_assert_int_eq(rc, RNND_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "50"));
    for (size_t i = 0; i < 3 * fx.state_n; i++)
        ck_assert(st[i] == 0.25f);
    tok[1] = -1;
    ck_assert_int_eq(rnnd_net_step(fx.net, w, 3, tok, NULL, sp, NULL, err, sizeof err),
                     RNND_ERR_INVALID);
    /* a whole-sequence call refuses it too */
    size_t len = 3;
    const int32_t *tp = tok;
    float out[3 * 50];
    float *op = out;
    ck_assert_int_eq(rnnd_net_forward(fx.net,
                                      &(rnnd_seq_batch){1, &len, &tp, NULL, NULL, &op, NULL}, err,
                                      sizeof err),
                     RNND_ERR_INVALID);
    free(st);
    rnnd_work_free(w);
    fixture_close(&fx);
}
END_TEST

START_TEST(test_bidirectional_refuses_step)
{
    char err[256];
    fixture fx;
    fixture_open(&fx, bidir_arch, 12, path_for(0), 2, 4);
    ck_assert(!rnnd_model_is_stateful(fx.model));
    rnnd_work *w = rnnd_work_new(fx.net, 1);
    float *st = calloc(fx.state_n, sizeof(float));
    ck_assert_int_eq(rnnd_net_step(fx.net, w, 1, NULL, fx.vec, &st, NULL, err, sizeof err),
                     RNND_ERR_UNSUPPORTED);
    /* but it runs on whole sequences: output is both directions, forward first */
    size_t len = 4;
    const float *vp = fx.vec;
    float out[4 * 18], *op = out;
    ck_assert_int_eq(rnnd_net_forward(fx.net,
                                      &(rnnd_seq_batch){1, &len, NULL, &vp, NULL, &op, NULL}, err,
                                      sizeof err),
                     0);
    ck_assert_int_eq(rnnd_net_output_dim(fx.net), 18);
    free(st);
    rnnd_work_free(w);
    fixture_close(&fx);
}
END_TEST

/* 600 steps: no drift between the paths, nothing blows up. */
START_TEST(test_long_sequence)
{
    int np = n_paths();
    char err[256];
    for (int p = 0; p < np; p++) {
        fixture fx;
        size_t T = 600;
        fixture_open(&fx, archs[1], 13, path_for(p), 1, T);
        float *o1 = malloc(T * fx.out_n * sizeof(float)), *o2 = malloc(T * fx.out_n * 4);
        float *s1 = malloc(fx.state_n * sizeof(float));
        run_solo(&fx, o1, s1);
        const int32_t *tp = fx.tok;
        float *op = o2;
        ck_assert_int_eq(rnnd_net_forward(fx.net,
                                          &(rnnd_seq_batch){1, &T, &tp, NULL, NULL, &op, NULL}, err,
                                          sizeof err),
                         0);
        for (size_t i = 0; i < T * fx.out_n; i++)
            ck_assert_msg(isfinite(o1[i]) && fabsf(o1[i] - o2[i]) <= 1e-3f + 1e-3f * fabsf(o1[i]),
                          "step %zu: %.9g vs %.9g", i / fx.out_n, o1[i], o2[i]);
        free(o1);
        free(o2);
        free(s1);
        fixture_close(&fx);
    }
}
END_TEST

/* A session's steps as whole sequences in random chunks, each from the state the last one
 * left (what the batcher does with long requests of minGRU/minLSTM models): bitwise the
 * outputs and states of stepping alone, on every path, for every stateful arch. */
START_TEST(test_forward_chunks)
{
    int np = n_paths();
    char err[256];
    for (int p = 0; p < np; p++) {
        fixture fx;
        size_t T = 300, D;
        fixture_open(&fx, archs[_i], 300 + (unsigned)_i, path_for(p), 1, T);
        D = (size_t)fx.spec->input_dim;
        float *o1 = malloc(T * fx.out_n * sizeof(float)), *o2 = malloc(T * fx.out_n * 4);
        float *s1 = malloc(fx.state_n * sizeof(float));
        float *st[2] = {calloc(fx.state_n, sizeof(float)), calloc(fx.state_n, sizeof(float))};
        run_solo(&fx, o1, s1);
        rng_state = 77 + (unsigned)_i;
        for (size_t t = 0, c = 0; t < T; c++) {
            size_t n = 1 + (size_t)(urand() * (urand() < 0.5 ? 9 : 120));
            n = n < T - t ? n : T - t;
            const int32_t *tp = fx.tok + t;
            const float *vp = fx.vec + t * D, *ip = st[c % 2];
            float *op = o2 + t * fx.out_n, *fp = st[(c + 1) % 2];
            ck_assert_int_eq(rnnd_net_forward(fx.net,
                                              &(rnnd_seq_batch){1, &n, &tp, &vp, &ip, &op, &fp},
                                              err, sizeof err),
                             0);
            t += n;
            if (t == T)
                ck_assert_msg(!memcmp(fp, s1, fx.state_n * sizeof(float)),
                              "arch %d %s: final state differs", _i, path_for(p)->name);
        }
        ck_assert_msg(!memcmp(o1, o2, T * fx.out_n * sizeof(float)),
                      "arch %d %s: chunked outputs differ from stepping", _i, path_for(p)->name);
        free(o1);
        free(o2);
        free(s1);
        free(st[0]);
        free(st[1]);
        fixture_close(&fx);
    }
}
END_TEST

/* ---- threads: any split gives the bits of one thread ---------------------------------- */

typedef struct par_item {
    void (*fn)(void *arg, size_t i);
    void *arg;
    size_t i;
} par_item;

static void *par_item_main(void *a)
{
    par_item *it = a;
    it->fn(it->arg, it->i);
    return NULL;
}

/* rnnd_parallel for the tests. ctx 0: every item on the caller, last first (parts must not
 * depend on each other's order); ctx 1: item 0 on the caller, each other item on a thread of
 * its own, all at once. */
typedef struct test_par {
    int threaded;
    size_t max_n, calls;
} test_par;

static void test_par_run(void *ctx, void (*fn)(void *arg, size_t i), void *arg, size_t n)
{
    test_par *tp = ctx;
    ck_assert_uint_ge(n, 1);
    ck_assert_uint_le(n, tp->max_n); /* never more items than threads */
    tp->calls++;
    if (!tp->threaded) {
        for (size_t i = n; i-- > 0;)
            fn(arg, i);
        return;
    }
    pthread_t th[8];
    par_item it[8];
    ck_assert_uint_le(n, 8);
    for (size_t i = 1; i < n; i++) {
        it[i] = (par_item){fn, arg, i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, par_item_main, &it[i]), 0);
    }
    fn(arg, 0);
    for (size_t i = 1; i < n; i++)
        pthread_join(th[i], NULL);
}

/* S sessions stepped together T times (PAR NULL: one thread). */
static void run_batched(const fixture *fx, const rnnd_parallel *par, float *outs, float *states)
{
    char err[256];
    size_t S = fx->S, D = (size_t)fx->spec->input_dim;
    rnnd_work *w = rnnd_work_new(fx->net, S);
    float **sp = malloc(S * sizeof *sp);
    int32_t *tok = malloc(S * sizeof *tok);
    float *vec = malloc(S * D * sizeof *vec);
    memset(states, 0, S * fx->state_n * sizeof(float));
    for (size_t s = 0; s < S; s++)
        sp[s] = states + s * fx->state_n;
    for (size_t t = 0; t < fx->T; t++) {
        for (size_t s = 0; s < S; s++) {
            tok[s] = fx->tok[s * fx->T + t];
            memcpy(vec + s * D, fx->vec + (s * fx->T + t) * D, D * sizeof(float));
        }
        int rc = rnnd_net_step_par(fx->net, w, S, tok, vec, sp, outs + t * S * fx->out_n, par, err,
                                   sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
    }
    free(sp);
    free(tok);
    free(vec);
    rnnd_work_free(w);
}

/* Whole sequences of different lengths (PAR NULL: one thread). */
static void run_whole(const fixture *fx, const rnnd_parallel *par, float *outs, float *finals)
{
    char err[256];
    size_t S = fx->S, T = fx->T, D = (size_t)fx->spec->input_dim;
    size_t *lens = malloc(S * sizeof *lens);
    const int32_t **tp = malloc(S * sizeof *tp);
    const float **vp = malloc(S * sizeof *vp);
    float **op = malloc(S * sizeof *op), **fp = malloc(S * sizeof *fp);
    for (size_t s = 0; s < S; s++) {
        lens[s] = T - (s * 5) % T;
        tp[s] = fx->tok + s * T;
        vp[s] = fx->vec + s * T * D;
        op[s] = outs + s * T * fx->out_n;
        fp[s] = finals + s * fx->state_n;
    }
    memset(outs, 0, S * T * fx->out_n * sizeof(float));
    int rc = rnnd_net_forward_par(fx->net, &(rnnd_seq_batch){S, lens, tp, vp, NULL, op, fp}, par,
                                  err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    free(lens);
    free(tp);
    free(vp);
    free(op);
    free(fp);
}

/* Every thread count, on real threads and in reverse order on one, gives the bits of no
 * team at all: stepping (stateful models) and whole sequences of different lengths. 7
 * sessions: each stage split among the threads; 50: 16 or more rows per thread, so the
 * team splits the cell by batch rows (run_cell in src/rnn.c). */
static void check_threads(const char *arch, unsigned seed, int stateful)
{
    int np = n_paths();
    for (int p = 0; p < 2 * np; p++) {
        fixture fx;
        size_t S = p < np ? 7 : 50, T = 6;
        fixture_open(&fx, arch, seed, path_for(p % np), S, T);
        const char *isa = path_for(p % np)->name;
        size_t no = S * T * fx.out_n, ns = S * fx.state_n;
        float *o1 = malloc(no * sizeof(float)), *o2 = malloc(no * sizeof(float));
        float *s1 = malloc(ns * sizeof(float)), *s2 = malloc(ns * sizeof(float));
        for (int whole = !stateful; whole < 2; whole++) {
            if (whole)
                run_whole(&fx, NULL, o1, s1);
            else
                run_batched(&fx, NULL, o1, s1);
            for (size_t nt = 1; nt <= 3; nt++)
                for (int threaded = 0; threaded < 2; threaded++) {
#if defined(__SANITIZE_THREAD__)
                    /* Under ThreadSanitizer (CI's step 3) only a run with a second thread can
                     * race; the others repeat what steps 1 and 2 check bit for bit, and took
                     * two thirds of check_rnn's 228 s there. */
                    if (!threaded || nt == 1)
                        continue;
#endif
                    test_par tp = {.threaded = threaded, .max_n = nt};
                    rnnd_parallel par = {test_par_run, &tp, nt, NULL};
                    if (whole)
                        run_whole(&fx, &par, o2, s2);
                    else
                        run_batched(&fx, &par, o2, s2);
                    ck_assert_msg(!memcmp(o1, o2, no * sizeof(float)),
                                  "%s %s: %s, %zu threads: outputs differ", arch, isa,
                                  whole ? "whole" : "step", nt);
                    ck_assert_msg(!memcmp(s1, s2, ns * sizeof(float)),
                                  "%s %s: %s, %zu threads: states differ", arch, isa,
                                  whole ? "whole" : "step", nt);
                    /* with more than one thread the stages really went through the team */
                    ck_assert(nt == 1 ? tp.calls == 0 : tp.calls > 0);
                }
        }
        free(o1);
        free(o2);
        free(s1);
        free(s2);
        fixture_close(&fx);
    }
}

START_TEST(test_threads_bitwise) { check_threads(archs[_i], 400 + (unsigned)_i, 1); }
END_TEST

START_TEST(test_threads_bitwise_bidir) { check_threads(bidir_arch, 499, 0); }
END_TEST

/* ---- half-size weights ------------------------------------------------------------------ */

/* ARCH with "weights": TYPE added (every arch above starts {"format_version":1,). */
static const char *half_arch(const char *arch, const char *type)
{
    static char buf[2][8192];
    static int next;
    char *b = buf[next++ % 2];
    const char *prefix = "{\"format_version\":1,";
    ck_assert(strncmp(arch, prefix, strlen(prefix)) == 0);
    int n =
        snprintf(b, sizeof buf[0], "%s\"weights\":\"%s\",%s", prefix, type, arch + strlen(prefix));
    ck_assert(n > 0 && (size_t)n < sizeof buf[0]);
    return b;
}

#define HALF_TYPE(i) ((i) % 2 ? "f16" : "bf16")
#define HALF_ARCH_OF(i) half_arch(archs[(i) / 2], HALF_TYPE(i))

/* The random model of ARCH and SEED; with ROUND_TO (bf16 / f16, or 0) its weight matrices
 * (names ending .W .R .proj .V .D, and a head linear's weight: what the kernels read)
 * rounded in the image by src/half.h, which check_kernels holds against the definition. */
static rnnd_model *random_model(const char *arch, unsigned seed, int round_to)
{
    tu_file *f = tu_random_model(arch, seed);
    ck_assert_ptr_nonnull(f);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    tu_file_free(f);
    if (round_to) {
        size_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | img[i];
        json_error_t jerr;
        json_t *hdr = json_loadb((const char *)img + 8, hlen, 0, &jerr);
        ck_assert_ptr_nonnull(hdr);
        const char *name;
        json_t *v;
        size_t rounded = 0;
        json_object_foreach(hdr, name, v) {
            size_t nl = strlen(name);
            /* a head linear's weight is 2-D, a layernorm's 1-D */
            int is_matrix =
                (!strncmp(name, "head.", 5) && nl > 7 && !strcmp(name + nl - 7, ".weight") &&
                 json_array_size(json_object_get(v, "shape")) == 2) ||
                (nl > 2 &&
                 (!strcmp(name + nl - 2, ".W") || !strcmp(name + nl - 2, ".R") ||
                  !strcmp(name + nl - 2, ".V") || !strcmp(name + nl - 2, ".D"))) ||
                (nl > 5 && !strcmp(name + nl - 5, ".proj"));
            if (!is_matrix)
                continue;
            json_t *offs = json_object_get(v, "data_offsets");
            size_t b = (size_t)json_integer_value(json_array_get(offs, 0));
            size_t e = (size_t)json_integer_value(json_array_get(offs, 1));
            for (size_t at = b; at < e; at += 4) {
                float x;
                memcpy(&x, img + 8 + hlen + at, 4);
                x = round_to == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32(rnnd_f32_to_bf16(x))
                                                  : rnnd_f16_to_f32(rnnd_f32_to_f16(x));
                memcpy(img + 8 + hlen + at, &x, 4);
            }
            rounded++;
        }
        ck_assert_uint_gt(rounded, 0);
        json_decref(hdr);
    }
    char err[512];
    rnnd_model *m = NULL;
    int rc = rnnd_model_from_buffer(img, len, "random", &m, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    free(img);
    return m;
}

/* A bf16 / f16 model computes bitwise what a float model with the same weight matrices
 * rounded beforehand computes (so: exactly those tensors are rounded, to nearest even, and
 * the kernels widen exactly), on every path, stepping and whole sequences; and not what the
 * unrounded model computes. Loop index: arch * 2 + (0 bf16, 1 f16). */
START_TEST(test_half_equals_prerounded)
{
    const char *arch = archs[_i / 2];
    int type = _i % 2 ? RNND_WEIGHTS_F16 : RNND_WEIGHTS_BF16;
    unsigned seed = 600 + (unsigned)_i;
    size_t S = 5, T = 7;
    int np = n_paths();
    for (int p = 0; p < np; p++) {
        fixture fh, fr, f0;
        fixture_from(&fh, random_model(HALF_ARCH_OF(_i), seed, 0), seed, path_for(p), S, T);
        fixture_from(&fr, random_model(arch, seed, type), seed, path_for(p), S, T);
        fixture_from(&f0, random_model(arch, seed, 0), seed, path_for(p), S, T);
        ck_assert_int_eq(fh.spec->weights, type);
        size_t no = S * T * fh.out_n, ns = S * fh.state_n;
        float *oh = malloc(no * sizeof(float)), *orr = malloc(no * sizeof(float));
        float *o0 = malloc(no * sizeof(float));
        float *sh = malloc(ns * sizeof(float)), *sr = malloc(ns * sizeof(float));
        float *s0 = malloc(ns * sizeof(float));
        run_solo(&fh, oh, sh);
        run_solo(&fr, orr, sr);
        run_solo(&f0, o0, s0);
        ck_assert_msg(!memcmp(oh, orr, no * sizeof(float)) && !memcmp(sh, sr, ns * 4),
                      "arch %d %s %s: step path differs from the prerounded float model", _i / 2,
                      HALF_TYPE(_i), path_for(p)->name);
        ck_assert_msg(memcmp(oh, o0, no * sizeof(float)) != 0, "arch %d %s %s: same as unrounded",
                      _i / 2, HALF_TYPE(_i), path_for(p)->name);
        run_whole(&fh, NULL, oh, sh);
        run_whole(&fr, NULL, orr, sr);
        ck_assert_msg(!memcmp(oh, orr, no * sizeof(float)) && !memcmp(sh, sr, ns * 4),
                      "arch %d %s %s: whole sequences differ from the prerounded model", _i / 2,
                      HALF_TYPE(_i), path_for(p)->name);
        free(oh);
        free(orr);
        free(o0);
        free(sh);
        free(sr);
        free(s0);
        fixture_close(&fh);
        fixture_close(&fr);
        fixture_close(&f0);
    }
}
END_TEST

START_TEST(test_half_batch_invariance)
{
    int np = n_paths();
    for (int p = 0; p < np; p++)
        check_batch_invariance(path_for(p), HALF_ARCH_OF(_i), 700 + (unsigned)_i, 24, 6);
}
END_TEST

START_TEST(test_half_threads_bitwise) { check_threads(HALF_ARCH_OF(_i), 800 + (unsigned)_i, 1); }
END_TEST

/* avx2 == avx512 with half weights, end to end (the gemv tiles widen differently: 8 vs 16
 * halves per load). */
START_TEST(test_half_avx2_equals_avx512)
{
    const rnnd_kernels *a = rnnd_kernels_by_name("avx2"), *b = rnnd_kernels_by_name("avx512");
    if (!a || !b)
        return; /* this CPU lacks one of them: nothing to compare */
    fixture fa, fb;
    unsigned seed = 900 + (unsigned)_i;
    fixture_from(&fa, random_model(HALF_ARCH_OF(_i), seed, 0), seed, a, 6, 9);
    fixture_from(&fb, random_model(HALF_ARCH_OF(_i), seed, 0), seed, b, 6, 9);
    size_t n = 6 * 9 * fa.out_n, ns = 6 * fa.state_n;
    float *o1 = malloc(n * sizeof(float)), *o2 = malloc(n * sizeof(float));
    float *s1 = malloc(ns * sizeof(float)), *s2 = malloc(ns * sizeof(float));
    run_solo(&fa, o1, s1);
    run_solo(&fb, o2, s2);
    ck_assert_msg(!memcmp(o1, o2, n * sizeof(float)) && !memcmp(s1, s2, ns * sizeof(float)),
                  "arch %d %s: avx2 and avx512 differ", _i / 2, HALF_TYPE(_i));
    free(o1);
    free(o2);
    free(s1);
    free(s2);
    fixture_close(&fa);
    fixture_close(&fb);
}
END_TEST

/* ---- int8 weights ------------------------------------------------------------------------ */

/* ARCH I with "weights": "int8": the random F32 matrices are quantized at load. */
#define Q8_ARCH_OF(i) half_arch(archs[i], "int8")

/* Sessions batched in random groups give the bits of each alone, on every path. */
START_TEST(test_int8_batch_invariance)
{
    int np = n_paths();
    for (int p = 0; p < np; p++)
        check_batch_invariance(path_for(p), Q8_ARCH_OF(_i), 1100 + (unsigned)_i, 24, 6);
}
END_TEST

START_TEST(test_int8_threads_bitwise) { check_threads(Q8_ARCH_OF(_i), 1200 + (unsigned)_i, 1); }
END_TEST

/* One session stepped alone, the same steps as whole sequences in random chunks (each
 * chunk's input projection one gemv over all its steps), and as whole sequences of
 * different lengths batched: bitwise the same outputs and states, on every path. */
static void check_chunks(const char *arch, unsigned seed, int _i)
{
    int np = n_paths();
    char err[256];
    for (int p = 0; p < np; p++) {
        fixture fx;
        size_t T = 90, S = 4, D;
        fixture_open(&fx, arch, seed, path_for(p), S, T);
        D = (size_t)fx.spec->input_dim;
        size_t no = S * T * fx.out_n, ns = S * fx.state_n;
        float *o1 = malloc(no * sizeof(float)), *o2 = malloc(no * sizeof(float));
        float *s1 = malloc(ns * sizeof(float)), *s2 = malloc(ns * sizeof(float));
        float *st[2] = {calloc(fx.state_n, sizeof(float)), calloc(fx.state_n, sizeof(float))};
        run_solo(&fx, o1, s1);
        rng_state = 91 + (unsigned)_i;
        for (size_t t = 0, c = 0; t < T; c++) { /* session 0 in chunks */
            size_t n = 1 + (size_t)(urand() * (urand() < 0.5 ? 5 : 40));
            n = n < T - t ? n : T - t;
            const int32_t *tp = fx.tok + t;
            const float *vp = fx.vec + t * D, *ip = st[c % 2];
            float *op = o2 + t * fx.out_n, *fp = st[(c + 1) % 2];
            ck_assert_int_eq(rnnd_net_forward(fx.net,
                                              &(rnnd_seq_batch){1, &n, &tp, &vp, &ip, &op, &fp},
                                              err, sizeof err),
                             0);
            t += n;
            if (t == T)
                ck_assert_msg(!memcmp(fp, s1, fx.state_n * sizeof(float)),
                              "arch %d %s: chunked final state differs", _i, path_for(p)->name);
        }
        ck_assert_msg(!memcmp(o1, o2, T * fx.out_n * sizeof(float)),
                      "arch %d %s: chunked outputs differ from stepping", _i, path_for(p)->name);
        /* and with OpenBLAS asked for, which an int8 or bf16 net ignores (sgemm would
         * multiply by the integers q, or take other products) */
        for (int blas = 0; blas < 2; blas++) {
            rnnd_net_use_openblas(fx.net, blas);
            run_whole(&fx, NULL, o2, s2); /* sequence s runs T - 5s steps */
            for (size_t s = 0; s < S; s++) {
                size_t len = T - (s * 5) % T, at = s * T * fx.out_n;
                ck_assert_msg(!memcmp(o1 + at, o2 + at, len * fx.out_n * sizeof(float)),
                              "arch %d %s blas %d: whole sequence %zu differs from stepping", _i,
                              path_for(p)->name, blas, s);
            }
            ck_assert_msg(!memcmp(s1, s2, fx.state_n * sizeof(float)),
                          "arch %d %s blas %d: whole final state differs", _i, path_for(p)->name,
                          blas);
        }
        free(o1);
        free(o2);
        free(s1);
        free(s2);
        free(st[0]);
        free(st[1]);
        fixture_close(&fx);
    }
}

START_TEST(test_int8_chunks) { check_chunks(Q8_ARCH_OF(_i), 1300 + (unsigned)_i, _i); }
END_TEST

/* avx2 (vpmaddwd) and avx512 (vpdpbusd) give the same bits end to end; and an int8 model
 * computes something else than its float original, but close to it. */
START_TEST(test_int8_paths_and_accuracy)
{
    const rnnd_kernels *a = rnnd_kernels_by_name("avx2"), *b = rnnd_kernels_by_name("avx512");
    unsigned seed = 1400 + (unsigned)_i;
    size_t S = 6, T = 9;
    fixture fq, ff;
    fixture_open(&fq, Q8_ARCH_OF(_i), seed, rnnd_kernels_by_name("scalar"), S, T);
    size_t n = S * T * fq.out_n, ns = S * fq.state_n;
    float *o1 = malloc(n * sizeof(float)), *o2 = malloc(n * sizeof(float));
    float *s1 = malloc(ns * sizeof(float)), *s2 = malloc(ns * sizeof(float));
    /* the same weights as f32: tu_write_random_model(seed) gives the same values */
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/rnn_q8f_%u.rnnd", tu_tmpdir(), seed);
    ck_assert_int_eq(tu_write_random_model(path, archs[_i], seed), 0);
    rnnd_model *m = NULL;
    ck_assert_msg(rnnd_model_open(path, &m, err, sizeof err) == 0, "%s", err);
    fixture_from(&ff, m, seed, rnnd_kernels_by_name("scalar"), S, T);
    run_solo(&fq, o1, s1);
    run_solo(&ff, o2, s2);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)o1[i] - o2[i]) / (1.0 + fabs((double)o2[i])));
    ck_assert_msg(memcmp(o1, o2, n * sizeof(float)) != 0, "arch %d: int8 equals f32", _i);
    /* |int8 - f32| / (1 + |f32|), random weights in [-0.5, 0.5), inputs in [-2, 2): 1.2e-3
     * to 3.3e-2 measured, 6.2e-2 for the 11 Elman layers of every activation: about twice */
    ck_assert_msg(worst < 0.125, "arch %d: int8 off by %g from f32", _i, worst);
    fixture_close(&fq);
    fixture_close(&ff);
    if (a && b) {
        fixture_open(&fq, Q8_ARCH_OF(_i), seed, a, S, T);
        fixture_open(&ff, Q8_ARCH_OF(_i), seed, b, S, T);
        run_solo(&fq, o1, s1);
        run_solo(&ff, o2, s2);
        ck_assert_msg(!memcmp(o1, o2, n * sizeof(float)) && !memcmp(s1, s2, ns * sizeof(float)),
                      "arch %d: int8 avx2 and avx512 differ", _i);
        fixture_close(&fq);
        fixture_close(&ff);
    }
    free(o1);
    free(o2);
    free(s1);
    free(s2);
}
END_TEST

/* ---- the bf16 compute mode (docs/kernels.md, "bf16 compute") ------------------------------ */

/* ARCH I as a bf16 model, run with rnnd_model_set_compute(RNND_COMPUTE_BF16). */
#define BF16C_ARCH_OF(i) half_arch(archs[i], "bf16")

/* Sessions batched in random groups give the bits of each alone, on every path. */
START_TEST(test_bf16c_batch_invariance)
{
    int np = n_paths();
    fixture_compute = RNND_COMPUTE_BF16;
    for (int p = 0; p < np; p++)
        check_batch_invariance(path_for(p), BF16C_ARCH_OF(_i), 1500 + (unsigned)_i, 24, 6);
    fixture_compute = RNND_COMPUTE_F32;
}
END_TEST

START_TEST(test_bf16c_threads_bitwise)
{
    fixture_compute = RNND_COMPUTE_BF16;
    check_threads(BF16C_ARCH_OF(_i), 1600 + (unsigned)_i, 1);
    fixture_compute = RNND_COMPUTE_F32;
}
END_TEST

/* Stepped alone = whole sequences in random chunks = whole sequences batched. */
START_TEST(test_bf16c_chunks)
{
    fixture_compute = RNND_COMPUTE_BF16;
    check_chunks(BF16C_ARCH_OF(_i), 1700 + (unsigned)_i, _i);
    fixture_compute = RNND_COMPUTE_F32;
}
END_TEST

/* avx2 (the scalar statement) and avx512 (VDPBF16PS where the CPU has AVX512-BF16) give the
 * same bits end to end; the mode computes something else than the same bf16 model in the
 * default mode, but close to it; the mode is refused for other weights and once packed. */
START_TEST(test_bf16c_paths_and_accuracy)
{
    const rnnd_kernels *a = rnnd_kernels_by_name("avx2"), *b = rnnd_kernels_by_name("avx512");
    unsigned seed = 1800 + (unsigned)_i;
    size_t S = 6, T = 9;
    fixture fc, ff;
    fixture_compute = RNND_COMPUTE_BF16;
    fixture_open(&fc, BF16C_ARCH_OF(_i), seed, rnnd_kernels_by_name("scalar"), S, T);
    fixture_compute = RNND_COMPUTE_F32;
    fixture_open(&ff, BF16C_ARCH_OF(_i), seed, rnnd_kernels_by_name("scalar"), S, T);
    ck_assert_int_eq(rnnd_model_set_compute(ff.model, RNND_COMPUTE_BF16), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_model_set_compute(ff.model, RNND_COMPUTE_F32), RNND_OK);
    ck_assert_int_eq(rnnd_model_set_compute(fc.model, RNND_COMPUTE_BF16), RNND_OK);
    size_t n = S * T * fc.out_n, ns = S * fc.state_n;
    float *o1 = malloc(n * sizeof(float)), *o2 = malloc(n * sizeof(float));
    float *s1 = malloc(ns * sizeof(float)), *s2 = malloc(ns * sizeof(float));
    run_solo(&fc, o1, s1);
    run_solo(&ff, o2, s2);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)o1[i] - o2[i]) / (1.0 + fabs((double)o2[i])));
    ck_assert_msg(memcmp(o1, o2, n * sizeof(float)) != 0, "arch %d: bf16 compute = f32", _i);
    /* |bf16 compute - f32 compute| / (1 + |f32|) of the same bf16 weights, inputs in [-2, 2) */
    ck_assert_msg(worst < 0.125, "arch %d: bf16 compute off by %g from f32 compute", _i, worst);
    fixture_close(&fc);
    fixture_close(&ff);
    if (a && b) {
        fixture_compute = RNND_COMPUTE_BF16;
        fixture_open(&fc, BF16C_ARCH_OF(_i), seed, a, S, T);
        fixture_open(&ff, BF16C_ARCH_OF(_i), seed, b, S, T);
        fixture_compute = RNND_COMPUTE_F32;
        run_solo(&fc, o1, s1);
        run_solo(&ff, o2, s2);
        ck_assert_msg(!memcmp(o1, o2, n * sizeof(float)) && !memcmp(s1, s2, ns * sizeof(float)),
                      "arch %d: bf16 compute avx2 and avx512 differ", _i);
        fixture_close(&fc);
        fixture_close(&ff);
    }
    /* other weights refuse the mode */
    fixture_open(&ff, archs[_i], seed, rnnd_kernels_by_name("scalar"), 1, 1);
    ck_assert_int_eq(rnnd_model_set_compute(ff.model, RNND_COMPUTE_BF16), RNND_ERR_INVALID);
    fixture_close(&ff);
    free(o1);
    free(o2);
    free(s1);
    free(s2);
}
END_TEST

/* "pool": a bidirectional lstm's output pooled over the steps. Loop index = the pool (1 last,
 * 2 final_state, 3 mean, 4 max). Without a head the pooled row is bitwise the reduction, in
 * step order, of the unpooled model's rows (final_state: the FINAL states' h); in a batch of
 * other lengths it is bitwise what the sequence gets alone; with a head it is the head of
 * the pooled row. */
/* rnnd_net_forward_bytes() counts what a depth gate adds to a whole-sequence call: the
 * cells of every step of the lstm below ([N, H] twice), and the H more columns of its
 * input projection ([N, H] of gx_all and [B, H] of each of two per-row gate buffers), so
 * the server's memory budget sees it before anything is allocated. */
#define DG_ARCH(gate) \
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":5},\"layers\":[" \
    "{\"type\":\"lstm\",\"hidden_size\":9},{\"type\":\"lstm\",\"hidden_size\":9" gate "}]}"
START_TEST(test_forward_bytes_depth_gate)
{
    char err[256];
    rnnd_net *net[2] = {NULL, NULL};
    for (int g = 0; g < 2; g++) {
        rnnd_model *m = NULL;
        ck_assert_msg(rnnd_model_random(g ? DG_ARCH(",\"depth_gate\":true") : DG_ARCH(""), 3, 0.5f,
                                        &m, err, sizeof err) == 0,
                      "%s", err);
        ck_assert_msg(rnnd_net_new(m, path_for(0), &net[g], err, sizeof err) == 0, "%s", err);
        rnnd_model_unref(m);
    }
    size_t B = 3, N = 70, T = 40, H = 9;
    size_t plain = rnnd_net_forward_bytes(net[0], B, N, T);
    size_t gated = rnnd_net_forward_bytes(net[1], B, N, T);
    ck_assert_uint_eq(gated - plain, (N * (2 * H + H) + B * 2 * H) * sizeof(float));
    /* and a call of those sizes runs */
    float *x = calloc(N * 5, sizeof(float)), *y = calloc(N * H, sizeof(float));
    size_t lens[3] = {40, 20, 10};
    const float *xp[3] = {x, x + 40 * 5, x + 60 * 5};
    float *yp[3] = {y, y + 40 * H, y + 60 * H};
    ck_assert_int_eq(rnnd_net_forward(net[1], &(rnnd_seq_batch){B, lens, NULL, xp, NULL, yp, NULL},
                                      err, sizeof err),
                     0);
    free(x);
    free(y);
    rnnd_net_free(net[0]);
    rnnd_net_free(net[1]);
}
END_TEST

#define POOL_ARCH(pool, head) \
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":4},\"layers\":[" \
    "{\"type\":\"lstm\",\"hidden_size\":3,\"direction\":\"bidirectional\"}]" pool head "}"
START_TEST(test_pooling)
{
    static const char *pools[] = {"", ",\"pool\":\"last\"", ",\"pool\":\"final_state\"",
                                  ",\"pool\":\"mean\"", ",\"pool\":\"max\""};
    char arch[512], ahead[512];
    snprintf(arch, sizeof arch, POOL_ARCH("%s", ""), pools[_i]);
    snprintf(ahead, sizeof ahead,
             POOL_ARCH("%s",
                       ",\"head\":{\"out_dim\":2,\"in_dim\":6,"
                       "\"norm\":\"log_softmax\"}"),
             pools[_i]);
    const rnnd_kernels *k = path_for(0);
    rnnd_model *m0 = random_model(POOL_ARCH("", ""), 5, 0);
    rnnd_model *mp = random_model(arch, 5, 0);
    rnnd_model *mh = random_model(ahead, 5, 0);
    rnnd_net *n0, *np, *nh;
    char err[256];
    ck_assert_int_eq(rnnd_net_new(m0, k, &n0, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_net_new(mp, k, &np, err, sizeof err), 0);
    ck_assert_int_eq(rnnd_net_new(mh, k, &nh, err, sizeof err), 0);
    enum { B = 3, TM = 7, D = 4, W = 6, S = 2 * (3 + 3) };
    size_t lens[B] = {4, 1, 7};
    float in[B][TM * D], all[B][TM * W], fin[B][S], pooled[B][W], alone[W] = {0}, head[B][2];
    const float *vec[B];
    float *outs[B], *pouts[B], *fins[B], *houts[B];
    rng_state = 99;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < TM * D; i++)
            in[b][i] = (float)(urand() * 4.0 - 2.0);
        vec[b] = in[b];
        outs[b] = all[b];
        pouts[b] = pooled[b];
        fins[b] = fin[b];
        houts[b] = head[b];
    }
    ck_assert_int_eq(rnnd_net_forward(n0, &(rnnd_seq_batch){B, lens, NULL, vec, NULL, outs, fins},
                                      err, sizeof err),
                     0);
    ck_assert_int_eq(rnnd_net_forward(np, &(rnnd_seq_batch){B, lens, NULL, vec, NULL, pouts, NULL},
                                      err, sizeof err),
                     0);
    ck_assert_int_eq(rnnd_net_forward(nh, &(rnnd_seq_batch){B, lens, NULL, vec, NULL, houts, NULL},
                                      err, sizeof err),
                     0);
    for (int b = 0; b < B; b++) {
        size_t n = lens[b];
        float want[W];
        for (int j = 0; j < W; j++) {
            float v = all[b][j];
            if (_i == 1)
                v = all[b][(n - 1) * W + j];
            else if (_i == 2) /* h of each direction: state [h 3, c 3] per direction */
                v = fin[b][(j / 3) * 6 + j % 3];
            for (size_t t = 1; t < n && _i >= 3; t++) {
                float x = all[b][t * W + j];
                v = _i == 3 ? v + x : (x > v ? x : v);
            }
            want[j] = _i == 3 ? v / (float)n : v;
        }
        ck_assert_msg(!memcmp(want, pooled[b], sizeof want), "pool %d seq %d", _i, b);
        /* alone */
        const float *v1[1] = {in[b]};
        float *o1[1] = {alone};
        ck_assert_int_eq(rnnd_net_forward(np,
                                          &(rnnd_seq_batch){1, &lens[b], NULL, v1, NULL, o1, NULL},
                                          err, sizeof err),
                         0);
        ck_assert_msg(!memcmp(alone, pooled[b], sizeof alone), "pool %d seq %d alone", _i, b);
        /* the head of the pooled row */
        const rnnd_model_spec *hs = rnnd_model_get_spec(mh);
        double z[2], mx = -1e30, sum = 0;
        for (int r = 0; r < 2; r++) {
            z[r] = hs->head_layers[0].b[r];
            for (int j = 0; j < W; j++)
                z[r] += (double)hs->head_layers[0].W[r * W + j] * want[j];
            mx = z[r] > mx ? z[r] : mx;
        }
        for (int r = 0; r < 2; r++)
            sum += exp(z[r] - mx);
        for (int r = 0; r < 2; r++)
            ck_assert_msg(fabs(head[b][r] - (z[r] - mx - log(sum))) < 1e-5,
                          "pool %d seq %d head %d: %g", _i, b, r, head[b][r]);
    }
    rnnd_net_free(n0);
    rnnd_net_free(np);
    rnnd_net_free(nh);
    rnnd_model_unref(m0);
    rnnd_model_unref(mp);
    rnnd_model_unref(mh);
}
END_TEST

/* An MLP head computes, per row, its layers in double precision within float rounding: the
 * model without the head gives the rows it reads (the same seed gives the same layer
 * weights, which come first in the file). */
static void head_ref(const rnnd_model_spec *s, const float *x, double *y)
{
    double a[64], b[64];
    int w = s->head_in;
    for (int i = 0; i < w; i++)
        a[i] = x[i];
    for (int k = 0; k < s->head_n; k++) {
        const rnnd_head_layer *h = &s->head_layers[k];
        if (h->op == RNND_HEAD_LINEAR) {
            for (int r = 0; r < h->out_dim; r++) {
                b[r] = h->b[r];
                for (int i = 0; i < w; i++)
                    b[r] += (double)h->W[(size_t)r * w + i] * a[i];
            }
            w = h->out_dim;
            memcpy(a, b, sizeof a);
            continue;
        }
        double mean = 0, var = 0;
        if (h->op == RNND_HEAD_LAYERNORM) {
            for (int i = 0; i < w; i++)
                mean += a[i] / w;
            for (int i = 0; i < w; i++)
                var += (a[i] - mean) * (a[i] - mean) / w;
        }
        for (int i = 0; i < w; i++) {
            double v = a[i];
            switch (h->op) {
            case RNND_HEAD_RELU: v = v > 0 ? v : 0; break;
            case RNND_HEAD_TANH: v = tanh(v); break;
            case RNND_HEAD_SIGMOID: v = 1 / (1 + exp(-v)); break;
            case RNND_HEAD_GELU: v = 0.5 * v * (1 + erf(v / sqrt(2.0))); break;
            case RNND_HEAD_GELU_TANH:
                v = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
                break;
            case RNND_HEAD_LAYERNORM:
                v = (v - mean) / sqrt(var + h->eps);
                if (h->affine)
                    v = v * h->W[i] + h->b[i];
                break;
            }
            a[i] = v;
        }
    }
    double mx = a[0], sum = 0;
    for (int i = 1; i < w; i++)
        mx = a[i] > mx ? a[i] : mx;
    for (int i = 0; i < w; i++)
        sum += exp(a[i] - mx);
    for (int i = 0; i < w; i++)
        y[i] = s->head_norm == RNND_NORM_SOFTMAX    ? exp(a[i] - mx) / sum
            : s->head_norm == RNND_NORM_LOG_SOFTMAX ? a[i] - mx - log(sum)
                                                    : a[i];
}

START_TEST(test_head_layers_reference)
{
    static const char *const with[] = {MLP_ARCH_TOKENS, MLP_ARCH_VECTORS};
    static const char *const without[] = {
        "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":50,"
        "\"embedding_dim\":13},\"layers\":[{\"type\":\"gru\",\"hidden_size\":29}]}",
        "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":13},\"layers\":["
        "{\"type\":\"lstm\",\"hidden_size\":37}]}",
    };
    int np = n_paths();
    for (int p = 0; p < np; p++) {
        fixture fh, f0;
        size_t S = 3, T = 5;
        fixture_from(&fh, random_model(with[_i], 31, 0), 31, path_for(p), S, T);
        fixture_from(&f0, random_model(without[_i], 31, 0), 31, path_for(p), S, T);
        float *oh = malloc(S * T * fh.out_n * sizeof(float));
        float *o0 = malloc(S * T * f0.out_n * sizeof(float));
        float *st = malloc(S * fh.state_n * sizeof(float));
        run_solo(&fh, oh, st);
        run_solo(&f0, o0, st);
        for (size_t r = 0; r < S * T; r++) {
            double want[64];
            head_ref(fh.spec, o0 + r * f0.out_n, want);
            for (size_t j = 0; j < fh.out_n; j++) {
                double g = oh[r * fh.out_n + j];
                ck_assert_msg(fabs(g - want[j]) <= 1e-5 * fmax(1.0, fabs(want[j])),
                              "%s arch %d row %zu out %zu: %.9g, want %.9g", path_for(p)->name, _i,
                              r, j, g, want[j]);
            }
        }
        free(oh);
        free(o0);
        free(st);
        fixture_close(&fh);
        fixture_close(&f0);
    }
}
END_TEST

/* ---- resident memory of the weights ----------------------------------------------------- */

/* Bytes the allocator holds for the program now: the sanitizers' own count under
 * --enable-sanitizers / --enable-tsan (glibc's malloc is not used there), else glibc's. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_bytes(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#endif

/* What a loaded model of CELL with weights TYPE keeps: the heap's growth from before the load
 * to a net ready to run (the model held by the net alone). */
static size_t loaded_bytes(const char *cell, const char *type)
{
    char arch[512], err[512];
    snprintf(arch, sizeof arch,
             "{\"format_version\":1,\"weights\":\"%s\","
             "\"input\":{\"kind\":\"vectors\",\"dim\":256},\"layers\":["
             "{\"type\":\"%s\",\"hidden_size\":256},{\"type\":\"%s\",\"hidden_size\":256}]}",
             type, cell, cell);
    size_t before = heap_bytes();
    rnnd_model *m = NULL;
    rnnd_net *n = NULL;
    ck_assert_msg(rnnd_model_random(arch, 5, 1.0f / 256, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(rnnd_net_new(m, path_for(0), &n, err, sizeof err) == 0, "%s", err);
    rnnd_model_unref(m);
    size_t after = heap_bytes();
    rnnd_net_free(n);
    return after > before ? after - before : 0;
}

/* Issue 19: a bf16 / f16 model keeps at most 55% of the float model's memory, an int8 one at
 * most 30% (they keep their matrices only packed, in their own type). Loop: lstm, gru. */
START_TEST(test_half_int8_memory)
{
    const char *cell = _i ? "gru" : "lstm";
    size_t f32 = loaded_bytes(cell, "f32");
    /* the count works: at least one copy of the matrices (2 layers of >= 3 gates) */
    ck_assert_uint_ge(f32, (size_t)2 * 3 * 256 * 512 * sizeof(float));
    const char *types[] = {"bf16", "f16", "int8"};
    const double bound[] = {0.55, 0.55, 0.30};
    for (int t = 0; t < 3; t++) {
        size_t got = loaded_bytes(cell, types[t]);
        printf("%s %s: %zu bytes, %.1f%% of f32's %zu\n", cell, types[t], got,
               100.0 * (double)got / (double)f32, f32);
        ck_assert_msg((double)got <= bound[t] * (double)f32,
                      "%s %s keeps %zu bytes, over %.0f%% of f32's %zu", cell, types[t], got,
                      100 * bound[t], f32);
    }
}
END_TEST

static Suite *rnn_suite(void)
{
    Suite *s = suite_create("rnn");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_batch_invariance, 0, (int)N_ARCHS);
    tcase_add_test(tc, test_batch_invariance_256);
    tcase_add_loop_test(tc, test_clock_counters, 0, 2);
    tcase_add_loop_test(tc, test_step_vs_forward, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_avx2_equals_avx512, 0, (int)N_ARCHS);
    tcase_add_test(tc, test_slstm_paths_bitwise);
    tcase_add_test(tc, test_bad_token_changes_nothing);
    tcase_add_test(tc, test_bidirectional_refuses_step);
    tcase_add_test(tc, test_long_sequence);
    tcase_add_loop_test(tc, test_forward_chunks, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_pooling, 1, 5);
    tcase_add_loop_test(tc, test_head_layers_reference, 0, 2);
    tcase_add_test(tc, test_forward_bytes_depth_gate);
    tcase_add_loop_test(tc, test_threads_bitwise, 0, (int)N_ARCHS);
    tcase_add_test(tc, test_threads_bitwise_bidir);
    /* half-size weights: every arch, bf16 and f16 */
    tcase_add_loop_test(tc, test_half_equals_prerounded, 0, 2 * (int)N_ARCHS);
    tcase_add_loop_test(tc, test_half_batch_invariance, 0, 2 * (int)N_ARCHS);
    tcase_add_loop_test(tc, test_half_threads_bitwise, 0, 2 * (int)N_ARCHS);
    tcase_add_loop_test(tc, test_half_avx2_equals_avx512, 0, 2 * (int)N_ARCHS);
    tcase_add_loop_test(tc, test_int8_batch_invariance, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_int8_threads_bitwise, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_int8_chunks, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_int8_paths_and_accuracy, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_bf16c_batch_invariance, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_bf16c_threads_bitwise, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_bf16c_chunks, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_bf16c_paths_and_accuracy, 0, (int)N_ARCHS);
    tcase_add_loop_test(tc, test_half_int8_memory, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    /* The daemon runs OpenBLAS on the calling thread only (main.c); so do the tests of its
     * OpenBLAS path. OpenBLAS's own pool synchronises outside ThreadSanitizer's view, which
     * then reports its writes as races with the caller's reads. */
    openblas_set_num_threads(1);
#endif
    SRunner *sr = srunner_create(rnn_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
