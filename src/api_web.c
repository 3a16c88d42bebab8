/* The built-in web page (docs/api.md, 4.12): its three files, compiled in (web_assets.h),
 * served without an API key (RT_OPEN); the API calls the page makes need one as usual. */
#include <string.h>

#include "api.h"
#include "web_assets.h"

/* The page loads its script, style and data from here only (its icon is an empty data: URL,
 * so that browsers do not ask for /favicon.ico), and nothing may frame it. */
#define WEB_CSP \
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; " \
    "form-action 'none'"

/* Whether an If-None-Match value INM matches the file's ETAG: it lists the tag, or is "*",
 * which matches any current representation (RFC 9110 13.1.2). */
static int none_match(const char *inm, const char *etag)
{
    if (!inm)
        return 0;
    inm += strspn(inm, " \t");
    if (*inm == '*') {
        inm++;
        return !inm[strspn(inm, " \t")];
    }
    return strstr(inm, etag) != NULL;
}

static void web_file(rnnd_req *r, const char *name, const char *type)
{
    const rnnd_app *app = rnnd_req_app(r);
    const struct rnnd_web_asset *a = NULL;
    for (size_t i = 0; i < rnnd_web_n_assets; i++)
        if (!strcmp(rnnd_web_assets[i].name, name))
            a = &rnnd_web_assets[i];
    if (!app->cfg->web_ui || !a) {
        rnnd_reply_error(r, RNND_E_NOT_FOUND, "no such resource: the web page is off (web_ui)");
        return;
    }
    /* the files change only with the binary: the browser keeps them and asks each time
     * whether they changed (If-None-Match), so an upgrade shows at the next load */
    rnnd_reply_header(r, "Cache-Control", "no-cache");
    rnnd_reply_header(r, "ETag", a->etag);
    if (none_match(rnnd_req_header(r, "If-None-Match"), a->etag)) {
        rnnd_reply_empty(r, 304);
        return;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_append(&b, (const char *)a->data, a->len);
    rnnd_reply(r, 200, &b);
    rnnd_reply_header(r, "Content-Type", type);
    rnnd_reply_header(r, "Content-Security-Policy", WEB_CSP);
    rnnd_reply_header(r, "X-Content-Type-Options", "nosniff");
}

void rnnd_api_web_index(rnnd_req *r) { web_file(r, "index.html", "text/html; charset=utf-8"); }

void rnnd_api_web_js(rnnd_req *r) { web_file(r, "app.js", "text/javascript; charset=utf-8"); }

void rnnd_api_web_css(rnnd_req *r) { web_file(r, "app.css", "text/css; charset=utf-8"); }
