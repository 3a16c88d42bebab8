/* The reference path: plain C that every SIMD path is tested against.
 *
 * gemv: fmaf() is a correctly rounded fused multiply-add (glibc uses the FMA instruction
 * where the CPU has one and an exact emulation otherwise), so this chain is bit-for-bit the
 * one the SIMD paths compute. Activations: libm, written so that NaN in gives NaN out. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rnnd/kernels.h"
#include "half.h"
#include "kernels_internal.h"

/* Element idx of packed data as a float: half types widen exactly. TYPE is a constant
 * where this is inlined, so each loop below is specialised to one element type. */
static inline float w_at(const void *data, size_t idx, const int type)
{
    if (type == RNND_WEIGHTS_BF16)
        return rnnd_bf16_to_f32(((const uint16_t *)data)[idx]);
    if (type == RNND_WEIGHTS_F16)
        return rnnd_f16_to_f32(((const uint16_t *)data)[idx]);
    return ((const float *)data)[idx];
}

static inline __attribute__((always_inline)) void
gemv_typed(const rnnd_packed *W, const float *bias, const float *X, size_t ldx, size_t B, float *Y,
           size_t ldy, int row_begin, int row_end, const int type)
{
    const size_t cols = (size_t)W->cols;
    for (size_t b = 0; b < B; b++) {
        const float *x = X + b * ldx;
        float *y = Y + b * ldy;
        for (int j = row_begin; j < row_end; j++) {
            size_t w0 = (size_t)(j / RNND_PANEL) * cols * RNND_PANEL + (size_t)(j % RNND_PANEL);
            float acc = bias ? bias[j] : 0.0f;
            for (size_t k = 0; k < cols; k++)
                acc = fmaf(w_at(W->data, w0 + k * RNND_PANEL, type), x[k], acc);
            y[j] = acc;
        }
    }
}

