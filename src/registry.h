/* The loaded models: name -> validated model + its packed net. Built once at start-up from
 * the --models folder and the --model NAME=FILE entries, then read-only (no lock needed) until
 * the daemon stops; sessions and requests point at entries freely. */
#ifndef RNND_REGISTRY_H
#define RNND_REGISTRY_H

#include <stddef.h>

#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/tokenizer.h"

#define RNND_MODEL_NAME_MAX 64

typedef struct rnnd_entry {
    char name[RNND_MODEL_NAME_MAX + 1];
    char *path;
    size_t index;               /* position in the registry: indexes per-model tables */
    rnnd_model *model;          /* one reference */
    rnnd_net *net;
    const char *digest;         /* rnnd_model_digest() */
    int stateful;               /* sessions allowed (every layer forward-only) */
    size_t state_floats;
    int output_dim;
    rnnd_tokenizer *tokenizer;  /* NULL when the model has no tokenizer */
} rnnd_entry;

typedef struct rnnd_registry {
    rnnd_entry *entries;
    size_t n;
} rnnd_registry;

/* Load every *.rnnd of DIR (NULL or "": none; name = file stem) and every "NAME=FILE" of
 * SPECS, packing each for KERNELS. Names must be 1-64 of [A-Za-z0-9_.-] and unique. Any
 * failure stops with ERR naming the file and the reason. */
int rnnd_registry_load(rnnd_registry *reg, const char *dir, char *const *specs, size_t nspecs,
                       const rnnd_kernels *kernels, char *err, size_t errlen);
void rnnd_registry_free(rnnd_registry *reg);

/* The entry named NAME, or NULL. */
const rnnd_entry *rnnd_registry_find(const rnnd_registry *reg, const char *name);

/* Nonzero when NAME is a valid model name. */
int rnnd_model_name_valid(const char *name, size_t len);

#endif
