/* Fuzzes config reading (lib/core/config.c: JSON, "base" inheritance, the data section) and
 * the sections read from it (optim: train, detect: model).
 *
 * The input is up to three files separated by NUL bytes: a.json, b.json, c.json in one
 * directory; a.json is read, and may name the others (or itself) as its base. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "ssd/detect.h"
#include "train/optim.h"

static char dir[64];

static void remove_dir(void)
{
	static const char *const names[3] = {"a.json", "b.json", "c.json"};
	char path[128];
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void write_part(const char *name, const uint8_t *p, size_t n)
{
	char path[128];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "%s/fuzz-config.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(dir))
			abort();
		atexit(remove_dir);
	}
	static const char *const names[3] = {"a.json", "b.json", "c.json"};
	size_t start = 0;
	for (int i = 0; i < 3; i++) {
		size_t end = start;
		while (end < size && data[end])
			end++;
		write_part(names[i], data + start, end - start);
		start = end < size ? end + 1 : size;
	}
	char path[128];
	snprintf(path, sizeof path, "%s/a.json", dir);
	cJSON *j = config_read(path);
	if (j) {
		data_config dc;
		data_config_default(&dc);
		data_config_apply(&dc, cJSON_GetObjectItemCaseSensitive(j, "data"), "a.json: data");
		optim_config oc;
		optim_config_default(&oc);
		const cJSON *train = cJSON_GetObjectItemCaseSensitive(j, "train");
		if (train && optim_config_apply(&oc, train, "a.json: train") == 0)
			optim_config_check(&oc, 1000);
		head_config mc;
		head_config_default(&mc);
		const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
		if (model)
			head_config_apply(&mc, model, "a.json: model");
		cJSON_Delete(j);
	}
	return 0;
}
