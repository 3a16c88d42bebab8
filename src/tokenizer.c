/* Text <-> token ids (rnnd/tokenizer.h, docs/text.md).
 *
 * "char" encodes by greedy longest match over the vocabulary. The strings are kept in one
 * index sorted bytewise (a string before its extensions, then by id), so the entries that
 * share a prefix with the text form a contiguous range; walking the text narrows that range
 * one byte at a time with two binary searches, and the first entry of the range whose length
 * equals the depth reached is the lowest-id exact match. The first byte's range is looked up
 * in a table of 256 made with the index: a character vocabulary's token costs one lookup and
 * a narrowing of its one-entry range, not 2 log V comparisons (trial 34: 4,000-character
 * steps, tokenized on the WebSocket event loop, were a fifth of its time at ~100 ns a
 * character). Cost per token: O(match * log V), no per-model trie to build or bound.
 *
 * Text is validated as UTF-8 before any matching, so every match (vocabulary strings are
 * valid UTF-8 too) ends on a character boundary. */
#include "rnnd/tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

enum { TOK_CHAR = 0, TOK_BYTE = 1 };

struct rnnd_tokenizer {
    int kind;
    int n;                    /* vocabulary size (ids 0..n-1) */
    char *const *vocab;       /* the model's strings, NULL for a byte model without vocab */
    size_t *lens;             /* [n] strlen of each string (or NULL) */
    int32_t *sorted;          /* char: [n] ids sorted by (bytes, id) */
    uint32_t first[256][2];   /* char: the range of SORTED whose first byte is b (narrow) */
    size_t max_len;           /* the longest string's length (1 for byte) */
    unsigned char bytes[256]; /* byte: the piece of id b is bytes + b */
};

/* qsort has no context argument: the comparator reads the strings through this pair. */
typedef struct {
    const char *s;
    int32_t id;
} keyed;

static int keyed_cmp(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int c = strcmp(x->s, y->s); /* unsigned bytes; a prefix sorts first */
    if (c)
        return c;
    return (x->id > y->id) - (x->id < y->id);
}

/* The byte at depth D of the string of id ID (0 past its end, which sorts first). */
static unsigned char at(const rnnd_tokenizer *t, int32_t id, size_t d)
{
    return d < t->lens[id] ? (unsigned char)t->vocab[id][d] : 0;
}

/* Narrow [*LO, *HI), entries of the index sharing their first D bytes, to those whose byte
 * at D is C. Entries ending at D (byte 0 there) come first. */
static void narrow(const rnnd_tokenizer *t, size_t *lo, size_t *hi, size_t d, unsigned char c)
{
    size_t a = *lo, b = *hi;
    while (a < b) { /* first entry whose byte at d is >= c */
        size_t mid = a + (b - a) / 2;
        if (at(t, t->sorted[mid], d) < c)
            a = mid + 1;
        else
            b = mid;
    }
    size_t first = a;
    b = *hi;
    while (a < b) { /* first entry whose byte at d is > c */
        size_t mid = a + (b - a) / 2;
        if (at(t, t->sorted[mid], d) <= c)
            a = mid + 1;
        else
            b = mid;
    }
    *lo = first;
    *hi = a;
}

/* The char tokenizer's index: the ids sorted by their strings, and the range of them each
 * first byte selects. -1 when out of memory. */
