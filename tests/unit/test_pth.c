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
#include "core/err.h"
#include "nn/model.h"
#include "nn/pth.h"
#include "core/stream.h"

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


/* ---- the legacy format ---- */

/* odd.pth's checkpoint saved the old way (tests/pretrained_stages.py): the same
 * record; cut at every length or changed at every byte, an error or a valid dict,
 * never a crash */
static void test_legacy(void)
{
	test_odd("tests/fixtures/pretrained/odd_legacy.pth");
	size_t len, zlen;
	unsigned char *leg = slurp("tests/fixtures/pretrained/odd_legacy.pth", &len), *zip = slurp(FIX "odd.pth", &zlen);
	record *a = pth_read_mem(leg, len, "legacy"), *b = pth_read_mem(zip, zlen, "zip");
	CHECK_MSG(a && b && a->ntensors == b->ntensors, "%s", err_msg());
	for (int i = 0; a && b && i < a->ntensors && i < b->ntensors; i++)
		CHECK_MSG(!strcmp(a->tensors[i].name, b->tensors[i].name) && a->tensors[i].dtype == b->tensors[i].dtype &&
				  tensor_same_shape(&a->tensors[i], &b->tensors[i]) &&
				  !memcmp(a->tensors[i].data, b->tensors[i].data, tensor_nbytes(&a->tensors[i])),
			  "legacy and zip differ at %s", a->tensors[i].name);
	CHECK(a && !strcmp(meta_str(a, "wrapper", ""), "state_dict"));
	int errors = 0, runs = 0;
	for (size_t cut = 0; cut < len; cut++) {
		record *r = pth_read_mem(leg, cut, "cut");
		errors += !r;
		CHECK(outcome_ok(r, a, 1));
	}
	CHECK(errors == (int)len); /* the storages are at the end: every cut is missing one */
	static const int values[] = {0x00, 0xff, 0x80, 0x7f, '(', '.', 'K', 'X', 'q', 0x8a, 'Q', 'R'};
	unsigned char *m = malloc(len);
	for (size_t i = 0; i < len; i++)
		for (size_t v = 0; v < sizeof values / sizeof *values; v++) {
			memcpy(m, leg, len);
			m[i] = m[i] == values[v] ? (unsigned char)(values[v] ^ 1) : (unsigned char)values[v];
			err_set("%s", "");
			record *r = pth_read_mem(m, len, "changed");
			CHECK(outcome_ok(r, a, 0));
			runs++;
		}
	printf("odd_legacy.pth: cut at %zu lengths, changed %d ways, never a crash\n", len, runs);
	free(m);
	record_free(a);
	record_free(b);
	free(leg);
	free(zip);
}

/* ---- the security boundary: crafted files, each refused with its rule's message ---- */

typedef struct buf {
	unsigned char *p;
	size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 256;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
}

