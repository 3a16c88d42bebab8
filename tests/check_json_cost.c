/* The one pass over JSON text that bounds its nesting and prices its decoding
 * (src/json_depth.c; docs/websocket.md, "slow path"): the WebSocket loop decodes a text message
 * itself only when the price is at most WS_SLOW_TEXT_COST.
 *
 * test_units: every 16 bytes cost 1; outside strings a comma 1 more and an opening bracket
 * RNND_JSON_BRACKET_COST more; inside a string (escaped quotes included) brackets and commas
 * cost nothing more.
 * test_long_values: 60,000 digits of one number cost as much as 60,000 bytes of a string, over
 * WS_SLOW_TEXT_COST (trial 34: a 65 KB number cost 0 and was decoded on the loop, ~1 ms);
 * a step of 512 floats stays under it, one of four such steps goes over.
 * test_depth: nesting deeper than MAX stops the pass (the price of what was read), a bracket
 * inside a string does not nest, and rnnd_json_depth_check agrees. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/json_depth.h"
#include "rnnd/status.h"
#include "ws_internal.h"

static size_t cost_of(const char *text, long max, int *deep)
{
    return rnnd_json_decode_cost(text, strlen(text), max, deep);
}

static size_t cost(const char *text)
{
    int deep;
    size_t c = cost_of(text, 64, &deep);
    ck_assert_int_eq(deep, 0);
    return c;
}

START_TEST(test_units)
{
    ck_assert_uint_eq(cost(""), 0);
    ck_assert_uint_eq(cost("[1,2,3]"), RNND_JSON_BRACKET_COST + 2);
    ck_assert_uint_eq(cost("                                "), 2);   /* 32 spaces */
    ck_assert_uint_eq(cost("\"{[,{[,{[,{[,{[,{[,{[,{[,{[,{[,\""), 2); /* 32 bytes, a string */
    /* the escaped quote does not end the string: the comma and bracket after it are in it */
    ck_assert_uint_eq(cost("\"\\\",[\""), 0);
    ck_assert_uint_eq(cost("\"\\\"\",["), 1 + RNND_JSON_BRACKET_COST);
}
END_TEST

/* "{\"op\":\"step\",\"inputs\":[" then N copies of ROW joined by commas, then "]}". */
static char *message(const char *row, size_t n)
{
    size_t len = strlen(row);
    char *m = malloc(64 + n * (len + 1));
    ck_assert_ptr_nonnull(m);
    char *p = m + sprintf(m, "{\"op\":\"step\",\"inputs\":[");
    for (size_t i = 0; i < n; i++) {
        memcpy(p, row, len);
        p += len;
        *p++ = i + 1 < n ? ',' : ']';
    }
    strcpy(p, "}");
    return m;
}

/* A row of N values, each VALUE. */
static char *row(const char *value, size_t n)
{
    size_t len = strlen(value);
    char *r = malloc(3 + n * (len + 1));
    ck_assert_ptr_nonnull(r);
    char *p = r;
    *p++ = '[';
    for (size_t i = 0; i < n; i++) {
        memcpy(p, value, len);
        p += len;
        *p++ = i + 1 < n ? ',' : ']';
    }
    *p = 0;
    return r;
}

START_TEST(test_long_values)
{
    enum { LONG = 60000 };
    char *digits = malloc(LONG + 1), *str = malloc(LONG + 3);
    ck_assert_ptr_nonnull(digits);
    ck_assert_ptr_nonnull(str);
    memset(digits, '1', LONG);
    digits[LONG] = 0;
    str[0] = '"';
    memset(str + 1, 'a', LONG);
    strcpy(str + 1 + LONG, "\"");
    char *num_row = row(digits, 1), *str_row = row(str, 1);
    char *num = message(num_row, 1), *text = message(str_row, 1);
    size_t c_num = cost(num), c_str = cost(text);
    /* the same length but the string's two quotes */
    ck_assert_uint_le(c_num, c_str);
    ck_assert_uint_le(c_str, c_num + 1);
    ck_assert_uint_gt(c_num, WS_SLOW_TEXT_COST);

    char *floats = row("0.123456789", 512);
    char *one = message(floats, 1), *four = message(floats, 4);
    ck_assert_uint_le(cost(one), WS_SLOW_TEXT_COST);
    ck_assert_uint_gt(cost(four), WS_SLOW_TEXT_COST);
    free(digits);
    free(str);
    free(num_row);
    free(str_row);
    free(num);
    free(text);
    free(floats);
    free(one);
    free(four);
}
END_TEST

START_TEST(test_depth)
{
    int deep;
    ck_assert_uint_eq(cost_of("[[1]]", 2, &deep), 2 * RNND_JSON_BRACKET_COST);
    ck_assert_int_eq(deep, 0);
    ck_assert_int_eq(rnnd_json_depth_check("[[1]]", 5, 2), 0);
    /* stops at the third bracket: two counted */
    ck_assert_uint_eq(cost_of("[[[1]]],,,,", 2, &deep), 2 * RNND_JSON_BRACKET_COST);
    ck_assert_int_eq(deep, 1);
    ck_assert_int_eq(rnnd_json_depth_check("[[[1]]]", 7, 2), RNND_ERR_LIMIT);
    /* closed brackets do not add up */
    ck_assert_uint_eq(cost_of("[1],[2],[3]", 1, &deep), 3 * RNND_JSON_BRACKET_COST + 2);
    ck_assert_int_eq(deep, 0);
    /* in a string, no nesting */
    cost_of("[\"[[[[\"]", 1, &deep);
    ck_assert_int_eq(deep, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json_cost");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_units);
    tcase_add_test(tc, test_long_values);
    tcase_add_test(tc, test_depth);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
