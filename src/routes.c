/* The route table: every URL pattern of the API, its handlers and what kind of route it is
 * (http.h, rnnd_route). Adding a route is one line here plus its handler (docs/code.md). */
#include "routes.h"

#include "api.h"
#include "cluster.h"
#include "metrics.h"

const rnnd_route rnnd_routes[] = {
    {"/healthz", rnnd_api_healthz, NULL, NULL, NULL, RT_OPEN | RT_DRAIN},
    {"/readyz", rnnd_api_readyz, NULL, NULL, NULL, RT_OPEN},
    {"/metrics", rnnd_api_metrics, NULL, NULL, NULL, 0},
    {"/v1/models", rnnd_api_models_list, NULL, NULL, NULL, 0},
    {"/v1/models/*", rnnd_api_model_get, NULL, NULL, NULL, RT_MODEL},
    {"/v1/models/*/infer", NULL, rnnd_api_infer, NULL, NULL, RT_MODEL},
    {"/v1/models/*/generate", NULL, rnnd_api_model_generate, NULL, NULL, RT_MODEL},
    {"/v1/sessions", rnnd_api_sessions_list, rnnd_api_sessions_create, NULL, NULL, 0},
    {"/v1/sessions/*", rnnd_api_session_get, NULL, NULL, rnnd_api_session_delete, 0},
    {"/v1/sessions/*/step", NULL, rnnd_api_session_step, NULL, NULL, RT_RAW_BODY},
    {"/v1/sessions/*/reset", NULL, rnnd_api_session_reset, NULL, NULL, 0},
    {"/v1/sessions/*/fork", NULL, rnnd_api_session_fork, NULL, NULL, 0},
    {"/v1/sessions/*/generate", NULL, rnnd_api_session_generate, NULL, NULL, 0},
    {"/v1/sessions/*/state", rnnd_api_state_get, NULL, rnnd_api_state_put, NULL, 0},
    {"/v1/admin/drain", NULL, rnnd_api_admin_drain, NULL, NULL, 0},
    {"/v2", rnnd_api_v2_server_meta, NULL, NULL, NULL, RT_V2},
    {"/v2/health/live", rnnd_api_v2_live, NULL, NULL, NULL, RT_V2 | RT_OPEN | RT_DRAIN},
    {"/v2/health/ready", rnnd_api_v2_ready, NULL, NULL, NULL, RT_V2 | RT_OPEN},
    {"/v2/models/*", rnnd_api_v2_model_meta, NULL, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/ready", rnnd_api_v2_model_ready, NULL, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/infer", NULL, rnnd_api_v2_infer, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/versions/*", rnnd_api_v2_model_meta, NULL, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/versions/*/ready", rnnd_api_v2_model_ready, NULL, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/versions/*/infer", NULL, rnnd_api_v2_infer, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/generate", NULL, rnnd_api_v2_generate, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/generate_stream", NULL, rnnd_api_v2_generate_stream, NULL, NULL,
     RT_V2 | RT_MODEL},
    {"/v2/models/*/versions/*/generate", NULL, rnnd_api_v2_generate, NULL, NULL, RT_V2 | RT_MODEL},
    {"/v2/models/*/versions/*/generate_stream", NULL, rnnd_api_v2_generate_stream, NULL, NULL,
     RT_V2 | RT_MODEL},
};

#define ROUTE_COUNT (sizeof rnnd_routes / sizeof rnnd_routes[0])
const size_t rnnd_n_routes = ROUTE_COUNT;

/* metrics.c keeps one row per route and one for "no route" */
_Static_assert(ROUTE_COUNT + 1 == RNND_METRICS_ROUTES,
               "RNND_METRICS_ROUTES (metrics.h) must be the route count + 1");

size_t rnnd_route_names(const char **out, size_t cap)
{
    for (size_t i = 0; i < ROUTE_COUNT && i < cap; i++)
        out[i] = rnnd_routes[i].pattern;
    return ROUTE_COUNT;
}
