#include "train/loop.h"

#include "core/err.h"
#include "quant/qmodel.h"

void loop_in_init(loop_in *in, const char *path, const char *opt, int ranges, void (*opened)(const char *path))
{
	*in = (loop_in){.path = path, .opt = opt, .ranges = ranges, .opened = opened};
}

/* One record of the next version into m: the params, or the ranges after them.
 * 1, 0 when it is the final params, -1 (err). */
static int read_into(loop_in *in, model *m, long batch_no, int ranges, double *step)
{
	record *r;
	int rc = stream_read(in->s, &r);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return err_set("%s %s: no %s record for batch %ld (stream ended after %ld records)", in->opt, in->path,
			       ranges ? "ranges" : "params", batch_no, stream_count(in->s));
	if ((ranges ? model_load_ranges(m, r) : model_load_params(m, r)) < 0) {
		err_wrap("%s %s: record %ld", in->opt, in->path, stream_count(in->s));
		record_free(r);
		return -1;
	}
	if (step)
		*step = meta_num(r, "step", 0);
	int more = !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r->meta, "final"));
	record_free(r);
	return more;
}

int loop_next(loop_in *in, model *m, long batch_no, double *step)
{
	if (!in->s) {
		if (!(in->s = stream_open_read(in->path)))
			return -1;
		if (in->opened)
			in->opened(in->path);
	}
	int more = read_into(in, m, batch_no, 0, step);
	if (more >= 0 && in->ranges && read_into(in, m, batch_no, 1, NULL) < 0)
		return -1;
	if (more == 0)
		in->final = 1;
	return more;
}

int loop_drain(loop_in *in)
{
	for (int k = 0; in->s && !in->final && k < 1 + in->ranges; k++) {
		record *last;
		int rc = stream_read(in->s, &last);
		if (rc < 0)
			return err_wrap("%s", in->opt);
		if (rc > 0)
			record_free(last);
	}
	return 0;
}

void loop_in_close(loop_in *in)
{
	if (in->s)
		stream_close_read(in->s);
	in->s = NULL;
}

int loop_send(stream_writer *w, record *params, const record *ranges, int final)
{
	if (final && !cJSON_AddTrueToObject(params->meta, "final"))
		return err_set("out of memory");
	int rc = stream_write(w, params) < 0 || (ranges && stream_write(w, ranges) < 0) ? -1 : 0;
	if (final)
		cJSON_DeleteItemFromObjectCaseSensitive(params->meta, "final");
	return rc;
}
