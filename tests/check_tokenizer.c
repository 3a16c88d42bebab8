/* The tokenizer (rnnd/tokenizer.h, docs/text.md): char encoding by greedy longest match
 * checked against a naive search written here, decode round trips, every kind of invalid
 * UTF-8 refused at its byte, the id cap, byte-model ids and special tokens, and the
 * incremental UTF-8 stream against the Unicode standard's own U+FFFD example and a split
 * invariance property. Models are written by tests/testutil.c and loaded by the real loader. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "rnnd/model.h"
#include "rnnd/status.h"
#include "rnnd/tokenizer.h"
#include "testutil.h"
#include "testcheck.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint32_t rng_u32(void) { return tu_xorshift64star(&rng_state); }

/* A token model with VOCAB (N strings, or NULL for "vocab": null) of VOCAB_SIZE ids and
 * TOKENIZER ("char", "byte" or NULL for null), loaded through the real loader. */
static rnnd_model *tok_model(const char *const *vocab, size_t n, int vocab_size,
                             const char *tokenizer)
{
    json_t *v = json_null();
    if (vocab) {
        v = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(v, json_stringn(vocab[i], strlen(vocab[i])));
    }
    char *vj = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    ck_assert_ptr_nonnull(vj);
    json_decref(v);
    size_t cap = strlen(vj) + 512;
    char *arch = malloc(cap);
    ck_assert_ptr_nonnull(arch);
    snprintf(arch, cap,
             "{\"format_version\": 1, \"input\": {\"kind\": \"tokens\", \"vocab_size\": %d,"
             " \"embedding_dim\": 2}, \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2}],"
             " \"vocab\": %s, \"tokenizer\": %s%s%s}",
             vocab_size, vj, tokenizer ? "\"" : "", tokenizer ? tokenizer : "null",
             tokenizer ? "\"" : "");
    free(vj);

    char path[4096];
    const char *dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(path, sizeof path, "%s/check_tokenizer_%ld.rnnd", dir, (long)getpid());
    ck_assert_int_eq(tu_write_random_model(path, arch, 7), 0);
    free(arch);
    char err[512] = "";
    rnnd_model *m = NULL;
    int rc = rnnd_model_open(path, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "model_open: %s", err);
    unlink(path);
    return m;
}

static rnnd_tokenizer *tok_new(const rnnd_model *m)
{
    char err[256] = "";
    rnnd_tokenizer *t = NULL;
    int rc = rnnd_tokenizer_new(m, &t, err, sizeof err);
    ck_assert_msg(rc == 0, "tokenizer_new: %s", err);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Encode the NUL-terminated TEXT; returns the status, ids in IDS (room for 256). */
static int enc(const rnnd_tokenizer *t, const char *text, int32_t *ids, size_t *n, char *err,
               size_t errlen)
{
    err[0] = '\0';
    return rnnd_tokenizer_encode(t, text, strlen(text), ids, 256, n, err, errlen);
}

static void expect_ids(const rnnd_tokenizer *t, const char *text, const int32_t *want, size_t nwant)
{
    int32_t ids[256];
    size_t n = 999;
    char err[256];
    int rc = enc(t, text, ids, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "encode \"%s\": %s", text, err);
    ck_assert_msg(n == nwant, "encode \"%s\": %zu ids, want %zu", text, n, nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i] == want[i], "encode \"%s\": id %zu is %d, want %d", text, i,
                      (int)ids[i], (int)want[i]);
}

static void expect_fail(const rnnd_tokenizer *t, const char *text, size_t len, int status,
                        const char *msg)
{
    int32_t ids[256];
    size_t n = 999;
    char err[256] = "";
    /* an exact-size copy, so that a read past LEN shows under the sanitizers */
    char *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, len);
    int rc = rnnd_tokenizer_encode(t, copy, len, ids, 256, &n, err, sizeof err);
    free(copy);
    ck_assert_msg(rc == status, "encode: status %d, want %d (%s)", rc, status, err);
    ck_assert_msg(!strcmp(err, msg), "encode: message \"%s\", want \"%s\"", err, msg);
    ck_assert_uint_eq(n, 0);
}

/* The concatenated pieces of IDS into OUT (NUL-terminated). */
static size_t decode(const rnnd_tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = rnnd_tokenizer_piece(t, ids[i], &len);
        ck_assert_uint_lt(o + len, cap);
        memcpy(out + o, p, len);
        o += len;
    }
    out[o] = '\0';
    return o;
}

