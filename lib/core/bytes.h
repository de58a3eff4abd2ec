/* bytes: reading the fixed-width integers of binary formats. */
#ifndef BYTES_H
#define BYTES_H

#include <stdint.h>

/* The n-byte (n <= 8) little-endian unsigned integer at p. */
static inline uint64_t load_le(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#endif
