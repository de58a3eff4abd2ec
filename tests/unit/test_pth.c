/* test_pth: the .pth reader against the state dicts tests/make_pth_fixture.py saved
 * with torch (tests/fixtures/pth/): every tensor's name, dtype, shape and bits; strided
 * views, shared storages, f16/bf16/int64, protocol 4, mmcv checkpoints; damaged files
 * (the zip cut anywhere, data.pkl cut or changed at every byte and rezipped with good
 * CRCs, missing members) fail with a message and never crash; the backbone mapping,
 * torchvision RegNet's names onto mmdet's; the layouts of torchvision's resnet50, vgg16
 * and regnet_x_800mf onto the configs' backbones. */
#include <archive.h>
#include <archive_entry.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "err.h"
#include "model.h"
#include "pth.h"
#include "stream.h"

#define FIX "tests/fixtures/pth/"

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t cap = 0;
	*len = 0;
	if (!f)
		return NULL;
	for (;;) {
		if (cap - *len < 65536)
			buf = realloc(buf, cap = cap ? 2 * cap : 1 << 20);
		size_t n = fread(buf + *len, 1, cap - *len, f);
		if (!n)
			break;
		*len += n;
	}
	fclose(f);
	return buf;
}

static record *read_first(const char *path)
{
	stream_reader *s = stream_open_read(path);
	record *r = NULL;
	if (!s || stream_read(s, &r) <= 0)
		fprintf(stderr, "%s: %s\n", path, err_msg());
	stream_close_read(s);
	return r;
}

static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* tests/tnsfile.py writes 0-d arrays as shape [1] (np.ascontiguousarray), so a 0-d
 * tensor matches an expected [1]. */
static int same_tensor(const tensor *a, const tensor *b)
{
	if (a->ndim == 0 && b->ndim == 1 && b->shape[0] == 1)
		return a->dtype == b->dtype && !memcmp(a->data, b->data, tensor_nbytes(a));
	if (a->dtype != b->dtype || a->ndim != b->ndim)
		return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return !memcmp(a->data, b->data, tensor_nbytes(a));
}

static cJSON *read_json(const char *path)
{
	size_t len;
	char *text = (char *)slurp(path, &len);
	text = realloc(text, len + 1);
	text[len] = 0;
	cJSON *j = cJSON_Parse(text);
	free(text);
	CHECK_MSG(j, "%s: not JSON", path);
	return j;
}

static void hash_hex(const tensor *t, char out[32])
{
	snprintf(out, 32, "%016llx", (unsigned long long)fnv1a64(t->data, tensor_nbytes(t)));
}

/* The torchvision state dict: every key against the fixture's names, shapes, hashes. */
static void test_mobilenet(void)
{
	record *r = pth_read(FIX "mbv2_w025.pth");
	CHECK_MSG(r, "%s", err_msg());
	cJSON *expect = read_json(FIX "mbv2_w025.json");
	CHECK(cJSON_IsArray(expect));
	if (!r || !expect)
		return;
	CHECK(r->ntensors == cJSON_GetArraySize(expect));
	CHECK(!strcmp(r->kind, "params"));
	int i = 0, bad = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, expect) {
		if (i >= r->ntensors)
			break;
		const tensor *t = &r->tensors[i++];
		char hash[32], desc[128], want[128] = "";
		const cJSON *shape = cJSON_GetObjectItem(e, "shape"), *d;
		snprintf(want, sizeof want, "%s[", cJSON_GetObjectItem(e, "dtype")->valuestring);
		int k = 0;
		cJSON_ArrayForEach(d, shape)
			snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", k++ ? "," : "", d->valueint);
		strcat(want, "]");
		hash_hex(t, hash);
		int ok = !strcmp(t->name, cJSON_GetObjectItem(e, "name")->valuestring) &&
			 !strcmp(tensor_describe(t, desc, sizeof desc), want) &&
			 !strcmp(hash, cJSON_GetObjectItem(e, "fnv1a64")->valuestring);
		CHECK_MSG(ok, "tensor %d: %s %s %s, expected %s %s %s", i - 1, t->name, desc, hash,
			  cJSON_GetObjectItem(e, "name")->valuestring, want, cJSON_GetObjectItem(e, "fnv1a64")->valuestring);
		bad += !ok;
	}
	printf("mbv2_w025.pth: %d tensors, %d differ from torch's\n", r->ntensors, bad);
	record *head = read_first(FIX "mbv2_w025_head.tns");
	CHECK(head && head->ntensors == 24);
	for (int j = 0; head && j < head->ntensors; j++) {
		const tensor *t = record_find(r, head->tensors[j].name);
		CHECK_MSG(t && same_tensor(t, &head->tensors[j]), "%s differs", head->tensors[j].name);
	}
	const tensor *nbt = record_find(r, "features.0.1.num_batches_tracked");
	CHECK(nbt && nbt->dtype == DT_I32 && nbt->ndim == 0 && ((int32_t *)nbt->data)[0] == 2);
	record_free(head);
	cJSON_Delete(expect);
	record_free(r);
}

