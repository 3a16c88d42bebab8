/* int8 quantization of one row (docs/model-format.md, "int8 weights"): the one rule the
 * loader applies to weight rows and every gemv path applies to input rows, so all of them
 * get the same integers and scales bit for bit.
 *
 * Plain float arithmetic with one rounding per operation (division, the add/subtract that
 * rounds to an integer) and integer compares: no libm, no FPU mode beyond the default
 * round-to-nearest-even, nothing the compiler may fuse under -ffp-contract=off. */
#ifndef RNND_QUANT8_H
#define RNND_QUANT8_H

#include <stddef.h>
#include <stdint.h>

#include "half.h"

/* The smaller of A and B (a plain function: cppcheck misreads the conditional expression
 * on size_t as "always less than 1"). */
static inline size_t rnnd_q8_min(size_t a, size_t b) { return a < b ? a : b; }

/* |v| <= 127 rounded to an integer, ties to even: 1.5 * 2^23 leaves no fraction bits. */
static inline float rnnd_q8_rne(float v) { return (v + 12582912.0f) - 12582912.0f; }

/* The largest |x[k]| of a row, as float bits (0x7f800000 and above: an infinity or NaN). An
 * integer maximum: exact and independent of the order it is taken in. */
static inline uint32_t rnnd_q8_absmax_bits(const float *x, size_t n)
{
    uint32_t m = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t u = rnnd_f32_bits(x[k]) & 0x7fffffffu;
        m = u > m ? u : m;
    }
    return m;
}

/* The scale of a row whose largest magnitude has bits M: max / 127, or NaN for a row that
 * is not finite (so every product it enters is NaN). */
static inline float rnnd_q8_scale(uint32_t m)
{
    if (m >= 0x7f800000u)
        return rnnd_bits_f32(0x7fc00000u);
    return rnnd_bits_f32(m) / 127.0f;
}

/* x quantized with scale S: clamp(rne(x / S), -127, 127); 0 unless S > 0 (a zero row, one
 * whose scale underflowed, or a row that is not finite). */
static inline int rnnd_q8_one(float x, float s)
{
    if (!(s > 0.0f))
        return 0;
    float v = x / s;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    return (int)rnnd_q8_rne(v);
}

#endif
