/* The regression run of a fuzz harness for `make check`: built with the normal compiler and
 * linked with one fuzz_*.c (no libFuzzer), it feeds every file of that harness's corpus,
 * $RNND_SRCDIR/tests/fuzz/corpus/FUZZ_NAME/ (seeds and every input that once found a bug),
 * to LLVMFuzzerTestOneInput. Arguments, if given, are files or folders to run instead.
 *
 * A finding aborts (FZ_CHECK) or is a sanitizer report under --enable-sanitizers; the driver
 * itself fails when the corpus is missing or empty, so a test that ran nothing cannot pass. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

#ifndef FUZZ_NAME
#error "FUZZ_NAME must name the harness (model, infer, ...)"
#endif

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    unsigned char *data = malloc(cap);
    size_t n;
    while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            unsigned char *bigger = realloc(data, cap * 2);
            if (!bigger)
                free(data);
            data = bigger;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!data || bad) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(data);
        return -1;
    }
    /* an exact-size copy, so that ASan sees a read one past the input */
    unsigned char *exact = malloc(len ? len : 1);
    if (!exact) {
        free(data);
        return -1;
    }
    memcpy(exact, data, len);
    free(data);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of DIR in name order; *COUNT grows by the files run. */
static int run_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **more = realloc(names, cap * sizeof *names);
            if (!more) {
                rc = -1;
                break;
            }
            names = more;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (!rc && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path))
                rc = -1;
            else
                (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

static int run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st)) {
        perror(path);
        return -1;
    }
    if (S_ISDIR(st.st_mode))
        return run_dir(path, count);
    if (run_file(path))
        return -1;
    (*count)++;
    return 0;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc && !rc; i++)
            rc = run_path(argv[i], &count);
    } else {
        const char *src = getenv("RNND_SRCDIR");
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src && *src ? src : ".", FUZZ_NAME);
        rc = run_path(dir, &count);
        printf("fuzz_%s: corpus %s\n", FUZZ_NAME, dir);
    }
    if (rc || count == 0) {
        fprintf(stderr, "fuzz_%s: %s\n", FUZZ_NAME, rc ? "failed" : "no input was run");
        return 1;
    }
    printf("fuzz_%s: %zu inputs replayed, no finding\n", FUZZ_NAME, count);
    return 0;
}
