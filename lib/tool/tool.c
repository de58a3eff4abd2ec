#include "tool/tool.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const char *tool_name = "tns";

/* ---- following the driver (TNS_DRIVER_PID) */

static pid_t driver_pid;

/* The driver is gone: stop as a SIGTERM would (what the driver's own trap sends), so
 * a checkpoint being written is left as its temp file, never half under its name. */
static _Noreturn void driver_gone(void)
{
	fprintf(stderr, "%s: stopping: the pipeline's driver (pid %ld) is gone\n", tool_name, (long)driver_pid);
	signal(SIGTERM, SIG_DFL);
	kill(getpid(), SIGTERM);
	for (;;)
		pause();
}

/* A pidfd turns readable when the process exits (Linux 5.3); without one, the pid is
 * polled every half second. */
static void *watch_driver(void *arg)
{
	int fd = (int)(intptr_t)arg;
	if (fd >= 0) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		while (poll(&p, 1, -1) < 0 && errno == EINTR)
			;
	} else {
		while (kill(driver_pid, 0) == 0 || errno != ESRCH)
			usleep(500 * 1000);
	}
	driver_gone();
}

/* The pipeline scripts export TNS_DRIVER_PID (pipelines/lib.sh, stages_follow_driver):
 * a stage whose driver dies, however it dies (kill -9 of the script alone or of its
 * process group, the OOM killer), stops within moments instead of training on
 * orphaned. The stages run in a process group of their own, which a signal to the
 * driver's group does not reach. */
static void follow_driver(void)
{
	const char *env = getenv("TNS_DRIVER_PID");
	if (!env || !*env)
		return;
	char *end;
	long pid = strtol(env, &end, 10);
	if (*end || pid <= 1)
		return;
	driver_pid = (pid_t)pid;
	int fd = -1;
#ifdef SYS_pidfd_open
	fd = (int)syscall(SYS_pidfd_open, driver_pid, 0);
	if (fd < 0 && errno == ESRCH)
		driver_gone(); /* gone before we started */
#endif
	pthread_t th;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&th, &at, watch_driver, (void *)(intptr_t)fd);
	if (rc != 0)
		die("cannot start the thread that watches the driver (pid %ld): %s", pid, strerror(rc));
	pthread_attr_destroy(&at);
}

void tool_init(const char *name)
{
	tool_name = name;
	follow_driver();
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

/* "stdout", or "stdout (FILE)" when it is a file, so a full disk names the file. */
static const char *stdout_name(void)
{
	static char name[4200];
	char target[4096];
	ssize_t n = readlink("/proc/self/fd/1", target, sizeof target - 1);
	if (n <= 0 || target[0] != '/')
		return "stdout";
	target[n] = 0;
	snprintf(name, sizeof name, "stdout (%s)", target);
	return name;
}

void close_stdout(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		int e = errno;
		die("%s: write error: %s", stdout_name(), strerror(e));
	}
	if (fclose(stdout) != 0) {
		int e = errno;
		die("%s: close: %s", stdout_name(), strerror(e));
	}
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
