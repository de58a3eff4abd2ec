#include "train/dist.h"

#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "core/err.h"
#include "kernels/layers.h"

static int joined, left, my_rank, nranks;
static double waited; /* seconds in collectives (dist_seconds) */

/* MPI counts are int: long buffers go in pieces. */
#define PIECE ((size_t)1 << 28)

static int mpi_error(const char *what, int rc)
{
	char msg[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
		snprintf(msg, sizeof msg, "error %d", rc);
	return err_set("MPI %s: %s", what, msg);
}

static void abort_unless_finalized(void)
{
	/* exit() before dist_finalize: a failure; the other ranks must not wait for us */
	if (joined && !left)
		MPI_Abort(MPI_COMM_WORLD, 1);
}

int dist_init(int *argc, char ***argv, int *rank, int *size)
{
	int rc = MPI_Init(argc, argv);
	if (rc != MPI_SUCCESS)
		return err_set("MPI_Init failed (error %d)", rc);
	/* errors come back as codes, so they reach the user as messages, then abort */
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nranks);
	joined = 1;
	atexit(abort_unless_finalized);
	*rank = my_rank;
	*size = nranks;
	return 0;
}

void dist_finalize(void)
{
	if (joined && !left) {
		left = 1;
		MPI_Finalize();
	}
}

double dist_seconds(void)
{
	return waited;
}

/* x = op over the ranks, in place, in pieces of at most PIECE elements */
static int allreduce(void *x, size_t n, size_t size, MPI_Datatype type, MPI_Op op)
{
	double t0 = MPI_Wtime();
	for (size_t i = 0; i < n; i += PIECE) {
		int k = (int)(n - i < PIECE ? n - i : PIECE);
		int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)x + i * size, k, type, op, MPI_COMM_WORLD);
		if (rc != MPI_SUCCESS)
			return mpi_error("Allreduce", rc);
	}
	waited += MPI_Wtime() - t0;
	return 0;
}

int dist_sum_f64(double *x, size_t n)
{
	return allreduce(x, n, sizeof *x, MPI_DOUBLE, MPI_SUM);
}

int dist_sum_f32(float *x, size_t n)
{
	return allreduce(x, n, sizeof *x, MPI_FLOAT, MPI_SUM);
}

int dist_max_f64(double *x, size_t n)
{
	return allreduce(x, n, sizeof *x, MPI_DOUBLE, MPI_MAX);
}

/* MPI's reduction of (count, mean, m2) triples: inout = in merged with inout */
static void merge_op(void *in, void *inout, int *len, MPI_Datatype *type)
{
	(void)type;
	batchnorm2d_merge_moments(inout, in, *len);
}

int dist_bn_moments(double *nmm, int c)
{
	static MPI_Datatype triple;
	static MPI_Op merge;
	if (!merge) {
		MPI_Type_contiguous(3, MPI_DOUBLE, &triple);
		MPI_Type_commit(&triple);
		MPI_Op_create(merge_op, 1, &merge);
	}
	/* merged on rank 0, then broadcast: every rank gets rank 0's bits (an allreduce
	 * may merge in another order on each rank) and the messages stay 3c doubles */
	double t0 = MPI_Wtime();
	int rc = MPI_Reduce(my_rank ? nmm : MPI_IN_PLACE, nmm, c, triple, merge, 0, MPI_COMM_WORLD);
	if (rc == MPI_SUCCESS)
		rc = MPI_Bcast(nmm, c, triple, 0, MPI_COMM_WORLD);
	waited += MPI_Wtime() - t0;
	return rc == MPI_SUCCESS ? 0 : mpi_error("BN statistics", rc);
}