/* ---- char -------------------------------------------------------------------------------- */

START_TEST(char_single_characters)
{
    /* one to four bytes per character, newline, space, quote */
    static const char *const vocab[] = {"a",  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                        "\n", " ",        "\"",           "b"};
    rnnd_model *m = tok_model(vocab, 8, 8, "char");
    rnnd_tokenizer *t = tok_new(m);

    expect_ids(t, "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n \"b",
               (const int32_t[]){0, 1, 2, 3, 4, 5, 6, 7}, 8);
    expect_ids(t, "bba", (const int32_t[]){7, 7, 0}, 3);

    /* decode(encode(text)) == text */
    const char *text = "ab \xc3\xa9\xf0\x9f\x98\x80\n\"\xe2\x82\xac"
                       "a";
    int32_t ids[256];
    size_t n;
    char err[256], back[512];
    ck_assert_int_eq(enc(t, text, ids, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 9);
    ck_assert_uint_eq(decode(t, ids, n, back, sizeof back), strlen(text));
    ck_assert_str_eq(back, text);

    /* the empty text gives no ids */
    n = 5;
    ck_assert_int_eq(rnnd_tokenizer_encode(t, "", 0, ids, 0, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 0);

    /* pieces out of range are empty */
    size_t len = 9;
    ck_assert_str_eq(rnnd_tokenizer_piece(t, 8, &len), "");
    ck_assert_uint_eq(len, 0);
    len = 9;
    rnnd_tokenizer_piece(t, -1, &len);
    ck_assert_uint_eq(len, 0);
    const char *p = rnnd_tokenizer_piece(t, 3, &len);
    ck_assert_uint_eq(len, 4);
    ck_assert(!memcmp(p, "\xf0\x9f\x98\x80", 4));

    /* no token: the byte offset and the character, with its code point */
    expect_fail(t, "ab\xc3\xa8", 4, RNND_ERR_INVALID, "byte 2: no token for \"\xc3\xa8\" (U+00E8)");
    expect_fail(t,
                "a\xe2\x82\xac"
                "c",
                5, RNND_ERR_INVALID, "byte 4: no token for \"c\" (U+0063)");
    expect_fail(t, "\xf0\x9f\x98\x81", 4, RNND_ERR_INVALID,
                "byte 0: no token for \"\xf0\x9f\x98\x81\" (U+1F601)");
    expect_fail(t, "a\tb", 3, RNND_ERR_INVALID, "byte 1: no token for U+0009");
    expect_fail(t, "a\\", 2, RNND_ERR_INVALID, "byte 1: no token for \"\\\\\" (U+005C)");
    expect_fail(t, "a\0b", 3, RNND_ERR_INVALID, "byte 1: no token for U+0000");
    expect_fail(t, "\xc2\x85", 2, RNND_ERR_INVALID, "byte 0: no token for U+0085");

    rnnd_tokenizer_free(t);
    rnnd_tokenizer_free(NULL);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(char_longest_match)
{
    /* duplicates ("a" at 0 and 7, "ab" at 2 and 8) and an empty string are allowed */
    static const char *const vocab[] = {"a", "b", "ab", "abc",  "c", "bc",
                                        "",  "a", "ab", "abcd", "d"};
    rnnd_model *m = tok_model(vocab, 11, 11, "char");
    rnnd_tokenizer *t = tok_new(m);

    expect_ids(t, "abcab", (const int32_t[]){3, 2}, 2);
    expect_ids(t, "abab", (const int32_t[]){2, 2}, 2);
    expect_ids(t, "abcdabc", (const int32_t[]){9, 3}, 2);
    expect_ids(t, "bcba", (const int32_t[]){5, 1, 0}, 3);
    expect_ids(t, "abca", (const int32_t[]){3, 0}, 2);
    /* greedy, not shortest: "abc" + "d" would also cover "abcd", but "abcd" is longer */
    expect_ids(t, "dabcdd", (const int32_t[]){10, 9, 10}, 3);
    /* greedy can fail where another split exists: nothing starts "e" */
    expect_fail(t, "abe", 3, RNND_ERR_INVALID, "byte 2: no token for \"e\" (U+0065)");
    /* the empty string is never produced, and decodes to nothing */
    size_t len = 3;
    rnnd_tokenizer_piece(t, 6, &len);
    ck_assert_uint_eq(len, 0);

    rnnd_tokenizer_free(t);
    rnnd_model_unref(m);
}
END_TEST

/* The naive greedy search the tokenizer must agree with: at each position, the longest
 * non-empty vocabulary string the text continues with, the lowest id among equals.
 * Returns the count, or -(position + 1) where nothing matches. */
static long naive_encode(const char *const *vocab, size_t nv, const char *text, size_t len,
                         int32_t *ids)
{
    size_t i = 0;
    long n = 0;
    while (i < len) {
        long best = -1;
        size_t blen = 0;
        for (size_t v = 0; v < nv; v++) {
            size_t l = strlen(vocab[v]);
            if (l && l > blen && l <= len - i && !memcmp(text + i, vocab[v], l)) {
                best = (long)v;
                blen = l;
            }
        }
        if (best < 0)
            return -(long)(i + 1);
        ids[n++] = (int32_t)best;
        i += blen;
    }
    return n;
}

START_TEST(char_random_against_naive)
{
    static const char *const alphabet[] = {"a", "b", "c", "\xc3\xa9", "\xe2\x82\xac", " "};
    enum { NA = 6 };
    for (int round = 0; round < 40; round++) {
        size_t nv = 3 + rng_u32() % 40;
        char **vocab = calloc(nv, sizeof *vocab);
        ck_assert_ptr_nonnull(vocab);
        for (size_t v = 0; v < nv; v++) {
            vocab[v] = calloc(1, 32);
            size_t chars = rng_u32() % 5; /* 0..4 characters; 0: an empty string */
            for (size_t c = 0; c < chars; c++)
                strcat(vocab[v], alphabet[rng_u32() % (round % 2 ? NA : NA - 2)]);
        }
        rnnd_model *m = tok_model((const char *const *)vocab, nv, (int)nv, "char");
        rnnd_tokenizer *t = tok_new(m);
        for (int k = 0; k < 50; k++) {
            char text[128] = "";
            size_t chars = rng_u32() % 20;
            for (size_t c = 0; c < chars; c++)
                strcat(text, alphabet[rng_u32() % NA]);
            size_t len = strlen(text);
            int32_t want[128], got[128];
            long wn = naive_encode((const char *const *)vocab, nv, text, len, want);
            size_t n = 0;
            char err[256] = "";
            int rc = rnnd_tokenizer_encode(t, text, len, got, 128, &n, err, sizeof err);
            if (wn < 0) {
                char msg[64];
                snprintf(msg, sizeof msg, "byte %ld: no token for", -wn - 1);
                ck_assert_msg(rc == RNND_ERR_INVALID && !strncmp(err, msg, strlen(msg)),
                              "\"%s\": rc %d \"%s\", want \"%s...\"", text, rc, err, msg);
                continue;
            }
            ck_assert_msg(rc == 0, "\"%s\": %s", text, err);
            ck_assert_uint_eq(n, (size_t)wn);
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(got[i] == want[i], "\"%s\": id %zu is %d, want %d", text, i,
                              (int)got[i], (int)want[i]);
            char back[256];
            ck_assert_uint_eq(decode(t, got, n, back, sizeof back), len);
            ck_assert_str_eq(back, text);
        }
        rnnd_tokenizer_free(t);
        rnnd_model_unref(m);
        for (size_t v = 0; v < nv; v++)
            free(vocab[v]);
        free(vocab);
    }
}
END_TEST

START_TEST(char_cap)
{
    static const char *const vocab[] = {"a", "b", "ab"};
    rnnd_model *m = tok_model(vocab, 3, 3, "char");
    rnnd_tokenizer *t = tok_new(m);
    int32_t ids[4];
    size_t n = 7;
    char err[256] = "";

    ck_assert_int_eq(rnnd_tokenizer_encode(t, "abab", 4, ids, 2, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 2);
    n = 7;
    ck_assert_int_eq(rnnd_tokenizer_encode(t, "abba", 4, ids, 2, &n, err, sizeof err),
                     RNND_ERR_LIMIT);
    ck_assert_str_eq(err, "byte 3: more than 2 tokens");
    ck_assert_uint_eq(n, 0);
    /* LEN bounds the text: the rest of the buffer is not read */
    ck_assert_int_eq(rnnd_tokenizer_encode(t, "abXX", 2, ids, 4, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(ids[0], 2);
    rnnd_tokenizer_free(t);
    rnnd_model_unref(m);
}
END_TEST

/* ---- invalid UTF-8, for both kinds --------------------------------------------------------- */

START_TEST(invalid_utf8)
{
    static const char *const vocab[] = {"a", "b", "\xc3\xa9"};
    rnnd_model *mc = tok_model(vocab, 3, 3, "char");
    rnnd_model *mb = tok_model(NULL, 0, 256, "byte");
    rnnd_tokenizer *tc = tok_new(mc), *tb = tok_new(mb);
    static const struct {
        const char *text;
        size_t len;
        size_t at;
    } cases[] = {
        {"ab\xc0\x80", 4, 2},         /* overlong NUL */
        {"a\xc1\xbf", 3, 1},          /* overlong 2-byte */
        {"\xe0\x80\x80", 3, 0},       /* overlong 3-byte */
        {"a\xe0\x9f\xbf", 4, 1},      /* overlong U+07FF */
        {"\xf0\x80\x80\x80", 4, 0},   /* overlong 4-byte */
        {"ab\xf0\x8f\xbf\xbf", 6, 2}, /* overlong U+FFFF */
        {"\xed\xa0\x80", 3, 0},       /* surrogate U+D800 */
        {"a\xed\xbf\xbf", 4, 1},      /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 4, 0},   /* U+110000 */
        {"a\xf5\x80\x80\x80", 5, 1},  /* lead byte F5 */
        {"\xff", 1, 0},
        {"ab\x80", 3, 2}, /* lone continuation */
        {"a\xc3", 2, 1},  /* truncated at the end */
        {"a\xe2\x82", 3, 1},
        {"\xf0\x9f\x98", 3, 0},
        {"\xc3"
         "a",
         2, 0}, /* truncated by an ASCII byte */
        {"\xe2\x82"
         "a",
         3, 0},
        {"a\xc3\xa9\xc3\xc3\xa9", 6, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "byte %zu: invalid UTF-8", cases[i].at);
        expect_fail(tc, cases[i].text, cases[i].len, RNND_ERR_INVALID, msg);
        expect_fail(tb, cases[i].text, cases[i].len, RNND_ERR_INVALID, msg);
    }
    /* the extremes that are valid */
    static const char *const ok[] = {"\xc2\x80",         "\xdf\xbf",        "\xe0\xa0\x80",
                                     "\xed\x9f\xbf",     "\xee\x80\x80",    "\xef\xbf\xbf",
                                     "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int32_t ids[8];
        size_t n;
        char err[128];
        ck_assert_msg(enc(tb, ok[i], ids, &n, err, sizeof err) == 0, "%zu: %s", i, err);
        ck_assert_uint_eq(n, strlen(ok[i]));
    }
    rnnd_tokenizer_free(tc);
    rnnd_tokenizer_free(tb);
    rnnd_model_unref(mc);
    rnnd_model_unref(mb);
}
END_TEST

/* ---- byte -------------------------------------------------------------------------------- */

START_TEST(byte_ids_and_specials)
{
    /* 258 ids: the 256 byte values, then two special tokens */
    static char strs[258][8];
    const char *vocab[258];
    for (int i = 0; i < 256; i++) {
        snprintf(strs[i], sizeof strs[i], "<%02x>", i); /* byte ids ignore these */
        vocab[i] = strs[i];
    }
    vocab[256] = "<s>";
    vocab[257] = "\xe2\x80\x94";
    rnnd_model *m = tok_model(vocab, 258, 258, "byte");
    rnnd_tokenizer *t = tok_new(m);

    const char *text = "h\xc3\xa9<s>\xf0\x9f\x98\x80";
    int32_t ids[256];
    size_t n;
    char err[256], back[256];
    ck_assert_int_eq(enc(t, text, ids, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, strlen(text));
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(ids[i], (unsigned char)text[i]); /* never a special token */
    ck_assert_uint_eq(decode(t, ids, n, back, sizeof back), n);
    ck_assert_str_eq(back, text);

    for (int id = 0; id < 256; id++) {
        size_t len = 0;
        const char *p = rnnd_tokenizer_piece(t, id, &len);
        ck_assert_uint_eq(len, 1);
        ck_assert_uint_eq((unsigned char)p[0], (unsigned)id);
    }
    size_t len = 0;
    const char *p = rnnd_tokenizer_piece(t, 256, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(!memcmp(p, "<s>", 3));
    p = rnnd_tokenizer_piece(t, 257, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(!memcmp(p, "\xe2\x80\x94", 3));
    rnnd_tokenizer_piece(t, 258, &len);
    ck_assert_uint_eq(len, 0);
    rnnd_tokenizer_free(t);
    rnnd_model_unref(m);

    /* without a vocabulary, ids above 255 have no string */
    m = tok_model(NULL, 0, 300, "byte");
    t = tok_new(m);
    rnnd_tokenizer_piece(t, 256, &len);
    ck_assert_uint_eq(len, 0);
    p = rnnd_tokenizer_piece(t, 255, &len);
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq((unsigned char)p[0], 255);
    expect_ids(t, "\x7f\x01", (const int32_t[]){127, 1}, 2);
    rnnd_tokenizer_free(t);
    rnnd_model_unref(m);
}
END_TEST

START_TEST(no_tokenizer)
{
    static const char *const vocab[] = {"a", "b"};
    rnnd_model *m = tok_model(vocab, 2, 2, NULL); /* a vocabulary but no tokenizer */
    char err[256] = "";
    rnnd_tokenizer *t = (rnnd_tokenizer *)err;
    ck_assert_int_eq(rnnd_tokenizer_new(m, &t, err, sizeof err), RNND_ERR_UNSUPPORTED);
    ck_assert_ptr_null(t);
    ck_assert_str_eq(err, "model has no tokenizer: give token ids");
    rnnd_model_unref(m);

    const char *arch = "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 2},"
                       " \"layers\": [{\"type\": \"gru\", \"hidden_size\": 3}]}";
    ck_assert_int_eq(rnnd_model_random(arch, 1, 0.5f, &m, err, sizeof err), 0);
    t = (rnnd_tokenizer *)err;
    ck_assert_int_eq(rnnd_tokenizer_new(m, &t, err, sizeof err), RNND_ERR_UNSUPPORTED);
    ck_assert_ptr_null(t);
    ck_assert_str_eq(err, "model has no tokenizer: give token ids");
    rnnd_model_unref(m);
}
END_TEST

/* ---- the UTF-8 stream -------------------------------------------------------------------- */

/* Feed IN in pieces of the given sizes (0-terminated list, the rest in one), then flush. */
static size_t stream_all(const char *in, size_t len, const size_t *splits, char *out)
{
    rnnd_utf8_stream s;
    rnnd_utf8_stream_init(&s);
    size_t i = 0, o = 0;
    for (; splits && *splits && i < len; splits++) {
        size_t k = *splits < len - i ? *splits : len - i;
        o += rnnd_utf8_stream_put(&s, in + i, k, out + o);
        i += k;
    }
    o += rnnd_utf8_stream_put(&s, in + i, len - i, out + o);
    o += rnnd_utf8_stream_flush(&s, out + o);
    return o;
}

#define FFFD "\xef\xbf\xbd"

START_TEST(stream_split_characters)
{
    rnnd_utf8_stream s;
    char out[64];
    rnnd_utf8_stream_init(&s);
    /* a 2-byte and a 4-byte character, one byte at a time */
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\xc3", 1, out), 0);
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\xa9", 1, out), 2);
    ck_assert(!memcmp(out, "\xc3\xa9", 2));
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\xf0", 1, out), 0);
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\x9f", 1, out), 0);
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\x98", 1, out), 0);
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\x80", 1, out), 4);
    ck_assert(!memcmp(out, "\xf0\x9f\x98\x80", 4));
    /* a piece that ends inside a character and one that completes it plus more */
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "ab\xe2\x82", 4, out), 2);
    ck_assert(!memcmp(out, "ab", 2));
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s,
                                           "\xac"
                                           "c",
                                           2, out),
                      4);
    ck_assert(!memcmp(out,
                      "\xe2\x82\xac"
                      "c",
                      4));
    ck_assert_uint_eq(rnnd_utf8_stream_flush(&s, out), 0);
    /* an incomplete character at the end becomes one U+FFFD */
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "x\xf0\x9f", 3, out), 1);
    ck_assert_uint_eq(rnnd_utf8_stream_flush(&s, out), 3);
    ck_assert(!memcmp(out, FFFD, 3));
    ck_assert_uint_eq(rnnd_utf8_stream_flush(&s, out), 0);
    /* a held byte followed by one that cannot continue it */
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "\xc3", 1, out), 0);
    ck_assert_uint_eq(rnnd_utf8_stream_put(&s, "a", 1, out), 4);
    ck_assert(!memcmp(out, FFFD "a", 4));
}
END_TEST

