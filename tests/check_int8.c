/* int8 weights (docs/model-format.md, "int8 weights"): the gemv of every path against an
 * independent statement of the definition and against the scalar reference bitwise, over
 * odd shapes, B = 1..70, row ranges and long rows; packing's refusals; and the loader: I8
 * tensors with their scales, F32 quantized at load, one refusal per branch, the digest. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/status.h"
#include "testcheck.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rng_u32(void) { return tu_xorshift64(&rng_state); }

static float rng_f(void) { return (float)((double)rng_u32() / 2147483648.0 - 1.0); }

/* ---- the definition, written again from the docs ----------------------------------------- */

static float ref_scale(const float *x, size_t n)
{
    float m = 0.0f;
    for (size_t k = 0; k < n; k++) {
        if (!isfinite(x[k]))
            return NAN;
        m = fmaxf(m, fabsf(x[k]));
    }
    return m / 127.0f;
}

static int ref_q(float x, float s)
{
    if (!(s > 0.0f))
        return 0;
    float v = x / s;
    if (v >= 127.0f)
        return 127;
    if (v <= -127.0f)
        return -127;
    return (int)nearbyintf(v); /* the default rounding mode: to nearest, ties to even */
}

/* Y = the definition over Q [rows, cols] (integers as floats), SW, X [B, cols]. */
static void ref_gemv(const float *Q, const float *sw, const float *bias, const float *X, size_t B,
                     size_t rows, size_t cols, float *Y)
{
    for (size_t b = 0; b < B; b++) {
        const float *x = X + b * cols;
        float sx = ref_scale(x, cols);
        for (size_t j = 0; j < rows; j++) {
            int64_t a = 0;
            for (size_t k = 0; k < cols; k++)
                a += (int64_t)Q[j * cols + k] * ref_q(x[k], sx);
            Y[b * rows + j] = fmaf((float)a, sw[j] * sx, bias ? bias[j] : 0.0f);
        }
    }
}

/* A random int8 matrix: mostly full-range integers, some rows zero, some scales 0. */
static void random_q8(float *Q, float *sw, size_t rows, size_t cols)
{
    for (size_t j = 0; j < rows; j++) {
        int zero_row = rng_u32() % 23 == 0;
        for (size_t k = 0; k < cols; k++)
            Q[j * cols + k] = zero_row ? 0.0f : (float)((int)(rng_u32() % 255) - 127);
        sw[j] = rng_u32() % 19 == 0 ? 0.0f : (0.5f + rng_f() * 0.4f) / 127.0f;
    }
}

static const rnnd_kernels *path(const char *name) { return rnnd_kernels_by_name(name); }

static const char *const paths[] = {"scalar", "avx2", "avx512"};

/* One shape on every path this CPU runs: the definition (scalar), and bitwise the scalar
 * result (others), whole and by row ranges of whole panels, Y untouched elsewhere. */
static void check_shape(size_t rows, size_t cols, size_t B, int with_bias)
{
    float *Q = malloc(rows * cols * sizeof(float) + 4), *sw = malloc(rows * sizeof(float) + 4);
    float *bias = malloc(rows * sizeof(float) + 4), *X = malloc(B * cols * sizeof(float) + 4);
    float *want = malloc(B * rows * sizeof(float) + 4), *got = malloc(B * rows * sizeof(float) + 4);
    ck_assert(Q && sw && bias && X && want && got);
    random_q8(Q, sw, rows, cols);
    for (size_t j = 0; j < rows; j++)
        bias[j] = rng_f();
    for (size_t i = 0; i < B * cols; i++) /* rows of different magnitudes, some ties */
        X[i] = rng_f() * (float)(1 + (i / cols) % 5) * (i % 7 == 0 ? 100.0f : 1.0f);
    if (B > 1)
        memset(X + cols, 0, cols * sizeof(float)); /* a zero row: s_x = 0, y = bias */
    rnnd_packed W;
    ck_assert_int_eq(rnnd_pack_q8(Q, sw, (int)rows, (int)cols, &W), RNND_OK);
    ref_gemv(Q, sw, with_bias ? bias : NULL, X, B, rows, cols, want);
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const rnnd_kernels *k = path(paths[p]);
        if (!k)
            continue;
        for (size_t i = 0; i < B * rows; i++)
            got[i] = -999.0f;
        k->gemv(&W, with_bias ? bias : NULL, X, cols, B, got, rows, 0, (int)rows);
        for (size_t i = 0; i < B * rows; i++)
            expect(!memcmp(&got[i], &want[i], sizeof(float)),
                   "%s rows %zu cols %zu B %zu: y[%zu][%zu] = %.9g, the definition %.9g", paths[p],
                   rows, cols, B, i / rows, i % rows, got[i], want[i]);
        /* a row range from a panel boundary to anywhere: only those rows written */
        size_t r0 = (rng_u32() % ((rows + 15) / 16)) * 16, r1 = r0 + rng_u32() % (rows - r0 + 1);
        for (size_t i = 0; i < B * rows; i++)
            got[i] = -999.0f;
        k->gemv(&W, with_bias ? bias : NULL, X, cols, B, got, rows, (int)r0, (int)r1);
        for (size_t i = 0; i < B * rows; i++) {
            size_t j = i % rows;
            if (j >= r0 && j < r1)
                expect(!memcmp(&got[i], &want[i], sizeof(float)), "%s range [%zu, %zu) y %zu",
                       paths[p], r0, r1, i);
            else
                expect(got[i] == -999.0f, "%s range [%zu, %zu): row %zu written", paths[p], r0, r1,
                       j);
        }
    }
    rnnd_pack_release(&W);
    free(Q);
    free(sw);
    free(bias);
    free(X);
    free(want);
    free(got);
}

