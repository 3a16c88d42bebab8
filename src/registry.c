#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batcher.h"
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

/* ---- entries ----------------------------------------------------------------------------- */

rnnd_entry *rnnd_entry_ref(rnnd_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    return e;
}

static void entry_free(rnnd_entry *e)
{
    rnnd_batcher_free(e->batcher);
    rnnd_tokenizer_free(e->tokenizer);
    rnnd_net_free(e->net);
    rnnd_model_unref(e->model);
    free(e->path);
    free(e);
}

void rnnd_entry_unref(rnnd_entry *e)
{
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        entry_free(e);
}

void rnnd_entry_ref_v(void *e) { rnnd_entry_ref(e); }
void rnnd_entry_unref_v(void *e) { rnnd_entry_unref(e); }

/* Load the file open at FD, PATH, as NAME into a new entry (one reference). */
static int entry_load(const char *name, size_t namelen, int fd, const char *path,
                      const rnnd_kernels *kernels, int compute, rnnd_entry **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!rnnd_model_name_valid(name, namelen)) {
        snprintf(err, errlen,
                 "%s: model name \"%.*s\" must be 1-%d characters of "
                 "A-Z a-z 0-9 _ - . (not starting with '.')",
                 path, (int)namelen, name, RNND_MODEL_NAME_MAX);
        return RNND_ERR_INVALID;
    }
    rnnd_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->path = strdup(path))) {
        free(e);
        snprintf(err, errlen, "out of memory");
        return RNND_ERR_NOMEM;
    }
    memcpy(e->name, name, namelen);
    e->version = 1;
    atomic_init(&e->refs, 1);
    int rc = rnnd_model_read_fd(fd, path, &e->model, err, errlen);
    /* the compute setting reaches bf16 models only (docs/kernels.md, "bf16 compute") */
    if (!rc && rnnd_model_get_spec(e->model)->weights == RNND_WEIGHTS_BF16)
        rc = rnnd_model_set_compute(e->model, compute);
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
        entry_free(e);
        return rc;
    }
    e->digest = rnnd_model_digest(e->model);
    e->file_digest = rnnd_model_file_digest(e->model);
    e->stateful = rnnd_model_is_stateful(e->model);
    e->state_floats = rnnd_net_state_floats(e->net);
    e->output_dim = rnnd_net_output_dim(e->net);
    *out = e;
    return RNND_OK;
}

/* ---- sets -------------------------------------------------------------------------------- */

rnnd_entry *rnnd_registry_find(const rnnd_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n; i++)
        if (!strcmp(reg->entries[i]->name, name))
            return reg->entries[i];
    return NULL;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp((*(rnnd_entry *const *)a)->name, (*(rnnd_entry *const *)b)->name);
}

/* Append E (its reference taken over: on failure it is dropped). */
static int push(rnnd_registry *reg, rnnd_entry *e, char *err, size_t errlen)
{
    rnnd_entry **g = realloc(reg->entries, (reg->n + 1) * sizeof *g);
    if (!g) {
        rnnd_entry_unref(e);
        return rnnd_fail(RNND_ERR_NOMEM, err, errlen, "out of memory");
    }
    reg->entries = g;
    reg->entries[reg->n++] = e;
    return RNND_OK;
}

/* One source of a set: NAME from PATH. IN_DIR: a file of the models folder, opened relative
 * to the folder's descriptor; else a `model = NAME=FILE` setting (the operator named that
 * file). */
