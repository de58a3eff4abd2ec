/* test_pretrained: pretrained weights land where they belong. For each backbone of
 * DIR/cases.json (default tests/fixtures/pretrained, written by
 * tests/pretrained_stages.py with torch): each .pth file of a torchvision network
 * (both of torch's formats where listed) is read by lib/nn/pth.c, mapped onto the
 * config's model by pth_load_into (what it must report: tensors loaded, unused and
 * missing keys), and our backbone's stage outputs on a real BCCD image equal
 * torchvision's own forward of the same state dict (model.features[:k+1], the stem and
 * layer1..4, trunk_output.block1..4) to float tolerance: max|ours - torch's| <= 1e-3 *
 * max|torch's| per stage (TOL), printed beside torch's own float32-vs-float64 error. The files of one network give the same record bit for bit.
 * For a torchvision RegNet also: with its first conv's input channels reversed
 * (sgd-step's move for a BGR config), the channel-reversed image gives the same stages.
 *
 * tests/pretrained_stages.py --full DIR runs this on the full-size networks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "core/err.h"
#include "nn/model.h"
#include "nn/pth.h"
#include "core/stream.h"

/* max|ours - torch's| <= TOL * max|torch's|: float32 in another order. torch's own
 * float32 forward is up to 8e-5 of the largest value off its float64 one at
 * resnet50_b4's layer4 (the stages' meta torch_f32_vs_f64), ours as much */
#define TOL 1e-3

static char *slurp_text(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *s = malloc((size_t)n + 1);
	if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
		free(s);
		s = NULL;
	}
	if (s)
		s[n] = 0;
	fclose(f);
	return s;
}

/* The last node of module name: the node itself, or the last one under "name.". */
static const char *last_node(model *m, const char *module)
{
	const char *found = NULL, *name, *op;
	char shape[64];
	int64_t p, mac;
	enum model_part part;
	size_t n = strlen(module);
	for (int i = 0; model_node_info(m, i, &name, &op, shape, sizeof shape, &p, &mac, &part) == 0; i++)
		if (!strncmp(name, module, n) && (name[n] == 0 || name[n] == '.'))
			found = name;
	return found;
}

static int same_record(const record *a, const record *b)
{
	if (a->ntensors != b->ntensors)
		return 0;
	for (int i = 0; i < a->ntensors; i++) {
		const tensor *x = &a->tensors[i], *y = &b->tensors[i];
		if (strcmp(x->name, y->name) || x->dtype != y->dtype || !tensor_same_shape(x, y) ||
		    memcmp(x->data, y->data, tensor_nbytes(x)))
			return 0;
	}
	return 1;
}

/* Our stage outputs for params p and input (reversed in channel order when flip)
 * against the stages record; checks and prints one line per stage unless control.
 * Returns the largest max|ours - torch's| / max|torch's| of the stages. */
static double compare_stages(const char *config, const record *p, const record *st, const char *label, int flip,
			     int control)
{
	double worst = 0;
	model *m = model_load(config);
	CHECK_MSG(m, "%s: %s", config, err_msg());
	if (!m)
		return INFINITY;
	const tensor *in = record_find(st, "input");
	CHECK(in && in->ndim == 4 && in->shape[0] == 1 && in->shape[1] == 3);
	if (!in)
		goto out;
	int h = (int)in->shape[2], w = (int)in->shape[3];
	model_counts mc;
	CHECK_MSG(model_load_params(m, p) == 0 && model_count(m, h, w, &mc) == 0, "%s: %s", config, err_msg());
	const char *nodes[64];
	int ns = 0;
	for (int i = 0; i < st->ntensors && ns < 64; i++) {
		if (!strcmp(st->tensors[i].name, "input"))
			continue;
		nodes[ns] = last_node(m, st->tensors[i].name);
		CHECK_MSG(nodes[ns], "%s: no node of module %s", config, st->tensors[i].name);
		if (!nodes[ns] || model_keep(m, nodes[ns]) < 0)
			goto out;
		ns++;
	}
	float *x = malloc((size_t)tensor_numel(in) * sizeof *x);
	const float *src = in->data;
	size_t plane = (size_t)h * (size_t)w;
	for (int c = 0; c < 3; c++)
		memcpy(x + (size_t)c * plane, src + (size_t)(flip ? 2 - c : c) * plane, plane * sizeof *x);
	float *outs[4] = {0};
	CHECK_MSG(model_plan(m, 1, h, w, 0, 0) == 0, "%s", err_msg());
	for (int i = 0; i < model_noutputs(m); i++) {
		int64_t sh[3];
		model_output_shape(m, i, sh);
		outs[i] = malloc((size_t)(sh[0] * sh[1] * sh[2]) * sizeof(float));
	}
	CHECK_MSG(model_forward(m, x, outs) == 0, "%s", err_msg());
	int k = 0;
	for (int i = 0; i < st->ntensors; i++) {
		const tensor *t = &st->tensors[i];
		if (!strcmp(t->name, "input"))
			continue;
		int64_t sh[4];
		const float *v = model_value(m, nodes[k++], sh);
		CHECK_MSG(v, "%s", err_msg());
		int ok = v && t->ndim == 4;
		for (int d = 0; ok && d < 4; d++)
			ok = sh[d] == t->shape[d];
		CHECK_MSG(ok, "%s %s: shape [%lld,%lld,%lld,%lld], torch's [%lld,%lld,%lld,%lld]", label, t->name,
			  (long long)sh[0], (long long)sh[1], (long long)sh[2], (long long)sh[3], (long long)t->shape[0],
			  (long long)t->shape[1], (long long)t->shape[2], (long long)t->shape[3]);
		if (!ok)
			continue;
		const float *ref = t->data;
		double md = 0, mt = 0;
		for (int64_t j = 0; j < tensor_numel(t); j++) {
			double d = fabs((double)v[j] - ref[j]);
			md = d > md || isnan(d) ? d : md;
			mt = fabs(ref[j]) > mt ? fabs(ref[j]) : mt;
		}
		worst = !(md / mt <= worst) ? md / mt : worst;
		if (control)
			continue;
		CHECK_MSG(md <= TOL * mt, "%s %s (%s): max |ours - torch's| %.3g, max |torch's| %.3g", label, t->name,
			  nodes[k - 1], md, mt);
		const cJSON *f64 = cJSON_GetObjectItem(cJSON_GetObjectItem(st->meta, "torch_f32_vs_f64"), t->name);
		printf("%s %-20s [%lld,%lld,%lld]: max abs diff %.2e (max |torch| %.3g, relative %.1e; torch's own "
		       "f32 vs f64 %.2e)\n",
		       label, t->name, (long long)sh[1], (long long)sh[2], (long long)sh[3], md, mt, mt > 0 ? md / mt : 0,
		       cJSON_IsNumber(f64) ? f64->valuedouble : NAN);
	}
	for (int i = 0; i < 4; i++)
		free(outs[i]);
	free(x);
out:
	model_free(m);
	return worst;
}

