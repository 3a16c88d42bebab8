/* Reading a model file: map it, validate the safetensors container field by field before
 * touching any weight (docs/model-format.md, "Validation"), point the spec at the weights.
 * The architecture JSON itself is model_arch.c's job. */
#include "model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "rnnd/status.h"
#include "half.h"
#include "model_sniff.h"
#include "quant8.h"
#include "sha256.h"

/* Tensors are used in place as float arrays: the file's byte order must be the host's. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rnnd maps little-endian float tensors in place: big-endian hosts are not supported"
#endif

/* One entry of the header's tensor table, after its own checks. */
typedef struct tentry {
    const char *name; /* owned by the header json_t */
    int ndim;
    int64_t shape[RNND_MAX_TENSOR_DIMS];
    uint64_t count;      /* elements */
    int dtype;           /* enum rnnd_weights: F32, BF16, F16 or I8 */
    uint64_t begin, end; /* relative to the data buffer */
    int used;
} tentry;

typedef struct lctx {
    const char *label;
    char *err;
    size_t errlen;
} lctx;

#define BAD(c, key, ...) \
    rnnd_model_fail((c)->err, (c)->errlen, (c)->label, (key), RNND_ERR_FORMAT, __VA_ARGS__)
#define NOMEM(c) \
    rnnd_model_fail((c)->err, (c)->errlen, (c)->label, "memory", RNND_ERR_NOMEM, "out of memory")

static const char *const entry_keys[] = {"dtype", "shape", "data_offsets"};
/* safetensors' names, indexed by enum rnnd_weights */
static const char *const dtype_names[] = {"F32", "BF16", "F16", "I8"};
static const char *const half_names[] = {"float32", "bfloat16", "float16", "int8"};

static int check_entry(lctx *c, const char *name, json_t *v, uint64_t data_len, tentry *t)
{
    t->name = name;
    if (!json_is_object(v))
        return BAD(c, name, "tensor entry is not an object");
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return BAD(c, name, "unknown field \"%.40s\" in the tensor entry", k);
    }
    for (int i = 0; i < 3; i++)
        if (!json_object_get(v, entry_keys[i]))
            return BAD(c, name, "missing %s", entry_keys[i]);

    const json_t *dtype = json_object_get(v, "dtype");
    if (!json_is_string(dtype))
        return BAD(c, name, "dtype is not a string");
    t->dtype = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(json_string_value(dtype), dtype_names[i]) == 0)
            t->dtype = i;
    if (t->dtype < 0)
        return BAD(c, name, "dtype %.20s is not supported (F32, BF16, F16 or I8)",
                   json_string_value(dtype));
    const uint64_t esize = t->dtype == RNND_WEIGHTS_F32 ? 4 : t->dtype == RNND_WEIGHTS_I8 ? 1 : 2;

    const json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape))
        return BAD(c, name, "shape is not an array");
    if (json_array_size(shape) > RNND_MAX_TENSOR_DIMS)
        return BAD(c, name, "shape has %zu dimensions (at most %d)", json_array_size(shape),
                   RNND_MAX_TENSOR_DIMS);
    t->ndim = (int)json_array_size(shape);
    t->count = 1;
    for (int i = 0; i < t->ndim; i++) {
        const json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return BAD(c, name, "shape[%d] is not a non-negative integer", i);
        t->shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(t->count, (uint64_t)t->shape[i], &t->count))
            return BAD(c, name, "shape's element count overflows");
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(t->count, esize, &bytes))
        return BAD(c, name, "shape's byte size overflows");

    const json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
        return BAD(c, name, "data_offsets is not an array of 2 integers");
    json_int_t b = json_integer_value(json_array_get(offs, 0));
    json_int_t e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < 0)
        return BAD(c, name, "data_offsets [%lld, %lld] has a negative offset", (long long)b,
                   (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end < t->begin)
        return BAD(c, name, "data_offsets end %llu < begin %llu", (unsigned long long)t->end,
                   (unsigned long long)t->begin);
    if (t->end > data_len)
        return BAD(c, name, "data_offsets end %llu is past the end of the data (%llu bytes)",
                   (unsigned long long)t->end, (unsigned long long)data_len);
    if (t->begin % esize)
        return BAD(c, name, "data_offsets begin %llu is not a multiple of %llu",
                   (unsigned long long)t->begin, (unsigned long long)esize);
    if (t->end - t->begin != bytes)
        return BAD(c, name, "data_offsets span %llu bytes, but %llu %s elements need %llu",
                   (unsigned long long)(t->end - t->begin), (unsigned long long)t->count,
                   dtype_names[t->dtype], (unsigned long long)bytes);
    return 0;
}