/* Strided and shared views, f16, bf16, int64, 0-d, empty, 8-d, in an mmcv checkpoint. */
static void test_odd(const char *path)
{
	record *r = pth_read(path), *want = read_first(FIX "odd.tns");
	CHECK_MSG(r, "%s: %s", path, err_msg());
	if (!r || !want)
		goto out;
	CHECK(r->ntensors == want->ntensors);
	for (int i = 0; i < want->ntensors && i < r->ntensors; i++) {
		const tensor *w = &want->tensors[i], *t = &r->tensors[i];
		CHECK_MSG(!strcmp(t->name, w->name), "%s: tensor %d is %s, expected %s", path, i, t->name, w->name);
		if (t->dtype == DT_F16 || t->dtype == DT_BF16) {
			int ok = t->ndim == w->ndim && tensor_numel(t) == tensor_numel(w);
			for (int64_t j = 0; ok && j < tensor_numel(t); j++)
				ok = tensor_get(t, j) == tensor_get(w, j);
			CHECK_MSG(ok, "%s: %s differs", path, t->name);
		} else {
			CHECK_MSG(same_tensor(t, w), "%s: %s differs", path, t->name);
		}
	}
	CHECK(record_find(r, "half") && record_find(r, "half")->dtype == DT_F16);
	CHECK(record_find(r, "bf16") && record_find(r, "bf16")->dtype == DT_BF16);
	CHECK(record_find(r, "steps") && ((int32_t *)record_find(r, "steps")->data)[0] == 123456789);
out:
	record_free(r);
	record_free(want);
}

/* ---- damaged files ---- */

typedef struct zmember {
	char name[256];
	unsigned char *data;
	size_t len;
} zmember;

static int unzip_all(const unsigned char *zip, size_t len, zmember *m, int max)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int n = 0;
	archive_read_support_format_zip(a);
	archive_read_open_memory(a, zip, len);
	while (n < max && archive_read_next_header(a, &e) == ARCHIVE_OK) {
		snprintf(m[n].name, sizeof m[n].name, "%s", archive_entry_pathname(e));
		m[n].len = (size_t)archive_entry_size(e);
		m[n].data = malloc(m[n].len + 1);
		archive_read_data(a, m[n].data, m[n].len);
		n++;
	}
	archive_read_free(a);
	return n;
}

/* A stored zip of members (skip: one member left out), in *out. */
static size_t zip_all(const zmember *m, int n, int skip, unsigned char *out, size_t cap)
{
	struct archive *a = archive_write_new();
	size_t used = 0;
	archive_write_set_format_zip(a);
	archive_write_set_options(a, "zip:compression=store");
	archive_write_open_memory(a, out, cap, &used);
	for (int i = 0; i < n; i++) {
		if (i == skip)
			continue;
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, m[i].name);
		archive_entry_set_size(e, (la_int64_t)m[i].len);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_write_header(a, e);
		archive_write_data(a, m[i].data, m[i].len);
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return used;
}

/* Either a clean error with a message, or (exact) a state dict equal to the good one;
 * a changed pickle that still parses is some other valid dict. */
static int outcome_ok(record *r, const record *good, int exact)
{
	if (!r)
		return err_msg()[0] != 0 && strcmp(err_msg(), "unknown error") != 0;
	int ok = !exact || r->ntensors == good->ntensors;
	for (int i = 0; ok && exact && i < r->ntensors; i++)
		ok = same_tensor(&r->tensors[i], &good->tensors[i]) && !strcmp(r->tensors[i].name, good->tensors[i].name);
	record_free(r);
	return ok;
}