static void kern_gemv_f32_scalar(const rnnd_packed *W, const float *bias, const float *X,
                                 size_t ldx, size_t B, float *Y, size_t ldy, int row_begin,
                                 int row_end)
{
    switch (W->type) {
    case RNND_WEIGHTS_I8:
        rnnd_gemv_i8_scalar(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        break;
    case RNND_PACKED_BF16DP:
        rnnd_gemv_bf16dp_scalar(W, bias, X, ldx, B, Y, ldy, row_begin, row_end);
        break;
    case RNND_WEIGHTS_BF16:
        gemv_typed(W, bias, X, ldx, B, Y, ldy, row_begin, row_end, RNND_WEIGHTS_BF16);
        break;
    case RNND_WEIGHTS_F16:
        gemv_typed(W, bias, X, ldx, B, Y, ldy, row_begin, row_end, RNND_WEIGHTS_F16);
        break;
    default: gemv_typed(W, bias, X, ldx, B, Y, ldy, row_begin, row_end, RNND_WEIGHTS_F32); break;
    }
}

static float sigmoid_ref(float x)
{
    /* Never exp of a positive number: no overflow, and e^x/(1+e^x) keeps the tiny results
     * of large negative x instead of flushing them to 0. */
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

static float softplus_ref(float x)
{
    /* log(1+e^x) = max(x,0) + log1p(e^-|x|): no overflow for large x. */
    return (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
}

static float act_one(int kind, float x, float alpha, float beta)
{
    float v;
    switch (kind) {
    case RNND_ACT_SIGMOID: return sigmoid_ref(x);
    case RNND_ACT_TANH: return tanhf(x);
    case RNND_ACT_RELU: return x < 0.0f ? 0.0f : x;
    case RNND_ACT_HARDSIGMOID:
        v = alpha * x + beta;
        v = v < 0.0f ? 0.0f : v;
        return v > 1.0f ? 1.0f : v;
    case RNND_ACT_LEAKYRELU: return x >= 0.0f ? x : alpha * x;
    case RNND_ACT_THRESHOLDEDRELU: return x > alpha || isnan(x) ? x : 0.0f;
    case RNND_ACT_SCALEDTANH: return alpha * tanhf(beta * x);
    case RNND_ACT_AFFINE: return alpha * x + beta;
    case RNND_ACT_ELU: return x >= 0.0f ? x : alpha * expm1f(x);
    case RNND_ACT_SOFTSIGN:
        if (isinf(x))
            return copysignf(1.0f, x);
        return x / (1.0f + fabsf(x));
    case RNND_ACT_SOFTPLUS: return softplus_ref(x);
    default: return x;
    }
}

static void kern_act_f32_scalar(const rnnd_activation *a, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = act_one(a->kind, x[i], a->alpha, a->beta);
}

static inline float act_of(const rnnd_activation *a, float x)
{
    return act_one(a->kind, x, a->alpha, a->beta);
}

static inline float clip_of(int has_clip, float clip, float x)
{
    if (!has_clip)
        return x;
    return x > clip ? clip : (x < -clip ? -clip : x);
}

/* The reference of rnnd_kernels.lstm_row; kernels_cells.h does the same per vector. */
static void kern_lstm_row_scalar(const rnnd_lstm_math *m, const float *gx, const float *g,
                                 const float *cp, const float *cl, float *cn, float *h, size_t j0,
                                 size_t j1)
{
    const size_t H = m->H;
    const size_t oo = H, of = 2 * H, oc = m->forget_gate ? 3 * H : 2 * H;
    const float *P = m->P;
    for (size_t j = j0; j < j1; j++) {
        const float c = cp[j];
        float gi = gx[j] + g[j];
        if (P)
            gi = gi + P[j] * c;
        gi = act_of(m->af, clip_of(m->has_clip, m->clip, gi));
        float cc = act_of(m->ag, clip_of(m->has_clip, m->clip, gx[oc + j] + g[oc + j]));
        float c_new;
        if (!m->forget_gate) {
            c_new = c + gi * cc;
        } else if (m->input_forget) {
            c_new = (1.0f - gi) * c + gi * cc;
        } else {
            float gf = gx[of + j] + g[of + j];
            if (P)
                gf = gf + P[2 * H + j] * c;
            gf = act_of(m->af, clip_of(m->has_clip, m->clip, gf));
            c_new = gf * c + gi * cc;
        }
        if (m->Dc) {
            float gd = gx[oc + H + j] + m->Dc[j] * c;
            gd = gd + m->Dl[j] * cl[j];
            gd = act_of(m->af, clip_of(m->has_clip, m->clip, gd));
            c_new = c_new + gd * cl[j];
        }
        float go = gx[oo + j] + g[oo + j];
        if (P)
            go = go + P[H + j] * c_new;
        go = act_of(m->af, clip_of(m->has_clip, m->clip, go));
        cn[j] = c_new;
        h[j] = go * act_of(m->ah, c_new);
    }
}

static void kern_gru_gates_scalar(const rnnd_gru_math *m, const float *gx, float *g,
                                  const float *hp, float *t, size_t j0, size_t j1)
{
    const size_t H = m->H;
    for (size_t j = j0; j < j1; j++) {
        float z = act_of(m->af, clip_of(m->has_clip, m->clip, gx[j] + g[j]));
        float r = act_of(m->af, clip_of(m->has_clip, m->clip, gx[H + j] + g[H + j]));
        g[j] = z;
        g[H + j] = r;
        t[j] = r * (m->linear_before_reset ? t[j] : hp[j]);
    }
}

static void kern_gru_finish_scalar(const rnnd_gru_math *m, const float *gxh, const float *z,
                                   const float *t, const float *hp, float *hn, size_t j0, size_t j1)
{
    for (size_t j = j0; j < j1; j++) {
        float c = act_of(m->ag, clip_of(m->has_clip, m->clip, gxh[j] + t[j]));
        hn[j] = (1.0f - z[j]) * c + z[j] * hp[j];
    }
}

/* The reference of rnnd_kernels.min_row; kernels_cells.h does the same per vector. */
static void kern_min_row_scalar(const rnnd_min_math *m, const float *gx, const float *hp, float *hn,
                                size_t j0, size_t j1)
{
    const size_t H = m->H;
    for (size_t j = j0; j < j1; j++) {
        if (!m->lstm) {
            float z = act_of(m->af, gx[j]);
            float n = act_of(m->ag, gx[H + j]);
            hn[j] = (1.0f - z) * hp[j] + z * n;
        } else {
            float f = act_of(m->af, gx[j]);
            float i = act_of(m->af, gx[H + j]);
            float n = act_of(m->ag, gx[2 * H + j]);
            float s = f + i;
            hn[j] = (f / s) * hp[j] + (i / s) * n;
        }
    }
}

/* The reference of rnnd_kernels.clock_row; kernels_cells.h does the same per vector. */
static void kern_clock_row_scalar(const rnnd_activation *af, const float *gx, const float *g,
                                  float *hn, size_t j0, size_t j1)
{
    for (size_t j = j0; j < j1; j++)
        hn[j] = act_of(af, gx[j] + g[j]);
}

/* ---- kernels_vmath.h on one float ------------------------------------------------------
 * The sLSTM is the one cell whose scalar path does not use libm: its exp, tanh, sigmoid and
 * softplus are kernels_vmath.h's text over this one-lane layer, with the x86 semantics that
 * file asks for (min/max return the second operand unless the first is strictly smaller /
 * larger, so NaN and signed zeros come out as on the SIMD paths; vfma is fmaf, one
 * rounding), so the scalar reference and the SIMD paths agree bit for bit. */
typedef float vf;
typedef int32_t vi;
typedef int vmask;

static inline uint32_t bits_of(float a)
{
    uint32_t u;
    memcpy(&u, &a, 4);
    return u;
}
static inline float float_of(uint32_t u)
{
    float a;
    memcpy(&a, &u, 4);
    return a;
}
static inline vf vset1(float a) { return a; }
static inline vf vadd(vf a, vf b) { return a + b; }
static inline vf vsub(vf a, vf b) { return a - b; }
static inline vf vmul(vf a, vf b) { return a * b; }
static inline vf vdiv(vf a, vf b) { return a / b; }
static inline vf vfma(vf a, vf b, vf c) { return fmaf(a, b, c); }
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf vand(vf a, vf b) { return float_of(bits_of(a) & bits_of(b)); }
static inline vf vor(vf a, vf b) { return float_of(bits_of(a) | bits_of(b)); }
static inline vf vandnot(vf a, vf b) { return float_of(~bits_of(a) & bits_of(b)); }
static inline vi vcasti(vf a) { return (vi)bits_of(a); }
static inline vf vcastf(vi a) { return float_of((uint32_t)a); }
static inline vi viset1(int a) { return a; }
static inline vi viadd(vi a, vi b) { return (vi)((uint32_t)a + (uint32_t)b); }
static inline vi visub(vi a, vi b) { return (vi)((uint32_t)a - (uint32_t)b); }
static inline vi vislli23(vi a) { return (vi)((uint32_t)a << 23); }
static inline vi visrai1(vi a) { return a >> 1; } /* arithmetic, as gcc and clang define it */
static inline vmask vlt(vf a, vf b) { return a < b; }
static inline vmask vge(vf a, vf b) { return a >= b; }
static inline vmask vgt_or_nan(vf a, vf b) { return !(a <= b); }
static inline vf vsel(vmask m, vf t, vf f) { return m ? t : f; }

#include "kernels_vmath.h"

/* The reference of rnnd_kernels.slstm_row: cells_slstm_row (kernels_cells.h) is the same,
 * operation for operation, per vector. */
static void kern_slstm_row_scalar(const rnnd_slstm_math *m, const float *gx, const float *g,
                                  const float *s, float *sn, float *hn, size_t j0, size_t j1)
{
    const size_t H = m->H;
    for (size_t j = j0; j < j1; j++) {
        float pi = gx[j] + g[j];
        float pf = gx[H + j] + g[H + j];
        float pz = gx[2 * H + j] + g[2 * H + j];
        float po = gx[3 * H + j] + g[3 * H + j];
        float lf = m->exp_forget ? pf : 0.0f - vm_softplus(0.0f - pf);
        float a = lf + s[2 * H + j];
        float mx = vmax(a, pi);
        float ig = vm_exp(pi - mx);
        float fg = vm_exp(a - mx);
        float c = fg * s[j] + ig * vm_tanh(pz);
        float n = fg * s[H + j] + ig;
        sn[j] = c;
        sn[H + j] = n;
        sn[2 * H + j] = mx;
        hn[j] = (vm_sigmoid(po) * c) / n;
    }
}

const rnnd_kernels rnnd_kern_table_scalar = {
    .name = "scalar",
    .gemv = kern_gemv_f32_scalar,
    .act = kern_act_f32_scalar,
    .lstm_row = kern_lstm_row_scalar,
    .gru_gates = kern_gru_gates_scalar,
    .gru_finish = kern_gru_finish_scalar,
    .min_row = kern_min_row_scalar,
    .clock_row = kern_clock_row_scalar,
    .slstm_row = kern_slstm_row_scalar,
};
