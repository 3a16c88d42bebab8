/* The bf16 compute mode's arithmetic (docs/kernels.md, "bf16 compute"), stated once.
 *
 * Per output (b, j): the input row is rounded to bf16 (rnnd_bf16dp_round: a zero or
 * subnormal float becomes a zero of its sign, NaN stays NaN made quiet, anything else is
 * rounded to nearest even), the columns are taken in pairs (2i, 2i + 1) with an odd last
 * column paired with a +0 weight and a +0 input, and the accumulator starts from bias[j]
 * (or +0). Each pair is what one lane of VDPBF16PS does (Intel SDM, "VDPBF16PS"):
 *   acc = acc + W[j][2i+1] * x[2i+1]; then acc = acc + W[j][2i] * x[2i]
 * each a fused multiply-add (the product of two bf16 values is exact in float) rounded to
 * nearest even, with its inputs' subnormals read as zeros of their sign (DAZ: the weights
 * and the accumulator; a rounded input is never subnormal) and a result below FLT_MIN after
 * rounding to 24 bits with an unbounded exponent written as a zero of its sign (FTZ, as x86
 * decides tininess). Plain C: fmaf and integer tests, no FPU mode. */
#ifndef RNND_BF16DP_H
#define RNND_BF16DP_H

#include <math.h>
#include <stdint.h>

#include "half.h"

/* A zero or subnormal float as a zero of its sign, anything else unchanged. */
static inline float rnnd_bf16dp_flush(float f)
{
    uint32_t u = rnnd_f32_bits(f);
    return (u & 0x7f800000u) == 0 ? rnnd_bits_f32(u & 0x80000000u) : f;
}

/* An input element as the mode rounds it (what vcvtne2ps2bf16 does). */
static inline uint16_t rnnd_bf16dp_round(float x) { return rnnd_f32_to_bf16(rnnd_bf16dp_flush(x)); }

/* One step of the chain: acc + w * x, DAZ on every input, FTZ on the result. FTZ decides
 * tininess as x86 does, after rounding to 24 bits with an unbounded exponent: a result whose
 * exact value lies in [FLT_MIN - 2^-151, FLT_MIN) in magnitude rounds to FLT_MIN and is
 * kept, one below that rounds to FLT_MIN - 2^-150 and is flushed. fmaf rounds below FLT_MIN
 * to the subnormal grid, which gives FLT_MIN for both: when it does, the step is redone
 * 2^24 higher (exact: the inputs are normal or zero and, for a result that small, far from
 * overflow), where nothing is subnormal. */
static inline float rnnd_bf16dp_fma(float w, float x, float acc)
{
    w = rnnd_bf16dp_flush(w);
    x = rnnd_bf16dp_flush(x);
    acc = rnnd_bf16dp_flush(acc);
    float r = fmaf(w, x, acc);
    if ((rnnd_f32_bits(r) & 0x7fffffffu) == 0x00800000u) { /* |r| == FLT_MIN */
        float r24 = fmaf(w, x * 0x1p24f, acc * 0x1p24f);
        if ((rnnd_f32_bits(r24) & 0x7fffffffu) < 0x0c800000u) /* |r24| < 2^-102 */
            return rnnd_bits_f32(rnnd_f32_bits(r24) & 0x80000000u);
    }
    return rnnd_bf16dp_flush(r);
}

/* One pair (one VDPBF16PS lane): the odd column first, then the even one. */
static inline float rnnd_bf16dp_pair(float acc, uint16_t w0, uint16_t w1, uint16_t x0, uint16_t x1)
{
    acc = rnnd_bf16dp_fma(rnnd_bf16_to_f32(w1), rnnd_bf16_to_f32(x1), acc);
    return rnnd_bf16dp_fma(rnnd_bf16_to_f32(w0), rnnd_bf16_to_f32(x0), acc);
}

#endif