struct src {
    char *name, *path;
    int in_dir;
};

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.rnnd files of DIR (open at DFD), sorted, as NAME/PATH pairs appended to *SRCS. */
static int list_dir(int dfd, const char *dir, struct src **srcs, size_t *n, char *err,
                    size_t errlen)
{
    int lfd = dup(dfd); /* closedir closes it; DFD stays for the opens */
    DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        if (lfd >= 0)
            close(lfd);
        return RNND_ERR_IO;
    }
    /* sorted, so model order (and the listing) does not depend on the file system */
    char **names = NULL;
    size_t k = 0, cap = 0;
    int rc = RNND_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        /* RNND_MODELS_PATTERN */
        if (len <= 5 || strcmp(de->d_name + len - 5, ".rnnd") || de->d_name[0] == '.')
            continue;
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            char **g = realloc(names, cap * sizeof *g);
            if (!g) {
                rc = RNND_ERR_NOMEM;
                break;
            }
            names = g;
        }
        if (!(names[k] = strdup(de->d_name))) {
            rc = RNND_ERR_NOMEM;
            break;
        }
        k++;
    }
    closedir(d);
    if (k)
        qsort(names, k, sizeof *names, name_cmp);
    for (size_t i = 0; i < k && !rc; i++) {
        struct src *g = realloc(*srcs, (*n + 1) * sizeof *g);
        size_t plen = strlen(dir) + strlen(names[i]) + 2;
        char *path = g ? malloc(plen) : NULL;
        if (g)
            *srcs = g;
        if (!path) {
            rc = RNND_ERR_NOMEM;
            break;
        }
        snprintf(path, plen, "%s/%s", dir, names[i]);
        char *name = strndup(names[i], strlen(names[i]) - 5);
        if (!name) {
            free(path);
            rc = RNND_ERR_NOMEM;
            break;
        }
        (*srcs)[*n].name = name;
        (*srcs)[*n].in_dir = 1;
        (*srcs)[(*n)++].path = path;
    }
    if (rc == RNND_ERR_NOMEM)
        snprintf(err, errlen, "out of memory");
    for (size_t i = 0; i < k; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* Open the models folder DIR (none: *DFD = -1). The folder itself may be reached through
 * links: the operator chose its path. */
static int open_dir(const char *dir, int *dfd, char *err, size_t errlen)
{
    *dfd = -1;
    if (!dir || !*dir)
        return RNND_OK;
    if ((*dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return RNND_ERR_IO;
    }
    return RNND_OK;
}

/* Every source of the folder DIR (open at DFD, or -1) and SPECS; *NDIR come from DIR. */
static int sources(int dfd, const char *dir, char *const *specs, size_t nspecs, struct src **out,
                   size_t *n, size_t *ndir, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    int rc = dfd >= 0 ? list_dir(dfd, dir, out, n, err, errlen) : RNND_OK;
    *ndir = *n;
    for (size_t i = 0; i < nspecs && !rc; i++) {
        const char *eq = strchr(specs[i], '=');
        if (!eq) {
            snprintf(err, errlen, "model: expected NAME=FILE, got \"%s\"", specs[i]);
            rc = RNND_ERR_INVALID;
            break;
        }
        struct src *g = realloc(*out, (*n + 1) * sizeof *g);
        if (g)
            *out = g;
        char *name = g ? strndup(specs[i], (size_t)(eq - specs[i])) : NULL;
        char *path = name ? strdup(eq + 1) : NULL;
        if (!path) {
            free(name);
            snprintf(err, errlen, "out of memory");
            rc = RNND_ERR_NOMEM;
            break;
        }
        g[*n].name = name;
        g[*n].in_dir = 0;
        g[(*n)++].path = path;
    }
    return rc;
}

static void free_sources(struct src *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].path);
    }
    free(s);
}

/* Open FILE of the folder open at DFD (PATH in messages) into *FD. Whoever may write in the
 * folder must not make the daemon read any other file it can open, so the open itself
 * decides: relative to the folder's descriptor, O_NOFOLLOW, and a symbolic link is followed
 * by hand only when its target is another name of the folder itself (no '/'). The opened
 * file is then what the loader checks (a regular file) and reads: nothing is looked up by
 * path twice, so swapping the file for a link meanwhile changes nothing. */
static int open_in_dir(int dfd, const char *file, const char *path, int *fd, char *err,
                       size_t errlen)
{
    char name[256], target[256];
    snprintf(name, sizeof name, "%s", file);
    for (int hops = 0; hops < 8; hops++) {
        /* O_NONBLOCK: a FIFO must not wait for a writer (read_fd then refuses it) */
        *fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (*fd >= 0)
            return RNND_OK;
        ssize_t n = errno == ELOOP ? readlinkat(dfd, name, target, sizeof target - 1) : -1;
        if (n < 0) {
            snprintf(err, errlen, "%s: file: cannot open: %s", path, strerror(errno));
            return RNND_ERR_IO;
        }
        target[n] = '\0';
        if (!n || memchr(target, '/', (size_t)n) || !strcmp(target, ".") || !strcmp(target, "..")) {
            snprintf(err, errlen,
                     "%s: a symbolic link to \"%s\", which is not a file of the "
                     "models folder itself (a link is followed only to a name without '/');"
                     " refused",
                     path, target);
            return RNND_ERR_INVALID;
        }
        memcpy(name, target, (size_t)n + 1);
    }
    snprintf(err, errlen, "%s: file: cannot open: %s", path, strerror(ELOOP));
    return RNND_ERR_IO;
}

