/* The model loader: valid files of every layer type and option load with the right spec;
 * every validation branch rejects its malformed file with the right status, key and reason;
 * files of other formats (ONNX, PyTorch, pickles, .npz, safetensors) are named as such, and
 * look-alike .rnnd files are not; SHA-256 against published vectors and sha256sum. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "rnnd/model.h"
#include "rnnd/status.h"
#include "sha256.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static char *tmp_path(const char *name)
{
    static char buf[4][4096];
    static int next;
    const char *dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/check_model_%ld_%s.rnnd", dir, (long)getpid(), name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
    ck_assert_int_eq(fclose(fp), 0);
}

/* An image from a raw header text (not padded: the caller controls alignment) and DATA_LEN
 * bytes of data. HLEN_OVERRIDE, if not -1, is written as the header length instead. */
static unsigned char *raw_image(const char *header, size_t data_len, long long hlen_override,
                                size_t *len)
{
    size_t n = strlen(header);
    *len = 8 + n + data_len;
    unsigned char *img = calloc(1, *len);
    ck_assert_ptr_nonnull(img);
    unsigned long long h = hlen_override == -1 ? n : (unsigned long long)hlen_override;
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)(h >> (8 * i));
    memcpy(img + 8, header, n);
    return img;
}

/* Open IMG both as a file and as a buffer; both must fail with STATUS and a one-line message
 * "LABEL: KEY: ...REASON...". */
static void expect_fail_img(const char *tag, const unsigned char *img, size_t len, int status,
                            const char *key, const char *reason)
{
    char *path = tmp_path(tag);
    write_bytes(path, img, len);
    char err[512] = "";
    rnnd_model *m = (rnnd_model *)1;
    int rc = rnnd_model_open(path, &m, err, sizeof err);
    ck_assert_msg(rc == status, "%s: status %d, want %d (%s)", tag, rc, status, err);
    ck_assert_ptr_null(m);
    char want[512];
    snprintf(want, sizeof want, "%s: %s: ", path, key);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s: got \"%s\", want prefix \"%s\"", tag,
                  err, want);
    ck_assert_msg(strstr(err + strlen(want), reason), "%s: got \"%s\", want reason \"%s\"", tag,
                  err, reason);
    ck_assert_msg(!strchr(err, '\n'), "%s: message spans lines", tag);
    unlink(path);

    m = (rnnd_model *)1;
    rc = rnnd_model_from_buffer(img, len, "buf", &m, err, sizeof err);
    ck_assert_msg(rc == status, "%s (buffer): status %d, want %d (%s)", tag, rc, status, err);
    ck_assert_ptr_null(m);
    snprintf(want, sizeof want, "buf: %s: ", key);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0 && strstr(err, reason),
                  "%s (buffer): got \"%s\"", tag, err);
}

static void expect_fail_header(const char *tag, const char *header, size_t data_len,
                               const char *key, const char *reason)
{
    /* pad so the data buffer is aligned: that check is not the one under test */
    char *h = malloc(strlen(header) + 4);
    ck_assert_ptr_nonnull(h);
    strcpy(h, header);
    while ((8 + strlen(h)) % 4)
        strcat(h, " ");
    size_t len;
    unsigned char *img = raw_image(h, data_len, -1, &len);
    expect_fail_img(tag, img, len, RNND_ERR_FORMAT, key, reason);
    free(img);
    free(h);
}

static void expect_fail_file(const char *tag, const tu_file *f, const char *key, const char *reason)
{
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    expect_fail_img(tag, img, len, RNND_ERR_FORMAT, key, reason);
    free(img);
}

/* An architecture error: the file has no tensors, since the architecture is checked first. */
static void expect_fail_arch(const char *tag, const char *arch, const char *key, const char *reason)
{
    tu_file *f = tu_file_new(arch);
    expect_fail_file(tag, f, key, reason);
    tu_file_free(f);
}

/* A tiny valid model: vectors dim 3, one rnn layer of 2. Tensors in order
 * W [2,3] @0..24, R [2,2] @24..40, Wb [2] @40..48, Rb [2] @48..56. */
static const char *small_arch =
    "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3},"
    " \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2}]}";

/* The small model's image with tensor entry NAME replaced by ENTRY_JSON (NULL: removed). */
static unsigned char *small_mutated(const char *name, const char *entry_json, size_t *len)
{
    tu_file *f = tu_random_model(small_arch, 1);
    ck_assert_ptr_nonnull(f);
    size_t blen;
    unsigned char *base = tu_file_bytes(f, &blen);
    tu_file_free(f);
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | base[i];
    json_error_t jerr;
    json_t *hdr = json_loadb((const char *)base + 8, hlen, 0, &jerr);
    ck_assert_ptr_nonnull(hdr);
    if (entry_json) {
        json_t *e = json_loads(entry_json, 0, &jerr);
        ck_assert_msg(e != NULL, "bad test JSON %s", entry_json);
        json_object_set_new(hdr, name, e);
    } else {
        ck_assert_int_eq(json_object_del(hdr, name), 0);
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    size_t data_len = blen - 8 - hlen;
    *len = 8 + padded + data_len;
    unsigned char *img = malloc(*len);
    ck_assert_ptr_nonnull(img);
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)((unsigned long long)padded >> (8 * i));
    memcpy(img + 8, text, n);
    memset(img + 8 + n, ' ', padded - n);
    memcpy(img + 8 + padded, base + 8 + hlen, data_len);
    free(text);
    free(base);
    return img;
}

static void expect_fail_entry(const char *tag, const char *name, const char *entry_json,
                              const char *key, const char *reason)
{
    size_t len;
    unsigned char *img = small_mutated(name, entry_json, &len);
    expect_fail_img(tag, img, len, RNND_ERR_FORMAT, key, reason);
    free(img);
}

