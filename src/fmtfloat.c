/* Shortest round-trip text of a float32 (rnnd/fmtfloat.h).
 *
 * The digit search is Ryu's for 32-bit floats (Ulf Adams, "Ryu: fast float-to-string
 * conversion", PLDI 2018): the float's rounding interval [mm, mp] (scaled by 4 so both ends
 * are integers) is multiplied by 2^e2 / 10^q with a 64-bit approximation of the power of 5
 * that is exact enough for every float, then decimal digits are dropped while the interval
 * still holds a shorter number. Every one of the 2^32 bit patterns was checked by strtof
 * round trip (tests/check_fmtfloat.c checks the edges and 10^7 random ones). */
#include "rnnd/fmtfloat.h"

#include <stdint.h>
#include <string.h>

#define MANT_BITS 23
#define EXP_BITS 8
#define BIAS 127
#define POW5_INV_BITS 59
#define POW5_BITS 61

/* floor(2^(pow5bits(q) - 1 + 59) / 5^q) + 1, q = 0..30. Both tables were printed by Python's
 * exact integers: [(1 << (p5b(q) - 1 + 59)) // 5**q + 1 for q in range(31)] and
 * [5**i >> (p5b(i) - 61) (or << when negative) for i in range(48)], p5b = pow5bits below. */
static const uint64_t pow5_inv[31] = {
    0x0800000000000001u, 0x0666666666666667u, 0x051eb851eb851eb9u, 0x04189374bc6a7efau,
    0x068db8bac710cb2au, 0x053e2d6238da3c22u, 0x0431bde82d7b634eu, 0x06b5fca6af2bd216u,
    0x055e63b88c230e78u, 0x044b82fa09b5a52du, 0x06df37f675ef6eaeu, 0x057f5ff85e592558u,
    0x0465e6604b7a8447u, 0x0709709a125da071u, 0x05a126e1a84ae6c1u, 0x0480ebe7b9d58567u,
    0x0734aca5f6226f0bu, 0x05c3bd5191b525a3u, 0x049c97747490eae9u, 0x0760f253edb4ab0eu,
    0x05e72843249088d8u, 0x04b8ed0283a6d3e0u, 0x078e480405d7b966u, 0x060b6cd004ac9452u,
    0x04d5f0a66a23a9dbu, 0x07bcb43d769f762bu, 0x063090312bb2c4efu, 0x04f3a68dbc8f03f3u,
    0x07ec3daf94180651u, 0x065697bfa9acd1dau, 0x051212ffbaf0a7e2u,
};

/* The top 61 bits of 5^i (exact below 5^27), i = 0..47. */
static const uint64_t pow5[48] = {
    0x1000000000000000u, 0x1400000000000000u, 0x1900000000000000u, 0x1f40000000000000u,
    0x1388000000000000u, 0x186a000000000000u, 0x1e84800000000000u, 0x1312d00000000000u,
    0x17d7840000000000u, 0x1dcd650000000000u, 0x12a05f2000000000u, 0x174876e800000000u,
    0x1d1a94a200000000u, 0x12309ce540000000u, 0x16bcc41e90000000u, 0x1c6bf52634000000u,
    0x11c37937e0800000u, 0x16345785d8a00000u, 0x1bc16d674ec80000u, 0x1158e460913d0000u,
    0x15af1d78b58c4000u, 0x1b1ae4d6e2ef5000u, 0x10f0cf064dd59200u, 0x152d02c7e14af680u,
    0x1a784379d99db420u, 0x108b2a2c28029094u, 0x14adf4b7320334b9u, 0x19d971e4fe8401e7u,
    0x1027e72f1f128130u, 0x1431e0fae6d7217cu, 0x193e5939a08ce9dbu, 0x1f8def8808b02452u,
    0x13b8b5b5056e16b3u, 0x18a6e32246c99c60u, 0x1ed09bead87c0378u, 0x13426172c74d822bu,
    0x1812f9cf7920e2b6u, 0x1e17b84357691b64u, 0x12ced32a16a1b11eu, 0x178287f49c4a1d66u,
    0x1d6329f1c35ca4bfu, 0x125dfa371a19e6f7u, 0x16f578c4e0a060b5u, 0x1cb2d6f618c878e3u,
    0x11efc659cf7d4b8du, 0x166bb7f0435c9e71u, 0x1c06a5ec5433c60du, 0x118427b3b4a05bc8u,
};

/* ceil(log2(5^e)) for e >= 1 (1 for e = 0). */
static int32_t pow5bits(int32_t e) { return (int32_t)(((uint32_t)e * 1217359u) >> 19) + 1; }

/* floor(log10(2^e)) and floor(log10(5^e)), e >= 0 and small. */
static uint32_t log10_pow2(int32_t e) { return ((uint32_t)e * 78913u) >> 18; }

static uint32_t log10_pow5(int32_t e) { return ((uint32_t)e * 732923u) >> 20; }

