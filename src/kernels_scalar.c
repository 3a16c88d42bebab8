/* The reference path: plain C that every SIMD path is tested against.
 *
 * gemv: fmaf() is a correctly rounded fused multiply-add (glibc uses the FMA instruction
 * where the CPU has one and an exact emulation otherwise), so this chain is bit-for-bit the
 * one the SIMD paths compute. Activations: libm, written so that NaN in gives NaN out. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

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
gemv_typed(const rnnd_packed *W, const float *bias, const float *X, size_t ldx, size_t B,
           float *Y, size_t ldy, int row_begin, int row_end, const int type)
{
    const size_t cols = (size_t)W->cols;
    for (size_t b = 0; b < B; b++) {
        const float *x = X + b * ldx;
        float *y = Y + b * ldy;
        for (int j = row_begin; j < row_end; j++) {
            size_t w0 = (size_t)(j / RNND_PANEL) * cols * RNND_PANEL
                        + (size_t)(j % RNND_PANEL);
            float acc = bias ? bias[j] : 0.0f;
            for (size_t k = 0; k < cols; k++)
                acc = fmaf(w_at(W->data, w0 + k * RNND_PANEL, type), x[k], acc);
            y[j] = acc;
        }
    }
}

static void kern_gemv_f32_scalar(const rnnd_packed *W, const float *bias, const float *X,
                                 size_t ldx, size_t B, float *Y, size_t ldy,
                                 int row_begin, int row_end)
{
    switch (W->type) {
    case RNND_WEIGHTS_BF16:
        gemv_typed(W, bias, X, ldx, B, Y, ldy, row_begin, row_end, RNND_WEIGHTS_BF16);
        break;
    case RNND_WEIGHTS_F16:
        gemv_typed(W, bias, X, ldx, B, Y, ldy, row_begin, row_end, RNND_WEIGHTS_F16);
        break;
    default:
        gemv_typed(W, bias, X, ldx, B, Y, ldy, row_begin, row_end, RNND_WEIGHTS_F32);
        break;
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
    case RNND_ACT_SIGMOID:
        return sigmoid_ref(x);
    case RNND_ACT_TANH:
        return tanhf(x);
    case RNND_ACT_RELU:
        return x < 0.0f ? 0.0f : x;
    case RNND_ACT_HARDSIGMOID:
        v = alpha * x + beta;
        v = v < 0.0f ? 0.0f : v;
        return v > 1.0f ? 1.0f : v;
    case RNND_ACT_LEAKYRELU:
        return x >= 0.0f ? x : alpha * x;
    case RNND_ACT_THRESHOLDEDRELU:
        return x > alpha || isnan(x) ? x : 0.0f;
    case RNND_ACT_SCALEDTANH:
        return alpha * tanhf(beta * x);
    case RNND_ACT_AFFINE:
        return alpha * x + beta;
    case RNND_ACT_ELU:
        return x >= 0.0f ? x : alpha * expm1f(x);
    case RNND_ACT_SOFTSIGN:
        if (isinf(x))
            return copysignf(1.0f, x);
        return x / (1.0f + fabsf(x));
    case RNND_ACT_SOFTPLUS:
        return softplus_ref(x);
    default:
        return x;
    }
}

static void kern_act_f32_scalar(const rnnd_activation *a, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = act_one(a->kind, x[i], a->alpha, a->beta);
}

const rnnd_kernels rnnd_kern_table_scalar = {
    .name = "scalar",
    .gemv = kern_gemv_f32_scalar,
    .act = kern_act_f32_scalar,
};