/* Random odd shapes, every B from 1 to 70 once: loop index = B - 1. */
START_TEST(gemv_shapes)
{
    rng_state = 0x1234567ull + (uint64_t)_i * 7919u;
    size_t B = (size_t)_i + 1;
    size_t rows = 1 + rng_u32() % 80, cols = 1 + rng_u32() % 70;
    check_shape(rows, cols, B, _i % 3 != 0);
}
END_TEST

/* Shapes the kernels treat specially: one row, one column, every cols mod 4, a panel
 * and a bit, the 8-panel tile and its remainder, and rows longer than RNND_Q8_BLOCK (4096),
 * which are quantized block by block. */
START_TEST(gemv_edges)
{
    static const size_t shapes[][3] = {
        {1, 1, 1},     {16, 4, 2},    {17, 5, 3},    {15, 6, 1},    {16, 7, 4},
        {129, 33, 1},  {128, 64, 2},  {200, 100, 5}, {33, 4095, 1}, {40, 4096, 2},
        {17, 4097, 1}, {20, 8195, 3}, {3, 12289, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_shape(shapes[i][0], shapes[i][1], shapes[i][2], (int)(i % 2));
}
END_TEST

/* The int32 sum at its largest: 65536 columns of 127 * 127 (and of 127 * -127) stay exact
 * on every path, vpdpbusd's +128 offset included (255 * 127 per product). */
START_TEST(gemv_extreme_sums)
{
    const size_t rows = 18, cols = 65536;
    float *Q = malloc(rows * cols * sizeof(float)), *sw = malloc(rows * sizeof(float));
    float *X = malloc(cols * sizeof(float));
    ck_assert(Q && sw && X);
    for (size_t j = 0; j < rows; j++) {
        for (size_t k = 0; k < cols; k++)
            Q[j * cols + k] = j % 3 == 0 ? 127.0f
                : j % 3 == 1             ? -127.0f
                                         : (k % 2 ? 127.0f : -127.0f);
        sw[j] = 1.0f;
    }
    for (size_t k = 0; k < cols; k++)
        X[k] = 127.0f; /* s_x = 1, q_x = 127 */
    rnnd_packed W;
    ck_assert_int_eq(rnnd_pack_q8(Q, sw, (int)rows, (int)cols, &W), RNND_OK);
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const rnnd_kernels *k = path(paths[p]);
        if (!k)
            continue;
        float y[18];
        k->gemv(&W, NULL, X, cols, 1, y, rows, 0, (int)rows);
        for (size_t j = 0; j < rows; j++) {
            double a = j % 3 == 0 ? 65536.0 * 16129 : j % 3 == 1 ? -65536.0 * 16129 : 0.0;
            expect(y[j] == (float)a, "%s row %zu: %.9g, want %.9g", paths[p], j, y[j], a);
        }
    }
    rnnd_pack_release(&W);
    free(Q);
    free(sw);
    free(X);
}
END_TEST

/* An input row with an infinity or NaN makes every output of that row NaN, on every path;
 * the other rows of the batch are untouched by it. */
START_TEST(gemv_nonfinite_row)
{
    const size_t rows = 20, cols = 9, B = 3;
    float Q[20 * 9], sw[20], X[3 * 9], want[3 * 20];
    random_q8(Q, sw, rows, cols);
    for (size_t i = 0; i < B * cols; i++)
        X[i] = rng_f();
    X[cols + 4] = _i ? NAN : -INFINITY;
    ref_gemv(Q, sw, NULL, X, B, rows, cols, want);
    rnnd_packed W;
    ck_assert_int_eq(rnnd_pack_q8(Q, sw, (int)rows, (int)cols, &W), RNND_OK);
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const rnnd_kernels *k = path(paths[p]);
        if (!k)
            continue;
        float y[3 * 20];
        k->gemv(&W, NULL, X, cols, B, y, rows, 0, (int)rows);
        for (size_t i = 0; i < B * rows; i++) {
            if (i / rows == 1)
                expect(isnan(y[i]), "%s: y[1][%zu] = %g, want NaN", paths[p], i % rows, y[i]);
            else
                expect(!memcmp(&y[i], &want[i], 4), "%s: y %zu", paths[p], i);
        }
    }
    rnnd_pack_release(&W);
}
END_TEST