static int index_vocab(rnnd_tokenizer *t)
{
    size_t n = (size_t)t->n;
    keyed *k = malloc(n * sizeof *k);
    t->sorted = malloc(n * sizeof *t->sorted);
    if (!k || !t->sorted) {
        free(k);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        k[i] = (keyed){t->vocab[i], (int32_t)i};
    qsort(k, n, sizeof *k, keyed_cmp);
    for (size_t i = 0; i < n; i++)
        t->sorted[i] = k[i].id;
    free(k);
    for (unsigned c = 0; c < 256; c++) {
        size_t lo = 0, hi = n;
        narrow(t, &lo, &hi, 0, (unsigned char)c);
        t->first[c][0] = (uint32_t)lo;
        t->first[c][1] = (uint32_t)hi;
    }
    return 0;
}

int rnnd_tokenizer_new(const rnnd_model *m, rnnd_tokenizer **out, char *err, size_t errlen)
{
    const rnnd_model_spec *s = rnnd_model_get_spec(m);
    int kind;

    *out = NULL;
    if (s->input_kind != RNND_INPUT_TOKENS || !s->tokenizer[0])
        return rnnd_fail(RNND_ERR_UNSUPPORTED, err, errlen,
                         "model has no tokenizer: give token ids");
    if (!strcmp(s->tokenizer, "char"))
        kind = TOK_CHAR;
    else if (!strcmp(s->tokenizer, "byte"))
        kind = TOK_BYTE;
    else
        return rnnd_fail(RNND_ERR_UNSUPPORTED, err, errlen, "unknown tokenizer \"%.15s\"",
                         s->tokenizer);
    /* the loader refuses both; checked again because encode indexes by them */
    if (kind == TOK_CHAR && s->n_vocab != s->vocab_size)
        return rnnd_fail(RNND_ERR_UNSUPPORTED, err, errlen, "tokenizer char needs a vocabulary");
    if (kind == TOK_BYTE && s->vocab_size < 256)
        return rnnd_fail(RNND_ERR_UNSUPPORTED, err, errlen,
                         "tokenizer byte needs vocab_size >= 256");

    rnnd_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
    t->kind = kind;
    t->n = s->vocab_size;
    t->max_len = 1;
    for (int b = 0; b < 256; b++)
        t->bytes[b] = (unsigned char)b;
    if (s->n_vocab) {
        size_t n = (size_t)s->n_vocab;
        t->vocab = s->vocab;
        t->lens = malloc(n * sizeof *t->lens);
        if (!t->lens)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            t->lens[i] = strlen(s->vocab[i]);
            if (kind == TOK_CHAR && t->lens[i] > t->max_len)
                t->max_len = t->lens[i];
        }
    }
    if (kind == TOK_CHAR && index_vocab(t))
        goto nomem;
    *out = t;
    return 0;

nomem:
    rnnd_tokenizer_free(t);
    return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
}

void rnnd_tokenizer_free(rnnd_tokenizer *t)
{
    if (!t)
        return;
    free(t->lens);
    free(t->sorted);
    free(t);
}

/* Length of the valid UTF-8 character at P (at most LEN bytes there), or 0 when the bytes
 * there are not one: overlong forms, surrogates, code points above U+10FFFF and truncated
 * sequences are all invalid (RFC 3629). The code point goes to *CP. */
static size_t utf8_char(const unsigned char *p, size_t len, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
        *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        *cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        *cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 (overlong), F5..FF */
    }
    if (len < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        unsigned char b = p[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (b & 0x3F);
    }
    return need;
}

/* The offset of the first invalid UTF-8 byte among LEN, or LEN. */
static size_t utf8_invalid_at(const unsigned char *p, size_t len)
{
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        size_t k = utf8_char(p + i, len - i, &cp);
        if (!k)
            return i;
        i += k;
    }
    return len;
}

/* "no token for ..." naming the character at P: shown as itself when printable, always with
 * its code point. */
static int no_token(const unsigned char *p, size_t len, size_t off, char *err, size_t errlen)
{
    uint32_t cp = 0;
    size_t k = utf8_char(p, len, &cp);
    if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0))
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "byte %zu: no token for U+%04X", off,
                         (unsigned)cp);
    if (cp == '"' || cp == '\\')
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "byte %zu: no token for \"\\%c\" (U+%04X)",
                         off, (char)cp, (unsigned)cp);
    return rnnd_fail(RNND_ERR_INVALID, err, errlen, "byte %zu: no token for \"%.*s\" (U+%04X)", off,
                     (int)k, (const char *)p, (unsigned)cp);
}

/* The longest vocabulary string that TEXT (LEN > 0 bytes) starts with: its id, with its
 * length in *MLEN; -1 when none (the empty string never matches). */
