/* afile: a file replaced atomically. Writes go to an unnamed file in the target's
 * directory (O_TMPFILE; mode 0666 & ~umask); commit flushes, fsyncs, links it as
 * DIR/.tmp-XXXXXX, renames that over the name and fsyncs the directory, so a reader
 * sees the old file or the whole new one, never a half-written one, and a failed or
 * killed writer leaves the old file as it was and no temp file (but for a kill between
 * the link and the rename; where the filesystem has no O_TMPFILE the temp is named from
 * the start: a killed writer leaves it, and checkpoint_clean removes it in run dirs).
 * Nothing here prints or exits. */
#ifndef AFILE_H
#define AFILE_H

#include <stdio.h>

typedef struct afile {
	FILE *f;                /* write here between open and commit/abort */
	char path[4096], tmp[4096], dir[4096];
	int unnamed;            /* the file is O_TMPFILE's until commit names it (tmp is
	                         * the DIR/.tmp-XXXXXX template until then) */
} afile;

/* Creates the temp file for path; 0, or -1 (err) with a->f NULL. */
int afile_open(afile *a, const char *path, const char *mode);
/* Finishes: path now holds what was written. On failure (err) the temp file is gone
 * and path untouched. a->f is closed either way. */
int afile_commit(afile *a);
/* Gives up: closes and removes the temp file; path untouched. NULL-safe on a->f. */
void afile_abort(afile *a);

#endif
