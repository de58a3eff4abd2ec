/* Unit tests of lib/data/voc_reader.c: the per-epoch shuffle seeds. Reading datasets
 * (orders, shards, threads, bad images) is tested on real data in
 * tests/bats/voc-decode.bats. */
#include <stdint.h>

#include "check.h"
#include "data/voc_reader.h"

static void test_epoch_seed(void)
{
	CHECK(voc_epoch_seed(1, 0) != voc_epoch_seed(1, 1) && voc_epoch_seed(1, 0) != voc_epoch_seed(2, 0));
	CHECK(voc_epoch_seed(7, 3) == voc_epoch_seed(7, 3));
}

int main(void)
{
	test_epoch_seed();
	return check_done("test_voc_reader");
}
