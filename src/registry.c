#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnd/status.h"

int rnnd_model_name_valid(const char *name, size_t len)
{
    if (!len || len > RNND_MODEL_NAME_MAX || name[0] == '.')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

const rnnd_entry *rnnd_registry_find(const rnnd_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n; i++)
        if (!strcmp(reg->entries[i].name, name))
            return &reg->entries[i];
    return NULL;
}

static int add(rnnd_registry *reg, const char *name, size_t namelen, const char *path,
               const rnnd_kernels *kernels, char *err, size_t errlen)
{
    if (!rnnd_model_name_valid(name, namelen)) {
        snprintf(err, errlen, "%s: model name \"%.*s\" must be 1-%d characters of "
                 "A-Z a-z 0-9 _ - . (not starting with '.')", path, (int)namelen, name,
                 RNND_MODEL_NAME_MAX);
        return RNND_ERR_INVALID;
    }
    for (size_t i = 0; i < reg->n; i++) {
        if (strlen(reg->entries[i].name) == namelen &&
            !memcmp(reg->entries[i].name, name, namelen)) {
            snprintf(err, errlen, "%s: model name \"%.*s\" is already used by %s", path,
                     (int)namelen, name, reg->entries[i].path);
            return RNND_ERR_INVALID;
        }
    }
    rnnd_entry *grown = realloc(reg->entries, (reg->n + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    reg->entries = grown;
    rnnd_entry *e = &reg->entries[reg->n];
    memset(e, 0, sizeof *e);
    memcpy(e->name, name, namelen);
    e->index = reg->n;
    if (!(e->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    int rc = rnnd_model_open(path, &e->model, err, errlen);
    if (!rc)
        rc = rnnd_net_new(e->model, kernels, &e->net, err, errlen);
    if (!rc && rnnd_model_get_spec(e->model)->tokenizer[0]) {
        rc = rnnd_tokenizer_new(e->model, &e->tokenizer, err, errlen);
        if (rc) {
            /* name the file like the other failures here; the loader makes this rare */
            char why[256];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "%s: %s", path, why);
        }
    }
    if (rc) {
        rnnd_tokenizer_free(e->tokenizer);
        rnnd_net_free(e->net);
        rnnd_model_unref(e->model);
        free(e->path);
        return rc;
    }
    e->digest = rnnd_model_digest(e->model);
    e->stateful = rnnd_model_is_stateful(e->model);
    e->state_floats = rnnd_net_state_floats(e->net);
    e->output_dim = rnnd_net_output_dim(e->net);
    reg->n++;
    return RNND_OK;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_dir(rnnd_registry *reg, const char *dir, const rnnd_kernels *kernels,
                    char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return RNND_ERR_IO;
    }
    /* sorted, so model order (and the listing) does not depend on the file system */
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = RNND_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len <= 5 || strcmp(de->d_name + len - 5, ".rnnd") || de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **g = realloc(names, cap * sizeof *g);
            if (!g) {
                rc = RNND_ERR_NOMEM;
                break;
            }
            names = g;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = RNND_ERR_NOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc)
        snprintf(err, errlen, "out of memory");
    else if (n)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(len);
        if (!path) {
            rc = RNND_ERR_NOMEM;
            snprintf(err, errlen, "out of memory");
            break;
        }
        snprintf(path, len, "%s/%s", dir, names[i]);
        rc = add(reg, names[i], strlen(names[i]) - 5, path, kernels, err, errlen);
        free(path);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int rnnd_registry_load(rnnd_registry *reg, const char *dir, char *const *specs, size_t nspecs,
                       const rnnd_kernels *kernels, char *err, size_t errlen)
{
    memset(reg, 0, sizeof *reg);
    int rc = RNND_OK;
    if (dir && *dir)
        rc = load_dir(reg, dir, kernels, err, errlen);
    for (size_t i = 0; i < nspecs && !rc; i++) {
        const char *eq = strchr(specs[i], '=');
        if (!eq) {
            snprintf(err, errlen, "model: expected NAME=FILE, got \"%s\"", specs[i]);
            rc = RNND_ERR_INVALID;
            break;
        }
        rc = add(reg, specs[i], (size_t)(eq - specs[i]), eq + 1, kernels, err, errlen);
    }
    if (rc)
        rnnd_registry_free(reg);
    return rc;
}

void rnnd_registry_free(rnnd_registry *reg)
{
    for (size_t i = 0; i < reg->n; i++) {
        rnnd_tokenizer_free(reg->entries[i].tokenizer);
        rnnd_net_free(reg->entries[i].net);
        rnnd_model_unref(reg->entries[i].model);
        free(reg->entries[i].path);
    }
    free(reg->entries);
    memset(reg, 0, sizeof *reg);
}
