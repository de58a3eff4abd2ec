/* Unit tests of lib/core/bytes.h: little-endian integers of 1 to 8 bytes. */
#include <stdint.h>

#include "check.h"
#include "core/bytes.h"

static void test_load_le(void)
{
	static const unsigned char b[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x88};
	CHECK(load_le(b, 1) == 0x01);
	CHECK(load_le(b, 2) == 0x0201);
	CHECK(load_le(b, 4) == 0x04030201u);
	CHECK(load_le(b, 8) == UINT64_C(0x8807060504030201));
	CHECK(load_le(b, 0) == 0);
}

int main(void)
{
	test_load_le();
	return check_done("test_bytes");
}
