/* augment: image records in, batch records out (SSD train augmentation or eval resize). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "stream.h"
#include "tool.h"

static void usage(void)
{
	printf("usage: augment (--train | --eval) [options] [SIZE] < images > batches\n"
	       "\n"
	       "Turns image records (voc-decode) into batch records for forward, as mmdetection 2.x\n"
	       "SSD pipelines do. Records of any other kind pass through unchanged, in order.\n"
	       "\n"
	       "  --train         drop difficult boxes; photometric distortion, expand, min-IoU crop,\n"
	       "                  resize, horizontal flip, normalise (random, seeded)\n"
	       "  --eval          resize and normalise only; ground truth stays in original pixels\n"
	       "  --config FILE   read the \"data\" section of a pipeline config (size, mean, std,\n"
	       "                  to_rgb, train.*); without it mmdet's SSD-512 defaults are used\n"
	       "  --size N        network input N x N (default 512 or data.size; SIZE is the same)\n"
	       "  --batch N       images per batch record (default 8)\n"
	       "  --seed N        random seed (default 0); image i draws from (seed, meta.epoch, meta.index)\n"
	       "                  only, so output is the same for any --threads and --batch\n"
	       "  --threads N     worker threads (default: online CPUs or $TNS_THREADS)\n"
	       "  -h, --help      this help\n"
	       "\n"
	       "Batch record (kind \"batch\"): image f32[N,3,S,S] normalised (RGB, or BGR if to_rgb is\n"
	       "false), boxes f32[N,M,4] xyxy zero padded, labels i32[N,M] padded with -1, nbox i32[N];\n"
	       "eval adds difficult u8[N,M], scale_factor f32[N,4] (S/W, S/H, S/W, S/H) and orig_size\n"
	       "i32[N,2] (H, W). meta: ids, indices, epoch, size, mode (train|eval) and boxes_frame\n"
	       "(\"input\": train boxes in S x S pixels; \"original\": eval boxes in image pixels).\n"
	       "A partial batch is written at the end, before a passed-through record and when\n"
	       "meta.epoch changes.\n");
}

/* Images read but not yet written. [0, closed) form whole batches (ends[]); [closed, n) is
 * the batch still filling. */
typedef struct pending {
	record **recs;
	aug_job *jobs;
	int *ends;
	int n, closed, nb, cap;
} pending;

static void close_batch(pending *p)
{
	if (p->n > p->closed) {
		p->ends[p->nb++] = p->n;
		p->closed = p->n;
	}
}

/* Augments the whole batches in parallel and writes them in order. */
static void flush_closed(pending *p, aug_pool *pool, const aug_opts *o, stream_writer *w)
{
	if (!p->closed)
		return;
	record **out = calloc((size_t)p->nb, sizeof *out);
	if (!out)
		die("out of memory");
	for (int b = 0, start = 0; b < p->nb; start = p->ends[b++])
		if (!(out[b] = aug_batch_begin(p->jobs + start, p->ends[b] - start, o)))
			die_err();
	if (aug_pool_run(pool, p->jobs, p->closed, o) < 0)
		die_err();
	for (int b = 0, start = 0; b < p->nb; start = p->ends[b++]) {
		if (aug_batch_end(out[b], p->jobs + start, p->ends[b] - start, o) < 0 || stream_write(w, out[b]) < 0)
			die_err();
		record_free(out[b]);
	}
	free(out);
	for (int i = 0; i < p->closed; i++)
		record_free(p->recs[i]);
	int left = p->n - p->closed;
	memmove(p->recs, p->recs + p->closed, (size_t)left * sizeof *p->recs);
	memmove(p->jobs, p->jobs + p->closed, (size_t)left * sizeof *p->jobs);
	p->n = left;
	p->closed = p->nb = 0;
}

int main(int argc, char **argv)
{
	tool_init("augment");
	static const struct option opts[] = {{"train", no_argument, 0, 't'},      {"eval", no_argument, 0, 'e'},
					     {"config", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
					     {"batch", required_argument, 0, 'b'},  {"seed", required_argument, 0, 'S'},
					     {"threads", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
					     {0}};
	int mode = -1, c;
	long size = 0, batch = 8, threads = 0;
	long long seed = 0;
	const char *config = NULL;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
		case 'e':
			if (mode >= 0 && mode != (c == 't'))
				usage_error("--train and --eval exclude each other");
			mode = c == 't';
			break;
		case 'c': config = optarg; break;
		case 's': size = arg_long("--size", optarg, 1, 8192); break;
		case 'b': batch = arg_long("--batch", optarg, 1, 4096); break;
		case 'S': seed = arg_long("--seed", optarg, 0, 0x7fffffffffffffffL); break;
		case 'T': threads = arg_long("--threads", optarg, 1, 256); break;
		case 'h': usage(); return 0;
		default: usage_error("bad option");
		}
	}
	if (optind < argc) {
		if (size)
			usage_error("give the size once (--size or SIZE)");
		size = arg_long("SIZE", argv[optind++], 1, 8192);
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (mode < 0)
		usage_error("say --train or --eval");

	aug_opts o = {.train = mode, .seed = (uint64_t)seed};
	data_config_default(&o.cfg);
	if (config && data_config_load(&o.cfg, config) < 0)
		die_err();
	if (size)
		o.cfg.size = (int)size;
	if (!threads)
		threads = default_threads();

	refuse_terminal_stdout();
	stream_reader *in = stream_open_read("-");
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT);
	aug_pool *pool = aug_pool_new((int)threads);
	if (!in || !out || !pool)
		die_err();
	/* enough images in flight to keep every thread busy even with small batches */
	int window = (int)(batch > 2 * threads ? batch : 2 * threads);
	pending p = {.cap = window + (int)batch};
	p.recs = calloc((size_t)p.cap, sizeof *p.recs);
	p.jobs = calloc((size_t)p.cap, sizeof *p.jobs);
	p.ends = calloc((size_t)p.cap, sizeof *p.ends);
	if (!p.recs || !p.jobs || !p.ends)
		die("out of memory");

	long images = 0;
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (strcmp(r->kind, "image") != 0) {
			close_batch(&p);
			flush_closed(&p, pool, &o, out);
			if (stream_pass(out, r) < 0)
				die_err();
			record_free(r);
			continue;
		}
		aug_image *im = &p.jobs[p.n].in;
		if (aug_image_view(im, r, images++) < 0) {
			err_wrap("%s: record %ld", stream_name(in), stream_count(in));
			die_err();
		}
		if (p.n > p.closed && im->epoch != p.jobs[p.closed].in.epoch)
			close_batch(&p); /* a new epoch starts a new batch */
		p.recs[p.n++] = r;
		if (p.n - p.closed == batch)
			close_batch(&p);
		if (p.closed >= window)
			flush_closed(&p, pool, &o, out);
	}
	if (rc < 0)
		die_err();
	close_batch(&p);
	flush_closed(&p, pool, &o, out);
	if (stream_close_write(out) < 0)
		die_err();
	stream_close_read(in);
	aug_pool_free(pool);
	free(p.recs);
	free(p.jobs);
	free(p.ends);
	close_stdout();
	return 0;
}
