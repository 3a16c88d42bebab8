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

static Suite *suite(void)
{
    Suite *s = suite_create("frontdoor");
    TCase *tc = tcase_create("uri");
    tcase_add_test(tc, test_args_count);
    tcase_add_test(tc, test_length_bound);
    tcase_add_test(tc, test_no_query);
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