static int by_begin(const void *a, const void *b)
{
    const tentry *x = *(tentry *const *)a, *y = *(tentry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(tentry *const *)a)->name, (*(tentry *const *)b)->name);
}

static void shape_str(char *buf, size_t len, const int64_t *shape, int ndim)
{
    size_t n = 0;
    buf[0] = '\0';
    n += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

/* Room for every matrix NEED marks (plus, with PER_ROW, one float per row) as floats the
 * model owns (m->halved, 64-byte aligned), or NULL when memory runs out. */
static float *own_matrix_floats(rnnd_model *m, const rnnd_req_tensor *need, tentry *const *bound,
                                size_t nneed, int per_row)
{
    size_t total = 0;
    for (size_t r = 0; r < nneed; r++)
        if (need[r].matrix) /* each fits the file: no overflow */
            total += (size_t)bound[r]->count + (per_row ? (size_t)need[r].shape[0] : 0);
    void *mem = NULL;
    if (total > SIZE_MAX / sizeof(float) - 64 ||
        posix_memalign(&mem, 64, total ? total * sizeof(float) : 64) != 0)
        return NULL;
    m->halved = mem;
    return mem;
}

/* Half-size weights: every matrix NEED marks, stored as F32 (rounded here, to nearest even)
 * or in the architecture's half type (widened, exactly), into one float buffer the model
 * owns; the spec points there. A finite value the type cannot hold is refused, never
 * saturated: the model would silently compute something else. */
static int halve(lctx *c, rnnd_model *m, const rnnd_req_tensor *need, tentry *const *bound,
                 size_t nneed, const unsigned char *data)
{
    const int wt = m->spec.weights;
    float *dst = own_matrix_floats(m, need, bound, nneed, 0);
    if (!dst)
        return NOMEM(c);
    for (size_t r = 0; r < nneed; r++) {
        if (!need[r].matrix)
            continue;
        const tentry *e = bound[r];
        const unsigned char *src = data + e->begin;
        for (size_t i = 0; i < (size_t)e->count; i++) {
            if (e->dtype == RNND_WEIGHTS_F32) {
                float v;
                memcpy(&v, src + 4 * i, sizeof v);
                float h = wt == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32(rnnd_f32_to_bf16(v))
                                                  : rnnd_f16_to_f32(rnnd_f32_to_f16(v));
                if (isinf(h) && !isinf(v))
                    return BAD(c, e->name,
                               "element %zu: value %.9g out of %s range (largest "
                               "finite %.9g)",
                               i, (double)v, half_names[wt],
                               wt == RNND_WEIGHTS_BF16 ? 3.38953139e38 : 65504.0);
                dst[i] = h;
            } else {
                uint16_t u;
                memcpy(&u, src + 2 * i, sizeof u);
                dst[i] = wt == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32(u) : rnnd_f16_to_f32(u);
            }
        }
        *need[r].dst = dst;
        dst += e->count;
    }
    return 0;
}

/* NAME ends in ".scale": the row scales an I8 matrix needs beside it. */
static int is_scale_tensor(const char *name)
{
    size_t n = strlen(name);
    return n > 6 && strcmp(name + n - 6, ".scale") == 0;
}

/* An I8 matrix's row scales: NAME.scale, F32 [rows], among the N tensors of IDX (sorted by
 * name); marked used and kept in *OUT. Their values are checked when they are copied. */
static int bind_scale(lctx *c, tentry **idx, size_t n, const rnnd_req_tensor *need, tentry **out)
{
    char name[64];
    snprintf(name, sizeof name, "%s.scale", need->name);
    tentry key = {.name = name}, *kp = &key;
    tentry **hit = bsearch(&kp, idx, n, sizeof *idx, by_name);
    if (!hit)
        return BAD(c, name, "missing: the I8 matrix %s needs its row scales, F32 [%lld]",
                   need->name, (long long)need->shape[0]);
    tentry *e = *hit;
    if (e->dtype != RNND_WEIGHTS_F32 || e->ndim != 1 || e->shape[0] != need->shape[0])
        return BAD(c, name, "row scales must be F32 [%lld] (one per row of %s)",
                   (long long)need->shape[0], need->name);
    e->used = 1;
    *out = e;
    return 0;
}

/* int8 weights (docs/model-format.md, "int8 weights"): every matrix NEED marks becomes its
 * integers q as floats, and its row scales, in one buffer the model owns; the spec points
 * there. An I8 matrix is copied (-128 refused) with its NAME.scale (finite, >= 0); an F32
 * one is quantized here by the same rule as the converter's, its values finite. */
static int quantize(lctx *c, rnnd_model *m, const rnnd_req_tensor *need, tentry *const *bound,
                    tentry *const *scales, size_t nneed, const unsigned char *data)
{
    float *dst = own_matrix_floats(m, need, bound, nneed, 1); /* q, then the row's scales */
    if (dst == NULL)
        return NOMEM(c);
    for (size_t r = 0; r < nneed; r++) {
        const tentry *e = bound[r];
        if (!need[r].matrix)
            continue;
        const size_t rows = (size_t)need[r].shape[0], cols = (size_t)need[r].shape[1];
        const unsigned char *src = data + e->begin;
        /* only a layer after a bidirectional one of H > 32768 (or its head) is that wide;
         * beyond it the int32 sums of the kernels (docs/kernels.md) could overflow */
        if (cols > 65536)
            return BAD(c, e->name, "%zu columns: an int8 matrix has at most 65536", cols);
        float *q = dst, *s = dst + e->count;
        if (e->dtype == RNND_WEIGHTS_I8) {
            for (size_t i = 0; i < (size_t)e->count; i++) {
                int8_t v = (int8_t)src[i];
                if (v == -128)
                    return BAD(c, e->name,
                               "element %zu: -128 (int8 weights are symmetric: -127 to 127)", i);
                q[i] = (float)v;
            }
            const unsigned char *ss = data + scales[r]->begin;
            for (size_t j = 0; j < rows; j++) {
                memcpy(&s[j], ss + 4 * j, sizeof(float));
                /* past FLT_MAX / 127 a weight of 127 would be infinite; quantizing a
                 * finite matrix never gives more */
                if (!(s[j] >= 0.0f) || !(s[j] <= FLT_MAX / 127.0f))
                    return BAD(c, scales[r]->name,
                               "element %zu: %.9g is not a scale (finite, >= 0 and at most "
                               "FLT_MAX / 127 = %.9g, so that 127 times it is finite)",
                               j, (double)s[j], (double)(FLT_MAX / 127.0f));
            }
        } else {
            for (size_t j = 0; j < rows; j++) {
                float *row = q + j * cols;
                memcpy(row, src + 4 * j * cols, cols * sizeof(float));
                for (size_t k = 0; k < cols; k++)
                    if (!isfinite(row[k]))
                        return BAD(c, e->name,
                                   "element %zu: %.9g (an int8 matrix must be finite to be "
                                   "quantized)",
                                   j * cols + k, (double)row[k]);
                s[j] = rnnd_q8_scale(rnnd_q8_absmax_bits(row, cols));
                for (size_t k = 0; k < cols; k++)
                    row[k] = (float)rnnd_q8_one(row[k], s[j]);
            }
        }
        *need[r].dst = q;
        *need[r].scale = s;
        dst += e->count + rows;
    }
    return 0;
}

/* NAME is layers.L.D.X with X one of a depth gate's tensors. */
static int is_depth_gate_tensor(const char *name)
{
    int l, d, end = 0;
    char what[4];
    if (sscanf(name, "layers.%d.%d.%3[DclbD]%n", &l, &d, what, &end) != 3 || name[end])
        return 0;
    return !strcmp(what, "D") || !strcmp(what, "Dc") || !strcmp(what, "Dl") || !strcmp(what, "Db");
}

/* Match the tensor table T (N entries, all individually valid) against what the spec
 * needs, and point the spec at the data. */
/* A clockwork module k reads only modules j >= k: the kernels skip R's blocks below the
 * block diagonal, so a file with anything else there would compute something other than
 * what it says. Refused rather than silently ignored. */
static int check_clock_blocks(lctx *c, const rnnd_model_spec *s)
{
    for (int l = 0; l < s->n_layers; l++) {
        const rnnd_layer_spec *L = &s->layers[l];
        if (L->cell != RNND_CELL_CLOCKWORK)
            continue;
        size_t H = (size_t)L->hidden, hm = H / (size_t)L->n_periods;
        for (int d = 0; d < L->num_directions; d++) {
            for (size_t i = hm; i < H; i++) {
                size_t k = i / hm;
                for (size_t j = 0; j < k * hm; j++) {
                    float v = L->w[d].R[i * H + j];
                    if (v == 0.0f)
                        continue;
                    char name[48];
                    snprintf(name, sizeof name, "layers.%d.%d.R", l, d);
                    return BAD(c, name,
                               "element [%zu, %zu] is %.9g, but a clockwork module "
                               "reads only itself and the modules after it: R[i, j] must be 0 "
                               "when j's module (j / %zu) is below i's (i / %zu)",
                               i, j, (double)v, hm, hm);
                }
            }
        }
    }
    return 0;
}

/* Every element of E finite: a NaN or infinity in a weight makes every output that reads
 * it non-finite, so each request would fail numeric_error, blaming its inputs (trial 31).
 * The converter refuses such weights too. */
static int check_finite(lctx *c, const tentry *e, const unsigned char *src)
{
    for (size_t i = 0; i < (size_t)e->count; i++) {
        float v;
        if (e->dtype == RNND_WEIGHTS_F32) {
            memcpy(&v, src + 4 * i, sizeof v);
        } else if (e->dtype == RNND_WEIGHTS_BF16 || e->dtype == RNND_WEIGHTS_F16) {
            uint16_t u;
            memcpy(&u, src + 2 * i, sizeof u);
            v = e->dtype == RNND_WEIGHTS_BF16 ? rnnd_bf16_to_f32(u) : rnnd_f16_to_f32(u);
        } else {
            return 0; /* I8: integers */
        }
        if (!isfinite(v))
            return BAD(c, e->name, "element %zu: %.9g (a model's numbers must be finite)", i,
                       (double)v);
    }
    return 0;
}

static int bind_tensors(lctx *c, rnnd_model *m, tentry *t, size_t n, const unsigned char *data)
{
    int rc = 0;
    tentry **idx = malloc((n ? n : 1) * sizeof *idx);
    rnnd_req_tensor *need = malloc(RNND_ARCH_MAX_TENSORS * sizeof *need);
    tentry **bound = malloc(RNND_ARCH_MAX_TENSORS * sizeof *bound);
    tentry **scales = calloc(RNND_ARCH_MAX_TENSORS, sizeof *scales); /* int8: NAME.scale */
    if (!idx || !need || !bound || !scales) {
        rc = NOMEM(c);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = &t[i];

    /* overlaps: after sorting by begin, each non-empty range must start at or after the
     * furthest end seen so far */
    qsort(idx, n, sizeof *idx, by_begin);
    const tentry *far = NULL;
    for (size_t i = 0; i < n; i++) {
        if (idx[i]->begin == idx[i]->end)
            continue;
        if (far && idx[i]->begin < far->end) {
            rc = BAD(c, idx[i]->name, "data [%llu, %llu) overlaps %s [%llu, %llu)",
                     (unsigned long long)idx[i]->begin, (unsigned long long)idx[i]->end, far->name,
                     (unsigned long long)far->begin, (unsigned long long)far->end);
            goto out;
        }
        if (!far || idx[i]->end > far->end)
            far = idx[i];
    }

    qsort(idx, n, sizeof *idx, by_name);
    size_t nneed = rnnd_arch_required(&m->spec, need);
    for (size_t r = 0; r < nneed; r++) {
        tentry key = {.name = need[r].name}, *kp = &key;
        tentry **hit = n ? bsearch(&kp, idx, n, sizeof *idx, by_name) : NULL;
        if (!hit) {
            rc = BAD(c, need[r].name, "missing: the architecture needs this tensor");
            goto out;
        }
        tentry *e = *hit;
        int same = e->ndim == need[r].ndim;
        for (int d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == need[r].shape[d];
        if (!same) {
            char got[96], want[64];
            shape_str(got, sizeof got, e->shape, e->ndim);
            shape_str(want, sizeof want, need[r].shape, need[r].ndim);
            rc = BAD(c, e->name, "shape %s, but the architecture needs %s", got, want);
            goto out;
        }
        if (e->dtype != RNND_WEIGHTS_F32 && !need[r].matrix) {
            rc = BAD(c, e->name,
                     "dtype %s: only the weight matrices (W, R, proj, V, D, "
                     "a head linear's weight) may be half-size or int8; this tensor must be F32",
                     dtype_names[e->dtype]);
            goto out;
        }
        if (e->dtype != RNND_WEIGHTS_F32 && e->dtype != m->spec.weights) {
            rc = BAD(c, e->name, "dtype %s does not match the architecture's weights \"%s\"",
                     dtype_names[e->dtype], rnnd_weights_name(m->spec.weights));
            goto out;
        }
        if ((rc = check_finite(c, e, data + e->begin)))
            goto out;
        e->used = 1;
        bound[r] = e;
        *need[r].dst = (const float *)(const void *)(data + e->begin);
        m->param_count += (size_t)e->count;
        if (e->dtype == RNND_WEIGHTS_I8 && (rc = bind_scale(c, idx, n, &need[r], &scales[r])))
            goto out;
    }
    for (size_t i = 0; i < n; i++) { /* header order, so the report is predictable */
        if (!t[i].used) {
            int l, d, end = 0;
            char what[4];
            if (sscanf(t[i].name, "layers.%d.%d.%3[Rb]%n", &l, &d, what, &end) == 3 &&
                t[i].name[end] == '\0' && (!strcmp(what, "R") || !strcmp(what, "Rb")) && l >= 0 &&
                l < m->spec.n_layers && rnnd_cell_is_min(m->spec.layers[l].cell))
                rc = BAD(c, t[i].name,
                         "unknown tensor: a %s layer has no recurrent weights "
                         "(its gates read only the input: W and Wb)",
                         rnnd_cell_name(m->spec.layers[l].cell));
            else if (is_scale_tensor(t[i].name))
                rc = BAD(c, t[i].name,
                         "unknown tensor: only an I8 weight matrix of an int8 model has row "
                         "scales (NAME.scale)");
            else if (is_depth_gate_tensor(t[i].name))
                rc = BAD(c, t[i].name,
                         "unknown tensor: D, Dc, Dl and Db belong to an lstm "
                         "layer with \"depth_gate\": true, which this layer is not");
            else
                rc = BAD(c, t[i].name, "unknown tensor: the architecture does not use it");
            goto out;
        }
    }
    if (m->spec.weights == RNND_WEIGHTS_I8)
        rc = quantize(c, m, need, bound, scales, nneed, data);
    else if (m->spec.weights != RNND_WEIGHTS_F32)
        rc = halve(c, m, need, bound, nneed, data);
    if (rc == 0)
        rc = check_clock_blocks(c, &m->spec);
out:
    free(idx);
    free(need);
    free(bound);
    free(scales);
    return rc;
}

static int check_metadata(lctx *c, rnnd_model *m, const json_t *hdr, const char **arch,
                          size_t *arch_len)
{
    json_t *meta = json_object_get(hdr, "__metadata__");
    if (!meta)
        return BAD(c, "__metadata__", "missing");
    if (!json_is_object(meta))
        return BAD(c, "__metadata__", "not an object");
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v)) {
            char key[96];
            snprintf(key, sizeof key, "__metadata__.%s", k);
            return BAD(c, key, "not a string (safetensors metadata maps strings to strings)");
        }
    }
    const json_t *fmt = json_object_get(meta, "format");
    if (!fmt)
        return BAD(c, "__metadata__.format", "missing");
    if (strcmp(json_string_value(fmt), "rnnd") != 0)
        return BAD(c, "__metadata__.format", "\"%.40s\" is not \"rnnd\"", json_string_value(fmt));
    const json_t *ver = json_object_get(meta, "format_version");
    if (!ver)
        return BAD(c, "__metadata__.format_version", "missing");
    if (strcmp(json_string_value(ver), "1") != 0)
        return BAD(c, "__metadata__.format_version",
                   "unsupported version \"%.20s\" (this rnnd reads \"1\")", json_string_value(ver));
    const json_t *a = json_object_get(meta, "architecture");
    if (!a)
        return BAD(c, "__metadata__.architecture", "missing");
    *arch = json_string_value(a);
    *arch_len = json_string_length(a);
    const json_t *vr = json_object_get(meta, "verification");
    if (vr) {
        int rc = rnnd_verification_parse(json_string_value(vr), json_string_length(vr),
                                         &m->verification, c->label, c->err, c->errlen);
        if (rc)
            return rc;
        m->verified = 1;
    }
    return 0;
}

