/* Test helpers shared by the C test suites: an in-memory writer of .rnnd files
 * (docs/model-format.md) and a scratch directory.
 *
 * The writer is deliberately independent of src/model*.c: tests that load what it writes
 * check the loader against a second reading of the format, not against itself. */
#ifndef RNND_TESTUTIL_H
#define RNND_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct tu_file tu_file;

/* A new file whose __metadata__ is {"format": "rnnd", "format_version": "1",
 * "architecture": ARCHITECTURE_JSON} (the text is stored verbatim). Aborts on OOM. */
tu_file *tu_file_new(const char *architecture_json);

/* Append an F32 tensor. DATA holds the product of SHAPE floats, or is NULL: then the tensor
 * is filled with pseudo-random values in [-0.5, 0.5) from a generator seeded once per file
 * with a fixed seed, so the same sequence of calls gives the same bytes. Tensors are laid out
 * in the data buffer in the order they are added. */
void tu_file_add(tu_file *f, const char *name, const int64_t *shape, int ndim, const float *data);

/* Write the file image to PATH. Returns 0 on success, -1 on failure. */
int tu_file_write(const tu_file *f, const char *path);

/* The whole file image, malloc'd (the caller frees it); its length in *LEN. The header is
 * padded with spaces so the data buffer starts at a multiple of 8. */
unsigned char *tu_file_bytes(const tu_file *f, size_t *len);

void tu_file_free(tu_file *f); /* NULL is a no-op */

/* A scratch directory: $RNND_TEST_TMP (created if needed) or a fresh mkdtemp directory.
 * Returns a static buffer; NULL if neither can be had. */
const char *tu_tmpdir(void);

/* Write a complete valid model for ARCH_JSON to PATH: reads the architecture with jansson,
 * derives every tensor the format requires (names and shapes as docs/model-format.md says:
 * embedding, per layer and direction W, R, Wb, Rb, P, proj, V, Vb, D, Dc, Dl, Db, head;
 * mingru and minlstm have no R, Rb; slstm's R is [4H, H / heads]; a clockwork R is zero below
 * its block diagonal) and fills them with
 * uniform [-0.5, 0.5) values from SEED. ARCH_JSON is stored verbatim as the architecture.
 * Returns 0 on success, -1 if ARCH_JSON is not readable enough to derive the tensors or
 * the file cannot be written. */
int tu_write_random_model(const char *path, const char *arch_json, unsigned seed);

/* The same, as an in-memory tu_file (NULL on failure), for tests that add or alter tensors. */
tu_file *tu_random_model(const char *arch_json, unsigned seed);

#endif