static void test_damaged(void)
{
	size_t len;
	unsigned char *zip = slurp(FIX "odd.pth", &len);
	record *good = pth_read_mem(zip, len, "odd.pth");
	CHECK(good);
	if (!zip || !good)
		return;
	/* the zip cut at every length */
	int errors = 0;
	for (size_t cut = 0; cut < len; cut++) {
		record *r = pth_read_mem(zip, cut, "cut");
		errors += !r;
		CHECK(outcome_ok(r, good, 1));
	}
	CHECK(errors > 0);
	printf("odd.pth cut at %zu lengths: %d errors\n", len, errors);
	/* data.pkl changed or cut at every byte, rezipped so the CRCs hold */
	zmember m[32];
	int n = unzip_all(zip, len, m, 32), pkl = -1;
	for (int i = 0; i < n; i++)
		if (strstr(m[i].name, "data.pkl"))
			pkl = i;
	CHECK(pkl >= 0);
	size_t cap = 2 * len + 65536;
	unsigned char *out = malloc(cap);
	size_t zl = zip_all(m, n, -1, out, cap);
	record *r = pth_read_mem(out, zl, "rezipped");
	CHECK_MSG(r && r->ntensors == good->ntensors, "rezipped: %s", r ? "differs" : err_msg());
	record_free(r);
	static const int values[] = {0x00, 0xff, 0x80, 0x7f, '(', '.', 'K', 'X', 'q', 0x8a};
	unsigned char *orig = malloc(m[pkl].len);
	memcpy(orig, m[pkl].data, m[pkl].len);
	size_t plen = m[pkl].len;
	int runs = 0, failed = 0;
	for (size_t i = 0; i < plen; i++) {
		for (size_t v = 0; v <= sizeof values / sizeof *values; v++) {
			memcpy(m[pkl].data, orig, plen);
			if (v == sizeof values / sizeof *values)
				m[pkl].len = i; /* cut */
			else
				m[pkl].data[i] = m[pkl].data[i] == values[v] ? (unsigned char)(values[v] ^ 1) : (unsigned char)values[v];
			zl = zip_all(m, n, -1, out, cap);
			err_set("%s", "");
			r = pth_read_mem(out, zl, "flipped");
			failed += !r;
			runs++;
			CHECK(outcome_ok(r, good, 0));
			m[pkl].len = plen;
		}
	}
	memcpy(m[pkl].data, orig, plen);
	printf("data.pkl changed %d ways: %d errors\n", runs, failed);
	/* each storage member missing, and data.pkl missing */
	for (int skip = 0; skip < n; skip++) {
		if (!strstr(m[skip].name, "/data"))
			continue;
		zl = zip_all(m, n, skip, out, cap);
		r = pth_read_mem(out, zl, "missing");
		CHECK_MSG(!r, "without %s: read", m[skip].name);
		CHECK_MSG(strstr(err_msg(), skip == pkl ? "no data.pkl" : "not in the archive"), "without %s: %s", m[skip].name,
			  err_msg());
		record_free(r);
	}
	/* a storage shorter than its numel */
	for (int i = 0; i < n; i++)
		if (strstr(m[i].name, "/data/0")) {
			size_t keep = m[i].len;
			m[i].len -= 4;
			zl = zip_all(m, n, -1, out, cap);
			r = pth_read_mem(out, zl, "short");
			CHECK(!r && strstr(err_msg(), "holds"));
			record_free(r);
			m[i].len = keep;
		}
	/* not a zip at all */
	r = pth_read_mem("\x80\x02}q\x00.", 6, "pickle");
	CHECK_MSG(!r && strstr(err_msg(), "pickle: not a torch.save file: neither a zip (torch >= 1.6) nor torch's legacy "
					  "format (it starts 80 02 7d 71)"),
		  "%s", err_msg());
	r = pth_read("/nonexistent.pth");
	CHECK(!r && strstr(err_msg(), "/nonexistent.pth"));
	/* an unsupported opcode is named */
	memcpy(m[pkl].data, "\x80\x02I1\n.", 7);
	m[pkl].len = 7;
	zl = zip_all(m, n, -1, out, cap);
	r = pth_read_mem(out, zl, "int");
	CHECK_MSG(!r && strstr(err_msg(), "unsupported pickle opcode 0x49 (INT)"), "%s", err_msg());
	memcpy(m[pkl].data, "\x80\x02\x63os\nsystem\n)R.", 16);
	m[pkl].len = 16;
	zl = zip_all(m, n, -1, out, cap);
	r = pth_read_mem(out, zl, "evil");
	CHECK_MSG(!r && strstr(err_msg(), "unsupported callable os.system (only torch's tensor and OrderedDict "
					  "rebuilders are called)"),
		  "%s", err_msg());
	m[pkl].len = plen;
	free(orig);
	free(out);
	for (int i = 0; i < n; i++)
		free(m[i].data);
	record_free(good);
	free(zip);
}

