/* Saying what a refused model file is. People hand rnnd the file they have (model.onnx,
 * model.pt, weights.safetensors); read as an .rnnd, its first 8 bytes make a nonsense header
 * length, and "header_length: 578712552184433488 bytes is over the limit" helps nobody.
 * This recognises those formats from their bytes and names the command that converts them
 * (docs/convert.md, "Common mistakes"). Every read is bounded by the buffer: the input is
 * untrusted like any model file. */
#include "model_sniff.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "model_internal.h"
#include "rnnd/status.h"

typedef enum kind {
    K_NONE,
    K_ONNX,
    K_TORCHSCRIPT,
    K_STATE_DICT,       /* torch.save(model.state_dict()): an OrderedDict */
    K_MODULE,           /* torch.save(model): a pickled class instance */
    K_CHECKPOINT,       /* torch.save of something else, or a root we could not read */
    K_LEGACY,           /* torch.save before PyTorch 1.6: pickles, not a zip */
    K_PICKLE,
    K_NPZ,
    K_ZIP,
    K_BAD_ZIP,          /* no central directory: truncated, say, by a failed download */
    K_SAFETENSORS,
} kind;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ---- ONNX: a protobuf ModelProto ------------------------------------------------------- */

static int varint(const unsigned char *p, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 10 && *pos < len; i++) {
        unsigned char b = p[(*pos)++];
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* The whole file must walk as top-level protobuf fields, ir_version (field 1) first as every
 * serializer writes it, and a graph (field 7) among them. The first byte alone (0x08) proves
 * nothing: it is also the low byte of some .rnnd header lengths, whose zero high bytes then
 * read as the invalid field number 0. */
static int is_onnx(const unsigned char *p, size_t len)
{
    size_t pos = 0;
    int graph = 0;
    for (int first = 1; pos < len; first = 0) {
        uint64_t tag, v;
        if (varint(p, len, &pos, &tag))
            return 0;
        uint64_t field = tag >> 3;
        unsigned wire = (unsigned)(tag & 7);
        if (field == 0 || field > 64)   /* ModelProto's fields are 1..26 */
            return 0;
        if (first && (field != 1 || wire != 0))
            return 0;
        if (field == 7 && wire != 2)
            return 0;
        switch (wire) {
        case 0:
            if (varint(p, len, &pos, &v) || (first && (v == 0 || v > 100)))
                return 0;
            break;
        case 1:
        case 5: {
            size_t n = wire == 1 ? 8 : 4;
            if (len - pos < n)
                return 0;
            pos += n;
            break;
        }
        case 2:
            if (varint(p, len, &pos, &v) || v > len - pos)
                return 0;
            pos += (size_t)v;
            graph |= field == 7;
            break;
        default:
            return 0;
        }
    }
    return graph;
}

/* ---- pickles ----------------------------------------------------------------------------- */

/* Copy a pickle string argument ending at '\n' into OUT; returns the bytes consumed or 0. */
static size_t line_arg(const unsigned char *p, size_t len, char *out, size_t outlen)
{
    const unsigned char *nl = memchr(p, '\n', len < 256 ? len : 256);
    if (!nl || nl == p || (size_t)(nl - p) >= outlen)
        return 0;
    memcpy(out, p, (size_t)(nl - p));
    out[nl - p] = '\0';
    return (size_t)(nl - p) + 1;
}

/* A SHORT_BINUNICODE argument (protocol 4) into OUT, then an optional MEMOIZE. */
static size_t short_str(const unsigned char *p, size_t len, char *out, size_t outlen)
{
    if (len < 2 || p[0] != 0x8c || (size_t)p[1] + 2 > len || p[1] == 0 || p[1] >= outlen)
        return 0;
    memcpy(out, p + 2, p[1]);
    out[p[1]] = '\0';
    size_t n = (size_t)p[1] + 2;
    return n < len && p[n] == 0x94 ? n + 1 : n;
}

/* What torch.save pickled as the root object, from the opcodes that open it: GLOBAL
 * "module\nname\n" (protocol 2, torch's default) or two short strings and STACK_GLOBAL
 * (protocol 4) for a class. A state_dict is a collections.OrderedDict; any other class is
 * taken for a pickled module; anything else (a plain dict: a training checkpoint, say) is
 * just a checkpoint. CLS gets "module.name". */
static kind pickle_root(const unsigned char *p, size_t len, char *cls, size_t clslen)
{
    if (len < 3 || p[0] != 0x80)
        return K_CHECKPOINT;
    size_t pos = 2;
    if (p[1] >= 4 && len - pos >= 9 && p[pos] == 0x95)    /* FRAME and its 8-byte length */
        pos += 9;
    if (pos >= len)
        return K_CHECKPOINT;
    char mod[128], name[128];
    size_t a = 0, b = 0;
    if (p[pos] == 'c') {
        pos++;
        if (!(a = line_arg(p + pos, len - pos, mod, sizeof mod)) ||
            !(b = line_arg(p + pos + a, len - pos - a, name, sizeof name)))
            return K_CHECKPOINT;
    } else {
        if (!(a = short_str(p + pos, len - pos, mod, sizeof mod)) ||
            !(b = short_str(p + pos + a, len - pos - a, name, sizeof name)) ||
            pos + a + b >= len || p[pos + a + b] != 0x93)
            return K_CHECKPOINT;
    }
    if (!strcmp(mod, "collections") && !strcmp(name, "OrderedDict"))
        return K_STATE_DICT;
    snprintf(cls, clslen, "%s.%s", mod, name);
    return K_MODULE;
}

/* torch.save before 1.6 starts with a pickled magic number, LONG1 0x1950a86a20f9469cfc6c. */
static const unsigned char legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

/* A plain pickle: PROTO 2..5, then (4 and 5) a FRAME whose length fits the file, or (2, 3)
 * an opcode a pickle commonly opens with, and STOP as the last byte. An .rnnd file whose
 * header length begins 0x80 0x02..0x05 has a zero third byte unless its header is over
 * 64 KiB, and no FRAME length that fits. */
static int is_pickle(const unsigned char *p, size_t len)
{
    if (len < 4 || p[0] != 0x80 || p[1] < 2 || p[1] > 5 || p[len - 1] != '.')
        return 0;
    if (p[1] >= 4)
        return len >= 11 && p[2] == 0x95 && le(p + 3, 8) <= len - 11;
    return p[2] && strchr("}])(cKJMNX\x8a\x88\x89GUCB", p[2]) != NULL;
}

/* ---- zip archives: PyTorch files and NumPy .npz ----------------------------------------- */

typedef struct zipscan {
    int entries, data_pkl, constants_pkl, code, npy;
    uint64_t data_pkl_local;    /* local header offset of data.pkl, or UINT64_MAX */
} zipscan;

static int ends_with(const unsigned char *name, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && !memcmp(name + n - k, suffix, k);
}

/* NAME is BASE itself or ends in "/BASE" (PyTorch puts every entry under one folder). */
static int entry_is(const unsigned char *name, size_t n, const char *base)
{
    size_t k = strlen(base);
    return ends_with(name, n, base) && (n == k || name[n - k - 1] == '/');
}

/* Find the central directory through the end record (and its zip64 form, which PyTorch
 * writes for large files); 0 with *OFF and *COUNT set, -1 if there is none. */
static int zip_directory(const unsigned char *p, size_t len, uint64_t *off, uint64_t *count)
{
    if (len < 22)
        return -1;
    size_t lo = len - 22 > 65535 ? len - 22 - 65535 : 0;
    for (size_t e = len - 22 + 1; e-- > lo;) {
        if (memcmp(p + e, "PK\x05\x06", 4))
            continue;
        *count = le(p + e + 10, 2);
        *off = le(p + e + 16, 4);
        if (*count != 0xffff && *off != 0xffffffff)
            return 0;
        if (e < 20 || memcmp(p + e - 20, "PK\x06\x07", 4))
            return -1;
        uint64_t z = le(p + e - 20 + 8, 8);
        if (z > len || len - z < 56 || memcmp(p + z, "PK\x06\x06", 4))
            return -1;
        *count = le(p + z + 32, 8);
        *off = le(p + z + 48, 8);
        return 0;
    }
    return -1;
}

static void zip_scan(const unsigned char *p, size_t len, zipscan *z)
{
    memset(z, 0, sizeof *z);
    z->data_pkl_local = UINT64_MAX;
    uint64_t off, count;
    if (zip_directory(p, len, &off, &count))
        return;
    for (uint64_t i = 0; i < count && off <= len && len - off >= 46; i++) {
        const unsigned char *c = p + off;
        if (memcmp(c, "PK\x01\x02", 4))
            return;
        size_t n = (size_t)le(c + 28, 2);
        size_t skip = 46 + n + (size_t)le(c + 30, 2) + (size_t)le(c + 32, 2);
        if (len - off < skip)
            return;
        const unsigned char *name = c + 46;
        z->entries++;
        if (entry_is(name, n, "data.pkl")) {
            z->data_pkl = 1;
            uint64_t local = le(c + 42, 4);
            if (local != 0xffffffff && le(c + 10, 2) == 0)    /* stored, not compressed */
                z->data_pkl_local = local;
        }
        z->constants_pkl |= entry_is(name, n, "constants.pkl");
        z->code |= memmem(name, n, "/code/", 6) || (n >= 5 && !memcmp(name, "code/", 5));
        z->npy += ends_with(name, n, ".npy");
        off += skip;
    }
}

static kind zip_kind(const unsigned char *p, size_t len, char *cls, size_t clslen)
{
    zipscan z;
    zip_scan(p, len, &z);
    if (z.constants_pkl || z.code)
        return K_TORCHSCRIPT;
    if (z.data_pkl) {
        uint64_t h = z.data_pkl_local;
        if (h == UINT64_MAX || h > len || len - h < 30 || memcmp(p + h, "PK\x03\x04", 4))
            return K_CHECKPOINT;
        uint64_t start = h + 30 + le(p + h + 26, 2) + le(p + h + 28, 2);
        if (start >= len)
            return K_CHECKPOINT;
        return pickle_root(p + start, len - (size_t)start, cls, clslen);
    }
    if (z.entries == 0)
        return K_BAD_ZIP;
    return z.npy == z.entries ? K_NPZ : K_ZIP;
}

/* ---- safetensors without rnnd's metadata ------------------------------------------------- */

/* The safetensors container holding tensors, but no architecture: no __metadata__, or one
 * that is not rnnd's (HuggingFace writes {"format": "pt"}). A file with an architecture is
 * a damaged .rnnd, and the loader's own message is the better one. FMT gets the format. */
static int is_safetensors(const unsigned char *p, size_t len, char *fmt, size_t fmtlen)
{
    if (len < 10)
        return 0;
    uint64_t hlen = le(p, 8);
    if (hlen > RNND_MAX_HEADER_BYTES || hlen > len - 8 || hlen < 2 || p[8] != '{')
        return 0;
    const char *text = (const char *)p + 8;
    if (rnnd_json_depth_ok(text, (size_t)hlen, RNND_MAX_JSON_DEPTH))
        return 0;
    json_t *h = json_loadb(text, (size_t)hlen, 0, NULL);
    int tensors = 0, rnnd = 0;
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v) {  /* a NULL or non-object H has no members */
        if (!strcmp(k, "__metadata__")) {
            const char *f = json_string_value(json_object_get(v, "format"));
            rnnd = (f && !strcmp(f, "rnnd")) || json_object_get(v, "architecture");
            if (f)
                snprintf(fmt, fmtlen, "%s", f);
        } else if (json_object_get(v, "dtype") && json_object_get(v, "data_offsets")) {
            tensors++;
        }
    }
    json_decref(h);
    return tensors > 0 && !rnnd;
}

