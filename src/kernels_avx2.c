/* The AVX2 + FMA path: one 16-row weight panel is two ymm registers (rows 0-7 and 8-15).
 *
 * Same scheme as the AVX-512 path with half the registers: a tile of NP panels x NB batch
 * rows (2 * NP * NB <= 12 accumulators), each accumulator one fma chain over k ascending
 * from the bias, bit-for-bit the scalar reference's chain. Activations share
 * kernels_vmath.h with the AVX-512 path, so the two give identical bits.
 *
 * Half-size weights: each 8-weight half of a panel line (16 bytes) is widened exactly to a
 * ymm of floats (bf16: zero-extend and shift left 16; f16: F16C vcvtph2ps) before the same
 * fma. */
#include "config.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "rnnd/kernels.h"
#include "kernels_internal.h"

/* ---- gemv --------------------------------------------------------------------------------- */

typedef struct gemv_args {
    const void *w; /* packed data, elements of the tile's type */
    size_t cols;
    const float *bias;
    const float *X;
    size_t ldx;
    float *Y;
    size_t ldy;
    int row_end;
} gemv_args;

#define MAX_NP 4
#define MAX_NB 6
#ifndef X_BLOCK_BYTES
#define X_BLOCK_BYTES (256u << 10) /* inputs of one batch block: a quarter of L2 */
#endif
#ifndef PF_DIST
#define PF_DIST 16 /* as in kernels_avx512.c */
#endif

