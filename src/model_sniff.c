/* Saying what a refused model file is. People hand rnnd the file they have (model.onnx,
 * model.pt, weights.safetensors); read as an .rnnd, its first 8 bytes make a nonsense header
 * length, and "header_length: 578712552184433488 bytes is over the limit" helps nobody.
 * This recognises those formats from their bytes and names the command that converts them
 * (docs/convert.md, "Common mistakes"). Every read is bounded by the buffer: the input is
 * untrusted like any model file. */
#include "model_sniff.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "model_internal.h"
#include "rnnd/status.h"

typedef enum kind {
    K_NONE,
    K_ONNX,
    K_TORCHSCRIPT,
    K_STATE_DICT, /* torch.save(model.state_dict()): an OrderedDict */
    K_MODULE,     /* torch.save(model): a pickled class instance */
    K_CHECKPOINT, /* torch.save of something else, or a root we could not read */
    K_CALLS,      /* a pickle that calls something a checkpoint does not */
    K_LEGACY,     /* torch.save before PyTorch 1.6: pickles, not a zip */
    K_PICKLE,
    K_NPZ,
    K_ZIP,
    K_BAD_ZIP, /* no central directory: truncated, say, by a failed download */
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
        if (field == 0 || field > 64) /* ModelProto's fields are 1..26 */
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
        default: return 0;
        }
    }
    return graph;
}

static int ends_with(const unsigned char *name, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && !memcmp(name + n - k, suffix, k);
}

/* ---- pickles ----------------------------------------------------------------------------- */

/* What a pickle does, read from its opcodes with a symbolic stack; nothing is built. A
 * checkpoint of tensors calls only torch's rebuild functions (torch.load's weights_only
 * list); one that calls posix.system is not a checkpoint, whatever class it opens with, and
 * the advice must not tell anyone to load it. Only the first PICKLE_SCAN bytes are read: the
 * root object and the calls that build a checkpoint come first, and the memo stays small. */
#define PICKLE_SCAN (64 << 10)
#define PICKLE_STACK 256

enum { V_ANY, V_MARK, V_STR, V_GLOBAL, V_NEW, V_CALL, V_UNKNOWN };

/* A value: a string, or a global (a callable or class) and what was done with it. A name is
 * two pieces of the pickle, "module" and "name", by offset. */
typedef struct pval {
    unsigned char kind;
    uint16_t alen, blen;
    uint32_t a, b;
} pval;

typedef struct pscan {
    const unsigned char *p;
    pval stack[PICKLE_STACK];
    int sp;
    pval *memo; /* PICKLE_SCAN entries: a memo op takes at least a byte */
    uint32_t nmemo;
    pval call; /* the first call of anything outside safe_calls */
    int called;
} pscan;

static const char *const safe_calls[] = {
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Size",
    "torch.device",
    "torch.serialization._get_layout",
    "builtins.set",
    "builtins.frozenset",
    "builtins.complex",
    "builtins.slice",
    "builtins.bytearray",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.complex",
    "__builtin__.slice",
    "__builtin__.bytearray", /* protocol 2 names builtins so */
};

static int is_name(const unsigned char *s, size_t n, const char *want)
{
    return strlen(want) == n && !memcmp(s, want, n);
}

static int safe_call(const pscan *ps, const pval *v)
{
    if (v->kind != V_GLOBAL)
        return 0;
    const unsigned char *m = ps->p + v->a, *n = ps->p + v->b;
    /* torch.FloatStorage and its kind */
    if (is_name(m, v->alen, "torch") && v->blen > 7 && ends_with(n, v->blen, "Storage"))
        return 1;
    for (size_t i = 0; i < sizeof safe_calls / sizeof *safe_calls; i++) {
        const char *dot = strrchr(safe_calls[i], '.');
        if ((size_t)(dot - safe_calls[i]) == v->alen && !memcmp(m, safe_calls[i], v->alen) &&
            is_name(n, v->blen, dot + 1))
            return 1;
    }
    return 0;
}

/* V's name as "module.name" into OUT; "an unknown callable" if the pickle hides it. */
static void pval_name(const pscan *ps, const pval *v, char *out, size_t outlen)
{
    if (v->kind == V_UNKNOWN || !v->alen || !v->blen)
        snprintf(out, outlen, "an unknown callable");
    else
        snprintf(out, outlen, "%.*s.%.*s", (int)v->alen, (const char *)ps->p + v->a, (int)v->blen,
                 (const char *)ps->p + v->b);
}

static int push(pscan *ps, pval v)
{
    if (ps->sp == PICKLE_STACK)
        return -1;
    ps->stack[ps->sp++] = v;
    return 0;
}

