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
 * and the accumulator; a rounded input is never subnormal) and a subnormal result written
 * as a zero of its sign (FTZ). Plain C: fmaf and integer tests, no FPU mode. */
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

/* One step of the chain: acc + w * x, DAZ on every input, FTZ on the result. */
static inline float rnnd_bf16dp_fma(float w, float x, float acc)
{
    return rnnd_bf16dp_flush(
        fmaf(rnnd_bf16dp_flush(w), rnnd_bf16dp_flush(x), rnnd_bf16dp_flush(acc)));
}

/* One pair (one VDPBF16PS lane): the odd column first, then the even one. */
static inline float rnnd_bf16dp_pair(float acc, uint16_t w0, uint16_t w1, uint16_t x0, uint16_t x1)
{
    acc = rnnd_bf16dp_fma(rnnd_bf16_to_f32(w1), rnnd_bf16_to_f32(x1), acc);
    return rnnd_bf16dp_fma(rnnd_bf16_to_f32(w0), rnnd_bf16_to_f32(x0), acc);
}

#endif