static void put_s(buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void put_u(buf *b, const char *s) /* BINUNICODE */
{
	uint32_t n = (uint32_t)strlen(s);
	put(b, "X", 1);
	put(b, &n, 4);
	put(b, s, n);
}

static void put_i64(buf *b, int64_t v)
{
	put(b, &v, 8);
}

/* what torch.save pickles for a float tensor over storage key (legacy persistent id) */
static void put_tensor(buf *b, const char *type, const char *key, long long numel, int size, int stride)
{
	char t[96];
	put_s(b, "ctorch._utils\n_rebuild_tensor_v2\n((");
	put_u(b, "storage");
	snprintf(t, sizeof t, "c%s\n", type);
	*strrchr(t, '.') = '\n';
	put_s(b, t);
	put_u(b, key);
	put_u(b, "cpu");
	if (numel < 256) {
		unsigned char k[2] = {'K', (unsigned char)numel};
		put(b, k, 2);
	} else {
		unsigned char l[2] = {0x8a, 8};
		put(b, l, 2);
		put_i64(b, numel);
	}
	put(b, "NtQK\x00", 5);
	unsigned char sz[5] = {'J', 0, 0, 0, 0};
	memcpy(sz + 1, &size, 4);
	put(b, sz, 5);
	put_s(b, "\x85");
	memcpy(sz + 1, &stride, 4);
	put(b, sz, 5);
	put_s(b, "\x85\x89");
	put_s(b, "ccollections\nOrderedDict\n)RtR");
}

/* The three header pickles of a legacy file (protocol 2, little-endian). */
static void put_header(buf *b, int little)
{
	put_s(b, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
	put_s(b, "\x80\x02M\xe9\x03.");
	put_s(b, "\x80\x02}(");
	put_u(b, "protocol_version");
	put_s(b, "M\xe9\x03");
	put_u(b, "little_endian");
	put_s(b, little ? "\x88" : "\x89");
	put_s(b, "u.");
}

/* A legacy file: header, the object pickle obj, the key list, then each storage as
 * count[i] and count[i] floats (0, 1, 2, ...). */
static buf legacy(const buf *obj, int nkeys, const char *const *keys, const int64_t *count, const int64_t *have)
{
	buf b = {0};
	put_header(&b, 1);
	put(&b, obj->p, obj->n);
	put_s(&b, "\x80\x02](");
	for (int i = 0; i < nkeys; i++)
		put_u(&b, keys[i]);
	put_s(&b, "e.");
	for (int i = 0; i < nkeys; i++) {
		put_i64(&b, count[i]);
		for (int64_t j = 0; j < have[i]; j++) {
			float f = (float)j;
			put(&b, &f, 4);
		}
	}
	return b;
}

/* {name: tensor of numel floats over storage "0"} as torch.save pickles it */
static buf state_dict(const char *name, const char *type, long long numel, int size, int stride)
{
	buf o = {0};
	put_s(&o, "\x80\x02" "ccollections\nOrderedDict\n)R(");
	put_u(&o, name);
	put_tensor(&o, type, "0", numel, size, stride);
	put_s(&o, "u.");
	return o;
}

/* Reads a legacy file of object pickle obj (with nkeys 1, one storage "0" of 4
 * floats); returns the error (NULL if it loaded). */
static const char *try_obj(const char *what, const char *obj, size_t n, int nkeys)
{
	buf o = {0};
	put(&o, obj, n);
	const char *keys[] = {"0"};
	int64_t c[] = {4};
	buf f = legacy(&o, nkeys, keys, c, c);
	record *r = pth_read_mem(f.p, f.n, what);
	free(o.p);
	free(f.p);
	if (r) {
		record_free(r);
		return NULL;
	}
	return err_msg();
}

#define REFUSED(what, obj, msg)                                                                   \
	do {                                                                                      \
		const char *e = try_obj(what, obj, sizeof obj - 1, 1);                             \
		CHECK_MSG(e && strstr(e, msg), "%s: %s (expected \"%s\")", what, e ? e : "loaded", msg); \
		if (e)                                                                            \
			printf("refused, %s\n", e);                                                \
	} while (0)

static void test_security(void)
{
	/* a well-formed one loads */
	buf o = state_dict("w", "torch.FloatStorage", 4, 4, 1);
	const char *keys[] = {"0"};
	int64_t four[] = {4};
	buf f = legacy(&o, 1, keys, four, four);
	record *r = pth_read_mem(f.p, f.n, "good");
	CHECK_MSG(r && r->ntensors == 1 && ((float *)r->tensors[0].data)[3] == 3, "%s", r ? "wrong values" : err_msg());
	record_free(r);
	free(f.p);
	free(o.p);

	/* 1. only the callables torch.save emits for tensors and OrderedDicts are called */
	REFUSED("os.system", "\x80\x02" "cposix\nsystem\nX\x02\x00\x00\x00id\x85R.", "unsupported callable posix.system");
	REFUSED("builtins.eval", "\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93X\x01\x00\x00\x00" "1\x85R.",
		"unsupported callable builtins.eval");
	REFUSED("torch.load", "\x80\x02" "ctorch.serialization\nload\nX\x01\x00\x00\x00" "f\x85R.",
		"unsupported callable torch.serialization.load");
	REFUSED("OrderedDict with arguments", "\x80\x02" "ccollections\nOrderedDict\n]\x85R.",
		"collections.OrderedDict with arguments");
	REFUSED("INST", "\x80\x02(X\x02\x00\x00\x00idiposix\nsystem\n.", "unsupported pickle opcode 0x69 (INST)");
	REFUSED("OBJ", "\x80\x02(cposix\nsystem\nX\x02\x00\x00\x00ido.", "unsupported pickle opcode 0x6f (OBJ)");
	REFUSED("NEWOBJ", "\x80\x02" "cposix\nsystem\n)\x81.", "unsupported pickle opcode 0x81 (NEWOBJ)");
	REFUSED("EXT1", "\x80\x02\x82\x01.", "unsupported pickle opcode 0x82 (EXT1)");
	REFUSED("BUILD of an object", "\x80\x02)}b.", "BUILD of something that is not a dict");
	REFUSED("a storage type not torch's", "\x80\x02(X\x07\x00\x00\x00storagecposix\nsystem\nX\x01\x00\x00\x00" "0X\x03\x00"
		"\x00\x00" "cpuK\x04NtQ.",
		"unsupported storage type posix.system");
	REFUSED("double storage", "\x80\x02(X\x07\x00\x00\x00storagectorch\nDoubleStorage\nX\x01\x00\x00\x00" "0X\x03\x00"
		"\x00\x00" "cpuK\x04NtQ.",
		"unsupported storage type torch.DoubleStorage");
	REFUSED("_rebuild_tensor_v2 of no storage", "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))tR.",
		"_rebuild_tensor_v2: expected (storage, offset, size, stride, ...)");

	/* 2. bounded depth: MARKs nest 64 deep at most; values nest without limit and
	 * nothing recurses over them (a million nested tuples) */
	{
		char deep[80] = "\x80\x02";
		memset(deep + 2, '(', 65);
		memcpy(deep + 67, ".", 2);
		const char *e = try_obj("65 MARKs", deep, 68, 1);
		CHECK_MSG(e && strstr(e, "pickle nests more than 64 MARKs deep"), "%s", e ? e : "loaded");
		printf("refused, %s\n", e);
		size_t n = 1000000;
		char *nest = malloc(n + 8);
		memcpy(nest, "\x80\x02K\x01", 4);
		memset(nest + 4, 0x85, n); /* TUPLE1 */
		nest[n + 4] = '.';
		e = try_obj("a million nested tuples", nest, n + 5, 0);
		CHECK_MSG(e && strstr(e, "the pickle holds no dict"), "%s", e ? e : "loaded");
		printf("refused, %s\n", e);
		free(nest);
	}

	/* 3. bounded memo and values */
	REFUSED("memo index far beyond the pickle", "\x80\x02Nr\xff\xff\xff\x7f.",
		"pickle memo index 2147483647 out of range (at most 8 after 8 bytes)");
	REFUSED("memo index never stored", "\x80\x02h\x05.", "pickle memo index 5 was never stored");
	{
		setenv("PTH_MAX_VALUES", "100000", 1);
		size_t n = 20000;
		char *bomb = malloc(n + 8);
		memcpy(bomb, "\x80\x02", 2);
		memset(bomb + 2, ')', n); /* an empty tuple per byte: more bytes of values than of pickle */
		bomb[n + 2] = '.';
		const char *e = try_obj("20000 empty tuples, PTH_MAX_VALUES=100000", bomb, n + 3, 0);
		CHECK_MSG(e && strstr(e, "see PTH_MAX_VALUES): a container or memo bomb?"), "%s", e ? e : "loaded");
		printf("refused, %s\n", e);
		unsetenv("PTH_MAX_VALUES");
		e = try_obj("empty tuples", bomb, n + 3, 0); /* within the default budget */
		CHECK_MSG(e && strstr(e, "the pickle holds no dict"), "%s", e ? e : "loaded");
		free(bomb);
	}

	/* 4. sizes against the archive before anything is allocated */
	struct {
		const char *what;
		long long numel;
		int64_t count, have;
		int size, stride;
		const char *msg;
	} sz[] = {
		{"a storage of 2^40 + 1 elements", (1LL << 40) + 1, 4, 4, 4, 1, "storage '0' of 1099511627777 elements (2^40 at most)"},
		{"a count other than the persistent id's", 1000000000, 4, 4, 4, 1,
		 "storage '0' holds 4 elements, its persistent id says 1000000000"},
		{"a storage larger than the file", 1000000000, 1000000000, 4, 4, 1,
		 "storage '0' of 1000000000 elements of 4 bytes, 16 bytes left in the file"},
		{"a tensor past its storage", 4, 4, 4, 5, 1, "tensor reaches element 4 of a storage of 4"},
		{"a view repeating one element 2^30 times", 4, 4, 4, 1 << 30, 0,
		 "its tensors (4294967296 bytes by 'w') are more than 2 times its storages (16 bytes) plus 1 MiB"},
	};
	for (size_t i = 0; i < sizeof sz / sizeof *sz; i++) {
		o = state_dict("w", "torch.FloatStorage", sz[i].numel, sz[i].size, sz[i].stride);
		f = legacy(&o, 1, keys, &sz[i].count, &sz[i].have);
		r = pth_read_mem(f.p, f.n, sz[i].what);
		CHECK_MSG(!r && strstr(err_msg(), sz[i].msg), "%s: %s", sz[i].what, r ? "loaded" : err_msg());
		if (!r)
			printf("refused, %s\n", err_msg());
		record_free(r);
		free(f.p);
		free(o.p);
	}
	/* storages named and listed must agree; a big-endian file is refused */
	o = state_dict("w", "torch.FloatStorage", 4, 4, 1);
	const char *other[] = {"0", "1"};
	int64_t c2[] = {4, 4};
	f = legacy(&o, 2, other, c2, c2);
	r = pth_read_mem(f.p, f.n, "extra key");
	CHECK_MSG(!r && strstr(err_msg(), "storage key 1 is not a storage of the object"), "%s", err_msg());
	free(f.p);
	f = legacy(&o, 0, keys, c2, c2);
	r = pth_read_mem(f.p, f.n, "no key");
	CHECK_MSG(!r && strstr(err_msg(), "storage '0' has no data (not in the list of storage keys)"), "%s", err_msg());
	free(f.p);
	buf be = {0};
	put_header(&be, 0);
	put(&be, o.p, o.n);
	r = pth_read_mem(be.p, be.n, "big-endian");
	CHECK_MSG(!r && strstr(err_msg(), "saved on a big-endian machine: not supported"), "%s", err_msg());
	free(be.p);
	free(o.p);

	/* a zip whose member unpacks far beyond the archive (deflate: torch stores) */
	{
		size_t n = 20 << 20, cap = 1 << 20, used = 0;
		unsigned char *zeros = calloc(1, n), *out = malloc(cap);
		struct archive *a = archive_write_new();
		archive_write_set_format_zip(a);
		archive_write_set_options(a, "zip:compression=deflate");
		archive_write_open_memory(a, out, cap, &used);
		const char *names[] = {"archive/data.pkl", "archive/data/0"};
		for (int i = 0; i < 2; i++) {
			struct archive_entry *e = archive_entry_new();
			archive_entry_set_pathname(e, names[i]);
			archive_entry_set_size(e, (la_int64_t)n);
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_write_header(a, e);
			archive_write_data(a, zeros, n);
			archive_entry_free(e);
		}
		archive_write_close(a);
		archive_write_free(a);
		r = pth_read_mem(out, used, "2 x 20 MiB of zeros deflated");
		CHECK_MSG(!r && strstr(err_msg(), "times the archive's size plus 1 MiB: torch.save stores its members "
						  "uncompressed"),
			  "%s", r ? "loaded" : err_msg());
		printf("refused, %s (%zu bytes)\n", err_msg(), used);
		free(zeros);
		free(out);
	}
}

/* Checkpoints around a state dict: mmcv's {"meta", "state_dict"} with DDP's "module."
 * and a whole detector's "backbone."; torchvision's reference scripts' {"model"} around
 * an SSD VGG's bare layer list ("0.weight": vgg16_reducedfc.pth) */
static void test_wrappers(void)
{
	buf o = {0};
	put_s(&o, "\x80\x02}(");
	put_u(&o, "meta");
	put_s(&o, "}(");
	put_u(&o, "epoch");
	put_s(&o, "K\x03u");
	put_u(&o, "state_dict");
	put_s(&o, "ccollections\nOrderedDict\n)R(");
	put_u(&o, "module.backbone.features.0.weight");
	put_tensor(&o, "torch.FloatStorage", "0", 4, 4, 1);
	put_u(&o, "module.neck.lateral.weight");
	put_tensor(&o, "torch.FloatStorage", "0", 4, 4, 1);
	put_s(&o, "uu.");
	const char *keys[] = {"0"};
	int64_t four[] = {4};
	buf f = legacy(&o, 1, keys, four, four);
	record *sd = pth_read_mem(f.p, f.n, "mmdet");
	CHECK_MSG(sd && sd->ntensors == 2 && !strcmp(sd->tensors[0].name, "backbone.features.0.weight") &&
			  !strcmp(meta_str(sd, "wrapper", ""), "state_dict") &&
			  cJSON_IsTrue(cJSON_GetObjectItem(sd->meta, "module_prefix")),
		  "%s", sd ? "other keys" : err_msg());
	record *p = record_new("params");
	int64_t s4[1] = {4};
	record_add(p, "backbone.features.0.weight", DT_F32, 1, s4);
	record_add(p, "backbone.features.1.weight", DT_F32, 1, s4);
	record_add(p, "neck.lateral.weight", DT_F32, 1, s4);
	pth_summary s;
	char line[1400];
	CHECK_MSG(sd && pth_load_into(p, sd, "backbone.", &s) == 0, "%s", err_msg());
	pth_summary_line(&s, line, sizeof line);
	CHECK_MSG(!strcmp(line, "loaded 1 tensors into the backbone (its 'state_dict' dict, 'module.' removed, its "
				"'backbone.' keys), skipped 1 unused: neck.*; missing 1: features.1.*"),
		  "%s", line);
	CHECK(((float *)p->tensors[0].data)[3] == 3 && ((float *)p->tensors[2].data)[3] == 0);
	printf("mmdet checkpoint: %s\n", line);
	record_free(sd);
	record_free(p);
	free(f.p);
	free(o.p);

	o = (buf){0};
	put_s(&o, "\x80\x02}(");
	put_u(&o, "model");
	put_s(&o, "}(");
	put_u(&o, "0.weight");
	put_tensor(&o, "torch.FloatStorage", "0", 4, 4, 1);
	put_u(&o, "31.weight");
	put_tensor(&o, "torch.HalfStorage", "1", 4, 4, 1);
	put_s(&o, "u");
	put_u(&o, "epoch");
	put_s(&o, "K\x07u.");
	const char *keys2[] = {"0", "1"};
	int64_t c2[] = {4, 2}; /* 4 halves: 2 floats' bytes */
	f = legacy(&o, 2, keys2, c2, c2);
	/* (the half storage's count is in halves: 4) */
	memcpy(f.p + f.n - 8 - 8, &(int64_t){4}, 8);
	sd = pth_read_mem(f.p, f.n, "reducedfc");
	CHECK_MSG(sd && sd->ntensors == 2 && !strcmp(meta_str(sd, "wrapper", ""), "model"), "%s",
		  sd ? "other keys" : err_msg());
	p = record_new("params");
	record_add(p, "backbone.features.0.weight", DT_F32, 1, s4);
	record_add(p, "backbone.features.31.weight", DT_F32, 1, s4);
	CHECK_MSG(sd && pth_load_into(p, sd, "backbone.", &s) == 0, "%s", err_msg());
	pth_summary_line(&s, line, sizeof line);
	CHECK_MSG(!strcmp(line, "loaded 2 tensors into the backbone (its 'model' dict, SSD VGG features list names), "
				"skipped 0 unused; missing 0"),
		  "%s", line);
	printf("reducedfc: %s\n", line);
	record_free(sd);
	record_free(p);
	free(f.p);
	free(o.p);
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
	test_legacy();
	test_security();
	test_wrappers();
	test_mapping();
	test_regnet_names();
	test_torchvision_layouts();
	return check_done("test_pth");
}
