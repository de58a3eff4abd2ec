/* files: whole files and archive entries read into memory, for the image sources
 * (voc.c, imgsrc.c). Archives through libarchive: every format and filter it knows. */
#ifndef FILES_H
#define FILES_H

#include <stddef.h>

#include <archive.h>
#include <archive_entry.h>

/* Reads a whole file (or a pipe to its end; at most TNS_MAX_FILE bytes), NUL-terminated. -2 (no err) if it does not
 * exist, -1 (err). */
int files_read(const char *path, char **out, size_t *len);
/* Opens an archive for reading; NULL (err "path: why"). Free with archive_read_free. */
struct archive *files_archive_open(const char *path);
/* The current entry's name without "./" or "/" in front. */
const char *files_entry_path(struct archive_entry *e);
/* Reads the current entry's data (at most TNS_MAX_FILE bytes), NUL-terminated. -1 (err). */
int files_entry_data(struct archive *a, struct archive_entry *e, char **out, size_t *len);

#endif
