/* Small helpers for the C test suites, header-only: a quiet assertion for hot loops and the
 * tests' own pseudo-random generators, independent of the code under test (src/ has its
 * own). Each test keeps its own state and seed, so its sequence of values is its own. */
#ifndef RNND_TESTCHECK_H
#define RNND_TESTCHECK_H

#include <stdint.h>

/* ck_assert records a checkpoint on every call (a write to Check's pipe); millions of them
 * cost minutes of system time, so hot loops test first and only then fail. Needs <check.h>. */
#define expect(cond, ...) \
    do { \
        if (!(cond)) \
            ck_abort_msg(__VA_ARGS__); \
    } while (0)

/* xorshift64* (Vigna): the high 32 bits of the multiplied state. */
static inline uint32_t tu_xorshift64star(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545f4914f6cdd1dull) >> 32);
}

/* Marsaglia's xorshift64 (13, 7, 17), bits 16..47 of the state. */
static inline uint32_t tu_xorshift64(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 16);
}

#endif
