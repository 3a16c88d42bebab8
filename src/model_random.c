/* Models with random weights for a given architecture: what `rnnd bench` runs, so benchmarks
 * go through the same loader, packing and kernels as served models. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "model_internal.h"
#include "rnnd/buf.h"
#include "rnnd/model.h"
#include "rnnd/status.h"

/* xorshift64*: uniform [-scale, scale) */
static float next_uniform(unsigned long long *s, float scale)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    unsigned long long r = *s * 2685821657736338717ULL;
    return ((float)(r >> 40) / 16777216.0f * 2.0f - 1.0f) * scale;
}

int rnnd_model_random(const char *arch_json, unsigned seed, float scale, rnnd_model **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    rnnd_model_spec *spec = calloc(1, sizeof *spec);
    rnnd_req_tensor *req = malloc(RNND_ARCH_MAX_TENSORS * sizeof *req);
    if (!spec || !req) {
        free(spec);
        free(req);
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    int rc = rnnd_arch_parse(arch_json, strlen(arch_json), spec, "random", err, errlen);
    if (rc) {
        free(spec);
        free(req);
        return rc;
    }
    size_t n = rnnd_arch_required(spec, req), data_len = 0;
    size_t *offs = malloc((n ? n : 1) * sizeof *offs); /* each tensor's first float */
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__",
                        json_pack("{s:s,s:s,s:s}", "format", "rnnd", "format_version", "1",
                                  "architecture", arch_json));
    for (size_t i = 0; i < n; i++) {
        size_t count = 1;
        json_t *shape = json_array();
        for (int d = 0; d < req[i].ndim; d++) {
            count *= (size_t)req[i].shape[d];
            json_array_append_new(shape, json_integer(req[i].shape[d]));
        }
        json_object_set_new(hdr, req[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", "F32", "shape", shape,
                                      "data_offsets", (json_int_t)data_len,
                                      (json_int_t)(data_len + count * 4)));
        offs[i] = data_len / 4;
        data_len += count * 4;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hlen = text ? strlen(text) : 0;
    size_t padded = (hlen + 7) & ~(size_t)7;
    unsigned char *img = text && offs ? malloc(8 + padded + data_len) : NULL;
    if (!img) {
        free(text);
        free(offs);
        rnnd_arch_release(spec);
        free(spec);
        free(req);
        snprintf(err, errlen, "out of memory for %zu bytes of weights", data_len);
        return RNND_ERR_NOMEM;
    }
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)((unsigned long long)padded >> (8 * i));
    memcpy(img + 8, text, hlen);
    memset(img + 8 + hlen, ' ', padded - hlen);
    unsigned long long st = 0x9E3779B97F4A7C15ULL ^ seed;
    unsigned char *w = img + 8 + padded; /* the tensors, little-endian float32 */
    for (size_t i = 0; i < data_len / 4; i++) {
        float f = next_uniform(&st, scale);
        memcpy(w + i * sizeof f, &f, sizeof f);
    }
    /* a clockwork R must be zero below its block diagonal (the loader refuses it otherwise) */
    for (size_t i = 0; i < n; i++) {
        for (int l = 0; l < spec->n_layers; l++) {
            const rnnd_layer_spec *L = &spec->layers[l];
            for (int d = 0; d < L->num_directions; d++) {
                if (L->cell != RNND_CELL_CLOCKWORK || req[i].dst != &L->w[d].R)
                    continue;
                size_t H = (size_t)L->hidden, hm = H / (size_t)L->n_periods;
                for (size_t r = 0; r < H; r++)
                    memset(w + (offs[i] + r * H) * sizeof(float), 0, (r / hm) * hm * sizeof(float));
            }
        }
    }
    rc = rnnd_model_from_buffer(img, 8 + padded + data_len, "random", out, err, errlen);
    free(img);
    free(text);
    free(offs);
    rnnd_arch_release(spec);
    free(spec);
    free(req);
    return rc;
}
