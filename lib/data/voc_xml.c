#include "data/voc_xml.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#include "core/array.h"
#include "core/err.h"

/* The elements we read, by their place in the tree; everything else is T_OTHER, so
 * e.g. the <name> and <bndbox> of a VOC2012 <part> inside an <object> are ignored. */
enum tag { T_OTHER, T_ANNOTATION, T_SIZE, T_WIDTH, T_HEIGHT, T_OBJECT, T_NAME, T_DIFFICULT, T_BNDBOX, T_COORD };

#define XML_MAXDEPTH 32
#define XML_TEXTMAX 256

struct xml_state {
	XML_Parser parser;
	const voc_classes *classes;
	voc_annotation *a;
	long cap;
	int depth;
	enum tag tags[XML_MAXDEPTH];
	int coord;              /* 0..3 while in xmin..ymax */
	char text[XML_TEXTMAX]; /* text of the leaf being read */
	size_t tlen;
	int collecting;
	/* the object being read */
	char name[XML_TEXTMAX];
	int has_name, has_box, have_coord[4];
	voc_object obj;
	int failed;
};

static const char *const COORDS[4] = {"xmin", "ymin", "xmax", "ymax"};

static void xml_fail(struct xml_state *s, const char *fmt, ...) ERR_PRINTF(2, 3);
static void xml_fail(struct xml_state *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	err_set("line %lu: %s", (unsigned long)XML_GetCurrentLineNumber(s->parser), msg);
	s->failed = 1;
	XML_StopParser(s->parser, XML_FALSE);
}

/* Python's int(float(text)): surrounding blanks allowed, truncated toward zero. */
static int parse_coord(const char *text, int *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
		end++;
	if (end == text || *end || errno || !isfinite(v) || fabs(v) > 1e9)
		return -1;
	*out = (int)v;
	return 0;
}

/* Python's int(text). */
static int parse_int(const char *text, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
		end++;
	if (end == text || *end || errno || v < INT_MIN || v > INT_MAX)
		return -1;
	*out = (int)v;
	return 0;
}

/* Once the parse has failed, the handlers do nothing: expat may still deliver the end
 * of an element whose start was refused (found by fuzz/fuzz_voc_xml.c: <ai/> as the
 * root took depth to -1 and read tags[-1]). */
static void XMLCALL xml_start(void *ud, const XML_Char *el, const XML_Char **attr)
{
	struct xml_state *s = ud;
	if (s->failed)
		return;
	enum tag parent = s->depth > 0 && s->depth <= XML_MAXDEPTH ? s->tags[s->depth - 1] : T_OTHER;
	enum tag t = T_OTHER;
	if (s->depth == 0) {
		if (strcmp(el, "annotation")) {
			xml_fail(s, "root element is <%s>, not <annotation>", el);
			return;
		}
		t = T_ANNOTATION;
	} else if (parent == T_ANNOTATION) {
		if (!strcmp(el, "size"))
			t = T_SIZE;
		else if (!strcmp(el, "object"))
			t = T_OBJECT;
	} else if (parent == T_SIZE) {
		if (!strcmp(el, "width"))
			t = T_WIDTH;
		else if (!strcmp(el, "height"))
			t = T_HEIGHT;
	} else if (parent == T_OBJECT) {
		if (!strcmp(el, "name"))
			t = T_NAME;
		else if (!strcmp(el, "difficult"))
			t = T_DIFFICULT;
		else if (!strcmp(el, "bndbox"))
			t = T_BNDBOX;
	} else if (parent == T_BNDBOX) {
		for (int i = 0; i < 4; i++)
			if (!strcmp(el, COORDS[i])) {
				t = T_COORD;
				s->coord = i;
			}
	}
	if (t == T_OBJECT) {
		memset(&s->obj, 0, sizeof s->obj);
		s->has_name = s->has_box = 0;
		memset(s->have_coord, 0, sizeof s->have_coord);
	}
	if (t == T_BNDBOX)
		s->has_box = 1;
	s->collecting = t == T_WIDTH || t == T_HEIGHT || t == T_NAME || t == T_DIFFICULT || t == T_COORD;
	s->tlen = 0;
	s->text[0] = 0;
	if (s->depth < XML_MAXDEPTH)
		s->tags[s->depth] = t;
	s->depth++;
}

static void XMLCALL xml_text(void *ud, const XML_Char *text, int len)
{
	struct xml_state *s = ud;
	if (s->failed || !s->collecting)
		return;
	if (s->tlen + (size_t)len >= XML_TEXTMAX) {
		xml_fail(s, "text longer than %d bytes", XML_TEXTMAX - 1);
		return;
	}
	memcpy(s->text + s->tlen, text, (size_t)len);
	s->tlen += (size_t)len;
	s->text[s->tlen] = 0;
}

