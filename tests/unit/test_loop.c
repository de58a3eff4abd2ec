/* test_loop: the training loop's weights stream (lib/train/loop.c), both ends over a
 * file: versions of params (and ranges) in order, the final mark read once and never
 * left on the owner's record, the drain of the one version nobody uses, and the errors
 * that name the option, the stream and the batch. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "quant/qmodel.h"
#include "train/loop.h"

#define CFG "tests/fixtures/model/tiny.json"

static int opened_calls;
static void opened(const char *path)
{
	(void)path;
	opened_calls++;
}

/* steps versions 0..n-1 of m's params (ranges too if with_ranges) to path, the last
 * one final if final. */
static void write_versions(const char *path, model *m, int n, int with_ranges, int final)
{
	stream_writer *w = stream_open_write(path, 1);
	record *ranges = with_ranges ? model_ranges_record(m) : NULL;
	CHECK(w && (!with_ranges || ranges));
	for (int k = 0; w && k < n; k++) {
		record *p = model_params_record(m, k);
		CHECK(p && loop_send(w, p, ranges, final && k == n - 1) == 0);
		/* the mark is on the wire only */
		CHECK(p && !cJSON_GetObjectItemCaseSensitive(p->meta, "final"));
		record_free(p);
	}
	CHECK(stream_close_write(w) == 0);
	record_free(ranges);
}

static void test_versions(const char *dir, model *m, int with_ranges)
{
	char path[512];
	snprintf(path, sizeof path, "%s/params%d.tns", dir, with_ranges);
	double step = -1;
	loop_in in;

	/* three versions, the last final: two batches run, the third read stops */
	write_versions(path, m, 3, with_ranges, 1);
	opened_calls = 0;
	loop_in_init(&in, path, "--weights", with_ranges, opened);
	CHECK(loop_next(&in, m, 1, &step) == 1 && step == 0 && opened_calls == 1);
	CHECK(loop_next(&in, m, 2, &step) == 1 && step == 1 && opened_calls == 1);
	CHECK(loop_next(&in, m, 3, &step) == 0 && step == 2);
	CHECK(loop_drain(&in) == 0); /* nothing after the final version */
	loop_in_close(&in);

	/* no final mark: the input ends after batch 1; the drain takes version 1 whole */
	write_versions(path, m, 2, with_ranges, 0);
	loop_in_init(&in, path, "--weights", with_ranges, NULL);
	CHECK(loop_next(&in, m, 1, NULL) == 1);
	CHECK(loop_drain(&in) == 0);
	CHECK(loop_next(&in, m, 2, &step) < 0);
	char want[600];
	snprintf(want, sizeof want, "--weights %s: no params record for batch 2 (stream ended after %d records)", path,
		 with_ranges ? 4 : 2);
	CHECK_MSG(!strcmp(err_msg(), want), "got '%s'", err_msg());
	loop_in_close(&in);

	/* a stream that ends between a params record and its ranges */
	if (with_ranges) {
		stream_writer *w = stream_open_write(path, 1);
		record *p = model_params_record(m, 0);
		CHECK(loop_send(w, p, NULL, 0) == 0 && stream_close_write(w) == 0);
		record_free(p);
		loop_in_init(&in, path, "--weights", 1, NULL);
		CHECK(loop_next(&in, m, 1, NULL) < 0 && strstr(err_msg(), ": no ranges record for batch 1"));
		loop_in_close(&in);
	}
	/* a drain before any read opens nothing */
	loop_in_init(&in, "/nonexistent/params", "--weights", with_ranges, NULL);
	CHECK(loop_drain(&in) == 0);
	CHECK(loop_next(&in, m, 1, NULL) < 0 && strstr(err_msg(), "/nonexistent/params"));
	loop_in_close(&in);
}

static void test_mismatch(const char *dir, model *m)
{
	char path[512];
	snprintf(path, sizeof path, "%s/bad.tns", dir);
	record *p = record_new("params");
	int64_t s1[1] = {1};
	record_add(p, "nothing.weight", DT_F32, 1, s1);
	stream_writer *w = stream_open_write(path, 1);
	CHECK(loop_send(w, p, NULL, 0) == 0 && stream_close_write(w) == 0);
	record_free(p);
	loop_in in;
	loop_in_init(&in, path, "--weights", 0, NULL);
	char want[600];
	snprintf(want, sizeof want, "--weights %s: record 1: ", path);
	CHECK(loop_next(&in, m, 1, NULL) < 0);
	CHECK_MSG(!strncmp(err_msg(), want, strlen(want)), "got '%s'", err_msg());
	loop_in_close(&in);
}

int main(void)
{
	char dir[] = "/tmp/test_loop.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	model *m = model_load(CFG);
	CHECK_MSG(m, "%s", err_msg());
	if (m) {
		model_init_params(m, 1);
		test_versions(dir, m, 0);
		test_mismatch(dir, m);
		CHECK_MSG(model_quantize_as(m, 8, 0, 0) == 0, "%s", err_msg());
		test_versions(dir, m, 1);
	}
	model_free(m);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return check_done("test_loop");
}
