/* Regenerate the binary seeds of tests/fuzz/corpus: model files for fuzz_model and snapshot
 * files for fuzz_snapshot, written by the project's own writers (testutil.c, snapshot.c), so
 * that the seeds follow the formats when they change. `make tests/fuzz/mkseeds`, then
 * `tests/fuzz/mkseeds CORPUS_DIR` (the JSON and HTTP seeds come from mkseeds.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rnnd/model.h"
#include "snapkey.h"
#include "snapshot.h"

static void put(const char *dir, const char *sub, const char *name, const void *d, size_t n)
{
    char p[8192];
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
    fz_write_file(p, d, n);
}

static void model_seed(const char *dir, const char *name, const char *arch, unsigned seed)
{
    size_t len;
    unsigned char *img = fz_model_bytes(arch, seed, &len);
    put(dir, "model", name, img, len);
    free(img);
}

static void model_seeds(const char *dir)
{
    model_seed(dir, "harness_tok.rnnd", FZ_ARCH_TOK, 1);
    model_seed(dir, "harness_vec.rnnd", FZ_ARCH_VEC, 2);
    model_seed(dir, "harness_byte.rnnd", FZ_ARCH_BYTE, 4);
    model_seed(dir, "jordan_proj_bidi.rnnd",
               "{\"format_version\": 1, \"input\": {\"kind\": \"vectors\", \"dim\": 2},"
               " \"layers\": [{\"type\": \"lstm\", \"hidden_size\": 3,"
               " \"direction\": \"bidirectional\", \"proj_size\": 2, \"peepholes\": true,"
               " \"clip\": 2.5}, {\"type\": \"jordan\", \"hidden_size\": 2, \"output_size\": 3,"
               " \"direction\": \"reverse\", \"activations\": [[{\"op\": \"Elu\","
               " \"alpha\": 0.5}, {\"op\": \"Softplus\"}]]}],"
               " \"head\": {\"out_dim\": 2, \"in_dim\": 3, \"norm\": \"softmax\"}}",
               5);
    model_seed(dir, "gru_lbr0_nofg.rnnd",
               "{\"format_version\": 1, \"name\": \"x\", \"input\": {\"kind\": \"tokens\","
               " \"vocab_size\": 3, \"embedding_dim\": 2}, \"layers\": [{\"type\": \"gru\","
               " \"hidden_size\": 2, \"linear_before_reset\": 0, \"activations\":"
               " [[{\"op\": \"HardSigmoid\", \"alpha\": 0.2, \"beta\": 0.5},"
               " {\"op\": \"ScaledTanh\"}]]}, {\"type\": \"lstm\", \"hidden_size\": 2,"
               " \"forget_gate\": false}, {\"type\": \"lstm\", \"hidden_size\": 2,"
               " \"input_forget\": true}, {\"type\": \"rnn\", \"hidden_size\": 3,"
               " \"activations\": [[{\"op\": \"ThresholdedRelu\"}]]}],"
               " \"vocab\": [\"a\", \"b\", \"a\"], \"tokenizer\": \"char\"}",
               6);
    /* small broken files for the loader's first checks */
    put(dir, "model", "short.bin", "\x08\0\0\0", 4);
    put(dir, "model", "empty_header.bin", "\x04\0\0\0\0\0\0\0{}  ", 12);
    put(dir, "model", "huge_header_len.bin", "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
}

/* A snapshot with RECORDS records, as fuzz_snapshot reads it: mode byte, then the file. */
static int snapshot_seed(const char *dir, int records)
{
    rnnd_model *m = fz_model(FZ_ARCH_TOK, 1);
    size_t nf = rnnd_model_state_floats(m);
    float *state = calloc(nf, sizeof *state);
    if (!state)
        return -1;
    for (size_t i = 0; i < nf; i++)
        state[i] = (float)i * 0.25f - 1.0f;
    const char *tmp = fz_tmpdir();
    char err[512];
    rnnd_snap_writer *w;
    if (rnnd_snap_writer_open(tmp, (const unsigned char *)FZ_SNAPSHOT_KEY, 1795430348, &w, err,
                              sizeof err)) {
        fprintf(stderr, "mkseeds: %s\n", err);
        return -1;
    }
    for (int r = 0; r < records; r++) {
        rnnd_snap_rec rec;
        memset(&rec, 0, sizeof rec);
        snprintf(rec.id, sizeof rec.id, "%032x", 0xabc + r);
        snprintf(rec.model, sizeof rec.model, "%s", r ? "vec" : "tok");
        snprintf(rec.digest, sizeof rec.digest, "%s", rnnd_model_digest(m));
        rec.steps = 7 + (uint64_t)r;
        rec.created = 1795430348;
        rec.ttl_s = 600;
        rec.idle_s = 3.5;
        rec.has_gen = r == 1;
        rnnd_gen_params_default(&rec.gen);
        if (rec.has_gen) {
            rec.gen.has_seed = 1;
            rec.gen.seed = 42;
            rec.gen.n_stop = 2;
            strcpy(rec.gen.stop[0], "\n");
            strcpy(rec.gen.stop[1], "ab");
        }
        rec.state = state;
        rec.n_floats = r ? nf - 3 : nf;
        if (rnnd_snap_writer_add(w, &rec)) {
            fprintf(stderr, "mkseeds: cannot add a record\n");
            return -1;
        }
    }
    size_t recs, bytes;
    if (rnnd_snap_writer_commit(w, &recs, &bytes, err, sizeof err)) {
        fprintf(stderr, "mkseeds: %s\n", err);
        return -1;
    }
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", tmp, RNND_SNAPSHOT_FILE);
    FILE *f = fopen(p, "rb");
    unsigned char *buf = malloc(bytes + 1);
    if (!f || !buf || fread(buf + 1, 1, bytes, f) != bytes) {
        fprintf(stderr, "mkseeds: cannot read %s back\n", p);
        return -1;
    }
    fclose(f);
    char name[64];
    buf[0] = 1; /* the harness rewrites the hash and MAC: reaches the records */
    snprintf(name, sizeof name, "snap_%d_records", records);
    put(dir, "snapshot", name, buf, bytes + 1);
    if (records == 2) {
        buf[0] = 0; /* the hash and MAC checked as written */
        put(dir, "snapshot", "snap_2_records_nofix", buf, bytes + 1);
        buf[1 + 30] ^= 1; /* one flipped byte: MAC mismatch */
        put(dir, "snapshot", "snap_corrupt", buf, bytes + 1);
        buf[1 + 30] ^= 1;
        /* the same as an unsigned version 3, read as at the key's creation (mode bit 1) */
        uint32_t v3 = 3;
        memcpy(buf + 1 + 8, &v3, 4);
        buf[0] = 3;
        put(dir, "snapshot", "snap_2_records_v3", buf, bytes + 1 - RNND_HMAC_BYTES);
    }
    free(buf);
    free(state);
    rnnd_model_unref(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkseeds CORPUS_DIR (tests/fuzz/corpus)\n");
        return 2;
    }
    model_seeds(argv[1]);
    for (int r = 0; r <= 2; r++)
        if (snapshot_seed(argv[1], r))
            return 1;
    return 0;
}
