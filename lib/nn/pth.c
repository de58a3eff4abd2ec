#include "nn/pth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/bytes.h"
#include "core/err.h"
#include "core/pickle.h"
#include "core/str.h"

/* The limits of pth.h's promise (docs/training.md, "Pretrained weights"). */
#define ENTRY_MAX ((size_t)4 << 30)        /* one zip member */
#define TOTAL_MAX ((size_t)16 << 30)       /* all members kept */
#define ZIP_RATIO 4                        /* members unpacked <= 4 x the archive + 1 MiB */
#define VALUES_BASE ((size_t)256 << 20)    /* pickle values: 256 MiB ($PTH_MAX_VALUES) + 64 per pickle byte */
#define OUT_RATIO 2                        /* tensors <= 2 x the storages' bytes + 1 MiB */
#define MIB ((size_t)1 << 20)

/* ---------------------------------------------------------------- the zip */

typedef struct member {
	char *name;
	unsigned char *data;
	size_t len;
} member;

typedef struct zip_members {
	member *m;
	int n, cap;
} zip_members;

static void members_free(zip_members *z)
{
	for (int i = 0; i < z->n; i++) {
		free(z->m[i].name);
		free(z->m[i].data);
	}
	free(z->m);
}

/* Reads the current member whole (its declared size is only a first guess, never
 * allowed past what is left of the budget). */
static int read_member(struct archive *a, member *m, size_t declared, size_t *total, size_t budget)
{
	size_t cap = 0, left = budget - *total;
	size_t first = declared < (1u << 26) ? declared + 1 : 1u << 26;
	if (first > left + 1)
		first = left + 1;
	for (;;) {
		if (cap == m->len) {
			size_t ncap = cap ? 2 * cap : first;
			if (ncap > ENTRY_MAX + 65536)
				return err_set("%s: member larger than %zu bytes", m->name, ENTRY_MAX);
			unsigned char *p = realloc(m->data, ncap);
			if (!p)
				return err_set("out of memory");
			m->data = p;
			cap = ncap;
		}
		la_ssize_t n = archive_read_data(a, m->data + m->len, cap - m->len);
		if (n < 0)
			return err_set("%s: %s", m->name, archive_error_string(a));
		if (n == 0)
			return 0;
		m->len += (size_t)n;
		if ((*total += (size_t)n) > budget)
			return err_set("unpacks to more than %zu bytes (%d times the archive's size plus 1 MiB: "
				       "torch.save stores its members uncompressed)",
				       budget, ZIP_RATIO);
	}
}

/* Keeps the members a state dict needs: ".../data.pkl" and ".../data/<key>". */
static int read_members(struct archive *a, zip_members *z, size_t budget)
{
	struct archive_entry *e;
	size_t total = 0;
	int rc;
	while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		const char *name = archive_entry_pathname(e);
		if (!name || (!strstr(name, "data.pkl") && !strstr(name, "/data/"))) {
			archive_read_data_skip(a);
			continue;
		}
		if (z->n == z->cap) {
			int cap = z->cap ? 2 * z->cap : 64;
			member *m = realloc(z->m, (size_t)cap * sizeof *m);
			if (!m)
				return err_set("out of memory");
			z->m = m;
			z->cap = cap;
		}
		member *m = &z->m[z->n++];
		memset(m, 0, sizeof *m);
		if (!(m->name = strdup(name)))
			return err_set("out of memory");
		la_int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
		if (read_member(a, m, size > 0 ? (size_t)size : 4096, &total, budget) < 0)
			return -1;
	}
	if (rc != ARCHIVE_EOF)
		return err_set("not a readable zip (%s)",
			       archive_error_string(a) ? archive_error_string(a) : "unknown error");
	return 0;
}

static const member *find_member(const zip_members *z, const char *name)
{
	for (int i = 0; i < z->n; i++)
		if (!strcmp(z->m[i].name, name))
			return &z->m[i];
	return NULL;
}

/* ---------------------------------------------------------------- torch's objects in the pickle */

/* The kinds of PICKLE_OBJECT the hooks make. */
enum { OBJ_STORAGE = 1, OBJ_TENSOR };

static const struct storage_type {
	const char *name;
	enum dtype dt;
	int src_size;
} storage_types[] = {
	{"FloatStorage", DT_F32, 4}, {"HalfStorage", DT_F16, 2}, {"BFloat16Storage", DT_BF16, 2},
	{"LongStorage", DT_I32, 8},  {"IntStorage", DT_I32, 4},  {"ShortStorage", DT_I16, 2},
	{"CharStorage", DT_I8, 1},   {"ByteStorage", DT_U8, 1},  {"BoolStorage", DT_U8, 1},
};

/* OBJ_STORAGE: elements [soff, soff + numel) of storage ref */
typedef struct storage_view {
	int ref;
	int64_t soff, numel;
} storage_view;

/* OBJ_TENSOR */
typedef struct tinfo {
	const storage_view *storage;
	int64_t offset;
	int ndim;
	int64_t shape[TENSOR_MAXDIM], stride[TENSOR_MAXDIM];
} tinfo;

