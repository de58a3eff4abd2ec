/* bench_stream: what the framing costs. Reads a stream FILE (e.g. augment's batches of
 * real images) into memory, then encodes every record at each zstd level and decodes
 * the frames back, all in memory (no I/O), printing MB/s of tensor bytes encoded and
 * decoded on one thread, and the compression ratio.
 * Usage: bench_stream FILE [LEVEL...] (default levels: -5 1 3). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/stream.h"
#include "tool/tool.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	tool_init("bench_stream");
	if (argc < 2)
		usage_error("usage: bench_stream FILE [LEVEL...]");
	stream_reader *s = stream_open_read(argv[1]);
	if (!s)
		die_err();
	record **recs = NULL;
	int n = 0, rc;
	record *r;
	while ((rc = stream_read(s, &r)) > 0) {
		recs = realloc(recs, (size_t)(n + 1) * sizeof *recs);
		recs[n++] = r;
	}
	if (rc < 0)
		die_err();
	stream_close_read(s);
	static char *dflt[] = {"-5", "1", "3"};
	char **levels = argc > 2 ? argv + 2 : dflt;
	int nlevels = argc > 2 ? argc - 2 : 3;
	printf("%-6s %12s %12s %10s   (%d records)\n", "level", "write MB/s", "read MB/s", "ratio", n);
	for (int l = 0; l < nlevels; l++) {
		int level = (int)arg_long("LEVEL", levels[l], -50, 22);
		/* write: encode every record to its frame (what a writer does before fwrite) */
		double raw = 0, t0 = now();
		size_t len = 0;
		for (int i = 0; i < n; i++) {
			if (record_encode(recs[i], level) < 0)
				die_err();
			len += recs[i]->frame_len;
		}
		double t1 = now();
		for (int i = 0; i < n; i++)
			for (int k = 0; k < recs[i]->ntensors; k++)
				raw += (double)tensor_nbytes(&recs[i]->tensors[k]);
		/* read: the frames back to records from memory */
		unsigned char *buf = malloc(len), *p = buf;
		for (int i = 0; i < n; i++) {
			memcpy(p, recs[i]->frame, recs[i]->frame_len);
			p += recs[i]->frame_len;
		}
		FILE *in = fmemopen(buf, len, "rb");
		stream_reader *rd = stream_reader_new(in, "mem");
		int got = 0;
		double t2 = now();
		while ((rc = stream_read(rd, &r)) > 0) {
			got++;
			record_free(r);
		}
		double t3 = now();
		if (rc < 0 || got != n)
			die("re-read %d of %d records: %s", got, n, rc < 0 ? err_msg() : "short");
		stream_close_read(rd);
		fclose(in);
		printf("%-6d %12.0f %12.0f %10.2f\n", level, raw / 1e6 / (t1 - t0), raw / 1e6 / (t3 - t2), raw / (double)len);
		free(buf);
	}
	for (int i = 0; i < n; i++)
		record_free(recs[i]);
	free(recs);
	return 0;
}
