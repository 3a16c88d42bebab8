/* The step-body scanner (rnnd/step_scan.h) against the jansson path (step_scan_ref.c): for
 * hand-written edge cases, 20000 generated bodies and 100000 mutations of them, the scanner
 * either declines or gives exactly what the jansson path gives. Bodies of the common shape
 * (and number forms it is meant to take: Clinger's fast path and the strtod fallback) must be
 * accepted, so the fast path is known to be taken, not just harmless. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/fmtfloat.h"
#include "rnnd/step_scan.h"
#include "step_scan_ref.h"
#include "testcheck.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rng_u32(void) { return tu_xorshift64star(&rng_state); }

static uint32_t rnd(uint32_t n) { return rng_u32() % n; }

/* ---- a growable text ---- */

struct text {
    char *s;
    size_t len, cap;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    expect(n >= 0 && (size_t)n < sizeof tmp, "text too long");
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        expect(t->s != NULL, "out of memory");
    }
    memcpy(t->s + t->len, tmp, (size_t)n + 1);
    t->len += (size_t)n;
}

static void ws(struct text *t)
{
    static const char *const w[] = {"", "", "", " ", "\n", "\t", "\r\n", "  "};
    put(t, "%s", w[rnd(8)]);
}

/* ---- numbers ---- */

static double rnd_double(void)
{
    uint64_t b = ((uint64_t)rng_u32() << 32) | rng_u32();
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* A number of a vector step in one of many textual forms; *CLEAN is cleared when the form is
 * one the scanner may decline (beyond float32, more than 18 integer digits, over 64 chars). */
static void number(struct text *t, int *clean)
{
    char b[128];
    switch (rnd(16)) {
    case 0: { /* shortest float text */
        uint32_t bits = rng_u32();
        float f;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f))
            f = 1.0f;
        rnnd_fmt_float(f, b);
        put(t, "%s", b);
        break;
    }
    case 1: /* a double that fits float32, 17 digits */
        put(t, "%.17g", (rng_u32() / 4294967296.0 - 0.5) * pow(10, (int)rnd(60) - 40));
        break;
    case 2: { /* %.Ne with a random precision and exponent case */
        double d = (rng_u32() / 4294967296.0 - 0.5) * pow(10, (int)rnd(80) - 45);
        snprintf(b, sizeof b, "%.*e", (int)rnd(25), d);
        if (rnd(2))
            for (char *p = b; *p; p++)
                if (*p == 'e')
                    *p = 'E';
        put(t, "%s", b);
        break;
    }
    case 3: /* small integers */ put(t, "%d", (int)rnd(2001) - 1000); break;
    case 4: { /* integers up to 18 digits */
        int64_t v = (int64_t)(((uint64_t)rng_u32() << 32 | rng_u32()) % 1000000000000000000ull);
        put(t, "%s%lld", rnd(2) ? "-" : "", (long long)v);
        break;
    }
    case 5: /* zeros */ {
        static const char *const z[] = {"0", "-0", "0.0", "-0.0", "0e5", "-0E-5", "0.000"};
        put(t, "%s", z[rnd(7)]);
        break;
    }
    case 6: /* many digits: the strtod fallback */
        put(t, "%u.%u%u%u%ue%d", rnd(1000), rng_u32(), rng_u32(), rng_u32(), rng_u32(),
            (int)rnd(60) - 30);
        break;
    case 7: { /* leading zeros in the fraction, exponent with leading zeros */
        put(t, "0.000000000000%ue+0%u", rnd(100000), rnd(10));
        break;
    }
    case 8: { /* mantissas around 2^53 with exponents around +-22 */
        uint64_t m = ((uint64_t)1 << 53) + rnd(5) - 2;
        put(t, "%llue%d", (unsigned long long)m, (int)rnd(47) - 23 - 30);
        break;
    }
    case 9: { /* exact double halfway cases and their neighbours */
        static const char *const h[] = {
            "1.00000000000000011102230246251565404236316680908203125",
            "1.00000000000000011102230246251565404236316680908203124",
            "1.00000000000000011102230246251565404236316680908203126",
            "9007199254740993",
            "9007199254740993.0",
            "9007199254740995e-16",
            "0.1000000000000000055511151231257827",
            "3.4028235e38",
            "-3.4028235e38",
            "3.40282346638528859811704183484516925440e38", /* FLT_MAX exactly */
            "1.4012984643248170709e-45",
            "7.006492321624085e-46",
            "7.006492321624086e-46",
            "1e-400",
            "-1e-400",
            "2.2250738585072011e-308",
            "4.9e-324",
        };
        put(t, "%s", h[rnd(sizeof h / sizeof h[0])]);
        break;
    }
    case 10: { /* values at float32's rounding limit: refused by both */
        static const char *const big[] = {
            "3.4028235677973366e38",
            "3.4028236e38",
            "1e39",
            "-1e39",
            "1e400",
            "-1e309",
            "12345678901234567890",
            "-99999999999999999999",
            "1e99999999999",
            "3.40282356779733661637539395458142568447e38", /* rounds to the limit */
        };
        put(t, "%s", big[rnd(sizeof big / sizeof big[0])]);
        *clean = 0;
        break;
    }
    case 11: { /* a random double: most are out of float range */
        double d = rnd_double();
        if (!isfinite(d))
            d = 0.5;
        put(t, "%.17g", d);
        *clean = 0;
        break;
    }
    default: /* plain values like a client's */
        put(t, "%.6f", (rng_u32() / 4294967296.0 - 0.5) * 20);
        break;
    }
}

