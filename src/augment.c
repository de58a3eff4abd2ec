/* augment: image records in, batch records out (SSD train augmentation or eval resize). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "data/augment.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: augment (--train | --eval) [options] [SIZE] < images > batches\n"
	       "\n"
	       "Turns image records (voc-decode, image-decode) into batch records for forward, as\n"
	       "mmdetection 2.x SSD pipelines do. Records of any other kind pass through\n"
	       "unchanged, in order.\n"
	       "\n"
	       "  --train         photometric distortion, expand, min-IoU crop, resize, horizontal\n"
	       "                  flip, normalise (random, seeded); difficult boxes are dropped\n"
	       "  --eval          resize and normalise only; ground truth stays in original pixels\n"
	       "  --config FILE   read the \"data\" section of a pipeline config (size, mean, std,\n"
	       "                  to_rgb, train.*); without it mmdet's SSD-512 defaults are used\n"
	       "  --size N        network input N x N (default 512 or data.size; SIZE is the same)\n"
	       "  --batch N       images per batch record (default 8)\n"
	       "  --seed N        random seed (default 0); image i draws from (seed, meta.epoch, meta.index)\n"
	       "                  only, so output is the same for any --threads and --batch\n"
	       "  --threads N     worker threads (default: online CPUs or $TNS_THREADS)\n"
	       "  --pass-images   write each image record on too, unchanged, just before the batch\n"
	       "                  that holds it (draw-dets and dets-json pair them with the dets)\n"
	       "  -h, --help      this help\n"
	       "\n"
	       "Batch record (kind \"batch\"): image f32[N,3,S,S] normalised (RGB, or BGR if to_rgb is\n"
	       "false), boxes f32[N,M,4] xyxy zero padded, labels i32[N,M] padded with -1, nbox i32[N];\n"
	       "eval adds difficult u8[N,M], scale_factor f32[N,4] (S/W, S/H, S/W, S/H) and orig_size\n"
	       "i32[N,2] (H, W). meta: ids, indices, epoch, size, mode (train|eval) and boxes_frame\n"
	       "(\"input\": train boxes in S x S pixels; \"original\": eval boxes in image pixels).\n"
	       "Images without boxes and labels (image-decode) give eval batches without boxes,\n"
	       "labels, difficult and nbox; --train refuses them.\n"
	       "A partial batch is written at the end, before a passed-through record and when\n"
	       "meta.epoch changes.\n");
}

/* Images read and not yet written, in stream order. [0, closed) form whole batches
 * (ends[]); [closed, n) is the batch still filling. */
typedef struct group {
	record **recs;
	aug_job *jobs;
	int *ends;
	aug_batch *out; /* the batch records of a submitted group */
	int n, closed, nb;
} group;

static void group_init(group *g, int cap)
{
	g->recs = calloc((size_t)cap, sizeof *g->recs);
	g->jobs = calloc((size_t)cap, sizeof *g->jobs);
	g->ends = calloc((size_t)cap, sizeof *g->ends);
	g->out = calloc((size_t)cap, sizeof *g->out);
	if (!g->recs || !g->jobs || !g->ends || !g->out)
		die("out of memory");
	g->n = g->closed = g->nb = 0;
}

static void group_free(group *g)
{
	free(g->recs);
	free(g->jobs);
	free(g->ends);
	free(g->out);
}

static void close_batch(group *g)
{
	if (g->n > g->closed) {
		g->ends[g->nb++] = g->n;
		g->closed = g->n;
	}
}

/* --pass-images: each image record goes on ahead of the batch that holds it */
static int pass_images;

/* Waits for a submitted group and writes its batches (completed and encoded by the
 * workers) in order. */
