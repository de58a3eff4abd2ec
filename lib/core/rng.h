/* rng: a small seeded PRNG (xoshiro256**, seeded through splitmix64).
 * Streams are cheap to make, so every independent unit of work (an image of an epoch)
 * gets its own stream derived from a few integers: results then do not depend on the
 * order or the thread the work runs in. */
#ifndef RNG_H
#define RNG_H

#include <stdint.h>

typedef struct rng {
	uint64_t s[4];
} rng;

/* The splitmix64 step: advances *x and returns a well mixed 64-bit value. */
uint64_t splitmix64(uint64_t *x);
void rng_seed(rng *r, uint64_t seed);
/* A stream keyed by (a, b, c), e.g. (seed, epoch, image index). */
void rng_seed3(rng *r, uint64_t a, uint64_t b, uint64_t c);
uint64_t rng_next(rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double rng_double(rng *r);
/* Uniform in [lo, hi) (numpy.random.uniform's lo + (hi - lo) * u). */
double rng_uniform(rng *r, double lo, double hi);
/* Uniform integer in [0, n), unbiased; n >= 1. */
uint32_t rng_randint(rng *r, uint32_t n);
/* A uniform random permutation of 0..n-1 into perm (Fisher-Yates). */
void rng_permutation(rng *r, int *perm, int n);

/* Fisher-Yates over v[0..n) drawing straight from a splitmix64 stream started at seed,
 * not from xoshiro: the order the datasets' seeded shuffle (voc-decode --shuffle) has
 * always given, kept bit for bit. A draw in [0, k) rejects the top 2^64 mod k values,
 * or k of them when k divides 2^64. */
void splitmix64_shuffle(long *v, long n, uint64_t seed);

#endif
