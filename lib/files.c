#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

int files_read(const char *path, char **out, size_t *len)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -2;
		return err_set("%s", strerror(errno));
	}
	/* a regular file, or a pipe, FIFO or process substitution (--classes <(echo
	 * raccoon)) read to its end */
	struct stat st;
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && (size_t)st.st_size > FILE_MAX)) {
		int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
		close(fd);
		return err_set("%s", e ? strerror(e) : "larger than 1 GiB");
	}
	size_t cap = (S_ISREG(st.st_mode) ? (size_t)st.st_size : 4096) + 1, n = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return err_set("out of memory");
	}
	for (;;) {
		if (n + 1 == cap) {
			/* the file grew while we read it: keep going up to FILE_MAX */
			char *b = cap > FILE_MAX ? NULL : realloc(buf, cap * 2);
			if (!b) {
				free(buf);
				close(fd);
				return err_set("file too large");
			}
			buf = b;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			close(fd);
			return err_set("%s", strerror(e));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}

int files_entry_data(struct archive *a, struct archive_entry *e, char **out, size_t *len)
{
	size_t cap = archive_entry_size_is_set(e) && archive_entry_size(e) >= 0 ? (size_t)archive_entry_size(e) + 1 : 65536;
	size_t n = 0;
	if (cap > FILE_MAX)
		return err_set("entry too large");
	char *buf = malloc(cap);
	if (!buf)
		return err_set("out of memory");
	for (;;) {
		if (n + 1 >= cap) {
			char *b = cap > FILE_MAX ? NULL : realloc(buf, cap * 2);
			if (!b) {
				free(buf);
				return err_set("entry too large");
			}
			buf = b;
			cap *= 2;
		}
		la_ssize_t r = archive_read_data(a, buf + n, cap - 1 - n);
		if (r < 0) {
			err_set("%s", archive_error_string(a));
			free(buf);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}

struct archive *files_archive_open(const char *path)
{
	struct archive *a = archive_read_new();
	if (!a) {
		err_set("out of memory");
		return NULL;
	}
	archive_read_support_filter_all(a);
	archive_read_support_format_all(a);
	if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
		err_set("%s: %s", path, archive_error_string(a));
		archive_read_free(a);
		return NULL;
	}
	return a;
}

const char *files_entry_path(struct archive_entry *e)
{
	const char *p = archive_entry_pathname(e);
	if (!p)
		return "";
	for (;;) {
		if (p[0] == '/')
			p++;
		else if (p[0] == '.' && p[1] == '/')
			p += 2;
		else
			return p;
	}
}
