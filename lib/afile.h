/* afile: a file replaced atomically. Writes go to a temp file beside the target
 * (DIR/.tmp-XXXXXX, mode 0666 & ~umask); commit flushes, fsyncs, renames it over the
 * name and fsyncs the directory, so a reader sees the old file or the whole new one,
 * never a half-written one, and a failed or killed writer leaves the old file as it
 * was (a killed one leaves the temp, which checkpoint_clean removes in run dirs).
 * Nothing here prints or exits. */
#ifndef AFILE_H
#define AFILE_H

#include <stdio.h>

typedef struct afile {
	FILE *f;                /* write here between open and commit/abort */
	char path[4096], tmp[4096], dir[4096];
} afile;

/* Creates the temp file for path; 0, or -1 (err) with a->f NULL. */
int afile_open(afile *a, const char *path, const char *mode);
/* Finishes: path now holds what was written. On failure (err) the temp file is gone
 * and path untouched. a->f is closed either way. */
int afile_commit(afile *a);
/* Gives up: closes and removes the temp file; path untouched. NULL-safe on a->f. */
void afile_abort(afile *a);

#endif
