/* The stream library: round trips of every dtype, pass-through, limits, and a stream
 * truncated at every byte offset and with bytes flipped everywhere: each read either
 * succeeds or fails with a message naming the record, never crashes or hangs. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "core/stream.h"

/* Writes records through an in-memory FILE; returns the bytes (caller frees). */
static unsigned char *encode(record **recs, int n, int level, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	stream_writer *w = stream_writer_new(f, "mem", level);
	for (int i = 0; i < n; i++)
		CHECK(stream_write(w, recs[i]) == 0);
	CHECK(stream_close_write(w) == 0);
	fclose(f);
	return (unsigned char *)buf;
}

/* Kinds decode() decodes in full (stream_decode_only); NULL: all. */
static const char *const *decode_kinds;

/* Reads all records from bytes; returns the count, or -1 - count on an error. */
static int decode(const unsigned char *p, size_t len, record **out, int max)
{
	FILE *f = fmemopen((void *)p, len ? len : 1, "rb");
	if (len == 0) { /* fmemopen refuses size 0: read past the one byte */
		fgetc(f);
	}
	stream_reader *s = stream_reader_new(f, "mem");
	stream_decode_only(s, decode_kinds);
	int n = 0, rc;
	record *r;
	while ((rc = stream_read(s, &r)) > 0) {
		if (out && n < max)
			out[n] = r;
		else
			record_free(r);
		n++;
	}
	stream_close_read(s);
	fclose(f);
	return rc < 0 ? -1 - n : n;
}

static record *sample(int k)
{
	record *r = record_new(k % 2 ? "image" : "params");
	cJSON_AddNumberToObject(r->meta, "k", k);
	cJSON_AddStringToObject(r->meta, "id", "BloodImage_00001");
	int64_t s2[2] = {3, 5}, s1[1] = {7}, s0[1] = {0};
	tensor *t = record_add(r, "w", DT_F32, 2, s2);
	for (int i = 0; i < 15; i++)
		((float *)t->data)[i] = (float)(i * k) - 0.5f;
	t = record_add(r, "h", DT_F16, 1, s1);
	for (int i = 0; i < 7; i++)
		((uint16_t *)t->data)[i] = f32_to_f16((float)i / 3);
	t = record_add(r, "bh", DT_BF16, 1, s1);
	t = record_add(r, "i", DT_I32, 1, s1);
	for (int i = 0; i < 7; i++)
		((int32_t *)t->data)[i] = -i * 100000 * k;
	record_add(r, "s", DT_I16, 1, s1);
	record_add(r, "b", DT_I8, 1, s1);
	record_add(r, "u", DT_U8, 1, s1);
	record_add(r, "empty", DT_F32, 1, s0);
	return r;
}

static void test_roundtrip(void)
{
	record *in[3] = {sample(1), sample(2), record_new("end")};
	size_t len;
	unsigned char *bytes = encode(in, 3, 1, &len);
	record *out[3] = {0};
	CHECK(decode(bytes, len, out, 3) == 3);
	for (int k = 0; k < 3; k++) {
		CHECK(strcmp(out[k]->kind, in[k]->kind) == 0);
		CHECK(out[k]->ntensors == in[k]->ntensors);
		for (int i = 0; i < in[k]->ntensors && i < out[k]->ntensors; i++) {
			tensor *a = &in[k]->tensors[i], *b = &out[k]->tensors[i];
			CHECK(strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim);
			CHECK(((uintptr_t)b->data & 63) == 0);
			CHECK(memcmp(a->data, b->data, tensor_nbytes(a)) == 0);
		}
		char *ma = cJSON_PrintUnformatted(in[k]->meta), *mb = cJSON_PrintUnformatted(out[k]->meta);
		CHECK(strcmp(ma, mb) == 0);
		cJSON_free(ma);
		cJSON_free(mb);
	}
	CHECK(meta_num(out[1], "k", 0) == 2);
	CHECK(strcmp(meta_str(out[0], "id", ""), "BloodImage_00001") == 0);
	CHECK(record_expect(out[0], "w", DT_F32, 2) != NULL);
	CHECK(record_expect(out[0], "w", DT_I32, 2) == NULL && strstr(err_msg(), "'w'"));
	CHECK(record_expect(out[0], "nope", DT_F32, 2) == NULL);

	/* pass-through writes the identical frame; a fresh encode of a read record equals it too */
	char *buf = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&buf, &blen);
	stream_writer *w = stream_writer_new(f, "mem", 1);
	for (int k = 0; k < 3; k++)
		CHECK(stream_pass(w, out[k]) == 0);
	stream_close_write(w);
	fclose(f);
	CHECK(blen == len && memcmp(buf, bytes, len) == 0);
	free(buf);
	/* a record encoded ahead (as worker threads do) passes as the same bytes */
	record *fresh = sample(1);
	CHECK(record_encode(fresh, 1) == 0 && fresh->frame != NULL);
	size_t one_len;
	unsigned char *ahead = encode(&fresh, 1, 1, &one_len);
	CHECK(fresh->frame_len == one_len && memcmp(fresh->frame, ahead, one_len) == 0);
	free(ahead);
	record_free(fresh);
	/* a record changed after reading is re-encoded, not passed stale */
	int64_t one[1] = {1};
	record_add(out[0], "extra", DT_U8, 1, one);
	CHECK(out[0]->frame == NULL);

	/* concatenated streams are one stream */
	unsigned char *two = malloc(2 * len);
	memcpy(two, bytes, len);
	memcpy(two + len, bytes, len);
	CHECK(decode(two, 2 * len, NULL, 0) == 6);
	free(two);
	for (int k = 0; k < 3; k++) {
		record_free(in[k]);
		record_free(out[k]);
	}
	free(bytes);
	CHECK(decode((const unsigned char *)"", 0, NULL, 0) == 0);
}

