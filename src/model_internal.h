/* Shared between model.c (the safetensors container) and model_arch.c (the architecture JSON).
 * Not part of the public interface. */
#ifndef RNND_MODEL_INTERNAL_H
#define RNND_MODEL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "rnnd/json_depth.h"
#include "rnnd/model.h"

#define RNND_MAX_HEADER_BYTES ((uint64_t)64 << 20) /* the JSON header of the file */
#define RNND_MAX_JSON_DEPTH 64                     /* header and architecture JSON */
#define RNND_MAX_TENSOR_DIMS 8

struct rnnd_model {
    atomic_int refs;
    unsigned char *base; /* the whole file image, read into memory; freed at load for half-size
                          * and int8 models (keep_only_f32_tensors) */
    size_t len;
    char *arch_json; /* copy of __metadata__.architecture */
    size_t param_count;
    char digest[65];      /* the state digest (model_digest.c) */
    char file_digest[65]; /* SHA-256 of the file's bytes */
    /* half-size and int8 weights: the matrices as floats, which the spec points at until
     * they are packed (rnnd_model_shared_packs) */
    float *halved;
    float *rest; /* half-size and int8 weights: the F32 tensors, once base is gone */
    /* The packed matrices every net of the model shares (rnnd_model_shared_packs): built
     * once; for a half-size or int8 model the float copy (halved) is then released. */
    pthread_mutex_t packs_mu;
    void *packs;
    void (*packs_release)(void *);
    int verified; /* the file has __metadata__.verification, parsed below */
    rnnd_verification verification;
    rnnd_model_spec spec; /* spec.vocab is owned (one allocation) */
};

/* Fill ERR with "LABEL: KEY: reason" (control characters replaced so it stays one line) and
 * return STATUS (model_fail.c). */
int rnnd_model_fail(char *err, size_t errlen, const char *label, const char *key, int status,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Parse and validate __metadata__.verification TEXT into OUT (model_verification.c). Errors
 * name the key, "__metadata__.verification.lengths". Allocates nothing. */
int rnnd_verification_parse(const char *text, size_t len, rnnd_verification *out, const char *label,
                            char *err, size_t errlen);

/* Parse and validate the architecture JSON TEXT into SPEC (which the caller zeroed): every
 * field but the weight pointers. Errors name the key path, "architecture.layers[1].type".
 * On failure nothing stays allocated; on success release with rnnd_arch_release(). */
int rnnd_arch_parse(const char *text, size_t len, rnnd_model_spec *spec, const char *label,
                    char *err, size_t errlen);
void rnnd_arch_release(rnnd_model_spec *spec);

/* One tensor the architecture needs, and where its pointer goes. */
typedef struct rnnd_req_tensor {
    char name[48];
    int ndim;
    int64_t shape[2];
    int matrix; /* read by the gemv kernels: may be stored half-size or int8 */
    const float **dst;
    const float **scale; /* matrices: where an int8 model's row scales go; else NULL */
} rnnd_req_tensor;

/* Upper bound of rnnd_arch_required()'s count: embedding, 12 per layer direction (more than
 * any layer has), 2 per head layer. */
#define RNND_ARCH_MAX_TENSORS (1 + RNND_MAX_LAYERS * 2 * 12 + 2 * RNND_MAX_HEAD_LAYERS)

/* List the tensors SPEC needs into OUT (room for RNND_ARCH_MAX_TENSORS); returns the count.
 * The dst pointers point into SPEC. */
size_t rnnd_arch_required(rnnd_model_spec *spec, rnnd_req_tensor *out);

/* SPEC's state digest (docs/state.md, "The digest") into OUT, 64 lowercase hex digits + NUL.
 * SPEC's weight pointers must be bound. Returns 0 or RNND_ERR_NOMEM. */
int rnnd_model_state_digest_compute(rnnd_model_spec *spec, char out[65]);

#endif
