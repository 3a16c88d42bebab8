/* Fuzz target: the generation request fields and the text path of generation.
 *
 * The same input is used three ways:
 * - as JSON text: rnnd_infer_load, then rnnd_gen_params_parse over the defaults; what it
 *   accepts must satisfy the documented bounds (src/generate.h);
 * - as text for the "char" and "byte" tokenizers (rnnd_tokenizer_encode): the ids it gives
 *   must decode (rnnd_tokenizer_piece) back to exactly the input;
 * - as pieces for the incremental UTF-8 decoder (rnnd_utf8_stream_put/flush), in chunks whose
 *   sizes come from the input itself: the output is always valid UTF-8, within the documented
 *   buffer bound, and equal to the input when the input is valid UTF-8. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "generate.h"
#include "rnnd/infer.h"
#include "rnnd/sample.h"
#include "rnnd/status.h"
#include "rnnd/tokenizer.h"

#define MAX_TOKENS 100

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void check_params(const uint8_t *data, size_t size)
{
    char err[512] = "";
    json_t *obj = NULL;
    if (rnnd_infer_load((const char *)data, size, &obj, err, sizeof err))
        return;
    if (json_is_object(obj)) {
        rnnd_gen_params p;
        rnnd_gen_params_default(&p);
        int rc = rnnd_gen_params_parse(obj, MAX_TOKENS, &p, err, sizeof err);
        FZ_CHECK(rc == 0 || rc == RNND_ERR_INVALID || rc == RNND_ERR_LIMIT,
                 "unexpected status from rnnd_gen_params_parse");
        if (rc) {
            FZ_CHECK(err[0] != '\0', "a refusal without a message");
        } else {
            FZ_CHECK(p.max_tokens >= 1 && p.max_tokens <= MAX_TOKENS, "max_tokens out of bounds");
            FZ_CHECK(rnnd_sampling_check(&p.sampling, err, sizeof err) == 0,
                     "accepted sampling parameters fail rnnd_sampling_check");
            FZ_CHECK(p.n_stop <= RNND_GEN_MAX_STOP, "too many stop strings");
            for (size_t i = 0; i < p.n_stop; i++) {
                size_t n = strnlen(p.stop[i], RNND_GEN_STOP_BYTES + 1);
                FZ_CHECK(n >= 1 && n <= RNND_GEN_STOP_BYTES, "a stop string out of bounds");
            }
        }
    }
    json_decref(obj);
}

static void check_tokenizer(const rnnd_tokenizer *t, const uint8_t *data, size_t size)
{
    int32_t *ids = malloc((size ? size : 1) * sizeof *ids);
    FZ_CHECK(ids != NULL, "out of memory");
    size_t n = 0;
    char err[512] = "";
    int rc = rnnd_tokenizer_encode(t, (const char *)data, size, ids, size, &n, err, sizeof err);
    FZ_CHECK(rc == 0 || rc == RNND_ERR_INVALID, "encode: unexpected status (cap = len suffices)");
    if (rc == 0) {
        FZ_CHECK(utf8_valid(data, size), "the tokenizer accepted invalid UTF-8");
        FZ_CHECK(n <= size, "more ids than bytes");
        size_t pos = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *piece = rnnd_tokenizer_piece(t, ids[i], &len);
            FZ_CHECK(len >= 1, "encode produced an empty piece");
            FZ_CHECK(len <= size - pos && memcmp(piece, data + pos, len) == 0,
                     "the pieces of the ids are not the text");
            pos += len;
        }
        FZ_CHECK(pos == size, "the pieces of the ids are shorter than the text");
    } else {
        FZ_CHECK(strncmp(err, "byte ", 5) == 0, "an encode error must name the byte");
    }
    free(ids);
}

static void check_stream(const uint8_t *data, size_t size)
{
    char *out = malloc(3 * size + 3 + 8);
    FZ_CHECK(out != NULL, "out of memory");
    rnnd_utf8_stream s;
    rnnd_utf8_stream_init(&s);
    size_t olen = 0, pos = 0;
    while (pos < size) {
        size_t chunk = (size_t)(data[pos] % 7) + 1;
        if (chunk > size - pos)
            chunk = size - pos;
        size_t w = rnnd_utf8_stream_put(&s, (const char *)data + pos, chunk, out + olen);
        FZ_CHECK(w <= 3 * chunk + 3, "rnnd_utf8_stream_put wrote more than its bound");
        olen += w;
        pos += chunk;
    }
    size_t w = rnnd_utf8_stream_flush(&s, out + olen);
    FZ_CHECK(w <= 8, "rnnd_utf8_stream_flush wrote more than 8 bytes");
    olen += w;
    FZ_CHECK(olen <= 3 * size + 3, "the stream's output exceeds 3 * LEN + 3");
    FZ_CHECK(utf8_valid((const unsigned char *)out, olen), "the stream wrote invalid UTF-8");
    if (utf8_valid(data, size))
        FZ_CHECK(olen == size && memcmp(out, data, size) == 0, "the stream changed valid UTF-8");
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a tokenizer does not own its model: both live until exit */
    static rnnd_model *mc, *mb;
    static rnnd_tokenizer *tok_char, *tok_byte;
    if (!tok_char) {
        char err[256];
        mc = fz_model(FZ_ARCH_TOK, 1);
        mb = fz_model(FZ_ARCH_BYTE, 4);
        FZ_CHECK(rnnd_tokenizer_new(mc, &tok_char, err, sizeof err) == 0, "char tokenizer");
        FZ_CHECK(rnnd_tokenizer_new(mb, &tok_byte, err, sizeof err) == 0, "byte tokenizer");
    }
    check_params(data, size);
    check_tokenizer(tok_char, data, size);
    check_tokenizer(tok_byte, data, size);
    check_stream(data, size);
    return 0;
}
