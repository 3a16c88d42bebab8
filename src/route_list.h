/* Every route of the API, one line each, as X(PATTERN, GET, POST, PUT, DELETE, FLAGS): the
 * fields of http.h's rnnd_route (a NULL handler: the method is not allowed). Expanded into
 * routes.c's table and into the route count the request metrics are sized by (metrics.h), so
 * the two always agree. It includes nothing and declares nothing: whoever expands it knows
 * the names (routes.c includes api.h and http.h).
 *
 * The first pattern that matches wins: "/v2/models/stats" comes before the pattern of
 * "/v2/models/{m}".
 *
 * Adding a route takes: one X(...) line here, and its handler, written in an src/api_*.c file
 * and declared in src/api.h (or in its module's header, as cluster.h for the drain: then
 * routes.c includes that header) (docs/code.md, "Adding a route"), and a row in the endpoint
 * table of docs/api.md or docs/v2.md (tests/test_docs.py: test_route_tables); a route
 * outside /v2 also goes into docs/openapi.yaml (tests/test_openapi.py), and a /v2/models/{m}
 * route has its /versions/{v} twin here (test_docs). No other code counts routes. */
#ifndef RNND_ROUTE_LIST_H
#define RNND_ROUTE_LIST_H

#define RNND_ROUTE_LIST(X) \
    X("/healthz", rnnd_api_healthz, NULL, NULL, NULL, RT_OPEN | RT_DRAIN) \
    X("/readyz", rnnd_api_readyz, NULL, NULL, NULL, RT_OPEN) \
    X("/metrics", rnnd_api_metrics, NULL, NULL, NULL, RT_ADMIN) \
    X("/", rnnd_api_web_index, NULL, NULL, NULL, RT_OPEN | RT_RAW_BODY) \
    X("/ui/app.js", rnnd_api_web_js, NULL, NULL, NULL, RT_OPEN | RT_RAW_BODY) \
    X("/ui/app.css", rnnd_api_web_css, NULL, NULL, NULL, RT_OPEN | RT_RAW_BODY) \
    X("/v1/models", rnnd_api_models_list, NULL, NULL, NULL, 0) \
    X("/v1/models/*", rnnd_api_model_get, NULL, NULL, NULL, RT_MODEL) \
    X("/v1/models/*/infer", NULL, rnnd_api_infer, NULL, NULL, RT_MODEL) \
    X("/v1/models/*/generate", NULL, rnnd_api_model_generate, NULL, NULL, RT_MODEL) \
    X("/v1/sessions", rnnd_api_sessions_list, rnnd_api_sessions_create, NULL, NULL, 0) \
    X("/v1/sessions/*", rnnd_api_session_get, NULL, NULL, rnnd_api_session_delete, 0) \
    X("/v1/sessions/*/step", NULL, rnnd_api_session_step, NULL, NULL, RT_RAW_BODY) \
    X("/v1/sessions/*/reset", NULL, rnnd_api_session_reset, NULL, NULL, 0) \
    X("/v1/sessions/*/fork", NULL, rnnd_api_session_fork, NULL, NULL, 0) \
    X("/v1/sessions/*/generate", NULL, rnnd_api_session_generate, NULL, NULL, 0) \
    X("/v1/sessions/*/ws", rnnd_api_session_ws, NULL, NULL, NULL, 0) \
    X("/v1/sessions/*/state", rnnd_api_state_get, NULL, rnnd_api_state_put, NULL, 0) \
    X("/v1/admin/drain", NULL, rnnd_api_admin_drain, NULL, NULL, RT_ADMIN) \
    X("/v2", rnnd_api_v2_server_meta, NULL, NULL, NULL, RT_V2) \
    X("/v2/health/live", rnnd_api_v2_live, NULL, NULL, NULL, RT_V2 | RT_OPEN | RT_DRAIN) \
    X("/v2/health/ready", rnnd_api_v2_ready, NULL, NULL, NULL, RT_V2 | RT_OPEN) \
    X("/v2/models/stats", rnnd_api_v2_stats_all, NULL, NULL, NULL, RT_V2) \
    X("/v2/repository/index", NULL, rnnd_api_v2_repository_index, NULL, NULL, RT_V2) \
    X("/v2/models/*", rnnd_api_v2_model_meta, NULL, NULL, NULL, RT_V2 | RT_MODEL) \
    X("/v2/models/*/config", rnnd_api_v2_model_config, NULL, NULL, NULL, RT_V2 | RT_MODEL) \
    X("/v2/models/*/stats", rnnd_api_v2_model_stats, NULL, NULL, NULL, RT_V2 | RT_MODEL) \
    X("/v2/models/*/versions/*/config", rnnd_api_v2_model_config, NULL, NULL, NULL, \
      RT_V2 | RT_MODEL) \
    X("/v2/models/*/versions/*/stats", rnnd_api_v2_model_stats, NULL, NULL, NULL, \
      RT_V2 | RT_MODEL) \
    X("/v2/models/*/ready", rnnd_api_v2_model_ready, NULL, NULL, NULL, RT_V2 | RT_MODEL) \
    X("/v2/models/*/infer", NULL, rnnd_api_v2_infer, NULL, NULL, RT_V2 | RT_MODEL | RT_RAW_BODY) \
    X("/v2/models/*/versions/*", rnnd_api_v2_model_meta, NULL, NULL, NULL, RT_V2 | RT_MODEL) \
    X("/v2/models/*/versions/*/ready", rnnd_api_v2_model_ready, NULL, NULL, NULL, \
      RT_V2 | RT_MODEL) \
    X("/v2/models/*/versions/*/infer", NULL, rnnd_api_v2_infer, NULL, NULL, \
      RT_V2 | RT_MODEL | RT_RAW_BODY) \
    X("/v2/models/*/generate", NULL, rnnd_api_v2_generate, NULL, NULL, RT_V2 | RT_MODEL) \
    X("/v2/models/*/generate_stream", NULL, rnnd_api_v2_generate_stream, NULL, NULL, \
      RT_V2 | RT_MODEL) \
    X("/v2/models/*/versions/*/generate", NULL, rnnd_api_v2_generate, NULL, NULL, \
      RT_V2 | RT_MODEL) \
    X("/v2/models/*/versions/*/generate_stream", NULL, rnnd_api_v2_generate_stream, NULL, NULL, \
      RT_V2 | RT_MODEL)

/* The number of routes, a constant expression. */
#define RNND_ROUTE_ONE(...) +1
#define RNND_ROUTE_COUNT (0 RNND_ROUTE_LIST(RNND_ROUTE_ONE))

#endif
