/* pth: PyTorch state dicts as torch.save writes them (the zip format, torch >= 1.6),
 * read without Python, and mapped onto a model's params record.
 *
 * The zip (read with libarchive) holds "<name>/data.pkl", a pickle of the dict, and
 * "<name>/data/<key>", the raw little-endian storages. The pickle reader is a small
 * stack machine for what torch.save emits for a state dict (protocol 2; FRAME,
 * SHORT_BINUNICODE, MEMOIZE and STACK_GLOBAL of protocol 4 too): dicts, tuples, lists,
 * strings, ints, floats, bools, None, the memo, persistent ids ('storage',
 * torch.<T>Storage, key, location, numel) and the callables torch._utils._rebuild_tensor_v2, _rebuild_parameter and
 * collections.OrderedDict. Anything else is an error naming the opcode or the callable.
 * Every read is bounds-checked: a corrupt file is an error, never a crash.
 *
 * An mmcv checkpoint ({"state_dict": {...}, "meta": ...}) gives its "state_dict". */
#ifndef PTH_H
#define PTH_H

#include "stream.h"

/* The state dict as a "params" record: one tensor per key, in the dict's order.
 * Float, half and bfloat16 storages keep their dtype; int64 ones (num_batches_tracked)
 * become i32 (an error if a value does not fit); double storages are refused. */
record *pth_read(const char *path);
/* The same from a zip already in memory (for tests); name is used in messages. */
record *pth_read_mem(const void *data, size_t len, const char *name);

typedef struct pth_summary {
	int loaded;        /* tensors copied into the params */
	int skipped;       /* file tensors dropped (drop prefix, num_batches_tracked) */
	int not_in_file;   /* params tensors (not num_batches_tracked) the file did not set */
	const char *renamed; /* the naming mapped to the model's ("torchvision RegNet"), or NULL */
} pth_summary;

/* Copies each state-dict tensor "K" onto params tensor prefix + "K" (torchvision's
 * "features.3.conv.0.0.weight" -> "backbone.features.3.conv.0.0.weight"), converting
 * f16/bf16 to the params' f32. Keys starting with one of drop's comma-separated
 * prefixes (torchvision's classifiers: "classifier.,fc."; NULL: none)
 * and ".num_batches_tracked" keys are skipped. A key with no params tensor, or with a
 * different shape, is an error naming it; params are changed only if all keys fit.
 * A torchvision RegNet (keys under "trunk_output.") has its names mapped to mmdet's
 * RegNet's, the model's: "trunk_output.block2.block2-0.f.b.0.weight" -> prefix +
 * "layer2.0.conv2.weight" (docs/models.md). */
int pth_load_into(record *params, const record *state_dict, const char *prefix, const char *drop, pth_summary *sum);

#endif
