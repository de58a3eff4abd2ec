#include "pth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "err.h"

#define ENTRY_MAX ((size_t)4 << 30)  /* one zip member */
#define TOTAL_MAX ((size_t)16 << 30) /* all members kept */
#define STACK_MAX (1u << 22)
#define MEMO_MAX (1u << 22)

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

/* Reads the current member whole (its declared size is only a first guess). */
static int read_member(struct archive *a, member *m, size_t declared, size_t *total)
{
	size_t cap = 0, first = declared < (1u << 26) ? declared + 1 : 1u << 26;
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
		if ((*total += (size_t)n) > TOTAL_MAX)
			return err_set("larger than %zu bytes unpacked", TOTAL_MAX);
	}
}

/* Keeps the members a state dict needs: ".../data.pkl" and ".../data/<key>". */
static int read_members(struct archive *a, zip_members *z)
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
		if (read_member(a, m, size > 0 ? (size_t)size : 4096, &total) < 0)
			return -1;
	}
	if (rc != ARCHIVE_EOF)
		return err_set("not a readable zip (%s); torch.save writes zip files since torch 1.6: "
			       "load an older file in torch and save it again",
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

/* ---------------------------------------------------------------- pickle values */

enum pv_type { PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_TUPLE, PV_LIST, PV_DICT, PV_GLOBAL,
	       PV_STORAGE, PV_TENSOR, PV_MARK };

typedef struct pv pv;
struct pv {
	enum pv_type type;
	int64_t i;
	double f;
	char *s; /* STR, GLOBAL "module.name" */
	size_t slen;
	pv **items; /* TUPLE, LIST; DICT as key, value, key, value ... */
	size_t n, cap;
	/* STORAGE */
	enum dtype dt;
	int src_size;  /* bytes per element in the file (8 for int64 read as i32) */
	int64_t numel;
	const unsigned char *bytes;
	/* TENSOR */
	const pv *storage;
	int64_t offset;
	int ndim;
	int64_t shape[TENSOR_MAXDIM], stride[TENSOR_MAXDIM];
	pv *next; /* every value the unpickler made, for freeing */
};

typedef struct unpickler {
	const unsigned char *start, *p, *end;
	const zip_members *zip;
	const char *prefix; /* of the members: "<name>/" */
	size_t prefix_len;
	pv *all;
	pv **stack;
	size_t sp, scap;
	pv **memo;
	size_t nmemo, memo_count; /* slots, slots in use (MEMOIZE stores at memo_count) */
} unpickler;

static pv *new_pv(unpickler *u, enum pv_type t)
{
	pv *v = calloc(1, sizeof *v);
	if (!v) {
		err_set("out of memory");
		return NULL;
	}
	v->type = t;
	v->next = u->all;
	u->all = v;
	return v;
}

static void unpickler_free(unpickler *u)
{
	for (pv *v = u->all, *next; v; v = next) {
		next = v->next;
		free(v->s);
		free(v->items);
		free(v);
	}
	free(u->stack);
	free(u->memo);
}

static int add_item(pv *c, pv *x)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 8;
		pv **p = realloc(c->items, cap * sizeof *p);
		if (!p)
			return err_set("out of memory");
		c->items = p;
		c->cap = cap;
	}
	c->items[c->n++] = x;
	return 0;
}

static int push(unpickler *u, pv *v)
{
	if (!v)
		return -1;
	if (u->sp == u->scap) {
		if (u->scap >= STACK_MAX)
			return err_set("pickle stack deeper than %u", STACK_MAX);
		size_t cap = u->scap ? 2 * u->scap : 64;
		pv **s = realloc(u->stack, cap * sizeof *s);
		if (!s)
			return err_set("out of memory");
		u->stack = s;
		u->scap = cap;
	}
	u->stack[u->sp++] = v;
	return 0;
}

