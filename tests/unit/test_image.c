/* Unit tests of lib/data/image.c: format sniffing, sizes, damaged input. */
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "data/image.h"

static void test_image(void)
{
	static const unsigned char png_sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	static const unsigned char jpeg_soi[] = {0xff, 0xd8, 0xff, 0xe0};
	CHECK(image_sniff(png_sig, sizeof png_sig) == IMAGE_PNG);
	CHECK(image_sniff(jpeg_soi, sizeof jpeg_soi) == IMAGE_JPEG);
	CHECK(image_sniff("GIF89a", 6) == IMAGE_UNKNOWN);
	int w, h;
	CHECK(image_size("GIF89a", 6, &w, &h) < 0 && strstr(err_msg(), "not a JPEG or PNG"));
	CHECK(image_size("", 0, &w, &h) < 0 && strstr(err_msg(), "empty"));
	/* headers cut short at every length: an error, never a crash */
	int all_failed = 1;
	for (size_t n = 0; n <= sizeof jpeg_soi; n++)
		all_failed &= image_size(jpeg_soi, n, &w, &h) < 0;
	for (size_t n = 0; n <= sizeof png_sig; n++)
		all_failed &= image_size(png_sig, n, &w, &h) < 0;
	CHECK(all_failed);
	/* a PNG header claiming 2^31 x 1 pixels */
	unsigned char big[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
				 0x80, 0, 0, 0, 0, 0, 0, 1, 8, 2, 0, 0, 0};
	CHECK(image_size(big, sizeof big, &w, &h) < 0);
	/* a valid-looking IHDR but no image data */
	unsigned char tiny[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
				  0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0, 0, 0};
	unsigned char chw[12];
	CHECK(image_size(tiny, sizeof tiny, &w, &h) == 0 && w == 2 && h == 2);
	CHECK(image_decode_chw(tiny, sizeof tiny, chw, 2, 2) < 0 && strstr(err_msg(), "corrupt PNG"));
}

int main(void)
{
	test_image();
	return check_done("test_image");
}