/* Load IMG; on failure the test fails with the loader's message. */
static rnnd_model *load_img(const unsigned char *img, size_t len)
{
    char err[512] = "";
    rnnd_model *m = NULL;
    int rc = rnnd_model_from_buffer(img, len, "test", &m, err, sizeof err);
    ck_assert_msg(rc == 0, "load failed (%d): %s", rc, err);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* Where the spec should point for tensor NAME (parsed from the name, independently of the
 * loader's own list). */
static const float *spec_ptr(const rnnd_model_spec *s, const char *name)
{
    int l, d, n = 0;
    char what[16];
    if (strcmp(name, "embedding.weight") == 0)
        return s->embedding;
    if (strcmp(name, "head.weight") == 0)
        return s->head_layers[0].W;
    if (strcmp(name, "head.bias") == 0)
        return s->head_layers[0].b;
    int k;
    char part[16];
    if (sscanf(name, "head.%d.%15s%n", &k, part, &n) == 2 && name[n] == '\0') {
        ck_assert(k >= 0 && k < s->head_n);
        return !strcmp(part, "weight") ? s->head_layers[k].W
            : !strcmp(part, "bias")    ? s->head_layers[k].b
                                       : NULL;
    }
    if (sscanf(name, "layers.%d.%d.%15s%n", &l, &d, what, &n) != 3 || name[n] != '\0')
        return NULL;
    ck_assert(l >= 0 && l < s->n_layers && d >= 0 && d < 2);
    const rnnd_dir_weights *w = &s->layers[l].w[d];
    if (!strcmp(what, "W"))
        return w->W;
    if (!strcmp(what, "R"))
        return w->R;
    if (!strcmp(what, "Wb"))
        return w->Wb;
    if (!strcmp(what, "Rb"))
        return w->Rb;
    if (!strcmp(what, "P"))
        return w->P;
    if (!strcmp(what, "proj"))
        return w->proj;
    if (!strcmp(what, "V"))
        return w->V;
    if (!strcmp(what, "Vb"))
        return w->Vb;
    if (!strcmp(what, "D"))
        return w->D;
    if (!strcmp(what, "Dc"))
        return w->Dc;
    if (!strcmp(what, "Dl"))
        return w->Dl;
    if (!strcmp(what, "Db"))
        return w->Db;
    return NULL;
}

/* Read IMG's header here, and check that every tensor it lists is what the spec points at
 * (same floats) and that the parameter count is the sum of the tensors. Returns the number
 * of tensors. */
static size_t check_bindings(const rnnd_model *m, const unsigned char *img, size_t len)
{
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | img[i];
    json_error_t jerr;
    json_t *hdr = json_loadb((const char *)img + 8, hlen, 0, &jerr);
    ck_assert_ptr_nonnull(hdr);
    const unsigned char *data = img + 8 + hlen;
    size_t total = 0, ntensors = 0;
    const char *k;
    json_t *v;
    json_object_foreach(hdr, k, v) {
        if (!strcmp(k, "__metadata__"))
            continue;
        size_t count = 1;
        json_t *shape = json_object_get(v, "shape");
        for (size_t i = 0; i < json_array_size(shape); i++)
            count *= (size_t)json_integer_value(json_array_get(shape, i));
        size_t begin =
            (size_t)json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
        ck_assert(begin + count * 4 <= len - 8 - hlen);
        const float *p = spec_ptr(s, k);
        ck_assert_msg(p != NULL, "%s: the spec has no pointer for it", k);
        ck_assert_msg(memcmp(p, data + begin, count * 4) == 0, "%s: wrong data", k);
        ck_assert_msg(((uintptr_t)p & 3) == 0, "%s: misaligned", k);
        total += count;
        ntensors++;
    }
    json_decref(hdr);
    ck_assert_uint_eq(rnnd_model_param_count(m), total);
    return ntensors;
}

/* Write a random model for ARCH, open it from the file, cross-check it against the bytes. */
static rnnd_model *open_random(const char *tag, const char *arch, unsigned char **img_out,
                               size_t *len_out)
{
    char *path = tmp_path(tag);
    ck_assert_int_eq(tu_write_random_model(path, arch, 7), 0);
    char err[512] = "";
    rnnd_model *m = NULL;
    int rc = rnnd_model_open(path, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", tag, err);
    tu_file *f = tu_random_model(arch, 7);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    tu_file_free(f);
    check_bindings(m, img, len);
    ck_assert_str_eq(rnnd_model_architecture_json(m), arch);

    /* file digest: sha256sum of the file, and the same through the buffer path */
    char cmd[4200], line[128] = "";
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(fgets(line, sizeof line, p));
    pclose(p);
    ck_assert_int_eq(strncmp(line, rnnd_model_file_digest(m), 64), 0);
    ck_assert_uint_eq(strlen(rnnd_model_file_digest(m)), 64);
    ck_assert_uint_eq(strlen(rnnd_model_digest(m)), 64);
    rnnd_model *b = load_img(img, len);
    ck_assert_str_eq(rnnd_model_file_digest(b), rnnd_model_file_digest(m));
    ck_assert_str_eq(rnnd_model_digest(b), rnnd_model_digest(m));
    rnnd_model_unref(b);
    unlink(path);
    if (img_out) {
        *img_out = img;
        *len_out = len;
    } else {
        free(img);
    }
    return m;
}

static void assert_act(const rnnd_activation *a, int kind, float alpha, float beta)
{
    ck_assert_msg(a->kind == kind, "activation %s, want %s", rnnd_act_name(a->kind),
                  rnnd_act_name(kind));
    ck_assert_float_eq(a->alpha, alpha);
    ck_assert_float_eq(a->beta, beta);
}

/* ---- valid files ------------------------------------------------------------------------ */

START_TEST(valid_rnn_vectors)
{
    rnnd_model *m = open_random("rnn", small_arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->input_kind, RNND_INPUT_VECTORS);
    ck_assert_int_eq(s->input_dim, 3);
    ck_assert_int_eq(s->n_layers, 1);
    const rnnd_layer_spec *L = &s->layers[0];
    ck_assert_int_eq(L->cell, RNND_CELL_RNN);
    ck_assert_int_eq(L->direction, RNND_DIR_FORWARD);
    ck_assert_int_eq(L->num_directions, 1);
    ck_assert_int_eq(L->hidden, 2);
    ck_assert_int_eq(L->gates, 1);
    ck_assert_int_eq(L->in_dim, 3);
    ck_assert_int_eq(L->out_dim, 2);
    ck_assert_int_eq(L->n_act, 1);
    assert_act(&L->act[0][0], RNND_ACT_TANH, 0, 0);
    ck_assert_int_eq(L->has_clip, 0);
    ck_assert_ptr_null(L->w[0].P);
    ck_assert_ptr_null(L->w[0].proj);
    ck_assert_ptr_null(L->w[0].V);
    ck_assert_ptr_null(s->embedding);
    ck_assert_int_eq(s->has_head, 0);
    ck_assert_int_eq(s->n_vocab, 0);
    ck_assert_ptr_null(s->vocab);
    ck_assert_str_eq(s->tokenizer, "");
    ck_assert_str_eq(s->name, "");
    ck_assert_uint_eq(rnnd_model_param_count(m), 6 + 4 + 2 + 2);
    ck_assert_int_eq(rnnd_model_output_dim(m), 2);
    ck_assert_uint_eq(rnnd_model_state_floats(m), 2);
    ck_assert_int_eq(rnnd_model_is_stateful(m), 1);
    rnnd_model_unref(m);
}
END_TEST

/* Explicit weights: the spec must point at exactly these floats. */
START_TEST(valid_explicit_weights)
{
    tu_file *f = tu_file_new(small_arch);
    float W[6] = {1, 2, 3, 4, 5, 6}, R[4] = {-1, -2, -3, -4}, Wb[2] = {0.5f, 0.25f},
          Rb[2] = {1e-3f, -7};
    int64_t sW[2] = {2, 3}, sR[2] = {2, 2}, sb[1] = {2};
    tu_file_add(f, "layers.0.0.Rb", sb, 1, Rb); /* order in the file does not matter */
    tu_file_add(f, "layers.0.0.W", sW, 2, W);
    tu_file_add(f, "layers.0.0.Wb", sb, 1, Wb);
    tu_file_add(f, "layers.0.0.R", sR, 2, R);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    tu_file_free(f);
    rnnd_model *m = load_img(img, len);
    free(img); /* the model holds its own copy */
    const rnnd_dir_weights *w = &rnnd_model_get_spec(m)->layers[0].w[0];
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(w->W[i], W[i]);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(w->R[i], R[i]);
    for (int i = 0; i < 2; i++) {
        ck_assert_float_eq(w->Wb[i], Wb[i]);
        ck_assert_float_eq(w->Rb[i], Rb[i]);
    }
    rnnd_model_unref(m);
}
END_TEST

START_TEST(valid_lstm_bidir_options)
{
    const char *arch =
        "{\"format_version\": 1, \"name\": \"opts\","
        " \"input\": {\"kind\": \"vectors\", \"dim\": 5},"
        " \"layers\": ["
        "  {\"type\": \"lstm\", \"hidden_size\": 6, \"direction\": \"bidirectional\","
        "   \"peepholes\": true, \"proj_size\": 3, \"clip\": 2.5, \"input_forget\": false,"
        "   \"forget_gate\": true, \"linear_before_reset\": 0, \"output_size\": null,"
        "   \"activations\": [[{\"op\": \"HardSigmoid\"}, {\"op\": \"LeakyRelu\", \"alpha\": 0.3},"
        "                      {\"op\": \"ScaledTanh\", \"beta\": 2}],"
        "                     [{\"op\": \"Sigmoid\"}, {\"op\": \"Tanh\"}, {\"op\": \"Elu\"}]]},"
        "  {\"type\": \"gru\", \"hidden_size\": 4, \"linear_before_reset\": 1}],"
        " \"head\": {\"out_dim\": 7, \"in_dim\": 4, \"norm\": \"log_softmax\"}}";
    rnnd_model *m = open_random("lstm_bidir", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_str_eq(s->name, "opts");
    ck_assert_int_eq(s->n_layers, 2);
    const rnnd_layer_spec *L = &s->layers[0];
    ck_assert_int_eq(L->cell, RNND_CELL_LSTM);
    ck_assert_int_eq(L->direction, RNND_DIR_BIDIRECTIONAL);
    ck_assert_int_eq(L->num_directions, 2);
    ck_assert_int_eq(L->gates, 4);
    ck_assert_int_eq(L->in_dim, 5);
    ck_assert_int_eq(L->out_dim, 3);
    ck_assert_int_eq(L->proj_size, 3);
    ck_assert_int_eq(L->peepholes, 1);
    ck_assert_int_eq(L->forget_gate, 1);
    ck_assert_int_eq(L->input_forget, 0);
    ck_assert_int_eq(L->has_clip, 1);
    ck_assert_float_eq(L->clip, 2.5f);
    ck_assert_int_eq(L->n_act, 3);
    assert_act(&L->act[0][0], RNND_ACT_HARDSIGMOID, 0.2f, 0.5f);
    assert_act(&L->act[0][1], RNND_ACT_LEAKYRELU, 0.3f, 0.0f);
    assert_act(&L->act[0][2], RNND_ACT_SCALEDTANH, 1.0f, 2.0f);
    assert_act(&L->act[1][0], RNND_ACT_SIGMOID, 0, 0);
    assert_act(&L->act[1][1], RNND_ACT_TANH, 0, 0);
    assert_act(&L->act[1][2], RNND_ACT_ELU, 1.0f, 0.0f);
    ck_assert_ptr_nonnull(L->w[1].P);
    ck_assert_ptr_nonnull(L->w[1].proj);
    ck_assert_ptr_null(L->w[1].V);
    const rnnd_layer_spec *G = &s->layers[1];
    ck_assert_int_eq(G->cell, RNND_CELL_GRU);
    ck_assert_int_eq(G->in_dim, 6);
    ck_assert_int_eq(G->gates, 3);
    ck_assert_int_eq(G->out_dim, 4);
    ck_assert_int_eq(G->linear_before_reset, 1);
    ck_assert_int_eq(G->n_act, 2);
    assert_act(&G->act[0][0], RNND_ACT_SIGMOID, 0, 0);
    assert_act(&G->act[0][1], RNND_ACT_TANH, 0, 0);
    ck_assert_int_eq(s->has_head, 1);
    ck_assert_int_eq(s->head_in, 4);
    ck_assert_int_eq(s->head_out, 7);
    ck_assert_int_eq(s->head_norm, RNND_NORM_LOG_SOFTMAX);
    /* lstm: 2 x (W 24x5 + R 24x3 + Wb 24 + Rb 24 + P 18 + proj 3x6); gru: W 12x6 + R 12x4
     * + 24; head 7x4 + 7 */
    ck_assert_uint_eq(rnnd_model_param_count(m),
                      2 * (120 + 72 + 24 + 24 + 18 + 18) + (72 + 48 + 24) + 35);
    ck_assert_int_eq(rnnd_model_output_dim(m), 7);
    ck_assert_uint_eq(rnnd_model_state_floats(m), 2 * (3 + 6) + 4);
    ck_assert_int_eq(rnnd_model_is_stateful(m), 0);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(valid_lstm_variants)
{
    /* the 1997 LSTM (3 gates) reversed, then a coupled-gate LSTM, then a plain reverse rnn */
    const char *arch =
        "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 2},"
        " \"layers\": ["
        "  {\"type\": \"lstm\", \"hidden_size\": 3, \"forget_gate\": false,"
        "   \"direction\": \"reverse\"},"
        "  {\"type\": \"lstm\", \"hidden_size\": 5, \"input_forget\": true, \"clip\": 1},"
        "  {\"type\": \"rnn\", \"hidden_size\": 2, \"activations\": [[{\"op\": \"Relu\"}]],"
        "   \"direction\": \"forward\", \"clip\": 3}]}";
    rnnd_model *m = open_random("lstm_var", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->layers[0].gates, 3);
    ck_assert_int_eq(s->layers[0].forget_gate, 0);
    ck_assert_int_eq(s->layers[0].direction, RNND_DIR_REVERSE);
    ck_assert_int_eq(s->layers[0].num_directions, 1);
    assert_act(&s->layers[0].act[0][0], RNND_ACT_SIGMOID, 0, 0);
    assert_act(&s->layers[0].act[0][1], RNND_ACT_TANH, 0, 0);
    assert_act(&s->layers[0].act[0][2], RNND_ACT_TANH, 0, 0);
    ck_assert_int_eq(s->layers[1].gates, 4);
    ck_assert_int_eq(s->layers[1].input_forget, 1);
    ck_assert_int_eq(s->layers[1].in_dim, 3);
    ck_assert_float_eq(s->layers[1].clip, 1.0f);
    ck_assert_int_eq(s->layers[2].in_dim, 5);
    assert_act(&s->layers[2].act[0][0], RNND_ACT_RELU, 0, 0);
    ck_assert_int_eq(s->layers[2].has_clip, 1);
    ck_assert_int_eq(rnnd_model_output_dim(m), 2);
    ck_assert_uint_eq(rnnd_model_state_floats(m), (3 + 3) + (5 + 5) + 2);
    ck_assert_int_eq(rnnd_model_is_stateful(m), 0);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(valid_tokens_jordan_vocab)
{
    const char *arch =
        "{\"format_version\": 1, \"name\": \"charlm\","
        " \"input\": {\"kind\": \"tokens\", \"vocab_size\": 4, \"embedding_dim\": 3},"
        " \"layers\": ["
        "  {\"type\": \"rnn\", \"hidden_size\": 5, \"forget_gate\": false,"
        "   \"peepholes\": false, \"proj_size\": 0, \"linear_before_reset\": 0,"
        "   \"output_size\": 0, \"input_forget\": null},"
        "  {\"type\": \"jordan\", \"hidden_size\": 4, \"output_size\": 2, \"clip\": 0.5}],"
        " \"head\": {\"out_dim\": 4, \"in_dim\": 2, \"norm\": \"softmax\"},"
        " \"vocab\": [\"a\", \"b\", \"\\u00e9\", \"\\n\"], \"tokenizer\": \"char\"}";
    rnnd_model *m = open_random("tokens", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->input_kind, RNND_INPUT_TOKENS);
    ck_assert_int_eq(s->vocab_size, 4);
    ck_assert_int_eq(s->input_dim, 3);
    ck_assert_ptr_nonnull(s->embedding);
    ck_assert_int_eq(s->n_vocab, 4);
    ck_assert_str_eq(s->vocab[0], "a");
    ck_assert_str_eq(s->vocab[1], "b");
    ck_assert_str_eq(s->vocab[2], "\xc3\xa9");
    ck_assert_str_eq(s->vocab[3], "\n");
    ck_assert_str_eq(s->tokenizer, "char");
    ck_assert_str_eq(s->name, "charlm");
    ck_assert_int_eq(s->layers[0].forget_gate, 1); /* neutral values of other types */
    ck_assert_int_eq(s->layers[0].proj_size, 0);
    const rnnd_layer_spec *J = &s->layers[1];
    ck_assert_int_eq(J->has_clip, 1);
    ck_assert_float_eq(J->clip, 0.5f);
    ck_assert_int_eq(J->cell, RNND_CELL_JORDAN);
    ck_assert_int_eq(J->in_dim, 5);
    ck_assert_int_eq(J->gates, 1);
    ck_assert_int_eq(J->out_dim, 2);
    ck_assert_int_eq(J->output_size, 2);
    ck_assert_int_eq(J->n_act, 2);
    assert_act(&J->act[0][0], RNND_ACT_TANH, 0, 0);
    assert_act(&J->act[0][1], RNND_ACT_AFFINE, 1.0f, 0.0f);
    ck_assert_ptr_nonnull(J->w[0].V);
    ck_assert_ptr_nonnull(J->w[0].Vb);
    ck_assert_int_eq(s->head_norm, RNND_NORM_SOFTMAX);
    ck_assert_int_eq(rnnd_model_output_dim(m), 4);
    ck_assert_uint_eq(rnnd_model_state_floats(m), 5 + 2);
    ck_assert_int_eq(rnnd_model_is_stateful(m), 1);
    rnnd_model_unref(m);
}
END_TEST

/* A char vocabulary may repeat a string and hold empty strings (docs/model-format.md). */
START_TEST(valid_vocab_duplicates_and_empty)
{
    const char *arch =
        "{\"format_version\": 1,"
        " \"input\": {\"kind\": \"tokens\", \"vocab_size\": 4, \"embedding_dim\": 2},"
        " \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 3}],"
        " \"vocab\": [\"ab\", \"\", \"ab\", \"\"], \"tokenizer\": \"char\"}";
    rnnd_model *m = open_random("vocab_dup", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->n_vocab, 4);
    ck_assert_str_eq(s->vocab[0], "ab");
    ck_assert_str_eq(s->vocab[1], "");
    ck_assert_str_eq(s->vocab[2], "ab");
    ck_assert_str_eq(s->vocab[3], "");
    rnnd_model_unref(m);
}
END_TEST

START_TEST(valid_gru_bidir_byte_tokens)
{
    const char *arch =
        "{\"format_version\": 1,"
        " \"input\": {\"kind\": \"tokens\", \"vocab_size\": 256, \"embedding_dim\": 2},"
        " \"layers\": [{\"type\": \"gru\", \"hidden_size\": 3, \"direction\": \"bidirectional\","
        "   \"activations\": [[{\"op\": \"Affine\", \"alpha\": 2, \"beta\": -1},"
        "                      {\"op\": \"ThresholdedRelu\"}],"
        "                     [{\"op\": \"Softsign\"}, {\"op\": \"Softplus\"}]]},"
        "  {\"type\": \"jordan\", \"hidden_size\": 2, \"output_size\": 3,"
        "   \"direction\": \"bidirectional\"}],"
        " \"head\": null, \"vocab\": null, \"tokenizer\": \"byte\"}";
    rnnd_model *m = open_random("gru_bidir", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->n_vocab, 0);
    ck_assert_str_eq(s->tokenizer, "byte");
    const rnnd_layer_spec *L = &s->layers[0];
    assert_act(&L->act[0][0], RNND_ACT_AFFINE, 2.0f, -1.0f);
    assert_act(&L->act[0][1], RNND_ACT_THRESHOLDEDRELU, 1.0f, 0.0f);
    assert_act(&L->act[1][0], RNND_ACT_SOFTSIGN, 0, 0);
    assert_act(&L->act[1][1], RNND_ACT_SOFTPLUS, 0, 0);
    ck_assert_int_eq(s->layers[1].in_dim, 6);
    ck_assert_int_eq(s->has_head, 0);
    ck_assert_int_eq(rnnd_model_output_dim(m), 6);
    ck_assert_uint_eq(rnnd_model_state_floats(m), 2 * 3 + 2 * 3);
    rnnd_model_unref(m);
}
END_TEST

/* Every layer type x direction, one to three layers: the spec binds every tensor. */
START_TEST(valid_all_types_directions)
{
    static const char *types[] = {"rnn", "lstm", "gru", "jordan"};
    static const char *dirs[] = {"forward", "reverse", "bidirectional"};
    for (int t = 0; t < 4; t++) {
        for (int d = 0; d < 3; d++) {
            char arch[1024], extra[64] = "";
            if (t == 3)
                snprintf(extra, sizeof extra, ", \"output_size\": %d", 2 + d);
            snprintf(arch, sizeof arch,
                     "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3},"
                     " \"layers\": [{\"type\": \"%s\", \"hidden_size\": %d,"
                     " \"direction\": \"%s\"%s}, {\"type\": \"%s\", \"hidden_size\": 3%s}],"
                     " \"head\": {\"out_dim\": 2, \"in_dim\": %d}}",
                     types[t], 4 + t, dirs[d], extra, types[t],
                     t == 3 ? ", \"output_size\": 1" : "", t == 3 ? 1 : 3);
            rnnd_model *m = open_random("all", arch, NULL, NULL);
            const rnnd_model_spec *s = rnnd_model_get_spec(m);
            ck_assert_int_eq(s->layers[0].cell, t);
            ck_assert_int_eq(s->layers[0].direction, d);
            int out0 = t == 3 ? 2 + d : 4 + t;
            ck_assert_int_eq(s->layers[1].in_dim, out0 * (d == 2 ? 2 : 1));
            ck_assert_int_eq(rnnd_model_is_stateful(m), d == 0);
            ck_assert_int_eq(s->head_norm, RNND_NORM_NONE);
            rnnd_model_unref(m);
        }
    }
}
END_TEST

#define A_HEAD "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3}, "

/* minGRU and minLSTM (issue 16): W [G*H, in] and Wb only, activations Sigmoid and the
 * identity by default, state h alone. */
START_TEST(valid_min_cells)
{
    const char *arch =
        "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3},"
        " \"layers\": [{\"type\": \"mingru\", \"hidden_size\": 5},"
        "  {\"type\": \"minlstm\", \"hidden_size\": 4, \"direction\": \"bidirectional\","
        "   \"activations\": [[{\"op\": \"HardSigmoid\"}, {\"op\": \"Tanh\"}],"
        "                     [{\"op\": \"Sigmoid\"}, {\"op\": \"Affine\", \"alpha\": 2}]]},"
        "  {\"type\": \"minlstm\", \"hidden_size\": 3}],"
        " \"head\": {\"out_dim\": 2, \"in_dim\": 3}}";
    rnnd_model *m = open_random("min", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    const rnnd_layer_spec *G = &s->layers[0], *L = &s->layers[1];
    ck_assert_int_eq(G->cell, RNND_CELL_MINGRU);
    ck_assert_int_eq(G->gates, 2);
    ck_assert_int_eq(G->n_act, 2);
    ck_assert_int_eq(G->out_dim, 5);
    assert_act(&G->act[0][0], RNND_ACT_SIGMOID, 0, 0);
    assert_act(&G->act[0][1], RNND_ACT_AFFINE, 1.0f, 0.0f);
    ck_assert_ptr_nonnull(G->w[0].W);
    ck_assert_ptr_nonnull(G->w[0].Wb);
    ck_assert_ptr_null(G->w[0].R);
    ck_assert_ptr_null(G->w[0].Rb);
    ck_assert_int_eq(L->cell, RNND_CELL_MINLSTM);
    ck_assert_int_eq(L->gates, 3);
    ck_assert_int_eq(L->in_dim, 5);
    assert_act(&L->act[0][0], RNND_ACT_HARDSIGMOID, 0.2f, 0.5f);
    assert_act(&L->act[0][1], RNND_ACT_TANH, 0, 0);
    assert_act(&L->act[1][1], RNND_ACT_AFFINE, 2.0f, 0.0f);
    ck_assert_int_eq(s->layers[2].in_dim, 8);
    assert_act(&s->layers[2].act[0][1], RNND_ACT_AFFINE, 1.0f, 0.0f);
    /* W + Wb per direction: 10*3+10, 2*(12*5+12), 9*8+9, head 2*3+2 */
    ck_assert_uint_eq(rnnd_model_param_count(m), 40 + 144 + 81 + 8);
    ck_assert_uint_eq(rnnd_model_state_floats(m), 5 + 2 * 4 + 3);
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_MINGRU), "mingru");
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_MINLSTM), "minlstm");
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_COUNT), "unknown");
    rnnd_model_unref(m);
}
END_TEST

/* Every wrong min-cell file gets an error naming the key or tensor and why. */
START_TEST(bad_min_cells)
{
    const char *arch = "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3},"
                       " \"layers\": [{\"type\": \"mingru\", \"hidden_size\": 2}]}";
    /* R or Rb present, as a recurrent layer would have them */
    for (int k = 0; k < 2; k++) {
        tu_file *f = tu_random_model(arch, 1);
        ck_assert_ptr_nonnull(f);
        int64_t shape[2] = {4, 2};
        tu_file_add(f, k ? "layers.0.0.Rb" : "layers.0.0.R", shape, k ? 1 : 2, NULL);
        expect_fail_file(k ? "min_Rb" : "min_R", f, k ? "layers.0.0.Rb" : "layers.0.0.R",
                         "unknown tensor: a mingru layer has no recurrent weights");
        tu_file_free(f);
    }
    /* wrong shapes: W with the rows of another cell, Wb too short */
    const char *lstm_arch =
        "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3},"
        " \"layers\": [{\"type\": \"minlstm\", \"hidden_size\": 2}]}";
    tu_file *f = tu_file_new(lstm_arch);
    int64_t w_gru[2] = {4, 3}, wb[1] = {6};
    tu_file_add(f, "layers.0.0.W", w_gru, 2, NULL);
    tu_file_add(f, "layers.0.0.Wb", wb, 1, NULL);
    expect_fail_file("min_W_shape", f, "layers.0.0.W",
                     "shape [4, 3], but the architecture needs [6, 3]");
    tu_file_free(f);
    f = tu_file_new(arch);
    int64_t w_ok[2] = {4, 3}, wb_short[1] = {2};
    tu_file_add(f, "layers.0.0.W", w_ok, 2, NULL);
    tu_file_add(f, "layers.0.0.Wb", wb_short, 1, NULL);
    expect_fail_file("min_Wb_shape", f, "layers.0.0.Wb",
                     "shape [2], but the architecture needs [4]");
    tu_file_free(f);
    f = tu_file_new(arch);
    tu_file_add(f, "layers.0.0.W", w_ok, 2, NULL);
    expect_fail_file("min_no_Wb", f, "layers.0.0.Wb", "missing: the architecture needs");
    tu_file_free(f);
    /* activations: two per direction, not the three of an lstm or one of an rnn */
    expect_fail_arch("min_acts3",
                     A_HEAD "\"layers\": [{\"type\": \"minlstm\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"Sigmoid\"}, {\"op\": \"Tanh\"},"
                            " {\"op\": \"Tanh\"}]]}]}",
                     "architecture.layers[0].activations[0]",
                     "3 activations, a minlstm layer takes 2");
    expect_fail_arch("min_acts1",
                     A_HEAD "\"layers\": [{\"type\": \"mingru\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"Sigmoid\"}]]}]}",
                     "architecture.layers[0].activations[0]",
                     "1 activations, a mingru layer takes 2");
    /* options of other types, and clip, which these equations do not have */
    expect_fail_arch("min_clip",
                     A_HEAD "\"layers\": [{\"type\": \"mingru\", \"hidden_size\": 2,"
                            " \"clip\": 3}]}",
                     "architecture.layers[0].clip", "not used by a mingru layer");
    expect_fail_arch("min_lbr",
                     A_HEAD "\"layers\": [{\"type\": \"mingru\", \"hidden_size\": 2,"
                            " \"linear_before_reset\": 1}]}",
                     "architecture.layers[0].linear_before_reset", "not used by a mingru layer");
    expect_fail_arch("min_peep",
                     A_HEAD "\"layers\": [{\"type\": \"minlstm\", \"hidden_size\": 2,"
                            " \"peepholes\": true}]}",
                     "architecture.layers[0].peepholes", "not used by a minlstm layer");
    expect_fail_arch("min_case", A_HEAD "\"layers\": [{\"type\": \"minGRU\", \"hidden_size\": 2}]}",
                     "architecture.layers[0].type", "unknown value \"minGRU\"");
}
END_TEST

/* The depth-gated LSTM (issue 16): an lstm layer with depth_gate reads the new c of the
 * lstm below; D [H, in], Dc, Dl, Db [H] besides the lstm's tensors; the state is unchanged. */
#define DG_ARCH(second) A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 4}, " second "]}"

START_TEST(valid_depth_gate)
{
    const char *arch = A_HEAD
        "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 5},"
        "  {\"type\": \"lstm\", \"hidden_size\": 5, \"depth_gate\": true, \"peepholes\": true,"
        "   \"clip\": 4},"
        "  {\"type\": \"lstm\", \"hidden_size\": 5, \"depth_gate\": true,"
        "   \"forget_gate\": false},"
        "  {\"type\": \"lstm\", \"hidden_size\": 5, \"depth_gate\": false}],"
        " \"head\": {\"out_dim\": 2, \"in_dim\": 5}}";
    rnnd_model *m = open_random("dglstm", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->layers[0].depth_gate, 0);
    ck_assert_int_eq(s->layers[1].depth_gate, 1);
    ck_assert_int_eq(s->layers[2].depth_gate, 1);
    ck_assert_int_eq(s->layers[3].depth_gate, 0);
    ck_assert_int_eq(s->layers[1].gates, 4);
    ck_assert_int_eq(s->layers[2].gates, 3);
    ck_assert_ptr_null(s->layers[0].w[0].D);
    ck_assert_ptr_null(s->layers[3].w[0].Dc);
    for (int l = 1; l <= 2; l++) {
        const rnnd_dir_weights *w = &s->layers[l].w[0];
        ck_assert_ptr_nonnull(w->D);
        ck_assert_ptr_nonnull(w->Dc);
        ck_assert_ptr_nonnull(w->Dl);
        ck_assert_ptr_nonnull(w->Db);
    }
    /* layer 0: 4*5*(3+5)+2*20; 1: 4*5*10+40+15 (P) + 5*5+15 (D, Dc, Dl, Db);
     * 2: 3*5*10+30 + 40; 3: 4*5*10+40; head 2*5+2 */
    ck_assert_uint_eq(rnnd_model_param_count(m), 200 + (240 + 15 + 40) + (180 + 40) + 240 + 12);
    /* the state is still h and c per layer */
    ck_assert_uint_eq(rnnd_model_state_floats(m), 4 * 10);
    rnnd_model_unref(m);
}
END_TEST

/* Clockwork (issue 16): periods, modules of H/m units, W, R, Wb, Rb, one activation
 * (Tanh by default), and the counter t in the state (two floats per direction). */
START_TEST(valid_clockwork)
{
    const char *arch =
        "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3},"
        " \"layers\": [{\"type\": \"clockwork\", \"hidden_size\": 6, \"periods\": [1, 3, 7]},"
        "  {\"type\": \"clockwork\", \"hidden_size\": 4, \"periods\": [2, 5],"
        "   \"direction\": \"bidirectional\","
        "   \"activations\": [[{\"op\": \"Relu\"}], [{\"op\": \"Tanh\"}]]}]}";
    rnnd_model *m = open_random("clock", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    const rnnd_layer_spec *C = &s->layers[0], *D = &s->layers[1];
    ck_assert_int_eq(C->cell, RNND_CELL_CLOCKWORK);
    ck_assert_int_eq(C->gates, 1);
    ck_assert_int_eq(C->n_act, 1);
    ck_assert_int_eq(C->out_dim, 6);
    ck_assert_int_eq(C->n_periods, 3);
    ck_assert_int_eq(C->periods[0], 1);
    ck_assert_int_eq(C->periods[1], 3);
    ck_assert_int_eq(C->periods[2], 7);
    assert_act(&C->act[0][0], RNND_ACT_TANH, 0, 0);
    ck_assert_ptr_nonnull(C->w[0].R);
    ck_assert_ptr_nonnull(C->w[0].Rb);
    ck_assert_int_eq(D->in_dim, 6);
    ck_assert_int_eq(D->n_periods, 2);
    assert_act(&D->act[0][0], RNND_ACT_RELU, 0, 0);
    /* W R Wb Rb: 6*3 + 36 + 12; per direction 4*6 + 16 + 8 */
    ck_assert_uint_eq(rnnd_model_param_count(m), 66 + 2 * 48);
    /* h and the two floats of t, per direction */
    ck_assert_uint_eq(rnnd_model_state_floats(m), (6 + 2) + 2 * (4 + 2));
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_CLOCKWORK), "clockwork");
    rnnd_model_unref(m);

    /* the counter's two floats: exact whole numbers, wrapping at 2^48 */
    float st[2];
    const uint64_t ts[] = {0, 1, 16777215, 16777216, 123456789012345ULL, RNND_CLOCK_WRAP - 1};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        rnnd_clock_put(st, ts[i]);
        ck_assert(st[0] < 16777216.0f && st[1] < 16777216.0f);
        ck_assert_uint_eq(rnnd_clock_get(st), ts[i]);
    }
    rnnd_clock_put(st, RNND_CLOCK_WRAP + 5);
    ck_assert_uint_eq(rnnd_clock_get(st), 5);
    /* what no export writes reads as 0, never as undefined behaviour */
    const float odd[][2] = {{-1.0f, 0.0f}, {0.5f, 0.0f}, {16777216.0f, 0.0f}, {NAN, 2.0f}};
    for (size_t i = 0; i < 4; i++)
        ck_assert_uint_eq(rnnd_clock_get(odd[i]), i == 3 ? 2ULL << 24 : 0);
}
END_TEST