/* ---- the message -------------------------------------------------------------------------- */

/* S as one shell word: as it is when no shell would treat a character of it specially, else
 * in single quotes. */
static void shell_word(char *dst, size_t n, const char *s)
{
    if (s[0] && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                          "_@%+=:,./-") == strlen(s)) {
        snprintf(dst, n, "%s", s);
        return;
    }
    size_t j = 0;
    if (n < 3)
        return;
    dst[j++] = '\'';
    for (; *s && j + 5 < n; s++) {
        if (*s == '\'') {
            memcpy(dst + j, "'\\''", 4);
            j += 4;
        } else {
            dst[j++] = *s;
        }
    }
    dst[j++] = '\'';
    dst[j] = '\0';
}

/* S as a Python string literal. */
static void py_str(char *dst, size_t n, const char *s)
{
    size_t j = 0;
    if (n < 3)
        return;
    dst[j++] = '"';
    for (; *s && j + 4 < n; s++) {
        if (*s == '"' || *s == '\\')
            dst[j++] = '\\';
        dst[j++] = *s;
    }
    dst[j++] = '"';
    dst[j] = '\0';
}

/* The output the advice names: PATH with its extension replaced by .rnnd (a file already
 * called .rnnd keeps its name: rnnd-convert reads its input whole before it renames the
 * output into place, so converting it onto itself is safe). */
