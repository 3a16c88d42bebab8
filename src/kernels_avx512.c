/* The AVX-512 path (avx512 f/vl/bw/dq): one 16-row weight panel is one zmm register.
 *
 * gemv keeps a tile of accumulators in registers, NP panels x NB batch rows, and runs the
 * k loop once per tile: each k loads NP weight vectors and broadcasts NB inputs. Every
 * accumulator is its own fma chain over k ascending from the bias, exactly the scalar
 * reference's chain, so tile shapes, row ranges and the batch size never change a bit.
 * Small batches use more panels per tile so that enough independent chains are in flight to
 * hide the fma latency and keep many weight streams loading (B = 1 is memory bound).
 *
 * Half-size weights (bfloat16, float16) use the same tiles: a panel line of 16 halves (32
 * bytes) is widened exactly to one zmm of floats (bf16: zero-extend and shift left 16;
 * f16: vcvtph2ps) before the same fma, so the chain and its bits do not change. Not
 * vdpbf16ps: it would round the inputs to bf16 too and sum in another order. */
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

#define MAX_NP 8 /* panels per tile: 8 up to B = 3, 4 up to 6 rows, 3 for 7-8 */
#define MAX_NB 8 /* batch rows per tile; NP * NB <= 24 accumulators */
/* Software prefetch, in k steps (64 bytes each) ahead in every panel stream. Measured on a
 * Zen 5 EPYC: a few percent better than none when the weights come from DRAM, no change
 * from L3; 16 panels in flight for B = 1 was slower than 8 (more streams). */
#ifndef PF_DIST
#define PF_DIST 16
#endif