/* Pops one value (not a mark); NULL (err) on an empty stack. */
static pv *pop(unpickler *u)
{
	if (u->sp == 0 || u->stack[u->sp - 1]->type == PV_MARK) {
		err_set("pickle stack underflow");
		return NULL;
	}
	return u->stack[--u->sp];
}

static pv *top(unpickler *u)
{
	if (u->sp == 0 || u->stack[u->sp - 1]->type == PV_MARK) {
		err_set("pickle stack underflow");
		return NULL;
	}
	return u->stack[u->sp - 1];
}

/* The index of the topmost mark; -1 (err) without one. */
static long find_mark(unpickler *u)
{
	for (size_t i = u->sp; i-- > 0;)
		if (u->stack[i]->type == PV_MARK)
			return (long)i;
	return err_set("pickle: no MARK on the stack");
}

/* Moves the values above the topmost mark into c (a tuple, list or dict) and drops
 * the mark. */
static int collect_to_mark(unpickler *u, pv *c)
{
	long m = find_mark(u);
	if (m < 0)
		return -1;
	for (size_t i = (size_t)m + 1; i < u->sp; i++)
		if (add_item(c, u->stack[i]) < 0)
			return -1;
	u->sp = (size_t)m;
	return 0;
}

static int need(unpickler *u, size_t n)
{
	return (size_t)(u->end - u->p) < n ? err_set("truncated pickle") : 0;
}

static uint64_t le_bytes(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static pv *new_int(unpickler *u, int64_t i)
{
	pv *v = new_pv(u, PV_INT);
	if (v)
		v->i = i;
	return v;
}

static pv *new_str(unpickler *u, const unsigned char *s, size_t len, enum pv_type t)
{
	pv *v = new_pv(u, t);
	if (!v)
		return NULL;
	if (!(v->s = malloc(len + 1))) {
		err_set("out of memory");
		return NULL;
	}
	memcpy(v->s, s, len);
	v->s[len] = 0;
	v->slen = len;
	return v;
}

static int op_string(unpickler *u, int lenbytes)
{
	if (need(u, (size_t)lenbytes) < 0)
		return -1;
	uint64_t len = le_bytes(u->p, lenbytes);
	u->p += lenbytes;
	if (len > (uint64_t)(u->end - u->p))
		return err_set("truncated pickle (string of %llu bytes)", (unsigned long long)len);
	pv *v = new_str(u, u->p, (size_t)len, PV_STR);
	u->p += len;
	return push(u, v);
}

/* GLOBAL: "module\nname\n" -> "module.name" */
static int op_global(unpickler *u)
{
	const unsigned char *nl1 = memchr(u->p, '\n', (size_t)(u->end - u->p));
	const unsigned char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(u->end - nl1 - 1)) : NULL;
	if (!nl2)
		return err_set("truncated pickle (GLOBAL)");
	pv *v = new_str(u, u->p, (size_t)(nl2 - u->p), PV_GLOBAL);
	if (!v)
		return -1;
	v->s[nl1 - u->p] = '.';
	u->p = nl2 + 1;
	return push(u, v);
}

static int memo_put(unpickler *u, uint64_t idx)
{
	pv *v = top(u);
	if (!v)
		return -1;
	if (idx >= MEMO_MAX)
		return err_set("pickle memo index %llu too large", (unsigned long long)idx);
	if (idx >= u->nmemo) {
		size_t n = u->nmemo ? u->nmemo : 64;
		while (n <= idx)
			n *= 2;
		pv **m = realloc(u->memo, n * sizeof *m);
		if (!m)
			return err_set("out of memory");
		memset(m + u->nmemo, 0, (n - u->nmemo) * sizeof *m);
		u->memo = m;
		u->nmemo = n;
	}
	u->memo_count += !u->memo[idx];
	u->memo[idx] = v;
	return 0;
}

