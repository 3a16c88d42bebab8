/* The one form of every model load error, "LABEL: KEY: reason": model.c and the files that
 * parse its parts (model_arch.c, model_sniff.c, model_verification.c) all report through it,
 * and it calls none of them. */
#include "model_internal.h"

#include <stdarg.h>
#include <stdio.h>

int rnnd_model_fail(char *err, size_t errlen, const char *label, const char *key, int status,
                    const char *fmt, ...)
{
    if (!err || errlen == 0)
        return status;
    int n = snprintf(err, errlen, "%s: %s: ", label ? label : "(model)", key);
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    /* keys and values come from the file: keep the message on one line */
    for (char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return status;
}
