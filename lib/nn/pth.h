/* pth: PyTorch state dicts as torch.save writes them, read without Python, and mapped
 * onto a model's backbone as mmcv's load_checkpoint(strict=False) does.
 *
 * Both of torch's formats: the zip (torch >= 1.6; read with libarchive), which holds
 * "<name>/data.pkl", a pickle of the object, and "<name>/data/<key>", the raw
 * little-endian storages; and the legacy one (torch before 1.6, or
 * _use_new_zipfile_serialization=False), five pickles one after the other (magic
 * number, protocol version 1001, sys_info, the object, the list of storage keys) and
 * then each storage's element count and raw bytes.
 *
 * Reading is a security boundary (docs/training.md, "Pretrained weights"). The pickles
 * go through core/pickle.h's machine, which calls nothing, never recurses and bounds
 * its MARKs (64 deep), memo (by the pickle's length) and the memory its values take
 * (256 MiB, or $PTH_MAX_VALUES bytes, + 64 bytes per byte of pickle). Of the callables
 * a pickle names this file accepts only torch._utils._rebuild_tensor_v2 (and
 * _rebuild_tensor of torch before 0.4), _rebuild_parameter, collections.OrderedDict,
 * and as persistent ids only torch.<T>Storage types; anything else is an error naming
 * the opcode or the callable. Every storage's size is checked against the bytes the
 * archive holds before anything is made of it, a zip's members may unpack to 4 times
 * the archive's size (+ 1 MiB) at most, and the tensors to twice the storages' bytes
 * (+ 1 MiB). Every read is bounds-checked: a corrupt file is an error, never a crash.
 *
 * Checkpoints that wrap a state dict ({"state_dict": ..., "meta": ...} of mmcv, mmdet
 * and mmcls; {"model": ...} of torchvision's reference scripts) give the wrapped one. */
#ifndef PTH_H
#define PTH_H

#include <stddef.h>

#include "core/stream.h"

/* The state dict as a "params" record: one tensor per key, in the dict's order, DDP's
 * "module." prefixes removed. Float, half and bfloat16 storages keep their dtype;
 * int64 ones (num_batches_tracked) become i32 (an error if a value does not fit);
 * double storages are refused. meta: "wrapper" (the checkpoint key the dict was under),
 * "module_prefix" (true: removed), "long_keys" (keys of 64 characters or more, left
 * out: no model tensor has such a name). */
record *pth_read(const char *path);
/* The same from a file already in memory (for tests); name is used in messages. */
record *pth_read_mem(const void *data, size_t len, const char *name);

typedef struct pth_summary {
	int loaded;            /* file tensors copied into the backbone */
	int skipped;           /* file tensors the model does not use (num_batches_tracked aside) */
	int missing;           /* backbone tensors the file did not set */
	const char *naming;    /* the file's naming, when not the model's ("torchvision RegNet"), or NULL */
	int rgb;               /* 1: the naming alone says torchvision's (trained on RGB input) */
	char how[160];         /* "its 'state_dict' dict, 'module.' removed, ..." or "" */
	char skipped_list[512]; /* grouped: "classifier.*, features.18.*" (file keys) */
	char missing_list[512]; /* grouped: "features.31.*, features.33.*" (without the prefix) */
} pth_summary;

/* Copies the state dict's tensors onto the backbone's params, as mmcv's
 * load_checkpoint(strict=False): file key K sets params tensor prefix + K
 * (torchvision's "features.3.conv.0.0.weight" -> "backbone.features.3.conv.0.0.weight"),
 * f16/bf16 converted to the params' f32. Before that: when some keys start with
 * "backbone." (an mmdet or mmcls checkpoint of a whole detector or classifier), only
 * those are used, without it; when every key starts with a digit (an SSD VGG's layer
 * list saved alone: vgg16_reducedfc.pth), "features." is put before them; a torchvision
 * RegNet (keys under "trunk_output.") has its names mapped to mmdet's RegNet's, the
 * model's ("trunk_output.block2.block2-0.f.b.0.weight" -> "layer2.0.conv2.weight",
 * docs/models.md). Keys the model has no tensor for (classifier.*, fc.*, features.18.*
 * ...) are skipped and listed in *sum; num_batches_tracked keys are ignored. A used key
 * of another shape (or an incompatible dtype) is an error naming the key and both
 * shapes, and so is a file of which no tensor fits; params change only if all fit. */
int pth_load_into(record *params, const record *state_dict, const char *prefix, pth_summary *sum);

/* "loaded N tensors into the backbone (how), skipped M unused: ...; missing K: ..." */
void pth_summary_line(const pth_summary *s, char *out, size_t n);

/* Reverses the input channels (RGB <-> BGR) of the first conv weight under prefix with
 * 3 input channels, so that weights trained on one order take the other; its name in
 * *name. -1 (err) without one. */
int pth_reverse_input_channels(record *params, const char *prefix, const char **name);

#endif
