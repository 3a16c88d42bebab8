/* The route table: every URL pattern of the API, its handlers and what kind of route it is
 * (http.h, rnnd_route), expanded from route_list.h, where adding a route is one line. */
#include "routes.h"

#include "api.h"
#include "cluster.h"
#include "route_list.h"

const rnnd_route rnnd_routes[] = {
#define RNND_ROUTE_ROW(pattern, get, post, put, del, flags) {pattern, get, post, put, del, flags},
    RNND_ROUTE_LIST(RNND_ROUTE_ROW)
#undef RNND_ROUTE_ROW
};

const size_t rnnd_n_routes = RNND_ROUTE_COUNT;

size_t rnnd_route_names(const char **out, size_t cap)
{
    for (size_t i = 0; i < RNND_ROUTE_COUNT && i < cap; i++)
        out[i] = rnnd_routes[i].pattern;
    return RNND_ROUTE_COUNT;
}
