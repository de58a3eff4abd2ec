#include "core/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/err.h"

static const struct {
	const char *name;
	size_t size;
} dtypes[DT_COUNT] = {
	[DT_F32] = {"f32", 4}, [DT_F16] = {"f16", 2}, [DT_BF16] = {"bf16", 2},
	[DT_I32] = {"i32", 4}, [DT_I16] = {"i16", 2}, [DT_I8] = {"i8", 1},
	[DT_U8] = {"u8", 1},
};

size_t dtype_size(enum dtype dt)
{
	return (unsigned)dt < DT_COUNT ? dtypes[dt].size : 0;
}

const char *dtype_name(enum dtype dt)
{
	return (unsigned)dt < DT_COUNT ? dtypes[dt].name : "?";
}

int dtype_parse(const char *s, enum dtype *out)
{
	for (int i = 0; i < DT_COUNT; i++)
		if (strcmp(s, dtypes[i].name) == 0) {
			*out = (enum dtype)i;
			return 0;
		}
	return err_set("unknown dtype '%s'", s);
}

int64_t tensor_numel(const tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

size_t tensor_nbytes(const tensor *t)
{
	return (size_t)tensor_numel(t) * dtype_size(t->dtype);
}

int tensor_same_shape(const tensor *a, const tensor *b)
{
	if (a->ndim != b->ndim)
		return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return 1;
}

char *tensor_describe(const tensor *t, char *buf, size_t len)
{
	size_t n = (size_t)snprintf(buf, len, "%s[", dtype_name(t->dtype));
	for (int i = 0; i < t->ndim && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
	if (n < len)
		snprintf(buf + n, len - n, "]");
	return buf;
}

double tensor_get(const tensor *t, int64_t i)
{
	const void *p = t->data;
	switch (t->dtype) {
	case DT_F32: return ((const float *)p)[i];
	case DT_F16: return f16_to_f32(((const uint16_t *)p)[i]);
	case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
	case DT_I32: return ((const int32_t *)p)[i];
	case DT_I16: return ((const int16_t *)p)[i];
	case DT_I8: return ((const int8_t *)p)[i];
	case DT_U8: return ((const uint8_t *)p)[i];
	default: return 0;
	}
}

/* Big buffers ask for transparent huge pages: the first touch of a 100 MB activation
 * arena then takes 50 page faults, not 25,000 (on this VM a 4 KiB fault costs more than
 * zeroing its page). */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN (2 * HUGE_PAGE)

void huge_pages_hint(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
	uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
	uintptr_t b = ((uintptr_t)p + bytes) & ~(uintptr_t)(HUGE_PAGE - 1);
	if (bytes >= HUGE_MIN && b > a)
		madvise((void *)a, b - a, MADV_HUGEPAGE); /* advice only: without it, small pages */
#else
	(void)p, (void)bytes;
#endif
}

void *aligned_zalloc(size_t bytes)
{
	size_t align = bytes >= HUGE_MIN ? HUGE_PAGE : TENSOR_ALIGN;
	size_t rounded = (bytes + align - 1) / align * align;
	if (rounded == 0)
		rounded = TENSOR_ALIGN;
	void *p = aligned_alloc(align, rounded);
	if (!p) {
		err_set("out of memory allocating %zu bytes", bytes);
		return NULL;
	}
	huge_pages_hint(p, rounded);
	memset(p, 0, rounded);
	return p;
}

static uint32_t float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bits_float(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0x1f) /* inf / nan */
		return bits_float(sign | 0x7f800000 | (man << 13));
	if (exp == 0) { /* zero / subnormal: man * 2^-24 */
		float v = (float)man * 5.9604644775390625e-8f;
		return sign ? -v : v;
	}
	return bits_float(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f)
{
	uint32_t u = float_bits(f), sign = (u >> 16) & 0x8000;
	uint32_t a = u & 0x7fffffff;
	if (a >= 0x7f800000) /* inf / nan */
		return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0));
	if (a >= 0x477ff000) /* rounds to >= 65520: overflow to inf */
		return (uint16_t)(sign | 0x7c00);
	if (a < 0x38800000) { /* below the smallest normal half: subnormal or zero */
		float v = bits_float(a) * 16777216.0f; /* units of 2^-24, exact */
		/* rint: round half to even in the default FP mode */
		return (uint16_t)(sign | (uint32_t)__builtin_rintf(v));
	}
	uint32_t r = a + 0xfff + ((a >> 13) & 1); /* round to nearest even on bit 13 */
	return (uint16_t)(sign | ((r - 0x38000000) >> 13));
}

float bf16_to_f32(uint16_t h)
{
	return bits_float((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
	uint32_t u = float_bits(f);
	if ((u & 0x7fffffff) > 0x7f800000) /* nan stays nan */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}