/* A storage the pickle names by key: its type and size from the persistent ids, its
 * bytes from the zip member (zip) or the data after the pickles (legacy). */
typedef struct sref {
	char *key;
	const struct storage_type *st;
	int64_t numel;
	const unsigned char *bytes;
} sref;

/* What the hooks know of the file: its format and storages. */
typedef struct torch_file {
	int legacy;
	const zip_members *zip;
	const char *prefix; /* of the members: "<name>/" */
	size_t prefix_len;
	sref *refs;
	int nrefs, refcap;
} torch_file;

static void torch_file_free(torch_file *f)
{
	for (int i = 0; i < f->nrefs; i++)
		free(f->refs[i].key);
	free(f->refs);
}

static int is_obj(const pickle_value *v, int kind)
{
	return v->type == PICKLE_OBJECT && v->kind == kind;
}

/* The base of the value budget: VALUES_BASE, or $PTH_MAX_VALUES bytes. */
static size_t values_base(void)
{
	const char *env = getenv("PTH_MAX_VALUES");
	if (env && *env) {
		char *end;
		unsigned long long v = strtoull(env, &end, 10);
		if (*end == 0 && v > 0)
			return (size_t)v;
	}
	return VALUES_BASE;
}

/* torch.<T>Storage (torch.cuda.<T>Storage in files of old torch saved from a GPU) */
static const struct storage_type *storage_type_of(const char *global)
{
	const char *name = !strncmp(global, "torch.cuda.", 11) ? global + 11
			   : !strncmp(global, "torch.", 6)     ? global + 6
							       : NULL;
	for (size_t i = 0; name && i < sizeof storage_types / sizeof *storage_types; i++)
		if (!strcmp(name, storage_types[i].name))
			return &storage_types[i];
	return NULL;
}

/* The table entry of storage key (made on first sight); the same key must come with
 * the same type and size every time. */
static int storage_ref(pickle *pk, torch_file *f, const char *key, const struct storage_type *st, int64_t numel)
{
	for (int i = 0; i < f->nrefs; i++)
		if (!strcmp(f->refs[i].key, key)) {
			if (f->refs[i].st != st || f->refs[i].numel != numel)
				return err_set("storage '%s' named twice with different types or sizes", key);
			return i;
		}
	if (f->nrefs == f->refcap) {
		int cap = f->refcap ? 2 * f->refcap : 64;
		if (pickle_charge(pk, (size_t)(cap - f->refcap) * sizeof(sref)) < 0)
			return -1;
		sref *r = realloc(f->refs, (size_t)cap * sizeof *r);
		if (!r)
			return err_set("out of memory");
		f->refs = r;
		f->refcap = cap;
	}
	sref *r = &f->refs[f->nrefs];
	if (pickle_charge(pk, strlen(key) + 1) < 0)
		return -1;
	if (!(r->key = strdup(key)))
		return err_set("out of memory");
	r->st = st;
	r->numel = numel;
	r->bytes = NULL;
	return f->nrefs++;
}

/* BINPERSID: ('storage', torch.<T>Storage, key, location, numel) in a zip file;
 * ('storage', torch.<T>Storage, key, location, numel, view) in a legacy one, view None
 * or (view key, offset, numel) for a view of that storage (torch before 0.4). */
static pickle_value *persistent_storage(pickle *pk, const pickle_value *pid, void *ctx)
{
	torch_file *f = ctx;
	size_t want = f->legacy ? 6 : 5;
	if (pid->type != PICKLE_TUPLE || pid->n != want || pid->items[0]->type != PICKLE_STR ||
	    strcmp(pid->items[0]->s, "storage") || pid->items[1]->type != PICKLE_GLOBAL ||
	    pid->items[2]->type != PICKLE_STR || pid->items[4]->type != PICKLE_INT) {
		err_set("persistent id is not ('storage', type, key, location, numel%s)", f->legacy ? ", view" : "");
		return NULL;
	}
	const char *type = pid->items[1]->s, *key = pid->items[2]->s;
	int64_t numel = pid->items[4]->i;
	const struct storage_type *st = storage_type_of(type);
	if (!st) {
		err_set("unsupported storage type %s", type);
		return NULL;
	}
	if (strlen(key) != pid->items[2]->slen || !*key) {
		err_set("bad storage key");
		return NULL;
	}
	if (numel < 0 || numel > (INT64_C(1) << 40)) {
		err_set("storage '%s' of %lld elements (2^40 at most)", key, (long long)numel);
		return NULL;
	}
	int64_t soff = 0, vnumel = numel;
	if (f->legacy && pid->items[5]->type != PICKLE_NONE) {
		const pickle_value *view = pid->items[5];
		if (view->type != PICKLE_TUPLE || view->n != 3 || view->items[1]->type != PICKLE_INT ||
		    view->items[2]->type != PICKLE_INT) {
			err_set("storage '%s': view is not (key, offset, numel)", key);
			return NULL;
		}
		soff = view->items[1]->i;
		vnumel = view->items[2]->i;
		if (soff < 0 || vnumel < 0 || soff > numel || vnumel > numel - soff) {
			err_set("storage '%s': view [%lld, +%lld) outside its %lld elements", key, (long long)soff,
				(long long)vnumel, (long long)numel);
			return NULL;
		}
	}
	int ref = storage_ref(pk, f, key, st, numel);
	if (ref < 0)
		return NULL;
	if (!f->legacy && !f->refs[ref].bytes) {
		/* the zip member's size is checked here, before anything is made of it */
		char name[512];
		if ((size_t)snprintf(name, sizeof name, "%.*sdata/%s", (int)f->prefix_len, f->prefix, key) >= sizeof name) {
			err_set("bad storage key");
			return NULL;
		}
		const member *m = find_member(f->zip, name);
		if (!m) {
			err_set("storage '%s' is not in the archive (no %s)", key, name);
			return NULL;
		}
		if ((uint64_t)numel > m->len / (uint64_t)st->src_size) {
			err_set("storage '%s' holds %zu bytes, not %lld elements of %d bytes", key, m->len, (long long)numel,
				st->src_size);
			return NULL;
		}
		f->refs[ref].bytes = m->data;
	}
	pickle_value *v = pickle_new_object(pk, OBJ_STORAGE, sizeof(storage_view));
	if (!v)
		return NULL;
	storage_view *sv = v->obj;
	sv->ref = ref;
	sv->soff = soff;
	sv->numel = vnumel;
	return v;
}

