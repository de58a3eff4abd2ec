#include "core/pickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/err.h"

/* The limits of pickle.h's promise. */
#define STACK_MAX (1u << 22) /* stack entries */
#define DEPTH_MAX 64         /* MARKs open at once */
#define MEMO_MAX (1u << 22)  /* memo slots (and never beyond the pickle's bytes) */
#define VALUES_PER_BYTE 64   /* value budget: the caller's base + this per byte read */

struct pickle {
	const unsigned char *start, *p, *end, *pstart; /* pstart: the current pickle's first byte */
	pickle_hooks hooks;
	pickle_value *all;
	size_t used, base; /* bytes of values, stack and memo; the budget's base */
	const char *knob;  /* what sets base, for the message */
	pickle_value **stack;
	size_t sp, scap;
	size_t marks[DEPTH_MAX];
	int nmarks;
	pickle_value **memo;
	size_t nmemo, memo_count; /* slots, slots in use (MEMOIZE stores at memo_count) */
};

static pickle_value mark_value = {.type = PICKLE_MARK};

/* The budget grows with the bytes read (the whole buffer's, from data[0]), so a
 * pickle's values may take in proportion to its size, a bomb's cannot. */
int pickle_charge(pickle *u, size_t bytes)
{
	size_t read = (size_t)(u->p - u->start), limit = u->base + VALUES_PER_BYTE * read;
	u->used += bytes;
	if (u->used > limit)
		return err_set("pickle: its values take more than %zu bytes after %zu bytes of it (%zu + %d per byte "
			       "at most%s%s): a container or memo bomb?",
			       limit, read, u->base, VALUES_PER_BYTE, u->knob ? "; see " : "", u->knob ? u->knob : "");
	return 0;
}

pickle_value *pickle_new_value(pickle *u, pickle_type t)
{
	if (pickle_charge(u, sizeof(pickle_value)) < 0)
		return NULL;
	pickle_value *v = calloc(1, sizeof *v);
	if (!v) {
		err_set("out of memory");
		return NULL;
	}
	v->type = t;
	v->next = u->all;
	u->all = v;
	return v;
}

static int add_item(pickle *u, pickle_value *c, pickle_value *x)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 8;
		if (pickle_charge(u, (cap - c->cap) * sizeof(pickle_value *)) < 0)
			return -1;
		pickle_value **p = realloc(c->items, cap * sizeof *p);
		if (!p)
			return err_set("out of memory");
		c->items = p;
		c->cap = cap;
	}
	c->items[c->n++] = x;
	return 0;
}

static int push(pickle *u, pickle_value *v)
{
	if (!v)
		return -1;
	if (u->sp == u->scap) {
		if (u->scap >= STACK_MAX)
			return err_set("pickle stack deeper than %u", STACK_MAX);
		size_t cap = u->scap ? 2 * u->scap : 64;
		if (pickle_charge(u, (cap - u->scap) * sizeof(pickle_value *)) < 0)
			return -1;
		pickle_value **s = realloc(u->stack, cap * sizeof *s);
		if (!s)
			return err_set("out of memory");
		u->stack = s;
		u->scap = cap;
	}
	u->stack[u->sp++] = v;
	return 0;
}

static int push_mark(pickle *u)
{
	if (u->nmarks == DEPTH_MAX)
		return err_set("pickle nests more than %d MARKs deep", DEPTH_MAX);
	u->marks[u->nmarks++] = u->sp;
	return push(u, &mark_value);
}

/* Pops one value (not a mark); NULL (err) on an empty stack. */
static pickle_value *pop(pickle *u)
{
	if (u->sp == 0 || u->stack[u->sp - 1]->type == PICKLE_MARK) {
		err_set("pickle stack underflow");
		return NULL;
	}
	return u->stack[--u->sp];
}

static pickle_value *top(pickle *u)
{
	if (u->sp == 0 || u->stack[u->sp - 1]->type == PICKLE_MARK) {
		err_set("pickle stack underflow");
		return NULL;
	}
	return u->stack[u->sp - 1];
}

/* The stack index of the topmost mark; -1 (err) without one. */
static long find_mark(pickle *u)
{
	if (!u->nmarks)
		return err_set("pickle: no MARK on the stack");
	return (long)u->marks[u->nmarks - 1];
}

static void drop_to_mark(pickle *u, long m)
{
	u->sp = (size_t)m;
	u->nmarks--;
}

/* Moves the values above the topmost mark into c (a tuple, list or dict) and drops
 * the mark. */
