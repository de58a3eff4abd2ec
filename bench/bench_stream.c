/* bench_stream: what the framing costs. Reads a stream FILE (e.g. augment's batches of
 * real images) into memory, then re-encodes it at each zstd level and decodes it back,
 * in memory, printing MB/s of uncompressed record bytes written and read, and the
 * compression ratio. Usage: bench_stream FILE [LEVEL...] (default levels: -5 1 3). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stream.h"
#include "tool.h"

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
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		stream_writer *w = stream_writer_new(f, "mem", level);
		double t0 = now();
		for (int i = 0; i < n; i++)
			if (stream_write(w, recs[i]) < 0)
				die_err();
		double raw = (double)stream_bytes_written(w);
		if (stream_close_write(w) < 0)
			die_err();
		fclose(f);
		double t1 = now();
		FILE *in = fmemopen(buf, len, "rb");
		stream_reader *rd = stream_reader_new(in, "mem");
		int got = 0;
		while ((rc = stream_read(rd, &r)) > 0) {
			got++;
			record_free(r);
		}
		if (rc < 0 || got != n)
			die("re-read %d of %d records: %s", got, n, rc < 0 ? err_msg() : "short");
		double t2 = now();
		stream_close_read(rd);
		fclose(in);
		printf("%-6d %12.0f %12.0f %10.2f\n", level, raw / 1e6 / (t1 - t0), raw / 1e6 / (t2 - t1), raw / (double)len);
		free(buf);
	}
	for (int i = 0; i < n; i++)
		record_free(recs[i]);
	free(recs);
	return 0;
}
