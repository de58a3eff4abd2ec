/* Unit tests of lib/core/pickle.c: the values it builds from hand-assembled pickles, the
 * hooks REDUCE and BINPERSID go to, and its limits (MARK depth, memo, value budget,
 * truncation, refused opcodes). torch's use of it: test_pth.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "core/pickle.h"

#define BASE ((size_t)1 << 20)

/* {"a": 1, "b": (2.5, "x"), "c": [None, True]}, protocol 2 */
static const unsigned char DICT[] = {
	0x80, 2, '}', 'q', 0, '(',
	'X', 1, 0, 0, 0, 'a', 'K', 1,
	'X', 1, 0, 0, 0, 'b', 'G', 0x40, 0x04, 0, 0, 0, 0, 0, 0, 'X', 1, 0, 0, 0, 'x', 0x86,
	'X', 1, 0, 0, 0, 'c', ']', '(', 'N', 0x88, 'e',
	'u', '.'};

/* Runs one pickle with no hooks; its value or NULL (err). *pk_out keeps the machine. */
static pickle_value *load(const unsigned char *p, size_t n, size_t base, pickle **pk_out)
{
	*pk_out = pickle_new(p, n, 0, base, "TEST_BUDGET", NULL);
	return *pk_out ? pickle_load(*pk_out, "test") : NULL;
}

static void test_values(void)
{
	pickle *pk;
	pickle_value *d = load(DICT, sizeof DICT, BASE, &pk);
	CHECK_MSG(d && d->type == PICKLE_DICT && d->n == 6, "%s", d ? "dict" : err_msg());
	if (d && d->type == PICKLE_DICT && d->n == 6) {
		const pickle_value *a = pickle_dict_get(d, "a"), *b = pickle_dict_get(d, "b"), *c = pickle_dict_get(d, "c");
		CHECK(a && a->type == PICKLE_INT && a->i == 1);
		CHECK(b && b->type == PICKLE_TUPLE && b->n == 2 && b->items[0]->type == PICKLE_FLOAT && b->items[0]->f == 2.5 &&
		      b->items[1]->type == PICKLE_STR && !strcmp(b->items[1]->s, "x"));
		CHECK(c && c->type == PICKLE_LIST && c->n == 2 && c->items[0]->type == PICKLE_NONE &&
		      c->items[1]->type == PICKLE_BOOL && c->items[1]->i == 1);
		CHECK(pickle_dict_get(d, "z") == NULL);
	}
	CHECK(pickle_offset(pk) == sizeof DICT);
	pickle_free(pk);
	pickle_free(NULL);

	/* two pickles one after the other, the second from where the first stopped; a machine
	 * may start past a header (offsets still count from the buffer's start) */
	unsigned char two[] = {'h', 'd', 'r', 0x80, 2, 'K', 7, '.', 0x80, 2, 'M', 0x34, 0x12, '.'};
	pk = pickle_new(two, sizeof two, 3, BASE, NULL, NULL);
	pickle_value *x = pk ? pickle_load(pk, "first") : NULL, *y = x ? pickle_load(pk, "second") : NULL;
	CHECK(x && x->type == PICKLE_INT && x->i == 7 && y && y->type == PICKLE_INT && y->i == 0x1234);
	CHECK(pk && pickle_offset(pk) == sizeof two);
	CHECK(pk && !pickle_load(pk, "third") && strstr(err_msg(), "third: offset 13: truncated pickle"));
	pickle_free(pk);
}

/* The hooks: a REDUCE of test.make(k) gives an object of kind 7 holding k; a persistent
 * id "p" gives one of kind 8. */
static pickle_value *make_reduce(pickle *pk, const pickle_value *fn, const pickle_value *args, void *ctx)
{
	++*(int *)ctx;
	if (strcmp(fn->s, "test.make") || args->n != 1 || args->items[0]->type != PICKLE_INT) {
		err_set("test hook refuses %s", fn->s);
		return NULL;
	}
	pickle_value *v = pickle_new_object(pk, 7, sizeof(int64_t));
	if (v)
		*(int64_t *)v->obj = args->items[0]->i;
	return v;
}

static pickle_value *make_persistent(pickle *pk, const pickle_value *pid, void *ctx)
{
	++*(int *)ctx;
	if (pid->type != PICKLE_STR || strcmp(pid->s, "p")) {
		err_set("test hook: unknown persistent id");
		return NULL;
	}
	return pickle_new_object(pk, 8, 0);
}