static void run_case(const char *dir, const cJSON *c)
{
	const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
	const char *config = cJSON_GetObjectItem(c, "config")->valuestring;
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, cJSON_GetObjectItem(c, "stages")->valuestring);
	record *st = stream_read_first(path, "stages");
	CHECK_MSG(st, "%s", err_msg());
	model *m = model_load(config);
	CHECK_MSG(m, "%s: %s", config, err_msg());
	if (!st || !m) {
		record_free(st);
		model_free(m);
		return;
	}
	model_init_params(m, 1);
	record *first = NULL;
	const cJSON *f;
	cJSON_ArrayForEach(f, cJSON_GetObjectItem(c, "files")) {
		snprintf(path, sizeof path, "%s/%s", dir, f->valuestring);
		record *sd = pth_read(path);
		CHECK_MSG(sd, "%s", err_msg());
		if (!sd)
			continue;
		record *p = model_params_record(m, 0);
		pth_summary s;
		CHECK_MSG(pth_load_into(p, sd, "backbone.", &s) == 0, "%s: %s", path, err_msg());
		char line[1400];
		pth_summary_line(&s, line, sizeof line);
		printf("%s: %s\n", f->valuestring, line);
		CHECK_MSG(s.loaded == cJSON_GetObjectItem(c, "loaded")->valueint &&
				  !strcmp(s.skipped_list, cJSON_GetObjectItem(c, "skipped")->valuestring) &&
				  !strcmp(s.missing_list, cJSON_GetObjectItem(c, "missing")->valuestring),
			  "%s: %s", path, line);
		if (!first)
			first = sd;
		else {
			CHECK_MSG(same_record(first, sd), "%s: another state dict than %s's", path, name);
			record_free(sd);
		}
		char label[256];
		snprintf(label, sizeof label, "%s", f->valuestring);
		compare_stages(config, p, st, label, 0, 0);
		/* the first conv's input channels reversed: for a torchvision RegNet on a BGR
		 * config (sgd-step) the same stages from the reversed image; and the control
		 * that this test sees a weight out of place: the same image no longer agrees */
		const char *conv;
		CHECK_MSG(pth_reverse_input_channels(p, "backbone.", &conv) == 0, "%s", err_msg());
		double off = compare_stages(config, p, st, label, 0, 1);
		CHECK_MSG(off > 10 * TOL, "%s: %s reversed, the stages still agree (%.2g)", label, conv, off);
		printf("%s: control, %s's input channels reversed: stages off by %.2g of their largest value\n", label,
		       conv, off);
		if (s.rgb) {
			snprintf(label, sizeof label, "%s (%s reversed, BGR input)", f->valuestring, conv);
			compare_stages(config, p, st, label, 1, 0);
		}
		record_free(p);
	}
	record_free(first);
	record_free(st);
	model_free(m);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "tests/fixtures/pretrained";
	char path[1024];
	snprintf(path, sizeof path, "%s/cases.json", dir);
	char *text = slurp_text(path);
	cJSON *cases = text ? cJSON_Parse(text) : NULL;
	free(text);
	CHECK_MSG(cJSON_IsArray(cases), "%s: not readable JSON", path);
	const cJSON *c;
	cJSON_ArrayForEach(c, cases)
		run_case(dir, c);
	CHECK(cJSON_GetArraySize(cases) == 4);
	cJSON_Delete(cases);
	return check_done("test_pretrained");
}