static int32_t longest_match(const rnnd_tokenizer *t, const unsigned char *text, size_t len,
                             size_t *mlen)
{
    size_t lo = t->first[text[0]][0], hi = t->first[text[0]][1]; /* depth 0, from the table */
    int32_t best = -1;

    for (size_t d = 0; d < len && lo < hi; d++) {
        if (d)
            narrow(t, &lo, &hi, d, text[d]);
        /* every entry left matches text[0..d]; one of exactly that length sorts first */
        if (lo < hi && t->lens[t->sorted[lo]] == d + 1) {
            best = t->sorted[lo];
            *mlen = d + 1;
        }
    }
    return best;
}

int rnnd_tokenizer_encode(const rnnd_tokenizer *t, const char *text, size_t len, int32_t *ids,
                          size_t cap, size_t *n, char *err, size_t errlen)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t bad = utf8_invalid_at(p, len), count = 0;

    *n = 0;
    if (bad < len)
        return rnnd_fail(RNND_ERR_INVALID, err, errlen, "byte %zu: invalid UTF-8", bad);
    for (size_t i = 0; i < len;) {
        int32_t id;
        size_t k = 1;
        if (t->kind == TOK_BYTE) {
            id = p[i];
        } else {
            id = longest_match(t, p + i, len - i, &k);
            if (id < 0)
                return no_token(p + i, len - i, i, err, errlen);
        }
        if (count == cap)
            return rnnd_fail(RNND_ERR_LIMIT, err, errlen, "byte %zu: more than %zu tokens", i, cap);
        ids[count++] = id;
        i += k;
    }
    *n = count;
    return 0;
}

size_t rnnd_tokenizer_min_ids(const rnnd_tokenizer *t, size_t len)
{
    return len / t->max_len + (len % t->max_len != 0);
}

const char *rnnd_tokenizer_piece(const rnnd_tokenizer *t, int32_t id, size_t *len)
{
    *len = 0;
    if (id < 0 || id >= t->n)
        return "";
    if (t->kind == TOK_BYTE && id < 256) {
        *len = 1;
        return (const char *)t->bytes + id;
    }
    if (!t->vocab)
        return "";
    *len = t->lens[id];
    return t->vocab[id];
}

/* ---- incremental UTF-8 -------------------------------------------------------------------- */

static const char replacement[3] = {'\xEF', '\xBF', '\xBD'}; /* U+FFFD */

void rnnd_utf8_stream_init(rnnd_utf8_stream *s) { s->npend = 0; }

/* The total length of the character lead byte C starts (0: C cannot start one). */
static size_t lead_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

/* Whether B may follow the held bytes (lead byte LEAD, NPEND held so far). */
static int continues(unsigned char lead, size_t npend, unsigned char b)
{
    unsigned char lo = 0x80, hi = 0xBF;
    if (npend == 1) {
        if (lead == 0xE0)
            lo = 0xA0;
        else if (lead == 0xED)
            hi = 0x9F;
        else if (lead == 0xF0)
            lo = 0x90;
        else if (lead == 0xF4)
            hi = 0x8F;
    }
    return b >= lo && b <= hi;
}

size_t rnnd_utf8_stream_put(rnnd_utf8_stream *s, const char *in, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)in[i];
        if (s->npend) {
            if (continues(s->pend[0], s->npend, b)) {
                s->pend[s->npend++] = b;
                if (s->npend == lead_len(s->pend[0])) {
                    memcpy(out + o, s->pend, s->npend);
                    o += s->npend;
                    s->npend = 0;
                }
                continue;
            }
            /* the held bytes are a maximal invalid subpart: one U+FFFD, then B afresh */
            memcpy(out + o, replacement, 3);
            o += 3;
            s->npend = 0;
        }
        size_t need = lead_len(b);
        if (need == 1) {
            out[o++] = (char)b;
        } else if (need) {
            s->pend[0] = b;
            s->npend = 1;
        } else {
            memcpy(out + o, replacement, 3);
            o += 3;
        }
    }
    return o;
}

size_t rnnd_utf8_stream_flush(rnnd_utf8_stream *s, char *out)
{
    if (!s->npend)
        return 0;
    s->npend = 0;
    memcpy(out, replacement, 3);
    return 3;
}
