#include "core/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zstd.h>

#include "core/err.h"
#include "core/input_limits.h"

/* A record body (what one zstd frame decodes to):
 *   "TNS1" | u32 header_len (LE) | header JSON | zero pad to 64 | tensor data
 * Tensor offsets in the header are relative to the start of the data section and are
 * multiples of 64, so tensors read from an aligned body are aligned too. */
static const char MAGIC[4] = {'T', 'N', 'S', '1'};
#define PREFIX_LEN 8
#define ZSTD_MAGIC 0xFD2FB528u
#define BLOCK_MAX (128u << 10)
#define HEADER_MAX ((size_t)64 << 20)
#define RESERVE_MAX ((size_t)64 << 20)

static size_t align64(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---------------------------------------------------------------- records */

record *record_new(const char *kind)
{
	record *r = calloc(1, sizeof *r);
	if (!r || !(r->meta = cJSON_CreateObject())) {
		free(r);
		err_set("out of memory");
		return NULL;
	}
	snprintf(r->kind, sizeof r->kind, "%s", kind);
	return r;
}

void record_free(record *r)
{
	if (!r)
		return;
	for (int i = 0; i < r->ntensors; i++)
		if (r->tensors[i].owned)
			free(r->tensors[i].data);
	free(r->tensors);
	cJSON_Delete(r->meta);
	free(r->body);
	free(r->frame);
	free(r);
}

/* Appends an empty tensor slot after checking name and shape. */
static tensor *push_tensor(record *r, const char *name, enum dtype dt, int ndim, const int64_t *shape)
{
	if (!name[0] || strlen(name) >= TENSOR_NAMELEN) {
		err_set("tensor name '%.80s' is empty or longer than %d bytes", name, TENSOR_NAMELEN - 1);
		return NULL;
	}
	if (record_find(r, name)) {
		err_set("duplicate tensor '%s'", name);
		return NULL;
	}
	if ((unsigned)dt >= DT_COUNT || ndim < 0 || ndim > TENSOR_MAXDIM) {
		err_set("tensor '%s': bad dtype or rank %d", name, ndim);
		return NULL;
	}
	uint64_t numel = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] > 0 && numel > (UINT64_MAX >> 8) / (uint64_t)shape[i])) {
			err_set("tensor '%s': bad dimension %lld", name, (long long)shape[i]);
			return NULL;
		}
		numel *= (uint64_t)shape[i];
	}
	if (r->ntensors == r->cap) {
		int cap = r->cap ? 2 * r->cap : 8;
		tensor *t = realloc(r->tensors, (size_t)cap * sizeof *t);
		if (!t) {
			err_set("out of memory");
			return NULL;
		}
		r->tensors = t;
		r->cap = cap;
	}
	tensor *t = &r->tensors[r->ntensors++];
	memset(t, 0, sizeof *t);
	snprintf(t->name, sizeof t->name, "%s", name);
	t->dtype = dt;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	return t;
}

tensor *record_add(record *r, const char *name, enum dtype dt, int ndim, const int64_t *shape)
{
	tensor *t = push_tensor(r, name, dt, ndim, shape);
	if (!t)
		return NULL;
	if (!(t->data = aligned_zalloc(tensor_nbytes(t)))) {
		r->ntensors--;
		return NULL;
	}
	t->owned = 1;
	/* the record no longer matches the frame it was read from */
	free(r->frame);
	r->frame = NULL;
	r->frame_len = 0;
	return t;
}

tensor *record_find(const record *r, const char *name)
{
	for (int i = 0; i < r->ntensors; i++)
		if (strcmp(r->tensors[i].name, name) == 0)
			return &r->tensors[i];
	return NULL;
}

tensor *record_expect(const record *r, const char *name, enum dtype dt, int ndim)
{
	tensor *t = record_find(r, name);
	if (!t) {
		err_set("%s record has no tensor '%s'", r->kind, name);
		return NULL;
	}
	if (t->dtype != dt || (ndim >= 0 && t->ndim != ndim)) {
		char d[128];
		err_set("%s record: tensor '%s' is %s, expected %s with %d dimensions", r->kind, name,
			tensor_describe(t, d, sizeof d), dtype_name(dt), ndim);
		return NULL;
	}
	return t;
}