/* A half-size or int8 model computes from its own copy of the matrices (and, once packed,
 * from the packs alone): of the file image it still needs only the F32 tensors. Copy those
 * into M->rest, each 64-byte aligned, and free the image. */
static int keep_only_f32_tensors(lctx *c, rnnd_model *m)
{
    rnnd_req_tensor *need = malloc(RNND_ARCH_MAX_TENSORS * sizeof *need);
    if (!need)
        return NOMEM(c);
    size_t nneed = rnnd_arch_required(&m->spec, need), total = 0;
    for (size_t r = 0; r < nneed; r++) {
        size_t count = 1;
        for (int d = 0; d < need[r].ndim; d++)
            count *= (size_t)need[r].shape[d];
        if (!need[r].matrix) /* 16 floats: each tensor starts on a cache line */
            total += (count + 15) & ~(size_t)15;
    }
    void *mem = NULL;
    if (posix_memalign(&mem, 64, (total ? total : 16) * sizeof(float)) != 0) {
        free(need);
        return NOMEM(c);
    }
    float *dst = mem;
    for (size_t r = 0; r < nneed; r++) {
        size_t count = 1;
        for (int d = 0; d < need[r].ndim; d++)
            count *= (size_t)need[r].shape[d];
        if (need[r].matrix || *need[r].dst == NULL)
            continue;
        memcpy(dst, *need[r].dst, count * sizeof(float));
        *need[r].dst = dst;
        dst += (count + 15) & ~(size_t)15;
    }
    free(need);
    m->rest = mem;
    free(m->base);
    m->base = NULL;
    return 0;
}