static void test_hooks(void)
{
	/* (test.make(5), persistent "p") */
	static const unsigned char p[] = {0x80, 2, 'c', 't', 'e', 's', 't', '\n', 'm', 'a', 'k', 'e', '\n', 'K', 5, 0x85, 'R',
					  'X', 1, 0, 0, 0, 'p', 'Q', 0x86, '.'};
	int calls = 0;
	pickle_hooks h = {.reduce = make_reduce, .persistent_load = make_persistent, .ctx = &calls};
	pickle *pk = pickle_new(p, sizeof p, 0, BASE, NULL, &h);
	pickle_value *t = pk ? pickle_load(pk, "hooks") : NULL;
	CHECK_MSG(t && t->type == PICKLE_TUPLE && t->n == 2, "%s", t ? "tuple" : err_msg());
	if (t && t->type == PICKLE_TUPLE && t->n == 2) {
		CHECK(t->items[0]->type == PICKLE_OBJECT && t->items[0]->kind == 7 && *(int64_t *)t->items[0]->obj == 5);
		CHECK(t->items[1]->type == PICKLE_OBJECT && t->items[1]->kind == 8);
	}
	CHECK(calls == 2);
	pickle_free(pk);

	/* a hook's refusal is the error, at the opcode's offset */
	unsigned char q[sizeof p];
	memcpy(q, p, sizeof p);
	q[8] = 'x'; /* test.xake */
	pk = pickle_new(q, sizeof q, 0, BASE, NULL, &h);
	CHECK(pk && !pickle_load(pk, "hooks") && strstr(err_msg(), "hooks: offset 16: test hook refuses test.xake"));
	pickle_free(pk);

	/* without hooks nothing is called: REDUCE and BINPERSID are errors */
	CHECK(!load(p, sizeof p, BASE, &pk) && strstr(err_msg(), "unsupported callable test.make"));
	pickle_free(pk);
	static const unsigned char pid[] = {0x80, 2, 'X', 1, 0, 0, 0, 'p', 'Q', '.'};
	CHECK(!load(pid, sizeof pid, BASE, &pk) && strstr(err_msg(), "unsupported persistent id"));
	pickle_free(pk);
	/* REDUCE needs a global and a tuple */
	static const unsigned char notglobal[] = {0x80, 2, 'K', 1, ')', 'R', '.'};
	CHECK(!load(notglobal, sizeof notglobal, BASE, &pk) && strstr(err_msg(), "not a global with a tuple"));
	pickle_free(pk);
}

static void test_limits(void)
{
	pickle *pk;
	/* 65 MARKs open at once */
	unsigned char marks[70];
	marks[0] = 0x80, marks[1] = 2;
	memset(marks + 2, '(', 65);
	marks[67] = '.';
	CHECK(!load(marks, 68, BASE, &pk) && strstr(err_msg(), "more than 64 MARKs deep"));
	pickle_free(pk);
	/* 64 are fine: closed by as many TUPLEs, then a 65th after one is closed */
	unsigned char ok[200];
	size_t n = 0;
	ok[n++] = 0x80, ok[n++] = 2;
	for (int i = 0; i < 64; i++)
		ok[n++] = '(';
	for (int i = 0; i < 64; i++)
		ok[n++] = 't';
	ok[n++] = '.';
	pickle_value *v = load(ok, n, BASE, &pk);
	CHECK_MSG(v && v->type == PICKLE_TUPLE, "%s", v ? "tuple" : err_msg());
	pickle_free(pk);

	/* a memo index beyond the bytes read: refused before anything is allocated */
	static const unsigned char memo[] = {0x80, 2, 'N', 'r', 0xff, 0xff, 0xff, 0x0f, '.'};
	CHECK(!load(memo, sizeof memo, BASE, &pk) && strstr(err_msg(), "pickle memo index 268435455 out of range"));
	pickle_free(pk);
	static const unsigned char get[] = {0x80, 2, 'h', 3, '.'};
	CHECK(!load(get, sizeof get, BASE, &pk) && strstr(err_msg(), "memo index 3 was never stored"));
	pickle_free(pk);

	/* the value budget: base + 64 per byte read; empty tuples cost more than that */
	size_t nb = 5000;
	unsigned char *bomb = malloc(nb + 3);
	bomb[0] = 0x80, bomb[1] = 2;
	memset(bomb + 2, ')', nb);
	bomb[nb + 2] = '.';
	CHECK(!load(bomb, nb + 3, 1000, &pk) && strstr(err_msg(), "(1000 + 64 per byte at most; see TEST_BUDGET)") &&
	      strstr(err_msg(), "a container or memo bomb?"));
	pickle_free(pk);
	/* the same pickle within a large budget: read whole, its value the last tuple */
	v = load(bomb, nb + 3, BASE, &pk);
	CHECK(v && v->type == PICKLE_TUPLE && v->n == 0);
	pickle_free(pk);
	free(bomb);

	/* every prefix of a good pickle is an error (truncated), never a crash */
	int all = 1;
	for (size_t k = 0; k < sizeof DICT; k++) {
		all &= load(DICT, k, BASE, &pk) == NULL;
		pickle_free(pk);
	}
	CHECK(all);

	/* opcodes that build objects are refused by name */
	static const unsigned char inst[] = {0x80, 2, '(', 'i', 'o', 's', '\n', 's', 'y', 's', '\n', '.'};
	CHECK(!load(inst, sizeof inst, BASE, &pk) && strstr(err_msg(), "unsupported pickle opcode 0x69 (INST)"));
	pickle_free(pk);
	static const unsigned char proto[] = {0x80, 6, 'N', '.'};
	CHECK(!load(proto, sizeof proto, BASE, &pk) && strstr(err_msg(), "pickle protocol 6"));
	pickle_free(pk);
}

int main(void)
{
	test_values();
	test_hooks();
	test_limits();
	return check_done("test_pickle");
}