tensor *record_expect_shape(const record *r, const char *name, enum dtype dt, int ndim, const int64_t *shape)
{
	tensor *t = record_expect(r, name, dt, ndim);
	for (int i = 0; t && i < ndim; i++)
		if (shape[i] >= 0 && t->shape[i] != shape[i]) {
			char have[128];
			err_set("%s record: tensor '%s' is %s, expected dimension %d to be %lld", r->kind, name,
				tensor_describe(t, have, sizeof have), i, (long long)shape[i]);
			return NULL;
		}
	return t;
}

double meta_num(const record *r, const char *key, double dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->meta, key);
	return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

const char *meta_str(const record *r, const char *key, const char *dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->meta, key);
	return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* ---------------------------------------------------------------- reading */

struct stream_reader {
	FILE *f;
	int owns_file;
	char name[256];
	long count;
	size_t limit;
	ZSTD_DCtx *dctx;
	const char *const *decode; /* kinds decoded in full (NULL: all) */
};

stream_reader *stream_reader_new(FILE *f, const char *name)
{
	stream_reader *s = calloc(1, sizeof *s);
	if (!s || !(s->dctx = ZSTD_createDCtx())) {
		free(s);
		err_set("out of memory");
		return NULL;
	}
	s->f = f;
	snprintf(s->name, sizeof s->name, "%s", name);
	s->limit = limit_get(LIMIT_RECORD);
	return s;
}

stream_reader *stream_open_read(const char *path)
{
	if (strcmp(path, "-") == 0)
		return stream_reader_new(stdin, "stdin");
	FILE *f = fopen(path, "rb");
	if (!f) {
		err_set("%s: %s", path, strerror(errno));
		return NULL;
	}
	stream_reader *s = stream_reader_new(f, path);
	if (!s)
		fclose(f);
	else
		s->owns_file = 1;
	return s;
}

void stream_close_read(stream_reader *s)
{
	if (!s)
		return;
	if (s->owns_file)
		fclose(s->f);
	ZSTD_freeDCtx(s->dctx);
	free(s);
}

long stream_count(const stream_reader *s)
{
	return s->count;
}

const char *stream_name(const stream_reader *s)
{
	return s->name;
}

void stream_set_limit(stream_reader *s, size_t bytes)
{
	s->limit = bytes;
}

void stream_decode_only(stream_reader *s, const char *const *kinds)
{
	s->decode = kinds;
}

static int wanted(const stream_reader *s, const char *kind)
{
	if (!s->decode)
		return 1;
	for (const char *const *k = s->decode; *k; k++)
		if (!strcmp(*k, kind))
			return 1;
	return 0;
}

/* A growable byte buffer holding the compressed frame as it is read. */
typedef struct {
	unsigned char *p;
	size_t len, cap;
} bytes;

/* Room for n bytes in b (doubling, at least). */
static int bytes_reserve(bytes *b, size_t n)
{
	if (n <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < n)
		cap *= 2;
	unsigned char *p = realloc(b->p, cap);
	if (!p)
		return err_set("out of memory");
	huge_pages_hint(p, cap);
	b->p = p;
	b->cap = cap;
	return 0;
}

static int bytes_read(bytes *b, FILE *f, size_t n, const char *what)
{
	if (bytes_reserve(b, b->len + n) < 0)
		return -1;
	size_t got = fread(b->p + b->len, 1, n, f);
	b->len += got;
	if (got < n) {
		if (ferror(f))
			return err_set("read error: %s", strerror(errno));
		return err_set("truncated record (stream ends inside the %s)", what);
	}
	return 0;
}

/* Reads one zstd frame into b, walking its header and block headers (RFC 8878) so
 * that exactly the frame's bytes are consumed. Sets *content to the frame's declared
 * decoded size. Returns 1, 0 at a clean end of stream, -1 on error. */
