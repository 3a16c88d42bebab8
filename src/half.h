/* Half-size float formats for weights: bfloat16 and IEEE binary16 (float16).
 *
 * Widening (half -> float) is exact for both. Narrowing (float -> half) rounds to nearest,
 * ties to even, like the hardware conversions (F16C vcvtps2ph with rounding mode 0); a
 * finite float beyond the half format's range becomes +-inf, which the loader refuses.
 * NaN stays NaN (made quiet). Plain integer code: no FPU mode, no CPU feature. */
#ifndef RNND_HALF_H
#define RNND_HALF_H

#include <stdint.h>
#include <string.h>

static inline float rnnd_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t rnnd_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* bfloat16 is the top half of a float. */
static inline float rnnd_bf16_to_f32(uint16_t h) { return rnnd_bits_f32((uint32_t)h << 16); }

static inline uint16_t rnnd_f32_to_bf16(float f)
{
    uint32_t u = rnnd_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep it one, quiet */
    /* round to nearest even on bit 16; a carry runs into the exponent (up to inf) */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float rnnd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* inf; NaN made quiet, as F16C does */
        return rnnd_bits_f32(sign | 0x7f800000u | man << 13 | (man ? 0x400000u : 0u));
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return rnnd_bits_f32(sign | (exp + 112u) << 23 | man << 13);
    /* zero or subnormal: man * 2^-24, a normal float computed exactly */
    return rnnd_bits_f32(sign | rnnd_f32_bits((float)man * 0x1p-24f));
}

static inline uint16_t rnnd_f32_to_f16(float f)
{
    uint32_t u = rnnd_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: top payload bits, quiet */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 rounds past 65504: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) {           /* >= 2^-14: normal half */
        uint32_t r = a - 0x38000000u; /* exponent rebias 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) /* <= 2^-25: rounds to zero */
        return sign;
    /* subnormal half: round(|f| / 2^-24) from the 24-bit significand */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u)))
        q++; /* may reach 0x400: the least normal */
    return (uint16_t)(sign | q);
}

#endif