/* Checks a tuple of at most TENSOR_MAXDIM ints >= 0 into out; returns its length or -1. */
static int int_tuple(const pickle_value *t, int64_t *out, const char *what)
{
	if (t->type != PICKLE_TUPLE || t->n > TENSOR_MAXDIM)
		return err_set("tensor %s is not a tuple of at most %d ints", what, TENSOR_MAXDIM);
	for (size_t i = 0; i < t->n; i++) {
		if (t->items[i]->type != PICKLE_INT || t->items[i]->i < 0 || t->items[i]->i > (INT64_C(1) << 40))
			return err_set("tensor %s[%zu] is not an int in [0, 2^40]", what, i);
		out[i] = t->items[i]->i;
	}
	return (int)t->n;
}

/* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) and
 * _rebuild_tensor(storage, offset, size, stride) of torch before 0.4 */
static pickle_value *rebuild_tensor(pickle *pk, const pickle_value *args, int v1)
{
	if ((v1 ? args->n != 4 : args->n < 4) || !is_obj(args->items[0], OBJ_STORAGE) || args->items[1]->type != PICKLE_INT) {
		err_set("%s: expected (storage, offset, size, stride%s)", v1 ? "_rebuild_tensor" : "_rebuild_tensor_v2",
			v1 ? "" : ", ...");
		return NULL;
	}
	pickle_value *v = pickle_new_object(pk, OBJ_TENSOR, sizeof(tinfo));
	if (!v)
		return NULL;
	tinfo *t = v->obj;
	t->storage = args->items[0]->obj;
	t->offset = args->items[1]->i;
	int nd = int_tuple(args->items[2], t->shape, "size"), ns = int_tuple(args->items[3], t->stride, "stride");
	if (nd < 0 || ns < 0)
		return NULL;
	if (nd != ns) {
		err_set("tensor size has %d dimensions, stride %d", nd, ns);
		return NULL;
	}
	t->ndim = nd;
	/* every element, offset + sum(index * stride), must lie inside the storage */
	int64_t last = t->offset, numel = 1;
	if (t->offset < 0 || t->offset > (INT64_C(1) << 40)) {
		err_set("tensor offset %lld out of range", (long long)t->offset);
		return NULL;
	}
	for (int i = 0; i < nd; i++) {
		int64_t reach;
		if (__builtin_mul_overflow(numel, t->shape[i], &numel) || numel > (INT64_C(1) << 40) ||
		    __builtin_mul_overflow(t->shape[i] ? t->shape[i] - 1 : 0, t->stride[i], &reach) ||
		    __builtin_add_overflow(last, reach, &last)) {
			err_set("tensor size or stride out of range");
			return NULL;
		}
	}
	if (numel > 0 && last >= t->storage->numel) {
		err_set("tensor reaches element %lld of a storage of %lld", (long long)last, (long long)t->storage->numel);
		return NULL;
	}
	return v;
}

/* REDUCE: the callables torch.save emits for tensors and OrderedDicts, nothing else. */
static pickle_value *torch_reduce(pickle *pk, const pickle_value *fn, const pickle_value *args, void *ctx)
{
	if (!strcmp(fn->s, "collections.OrderedDict")) {
		if (args->n != 0) {
			err_set("collections.OrderedDict with arguments");
			return NULL;
		}
		return pickle_new_value(pk, PICKLE_DICT);
	}
	if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2"))
		return rebuild_tensor(pk, args, 0);
	if (!strcmp(fn->s, "torch._utils._rebuild_tensor"))
		return rebuild_tensor(pk, args, 1);
	if (!strcmp(fn->s, "torch._utils._rebuild_parameter") ||
	    !strcmp(fn->s, "torch._utils._rebuild_parameter_with_state")) {
		if (args->n < 1 || !is_obj(args->items[0], OBJ_TENSOR)) {
			err_set("%s: expected a tensor", fn->s);
			return NULL;
		}
		return args->items[0];
	}
	err_set("unsupported callable %s (only torch's tensor and OrderedDict rebuilders are called)", fn->s);
	return NULL;
}