/* The rounding rule where it matters: inputs that land exactly on .5 after scaling go to the
 * even integer, and the largest magnitude goes to +-127 exactly. Row max 127 makes s_x = 1.
 * 34 columns, so the 16-wide quantization of the SIMD paths sees them as well as the tail. */
START_TEST(gemv_ties_to_even)
{
    enum { COLS = 34, ROWS = 34 };
    static const float pat[8] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -126.5f, 3.4999998f};
    static const int qpat[8] = {127, 0, 2, 2, 0, -2, -126, 3};
    float X[COLS], Q[ROWS * COLS], sw[ROWS];
    for (size_t k = 0; k < COLS; k++)
        X[k] = pat[k % 8];
    for (size_t j = 0; j < ROWS; j++) {
        sw[j] = 1.0f;
        for (size_t k = 0; k < COLS; k++)
            Q[j * COLS + k] = k == j ? 1.0f : 0.0f; /* row j reads q_x[j] */
    }
    rnnd_packed W;
    ck_assert_int_eq(rnnd_pack_q8(Q, sw, ROWS, COLS, &W), RNND_OK);
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const rnnd_kernels *k = path(paths[p]);
        if (!k)
            continue;
        float y[ROWS];
        k->gemv(&W, NULL, X, COLS, 1, y, ROWS, 0, ROWS);
        for (size_t j = 0; j < ROWS; j++)
            expect(y[j] == (float)qpat[j % 8], "%s: q_x[%zu] = %g, want %d", paths[p], j, y[j],
                   qpat[j % 8]);
    }
    rnnd_pack_release(&W);
}
END_TEST

START_TEST(pack_refusals)
{
    float Q[4] = {1, 2, 3, 4}, s[2] = {0.5f, 0.25f};
    rnnd_packed W;
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 2, 2, &W), RNND_OK);
    rnnd_pack_release(&W);
    Q[1] = -128.0f; /* not symmetric */
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 2, 2, &W), RNND_ERR_INVALID);
    ck_assert_ptr_null(W.data);
    Q[1] = 1.5f; /* not an integer */
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 2, 2, &W), RNND_ERR_INVALID);
    Q[1] = NAN;
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 2, 2, &W), RNND_ERR_INVALID);
    Q[1] = 2.0f;
    s[1] = -0.25f;
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 2, 2, &W), RNND_ERR_INVALID);
    s[1] = INFINITY;
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 2, 2, &W), RNND_ERR_INVALID);
    s[1] = 0.25f;
    ck_assert_int_eq(rnnd_pack_q8(Q, s, 1, 65537, &W), RNND_ERR_INVALID); /* int32 could overflow */
    ck_assert_int_eq(rnnd_pack_typed(Q, s, 2, 2, RNND_WEIGHTS_I8, &W), RNND_OK);
    ck_assert_int_eq(W.type, RNND_WEIGHTS_I8);
    ck_assert_ptr_nonnull(W.scale);
    ck_assert_int_eq(W.qsum[0], 3);
    rnnd_pack_release(&W);
    ck_assert_int_eq(rnnd_pack_as(Q, 2, 2, RNND_WEIGHTS_I8, &W), RNND_ERR_INVALID);
}
END_TEST

/* ---- the loader ---------------------------------------------------------------------------- */

#define Q8_ARCH(W) \
    "{\"format_version\": 1, " W "\"input\": {\"kind\": \"vectors\", " \
    "\"dim\": 3}, \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2}]}"