static inline __mmask16 rows_mask(int j0, int row_end)
{
    int n = row_end - j0;
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* The 16 weights of one panel line at P, elements of type T, as floats. */
static inline __attribute__((always_inline)) __m512 load_line(const void *p, const int T)
{
    if (T == RNND_WEIGHTS_F32)
        return _mm512_load_ps((const float *)p);
    __m256i h = _mm256_load_si256((const __m256i *)p);
    if (T == RNND_WEIGHTS_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* One tile: panels p0..p0+NP-1, batch rows b0..b0+NB-1, weights of type T. NP, NB and T are
 * constants after inlining, so acc[][] lives in registers. */
static inline __attribute__((always_inline)) void
gemv_tile(const gemv_args *g, size_t p0, size_t b0, const int NP, const int NB, const int T)
{
    __m512 acc[MAX_NP][MAX_NB];
    __mmask16 m[MAX_NP];
    const char *wp[MAX_NP]; /* each panel's start */
    const float *xp[MAX_NB];
    const size_t pstride = g->cols * RNND_PANEL;
    const size_t esize = T == RNND_WEIGHTS_F32 ? 4 : 2;

#pragma GCC unroll 8
    for (int p = 0; p < NP; p++) {
        int j0 = (int)(p0 + (size_t)p) * RNND_PANEL;
        m[p] = rows_mask(j0, g->row_end);
        wp[p] = (const char *)g->w + (p0 + (size_t)p) * pstride * esize;
        __m512 init = g->bias ? _mm512_maskz_loadu_ps(m[p], g->bias + j0) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
            acc[p][b] = init;
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
        xp[b] = g->X + (b0 + (size_t)b) * g->ldx;

    const size_t cols = g->cols;
    for (size_t k = 0; k < cols; k++) {
        __m512 w[MAX_NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++) {
            w[p] = load_line(wp[p] + k * RNND_PANEL * esize, T);
            if (PF_DIST > 0)
                _mm_prefetch(wp[p] + (k + PF_DIST) * RNND_PANEL * esize, _MM_HINT_T0);
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            __m512 xb = _mm512_set1_ps(xp[b][k]);
#pragma GCC unroll 8
            for (int p = 0; p < NP; p++)
                acc[p][b] = _mm512_fmadd_ps(w[p], xb, acc[p][b]);
        }
    }

#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        float *y = g->Y + (b0 + (size_t)b) * g->ldy + p0 * RNND_PANEL;
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++)
            _mm512_mask_storeu_ps(y + p * RNND_PANEL, m[p], acc[p][b]);
    }
}

typedef void (*tile_fn)(const gemv_args *g, size_t p0, size_t b0);

/* One function per tile shape and weight type; T is f32, bf16 or f16. */
/* the tile macros read as the table they generate: */
/* clang-format off */
#define TILE(T, NP, NB) \
    static void tile_##T##_##NP##x##NB(const gemv_args *g, size_t p0, size_t b0) \
    { gemv_tile(g, p0, b0, NP, NB, TYPE_##T); }
#define TILES_8(T, NB) TILE(T, 8, NB) TILE(T, 4, NB) TILE(T, 2, NB) TILE(T, 1, NB)
#define TILES_4(T, NB) TILE(T, 4, NB) TILE(T, 2, NB) TILE(T, 1, NB)
#define TILES_3(T, NB) TILE(T, 3, NB) TILE(T, 2, NB) TILE(T, 1, NB)
#define TILES(T) \
    TILES_8(T, 1) TILES_8(T, 2) TILES_8(T, 3) \
    TILES_4(T, 4) TILES_4(T, 5) TILES_4(T, 6) \
    TILES_3(T, 7) TILES_3(T, 8)
#define TYPE_f32 RNND_WEIGHTS_F32
#define TYPE_bf16 RNND_WEIGHTS_BF16
#define TYPE_f16 RNND_WEIGHTS_F16
TILES(f32) TILES(bf16) TILES(f16)

/* The tiles of one height (batch rows), widest first; a row of panels is cut into as many
 * of the widest as fit, then narrower ones for what is left. */
typedef struct tile_row {
    int np[4];          /* panels per tile, descending, 0-terminated */
    tile_fn fn[4];
} tile_row;
/* clang-format on */

#define ROW_8(T, NB) \
    { \
        {8, 4, 2, 1}, \
        { \
            tile_##T##_8x##NB, tile_##T##_4x##NB, tile_##T##_2x##NB, tile_##T##_1x##NB \
        } \
    }
#define ROW_4(T, NB) \
    { \
        {4, 2, 1, 0}, { tile_##T##_4x##NB, tile_##T##_2x##NB, tile_##T##_1x##NB } \
    }
#define ROW_3(T, NB) \
    { \
        {3, 2, 1, 0}, { tile_##T##_3x##NB, tile_##T##_2x##NB, tile_##T##_1x##NB } \
    }
#define TILE_TABLE(T) \
    { \
        ROW_8(T, 1), ROW_8(T, 2), ROW_8(T, 3), ROW_4(T, 4), ROW_4(T, 5), ROW_4(T, 6), ROW_3(T, 7), \
            ROW_3(T, 8), \
    }
static const tile_row tiles_by_type[3][MAX_NB] = {
    [RNND_WEIGHTS_F32] = TILE_TABLE(f32),
    [RNND_WEIGHTS_BF16] = TILE_TABLE(bf16),
    [RNND_WEIGHTS_F16] = TILE_TABLE(f16),
};

#ifndef TILE_NB
#define TILE_NB MAX_NB
#endif
#ifndef X_BLOCK_BYTES
#define X_BLOCK_BYTES (512u << 10) /* inputs of one batch block: half of L2 (docs/kernels.md) */
#endif

/* Batch rows [b_begin, b_end) of a gemv: as few batch tiles as fit, of balanced sizes (B =
 * 10: 5 + 5, not 8 + 2: a 2-row tile has too few chains to hide the fma latency); each panel
 * line is loaded once per batch tile. The panels go in groups as wide as the tallest tile's;
 * every batch tile runs over one group before the next, so the group's weights stay in cache
 * while they are reused. */
static void gemv_rows(const gemv_args *g, const tile_row *rows, int row_begin, size_t p_end,
                      size_t b_begin, size_t b_end)
{
    const size_t B = b_end - b_begin;
    const size_t n_tiles = (B + TILE_NB - 1) / TILE_NB;
    const size_t group = (size_t)rows[(B + n_tiles - 1) / n_tiles - 1].np[0];
    for (size_t p0 = (size_t)row_begin / RNND_PANEL; p0 < p_end; p0 += group) {
        size_t pg = p_end - p0 < group ? p_end - p0 : group;
        size_t left_tiles = n_tiles;
        for (size_t b = 0; b < B; left_tiles--) {
            size_t nb = (B - b + left_tiles - 1) / left_tiles;
            const tile_row *tr = &rows[nb - 1];
            int i = 0;
            for (size_t p = p0; p < p0 + pg; p += (size_t)tr->np[i]) {
                while ((size_t)tr->np[i] > p0 + pg - p)
                    i++;
                tr->fn[i](g, p, b_begin + b);
            }
            b += nb;
        }
    }
}

static void kern_gemv_f32_avx512(const rnnd_packed *W, const float *bias, const float *X,
                                 size_t ldx, size_t B, float *Y, size_t ldy, int row_begin,
                                 int row_end)
{
    if (W->type == RNND_WEIGHTS_I8) {
        rnnd_gemv_i8_avx512(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        return;
    }
    if (W->type == RNND_PACKED_BF16DP) {
        rnnd_gemv_bf16dp_avx512(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
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
    const tile_row *rows = tiles_by_type[W->type];
    const size_t p_end = ((size_t)row_end + RNND_PANEL - 1) / RNND_PANEL;
    /* Many batch rows (the input projection of whole sequences: B = batch x steps) go in
     * blocks whose inputs stay in L2 while every panel group passes over them; otherwise
     * the inputs would stream from memory once per panel group. */
    const size_t blk_rows = X_BLOCK_BYTES / (g.cols * sizeof(float) + 1) / TILE_NB * TILE_NB;
    const size_t blk = blk_rows > TILE_NB ? blk_rows : TILE_NB;
    for (size_t bb = 0; bb < B; bb += blk) {
        size_t be = B - bb < blk ? B : bb + blk;
        gemv_rows(&g, rows, row_begin, p_end, bb, be);
    }
}

/* ---- activations ------------------------------------------------------------------------- */

typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vmask;

static inline vf vset1(float a) { return _mm512_set1_ps(a); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vand(vf a, vf b) { return _mm512_and_ps(a, b); }
static inline vf vor(vf a, vf b) { return _mm512_or_ps(a, b); }
static inline vf vandnot(vf a, vf b) { return _mm512_andnot_ps(a, b); }
static inline vi vcasti(vf a) { return _mm512_castps_si512(a); }
static inline vf vcastf(vi a) { return _mm512_castsi512_ps(a); }
static inline vi viset1(int a) { return _mm512_set1_epi32(a); }
static inline vi viadd(vi a, vi b) { return _mm512_add_epi32(a, b); }
static inline vi visub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
static inline vi vislli23(vi a) { return _mm512_slli_epi32(a, 23); }
static inline vi visrai1(vi a) { return _mm512_srai_epi32(a, 1); }
static inline vmask vlt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
static inline vmask vge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline vmask vgt_or_nan(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_NLE_UQ); }
static inline vf vsel(vmask m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }

#include "kernels_vmath.h"

#define VLEN 16
static inline vf vld(const float *p, size_t n)
{
    return n == VLEN ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
static inline void vst(float *p, vf v, size_t n)
{
    if (n == VLEN)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
}

#include "kernels_cells.h"

/* Full vectors, then the tail through the same code with a masked load/store, so an
 * element's result never depends on where it sits or on n. */
#define ACT_LOOP(EXPR) \
    do { \
        size_t i_ = 0; \
        for (; i_ + 16 <= n; i_ += 16) { \
            vf v = _mm512_loadu_ps(x + i_); \
            _mm512_storeu_ps(x + i_, (EXPR)); \
        } \
        if (i_ < n) { \
            __mmask16 m_ = (__mmask16)((1u << (n - i_)) - 1u); \
            vf v = _mm512_maskz_loadu_ps(m_, x + i_); \
            _mm512_mask_storeu_ps(x + i_, m_, (EXPR)); \
        } \
    } while (0)

static void kern_act_f32_avx512(const rnnd_activation *a, float *x, size_t n)
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

const rnnd_kernels rnnd_kern_table_avx512 = {
    .name = "avx512",
    .gemv = kern_gemv_f32_avx512,
    .act = kern_act_f32_avx512,
    .lstm_row = cells_lstm_row,
    .gru_gates = cells_gru_gates,
    .gru_finish = cells_gru_finish,
    .min_row = cells_min_row,
    .clock_row = cells_clock_row,
    .slstm_row = cells_slstm_row,
};
