#include "rng.h"

#include <errno.h>
#include <sys/random.h>

#include "rnnd/status.h"

int rnnd_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return RNND_ERR_IO;
        }
        p += got;
        n -= (size_t)got;
    }
    return RNND_OK;
}

int rnnd_random_id(char out[RNND_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[RNND_ID_LEN / 2];
    int rc = rnnd_random_bytes(raw, sizeof raw);
    if (rc)
        return rc;
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[RNND_ID_LEN] = '\0';
    return RNND_OK;
}

int rnnd_id_valid(const char *s)
{
    size_t i = 0;
    for (; i <= RNND_ID_LEN && s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == RNND_ID_LEN;
}