/* Load source S (of the folder open at DFD when it is one of its files) as a new entry. */
static int src_load(int dfd, const struct src *s, const rnnd_kernels *kernels, int compute,
                    rnnd_entry **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd, rc;
    if (s->in_dir) {
        const char *file = strrchr(s->path, '/') + 1; /* list_dir made PATH "DIR/FILE" */
        if ((rc = open_in_dir(dfd, file, s->path, &fd, err, errlen)))
            return rc;
    } else if ((fd = open(s->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "%s: file: cannot open: %s", s->path, strerror(errno));
        return errno == ENOMEM ? RNND_ERR_NOMEM : RNND_ERR_IO;
    }
    rc = entry_load(s->name, strlen(s->name), fd, s->path, kernels, compute, out, err, errlen);
    close(fd);
    return rc;
}

static int duplicate(const rnnd_registry *reg, const struct src *s, char *err, size_t errlen)
{
    const rnnd_entry *e = rnnd_registry_find(reg, s->name);
    if (!e)
        return 0;
    snprintf(err, errlen, "%s: model name \"%s\" is already used by %s", s->path, s->name, e->path);
    return 1;
}

int rnnd_registry_load(rnnd_registry *reg, const char *dir, char *const *specs, size_t nspecs,
                       const rnnd_kernels *kernels, int compute, char *err, size_t errlen)
{
    memset(reg, 0, sizeof *reg);
    struct src *srcs = NULL;
    size_t n = 0;
    int dfd, rc = open_dir(dir, &dfd, err, errlen);
    if (!rc)
        rc = sources(dfd, dir, specs, nspecs, &srcs, &n, &reg->dir_files, err, errlen);
    for (size_t i = 0; i < n && !rc; i++) {
        rnnd_entry *e;
        if (duplicate(reg, &srcs[i], err, errlen))
            rc = RNND_ERR_INVALID;
        else if (!(rc = src_load(dfd, &srcs[i], kernels, compute, &e, err, errlen)))
            rc = push(reg, e, err, errlen);
    }
    free_sources(srcs, n);
    if (dfd >= 0)
        close(dfd);
    if (rc)
        rnnd_registry_free(reg);
    else if (reg->n)
        qsort(reg->entries, reg->n, sizeof *reg->entries, entry_cmp);
    return rc;
}

int rnnd_registry_reload(const rnnd_registry *old, rnnd_registry *out, const char *dir,
                         char *const *specs, size_t nspecs, const rnnd_kernels *kernels,
                         int compute, void (*report)(void *arg, const char *msg), void *arg,
                         char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct src *srcs = NULL;
    size_t n = 0;
    int dfd, rc = open_dir(dir, &dfd, err, errlen);
    if (!rc)
        rc = sources(dfd, dir, specs, nspecs, &srcs, &n, &out->dir_files, err, errlen);
    char why[1024];
    for (size_t i = 0; i < n && !rc; i++) {
        if (duplicate(out, &srcs[i], why, sizeof why)) {
            report(arg, why);
            continue;
        }
        rnnd_entry *prev = rnnd_registry_find(old, srcs[i].name), *e = NULL;
        if (src_load(dfd, &srcs[i], kernels, compute, &e, why, sizeof why)) {
            report(arg, why);
            e = prev ? rnnd_entry_ref(prev) : NULL; /* the old version stays */
        } else if (prev && !strcmp(prev->file_digest, e->file_digest)) {
            /* the same file; a new name or vocabulary with the same weights is a new version
             * (the text APIs change), though its states stay exchangeable */
            rnnd_entry_unref(e);
            e = rnnd_entry_ref(prev);
        } else if (prev) {
            e->version = prev->version + 1;
        }
        if (e)
            rc = push(out, e, err, errlen);
    }
    free_sources(srcs, n);
    if (dfd >= 0)
        close(dfd);
    if (rc)
        rnnd_registry_free(out);
    else if (out->n)
        qsort(out->entries, out->n, sizeof *out->entries, entry_cmp);
    return rc;
}

void rnnd_registry_free(rnnd_registry *reg)
{
    for (size_t i = 0; i < reg->n; i++)
        rnnd_entry_unref(reg->entries[i]);
    free(reg->entries);
    memset(reg, 0, sizeof *reg);
}

/* ---- the current set ----------------------------------------------------------------------- */

void rnnd_catalog_init(rnnd_catalog *c, rnnd_registry *reg)
{
    pthread_rwlock_init(&c->lock, NULL);
    c->reg = *reg;
    memset(reg, 0, sizeof *reg);
}

void rnnd_catalog_destroy(rnnd_catalog *c)
{
    rnnd_registry_free(&c->reg);
    pthread_rwlock_destroy(&c->lock);
}

rnnd_entry *rnnd_catalog_get(rnnd_catalog *c, const char *name)
{
    pthread_rwlock_rdlock(&c->lock);
    rnnd_entry *e = rnnd_registry_find(&c->reg, name);
    if (e)
        rnnd_entry_ref(e);
    pthread_rwlock_unlock(&c->lock);
    return e;
}

int rnnd_catalog_copy(rnnd_catalog *c, rnnd_registry *out)
{
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&c->lock);
    size_t n = c->reg.n;
    out->entries = malloc((n ? n : 1) * sizeof *out->entries);
    if (out->entries) {
        for (size_t i = 0; i < n; i++)
            out->entries[i] = rnnd_entry_ref(c->reg.entries[i]);
        out->n = n;
    }
    pthread_rwlock_unlock(&c->lock);
    return out->entries ? RNND_OK : RNND_ERR_NOMEM;
}

void rnnd_catalog_swap(rnnd_catalog *c, rnnd_registry *reg)
{
    pthread_rwlock_wrlock(&c->lock);
    rnnd_registry old = c->reg;
    c->reg = *reg;
    pthread_rwlock_unlock(&c->lock);
    *reg = old;
}

size_t rnnd_catalog_count(rnnd_catalog *c)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t n = c->reg.n;
    pthread_rwlock_unlock(&c->lock);
    return n;
}
