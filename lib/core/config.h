/* config: pipeline configs (the JSON files in configs/). This module reads the "data" section, which
 * says how images become network inputs (size, normalisation, training augmentations).
 * Keys left out keep their defaults (mmdet's SSD-512 settings); a key of the wrong type,
 * out of range or unknown is an error naming the file and the key path. */
#ifndef CONFIG_H
#define CONFIG_H

#include <cjson/cJSON.h>

#define CONFIG_MAX_IOUS 16

typedef struct data_config {
	int size;              /* network input is size x size */
	double mean[3], std[3]; /* in output channel order: RGB if to_rgb, else BGR */
	int to_rgb;            /* 0: the network input is BGR, as an mmdet model trained on cv2 images */
	/* train.photometric (photometric = 0 when the config says false) */
	int photometric;
	double brightness_delta, contrast_range[2], saturation_range[2], hue_delta;
	/* train.expand */
	int expand;
	double expand_ratio[2], expand_prob;
	/* train.min_iou_crop */
	int min_iou_crop;
	int n_min_ious;
	double min_ious[CONFIG_MAX_IOUS], min_crop_size;
	double flip_ratio;     /* train.flip_ratio */
} data_config;

void data_config_default(data_config *c);
/* Parses a config file; NULL (err "path: why") if unreadable or not a JSON object.
 * A config may name another as "base" (a path relative to its own directory), as
 * mmdet's _base_: the base is read first and this file's members are merged over it,
 * objects member by member, anything else (numbers, arrays, strings) replaced. */
cJSON *config_read(const char *path);
/* Applies a "data" section over *c; where names the section in messages ("file: data"). */
int data_config_apply(data_config *c, const cJSON *data, const char *where);
/* config_read + data_config_apply of its "data" member (absent: defaults stay). */
int data_config_load(data_config *c, const char *path);

/* ---- JSON helpers for config sections ----
 * Shared by every module that reads a section (data, model, train). where is the
 * section's path in messages ("file: model.neck"); errors read "where.key: expected ...".
 * A missing key is not an error: *out (and *count) keep their defaults and 0 is returned;
 * on error (-1, err set) they are left alone too. */

/* Every member of o must be one of known (NULL-terminated). */
int cfg_check_keys(const cJSON *o, const char *where, const char *const *known);
/* A finite number in [lo, hi]. */
int cfg_num(const cJSON *o, const char *key, const char *where, double lo, double hi, double *out);
/* An integer in [lo, hi]. */
int cfg_int(const cJSON *o, const char *key, const char *where, int lo, int hi, int *out);
/* true or false, as 1 or 0. */
int cfg_bool(const cJSON *o, const char *key, const char *where, int *out);
/* An array of min..max numbers in [lo, hi] (min == max: exactly that many); its length
 * goes to *count unless count is NULL. key NULL: o is the array and where names it. */
int cfg_nums(const cJSON *o, const char *key, const char *where, int min, int max, double lo, double hi,
	     double *out, int *count);
/* The same for integers in [lo, hi]. */
int cfg_ints(const cJSON *o, const char *key, const char *where, int min, int max, int lo, int hi, int *out,
	     int *count);
/* A sub-object: *out = it, else NULL (always set). With on, false is accepted too (a step
 * turned off): *on = 0 for false, 1 for an object, unchanged if absent. */
int cfg_object(const cJSON *o, const char *key, const char *where, int *on, const cJSON **out);

#endif