typedef struct qtensor {
    const char *name, *dtype;
    int64_t shape[2];
    int ndim;
    const void *data;
    size_t bytes;
} qtensor;

/* An image of ARCH and tensors T in order, each at the next multiple of 4. Written here byte
 * by byte, independently of the loader. */
static unsigned char *image(const char *arch, const qtensor *t, size_t n, size_t *len)
{
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__",
                        json_pack("{s:s,s:s,s:s}", "format", "rnnd", "format_version", "1",
                                  "architecture", arch));
    size_t off = 0, at[16];
    ck_assert_uint_le(n, 16);
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
    free(text);
    return img;
}

static const int8_t qW[6] = {127, -127, 0, 5, -6, 127};
static const float sW[2] = {0.01f, 0.5f};
static const float fR[4] = {0.5f, -1.0f, 0.25f, 0.0f};
static const float fWb[2] = {0.1f, 0.2f}, fRb[2] = {-0.3f, 7.0f};

/* W stored as WDT (I8 with its scales, or F32 = fW), R as F32, extra tensors appended. */
static unsigned char *small(const char *arch, const char *wdt, const void *w, size_t wb,
                            const void *ws, size_t wsb, const qtensor *extra, size_t n_extra,
                            size_t *len)
{
    qtensor t[8] = {
        {"layers.0.0.W", wdt, {2, 3}, 2, w, wb},
        {"layers.0.0.R", "F32", {2, 2}, 2, fR, sizeof fR},
        {"layers.0.0.Wb", "F32", {2, 0}, 1, fWb, sizeof fWb},
        {"layers.0.0.Rb", "F32", {2, 0}, 1, fRb, sizeof fRb},
    };
    size_t n = 4;
    if (ws)
        t[n++] = (qtensor){"layers.0.0.W.scale", "F32", {2, 0}, 1, ws, wsb};
    for (size_t i = 0; i < n_extra; i++)
        t[n++] = extra[i];
    return image(arch, t, n, len);
}