int dist_all_have(int have)
{
	int *all = malloc((size_t)nranks * sizeof *all);
	if (!all)
		return err_set("out of memory");
	have = !!have;
	double t0 = MPI_Wtime();
	int rc = MPI_Allgather(&have, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD);
	waited += MPI_Wtime() - t0;
	if (rc != MPI_SUCCESS) {
		free(all);
		return mpi_error("Allgather", rc);
	}
	int other = -1, some = 0;
	for (int r = 0; r < nranks; r++) {
		some += all[r];
		if (all[r] != have && other < 0)
			other = r;
	}
	free(all);
	if (other >= 0)
		return err_set("rank %d has %s batch but rank %d has %s (uneven shards, or a stage of one rank stopped)",
			       my_rank, have ? "another" : "no other", other, have ? "none" : "one");
	return some > 0;
}

/* FNV-1a over 64-bit words, the tail bytes folded in: fast enough for every step's
 * params (10 MB), and any changed word changes it. */
static uint64_t hash_bytes(const void *bytes, size_t n)
{
	const unsigned char *p = bytes;
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h ^ n;
}

int dist_check_same(const void *bytes, size_t n, const char *what)
{
	uint64_t h = hash_bytes(bytes, n), *all = malloc((size_t)nranks * sizeof *all);
	if (!all)
		return err_set("out of memory");
	int rc = MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
	if (rc != MPI_SUCCESS) {
		free(all);
		return mpi_error("Allgather", rc);
	}
	int bad = -1;
	for (int r = 0; r < nranks && bad < 0; r++)
		if (all[r] != all[0])
			bad = r;
	uint64_t h0 = all[0], hb = bad >= 0 ? all[bad] : 0;
	free(all);
	if (bad >= 0)
		return err_set("%s differ across ranks: rank %d's hash %016llx, rank 0's %016llx", what, bad,
			       (unsigned long long)hb, (unsigned long long)h0);
	return 0;
}

int dist_gather_bytes(const void *mine, size_t n, void **all, size_t *total, size_t *counts)
{
	*all = NULL;
	*total = 0;
	unsigned long long mine_n = n, *ns = my_rank == 0 ? calloc((size_t)nranks, sizeof *ns) : NULL;
	if (my_rank == 0 && !ns)
		return err_set("out of memory");
	int rc = MPI_Gather(&mine_n, 1, MPI_UNSIGNED_LONG_LONG, ns, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
	if (rc != MPI_SUCCESS) {
		free(ns);
		return mpi_error("Gather", rc);
	}
	if (my_rank != 0) {
		/* point to point in pieces: a shard's bytes may pass 2 GB */
		for (size_t i = 0; i < n; i += PIECE) {
			int k = (int)(n - i < PIECE ? n - i : PIECE);
			if ((rc = MPI_Send((const char *)mine + i, k, MPI_BYTE, 0, 0, MPI_COMM_WORLD)) != MPI_SUCCESS)
				return mpi_error("Send", rc);
		}
		return 0;
	}
	size_t sum = 0;
	for (int r = 0; r < nranks; r++)
		sum += (size_t)ns[r];
	char *buf = malloc(sum ? sum : 1);
	if (!buf) {
		free(ns);
		return err_set("out of memory (%zu bytes of gathered records)", sum);
	}
	size_t at = 0;
	for (int r = 0; r < nranks; r++) {
		counts[r] = (size_t)ns[r];
		if (r == 0) {
			if (n)
				memcpy(buf, mine, n);
		} else {
			for (size_t i = 0; i < counts[r]; i += PIECE) {
				int k = (int)(counts[r] - i < PIECE ? counts[r] - i : PIECE);
				rc = MPI_Recv(buf + at + i, k, MPI_BYTE, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
				if (rc != MPI_SUCCESS) {
					free(buf);
					free(ns);
					return mpi_error("Recv", rc);
				}
			}
		}
		at += counts[r];
	}
	free(ns);
	*all = buf;
	*total = sum;
	return 0;
}

static const model_sync sync_hooks = {
	.sum = dist_sum_f64,
	.sum_f32 = dist_sum_f32,
	.moments = dist_bn_moments,
	.max = dist_max_f64,
};

const model_sync *dist_model_sync(void)
{
	static model_sync s;
	s = sync_hooks;
	s.replicas = nranks;
	return &s;
}
