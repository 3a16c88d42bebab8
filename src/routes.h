/* The daemon's route table (routes.c), handed to rnnd_http_start by whoever starts the HTTP
 * layer: http.c routes requests without knowing the handlers, so the API files that call
 * into it are not called back by name. */
#ifndef RNND_ROUTES_H
#define RNND_ROUTES_H

#include <stddef.h>

#include "http.h"

extern const rnnd_route rnnd_routes[];
extern const size_t rnnd_n_routes;

/* The route patterns (a star stands for each path parameter), in the order the request
 * metrics number them: up to CAP of them into OUT; returns how many there are. */
size_t rnnd_route_names(const char **out, size_t cap);

#endif
