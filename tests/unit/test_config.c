/* Config files: "base" inheritance (merge rules, relative paths, loops, errors). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/config.h"
#include "core/err.h"

static char dir[] = "/tmp/test_config_XXXXXX";

static void put(const char *name, const char *text)
{
	char p[256];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
}

static cJSON *load(const char *name)
{
	char p[256];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return config_read(p);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	char sub[256];
	snprintf(sub, sizeof sub, "%s/sub", dir);
	mkdir(sub, 0700);
	put("base.json", "{\"name\":\"b\",\"model\":{\"num_classes\":20,\"anchors\":{\"strides\":[8,16]},\"bn_eps\":1e-5},"
			 "\"data\":{\"size\":512}}");
	put("sub/child.json", "{\"base\":\"../base.json\",\"name\":\"c\",\"model\":{\"num_classes\":3,"
			      "\"anchors\":{\"strides\":[4]}},\"extra\":true}");
	put("sub/grandchild.json", "{\"base\":\"child.json\",\"data\":{\"size\":320}}");
	put("loop.json", "{\"base\":\"loop.json\"}");
	put("badbase.json", "{\"base\":7}");
	put("missing.json", "{\"base\":\"nope.json\"}");

	cJSON *c = load("sub/grandchild.json");
	CHECK_MSG(c != NULL, "%s", err_msg());
	if (c) {
		const cJSON *m = cJSON_GetObjectItem(c, "model");
		CHECK(cJSON_GetObjectItem(m, "num_classes")->valuedouble == 3);         /* child wins */
		CHECK(cJSON_GetObjectItem(m, "bn_eps")->valuedouble == 1e-5);           /* kept from base */
		const cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "anchors"), "strides");
		CHECK(cJSON_GetArraySize(s) == 1 && cJSON_GetArrayItem(s, 0)->valuedouble == 4); /* arrays replace */
		CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "data"), "size")->valuedouble == 320);
		CHECK(strcmp(cJSON_GetObjectItem(c, "name")->valuestring, "c") == 0);
		CHECK(cJSON_IsTrue(cJSON_GetObjectItem(c, "extra")));
		CHECK(cJSON_GetObjectItem(c, "base") == NULL);
		cJSON_Delete(c);
	}
	CHECK(load("loop.json") == NULL && strstr(err_msg(), "more than 8 levels"));
	CHECK(load("badbase.json") == NULL && strstr(err_msg(), "base: expected a file name"));
	CHECK(load("missing.json") == NULL && strstr(err_msg(), "missing.json: base: ") && strstr(err_msg(), "nope.json"));

	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return check_done("test_config");
}