static int memo_get(unpickler *u, uint64_t idx)
{
	if (idx >= u->nmemo || !u->memo[idx])
		return err_set("pickle memo index %llu was never stored", (unsigned long long)idx);
	return push(u, u->memo[idx]);
}

static const struct storage_type {
	const char *name;
	enum dtype dt;
	int src_size;
} storage_types[] = {
	{"torch.FloatStorage", DT_F32, 4}, {"torch.HalfStorage", DT_F16, 2}, {"torch.BFloat16Storage", DT_BF16, 2},
	{"torch.LongStorage", DT_I32, 8},  {"torch.IntStorage", DT_I32, 4},  {"torch.ShortStorage", DT_I16, 2},
	{"torch.CharStorage", DT_I8, 1},   {"torch.ByteStorage", DT_U8, 1},  {"torch.BoolStorage", DT_U8, 1},
};

/* BINPERSID: ('storage', torch.<T>Storage, key, location, numel) -> the storage. */
static int op_persid(unpickler *u)
{
	pv *pid = pop(u);
	if (!pid)
		return -1;
	if (pid->type != PV_TUPLE || pid->n != 5 || pid->items[0]->type != PV_STR || strcmp(pid->items[0]->s, "storage") ||
	    pid->items[1]->type != PV_GLOBAL || pid->items[2]->type != PV_STR || pid->items[4]->type != PV_INT)
		return err_set("persistent id is not ('storage', type, key, location, numel)");
	const char *type = pid->items[1]->s, *key = pid->items[2]->s;
	int64_t numel = pid->items[4]->i;
	const struct storage_type *st = NULL;
	for (size_t i = 0; i < sizeof storage_types / sizeof *storage_types; i++)
		if (!strcmp(type, storage_types[i].name))
			st = &storage_types[i];
	if (!st)
		return err_set("unsupported storage type %s", type);
	char name[512];
	if (strlen(key) != pid->items[2]->slen ||
	    (size_t)snprintf(name, sizeof name, "%.*sdata/%s", (int)u->prefix_len, u->prefix, key) >= sizeof name)
		return err_set("bad storage key");
	const member *m = find_member(u->zip, name);
	if (!m)
		return err_set("storage '%s' is not in the archive (no %s)", key, name);
	if (numel < 0 || (uint64_t)numel > m->len / (uint64_t)st->src_size)
		return err_set("storage '%s' holds %zu bytes, not %lld elements of %d bytes", key, m->len, (long long)numel,
			       st->src_size);
	pv *v = new_pv(u, PV_STORAGE);
	if (!v)
		return -1;
	v->dt = st->dt;
	v->src_size = st->src_size;
	v->numel = numel;
	v->bytes = m->data;
	return push(u, v);
}

/* Checks a tuple of at most TENSOR_MAXDIM ints >= 0 into out; returns its length or -1. */
static int int_tuple(const pv *t, int64_t *out, const char *what)
{
	if (t->type != PV_TUPLE || t->n > TENSOR_MAXDIM)
		return err_set("tensor %s is not a tuple of at most %d ints", what, TENSOR_MAXDIM);
	for (size_t i = 0; i < t->n; i++) {
		if (t->items[i]->type != PV_INT || t->items[i]->i < 0 || t->items[i]->i > (INT64_C(1) << 40))
			return err_set("tensor %s[%zu] is not an int in [0, 2^40]", what, i);
		out[i] = t->items[i]->i;
	}
	return (int)t->n;
}

/* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) */
static pv *rebuild_tensor(unpickler *u, const pv *args)
{
	if (args->n < 4 || args->items[0]->type != PV_STORAGE || args->items[1]->type != PV_INT) {
		err_set("_rebuild_tensor_v2: expected (storage, offset, size, stride, ...)");
		return NULL;
	}
	pv *t = new_pv(u, PV_TENSOR);
	if (!t)
		return NULL;
	t->storage = args->items[0];
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
	return t;
}

