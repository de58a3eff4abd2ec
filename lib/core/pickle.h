/* pickle: a pickle machine that calls nothing, for reading what Python wrote without
 * trusting it (torch.save's state dicts: nn/pth.c).
 *
 * It knows the opcodes of protocols 2 to 5 for dicts, tuples, lists, strings (str and
 * bytes alike), ints, floats, bools, None, the memo and globals, which stay names
 * ("module.name"): nothing a pickle names is looked up or called. REDUCE (a global
 * called with a tuple) and BINPERSID (a persistent id) go to the caller's hooks, which
 * make a value of their own (PICKLE_OBJECT) or refuse with an error; without a hook
 * they are errors, and so is every other opcode (INST, OBJ, NEWOBJ, EXT ...), named.
 *
 * It is a security boundary: it never recurses; MARKs nest at most 64 deep; the stack
 * holds at most 2^22 entries; a memo index is below 2^22 and never beyond the bytes read
 * of its pickle; the memory its values take (with what the hooks charge) is at most the
 * caller's base + 64 bytes per byte read. Every read is bounds-checked: a corrupt pickle
 * is an error naming its offset, never a crash. */
#ifndef PICKLE_H
#define PICKLE_H

#include <stddef.h>
#include <stdint.h>

typedef enum pickle_type {
	PICKLE_NONE, PICKLE_BOOL, PICKLE_INT, PICKLE_FLOAT, PICKLE_STR, PICKLE_TUPLE, PICKLE_LIST, PICKLE_DICT,
	PICKLE_GLOBAL, PICKLE_OBJECT,
	PICKLE_MARK /* the stack's MARK: never a value the caller sees */
} pickle_type;

typedef struct pickle_value pickle_value;
struct pickle_value {
	pickle_type type;
	int64_t i;              /* INT; BOOL 0 or 1 */
	double f;               /* FLOAT */
	char *s;                /* STR, GLOBAL "module.name"; NUL-terminated (a STR may hold NULs) */
	size_t slen;
	pickle_value **items;   /* TUPLE, LIST; DICT as key, value, key, value ... */
	size_t n, cap;
	int kind;               /* OBJECT: the hooks' kind of object */
	void *obj;              /* OBJECT: its payload (pickle_new_object) */
	pickle_value *next;     /* every value the machine made, for freeing */
};

typedef struct pickle pickle;

typedef struct pickle_hooks {
	/* REDUCE of the global fn with the tuple args: the value it stands for; NULL (err)
	 * refuses it. */
	pickle_value *(*reduce)(pickle *pk, const pickle_value *fn, const pickle_value *args, void *ctx);
	/* BINPERSID: the value the persistent id pid stands for; NULL (err) refuses it. */
	pickle_value *(*persistent_load)(pickle *pk, const pickle_value *pid, void *ctx);
	void *ctx;
} pickle_hooks;

/* A machine over data[0, len) that starts reading at offset `at` (offsets in messages
 * count from data). values_base: the budget's base in bytes; budget_knob: what sets it,
 * named when the budget is exceeded (or NULL). hooks may be NULL. NULL (err). */
pickle *pickle_new(const unsigned char *data, size_t len, size_t at, size_t values_base, const char *budget_knob,
		   const pickle_hooks *hooks);
/* Runs one pickle from the current offset to its STOP, with a fresh stack and memo
 * (each pickle.dump has its own): its value, which stays until pickle_free, like every
 * value before it. NULL (err "what: offset N: why"). */
pickle_value *pickle_load(pickle *pk, const char *what);
/* The offset reading has reached: where the next pickle, or what follows the last, starts. */
size_t pickle_offset(const pickle *pk);
void pickle_free(pickle *pk);

/* The value of key (a STR) in the dict d, or NULL. */
const pickle_value *pickle_dict_get(const pickle_value *d, const char *key);

/* For hooks: a new value of type t (its fields zero), charged to the budget. NULL (err). */
pickle_value *pickle_new_value(pickle *pk, pickle_type t);
/* For hooks: a new PICKLE_OBJECT of this kind with a zeroed payload of size bytes, both
 * charged to the budget and freed with the machine. NULL (err). */
pickle_value *pickle_new_object(pickle *pk, int kind, size_t size);
/* For hooks: counts bytes the hook keeps for this pickle against the budget; -1 (err)
 * once they exceed it. */
int pickle_charge(pickle *pk, size_t bytes);

#endif
