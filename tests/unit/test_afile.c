/* test_afile: lib/core/afile.c, what records_save, metrics_trim and tidl-pack write
 * through: until the commit the old file stands whole; an abort leaves it so; nothing
 * else is left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/afile.h"
#include "core/err.h"

static void read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
	buf[n] = 0;
	if (f)
		fclose(f);
}

static void test_afile(const char *dir)
{
	char path[512], buf[256] = "", cmd[600];
	snprintf(path, sizeof path, "%s/model.prototxt", dir);
	FILE *f = fopen(path, "w");
	fputs("old\n", f);
	fclose(f);
	afile a;
	CHECK(afile_open(&a, path, "w") == 0);
	fputs("new, half", a.f);
	fflush(a.f);
	read_file(path, buf, sizeof buf);
	CHECK_MSG(!strcmp(buf, "old\n"), "%s", buf);
	afile_abort(&a);
	CHECK(access(a.tmp, F_OK) != 0);
	CHECK(afile_open(&a, path, "w") == 0);
	fputs("new\n", a.f);
	CHECK_MSG(afile_commit(&a) == 0, "%s", err_msg());
	read_file(path, buf, sizeof buf);
	CHECK_MSG(!strcmp(buf, "new\n"), "%s", buf);
	snprintf(cmd, sizeof cmd, "ls -A %s | grep -q '^\\.tmp'", dir);
	CHECK(system(cmd) != 0);
	CHECK(afile_open(&a, "/nonexistent/dir/x", "w") < 0 && !strcmp(err_msg(), "/nonexistent/dir/x: No such file or directory"));
}

int main(void)
{
	char dir[] = "/tmp/test_afile.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	test_afile(dir);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return check_done("test_afile");
}