/* REDUCE: the few callables a state dict uses. */
static int op_reduce(unpickler *u)
{
	pv *args = pop(u), *fn = args ? pop(u) : NULL;
	if (!fn)
		return -1;
	if (fn->type != PV_GLOBAL || args->type != PV_TUPLE)
		return err_set("REDUCE of something that is not a global with a tuple");
	if (!strcmp(fn->s, "collections.OrderedDict")) {
		if (args->n != 0)
			return err_set("collections.OrderedDict with arguments");
		return push(u, new_pv(u, PV_DICT));
	}
	if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2"))
		return push(u, rebuild_tensor(u, args));
	if (!strcmp(fn->s, "torch._utils._rebuild_parameter") ||
	    !strcmp(fn->s, "torch._utils._rebuild_parameter_with_state")) {
		if (args->n < 1 || args->items[0]->type != PV_TENSOR)
			return err_set("%s: expected a tensor", fn->s);
		return push(u, args->items[0]);
	}
	return err_set("unsupported callable %s", fn->s);
}

static int op_setitems(unpickler *u, int many)
{
	if (!many) {
		pv *v = pop(u), *k = v ? pop(u) : NULL, *d = k ? top(u) : NULL;
		if (!d)
			return -1;
		if (d->type != PV_DICT)
			return err_set("SETITEM on something that is not a dict");
		return add_item(d, k) < 0 || add_item(d, v) < 0 ? -1 : 0;
	}
	long m = find_mark(u);
	if (m < 0)
		return -1;
	if (m == 0 || u->stack[m - 1]->type != PV_DICT || (u->sp - (size_t)m - 1) % 2)
		return err_set("SETITEMS without a dict and key, value pairs");
	pv *d = u->stack[m - 1];
	for (size_t i = (size_t)m + 1; i < u->sp; i++)
		if (add_item(d, u->stack[i]) < 0)
			return -1;
	u->sp = (size_t)m;
	return 0;
}

static int op_appends(unpickler *u, int many)
{
	if (!many) {
		pv *v = pop(u), *l = v ? top(u) : NULL;
		if (!l)
			return -1;
		return l->type != PV_LIST ? err_set("APPEND to something that is not a list") : add_item(l, v);
	}
	long m = find_mark(u);
	if (m < 0)
		return -1;
	if (m == 0 || u->stack[m - 1]->type != PV_LIST)
		return err_set("APPENDS without a list");
	pv *l = u->stack[m - 1];
	for (size_t i = (size_t)m + 1; i < u->sp; i++)
		if (add_item(l, u->stack[i]) < 0)
			return -1;
	u->sp = (size_t)m;
	return 0;
}

static int op_tuple(unpickler *u, int n)
{
	pv *t = new_pv(u, PV_TUPLE);
	if (!t)
		return -1;
	if (n < 0)
		return collect_to_mark(u, t) < 0 ? -1 : push(u, t);
	if (u->sp < (size_t)n)
		return err_set("pickle stack underflow");
	for (size_t i = u->sp - (size_t)n; i < u->sp; i++)
		if (u->stack[i]->type == PV_MARK || add_item(t, u->stack[i]) < 0)
			return u->stack[i]->type == PV_MARK ? err_set("pickle stack underflow") : -1;
	u->sp -= (size_t)n;
	return push(u, t);
}

static const char *opcode_name(int op)
{
	switch (op) {
	case 'I': return "INT";
	case 'L': return "LONG";
	case 'S': return "STRING";
	case 'V': return "UNICODE";
	case 'F': return "FLOAT";
	case 'P': return "PERSID";
	case 'i': return "INST";
	case 'o': return "OBJ";
	case 'p': return "PUT";
	case 'g': return "GET";
	case '1': return "DUP";
	case 'B': return "BINBYTES";
	case 'C': return "SHORT_BINBYTES";
	case 'T': return "BINSTRING";
	case 'U': return "SHORT_BINSTRING";
	case 0x81: return "NEWOBJ";
	case 0x82: return "EXT1";
	case 0x83: return "EXT2";
	case 0x84: return "EXT4";
	case 0x8b: return "LONG4";
	case 0x8e: return "BINBYTES8";
	case 0x8f: return "EMPTY_SET";
	case 0x90: return "ADDITEMS";
	case 0x91: return "FROZENSET";
	case 0x92: return "NEWOBJ_EX";
	case 0x96: return "BYTEARRAY8";
	case 0x97: return "NEXT_BUFFER";
	case 0x98: return "READONLY_BUFFER";
	default: return "unknown";
	}
}