/* ---- mapping onto a model's params ---- */

static record *model_like(const record *sd, const char *prefix, const char *leave_out, const char *reshape)
{
	record *p = record_new("params");
	for (int i = 0; i < sd->ntensors; i++) {
		const tensor *t = &sd->tensors[i];
		char name[128];
		if (!strncmp(t->name, "classifier.", 11) || (leave_out && !strcmp(t->name, leave_out)))
			continue;
		snprintf(name, sizeof name, "%s%s", prefix, t->name);
		int64_t shape[TENSOR_MAXDIM];
		memcpy(shape, t->shape, sizeof shape);
		if (reshape && !strcmp(t->name, reshape))
			shape[0]++;
		tensor *n = record_add(p, name, t->dtype, t->ndim, shape);
		if (t->dtype == DT_F32)
			for (int64_t j = 0; j < tensor_numel(n); j++)
				((float *)n->data)[j] = -1;
	}
	int64_t s[2] = {16, 80};
	record_add(p, "neck.lateral_convs.0.conv.weight", DT_F32, 2, s);
	record_add(p, "neck.lateral_convs.0.conv.bias", DT_F32, 1, s);
	return p;
}

static void test_mapping(void)
{
	record *sd = pth_read(FIX "mbv2_w025.pth");
	CHECK(sd);
	if (!sd)
		return;
	record *p = model_like(sd, "backbone.", NULL, NULL);
	pth_summary s;
	CHECK_MSG(pth_load_into(p, sd, "backbone.", &s) == 0, "%s", err_msg());
	/* 314 keys: 2 classifier skipped, 52 num_batches_tracked ignored; the neck's
	 * tensors are not the backbone's, so none is missing */
	CHECK_MSG(s.loaded == 260 && s.skipped == 2 && s.missing == 0 && !strcmp(s.skipped_list, "classifier.*") && !s.naming,
		  "loaded %d skipped %d (%s) missing %d", s.loaded, s.skipped, s.skipped_list, s.missing);
	char line[1400];
	pth_summary_line(&s, line, sizeof line);
	CHECK_MSG(!strcmp(line, "loaded 260 tensors into the backbone, skipped 2 unused: classifier.*; missing 0"), "%s",
		  line);
	int same = 1;
	for (int i = 0; i < sd->ntensors; i++) {
		const tensor *t = &sd->tensors[i];
		char name[128];
		snprintf(name, sizeof name, "backbone.%s", t->name);
		const tensor *q = record_find(p, name);
		if (q && t->dtype == DT_F32)
			same &= !memcmp(q->data, t->data, tensor_nbytes(t));
	}
	CHECK(same);
	record_free(p);

	/* a key the model lacks is skipped and named, the rest load */
	p = model_like(sd, "backbone.", "features.3.conv.1.1.running_var", NULL);
	CHECK_MSG(pth_load_into(p, sd, "backbone.", &s) == 0, "%s", err_msg());
	CHECK_MSG(s.loaded == 259 && s.skipped == 3 &&
			  !strcmp(s.skipped_list, "features.3.conv.1.1.running_var, classifier.*"),
		  "loaded %d skipped %d: %s", s.loaded, s.skipped, s.skipped_list);
	record_free(p);
	/* a model tensor the file lacks is missing */
	record *less = record_new("params");
	for (int i = 0; i < sd->ntensors; i++)
		if (strncmp(sd->tensors[i].name, "features.17.", 12))
			memcpy(record_add(less, sd->tensors[i].name, sd->tensors[i].dtype, sd->tensors[i].ndim,
					  sd->tensors[i].shape)->data,
			       sd->tensors[i].data, tensor_nbytes(&sd->tensors[i]));
	p = model_like(sd, "backbone.", NULL, NULL);
	CHECK_MSG(pth_load_into(p, less, "backbone.", &s) == 0, "%s", err_msg());
	pth_summary_line(&s, line, sizeof line);
	CHECK_MSG(!strcmp(line, "loaded 245 tensors into the backbone, skipped 2 unused: classifier.*; missing 15: "
				"features.17.*"),
		  "%s", line);
	record_free(less);
	record_free(p);

	p = model_like(sd, "backbone.", NULL, "features.5.conv.0.0.weight");
	CHECK(pth_load_into(p, sd, "backbone.", &s) < 0);
	CHECK_MSG(strstr(err_msg(), "key 'features.5.conv.0.0.weight': f32[48,8,1,1] in the file, f32[49,8,1,1] in the model"),
		  "%s", err_msg());
	CHECK(((float *)p->tensors[0].data)[0] == -1); /* nothing changed */
	record_free(p);

	p = model_like(sd, "net.", NULL, NULL);
	CHECK(pth_load_into(p, sd, "backbone.", &s) < 0);
	CHECK_MSG(!strcmp(err_msg(), "none of its 314 tensors is one of the model's (its first, 'features.0.0.weight', would "
				     "be 'backbone.features.0.0.weight')"),
		  "%s", err_msg());
	CHECK(pth_load_into(p, sd, "net.", &s) == 0 && s.loaded == 260);
	record_free(p);

	/* f16 and bf16 file tensors go into f32 params */
	record *odd = pth_read(FIX "odd.pth");
	p = record_new("params");
	int64_t s32[2] = {3, 2}, s5[1] = {5};
	record_add(p, "m.half", DT_F32, 2, s32);
	record_add(p, "m.bf16", DT_F32, 1, s5);
	record *sub = record_new("params");
	const tensor *h = record_find(odd, "half"), *b = record_find(odd, "bf16");
	memcpy(record_add(sub, "half", DT_F16, 2, h->shape)->data, h->data, tensor_nbytes(h));
	memcpy(record_add(sub, "bf16", DT_BF16, 1, b->shape)->data, b->data, tensor_nbytes(b));
	CHECK(pth_load_into(p, sub, "m.", &s) == 0 && s.loaded == 2);
	CHECK(((float *)p->tensors[0].data)[1] == (float)tensor_get(h, 1));
	CHECK(((float *)p->tensors[1].data)[4] == (float)tensor_get(b, 4));
	record_free(sub);
	record_free(p);
	record_free(odd);
	record_free(sd);
}