/* A machine over data whose storages go to f. */
static pickle *torch_pickle(const unsigned char *data, size_t len, size_t at, torch_file *f)
{
	pickle_hooks h = {.reduce = torch_reduce, .persistent_load = persistent_storage, .ctx = f};
	return pickle_new(data, len, at, values_base(), "PTH_MAX_VALUES", &h);
}

/* ---------------------------------------------------------------- state dict -> record */

/* Element si of the storage into element di of out (int64 narrowed to i32). */
static int copy_elem(void *out, int64_t di, const unsigned char *bytes, int src_size, int64_t si)
{
	const unsigned char *src = bytes + (size_t)si * (size_t)src_size;
	if (src_size == 8) {
		int64_t v = (int64_t)load_le(src, 8);
		if (v < INT32_MIN || v > INT32_MAX)
			return err_set("int64 value %lld does not fit in i32", (long long)v);
		int32_t w = (int32_t)v;
		memcpy((unsigned char *)out + (size_t)di * 4, &w, 4);
		return 0;
	}
	memcpy((unsigned char *)out + (size_t)di * (size_t)src_size, src, (size_t)src_size);
	return 0;
}

/* The tensor's elements in row-major order, whatever its strides. */
static int gather(const torch_file *f, tensor *out, const tinfo *t)
{
	const sref *r = &f->refs[t->storage->ref];
	const unsigned char *bytes = r->bytes + (size_t)t->storage->soff * (size_t)r->st->src_size;
	int64_t numel = tensor_numel(out), idx[TENSOR_MAXDIM] = {0};
	for (int64_t i = 0; i < numel; i++) {
		int64_t si = t->offset;
		for (int d = 0; d < t->ndim; d++)
			si += idx[d] * t->stride[d];
		if (copy_elem(out->data, i, bytes, r->st->src_size, si) < 0)
			return -1;
		for (int d = t->ndim - 1; d >= 0; d--) {
			if (++idx[d] < t->shape[d])
				break;
			idx[d] = 0;
		}
	}
	return 0;
}

static const char *strip_module(const char *k)
{
	while (!strncmp(k, "module.", 7))
		k += 7;
	return k;
}

/* The state dict (the top dict, or its "state_dict" or "model" dict) as a params
 * record; DDP's "module." prefixes removed. meta: "wrapper" (the key it was under),
 * "module_prefix" (true if removed), "long_keys" (keys too long for a tensor name,
 * left out: no model tensor has such a name). */
static record *dict_to_record(const torch_file *f, const pickle_value *d)
{
	if (!d || d->type != PICKLE_DICT) {
		err_set("the pickle holds no dict (not a state dict)");
		return NULL;
	}
	const char *wrapper = NULL;
	static const char *const wrappers[] = {"state_dict", "model"};
	for (size_t w = 0; w < 2 && !wrapper; w++) {
		const pickle_value *sd = pickle_dict_get(d, wrappers[w]);
		if (sd && sd->type == PICKLE_DICT) {
			d = sd; /* an mmcv / mmdet checkpoint; torchvision's reference scripts' */
			wrapper = wrappers[w];
		}
	}
	/* the tensors' bytes against the storages' before anything is allocated: overlapping
	 * views (a stride of 0 over a long shape) cannot multiply a small file */
	uint64_t in = 0, out = 0;
	for (int i = 0; i < f->nrefs; i++)
		in += (uint64_t)f->refs[i].numel * (uint64_t)f->refs[i].st->src_size;
	int module = 0;
	for (size_t i = 0; i + 1 < d->n; i += 2) {
		const pickle_value *k = d->items[i], *v = d->items[i + 1];
		if (k->type != PICKLE_STR || strlen(k->s) != k->slen) {
			err_set("state dict key %zu is not a string", i / 2);
			return NULL;
		}
		if (!is_obj(v, OBJ_TENSOR)) {
			err_set("state dict '%s' is not a tensor", k->s);
			return NULL;
		}
		module |= strip_module(k->s) != k->s;
		int64_t n = 1;
		const tinfo *t = v->obj;
		for (int j = 0; j < t->ndim; j++)
			n *= t->shape[j];
		out += (uint64_t)n * dtype_size(f->refs[t->storage->ref].st->dt);
		if (out > OUT_RATIO * in + MIB) {
			err_set("its tensors (%llu bytes by '%s') are more than %d times its storages (%llu bytes) plus "
				"1 MiB: views overlap beyond what torch.save writes",
				(unsigned long long)out, k->s, OUT_RATIO, (unsigned long long)in);
			return NULL;
		}
	}
	record *r = record_new("params");
	if (!r)
		return NULL;
	if (wrapper)
		cJSON_AddStringToObject(r->meta, "wrapper", wrapper);
	if (module)
		cJSON_AddTrueToObject(r->meta, "module_prefix");
	for (size_t i = 0; i + 1 < d->n; i += 2) {
		const pickle_value *v = d->items[i + 1];
		const char *key = strip_module(d->items[i]->s);
		if (strlen(key) >= TENSOR_NAMELEN) {
			cJSON *l = cJSON_GetObjectItem(r->meta, "long_keys");
			if (!l)
				l = cJSON_AddArrayToObject(r->meta, "long_keys");
			cJSON_AddItemToArray(l, cJSON_CreateString(key));
			continue;
		}
		if (record_find(r, key)) {
			err_set("key '%s' appears twice%s", key, module ? " (with and without 'module.')" : "");
			goto fail;
		}
		const tinfo *ti = v->obj;
		tensor *t = record_add(r, key, f->refs[ti->storage->ref].st->dt, ti->ndim, ti->shape);
		if (!t || gather(f, t, ti) < 0) {
			err_wrap("'%s'", key);
			goto fail;
		}
	}
	return r;
fail:
	record_free(r);
	return NULL;
}