static void end_object(struct xml_state *s)
{
	int n = s->a->nobj + 1;
	if (!s->has_name) {
		xml_fail(s, "object %d has no <name>", n);
		return;
	}
	if (!s->has_box) {
		xml_fail(s, "object %d (%s) has no <bndbox>", n, s->name);
		return;
	}
	for (int i = 0; i < 4; i++)
		if (!s->have_coord[i]) {
			xml_fail(s, "object %d (%s) has no <%s>", n, s->name, COORDS[i]);
			return;
		}
	s->obj.label = voc_class_index(s->classes, s->name);
	if (s->obj.label < 0) {
		xml_fail(s, "unknown class '%s'", s->name);
		return;
	}
	if (array_grow(&s->a->obj, &s->cap, n, sizeof *s->a->obj) < 0) {
		xml_fail(s, "out of memory");
		return;
	}
	s->a->obj[s->a->nobj++] = s->obj;
}

static void XMLCALL xml_end(void *ud, const XML_Char *el)
{
	struct xml_state *s = ud;
	if (s->failed)
		return;
	s->depth--;
	enum tag t = s->depth < XML_MAXDEPTH ? s->tags[s->depth] : T_OTHER;
	const char *text = s->text;
	int v;
	switch (t) {
	case T_WIDTH:
	case T_HEIGHT:
		if (parse_int(text, &v) < 0 || v < 0) {
			xml_fail(s, "bad <%s> '%s'", el, text);
			return;
		}
		*(t == T_WIDTH ? &s->a->width : &s->a->height) = v;
		break;
	case T_NAME: {
		/* surrounding blanks are not part of the name */
		size_t a = strspn(text, " \t\r\n"), b = strlen(text);
		while (b > a && strchr(" \t\r\n", text[b - 1]))
			b--;
		snprintf(s->name, sizeof s->name, "%.*s", (int)(b - a), text + a);
		s->has_name = 1;
		break;
	}
	case T_DIFFICULT:
		if (parse_int(text, &v) < 0) {
			xml_fail(s, "bad <difficult> '%s'", text);
			return;
		}
		s->obj.difficult = v != 0;
		break;
	case T_COORD:
		if (parse_coord(text, &s->obj.box[s->coord]) < 0) {
			xml_fail(s, "bad <%s> '%s'", COORDS[s->coord], text);
			return;
		}
		s->have_coord[s->coord] = 1;
		break;
	case T_OBJECT:
		end_object(s);
		break;
	default:
		break;
	}
	s->collecting = 0;
}

void voc_annotation_clear(voc_annotation *a)
{
	free(a->obj);
	memset(a, 0, sizeof *a);
}

int voc_parse_xml(const char *xml, size_t len, const voc_classes *c, voc_annotation *out)
{
	memset(out, 0, sizeof *out);
	if (len > INT_MAX)
		return err_set("annotation too large");
	struct xml_state s = {.classes = c, .a = out};
	s.parser = XML_ParserCreate(NULL);
	if (!s.parser)
		return err_set("out of memory");
	XML_SetUserData(s.parser, &s);
	XML_SetElementHandler(s.parser, xml_start, xml_end);
	XML_SetCharacterDataHandler(s.parser, xml_text);
	int ok = XML_Parse(s.parser, xml, (int)len, 1) == XML_STATUS_OK;
	if (!ok && !s.failed)
		err_set("malformed XML: line %lu: %s", (unsigned long)XML_GetCurrentLineNumber(s.parser),
			XML_ErrorString(XML_GetErrorCode(s.parser)));
	XML_ParserFree(s.parser);
	return ok && !s.failed ? 0 : -1;
}

int voc_check_boxes(const voc_annotation *a, int width, int height)
{
	for (int i = 0; i < a->nobj; i++) {
		const int *b = a->obj[i].box;
		const char *why = NULL;
		if (b[0] < 0 || b[1] < 0)
			why = "has a negative coordinate";
		else if (b[2] > width || b[3] > height)
			why = "lies outside the image";
		else if (b[0] > b[2] || b[1] > b[3])
			why = "has min > max";
		if (why) {
			if (width == INT_MAX)
				return err_set("object %d: box [%d,%d,%d,%d] %s", i + 1, b[0], b[1], b[2], b[3], why);
			return err_set("object %d: box [%d,%d,%d,%d] %s (%dx%d)", i + 1, b[0], b[1], b[2], b[3], why, width,
				       height);
		}
	}
	return 0;
}