static int multiple_of_pow5(uint32_t v, uint32_t p)
{
    uint32_t count = 0;
    while (v && v % 5 == 0) {
        v /= 5;
        count++;
    }
    return count >= p;
}

static int multiple_of_pow2(uint32_t v, uint32_t p) { return (v & ((1u << p) - 1)) == 0; }

/* (m * factor) >> shift, shift > 32: the 96-bit product without a 128-bit type. */
static uint32_t mul_shift(uint32_t m, uint64_t factor, int32_t shift)
{
    uint64_t lo = (uint64_t)m * (uint32_t)factor;
    uint64_t hi = (uint64_t)m * (uint32_t)(factor >> 32);
    uint64_t sum = (lo >> 32) + hi;
    return (uint32_t)(sum >> (shift - 32));
}

/* The shortest decimal DIGITS x 10^EXP in the rounding interval of the float with these
 * raw fields (not zero, not NaN/Inf); among equally short ones, the closest to the float. */
static void shortest(uint32_t ieee_mant, uint32_t ieee_exp, uint32_t *digits, int32_t *exp)
{
    int32_t e2;
    uint32_t m2;
    if (ieee_exp == 0) {
        e2 = 1 - BIAS - MANT_BITS - 2;
        m2 = ieee_mant;
    } else {
        e2 = (int32_t)ieee_exp - BIAS - MANT_BITS - 2;
        m2 = (1u << MANT_BITS) | ieee_mant;
    }
    /* round-half-even reading: the interval's ends belong to it when the mantissa is even */
    int accept_bounds = (m2 & 1) == 0;
    uint32_t mv = 4 * m2, mp = 4 * m2 + 2;
    /* the gap below a power of 2 is half the gap above */
    uint32_t mm_shift = ieee_mant != 0 || ieee_exp <= 1;
    uint32_t mm = 4 * m2 - 1 - mm_shift;

    uint32_t vr, vp, vm;
    int32_t e10;
    int vm_zeros = 0, vr_zeros = 0; /* all removed digits were zero */
    uint32_t last_removed = 0;
    if (e2 >= 0) {
        uint32_t q = log10_pow2(e2);
        e10 = (int32_t)q;
        int32_t k = POW5_INV_BITS + pow5bits((int32_t)q) - 1;
        int32_t i = -e2 + (int32_t)q + k;
        vr = mul_shift(mv, pow5_inv[q], i);
        vp = mul_shift(mp, pow5_inv[q], i);
        vm = mul_shift(mm, pow5_inv[q], i);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            /* no digit will be removed below, but the rounding needs the one before */
            int32_t l = POW5_INV_BITS + pow5bits((int32_t)(q - 1)) - 1;
            last_removed = mul_shift(mv, pow5_inv[q - 1], -e2 + (int32_t)q - 1 + l) % 10;
        }
        if (q <= 9) {
            /* at most one of mp, mv, mm is a multiple of 5 */
            if (mv % 5 == 0)
                vr_zeros = multiple_of_pow5(mv, q);
            else if (accept_bounds)
                vm_zeros = multiple_of_pow5(mm, q);
            else
                vp -= multiple_of_pow5(mp, q);
        }
    } else {
        uint32_t q = log10_pow5(-e2);
        e10 = (int32_t)q + e2;
        int32_t i = -e2 - (int32_t)q;
        int32_t k = pow5bits(i) - POW5_BITS;
        int32_t j = (int32_t)q - k;
        vr = mul_shift(mv, pow5[i], j);
        vp = mul_shift(mp, pow5[i], j);
        vm = mul_shift(mm, pow5[i], j);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            j = (int32_t)q - 1 - (pow5bits(i + 1) - POW5_BITS);
            last_removed = mul_shift(mv, pow5[i + 1], j) % 10;
        }
        if (q <= 1) {
            /* mv = 4 m2 has two trailing zero bits; mm has one iff mm_shift */
            vr_zeros = 1;
            if (accept_bounds)
                vm_zeros = mm_shift == 1;
            else
                vp--;
        } else if (q < 31) {
            vr_zeros = multiple_of_pow2(mv, q - 1);
        }
    }

    int32_t removed = 0;
    uint32_t out;
    if (vm_zeros || vr_zeros) {
        /* the rare general case: exact ties and an interval end that is itself short */
        while (vp / 10 > vm / 10) {
            vm_zeros &= vm % 10 == 0;
            vr_zeros &= last_removed == 0;
            last_removed = vr % 10;
            vr /= 10;
            vp /= 10;
            vm /= 10;
            removed++;
        }
        if (vm_zeros) {
            while (vm % 10 == 0) {
                vr_zeros &= last_removed == 0;
                last_removed = vr % 10;
                vr /= 10;
                vm /= 10; /* vp is not read again */
                removed++;
            }
        }
        if (vr_zeros && last_removed == 5 && vr % 2 == 0)
            last_removed = 4; /* exactly ...50000: round half to even */
        out = vr + ((vr == vm && (!accept_bounds || !vm_zeros)) || last_removed >= 5);
    } else {
        while (vp / 10 > vm / 10) {
            last_removed = vr % 10;
            vr /= 10;
            vp /= 10;
            vm /= 10;
            removed++;
        }
        out = vr + (vr == vm || last_removed >= 5);
    }
    *digits = out;
    *exp = e10 + removed;
}

