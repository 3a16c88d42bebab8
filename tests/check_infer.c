/* The infer contract: the response buffer (float round trip, escaping), STATE JSON (round trip
 * and every refusal), request parsing (each malformed request refused with the right status
 * and a message naming the place), and parse -> run -> encode on random models checked
 * against rnnd_net_forward() and rnnd_net_step(), including a sequence split in two halves
 * through initial_state. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "rnnd/buf.h"
#include "rnnd/infer.h"
#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/state_json.h"
#include "rnnd/status.h"
#include "testutil.h"
#include "testcheck.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_u32(void) { return tu_xorshift64star(&rng_state); }

static float rng_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rng_u32() >> 8) / 16777216.0f;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static char *model_path(const char *name)
{
    static char buf[4][4096];
    static int next;
    const char *dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/check_infer_%ld_%s.rnnd", dir, (long)getpid(), name);
    return p;
}

/* A net over a random model for ARCH (the model file is removed once loaded). */
static rnnd_net *open_net(const char *arch, unsigned seed, const char *name)
{
    char err[512] = "";
    const char *path = model_path(name);
    rnnd_model *m = NULL;
    rnnd_net *net = NULL;

    ck_assert_int_eq(tu_write_random_model(path, arch, seed), 0);
    int rc = rnnd_model_open(path, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "model_open: %s", err);
    unlink(path);
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    ck_assert_msg(k != NULL, "kernels: %s", err);
    rc = rnnd_net_new(m, k, &net, err, sizeof err);
    ck_assert_msg(rc == 0, "net_new: %s", err);
    rnnd_model_unref(m);
    return net;
}

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(v != NULL, "test JSON does not parse: %s: %s", jerr.text, text);
    return v;
}

/* Parse REQ_TEXT; returns the status, the message in ERR. */
static int parse_text(const rnnd_net *net, const char *req_text, const rnnd_infer_limits *lim,
                      rnnd_infer_req **out, char *err, size_t errlen)
{
    json_t *body = load(req_text);
    err[0] = '\0';
    int rc = rnnd_infer_parse(net, body, lim, out, err, errlen);
    json_decref(body);
    return rc;
}

/* parse -> run -> encode for BODY; returns the parsed response. */
static json_t *infer_json(const rnnd_net *net, json_t *body, const char *name)
{
    char err[512] = "";
    rnnd_infer_req *req = NULL;
    rnnd_buf out;

    int rc = rnnd_infer_parse(net, body, NULL, &req, err, sizeof err);
    ck_assert_msg(rc == 0, "parse: %s", err);
    rc = rnnd_infer_run(net, req, err, sizeof err);
    ck_assert_msg(rc == 0, "run: %s", err);
    rnnd_buf_init(&out);
    rnnd_infer_encode(net, req, name, &out);
    ck_assert(!rnnd_buf_failed(&out));
    json_t *resp = load(out.data);
    rnnd_buf_free(&out);
    rnnd_infer_req_free(req);
    return resp;
}

/* A float from a parsed JSON number, through the same route a client would take. */
static float jf(const json_t *v)
{
    ck_assert_msg(json_is_number(v), "expected a number, got type %d", (int)json_typeof(v));
    return (float)json_number_value(v);
}

/* ---- buf --------------------------------------------------------------------------------- */

static void check_float_round_trip(float v)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_float(&b, v);
    ck_assert(!rnnd_buf_failed(&b));
    ck_assert_uint_eq(strlen(b.data), b.len);
    char *end;
    float f = strtof(b.data, &end);
    ck_assert_msg(*end == '\0' && bits(f) == bits(v), "strtof(\"%s\") != %a", b.data, (double)v);
    double d = strtod(b.data, &end);
    ck_assert_msg(bits((float)d) == bits(v), "(float)strtod(\"%s\") != %a", b.data, (double)v);
    /* And through a JSON parser, the way clients and initial_state read it. */
    json_t *j = load(b.data);
    float g;
    char err[128];
    ck_assert_int_eq(rnnd_json_float(j, &g, "x", err, sizeof err), 0);
    ck_assert_msg(bits(g) == bits(v), "JSON \"%s\" != %a", b.data, (double)v);
    json_decref(j);
    rnnd_buf_free(&b);
}

START_TEST(buf_float_round_trip)
{
    static const float special[] = {
        0.0f,        1.0f,    -1.0f,    0.1f,    -0.1f,    1e-7f,       3.14159265f, 16777216.0f,
        16777217.0f, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN, FLT_EPSILON, 1e38f,       123456789.0f,
    };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        check_float_round_trip(special[i]);
    check_float_round_trip(-0.0f);
    check_float_round_trip(from_bits(0x00000001u)); /* smallest denormal */
    check_float_round_trip(from_bits(0x807fffffu)); /* largest negative denormal */
    check_float_round_trip(from_bits(0x7f7ffffeu)); /* just below FLT_MAX */
    /* Random bit patterns cover every exponent, denormals included. */
    for (int i = 0; i < 40000; i++) {
        float v = from_bits(rng_u32());
        if (isfinite(v))
            check_float_round_trip(v);
    }
    /* And many ordinary values in the range weights and activations live in. */
    for (int i = 0; i < 10000; i++)
        check_float_round_trip(rng_uniform(-4.0f, 4.0f));
}
END_TEST

START_TEST(buf_float_nonfinite)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_float(&b, 1.5f);
    ck_assert(!rnnd_buf_failed(&b));
    ck_assert_int_eq(b.nonfinite, 0);
    rnnd_buf_float(&b, NAN);
    ck_assert(rnnd_buf_failed(&b));
    ck_assert_int_eq(b.nonfinite, 1);
    ck_assert_str_eq(b.data, "1.5null");
    rnnd_buf_free(&b);

    rnnd_buf_init(&b);
    float v[3] = {1.0f, INFINITY, 2.0f};
    rnnd_buf_floats(&b, v, 3);
    ck_assert(rnnd_buf_failed(&b));
    ck_assert_int_eq(b.nonfinite, 1);
    rnnd_buf_free(&b);
    ck_assert_int_eq(b.failed, 0);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(buf_floats_and_printf)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    float v[4] = {1.0f, -2.5f, 0.125f, 1e20f};
    rnnd_buf_floats(&b, v, 4);
    /* shortest text that reads back (1e20f is 100000002004087734272) */
    ck_assert_str_eq(b.data, "[1,-2.5,0.125,1e+20]");
    rnnd_buf_free(&b);

    rnnd_buf_floats(&b, v, 0);
    ck_assert_str_eq(b.data, "[]");
    rnnd_buf_free(&b);

    /* printf longer than any internal scratch, and many small appends (growth). */
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rnnd_buf_printf(&b, "<%s|%d>", big, 42);
    ck_assert_uint_eq(b.len, sizeof big - 1 + 5);
    ck_assert_int_eq(b.data[0], '<');
    ck_assert_str_eq(b.data + b.len - 4, "|42>");
    for (int i = 0; i < 10000; i++)
        rnnd_buf_puts(&b, "ab");
    ck_assert_uint_eq(b.len, sizeof big - 1 + 5 + 20000);
    ck_assert_uint_eq(strlen(b.data), b.len);

    size_t len = 0;
    char *s = rnnd_buf_steal(&b, &len);
    ck_assert_uint_eq(len, sizeof big - 1 + 5 + 20000);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    free(s);

    /* Stealing an empty buffer gives an empty string, not NULL. */
    s = rnnd_buf_steal(&b, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(len, 0);
    free(s);
}
END_TEST

static void check_string_round_trip(const char *s)
{
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_json_string(&b, s);
    ck_assert(!rnnd_buf_failed(&b));
    json_t *j = load(b.data);
    ck_assert(json_is_string(j));
    ck_assert_msg(!strcmp(json_string_value(j), s), "escaped %s", b.data);
    json_decref(j);
    rnnd_buf_free(&b);
}

START_TEST(buf_json_string)
{
    check_string_round_trip("");
    check_string_round_trip("plain");
    check_string_round_trip("quote \" backslash \\ slash /");
    check_string_round_trip("\b\f\n\r\t and \x01\x1f\x7f");
    check_string_round_trip("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"); /* é € 😀 */

    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_json_string(&b, "a\"b\\c\n\x01");
    ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    rnnd_buf_free(&b);

    /* Invalid UTF-8 (a cut sequence, a stray continuation byte, an overlong form, a
     * surrogate) still makes valid JSON, each bad byte as U+FFFD. */
    static const char *const bad[] = {"ab\xc3",           "\x80x",   "\xc0\xaf", "\xed\xa0\x80",
                                      "\xf5\x80\x80\x80", "\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rnnd_buf_init(&b);
        rnnd_buf_json_string(&b, bad[i]);
        json_error_t jerr;
        json_t *j = json_loads(b.data, JSON_DECODE_ANY, &jerr);
        ck_assert_msg(j != NULL, "bad[%zu] gave invalid JSON %s: %s", i, b.data, jerr.text);
        ck_assert_ptr_nonnull(strstr(json_string_value(j), "\xef\xbf\xbd"));
        json_decref(j);
        rnnd_buf_free(&b);
    }
}
END_TEST

/* ---- float parsing ---------------------------------------------------------------------- */

