/* Shared set-up of the fuzz harnesses (see fuzz_common.h). */
#include "fuzz_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rnnd/kernels.h"
#include "../testutil.h"

void fz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    abort();
}

unsigned char *fz_model_bytes(const char *arch, unsigned seed, size_t *len)
{
    tu_file *f = tu_random_model(arch, seed);
    FZ_CHECK(f != NULL, "the test writer cannot read a harness architecture");
    unsigned char *img = tu_file_bytes(f, len);
    tu_file_free(f);
    return img;
}

rnnd_model *fz_model(const char *arch, unsigned seed)
{
    size_t len;
    unsigned char *img = fz_model_bytes(arch, seed, &len);
    rnnd_model *m = NULL;
    char err[512];
    if (rnnd_model_from_buffer(img, len, "fuzz", &m, err, sizeof err)) {
        fprintf(stderr, "fuzz: harness model refused: %s\n", err);
        abort();
    }
    free(img);
    return m;
}

rnnd_net *fz_net(rnnd_model *m)
{
    char err[512];
    const rnnd_kernels *k = rnnd_kernels_select(err, sizeof err);
    rnnd_net *net = NULL;
    if (!k || rnnd_net_new(m, k, &net, err, sizeof err)) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    return net;
}

static char tmp_root[4096];

/* Only our own folder, one level deep: the harnesses write plain files there. */
static void remove_tmpdir(void)
{
    DIR *d = opendir(tmp_root);
    if (d) {
        struct dirent *e;
        char path[4096 + 256];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", tmp_root, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(tmp_root);
}

const char *fz_tmpdir(void)
{
    if (tmp_root[0])
        return tmp_root;
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(tmp_root, sizeof tmp_root, "%s/rnnd-fuzz-XXXXXX", base);
    if (!mkdtemp(tmp_root)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(remove_tmpdir);
    return tmp_root;
}

void fz_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
        perror(path);
        abort();
    }
}
