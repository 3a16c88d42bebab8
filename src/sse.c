/* Server-sent events framing (see sse.h). */
#include "sse.h"

#include <string.h>

int rnnd_sse_event(rnnd_stream *st, const char *event, const rnnd_buf *json)
{
    if (rnnd_buf_failed(json))
        return -1;
    rnnd_buf b;
    rnnd_buf_init(&b);
    if (event)
        rnnd_buf_printf(&b, "event: %s\n", event);
    rnnd_buf_puts(&b, "data: ");
    rnnd_buf_append(&b, json->data ? json->data : "", json->len);
    rnnd_buf_puts(&b, "\n\n");
    int rc = rnnd_buf_failed(&b) ? -1 : rnnd_stream_write(st, b.data, b.len);
    rnnd_buf_free(&b);
    return rc;
}

int rnnd_sse_done(rnnd_stream *st)
{
    static const char done[] = "data: [DONE]\n\n";
    return rnnd_stream_write(st, done, sizeof done - 1);
}