/* Validate M->base[0..M->len) and fill the rest of M. On failure the caller frees M. */
static int load_rnnd(rnnd_model *m, const char *label, char *err, size_t errlen)
{
    lctx c = {label, err, errlen};
    if (m->len < 8)
        return BAD(&c, "header_length",
                   "file is %zu bytes, too short for the 8-byte header "
                   "length",
                   m->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | m->base[i];
    if (hlen > RNND_MAX_HEADER_BYTES)
        return BAD(&c, "header_length", "%llu bytes is over the %llu-byte limit",
                   (unsigned long long)hlen, (unsigned long long)RNND_MAX_HEADER_BYTES);
    if (hlen > m->len - 8)
        return BAD(&c, "header_length",
                   "%llu bytes runs past the end of the file "
                   "(%zu bytes)",
                   (unsigned long long)hlen, m->len);
    if ((8 + hlen) % 4)
        return BAD(&c, "header_length",
                   "data buffer starts at byte %llu, not a multiple "
                   "of 4",
                   (unsigned long long)(8 + hlen));
    const char *text = (const char *)m->base + 8;
    if (rnnd_json_depth_check(text, hlen, RNND_MAX_JSON_DEPTH) != 0)
        return BAD(&c, "header", "JSON nested deeper than %d levels", RNND_MAX_JSON_DEPTH);

    json_error_t jerr;
    json_t *hdr = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr)
        return BAD(&c, "header", "invalid JSON at byte %d: %s", jerr.position, jerr.text);
    int rc = 0;
    tentry *t = NULL;
    if (!json_is_object(hdr)) {
        rc = BAD(&c, "header", "not a JSON object");
        goto out;
    }
    const char *arch = NULL;
    size_t arch_len = 0;
    if ((rc = check_metadata(&c, m, hdr, &arch, &arch_len)))
        goto out;
    if ((rc = rnnd_arch_parse(arch, arch_len, &m->spec, label, err, errlen)))
        goto out;
    m->arch_json = malloc(arch_len + 1);
    size_t n = json_object_size(hdr);
    t = calloc(n ? n : 1, sizeof *t);
    if (!m->arch_json || !t) {
        rc = NOMEM(&c);
        goto out;
    }
    memcpy(m->arch_json, arch, arch_len + 1);

    uint64_t data_len = m->len - 8 - hlen;
    size_t nt = 0;
    const char *k;
    json_t *v;
    json_object_foreach(hdr, k, v) {
        if (strcmp(k, "__metadata__") == 0)
            continue;
        if ((rc = check_entry(&c, k, v, data_len, &t[nt])))
            goto out;
        nt++;
    }
    if ((rc = bind_tensors(&c, m, t, nt, m->base + 8 + hlen)))
        goto out;
    if (rnnd_model_state_digest_compute(&m->spec, m->digest)) {
        rc = NOMEM(&c);
        goto out;
    }
    rnnd_sha256_hex(m->base, m->len, m->file_digest);
    if (m->spec.weights != RNND_WEIGHTS_F32)
        rc = keep_only_f32_tensors(&c, m);
out:
    free(t);
    json_decref(hdr);
    return rc;
}

