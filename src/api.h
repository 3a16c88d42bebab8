/* The API handlers, one file per resource (api_models.c, api_infer.c, api_sessions.c,
 * api_health.c), routed by http.c. Each runs on a request thread with the body decoded and
 * either replies at once or defers (see http.h). */
#ifndef RNND_API_H
#define RNND_API_H

#include "http.h"

typedef void (*rnnd_handler)(rnnd_req *r);

void rnnd_api_models_list(rnnd_req *r);     /* GET  /v1/models */
void rnnd_api_model_get(rnnd_req *r);       /* GET  /v1/models/{model} */
void rnnd_api_infer(rnnd_req *r);           /* POST /v1/models/{model}/infer */

void rnnd_api_sessions_create(rnnd_req *r); /* POST   /v1/sessions */
void rnnd_api_sessions_list(rnnd_req *r);   /* GET    /v1/sessions */
void rnnd_api_session_get(rnnd_req *r);     /* GET    /v1/sessions/{id} */
void rnnd_api_session_delete(rnnd_req *r);  /* DELETE /v1/sessions/{id} */
void rnnd_api_session_step(rnnd_req *r);    /* POST   /v1/sessions/{id}/step */
void rnnd_api_session_reset(rnnd_req *r);   /* POST   /v1/sessions/{id}/reset */
void rnnd_api_session_fork(rnnd_req *r);    /* POST   /v1/sessions/{id}/fork */
void rnnd_api_state_get(rnnd_req *r);       /* GET    /v1/sessions/{id}/state */
void rnnd_api_state_put(rnnd_req *r);       /* PUT    /v1/sessions/{id}/state */

void rnnd_api_healthz(rnnd_req *r);         /* GET /healthz */
void rnnd_api_readyz(rnnd_req *r);          /* GET /readyz */
void rnnd_api_metrics(rnnd_req *r);         /* GET /metrics */

#endif
