/* The daemon's shared objects, built by `rnnd serve` (cmd_serve.c) in start-up order and
 * handed to the HTTP layer and every API handler. Nothing here is global: tests and the
 * command each own one. Read-only after start-up except where noted. */
#ifndef RNND_APP_H
#define RNND_APP_H

#include <stdatomic.h>
#include <stdint.h>

#include "auth.h"
#include "batcher.h"
#include "log.h"
#include "membudget.h"
#include "metrics.h"
#include "pool.h"
#include "registry.h"
#include "rnnd/infer.h"
#include "session.h"
#include "settings.h"
#include "snapkey.h"

typedef struct rnnd_app {
    const rnnd_config *cfg;
    rnnd_log log;
    rnnd_catalog models; /* the current set of models; swapped by reloads */
    const rnnd_kernels *kernels;
    size_t workers; /* compute threads */
    rnnd_pool *pool;
    rnnd_session_table *sessions;
    struct rnnd_v2_seq *v2_seq; /* Triton sequence ids -> sessions (v2_seq.h) */
    rnnd_metrics metrics;
    rnnd_infer_limits infer_limits;
    rnnd_membudget mem;                         /* memory of requests in flight (membudget.h) */
    rnnd_auth auth;                             /* API keys; n == 0: authentication off */
    unsigned char snap_key[RNND_SNAPKEY_BYTES]; /* signs snapshots; with a state_dir only */
    int snap_key_created;         /* made at this start: unsigned snapshots still restore */
    char *snap_key_path;          /* the key file; its ".serial" beside it (snapkey.h) */
    int64_t snap_serial;          /* the last snapshot's serial (0: none recorded); changed
                                     * by persist.c, from the main thread only */
    atomic_int draining;          /* set on SIGTERM/SIGINT: new requests get 503 */
    atomic_long pending;          /* compute requests admitted and not yet freed */
    int listen_fd;                /* a socket passed by systemd (listenfd.h), or -1 */
    struct rnnd_cluster *cluster; /* cluster mode (cluster.h); NULL: the embedded default */
} rnnd_app;

#endif
