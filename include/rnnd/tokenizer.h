/* Text <-> token ids for token models that carry a vocabulary and a tokenizer kind
 * (docs/api.md, "Text models").
 *
 * "char": the vocabulary strings are the pieces; text (UTF-8) is split greedily, at each
 *   position taking the longest vocabulary string that matches there (for a vocabulary of
 *   single characters: one token per Unicode code point). Ties cannot happen: strings are
 *   compared byte for byte and the loader keeps the first of duplicate strings.
 * "byte": token id = byte value (0..255) of the UTF-8 text; ids >= 256, if the vocabulary
 *   has them, are special tokens that decode to their vocabulary string and are never
 *   produced by encode.
 * Decoding a token gives its bytes; rnnd_utf8_stream turns a run of pieces into valid UTF-8
 * without ever splitting a character, which a byte model's output may do. */
#ifndef RNND_TOKENIZER_H
#define RNND_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "rnnd/model.h"

typedef struct rnnd_tokenizer rnnd_tokenizer;

/* The tokenizer of model M (which must outlive it). RNND_ERR_UNSUPPORTED, with ERR like
 * "model has no tokenizer: give token ids", when M is not a token model with a tokenizer;
 * RNND_ERR_NOMEM. */
int rnnd_tokenizer_new(const rnnd_model *m, rnnd_tokenizer **out, char *err, size_t errlen);
void rnnd_tokenizer_free(rnnd_tokenizer *t); /* NULL is a no-op */

/* Encode LEN bytes of TEXT (need not be NUL-terminated) into at most CAP ids (CAP >= LEN
 * always suffices). Returns 0 with *N set; RNND_ERR_INVALID with ERR naming the byte offset:
 * "byte 7: invalid UTF-8", "byte 3: no token for \"é\" (U+00E9)"; RNND_ERR_LIMIT when more
 * than CAP ids would be needed. An empty text gives *N = 0. */
int rnnd_tokenizer_encode(const rnnd_tokenizer *t, const char *text, size_t len, int32_t *ids,
                          size_t cap, size_t *n, char *err, size_t errlen);

/* The fewest ids any LEN bytes of text can encode into: LEN over the longest vocabulary
 * string's length, rounded up. */
size_t rnnd_tokenizer_min_ids(const rnnd_tokenizer *t, size_t len);

/* The bytes token ID decodes to (*LEN of them, not NUL-terminated for byte tokens); an id
 * out of range or without a string gives an empty piece. */
const char *rnnd_tokenizer_piece(const rnnd_tokenizer *t, int32_t id, size_t *len);

/* Incremental UTF-8: pieces in, complete valid UTF-8 out. Bytes of a character split across
 * pieces are held until it completes; an invalid sequence becomes U+FFFD (EF BF BD). */
typedef struct rnnd_utf8_stream {
    unsigned char pend[4];
    size_t npend;
} rnnd_utf8_stream;

void rnnd_utf8_stream_init(rnnd_utf8_stream *s);
/* Feed LEN bytes; writes the text completed so far to OUT, which must hold 3 * LEN + 3
 * bytes in general (every invalid byte may become a 3-byte U+FFFD), LEN + 8 for valid UTF-8
 * or one byte at a time. Returns the bytes written (no NUL is added). */
size_t rnnd_utf8_stream_put(rnnd_utf8_stream *s, const char *in, size_t len, char *out);
/* End of text: a held incomplete character becomes U+FFFD. OUT holds 8 bytes. */
size_t rnnd_utf8_stream_flush(rnnd_utf8_stream *s, char *out);

#endif
