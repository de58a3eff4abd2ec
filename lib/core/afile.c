/* afile: a file replaced atomically (afile.h). */
#include "core/afile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

int afile_open(afile *a, const char *path, const char *mode)
{
	const char *slash = strrchr(path, '/');
	a->f = NULL;
	if ((size_t)snprintf(a->path, sizeof a->path, "%s", path) >= sizeof a->path ||
	    (size_t)snprintf(a->dir, sizeof a->dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".") >=
		    sizeof a->dir ||
	    (size_t)snprintf(a->tmp, sizeof a->tmp, "%s/.tmp-XXXXXX", slash == path ? "" : a->dir) >= sizeof a->tmp)
		return err_set("%s: path too long", path);
	if (slash == path)
		strcpy(a->dir, "/");
	/* An unnamed file in the directory (O_TMPFILE), named only at commit: a writer
	 * killed while writing (kill -9, the OOM killer) leaves nothing behind. Where the
	 * filesystem has no O_TMPFILE, a named temp file, which checkpoint_clean removes. */
	a->unnamed = 0;
	int fd = open(a->dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
	if (fd >= 0) {
		a->unnamed = 1; /* a->tmp stays the template: commit gives the name */
	} else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
		return err_set("%s: %s", path, strerror(errno));
	} else {
		fd = mkstemp(a->tmp);
	}
	if (fd < 0) /* the user's name: the temp's only differs in the file part */
		return err_set("%s: %s", path, strerror(errno));
	mode_t mask = umask(0); /* mkstemp makes 0600; the result is an ordinary file */
	umask(mask);
	fchmod(fd, 0666 & ~mask);
	if (!(a->f = fdopen(fd, mode))) {
		err_set("%s: %s", path, strerror(errno));
		close(fd);
		if (!a->unnamed)
			unlink(a->tmp);
		return -1;
	}
	return 0;
}

/* Gives the unnamed file the temp name (a->tmp, unique as mkstemp's), for the rename.
 * Between this and the rename is the only moment a kill can leave a temp file. */
static int name_unnamed(afile *a)
{
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fileno(a->f));
	for (int tries = 0; tries < 100; tries++) {
		int fd = mkstemp(a->tmp); /* a unique name ... */
		if (fd < 0)
			return -1;
		close(fd);
		unlink(a->tmp); /* ... freed for linkat, which will not replace a file */
		if (linkat(AT_FDCWD, proc, AT_FDCWD, a->tmp, AT_SYMLINK_FOLLOW) == 0)
			return 0;
		if (errno != EEXIST)
			return -1;
		memcpy(a->tmp + strlen(a->tmp) - 6, "XXXXXX", 6);
	}
	return -1;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return err_set("%s: %s", dir, strerror(errno));
	int rc = fsync(fd) < 0 && errno != EINVAL ? err_set("%s: fsync: %s", dir, strerror(errno)) : 0;
	close(fd);
	return rc;
}

int afile_commit(afile *a)
{
	int rc = 0;
	/* (messages name the file being replaced, the one the user knows: its temp is gone) */
	int named = !a->unnamed;
	if (fflush(a->f) != 0 || ferror(a->f))
		rc = err_set("%s: write error: %s", a->path, strerror(errno));
	else if (fsync(fileno(a->f)) < 0)
		rc = err_set("%s: fsync: %s", a->path, strerror(errno));
	else if (!named && !(named = name_unnamed(a) == 0))
		rc = err_set("%s: cannot name the new file: %s", a->path, strerror(errno));
	if (fclose(a->f) != 0 && rc == 0)
		rc = err_set("%s: close: %s", a->path, strerror(errno));
	a->f = NULL;
	if (rc == 0 && rename(a->tmp, a->path) < 0)
		rc = err_set("%s: rename to %s: %s", a->tmp, a->path, strerror(errno));
	if (rc < 0) {
		if (named)
			unlink(a->tmp);
		return -1;
	}
	return fsync_dir(a->dir);
}

void afile_abort(afile *a)
{
	if (a->f)
		fclose(a->f);
	a->f = NULL;
	if (!a->unnamed)
		unlink(a->tmp);
}
