/* Shared set-up of the fuzz harnesses (tests/fuzz/fuzz_*.c): the small models they run
 * inputs against, a scratch folder, and a way to report a broken invariant.
 *
 * Harnesses are built twice: by tests/fuzz/run with clang's libFuzzer and sanitizers, and by
 * make check with the normal compiler, linked with replay.c, to run the saved corpus. Set-up
 * happens on the first input and lives until the process exits: libFuzzer calls
 * LLVMFuzzerTestOneInput millions of times and rebuilding models each time would drown the
 * code under test. */
#ifndef RNND_FUZZ_COMMON_H
#define RNND_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Architectures of the two models every harness uses (docs/model-format.md). TOK: a token
 * model with a "char" tokenizer whose vocabulary has multi-byte and multi-character pieces,
 * a GRU and a head; VEC: a vector model with an LSTM and an RNN layer, no head. Both are
 * forward-only, so sessions and steps work on them. */
#define FZ_ARCH_TOK \
    "{\"format_version\": 1, \"name\": \"fuzz-tok\"," \
    " \"input\": {\"kind\": \"tokens\", \"vocab_size\": 10, \"embedding_dim\": 4}," \
    " \"layers\": [{\"type\": \"gru\", \"hidden_size\": 6}]," \
    " \"head\": {\"out_dim\": 10, \"in_dim\": 6, \"norm\": \"log_softmax\"}," \
    " \"vocab\": [\"a\", \"b\", \"c\", \" \", \"\\u00e9\", \"\\n\", \"ab\", \"\\u20ac\"," \
    " \"xyz\", \"\"], \"tokenizer\": \"char\"}"
#define FZ_ARCH_VEC \
    "{\"format_version\": 1, \"name\": \"fuzz-vec\"," \
    " \"input\": {\"kind\": \"vectors\", \"dim\": 3}," \
    " \"layers\": [{\"type\": \"lstm\", \"hidden_size\": 4}," \
    " {\"type\": \"rnn\", \"hidden_size\": 5}], \"head\": null}"
/* A byte-tokenizer model (ids 0-255 are bytes, 256-257 special pieces). */
#define FZ_ARCH_BYTE \
    "{\"format_version\": 1, \"input\": {\"kind\": \"tokens\", \"vocab_size\": 258," \
    " \"embedding_dim\": 2}, \"layers\": [{\"type\": \"rnn\", \"hidden_size\": 2}]," \
    " \"head\": {\"out_dim\": 258, \"in_dim\": 2}, \"tokenizer\": \"byte\"}"

/* A model's file image (malloc'd, *LEN bytes) for ARCH with random weights from SEED. Aborts
 * when ARCH is not one the test writer understands: a harness bug, not a finding. */
unsigned char *fz_model_bytes(const char *arch, unsigned seed, size_t *len);

/* The model for ARCH, loaded through rnnd_model_from_buffer. Aborts on failure. */
rnnd_model *fz_model(const char *arch, unsigned seed);

/* A net for M with the kernels RNND_ISA (or the CPU) selects. Aborts on failure. */
rnnd_net *fz_net(rnnd_model *m);

/* The snapshot key every snapshot seed is signed with and fuzz_snapshot checks against
 * (RNND_SNAPKEY_BYTES): a constant, so that the fuzzer's inputs reach the parser. */
#define FZ_SNAPSHOT_KEY "rnnd fuzz snapshot key, 32 bytes"

/* A folder of our own under $TMPDIR (or /tmp), created on the first call, removed with its
 * files at exit. Aborts when it cannot be made. */
const char *fz_tmpdir(void);

/* Write LEN bytes of DATA to PATH (truncating). Aborts on failure: the harness cannot go on. */
void fz_write_file(const char *path, const void *data, size_t len);

/* A broken invariant of the code under test: print WHAT and abort, so libFuzzer (or the
 * replay driver) reports the input as a finding. */
#define FZ_CHECK(cond, what) \
    do { \
        if (!(cond)) \
            fz_fail(__FILE__, __LINE__, (what)); \
    } while (0)
void fz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

#endif
