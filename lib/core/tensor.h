/* tensor: a named, typed, shaped block of memory, as records carry them.
 * Data is little-endian, row-major and 64-byte aligned. A tensor either owns its
 * data (built by a tool) or points into the buffer of the record it was read with. */
#ifndef TENSOR_H
#define TENSOR_H

#include <stddef.h>
#include <stdint.h>

enum dtype { DT_F32, DT_F16, DT_BF16, DT_I32, DT_I16, DT_I8, DT_U8, DT_COUNT };

#define TENSOR_MAXDIM 8
#define TENSOR_NAMELEN 64
#define TENSOR_ALIGN 64

typedef struct tensor {
	char name[TENSOR_NAMELEN];
	enum dtype dtype;
	int ndim;
	int64_t shape[TENSOR_MAXDIM];
	void *data;
	int owned; /* data was allocated for this tensor and is freed with it */
} tensor;

size_t dtype_size(enum dtype dt);
const char *dtype_name(enum dtype dt);
/* Returns 0 and sets *out, or -1 (err) for an unknown name. */
int dtype_parse(const char *s, enum dtype *out);

int64_t tensor_numel(const tensor *t);
size_t tensor_nbytes(const tensor *t);
/* 1 if a and b have the same rank and dimensions (dtypes aside). */
int tensor_same_shape(const tensor *a, const tensor *b);
/* "f32[2,3,4]" into buf; returns buf. */
char *tensor_describe(const tensor *t, char *buf, size_t len);
/* Element i (flat index) of any dtype, as a double. */
double tensor_get(const tensor *t, int64_t i);

/* 64-byte aligned allocation, zeroed; NULL (err set) on failure. Free with free(). */
void *aligned_zalloc(size_t bytes);
/* Asks for transparent huge pages over the 2 MiB-aligned part of a buffer of 4 MiB or
 * more (a hint: nothing changes where the kernel declines). */
void huge_pages_hint(void *p, size_t bytes);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);   /* round to nearest even, as numpy/torch */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  /* round to nearest even, as torch */

#endif