static pval pop(pscan *ps)
{
    pval any = {V_ANY, 0, 0, 0, 0};
    return ps->sp ? ps->stack[--ps->sp] : any;
}

/* Pop down to the topmost mark; the index the mark had. */
static int pop_mark(pscan *ps)
{
    while (ps->sp && ps->stack[ps->sp - 1].kind != V_MARK)
        ps->sp--;
    if (ps->sp)
        ps->sp--;
    return ps->sp;
}

/* F was called (REDUCE, OBJ, INST) or instantiated (NEWOBJ): push the result. */
static int called(pscan *ps, pval f, int what)
{
    if (what == V_CALL && !safe_call(ps, &f) && !ps->called) {
        ps->call = f;
        ps->called = 1;
    }
    f.kind = f.kind == V_GLOBAL ? (unsigned char)what : V_UNKNOWN;
    return push(ps, f);
}

static void memo_put(pscan *ps, uint64_t i)
{
    if (i < PICKLE_SCAN)
        ps->memo[i] = ps->sp ? ps->stack[ps->sp - 1] : (pval){V_ANY, 0, 0, 0, 0};
}

static int memo_get(pscan *ps, uint64_t i)
{
    /* an entry never put reads as unknown: calling it counts as a call */
    pval v = i < PICKLE_SCAN ? ps->memo[i] : (pval){V_UNKNOWN, 0, 0, 0, 0};
    return push(ps, v);
}

/* The length of a "text\n" argument at P (without the newline), or -1. */
static long line_len(const unsigned char *p, size_t len)
{
    const unsigned char *nl = memchr(p, '\n', len);
    return nl ? (long)(nl - p) : -1;
}

