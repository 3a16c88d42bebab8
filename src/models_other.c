/* Naming the files of the models folder that are other formats' models (models_other.h). */
#include "models_other.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *ext;
    const char *kind;
} other[] = {
    {".onnx", "an ONNX model"},
    {".pt", "a PyTorch file (TorchScript or torch.save)"},
    {".pth", "a PyTorch file (TorchScript or torch.save)"},
    {".ptl", "a PyTorch Lite (TorchScript) file"},
    {".safetensors", "a safetensors file of weights"},
    {".npz", "a NumPy .npz file"},
    {".ckpt", "a training checkpoint"},
};

const char *rnnd_models_other_kind(const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        size_t n = strlen(other[i].ext);
        if (len > n && !strcasecmp(name + len - n, other[i].ext))
            return other[i].kind;
    }
    return NULL;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void rnnd_models_other_log(const rnnd_log *log, const char *dir)
{
    if (!dir || !*dir || RNND_LOG_WARN < log->level)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    char **names = NULL;
    size_t k = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !rnnd_models_other_kind(de->d_name))
            continue;
        if (k == cap) {
            char **g = realloc(names, (cap = cap ? cap * 2 : 8) * sizeof *g);
            if (!g)
                break;
            names = g;
        }
        if (!(names[k] = strdup(de->d_name)))
            break;
        k++;
    }
    closedir(d);
    if (k)
        qsort(names, k, sizeof *names, name_cmp);
    char qd[1100], qf[600];
    rnnd_log_quote(qd, sizeof qd, dir);
    for (size_t i = 0; i < k && i < RNND_MODELS_OTHER_MAX; i++)
        RNND_LOG(log, RNND_LOG_WARN, "models_not_rnnd",
                 "dir=%s file=%s msg=\"%s, not an .rnnd model: not served; convert it with "
                 "rnnd-convert (docs/convert.md)\"",
                 qd, rnnd_log_quote(qf, sizeof qf, names[i]), rnnd_models_other_kind(names[i]));
    if (k > RNND_MODELS_OTHER_MAX)
        RNND_LOG(log, RNND_LOG_WARN, "models_not_rnnd",
                 "dir=%s more=%zu msg=\"and %zu more files that are not .rnnd models\"", qd,
                 k - RNND_MODELS_OTHER_MAX, k - RNND_MODELS_OTHER_MAX);
    for (size_t i = 0; i < k; i++)
        free(names[i]);
    free(names);
}