/* params tensors under "backbone." other than the BN batch counters */
static int backbone_tensors(const record *p)
{
	int n = 0;
	for (int i = 0; i < p->ntensors; i++)
		n += !strncmp(p->tensors[i].name, "backbone.", 9) && !strstr(p->tensors[i].name, "num_batches_tracked");
	return n;
}

/* A torchvision RegNet state dict onto the C model's mmdet-named RegNet: every tensor
 * lands where the generator's mapping puts it (which it checked with torch: the two
 * networks compute the same features), the classifier dropped, nothing else left over. */
static void test_regnet_names(void)
{
	record *sd = pth_read(FIX "regnet_tiny.pth");
	cJSON *expect = read_json(FIX "regnet_tiny.json");
	model *m = model_load(FIX "regnet_tiny_ssd.json");
	CHECK_MSG(sd && m, "%s", err_msg());
	if (!sd || !m || !expect)
		return;
	model_init_params(m, 1);
	record *p = model_params_record(m, 0);
	pth_summary s;
	CHECK_MSG(pth_load_into(p, sd, "backbone.", &s) == 0, "%s", err_msg());
	CHECK(s.naming && !strcmp(s.naming, "torchvision RegNet") && s.rgb && s.skipped == 2 &&
	      !strcmp(s.skipped_list, "fc.*") && s.missing == 0);
	int want = 0, found = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, expect) {
		const cJSON *name = cJSON_GetObjectItem(e, "name");
		const char *key = cJSON_GetObjectItem(e, "key")->valuestring;
		if (!cJSON_IsString(name) || strstr(key, "num_batches_tracked"))
			continue;
		want++;
		char full[128], hash[32];
		snprintf(full, sizeof full, "backbone.%s", name->valuestring);
		const tensor *t = record_find(p, full);
		if (t)
			hash_hex(t, hash);
		int ok = t && !strcmp(hash, cJSON_GetObjectItem(e, "fnv1a64")->valuestring);
		CHECK_MSG(ok, "%s -> %s: %s", key, full, t ? "other values" : "no such tensor");
		found += ok;
	}
	/* every backbone tensor but the trackers came from the file; the neck and head did not */
	int backbone = backbone_tensors(p);
	CHECK_MSG(s.loaded == want && found == want && backbone == want, "loaded %d, %d of %d keys in place, backbone %d",
		  s.loaded, found, want, backbone);
	printf("regnet_tiny.pth: %d tensors under mmdet's names, %d backbone tensors not in the file\n", s.loaded,
	       s.missing);

	/* a key of neither form in a torchvision RegNet file is skipped and named */
	record *odd = record_new("params");
	const tensor *w = record_find(sd, "trunk_output.block1.block1-0.f.a.0.weight");
	record_add(odd, "trunk_output.block1.block1-0.f.a.0.weight", w->dtype, w->ndim, w->shape);
	record_add(odd, "trunk_output.block1.block1-0.se.fc1.weight", w->dtype, w->ndim, w->shape);
	CHECK(((float *)record_find(p, "backbone.layer1.0.conv1.weight")->data)[0] != 0);
	CHECK_MSG(pth_load_into(p, odd, "backbone.", &s) == 0, "%s", err_msg());
	CHECK_MSG(s.loaded == 1 && s.skipped == 1 && !strcmp(s.skipped_list, "trunk_output.block1.block1-0.se.*"),
		  "loaded %d skipped %d: %s", s.loaded, s.skipped, s.skipped_list);
	CHECK(((float *)record_find(p, "backbone.layer1.0.conv1.weight")->data)[0] == 0);
	record_free(odd);
	record_free(p);
	model_free(m);
	cJSON_Delete(expect);
	record_free(sd);
}

