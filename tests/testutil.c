/* Test helpers: an in-memory .rnnd writer and a scratch directory (see testutil.h). */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <jansson.h>

typedef struct tu_tensor {
    char *name;
    int ndim;
    int64_t shape[8];
    size_t count;
    float *data;
} tu_tensor;

struct tu_file {
    char *arch;
    tu_tensor *t;
    size_t n, cap;
    uint64_t rng;
};

#define TU_FIXED_SEED 0x5eed1234abcdULL

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "testutil: out of memory\n");
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

/* splitmix64: tiny, good enough, identical everywhere. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform in [-0.5, 0.5): 24 random bits, exact in float */
static float rng_float(uint64_t *s) { return (float)(rng_next(s) >> 40) / 16777216.0f - 0.5f; }

tu_file *tu_file_new(const char *architecture_json)
{
    tu_file *f = xmalloc(sizeof *f);
    memset(f, 0, sizeof *f);
    f->arch = xstrdup(architecture_json ? architecture_json : "");
    f->rng = TU_FIXED_SEED;
    return f;
}

void tu_file_add(tu_file *f, const char *name, const int64_t *shape, int ndim, const float *data)
{
    if (ndim < 0 || ndim > 8) {
        fprintf(stderr, "testutil: %s: ndim %d out of range\n", name, ndim);
        abort();
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 16;
        tu_tensor *t = realloc(f->t, f->cap * sizeof *t);
        if (!t)
            abort();
        f->t = t;
    }
    tu_tensor *t = &f->t[f->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->ndim = ndim;
    t->count = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->count *= (size_t)shape[i];
    }
    t->data = xmalloc(t->count * sizeof(float));
    for (size_t i = 0; i < t->count; i++)
        t->data[i] = data ? data[i] : rng_float(&f->rng);
}

void tu_file_free(tu_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    free(f->t);
    free(f->arch);
    free(f);
}

static void put_le32(unsigned char *p, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(u >> (8 * i));
}

unsigned char *tu_file_bytes(const tu_file *f, size_t *len)
{
    json_t *hdr = json_object();
    json_t *meta = json_pack("{s:s, s:s, s:s}", "format", "rnnd", "format_version", "1",
                             "architecture", f->arch);
    if (!hdr || !meta)
        abort();
    json_object_set_new(hdr, "__metadata__", meta);
    size_t off = 0;
    for (size_t i = 0; i < f->n; i++) {
        const tu_tensor *t = &f->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        size_t bytes = t->count * 4;
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + bytes));
        if (!e)
            abort();
        json_object_set_new(hdr, t->name, e);
        off += bytes;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    if (!text)
        abort();
    size_t n = strlen(text);
    size_t padded = n;
    while ((8 + padded) % 8)
        padded++;
    size_t total = 8 + padded + off;
    unsigned char *img = xmalloc(total);
    for (int i = 0; i < 8; i++)
        img[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(img + 8, text, n);
    memset(img + 8 + n, ' ', padded - n);
    free(text);
    unsigned char *p = img + 8 + padded;
    for (size_t i = 0; i < f->n; i++)
        for (size_t k = 0; k < f->t[i].count; k++, p += 4)
            put_le32(p, f->t[i].data[k]);
    *len = total;
    return img;
}

int tu_file_write(const tu_file *f, const char *path)
{
    size_t len;
    unsigned char *img = tu_file_bytes(f, &len);
    FILE *fp = fopen(path, "wb");
    int rc = -1;
    if (fp) {
        size_t w = fwrite(img, 1, len, fp);
        if (fclose(fp) == 0 && w == len)
            rc = 0;
    }
    free(img);
    return rc;
}

static int mkdir_p(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

const char *tu_tmpdir(void)
{
    static char dir[4096];
    if (dir[0])
        return dir;
    const char *env = getenv("RNND_TEST_TMP");
    if (env && *env) {
        if (mkdir_p(env) != 0 || strlen(env) >= sizeof dir)
            return NULL;
        strcpy(dir, env);
        return dir;
    }
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/rnnd-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        dir[0] = '\0';
        return NULL;
    }
    return dir;
}

/* ---- random models ---------------------------------------------------------------------- */

static int get_int(const json_t *obj, const char *key, long long dflt, long long *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    return -1;
}

static void add2(tu_file *f, const char *name, long long a, long long b)
{
    int64_t s[2] = {a, b};
    tu_file_add(f, name, s, 2, NULL);
}

static void add1(tu_file *f, const char *name, long long a)
{
    int64_t s[1] = {a};
    tu_file_add(f, name, s, 1, NULL);
}