/* One opcode; 1 at STOP, 0 to go on, -1 (err). */
static int step(unpickler *u, pv **result)
{
	if (need(u, 1) < 0)
		return -1;
	int op = *u->p++;
	switch (op) {
	case 0x80: /* PROTO */
		if (need(u, 1) < 0)
			return -1;
		if (*u->p > 5)
			return err_set("pickle protocol %d", *u->p);
		u->p++;
		return 0;
	case 0x95: /* FRAME: a length hint only */
		if (need(u, 8) < 0)
			return -1;
		u->p += 8;
		return 0;
	case '.': /* STOP */
		return (*result = pop(u)) ? 1 : -1;
	case '(': return push(u, new_pv(u, PV_MARK));
	case '}': return push(u, new_pv(u, PV_DICT));
	case ')': return push(u, new_pv(u, PV_TUPLE));
	case ']': return push(u, new_pv(u, PV_LIST));
	case 'N': return push(u, new_pv(u, PV_NONE));
	case 0x88: /* NEWTRUE */
	case 0x89: { /* NEWFALSE */
		pv *v = new_pv(u, PV_BOOL);
		if (v)
			v->i = op == 0x88;
		return push(u, v);
	}
	case 'J': /* BININT */
		if (need(u, 4) < 0)
			return -1;
		u->p += 4;
		return push(u, new_int(u, (int32_t)(uint32_t)le_bytes(u->p - 4, 4)));
	case 'K': /* BININT1 */
	case 'M': { /* BININT2 */
		int n = op == 'K' ? 1 : 2;
		if (need(u, (size_t)n) < 0)
			return -1;
		u->p += n;
		return push(u, new_int(u, (int64_t)le_bytes(u->p - n, n)));
	}
	case 0x8a: { /* LONG1: n bytes, little-endian two's complement */
		if (need(u, 1) < 0)
			return -1;
		int n = *u->p++;
		if (n > 8)
			return err_set("pickle integer of %d bytes too large", n);
		if (need(u, (size_t)n) < 0)
			return -1;
		uint64_t v = le_bytes(u->p, n);
		if (n > 0 && n < 8 && (u->p[n - 1] & 0x80))
			v |= ~UINT64_C(0) << (8 * n);
		u->p += n;
		return push(u, new_int(u, (int64_t)v));
	}
	case 'G': { /* BINFLOAT: big-endian double */
		if (need(u, 8) < 0)
			return -1;
		uint64_t bits = 0;
		for (int i = 0; i < 8; i++)
			bits = bits << 8 | u->p[i];
		u->p += 8;
		pv *v = new_pv(u, PV_FLOAT);
		if (v)
			memcpy(&v->f, &bits, sizeof v->f);
		return push(u, v);
	}
	case 'X': return op_string(u, 4);    /* BINUNICODE */
	case 0x8c: return op_string(u, 1);   /* SHORT_BINUNICODE */
	case 0x8d: return op_string(u, 8);   /* BINUNICODE8 */
	case 'c': return op_global(u);       /* GLOBAL */
	case 0x93: { /* STACK_GLOBAL: module and name strings from the stack */
		pv *name = pop(u), *mod = name ? pop(u) : NULL;
		if (!mod)
			return -1;
		if (mod->type != PV_STR || name->type != PV_STR)
			return err_set("STACK_GLOBAL of non-strings");
		pv *g = new_pv(u, PV_GLOBAL);
		if (!g || !(g->s = malloc(mod->slen + name->slen + 2)))
			return g ? err_set("out of memory") : -1;
		g->slen = (size_t)sprintf(g->s, "%s.%s", mod->s, name->s);
		return push(u, g);
	}
	case 't': return op_tuple(u, -1);    /* TUPLE */
	case 0x85: return op_tuple(u, 1);    /* TUPLE1 */
	case 0x86: return op_tuple(u, 2);    /* TUPLE2 */
	case 0x87: return op_tuple(u, 3);    /* TUPLE3 */
	case 'l': { /* LIST */
		pv *l = new_pv(u, PV_LIST);
		return !l || collect_to_mark(u, l) < 0 ? -1 : push(u, l);
	}
	case 'd': { /* DICT */
		pv *d = new_pv(u, PV_DICT);
		if (!d || collect_to_mark(u, d) < 0)
			return -1;
		return d->n % 2 ? err_set("DICT with an odd number of items") : push(u, d);
	}
	case 'R': return op_reduce(u);
	case 'Q': return op_persid(u);       /* BINPERSID */
	case 's': return op_setitems(u, 0);  /* SETITEM */
	case 'u': return op_setitems(u, 1);  /* SETITEMS */
	case 'a': return op_appends(u, 0);   /* APPEND */
	case 'e': return op_appends(u, 1);   /* APPENDS */
	case 'b': { /* BUILD: the state of an OrderedDict (its _metadata) is dropped */
		pv *state = pop(u), *obj = state ? top(u) : NULL;
		if (!obj)
			return -1;
		return obj->type == PV_DICT ? 0 : err_set("BUILD of something that is not a dict");
	}
	case 'q': /* BINPUT */
	case 'h': /* BINGET */
		if (need(u, 1) < 0)
			return -1;
		u->p++;
		return op == 'q' ? memo_put(u, u->p[-1]) : memo_get(u, u->p[-1]);
	case 'r': /* LONG_BINPUT */
	case 'j': /* LONG_BINGET */
		if (need(u, 4) < 0)
			return -1;
		u->p += 4;
		return op == 'r' ? memo_put(u, le_bytes(u->p - 4, 4)) : memo_get(u, le_bytes(u->p - 4, 4));
	case 0x94: /* MEMOIZE */
		return memo_put(u, u->memo_count);
	case '0': /* POP */
		return pop(u) ? 0 : -1;
	case '2': { /* POP_MARK */
		long m = find_mark(u);
		if (m < 0)
			return -1;
		u->sp = (size_t)m;
		return 0;
	}
	default:
		return err_set("unsupported pickle opcode 0x%02x (%s)", op, opcode_name(op));
	}
}