static record *read_zip(const unsigned char *data, size_t len)
{
	struct archive *a = archive_read_new();
	if (!a) {
		err_set("out of memory");
		return NULL;
	}
	archive_read_support_format_zip(a);
	zip_members z = {0};
	record *r = NULL;
	size_t budget = len > (TOTAL_MAX - MIB) / ZIP_RATIO ? TOTAL_MAX : ZIP_RATIO * len + MIB;
	if (archive_read_open_memory(a, data, len) != ARCHIVE_OK)
		err_set("not a readable zip (%s)", archive_error_string(a) ? archive_error_string(a) : "cannot open");
	else if (read_members(a, &z, budget) == 0) {
		const member *pkl = NULL;
		for (int i = 0; i < z.n && !pkl; i++) {
			size_t n = strlen(z.m[i].name);
			if (n >= 8 && !strcmp(z.m[i].name + n - 8, "data.pkl") && (n == 8 || z.m[i].name[n - 9] == '/'))
				pkl = &z.m[i];
		}
		if (!pkl)
			err_set("no data.pkl in the archive (not a torch.save file)");
		else {
			torch_file f = {.zip = &z, .prefix = pkl->name, .prefix_len = strlen(pkl->name) - 8};
			pickle *pk = torch_pickle(pkl->data, pkl->len, 0, &f);
			pickle_value *obj = pk ? pickle_load(pk, "data.pkl") : NULL;
			if (obj)
				r = dict_to_record(&f, obj);
			pickle_free(pk);
			torch_file_free(&f);
		}
	}
	members_free(&z);
	archive_read_free(a);
	return r;
}

/* ---------------------------------------------------------------- the legacy format */

/* torch.save before 1.6 (and _use_new_zipfile_serialization=False since): five pickles
 * one after the other, the magic number 0x1950a86a20f9469cfc6c, the protocol version
 * 1001, sys_info {protocol_version, little_endian, type_sizes}, the object (storages as
 * persistent ids), the list of storage keys; then for each key in that order an int64
 * element count and the storage's raw little-endian bytes. */
static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static int is_legacy(const unsigned char *d, size_t len)
{
	/* PROTO n, [FRAME len8], LONG1 10 <magic>, STOP */
	size_t i = 2;
	if (len < 16 || d[0] != 0x80 || d[1] > 5)
		return 0;
	if (d[i] == 0x95)
		i += 9;
	return len >= i + 13 && d[i] == 0x8a && d[i + 1] == 10 && !memcmp(d + i + 2, legacy_magic, 10) && d[i + 12] == '.';
}

static record *read_legacy(const unsigned char *data, size_t len)
{
	torch_file f = {.legacy = 1};
	record *r = NULL;
	/* after the magic number (is_legacy) */
	pickle *pk = torch_pickle(data, len, data[2] == 0x95 ? 24 : 15, &f);
	pickle_value *version = pk ? pickle_load(pk, "protocol version") : NULL;
	pickle_value *sys = version ? pickle_load(pk, "sys_info") : NULL;
	if (!sys)
		goto out;
	if (version->type != PICKLE_INT || version->i != 1001) {
		err_set("legacy protocol version %lld, expected 1001", version->type == PICKLE_INT ? (long long)version->i : -1LL);
		goto out;
	}
	const pickle_value *le = sys->type == PICKLE_DICT ? pickle_dict_get(sys, "little_endian") : NULL;
	if (!le || le->type != PICKLE_BOOL) {
		err_set("sys_info is not a dict with little_endian");
		goto out;
	}
	if (!le->i) {
		err_set("saved on a big-endian machine: not supported");
		goto out;
	}
	pickle_value *obj = pickle_load(pk, "object"), *keys = obj ? pickle_load(pk, "storage keys") : NULL;
	if (!keys)
		goto out;
	if (keys->type != PICKLE_LIST) {
		err_set("the storage keys are not a list");
		goto out;
	}
	/* the storages' bytes follow the last pickle */
	const unsigned char *p = data + pickle_offset(pk), *end = data + len;
	for (size_t i = 0; i < keys->n; i++) {
		const pickle_value *k = keys->items[i];
		int ref = -1;
		for (int j = 0; k->type == PICKLE_STR && j < f.nrefs && ref < 0; j++)
			if (!strcmp(f.refs[j].key, k->s))
				ref = j;
		long at = (long)(p - data);
		if (ref < 0) {
			err_set("offset %ld: storage key %zu is not a storage of the object", at, i);
			goto out;
		}
		sref *s = &f.refs[ref];
		if (s->bytes) {
			err_set("offset %ld: storage '%s' twice", at, s->key);
			goto out;
		}
		if ((size_t)(end - p) < 8) {
			err_set("offset %ld: truncated (storage '%s')", at, s->key);
			goto out;
		}
		int64_t numel = (int64_t)load_le(p, 8);
		if (numel != s->numel) {
			err_set("offset %ld: storage '%s' holds %lld elements, its persistent id says %lld", at, s->key,
				(long long)numel, (long long)s->numel);
			goto out;
		}
		/* the size against the file before anything is made of it */
		if ((uint64_t)numel > (uint64_t)(end - p - 8) / (uint64_t)s->st->src_size) {
			err_set("offset %ld: storage '%s' of %lld elements of %d bytes, %ld bytes left in the file", at, s->key,
				(long long)numel, s->st->src_size, (long)(end - p - 8));
			goto out;
		}
		s->bytes = p + 8;
		p += 8 + (size_t)numel * (size_t)s->st->src_size;
	}
	for (int j = 0; j < f.nrefs; j++)
		if (!f.refs[j].bytes) {
			err_set("storage '%s' has no data (not in the list of storage keys)", f.refs[j].key);
			goto out;
		}
	r = dict_to_record(&f, obj);
out:
	pickle_free(pk);
	torch_file_free(&f);
	return r;
}