/* torchvision's ImageNet state dicts (keys and shapes only: tests/fixtures/pth/
 * torchvision_shapes.json) onto the backbones of the seed table's configs: every key
 * has its tensor, of its shape; every backbone tensor comes from the file but those
 * torchvision's network lacks (SSD VGG's fc6 and fc7: features.31 and .33). */
static void test_torchvision_layouts(void)
{
	static const struct {
		const char *net, *config;
		int loaded, backbone_extra;
		const char *skipped, *missing;
	} cases[] = {{"resnet50", "configs/ssd_resnet_fpn.json", 265, 0, "fc.*", ""},
		     {"vgg16", "configs/ssd512_vgg16.json", 26, 4, "classifier.*", "features.31.*, features.33.*"},
		     {"regnet_x_800mf", "configs/ssd_regnet_fpn.json", 265, 0, "fc.*", ""},
		     {"mobilenet_v2", "configs/ssd_mobilenet_fpn.json", 255, 0, "features.18.*, classifier.*", ""}};
	cJSON *all = read_json(FIX "torchvision_shapes.json");
	for (size_t c = 0; all && c < sizeof cases / sizeof *cases; c++) {
		model *m = model_load(cases[c].config);
		CHECK_MSG(m, "%s", err_msg());
		if (!m)
			continue;
		record *p = model_params_record(m, 0), *sd = record_new("params");
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItem(all, cases[c].net)) {
			const char *key = cJSON_GetArrayItem(e, 0)->valuestring;
			int64_t shape[TENSOR_MAXDIM];
			int nd = 0;
			const cJSON *d;
			cJSON_ArrayForEach(d, cJSON_GetArrayItem(e, 1))
				shape[nd++] = (int64_t)d->valuedouble;
			record_add(sd, key, strstr(key, "num_batches_tracked") ? DT_I32 : DT_F32, nd, shape);
		}
		pth_summary s;
		CHECK_MSG(pth_load_into(p, sd, "backbone.", &s) == 0, "%s: %s", cases[c].net, err_msg());
		CHECK_MSG(!strcmp(s.skipped_list, cases[c].skipped) && !strcmp(s.missing_list, cases[c].missing),
			  "%s: skipped %s, missing %s", cases[c].net, s.skipped_list, s.missing_list);
		int backbone = backbone_tensors(p);
		CHECK_MSG(s.loaded == cases[c].loaded && backbone == s.loaded + cases[c].backbone_extra,
			  "%s onto %s: %d tensors loaded, the backbone has %d", cases[c].net, cases[c].config, s.loaded,
			  backbone);
		printf("torchvision %s onto %s: %d tensors%s%s, %d backbone tensors not in it\n", cases[c].net,
		       cases[c].config, s.loaded, s.naming ? " via " : "", s.naming ? s.naming : "",
		       backbone - s.loaded);
		record_free(sd);
		record_free(p);
		model_free(m);
	}
	cJSON_Delete(all);
}

int main(void)
{
	test_mobilenet();
	test_odd(FIX "odd.pth");
	test_odd(FIX "odd_p4.pth");
	test_damaged();
	test_mapping();
	test_regnet_names();
	test_torchvision_layouts();
	return check_done("test_pth");
}
