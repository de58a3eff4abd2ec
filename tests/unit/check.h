/* check: the unit tests' tiny harness. Each CHECK counts a pass or a failure (printed
 * with file:line); check_done() prints "N passed, N failed" and is main's exit status,
 * so a failing check always fails the test binary. */
#ifndef CHECK_H
#define CHECK_H

#include <math.h>
#include <stdio.h>

static int check_pass, check_fail;

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (cond)                                                            \
			check_pass++;                                                \
		else {                                                               \
			check_fail++;                                                \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                    \
	} while (0)

#define CHECK_MSG(cond, ...)                                                         \
	do {                                                                         \
		if (cond)                                                            \
			check_pass++;                                                \
		else {                                                               \
			check_fail++;                                                \
			fprintf(stderr, "%s:%d: check failed: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                                \
			fputc('\n', stderr);                                         \
		}                                                                    \
	} while (0)

#define CHECK_NEAR(a, b, tol) \
	CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%s = %.9g, %s = %.9g", #a, (double)(a), #b, (double)(b))

static inline int check_done(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, check_pass, check_fail);
	return check_fail ? 1 : 0;
}

#endif