static int read_frame(stream_reader *s, bytes *b, unsigned long long *content)
{
	b->len = 0;
	int c = getc(s->f);
	if (c == EOF)
		return ferror(s->f) ? err_set("read error: %s", strerror(errno)) : 0;
	b->p[b->len++] = (unsigned char)c;
	if (bytes_read(b, s->f, 4, "frame header") < 0)
		return -1;
	uint32_t magic = le32(b->p);
	if ((magic & 0xFFFFFFF0u) == 0x184D2A50u)
		return err_set("skippable zstd frame: not a tns record");
	if (magic != ZSTD_MAGIC)
		return err_set("not a tns stream (no zstd frame magic)");
	unsigned fhd = b->p[4];
	unsigned fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, checksum = (fhd >> 2) & 1, did = fhd & 3;
	if (fhd & 0x08)
		return err_set("corrupt record (reserved frame header bit set)");
	static const unsigned did_len[4] = {0, 1, 2, 4}, fcs_len[4] = {0, 2, 4, 8};
	size_t hlen = (single ? 0 : 1) + did_len[did] + (fcs_flag == 0 && single ? 1 : fcs_len[fcs_flag]);
	if (bytes_read(b, s->f, hlen, "frame header") < 0)
		return -1;
	*content = ZSTD_getFrameContentSize(b->p, b->len);
	if (*content == ZSTD_CONTENTSIZE_ERROR)
		return err_set("corrupt record (bad frame header)");
	if (*content == ZSTD_CONTENTSIZE_UNKNOWN)
		return err_set("record frame does not declare its size");
	if (*content > s->limit)
		return err_set("oversized record (%llu bytes, limit %zu; see TNS_MAX_RECORD)", *content, s->limit);
	/* room for the whole frame now: growing block by block would copy a 10 MB frame
	 * about twice over (capped, so a corrupt size costs no huge allocation) */
	size_t bound = ZSTD_compressBound((size_t)*content) + 64;
	if (bytes_reserve(b, bound < RESERVE_MAX ? bound : RESERVE_MAX) < 0)
		return -1;
	size_t nblocks = 0;
	for (int last = 0; !last; nblocks++) {
		if (bytes_read(b, s->f, 3, "block header") < 0)
			return -1;
		const unsigned char *h = b->p + b->len - 3;
		uint32_t bh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16;
		unsigned type = (bh >> 1) & 3;
		size_t size = bh >> 3;
		last = bh & 1;
		if (type == 3 || size > BLOCK_MAX)
			return err_set("corrupt record (bad block header)");
		if (b->len > *content + *content / 8 + 4096) /* far more input than any encoding needs */
			return err_set("corrupt record (frame longer than its content)");
		if (bytes_read(b, s->f, type == 1 ? 1 : size, "block") < 0)
			return -1;
	}
	if (checksum && bytes_read(b, s->f, 4, "checksum") < 0)
		return -1;
	/* A block decodes to at most BLOCK_MAX bytes, so a frame that declares more than
	 * its blocks can hold is corrupt: refused here, before the body is allocated at
	 * the declared size (a 20-byte frame could otherwise claim 2 GiB of memory). */
	if (*content > (unsigned long long)nblocks * BLOCK_MAX)
		return err_set("corrupt record (declares %llu bytes, but its %zu blocks hold at most %llu)", *content,
			       nblocks, (unsigned long long)nblocks * BLOCK_MAX);
	return 1;
}

/* The header length of a body's first PREFIX_LEN bytes, checked against the record's
 * size; -1 (err) if it is not a TNS1 record. */
static long header_len(const unsigned char *body, size_t have, size_t body_len)
{
	if (have < PREFIX_LEN || memcmp(body, MAGIC, 4) != 0)
		return err_set("corrupt record (no TNS1 header)");
	size_t hlen = le32(body + 4);
	if (hlen > body_len - PREFIX_LEN || hlen > HEADER_MAX)
		return err_set("corrupt record (header length %zu beyond record of %zu bytes)", hlen, body_len);
	if (align64(PREFIX_LEN + hlen) > body_len)
		return err_set("corrupt record (data section missing)");
	return (long)hlen;
}

/* Parses and checks the JSON header and tensor table of a decoded body of body_len
 * bytes; header_only: r->body holds only the prefix and header, and the tensor table
 * is left for whoever decodes the whole record (kind and meta only). */