static int collect_to_mark(pickle *u, pickle_value *c)
{
	long m = find_mark(u);
	if (m < 0)
		return -1;
	for (size_t i = (size_t)m + 1; i < u->sp; i++)
		if (add_item(u, c, u->stack[i]) < 0)
			return -1;
	drop_to_mark(u, m);
	return 0;
}

static int need(pickle *u, size_t n)
{
	return (size_t)(u->end - u->p) < n ? err_set("truncated pickle") : 0;
}

static pickle_value *new_int(pickle *u, int64_t i)
{
	pickle_value *v = pickle_new_value(u, PICKLE_INT);
	if (v)
		v->i = i;
	return v;
}

static pickle_value *new_str(pickle *u, const unsigned char *s, size_t len, pickle_type t)
{
	pickle_value *v = pickle_new_value(u, t);
	if (!v || pickle_charge(u, len + 1) < 0)
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

/* BINUNICODE and the byte strings of Python 2 and 3 (BINSTRING, BINBYTES ...): all are
 * strings here (keys of a state dict pickled by Python 2 are byte strings). */
static int op_string(pickle *u, int lenbytes)
{
	if (need(u, (size_t)lenbytes) < 0)
		return -1;
	uint64_t len = load_le(u->p, lenbytes);
	u->p += lenbytes;
	if (len > (uint64_t)(u->end - u->p))
		return err_set("truncated pickle (string of %llu bytes)", (unsigned long long)len);
	pickle_value *v = new_str(u, u->p, (size_t)len, PICKLE_STR);
	u->p += len;
	return push(u, v);
}

/* GLOBAL: "module\nname\n" -> "module.name" */
static int op_global(pickle *u)
{
	const unsigned char *nl1 = memchr(u->p, '\n', (size_t)(u->end - u->p));
	const unsigned char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(u->end - nl1 - 1)) : NULL;
	if (!nl2)
		return err_set("truncated pickle (GLOBAL)");
	pickle_value *v = new_str(u, u->p, (size_t)(nl2 - u->p), PICKLE_GLOBAL);
	if (!v)
		return -1;
	v->s[nl1 - u->p] = '.';
	u->p = nl2 + 1;
	return push(u, v);
}

