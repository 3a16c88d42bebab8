/* Float text (rnnd/fmtfloat.h, rnnd_buf_float): every edge (zeros, subnormals, FLT_MIN,
 * FLT_MAX, every power of 2, the floats nearest every power of 10 and their neighbours,
 * integers around 2^24, halves) and 10^7 random bit patterns must read back through strtof
 * to the same bits, be valid JSON numbers, and be no longer than the shortest "%.*e" that
 * reads back (checked on a sample). A few texts whose shortest form is known from outside
 * (Python's repr of numpy.float32) are checked literally. All 2^32 patterns: see
 * tests/fmtfloat_all.c (by hand, not in make check). */
#include <check.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/buf.h"
#include "rnnd/fmtfloat.h"
#include "testcheck.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_u32(void) { return tu_xorshift64star(&rng_state); }

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* The JSON number grammar (RFC 8259), written here from the RFC. */
static int json_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return 0;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

/* Significant digits of a number text. */
static int sig_digits(const char *s)
{
    char d[32] = "";
    int n = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9' && n < 31)
            d[n++] = *s;
    int lo = 0;
    while (lo < n - 1 && d[lo] == '0')
        lo++;
    while (n - 1 > lo && d[n - 1] == '0')
        n--;
    return n - lo;
}

/* The fewest significant digits with which "%.*e" (correctly rounded by glibc) reads back. */
static int printf_shortest(float v)
{
    char ref[64];
    for (int p = 1; p < 9; p++) {
        snprintf(ref, sizeof ref, "%.*e", p - 1, (double)v);
        if (strtof(ref, NULL) == v)
            return p;
    }
    return 9;
}

/* Every property of one finite float's text; SHORTEST also checks the length. */
static void check_one(float v, int shortest)
{
    char buf[RNND_FMT_FLOAT_MAX + 8];
    memset(buf, 'x', sizeof buf);
    size_t n = rnnd_fmt_float(v, buf);
    expect(n > 0 && n < RNND_FMT_FLOAT_MAX && buf[n] == '\0' && strlen(buf) == n,
           "0x%08x: length %zu", bits_of(v), n);
    /* nothing written past the RNND_FMT_FLOAT_MAX bytes a caller gives it */
    int past = 0;
    for (size_t i = RNND_FMT_FLOAT_MAX; i < sizeof buf; i++)
        past |= buf[i] != 'x';
    expect(!past, "0x%08x: written past RNND_FMT_FLOAT_MAX bytes", bits_of(v));
    expect(json_number(buf), "0x%08x: \"%s\" is not a JSON number", bits_of(v), buf);
    float back = strtof(buf, NULL);
    expect(bits_of(back) == bits_of(v), "0x%08x (%.9g): \"%s\" reads back as %.9g", bits_of(v),
           (double)v, buf, (double)back);
    /* what the daemon's readers do: a double, then a float */
    expect(bits_of((float)strtod(buf, NULL)) == bits_of(v), "0x%08x: \"%s\" via strtod", bits_of(v),
           buf);
    if (shortest && v != 0) {
        int p = printf_shortest(v);
        expect(sig_digits(buf) <= p, "0x%08x: \"%s\" has more than %d digits", bits_of(v), buf, p);
    }
}

