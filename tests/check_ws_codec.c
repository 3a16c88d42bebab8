/* The binary frames of WebSocket sessions (src/ws_codec.h): every refusal of the header
 * parser (layouts that close the socket apart from bad fields that get an error reply), the
 * byte order of the payload and of the reply, written out byte by byte here. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"
#include "ws_codec.h"

/* A request header with N steps, FLAGS and IF_STEPS, then PAYLOAD bytes of zeros. */
static size_t frame(uint8_t *out, unsigned kind, uint32_t seq, uint32_t n, uint32_t flags,
                    uint64_t if_steps, size_t payload)
{
    memset(out, 0, RNND_WS_HEAD + payload);
    out[0] = 'R';
    out[1] = 'W';
    out[2] = 1;
    out[3] = (uint8_t)kind;
    for (int i = 0; i < 4; i++) {
        out[4 + i] = (uint8_t)(seq >> (8 * i));
        out[8 + i] = (uint8_t)(n >> (8 * i));
        out[12 + i] = (uint8_t)(flags >> (8 * i));
    }
    for (int i = 0; i < 8; i++)
        out[16 + i] = (uint8_t)(if_steps >> (8 * i));
    return RNND_WS_HEAD + payload;
}

static int parse(const uint8_t *f, size_t len, rnnd_ws_head *h)
{
    char err[200] = "";
    int rc = rnnd_ws_head_parse(f, len, h, err, sizeof err);
    if (rc)
        ck_assert_msg(err[0], "a refusal says why");
    return rc;
}

START_TEST(test_layouts_refused)
{
    uint8_t f[64];
    rnnd_ws_head h;
    size_t len = frame(f, RNND_WS_F32, 1, 1, 0, 0, 8);
    ck_assert_int_eq(parse(f, RNND_WS_HEAD - 1, &h), RNND_ERR_UNSUPPORTED); /* short */
    f[0] = 'X';
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_UNSUPPORTED); /* magic */
    f[0] = 'R';
    f[2] = 2;
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_UNSUPPORTED); /* version */
    f[2] = 1;
    f[3] = RNND_WS_OUT_F32;
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_UNSUPPORTED); /* a reply's kind */
    f[3] = 0;
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_UNSUPPORTED);
}
END_TEST

START_TEST(test_fields_refused)
{
    uint8_t f[64];
    rnnd_ws_head h;
    size_t len = frame(f, RNND_WS_F32, 1, 1, 4, 0, 8);
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_INVALID); /* an undefined flag */
    len = frame(f, RNND_WS_F32, 1, 1, RNND_WS_IF_STEPS, (uint64_t)INT64_MAX + 1, 8);
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_INVALID); /* if_steps past int64 */
    len = frame(f, RNND_WS_F32, 1, 0, 0, 0, 8);
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_INVALID); /* no steps */
    len = frame(f, RNND_WS_F32, 1, 3, 0, 0, 8);
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_INVALID); /* 8 bytes are not 3 steps */
    len = frame(f, RNND_WS_I32, 1, 2, 0, 0, 6);
    ck_assert_int_eq(parse(f, len, &h), RNND_ERR_INVALID); /* not whole int32s */
}
END_TEST

START_TEST(test_fields_read)
{
    uint8_t f[64];
    rnnd_ws_head h;
    size_t len = frame(f, RNND_WS_F32, 0xa1b2c3d4u, 2, RNND_WS_LAST | RNND_WS_IF_STEPS,
                       0x0102030405060708ull, 16);
    ck_assert_int_eq(parse(f, len, &h), 0);
    ck_assert_uint_eq(h.kind, RNND_WS_F32);
    ck_assert_uint_eq(h.seq, 0xa1b2c3d4u);
    ck_assert_uint_eq(h.n_steps, 2);
    ck_assert_int_eq(h.last_only, 1);
    ck_assert(h.if_steps == 0x0102030405060708ll);
    ck_assert_ptr_eq(h.payload, f + RNND_WS_HEAD);
    ck_assert_uint_eq(h.payload_len, 16);
    len = frame(f, RNND_WS_I32, 7, 4, 0, 99, 16);
    ck_assert_int_eq(parse(f, len, &h), 0);
    ck_assert(h.if_steps == -1); /* flag bit 1 clear: the field is not read */
    ck_assert_int_eq(h.last_only, 0);
}
END_TEST

START_TEST(test_payload_byte_order)
{
    /* 1.5f is 0x3fc00000, -2.0f is 0xc0000000; -3 is 0xfffffffd */
    const uint8_t fl[8] = {0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0};
    float v[2];
    rnnd_ws_get_f32(fl, 2, v);
    ck_assert(v[0] == 1.5f && v[1] == -2.0f);
    const uint8_t in[8] = {0xfd, 0xff, 0xff, 0xff, 0x01, 0x02, 0x00, 0x00};
    int64_t ids[2];
    rnnd_ws_get_i32(in, 2, ids);
    ck_assert(ids[0] == -3 && ids[1] == 0x201);
}
END_TEST

START_TEST(test_reply)
{
    const float out[3] = {1.5f, -2.0f, 0.0f};
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_ws_reply_put(&b, 0x100000002ull, 1, 3, out);
    ck_assert(!rnnd_buf_failed(&b));
    size_t len;
    char *r = rnnd_buf_steal(&b, &len);
    ck_assert_uint_eq(len, RNND_WS_HEAD + 12);
    rnnd_ws_reply_seq(r, len, 0x01020304u);
    const uint8_t want[RNND_WS_HEAD + 12] = {
        'R',  'W',  1,    3,    0x04, 0x03, 0x02, 0x01, /* magic, version, kind, seq */
        1,    0,    0,    0,    3,    0,    0,    0,    /* rows, width */
        2,    0,    0,    0,    1,    0,    0,    0,    /* steps */
        0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0, 0, 0, 0};
    ck_assert_int_eq(memcmp(r, want, sizeof want), 0);
    free(r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ws_codec");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_layouts_refused);
    tcase_add_test(tc, test_fields_refused);
    tcase_add_test(tc, test_fields_read);
    tcase_add_test(tc, test_payload_byte_order);
    tcase_add_test(tc, test_reply);
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