/* ---------------------------------------------------------------- state dict -> record */

/* Element si of the storage into element di of out (int64 narrowed to i32). */
static int copy_elem(void *out, int64_t di, const pv *st, int64_t si)
{
	const unsigned char *src = st->bytes + (size_t)si * (size_t)st->src_size;
	if (st->src_size == 8) {
		int64_t v = (int64_t)le_bytes(src, 8);
		if (v < INT32_MIN || v > INT32_MAX)
			return err_set("int64 value %lld does not fit in i32", (long long)v);
		int32_t w = (int32_t)v;
		memcpy((unsigned char *)out + (size_t)di * 4, &w, 4);
		return 0;
	}
	memcpy((unsigned char *)out + (size_t)di * (size_t)st->src_size, src, (size_t)st->src_size);
	return 0;
}

/* The tensor's elements in row-major order, whatever its strides. */
static int gather(tensor *out, const pv *t)
{
	int64_t numel = tensor_numel(out), idx[TENSOR_MAXDIM] = {0};
	for (int64_t i = 0; i < numel; i++) {
		int64_t si = t->offset;
		for (int d = 0; d < t->ndim; d++)
			si += idx[d] * t->stride[d];
		if (copy_elem(out->data, i, t->storage, si) < 0)
			return -1;
		for (int d = t->ndim - 1; d >= 0; d--) {
			if (++idx[d] < t->shape[d])
				break;
			idx[d] = 0;
		}
	}
	return 0;
}

