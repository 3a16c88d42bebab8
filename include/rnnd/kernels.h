/* SIMD kernels behind one table of function pointers, chosen once from CPUID.
 *
 * Determinism contract (what batch invariance rests on): every kernel computes each output
 * element with a fixed sequence of float operations that depends only on that element's own
 * inputs, never on the batch size, the element's position, the row range, or vector tails.
 * The table's gemv computes each output as ONE fused-multiply-add chain over k ascending, starting
 * from the bias (or +0.0f), so all paths, scalar included, give bitwise identical sums.
 * Elementwise activations: the avx2 and avx512 paths give bitwise identical results to each
 * other; the scalar path (the reference, libm) may differ from them by a few ulp, except in
 * slstm_row, whose scalar path runs kernels_vmath.h too and so agrees bitwise. */
#ifndef RNND_KERNELS_H
#define RNND_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "rnnd/model.h"

/* Rows are packed in panels of this many so that one panel is one AVX-512 register. */
#define RNND_PANEL 16

/* A matrix W [rows, cols] repacked for the table's gemv:
 * data[(p * cols + k) * RNND_PANEL + r] = W[p * RNND_PANEL + r][k], zero past `rows`.
 * Elements are float, or for half-size weights uint16_t bfloat16 / float16 bit patterns in
 * the same layout (a panel's k-th line is then 32 bytes instead of 64).
 * int8 (RNND_WEIGHTS_I8) groups 4 columns per row, as VNNI's vpdpbusd reads them, with the
 * columns padded with zeros to a multiple of 4 (kq = ceil(cols / 4) groups):
 * data[(p * kq + k / 4) * 64 + r * 4 + k % 4] = q[p * RNND_PANEL + r][k]; scale[row] and
 * qsum[row] (the sum of the row's q, for the unsigned-input offset of vpdpbusd) follow,
 * panels * RNND_PANEL of each, 0 past `rows`.
 * The bf16 compute mode (RNND_PACKED_BF16DP, docs/kernels.md "bf16 compute") groups 2
 * columns per row, as VDPBF16PS reads them, the columns padded with a zero to an even count
 * (kp = ceil(cols / 2) pairs): data[(p * kp + k / 2) * 32 + r * 2 + k % 2] = the bf16 bits
 * of W[p * RNND_PANEL + r][k], so one 64-byte line is 16 rows x 2 columns. */
typedef struct rnnd_packed {
    int rows, cols;
    int panels;          /* ceil(rows / RNND_PANEL) */
    int type;            /* enum rnnd_weights: RNND_WEIGHTS_F32, _BF16, _F16 or _I8;
                          * or RNND_PACKED_BF16DP */
    void *data;          /* 64-byte aligned, panels * cols * RNND_PANEL elements (I8: see above) */
    const float *scale;  /* I8: the row scales; else NULL */
    const int32_t *qsum; /* I8: the row sums of q; else NULL */
} rnnd_packed;

/* The packed type of the bf16 compute mode: bf16 weights whose products are taken as
 * VDPBF16PS takes them (src/bf16dp.h). Not a weight type of the file format. */
#define RNND_PACKED_BF16DP 16

/* Pack W (row-major [rows, cols]) as floats. Returns 0, RNND_ERR_NOMEM, or RNND_ERR_INVALID
 * for negative sizes. On failure *out is zeroed. */
int rnnd_pack(const float *W, int rows, int cols, rnnd_packed *out);

/* Pack W with elements of TYPE (enum rnnd_weights), each rounded to nearest even (exact for
 * values the type holds). RNND_ERR_INVALID also for an unknown TYPE or a finite value beyond
 * the type's range (no saturation). */
int rnnd_pack_as(const float *W, int rows, int cols, int type, rnnd_packed *out);
void rnnd_pack_release(rnnd_packed *p); /* frees data; a zeroed struct is a no-op */

/* Pack an int8 matrix: Q row-major [rows, cols] holds the integers -127..127 as floats,
 * SCALE [rows] the row scales (docs/model-format.md, "int8 weights"). RNND_ERR_INVALID for
 * a Q element that is not such an integer, a scale that is negative or not finite, or cols
 * over 65536 (the int32 sums could overflow); RNND_ERR_NOMEM. On failure *out is zeroed. */
int rnnd_pack_q8(const float *Q, const float *scale, int rows, int cols, rnnd_packed *out);

/* Pack W for the bf16 compute mode: each float rounded to bf16 (nearest even; exact for
 * the values of a bf16 model), 2 columns per row side by side (see rnnd_packed).
 * RNND_ERR_INVALID for negative sizes or a finite value beyond bf16's range;
 * RNND_ERR_NOMEM. On failure *out is zeroed. */
