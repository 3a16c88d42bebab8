/* Golden conformance through the step API: every stateful case of $RNND_GOLDEN_DIR, of
 * tests/data/golden_min (minGRU / minLSTM), of tests/data/golden_slstm, of
 * tests/data/golden_clock and of tests/data/golden_dglstm (the depth-gated LSTM), fed one step
 * per call, alone and batched with the case's other sequences, on every kernel path.
 * (tests/test_golden.py covers every case through `rnnd infer`.) */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "testutil.h"

typedef struct golden {
    char name[128];
    json_t *c; /* case.json */
    rnnd_model *model;
} golden;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Convert DIR/SRC (model.onnx, or a native spec's model.json) with the project's converter
 * into the scratch directory. */
static rnnd_model *convert_and_open(const char *dir, const char *src, const char *name)
{
    const char *py = getenv("PYTHON3");
    char out[1024], cmd[4096], err[512];
    snprintf(out, sizeof out, "%s/golden_step_%s.rnnd", tu_tmpdir(), name);
    snprintf(cmd, sizeof cmd, "'%s' -m rnnd_convert '%s/%s' -o '%s'", py ? py : "/usr/bin/python3",
             dir, src, out);
    ck_assert_msg(system(cmd) == 0, "converter failed: %s", cmd);
    rnnd_model *m = NULL;
    int rc = rnnd_model_open(out, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    return m;
}

/* The case folders of ROOT (sorted) appended to NAMES (paths), N of them so far. */
static int list_cases(const char *root, char **names, int n, int max)
{
    DIR *d = opendir(root);
    ck_assert_msg(d != NULL, "cannot open golden dir %s", root);
    int first = n;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s/case.json", root, e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        fclose(f);
        snprintf(p, sizeof p, "%s/%s", root, e->d_name);
        names[n++] = strdup(p);
    }
    closedir(d);
    ck_assert_msg(n > first, "no golden cases in %s", root);
    qsort(names + first, (size_t)(n - first), sizeof *names, cmp_names);
    return n;
}

/* The cases of $RNND_GOLDEN_DIR, then the minGRU / minLSTM native-spec cases of
 * tests/data/golden_min (its sibling ../data/golden_min), the sLSTM ones of
 * tests/data/golden_slstm, the clockwork ones of tests/data/golden_clock and the depth-gated
 * LSTM ones of tests/data/golden_dglstm. */
static int load_cases(golden **out)
{
    const char *root = getenv("RNND_GOLDEN_DIR");
    ck_assert_msg(root && *root, "RNND_GOLDEN_DIR is not set");
    char min_root[1024], sl_root[1024], clock_root[1024], dg_root[1024];
    snprintf(min_root, sizeof min_root, "%s/../data/golden_min", root);
    snprintf(sl_root, sizeof sl_root, "%s/../data/golden_slstm", root);
    snprintf(clock_root, sizeof clock_root, "%s/../data/golden_clock", root);
    snprintf(dg_root, sizeof dg_root, "%s/../data/golden_dglstm", root);
    char *names[256];
    int n = list_cases(root, names, 0, 256);
    n = list_cases(min_root, names, n, 256);
    n = list_cases(sl_root, names, n, 256);
    n = list_cases(clock_root, names, n, 256);
    n = list_cases(dg_root, names, n, 256);
    golden *g = calloc((size_t)n, sizeof *g);
    for (int i = 0; i < n; i++) {
        char p[1100];
        json_error_t je;
        const char *dir = names[i], *base = strrchr(dir, '/') + 1;
        snprintf(p, sizeof p, "%s/case.json", dir);
        snprintf(g[i].name, sizeof g[i].name, "%s", base);
        g[i].c = json_load_file(p, 0, &je);
        ck_assert_msg(g[i].c != NULL, "%s: %s", p, je.text);
        const char *src = json_string_value(json_object_get(g[i].c, "model"));
        if (json_is_true(json_object_get(g[i].c, "stateful")))
            g[i].model = convert_and_open(dir, src ? src : "model.onnx", base);
        free(names[i]);
    }
    *out = g;
    return n;
}

static int close_enough(float got, double exp, double atol, double rtol)
{
    return isfinite(got) && fabs((double)got - exp) <= atol + rtol * fabs(exp);
}

/* Runs one case on one path; returns the number of stateful checks made. */
static int run_case(const golden *g, const rnnd_kernels *k)
{
    char err[512];
    const json_t *seqs = json_object_get(g->c, "sequences");
    const json_t *expected = json_object_get(g->c, "expected");
    const json_t *final_h = json_object_get(g->c, "final_h");
    const json_t *final_t = json_object_get(g->c, "final_t"); /* clockwork cases */
    double atol = json_number_value(json_object_get(g->c, "atol"));
    double rtol = json_number_value(json_object_get(g->c, "rtol"));
    int tokens = !strcmp(json_string_value(json_object_get(json_object_get(g->c, "input"), "kind")),
                         "tokens");
    rnnd_net *net;
    ck_assert_msg(rnnd_net_new(g->model, k, &net, err, sizeof err) == 0, "%s", err);
    const rnnd_model_spec *spec = rnnd_model_get_spec(g->model);
    size_t B = json_array_size(seqs), D = (size_t)spec->input_dim;
    size_t sn = rnnd_net_state_floats(net), on = (size_t)rnnd_net_output_dim(net);
    float *solo = calloc(B * sn, sizeof(float)), *batch = calloc(B * sn, sizeof(float));
    float *out = malloc(B * on * sizeof(float)), *x = malloc(B * D * sizeof(float));
    float **sp = malloc(B * sizeof *sp);
    int32_t *tok = malloc(B * sizeof *tok);
    size_t *who = malloc(B * sizeof *who);
    rnnd_work *w = rnnd_work_new(net, B);
    size_t maxlen = 0;
    for (size_t b = 0; b < B; b++)
        if (json_array_size(json_array_get(seqs, b)) > maxlen)
            maxlen = json_array_size(json_array_get(seqs, b));

    for (int mode = 0; mode < 2; mode++) { /* 0: each sequence alone; 1: batched */
        float *states = mode ? batch : solo;
        for (size_t t = 0; t < maxlen; t++) {
            size_t nb = 0;
            for (size_t b = 0; b < B; b++) {
                const json_t *step = json_array_get(json_array_get(seqs, b), t);
                if (!step)
                    continue;
                if (tokens) {
                    tok[nb] = (int32_t)json_integer_value(step);
                } else {
                    for (size_t j = 0; j < D; j++)
                        x[nb * D + j] = (float)json_number_value(json_array_get(step, j));
                }
                sp[nb] = states + b * sn;
                who[nb++] = b;
            }
            size_t per = mode ? nb : 1;
            for (size_t i0 = 0; i0 < nb; i0 += per) {
                int rc = rnnd_net_step(net, w, per, tok + i0, x + i0 * D, sp + i0, out + i0 * on,
                                       err, sizeof err);
                ck_assert_msg(rc == 0, "%s: %s", g->name, err);
            }
            for (size_t i = 0; i < nb; i++) {
                const json_t *e = json_array_get(json_array_get(expected, who[i]), t);
                ck_assert_uint_eq(json_array_size(e), on);
                for (size_t j = 0; j < on; j++)
                    ck_assert_msg(close_enough(out[i * on + j],
                                               json_number_value(json_array_get(e, j)), atol, rtol),
                                  "%s [%s] seq %zu step %zu elem %zu: got %.9g want %.9g", g->name,
                                  k->name, who[i], t, j, out[i * on + j],
                                  json_number_value(json_array_get(e, j)));
            }
        }
    }
    ck_assert_msg(!memcmp(solo, batch, B * sn * sizeof(float)),
                  "%s [%s]: batched states differ bitwise from solo", g->name, k->name);
    /* final_h: layer by layer, every direction; the h part of each block of the state */
    for (size_t b = 0; b < B; b++) {
        const json_t *fh = json_array_get(final_h, b);
        size_t off = 0, idx = 0;
        for (int l = 0; l < spec->n_layers; l++) {
            const rnnd_layer_spec *L = &spec->layers[l];
            for (int d = 0; d < L->num_directions; d++, idx++) {
                const json_t *h = json_array_get(fh, idx);
                ck_assert_uint_eq(json_array_size(h), (size_t)L->out_dim);
                for (int j = 0; j < L->out_dim; j++)
                    ck_assert_msg(close_enough(solo[b * sn + off + (size_t)j],
                                               json_number_value(json_array_get(h, j)), atol, rtol),
                                  "%s [%s] final_h seq %zu layer %d elem %d", g->name, k->name, b,
                                  l, j);
                /* a clockwork layer's counter: exactly the steps of the sequence */
                const json_t *t = json_array_get(json_array_get(final_t, b), (size_t)l);
                if (L->cell == RNND_CELL_CLOCKWORK)
                    ck_assert_msg(json_is_integer(t) &&
                                      rnnd_clock_get(solo + b * sn + off + (size_t)L->out_dim) ==
                                          (uint64_t)json_integer_value(t),
                                  "%s [%s] final t seq %zu layer %d", g->name, k->name, b, l);
                off += (size_t)L->out_dim + rnnd_layer_extra_state(L);
            }
        }
        ck_assert_uint_eq(idx, json_array_size(fh));
    }
    rnnd_work_free(w);
    free(solo);
    free(batch);
    free(out);
    free(x);
    free(sp);
    free(tok);
    free(who);
    rnnd_net_free(net);
    return 1;
}

START_TEST(test_golden_steps)
{
    golden *g;
    int n = load_cases(&g), checked = 0;
    for (const char *const *p = rnnd_kernels_available(); *p; p++) {
        const rnnd_kernels *k = rnnd_kernels_by_name(*p);
        ck_assert_ptr_nonnull(k);
        for (int i = 0; i < n; i++)
            if (g[i].model) {
                checked += run_case(&g[i], k);
                printf("golden step %-28s %-7s ok\n", g[i].name, k->name);
            }
    }
    ck_assert_msg(checked >= 3, "only %d stateful golden checks ran", checked);
    for (int i = 0; i < n; i++) {
        json_decref(g[i].c);
        rnnd_model_unref(g[i].model);
    }
    free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("golden_step");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_golden_steps);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