/* The digits of a float32's shortest form: at most 9 (a 24-bit significand needs no more).
 * Counted without branches: the lengths of a reply's numbers vary from one to the next. */
static int decimal_len(uint32_t v)
{
    return 1 + (v >= 10) + (v >= 100) + (v >= 1000) + (v >= 10000) + (v >= 100000) +
        (v >= 1000000) + (v >= 10000000) + (v >= 100000000);
}

/* Eight bytes of text at P, the lowest byte of W first. */
static void put8(char *p, uint64_t w)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    memcpy(p, &w, 8);
}

/* The text of V's ND (1 to 9) digits in two words, built in registers (digits written to
 * memory one or two at a time and read back wider cost a failed store forwarding each):
 * the first digit is the lowest byte of *W0, the ninth the lowest of *W1, NULs after the
 * last. The eight digits below 10^8 are split into lanes, 4 + 4, then 2 + 2 per lane, then
 * 1 + 1, each division by 100 or 10 a multiply and shift exact for the lanes' ranges
 * ((n * 10486) >> 20 = n / 100 for n < 10^4, (n * 103) >> 10 = n / 10 for n < 100). */
static void digit_words(uint32_t v, int nd, uint64_t *w0, uint64_t *w1)
{
    uint32_t top = v / 100000000, low = v % 100000000;
    uint64_t x = (uint64_t)(low / 10000) | (uint64_t)(low % 10000) << 32;
    uint64_t q = ((x * 10486) >> 20) & 0x0000007f0000007fu;
    x = q | (x - 100 * q) << 16;
    q = ((x * 103) >> 10) & 0x000f000f000f000fu;
    x = q | (x - 10 * q) << 8;
    x |= 0x3030303030303030u; /* eight digits, leading zeros included */
    if (nd == 9) {
        *w0 = (uint64_t)('0' + top) | x << 8;
        *w1 = x >> 56;
    } else {
        *w0 = x >> (8 * (8 - nd));
        *w1 = 0;
    }
}

size_t rnnd_fmt_float(float v, char *out)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint32_t ieee_mant = bits & ((1u << MANT_BITS) - 1);
    uint32_t ieee_exp = (bits >> MANT_BITS) & ((1u << EXP_BITS) - 1);
    int neg = (int)(bits >> 31);
    char *p = out;

    if (ieee_exp == (1u << EXP_BITS) - 1) {
        out[0] = '\0';
        return 0;
    }
    if (ieee_exp == 0 && ieee_mant == 0) {
        const char *z = neg ? "-0.0" : "0";
        size_t n = strlen(z);
        memcpy(out, z, n + 1);
        return n;
    }
    uint32_t digits;
    int32_t exp;
    shortest(ieee_mant, ieee_exp, &digits, &exp);

    /* every store below is 8 bytes, however many of them are digits (the next ones
     * overwrite the rest), and ends within RNND_FMT_FLOAT_MAX (24) bytes of OUT: none
     * starts more than 14 bytes in */
    int nd = decimal_len(digits);
    uint64_t w0, w1;
    digit_words(digits, nd, &w0, &w1);
    int32_t e = exp + nd - 1; /* the value is d[0].d[1]... x 10^e */
    *p = '-';                 /* kept when negative: the signs of a reply's numbers vary too */
    p += neg;
    if (e < -4 || e >= 9) {
        *p++ = (char)w0;
        if (nd > 1) {
            *p++ = '.';
            put8(p, w0 >> 8 | w1 << 56); /* nd - 1 <= 8 digits */
            p += nd - 1;
        }
        *p++ = 'e';
        *p++ = e < 0 ? '-' : '+';
        uint32_t ae = (uint32_t)(e < 0 ? -e : e); /* at most 45 */
        *p++ = (char)('0' + ae / 10);
        *p++ = (char)('0' + ae % 10);
    } else if (e >= 0) {
        int whole = e + 1; /* digits before the point, 1 to 9 */
        put8(p, w0);
        put8(p + 8, w1);
        if (nd <= whole) {
            p += nd;
            for (int i = nd; i < whole; i++)
                *p++ = '0';
        } else { /* whole <= 8 */
            p += whole;
            *p++ = '.';
            put8(p, whole == 8 ? w1 : w0 >> (8 * whole) | w1 << (64 - 8 * whole));
            p += nd - whole;
        }
    } else {
        /* e = -1 .. -4: "0." and -e - 1 zeros */
        memcpy(p, "0.000000", 8);
        p += 1 - e;
        put8(p, w0);
        put8(p + 8, w1);
        p += nd;
    }
    *p = '\0';
    return (size_t)(p - out);
}