int rnnd_pack_bf16dp(const float *W, int rows, int cols, rnnd_packed *out);

/* rnnd_pack_as for TYPE F32 / BF16 / F16, rnnd_pack_q8 (with SCALE) for I8, rnnd_pack_bf16dp
 * for RNND_PACKED_BF16DP. */
int rnnd_pack_typed(const float *W, const float *scale, int rows, int cols, int type,
                    rnnd_packed *out);

/* What the LSTM gate math of one layer direction needs besides the data (ONNX LSTM). */
typedef struct rnnd_lstm_math {
    size_t H;         /* hidden units; the gate blocks are H apart */
    int forget_gate;  /* blocks i, o, f, c; 0: i, o, c (and c = c_prev + i * c~) */
    int input_forget; /* coupled gates: f = 1 - i (the f block is not read) */
    int has_clip;
    float clip;     /* pre-activations clipped to [-clip, clip] when has_clip */
    const float *P; /* peepholes [3 H]: i, o, f; or NULL */
    /* depth gate (model.h depth_gate): its weights on c_prev and on the layer below's new
     * c, [H] each; both NULL without one */
    const float *Dc, *Dl;
    const rnnd_activation *af, *ag, *ah; /* gates, candidate, output (ONNX f, g, h) */
} rnnd_lstm_math;

/* What the GRU gate math of one layer direction needs besides the data (ONNX GRU). */
typedef struct rnnd_gru_math {
    size_t H; /* hidden units; the gate blocks z, r, h are H apart */
    int linear_before_reset;
    int has_clip;
    float clip;
    const rnnd_activation *af, *ag; /* gates, candidate (ONNX f, g) */
} rnnd_gru_math;

/* What the minGRU / minLSTM math of one layer direction needs besides the data. */
typedef struct rnnd_min_math {
    size_t H;                       /* hidden units; the gate blocks are H apart */
    int lstm;                       /* 0: mingru (blocks z, h); 1: minlstm (blocks f, i, h) */
    const rnnd_activation *af, *ag; /* gates, candidate */
} rnnd_min_math;

/* What the sLSTM math of one layer direction needs besides the data. */
typedef struct rnnd_slstm_math {
    size_t H;       /* hidden units; the gate blocks i, f, z, o are H apart */
    int exp_forget; /* 1: log f = pre_f ("exp"); 0: log f = log sigmoid(pre_f) */
} rnnd_slstm_math;

