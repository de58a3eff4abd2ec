/* draw: detections drawn on an image with cairo (boxes, labels in a Debian font), and
 * the picture encoded as JPEG or PNG.
 *
 * A box is drawn as mmcv 1.x's imshow_det_bboxes draws it: its coordinates truncated
 * to integers (x1, y1, x2, y2), the outline covering pixel columns x1..x2 and rows
 * y1..y2 (clipped to the image), thickness pixels wide, inwards from those edges, with
 * no antialiasing, so the pixels a box touches follow from the dets exactly. Each
 * class has one colour (golden-angle hues); the label "class score" sits in a filled
 * box of that colour above the top-left corner (inside when there is no room above).
 * Ground truth, on request, is a dashed outline in the class colour under the
 * detections. Detections with score > score_thr are drawn, highest score last (on top).
 * Nothing here prints or exits. */
#ifndef DRAW_H
#define DRAW_H

#include <stdint.h>
#include <stdio.h>

#include "eval/dets_out.h"
#include "data/classes.h"

enum draw_format { DRAW_JPEG, DRAW_PNG };

typedef struct draw_style {
	double score_thr;
	int thickness;      /* pixels, >= 1 */
	int gt;             /* draw the ground truth boxes, dashed */
	double font_size;   /* pixels; <= 0: from the image size */
	enum draw_format format;
	int quality;        /* JPEG */
} draw_style;

/* The colour of class c as 0..255 RGB. */
void draw_class_colour(int c, unsigned char rgb[3]);

/* Draws v onto the RGB CHW image (u8 [3,h,w], h and w those of v) and writes the
 * picture to f. -1 (err). */
int draw_dets(FILE *f, const uint8_t *chw, const dets_view *v, const voc_classes *names, const draw_style *st);

/* Called once at exit by a tool that drew: frees cairo's and fontconfig's caches
 * (FcFini), so leak checkers see only real leaks. Nothing may draw after it. */
void draw_cleanup(void);

#endif