static uint64_t text_uint(const unsigned char *p, long n)
{
    uint64_t v = 0;
    for (long i = 0; i < n && i < 19 && p[i] >= '0' && p[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(p[i] - '0');
    return v;
}

/* One opcode at *POS: its argument is skipped and its effect applied. 1 at STOP, 0 to go
 * on, -1 where the pickle is damaged or cut by the prefix (what was read stands). */
static int pickle_op(pscan *ps, size_t len, size_t *pos)
{
    const unsigned char *p = ps->p;
    size_t at = *pos + 1, n = 0;
    unsigned char op = p[*pos];
    pval any = {V_ANY, 0, 0, 0, 0}, v;
    static const unsigned char fixed[][2] = {{'J', 4},  {'K', 1},  {'M', 2}, {'G', 8},  {'h', 1},
                                             {'j', 4},  {'q', 1},  {'r', 4}, {0x80, 1}, {0x82, 1},
                                             {0x83, 2}, {0x84, 4}, {0x95, 8}};
    static const unsigned char counted[][2] = {/* length of the length */
                                               {'T', 4},  {'U', 1},  {'X', 4},  {'B', 4},
                                               {'C', 1},  {0x8a, 1}, {0x8b, 4}, {0x8c, 1},
                                               {0x8d, 8}, {0x8e, 8}, {0x96, 8}};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (fixed[i][0] == op)
            n = fixed[i][1];
    for (size_t i = 0; i < sizeof counted / sizeof *counted; i++) {
        if (counted[i][0] != op)
            continue;
        if (len - at < counted[i][1])
            return -1;
        uint64_t k = le(p + at, counted[i][1]);
        at += counted[i][1];
        if (k > len - at)
            return -1;
        v = (pval){V_STR, (uint16_t)(k < 0xffff ? k : 0), 0, (uint32_t)at, 0};
        *pos = at + (size_t)k;
        return push(ps, (op == 'X' || op == 0x8c || op == 0x8d) && k < 0xffff ? v : any);
    }
    if (len - at < n)
        return -1;
    *pos = at + n;
    long a, b;
    switch (op) {
    case '.': return 1;
    case 0x80:
    case 0x95:
    case 0x94: /* PROTO, FRAME, MEMOIZE */
        if (op == 0x94)
            memo_put(ps, ps->nmemo++);
        return 0;
    case 'q':
    case 'r': memo_put(ps, le(p + at, (int)n)); return 0;
    case 'h':
    case 'j': return memo_get(ps, le(p + at, (int)n));
    case 'p':
    case 'g':
    case 'F':
    case 'I':
    case 'L':
    case 'S':
    case 'V':
    case 'P':
        if ((a = line_len(p + at, len - at)) < 0)
            return -1;
        *pos = at + (size_t)a + 1;
        if (op == 'p')
            memo_put(ps, text_uint(p + at, a));
        return op == 'p' ? 0 : op == 'g' ? memo_get(ps, text_uint(p + at, a)) : push(ps, any);
    case 'c':
    case 'i': /* GLOBAL, INST */
        if ((a = line_len(p + at, len - at)) < 0 ||
            (b = line_len(p + at + a + 1, len - at - (size_t)a - 1)) < 0 || a > 255 || b > 255)
            return -1;
        *pos = at + (size_t)a + (size_t)b + 2;
        v = (pval){V_GLOBAL, (uint16_t)a, (uint16_t)b, (uint32_t)at, (uint32_t)(at + a + 1)};
        if (op == 'c')
            return push(ps, v);
        pop_mark(ps);
        return called(ps, v, V_CALL);
    case 0x93: { /* STACK_GLOBAL */
        pval name = pop(ps), mod = pop(ps);
        v = (pval){V_UNKNOWN, 0, 0, 0, 0};
        if (mod.kind == V_STR && name.kind == V_STR && mod.alen && name.alen)
            v = (pval){V_GLOBAL, mod.alen, name.alen, mod.a, name.a};
        return push(ps, v);
    }
    case 0x82:
    case 0x83:
    case 0x84: /* EXT1, EXT2, EXT4 */ return push(ps, (pval){V_UNKNOWN, 0, 0, 0, 0});
    case 'R':
    case 0x81: /* REDUCE, NEWOBJ */ pop(ps); return called(ps, pop(ps), op == 'R' ? V_CALL : V_NEW);
    case 0x92: /* NEWOBJ_EX */
        pop(ps);
        pop(ps);
        return called(ps, pop(ps), V_NEW);
    case 'o': { /* OBJ: mark, class, args */
        int m = pop_mark(ps);
        v = ps->stack[m + 1 < PICKLE_STACK ? m + 1 : m];
        return called(ps, v, V_CALL);
    }
    case '(': return push(ps, (pval){V_MARK, 0, 0, 0, 0});
    case '2': return push(ps, ps->sp ? ps->stack[ps->sp - 1] : any);
    case '0':
    case 'a':
    case 'b': /* POP; APPEND, BUILD keep the object */ pop(ps); return 0;
    case 's':
        pop(ps);
        pop(ps);
        return 0;
    case '1':
    case 'e':
    case 'u':
    case 0x90: /* to the mark; the container stays */ pop_mark(ps); return 0;
    case 'd':
    case 'l':
    case 't':
    case 0x91: pop_mark(ps); return push(ps, any);
    case 'Q':
    case 0x85:
    case 0x98: pop(ps); return push(ps, any);
    case 0x86:
    case 0x87:
        for (int k = op == 0x86 ? 2 : 3; k > 0; k--)
            pop(ps);
        return push(ps, any);
    case 'J':
    case 'K':
    case 'M':
    case 'G':
    case 'N':
    case 0x88:
    case 0x89:
    case ']':
    case ')':
    case '}':
    case 0x8f:
    case 0x97: return push(ps, any);
    default: return -1;
    }
}

/* What the pickle at P does: K_CALLS (DETAIL names the call), K_STATE_DICT, K_MODULE
 * (DETAIL names the class) or K_CHECKPOINT, from at most PICKLE_SCAN bytes. */
static kind pickle_scan(const unsigned char *p, size_t len, char *detail, size_t dlen)
{
    pscan *ps = calloc(1, sizeof *ps);
    pval *memo = calloc(PICKLE_SCAN, sizeof *memo);
    kind k = K_CHECKPOINT;
    if (!ps || !memo)
        goto out;
    ps->p = p;
    ps->memo = memo;
    if (len > PICKLE_SCAN)
        len = PICKLE_SCAN;
    for (size_t pos = 0; pos < len;)
        if (pickle_op(ps, len, &pos))
            break;
    if (ps->called) {
        pval_name(ps, &ps->call, detail, dlen);
        k = K_CALLS;
        goto out;
    }
    pval root = ps->sp ? ps->stack[0] : (pval){V_ANY, 0, 0, 0, 0};
    if (root.kind == V_CALL && is_name(p + root.a, root.alen, "collections") &&
        is_name(p + root.b, root.blen, "OrderedDict")) {
        k = K_STATE_DICT;
    } else if (root.kind == V_NEW) {
        pval_name(ps, &root, detail, dlen);
        k = K_MODULE;
    }
out:
    free(memo);
    free(ps);
    return k;
}

/* torch.save before 1.6 starts with a pickled magic number, LONG1 0x1950a86a20f9469cfc6c. */
static const unsigned char legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                             0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

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
    uint64_t data_pkl_local; /* local header offset of data.pkl, or UINT64_MAX */
} zipscan;

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
            if (local != 0xffffffff && le(c + 10, 2) == 0) /* stored, not compressed */
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
        return pickle_scan(p + start, len - (size_t)start, cls, clslen);
    }
    if (z.entries == 0)
        return K_BAD_ZIP;
    return z.npy == z.entries ? K_NPZ : K_ZIP;
}

