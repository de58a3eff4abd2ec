/* tool: what every tool main shares: its name in messages, exit codes, argument
 * checks and the stdout rules. The only module allowed to exit the process:
 * exit 1 for a failure, 2 for a usage error. */
#ifndef TOOL_H
#define TOOL_H

#include <stdio.h>

#include "core/err.h"

extern const char *tool_name;

/* Sets the name; with TNS_DRIVER_PID set (by the pipeline scripts), also starts a
 * thread that stops the tool (SIGTERM) as soon as that process is gone. */
void tool_init(const char *name);
/* "tool: message" on stderr, exit 1. */
_Noreturn void die(const char *fmt, ...) ERR_PRINTF(1, 2);
/* die() with the library's current error message. */
_Noreturn void die_err(void);
/* "tool: message" + a hint to --help on stderr, exit 2. */
_Noreturn void usage_error(const char *fmt, ...) ERR_PRINTF(1, 2);

/* Numeric options: the whole string must parse and lie in [lo, hi], else usage_error. */
long arg_long(const char *opt, const char *s, long lo, long hi);
unsigned long long arg_u64(const char *opt, const char *s);
double arg_double(const char *opt, const char *s, double lo, double hi);
/* "k/N" with 0 <= k < N. */
void arg_shard(const char *opt, const char *s, int *k, int *n);

/* Binary output must not go to a terminal (exit 2 if stdout is one). */
void refuse_terminal_stdout(void);
/* Flushes and checks stdout at exit, so a full disk or closed pipe is an error. */
void close_stdout(void);
/* "tool: N unit[ of TOTAL] (R unit/s)" on stderr at most every 2 s, and always when
 * final is set (total <= 0: unknown). */
void progress(long done, long total, const char *unit, int final);
/* A FIFO of the training loop this tool is to open (writer: 1 to write it, 0 to read
 * it). If the tool exits before tool_fifo_opened() says it has it open, an atexit
 * handler opens and closes it once, so that the stage at the other end, blocked in its
 * own open() (which waits for both ends), sees end of stream and ends too, instead of
 * the whole loop waiting forever. Up to 4 paths; a path that is not a FIFO is left
 * alone. */
void tool_fifo_watch(const char *path, int writer);
void tool_fifo_opened(const char *path);
/* Worker threads to use by default: online CPUs, or $TNS_THREADS. */
int default_threads(void);

#endif
