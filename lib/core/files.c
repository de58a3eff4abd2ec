#include "core/files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/input_limits.h"

/* The error for a file or entry of size bytes (or more) over the TNS_MAX_FILE limit. */
static int too_large(unsigned long long size)
{
	return err_set("%llu bytes or more, over the limit of %zu (see %s)", size, limit_get(LIMIT_FILE),
		       limit_var(LIMIT_FILE));
}

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
	size_t max = limit_get(LIMIT_FILE);
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && (size_t)st.st_size > max)) {
		int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
		close(fd);
		return e ? err_set("%s", strerror(e)) : too_large((unsigned long long)st.st_size);
	}
	size_t cap = (S_ISREG(st.st_mode) ? (size_t)st.st_size : 4096) + 1, n = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return err_set("out of memory");
	}
	for (;;) {
		if (n + 1 == cap) {
			/* a pipe, or a file that grew while we read it: keep going up to the limit */
			if (cap > max) {
				free(buf);
				close(fd);
				return too_large(cap);
			}
			char *b = realloc(buf, cap * 2);
			if (!b) {
				free(buf);
				close(fd);
				return err_set("out of memory");
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

/* The size an entry's header declares is only a claim (a crafted tar can declare
 * terabytes): over the limit it is refused, and under it the buffer still grows with
 * the bytes that really arrive. */
#define ENTRY_FIRST_ALLOC ((size_t)1 << 20)
int files_entry_data(struct archive *a, struct archive_entry *e, char **out, size_t *len)
{
	size_t max = limit_get(LIMIT_FILE), cap = 65536, n = 0;
	if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0) {
		unsigned long long declared = (unsigned long long)archive_entry_size(e);
		if (declared > max)
			return too_large(declared);
		cap = declared + 1 < ENTRY_FIRST_ALLOC ? declared + 1 : ENTRY_FIRST_ALLOC;
	}
	char *buf = malloc(cap);
	if (!buf)
		return err_set("out of memory");
	for (;;) {
		if (n + 1 >= cap) {
			if (n > max) {
				free(buf);
				return too_large(n);
			}
			char *b = realloc(buf, cap * 2);
			if (!b) {
				free(buf);
				return err_set("out of memory");
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