/* Every wrong clockwork file gets an error naming the key or tensor and why. */
START_TEST(bad_clockwork)
{
#define CW(rest) A_HEAD "\"layers\": [{\"type\": \"clockwork\", \"hidden_size\": 4" rest "}]}"
    const char *key = "architecture.layers[0].periods";
    expect_fail_arch("cw_none", CW(""), key, "missing (a clockwork layer needs a list");
    expect_fail_arch("cw_empty", CW(", \"periods\": []"), key,
                     "0 periods: a clockwork layer has 1 to 64 modules");
    expect_fail_arch("cw_str", CW(", \"periods\": \"1,2\""), key,
                     "expected a list of integers, got a string");
    expect_fail_arch("cw_real", CW(", \"periods\": [1, 2.5]"), "architecture.layers[0].periods[1]",
                     "expected an integer, got a real");
    expect_fail_arch("cw_zero", CW(", \"periods\": [0, 2]"), "architecture.layers[0].periods[0]",
                     "0 is out of range 1 to 2147483647");
    expect_fail_arch("cw_neg", CW(", \"periods\": [-1]"), "architecture.layers[0].periods[0]",
                     "-1 is out of range");
    expect_fail_arch("cw_big", CW(", \"periods\": [4294967296]"),
                     "architecture.layers[0].periods[0]", "4294967296 is out of range");
    expect_fail_arch("cw_order", CW(", \"periods\": [1, 4, 2, 8]"),
                     "architecture.layers[0].periods[2]",
                     "2 is not above the period before it (4): the periods must be strictly "
                     "increasing");
    expect_fail_arch("cw_equal", CW(", \"periods\": [2, 2]"), "architecture.layers[0].periods[1]",
                     "strictly increasing");
    expect_fail_arch("cw_divide", CW(", \"periods\": [1, 2, 3]"), key,
                     "3 modules do not divide hidden_size 4 evenly");
    expect_fail_arch("cw_clip", CW(", \"periods\": [1], \"clip\": 2"),
                     "architecture.layers[0].clip", "not used by a clockwork layer");
    expect_fail_arch("cw_acts2",
                     CW(", \"periods\": [1], \"activations\": [[{\"op\": \"Tanh\"},"
                        " {\"op\": \"Tanh\"}]]"),
                     "architecture.layers[0].activations[0]",
                     "2 activations, a clockwork layer takes 1");
    expect_fail_arch("cw_rnn_periods",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", "
                            "\"hidden_size\": 4, \"periods\": [1, 2]}]}",
                     key, "not used by a rnn layer");
    char many[1024];
    int len = snprintf(many, sizeof many,
                       A_HEAD "\"layers\": [{\"type\": \"clockwork\", "
                              "\"hidden_size\": 65, \"periods\": [");
    for (int k = 1; k <= 65; k++)
        len += snprintf(many + len, sizeof many - (size_t)len, "%s%d", k > 1 ? ", " : "", k);
    snprintf(many + len, sizeof many - (size_t)len, "]}]}");
    expect_fail_arch("cw_many", many, key, "65 periods: a clockwork layer has 1 to 64 modules");
#undef CW

    /* R with a weight below the block diagonal: module 1 (rows 2, 3) reading module 0 */
    const char *arch = A_HEAD "\"layers\": [{\"type\": \"clockwork\", \"hidden_size\": 4,"
                              " \"periods\": [1, 2]}]}";
    float W[12] = {0}, R[16] = {0}, b[4] = {0};
    int64_t sw[2] = {4, 3}, sr[2] = {4, 4}, sb[1] = {4};
    for (int pass = 0; pass < 3; pass++) {
        memset(R, 0, sizeof R);
        R[0 * 4 + 3] = 1.0f;  /* above the diagonal: allowed */
        R[2 * 4 + 2] = 1.0f;  /* module 1's own block */
        R[1 * 4 + 0] = -0.0f; /* a negative zero below is a zero */
        if (pass == 1)
            R[3 * 4 + 1] = 0.25f;
        if (pass == 2)
            R[2 * 4 + 0] = 1e-30f;
        tu_file *f = tu_file_new(arch);
        tu_file_add(f, "layers.0.0.W", sw, 2, W);
        tu_file_add(f, "layers.0.0.R", sr, 2, R);
        tu_file_add(f, "layers.0.0.Wb", sb, 1, b);
        tu_file_add(f, "layers.0.0.Rb", sb, 1, b);
        if (pass == 0) {
            size_t n;
            unsigned char *img = tu_file_bytes(f, &n);
            rnnd_model *m = load_img(img, n);
            free(img);
            rnnd_model_unref(m);
        } else {
            expect_fail_file(pass == 1 ? "cw_R_below" : "cw_R_tiny", f, "layers.0.0.R",
                             pass == 1 ? "element [3, 1] is 0.25, but a clockwork module reads "
                                         "only itself and the modules after it"
                                       : "element [2, 0] is 1e-30, but");
        }
        tu_file_free(f);
    }
}
END_TEST

/* sLSTM (issue 16): heads K dividing H, forget exp or sigmoid, W [4H, in], R [4H, H/K],
 * Wb, Rb [4H]; state h, c, n, m; no activations or clip. */
START_TEST(valid_slstm)
{
    const char *arch =
        A_HEAD "\"layers\": [{\"type\": \"slstm\", \"hidden_size\": 6, \"heads\": 3,"
               " \"forget\": \"exp\"},"
               " {\"type\": \"slstm\", \"hidden_size\": 5, \"heads\": 1, \"forget\": \"sigmoid\","
               "  \"direction\": \"bidirectional\"}],"
               " \"head\": {\"out_dim\": 2, \"in_dim\": 10}}";
    rnnd_model *m = open_random("slstm", arch, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    const rnnd_layer_spec *A = &s->layers[0], *B = &s->layers[1];
    ck_assert_int_eq(A->cell, RNND_CELL_SLSTM);
    ck_assert_int_eq(A->gates, 4);
    ck_assert_int_eq(A->n_act, 0);
    ck_assert_int_eq(A->heads, 3);
    ck_assert_int_eq(A->exp_forget, 1);
    ck_assert_int_eq(B->heads, 1);
    ck_assert_int_eq(B->exp_forget, 0);
    ck_assert_int_eq(B->in_dim, 6);
    ck_assert_uint_eq(rnnd_layer_cell_floats(A), 18);
    /* W, R (d = 2), Wb, Rb: 24*3 + 24*2 + 48; 2 * (20*6 + 20*5 + 40); head 2*10+2 */
    ck_assert_uint_eq(rnnd_model_param_count(m), 168 + 2 * 260 + 22);
    /* h, c, n, m per direction */
    ck_assert_uint_eq(rnnd_model_state_floats(m), 4 * 6 + 2 * 4 * 5);
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_SLSTM), "slstm");
    rnnd_model_unref(m);
}
END_TEST

/* The tensors of a 2-layer depth-gated model (vectors of 3, H = 4), but SKIP left out and
 * BAD (if set) one row longer. */
static tu_file *dg_file(const char *skip, const char *bad)
{
    tu_file *f = tu_file_new(DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 4, "
                                     "\"depth_gate\": true}"));
    static const struct {
        const char *name;
        int64_t a, b;
    } t[] = {
        {"layers.0.0.W", 16, 3},  {"layers.0.0.R", 16, 4},  {"layers.0.0.Wb", 16, 0},
        {"layers.0.0.Rb", 16, 0}, {"layers.1.0.W", 16, 4},  {"layers.1.0.R", 16, 4},
        {"layers.1.0.Wb", 16, 0}, {"layers.1.0.Rb", 16, 0}, {"layers.1.0.D", 4, 4},
        {"layers.1.0.Dc", 4, 0},  {"layers.1.0.Dl", 4, 0},  {"layers.1.0.Db", 4, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        if (skip && strcmp(skip, t[i].name) == 0)
            continue;
        int64_t shape[2] = {t[i].a + (bad && strcmp(bad, t[i].name) == 0), t[i].b};
        tu_file_add(f, t[i].name, shape, t[i].b ? 2 : 1, NULL);
    }
    return f;
}

/* Every depth gate the equations cannot give a meaning is refused, naming the key and why;
 * a missing or misshapen D tensor names the tensor. */
START_TEST(bad_depth_gate)
{
    tu_file *f = dg_file(NULL, NULL);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    rnnd_model *m = NULL;
    char err[512];
    ck_assert_msg(rnnd_model_from_buffer(img, len, "dg", &m, err, sizeof err) == 0, "%s", err);
    rnnd_model_unref(m);
    free(img);
    tu_file_free(f);
    static const char *const names[] = {"layers.1.0.D", "layers.1.0.Dc", "layers.1.0.Dl",
                                        "layers.1.0.Db"};
    static const char *const want[] = {"[5, 4], but the architecture needs [4, 4]",
                                       "[5], but the architecture needs [4]",
                                       "[5], but the architecture needs [4]",
                                       "[5], but the architecture needs [4]"};
    for (int i = 0; i < 4; i++) {
        f = dg_file(names[i], NULL);
        expect_fail_file("dg_missing", f, names[i], "missing: the architecture needs");
        tu_file_free(f);
        f = dg_file(NULL, names[i]);
        expect_fail_file("dg_shape", f, names[i], want[i]);
        tu_file_free(f);
    }
    /* D on a layer without a depth gate */
    f = tu_random_model(DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 4}"), 1);
    int64_t dshape[2] = {4, 4};
    tu_file_add(f, "layers.1.0.D", dshape, 2, NULL);
    expect_fail_file("dg_stray_D", f, "layers.1.0.D",
                     "unknown tensor: D, Dc, Dl and Db "
                     "belong to an lstm layer with \"depth_gate\": true, which this layer is "
                     "not");
    tu_file_free(f);

    const char *key0 = "architecture.layers[0].depth_gate";
    const char *key1 = "architecture.layers[1].depth_gate";
    expect_fail_arch("dg_first",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 4,"
                            " \"depth_gate\": true}]}",
                     key0, "the first layer has no layer below whose cell it could gate");
    expect_fail_arch("dg_bidir",
                     DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 4, "
                             "\"depth_gate\": true, \"direction\": \"bidirectional\"}"),
                     key1,
                     "a depth-gated layer runs forward only (direction is \"bidirectional\")");
    expect_fail_arch("dg_reverse",
                     DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 4, "
                             "\"depth_gate\": true, \"direction\": \"reverse\"}"),
                     key1, "a depth-gated layer runs forward only (direction is \"reverse\")");
    expect_fail_arch("dg_proj",
                     DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 4, "
                             "\"depth_gate\": true, \"proj_size\": 2}"),
                     key1, "a depth-gated layer has no projection (proj_size is 2)");
    expect_fail_arch("dg_H",
                     DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 5, "
                             "\"depth_gate\": true}"),
                     key1, "layers[0] has hidden_size 4, this layer 5: they must be equal");
    expect_fail_arch("dg_below_gru",
                     A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 4},"
                            " {\"type\": \"lstm\", \"hidden_size\": 4, \"depth_gate\": true}]}",
                     key1, "layers[0] is gru: the layer below must be an lstm");
    expect_fail_arch("dg_below_rev",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 4,"
                            " \"direction\": \"reverse\"},"
                            " {\"type\": \"lstm\", \"hidden_size\": 4, \"depth_gate\": true}]}",
                     key1, "layers[0] runs reverse: the layer below must run forward");
    expect_fail_arch("dg_below_bidir",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", "
                            "\"hidden_size\": 2, \"direction\": \"bidirectional\"},"
                            " {\"type\": \"lstm\", \"hidden_size\": 2, \"depth_gate\": true}]}",
                     key1, "layers[0] runs bidirectional: the layer below must run forward");
    expect_fail_arch("dg_below_proj",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", "
                            "\"hidden_size\": 4, \"proj_size\": 4},"
                            " {\"type\": \"lstm\", \"hidden_size\": 4, \"depth_gate\": true}]}",
                     key1, "layers[0] has proj_size 4: the layer below must have no projection");
    expect_fail_arch("dg_gru",
                     DG_ARCH("{\"type\": \"gru\", \"hidden_size\": 4, "
                             "\"depth_gate\": true}"),
                     key1, "not used by a gru layer");
    expect_fail_arch("dg_min",
                     DG_ARCH("{\"type\": \"minlstm\", \"hidden_size\": 4, "
                             "\"depth_gate\": true}"),
                     key1, "not used by a minlstm layer");
    expect_fail_arch("dg_type",
                     DG_ARCH("{\"type\": \"lstm\", \"hidden_size\": 4, "
                             "\"depth_gate\": 1}"),
                     key1, "expected true or false, got an integer");
}
END_TEST