static int parse_body(record *r, size_t body_len, int header_only)
{
	const unsigned char *body = r->body;
	long hl = header_len(body, header_only ? PREFIX_LEN : body_len, body_len);
	if (hl < 0)
		return -1;
	size_t hlen = (size_t)hl, data_off = align64(PREFIX_LEN + hlen);

	if (limit_json_depth((const char *)body + PREFIX_LEN, hlen) < 0)
		return err_wrap("corrupt record");
	cJSON *h = cJSON_ParseWithLength((const char *)body + PREFIX_LEN, hlen);
	if (!h)
		return err_set("corrupt record (header is not JSON)");
	int rc = -1;
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(h, "kind");
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "meta");
	const cJSON *tens = cJSON_GetObjectItemCaseSensitive(h, "tensors");
	if (!cJSON_IsString(kind) || !kind->valuestring[0] || strlen(kind->valuestring) >= RECORD_KINDLEN) {
		err_set("corrupt record (header has no valid kind)");
		goto out;
	}
	snprintf(r->kind, sizeof r->kind, "%s", kind->valuestring);
	if (meta) {
		if (!cJSON_IsObject(meta)) {
			err_set("corrupt record (meta is not an object)");
			goto out;
		}
		cJSON_Delete(r->meta);
		r->meta = cJSON_DetachItemFromObjectCaseSensitive(h, "meta");
	}
	if (tens && !cJSON_IsArray(tens)) {
		err_set("corrupt record (tensors is not an array)");
		goto out;
	}
	if (header_only) {
		rc = 0;
		goto out;
	}
	const unsigned char *data = body + data_off;
	size_t data_len = body_len - data_off;
	const cJSON *jt;
	cJSON_ArrayForEach(jt, tens)
	{
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(jt, "name");
		const cJSON *dt = cJSON_GetObjectItemCaseSensitive(jt, "dtype");
		const cJSON *shape = cJSON_GetObjectItemCaseSensitive(jt, "shape");
		const cJSON *off = cJSON_GetObjectItemCaseSensitive(jt, "offset");
		enum dtype dtype;
		if (!cJSON_IsString(name) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsNumber(off)) {
			err_set("corrupt record (malformed tensor entry)");
			goto out;
		}
		if (dtype_parse(dt->valuestring, &dtype) < 0) {
			err_wrap("corrupt record (tensor '%.64s')", name->valuestring);
			goto out;
		}
		int64_t dims[TENSOR_MAXDIM];
		int ndim = 0;
		const cJSON *d;
		cJSON_ArrayForEach(d, shape)
		{
			if (ndim == TENSOR_MAXDIM || !cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9e15 ||
			    d->valuedouble != (double)(int64_t)d->valuedouble) {
				err_set("corrupt record (tensor '%.64s': bad shape)", name->valuestring);
				goto out;
			}
			dims[ndim++] = (int64_t)d->valuedouble;
		}
		tensor *t = push_tensor(r, name->valuestring, dtype, ndim, dims);
		if (!t) {
			err_wrap("corrupt record");
			goto out;
		}
		double o = off->valuedouble;
		size_t nbytes = tensor_nbytes(t);
		if (o < 0 || o != (double)(size_t)o || (size_t)o % TENSOR_ALIGN || (size_t)o > data_len ||
		    nbytes > data_len - (size_t)o) {
			err_set("corrupt record (tensor '%s' lies outside the record)", t->name);
			goto out;
		}
		t->data = (void *)(data + (size_t)o);
	}
	rc = 0;
out:
	cJSON_Delete(h);
	return rc;
}

/* A buffer for a decoded body of n bytes: 64-byte aligned and rounded up to 64, the
 * rounding zeroed (decoding writes the rest). */
static void *body_alloc(size_t n)
{
	size_t rounded = align64(n ? n : 1);
	unsigned char *p = aligned_alloc(TENSOR_ALIGN, rounded);
	if (!p) {
		err_set("out of memory allocating %zu bytes", n);
		return NULL;
	}
	huge_pages_hint(p, rounded);
	memset(p + n, 0, rounded - n);
	return p;
}

/* Decodes only the start of the frame in b, the prefix and header JSON, into r->body:
 * enough for the kind and meta of a record that is only passed on. */