static void finish(group *g, aug_pool *pool, stream_writer *w)
{
	if (!g->closed)
		return;
	if (aug_pool_wait(pool, g->jobs, g->closed) < 0)
		die_err();
	for (int b = 0; b < g->nb; b++) {
		for (int i = b ? g->ends[b - 1] : 0; pass_images && i < g->ends[b]; i++)
			if (stream_pass(w, g->recs[i]) < 0)
				die_err();
		if (stream_pass(w, g->out[b].rec) < 0)
			die_err();
		record_free(g->out[b].rec);
	}
	for (int i = 0; i < g->closed; i++)
		record_free(g->recs[i]);
	g->n = g->closed = g->nb = 0;
}

/* Submits the whole batches of *fill, writes the previous group while they are worked
 * on, and leaves the batch still filling in *fill. *busy becomes the submitted group. */
static void submit(group **fill, group **busy, aug_pool *pool, const aug_opts *o, stream_writer *w)
{
	group *f = *fill, *b = *busy;
	if (!f->closed)
		return;
	for (int k = 0, start = 0; k < f->nb; start = f->ends[k++]) {
		aug_batch *bt = &f->out[k];
		bt->jobs = f->jobs + start;
		bt->n = f->ends[k] - start;
		bt->level = stream_writer_level(w);
		if (!(bt->rec = aug_batch_begin(bt->jobs, bt->n, o)) || aug_pool_submit_batch(pool, bt, o) < 0)
			die_err();
	}
	finish(b, pool, w);
	int left = f->n - f->closed;
	memcpy(b->recs, f->recs + f->closed, (size_t)left * sizeof *b->recs);
	memcpy(b->jobs, f->jobs + f->closed, (size_t)left * sizeof *b->jobs);
	b->n = left;
	f->n = f->closed;
	*fill = b;
	*busy = f;
}

int main(int argc, char **argv)
{
	tool_init("augment");
	static const struct option opts[] = {{"train", no_argument, 0, 't'},      {"eval", no_argument, 0, 'e'},
					     {"config", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
					     {"batch", required_argument, 0, 'b'},  {"seed", required_argument, 0, 'S'},
					     {"threads", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
					     {"pass-images", no_argument, 0, 'P'},
					     {0}};
	int mode = -1, c;
	long size = 0, batch = 8, threads = 0;
	unsigned long long seed = 0;
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
		case 'S': seed = arg_u64("--seed", optarg); break;
		case 'T': threads = arg_long("--threads", optarg, 1, 256); break;
		case 'P': pass_images = 1; break;
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
	/* enough images in a group to keep every thread busy even with small batches; one
	 * group is worked on while the next is read and the one before is written */
	int window = (int)(batch > 2 * threads ? batch : 2 * threads);
	group groups[2], *fill = &groups[0], *busy = &groups[1];
	group_init(fill, window + (int)batch);
	group_init(busy, window + (int)batch);

	long images = 0;
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		if (strcmp(r->kind, "image") != 0) {
			close_batch(fill);
			submit(&fill, &busy, pool, &o, out);
			finish(busy, pool, out);
			if (stream_pass(out, r) < 0)
				die_err();
			record_free(r);
			continue;
		}
		aug_image *im = &fill->jobs[fill->n].in;
		if (aug_image_view(im, r, images++) < 0) {
			err_wrap("%s: record %ld", stream_name(in), stream_count(in));
			die_err();
		}
		if (fill->n > fill->closed && im->epoch != fill->jobs[fill->closed].in.epoch)
			close_batch(fill); /* a new epoch starts a new batch */
		fill->recs[fill->n++] = r;
		if (fill->n - fill->closed == batch)
			close_batch(fill);
		if (fill->closed >= window)
			submit(&fill, &busy, pool, &o, out);
	}
	if (rc < 0)
		die_err();
	close_batch(fill);
	submit(&fill, &busy, pool, &o, out);
	finish(busy, pool, out);
	if (stream_close_write(out) < 0)
		die_err();
	stream_close_read(in);
	aug_pool_free(pool);
	group_free(&groups[0]);
	group_free(&groups[1]);
	close_stdout();
	return 0;
}