/* Every wrong sLSTM file gets an error naming the key or tensor and why. */
START_TEST(bad_slstm)
{
#define SL(extra) A_HEAD "\"layers\": [{\"type\": \"slstm\", \"hidden_size\": 6" extra "}]}"
    expect_fail_arch("sl_no_heads", SL(", \"forget\": \"exp\""), "architecture.layers[0].heads",
                     "missing (an integer 1 to");
    expect_fail_arch("sl_heads0", SL(", \"heads\": 0, \"forget\": \"exp\""),
                     "architecture.layers[0].heads", "0 is out of range 1 to");
    expect_fail_arch("sl_heads4", SL(", \"heads\": 4, \"forget\": \"exp\""),
                     "architecture.layers[0].heads", "4 does not divide hidden_size 6");
    expect_fail_arch("sl_heads_str", SL(", \"heads\": \"2\", \"forget\": \"exp\""),
                     "architecture.layers[0].heads", "expected an integer");
    expect_fail_arch("sl_no_forget", SL(", \"heads\": 2"), "architecture.layers[0].forget",
                     "missing (\"exp\" or \"sigmoid\"");
    expect_fail_arch("sl_forget", SL(", \"heads\": 2, \"forget\": \"tanh\""),
                     "architecture.layers[0].forget",
                     "unknown value \"tanh\" (expected \"exp\" or \"sigmoid\")");
    expect_fail_arch("sl_forget_num", SL(", \"heads\": 2, \"forget\": 1"),
                     "architecture.layers[0].forget", "expected a string");
    expect_fail_arch("sl_clip", SL(", \"heads\": 2, \"forget\": \"exp\", \"clip\": 3"),
                     "architecture.layers[0].clip", "not used by a slstm layer");
    expect_fail_arch("sl_acts",
                     SL(", \"heads\": 2, \"forget\": \"exp\", \"activations\":"
                        " [[{\"op\": \"Tanh\"}]]"),
                     "architecture.layers[0].activations", "not used by a slstm layer");
    expect_fail_arch("sl_peep", SL(", \"heads\": 2, \"forget\": \"exp\", \"peepholes\": true"),
                     "architecture.layers[0].peepholes", "not used by a slstm layer");
    expect_fail_arch("lstm_heads",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"heads\": 2}]}",
                     "architecture.layers[0].heads", "not used by a lstm layer");
    expect_fail_arch("gru_forget",
                     A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 2,"
                            " \"forget\": \"exp\"}]}",
                     "architecture.layers[0].forget", "not used by a gru layer");
    /* R dense [4H, H] as an lstm's, or with the columns of another head count */
    const char *arch = SL(", \"heads\": 3, \"forget\": \"sigmoid\"");
    int64_t w[2] = {24, 3}, b[1] = {24};
    for (int k = 0; k < 3; k++) {
        tu_file *f = tu_file_new(arch);
        int64_t r[2] = {k == 2 ? 12 : 24, k == 0 ? 6 : k == 1 ? 3 : 2};
        tu_file_add(f, "layers.0.0.W", w, 2, NULL);
        tu_file_add(f, "layers.0.0.R", r, 2, NULL);
        tu_file_add(f, "layers.0.0.Wb", b, 1, NULL);
        tu_file_add(f, "layers.0.0.Rb", b, 1, NULL);
        char want[96];
        snprintf(want, sizeof want, "shape [%lld, %lld], but the architecture needs [24, 2]",
                 (long long)r[0], (long long)r[1]);
        expect_fail_file(k == 0       ? "sl_R_dense"
                             : k == 1 ? "sl_R_heads"
                                      : "sl_R_rows",
                         f, "layers.0.0.R", want);
        tu_file_free(f);
    }
    /* Rb of the wrong length, and missing */
    tu_file *f = tu_file_new(arch);
    int64_t r[2] = {24, 2}, short_b[1] = {6};
    tu_file_add(f, "layers.0.0.W", w, 2, NULL);
    tu_file_add(f, "layers.0.0.R", r, 2, NULL);
    tu_file_add(f, "layers.0.0.Wb", b, 1, NULL);
    tu_file_add(f, "layers.0.0.Rb", short_b, 1, NULL);
    expect_fail_file("sl_Rb_shape", f, "layers.0.0.Rb",
                     "shape [6], but the architecture needs [24]");
    tu_file_free(f);
    f = tu_file_new(arch);
    tu_file_add(f, "layers.0.0.W", w, 2, NULL);
    tu_file_add(f, "layers.0.0.R", r, 2, NULL);
    tu_file_add(f, "layers.0.0.Wb", b, 1, NULL);
    expect_fail_file("sl_no_Rb", f, "layers.0.0.Rb", "missing: the architecture needs");
    tu_file_free(f);
#undef SL
}
END_TEST

START_TEST(refcount)
{
    tu_file *f = tu_random_model(small_arch, 3);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    tu_file_free(f);
    rnnd_model *m = load_img(img, len);
    free(img);
    ck_assert_ptr_eq(rnnd_model_ref(m), m);
    ck_assert_ptr_eq(rnnd_model_ref(m), m);
    rnnd_model_unref(m);
    rnnd_model_unref(m);
    /* still alive: the spec is readable */
    ck_assert_int_eq(rnnd_model_get_spec(m)->layers[0].hidden, 2);
    ck_assert_float_eq(rnnd_model_get_spec(m)->layers[0].w[0].W[0],
                       rnnd_model_get_spec(m)->layers[0].w[0].W[0]);
    rnnd_model_unref(m); /* the last: ASan would report a leak or a double free */
    rnnd_model_unref(NULL);
    ck_assert_ptr_null(rnnd_model_ref(NULL));
}
END_TEST

START_TEST(names)
{
    ck_assert_str_eq(rnnd_act_name(RNND_ACT_SIGMOID), "Sigmoid");
    ck_assert_str_eq(rnnd_act_name(RNND_ACT_HARDSIGMOID), "HardSigmoid");
    ck_assert_str_eq(rnnd_act_name(RNND_ACT_THRESHOLDEDRELU), "ThresholdedRelu");
    ck_assert_str_eq(rnnd_act_name(RNND_ACT_SOFTPLUS), "Softplus");
    ck_assert_str_eq(rnnd_act_name(RNND_ACT_COUNT), "unknown");
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_LSTM), "lstm");
    ck_assert_str_eq(rnnd_cell_name(RNND_CELL_JORDAN), "jordan");
    ck_assert_str_eq(rnnd_cell_name(-1), "unknown");
    ck_assert_str_eq(rnnd_direction_name(RNND_DIR_FORWARD), "forward");
    ck_assert_str_eq(rnnd_direction_name(RNND_DIR_BIDIRECTIONAL), "bidirectional");
    ck_assert_str_eq(rnnd_direction_name(7), "unknown");
    ck_assert_str_eq(rnnd_weights_name(RNND_WEIGHTS_F32), "f32");
    ck_assert_str_eq(rnnd_weights_name(RNND_WEIGHTS_BF16), "bf16");
    ck_assert_str_eq(rnnd_weights_name(RNND_WEIGHTS_F16), "f16");
    ck_assert_str_eq(rnnd_weights_name(RNND_WEIGHTS_I8), "int8");
    ck_assert_str_eq(rnnd_weights_name(4), "unknown");
}
END_TEST

/* ---- half-size weights ------------------------------------------------------------------ */

/* One tensor of a hand-built image: its dtype string and raw little-endian bytes. */
typedef struct htensor {
    const char *name, *dtype;
    int64_t shape[2];
    int ndim;
    const void *data;
    size_t bytes;
} htensor;

/* An image of ARCH (verbatim) and tensors T in order, each at the next multiple of 4 (the
 * gaps are unused bytes, which the format allows), the data buffer 8-aligned. Written here
 * byte by byte, independently of the loader and of testutil's F32-only writer. */
static unsigned char *record_image(const char *arch, const htensor *t, size_t n, const char *record,
                                   size_t *len);

static unsigned char *half_image(const char *arch, const htensor *t, size_t n, size_t *len)
{
    return record_image(arch, t, n, NULL, len);
}

/* half_image with __metadata__.verification = RECORD (JSON text) when not NULL. */
static unsigned char *record_image(const char *arch, const htensor *t, size_t n, const char *record,
                                   size_t *len)
{
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__",
                        json_pack("{s:s,s:s,s:s}", "format", "rnnd", "format_version", "1",
                                  "architecture", arch));
    if (record)
        json_object_set_new(json_object_get(hdr, "__metadata__"), "verification",
                            json_string(record));
    size_t off = 0;
    size_t *at = calloc(n ? n : 1, sizeof *at);
    ck_assert_ptr_nonnull(at);
    for (size_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer(t[i].shape[d]));
        at[i] = off;
        json_object_set_new(hdr, t[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", t[i].dtype, "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + t[i].bytes)));
        off = (off + t[i].bytes + 3) & ~(size_t)3;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hn = strlen(text), padded = (hn + 7) & ~(size_t)7;
    *len = 8 + padded + off;
    unsigned char *img = calloc(1, *len);
    ck_assert_ptr_nonnull(img);
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)((unsigned long long)padded >> (8 * i));
    memcpy(img + 8, text, hn);
    memset(img + 8 + hn, ' ', padded - hn);
    for (size_t i = 0; i < n; i++)
        memcpy(img + 8 + padded + at[i], t[i].data, t[i].bytes);
    free(at);
    free(text);
    return img;
}

#define HALF_ARCH(W) \
    "{\"format_version\": 1, " W "\"input\": {\"kind\": \"vectors\", " \
    "\"dim\": 3}, \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2}]}"

static const float hW[6] = {0.1f, 1.0f + 0x1p-9f, -3.0f, 1e-6f, 1000.7f, 0.33333334f};
static const float hR[4] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 65519.0f, -2.5f};
static const float hWb[2] = {0.1f, 1.0f + 0x1p-20f}, hRb[2] = {-0.3f, 7.0f};

/* small_arch's tensors, W and R with the given dtypes and data */
static unsigned char *small_half(const char *arch, const char *wdt, const void *w, size_t wb,
                                 const char *rdt, const void *r, size_t rb, size_t *len)
{
    htensor t[4] = {
        {"layers.0.0.W", wdt, {2, 3}, 2, w, wb},
        {"layers.0.0.R", rdt, {2, 2}, 2, r, rb},
        {"layers.0.0.Wb", "F32", {2, 0}, 1, hWb, sizeof hWb},
        {"layers.0.0.Rb", "F32", {2, 0}, 1, hRb, sizeof hRb},
    };
    return half_image(arch, t, 4, len);
}

/* small_half's model (F32) with verification RECORD, loaded. */
static rnnd_model *load_with_record(const char *record)
{
    htensor t[4] = {
        {"layers.0.0.W", "F32", {2, 3}, 2, hW, sizeof hW},
        {"layers.0.0.R", "F32", {2, 2}, 2, hR, sizeof hR},
        {"layers.0.0.Wb", "F32", {2, 0}, 1, hWb, sizeof hWb},
        {"layers.0.0.Rb", "F32", {2, 0}, 1, hRb, sizeof hRb},
    };
    size_t len;
    unsigned char *img = record_image(HALF_ARCH(""), t, 4, record, &len);
    rnnd_model *m = load_img(img, len);
    free(img);
    return m;
}

#define REC(extra, rel) \
    "{\"source\":\"onnx\",\"tolerance\":1e-5,\"max_abs_error\":0," \
    "\"max_rel_error\":" rel ",\"lengths\":[1,7],\"batch\":3" extra "}"

/* The record counts as verified only when it names this model's digest and its error is
 * within its tolerance (issue 14: a hand-made, failed or stale record said "yes"). */
START_TEST(verification_record)
{
    char why[256], rec[512];
    rnnd_model *m = load_with_record(REC("", "0"));
    ck_assert_int_eq(rnnd_model_verified(m, why, sizeof why), 0);
    ck_assert_msg(strstr(why, "names no model digest"), "%s", why);
    char digest[65];
    snprintf(digest, sizeof digest, "%s", rnnd_model_digest(m));
    rnnd_model_unref(m);

    snprintf(rec, sizeof rec,
             REC(",\"digest\":\"%s\",\"weights_checked\":\"f32\","
                 "\"norm_checked\":\"log_softmax\"",
                 "0"),
             digest);
    m = load_with_record(rec);
    ck_assert_int_eq(rnnd_model_verified(m, why, sizeof why), 1);
    const rnnd_verification *v = rnnd_model_verification(m);
    ck_assert_str_eq(v->digest, digest);
    ck_assert_str_eq(v->weights_checked, "f32");
    ck_assert_str_eq(v->norm_checked, "log_softmax");
    rnnd_model_unref(m);

    snprintf(rec, sizeof rec, REC(",\"digest\":\"%s\"", "0.5"), digest);
    m = load_with_record(rec);
    ck_assert_int_eq(rnnd_model_verified(m, why, sizeof why), 0);
    ck_assert_msg(strstr(why, "max rel error 0.5 is beyond its tolerance 1e-05"), "%s", why);
    rnnd_model_unref(m);

    char other[65];
    memset(other, 'a', 64);
    other[64] = '\0';
    snprintf(rec, sizeof rec, REC(",\"digest\":\"%s\"", "0"), other);
    m = load_with_record(rec);
    ck_assert_int_eq(rnnd_model_verified(m, why, sizeof why), 0);
    ck_assert_msg(strstr(why, "the model changed after the check"), "%s", why);
    rnnd_model_unref(m);

    /* malformed optional keys are refused, naming the key */
    static const struct {
        const char *extra, *key;
    } bad[] = {
        {",\"digest\":\"ABC\"", "__metadata__.verification.digest"},
        {",\"digest\":7", "__metadata__.verification.digest"},
        {",\"weights_checked\":\"f16\"", "__metadata__.verification.weights_checked"},
        {",\"norm_checked\":\"relu\"", "__metadata__.verification.norm_checked"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        htensor t[4] = {
            {"layers.0.0.W", "F32", {2, 3}, 2, hW, sizeof hW},
            {"layers.0.0.R", "F32", {2, 2}, 2, hR, sizeof hR},
            {"layers.0.0.Wb", "F32", {2, 0}, 1, hWb, sizeof hWb},
            {"layers.0.0.Rb", "F32", {2, 0}, 1, hRb, sizeof hRb},
        };
        char r[512];
        size_t len;
        snprintf(r, sizeof r,
                 "{\"source\":\"onnx\",\"tolerance\":1e-5,\"max_abs_error\":0,"
                 "\"max_rel_error\":0,\"lengths\":[1],\"batch\":3%s}",
                 bad[i].extra);
        unsigned char *img = record_image(HALF_ARCH(""), t, 4, r, &len);
        char tag[32];
        snprintf(tag, sizeof tag, "badrec%zu", i);
        expect_fail_img(tag, img, len, RNND_ERR_FORMAT, bad[i].key, "expected");
        free(img);
    }
}
END_TEST

static void assert_bits(const float *got, const float *want, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(memcmp(&got[i], &want[i], sizeof(float)) == 0, "%s[%d]: %a, want %a", what, i,
                      (double)got[i], (double)want[i]);
}

/* "weights" with F32 tensors: the matrices are rounded to nearest even at load (the expected
 * values worked out by hand), biases untouched, file digest over the file bytes. */
START_TEST(valid_half_rounded_at_load)
{
    /* bf16 keeps 8 significant bits; f16 11, and its range ends at 65504 */
    static const float bW[6] = {0x1.9ap-4f, 1.0f, -3.0f, 0x1.0cp-20f, 1000.0f, 0x1.56p-2f};
    static const float bR[4] = {1.0f, 1.0f + 0x4p-8f, 65536.0f, -2.5f};
    static const float fW[6] = {0x1.998p-4f, 1.0f + 0x1p-9f, -3.0f,
                                0x11p-24f,   1000.5f,        0x1.554p-2f};
    static const float fR[4] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 65504.0f, -2.5f};
    static const char *archs[] = {HALF_ARCH("\"weights\": \"bf16\", "),
                                  HALF_ARCH("\"weights\": \"f16\", ")};
    for (int t = 0; t < 2; t++) {
        size_t len;
        unsigned char *img = small_half(archs[t], "F32", hW, sizeof hW, "F32", hR, sizeof hR, &len);
        rnnd_model *m = load_img(img, len);
        const rnnd_model_spec *s = rnnd_model_get_spec(m);
        ck_assert_int_eq(s->weights, t ? RNND_WEIGHTS_F16 : RNND_WEIGHTS_BF16);
        ck_assert_str_eq(rnnd_weights_name(s->weights), t ? "f16" : "bf16");
        assert_bits(s->layers[0].w[0].W, t ? fW : bW, 6, "W");
        assert_bits(s->layers[0].w[0].R, t ? fR : bR, 4, "R");
        assert_bits(s->layers[0].w[0].Wb, hWb, 2, "Wb"); /* not representable: kept */
        assert_bits(s->layers[0].w[0].Rb, hRb, 2, "Rb");
        ck_assert_uint_eq(rnnd_model_param_count(m), 14);
        char hex[65];
        rnnd_sha256_hex(img, len, hex);
        ck_assert_str_eq(rnnd_model_file_digest(m), hex);
        rnnd_model_unref(m);
        free(img);
    }
    /* no "weights", or "f32", or null: floats as stored */
    static const char *f32_archs[] = {HALF_ARCH(""), HALF_ARCH("\"weights\": \"f32\", "),
                                      HALF_ARCH("\"weights\": null, ")};
    for (int t = 0; t < 3; t++) {
        size_t len;
        unsigned char *img =
            small_half(f32_archs[t], "F32", hW, sizeof hW, "F32", hR, sizeof hR, &len);
        rnnd_model *m = load_img(img, len);
        ck_assert_int_eq(rnnd_model_get_spec(m)->weights, RNND_WEIGHTS_F32);
        assert_bits(rnnd_model_get_spec(m)->layers[0].w[0].W, hW, 6, "W");
        assert_bits(rnnd_model_get_spec(m)->layers[0].w[0].R, hR, 4, "R");
        rnnd_model_unref(m);
        free(img);
    }
}
END_TEST