static const pv *dict_get(const pv *d, const char *key)
{
	for (size_t i = 0; i + 1 < d->n; i += 2)
		if (d->items[i]->type == PV_STR && !strcmp(d->items[i]->s, key))
			return d->items[i + 1];
	return NULL;
}

static record *dict_to_record(const pv *d)
{
	if (d->type != PV_DICT) {
		err_set("data.pkl holds no dict (not a state dict)");
		return NULL;
	}
	const pv *sd = dict_get(d, "state_dict");
	if (sd && sd->type == PV_DICT)
		d = sd; /* an mmcv checkpoint */
	record *r = record_new("params");
	if (!r)
		return NULL;
	for (size_t i = 0; i + 1 < d->n; i += 2) {
		const pv *k = d->items[i], *v = d->items[i + 1];
		if (k->type != PV_STR || strlen(k->s) != k->slen) {
			err_set("state dict key %zu is not a string", i / 2);
			goto fail;
		}
		if (v->type != PV_TENSOR) {
			err_set("state dict '%s' is not a tensor", k->s);
			goto fail;
		}
		tensor *t = record_add(r, k->s, v->storage->dt, v->ndim, v->shape);
		if (!t || gather(t, v) < 0) {
			err_wrap("'%s'", k->s);
			goto fail;
		}
	}
	return r;
fail:
	record_free(r);
	return NULL;
}

static record *unpickle_members(const zip_members *z)
{
	const member *pkl = NULL;
	for (int i = 0; i < z->n && !pkl; i++) {
		size_t n = strlen(z->m[i].name);
		if (n >= 8 && !strcmp(z->m[i].name + n - 8, "data.pkl") && (n == 8 || z->m[i].name[n - 9] == '/'))
			pkl = &z->m[i];
	}
	if (!pkl) {
		err_set("no data.pkl in the archive (not a torch.save file)");
		return NULL;
	}
	unpickler u = {.start = pkl->data, .p = pkl->data, .end = pkl->data + pkl->len, .zip = z,
		       .prefix = pkl->name, .prefix_len = strlen(pkl->name) - 8};
	pv *result = NULL;
	int rc;
	while ((rc = step(&u, &result)) == 0)
		;
	record *r = NULL;
	if (rc < 0)
		err_wrap("data.pkl: offset %ld", (long)(u.p - u.start - 1));
	else
		r = dict_to_record(result);
	unpickler_free(&u);
	return r;
}

static record *read_archive(struct archive *a, int opened, const char *name)
{
	zip_members z = {0};
	record *r = NULL;
	if (opened != ARCHIVE_OK)
		err_set("not a readable zip (%s); torch.save writes zip files since torch 1.6: "
			"load an older file in torch and save it again",
			archive_error_string(a) ? archive_error_string(a) : "cannot open");
	else if (read_members(a, &z) == 0)
		r = unpickle_members(&z);
	if (!r)
		err_wrap("%s", name);
	members_free(&z);
	archive_read_free(a);
	return r;
}

static struct archive *new_zip_reader(void)
{
	struct archive *a = archive_read_new();
	if (!a) {
		err_set("out of memory");
		return NULL;
	}
	archive_read_support_format_zip(a);
	return a;
}

record *pth_read(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		err_set("%s: %s", path, strerror(errno));
		return NULL;
	}
	fclose(f);
	struct archive *a = new_zip_reader();
	return a ? read_archive(a, archive_read_open_filename(a, path, 1 << 16), path) : NULL;
}