static int decode_header(stream_reader *s, const bytes *b, size_t content, record *r)
{
	ZSTD_inBuffer in = {b->p, b->len, 0};
	ZSTD_outBuffer out = {NULL, 0, 0};
	size_t want = PREFIX_LEN;
	int rc = -1;
	ZSTD_DCtx_reset(s->dctx, ZSTD_reset_session_only);
	for (;;) {
		if (out.size < want) {
			void *p = realloc(r->body, want);
			if (!p) {
				err_set("out of memory");
				goto done;
			}
			r->body = out.dst = p;
			out.size = want;
		}
		size_t in_pos = in.pos, out_pos = out.pos;
		size_t left = ZSTD_decompressStream(s->dctx, &out, &in);
		if (ZSTD_isError(left)) {
			err_set("corrupt record (%s)", ZSTD_getErrorName(left));
			goto done;
		}
		if (out.pos == want && want == PREFIX_LEN) {
			long hlen = header_len(r->body, PREFIX_LEN, content);
			if (hlen < 0)
				goto done;
			want += (size_t)hlen;
		}
		if (out.pos == want)
			break;
		if (left == 0 || (in.pos == in_pos && out.pos == out_pos)) {
			err_set("corrupt record (decoded %zu of %zu bytes)", out.pos, content);
			goto done;
		}
	}
	rc = parse_body(r, content, 1);
done:
	ZSTD_DCtx_reset(s->dctx, ZSTD_reset_session_only);
	return rc;
}

int stream_read(stream_reader *s, record **out)
{
	*out = NULL;
	bytes b = {0};
	unsigned long long content = 0;
	record *r = NULL;
	if (!(b.p = malloc(b.cap = 4096)))
		return err_set("out of memory");
	int rc = read_frame(s, &b, &content);
	if (rc <= 0)
		goto fail;
	rc = -1;
	if (!(r = record_new("?")))
		goto fail;
	if (s->decode) {
		if (decode_header(s, &b, (size_t)content, r) < 0)
			goto fail;
		if (!wanted(s, r->kind))
			goto done;
		free(r->body); /* decoded again in full below */
		r->body = NULL;
	}
	if (!(r->body = body_alloc((size_t)content)))
		goto fail;
	size_t n = ZSTD_decompressDCtx(s->dctx, r->body, (size_t)content, b.p, b.len);
	if (ZSTD_isError(n)) {
		err_set("corrupt record (%s)", ZSTD_getErrorName(n));
		goto fail;
	}
	if (n != content) {
		err_set("corrupt record (decoded %zu of %llu bytes)", n, content);
		goto fail;
	}
	if (parse_body(r, n, 0) < 0)
		goto fail;
done:
	if (b.cap - b.len > 4096) { /* the frame was smaller than its bound: give the rest back */
		unsigned char *p = realloc(b.p, b.len);
		if (p)
			b.p = p;
	}
	r->frame = b.p;
	r->frame_len = b.len;
	s->count++;
	*out = r;
	return 1;
fail:
	if (rc < 0)
		err_wrap("%s: record %ld", s->name, s->count + 1);
	record_free(r);
	free(b.p);
	return rc;
}

/* ---------------------------------------------------------------- encoding */

int stream_resolve_level(int level)
{
	if (level == STREAM_LEVEL_DEFAULT) {
		const char *env = getenv("TNS_LEVEL");
		level = env && *env ? atoi(env) : 1;
	}
	return level < ZSTD_minCLevel() ? ZSTD_minCLevel() : level > ZSTD_maxCLevel() ? ZSTD_maxCLevel() : level;
}

static ZSTD_CCtx *new_cctx(int level)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();
	if (!c) {
		err_set("out of memory");
		return NULL;
	}
	ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, stream_resolve_level(level));
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
	return c;
}

/* The header JSON of r, with each tensor's offset; *data_len gets the data section size. */
static char *header_json(const record *r, size_t *data_len)
{
	cJSON *h = cJSON_CreateObject(), *arr = NULL;
	char *json = NULL;
	*data_len = 0;
	if (!h || !cJSON_AddStringToObject(h, "kind", r->kind) ||
	    !cJSON_AddItemReferenceToObject(h, "meta", r->meta) || !(arr = cJSON_AddArrayToObject(h, "tensors")))
		goto out;
	for (int i = 0; i < r->ntensors; i++) {
		const tensor *t = &r->tensors[i];
		cJSON *jt = cJSON_CreateObject();
		if (!jt || !cJSON_AddItemToArray(arr, jt) || !cJSON_AddStringToObject(jt, "name", t->name) ||
		    !cJSON_AddStringToObject(jt, "dtype", dtype_name(t->dtype))) {
			cJSON_Delete(jt);
			goto out;
		}
		cJSON *shape = cJSON_AddArrayToObject(jt, "shape");
		for (int d = 0; shape && d < t->ndim; d++)
			cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
		if (!shape || cJSON_GetArraySize(shape) != t->ndim ||
		    !cJSON_AddNumberToObject(jt, "offset", (double)*data_len))
			goto out;
		*data_len += align64(tensor_nbytes(t));
	}
	json = cJSON_PrintUnformatted(h);
out:
	cJSON_Delete(h);
	if (!json)
		err_set("out of memory");
	return json;
}

