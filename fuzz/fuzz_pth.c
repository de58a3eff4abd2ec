/* Fuzzes the .pth reader (lib/nn/pth.h's public API: pth_read_mem): a zip holding a
 * pickle and raw storages, as torch.save writes it. */
#include <stdint.h>
#include <stdlib.h>

#include "nn/pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	record *r = pth_read_mem(data, size, "fuzz.pth");
	if (r)
		for (int i = 0; i < r->ntensors; i++)
			if (!r->tensors[i].data && tensor_nbytes(&r->tensors[i]))
				abort(); /* every tensor handed out has its bytes */
	record_free(r);
	return 0;
}
