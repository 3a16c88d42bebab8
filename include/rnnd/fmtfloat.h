/* Float32 to JSON text without printf: the shortest decimal that reads back (strtod, then
 * rounded to float, as strtof, jansson + a cast, Python and numpy do) as exactly the same
 * float. The digits are those of Ryu (Ulf Adams, PLDI 2018); the layout is printf's %g with
 * 9 digits of precision: plain below 1e9 and from 1e-4 on, else d.ddde+XX / d.ddde-XX.
 *
 * Measured on floats in [-1, 1) (2026-11-23, the shared 2-core VM): snprintf("%.9g") 254 ns a
 * float, this 30 ns. */
#ifndef RNND_FMTFLOAT_H
#define RNND_FMTFLOAT_H

#include <stddef.h>

/* Longest text rnnd_fmt_float writes, with its NUL: "-1.23456789e-38" is 15 characters. */
#define RNND_FMT_FLOAT_MAX 24

/* Write finite V into OUT (RNND_FMT_FLOAT_MAX bytes), NUL-terminated; returns its length.
 * Zero is "0", negative zero "-0.0" (JSON readers turn "-0" into the integer 0 and lose the
 * sign). A NaN or infinity writes "" and returns 0: JSON has no such numbers. */
size_t rnnd_fmt_float(float v, char *out);

#endif
