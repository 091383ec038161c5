/* pkgjson.c — see pkgjson.h. */
#include "pkgjson.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *unscoped(const char *name)
{
	const char *slash = name[0] == '@' ? strchr(name, '/') : NULL;
	return slash ? slash + 1 : name;
}

static int bin_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n >= PKGJSON_BIN_MAX || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == '~' || c == '+' || c == '@'))
			return 0;
	}
	return 1;
}

/* A bin's file: relative, inside the package. */
static int bin_path_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n >= 1024 || s[0] == '/')
		return 0;
	for (const char *p = s; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return 0;
		p += len;
		while (*p == '/')
			p++;
	}
	return 1;
}

void pkgjson_main_bin(json_t *bins, const char *name, char out[PKGJSON_BIN_MAX])
{
	out[0] = '\0';
	const char *first = NULL, *key;
	json_t *v;
	json_object_foreach(bins, key, v)
	{
		if (!first)
			first = key;
		if (!strcmp(key, unscoped(name))) {
			snprintf(out, PKGJSON_BIN_MAX, "%s", key);
			return;
		}
	}
	if (first)
		snprintf(out, PKGJSON_BIN_MAX, "%s", first);
}

/* "bin" -> out->bins: a string names the unscoped package; entries npm
 * would not link go to out->ignored. */
static int read_bins(json_t *bin, pkgjson *out)
{
	const char *own = unscoped(out->name);
	int rc = 0;
	if (json_is_string(bin)) {
		if (bin_name_ok(own) && bin_path_ok(json_string_value(bin)))
			rc = json_object_set(out->bins, own, bin);
	} else if (json_is_object(bin)) {
		const char *k;
		json_t *v;
		json_object_foreach(bin, k, v)
		{
			if (json_is_string(v) && bin_name_ok(k) &&
			    bin_path_ok(json_string_value(v)))
				rc |= json_object_set(out->bins, k, v);
			else
				rc |= json_array_append_new(out->ignored, json_string(k));
		}
	}
	return rc;
}

/* A string member into buf: "" when absent or not a string; -1 when too long. */
static int copy_member(json_t *o, const char *field, char *buf, size_t cap, cx_err *err)
{
	json_t *v = json_object_get(o, field);
	buf[0] = '\0';
	if (!json_is_string(v))
		return 0;
	if (json_string_length(v) >= cap)
		return cx_err_set(err, 0, "\"%s\" is over %zu bytes", field, cap - 1);
	snprintf(buf, cap, "%s", json_string_value(v));
	return 0;
}

int pkgjson_parse(const char *data, size_t len, pkgjson *out, cx_err *err)
{
	memset(out, 0, sizeof *out);
	if (len > PKGJSON_MAX)
		return cx_err_set(err, 0, "over %d bytes", PKGJSON_MAX);
	json_error_t jerr;
	json_t *pj = json_loadb(data, len, 0, &jerr);
	if (!pj)
		return cx_err_set(err, 0, "line %d: %s", jerr.line, jerr.text);
	int rc = 0;
	if (!json_is_object(pj))
		rc = cx_err_set(err, 0, "not a JSON object");
	if (rc == 0)
		rc = copy_member(pj, "name", out->name, sizeof out->name, err);
	if (rc == 0)
		rc = copy_member(pj, "version", out->version, sizeof out->version, err);
	if (rc == 0) {
		out->bins = json_object();
		out->ignored = json_array();
		if (!out->bins || !out->ignored || read_bins(json_object_get(pj, "bin"), out) < 0)
			rc = cx_err_set(err, ENOMEM, "reading bins");
	}
	json_decref(pj);
	if (rc < 0) {
		pkgjson_free(out);
		return -1;
	}
	pkgjson_main_bin(out->bins, out->name, out->main_bin);
	return 0;
}

void pkgjson_free(pkgjson *pj)
{
	json_decref(pj->bins);
	json_decref(pj->ignored);
	memset(pj, 0, sizeof *pj);
}
