/* The files of the built-in web page (src/web/), compiled into rnnd: the table is generated
 * at build time by tools/embed-web (Makefile.am's web_assets.c), so the page needs no build
 * step and no file at run time. api_web.c serves them. */
#ifndef RNND_WEB_ASSETS_H
#define RNND_WEB_ASSETS_H

#include <stddef.h>

struct rnnd_web_asset {
    const char *name;          /* the file's base name: "index.html", "app.js", ... */
    const unsigned char *data; /* its bytes, not NUL-terminated */
    size_t len;
    const char *etag; /* a quoted entity tag: the file's CRC and size */
};

extern const struct rnnd_web_asset rnnd_web_assets[];
extern const size_t rnnd_web_n_assets;

#endif