/* A step body; *CLEAN says whether the scanner must take it (no odd feature chosen). */
static void body(struct text *t, int *clean, int allow_odd)
{
    *clean = 1;
    int tokens = rnd(3) == 0;
    size_t width = rnd(8) == 0 ? 512 : 1 + rnd(12);
    size_t steps = 1 + rnd(6);
    int odd = allow_odd && rnd(3) == 0 ? (int)rnd(12) : -1;
    if (odd >= 0)
        *clean = 0;
    int order[3] = {0, 1, 2};
    for (int i = 2; i > 0; i--) {
        int j = (int)rnd((uint32_t)i + 1), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    int with_outputs = rnd(2), with_if = rnd(3) == 0;
    ws(t);
    put(t, "{");
    int first = 1;
    for (int k = 0; k < 3; k++) {
        if ((order[k] == 1 && !with_outputs) || (order[k] == 2 && !with_if))
            continue;
        ws(t);
        put(t, "%s", first ? "" : ",");
        first = 0;
        ws(t);
        if (order[k] == 0) {
            put(t, odd == 0 ? "\"inp\\u0075ts\"" : "\"inputs\"");
            ws(t);
            put(t, ":");
            ws(t);
            put(t, "[");
            for (size_t s = 0; s < steps; s++) {
                ws(t);
                if (s)
                    put(t, ",");
                if (tokens) {
                    ws(t);
                    if (odd == 1 && s == 0)
                        put(t, "%d.0", (int)rnd(50));
                    else if (odd == 2 && s == 0)
                        put(t, "12345678901234567890");
                    else
                        put(t, "%d", (int)rnd(70000) - (rnd(10) == 0 ? 35000 : 0));
                    continue;
                }
                put(t, "[");
                size_t w = odd == 3 && s == steps - 1 ? width + 1 : width;
                for (size_t j = 0; j < w; j++) {
                    ws(t);
                    if (j)
                        put(t, ",");
                    ws(t);
                    number(t, clean);
                }
                ws(t);
                put(t, "]");
            }
            if (odd == 4)
                put(t, ",");
            ws(t);
            put(t, "]");
        } else if (order[k] == 1) {
            static const char *const o[] = {"\"all\"", "\"last\""};
            static const char *const bad[] = {"\"first\"", "1",        "null",
                                              "\"ALL\"",   "\"all \"", "\"l\\u0061st\""};
            put(t, "\"outputs\"");
            ws(t);
            put(t, ":");
            ws(t);
            put(t, "%s", odd == 5 ? bad[rnd(6)] : o[rnd(2)]);
        } else {
            static const char *const bad[] = {"-1",  "1.0", "1e2", "\"3\"", "99999999999999999999",
                                              "true"};
            put(t, "\"if_steps\"");
            ws(t);
            put(t, ":");
            ws(t);
            if (odd == 6)
                put(t, "%s", bad[rnd(6)]);
            else if (rnd(4) == 0)
                put(t, rnd(2) ? "-0" : "922337203685477580");
            else
                put(t, "%u", rnd(1000000));
        }
    }
    static const char *const extra[] = {
        ",\"logits\":false", ",\"top_k\":3",         ",\"text\":\"ab\"",
        ",\"inputs\":[[1]]", ",\"outputs\":\"all\"", ",\"x\":1",
    };
    if (odd == 7)
        put(t, "%s", extra[rnd(6)]);
    ws(t);
    put(t, "}");
    ws(t);
    if (odd == 8)
        put(t, "%s", rnd(2) ? "x" : "{}");
    if (odd == 9 && t->len)
        t->s[--t->len] = '\0';
    /* 10, 11: odd only through the limits the caller picks */
}

static long compared, same, declined;

static void check_body(const char *data, size_t len, long depth, size_t max_steps, int must_take)
{
    char why[512] = "";
    int rc = ssr_compare(data, len, depth, max_steps, why, sizeof why);
    compared++;
    same += rc == SSR_SAME;
    declined += rc == SSR_DECLINED;
    expect(rc != SSR_DIFFERENT, "%s\nbody: %.*s", why, (int)(len < 2000 ? len : 2000), data);
    if (must_take)
        expect(rc == SSR_SAME, "declined a common body: %.*s", (int)(len < 2000 ? len : 2000),
               data);
}

static void expect_str(const char *body_text, int must_take)
{
    check_body(body_text, strlen(body_text), 32, 4096, must_take);
}

START_TEST(test_hand_written)
{
    /* taken */
    static const char *const take[] = {
        "{\"inputs\":[[1,2,3]]}",
        "{\"inputs\":[1,2,3]}",
        " \t\r\n{ \"inputs\" : [ [ 1.5 , -2e-3 ] , [ 0 , -0.0 ] ] } \n",
        "{\"outputs\":\"last\",\"inputs\":[[1]],\"if_steps\":7}",
        "{\"if_steps\":0,\"inputs\":[0]}",
        "{\"if_steps\":-0,\"inputs\":[-0]}",
        "{\"inputs\":[[3.4028235e38, -3.4028235e38, 1e-45, 1e-400, 7e-46]]}",
        "{\"inputs\":[[1.00000000000000011102230246251565404236316680908203125]]}",
        "{\"inputs\":[[9007199254740993, 123456789012345678, -123456789012345678]]}",
        "{\"inputs\":[[0.1,0.2,0.30000000000000004,1E+2,1e-0]],\"outputs\":\"all\"}",
        "{\"inputs\":[-5, 70000]}", /* ids out of a model's range: the handler judges */
    };
    for (size_t i = 0; i < sizeof take / sizeof take[0]; i++)
        expect_str(take[i], 1);
    /* declined (the jansson path reports these, or they are not the common shape) */
    static const char *const decline[] = {
        "",
        "{}",
        "[]",
        "{\"inputs\":[]}",
        "{\"inputs\":[[]]}",
        "{\"inputs\":[[1],[1,2]]}",
        "{\"inputs\":[[1],2]}",
        "{\"inputs\":[1,[2]]}",
        "{\"inputs\":[1.0]}",
        "{\"inputs\":[[1e39]]}",
        "{\"inputs\":[[3.4028235677973366e38]]}",
        "{\"inputs\":[[1e400]]}",
        "{\"inputs\":[[12345678901234567890]]}",
        "{\"inputs\":[[01]]}",
        "{\"inputs\":[[1.]]}",
        "{\"inputs\":[[.5]]}",
        "{\"inputs\":[[+1]]}",
        "{\"inputs\":[[1e]]}",
        "{\"inputs\":[[-]]}",
        "{\"inputs\":[[NaN]]}",
        "{\"inputs\":[[Infinity]]}",
        "{\"inputs\":[[1,]]}",
        "{\"inputs\":[[1]],}",
        "{\"inputs\":[[1]]} x",
        "{\"inputs\":[[1]]}{}",
        "{\"inputs\":[[1]],\"inputs\":[[2]]}",
        "{\"inputs\":[[1]],\"logits\":false}",
        "{\"inputs\":[[1]],\"outputs\":\"first\"}",
        "{\"inputs\":[[1]],\"if_steps\":-1}",
        "{\"inputs\":[[1]],\"if_steps\":1.0}",
        "{\"inp\\u0075ts\":[[1]]}",
        "{\"outputs\":\"last\"}",
        "{\"inputs\":[[1]]",
        "{\"inputs\":[[1]]]}",
        "{\"inputs\":[[1]],\"if_steps\":99999999999999999999}",
        "{\"inputs\":[[[1]]]}",
        "{\"inputs\":[[\"1\"]]}",
        "{\"inputs\":[[true]]}",
        "{\"inputs\":[[null]]}",
        "\xef\xbb\xbf{\"inputs\":[[1]]}",
        "{\"inputs\":[[1]]}\0",
        "{\"inputs\":[[1"
        "00000000000000000000000000000000000000000000000000000000000000000"
        "0.5]]}",
    };
    for (size_t i = 0; i < sizeof decline / sizeof decline[0]; i++) {
        char why[256];
        const char *b = decline[i];
        size_t len = strlen(b) + (i == sizeof decline / sizeof decline[0] - 2);
        ck_assert_msg(ssr_compare(b, len, 32, 4096, why, sizeof why) == SSR_DECLINED, "took %s", b);
    }
    /* the limits: nesting and steps */
    char why[256];
    const char *vec = "{\"inputs\":[[1],[2],[3]]}", *tok = "{\"inputs\":[1,2,3]}";
    ck_assert_int_eq(ssr_compare(vec, strlen(vec), 2, 4096, why, sizeof why), SSR_DECLINED);
    ck_assert_int_eq(ssr_compare(vec, strlen(vec), 3, 4096, why, sizeof why), SSR_SAME);
    ck_assert_int_eq(ssr_compare(tok, strlen(tok), 2, 4096, why, sizeof why), SSR_SAME);
    ck_assert_int_eq(ssr_compare(tok, strlen(tok), 1, 4096, why, sizeof why), SSR_DECLINED);
    ck_assert_int_eq(ssr_compare(vec, strlen(vec), 32, 2, why, sizeof why), SSR_DECLINED);
    ck_assert_int_eq(ssr_compare(vec, strlen(vec), 32, 3, why, sizeof why), SSR_SAME);
    /* the values themselves */
    rnnd_step_scan sc;
    const char *b = "{\"if_steps\":12,\"outputs\":\"last\",\"inputs\":[[-0.0,-0,1e-46,0.1]]}";
    ck_assert_int_eq(rnnd_step_scan_parse(b, strlen(b), 32, 10, &sc), 0);
    ck_assert_uint_eq(sc.n_steps, 1);
    ck_assert_uint_eq(sc.width, 4);
    ck_assert_int_eq(sc.last_only, 1);
    ck_assert_int_eq(sc.if_steps, 12);
    ck_assert(sc.vectors[0] == 0 && signbit(sc.vectors[0]));  /* a real -0.0 */
    ck_assert(sc.vectors[1] == 0 && !signbit(sc.vectors[1])); /* the integer 0 */
    ck_assert(sc.vectors[2] == 0);
    ck_assert(sc.vectors[3] == 0.1f);
    rnnd_step_scan_clear(&sc);
}
END_TEST

START_TEST(test_generated)
{
    long clean_seen = 0;
    for (int i = 0; i < 20000; i++) {
        struct text t = {0};
        int clean;
        body(&t, &clean, 1);
        check_body(t.s, t.len, 32, 4096, clean);
        clean_seen += clean;
        /* the same body under tight limits */
        check_body(t.s, t.len, 2 + (long)rnd(2), 1 + rnd(6), 0);
        free(t.s);
    }
    ck_assert_int_gt(clean_seen, 5000);
    ck_assert_int_gt(same, 5000);
}
END_TEST

START_TEST(test_mutations)
{
    static const char sig[] = "0123456789-+.eE,[]{}\": \t\n\\ax";
    long taken_after = 0;
    for (int i = 0; i < 100000; i++) {
        struct text t = {0};
        int clean;
        body(&t, &clean, 0);
        int edits = 1 + (int)rnd(3);
        for (int e = 0; e < edits && t.len; e++) {
            size_t at = rnd((uint32_t)t.len);
            switch (rnd(4)) {
            case 0: t.s[at] = sig[rnd(sizeof sig - 1)]; break;
            case 1: t.s[at] = (char)rnd(256); break;
            case 2:
                memmove(t.s + at, t.s + at + 1, t.len - at);
                t.len--;
                break;
            default: {
                char c[2] = {sig[rnd(sizeof sig - 1)], 0};
                put(&t, "%s", c); /* grows; then move it into place */
                memmove(t.s + at + 1, t.s + at, t.len - 1 - at);
                t.s[at] = c[0];
                break;
            }
            }
        }
        long before = same;
        check_body(t.s, t.len, 32, 4096, 0);
        taken_after += same > before;
        free(t.s);
    }
    /* many mutants are still common bodies (a digit for a digit): the scanner took some */
    ck_assert_int_gt(taken_after, 1000);
    fprintf(stderr,
            "check_step_scan: %ld bodies compared, %ld taken (same as jansson), %ld "
            "declined\n",
            compared, same, declined);
}
END_TEST

static Suite *step_scan_suite(void)
{
    Suite *s = suite_create("step_scan");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hand_written);
    tcase_add_test(tc, test_generated);
    tcase_add_test(tc, test_mutations);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(step_scan_suite());
    srunner_set_fork_status(sr, CK_NOFORK); /* the counters add up over the tests */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