/* BF16 / F16 tensors: widened exactly (bit patterns and values by hand: normal, subnormal,
 * largest finite, negative), 2-byte elements at 2-aligned offsets; a matrix may also stay
 * F32 next to a half one. */
START_TEST(valid_half_stored)
{
    static const uint16_t bw[6] = {0x3f80, 0x4049, 0xbe00, 0x0001, 0x7f7f, 0x8000};
    static const float bwv[6] = {1.0f, 3.140625f, -0.125f, 0x1p-133f, 0x1.fep127f, -0.0f};
    static const uint16_t fw[6] = {0x3c00, 0x3555, 0xb400, 0x0001, 0x7bff, 0x03ff};
    static const float fwv[6] = {1.0f, 0.333251953125f, -0.25f, 0x1p-24f, 65504.0f, 0x3ffp-24f};
    static const uint16_t r16[4] = {0x4000, 0xc000, 0x0000, 0x3c00}; /* 2, -2, 0, 1 (f16) */
    size_t len;
    unsigned char *img = small_half(HALF_ARCH("\"weights\": \"bf16\", "), "BF16", bw, sizeof bw,
                                    "F32", hR, sizeof hR, &len);
    rnnd_model *m = load_img(img, len);
    const rnnd_dir_weights *w = &rnnd_model_get_spec(m)->layers[0].w[0];
    assert_bits(w->W, bwv, 6, "bf16 W");
    static const float bR[4] = {1.0f, 1.0f + 0x4p-8f, 65536.0f, -2.5f};
    assert_bits(w->R, bR, 4, "bf16 R (F32 in the file)");
    assert_bits(w->Wb, hWb, 2, "Wb");
    ck_assert_uint_eq(rnnd_model_param_count(m), 14);
    rnnd_model_unref(m);
    free(img);

    img = small_half(HALF_ARCH("\"weights\": \"f16\", "), "F16", fw, sizeof fw, "F16", r16,
                     sizeof r16, &len);
    /* the file is smaller: 12 + 8 bytes of matrices instead of 24 + 16 */
    m = load_img(img, len);
    w = &rnnd_model_get_spec(m)->layers[0].w[0];
    assert_bits(w->W, fwv, 6, "f16 W");
    static const float r16v[4] = {2.0f, -2.0f, 0.0f, 1.0f};
    assert_bits(w->R, r16v, 4, "f16 R");
    assert_bits(w->Rb, hRb, 2, "Rb");
    char hex[65];
    rnnd_sha256_hex(img, len, hex);
    ck_assert_str_eq(rnnd_model_file_digest(m), hex);
    rnnd_model_unref(m);
    free(img);
}
END_TEST

/* The state digest of ARCH's random model with SEED into OUT; also its file digest. */
static void digests_of(const char *arch, unsigned seed, char out[65], char file[65])
{
    tu_file *f = tu_random_model(arch, seed);
    ck_assert_ptr_nonnull(f);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    tu_file_free(f);
    rnnd_model *m = load_img(img, len);
    memcpy(out, rnnd_model_digest(m), 65);
    memcpy(file, rnnd_model_file_digest(m), 65);
    rnnd_model_unref(m);
    free(img);
}

/* docs/state.md, "The digest": what a state means, not how the file names or stores it. The
 * base: tokens, an lstm with a clip and explicit activations, a gru, a jordan, a head. */
#define DIGEST_ARCH(name, text, lstm, gru, head) \
    "{\"format_version\": 1, " name " \"input\": {\"kind\": \"tokens\", \"vocab_size\": 4," \
    " \"embedding_dim\": 3}, " text " \"layers\": [" \
    " {\"type\": \"lstm\", \"hidden_size\": 3, \"clip\": 0.5, " lstm "}," \
    " {\"type\": \"gru\", \"hidden_size\": 2" gru "}," \
    " {\"type\": \"jordan\", \"hidden_size\": 2, \"output_size\": 2}]," \
    " \"head\": {\"out_dim\": 4, \"in_dim\": 2, \"norm\": \"" head "\"}}"
#define LSTM_ACTS(alpha) \
    "\"activations\": [[{\"op\": \"LeakyRelu\", \"alpha\": " alpha "}," \
    " {\"op\": \"Tanh\"}, {\"op\": \"Tanh\"}]]"

START_TEST(state_digest_what_counts)
{
    static const char *base = DIGEST_ARCH("", "", LSTM_ACTS("0.1"), "", "softmax");
    static const char *same[] = {
        DIGEST_ARCH("\"name\": \"another\",", "", LSTM_ACTS("0.1"), "", "softmax"),
        DIGEST_ARCH("", "\"vocab\": [\"a\", \"b\", \"c\", \"d\"], \"tokenizer\": \"char\",",
                    LSTM_ACTS("0.1"), "", "softmax"),
        /* a parameter Tanh does not have; options a gru does not have, at neutral values */
        DIGEST_ARCH("", "",
                    "\"activations\": [[{\"op\": \"LeakyRelu\", \"alpha\": 0.1},"
                    " {\"op\": \"Tanh\", \"alpha\": 3}, {\"op\": \"Tanh\", \"beta\": 2}]]",
                    ", \"forget_gate\": false, \"peepholes\": false", "softmax"),
        DIGEST_ARCH("\"weights\": \"f32\",", "", LSTM_ACTS("0.1"), ", \"direction\": \"forward\"",
                    "softmax"),
        DIGEST_ARCH("\"pool\": \"none\",", "", LSTM_ACTS("0.1"), "", "softmax"),
    };
    static const char *other[] = {
        DIGEST_ARCH("", "", LSTM_ACTS("0.2"), "", "softmax"),
        DIGEST_ARCH("", "", LSTM_ACTS("0.1") ", \"input_forget\": true", "", "softmax"),
        DIGEST_ARCH("", "", LSTM_ACTS("0.1"), ", \"linear_before_reset\": 1", "softmax"),
        DIGEST_ARCH("", "", LSTM_ACTS("0.1"), ", \"clip\": 4", "softmax"),
        DIGEST_ARCH("", "", LSTM_ACTS("0.1"), "", "log_softmax"),
        DIGEST_ARCH("\"pool\": \"mean\",", "", LSTM_ACTS("0.1"), "", "softmax"),
        DIGEST_ARCH("\"pool\": \"max\",", "", LSTM_ACTS("0.1"), "", "softmax"),
    };
    char want[65], wfile[65], got[65], file[65];
    digests_of(base, 7, want, wfile);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        digests_of(same[i], 7, got, file);
        ck_assert_msg(!strcmp(got, want), "same meaning %zu: digest %s, want %s", i, got, want);
        ck_assert_msg(strcmp(file, wfile), "same meaning %zu: another file", i);
    }
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        digests_of(other[i], 7, got, file);
        ck_assert_msg(strcmp(got, want), "other meaning %zu: the base's digest", i);
    }
    digests_of(base, 8, got, file);
    ck_assert_msg(strcmp(got, want), "other weights: the base's digest");
}
END_TEST

static void expect_fail_half(const char *tag, const char *arch, const char *wdt, const void *w,
                             size_t wb, const char *rdt, const void *r, size_t rb, const char *key,
                             const char *reason)
{
    size_t len;
    unsigned char *img = small_half(arch, wdt, w, wb, rdt, r, rb, &len);
    expect_fail_img(tag, img, len, RNND_ERR_FORMAT, key, reason);
    free(img);
}

/* Every refusal of half-size weights: one per branch. */
START_TEST(bad_half)
{
    static const uint16_t h6[6] = {0x3f80, 0x3f80, 0x3f80, 0x3f80, 0x3f80, 0x3f80};
    static const uint16_t h4[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
    const char *bf = HALF_ARCH("\"weights\": \"bf16\", ");
    const char *f16 = HALF_ARCH("\"weights\": \"f16\", ");
    /* dtype against "weights" */
    expect_fail_half("bf16_in_f32", HALF_ARCH(""), "BF16", h6, sizeof h6, "F32", hR, sizeof hR,
                     "layers.0.0.W",
                     "dtype BF16 does not match the architecture's weights "
                     "\"f32\"");
    expect_fail_half("f16_in_bf16", bf, "F32", hW, sizeof hW, "F16", h4, sizeof h4, "layers.0.0.R",
                     "dtype F16 does not match the architecture's weights "
                     "\"bf16\"");
    expect_fail_half("bf16_in_f16", f16, "BF16", h6, sizeof h6, "F16", h4, sizeof h4,
                     "layers.0.0.W",
                     "dtype BF16 does not match the architecture's weights "
                     "\"f16\"");
    /* values beyond float16: hR[2] = 65519 rounds to 65504, 65520 does not fit */
    float big[4] = {1.0f, -65520.0f, 2.0f, 3.0f};
    expect_fail_half("f16_overflow", f16, "F32", hW, sizeof hW, "F32", big, sizeof big,
                     "layers.0.0.R",
                     "element 1: value -65520 out of float16 range (largest "
                     "finite 65504)");
    float w5[6] = {0, 0, 0, 0, 0, 1e5f};
    expect_fail_half("f16_1e5", f16, "F32", w5, sizeof w5, "F32", hR, sizeof hR, "layers.0.0.W",
                     "element 5: value 100000 out of float16 range");
    float fmax[6] = {FLT_MAX, 0, 0, 0, 0, 0};
    expect_fail_half("bf16_overflow", bf, "F32", fmax, sizeof fmax, "F32", hR, sizeof hR,
                     "layers.0.0.W", "element 0: value 3.40282347e+38 out of bfloat16 range");
    /* only the matrices may be half-size */
    {
        htensor t[4] = {
            {"layers.0.0.W", "F32", {2, 3}, 2, hW, sizeof hW},
            {"layers.0.0.R", "F32", {2, 2}, 2, hR, sizeof hR},
            {"layers.0.0.Wb", "BF16", {2, 0}, 1, h4, 4},
            {"layers.0.0.Rb", "F32", {2, 0}, 1, hRb, sizeof hRb},
        };
        size_t len;
        unsigned char *img = half_image(bf, t, 4, &len);
        expect_fail_img("bias_half", img, len, RNND_ERR_FORMAT, "layers.0.0.Wb",
                        "dtype BF16: only the weight matrices (W, R, proj, V, D, a head linear's "
                        "weight) may be half-size or int8; this tensor must be F32");
        free(img);
    }
    /* 2-byte elements: sizes and alignment counted in 2 bytes */
    expect_fail_half("half_span", bf, "BF16", h6, 10, "F32", hR, sizeof hR, "layers.0.0.W",
                     "span 10 bytes, but 6 BF16 elements need 12");
    expect_fail_entry("half_odd", "layers.0.0.W",
                      "{\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [1, 13]}",
                      "layers.0.0.W", "begin 1 is not a multiple of 2");
    /* the architecture's field */
    expect_fail_arch("weights_f8", HALF_ARCH("\"weights\": \"f8\", "), "architecture.weights",
                     "unknown value \"f8\" (expected f32, bf16, f16 or int8)");
    expect_fail_arch("weights_num", HALF_ARCH("\"weights\": 16, "), "architecture.weights",
                     "expected a string, got");
    expect_fail_arch("weights_case", HALF_ARCH("\"weights\": \"BF16\", "), "architecture.weights",
                     "unknown value \"BF16\"");
}
END_TEST

/* ---- the container ---------------------------------------------------------------------- */

START_TEST(bad_open_missing)
{
    char err[512];
    rnnd_model *m = (rnnd_model *)1;
    const char *path = tmp_path("does_not_exist");
    unlink(path);
    ck_assert_int_eq(rnnd_model_open(path, &m, err, sizeof err), RNND_ERR_IO);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, path) == err && strstr(err, ": file: cannot open: "), "%s", err);
}
END_TEST

START_TEST(bad_open_directory)
{
    char err[512];
    rnnd_model *m = (rnnd_model *)1;
    ck_assert_int_eq(rnnd_model_open(tu_tmpdir(), &m, err, sizeof err), RNND_ERR_IO);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, ": file: not a regular file"), "%s", err);
}
END_TEST

START_TEST(bad_empty)
{
    expect_fail_img("empty", (const unsigned char *)"", 0, RNND_ERR_FORMAT, "header_length",
                    "file is 0 bytes, too short");
}
END_TEST

START_TEST(bad_truncated)
{
    expect_fail_img("trunc", (const unsigned char *)"\x10\0\0\0\0", 5, RNND_ERR_FORMAT,
                    "header_length", "file is 5 bytes, too short");
}
END_TEST

START_TEST(bad_header_past_eof)
{
    size_t len;
    unsigned char *img = raw_image("{}  ", 0, 1000, &len);
    expect_fail_img("past_eof", img, len, RNND_ERR_FORMAT, "header_length",
                    "1000 bytes runs past the end of the file (12 bytes)");
    free(img);
}
END_TEST

START_TEST(bad_header_huge)
{
    size_t len;
    unsigned char *img = raw_image("{}  ", 0, (long long)(~0ULL >> 1), &len);
    expect_fail_img("huge_hdr", img, len, RNND_ERR_FORMAT, "header_length",
                    "9223372036854775807 bytes is over the 67108864-byte limit");
    free(img);
    img = raw_image("{}  ", 0, (64 << 20) + 4, &len);
    expect_fail_img("huge_hdr2", img, len, RNND_ERR_FORMAT, "header_length",
                    "is over the 67108864-byte limit");
    free(img);
}
END_TEST

START_TEST(bad_data_misaligned)
{
    size_t len;
    unsigned char *img = raw_image("{}   ", 0, -1, &len);
    expect_fail_img("misaligned_data", img, len, RNND_ERR_FORMAT, "header_length",
                    "data buffer starts at byte 13, not a multiple of 4");
    free(img);
}
END_TEST

START_TEST(bad_json)
{
    expect_fail_header("bad_json", "{\"a\": ", 2, "header", "invalid JSON");
    expect_fail_header("bad_json2", "{\"__metadata__\": {}} x  ", 0, "header", "invalid JSON");
    expect_fail_header("bad_utf8", "{\"\xff\": 1}", 2, "header", "invalid JSON");
}
END_TEST

START_TEST(bad_json_deep)
{
    size_t n = 20000;
    char *h = malloc(n + 1);
    for (size_t i = 0; i < n / 2; i++) {
        h[i] = '[';
        h[n - 1 - i] = ']';
    }
    h[n] = '\0';
    expect_fail_header("deep", h, 0, "header", "JSON nested deeper than 64 levels");
    /* brackets inside strings do not count */
    memset(h, '[', n);
    memcpy(h, "{\"", 2);
    memcpy(h + n - 4, "\":1}", 4);
    expect_fail_header("deep_str", h, 0, "__metadata__", "missing");
    free(h);
}
END_TEST

START_TEST(bad_duplicate_keys)
{
    expect_fail_header("dup", "{\"__metadata__\": {}, \"x\": 1, \"x\": 2} ", 0, "header",
                       "duplicate");
}
END_TEST

START_TEST(bad_not_object)
{
    expect_fail_header("array", "[1, 2]", 2, "header", "not a JSON object");
}
END_TEST

START_TEST(bad_metadata)
{
    expect_fail_header("no_meta", "{}  ", 0, "__metadata__", "missing");
    expect_fail_header("meta_str", "{\"__metadata__\": \"x\"} ", 0, "__metadata__",
                       "not an object");
    expect_fail_header("meta_int", "{\"__metadata__\": {\"format\": 1}}  ", 0,
                       "__metadata__.format", "not a string");
    expect_fail_header("no_format", "{\"__metadata__\": {}}", 0, "__metadata__.format", "missing");
    expect_fail_header("format", "{\"__metadata__\": {\"format\": \"pt\"}}", 0,
                       "__metadata__.format", "\"pt\" is not \"rnnd\"");
    expect_fail_header("no_version", "{\"__metadata__\": {\"format\": \"rnnd\"}}   ", 0,
                       "__metadata__.format_version", "missing");
    expect_fail_header("no_arch",
                       "{\"__metadata__\": {\"format\": \"rnnd\", \"format_version\": \"1\"}}", 0,
                       "__metadata__.architecture", "missing");
}
END_TEST

START_TEST(bad_format_version)
{
    expect_fail_header("version",
                       "{\"__metadata__\": {\"format\": \"rnnd\", \"format_version\": \"2\","
                       " \"architecture\": \"{}\"}} ",
                       0, "__metadata__.format_version", "unsupported version \"2\"");
}
END_TEST

/* ---- tensor entries --------------------------------------------------------------------- */

START_TEST(bad_missing_tensor)
{
    expect_fail_entry("missing", "layers.0.0.R", NULL, "layers.0.0.R",
                      "missing: the architecture needs this tensor");
}
END_TEST

START_TEST(bad_wrong_shape)
{
    expect_fail_entry("shape", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": [0, 24]}",
                      "layers.0.0.W", "shape [3, 2], but the architecture needs [2, 3]");
    expect_fail_entry("shape_rank", "layers.0.0.Wb",
                      "{\"dtype\": \"F32\", \"shape\": [2, 1], \"data_offsets\": [40, 48]}",
                      "layers.0.0.Wb", "shape [2, 1], but the architecture needs [2]");
}
END_TEST

START_TEST(bad_dtype)
{
    /* a half-size tensor in a model whose architecture says f32 (the default) */
    expect_fail_entry("f16", "layers.0.0.W",
                      "{\"dtype\": \"F16\", \"shape\": [2, 3], \"data_offsets\": [0, 12]}",
                      "layers.0.0.W",
                      "dtype F16 does not match the architecture's weights "
                      "\"f32\"");
    expect_fail_entry("f64", "layers.0.0.W",
                      "{\"dtype\": \"F64\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}",
                      "layers.0.0.W", "dtype F64 is not supported (F32, BF16, F16 or I8)");
    expect_fail_entry("i32", "layers.0.0.R",
                      "{\"dtype\": \"I32\", \"shape\": [2, 2], \"data_offsets\": [24, 40]}",
                      "layers.0.0.R", "dtype I32 is not supported");
    expect_fail_entry("dtype_int", "layers.0.0.R",
                      "{\"dtype\": 4, \"shape\": [2, 2], \"data_offsets\": [24, 40]}",
                      "layers.0.0.R", "dtype is not a string");
}
END_TEST

