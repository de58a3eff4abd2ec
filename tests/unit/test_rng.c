/* Unit tests of lib/core/rng.c: splitmix64 and the seeded shuffle of datasets. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"

static void test_splitmix64_shuffle(void)
{
	/* splitmix64 from state 0: the published first outputs */
	uint64_t st = 0;
	CHECK(splitmix64(&st) == 0xe220a8397b1dcdafull);
	CHECK(splitmix64(&st) == 0x6e789e6aa1b965f4ull);

	enum { N = 101 };
	long a[N], b[N];
	int seen[N] = {0};
	for (int i = 0; i < N; i++)
		a[i] = b[i] = i;
	splitmix64_shuffle(a, N, 42);
	splitmix64_shuffle(b, N, 42);
	CHECK(memcmp(a, b, sizeof a) == 0);
	int moved = 0;
	for (int i = 0; i < N; i++) {
		seen[a[i]]++;
		moved += a[i] != i;
	}
	int perm = 1;
	for (int i = 0; i < N; i++)
		perm &= seen[i] == 1;
	CHECK(perm);
	CHECK(moved > N / 2);
	for (int i = 0; i < N; i++)
		b[i] = i;
	splitmix64_shuffle(b, N, 43);
	CHECK(memcmp(a, b, sizeof a) != 0);
	/* n = 0 and 1 are no-ops */
	long one = 5;
	splitmix64_shuffle(&one, 1, 9);
	splitmix64_shuffle(NULL, 0, 9);
	CHECK(one == 5);

	/* every position is roughly equally likely for the first element */
	int count[4] = {0};
	for (uint64_t s = 0; s < 4000; s++) {
		long v[4] = {0, 1, 2, 3};
		splitmix64_shuffle(v, 4, s);
		count[v[0]]++;
	}
	for (int i = 0; i < 4; i++)
		CHECK_MSG(count[i] > 850 && count[i] < 1150, "first = %d: %d of 4000", i, count[i]);
}

int main(void)
{
	test_splitmix64_shuffle();
	return check_done("test_rng");
}
