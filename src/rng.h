/* Unpredictable bytes from the kernel (getrandom(2)): session ids are capabilities. */
#ifndef RNND_RNG_H
#define RNND_RNG_H

#include <stddef.h>

#define RNND_ID_LEN 32 /* hex characters of a 128-bit id */

/* Fill BUF with N random bytes. Returns 0 or RNND_ERR_IO. */
int rnnd_random_bytes(void *buf, size_t n);

/* A fresh 128-bit id as 32 lowercase hex characters plus NUL. Returns 0 or RNND_ERR_IO. */
int rnnd_random_id(char out[RNND_ID_LEN + 1]);

/* Nonzero when S is exactly 32 lowercase hex characters. */
int rnnd_id_valid(const char *s);

#endif