START_TEST(bad_unknown_tensor)
{
    expect_fail_entry("extra", "extra.weight",
                      "{\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [56, 56]}",
                      "extra.weight", "unknown tensor: the architecture does not use it");
    /* a control character in a name must not break the one-line message */
    expect_fail_entry("extra_nl", "bad\nname",
                      "{\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}", "bad?name",
                      "unknown tensor");
}
END_TEST

START_TEST(bad_overlap)
{
    expect_fail_entry("overlap", "layers.0.0.R",
                      "{\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [16, 32]}",
                      "layers.0.0.R", "data [16, 32) overlaps layers.0.0.W [0, 24)");
    /* the same bytes used twice */
    expect_fail_entry("alias", "layers.0.0.Rb",
                      "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [40, 48]}",
                      "layers.0.0.Rb", "overlaps layers.0.0.Wb [40, 48)");
}
END_TEST

START_TEST(bad_offsets)
{
    expect_fail_entry("past_end", "layers.0.0.Rb",
                      "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [56, 64]}",
                      "layers.0.0.Rb", "end 64 is past the end of the data (56 bytes)");
    expect_fail_entry("misaligned", "layers.0.0.Wb",
                      "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [42, 50]}",
                      "layers.0.0.Wb", "begin 42 is not a multiple of 4");
    expect_fail_entry("end_lt_begin", "layers.0.0.Wb",
                      "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [48, 40]}",
                      "layers.0.0.Wb", "end 40 < begin 48");
    expect_fail_entry("span", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}",
                      "layers.0.0.W", "span 20 bytes, but 6 F32 elements need 24");
    expect_fail_entry("negative_off", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [-24, 0]}",
                      "layers.0.0.W", "negative offset");
    expect_fail_entry("offs_type", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0]}",
                      "layers.0.0.W", "data_offsets is not an array of 2 integers");
}
END_TEST

START_TEST(bad_shape_values)
{
    expect_fail_entry("neg_dim", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [-2, -3], \"data_offsets\": [0, 24]}",
                      "layers.0.0.W", "shape[0] is not a non-negative integer");
    expect_fail_entry("overflow", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [4611686018427387904, 8],"
                      " \"data_offsets\": [0, 24]}",
                      "layers.0.0.W", "element count overflows");
    expect_fail_entry("overflow_bytes", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [4611686018427387905],"
                      " \"data_offsets\": [0, 24]}",
                      "layers.0.0.W", "byte size overflows");
    expect_fail_entry("rank9", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,6],"
                      " \"data_offsets\": [0, 24]}",
                      "layers.0.0.W", "shape has 9 dimensions (at most 8)");
}
END_TEST

START_TEST(bad_entry_fields)
{
    expect_fail_entry("entry_extra", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24],"
                      " \"x\": 1}",
                      "layers.0.0.W", "unknown field \"x\"");
    expect_fail_entry("entry_noshape", "layers.0.0.W",
                      "{\"dtype\": \"F32\", \"data_offsets\": [0, 24]}", "layers.0.0.W",
                      "missing shape");
    expect_fail_entry("entry_notobj", "layers.0.0.W", "[0, 24]", "layers.0.0.W",
                      "tensor entry is not an object");
}
END_TEST

/* ---- the architecture ------------------------------------------------------------------- */

#define A_HEAD "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3}, "

START_TEST(bad_arch_json)
{
    expect_fail_arch("arch_json", "{\"format_version\": 1,", "architecture", "invalid JSON");
    expect_fail_arch("arch_dup", A_HEAD "\"layers\": [], \"layers\": []}", "architecture",
                     "duplicate");
    expect_fail_arch("arch_array", "[1]", "architecture", "expected a JSON object");
    char deep[300];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 99);
    deep[299] = '\0';
    expect_fail_arch("arch_deep", deep, "architecture", "nested deeper than 64");
}
END_TEST

START_TEST(bad_arch_version)
{
    expect_fail_arch("arch_ver", "{\"format_version\": 2}", "architecture.format_version",
                     "unsupported version");
    expect_fail_arch("arch_nover", "{\"layers\": []}", "architecture.format_version", "missing");
}
END_TEST

START_TEST(bad_arch_unknown_key)
{
    expect_fail_arch("arch_key", A_HEAD "\"layer\": []}", "architecture.layer", "unknown key");
    expect_fail_arch("layer_key",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"hiden\": 3}]}",
                     "architecture.layers[0].hiden", "unknown key");
    expect_fail_arch("input_key",
                     "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\","
                     " \"dim\": 3, \"vocab_size\": 3}, \"layers\": []}",
                     "architecture.input.vocab_size", "unknown key");
    expect_fail_arch("act_key",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"Tanh\", \"gamma\": 1}]]}]}",
                     "architecture.layers[0].activations[0][0].gamma", "unknown key");
}
END_TEST

START_TEST(bad_arch_layer_type)
{
    expect_fail_arch("type",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2},"
                            " {\"type\": \"transformer\", \"hidden_size\": 2}]}",
                     "architecture.layers[1].type", "unknown value \"transformer\"");
    expect_fail_arch("no_type", A_HEAD "\"layers\": [{\"hidden_size\": 2}]}",
                     "architecture.layers[0].type", "missing");
    expect_fail_arch("dir",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"direction\": \"sideways\"}]}",
                     "architecture.layers[0].direction", "unknown value");
}
END_TEST

START_TEST(bad_arch_sizes)
{
    expect_fail_arch("neg",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2},"
                            " {\"type\": \"gru\", \"hidden_size\": -4}]}",
                     "architecture.layers[1].hidden_size", "-4 is out of range 1 to 65536");
    expect_fail_arch("zero", A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 0}]}",
                     "architecture.layers[0].hidden_size", "out of range");
    expect_fail_arch("huge",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\","
                            " \"hidden_size\": 9223372036854775807}]}",
                     "architecture.layers[0].hidden_size", "out of range 1 to 65536");
    expect_fail_arch("big", A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 65537}]}",
                     "architecture.layers[0].hidden_size", "out of range");
    expect_fail_arch("real", A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2.0}]}",
                     "architecture.layers[0].hidden_size", "expected an integer");
    expect_fail_arch("no_hidden", A_HEAD "\"layers\": [{\"type\": \"rnn\"}]}",
                     "architecture.layers[0].hidden_size", "missing");
    expect_fail_arch("dim",
                     "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\","
                     " \"dim\": 0}, \"layers\": []}",
                     "architecture.input.dim", "out of range");
    expect_fail_arch("no_input", "{\"format_version\": 1, \"layers\": []}", "architecture.input",
                     "missing");
    expect_fail_arch("kind", "{\"format_version\": 1, \"input\": {\"kind\": \"images\"}}",
                     "architecture.input.kind", "unknown value");
    expect_fail_arch("proj",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"proj_size\": -1}]}",
                     "architecture.layers[0].proj_size", "out of range");
    expect_fail_arch("jordan_out",
                     A_HEAD "\"layers\": [{\"type\": \"jordan\","
                            " \"hidden_size\": 2}]}",
                     "architecture.layers[0].output_size", "missing");
}
END_TEST

START_TEST(bad_arch_layers)
{
    expect_fail_arch("no_layers", A_HEAD "\"layers\": []}", "architecture.layers",
                     "0 layers, must be 1 to 64");
    char big[8192];
    int n = snprintf(big, sizeof big, A_HEAD "\"layers\": [");
    for (int i = 0; i < 65; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s{\"type\": \"rnn\", \"hidden_size\": 3}",
                      i ? ", " : "");
    snprintf(big + n, sizeof big - (size_t)n, "]}");
    expect_fail_arch("65_layers", big, "architecture.layers", "65 layers, must be 1 to 64");
    expect_fail_arch("layers_obj", A_HEAD "\"layers\": {}}", "architecture.layers",
                     "expected an array");
    expect_fail_arch("layer_int", A_HEAD "\"layers\": [1]}", "architecture.layers[0]",
                     "expected an object");
}
END_TEST

START_TEST(bad_arch_options)
{
    expect_fail_arch("peep_gru",
                     A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 2,"
                            " \"peepholes\": true}]}",
                     "architecture.layers[0].peepholes", "not used by a gru layer");
    expect_fail_arch("lbr_lstm",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"linear_before_reset\": 1}]}",
                     "architecture.layers[0].linear_before_reset", "not used by a lstm layer");
    expect_fail_arch("fg_rnn",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"forget_gate\": 1}]}",
                     "architecture.layers[0].forget_gate", "expected true or false");
    expect_fail_arch("if_rnn",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"input_forget\": true}]}",
                     "architecture.layers[0].input_forget", "not used by a rnn layer");
    expect_fail_arch("proj_gru",
                     A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 2,"
                            " \"proj_size\": 1}]}",
                     "architecture.layers[0].proj_size", "not used by a gru layer");
    expect_fail_arch("out_rnn",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"output_size\": 2}]}",
                     "architecture.layers[0].output_size", "not used by a rnn layer");
    expect_fail_arch("lbr_2",
                     A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 2,"
                            " \"linear_before_reset\": 2}]}",
                     "architecture.layers[0].linear_before_reset", "out of range 0 to 1");
    expect_fail_arch("peep_str",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"peepholes\": \"yes\"}]}",
                     "architecture.layers[0].peepholes", "expected true or false");
    expect_fail_arch("cifg_nofg",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"input_forget\": true, \"forget_gate\": false}]}",
                     "architecture.layers[0].input_forget", "needs a forget gate");
    expect_fail_arch("clip_neg",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"clip\": -1}]}",
                     "architecture.layers[0].clip", "must be positive");
    expect_fail_arch("clip_zero",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"clip\": 0.0}]}",
                     "architecture.layers[0].clip", "must be positive");
    expect_fail_arch("clip_str",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"clip\": \"1\"}]}",
                     "architecture.layers[0].clip", "expected a number");
    expect_fail_arch("clip_big",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"clip\": 1e300}]}",
                     "architecture.layers[0].clip", "does not fit a float");
}
END_TEST

START_TEST(bad_arch_activations)
{
    expect_fail_arch("act_count",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"Sigmoid\"}, {\"op\": \"Tanh\"}]]}]}",
                     "architecture.layers[0].activations[0]",
                     "2 activations, a lstm layer takes 3");
    expect_fail_arch("act_dirs",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"direction\": \"bidirectional\","
                            " \"activations\": [[{\"op\": \"Tanh\"}]]}]}",
                     "architecture.layers[0].activations", "1 lists for 2 direction(s)");
    expect_fail_arch("act_unknown",
                     A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"Sigmoid\"}, {\"op\": \"Gelu\"}]]}]}",
                     "architecture.layers[0].activations[0][1].op", "unknown value \"Gelu\"");
    expect_fail_arch("act_case",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"tanh\"}]]}]}",
                     "architecture.layers[0].activations[0][0].op", "unknown value \"tanh\"");
    expect_fail_arch("act_str",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"activations\": [[\"Tanh\"]]}]}",
                     "architecture.layers[0].activations[0][0]", "expected an object");
    expect_fail_arch("act_alpha",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"activations\": [[{\"op\": \"LeakyRelu\", \"alpha\": \"x\"}]]}]}",
                     "architecture.layers[0].activations[0][0].alpha", "expected a number");
    expect_fail_arch("act_flat",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2,"
                            " \"activations\": [{\"op\": \"Tanh\"}]}]}",
                     "architecture.layers[0].activations[0]", "expected an array");
}
END_TEST

#define T_HEAD \
    "{\"format_version\": 1, \"input\": {\"kind\": \"tokens\", \"vocab_size\": 3," \
    " \"embedding_dim\": 2}, \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}], "

START_TEST(bad_arch_vocab)
{
    expect_fail_arch("vocab_count", T_HEAD "\"vocab\": [\"a\", \"b\"]}", "architecture.vocab",
                     "2 strings, but input.vocab_size is 3");
    expect_fail_arch("vocab_type", T_HEAD "\"vocab\": [\"a\", 2, \"c\"]}", "architecture.vocab[1]",
                     "expected a string");
    expect_fail_arch("vocab_obj", T_HEAD "\"vocab\": \"abc\"}", "architecture.vocab",
                     "expected an array");
    expect_fail_arch("vocab_vectors",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\","
                            " \"hidden_size\": 4}], \"vocab\": [\"a\"]}",
                     "architecture.vocab", "only a tokens input has a vocabulary");
    expect_fail_arch("vocab_nul", T_HEAD "\"vocab\": [\"a\", \"\\u0000\", \"c\"]}", "architecture",
                     "invalid JSON");
    expect_fail_arch("tokenizer", T_HEAD "\"tokenizer\": \"word\"}", "architecture.tokenizer",
                     "unknown value \"word\"");
    expect_fail_arch("tokenizer_char", T_HEAD "\"tokenizer\": \"char\"}", "architecture.tokenizer",
                     "\"char\" needs a vocab");
    expect_fail_arch("tokenizer_vec",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\","
                            " \"hidden_size\": 4}], \"tokenizer\": \"byte\"}",
                     "architecture.tokenizer", "only a tokens input has a tokenizer");
    /* byte ids are byte values: all 256 must be ids */
    expect_fail_arch("tokenizer_byte_3", T_HEAD "\"tokenizer\": \"byte\"}",
                     "architecture.tokenizer", "tokenizer byte needs vocab_size >= 256");
    expect_fail_arch("tokenizer_byte_255",
                     "{\"format_version\": 1, \"input\": {\"kind\":"
                     " \"tokens\", \"vocab_size\": 255, \"embedding_dim\": 2}, \"layers\":"
                     " [{\"type\": \"rnn\", \"hidden_size\": 4}], \"tokenizer\": \"byte\"}",
                     "architecture.tokenizer", "tokenizer byte needs vocab_size >= 256");
    expect_fail_arch("name_long",
                     A_HEAD
                     "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}],"
                     " \"name\": \"0123456789012345678901234567890123456789012345678901234567"
                     "890123456789012345678901234567890123456789012345678901234567890123456789\"}",
                     "architecture.name", "longer than 127 bytes");
}
END_TEST

START_TEST(bad_arch_head)
{
    expect_fail_arch("head_in",
                     A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 4,"
                            " \"direction\": \"bidirectional\"}], \"head\": {\"out_dim\": 2,"
                            " \"in_dim\": 4}}",
                     "architecture.head.in_dim", "4, but the last layer outputs 8");
    expect_fail_arch("head_norm",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}],"
                            " \"head\": {\"out_dim\": 2, \"in_dim\": 4, \"norm\": \"sigmoid\"}}",
                     "architecture.head.norm", "unknown value");
    expect_fail_arch("head_out",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}],"
                            " \"head\": {\"in_dim\": 4}}",
                     "architecture.head.out_dim", "missing");
    expect_fail_arch("head_arr",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}],"
                            " \"head\": []}",
                     "architecture.head", "expected an object or null");
}
END_TEST

/* An MLP head (docs/model-format.md, "The head"): layernorm, linear, every activation. */
#define MLP_ARCH \
    "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3}," \
    " \"layers\": [{\"type\": \"gru\", \"hidden_size\": 4}], \"head\": {\"in_dim\": 4," \
    " \"out_dim\": 2, \"norm\": \"log_softmax\", \"layers\": [" \
    "{\"op\": \"layernorm\", \"eps\": 0.001}," \
    " {\"op\": \"linear\", \"in_dim\": 4, \"out_dim\": 6}," \
    " {\"op\": \"gelu\"}, {\"op\": \"layernorm\", \"affine\": false}, {\"op\": \"relu\"}," \
    " {\"op\": \"tanh\"}, {\"op\": \"sigmoid\"}, {\"op\": \"gelu_tanh\"}," \
    " {\"op\": \"linear\", \"in_dim\": 6, \"out_dim\": 2}]}}"

START_TEST(valid_head_layers)
{
    rnnd_model *m = open_random("mlp", MLP_ARCH, NULL, NULL);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    static const int ops[] = {RNND_HEAD_LAYERNORM, RNND_HEAD_LINEAR,    RNND_HEAD_GELU,
                              RNND_HEAD_LAYERNORM, RNND_HEAD_RELU,      RNND_HEAD_TANH,
                              RNND_HEAD_SIGMOID,   RNND_HEAD_GELU_TANH, RNND_HEAD_LINEAR};
    ck_assert_int_eq(s->has_head, 1);
    ck_assert_int_eq(s->head_short, 0);
    ck_assert_int_eq(s->head_n, 9);
    for (int k = 0; k < 9; k++)
        ck_assert_int_eq(s->head_layers[k].op, ops[k]);
    ck_assert_int_eq(s->head_in, 4);
    ck_assert_int_eq(s->head_out, 2);
    ck_assert_int_eq(s->head_norm, RNND_NORM_LOG_SOFTMAX);
    ck_assert_float_eq(s->head_layers[0].eps, 0.001f);
    ck_assert_int_eq(s->head_layers[0].affine, 1);
    ck_assert_ptr_nonnull(s->head_layers[0].W);
    ck_assert_float_eq(s->head_layers[3].eps, 1e-5f); /* the default */
    ck_assert_int_eq(s->head_layers[3].affine, 0);
    ck_assert_ptr_null(s->head_layers[3].W);
    ck_assert_ptr_null(s->head_layers[2].W);
    ck_assert_int_eq(s->head_layers[1].in_dim, 4);
    ck_assert_int_eq(s->head_layers[1].out_dim, 6);
    ck_assert_int_eq(s->head_layers[4].in_dim, 6);
    ck_assert_int_eq(s->head_layers[8].out_dim, 2);
    ck_assert_int_eq(rnnd_model_output_dim(m), 2);
    /* gru W 12x3 + R 12x4 + 24; head ln 4 + 4, linear 6x4 + 6, linear 2x6 + 2 */
    ck_assert_uint_eq(rnnd_model_param_count(m), 36 + 48 + 24 + 8 + 30 + 14);
    rnnd_model_unref(m);
}
END_TEST