tu_file *tu_random_model(const char *arch_json, unsigned seed)
{
    json_error_t jerr;
    json_t *a = json_loads(arch_json, 0, &jerr);
    if (!a || !json_is_object(a)) {
        json_decref(a);
        return NULL;
    }
    tu_file *f = tu_file_new(arch_json);
    f->rng = 0x243f6a8885a308d3ULL ^ (uint64_t)seed;
    long long in = -1;
    const json_t *input = json_object_get(a, "input");
    const char *kind = json_string_value(json_object_get(input, "kind"));
    if (kind && strcmp(kind, "tokens") == 0) {
        long long v, e;
        if (get_int(input, "vocab_size", -1, &v) || get_int(input, "embedding_dim", -1, &e) ||
            v < 0 || e < 0)
            goto fail;
        add2(f, "embedding.weight", v, e);
        in = e;
    } else if (kind && strcmp(kind, "vectors") == 0) {
        if (get_int(input, "dim", -1, &in) || in < 0)
            goto fail;
    } else {
        goto fail;
    }
    const json_t *layers = json_object_get(a, "layers");
    if (!json_is_array(layers))
        goto fail;
    size_t l;
    const json_t *layer;
    json_array_foreach(layers, l, layer) {
        const char *type = json_string_value(json_object_get(layer, "type"));
        const char *dir = json_string_value(json_object_get(layer, "direction"));
        long long H, proj, fg, peep, osz, dg;
        if (!type || get_int(layer, "hidden_size", -1, &H) || H < 0 ||
            get_int(layer, "proj_size", 0, &proj) || get_int(layer, "forget_gate", 1, &fg) ||
            get_int(layer, "peepholes", 0, &peep) || get_int(layer, "output_size", 0, &osz) ||
            get_int(layer, "depth_gate", 0, &dg))
            goto fail;
        long long G, out = H, rcols = -1, heads, modules = 0;
        int jordan = 0, lstm = 0, recurrent = 1;
        if (get_int(layer, "heads", 1, &heads) || heads < 1)
            goto fail;
        if (strcmp(type, "mingru") == 0 || strcmp(type, "minlstm") == 0) {
            G = type[3] == 'g' ? 2 : 3; /* rows z, h / f, i, h; no R, Rb */
            recurrent = 0;
        } else if (strcmp(type, "slstm") == 0) {
            G = 4; /* rows i, f, z, o; R block-diagonal [4H, H/K] */
            rcols = H / heads;
        } else if (strcmp(type, "rnn") == 0) {
            G = 1;
        } else if (strcmp(type, "clockwork") == 0) {
            /* R zero below its block diagonal, as the format requires */
            const json_t *p = json_object_get(layer, "periods");
            modules = json_is_array(p) ? (long long)json_array_size(p) : 0;
            if (modules < 1 || H % modules)
                goto fail;
            G = 1;
        } else if (strcmp(type, "gru") == 0) {
            G = 3;
        } else if (strcmp(type, "lstm") == 0) {
            lstm = 1;
            G = fg ? 4 : 3;
            if (proj > 0)
                out = proj;
        } else if (strcmp(type, "jordan") == 0) {
            jordan = 1;
            G = 1;
            out = osz;
        } else {
            goto fail;
        }
        int ndir = dir && strcmp(dir, "bidirectional") == 0 ? 2 : 1;
        for (int d = 0; d < ndir; d++) {
            char name[64];
#define TU_NAME(s) (snprintf(name, sizeof name, "layers.%zu.%d.%s", l, d, s), name)
            add2(f, TU_NAME("W"), G * H, in);
            if (recurrent)
                add2(f, TU_NAME("R"), G * H, rcols >= 0 ? rcols : out);
            if (modules) {
                float *r = f->t[f->n - 1].data;
                long long hm = H / modules;
                for (long long i = 0; i < H; i++)
                    for (long long j = 0; j < (i / hm) * hm; j++)
                        r[i * H + j] = 0.0f;
            }
            add1(f, TU_NAME("Wb"), G * H);
            if (recurrent)
                add1(f, TU_NAME("Rb"), G * H);
            if (lstm && peep)
                add1(f, TU_NAME("P"), 3 * H);
            if (lstm && proj > 0)
                add2(f, TU_NAME("proj"), proj, H);
            if (jordan) {
                add2(f, TU_NAME("V"), out, H);
                add1(f, TU_NAME("Vb"), out);
            }
            if (lstm && dg) {
                add2(f, TU_NAME("D"), H, in);
                add1(f, TU_NAME("Dc"), H);
                add1(f, TU_NAME("Dl"), H);
                add1(f, TU_NAME("Db"), H);
            }
#undef TU_NAME
        }
        in = out * ndir;
    }
    const json_t *head = json_object_get(a, "head");
    if (json_is_object(head)) {
        long long ho, hi;
        if (get_int(head, "out_dim", -1, &ho) || get_int(head, "in_dim", in, &hi) || ho < 0 ||
            hi < 0)
            goto fail;
        const json_t *hl = json_object_get(head, "layers");
        if (!json_is_array(hl)) {
            add2(f, "head.weight", ho, hi);
            add1(f, "head.bias", ho);
        }
        /* head layers (docs/model-format.md, "The head"): tensors per linear and per
         * layernorm with affine (the default) */
        size_t k;
        const json_t *e;
        long long width = hi;
        json_array_foreach(hl, k, e) {
            const char *op = json_string_value(json_object_get(e, "op"));
            char name[64];
            if (op && strcmp(op, "linear") == 0) {
                long long o;
                if (get_int(e, "out_dim", -1, &o) || o < 0)
                    goto fail;
                snprintf(name, sizeof name, "head.%zu.weight", k);
                add2(f, name, o, width);
                snprintf(name, sizeof name, "head.%zu.bias", k);
                add1(f, name, o);
                width = o;
            } else if (op && strcmp(op, "layernorm") == 0 &&
                       !json_is_false(json_object_get(e, "affine"))) {
                snprintf(name, sizeof name, "head.%zu.weight", k);
                add1(f, name, width);
                snprintf(name, sizeof name, "head.%zu.bias", k);
                add1(f, name, width);
            }
        }
    }
    json_decref(a);
    return f;
fail:
    json_decref(a);
    tu_file_free(f);
    return NULL;
}

int tu_write_random_model(const char *path, const char *arch_json, unsigned seed)
{
    tu_file *f = tu_random_model(arch_json, seed);
    if (!f)
        return -1;
    int rc = tu_file_write(f, path);
    tu_file_free(f);
    return rc;
}