static void test_levels(void)
{
	record *r = record_new("x");
	int64_t s[1] = {100000};
	tensor *t = record_add(r, "z", DT_F32, 1, s); /* zeros compress well */
	(void)t;
	size_t fast, slow;
	unsigned char *a = encode(&r, 1, -5, &fast), *b = encode(&r, 1, 19, &slow);
	CHECK(decode(a, fast, NULL, 0) == 1 && decode(b, slow, NULL, 0) == 1);
	CHECK(slow <= fast);
	free(a);
	free(b);
	record_free(r);
}

static void test_limits_and_names(void)
{
	record *r = sample(3);
	size_t len;
	unsigned char *bytes = encode(&r, 1, 1, &len);
	FILE *f = fmemopen(bytes, len, "rb");
	stream_reader *s = stream_reader_new(f, "big.tns");
	stream_set_limit(s, 64);
	record *out;
	CHECK(stream_read(s, &out) == -1);
	CHECK_MSG(strstr(err_msg(), "big.tns: record 1: oversized record") != NULL, "%s", err_msg());
	stream_close_read(s);
	fclose(f);
	free(bytes);
	record_free(r);

	r = record_new("x");
	int64_t s1[1] = {1};
	CHECK(record_add(r, "", DT_U8, 1, s1) == NULL);
	CHECK(record_add(r, "a", DT_U8, 1, s1) != NULL);
	CHECK(record_add(r, "a", DT_U8, 1, s1) == NULL && strstr(err_msg(), "duplicate"));
	int64_t neg[1] = {-1};
	CHECK(record_add(r, "n", DT_U8, 1, neg) == NULL);
	record_free(r);
	record_free(NULL);

	/* not a stream at all */
	const char *junk = "hello world, not zstd";
	CHECK(decode((const unsigned char *)junk, strlen(junk), NULL, 0) == -1);
	CHECK_MSG(strstr(err_msg(), "mem: record 1: not a tns stream") != NULL, "%s", err_msg());
}

/* Every prefix of a 3-record stream reads the complete records and then either ends
 * cleanly (at a record boundary) or fails on the next record, naming it. */
static void test_truncation(void)
{
	record *in[3] = {sample(1), sample(2), sample(3)};
	size_t len, bound[3], l;
	unsigned char *bytes = encode(in, 3, 1, &len);
	for (int k = 0; k < 3; k++) {
		free(encode(in, k + 1, 1, &l));
		bound[k] = l;
	}
	int bad = 0;
	for (size_t cut = 0; cut < len; cut++) {
		int whole = 0;
		while (whole < 3 && bound[whole] <= cut)
			whole++;
		int rc = decode(bytes, cut, NULL, 0);
		int at_boundary = cut == 0 || (whole > 0 && bound[whole - 1] == cut);
		int expect = at_boundary ? whole : -1 - whole;
		if (rc != expect) {
			if (bad++ < 5)
				fprintf(stderr, "cut %zu: got %d, expected %d (%s)\n", cut, rc, expect, err_msg());
		} else if (rc < 0) {
			char want[64];
			snprintf(want, sizeof want, "mem: record %d: ", whole + 1);
			if (strstr(err_msg(), want) != err_msg() && bad++ < 5)
				fprintf(stderr, "cut %zu: message '%s'\n", cut, err_msg());
		}
	}
	CHECK_MSG(bad == 0, "%d of %zu truncations misread", bad, len);
	for (int k = 0; k < 3; k++)
		record_free(in[k]);
	free(bytes);
}

/* Flipping any byte to several values: never a crash, and never a silent change of
 * the data (zstd's checksum and our header checks must catch it). */