#define HL_HEAD A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}], \"head\": "

/* Every validation branch of head.layers names its key. */
START_TEST(bad_arch_head_layers)
{
    expect_fail_arch("hl_op",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"swish\"}]}}",
                     "architecture.head.layers[0].op",
                     "unknown op \"swish\" (expected linear, relu");
    expect_fail_arch("hl_op_missing",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"eps\": 1}]}}",
                     "architecture.head.layers[0].op", "missing");
    expect_fail_arch("hl_chain",
                     HL_HEAD
                     "{\"in_dim\": 4, \"out_dim\": 2, \"layers\": ["
                     "{\"op\": \"linear\", \"in_dim\": 4, \"out_dim\": 5}, {\"op\": \"relu\"},"
                     " {\"op\": \"linear\", \"in_dim\": 6, \"out_dim\": 2}]}}",
                     "architecture.head.layers[2].in_dim",
                     "6, but the layer before gives 5 (the dims must chain)");
    expect_fail_arch("hl_chain0",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 2, \"layers\": ["
                             "{\"op\": \"linear\", \"in_dim\": 3, \"out_dim\": 2}]}}",
                     "architecture.head.layers[0].in_dim", "3, but the head's input");
    expect_fail_arch("hl_out",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 3, \"layers\": ["
                             "{\"op\": \"linear\", \"in_dim\": 4, \"out_dim\": 2}]}}",
                     "architecture.head.out_dim", "3, but the head's layers give 2");
    expect_fail_arch("hl_eps0",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"layernorm\", \"eps\": 0}]}}",
                     "architecture.head.layers[0].eps", "must be a positive number");
    expect_fail_arch("hl_epsneg",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"relu\"}, {\"op\": \"layernorm\", \"eps\": -1e-5}]}}",
                     "architecture.head.layers[1].eps", "must be a positive number");
    expect_fail_arch("hl_eps_str",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"layernorm\", \"eps\": \"small\"}]}}",
                     "architecture.head.layers[0].eps", "expected a number");
    expect_fail_arch("hl_affine",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"layernorm\", \"affine\": 1}]}}",
                     "architecture.head.layers[0].affine", "expected true or false");
    expect_fail_arch("hl_key",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"relu\", \"eps\": 1}]}}",
                     "architecture.head.layers[0].eps", "unknown key");
    expect_fail_arch("hl_lin_out",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"linear\", \"in_dim\": 4}]}}",
                     "architecture.head.layers[0].out_dim", "missing");
    expect_fail_arch("hl_lin_zero",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "{\"op\": \"linear\", \"in_dim\": 4, \"out_dim\": 0}]}}",
                     "architecture.head.layers[0].out_dim", "out of range");
    expect_fail_arch("hl_empty", HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": []}}",
                     "architecture.head.layers", "0 layers, must be 1 to 16");
#define RELU4 "{\"op\": \"relu\"}, {\"op\": \"relu\"}, {\"op\": \"relu\"}, {\"op\": \"relu\"}"
    expect_fail_arch("hl_many",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": [" RELU4 "," RELU4
                             "," RELU4 "," RELU4 ","
                             "{\"op\": \"relu\"}]}}",
                     "architecture.head.layers", "17 layers");
    expect_fail_arch("hl_obj", HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": {}}}",
                     "architecture.head.layers", "expected an array or null");
    expect_fail_arch("hl_entry",
                     HL_HEAD "{\"in_dim\": 4, \"out_dim\": 4, \"layers\": ["
                             "\"relu\"]}}",
                     "architecture.head.layers[0]", "expected an object");

    /* the tensors: shapes follow the layers, and the short form's names are refused */
    const char *arch = HL_HEAD "{\"in_dim\": 4, \"out_dim\": 2, \"layers\": ["
                               "{\"op\": \"layernorm\"}, {\"op\": \"linear\", \"in_dim\": 4,"
                               " \"out_dim\": 2}]}}";
    int64_t W[2] = {4, 3}, R[2] = {4, 4}, b4[1] = {4}, b5[1] = {5}, L[2] = {2, 4}, Lt[2] = {4, 2},
            b2[1] = {2};
    for (int v = 0; v < 4; v++) {
        tu_file *f = tu_file_new(arch);
        tu_file_add(f, "layers.0.0.W", W, 2, NULL);
        tu_file_add(f, "layers.0.0.R", R, 2, NULL);
        tu_file_add(f, "layers.0.0.Wb", b4, 1, NULL);
        tu_file_add(f, "layers.0.0.Rb", b4, 1, NULL);
        tu_file_add(f, "head.0.weight", v == 0 ? b5 : b4, 1, NULL);
        if (v != 3)
            tu_file_add(f, "head.0.bias", b4, 1, NULL);
        tu_file_add(f, v == 2 ? "head.weight" : "head.1.weight", v == 1 ? Lt : L, 2, NULL);
        tu_file_add(f, "head.1.bias", b2, 1, NULL);
        if (v == 0)
            expect_fail_file("hl_ln_shape", f, "head.0.weight",
                             "shape [5], but the architecture needs [4]");
        else if (v == 1)
            expect_fail_file("hl_lin_shape", f, "head.1.weight",
                             "shape [4, 2], but the architecture needs [2, 4]");
        else if (v == 2)
            expect_fail_file("hl_short_name", f, "head.1.weight", "missing");
        else
            expect_fail_file("hl_missing", f, "head.0.bias", "missing");
        tu_file_free(f);
    }
}
END_TEST

/* The head layers count in the digest; a head of one linear keeps the short form's. */
START_TEST(state_digest_head_layers)
{
#define DH(head) \
    "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 3}," \
    " \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}], \"head\": " head "}"
    static const char *base = DH("{\"in_dim\": 4, \"out_dim\": 2}");
    static const char *same =
        DH("{\"in_dim\": 4, \"out_dim\": 2, \"layers\": [{\"op\": \"linear\", \"in_dim\": 4,"
           " \"out_dim\": 2}]}");
    static const char *mlp[] = {
        DH("{\"in_dim\": 4, \"out_dim\": 2, \"layers\": [{\"op\": \"linear\", \"in_dim\": 4,"
           " \"out_dim\": 2}, {\"op\": \"relu\"}]}"),
        DH("{\"in_dim\": 4, \"out_dim\": 2, \"layers\": [{\"op\": \"linear\", \"in_dim\": 4,"
           " \"out_dim\": 2}, {\"op\": \"tanh\"}]}"),
        DH("{\"in_dim\": 4, \"out_dim\": 2, \"layers\": [{\"op\": \"linear\", \"in_dim\": 4,"
           " \"out_dim\": 2}, {\"op\": \"layernorm\", \"affine\": false}]}"),
        DH("{\"in_dim\": 4, \"out_dim\": 2, \"layers\": [{\"op\": \"linear\", \"in_dim\": 4,"
           " \"out_dim\": 2}, {\"op\": \"layernorm\", \"affine\": false, \"eps\": 0.1}]}"),
    };
    char want[65], file[65], got[65], other[4][65];
    digests_of(base, 7, want, file);
    digests_of(same, 7, got, file);
    ck_assert_str_eq(got, want);
    for (int i = 0; i < 4; i++) {
        digests_of(mlp[i], 7, other[i], file);
        ck_assert_msg(strcmp(other[i], want), "mlp %d: the short head's digest", i);
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(other[i], other[j]), "mlp %d and %d: one digest", i, j);
    }
#undef DH
}
END_TEST

/* "pool": each value loads; anything else names the key and the choices. */
START_TEST(pool_values)
{
    static const char *pools[] = {"none", "last", "final_state", "mean", "max"};
    char arch[512];
    for (int i = 0; i < 5; i++) {
        snprintf(arch, sizeof arch,
                 A_HEAD "\"layers\": [{\"type\": \"gru\", \"hidden_size\": 3,"
                        " \"direction\": \"bidirectional\"}], \"pool\": \"%s\", \"head\":"
                        " {\"out_dim\": 2, \"in_dim\": 6}}",
                 pools[i]);
        tu_file *f = tu_random_model(arch, 1);
        ck_assert_ptr_nonnull(f);
        size_t len;
        unsigned char *img = tu_file_bytes(f, &len);
        rnnd_model *m = load_img(img, len);
        ck_assert_int_eq(rnnd_model_get_spec(m)->pool, i);
        ck_assert_str_eq(rnnd_pool_name(rnnd_model_get_spec(m)->pool), pools[i]);
        ck_assert_int_eq(rnnd_model_output_dim(m), 2);
        rnnd_model_unref(m);
        free(img);
        tu_file_free(f);
    }
}
END_TEST

START_TEST(bad_arch_pool)
{
    expect_fail_arch("pool_name",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}],"
                            " \"pool\": \"sum\"}",
                     "architecture.pool",
                     "unknown value \"sum\" (expected none, last, final_state, mean or max)");
    expect_fail_arch("pool_type",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4}],"
                            " \"pool\": 1}",
                     "architecture.pool", "expected a string or null, got");
    /* pooling keeps the step width: a head must still read the last layer's width */
    expect_fail_arch("pool_head",
                     A_HEAD "\"layers\": [{\"type\": \"rnn\", \"hidden_size\": 4,"
                            " \"direction\": \"bidirectional\"}], \"pool\": \"final_state\","
                            " \"head\": {\"out_dim\": 2, \"in_dim\": 4}}",
                     "architecture.head.in_dim", "4, but the last layer outputs 8");
}
END_TEST

/* A valid file for one architecture plus a tensor that only a variant uses. */
START_TEST(bad_tensors_for_other_arch)
{
    tu_file *f =
        tu_random_model(A_HEAD "\"layers\": [{\"type\": \"lstm\", \"hidden_size\": 4}]}", 1);
    ck_assert_ptr_nonnull(f);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    rnnd_model_unref(load_img(img, len)); /* valid as it is */
    free(img);
    int64_t s[1] = {12};
    tu_file_add(f, "layers.0.0.P", s, 1, NULL); /* peepholes, which it does not declare */
    expect_fail_file("peep_extra", f, "layers.0.0.P", "unknown tensor");
    tu_file_free(f);
}
END_TEST

/* Random byte flips and truncations of a valid file: every result is a loaded model or a
 * FORMAT error with a one-line message; under ASan this also proves no read goes astray. */
START_TEST(mutations)
{
    const char *arch = T_HEAD "\"head\": {\"out_dim\": 3, \"in_dim\": 4},"
                              " \"vocab\": [\"x\", \"y\", \"z\"], \"tokenizer\": \"char\"}";
    tu_file *f = tu_random_model(arch, 5);
    ck_assert_ptr_nonnull(f);
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    tu_file_free(f);
    unsigned char *mut = malloc(len);
    uint64_t st = 12345;
    int ok = 0, bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(mut, img, len);
        size_t n = len;
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        if (it % 4 == 0) {
            n = (size_t)(st >> 33) % len; /* truncated */
        } else {
            for (int k = 0; k <= it % 3; k++) {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t pos = (size_t)(st >> 33) % len;
                /* mostly inside the header, where the structure is */
                if (it % 2)
                    pos %= len < 600 ? len : 600;
                mut[pos] ^= (unsigned char)(1u << ((st >> 20) & 7));
            }
        }
        char err[512] = "";
        rnnd_model *m = NULL;
        int rc = rnnd_model_from_buffer(mut, n, "mut", &m, err, sizeof err);
        if (rc == 0) {
            ck_assert_ptr_nonnull(m);
            ck_assert_int_eq(rnnd_model_get_spec(m)->n_layers, 1);
            rnnd_model_unref(m);
            ok++;
        } else {
            ck_assert_msg(rc == RNND_ERR_FORMAT, "status %d: %s", rc, err);
            ck_assert_ptr_null(m);
            ck_assert_msg(strncmp(err, "mut: ", 5) == 0 && !strchr(err, '\n'), "%s", err);
            bad++;
        }
    }
    ck_assert_int_gt(ok, 0); /* flips inside weights still load */
    ck_assert_int_gt(bad, 0);
    free(mut);
    free(img);
}
END_TEST

/* ---- files of other formats (src/model_sniff.c) ------------------------------------------ */

/* IMG loaded under LABEL fails as a file of another format: status format, one line
 * "LABEL: file: ..." holding each of WANT (NULL-terminated). */
static void expect_foreign(const char *tag, const void *img, size_t len, const char *label,
                           const char *const *want)
{
    char err[1024] = "";
    rnnd_model *m = (rnnd_model *)1;
    int rc = rnnd_model_from_buffer(img, len, label, &m, err, sizeof err);
    ck_assert_msg(rc == RNND_ERR_FORMAT, "%s: status %d (%s)", tag, rc, err);
    ck_assert_ptr_null(m);
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s: file: ", label);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s: got \"%s\"", tag, err);
    ck_assert_msg(!strchr(err, '\n'), "%s: message spans lines", tag);
    for (; *want; want++)
        ck_assert_msg(strstr(err, *want), "%s: got \"%s\", want \"%s\"", tag, err, *want);
}

#define WANT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* IMG is not taken for another format: the loader's own message, KEY and REASON, stands. */
static void expect_own(const char *tag, const void *img, size_t len, const char *key,
                       const char *reason)
{
    expect_fail_img(tag, img, len, RNND_ERR_FORMAT, key, reason);
}

static size_t put(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return (size_t)n;
}

typedef struct zentry {
    const char *name;
    const char *data; /* stored as is; METHOD is only recorded */
    size_t len;
    int method;
} zentry;

/* A zip archive of the N entries E, the way PyTorch writes one (names under a folder, data
 * stored), ending in a zip64 end record when ZIP64 is set (PyTorch's large files). */
static unsigned char *zip_image(const zentry *e, int n, int zip64, size_t *len)
{
    unsigned char *p = calloc(1, 65536);
    ck_assert_ptr_nonnull(p);
    size_t pos = 0, local[16];
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(e[i].name);
        local[i] = pos;
        memcpy(p + pos, "PK\x03\x04", 4);
        put(p + pos + 8, (uint64_t)e[i].method, 2);
        put(p + pos + 18, e[i].len, 4);
        put(p + pos + 22, e[i].len, 4);
        put(p + pos + 26, nl, 2);
        memcpy(p + pos + 30, e[i].name, nl);
        memcpy(p + pos + 30 + nl, e[i].data, e[i].len);
        pos += 30 + nl + e[i].len;
    }
    size_t cd = pos;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(e[i].name);
        memcpy(p + pos, "PK\x01\x02", 4);
        put(p + pos + 10, (uint64_t)e[i].method, 2);
        put(p + pos + 20, e[i].len, 4);
        put(p + pos + 24, e[i].len, 4);
        put(p + pos + 28, nl, 2);
        put(p + pos + 42, local[i], 4);
        memcpy(p + pos + 46, e[i].name, nl);
        pos += 46 + nl;
    }
    size_t cd_size = pos - cd;
    if (zip64) {
        size_t z = pos;
        memcpy(p + pos, "PK\x06\x06", 4);
        put(p + pos + 4, 44, 8);
        put(p + pos + 24, (uint64_t)n, 8);
        put(p + pos + 32, (uint64_t)n, 8);
        put(p + pos + 40, cd_size, 8);
        put(p + pos + 48, cd, 8);
        pos += 56;
        memcpy(p + pos, "PK\x06\x07", 4);
        put(p + pos + 8, z, 8);
        put(p + pos + 16, 1, 4);
        pos += 20;
    }
    memcpy(p + pos, "PK\x05\x06", 4);
    put(p + pos + 8, zip64 ? 0xffff : (uint64_t)n, 2);
    put(p + pos + 10, zip64 ? 0xffff : (uint64_t)n, 2);
    put(p + pos + 12, zip64 ? 0xffffffff : cd_size, 4);
    put(p + pos + 16, zip64 ? 0xffffffff : cd, 4);
    *len = pos + 22;
    return p;
}

#define ZE(name, lit) \
    { \
        (name), (lit), sizeof(lit) - 1, 0 \
    }

/* torch.save's data.pkl openings (protocol 2, its default; 4 on request) */
static const char pkl_state_dict[] = "\x80\x02"
                                     "ccollections\nOrderedDict\nq\x00)Rq\x01.";
static const char pkl_module[] = "\x80\x02"
                                 "c__main__\nNet\nq\x00)\x81q\x01}q\x02"
                                 "b.";
static const char pkl_module4[] = "\x80\x04\x95\x16\0\0\0\0\0\0\0"
                                  "\x8c\x08"
                                  "__main__\x94"
                                  "\x8c\x03"
                                  "Net\x94\x93\x94)\x81\x94.";
static const char pkl_dict[] = "\x80\x02}q\x00.";

START_TEST(foreign_onnx)
{
    /* ir_version 8, producer "pytorch", a graph, opset_import {version 14} */
    static const char onnx[] = "\x08\x08\x12\x07pytorch\x3a\x04\x0a\x02"
                               "ab\x42\x02\x10\x0e";
    expect_foreign("onnx", onnx, sizeof onnx - 1, "m/x.onnx",
                   WANT("an ONNX model, not an .rnnd file; convert it: "
                        "rnnd-convert m/x.onnx -o m/x.rnnd"));
    /* the file form too, with a reason that does not hold the path */
    expect_own("onnx_file", (const unsigned char *)onnx, sizeof onnx - 1, "file",
               "an ONNX model, not an .rnnd file");

    /* a graph is required, and the whole file must walk as fields */
    static const char nograph[] = "\x08\x08\x12\x07pytorch";
    expect_own("onnx_nograph", (const unsigned char *)nograph, sizeof nograph - 1, "header_length",
               "is over the");
    static const char trailing[] = "\x08\x08\x3a\x02"
                                   "ab\x00\x00";
    expect_own("onnx_trailing", (const unsigned char *)trailing, sizeof trailing - 1,
               "header_length", "is over the");
}
END_TEST