START_TEST(test_known)
{
    /* shortest texts known from outside: Python's repr(numpy.float32(x)), %g layout */
    static const struct {
        float v;
        const char *text;
    } cases[] = {
        {0.0f, "0"},
        {-0.0f, "-0.0"},
        {1.0f, "1"},
        {-1.0f, "-1"},
        {0.1f, "0.1"},
        {0.3f, "0.3"},
        {2.5f, "2.5"},
        {100.0f, "100"},
        {100000000.0f, "100000000"},
        {1e9f, "1e+09"},
        {1e10f, "1e+10"},
        {0.0001f, "0.0001"},
        {1e-5f, "1e-05"},
        {-2.5e-7f, "-2.5e-07"},
        {16777216.0f, "16777216"},
        {3.14159265f, "3.1415927"},
        {FLT_MAX, "3.4028235e+38"},
        {FLT_MIN, "1.1754944e-38"},
        {FLT_TRUE_MIN, "1e-45"},
        {-FLT_MAX, "-3.4028235e+38"},
        {1.0f / 3.0f, "0.33333334"},
        {65504.0f, "65504"},
        {0x1p-126f * 0.5f, "5.877472e-39"},
        {123456792.0f, "123456790"},
    };
    char buf[RNND_FMT_FLOAT_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = rnnd_fmt_float(cases[i].v, buf);
        ck_assert_msg(n == strlen(cases[i].text) && !strcmp(buf, cases[i].text),
                      "%.9g: \"%s\", expected \"%s\"", (double)cases[i].v, buf, cases[i].text);
    }
    /* no number at all for what JSON cannot hold */
    ck_assert_uint_eq(rnnd_fmt_float(NAN, buf), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_uint_eq(rnnd_fmt_float(-INFINITY, buf), 0);
    ck_assert_uint_eq(rnnd_fmt_float(INFINITY, buf), 0);
}
END_TEST

START_TEST(test_edges)
{
    size_t count = 0;
    /* zeros, the subnormal range's ends, FLT_MIN, FLT_MAX and their neighbours */
    static const uint32_t edges[] = {
        0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x00000002, 0x00000003, 0x000fffff,
        0x00400000, 0x007ffffe, 0x007fffff, 0x00800000, 0x00800001, 0x00ffffff, 0x01000000,
        0x7f7fffff, 0xff7fffff, 0x7f7ffffe, 0x7f000000, 0x7effffff, 0x3f800000, 0x3f7fffff,
        0x3f800001, 0x4b7fffff, 0x4b800000, 0x4b800001, 0x33800000, 0x34000000,
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++, count++)
        check_one(from_bits(edges[i]), 1);
    /* every power of 2, both signs, with its neighbours */
    for (int e = -149; e <= 127; e++) {
        float p = ldexpf(1.0f, e);
        float around[] = {p, nextafterf(p, 0), nextafterf(p, INFINITY), -p};
        for (int k = 0; k < 4; k++, count++)
            if (isfinite(around[k]))
                check_one(around[k], 1);
    }
    /* the float nearest each power of 10 (strtof of "1eK") and 3 neighbours each side */
    for (int k = -45; k <= 38; k++) {
        char t[16];
        snprintf(t, sizeof t, "1e%d", k);
        float p = strtof(t, NULL);
        for (int d = -3; d <= 3; d++, count++) {
            uint32_t b = bits_of(p) + (uint32_t)d;
            if (d < 0 && bits_of(p) < (uint32_t)-d)
                continue;
            if (isfinite(from_bits(b)))
                check_one(from_bits(b), 1);
        }
        /* the text itself, when it is a float's shortest form, must come back as it is */
        char buf[RNND_FMT_FLOAT_MAX];
        rnnd_fmt_float(p, buf);
        if (k >= -4 && k < 9) {
            ck_assert_msg(strtod(buf, NULL) == strtod(t, NULL) || p == 0, "1e%d: \"%s\"", k, buf);
        }
    }
    /* integers around 2^24 (where float spacing becomes 2) and halves: ties in the text */
    for (int i = -300; i <= 300; i++, count += 3) {
        check_one((float)(16777216 + i), 1);
        check_one((float)i + 0.5f, 1);
        check_one((float)i * 1e-3f, 1);
    }
    ck_assert_uint_gt(count, 3000);
}
END_TEST

START_TEST(test_random_patterns)
{
    /* 10^7 random bit patterns: round trip and grammar on each, length on every 64th */
    size_t finite = 0;
    for (long i = 0; i < 10000000; i++) {
        float v = from_bits(rng_u32());
        if (!isfinite(v)) {
            char buf[RNND_FMT_FLOAT_MAX];
            expect(rnnd_fmt_float(v, buf) == 0, "0x%08x: text for a non-finite", bits_of(v));
            continue;
        }
        check_one(v, (i & 63) == 0);
        finite++;
    }
    ck_assert_uint_gt(finite, 9900000);
}
END_TEST

START_TEST(test_jansson_reads_back)
{
    /* A response list written by rnnd_buf_floats, read by jansson as the clients' parsers
     * would: every element is a number giving back the same float. */
    enum { N = 20000 };
    float *v = malloc(N * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < N; i++) {
        do
            v[i] = from_bits(rng_u32());
        while (!isfinite(v[i]));
    }
    v[0] = -0.0f;
    v[1] = 0.0f;
    v[2] = FLT_MAX;
    v[3] = FLT_TRUE_MIN;
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_floats(&b, v, N);
    ck_assert(!rnnd_buf_failed(&b));
    json_error_t jerr;
    json_t *a = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(a != NULL, "not JSON: %s", jerr.text);
    ck_assert_uint_eq(json_array_size(a), N);
    for (size_t i = 0; i < N; i++) {
        const json_t *x = json_array_get(a, i);
        expect(json_is_number(x), "element %zu is not a number", i);
        float back = (float)json_number_value(x);
        expect(bits_of(back) == bits_of(v[i]), "element %zu", i);
    }
    ck_assert_msg(json_is_real(json_array_get(a, 0)) &&
                      signbit(json_real_value(json_array_get(a, 0))),
                  "-0.0 lost its sign");
    json_decref(a);
    rnnd_buf_free(&b);
    free(v);
}
END_TEST

START_TEST(test_buf_nonfinite)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_float(&b, 1.5f);
    ck_assert_str_eq(b.data, "1.5");
    ck_assert(!rnnd_buf_failed(&b));
    rnnd_buf_float(&b, NAN);
    ck_assert(rnnd_buf_failed(&b));
    ck_assert_int_eq(b.nonfinite, 1);
    rnnd_buf_free(&b);
    /* a long list grows the buffer many times; the text stays exact */
    rnnd_buf_init(&b);
    float row[3] = {-0.0f, 1e-45f, 3.4028235e38f};
    for (int i = 0; i < 1000; i++)
        rnnd_buf_floats(&b, row, 3);
    ck_assert(!rnnd_buf_failed(&b));
    ck_assert_uint_eq(b.len, 1000 * strlen("[-0.0,1e-45,3.4028235e+38]"));
    ck_assert(!strncmp(b.data, "[-0.0,1e-45,3.4028235e+38][", 27));
    rnnd_buf_free(&b);
}
END_TEST

static Suite *fmtfloat_suite(void)
{
    Suite *s = suite_create("fmtfloat");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_known);
    tcase_add_test(tc, test_edges);
    tcase_add_test(tc, test_random_patterns);
    tcase_add_test(tc, test_jansson_reads_back);
    tcase_add_test(tc, test_buf_nonfinite);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fmtfloat_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
