/* The URI bound of the front door (src/frontdoor.c, rnnd_frontdoor_uri): at max_header_bytes
 * 32K a URI may have 128 query arguments, and its bytes plus 64 per argument may reach
 * 31,744 (32K less 1024) and not one byte more; a refusal says which bound it passed. The
 * head checks need a libmicrohttpd connection: tests/test_frontdoor.py sends them. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontdoor.h"
#include "rnnd/status.h"

#define M 32768

/* "/p?" and ARGS arguments "a=", the last padded with 'v' so the URI is LEN bytes ("/p" and
 * padding when ARGS is 0). */
static char *uri_of(size_t args, size_t len)
{
    char *u = malloc(len + 1);
    ck_assert_ptr_nonnull(u);
    size_t n = (size_t)snprintf(u, len + 1, args ? "/p?" : "/p");
    for (size_t i = 0; i < args; i++)
        n += (size_t)snprintf(u + n, len + 1 - n, "%sa=", i ? "&" : "");
    ck_assert_uint_le(n, len);
    memset(u + n, 'v', len - n);
    u[len] = '\0';
    return u;
}

START_TEST(test_args_count)
{
    char err[320] = "";
    char *u = uri_of(M / 256, 1000);
    ck_assert_int_eq(rnnd_frontdoor_uri(u, M, err, sizeof err), RNND_OK);
    free(u);
    u = uri_of(M / 256 + 1, 1000);
    ck_assert_int_eq(rnnd_frontdoor_uri(u, M, err, sizeof err), RNND_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(err, "more than 128 query arguments"));
    free(u);
}
END_TEST

START_TEST(test_length_bound)
{
    char err[320] = "";
    size_t room = M - RNND_FRONTDOOR_RESERVE;
    for (size_t args = 0; args <= 128; args += 32) {
        size_t len = room - RNND_FRONTDOOR_RECORD * args;
        char *u = uri_of(args, len);
        ck_assert_int_eq(rnnd_frontdoor_uri(u, M, err, sizeof err), RNND_OK);
        free(u);
        u = uri_of(args, len + 1);
        ck_assert_int_eq(rnnd_frontdoor_uri(u, M, err, sizeof err), RNND_ERR_LIMIT);
        ck_assert_ptr_nonnull(strstr(err, "is too long"));
        free(u);
    }
    /* 128 arguments of 200 bytes: the 26 KB line that once got no answer */
    char *u = uri_of(128, 128 * 205);
    ck_assert_int_eq(rnnd_frontdoor_uri(u, M, err, sizeof err), RNND_ERR_LIMIT);
    free(u);
}
END_TEST

START_TEST(test_no_query)
{
    char err[320] = "";
    ck_assert_int_eq(rnnd_frontdoor_uri("/v1/models", M, err, sizeof err), RNND_OK);
    ck_assert_int_eq(rnnd_frontdoor_uri("/v1/models?", M, err, sizeof err), RNND_OK);
}
END_TEST

/* Round 3 of issue 13: a '%' only in the query; Host is uri-host [":" port] */
START_TEST(test_path_percent)
{
    char err[160] = "";
    ck_assert_int_eq(rnnd_frontdoor_path("/v1/models?a=%41&b=%2f", err, sizeof err), RNND_OK);
    ck_assert_int_eq(rnnd_frontdoor_path("/healthz", err, sizeof err), RNND_OK);
    ck_assert_int_eq(rnnd_frontdoor_path("/health%7a", err, sizeof err), RNND_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "'%' at byte 7"));
    ck_assert_int_eq(rnnd_frontdoor_path("/v1%2fsessions?x", err, sizeof err), RNND_ERR_INVALID);
}
END_TEST

START_TEST(test_host_syntax)
{
    static const char *const good[] = {"x",     "example.com:8080", "127.0.0.1:80",
                                       "[::1]", "[::1]:9000",       "x:",
                                       "",      "caf%C3%A9",        "a-b_c~d!$&'()*+,;="};
    static const char *const bad[] = {"u:p@x:99", "u@x",    "x y", "x/y",  "x:9a", "x:1:2", "[::1",
                                      "[]",       "[::1]x", "x?y", "x%zz", "x%4",  "\t"};
    char err[160];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_msg(rnnd_frontdoor_host(good[i], err, sizeof err) == RNND_OK, "%s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(rnnd_frontdoor_host(bad[i], err, sizeof err) == RNND_ERR_INVALID, "%s",
                      bad[i]);
    ck_assert_int_eq(rnnd_frontdoor_host(NULL, err, sizeof err), RNND_OK);
}
END_TEST

/* The request line as libmicrohttpd 0.9.75 leaves it: spaces at the method's end and the
 * version's start turned into NULs */
START_TEST(test_line_nul)
{
    char ok[] = "GET\0/v1/x\0HTTP/1.1";
    ck_assert_int_eq(rnnd_frontdoor_line(ok, ok + 4, 5, ok + 10), RNND_OK);
    char two[] = "GET\0 /v1/x\0HTTP/1.1"; /* two spaces after the method */
    ck_assert_int_eq(rnnd_frontdoor_line(two, two + 5, 5, two + 11), RNND_OK);
    char in_uri[] = "GET\0/v1/x\0zz\0HTTP/1.1"; /* strlen shows "/v1/x" only */
    ck_assert_int_eq(rnnd_frontdoor_line(in_uri, in_uri + 4, 5, in_uri + 13), RNND_ERR_INVALID);
    char in_method[] = "GE\0T\0/v1/x\0HTTP/1.1";
    ck_assert_int_eq(rnnd_frontdoor_line(in_method, in_method + 5, 5, in_method + 11),
                     RNND_ERR_INVALID);
    /* pointers not laid out in one line: nothing to compare */
    ck_assert_int_eq(rnnd_frontdoor_line(ok, NULL, 5, ok + 10), RNND_OK);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("frontdoor");
    TCase *tc = tcase_create("uri");
    tcase_add_test(tc, test_args_count);
    tcase_add_test(tc, test_length_bound);
    tcase_add_test(tc, test_no_query);
    tcase_add_test(tc, test_path_percent);
    tcase_add_test(tc, test_host_syntax);
    tcase_add_test(tc, test_line_nul);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