/* ---------------------------------------------------------------- reading */

record *pth_read_mem(const void *data, size_t len, const char *name)
{
	const unsigned char *d = data;
	record *r = NULL;
	if (len >= 4 && !memcmp(d, "PK", 2) && d[2] < 9 && d[3] < 9)
		r = read_zip(d, len);
	else if (is_legacy(d, len))
		r = read_legacy(d, len);
	else if (len >= 262 && !memcmp(d + 257, "ustar", 5))
		err_set("torch's tar format (torch before 0.1.10) is not supported");
	else if (len == 0)
		err_set("empty file");
	else {
		char start[16] = "";
		for (size_t i = 0, at = 0; i < 4 && i < len; i++)
			at += (size_t)snprintf(start + at, sizeof start - at, "%s%02x", i ? " " : "", d[i]);
		err_set("not a torch.save file: neither a zip (torch >= 1.6) nor torch's legacy format (it starts %s)", start);
	}
	if (!r)
		err_wrap("%s", name);
	return r;
}

/* A file from a pipe (--pretrained <(curl ...)) cannot be mapped: it is read whole,
 * into memory that grows with what arrives. Takes fd. */
static record *read_pipe(int fd, const char *path)
{
	size_t cap = 1 << 20, len = 0;
	unsigned char *buf = malloc(cap);
	for (;;) {
		unsigned char *b = len < cap ? buf : realloc(buf, cap *= 2);
		if (!b) {
			free(buf);
			close(fd);
			err_set("%s: out of memory after %zu bytes", path, len);
			return NULL;
		}
		buf = b;
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_set("%s: %s", path, strerror(errno));
			free(buf);
			close(fd);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	record *r = pth_read_mem(buf, len, path);
	free(buf);
	return r;
}

record *pth_read(const char *path)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		err_set("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode))
		return read_pipe(fd, path);
	size_t len = (size_t)st.st_size;
	void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
	close(fd);
	if (len && map == MAP_FAILED) {
		err_set("%s: %s", path, strerror(errno));
		return NULL;
	}
	record *r = pth_read_mem(len ? map : "", len, path);
	if (len)
		munmap(map, len);
	return r;
}

/* ---------------------------------------------------------------- mapping */

/* torchvision's RegNet (regnet_x_800mf ...) names its modules differently from mmdet's
 * RegNet, whose names the model uses (a ResNet layout): the stem is stem.0/stem.1, stage
 * S's block I is trunk_output.blockS.blockS-I with proj (the downsample) and f.a/f.b/f.c
 * (the 1x1, grouped 3x3 and 1x1 convs, each .0 conv and .1 BN). Writes mmdet's name of
 * key to out; 0 for a key of neither form. */
static int regnet_name(const char *key, char *out, size_t n)
{
	static const char *const parts[][2] = {{"proj.0.", "downsample.0."}, {"proj.1.", "downsample.1."},
					      {"f.a.0.", "conv1."}, {"f.a.1.", "bn1."}, {"f.b.0.", "conv2."},
					      {"f.b.1.", "bn2."}, {"f.c.0.", "conv3."}, {"f.c.1.", "bn3."}};
	if (!strncmp(key, "stem.0.", 7) || !strncmp(key, "stem.1.", 7)) {
		snprintf(out, n, "%s.%s", key[5] == '0' ? "conv1" : "bn1", key + 7);
		return 1;
	}
	int s, s2, i, at = -1;
	if (sscanf(key, "trunk_output.block%d.block%d-%d.%n", &s, &s2, &i, &at) < 3 || at < 0 || s != s2)
		return 0;
	for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) {
		size_t len = strlen(parts[k][0]);
		if (!strncmp(key + at, parts[k][0], len)) {
			snprintf(out, n, "layer%d.%d.%s%s", s, i, parts[k][1], key + at + len);
			return 1;
		}
	}
	return 0;
}