static int memo_put(pickle *u, uint64_t idx)
{
	pickle_value *v = top(u);
	if (!v)
		return -1;
	/* a pickle stores at most one memo slot per byte: a larger index is a memo bomb */
	size_t read = (size_t)(u->p - u->pstart);
	if (idx >= MEMO_MAX || idx > read)
		return err_set("pickle memo index %llu out of range (at most %zu after %zu bytes)", (unsigned long long)idx,
			       read < MEMO_MAX ? read : (size_t)MEMO_MAX, read);
	if (idx >= u->nmemo) {
		size_t n = u->nmemo ? u->nmemo : 64;
		while (n <= idx)
			n *= 2;
		if (pickle_charge(u, (n - u->nmemo) * sizeof(pickle_value *)) < 0)
			return -1;
		pickle_value **m = realloc(u->memo, n * sizeof *m);
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

static int memo_get(pickle *u, uint64_t idx)
{
	if (idx >= u->nmemo || !u->memo[idx])
		return err_set("pickle memo index %llu was never stored", (unsigned long long)idx);
	return push(u, u->memo[idx]);
}

/* REDUCE: a global called with a tuple; what it makes is the hook's to decide. */
static int op_reduce(pickle *u)
{
	pickle_value *args = pop(u), *fn = args ? pop(u) : NULL;
	if (!fn)
		return -1;
	if (fn->type != PICKLE_GLOBAL || args->type != PICKLE_TUPLE)
		return err_set("REDUCE of something that is not a global with a tuple");
	if (!u->hooks.reduce)
		return err_set("unsupported callable %s", fn->s);
	return push(u, u->hooks.reduce(u, fn, args, u->hooks.ctx));
}

/* BINPERSID: an object the pickle refers to by an id; the hook's to resolve. */
static int op_persid(pickle *u)
{
	pickle_value *pid = pop(u);
	if (!pid)
		return -1;
	if (!u->hooks.persistent_load)
		return err_set("unsupported persistent id");
	return push(u, u->hooks.persistent_load(u, pid, u->hooks.ctx));
}

static int op_setitems(pickle *u, int many)
{
	if (!many) {
		pickle_value *v = pop(u), *k = v ? pop(u) : NULL, *d = k ? top(u) : NULL;
		if (!d)
			return -1;
		if (d->type != PICKLE_DICT)
			return err_set("SETITEM on something that is not a dict");
		return add_item(u, d, k) < 0 || add_item(u, d, v) < 0 ? -1 : 0;
	}
	long m = find_mark(u);
	if (m < 0)
		return -1;
	if (m == 0 || u->stack[m - 1]->type != PICKLE_DICT || (u->sp - (size_t)m - 1) % 2)
		return err_set("SETITEMS without a dict and key, value pairs");
	pickle_value *d = u->stack[m - 1];
	for (size_t i = (size_t)m + 1; i < u->sp; i++)
		if (add_item(u, d, u->stack[i]) < 0)
			return -1;
	drop_to_mark(u, m);
	return 0;
}

static int op_appends(pickle *u, int many)
{
	if (!many) {
		pickle_value *v = pop(u), *l = v ? top(u) : NULL;
		if (!l)
			return -1;
		return l->type != PICKLE_LIST ? err_set("APPEND to something that is not a list") : add_item(u, l, v);
	}
	long m = find_mark(u);
	if (m < 0)
		return -1;
	if (m == 0 || u->stack[m - 1]->type != PICKLE_LIST)
		return err_set("APPENDS without a list");
	pickle_value *l = u->stack[m - 1];
	for (size_t i = (size_t)m + 1; i < u->sp; i++)
		if (add_item(u, l, u->stack[i]) < 0)
			return -1;
	drop_to_mark(u, m);
	return 0;
}

static int op_tuple(pickle *u, int n)
{
	pickle_value *t = pickle_new_value(u, PICKLE_TUPLE);
	if (!t)
		return -1;
	if (n < 0)
		return collect_to_mark(u, t) < 0 ? -1 : push(u, t);
	if (u->sp < (size_t)n || (u->nmarks && u->marks[u->nmarks - 1] >= u->sp - (size_t)n))
		return err_set("pickle stack underflow");
	for (size_t i = u->sp - (size_t)n; i < u->sp; i++)
		if (add_item(u, t, u->stack[i]) < 0)
			return -1;
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
	case 0x81: return "NEWOBJ";
	case 0x82: return "EXT1";
	case 0x83: return "EXT2";
	case 0x84: return "EXT4";
	case 0x8b: return "LONG4";
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
static int step(pickle *u, pickle_value **result)
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
	case '(': return push_mark(u);
	case '}': return push(u, pickle_new_value(u, PICKLE_DICT));
	case ')': return push(u, pickle_new_value(u, PICKLE_TUPLE));
	case ']': return push(u, pickle_new_value(u, PICKLE_LIST));
	case 'N': return push(u, pickle_new_value(u, PICKLE_NONE));
	case 0x88: /* NEWTRUE */
	case 0x89: { /* NEWFALSE */
		pickle_value *v = pickle_new_value(u, PICKLE_BOOL);
		if (v)
			v->i = op == 0x88;
		return push(u, v);
	}
	case 'J': /* BININT */
		if (need(u, 4) < 0)
			return -1;
		u->p += 4;
		return push(u, new_int(u, (int32_t)(uint32_t)load_le(u->p - 4, 4)));
	case 'K': /* BININT1 */
	case 'M': { /* BININT2 */
		int n = op == 'K' ? 1 : 2;
		if (need(u, (size_t)n) < 0)
			return -1;
		u->p += n;
		return push(u, new_int(u, (int64_t)load_le(u->p - n, n)));
	}
	case 0x8a: { /* LONG1: n bytes, little-endian two's complement */
		if (need(u, 1) < 0)
			return -1;
		int n = *u->p++;
		if (n > 8)
			return err_set("pickle integer of %d bytes too large", n);
		if (need(u, (size_t)n) < 0)
			return -1;
		uint64_t v = load_le(u->p, n);
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
		pickle_value *v = pickle_new_value(u, PICKLE_FLOAT);
		if (v)
			memcpy(&v->f, &bits, sizeof v->f);
		return push(u, v);
	}
	case 'X':  /* BINUNICODE */
	case 'T':  /* BINSTRING (Python 2) */
	case 'B':  /* BINBYTES */
		return op_string(u, 4);
	case 0x8c: /* SHORT_BINUNICODE */
	case 'U':  /* SHORT_BINSTRING (Python 2) */
	case 'C':  /* SHORT_BINBYTES */
		return op_string(u, 1);
	case 0x8d: /* BINUNICODE8 */
	case 0x8e: /* BINBYTES8 */
		return op_string(u, 8);
	case 'c': return op_global(u);       /* GLOBAL */
	case 0x93: { /* STACK_GLOBAL: module and name strings from the stack */
		pickle_value *name = pop(u), *mod = name ? pop(u) : NULL;
		if (!mod)
			return -1;
		if (mod->type != PICKLE_STR || name->type != PICKLE_STR)
			return err_set("STACK_GLOBAL of non-strings");
		pickle_value *g = pickle_new_value(u, PICKLE_GLOBAL);
		if (!g || pickle_charge(u, mod->slen + name->slen + 2) < 0)
			return -1;
		if (!(g->s = malloc(mod->slen + name->slen + 2)))
			return err_set("out of memory");
		g->slen = (size_t)sprintf(g->s, "%s.%s", mod->s, name->s);
		return push(u, g);
	}
	case 't': return op_tuple(u, -1);    /* TUPLE */
	case 0x85: return op_tuple(u, 1);    /* TUPLE1 */
	case 0x86: return op_tuple(u, 2);    /* TUPLE2 */
	case 0x87: return op_tuple(u, 3);    /* TUPLE3 */
	case 'l': { /* LIST */
		pickle_value *l = pickle_new_value(u, PICKLE_LIST);
		return !l || collect_to_mark(u, l) < 0 ? -1 : push(u, l);
	}
	case 'd': { /* DICT */
		pickle_value *d = pickle_new_value(u, PICKLE_DICT);
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
		pickle_value *state = pop(u), *obj = state ? top(u) : NULL;
		if (!obj)
			return -1;
		return obj->type == PICKLE_DICT ? 0 : err_set("BUILD of something that is not a dict");
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
		return op == 'r' ? memo_put(u, load_le(u->p - 4, 4)) : memo_get(u, load_le(u->p - 4, 4));
	case 0x94: /* MEMOIZE */
		return memo_put(u, u->memo_count);
	case '0': /* POP */
		return pop(u) ? 0 : -1;
	case '2': { /* POP_MARK */
		long m = find_mark(u);
		if (m < 0)
			return -1;
		drop_to_mark(u, m);
		return 0;
	}
	default:
		return err_set("unsupported pickle opcode 0x%02x (%s)", op, opcode_name(op));
	}
}

pickle_value *pickle_load(pickle *u, const char *what)
{
	u->sp = 0;
	u->nmarks = 0;
	u->memo_count = 0;
	if (u->memo)
		memset(u->memo, 0, u->nmemo * sizeof *u->memo);
	u->pstart = u->p;
	pickle_value *result = NULL;
	int rc;
	while ((rc = step(u, &result)) == 0)
		;
	if (rc < 0) {
		err_wrap("%s: offset %ld", what, (long)(u->p - u->start - 1));
		return NULL;
	}
	return result;
}

pickle *pickle_new(const unsigned char *data, size_t len, size_t at, size_t values_base, const char *budget_knob,
		   const pickle_hooks *hooks)
{
	pickle *u = calloc(1, sizeof *u);
	if (!u) {
		err_set("out of memory");
		return NULL;
	}
	u->start = data;
	u->p = data + (at < len ? at : len);
	u->end = data + len;
	u->base = values_base;
	u->knob = budget_knob;
	if (hooks)
		u->hooks = *hooks;
	return u;
}

size_t pickle_offset(const pickle *u)
{
	return (size_t)(u->p - u->start);
}

void pickle_free(pickle *u)
{
	if (!u)
		return;
	for (pickle_value *v = u->all, *next; v; v = next) {
		next = v->next;
		free(v->s);
		free(v->items);
		free(v->obj);
		free(v);
	}
	free(u->stack);
	free(u->memo);
	free(u);
}

const pickle_value *pickle_dict_get(const pickle_value *d, const char *key)
{
	for (size_t i = 0; i + 1 < d->n; i += 2)
		if (d->items[i]->type == PICKLE_STR && !strcmp(d->items[i]->s, key))
			return d->items[i + 1];
	return NULL;
}

pickle_value *pickle_new_object(pickle *u, int kind, size_t size)
{
	pickle_value *v = pickle_new_value(u, PICKLE_OBJECT);
	if (!v || pickle_charge(u, size) < 0)
		return NULL;
	if (!(v->obj = calloc(1, size ? size : 1))) {
		err_set("out of memory");
		return NULL;
	}
	v->kind = kind;
	return v;
}