record *pth_read_mem(const void *data, size_t len, const char *name)
{
	struct archive *a = new_zip_reader();
	return a ? read_archive(a, archive_read_open_memory(a, data, len), name) : NULL;
}

/* ---------------------------------------------------------------- mapping */

static int is_batches_tracked(const char *name)
{
	size_t n = strlen(name), k = strlen(".num_batches_tracked");
	return n >= k && !strcmp(name + n - k, ".num_batches_tracked");
}

/* name starts with one of drop's comma-separated prefixes */
static int dropped(const char *name, const char *drop)
{
	for (const char *d = drop; d && *d;) {
		size_t n = strcspn(d, ",");
		if (n && !strncmp(name, d, n))
			return 1;
		d += n + (d[n] == ',');
	}
	return 0;
}

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

/* A torchvision RegNet state dict: any key under trunk_output. */
static int is_torchvision_regnet(const record *sd)
{
	for (int i = 0; i < sd->ntensors; i++)
		if (!strncmp(sd->tensors[i].name, "trunk_output.", 13))
			return 1;
	return 0;
}

/* The params tensor state-dict tensor t goes to; NULL when skipped, *bad on error. */
static tensor *target_of(record *params, const tensor *t, const char *prefix, const char *drop, int regnet, int *bad)
{
	char key[TENSOR_NAMELEN + 32], name[2 * TENSOR_NAMELEN + 32], d1[128], d2[128];
	*bad = 0;
	if (dropped(t->name, drop) || is_batches_tracked(t->name))
		return NULL;
	snprintf(key, sizeof key, "%s", t->name);
	if (regnet && !regnet_name(t->name, key, sizeof key)) {
		*bad = err_set("key '%s': not a torchvision RegNet name (stem.*, trunk_output.blockS.blockS-I.*, fc.*)",
			       t->name);
		return NULL;
	}
	snprintf(name, sizeof name, "%s%s", prefix, key);
	tensor *p = record_find(params, name);
	if (!p) {
		*bad = err_set("key '%s': the model has no tensor '%s'", t->name, name);
		return NULL;
	}
	if (!tensor_same_shape(p, t) || !(p->dtype == t->dtype || (p->dtype == DT_F32 && (t->dtype == DT_F16 || t->dtype == DT_BF16)))) {
		*bad = err_set("key '%s': %s in the file, %s in the model ('%s')", t->name, tensor_describe(t, d1, sizeof d1),
			       tensor_describe(p, d2, sizeof d2), name);
		return NULL;
	}
	return p;
}

int pth_load_into(record *params, const record *sd, const char *prefix, const char *drop, pth_summary *sum)
{
	int bad, regnet = is_torchvision_regnet(sd);
	memset(sum, 0, sizeof *sum);
	sum->renamed = regnet ? "torchvision RegNet" : NULL;
	for (int i = 0; i < sd->ntensors; i++)
		if (!target_of(params, &sd->tensors[i], prefix, drop, regnet, &bad) && bad)
			return -1;
	char *set = calloc((size_t)params->ntensors + 1, 1);
	if (!set)
		return err_set("out of memory");
	for (int i = 0; i < sd->ntensors; i++) {
		const tensor *t = &sd->tensors[i];
		tensor *p = target_of(params, t, prefix, drop, regnet, &bad);
		if (!p) {
			sum->skipped++;
			continue;
		}
		int64_t n = tensor_numel(t);
		if (p->dtype == t->dtype)
			memcpy(p->data, t->data, tensor_nbytes(t));
		else
			for (int64_t j = 0; j < n; j++)
				((float *)p->data)[j] = (float)tensor_get(t, j);
		set[p - params->tensors] = 1;
		sum->loaded++;
	}
	for (int i = 0; i < params->ntensors; i++)
		sum->not_in_file += !set[i] && !is_batches_tracked(params->tensors[i].name);
	free(set);
	return 0;
}
