#include "core/rng.h"

uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void rng_seed(rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
	/* an all-zero state is the one xoshiro cannot leave; splitmix64 never gives four zeros,
	 * but keep the guard so the invariant does not depend on that */
	if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
		r->s[0] = 1;
}

void rng_seed3(rng *r, uint64_t a, uint64_t b, uint64_t c)
{
	/* chain the keys through splitmix64 so (a, b, c) and (b, a, c) differ */
	uint64_t x = a;
	uint64_t h = splitmix64(&x);
	x = h ^ b;
	h = splitmix64(&x);
	x = h ^ c;
	h = splitmix64(&x);
	rng_seed(r, h);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double rng_double(rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

double rng_uniform(rng *r, double lo, double hi)
{
	return lo + (hi - lo) * rng_double(r);
}

uint32_t rng_randint(rng *r, uint32_t n)
{
	/* reject the top 2^64 mod n values so every residue is equally likely */
	uint64_t rem = (UINT64_MAX % n + 1) % n;
	for (;;) {
		uint64_t x = rng_next(r);
		if (x <= UINT64_MAX - rem)
			return (uint32_t)(x % n);
	}
}

void rng_permutation(rng *r, int *perm, int n)
{
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)rng_randint(r, (uint32_t)i + 1);
		int t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}

/* Uniform in [0, n) from splitmix64 without modulo bias. */
static uint64_t splitmix64_below(uint64_t *state, uint64_t n)
{
	uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
	do
		r = splitmix64(state);
	while (r >= limit);
	return r % n;
}

void splitmix64_shuffle(long *v, long n, uint64_t seed)
{
	uint64_t st = seed;
	for (long i = n - 1; i > 0; i--) {
		long j = (long)splitmix64_below(&st, (uint64_t)i + 1);
		long t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}