START_TEST(json_float_bounds)
{
    char err[256];
    float f;
    static const struct {
        const char *text;
        int ok;
        float want;
        const char *msg;
    } cases[] = {
        {"3.40282347e+38", 1, FLT_MAX, NULL}, /* FLT_MAX as %.9g prints it */
        {"-3.40282347e+38", 1, -FLT_MAX, NULL},
        {"3.40282355e+38", 1, FLT_MAX, NULL}, /* rounds down to FLT_MAX */
        {"3.4028236e+38", 0, 0, "does not fit in a 32-bit float"},
        {"-1e39", 0, 0, "does not fit in a 32-bit float"},
        {"1e300", 0, 0, "does not fit in a 32-bit float"},
        {"1e-50", 1, 0.0f, NULL}, /* underflow is fine: rounds to 0 */
        {"7", 1, 7.0f, NULL},
        {"-0.0", 1, -0.0f, NULL},
        {"true", 0, 0, "expected a number, got true"},
        {"false", 0, 0, "expected a number, got false"},
        {"null", 0, 0, "expected a number, got null"},
        {"\"1\"", 0, 0, "expected a number, got a string"},
        {"[1]", 0, 0, "expected a number, got a list"},
        {"{}", 0, 0, "expected a number, got an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = load(cases[i].text);
        int rc = rnnd_json_float(v, &f, "p.q[3]", err, sizeof err);
        if (cases[i].ok) {
            ck_assert_msg(rc == 0, "%s: %s", cases[i].text, err);
            ck_assert_msg(bits(f) == bits(cases[i].want), "%s gave %a", cases[i].text, (double)f);
        } else {
            ck_assert_int_eq(rc, RNND_ERR_INVALID);
            ck_assert_msg(!strncmp(err, "p.q[3]: ", 8) && strstr(err, cases[i].msg),
                          "%s: message \"%s\"", cases[i].text, err);
        }
        json_decref(v);
    }
    /* A value built in memory (not parsed) can be non-finite: refused too. */
    json_t *v = json_real(1.0);
    ck_assert_int_eq(json_real_set(v, INFINITY), -1); /* jansson itself refuses */
    json_decref(v);
}
END_TEST

/* ---- STATE JSON --------------------------------------------------------------------------- */

/* Layer 0: gru forward out 5; layer 1: lstm bidirectional hidden 4; layer 2: rnn reverse 3;
 * layer 3: lstm forward hidden 6 projected to 2. */
static const char *const state_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":3},\"layers\":["
    "{\"type\":\"gru\",\"hidden_size\":5,\"direction\":\"forward\"},"
    "{\"type\":\"lstm\",\"hidden_size\":4,\"direction\":\"bidirectional\"},"
    "{\"type\":\"rnn\",\"hidden_size\":3,\"direction\":\"reverse\"},"
    "{\"type\":\"lstm\",\"hidden_size\":6,\"direction\":\"forward\",\"proj_size\":2}]}";

/* The state layout of rnn.h, written out by hand for state_arch: per layer, per direction,
 * h [out_dim] then (lstm) c [hidden]. */
static const struct {
    int layer, dirs, h, c;
} state_layout[] = {
    {0, 1, 5, 0},
    {1, 2, 4, 4},
    {2, 1, 3, 0},
    {3, 1, 2, 6},
};
#define STATE_FLOATS (5 + 2 * (4 + 4) + 3 + (2 + 6))

START_TEST(state_round_trip)
{
    rnnd_net *net = open_net(state_arch, 11, "state");
    const rnnd_model *m = rnnd_net_model(net);
    ck_assert_uint_eq(rnnd_model_state_floats(m), STATE_FLOATS);

    float src[STATE_FLOATS], dst[STATE_FLOATS];
    for (int i = 0; i < STATE_FLOATS; i++)
        src[i] = from_bits(rng_u32());
    for (int i = 0; i < STATE_FLOATS; i++)
        if (!isfinite(src[i]))
            src[i] = -0.0f;
    src[0] = from_bits(1); /* a denormal */

    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_state_write(m, src, &b);
    ck_assert(!rnnd_buf_failed(&b));
    json_t *st = load(b.data);

    /* The JSON shape follows the documented layout, element by element. */
    json_t *layers = json_object_get(st, "layers");
    ck_assert_uint_eq(json_array_size(layers), 4);
    size_t off = 0;
    for (int l = 0; l < 4; l++) {
        json_t *layer = json_array_get(layers, (size_t)l);
        json_t *h = json_object_get(layer, "h"), *c = json_object_get(layer, "c");
        ck_assert_uint_eq(json_array_size(h), (size_t)state_layout[l].dirs);
        ck_assert(state_layout[l].c ? c != NULL : c == NULL);
        ck_assert_uint_eq(json_object_size(layer), state_layout[l].c ? 2 : 1);
        for (int d = 0; d < state_layout[l].dirs; d++) {
            json_t *hd = json_array_get(h, (size_t)d);
            ck_assert_uint_eq(json_array_size(hd), (size_t)state_layout[l].h);
            for (int i = 0; i < state_layout[l].h; i++)
                ck_assert_uint_eq(bits(jf(json_array_get(hd, (size_t)i))), bits(src[off++]));
            if (state_layout[l].c) {
                json_t *cd = json_array_get(c, (size_t)d);
                ck_assert_uint_eq(json_array_size(cd), (size_t)state_layout[l].c);
                for (int i = 0; i < state_layout[l].c; i++)
                    ck_assert_uint_eq(bits(jf(json_array_get(cd, (size_t)i))), bits(src[off++]));
            }
        }
    }
    ck_assert_uint_eq(off, STATE_FLOATS);

    char err[256] = "";
    memset(dst, 0xff, sizeof dst);
    int rc = rnnd_state_parse(m, st, dst, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    for (int i = 0; i < STATE_FLOATS; i++)
        ck_assert_uint_eq(bits(dst[i]), bits(src[i]));

    json_decref(st);
    rnnd_buf_free(&b);
    rnnd_net_free(net);
}
END_TEST

START_TEST(state_errors)
{
    rnnd_net *net = open_net(state_arch, 12, "state_err");
    const rnnd_model *m = rnnd_net_model(net);
    float dst[STATE_FLOATS];
    char err[256];

#define H5 "[1,2,3,4,5]"
#define V4 "[1,2,3,4]"
#define L0 "{\"h\":[" H5 "]}"
#define L1 "{\"h\":[" V4 "," V4 "],\"c\":[" V4 "," V4 "]}"
#define L2 "{\"h\":[[1,2,3]]}"
#define L3 "{\"h\":[[1,2]],\"c\":[[1,2,3,4,5,6]]}"
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"[]", "S: expected a state object {\"layers\": [...]}, got a list"},
        {"{\"layers\":[],\"x\":1}", "S: unknown field \"x\""},
        {"{}", "S: missing \"layers\""},
        {"{\"layers\":{}}", "S.layers: expected a list of 4 layers, got an object"},
        {"{\"layers\":[" L0 "," L1 "," L2 "]}", "S.layers: expected 4 layers, got 3"},
        {"{\"layers\":[" L0 ",7," L2 "," L3 "]}", "S.layers[1]: expected an object"},
        {"{\"layers\":[{\"h\":[" H5 "],\"z\":0}," L1 "," L2 "," L3 "]}",
         "S.layers[0]: unknown field \"z\""},
        {"{\"layers\":[{\"h\":[" H5 "],\"c\":[" H5 "]}," L1 "," L2 "," L3 "]}",
         "S.layers[0]: \"c\" is only for lstm and slstm layers, this one is gru"},
        {"{\"layers\":[{\"h\":[" H5 "],\"n\":[" H5 "]}," L1 "," L2 "," L3 "]}",
         "S.layers[0]: \"n\" is only for slstm layers, this one is gru"},
        {"{\"layers\":[{}," L1 "," L2 "," L3 "]}", "S.layers[0]: missing \"h\""},
        {"{\"layers\":[{\"h\":[7]}," L1 "," L2 "," L3 "]}",
         "S.layers[0].h[0]: expected a list of 5 numbers, got an integer"},
        {"{\"layers\":[{\"h\":" H5 "}," L1 "," L2 "," L3 "]}",
         "S.layers[0].h: expected 1 direction(s), got 5"},
        {"{\"layers\":[{\"h\":\"x\"}," L1 "," L2 "," L3 "]}",
         "S.layers[0].h: expected a list of 1 direction(s), got a string"},
        {"{\"layers\":[" L0 ",{\"h\":[" V4 "],\"c\":[" V4 "," V4 "]}," L2 "," L3 "]}",
         "S.layers[1].h: expected 2 direction(s), got 1"},
        {"{\"layers\":[" L0 ",{\"h\":[" V4 ",[1,2,3]],\"c\":[" V4 "," V4 "]}," L2 "," L3 "]}",
         "S.layers[1].h[1]: expected a list of 4 numbers, got 3"},
        {"{\"layers\":[" L0 ",{\"h\":[" V4 "," V4 "]}," L2 "," L3 "]}",
         "S.layers[1]: missing \"c\""},
        {"{\"layers\":[" L0 ",{\"h\":[" V4 "," V4 "],\"c\":[" V4 ",[1,2,true,4]]}," L2 "," L3 "]}",
         "S.layers[1].c[1][2]: expected a number, got true"},
        {"{\"layers\":[" L0 "," L1 ",{\"h\":[[1,\"2\",3]]}," L3 "]}",
         "S.layers[2].h[0][1]: expected a number, got a string"},
        {"{\"layers\":[" L0 "," L1 ",{\"h\":[[1,2,null]]}," L3 "]}",
         "S.layers[2].h[0][2]: expected a number, got null"},
        {"{\"layers\":[" L0 "," L1 "," L2 ",{\"h\":[[1,2]],\"c\":[[1,2,3,4,5,1e39]]}]}",
         "S.layers[3].c[0][5]: 1e+39 does not fit in a 32-bit float"},
        {"{\"layers\":[" L0 "," L1 "," L2 ",{\"h\":[[1,2,3,4,5,6]],\"c\":[[1,2]]}]}",
         "S.layers[3].h[0]: expected a list of 2 numbers, got 6"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = load(cases[i].text);
        err[0] = '\0';
        int rc = rnnd_state_parse_at(m, v, dst, "S", err, sizeof err);
        ck_assert_msg(rc == RNND_ERR_INVALID, "case %zu accepted", i);
        ck_assert_msg(strstr(err, cases[i].msg) == err, "case %zu: got \"%s\", want \"%s\"", i, err,
                      cases[i].msg);
        json_decref(v);
    }
    /* The valid one among them parses, and the default path name is "state". */
    json_t *v = load("{\"layers\":[" L0 "," L1 "," L2 "," L3 "]}");
    ck_assert_int_eq(rnnd_state_parse(m, v, dst, err, sizeof err), 0);
    ck_assert(dst[0] == 1.0f && dst[4] == 5.0f && dst[5] == 1.0f && dst[STATE_FLOATS - 1] == 6);
    json_decref(v);
    v = load("[]");
    ck_assert_int_eq(rnnd_state_parse(m, v, dst, err, sizeof err), RNND_ERR_INVALID);
    ck_assert_msg(!strncmp(err, "state: ", 7), "%s", err);
    json_decref(v);
    rnnd_net_free(net);
}
END_TEST

/* ---- request parsing ---------------------------------------------------------------------- */

/* Vectors of 4 -> gru 8 -> lstm 6 bidirectional (no head). */
static const char *const vec_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":4},\"layers\":["
    "{\"type\":\"gru\",\"hidden_size\":8,\"direction\":\"forward\"},"
    "{\"type\":\"lstm\",\"hidden_size\":6,\"direction\":\"bidirectional\"}]}";
/* Tokens of 30 ids -> rnn 7 -> head 30. */
static const char *const tok_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":30,"
    "\"embedding_dim\":5},\"layers\":["
    "{\"type\":\"rnn\",\"hidden_size\":7,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":30,\"in_dim\":7,\"norm\":\"none\"}}";

/* Vectors of size 1 -> rnn 3. */
static const char *const one_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":1},\"layers\":["
    "{\"type\":\"rnn\",\"hidden_size\":3,\"direction\":\"forward\"}]}";

#define STEP "[1,2,3,4]"
#define VST "{\"h\":[[1,2,3,4,5,6,7,8]]}"
#define LST6 "[1,2,3,4,5,6]"
#define LST "{\"h\":[" LST6 "," LST6 "],\"c\":[" LST6 "," LST6 "]}"
#define GOOD_STATE "{\"layers\":[" VST "," LST "]}"

START_TEST(parse_errors)
{
    rnnd_net *vec = open_net(vec_arch, 21, "pv");
    rnnd_net *tok = open_net(tok_arch, 22, "pt");
    rnnd_net *one = open_net(one_arch, 23, "p1");
    rnnd_net *nets[] = {vec, tok, one};
    rnnd_infer_limits lim = {.max_sequences = 3, .max_steps = 4, .max_total_steps = 6};
    static const struct {
        int tok;     /* which model: 0 vec, 1 tok, 2 one */
        int limited; /* with lim */
        const char *req;
        int status;
        const char *msg; /* the message starts with this */
    } cases[] = {
        {0, 0, "[1]", RNND_ERR_INVALID, "the request must be a JSON object"},
        {0, 0, "\"x\"", RNND_ERR_INVALID, "the request must be a JSON object"},
        {0, 0, "{}", RNND_ERR_INVALID, "inputs: missing"},
        {0, 0, "{\"inputs\":5}", RNND_ERR_INVALID,
         "inputs: expected a list of sequences, got an integer"},
        {0, 0, "{\"inputs\":null}", RNND_ERR_INVALID,
         "inputs: expected a list of sequences, got null"},
        {0, 0, "{\"inputs\":[]}", RNND_ERR_INVALID, "inputs: expected at least one sequence"},
        {0, 0, "{\"inputs\":[[" STEP "],7]}", RNND_ERR_INVALID,
         "inputs[1]: expected a list of steps, got an integer"},
        {0, 0, "{\"inputs\":[[" STEP "],[]]}", RNND_ERR_INVALID,
         "inputs[1]: expected at least one step"},
        {0, 0, "{\"inputs\":[[" STEP "],[" STEP ",[1,2,3]]]}", RNND_ERR_INVALID,
         "inputs[1][1]: expected a list of 4 numbers, got 3"},
        {0, 0, "{\"inputs\":[[" STEP "," STEP ",[1,2,3,4,5]]]}", RNND_ERR_INVALID,
         "inputs[0][2]: expected a list of 4 numbers, got 5"},
        {0, 0, "{\"inputs\":[[[1,2,\"3\",4]]]}", RNND_ERR_INVALID,
         "inputs[0][0][2]: expected a number, got a string"},
        {0, 0, "{\"inputs\":[[[1,true,3,4]]]}", RNND_ERR_INVALID,
         "inputs[0][0][1]: expected a number, got true"},
        {0, 0, "{\"inputs\":[[" STEP ",[1,2,3,null]]]}", RNND_ERR_INVALID,
         "inputs[0][1][3]: expected a number, got null"},
        {0, 0, "{\"inputs\":[[[1e39,2,3,4]]]}", RNND_ERR_INVALID,
         "inputs[0][0][0]: 1e+39 does not fit in a 32-bit float"},
        {0, 0, "{\"inputs\":[[1,2]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected a list of 4 numbers, got an integer"},
        {0, 0, "{\"inputs\":[[" STEP ",{\"a\":1}]]}", RNND_ERR_INVALID,
         "inputs[0][1]: expected a list of 4 numbers, got an object"},
        {1, 0, "{\"inputs\":[[1,2,99]]}", RNND_ERR_INVALID,
         "inputs[0][2]: token id 99 out of range [0, 30)"},
        {1, 0, "{\"inputs\":[[0],[1,2,3,30]]}", RNND_ERR_INVALID,
         "inputs[1][3]: token id 30 out of range [0, 30)"},
        {1, 0, "{\"inputs\":[[-1]]}", RNND_ERR_INVALID,
         "inputs[0][0]: token id -1 out of range [0, 30)"},
        {1, 0, "{\"inputs\":[[1,1.5]]}", RNND_ERR_INVALID,
         "inputs[0][1]: expected an integer token id in [0, 30), got 1.5"},
        {1, 0, "{\"inputs\":[[2.0]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected an integer token id in [0, 30), got 2.0: write token ids as "
         "plain integers (2), without a fraction or exponent"},
        {1, 0, "{\"inputs\":[[3,4e0]]}", RNND_ERR_INVALID,
         "inputs[0][1]: expected an integer token id in [0, 30), got 4.0: write token ids as "
         "plain integers (4), without a fraction or exponent"},
        {1, 0, "{\"inputs\":[[1e300]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected an integer token id in [0, 30), got 1.0000000000000001e+300"},
        /* a flat list sent to a model of input size 1 */
        {2, 0, "{\"inputs\":[[0.5,1.5]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected a list of 1 number, got a number: a model with input size 1 "
         "takes each step as [x], a sequence as [[x1], [x2], ...]"},
        {2, 0, "{\"inputs\":[[[0.5],2]]}", RNND_ERR_INVALID,
         "inputs[0][1]: expected a list of 1 number, got an integer: a model with input size 1 "
         "takes each step as [x], a sequence as [[x1], [x2], ...]"},
        {2, 0, "{\"inputs\":[[[0.5,1.5]]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected a list of 1 number, got 2"},
        {2, 0, "{\"inputs\":[[\"x\"]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected a list of 1 number, got a string"},
        {1, 0, "{\"inputs\":[[false]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected an integer token id in [0, 30), got false"},
        {1, 0, "{\"inputs\":[[[1]]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected an integer token id in [0, 30), got a list"},
        {1, 0, "{\"inputs\":[[\"a\"]]}", RNND_ERR_INVALID,
         "inputs[0][0]: expected an integer token id in [0, 30), got a string"},
        {1, 0, "{\"inputs\":[[99999999999999999]]}", RNND_ERR_INVALID,
         "inputs[0][0]: token id 99999999999999999 out of range [0, 30)"},
        {1, 0, "{\"inputs\":[[1]],\"foo\":1}", RNND_ERR_INVALID, "unknown field \"foo\""},
        {1, 0, "{\"inputs\":[[1]],\"foo\":1,\"bar\":2}", RNND_ERR_INVALID,
         "unknown fields \"foo\", \"bar\""},
        {1, 0, "{\"input\":[[1]]}", RNND_ERR_INVALID, "unknown field \"input\""},
        {1, 0, "{\"inputs\":[[1]],\"outputs\":\"first\"}", RNND_ERR_INVALID,
         "outputs: expected \"all\" or \"last\", got \"first\""},
        {1, 0, "{\"inputs\":[[1]],\"outputs\":1}", RNND_ERR_INVALID,
         "outputs: expected \"all\" or \"last\", got an integer"},
        {1, 0, "{\"inputs\":[[1]],\"outputs\":\"all\\u0000x\"}", RNND_ERR_INVALID,
         "outputs: expected \"all\" or \"last\""},
        {1, 0, "{\"inputs\":[[1]],\"return_state\":\"yes\"}", RNND_ERR_INVALID,
         "return_state: expected true or false, got a string"},
        {1, 0, "{\"inputs\":[[1]],\"return_state\":1}", RNND_ERR_INVALID,
         "return_state: expected true or false, got an integer"},
        {1, 0, "{\"inputs\":[[1]],\"initial_state\":{}}", RNND_ERR_INVALID,
         "initial_state: expected a list with one state (or null) per sequence, got an object"},
        {0, 0, "{\"inputs\":[[" STEP "],[" STEP "]],\"initial_state\":[null]}", RNND_ERR_INVALID,
         "initial_state: expected 2 entries (one per sequence), got 1"},
        {0, 0, "{\"inputs\":[[" STEP "],[" STEP "]],\"initial_state\":[null,3]}", RNND_ERR_INVALID,
         "initial_state[1]: expected a state object"},
        {0, 0,
         "{\"inputs\":[[" STEP "]],\"initial_state\":[{\"layers\":[{\"h\":[[1,2,3,4,5,"
         "6,7]]}," LST "]}]}",
         RNND_ERR_INVALID, "initial_state[0].layers[0].h[0]: expected a list of 8 numbers, got 7"},
        {0, 0,
         "{\"inputs\":[[" STEP "],[" STEP "]],\"initial_state\":[" GOOD_STATE ",{\"layers\":[" VST
         ",{\"h\":[" LST6 "," LST6 "]}]}]}",
         RNND_ERR_INVALID, "initial_state[1].layers[1]: missing \"c\""},
        {0, 0,
         "{\"inputs\":[[" STEP "]],\"initial_state\":[{\"layers\":[{\"h\":[[1,2,3,4,5,"
         "6,7,8]],\"c\":[]}," LST "]}]}",
         RNND_ERR_INVALID, "initial_state[0].layers[0]: \"c\" is only for lstm and slstm layers"},
        /* a digest, when given, is the model's: checked before the states' shapes */
        {0, 0, "{\"inputs\":[[" STEP "]],\"digest\":\"ab\",\"initial_state\":[3]}",
         RNND_ERR_CONFLICT,
         "digest: the state is for a model with digest ab, but this model's "
         "digest is "},
        {0, 0, "{\"inputs\":[[" STEP "]],\"digest\":null}", RNND_ERR_INVALID,
         "digest: expected the model digest (a string), got null"},
        /* limits */
        {1, 1, "{\"inputs\":[[1],[1],[1],[1]]}", RNND_ERR_LIMIT,
         "inputs: 4 sequences, more than max_sequences (3)"},
        {1, 1, "{\"inputs\":[[1],[1,2,3,4,5]]}", RNND_ERR_LIMIT,
         "inputs[1]: 5 steps, more than max_infer_steps (4) per sequence"},
        {1, 1, "{\"inputs\":[[1,2,3],[1,2],[1,2]]}", RNND_ERR_LIMIT,
         "inputs: 7 steps in all, more than max_infer_steps (6) per request"},
        /* a shape error is found before a limit on later sequences */
        {1, 1, "{\"inputs\":[3,[1,2,3,4,5]]}", RNND_ERR_INVALID,
         "inputs[0]: expected a list of steps, got an integer"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rnnd_infer_req *req = (rnnd_infer_req *)&err; /* must be reset to NULL */
        int rc = parse_text(nets[cases[i].tok], cases[i].req, cases[i].limited ? &lim : NULL, &req,
                            err, sizeof err);
        ck_assert_msg(rc == cases[i].status, "case %zu (%s): status %d, want %d (%s)", i,
                      cases[i].req, rc, cases[i].status, err);
        ck_assert_ptr_null(req);
        ck_assert_msg(!strncmp(err, cases[i].msg, strlen(cases[i].msg)),
                      "case %zu (%s): message \"%s\", want \"%s...\"", i, cases[i].req, err,
                      cases[i].msg);
    }

    /* Accepted variants, with the limits just met. */
    static const char *const ok[] = {
        "{\"inputs\":[[1,2,3,4],[1],[0]]}",
        "{\"inputs\":[[29]],\"outputs\":\"last\",\"return_state\":false}",
        "{\"inputs\":[[29]],\"outputs\":\"all\",\"return_state\":true,\"initial_state\":[null]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rnnd_infer_req *req = NULL;
        int rc = parse_text(tok, ok[i], &lim, &req, err, sizeof err);
        ck_assert_msg(rc == 0, "%s: %s", ok[i], err);
        rnnd_infer_req_free(req);
    }
    rnnd_infer_req *req = NULL;
    ck_assert_int_eq(parse_text(tok, ok[0], &lim, &req, err, sizeof err), 0);
    ck_assert_uint_eq(rnnd_infer_req_sequences(req), 3);
    ck_assert_uint_eq(rnnd_infer_req_steps(req), 6);
    rnnd_infer_req_free(req);
    rnnd_infer_req_free(NULL);
    /* steps of one number, each a list of one */
    req = NULL;
    ck_assert_int_eq(parse_text(one, "{\"inputs\":[[[0.5],[1.5],[2]]]}", NULL, &req, err,
                                sizeof err),
                     0);
    ck_assert_uint_eq(rnnd_infer_req_steps(req), 3);
    rnnd_infer_req_free(req);

    rnnd_net_free(vec);
    rnnd_net_free(tok);
    rnnd_net_free(one);
}
END_TEST

/* Random JSON of every type and shape: parsing never crashes, leaks (under ASan) or accepts
 * something it should not, and every refusal carries a message. */
static json_t *random_json(int depth)
{
    switch (rng_u32() % (depth > 0 ? 9 : 6)) {
    case 0: return json_null();
    case 1: return json_boolean(rng_u32() & 1);
    case 2: return json_integer((json_int_t)(rng_u32() % 40) - 5);
    case 3: return json_real(rng_uniform(-3, 3));
    case 4: return json_string(rng_u32() & 1 ? "last" : "all");
    case 5: return json_real((rng_u32() & 1 ? 1e39 : 1.5));
    default: {
        int n = (int)(rng_u32() % 5);
        if (rng_u32() % 3 == 0) {
            static const char *const keys[] = {
                "inputs", "outputs", "return_state", "initial_state", "layers", "h", "c", "x"};
            json_t *o = json_object();
            for (int i = 0; i < n; i++)
                json_object_set_new(o, keys[rng_u32() % 8], random_json(depth - 1));
            return o;
        }
        json_t *a = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(a, random_json(depth - 1));
        return a;
    }
    }
}

/* A valid request for NET (2 sequences of up to 3 steps, maybe with options and an
 * initial_state of zeros written by rnnd_state_write()). */
static json_t *valid_request(const rnnd_net *net)
{
    const rnnd_model *m = rnnd_net_model(net);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    json_t *body = json_object();
    json_t *inputs = json_array();
    size_t B = 1 + rng_u32() % 2;
    for (size_t b = 0; b < B; b++) {
        json_t *seq = json_array();
        size_t n = 1 + rng_u32() % 3;
        for (size_t t = 0; t < n; t++) {
            if (s->input_kind == RNND_INPUT_TOKENS) {
                json_array_append_new(seq, json_integer(rng_u32() % (uint32_t)s->vocab_size));
            } else {
                json_t *step = json_array();
                for (int i = 0; i < s->input_dim; i++)
                    json_array_append_new(step, json_real(rng_uniform(-1, 1)));
                json_array_append_new(seq, step);
            }
        }
        json_array_append_new(inputs, seq);
    }
    json_object_set_new(body, "inputs", inputs);
    if (rng_u32() & 1)
        json_object_set_new(body, "outputs", json_string(rng_u32() & 1 ? "all" : "last"));
    if (rng_u32() & 1)
        json_object_set_new(body, "return_state", json_boolean(rng_u32() & 1));
    if (rng_u32() & 1) {
        size_t S = rnnd_model_state_floats(m);
        float *zero = calloc(S, sizeof(float));
        rnnd_buf b;
        rnnd_buf_init(&b);
        rnnd_state_write(m, zero, &b);
        json_t *init = json_array();
        for (size_t i = 0; i < B; i++)
            json_array_append_new(init, i % 2 ? json_null() : load(b.data));
        json_object_set_new(body, "initial_state", init);
        rnnd_buf_free(&b);
        free(zero);
    }
    return body;
}

/* Replace one randomly chosen value somewhere inside V (a container) with junk, or add a
 * member. Returns 1 if something changed. */
static int mutate(json_t *v)
{
    size_t n = json_is_array(v) ? json_array_size(v) : json_object_size(v);
    if (json_is_object(v) && (!n || rng_u32() % 8 == 0)) {
        static const char *const keys[] = {"x", "h", "c", "layers", "inputs", "outputs"};
        json_object_set_new(v, keys[rng_u32() % 6], random_json(2));
        return 1;
    }
    if (!n)
        return 0;
    size_t i = rng_u32() % n;
    json_t *child;
    const char *key = NULL;
    if (json_is_array(v)) {
        child = json_array_get(v, i);
    } else {
        void *it = json_object_iter(v);
        for (size_t k = 0; k < i; k++)
            it = json_object_iter_next(v, it);
        key = json_object_iter_key(it);
        child = json_object_iter_value(it);
    }
    if ((json_is_array(child) || json_is_object(child)) && rng_u32() % 4)
        return mutate(child);
    if (json_is_array(v)) {
        if (rng_u32() % 4 == 0)
            json_array_remove(v, i);
        else
            json_array_set_new(v, i, random_json(2));
    } else {
        json_object_set_new(v, key, random_json(2));
    }
    return 1;
}

START_TEST(parse_random_json)
{
    rnnd_net *vec = open_net(vec_arch, 31, "rv");
    rnnd_net *tok = open_net(tok_arch, 32, "rt");
    rnnd_infer_limits lim = {.max_sequences = 4, .max_steps = 4, .max_total_steps = 8};
    int accepted = 0, refused = 0;
    char err[512];
    for (int i = 0; i < 6000; i++) {
        rnnd_net *net = i % 2 ? tok : vec;
        json_t *body;
        if (i % 3 == 0) {
            /* Anything at all. */
            body = json_object();
            json_object_set_new(body, "inputs", random_json(3));
            if (rng_u32() % 4 == 0)
                json_object_set_new(body, "initial_state", random_json(4));
        } else {
            /* Valid, then (mostly) broken in one random place. */
            body = valid_request(net);
            if (i % 3 == 1)
                mutate(body);
        }
        rnnd_infer_req *req = NULL;
        err[0] = '\0';
        int rc = rnnd_infer_parse(net, body, i % 4 < 2 ? &lim : NULL, &req, err, sizeof err);
        ck_assert(rc == 0 || rc == RNND_ERR_INVALID || rc == RNND_ERR_LIMIT);
        if (rc) {
            ck_assert_ptr_null(req);
            ck_assert(err[0] != '\0');
            refused++;
            json_decref(body);
            continue;
        }
        accepted++;
        rc = rnnd_infer_run(net, req, err, sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
        rnnd_buf out;
        rnnd_buf_init(&out);
        rnnd_infer_encode(net, req, "m", &out);
        ck_assert(!rnnd_buf_failed(&out));
        json_decref(load(out.data));
        rnnd_buf_free(&out);
        rnnd_infer_req_free(req);
        json_decref(body);
    }
    /* Both branches are exercised in earnest. */
    ck_assert_int_gt(accepted, 1000);
    ck_assert_int_gt(refused, 1000);
    rnnd_net_free(vec);
    rnnd_net_free(tok);
}
END_TEST

START_TEST(load_json_errors)
{
    json_t *v = NULL;
    char err[256];
    ck_assert_int_eq(rnnd_infer_load("{\"inputs\": [[1,2]", 17, &v, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_ptr_null(v);
    ck_assert_msg(!strncmp(err, "line 1, column ", 15), "%s", err);
    ck_assert_int_eq(rnnd_infer_load("{\"a\":1,\n \"a\":2}", 15, &v, err, sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_msg(!strncmp(err, "line 2, column ", 15) && strstr(err, "duplicate"), "%s", err);
    ck_assert_int_eq(rnnd_infer_load("", 0, &v, err, sizeof err), RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_infer_load("{} x", 4, &v, err, sizeof err), RNND_ERR_INVALID);
    /* LEN bounds the text: what follows is not read. */
    ck_assert_int_eq(rnnd_infer_load("{\"a\":1}garbage", 7, &v, err, sizeof err), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
}
END_TEST

/* ---- run and encode ------------------------------------------------------------------------ */

/* A batch of random sequences for NET as a request body, and the same inputs as flat arrays
 * for calling rnnd_net_forward() directly. */
typedef struct batch {
    size_t B, lens[8];
    int32_t tok[8][40];
    float vec[8][40 * 16];
} batch;

static json_t *random_batch(const rnnd_model_spec *s, size_t B, batch *bt)
{
    json_t *inputs = json_array();
    bt->B = B;
    for (size_t b = 0; b < B; b++) {
        size_t n = 1 + rng_u32() % 40;
        json_t *seq = json_array();
        bt->lens[b] = n;
        for (size_t t = 0; t < n; t++) {
            if (s->input_kind == RNND_INPUT_TOKENS) {
                bt->tok[b][t] = (int32_t)(rng_u32() % (uint32_t)s->vocab_size);
                json_array_append_new(seq, json_integer(bt->tok[b][t]));
            } else {
                json_t *step = json_array();
                for (int i = 0; i < s->input_dim; i++) {
                    float v = rng_uniform(-2, 2);
                    bt->vec[b][t * (size_t)s->input_dim + (size_t)i] = v;
                    json_array_append_new(step, json_real(v));
                }
                json_array_append_new(seq, step);
            }
        }
        json_array_append_new(inputs, seq);
    }
    json_t *body = json_object();
    json_object_set_new(body, "inputs", inputs);
    return body;
}

static const char *const run_archs[] = {
    tok_arch,
    vec_arch,
    /* tokens, 2-layer LSTM with peepholes, log-softmax head */
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":17,"
    "\"embedding_dim\":6},\"layers\":["
    "{\"type\":\"lstm\",\"hidden_size\":9,\"direction\":\"forward\",\"peepholes\":true},"
    "{\"type\":\"lstm\",\"hidden_size\":11,\"direction\":\"forward\"}],"
    "\"head\":{\"out_dim\":17,\"in_dim\":11,\"norm\":\"log_softmax\"}}",
    /* vectors, GRU + Jordan, no head */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":16},\"layers\":["
    "{\"type\":\"gru\",\"hidden_size\":13,\"direction\":\"forward\",\"linear_before_reset\":1},"
    "{\"type\":\"jordan\",\"hidden_size\":10,\"direction\":\"forward\",\"output_size\":5}]}",
    /* vectors, reverse RNN with a softmax head */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":3},\"layers\":["
    "{\"type\":\"rnn\",\"hidden_size\":12,\"direction\":\"reverse\"}],"
    "\"head\":{\"out_dim\":4,\"in_dim\":12,\"norm\":\"softmax\"}}",
    /* vectors, bidirectional GRU, an MLP head with layernorm and gelu */
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":3},\"layers\":["
    "{\"type\":\"gru\",\"hidden_size\":5,\"direction\":\"bidirectional\"}],"
    "\"head\":{\"out_dim\":3,\"in_dim\":10,\"norm\":\"log_softmax\",\"layers\":["
    "{\"op\":\"layernorm\"},{\"op\":\"linear\",\"in_dim\":10,\"out_dim\":7},{\"op\":\"gelu\"},"
    "{\"op\":\"linear\",\"in_dim\":7,\"out_dim\":3}]}}",
};
#define N_RUN_ARCHS (sizeof run_archs / sizeof run_archs[0])

/* Every output and state of the JSON response equals, bit for bit, what rnnd_net_forward()
 * computes for the same inputs; "last" is the last step of "all". */
START_TEST(run_matches_forward)
{
    rnnd_net *net = open_net(run_archs[_i], 40 + (unsigned)_i, "run");
    const rnnd_model *m = rnnd_net_model(net);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    size_t od = (size_t)rnnd_net_output_dim(net), S = rnnd_net_state_floats(net);
    ck_assert_int_eq((int)od, rnnd_model_output_dim(m));
    ck_assert_int_eq((int)od,
                     s->has_head ? s->head_out
                                 : s->layers[s->n_layers - 1].out_dim *
                             s->layers[s->n_layers - 1].num_directions);
    static batch bt;
    json_t *body = random_batch(s, 5, &bt);
    json_object_set_new(body, "return_state", json_true());

    /* The reference: rnnd_net_forward() called directly. */
    const int32_t *toks[8];
    const float *vecs[8];
    float *outs[8], *finals[8];
    for (size_t b = 0; b < bt.B; b++) {
        toks[b] = bt.tok[b];
        vecs[b] = bt.vec[b];
        outs[b] = calloc(bt.lens[b] * od, sizeof(float));
        finals[b] = calloc(S, sizeof(float));
    }
    char err[256];
    int tokens = s->input_kind == RNND_INPUT_TOKENS;
    int rc = rnnd_net_forward(net,
                              &(rnnd_seq_batch){bt.B, bt.lens, tokens ? toks : NULL,
                                                tokens ? NULL : vecs, NULL, outs, finals},
                              err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);

    json_t *resp = infer_json(net, body, "my \"model\"");
    ck_assert_str_eq(json_string_value(json_object_get(resp, "model")), "my \"model\"");
    ck_assert_uint_eq(json_object_size(resp), 4);
    /* the states come with the digest that lets them be given back anywhere */
    ck_assert_str_eq(json_string_value(json_object_get(resp, "digest")),
                     rnnd_model_digest(rnnd_net_model(net)));
    json_t *outputs = json_object_get(resp, "outputs"), *states = json_object_get(resp, "states");
    ck_assert_uint_eq(json_array_size(outputs), bt.B);
    ck_assert_uint_eq(json_array_size(states), bt.B);
    for (size_t b = 0; b < bt.B; b++) {
        json_t *seq = json_array_get(outputs, b);
        ck_assert_uint_eq(json_array_size(seq), bt.lens[b]);
        for (size_t t = 0; t < bt.lens[b]; t++) {
            json_t *row = json_array_get(seq, t);
            ck_assert_uint_eq(json_array_size(row), od);
            for (size_t j = 0; j < od; j++)
                ck_assert_uint_eq(bits(jf(json_array_get(row, j))), bits(outs[b][t * od + j]));
        }
        float st[512];
        ck_assert(S <= 512);
        rc = rnnd_state_parse(m, json_array_get(states, b), st, err, sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
        for (size_t j = 0; j < S; j++)
            ck_assert_uint_eq(bits(st[j]), bits(finals[b][j]));
    }
    json_decref(resp);

    /* "last", without states */
    json_object_set_new(body, "outputs", json_string("last"));
    json_object_set_new(body, "return_state", json_false());
    resp = infer_json(net, body, "m");
    ck_assert_uint_eq(json_object_size(resp), 2);
    outputs = json_object_get(resp, "outputs");
    ck_assert_uint_eq(json_array_size(outputs), bt.B);
    for (size_t b = 0; b < bt.B; b++) {
        json_t *row = json_array_get(outputs, b);
        ck_assert_uint_eq(json_array_size(row), od);
        for (size_t j = 0; j < od; j++)
            ck_assert_uint_eq(bits(jf(json_array_get(row, j))),
                              bits(outs[b][(bt.lens[b] - 1) * od + j]));
    }
    json_decref(resp);

    for (size_t b = 0; b < bt.B; b++) {
        free(outs[b]);
        free(finals[b]);
    }
    json_decref(body);
    rnnd_net_free(net);
}
END_TEST

/* A sequence run in two halves, the second starting from the state the first returned (as
 * JSON, the way a client would pass it back), gives the outputs of the whole, and the same
 * final state. Checked against the step path too, which is independent of the infer code. */
START_TEST(run_split_halves)
{
    /* forward-only archs of run_archs: 0 (tokens, head), 2 (tokens, LSTM), 3 (vectors) */
    static const int which[] = {0, 2, 3};
    rnnd_net *net = open_net(run_archs[which[_i]], 60 + (unsigned)_i, "split");
    const rnnd_model *m = rnnd_net_model(net);
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    ck_assert(rnnd_model_is_stateful(m));
    size_t od = (size_t)rnnd_net_output_dim(net), S = rnnd_net_state_floats(net);

    static batch bt;
    json_t *whole = random_batch(s, 3, &bt);
    json_object_set_new(whole, "return_state", json_true());
    json_t *inputs = json_object_get(whole, "inputs");
    /* Every sequence at least 2 steps so that both halves are non-empty. */
    for (size_t b = 0; b < bt.B; b++)
        if (bt.lens[b] < 2)
            json_array_append(json_array_get(inputs, b),
                              json_array_get(json_array_get(inputs, b), 0));
    json_t *r_whole = infer_json(net, whole, "m");

    json_t *first = json_object(), *second = json_object();
    json_t *in1 = json_array(), *in2 = json_array();
    size_t cut[8];
    for (size_t b = 0; b < bt.B; b++) {
        json_t *seq = json_array_get(inputs, b);
        size_t n = json_array_size(seq);
        cut[b] = 1 + rng_u32() % (n - 1);
        json_t *a = json_array(), *c = json_array();
        for (size_t t = 0; t < n; t++)
            json_array_append(t < cut[b] ? a : c, json_array_get(seq, t));
        json_array_append_new(in1, a);
        json_array_append_new(in2, c);
    }
    json_object_set_new(first, "inputs", in1);
    json_object_set_new(first, "return_state", json_true());
    json_t *r1 = infer_json(net, first, "m");
    json_object_set_new(second, "inputs", in2);
    json_object_set_new(second, "return_state", json_true());
    json_object_set(second, "initial_state", json_object_get(r1, "states"));
    json_t *r2 = infer_json(net, second, "m");

    /* The step path, fed one step at a time, from zeros. */
    rnnd_work *w = rnnd_work_new(net, 1);
    ck_assert_ptr_nonnull(w);
    float *state = calloc(S, sizeof(float)), *y = calloc(od, sizeof(float));
    char err[256];

    for (size_t b = 0; b < bt.B; b++) {
        json_t *seq = json_array_get(inputs, b);
        json_t *all = json_array_get(json_object_get(r_whole, "outputs"), b);
        json_t *o1 = json_array_get(json_object_get(r1, "outputs"), b);
        json_t *o2 = json_array_get(json_object_get(r2, "outputs"), b);
        ck_assert_uint_eq(json_array_size(o1) + json_array_size(o2), json_array_size(seq));
        memset(state, 0, S * sizeof(float));
        for (size_t t = 0; t < json_array_size(seq); t++) {
            json_t *x = json_array_get(seq, t);
            int32_t tokv = 0;
            float vecv[16];
            if (s->input_kind == RNND_INPUT_TOKENS)
                tokv = (int32_t)json_integer_value(x);
            else
                for (int i = 0; i < s->input_dim; i++)
                    vecv[i] = jf(json_array_get(x, (size_t)i));
            float *states[1] = {state};
            int rc = rnnd_net_step(net, w, 1, &tokv, vecv, states, y, err, sizeof err);
            ck_assert_msg(rc == 0, "%s", err);
            json_t *rw = json_array_get(all, t);
            json_t *rs = t < cut[b] ? json_array_get(o1, t) : json_array_get(o2, t - cut[b]);
            for (size_t j = 0; j < od; j++) {
                float a = jf(json_array_get(rw, j)), c = jf(json_array_get(rs, j));
                ck_assert_msg(fabsf(a - c) <= 1e-5f,
                              "seq %zu step %zu [%zu]: whole %.9g, "
                              "split %.9g",
                              b, t, j, (double)a, (double)c);
                ck_assert_msg(fabsf(a - y[j]) <= 1e-5f,
                              "seq %zu step %zu [%zu]: whole %.9g, "
                              "step path %.9g",
                              b, t, j, (double)a, (double)y[j]);
            }
        }
        /* Final states: the whole run's, the second half's, and the step path's agree. */
        float s_whole[512], s_split[512];
        ck_assert(S <= 512);
        ck_assert_int_eq(rnnd_state_parse(m, json_array_get(json_object_get(r_whole, "states"), b),
                                          s_whole, err, sizeof err),
                         0);
        ck_assert_int_eq(rnnd_state_parse(m, json_array_get(json_object_get(r2, "states"), b),
                                          s_split, err, sizeof err),
                         0);
        for (size_t j = 0; j < S; j++) {
            ck_assert(fabsf(s_whole[j] - s_split[j]) <= 1e-5f);
            ck_assert(fabsf(s_whole[j] - state[j]) <= 1e-5f);
        }
    }
    free(state);
    free(y);
    rnnd_work_free(w);
    json_decref(r_whole);
    json_decref(r1);
    json_decref(r2);
    json_decref(whole);
    json_decref(first);
    json_decref(second);
    rnnd_net_free(net);
}
END_TEST

/* initial_state with a null entry means zeros; a non-zero state changes the outputs. */
START_TEST(run_initial_state_null_and_nonzero)
{
    rnnd_net *net = open_net(vec_arch, 71, "init");
    char err[256];
    const char *zeros_state =
        "{\"layers\":[{\"h\":[[0,0,0,0,0,0,0,0]]},{\"h\":[[0,0,0,0,0,0],[0,0,0,0,0,0]],"
        "\"c\":[[0,0,0,0,0,0],[0,0,0,0,0,0]]}]}";
    char req[2048];
    snprintf(req, sizeof req,
             "{\"inputs\":[[" STEP "," STEP "],[" STEP "," STEP "],[" STEP "," STEP
             "]],\"initial_state\":[null,%s," GOOD_STATE "]}",
             zeros_state);
    json_t *body = load(req);
    json_t *resp = infer_json(net, body, "m");
    json_t *o = json_object_get(resp, "outputs");
    ck_assert(json_equal(json_array_get(o, 0), json_array_get(o, 1)));
    ck_assert(!json_equal(json_array_get(o, 0), json_array_get(o, 2)));
    (void)err;
    json_decref(resp);
    json_decref(body);
    rnnd_net_free(net);
}
END_TEST

/* Inputs that overflow inside the network are reported as numeric_error, not encoded. */
START_TEST(run_numeric_error)
{
    rnnd_net *net =
        open_net("{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":4},\"layers\":["
                 "{\"type\":\"rnn\",\"hidden_size\":8,\"direction\":\"forward\",\"activations\":[["
                 "{\"op\":\"Affine\",\"alpha\":3e38,\"beta\":3e38}]]}]}",
                 81, "numeric");
    char err[256] = "";
    rnnd_infer_req *req = NULL;
    int rc = parse_text(net, "{\"inputs\":[[[1,2,3,4]],[[100,-100,100,-100]]]}", NULL, &req, err,
                        sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    rc = rnnd_infer_run(net, req, err, sizeof err);
    ck_assert_int_eq(rc, RNND_ERR_NUMERIC);
    ck_assert_msg(!strncmp(err, "outputs[", 8) && strstr(err, "not finite"), "%s", err);
    /* Encoding a request that did not run does not pretend it did: a status, and nothing
     * written (the core has no error shape; each front end reports it in its own). */
    rnnd_buf out;
    rnnd_buf_init(&out);
    ck_assert_int_eq(rnnd_infer_encode(net, req, "m", &out), RNND_ERR_INTERNAL);
    ck_assert_uint_eq(out.len, 0);
    ck_assert(!rnnd_buf_failed(&out));
    rnnd_buf_free(&out);
    rnnd_infer_req_free(req);
    rnnd_net_free(net);
}
END_TEST

/* A pooled model answers one row per sequence (the shape of "outputs": "last"); pool "last"
 * gives exactly what the same weights without pooling give with "outputs": "last", whatever
 * the request's own "outputs" says, and the final states are unchanged. */
#define POOLED(pool) \
    "{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":2},\"layers\":[" \
    "{\"type\":\"gru\",\"hidden_size\":3}]" pool ",\"head\":{\"out_dim\":2,\"in_dim\":3," \
    "\"norm\":\"softmax\"}}"
START_TEST(run_pooled)
{
    rnnd_net *plain = open_net(POOLED(""), 17, "plain");
    rnnd_net *last = open_net(POOLED(",\"pool\":\"last\""), 17, "plast");
    rnnd_net *mean = open_net(POOLED(",\"pool\":\"mean\""), 17, "pmean");
    json_t *all = load("{\"inputs\":[[[1,2],[3,-4],[0.5,0]],[[2,2]]],\"return_state\":true}");
    json_t *lst = load("{\"inputs\":[[[1,2],[3,-4],[0.5,0]],[[2,2]]],\"return_state\":true,"
                       "\"outputs\":\"last\"}");
    json_t *want = infer_json(plain, lst, "m");
    json_t *got = infer_json(last, all, "m");
    ck_assert(json_equal(json_object_get(want, "outputs"), json_object_get(got, "outputs")));
    ck_assert(json_equal(json_object_get(want, "states"), json_object_get(got, "states")));
    json_decref(got);
    got = infer_json(last, lst, "m");
    ck_assert(json_equal(json_object_get(want, "outputs"), json_object_get(got, "outputs")));
    json_decref(got);
    /* mean: one row of 2 per sequence, a distribution, not the last step's */
    got = infer_json(mean, all, "m");
    const json_t *o = json_object_get(got, "outputs");
    ck_assert_uint_eq(json_array_size(o), 2);
    for (size_t b = 0; b < 2; b++) {
        const json_t *row = json_array_get(o, b);
        ck_assert_uint_eq(json_array_size(row), 2);
        float p0 = jf(json_array_get(row, 0)), p1 = jf(json_array_get(row, 1));
        ck_assert_float_eq_tol(p0 + p1, 1.0f, 1e-6f);
    }
    /* one step: the mean is that step */
    ck_assert(
        json_equal(json_array_get(o, 1), json_array_get(json_object_get(want, "outputs"), 1)));
    ck_assert(
        !json_equal(json_array_get(o, 0), json_array_get(json_object_get(want, "outputs"), 0)));
    json_decref(got);
    json_decref(want);
    json_decref(all);
    json_decref(lst);
    rnnd_net_free(plain);
    rnnd_net_free(last);
    rnnd_net_free(mean);
}
END_TEST

/* The encoded response of a request that ran (or the status that refused it), malloc'd. */
static char *encode_text(const rnnd_net *net, const rnnd_infer_req *req)
{
    rnnd_buf out;
    rnnd_buf_init(&out);
    int rc = rnnd_infer_encode(net, req, "m", &out);
    ck_assert(!rnnd_buf_failed(&out));
    if (rc)
        rnnd_buf_printf(&out, "(not encoded: status %d)", rc);
    char *s = strdup(out.data);
    rnnd_buf_free(&out);
    return s;
}

/* rnnd_infer_req_new (the KServe v2 front end's constructor): the same request built from
 * arrays computes bitwise what the JSON one does, pooled models give one row, and the
 * refusals are rnnd_infer_parse()'s, in its words. */
START_TEST(req_from_arrays)
{
    rnnd_net *vec = open_net(vec_arch, 21, "av");
    rnnd_net *tok = open_net(tok_arch, 22, "at");
    rnnd_net *mean = open_net(POOLED(",\"pool\":\"mean\""), 17, "am");
    char err[512];
    const float x[2 * 3 * 4] = {1, 2,  3, 4, -1,     0.5f, 0.25f, 2, 0, 0, 1, 1,
                                3, -2, 1, 0, 0.125f, 9,    -7,    1, 2, 2, 2, 2};
    const int32_t ids[2 * 3] = {0, 29, 5, 7, 7, 1};
    static const char *const json_req[3] = {
        "{\"inputs\":[[[1,2,3,4],[-1,0.5,0.25,2],[0,0,1,1]],"
        "[[3,-2,1,0],[0.125,9,-7,1],[2,2,2,2]]]}",
        "{\"inputs\":[[0,29,5],[7,7,1]]}",
        "{\"inputs\":[[[1,2],[3,-4],[0.5,0]],[[2,2],[0,1],[1,0]]]}"};
    const float xm[2 * 3 * 2] = {1, 2, 3, -4, 0.5f, 0, 2, 2, 0, 1, 1, 0};
    rnnd_net *nets[3] = {vec, tok, mean};
    for (int k = 0; k < 3; k++) {
        rnnd_infer_req *a = NULL, *j = NULL;
        rnnd_infer_arrays in = {2, 3, k == 1 ? ids : NULL, k == 0 ? x : k == 2 ? xm : NULL};
        int rc = rnnd_infer_req_new(nets[k], &in, NULL, &a, err, sizeof err);
        ck_assert_msg(rc == 0, "req_new: %s", err);
        ck_assert_int_eq(parse_text(nets[k], json_req[k], NULL, &j, err, sizeof err), 0);
        ck_assert_int_eq(rnnd_infer_run(nets[k], a, err, sizeof err), 0);
        ck_assert_int_eq(rnnd_infer_run(nets[k], j, err, sizeof err), 0);
        size_t od = (size_t)rnnd_net_output_dim(nets[k]);
        for (size_t b = 0; b < 2; b++) {
            size_t ra, rj;
            const float *ya = rnnd_infer_req_outputs(nets[k], a, b, &ra);
            const float *yj = rnnd_infer_req_outputs(nets[k], j, b, &rj);
            ck_assert_uint_eq(ra, k == 2 ? 1 : 3);
            ck_assert_uint_eq(ra, rj);
            ck_assert(ya && yj && !memcmp(ya, yj, ra * od * sizeof *ya));
        }
        char *ea = encode_text(nets[k], a), *ej = encode_text(nets[k], j);
        ck_assert_str_eq(ea, ej);
        free(ea);
        free(ej);
        size_t rows;
        ck_assert_ptr_null(rnnd_infer_req_outputs(nets[k], a, 2, &rows));
        ck_assert_uint_eq(rows, 0);
        rnnd_infer_req_free(a);
        rnnd_infer_req_free(j);
    }
    /* refusals: the JSON path's words for the same mistakes */
    rnnd_infer_limits lim = {.max_sequences = 1, .max_steps = 2, .max_total_steps = 3};
    rnnd_infer_req *r = NULL;
    ck_assert_int_eq(rnnd_infer_req_new(tok, &(rnnd_infer_arrays){2, 1, ids, NULL}, &lim, &r, err,
                                        sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert_str_eq(err, "inputs: 2 sequences, more than max_sequences (1)");
    ck_assert_int_eq(rnnd_infer_req_new(tok, &(rnnd_infer_arrays){1, 3, ids, NULL}, &lim, &r, err,
                                        sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert_str_eq(err, "inputs[0]: 3 steps, more than max_infer_steps (2) per sequence");
    const int32_t bad[2] = {3, 30};
    ck_assert_int_eq(rnnd_infer_req_new(tok, &(rnnd_infer_arrays){1, 2, bad, NULL}, NULL, &r, err,
                                        sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_str_eq(err, "inputs[0][1]: token id 30 out of range [0, 30)");
    float nan_x[4] = {1, 2, NAN, 4};
    ck_assert_int_eq(rnnd_infer_req_new(vec, &(rnnd_infer_arrays){1, 1, NULL, nan_x}, NULL, &r, err,
                                        sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_str_eq(err, "inputs[0][0][2]: not a finite number");
    ck_assert_int_eq(rnnd_infer_req_new(vec, &(rnnd_infer_arrays){0, 1, NULL, x}, NULL, &r, err,
                                        sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_infer_req_new(vec, &(rnnd_infer_arrays){1, 0, NULL, x}, NULL, &r, err,
                                        sizeof err),
                     RNND_ERR_INVALID);
    ck_assert_int_eq(rnnd_infer_req_new(vec, &(rnnd_infer_arrays){SIZE_MAX / 2, 3, NULL, x}, NULL,
                                        &r, err, sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert_ptr_null(r);
    rnnd_net_free(vec);
    rnnd_net_free(tok);
    rnnd_net_free(mean);
}
END_TEST

/* Requests of different sizes and options run as one batch answer, byte for byte, what each
 * answers alone. */
START_TEST(run_many_matches_alone)
{
    enum { N = 5 };
    rnnd_net *net = open_net(run_archs[_i], 90 + (unsigned)_i, "many");
    const rnnd_model_spec *s = rnnd_model_get_spec(rnnd_net_model(net));
    static batch bt;
    rnnd_infer_req *alone[N], *many[N];
    char err[512] = "";

    for (size_t i = 0; i < N; i++) {
        json_t *body = random_batch(s, 1 + i % 4, &bt);
        if (i % 3 == 1)
            json_object_set_new(body, "outputs", json_string("last"));
        if (i % 2 == 0)
            json_object_set_new(body, "return_state", json_true());
        int rc = rnnd_infer_parse(net, body, NULL, &alone[i], err, sizeof err);
        ck_assert_msg(rc == 0, "parse: %s", err);
        rc = rnnd_infer_parse(net, body, NULL, &many[i], err, sizeof err);
        ck_assert_msg(rc == 0, "parse: %s", err);
        json_decref(body);
        rc = rnnd_infer_run(net, alone[i], err, sizeof err);
        ck_assert_msg(rc == 0, "run: %s", err);
    }
    int rc = rnnd_infer_run_many(net, many, N, err, sizeof err);
    ck_assert_msg(rc == 0, "run_many: %s", err);
    for (size_t i = 0; i < N; i++) {
        ck_assert_int_eq(rnnd_infer_req_status(many[i], err, sizeof err), 0);
        char *a = encode_text(net, alone[i]), *b = encode_text(net, many[i]);
        ck_assert_msg(!strncmp(a, "{\"model\"", 8), "request %zu: %.200s", i, a);
        ck_assert_msg(!strcmp(a, b), "request %zu differs in a batch", i);
        free(a);
        free(b);
        rnnd_infer_req_free(alone[i]);
        rnnd_infer_req_free(many[i]);
    }
    rnnd_net_free(net);
}
END_TEST

/* A request whose inputs overflow fails alone; the others of its batch still answer. */
START_TEST(run_many_numeric_error_alone)
{
    rnnd_net *net =
        open_net("{\"format_version\":1,\"input\":{\"kind\":\"vectors\",\"dim\":4},\"layers\":["
                 "{\"type\":\"rnn\",\"hidden_size\":8,\"direction\":\"forward\",\"activations\":[["
                 "{\"op\":\"Affine\",\"alpha\":3e38,\"beta\":0}]]}]}",
                 82, "many_numeric");
    /* y = 3e38 * z: finite for one step from zeros (|z| < 1), Inf for large inputs */
    static const char *const texts[] = {
        "{\"inputs\":[[[0,0,0,0]],[[0,0,0,0]]]}",
        "{\"inputs\":[[[100,-100,100,-100]]],\"return_state\":true}",
        "{\"inputs\":[[[0,0,0,0]]],\"return_state\":true}",
    };
    enum { N = 3 };
    rnnd_infer_req *alone[N], *many[N];
    int alone_rc[N];
    char err[256] = "";
    for (size_t i = 0; i < N; i++) {
        ck_assert_int_eq(parse_text(net, texts[i], NULL, &alone[i], err, sizeof err), 0);
        ck_assert_int_eq(parse_text(net, texts[i], NULL, &many[i], err, sizeof err), 0);
        alone_rc[i] = rnnd_infer_run(net, alone[i], err, sizeof err);
    }
    /* the premise: only the middle request overflows */
    ck_assert_int_eq(alone_rc[0], 0);
    ck_assert_int_eq(alone_rc[1], RNND_ERR_NUMERIC);
    ck_assert_int_eq(alone_rc[2], 0);

    int rc = rnnd_infer_run_many(net, many, N, err, sizeof err);
    ck_assert_int_eq(rc, RNND_ERR_NUMERIC);
    ck_assert_msg(strstr(err, "not finite"), "%s", err);
    for (size_t i = 0; i < N; i++) {
        char own[256] = "";
        ck_assert_int_eq(rnnd_infer_req_status(many[i], own, sizeof own), alone_rc[i]);
        char *a = encode_text(net, alone[i]), *b = encode_text(net, many[i]);
        ck_assert_msg(!strcmp(a, b), "request %zu: %.200s vs %.200s", i, a, b);
        if (i == 1)
            ck_assert_msg(strstr(b, "not encoded") && strstr(own, "not finite"), "%s", own);
        free(a);
        free(b);
        rnnd_infer_req_free(alone[i]);
        rnnd_infer_req_free(many[i]);
    }
    rnnd_net_free(net);
}
END_TEST

/* ---- text inputs (docs/text.md) ----------------------------------------------------------- */

/* A char model: "a", "b", "ab", "é", " ", "\n" (6 ids) -> rnn 5 -> head 6. */
static const char *const text_arch =
    "{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":6,"
    "\"embedding_dim\":3},\"layers\":[{\"type\":\"rnn\",\"hidden_size\":5}],"
    "\"head\":{\"out_dim\":6,\"in_dim\":5,\"norm\":\"none\"},"
    "\"vocab\":[\"a\",\"b\",\"ab\",\"\\u00e9\",\" \",\"\\n\"],\"tokenizer\":\"char\"}";

/* Parse (with TOK, or NULL), run and encode REQ_TEXT for NET. */
static char *run_text(const rnnd_net *net, const rnnd_tokenizer *tok, const char *req_text)
{
    char err[256] = "";
    rnnd_infer_req *req = NULL;
    json_t *body = load(req_text);
    int rc = rnnd_infer_parse_text(net, tok, body, NULL, &req, err, sizeof err);
    json_decref(body);
    ck_assert_msg(rc == 0, "%s: %s", req_text, err);
    rc = rnnd_infer_run(net, req, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", req_text, err);
    char *out = encode_text(net, req);
    rnnd_infer_req_free(req);
    return out;
}

START_TEST(text_inputs)
{
    rnnd_net *net = open_net(text_arch, 91, "text");
    rnnd_tokenizer *tok = NULL;
    char err[256] = "";
    ck_assert_int_eq(rnnd_tokenizer_new(rnnd_net_model(net), &tok, err, sizeof err), 0);

    /* a string is its ids, whether the tokenizer is given or built by the parser; mixed
     * with lists in one batch */
    static const struct {
        const char *text, *ids;
    } same[] = {
        {"{\"inputs\":[\"ab a\",[0,1]],\"return_state\":true}",
         "{\"inputs\":[[2,4,0],[0,1]],\"return_state\":true}"},
        {"{\"inputs\":[\"\\u00e9\\nbab\"],\"outputs\":\"last\"}",
         "{\"inputs\":[[3,5,1,2]],\"outputs\":\"last\"}"},
        {"{\"inputs\":[[5],\"b\",\"aab\"]}", "{\"inputs\":[[5],[1],[0,2]]}"},
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char *want = run_text(net, NULL, same[i].ids);
        char *a = run_text(net, tok, same[i].text), *b = run_text(net, NULL, same[i].text);
        ck_assert_msg(!strcmp(a, want) && !strcmp(b, want), "case %zu: %.100s vs %.100s", i, a,
                      want);
        free(want);
        free(a);
        free(b);
    }

    rnnd_net *plain = open_net(tok_arch, 92, "text_plain");
    rnnd_net *vec = open_net(vec_arch, 93, "text_vec");
    rnnd_infer_limits lim = {.max_sequences = 3, .max_steps = 4, .max_total_steps = 6};
    static const struct {
        int net; /* 0 text, 1 no tokenizer, 2 vectors */
        int limited;
        const char *req;
        int status;
        const char *msg; /* the whole message */
    } bad[] = {
        {0, 0, "{\"inputs\":[[0],\"ab\\u00e8\"]}", RNND_ERR_INVALID,
         "inputs[1]: byte 2: no token for \"\xc3\xa8\" (U+00E8)"},
        {0, 0, "{\"inputs\":[\"a\\tb\"]}", RNND_ERR_INVALID,
         "inputs[0]: byte 1: no token for U+0009"},
        {0, 0, "{\"inputs\":[\"\"]}", RNND_ERR_INVALID, "inputs[0]: expected at least one step"},
        {0, 0, "{\"inputs\":[[1],[]]}", RNND_ERR_INVALID, "inputs[1]: expected at least one step"},
        {0, 1, "{\"inputs\":[\"a b a\"]}", RNND_ERR_LIMIT,
         "inputs[0]: more than max_infer_steps (4) steps per sequence"}, /* found encoding */
        {0, 1, "{\"inputs\":[\"abab a\",\"ab a\"]}", RNND_ERR_LIMIT,
         "inputs: 7 steps in all, more than max_infer_steps (6) per request"},
        {1, 0, "{\"inputs\":[\"ab\"]}", RNND_ERR_INVALID,
         "inputs[0]: model has no tokenizer: give token ids"},
        {1, 0, "{\"inputs\":[[1],\"\"]}", RNND_ERR_INVALID,
         "inputs[1]: expected at least one step"},
        {2, 0, "{\"inputs\":[\"ab\"]}", RNND_ERR_INVALID,
         "inputs[0]: expected a list of steps, got a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const rnnd_net *n = bad[i].net == 0 ? net : bad[i].net == 1 ? plain : vec;
        for (int given = 0; given < 1 + (bad[i].net == 0); given++) {
            rnnd_infer_req *req = (rnnd_infer_req *)&err;
            json_t *body = load(bad[i].req);
            err[0] = '\0';
            int rc = rnnd_infer_parse_text(n, given ? tok : NULL, body,
                                           bad[i].limited ? &lim : NULL, &req, err, sizeof err);
            json_decref(body);
            ck_assert_msg(rc == bad[i].status, "case %zu: status %d, want %d (%s)", i, rc,
                          bad[i].status, err);
            ck_assert_ptr_null(req);
            ck_assert_msg(!strcmp(err, bad[i].msg), "case %zu: \"%s\", want \"%s\"", i, err,
                          bad[i].msg);
        }
    }
    /* the limits count tokens, not bytes: 6 bytes, 3 tokens */
    rnnd_infer_req *req = NULL;
    json_t *body = load("{\"inputs\":[\"ababab\",\"abab\"]}");
    ck_assert_int_eq(rnnd_infer_parse_text(net, tok, body, &lim, &req, err, sizeof err), 0);
    ck_assert_uint_eq(rnnd_infer_req_steps(req), 5);
    rnnd_infer_req_free(req);
    json_decref(body);

    rnnd_tokenizer_free(tok);
    rnnd_net_free(plain);
    rnnd_net_free(vec);
    rnnd_net_free(net);

    /* a byte model: UTF-8 bytes are the ids */
    net = open_net("{\"format_version\":1,\"input\":{\"kind\":\"tokens\",\"vocab_size\":258,"
                   "\"embedding_dim\":3},\"layers\":[{\"type\":\"gru\",\"hidden_size\":4}],"
                   "\"tokenizer\":\"byte\"}",
                   94, "text_byte");
    char *want = run_text(net, NULL, "{\"inputs\":[[104,195,169,240,159,152,128,0]]}");
    char *got = run_text(net, NULL, "{\"inputs\":[\"h\\u00e9\\ud83d\\ude00\\u0000\"]}");
    ck_assert_str_eq(got, want);
    free(want);
    free(got);
    rnnd_net_free(net);
}
END_TEST

static Suite *infer_suite(void)
{
    Suite *s = suite_create("infer");
    TCase *tc = tcase_create("buf");
    tcase_add_test(tc, buf_float_round_trip);
    tcase_add_test(tc, buf_float_nonfinite);
    tcase_add_test(tc, buf_floats_and_printf);
    tcase_add_test(tc, buf_json_string);
    tcase_add_test(tc, json_float_bounds);
    suite_add_tcase(s, tc);

    tc = tcase_create("state");
    tcase_add_test(tc, state_round_trip);
    tcase_add_test(tc, state_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse");
    tcase_add_test(tc, parse_errors);
    tcase_add_test(tc, parse_random_json);
    tcase_add_test(tc, load_json_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("run");
    tcase_add_loop_test(tc, run_matches_forward, 0, (int)N_RUN_ARCHS);
    tcase_add_loop_test(tc, run_split_halves, 0, 3);
    tcase_add_test(tc, run_initial_state_null_and_nonzero);
    tcase_add_test(tc, run_numeric_error);
    tcase_add_test(tc, run_pooled);
    tcase_add_test(tc, req_from_arrays);
    tcase_add_loop_test(tc, run_many_matches_alone, 0, (int)N_RUN_ARCHS);
    tcase_add_test(tc, run_many_numeric_error_alone);
    tcase_add_test(tc, text_inputs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(infer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