/* A file of another format fails above on a field it does not have (a header length made of
 * ONNX or zip bytes); then name the format instead. Only refused files are sniffed, so a
 * valid model can never be taken for something else. */
static int load(rnnd_model *m, const char *label, char *err, size_t errlen)
{
    int rc = load_rnnd(m, label, err, errlen);
    if (rc == RNND_ERR_FORMAT)
        rnnd_model_sniff(m->base, m->len, label, err, errlen);
    return rc;
}

static void model_destroy(rnnd_model *m)
{
    if (!m)
        return;
    if (m->packs)
        m->packs_release(m->packs);
    pthread_mutex_destroy(&m->packs_mu);
    free(m->base);
    free(m->halved);
    free(m->rest);
    rnnd_arch_release(&m->spec);
    free(m->arch_json);
    free(m);
}

static rnnd_model *model_alloc(void)
{
    rnnd_model *m = calloc(1, sizeof *m);
    if (m) {
        atomic_init(&m->refs, 1);
        pthread_mutex_init(&m->packs_mu, NULL);
    }
    return m;
}

int rnnd_model_open(const char *path, rnnd_model **out, char *err, size_t errlen)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO for reading must not wait for a writer (the main thread
     * loads models, and a reload would block signals and the expiry sweep); it has no effect
     * on the regular file read_fd insists on */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return rnnd_model_fail(err, errlen, path, "file",
                               errno == ENOMEM ? RNND_ERR_NOMEM : RNND_ERR_IO, "cannot open: %s",
                               strerror(errno));
    int rc = rnnd_model_read_fd(fd, path, out, err, errlen);
    close(fd);
    return rc;
}