static void out_path(char *dst, size_t n, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t keep = dot && dot != base ? (size_t)(dot - path) : strlen(path);
    snprintf(dst, n, "%.*s.rnnd", (int)(keep < 3000 ? keep : 3000), path);
}

static kind classify(const unsigned char *p, size_t len, char *detail, size_t dlen)
{
    if (len >= 4 && !memcmp(p, "PK\x03\x04", 4))
        return zip_kind(p, len, detail, dlen);
    if (len >= sizeof legacy_magic && !memcmp(p, legacy_magic, sizeof legacy_magic))
        return K_LEGACY;
    if (is_pickle(p, len))
        return K_PICKLE;
    if (is_onnx(p, len))
        return K_ONNX;
    if (is_safetensors(p, len, detail, dlen))
        return K_SAFETENSORS;
    return K_NONE;
}

int rnnd_model_sniff(const unsigned char *data, size_t len, const char *path, char *err,
                     size_t errlen)
{
    char detail[256] = "";
    kind k = classify(data, len, detail, sizeof detail);
    if (k == K_NONE)
        return 0;
    char out[1024], in_sh[1100], out_sh[1100], in_py[1100], out_py[1100];
    out_path(out, sizeof out, path);
    shell_word(in_sh, sizeof in_sh, path);
    shell_word(out_sh, sizeof out_sh, out);
    py_str(in_py, sizeof in_py, path);
    py_str(out_py, sizeof out_py, out);
#define FAIL(...) rnnd_model_fail(err, errlen, path, "file", RNND_ERR_FORMAT, __VA_ARGS__)
    switch (k) {
    case K_ONNX:
        return FAIL("an ONNX model, not an .rnnd file; convert it: rnnd-convert %s -o %s",
                    in_sh, out_sh);
    case K_TORCHSCRIPT:
        return FAIL("a TorchScript model (torch.jit.save), not an .rnnd file; convert it: "
                    "rnnd-convert %s -o %s", in_sh, out_sh);
    case K_STATE_DICT:
        return FAIL("a PyTorch checkpoint of a state_dict (torch.save(model.state_dict())), "
                    "not an .rnnd file: weights without the model; in Python: "
                    "model.load_state_dict(torch.load(%s)); rnnd_convert.from_module(model, %s) "
                    "(docs/convert.md)",
                    in_py, out_py);
    case K_MODULE:
        return FAIL("a PyTorch checkpoint of a whole module (torch.save(model), class %.100s), "
                    "not an .rnnd file; in Python: rnnd_convert.from_module(torch.load(%s, "
                    "weights_only=False), %s) (docs/convert.md)", detail, in_py, out_py);
    case K_CHECKPOINT:
    case K_LEGACY:
        return FAIL("a PyTorch checkpoint (torch.save%s), not an .rnnd file; load it into its "
                    "torch.nn.Module in Python, then rnnd_convert.from_module(model, %s) "
                    "(docs/convert.md)", k == K_LEGACY ? ", format before PyTorch 1.6" : "",
                    out_py);
    case K_PICKLE:
        return FAIL("a Python pickle, not an .rnnd file; rnnd-convert reads ONNX, TorchScript "
                    "and JSON + .npz, and rnnd_convert.from_module(model, %s) a torch.nn.Module "
                    "(docs/convert.md)", out_py);
    case K_NPZ:
        return FAIL("a NumPy .npz archive, not an .rnnd file; as the weights of a native spec: "
                    "rnnd-convert SPEC.json --weights %s -o %s (docs/convert.md)", in_sh,
                    out_sh);
    case K_ZIP:
        return FAIL("a zip archive but no PyTorch or NumPy file, not an .rnnd file; "
                    "rnnd-convert reads ONNX, TorchScript and JSON + .npz (docs/convert.md)");
    case K_BAD_ZIP:
        return FAIL("a zip archive whose directory cannot be read (truncated?), not an .rnnd "
                    "file; PyTorch files are zip archives: convert the complete file with "
                    "rnnd-convert (docs/convert.md)");
    case K_SAFETENSORS:
        return FAIL("a safetensors file without rnnd's metadata (weights, no architecture%s"
                    "%.60s%s), not an .rnnd file; in Python: model.load_state_dict("
                    "safetensors.torch.load_file(%s)); rnnd_convert.from_module(model, %s) "
                    "(docs/convert.md)", detail[0] ? "; format \"" : "", detail,
                    detail[0] ? "\"" : "", in_py, out_py);
    case K_NONE:
        break;
    }
#undef FAIL
    return 0;
}
