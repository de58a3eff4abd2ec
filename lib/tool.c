#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *tool_name = "tns";

void tool_init(const char *name)
{
	tool_name = name;
	/* Records are MBs each and come and go per record. Keep freed memory in the process
	 * instead of unmapping it and faulting fresh zeroed pages in for the next record:
	 * under a VM, page faults were the largest single cost of voc-decode and augment.
	 * 32 MB is glibc's largest allowed mmap threshold. */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", tool_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void die_err(void)
{
	die("%s", err_msg());
}

void usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", tool_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", tool_name);
	exit(2);
}

long arg_long(const char *opt, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		usage_error("%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
	return v;
}

unsigned long long arg_u64(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-')
		usage_error("%s: '%s' is not an integer in [0, 2^64-1]", opt, s);
	return v;
}

double arg_double(const char *opt, const char *s, double lo, double hi)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
		usage_error("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
	return v;
}

void arg_shard(const char *opt, const char *s, int *k, int *n)
{
	char *end, *end2;
	long a = strtol(s, &end, 10);
	if (end == s || *end != '/')
		usage_error("%s: '%s' is not k/N", opt, s);
	long b = strtol(end + 1, &end2, 10);
	if (end2 == end + 1 || *end2 || b < 1 || b > 1 << 20 || a < 0 || a >= b)
		usage_error("%s: '%s' is not k/N with 0 <= k < N", opt, s);
	*k = (int)a;
	*n = (int)b;
}

void refuse_terminal_stdout(void)
{
	if (isatty(STDOUT_FILENO))
		usage_error("refusing to write a binary stream to a terminal (pipe it, or redirect to a file)");
}

void close_stdout(void)
{
	if (fflush(stdout) != 0 || ferror(stdout))
		die("stdout: write error: %s", strerror(errno));
	if (fclose(stdout) != 0)
		die("stdout: close: %s", strerror(errno));
}

static double seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

void progress(long done, long total, const char *unit, int final)
{
	static double start, last;
	static long shown = -1;
	double now = seconds();
	if (start == 0)
		start = last = now;
	if (final ? done == shown : now - last < 2)
		return;
	last = now;
	shown = done;
	fprintf(stderr, "%s: %ld", tool_name, done);
	if (total > 0)
		fprintf(stderr, " of %ld", total);
	fprintf(stderr, " %s (%.1f %s/s)\n", unit, now > start ? done / (now - start) : 0.0, unit);
}

int default_threads(void)
{
	const char *env = getenv("TNS_THREADS");
	long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static struct {
	const char *path;
	int writer;
} fifo_watched[4];

/* The other end may still be starting up (a stage reaches its open() after reading its
 * first input): it gets this long to arrive. */
#define FIFO_RELEASE_MS 5000

static void release_fifo(const char *path, int writer)
{
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISFIFO(st.st_mode))
		return;
	int fd = -1;
	if (writer) {
		/* a writer's non-blocking open fails (ENXIO) until a reader is there */
		for (int ms = 0; ms < FIFO_RELEASE_MS; ms += 100) {
			if ((fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) >= 0 || errno != ENXIO)
				break;
			nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
		}
	} else if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) >= 0) {
		/* a reader's open succeeds at once: stay until the writer has come (its first
		 * bytes or its end), so it is not left to open after this one closed */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		poll(&p, 1, FIFO_RELEASE_MS);
	}
	if (fd >= 0)
		close(fd);
}

static void release_watched_fifos(void)
{
	for (int i = 0; i < 4; i++)
		if (fifo_watched[i].path)
			release_fifo(fifo_watched[i].path, fifo_watched[i].writer);
}

void tool_fifo_watch(const char *path, int writer)
{
	static int registered;
	for (int i = 0; i < 4; i++)
		if (!fifo_watched[i].path) {
			fifo_watched[i].path = path;
			fifo_watched[i].writer = writer;
			break;
		}
	if (!registered)
		registered = atexit(release_watched_fifos) == 0;
}

void tool_fifo_opened(const char *path)
{
	for (int i = 0; i < 4; i++)
		if (fifo_watched[i].path && !strcmp(fifo_watched[i].path, path))
			fifo_watched[i].path = NULL;
}
