/* The loaded models: name -> validated model + its packed net, tokenizer and batcher.
 *
 * An entry is one version of one model file, reference-counted: the current set holds one
 * reference, every session of it holds one, every request using it holds one while it runs.
 * A reload (SIGHUP) builds a new set from the models folder and the NAME=FILE settings,
 * keeping the entries whose file content did not change (file_digest), and swaps it in:
 * sessions opened before keep the version they started with until they end, new requests get
 * the new one, and a retired version is freed with its last reference. */
#ifndef RNND_REGISTRY_H
#define RNND_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "rnnd/kernels.h"
#include "rnnd/model.h"
#include "rnnd/rnn.h"
#include "rnnd/tokenizer.h"

#define RNND_MODEL_NAME_MAX 64

struct rnnd_batcher;

typedef struct rnnd_entry {
    char name[RNND_MODEL_NAME_MAX + 1];
    char *path;
    int version;       /* 1, then +1 for each changed file a reload picked up */
    rnnd_model *model; /* one reference */
    rnnd_net *net;
    const char *digest;      /* rnnd_model_digest(): what its states mean */
    const char *file_digest; /* rnnd_model_file_digest(): which file it was read from */
    int stateful;            /* sessions allowed (every layer forward-only) */
    size_t state_floats;
    int output_dim;
    rnnd_tokenizer *tokenizer;    /* NULL when the model has no tokenizer */
    struct rnnd_batcher *batcher; /* the daemon's, freed with the entry (may be NULL) */
    atomic_int refs;
} rnnd_entry;

rnnd_entry *rnnd_entry_ref(rnnd_entry *e);
void rnnd_entry_unref(rnnd_entry *e); /* NULL is a no-op; frees on the last */
/* For callbacks that take void * (sessions, batchers). */
void rnnd_entry_ref_v(void *e);
void rnnd_entry_unref_v(void *e);

/* The files of a models folder that are model files (hidden files aside). */
#define RNND_MODELS_PATTERN "*.rnnd"

/* A set of entries, sorted by name, one reference each. */
typedef struct rnnd_registry {
    rnnd_entry **entries;
    size_t n;
    size_t dir_files; /* RNND_MODELS_PATTERN files the folder held, loaded or not */
} rnnd_registry;

/* Load every *.rnnd of DIR (NULL or "": none; name = file stem) and every "NAME=FILE" of
 * SPECS, packing each for KERNELS, a bf16 model in the compute mode COMPUTE (enum
 * rnnd_compute; other models ignore it). Names must be 1-64 of [A-Za-z0-9_.-] and unique. Any
 * failure stops with ERR naming the file and the reason. An empty folder is no failure:
 * REG->dir_files says how many model files it held. */
int rnnd_registry_load(rnnd_registry *reg, const char *dir, char *const *specs, size_t nspecs,
                       const rnnd_kernels *kernels, int compute, char *err, size_t errlen);

/* The same for a reload: build *OUT from DIR and SPECS, where an unchanged file (same name
 * and file digest) keeps OLD's entry, a changed one gets a new entry of the next version, and a
 * file that fails to load keeps OLD's entry of that name (if any) and is passed to REPORT
 * (one line naming the file and the reason). Fails only when the folder cannot be read or
 * memory runs out (*OUT is then empty and OLD stays as it is). */
int rnnd_registry_reload(const rnnd_registry *old, rnnd_registry *out, const char *dir,
                         char *const *specs, size_t nspecs, const rnnd_kernels *kernels,
                         int compute, void (*report)(void *arg, const char *msg), void *arg,
                         char *err, size_t errlen);

/* Drop the set's references. */
void rnnd_registry_free(rnnd_registry *reg);

/* The entry named NAME in REG (no reference taken), or NULL. */
rnnd_entry *rnnd_registry_find(const rnnd_registry *reg, const char *name);

/* Nonzero when NAME is a valid model name. */
int rnnd_model_name_valid(const char *name, size_t len);

/* The daemon's current set, swapped by reloads: lookups take references under a read lock. */
typedef struct rnnd_catalog {
    pthread_rwlock_t lock;
    rnnd_registry reg;
} rnnd_catalog;

void rnnd_catalog_init(rnnd_catalog *c, rnnd_registry *reg); /* REG is taken over */
void rnnd_catalog_destroy(rnnd_catalog *c);
/* NAME's current entry with a reference for the caller, or NULL. */
rnnd_entry *rnnd_catalog_get(rnnd_catalog *c, const char *name);
/* A copy of the current set (references of its own: rnnd_registry_free it). Returns 0 or
 * RNND_ERR_NOMEM. */
int rnnd_catalog_copy(rnnd_catalog *c, rnnd_registry *out);
/* Swap in *REG; *REG receives the old set, for the caller to free. */
void rnnd_catalog_swap(rnnd_catalog *c, rnnd_registry *reg);
size_t rnnd_catalog_count(rnnd_catalog *c);

#endif