/* How a file's keys become model names, decided from all its keys. */
typedef struct naming {
	int backbone_only; /* some keys start with "backbone.": those alone, without it */
	int regnet;        /* torchvision's RegNet (trunk_output.*) */
	int bare_index;    /* every key starts with a digit: an SSD VGG's "features" list saved
			    * alone (vgg16_reducedfc.pth: "0.weight" ... "33.bias") */
} naming;

static naming naming_of(const record *sd)
{
	naming nm = {0};
	for (int i = 0; i < sd->ntensors; i++)
		nm.backbone_only |= !strncmp(sd->tensors[i].name, "backbone.", 9);
	int n = 0, digits = 0;
	for (int i = 0; i < sd->ntensors; i++) {
		const char *k = sd->tensors[i].name;
		if (nm.backbone_only && strncmp(k, "backbone.", 9))
			continue;
		k += nm.backbone_only ? 9 : 0;
		nm.regnet |= !strncmp(k, "trunk_output.", 13);
		n++;
		digits += *k >= '0' && *k <= '9';
	}
	nm.bare_index = n > 0 && digits == n;
	return nm;
}

/* The model name of file key (prefix + the key as the model names it); 0 when the
 * key cannot name a backbone tensor. */
static int model_name_of(const char *key, const naming *nm, const char *prefix, char *out, size_t n)
{
	char a[2 * TENSOR_NAMELEN], b[2 * TENSOR_NAMELEN];
	if (nm->backbone_only) {
		if (strncmp(key, "backbone.", 9))
			return 0;
		key += 9;
	}
	if (nm->bare_index) {
		snprintf(a, sizeof a, "features.%s", key);
		key = a;
	}
	if (nm->regnet) {
		if (!regnet_name(key, b, sizeof b))
			return 0;
		key = b;
	}
	return (size_t)snprintf(out, n, "%s%s", prefix, key) < n;
}

/* The shortest dotted prefix of name that no name in used[] shares, as "prefix.*"
 * (name itself when every prefix is shared), into out. */
static void group_of(const char *name, char *const *used, int nused, char *out, size_t n)
{
	for (const char *dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.')) {
		size_t len = (size_t)(dot - name) + 1; /* with the dot */
		int shared = 0;
		for (int i = 0; i < nused && !shared; i++)
			shared = !strncmp(used[i], name, len);
		if (!shared) {
			snprintf(out, n, "%.*s*", (int)len, name);
			return;
		}
	}
	snprintf(out, n, "%s", name);
}

/* Appends the groups of names[] (first seen first, each once) to list, ", " between,
 * "..." when it is full. */
static void list_groups(char *const *names, int n, char *const *used, int nused, char *list, size_t cap)
{
	size_t len = 0;
	list[0] = 0;
	char g[2 * TENSOR_NAMELEN + 8];
	for (int i = 0; i < n; i++) {
		group_of(names[i], used, nused, g, sizeof g);
		/* already listed? */
		const char *p = list;
		size_t gl = strlen(g);
		int seen = 0;
		while (!seen && (p = strstr(p, g))) {
			seen = (p == list || p[-1] == ' ') && (p[gl] == ',' || p[gl] == 0);
			p += gl;
		}
		if (seen)
			continue;
		if (len + gl + 2 + 5 >= cap) {
			if (len + 5 < cap)
				strcpy(list + len, len ? ", ..." : "...");
			return;
		}
		len += (size_t)snprintf(list + len, cap - len, "%s%s", len ? ", " : "", g);
	}
}

static void add_how(char *how, size_t n, const char *fmt, const char *arg)
{
	size_t l = strlen(how);
	if (l + 2 < n) {
		if (l)
			strcpy(how + l, ", "), l += 2;
		snprintf(how + l, n - l, fmt, arg);
	}
}

