/* rnnd_log_quote_ids(): text a client chose reaches a log line with every run of 32 or more
 * hex digits (a session id's shape) as {id}, and never a part of such a run, however small
 * the buffer (issue 13, round 4, item 2). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define ID "0123456789abcdef0123456789abcdef"

START_TEST(test_ids_redacted)
{
    char out[256];
    ck_assert_str_eq(rnnd_log_quote_ids(out, sizeof out, "/v1/Sessions/" ID),
                     "\"/v1/Sessions/{id}\"");
    ck_assert_str_eq(rnnd_log_quote_ids(out, sizeof out, ID), "\"{id}\"");
    ck_assert_str_eq(rnnd_log_quote_ids(out, sizeof out, "x" ID "y/" ID ID), "\"x{id}y/{id}\"");
    ck_assert_str_eq(rnnd_log_quote_ids(out, sizeof out, "0123456789ABCDEF0123456789ABCDEF"),
                     "\"{id}\"");
    /* 31 digits are not an id; the plain quote keeps everything */
    ck_assert_str_eq(rnnd_log_quote_ids(out, sizeof out, "123456789abcdef0123456789abcdef"),
                     "\"123456789abcdef0123456789abcdef\"");
    ck_assert_str_eq(rnnd_log_quote(out, sizeof out, ID), "\"" ID "\"");
    ck_assert_str_eq(rnnd_log_quote_ids(out, sizeof out, "a\"b"), "\"a\\\"b\"");
}
END_TEST

START_TEST(test_small_buffer)
{
    /* every size: the output is whole {id} or nothing of the run, and always quoted */
    for (size_t n = 3; n < 48; n++) {
        char out[48];
        rnnd_log_quote_ids(out, n, "ab/" ID);
        size_t len = strlen(out);
        ck_assert_msg(len < n && out[0] == '"' && out[len - 1] == '"' && len >= 2, "size %zu: %s",
                      n, out);
        ck_assert_msg(!strstr(out, "0123"), "size %zu: part of the id shown: %s", n, out);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_test(tc, test_ids_redacted);
    tcase_add_test(tc, test_small_buffer);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
