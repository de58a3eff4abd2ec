/* loss: pred records (SSD head outputs + ground truth) in; the loss as "loss" records on
 * stdout and its gradient as "grad" records to --grad (the training loop's FIFO). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ssd/ssd_loss.h"
#include "core/stream.h"
#include "tool/tool.h"

static void usage(void)
{
	printf("usage: loss [--config FILE] [--grad PATH] < preds > losses\n"
	       "\n"
	       "mmdetection 2.x's SSDHead training loss: MaxIoUAssigner (each gt also takes its best\n"
	       "anchor), DeltaXYWH targets, softmax cross-entropy with hard negative mining and\n"
	       "smooth-L1, both normalised by the batch's positive count. For every pred record it\n"
	       "writes the gradient w.r.t. cls and reg to --grad (flushed at once), then a loss record\n"
	       "to stdout. Records of any other kind pass through unchanged, in order, after the\n"
	       "loss record of the pred before them. Without --grad: loss records only (validation).\n"
	       "\n"
	       "  --config FILE   read \"model\": anchors, bbox_coder (as ssd-decode) and train:\n"
	       "                  {pos_iou_thr 0.5, neg_iou_thr 0.5, min_pos_iou 0.0, neg_pos_ratio 3,\n"
	       "                  smoothl1_beta 1.0} (the defaults: TI's ssd_mobilenet_fpn settings)\n"
	       "  --grad PATH     write grad records there (a file or FIFO; opened when the first\n"
	       "                  pred record has been read)\n"
	       "  -h, --help      this help\n"
	       "\n"
	       "In (kind \"pred\", from forward in training mode): cls f32[N,A,C+1] (logits, background\n"
	       "last), reg f32[N,A,4], ground truth in network-input pixels boxes f32[N,M,4], labels\n"
	       "i32[N,M] (0..C-1, padding -1), nbox i32[N] (as augment --train makes them); meta size\n"
	       "(S; A must be the anchor count at S: 24560 at 512, 9620 at 320), and ids, indices,\n"
	       "epoch, step when present. Boxes without area are left out of the matching.\n"
	       "Out, to --grad (kind \"grad\"): cls f32[N,A,C+1], reg f32[N,A,4] = dloss/dpred; meta\n"
	       "ids, step, num_total_pos (the normaliser), loss_cls, loss_bbox, num_pos, num_neg,\n"
	       "images (forward --mpi combines the ranks' losses with them). To stdout (kind\n"
	       "\"loss\", no tensors): meta loss_cls, loss_bbox, loss,\n"
	       "num_pos, num_neg (hard negatives kept), images, and epoch, ids, indices, step.\n"
	       "Hard-negative ties go to the lower anchor index. Non-finite logits or deltas are an\n"
	       "error. Environment: TNS_LEVEL (zstd level), TNS_THREADS (images of a batch in\n"
	       "parallel; default 1).\n");
}

/* A regular --grad path that was never written becomes an empty stream (a FIFO never
 * opened is released by tool_fifo_watch). */
static void touch_grad(const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0 && S_ISFIFO(st.st_mode))
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	close(fd);
}

/* A failed write to stdout: if its reader went away, end as any pipeline stage does
 * (SIGPIPE, no message: the stage that died has said why); else the error. */
static _Noreturn void die_stdout(int saved_errno)
{
	if (saved_errno == EPIPE) {
		signal(SIGPIPE, SIG_DFL);
		raise(SIGPIPE);
	}
	die_err();
}

int main(int argc, char **argv)
{
	tool_init("loss");
	enum { O_CONFIG = 256, O_GRAD };
	static const struct option opts[] = {{"config", required_argument, 0, O_CONFIG},
					     {"grad", required_argument, 0, O_GRAD},
					     {"help", no_argument, 0, 'h'},
					     {0}};
	const char *config = NULL, *grad_path = NULL;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_CONFIG: config = optarg; break;
		case O_GRAD: grad_path = optarg; break;
		case 'h': usage(); return 0;
		case ':': usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (grad_path && !*grad_path)
		usage_error("--grad: empty path");
	if (grad_path)
		tool_fifo_watch(grad_path, 1);

	head_config m;
	loss_params p;
	head_config_default(&m);
	loss_params_default(&p);
	if (config && loss_config_load(&m, &p, config) < 0)
		die_err();

	/* a grad reader that goes away (forward died) must be an error message, not a
	 * silent SIGPIPE; stdout's reader going away still ends us by SIGPIPE (die_stdout) */
	signal(SIGPIPE, SIG_IGN);
	refuse_terminal_stdout();
	stream_reader *in = stream_open_read("-");
	stream_writer *out = stream_writer_new(stdout, "stdout", STREAM_LEVEL_DEFAULT), *gw = NULL;
	/* one thread unless asked: a batch takes ~12 ms of CPU at 512, and on the 2-core
	 * machine it was measured on a second thread did not pay against the other stages */
	const char *threads = getenv("TNS_THREADS");
	ssd_loss *l = ssd_loss_new(&m, &p, threads && *threads ? default_threads() : 1);
	if (!in || !out || !l)
		die_err();
	/* forward's grads records (10 MB at 320) only pass through here: no decoding */
	static const char *const decoded[] = {"pred", NULL};
	stream_decode_only(in, decoded);
	record *r;
	int rc;
	while ((rc = stream_read(in, &r)) > 0) {
		int out_rc = 0;
		if (strcmp(r->kind, "pred") != 0) {
			errno = 0;
			out_rc = stream_pass(out, r);
		} else {
			record *g = NULL, *lr = NULL;
			if (grad_path && !gw) {
				if (!(gw = stream_open_write(grad_path, STREAM_LEVEL_DEFAULT)))
					die_err();
				tool_fifo_opened(grad_path);
			}
			rc = ssd_loss_record(l, r, gw ? &g : NULL, &lr);
			if (rc < 0)
				err_wrap("%s: record %ld", stream_name(in), stream_count(in));
			else if (!gw || (rc = stream_write(gw, g)) == 0) {
				errno = 0;
				out_rc = stream_write(out, lr);
			}
			record_free(g);
			record_free(lr);
		}
		record_free(r);
		if (out_rc < 0)
			die_stdout(errno);
		if (rc < 0)
			die_err();
	}
	if (rc < 0)
		die_err();
	if (gw && stream_close_write(gw) < 0)
		die_err();
	if (grad_path && !gw)
		touch_grad(grad_path);
	errno = 0;
	if (stream_close_write(out) < 0)
		die_stdout(errno);
	stream_close_read(in);
	ssd_loss_free(l);
	close_stdout();
	return 0;
}