START_TEST(stream_invalid_bytes)
{
    /* The Unicode Standard (chapter 3, "U+FFFD Substitution of Maximal Subparts", table 3-8):
     * 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d */
    const char *in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
    const char *want = "a" FFFD FFFD FFFD "b" FFFD "c" FFFD FFFD "d";
    char out[128];
    size_t o = stream_all(in, strlen(in), NULL, out);
    ck_assert_uint_eq(o, strlen(want));
    ck_assert(!memcmp(out, want, o));
    /* and byte by byte */
    static const size_t ones[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    o = stream_all(in, strlen(in), ones, out);
    ck_assert_uint_eq(o, strlen(want));
    ck_assert(!memcmp(out, want, o));

    static const struct {
        const char *in, *want;
    } cases[] = {
        {"\xed\xa0\x80", FFFD FFFD FFFD}, /* a surrogate: ED cannot take A0 */
        {"\xc0\xaf", FFFD FFFD},          /* overlong */
        {"\xe0\x80\xaf", FFFD FFFD FFFD},
        {"\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD},
        {"\xf0\x9f\x98"
         "a",
         FFFD "a"},
        {"\xff\xfe"
         "ok",
         FFFD FFFD "ok"},
        {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        o = stream_all(cases[i].in, strlen(cases[i].in), NULL, out);
        ck_assert_msg(o == strlen(cases[i].want) && !memcmp(out, cases[i].want, o),
                      "case %zu: %zu bytes out", i, o);
    }
}
END_TEST

/* Whether the N bytes at P are valid UTF-8 (the test's own check, by code point ranges). */
static int valid_utf8(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i], need;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + need >= n)
            return 0; /* truncated */
        for (unsigned k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

START_TEST(stream_random_splits)
{
    /* Random bytes (biased towards UTF-8 structure): the output is valid UTF-8, does not
     * depend on how the input is split, and valid input comes out unchanged. Every put
     * stays within LEN + 8 when fed single bytes or valid text. */
    static const unsigned char pool[] = {'a',  'z',  ' ',  0x80, 0x9f, 0xa0, 0xbf,
                                         0xc2, 0xc3, 0xdf, 0xe0, 0xe2, 0xed, 0xef,
                                         0xf0, 0xf4, 0xf5, 0xff, 0xc0, 0x8f, 0x90};
    for (int round = 0; round < 2000; round++) {
        unsigned char in[40];
        size_t len = rng_u32() % sizeof in;
        for (size_t i = 0; i < len; i++)
            in[i] = pool[rng_u32() % sizeof pool];
        char whole[200], split[200], single[200];
        size_t nw = stream_all((const char *)in, len, NULL, whole);
        size_t sizes[41], k = 0;
        for (size_t used = 0; used < len && k < 40; k++) {
            sizes[k] = 1 + rng_u32() % 5;
            used += sizes[k];
        }
        sizes[k] = 0;
        size_t ns = stream_all((const char *)in, len, sizes, split);
        ck_assert_uint_eq(nw, ns);
        ck_assert(!memcmp(whole, split, nw));
        ck_assert(valid_utf8((const unsigned char *)whole, nw));
        if (valid_utf8(in, len)) {
            ck_assert_uint_eq(nw, len);
            ck_assert(!memcmp(whole, in, len));
        }
        /* byte by byte, each put within 1 + 8 bytes */
        rnnd_utf8_stream s;
        rnnd_utf8_stream_init(&s);
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            size_t got = rnnd_utf8_stream_put(&s, (const char *)in + i, 1, single + o);
            ck_assert_uint_le(got, 9);
            o += got;
        }
        o += rnnd_utf8_stream_flush(&s, single + o);
        ck_assert_uint_eq(o, nw);
        ck_assert(!memcmp(single, whole, o));
    }
}
END_TEST

static Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("char");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, char_single_characters);
    tcase_add_test(tc, char_longest_match);
    tcase_add_test(tc, char_random_against_naive);
    tcase_add_test(tc, char_cap);
    tcase_add_test(tc, invalid_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("byte");
    tcase_add_test(tc, byte_ids_and_specials);
    tcase_add_test(tc, no_tokenizer);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_add_test(tc, stream_split_characters);
    tcase_add_test(tc, stream_invalid_bytes);
    tcase_add_test(tc, stream_random_splits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(tokenizer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
