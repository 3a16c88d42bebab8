/* The API error codes (include/rnnd/errcode.h, docs/api.md "Errors").
 *
 * error_codes: each status of rnnd/status.h maps to its documented code, an unknown status to
 * "internal"; each code has the v1 HTTP status docs/api.md gives it, and a value outside the
 * list answers "internal" and 500.
 * v2_statuses: the KServe v2 routes answer as Triton does: 503 (retry later) for unavailable,
 * overloaded, out_of_memory and no_models, 500 for internal and model_error, 400 otherwise.
 * names_unique: no two codes share a name (the X-macro list is the only place they are
 * written).
 * error_json: the v1 error body is {"error":{"code","message"}} with the message escaped.
 * oom_json: the body sent when memory ran out, made without allocating, is byte for byte the
 * one rnnd_errcode_json() makes for out_of_memory, and a short buffer gets a cut string. */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <string.h>

#include "rnnd/errcode.h"
#include "rnnd/status.h"

/* The code named NAME; RNND_E_COUNT when there is none. */
static enum rnnd_errcode by_name(const char *name)
{
    for (int e = 0; e < RNND_E_COUNT; e++)
        if (!strcmp(rnnd_errcode_name((enum rnnd_errcode)e), name))
            return (enum rnnd_errcode)e;
    return RNND_E_COUNT;
}

START_TEST(error_codes)
{
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_INVALID)), "invalid_request");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_LIMIT)), "limit_exceeded");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_UNSUPPORTED)), "unsupported");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_NUMERIC)), "numeric_error");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_FORMAT)), "model_error");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_IO)), "model_error");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_NOMEM)), "out_of_memory");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(RNND_ERR_INTERNAL)), "internal");
    ck_assert_str_eq(rnnd_errcode_name(rnnd_errcode_of(-1000)), "internal");
    static const struct {
        const char *code;
        unsigned http;
    } table[] = {
        {"invalid_json", 400},       {"invalid_request", 400},
        {"numeric_error", 400},      {"not_found", 404},
        {"method_not_allowed", 405}, {"unsupported", 409},
        {"conflict", 409},           {"gone", 410},
        {"limit_exceeded", 413},     {"unsupported_media_type", 415},
        {"overloaded", 429},         {"internal", 500},
        {"model_error", 503},        {"out_of_memory", 503},
        {"unavailable", 503},        {"no_models", 503},
        {"unauthorized", 401},       {"forbidden", 403},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        enum rnnd_errcode e = by_name(table[i].code);
        ck_assert_msg(e != RNND_E_COUNT, "%s is not a code", table[i].code);
        ck_assert_uint_eq(rnnd_errcode_http(e), table[i].http);
    }
    ck_assert_uint_eq(sizeof table / sizeof table[0], RNND_E_COUNT);
    ck_assert_uint_eq(rnnd_errcode_http(RNND_E_COUNT), 500);
    ck_assert_uint_eq(rnnd_errcode_v2(RNND_E_COUNT), 500);
    ck_assert_str_eq(rnnd_errcode_name(RNND_E_COUNT), "internal");
}
END_TEST

START_TEST(v2_statuses)
{
    for (int e = 0; e < RNND_E_COUNT; e++) {
        const char *n = rnnd_errcode_name((enum rnnd_errcode)e);
        unsigned want = 400;
        if (!strcmp(n, "unavailable") || !strcmp(n, "overloaded") || !strcmp(n, "out_of_memory") ||
            !strcmp(n, "no_models"))
            want = 503;
        else if (!strcmp(n, "internal") || !strcmp(n, "model_error"))
            want = 500;
        ck_assert_msg(rnnd_errcode_v2((enum rnnd_errcode)e) == want, "%s: v2 status %u, not %u", n,
                      rnnd_errcode_v2((enum rnnd_errcode)e), want);
    }
}
END_TEST

START_TEST(names_unique)
{
    for (int a = 0; a < RNND_E_COUNT; a++)
        for (int b = a + 1; b < RNND_E_COUNT; b++)
            ck_assert_str_ne(rnnd_errcode_name((enum rnnd_errcode)a),
                             rnnd_errcode_name((enum rnnd_errcode)b));
}
END_TEST

START_TEST(error_json)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_errcode_json(&b, RNND_E_INVALID_REQUEST, "inputs[0]: \"x\" is\nwrong");
    ck_assert(!rnnd_buf_failed(&b));
    json_error_t jerr;
    json_t *j = json_loadb(b.data, b.len, 0, &jerr);
    ck_assert_msg(j != NULL, "%s: %s", b.data, jerr.text);
    json_t *e = json_object_get(j, "error");
    ck_assert_str_eq(json_string_value(json_object_get(e, "code")), "invalid_request");
    ck_assert_str_eq(json_string_value(json_object_get(e, "message")),
                     "inputs[0]: \"x\" is\nwrong");
    ck_assert_uint_eq(json_object_size(j), 1);
    ck_assert_uint_eq(json_object_size(e), 2);
    json_decref(j);
    rnnd_buf_free(&b);
}
END_TEST

START_TEST(oom_json)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_errcode_json(&b, RNND_E_OUT_OF_MEMORY, "out of memory");
    ck_assert(!rnnd_buf_failed(&b));
    char out[RNND_ERRCODE_OOM_CAP];
    size_t n = rnnd_errcode_oom_json(out, sizeof out);
    ck_assert_uint_eq(n, b.len);
    ck_assert_str_eq(out, b.data);
    char cut[8];
    ck_assert_uint_eq(rnnd_errcode_oom_json(cut, sizeof cut), sizeof cut - 1);
    ck_assert_str_eq(cut, "{\"error");
    rnnd_buf_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("errcode");
    TCase *tc = tcase_create("errcode");
    tcase_add_test(tc, error_codes);
    tcase_add_test(tc, v2_statuses);
    tcase_add_test(tc, names_unique);
    tcase_add_test(tc, error_json);
    tcase_add_test(tc, oom_json);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