/* Compresses n bytes (p NULL: zeros) into out; end finishes the frame. out is large
 * enough for the whole frame (ZSTD_compressBound), so no flushing is needed. */
static int feed(ZSTD_CCtx *c, ZSTD_outBuffer *out, const void *p, size_t n, int end)
{
	static const unsigned char zeros[64];
	ZSTD_inBuffer in = {p ? p : zeros, n, 0};
	for (;;) {
		size_t left = ZSTD_compressStream2(c, out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
		if (ZSTD_isError(left))
			return err_set("compression failed: %s", ZSTD_getErrorName(left));
		if (end ? left == 0 : in.pos == in.size)
			return 0;
		if (out->pos == out->size)
			return err_set("compression failed: frame larger than its bound");
	}
}

/* Encodes r as one frame into *buf (*cap bytes, grown to the frame's bound if smaller;
 * NULL and 0: a new buffer): *len bytes; *raw gets the decoded size. Streams the
 * pieces so tensor data is never copied into a body. */
static int encode(ZSTD_CCtx *c, const record *r, unsigned char **buf, size_t *cap, size_t *len, size_t *raw)
{
	size_t data_len;
	char *json = header_json(r, &data_len);
	if (!json)
		return -1;
	size_t hlen = strlen(json), pre = align64(PREFIX_LEN + hlen), total = pre + data_len;
	unsigned char prefix[PREFIX_LEN] = {'T', 'N', 'S', '1', (unsigned char)hlen, (unsigned char)(hlen >> 8),
					    (unsigned char)(hlen >> 16), (unsigned char)(hlen >> 24)};
	size_t bound = ZSTD_compressBound(total);
	int rc = -1;
	if (*cap < bound) {
		free(*buf); /* nothing in it to keep: no realloc copy */
		*cap = 0;
		if (!(*buf = malloc(bound))) {
			err_set("out of memory");
			goto done;
		}
		*cap = bound;
	}
	ZSTD_outBuffer out = {*buf, *cap, 0};
	ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
	ZSTD_CCtx_setPledgedSrcSize(c, total);
	if (feed(c, &out, prefix, PREFIX_LEN, 0) < 0 || feed(c, &out, json, hlen, 0) < 0)
		goto done;
	for (size_t pad = pre - PREFIX_LEN - hlen; pad > 0; pad -= pad > 64 ? 64 : pad)
		if (feed(c, &out, NULL, pad > 64 ? 64 : pad, 0) < 0)
			goto done;
	for (int i = 0; i < r->ntensors; i++) {
		size_t n = tensor_nbytes(&r->tensors[i]);
		if (feed(c, &out, r->tensors[i].data, n, 0) < 0 || feed(c, &out, NULL, align64(n) - n, 0) < 0)
			goto done;
	}
	if (feed(c, &out, NULL, 0, 1) < 0)
		goto done;
	*len = out.pos;
	*raw = total;
	rc = 0;
done:
	if (rc < 0)
		ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
	cJSON_free(json);
	return rc;
}

/* One compression context per thread, kept: a fresh one per record costs its
 * allocation and page faults every time. */
static pthread_key_t cctx_key;
static pthread_once_t cctx_once = PTHREAD_ONCE_INIT;

static void cctx_free(void *c)
{
	ZSTD_freeCCtx(c);
}

static void cctx_key_init(void)
{
	pthread_key_create(&cctx_key, cctx_free);
}

int record_encode(record *r, int level)
{
	pthread_once(&cctx_once, cctx_key_init);
	ZSTD_CCtx *c = pthread_getspecific(cctx_key);
	if (!c) {
		if (!(c = new_cctx(level)))
			return -1;
		pthread_setspecific(cctx_key, c);
	}
	ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, stream_resolve_level(level));
	unsigned char *frame = NULL;
	size_t cap = 0, len, raw;
	if (encode(c, r, &frame, &cap, &len, &raw) < 0) {
		free(frame);
		return -1;
	}
	free(r->frame);
	r->frame = frame;
	r->frame_len = len;
	return 0;
}