int rnnd_model_read_fd(int fd, const char *label, rnnd_model **out, char *err, size_t errlen)
{
    const char *path = label;
    *out = NULL;
    /* every check is on the open file itself, so a path swapped after the open cannot
     * change what is read */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return rnnd_model_fail(err, errlen, path, "file", RNND_ERR_IO, "cannot stat: %s",
                               strerror(errno));
    if (!S_ISREG(st.st_mode))
        return rnnd_model_fail(err, errlen, path, "file", RNND_ERR_IO, "not a regular file");
    rnnd_model *m = model_alloc();
    if (!m)
        return rnnd_model_fail(err, errlen, path, "memory", RNND_ERR_NOMEM, "out of memory");
    /* Read, not mapped: the model must not change under the daemon when its file is
     * rewritten or truncated in place (a reload then sees the new file; loaded versions keep
     * their bytes), and validation and digest see exactly the bytes that are used. */
    size_t want = (size_t)st.st_size;
    m->base = malloc(want ? want : 1);
    if (!m->base) {
        free(m);
        return rnnd_model_fail(err, errlen, path, "memory", RNND_ERR_NOMEM, "out of memory");
    }
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, (char *)m->base + got, want - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            model_destroy(m);
            return rnnd_model_fail(err, errlen, path, "file", RNND_ERR_IO, "cannot read: %s",
                                   strerror(e));
        }
        if (n == 0)
            break; /* shrunk meanwhile: load() judges what is there */
        got += (size_t)n;
    }
    m->len = got;
    int rc = load(m, path, err, errlen);
    if (rc) {
        model_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

int rnnd_model_from_buffer(const void *data, size_t len, const char *label, rnnd_model **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (!label)
        label = "(buffer)";
    rnnd_model *m = model_alloc();
    void *copy = NULL;
    /* 64-byte alignment: the floats inside are then as aligned as in a page mapping */
    if (!m || posix_memalign(&copy, 64, len ? len : 1) != 0) {
        free(m);
        return rnnd_model_fail(err, errlen, label, "memory", RNND_ERR_NOMEM, "out of memory");
    }
    if (len)
        memcpy(copy, data, len);
    m->base = copy;
    m->len = len;
    int rc = load(m, label, err, errlen);
    if (rc) {
        model_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

rnnd_model *rnnd_model_ref(rnnd_model *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void rnnd_model_unref(rnnd_model *m)
{
    /* release/acquire so every user's reads happen before the free */
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        model_destroy(m);
}

const rnnd_model_spec *rnnd_model_get_spec(const rnnd_model *m) { return &m->spec; }

/* Only the packs are read from here on: the float copy of a half-size or int8 model's
 * matrices goes (the spec's pointers to it with it; the digest was taken at load). */
static void drop_float_matrices(rnnd_model *m)
{
    rnnd_req_tensor *need = malloc(RNND_ARCH_MAX_TENSORS * sizeof *need);
    if (!need)
        return; /* kept: more memory, same results */
    size_t nneed = rnnd_arch_required(&m->spec, need);
    for (size_t r = 0; r < nneed; r++) {
        if (!need[r].matrix)
            continue;
        *need[r].dst = NULL;
        if (need[r].scale)
            *need[r].scale = NULL;
    }
    free(need);
    free(m->halved);
    m->halved = NULL;
}

int rnnd_model_set_compute(rnnd_model *m, int compute)
{
    if ((compute != RNND_COMPUTE_F32 && compute != RNND_COMPUTE_BF16) ||
        (compute == RNND_COMPUTE_BF16 && m->spec.weights != RNND_WEIGHTS_BF16))
        return RNND_ERR_INVALID;
    int rc = 0;
    pthread_mutex_lock(&m->packs_mu);
    if (m->packs && m->spec.compute != compute)
        rc = RNND_ERR_INVALID; /* its nets already run the other mode */
    else
        m->spec.compute = compute;
    pthread_mutex_unlock(&m->packs_mu);
    return rc;
}

int rnnd_model_shared_packs(rnnd_model *m, int (*build)(const rnnd_model_spec *s, void **out),
                            void (*release)(void *), void **out)
{
    int rc = 0;
    pthread_mutex_lock(&m->packs_mu);
    if (!m->packs && (rc = build(&m->spec, &m->packs)) == 0) {
        m->packs_release = release;
        if (m->spec.weights != RNND_WEIGHTS_F32)
            drop_float_matrices(m);
    }
    *out = m->packs;
    pthread_mutex_unlock(&m->packs_mu);
    return rc;
}

const char *rnnd_model_digest(const rnnd_model *m) { return m->digest; }

const rnnd_verification *rnnd_model_verification(const rnnd_model *m)
{
    return m->verified ? &m->verification : NULL;
}

const char *rnnd_model_file_digest(const rnnd_model *m) { return m->file_digest; }

const char *rnnd_model_architecture_json(const rnnd_model *m) { return m->arch_json; }

size_t rnnd_model_param_count(const rnnd_model *m) { return m->param_count; }

int rnnd_model_output_dim(const rnnd_model *m)
{
    const rnnd_model_spec *s = &m->spec;
    if (s->has_head)
        return s->head_out;
    const rnnd_layer_spec *L = &s->layers[s->n_layers - 1];
    return L->out_dim * L->num_directions;
}

size_t rnnd_model_state_floats(const rnnd_model *m)
{
    size_t n = 0;
    for (int l = 0; l < m->spec.n_layers; l++) {
        const rnnd_layer_spec *L = &m->spec.layers[l];
        size_t per = (size_t)L->out_dim + rnnd_layer_extra_state(L);
        n += per * (size_t)L->num_directions;
    }
    return n;
}

int rnnd_model_is_stateful(const rnnd_model *m)
{
    for (int l = 0; l < m->spec.n_layers; l++)
        if (m->spec.layers[l].direction != RNND_DIR_FORWARD)
            return 0;
    return 1;
}