START_TEST(foreign_onnx_lookalike)
{
    /* an .rnnd header length whose low byte is 0x08 (field 1, varint) is not ONNX */
    char h[265];
    memset(h, ' ', 264);
    h[264] = '\0';
    memcpy(h, "{}", 2);
    size_t len;
    unsigned char *img = raw_image(h, 0, -1, &len);
    ck_assert_uint_eq(img[0], 0x08);
    expect_own("lookalike_0x08", img, len, "__metadata__", "missing");
    free(img);
}
END_TEST

START_TEST(foreign_torchscript)
{
    const zentry e[] = {ZE("m/data.pkl", pkl_module), ZE("m/constants.pkl", "\x80\x02)."),
                        ZE("m/code/__torch__/m.py", "class Net: pass\n")};
    size_t len;
    unsigned char *img = zip_image(e, 3, 0, &len);
    expect_foreign("torchscript", img, len, "m.pt",
                   WANT("a TorchScript model (torch.jit.save), not an .rnnd file; loading it "
                        "runs code from the file, so if you trust it, convert it: "
                        "rnnd-convert m.pt -o m.rnnd"));
    free(img);
    const zentry code_only[] = {ZE("m/data.pkl", pkl_module), ZE("m/code/m.py", "x\n")};
    img = zip_image(code_only, 2, 0, &len);
    expect_foreign("torchscript_code", img, len, "m.pt", WANT("a TorchScript model"));
    free(img);
}
END_TEST

START_TEST(foreign_state_dict)
{
    const zentry e[] = {ZE("sd/data.pkl", pkl_state_dict), ZE("sd/data/0", "\0\0\0\0"),
                        ZE("sd/version", "3\n")};
    const char *const want[] = {
        "a PyTorch checkpoint of a state_dict (torch.save(model.state_dict())), not an .rnnd "
        "file: weights without the model; in Python: model.load_state_dict(torch.load("
        "\"sd.pt\", weights_only=True)); rnnd_convert.from_module(model, \"sd.rnnd\") "
        "(docs/convert.md)",
        NULL};
    size_t len;
    unsigned char *img = zip_image(e, 3, 0, &len);
    expect_foreign("state_dict", img, len, "sd.pt", want);
    free(img);
    img = zip_image(e, 3, 1, &len); /* found through the zip64 end record */
    expect_foreign("state_dict_zip64", img, len, "sd.pt", want);
    free(img);
}
END_TEST

START_TEST(foreign_module)
{
    const char *const want[] = {
        "a PyTorch checkpoint of a whole module (torch.save(model), class __main__.Net), not "
        "an .rnnd file; loading it runs code from the file, so only if you trust it, in "
        "Python: rnnd_convert.from_module(torch.load(\"w.pt\", weights_only=False), "
        "\"w.rnnd\")",
        NULL};
    const zentry p2[] = {ZE("w/data.pkl", pkl_module), ZE("w/version", "3\n")};
    size_t len;
    unsigned char *img = zip_image(p2, 2, 0, &len);
    expect_foreign("module", img, len, "w.pt", want);
    free(img);
    const zentry p4[] = {ZE("w/data.pkl", pkl_module4)};
    img = zip_image(p4, 1, 0, &len);
    expect_foreign("module_protocol4", img, len, "w.pt", want);
    free(img);
}
END_TEST

/* Pickles that call posix.system: after opening as a state_dict; as the root (protocol 2);
 * through a memoised global; through STACK_GLOBAL of memoised strings (protocol 4). None is
 * called a checkpoint, and no advice to load them is given. */
static const char pkl_sd_call[] = "\x80\x02"
                                  "ccollections\nOrderedDict\nq\x00)Rq\x01"
                                  "cposix\nsystem\nq\x02X\x02\0\0\0id\x85R0.";
static const char pkl_root_call[] = "\x80\x02"
                                    "cposix\nsystem\nq\x00X\x02\0\0\0id\x85R.";
static const char pkl_memo_call[] = "\x80\x02"
                                    "cposix\nsystem\nq\x07"
                                    "0"
                                    "ccollections\nOrderedDict\n)Rh\x07X\x02\0\0\0id\x85R0.";
static const char pkl_stack_call[] = "\x80\x04"
                                     "\x8c\x05posix\x94\x8c\x06system\x94"
                                     "\x8c\x0b"
                                     "collections\x94\x8c\x0bOrderedDict\x94\x93)R"
                                     "h\x00h\x01\x93\x8c\x02id\x85R0.";

START_TEST(foreign_calls)
{
    const char *want = "a pickle that calls posix.system (not a PyTorch checkpoint); loading "
                       "it would run code";
    const char *const w[] = {want, NULL};
    const char *pkls[] = {pkl_sd_call, pkl_root_call, pkl_memo_call, pkl_stack_call};
    size_t lens[] = {sizeof pkl_sd_call - 1, sizeof pkl_root_call - 1, sizeof pkl_memo_call - 1,
                     sizeof pkl_stack_call - 1};
    for (int i = 0; i < 4; i++) {
        zentry e = {"e/data.pkl", pkls[i], lens[i], 0};
        size_t len;
        unsigned char *img = zip_image(&e, 1, 0, &len);
        expect_foreign("calls", img, len, "e.pt", w);
        free(img);
    }
    /* a plain pickle too */
    expect_foreign("calls_plain", pkl_root_call, sizeof pkl_root_call - 1, "e.pkl", w);
}
END_TEST

START_TEST(foreign_checkpoint)
{
    const char *const want[] = {
        "a PyTorch checkpoint (torch.save), not an .rnnd file; load it into its "
        "torch.nn.Module in Python, then rnnd_convert.from_module(model, \"c.rnnd\")",
        NULL};
    /* a plain dict: a training checkpoint, say */
    const zentry d[] = {ZE("c/data.pkl", pkl_dict)};
    size_t len;
    unsigned char *img = zip_image(d, 1, 0, &len);
    expect_foreign("dict", img, len, "c.pt", want);
    free(img);
    /* a compressed data.pkl cannot be read here: still a checkpoint */
    zentry z = ZE("c/data.pkl", pkl_state_dict);
    z.method = 8;
    img = zip_image(&z, 1, 0, &len);
    expect_foreign("deflated", img, len, "c.pt", want);
    free(img);
}
END_TEST

START_TEST(foreign_legacy)
{
    static const char legacy[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
                                 "\x80\x02M\xe9\x03.";
    expect_foreign("legacy", legacy, sizeof legacy - 1, "old.pth",
                   WANT("a PyTorch checkpoint (torch.save, format before PyTorch 1.6), not an "
                        ".rnnd file",
                        "rnnd_convert.from_module(model, \"old.rnnd\")"));
}
END_TEST

START_TEST(foreign_pickle)
{
    const char *const want[] = {"a Python pickle, not an .rnnd file; rnnd-convert reads ONNX, "
                                "TorchScript and JSON + .npz",
                                NULL};
    expect_foreign("pickle2", pkl_dict, sizeof pkl_dict - 1, "p.pkl", want);
    static const char p4[] = "\x80\x04\x95\x03\0\0\0\0\0\0\0}\x94.";
    expect_foreign("pickle4", p4, sizeof p4 - 1, "p.pkl", want);

    /* .rnnd header lengths 0x280 and 0x480 open like protocols 2 and 4; not pickles */
    size_t len;
    unsigned char *img = raw_image("{}  ", 0, 0x280, &len);
    img[len - 1] = '.';
    expect_own("lookalike_p2", img, len, "header_length", "640 bytes runs past the end");
    free(img);
    img = raw_image("{}  ", 0, 0x480, &len);
    img[len - 1] = '.';
    expect_own("lookalike_p4", img, len, "header_length", "1152 bytes runs past the end");
    free(img);
}
END_TEST

START_TEST(foreign_zips)
{
    const zentry npz[] = {ZE("W.npy", "\x93NUMPY"), ZE("R.npy", "\x93NUMPY")};
    size_t len;
    unsigned char *img = zip_image(npz, 2, 0, &len);
    expect_foreign("npz", img, len, "w.npz",
                   WANT("a NumPy .npz archive, not an .rnnd file; as the weights of a native "
                        "spec: rnnd-convert SPEC.json --weights w.npz -o w.rnnd"));
    free(img);
    const zentry other[] = {ZE("readme.txt", "hello\n")};
    img = zip_image(other, 1, 0, &len);
    expect_foreign("zip", img, len, "a.zip",
                   WANT("a zip archive but no PyTorch or NumPy file, not an .rnnd file"));
    free(img);
    /* cut short: no central directory */
    const zentry sd[] = {ZE("sd/data.pkl", pkl_state_dict)};
    img = zip_image(sd, 1, 0, &len);
    expect_foreign("truncated", img, len / 2, "sd.pt",
                   WANT("a zip archive whose directory cannot be read (truncated?)"));
    free(img);
}
END_TEST

START_TEST(foreign_safetensors)
{
    const char *t = "\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}";
    char h[512];
    snprintf(h, sizeof h, "{%s}", t);
    size_t len;
    unsigned char *img = raw_image(h, 4, -1, &len);
    expect_foreign("safetensors", img, len, "w.safetensors",
                   WANT("a safetensors file without rnnd's metadata (weights, no "
                        "architecture), not an .rnnd file; in Python: model.load_state_dict("
                        "safetensors.torch.load_file(\"w.safetensors\")); "
                        "rnnd_convert.from_module(model, \"w.rnnd\")"));
    free(img);
    snprintf(h, sizeof h, "{\"__metadata__\": {\"format\": \"pt\"}, %s}", t);
    img = raw_image(h, 4, -1, &len);
    expect_foreign("safetensors_pt", img, len, "w.safetensors",
                   WANT("(weights, no architecture; format \"pt\")"));
    free(img);

    /* with an architecture, or format "rnnd", it is a damaged .rnnd: the loader's message */
    snprintf(h, sizeof h,
             "{\"__metadata__\": {\"format\": \"x\", \"architecture\": \"{}\"},"
             " %s}",
             t);
    expect_fail_header("st_arch", h, 4, "__metadata__.format", "\"x\" is not \"rnnd\"");
    snprintf(h, sizeof h, "{\"__metadata__\": {\"format\": \"rnnd\"}, %s}", t);
    expect_fail_header("st_rnnd", h, 4, "__metadata__.format_version", "missing");
}
END_TEST

START_TEST(foreign_command_words)
{
    static const char onnx[] = "\x08\x08\x3a\x02"
                               "ab";
    /* a path the shell would split is quoted; the output swaps the extension, or adds one */
    expect_foreign("quoted", onnx, sizeof onnx - 1, "my dir/it's.onnx",
                   WANT("rnnd-convert 'my dir/it'\\''s.onnx' -o 'my dir/it'\\''s.rnnd'"));
    expect_foreign("no_ext", onnx, sizeof onnx - 1, "dir.v2/model",
                   WANT("rnnd-convert dir.v2/model -o dir.v2/model.rnnd"));
    expect_foreign("dotfile", onnx, sizeof onnx - 1, ".model",
                   WANT("rnnd-convert .model -o .model.rnnd"));
    /* a foreign file named .rnnd (in a models folder) is converted onto itself */
    expect_foreign("in_place", onnx, sizeof onnx - 1, "models/a.rnnd",
                   WANT("rnnd-convert models/a.rnnd -o models/a.rnnd"));
    /* Python string literals escape quotes and backslashes */
    const zentry e[] = {ZE("sd/data.pkl", pkl_state_dict)};
    size_t len;
    unsigned char *img = zip_image(e, 1, 0, &len);
    expect_foreign("py_str", img, len, "a\"b\\c.pt",
                   WANT("torch.load(\"a\\\"b\\\\c.pt\", weights_only=True)",
                        "from_module(model, "
                        "\"a\\\"b\\\\c.rnnd\")"));
    free(img);
}
END_TEST

/* ---- SHA-256 ---------------------------------------------------------------------------- */

START_TEST(sha256_vectors)
{
    char hex[65];
    rnnd_sha256_hex("", 0, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    rnnd_sha256_hex("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    rnnd_sha256_hex(m2, strlen(m2), hex);
    ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m3 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
                     "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    rnnd_sha256_hex(m3, strlen(m3), hex);
    ck_assert_str_eq(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    /* one million 'a', fed in uneven pieces */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    rnnd_sha256 c;
    unsigned char d[32];
    rnnd_sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        rnnd_sha256_update(&c, a + off, n);
        off += n;
        step = step * 3 % 997 + 1;
    }
    rnnd_sha256_final(&c, d);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}
END_TEST

/* Lengths around the padding boundaries, against the system's sha256sum. */
START_TEST(sha256_boundaries)
{
    static const size_t lens[] = {1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000};
    unsigned char buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        char *path = tmp_path("sha");
        write_bytes(path, buf, lens[k]);
        char cmd[4200], line[128] = "", hex[65];
        snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
        FILE *p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(fgets(line, sizeof line, p));
        pclose(p);
        unlink(path);
        rnnd_sha256_hex(buf, lens[k], hex);
        ck_assert_msg(strncmp(line, hex, 64) == 0, "length %zu: %s vs %.64s", lens[k], hex, line);
    }
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("valid");
    tcase_add_test(tc, valid_rnn_vectors);
    tcase_add_test(tc, valid_explicit_weights);
    tcase_add_test(tc, valid_lstm_bidir_options);
    tcase_add_test(tc, valid_lstm_variants);
    tcase_add_test(tc, valid_tokens_jordan_vocab);
    tcase_add_test(tc, valid_vocab_duplicates_and_empty);
    tcase_add_test(tc, valid_gru_bidir_byte_tokens);
    tcase_add_test(tc, valid_all_types_directions);
    tcase_add_test(tc, valid_min_cells);
    tcase_add_test(tc, bad_min_cells);
    tcase_add_test(tc, valid_depth_gate);
    tcase_add_test(tc, bad_depth_gate);
    tcase_add_test(tc, valid_clockwork);
    tcase_add_test(tc, bad_clockwork);
    tcase_add_test(tc, valid_slstm);
    tcase_add_test(tc, bad_slstm);
    tcase_add_test(tc, refcount);
    tcase_add_test(tc, names);
    tcase_add_test(tc, valid_half_rounded_at_load);
    tcase_add_test(tc, valid_half_stored);
    tcase_add_test(tc, state_digest_what_counts);
    tcase_add_test(tc, verification_record);
    suite_add_tcase(s, tc);

    tc = tcase_create("container");
    tcase_add_test(tc, bad_open_missing);
    tcase_add_test(tc, bad_open_directory);
    tcase_add_test(tc, bad_empty);
    tcase_add_test(tc, bad_truncated);
    tcase_add_test(tc, bad_header_past_eof);
    tcase_add_test(tc, bad_header_huge);
    tcase_add_test(tc, bad_data_misaligned);
    tcase_add_test(tc, bad_json);
    tcase_add_test(tc, bad_json_deep);
    tcase_add_test(tc, bad_duplicate_keys);
    tcase_add_test(tc, bad_not_object);
    tcase_add_test(tc, bad_metadata);
    tcase_add_test(tc, bad_format_version);
    suite_add_tcase(s, tc);

    tc = tcase_create("tensors");
    tcase_add_test(tc, bad_missing_tensor);
    tcase_add_test(tc, bad_wrong_shape);
    tcase_add_test(tc, bad_dtype);
    tcase_add_test(tc, bad_unknown_tensor);
    tcase_add_test(tc, bad_overlap);
    tcase_add_test(tc, bad_offsets);
    tcase_add_test(tc, bad_shape_values);
    tcase_add_test(tc, bad_entry_fields);
    tcase_add_test(tc, bad_tensors_for_other_arch);
    tcase_add_test(tc, bad_half);
    suite_add_tcase(s, tc);

    tc = tcase_create("architecture");
    tcase_add_test(tc, bad_arch_json);
    tcase_add_test(tc, bad_arch_version);
    tcase_add_test(tc, bad_arch_unknown_key);
    tcase_add_test(tc, bad_arch_layer_type);
    tcase_add_test(tc, bad_arch_sizes);
    tcase_add_test(tc, bad_arch_layers);
    tcase_add_test(tc, bad_arch_options);
    tcase_add_test(tc, bad_arch_activations);
    tcase_add_test(tc, bad_arch_vocab);
    tcase_add_test(tc, bad_arch_head);
    tcase_add_test(tc, bad_arch_pool);
    tcase_add_test(tc, pool_values);
    tcase_add_test(tc, mutations);
    suite_add_tcase(s, tc);

    tc = tcase_create("foreign");
    tcase_add_test(tc, foreign_onnx);
    tcase_add_test(tc, foreign_onnx_lookalike);
    tcase_add_test(tc, foreign_torchscript);
    tcase_add_test(tc, foreign_state_dict);
    tcase_add_test(tc, foreign_calls);
    tcase_add_test(tc, foreign_module);
    tcase_add_test(tc, foreign_checkpoint);
    tcase_add_test(tc, foreign_legacy);
    tcase_add_test(tc, foreign_pickle);
    tcase_add_test(tc, foreign_zips);
    tcase_add_test(tc, foreign_safetensors);
    tcase_add_test(tc, foreign_command_words);
    suite_add_tcase(s, tc);

    tc = tcase_create("sha256");
    tcase_add_test(tc, valid_head_layers);
    tcase_add_test(tc, bad_arch_head_layers);
    tcase_add_test(tc, state_digest_head_layers);
    tcase_add_test(tc, sha256_vectors);
    tcase_add_test(tc, sha256_boundaries);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