/* ---------------------------------------------------------------- writing */

struct stream_writer {
	FILE *f;
	int owns_file;
	char name[256];
	int level;
	ZSTD_CCtx *cctx;
	unsigned char *buf; /* the frame being written, kept: a new one per record costs page faults */
	size_t cap;
	unsigned long long written;
	int failed;  /* errno of the first failed write, else 0 */
	int widened; /* widen_pipe() done */
};

stream_writer *stream_writer_new(FILE *f, const char *name, int level)
{
	stream_writer *w = calloc(1, sizeof *w);
	if (!w || !(w->cctx = new_cctx(level))) {
		free(w);
		err_set("out of memory");
		return NULL;
	}
	w->f = f;
	w->level = stream_resolve_level(level);
	snprintf(w->name, sizeof w->name, "%s", name);
	return w;
}

stream_writer *stream_open_write(const char *path, int level)
{
	if (strcmp(path, "-") == 0)
		return stream_writer_new(stdout, "stdout", level);
	FILE *f = fopen(path, "wb");
	if (!f) {
		err_set("%s: %s", path, strerror(errno));
		return NULL;
	}
	stream_writer *w = stream_writer_new(f, path, level);
	if (!w)
		fclose(f);
	else
		w->owns_file = 1;
	return w;
}

int stream_writer_level(const stream_writer *w)
{
	return w->level;
}

/* A pipe or FIFO that carries large records gets a 1 MiB buffer instead of Linux's
 * 64 KiB: a 10 MB record of the training loop then crosses in ~10 wake-ups of the
 * reader instead of ~160 (half the time per hop, measured). Best effort: the system
 * may refuse (fs.pipe-max-size), and small streams keep the default. */
#define PIPE_BYTES (1 << 20)
static void widen_pipe(stream_writer *w, size_t frame_len)
{
	if (w->widened || frame_len < PIPE_BYTES / 4)
		return;
	w->widened = 1;
#ifdef F_SETPIPE_SZ
	int fd = fileno(w->f), saved = errno;
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && fcntl(fd, F_GETPIPE_SZ) < PIPE_BYTES)
		fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES);
	errno = saved;
#endif
}

/* Writes a whole frame and flushes, so a reader at the end of a FIFO gets it now. */
static int put_frame(stream_writer *w, const unsigned char *p, size_t n)
{
	widen_pipe(w, n);
	if ((n && fwrite(p, 1, n, w->f) != n) || fflush(w->f) != 0) {
		w->failed = errno ? errno : EIO;
		return err_set("%s: write error: %s", w->name, strerror(w->failed));
	}
	return 0;
}

int stream_write(stream_writer *w, const record *r)
{
	size_t len, raw;
	if (encode(w->cctx, r, &w->buf, &w->cap, &len, &raw) < 0)
		return err_wrap("%s", w->name);
	int rc = put_frame(w, w->buf, len);
	if (rc == 0)
		w->written += raw;
	return rc;
}

int stream_pass(stream_writer *w, const record *r)
{
	return r->frame ? put_frame(w, r->frame, r->frame_len) : stream_write(w, r);
}

unsigned long long stream_bytes_written(const stream_writer *w)
{
	return w->written;
}

int stream_close_write(stream_writer *w)
{
	if (!w)
		return 0;
	/* the first failure's reason again: close is where callers report it (a full disk) */
	int rc = w->failed ? err_set("%s: write error: %s", w->name, strerror(w->failed)) : 0;
	if (w->owns_file) {
		if (fclose(w->f) != 0 && rc == 0)
			rc = err_set("%s: close: %s", w->name, strerror(errno));
	} else if (fflush(w->f) != 0 && rc == 0) {
		rc = err_set("%s: write error: %s", w->name, strerror(errno));
	}
	ZSTD_freeCCtx(w->cctx);
	free(w->buf);
	free(w);
	return rc;
}

record *stream_read_first(const char *path, const char *kind)
{
	stream_reader *s = stream_open_read(path);
	if (!s)
		return NULL;
	record *r = NULL;
	int rc;
	while ((rc = stream_read(s, &r)) > 0 && strcmp(r->kind, kind) != 0) {
		record_free(r);
		r = NULL;
	}
	if (rc == 0)
		err_set("%s: no %s record", path, kind);
	stream_close_read(s);
	return rc > 0 ? r : NULL;
}