static rnnd_model *load(const unsigned char *img, size_t len)
{
    char err[512] = "";
    rnnd_model *m = NULL;
    int rc = rnnd_model_from_buffer(img, len, "q8", &m, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    return m;
}

static void expect_refused(const char *tag, const unsigned char *img, size_t len, const char *key,
                           const char *reason)
{
    char err[512] = "", want[256];
    rnnd_model *m = (rnnd_model *)1;
    int rc = rnnd_model_from_buffer(img, len, "q8", &m, err, sizeof err);
    ck_assert_msg(rc == RNND_ERR_FORMAT, "%s: status %d (%s)", tag, rc, err);
    ck_assert_ptr_null(m);
    snprintf(want, sizeof want, "q8: %s: ", key);
    ck_assert_msg(!strncmp(err, want, strlen(want)) && strstr(err, reason),
                  "%s: got \"%s\", want \"%s...%s\"", tag, err, want, reason);
    ck_assert_msg(!strchr(err, '\n'), "%s: message spans lines", tag);
}

/* I8 + scales are taken as they are; an F32 matrix of the same model is quantized at load
 * by the rule (max |row| / 127, ties to even); the spec holds q and the scales. */
START_TEST(load_stored_and_quantized)
{
    size_t len;
    unsigned char *img = small(Q8_ARCH("\"weights\": \"int8\", "), "I8", qW, sizeof qW, sW,
                               sizeof sW, NULL, 0, &len);
    rnnd_model *m = load(img, len);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert_int_eq(s->weights, RNND_WEIGHTS_I8);
    const rnnd_dir_weights *w = &s->layers[0].w[0];
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(w->W[i], (float)qW[i]);
    ck_assert(!memcmp(w->W_s, sW, sizeof sW));
    /* R = {0.5, -1, 0.25, 0}: row 0 max 1 -> s = 1/127, q = {rne(0.5 / s), -127}; row 1
     * max 0.25 -> q = {127, 0} */
    ck_assert_float_eq(w->R_s[0], 1.0f / 127.0f);
    ck_assert_float_eq(w->R_s[1], 0.25f / 127.0f);
    const float wantR[4] = {(float)ref_q(0.5f, 1.0f / 127.0f), -127.0f, 127.0f, 0.0f};
    ck_assert(wantR[0] == 63.0f || wantR[0] == 64.0f);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(w->R[i] == wantR[i], "R[%d] = %g, want %g", i, w->R[i], wantR[i]);
    ck_assert(!memcmp(w->Wb, fWb, sizeof fWb));
    char d1[65];
    snprintf(d1, sizeof d1, "%s", rnnd_model_digest(m));
    rnnd_model_unref(m);
    free(img);

    /* the same model with W as F32 values that quantize to the same q and scales: same
     * digest; with another scale: another digest */
    float fW[6];
    for (int i = 0; i < 6; i++)
        fW[i] = (float)qW[i] * sW[i / 3];
    img = small(Q8_ARCH("\"weights\": \"int8\", "), "F32", fW, sizeof fW, NULL, 0, NULL, 0, &len);
    m = load(img, len);
    w = &rnnd_model_get_spec(m)->layers[0].w[0];
    for (int i = 0; i < 6; i++)
        ck_assert_msg(w->W[i] == (float)qW[i], "W[%d] = %g", i, w->W[i]);
    int same_scales = !memcmp(w->W_s, sW, sizeof sW);
    if (same_scales)
        ck_assert_str_eq(rnnd_model_digest(m), d1);
    rnnd_model_unref(m);
    free(img);
    const float sW2[2] = {0.01f, 0.25f};
    img = small(Q8_ARCH("\"weights\": \"int8\", "), "I8", qW, sizeof qW, sW2, sizeof sW2, NULL, 0,
                &len);
    m = load(img, len);
    ck_assert_str_ne(rnnd_model_digest(m), d1);
    rnnd_model_unref(m);
    free(img);
}
END_TEST

/* One refusal per branch. */
START_TEST(load_refusals)
{
    const char *q8 = Q8_ARCH("\"weights\": \"int8\", ");
    size_t len;
    unsigned char *img;
    /* an I8 matrix without its scales */
    img = small(q8, "I8", qW, sizeof qW, NULL, 0, NULL, 0, &len);
    expect_refused("no_scale", img, len, "layers.0.0.W.scale",
                   "missing: the I8 matrix layers.0.0.W needs its row scales, F32 [2]");
    free(img);
    /* scales of the wrong shape, or not F32 */
    const float s3[3] = {1, 1, 1};
    const qtensor s3t = {"layers.0.0.W.scale", "F32", {3, 0}, 1, s3, sizeof s3};
    img = small(q8, "I8", qW, sizeof qW, NULL, 0, &s3t, 1, &len);
    expect_refused("scale_shape", img, len, "layers.0.0.W.scale", "row scales must be F32 [2]");
    free(img);
    const int8_t s2i[2] = {1, 1};
    const qtensor s2t = {"layers.0.0.W.scale", "I8", {2, 0}, 1, s2i, sizeof s2i};
    img = small(q8, "I8", qW, sizeof qW, NULL, 0, &s2t, 1, &len);
    expect_refused("scale_i8", img, len, "layers.0.0.W.scale", "row scales must be F32 [2]");
    free(img);
    /* -128 */
    const int8_t q128[6] = {1, 2, -128, 4, 5, 6};
    img = small(q8, "I8", q128, sizeof q128, sW, sizeof sW, NULL, 0, &len);
    expect_refused("minus128", img, len, "layers.0.0.W",
                   "element 2: -128 (int8 weights are symmetric: -127 to 127)");
    free(img);
    /* a negative or infinite scale */
    const float sneg[2] = {0.5f, -0.5f}, sinf[2] = {INFINITY, 0.5f};
    img = small(q8, "I8", qW, sizeof qW, sneg, sizeof sneg, NULL, 0, &len);
    expect_refused("scale_neg", img, len, "layers.0.0.W.scale",
                   "element 1: -0.5 is not a scale (finite, >= 0 and at most");
    free(img);
    img = small(q8, "I8", qW, sizeof qW, sinf, sizeof sinf, NULL, 0, &len);
    expect_refused("scale_inf", img, len, "layers.0.0.W.scale", "element 0: inf is not a scale");
    free(img);
    /* a scale past FLT_MAX / 127 makes a weight of 127 infinite (trial 31, F2) */
    const float shuge[2] = {0.5f, 3.4e38f};
    img = small(q8, "I8", qW, sizeof qW, shuge, sizeof shuge, NULL, 0, &len);
    expect_refused("scale_huge", img, len, "layers.0.0.W.scale",
                   "element 1: 3.39999995e+38 is not a scale (finite, >= 0 and at most "
                   "FLT_MAX / 127 = 2.67938871e+36, so that 127 times it is finite)");
    free(img);
    /* a number that is not finite, in a model of any weight type (trial 31, F1: f32, bf16
     * and f16 models loaded, and every request failed numeric_error); and an F32 matrix that
     * is not finite cannot be quantized */
    static const float finf[6] = {1, 2, 3, 4, 5, -INFINITY}, fnan[6] = {1, 2, 3, 4, NAN, 6};
    static const uint16_t hnan[6] = {0x3f80, 0x3f80, 0x7fc0, 0, 0, 0};
    static const uint16_t finf16[6] = {0x3c00, 0x7c00, 0, 0, 0, 0};
    const struct {
        const char *what, *arch, *dtype;
        const void *data;
        size_t size;
        const char *msg;
    } nonfinite[] = {
        {"f32_inf", Q8_ARCH(""), "F32", finf, sizeof finf, "element 5: -inf"},
        {"bf16_nan", Q8_ARCH("\"weights\": \"bf16\", "), "BF16", hnan, sizeof hnan,
         "element 2: nan"},
        {"f16_inf", Q8_ARCH("\"weights\": \"f16\", "), "F16", finf16, sizeof finf16,
         "element 1: inf"},
        {"f32_nan", q8, "F32", fnan, sizeof fnan, "element 4: nan"},
    };
    for (size_t i = 0; i < sizeof nonfinite / sizeof nonfinite[0]; i++) {
        char want[96];
        snprintf(want, sizeof want, "%s (a model's numbers must be finite)", nonfinite[i].msg);
        img = small(nonfinite[i].arch, nonfinite[i].dtype, nonfinite[i].data, nonfinite[i].size,
                    NULL, 0, NULL, 0, &len);
        expect_refused(nonfinite[i].what, img, len, "layers.0.0.W", want);
        free(img);
    }
    /* a scale beside an F32 matrix */
    const float fW[6] = {1, 2, 3, 4, 5, 6};
    img = small(q8, "F32", fW, sizeof fW, sW, sizeof sW, NULL, 0, &len);
    expect_refused("stray_scale", img, len, "layers.0.0.W.scale",
                   "unknown tensor: only an I8 weight matrix of an int8 model has row scales");
    free(img);
    /* I8 in a model of another type, and I8 where no matrix may be */
    img = small(Q8_ARCH(""), "I8", qW, sizeof qW, sW, sizeof sW, NULL, 0, &len);
    expect_refused("i8_in_f32", img, len, "layers.0.0.W",
                   "dtype I8 does not match the architecture's weights \"f32\"");
    free(img);
    img = small(Q8_ARCH("\"weights\": \"bf16\", "), "I8", qW, sizeof qW, sW, sizeof sW, NULL, 0,
                &len);
    expect_refused("i8_in_bf16", img, len, "layers.0.0.W",
                   "dtype I8 does not match the architecture's weights \"bf16\"");
    free(img);
    const int8_t qb[2] = {1, 2};
    qtensor t[5] = {
        {"layers.0.0.W", "I8", {2, 3}, 2, qW, sizeof qW},
        {"layers.0.0.W.scale", "F32", {2, 0}, 1, sW, sizeof sW},
        {"layers.0.0.R", "F32", {2, 2}, 2, fR, sizeof fR},
        {"layers.0.0.Wb", "I8", {2, 0}, 1, qb, sizeof qb},
        {"layers.0.0.Rb", "F32", {2, 0}, 1, fRb, sizeof fRb},
    };
    img = image(q8, t, 5, &len);
    expect_refused("i8_bias", img, len, "layers.0.0.Wb",
                   "dtype I8: only the weight matrices (W, R, proj, V, D, a head linear's "
                   "weight) may be half-size or int8; this tensor must be F32");
    free(img);
    /* the I8 element count against its bytes */
    img = small(q8, "I8", qW, 5, sW, sizeof sW, NULL, 0, &len);
    expect_refused("i8_bytes", img, len, "layers.0.0.W",
                   "data_offsets span 5 bytes, but 6 I8 elements need 6");
    free(img);
}
END_TEST

static Suite *int8_suite(void)
{
    Suite *s = suite_create("int8");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, gemv_shapes, 0, 70);
    tcase_add_test(tc, gemv_edges);
    tcase_add_test(tc, gemv_extreme_sums);
    tcase_add_loop_test(tc, gemv_nonfinite_row, 0, 2);
    tcase_add_test(tc, gemv_ties_to_even);
    tcase_add_test(tc, pack_refusals);
    tcase_add_test(tc, load_stored_and_quantized);
    tcase_add_test(tc, load_refusals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(int8_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