/* ---- safetensors without rnnd's metadata ------------------------------------------------- */

/* A header over SNIFF_JSON is not parsed: a JSON tree takes many times the text's size (an
 * 8-byte length and 16 MB of "{}," made 1.2 GB), and the loader has already refused the
 * file. Its opening is searched for a tensor's keys and rnnd's metadata instead. */
#define SNIFF_JSON (64 << 10)

static int safetensors_prefix(const char *text, size_t len, char *fmt, size_t fmtlen)
{
    const unsigned char *t = (const unsigned char *)text;
    if (!memmem(t, len, "\"dtype\"", 7) || !memmem(t, len, "\"data_offsets\"", 14) ||
        memmem(t, len, "\"architecture\"", 14))
        return 0;
    const unsigned char *f = memmem(t, len, "\"format\"", 8);
    if (!f)
        return 1;
    size_t i = (size_t)(f - t) + 8;
    while (i < len && (t[i] == ' ' || t[i] == ':' || t[i] == '\n' || t[i] == '\t'))
        i++;
    if (i >= len || t[i] != '"')
        return 1;
    const unsigned char *end = memchr(t + i + 1, '"', len - i - 1);
    size_t n = end ? (size_t)(end - t) - i - 1 : 0;
    if (n == 4 && !memcmp(t + i + 1, "rnnd", 4))
        return 0;
    snprintf(fmt, fmtlen, "%.*s", (int)(n < 60 ? n : 60), text + i + 1);
    return 1;
}

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
    if (hlen > SNIFF_JSON)
        return safetensors_prefix(text, SNIFF_JSON, fmt, fmtlen);
    if (rnnd_json_depth_check(text, (size_t)hlen, RNND_MAX_JSON_DEPTH) != 0)
        return 0;
    json_t *h = json_loadb(text, (size_t)hlen, 0, NULL);
    int tensors = 0, rnnd = 0;
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v) { /* a NULL or non-object H has no members */
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
    if (s[0] &&
        strspn(s,
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
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
        return pickle_scan(p, len, detail, dlen) == K_CALLS ? K_CALLS : K_PICKLE;
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
        return FAIL("an ONNX model, not an .rnnd file; convert it: rnnd-convert %s -o %s", in_sh,
                    out_sh);
    case K_TORCHSCRIPT:
        return FAIL("a TorchScript model (torch.jit.save), not an .rnnd file; loading it runs "
                    "code from the file, so if you trust it, convert it: rnnd-convert %s -o %s",
                    in_sh, out_sh);
    case K_STATE_DICT:
        return FAIL("a PyTorch checkpoint of a state_dict (torch.save(model.state_dict())), "
                    "not an .rnnd file: weights without the model; in Python: "
                    "model.load_state_dict(torch.load(%s, weights_only=True)); "
                    "rnnd_convert.from_module(model, %s) "
                    "(docs/convert.md)",
                    in_py, out_py);
    case K_MODULE:
        return FAIL("a PyTorch checkpoint of a whole module (torch.save(model), class %.100s), "
                    "not an .rnnd file; loading it runs code from the file, so only if you "
                    "trust it, in Python: rnnd_convert.from_module(torch.load(%s, "
                    "weights_only=False), %s) (docs/convert.md)",
                    detail, in_py, out_py);
    case K_CALLS:
        return FAIL("a pickle that calls %.100s (not a PyTorch checkpoint); loading it would "
                    "run code",
                    detail);
    case K_CHECKPOINT:
    case K_LEGACY:
        return FAIL("a PyTorch checkpoint (torch.save%s), not an .rnnd file; load it into its "
                    "torch.nn.Module in Python, then rnnd_convert.from_module(model, %s) "
                    "(docs/convert.md)",
                    k == K_LEGACY ? ", format before PyTorch 1.6" : "", out_py);
    case K_PICKLE:
        return FAIL("a Python pickle, not an .rnnd file; rnnd-convert reads ONNX, TorchScript "
                    "and JSON + .npz, and rnnd_convert.from_module(model, %s) a torch.nn.Module "
                    "(docs/convert.md)",
                    out_py);
    case K_NPZ:
        return FAIL("a NumPy .npz archive, not an .rnnd file; as the weights of a native spec: "
                    "rnnd-convert SPEC.json --weights %s -o %s (docs/convert.md)",
                    in_sh, out_sh);
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
                    "(docs/convert.md)",
                    detail[0] ? "; format \"" : "", detail, detail[0] ? "\"" : "", in_py, out_py);
    case K_NONE: break;
    }
#undef FAIL
    return 0;
}