/* Lane i of the result is all ones when i < n. */
static inline __m256i lanes_below(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 8 weights at P, elements of type T, as floats. */
static inline __attribute__((always_inline)) __m256 load8(const void *p, const int T)
{
    if (T == RNND_WEIGHTS_F32)
        return _mm256_load_ps((const float *)p);
    __m128i h = _mm_load_si128((const __m128i *)p);
    if (T == RNND_WEIGHTS_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void
gemv_tile(const gemv_args *g, size_t p0, size_t b0, const int NP, const int NB, const int T)
{
    __m256 acc[MAX_NP][MAX_NB][2];
    __m256i mlo[MAX_NP], mhi[MAX_NP];
    const char *wp[MAX_NP]; /* each panel's start */
    const float *xp[MAX_NB];
    const size_t pstride = g->cols * RNND_PANEL;
    const size_t esize = T == RNND_WEIGHTS_F32 ? 4 : 2;

#pragma GCC unroll 4
    for (int p = 0; p < NP; p++) {
        int j0 = (int)(p0 + (size_t)p) * RNND_PANEL;
        mlo[p] = lanes_below(g->row_end - j0);
        mhi[p] = lanes_below(g->row_end - j0 - 8);
        wp[p] = (const char *)g->w + (p0 + (size_t)p) * pstride * esize;
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        if (g->bias) {
            lo = _mm256_maskload_ps(g->bias + j0, mlo[p]);
            hi = _mm256_maskload_ps(g->bias + j0 + 8, mhi[p]);
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            acc[p][b][0] = lo;
            acc[p][b][1] = hi;
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
        xp[b] = g->X + (b0 + (size_t)b) * g->ldx;

    const size_t cols = g->cols;
    for (size_t k = 0; k < cols; k++) {
        __m256 w[MAX_NP][2];
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++) {
            const char *src = wp[p] + k * RNND_PANEL * esize;
            w[p][0] = load8(src, T);
            w[p][1] = load8(src + 8 * esize, T);
            _mm_prefetch(src + PF_DIST * RNND_PANEL * esize, _MM_HINT_T0);
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            __m256 xb = _mm256_broadcast_ss(xp[b] + k);
#pragma GCC unroll 4
            for (int p = 0; p < NP; p++) {
                acc[p][b][0] = _mm256_fmadd_ps(w[p][0], xb, acc[p][b][0]);
                acc[p][b][1] = _mm256_fmadd_ps(w[p][1], xb, acc[p][b][1]);
            }
        }
    }

#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        float *y = g->Y + (b0 + (size_t)b) * g->ldy + p0 * RNND_PANEL;
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++) {
            _mm256_maskstore_ps(y + p * RNND_PANEL, mlo[p], acc[p][b][0]);
            _mm256_maskstore_ps(y + p * RNND_PANEL + 8, mhi[p], acc[p][b][1]);
        }
    }
}

typedef void (*tile_fn)(const gemv_args *g, size_t p0, size_t b0);

/* One function per tile shape and weight type; T is f32, bf16 or f16. */
/* the tile macros read as the table they generate: */
/* clang-format off */
#define TILE(T, NP, NB) \
    static void tile_##T##_##NP##x##NB(const gemv_args *g, size_t p0, size_t b0) \
    { gemv_tile(g, p0, b0, NP, NB, TYPE_##T); }
#define TILES(T) \
    TILE(T, 4, 1) TILE(T, 2, 1) TILE(T, 1, 1) \
    TILE(T, 2, 2) TILE(T, 1, 2) \
    TILE(T, 2, 3) TILE(T, 1, 3) \
    TILE(T, 1, 4) TILE(T, 1, 5) TILE(T, 1, 6)
#define TYPE_f32 RNND_WEIGHTS_F32
#define TYPE_bf16 RNND_WEIGHTS_BF16
#define TYPE_f16 RNND_WEIGHTS_F16
TILES(f32) TILES(bf16) TILES(f16)
/* clang-format on */

/* tiles[type][nb - 1][i] has 4 >> i panels; NULL where the tile would not fit in
 * registers. */
#define TILE_TABLE(T) \
    { \
        {tile_##T##_4x1, tile_##T##_2x1, tile_##T##_1x1}, {NULL, tile_##T##_2x2, tile_##T##_1x2}, \
            {NULL, tile_##T##_2x3, tile_##T##_1x3}, {NULL, NULL, tile_##T##_1x4}, \
            {NULL, NULL, tile_##T##_1x5}, {NULL, NULL, tile_##T##_1x6}, \
    }
    static const tile_fn tiles_by_type[3][MAX_NB][3] = {
        [RNND_WEIGHTS_F32] = TILE_TABLE(f32),
        [RNND_WEIGHTS_BF16] = TILE_TABLE(bf16),
        [RNND_WEIGHTS_F16] = TILE_TABLE(f16),
};

static void kern_gemv_f32_avx2(const rnnd_packed *W, const float *bias, const float *X, size_t ldx,
                               size_t B, float *Y, size_t ldy, int row_begin, int row_end)
{
    if (W->type == RNND_WEIGHTS_I8) {
        rnnd_gemv_i8_avx2(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        return;
    }
    if (W->type == RNND_PACKED_BF16DP) { /* no VDPBF16PS in 256 bits here: the reference */
        rnnd_gemv_bf16dp_scalar(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        return;
    }
    if (B == 0 || row_end <= row_begin)
        return;
    const gemv_args g = {
        .w = W->data,
        .cols = (size_t)W->cols,
        .bias = bias,
        .X = X,
        .ldx = ldx,
        .Y = Y,
        .ldy = ldy,
        .row_end = row_end,
    };
    const tile_fn(*tiles)[3] = tiles_by_type[W->type];
    const size_t p_end = ((size_t)row_end + RNND_PANEL - 1) / RNND_PANEL;
    /* B = 1: 4 panels (8 chains); B <= 3: 2 panels; else 1 panel x up to 6 rows. */
    const int first = B == 1 ? 0 : B <= 3 ? 1 : 2;
    const size_t nb_max = B <= 3 ? B : MAX_NB;
    /* Many batch rows (whole-sequence input projections) go in blocks whose inputs stay in
     * L2 while every panel passes over them, as in kernels_avx512.c. */
    const size_t blk_rows = X_BLOCK_BYTES / (g.cols * sizeof(float) + 1) / nb_max * nb_max;
    const size_t blk = blk_rows > nb_max ? blk_rows : nb_max;
    for (size_t bb = 0; bb < B; bb += blk) {
        const size_t be = B - bb < blk ? B : bb + blk;
        size_t p = (size_t)row_begin / RNND_PANEL;
        while (p < p_end) {
            int i = first;
            while ((size_t)(4 >> i) > p_end - p)
                i++;
            for (size_t b = bb; b < be; b += nb_max) {
                size_t nb = be - b < nb_max ? be - b : nb_max;
                tiles[nb - 1][i](&g, p, b);
            }
            p += (size_t)(4 >> i);
        }
    }
}

/* ---- activations ------------------------------------------------------------------------- */

typedef __m256 vf;
typedef __m256i vi;
typedef __m256 vmask;

static inline vf vset1(float a) { return _mm256_set1_ps(a); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vand(vf a, vf b) { return _mm256_and_ps(a, b); }
static inline vf vor(vf a, vf b) { return _mm256_or_ps(a, b); }
static inline vf vandnot(vf a, vf b) { return _mm256_andnot_ps(a, b); }
static inline vi vcasti(vf a) { return _mm256_castps_si256(a); }
static inline vf vcastf(vi a) { return _mm256_castsi256_ps(a); }
static inline vi viset1(int a) { return _mm256_set1_epi32(a); }
static inline vi viadd(vi a, vi b) { return _mm256_add_epi32(a, b); }
static inline vi visub(vi a, vi b) { return _mm256_sub_epi32(a, b); }
static inline vi vislli23(vi a) { return _mm256_slli_epi32(a, 23); }
static inline vi visrai1(vi a) { return _mm256_srai_epi32(a, 1); }
static inline vmask vlt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline vmask vge(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
static inline vmask vgt_or_nan(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_NLE_UQ); }
static inline vf vsel(vmask m, vf t, vf f) { return _mm256_blendv_ps(f, t, m); }

#include "kernels_vmath.h"

#define VLEN 8
static inline vf vld(const float *p, size_t n)
{
    return n == VLEN ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_below((int)n));
}
static inline void vst(float *p, vf v, size_t n)
{
    if (n == VLEN)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, lanes_below((int)n), v);
}

#include "kernels_cells.h"

/* Full vectors, then the tail through the same code with a masked load/store, so an
 * element's result never depends on where it sits or on n. */
#define ACT_LOOP(EXPR) \
    do { \
        size_t i_ = 0; \
        for (; i_ + 8 <= n; i_ += 8) { \
            vf v = _mm256_loadu_ps(x + i_); \
            _mm256_storeu_ps(x + i_, (EXPR)); \
        } \
        if (i_ < n) { \
            __m256i m_ = lanes_below((int)(n - i_)); \
            vf v = _mm256_maskload_ps(x + i_, m_); \
            _mm256_maskstore_ps(x + i_, m_, (EXPR)); \
        } \
    } while (0)

static void kern_act_f32_avx2(const rnnd_activation *a, float *x, size_t n)
{
    const vf alpha = vset1(a->alpha), beta = vset1(a->beta);
    switch (a->kind) {
    case RNND_ACT_SIGMOID: ACT_LOOP(vm_sigmoid(v)); break;
    case RNND_ACT_TANH: ACT_LOOP(vm_tanh(v)); break;
    case RNND_ACT_RELU: ACT_LOOP(vm_relu(v)); break;
    case RNND_ACT_HARDSIGMOID: ACT_LOOP(vm_hardsigmoid(v, alpha, beta)); break;
    case RNND_ACT_LEAKYRELU: ACT_LOOP(vm_leakyrelu(v, alpha)); break;
    case RNND_ACT_THRESHOLDEDRELU: ACT_LOOP(vm_thresholdedrelu(v, alpha)); break;
    case RNND_ACT_SCALEDTANH: ACT_LOOP(vmul(alpha, vm_tanh(vmul(beta, v)))); break;
    case RNND_ACT_AFFINE: ACT_LOOP(vadd(vmul(alpha, v), beta)); break;
    case RNND_ACT_ELU: ACT_LOOP(vm_elu(v, alpha)); break;
    case RNND_ACT_SOFTSIGN: ACT_LOOP(vm_softsign(v)); break;
    case RNND_ACT_SOFTPLUS: ACT_LOOP(vm_softplus(v)); break;
    default: break;
    }
}

const rnnd_kernels rnnd_kern_table_avx2 = {
    .name = "avx2",
    .gemv = kern_gemv_f32_avx2,
    .act = kern_act_f32_avx2,
    .lstm_row = cells_lstm_row,
    .gru_gates = cells_gru_gates,
    .gru_finish = cells_gru_finish,
    .min_row = cells_min_row,
    .clock_row = cells_clock_row,
    .slstm_row = cells_slstm_row,
};