typedef struct rnnd_kernels {
    const char *name; /* "scalar", "avx2", "avx512" */

    /* For b < B and row_begin <= j < row_end:
     *   Y[b*ldy + j] = fma chain over k = 0..cols-1 of W[j][k] * X[b*ldx + k],
     *                  starting from bias[j] (or +0.0f when bias is NULL).
     * Half-size W elements are widened to float exactly before their fma, so the chain and
     * its bits are the same on every path for every W->type.
     * I8 W: each X row is quantized on its own (quant8.h), then
     *   Y[b*ldy + j] = fma((float) a, scale[j] * s_x, bias[j] or +0.0f),
     *   a = the exact int32 sum over k of q[j][k] * q_x[k]
     * (docs/model-format.md, "int8 weights"): bitwise the same on every path.
     * RNND_PACKED_BF16DP W: the pairs of src/bf16dp.h (X rounded to bf16, VDPBF16PS's
     * order, DAZ / FTZ), from bias[j] or +0.0f: bitwise the same on every path.
     * row_begin is a multiple of RNND_PANEL; row_end <= W->rows. Y must not overlap X or
     * bias. Nothing else of Y is written; no allocation. */
    void (*gemv)(const rnnd_packed *W, const float *bias, const float *X, size_t ldx, size_t B,
                 float *Y, size_t ldy, int row_begin, int row_end);

    /* x[i] = a(x[i]) for i < n, in place. NaN in gives NaN out for every kind (ThresholdedRelu
     * included). */
    void (*act)(const rnnd_activation *a, float *x, size_t n);

    /* The gates, new c and h of one LSTM batch row, hidden units j0 <= j < j1. GX and G
     * hold the input and recurrent pre-activations (biases included), gate blocks i, o, f,
     * c of H each; CP the previous c. Per unit, in this order and with one rounding each:
     *   i = af(clip(gx_i + g_i [+ P_i * cp])), c~ = ag(clip(gx_c + g_c)),
     *   c = f * cp + i * c~ with f = af(clip(gx_f + g_f [+ P_f * cp]))
     *       (or (1 - i) * cp + i * c~ with input_forget, cp + i * c~ without a forget gate),
     *   with a depth gate (m->Dc set): GX has one more block after the last gate, D x + Db,
     *       and CL is the layer below's new c: d = af(clip((gx_d + Dc * cp) + Dl * cl)),
     *       c = c + d * cl (G has no such block: R h does not reach d),
     *   o = af(clip(gx_o + g_o [+ P_o * c])), h = o * ah(c).
     * Writes CN[j] and H[j] only; CN may be CP (not CL). CL is NULL without a depth gate. No
     * allocation. */
    void (*lstm_row)(const rnnd_lstm_math *m, const float *gx, const float *g, const float *cp,
                     const float *cl, float *cn, float *h, size_t j0, size_t j1);

    /* GRU, first half of one batch row, units j0 <= j < j1: z = af(clip(gx_z + g_z)) into
     * G[j], r = af(clip(gx_r + g_r)) into G[H + j]; then T[j] = r * T[j] with
     * linear_before_reset (T holds Rh h + Rbh), else T[j] = r * HP[j]. */
    void (*gru_gates)(const rnnd_gru_math *m, const float *gx, float *g, const float *hp, float *t,
                      size_t j0, size_t j1);

    /* GRU, second half: c~ = ag(clip(GXH[j] + T[j])) (GXH: the h block of the input
     * pre-activations; T: the recurrent term), HN[j] = (1 - z) * c~ + z * HP[j] with
     * z = Z[j]. Writes HN[j] only. */
    void (*gru_finish)(const rnnd_gru_math *m, const float *gxh, const float *z, const float *t,
                       const float *hp, float *hn, size_t j0, size_t j1);

    /* minGRU / minLSTM, one batch row, units j0 <= j < j1. GX holds the gate
     * pre-activations W x + Wb (blocks of H); HP the previous h. Per unit, in this order
     * and with one rounding each:
     *   mingru:  z = af(gx_z), n = ag(gx_h), h = (1 - z) * hp + z * n
     *   minlstm: f = af(gx_f), i = af(gx_i), n = ag(gx_h), s = f + i,
     *            h = (f / s) * hp + (i / s) * n
     * Writes HN[j] only; HN may be HP. No allocation. */
    void (*min_row)(const rnnd_min_math *m, const float *gx, const float *hp, float *hn, size_t j0,
                    size_t j1);

    /* Clockwork, one batch row, units j0 <= j < j1 of an active module. GX holds W x + Wb,
     * G the recurrent term R h + Rb (biases included). Per unit, one rounding each:
     *   s = gx + g, HN[j] = af(s).
     * Writes HN[j] only. No allocation. (Inactive modules copy h_prev: no kernel.) */
    void (*clock_row)(const rnnd_activation *af, const float *gx, const float *g, float *hn,
                      size_t j0, size_t j1);

    /* sLSTM, one batch row, units j0 <= j < j1. GX and G hold the input and recurrent
     * pre-activations (biases included; G is the block-diagonal R h + Rb), blocks i, f, z, o
     * of H each; S the previous state c, n, m (blocks of H). Per unit, in this order and with
     * one rounding each, exp / tanh / sigmoid / softplus being kernels_vmath.h's on EVERY
     * path (the scalar one included, so all paths agree bitwise):
     *   pi = gx_i + g_i, pf = gx_f + g_f, pz = gx_z + g_z, po = gx_o + g_o,
     *   lf = pf (exp) or 0 - softplus(0 - pf) (sigmoid: log sigmoid),
     *   a = lf + m_prev, m = max(a, pi) (x86 maxps(a, pi): pi unless a > pi),
     *   i' = exp(pi - m), f' = exp(a - m),
     *   c = f' * c_prev + i' * tanh(pz), n = f' * n_prev + i', h = (sigmoid(po) * c) / n.
     * Writes SN (c, n, m) and HN at [j] only; SN may be S. No allocation. */
    void (*slstm_row)(const rnnd_slstm_math *m, const float *gx, const float *g, const float *s,
                      float *sn, float *hn, size_t j0, size_t j1);
} rnnd_kernels;

/* The kernels for NAME ("scalar", "avx2", "avx512"), or NULL when unknown or when this CPU
 * (or this build) cannot run them. */
const rnnd_kernels *rnnd_kernels_by_name(const char *name);

/* The best path this CPU supports, unless the environment variable RNND_ISA names one.
 * Returns NULL and fills ERR when RNND_ISA names an unknown or unsupported path. */
const rnnd_kernels *rnnd_kernels_select(char *err, size_t errlen);

/* Nonzero when K takes RNND_PACKED_BF16DP products with VDPBF16PS (the avx512 path on a
 * CPU with AVX512-BF16); 0 when it runs the mode's scalar statement, many times slower. */
int rnnd_kernels_bf16dp_native(const rnnd_kernels *k);

/* Names of the paths this machine can run, best last; NULL-terminated, static. */
const char *const *rnnd_kernels_available(void);

#endif
