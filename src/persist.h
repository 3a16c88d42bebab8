/* Sessions that survive restarts: the daemon's side of the snapshot file (snapshot.h).
 * rnnd_persist_save() writes every live session to the state_dir; rnnd_persist_restore()
 * brings them back at start-up, onto the same model only (name and state digest must match;
 * a version 2 snapshot's file digest, the same file).
 * docs/state.md states the guarantees. */
#ifndef RNND_PERSIST_H
#define RNND_PERSIST_H

#include "app.h"

/* Whether DIR can hold snapshots: it exists, is a directory, and this process may create files
 * in it. Checked at start, so that a misspelt or unwritable state_dir stops the daemon before
 * it serves, not at shutdown when every session would be lost. Returns 0, or RNND_ERR_IO with
 * "DIR: reason" in ERR. */
int rnnd_persist_check_dir(const char *dir, char *err, size_t errlen);

/* Write every session to app->cfg->state_dir (nothing when it is ""). LIVE: the daemon is
 * serving, so each session's state is read by a job queued on it (a snapshot never holds
 * half a request's steps, and waits for the requests before it); else nothing may run on any
 * session during the call (shutdown, after the workers stopped). Logs one line and updates
 * the snapshot metrics. The rollback guard (snapkey.h) is raised to the new serial first, so
 * on failure the previous snapshot stays but is refused at the next start. Returns 0 or a
 * negative status. */
int rnnd_persist_save(rnnd_app *app, int live);

/* Restore the sessions of app->cfg->state_dir's snapshot into the (empty) session table.
 * A missing snapshot is not an error; a corrupt one is logged and skipped; a session whose
 * model is gone or changed is logged and dropped. Returns the number restored. */
size_t rnnd_persist_restore(rnnd_app *app);

#endif