int pth_load_into(record *params, const record *sd, const char *prefix, pth_summary *sum)
{
	naming nm = naming_of(sd);
	char name[2 * TENSOR_NAMELEN + 32], d1[128], d2[128];
	size_t plen = strlen(prefix);
	memset(sum, 0, sizeof *sum);
	sum->naming = nm.regnet ? "torchvision RegNet" : nm.bare_index ? "SSD VGG features list" : NULL;
	sum->rgb = nm.regnet; /* the naming alone says torchvision's, trained on RGB */
	const cJSON *w = cJSON_GetObjectItem(sd->meta, "wrapper");
	if (cJSON_IsString(w))
		add_how(sum->how, sizeof sum->how, "its '%s' dict", w->valuestring);
	if (cJSON_IsTrue(cJSON_GetObjectItem(sd->meta, "module_prefix")))
		add_how(sum->how, sizeof sum->how, "%s", "'module.' removed");
	if (nm.backbone_only)
		add_how(sum->how, sizeof sum->how, "%s", "its 'backbone.' keys");
	if (sum->naming)
		add_how(sum->how, sizeof sum->how, nm.regnet ? "%s names mapped to mmdet's" : "%s names", sum->naming);
	/* where each file tensor goes (NULL: unused), every shape checked before anything
	 * is changed */
	tensor **dst = calloc((size_t)sd->ntensors + 1, sizeof *dst);
	char *set = calloc((size_t)params->ntensors + 1, 1);
	char **used = calloc((size_t)sd->ntensors + 1, sizeof *used), **unused = calloc((size_t)sd->ntensors + 1, sizeof *unused);
	char **setn = calloc((size_t)params->ntensors + 1, sizeof *setn), **miss = calloc((size_t)params->ntensors + 1, sizeof *miss);
	int rc = -1, nused = 0, nunused = 0, nset = 0, nmiss = 0;
	if (!dst || !set || !used || !unused || !setn || !miss) {
		err_set("out of memory");
		goto out;
	}
	for (int i = 0; i < sd->ntensors; i++) {
		const tensor *t = &sd->tensors[i];
		if (ends_with(t->name, ".num_batches_tracked"))
			continue;
		tensor *p = model_name_of(t->name, &nm, prefix, name, sizeof name) ? record_find(params, name) : NULL;
		if (!p) {
			unused[nunused++] = (char *)t->name;
			continue;
		}
		if (!tensor_same_shape(p, t) ||
		    !(p->dtype == t->dtype || (p->dtype == DT_F32 && (t->dtype == DT_F16 || t->dtype == DT_BF16)))) {
			err_set("key '%s': %s in the file, %s in the model ('%s')", t->name, tensor_describe(t, d1, sizeof d1),
				tensor_describe(p, d2, sizeof d2), name);
			goto out;
		}
		if (set[p - params->tensors]) {
			err_set("key '%s': a second tensor for '%s'", t->name, name);
			goto out;
		}
		set[p - params->tensors] = 1;
		dst[i] = p;
		used[nused++] = (char *)t->name;
	}
	const cJSON *lk = cJSON_GetObjectItem(sd->meta, "long_keys"), *e;
	cJSON_ArrayForEach(e, lk) if (cJSON_IsString(e)) unused[nunused++] = e->valuestring;
	if (!nused) {
		const tensor *t = sd->ntensors ? &sd->tensors[0] : NULL;
		if (t && model_name_of(t->name, &nm, prefix, name, sizeof name))
			err_set("none of its %d tensors is one of the model's (its first, '%s', would be '%s')", sd->ntensors,
				t->name, name);
		else
			err_set("none of its %d tensors is one of the model's", sd->ntensors);
		goto out;
	}
	for (int i = 0; i < sd->ntensors; i++) {
		const tensor *t = &sd->tensors[i];
		tensor *p = dst[i];
		if (!p)
			continue;
		if (p->dtype == t->dtype)
			memcpy(p->data, t->data, tensor_nbytes(t));
		else
			for (int64_t j = 0; j < tensor_numel(t); j++)
				((float *)p->data)[j] = (float)tensor_get(t, j);
	}
	for (int i = 0; i < params->ntensors; i++) {
		const char *pn = params->tensors[i].name;
		if (strncmp(pn, prefix, plen) || ends_with(pn, ".num_batches_tracked"))
			continue;
		if (set[i])
			setn[nset++] = (char *)pn + plen;
		else
			miss[nmiss++] = (char *)pn + plen;
	}
	sum->loaded = nused;
	sum->skipped = nunused;
	sum->missing = nmiss;
	list_groups(unused, nunused, used, nused, sum->skipped_list, sizeof sum->skipped_list);
	list_groups(miss, nmiss, setn, nset, sum->missing_list, sizeof sum->missing_list);
	rc = 0;
out:
	free(dst);
	free(set);
	free(used);
	free(unused);
	free(setn);
	free(miss);
	return rc;
}

void pth_summary_line(const pth_summary *s, char *out, size_t n)
{
	snprintf(out, n, "loaded %d tensors into the backbone%s%s%s, skipped %d unused%s%s; missing %d%s%s", s->loaded,
		 s->how[0] ? " (" : "", s->how, s->how[0] ? ")" : "", s->skipped, s->skipped ? ": " : "", s->skipped_list,
		 s->missing, s->missing ? ": " : "", s->missing_list);
}

int pth_reverse_input_channels(record *params, const char *prefix, const char **name)
{
	size_t plen = strlen(prefix);
	for (int i = 0; i < params->ntensors; i++) {
		tensor *t = &params->tensors[i];
		if (strncmp(t->name, prefix, plen) || t->ndim != 4 || t->shape[1] != 3 || t->dtype != DT_F32)
			continue;
		int64_t co = t->shape[0], kk = t->shape[2] * t->shape[3];
		float *w = t->data;
		for (int64_t o = 0; o < co; o++)
			for (int64_t k = 0; k < kk; k++) {
				float tmp = w[(o * 3 + 0) * kk + k];
				w[(o * 3 + 0) * kk + k] = w[(o * 3 + 2) * kk + k];
				w[(o * 3 + 2) * kk + k] = tmp;
			}
		*name = t->name;
		return 0;
	}
	return err_set("no conv weight of 3 input channels under '%s'", prefix);
}