static void test_flips(void)
{
	record *in[2] = {sample(1), sample(2)};
	size_t len;
	unsigned char *bytes = encode(in, 2, 1, &len);
	unsigned char *copy = malloc(len);
	static const unsigned char masks[] = {0x01, 0x80, 0xff, 0x10};
	int silent = 0, runs = 0;
	for (size_t i = 0; i < len; i++)
		for (size_t m = 0; m < sizeof masks; m++) {
			memcpy(copy, bytes, len);
			copy[i] ^= masks[m];
			record *out[2] = {0};
			int rc = decode(copy, len, out, 2);
			runs++;
			for (int k = 0; rc == 2 && k < 2; k++) {
				/* a record read but not decoded (decode_kinds) is passed on as it
				 * is: whoever decodes its frame must find the flip */
				record *full = NULL;
				const char *const *kinds = decode_kinds;
				decode_kinds = NULL;
				int whole = out[k]->ntensors > 0 || decode(out[k]->frame, out[k]->frame_len, &full, 1) == 1;
				decode_kinds = kinds;
				if (!whole)
					continue;
				/* accepted: must be bit-identical to the original (e.g. a flip in
				 * a field zstd ignores); anything else is silent corruption */
				const record *got = full ? full : out[k];
				for (int t = 0; t < in[k]->ntensors; t++)
					if (got->ntensors != in[k]->ntensors ||
					    memcmp(got->tensors[t].data, in[k]->tensors[t].data, tensor_nbytes(&in[k]->tensors[t])))
						silent++;
				record_free(full);
			}
			record_free(out[0]);
			record_free(out[1]);
		}
	CHECK_MSG(silent == 0, "%d of %d flips changed data silently", silent, runs);
	free(copy);
	free(bytes);
	record_free(in[0]);
	record_free(in[1]);
}

/* A reader that decodes only some kinds: the others come back with kind, meta and
 * frame (passed on byte for byte) but no tensors; the decoded ones as usual. */
static void test_decode_only(void)
{
	record *in[3] = {sample(1), sample(2), sample(3)}, *out[3] = {0};
	size_t len, blen;
	unsigned char *bytes = encode(in, 3, 1, &len);
	static const char *const images[] = {"image", NULL};
	decode_kinds = images;
	CHECK(decode(bytes, len, out, 3) == 3);
	decode_kinds = NULL;
	CHECK(strcmp(out[1]->kind, "params") == 0 && out[1]->ntensors == 0 && meta_num(out[1], "k", 0) == 2);
	CHECK(strcmp(meta_str(out[1], "id", ""), "BloodImage_00001") == 0);
	for (int k = 0; k < 3; k += 2) {
		CHECK(strcmp(out[k]->kind, "image") == 0 && out[k]->ntensors == in[k]->ntensors);
		CHECK(meta_num(out[k], "k", 0) == k + 1);
		const tensor *t = record_find(out[k], "w");
		CHECK(t && memcmp(t->data, in[k]->tensors[0].data, tensor_nbytes(t)) == 0);
	}
	char *buf = NULL;
	FILE *f = open_memstream(&buf, &blen);
	stream_writer *w = stream_writer_new(f, "mem", 1);
	for (int k = 0; k < 3; k++)
		CHECK(stream_pass(w, out[k]) == 0);
	CHECK(stream_close_write(w) == 0);
	fclose(f);
	CHECK(blen == len && memcmp(buf, bytes, len) == 0);
	/* the robustness tests again with a reader that leaves params undecoded */
	decode_kinds = images;
	test_truncation();
	test_flips();
	decode_kinds = NULL;
	free(buf);
	free(bytes);
	for (int k = 0; k < 3; k++) {
		record_free(in[k]);
		record_free(out[k]);
	}
}

static void test_half_floats(void)
{
	/* exact values, rounding to nearest even, overflow, subnormals, nan */
	CHECK(f32_to_f16(1.0f) == 0x3c00 && f16_to_f32(0x3c00) == 1.0f);
	CHECK(f32_to_f16(-2.0f) == 0xc000);
	CHECK(f32_to_f16(65504.0f) == 0x7bff && f32_to_f16(65520.0f) == 0x7c00);
	CHECK(f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);         /* tie, to even */
	CHECK(f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);         /* tie, to even (up) */
	CHECK(f32_to_f16(5.9604645e-8f) == 0x0001);              /* smallest subnormal */
	CHECK(f16_to_f32(0x0001) == 5.9604644775390625e-8f);
	CHECK(f32_to_f16(2.9802322e-8f) == 0x0000);              /* half of it: tie to even 0 */
	CHECK(isnan(f16_to_f32(f32_to_f16(NAN))));
	int round_trip = 1;
	for (uint32_t h = 0; h < 0x7c00; h++)
		round_trip &= f32_to_f16(f16_to_f32((uint16_t)h)) == h;
	CHECK(round_trip);
	CHECK(f32_to_bf16(1.0f) == 0x3f80 && bf16_to_f32(0x3f80) == 1.0f);
	CHECK(f32_to_bf16(1.00390625f) == 0x3f80); /* tie, to even */
	CHECK(f32_to_bf16(1.01171875f) == 0x3f82); /* tie, to even (up) */
	CHECK(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

int main(void)
{
	test_roundtrip();
	test_levels();
	test_limits_and_names();
	test_half_floats();
	test_truncation();
	test_flips();
	test_decode_only();
	return check_done("test_stream");
}
