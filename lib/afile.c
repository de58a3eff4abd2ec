/* afile: a file replaced atomically (afile.h). */
#include "afile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

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
	int fd = mkstemp(a->tmp);
	if (fd < 0) /* the user's name: the temp's only differs in the file part */
		return err_set("%s: %s", path, strerror(errno));
	mode_t mask = umask(0); /* mkstemp makes 0600; the result is an ordinary file */
	umask(mask);
	fchmod(fd, 0666 & ~mask);
	if (!(a->f = fdopen(fd, mode))) {
		err_set("%s: %s", a->tmp, strerror(errno));
		close(fd);
		unlink(a->tmp);
		return -1;
	}
	return 0;
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
	if (fflush(a->f) != 0 || ferror(a->f))
		rc = err_set("%s: write error: %s", a->path, strerror(errno));
	else if (fsync(fileno(a->f)) < 0)
		rc = err_set("%s: fsync: %s", a->path, strerror(errno));
	if (fclose(a->f) != 0 && rc == 0)
		rc = err_set("%s: close: %s", a->path, strerror(errno));
	a->f = NULL;
	if (rc == 0 && rename(a->tmp, a->path) < 0)
		rc = err_set("%s: rename to %s: %s", a->tmp, a->path, strerror(errno));
	if (rc < 0) {
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
	unlink(a->tmp);
}
