/* cconfig.c — assemble a session's config from the user's settings, and the
 * per-session cache of it.  See cconfig.h; record shapes are in settings.h;
 * where each setting lands is docs/configuration.md.
 *
 * Why a pure assembly step: the message path must not read the store, open
 * secrets or build JSON when nothing changed.  Assembling once produces the
 * exact bytes of every file and their hashes, so "did anything change?" is a
 * compare of two 64-char strings, and the sandbox sync (sync.c) writes only
 * files whose hash moved. */
#include "cconfig.h"
#include "guard.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "npmcache.h"

#define HOME "/home/agent"
#define BASE_PATH CCONFIG_BASE_PATH
#define MCP_MOUNT_DIR "/cortex/mcp"

/* ---- hashing ---- */

static void hex_of(const unsigned char *d, size_t n, char *out)
{
	sodium_bin2hex(out, 2 * n + 1, d, n);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, data, len);
	hex_of(h, sizeof h, out);
}

/* ---- building ---- */

struct builder {
	cconfig *c;
	size_t cap_files, cap_pkgs;
	json_t *mcp;    /* mcpServers object for ~/.claude.json */
	json_t *prov;   /* the chosen provider row (borrowed from rows) */
	const char *prov_name;
	char *prov_key; /* opened provider key */
	size_t prov_key_len;
	char **gvals;   /* opened secret values, for the stream guard (wiped after) */
	size_t *glens;
	size_t n_gvals;
};

/* Keep a copy of a secret value for the stream guard (guard.h). */
static int guard_keep(struct builder *b, const char *v, size_t len, cx_err *err)
{
	if (len < GUARD_MIN_LEN)
		return 0;
	char **nv = realloc(b->gvals, (b->n_gvals + 1) * sizeof *nv);
	if (nv)
		b->gvals = nv;
	size_t *nl = nv ? realloc(b->glens, (b->n_gvals + 1) * sizeof *nl) : NULL;
	if (nl)
		b->glens = nl;
	char *copy = nl ? malloc(len) : NULL;
	if (!copy)
		return cx_err_set(err, ENOMEM, "stream guard");
	memcpy(copy, v, len);
	b->gvals[b->n_gvals] = copy;
	b->glens[b->n_gvals++] = len;
	return 0;
}

void cconfig_unref(cconfig *c)
{
	if (!c || --c->refs > 0)
		return;
	for (size_t i = 0; i < c->n_files; i++) {
		if (c->files[i].secret)
			sodium_memzero(c->files[i].data, c->files[i].len);
		free(c->files[i].data);
	}
	free(c->files);
	free(c->pkgs);
	json_decref(c->env);
	json_decref(c->agent_env);
	json_decref(c->mcp);
	guard_free(c->guard);
	if (c->prov_key)
		secrets_free(c->prov_key, c->prov_key_len);
	free(c);
}

cconfig *cconfig_ref(cconfig *c)
{
	if (c)
		c->refs++;
	return c;
}

static int add_file(struct builder *b, const char *path, const char *data, size_t len, unsigned mode,
		    int secret, cx_err *err)
{
	cconfig *c = b->c;
	for (size_t i = 0; i < c->n_files; i++)
		if (!strcmp(c->files[i].path, path))
			return cx_err_set(err, EEXIST, "two settings write %s", path);
	if (c->n_files == b->cap_files) {
		size_t nc = b->cap_files ? b->cap_files * 2 : 8;
		struct cfile *nf = realloc(c->files, nc * sizeof *nf);
		if (!nf)
			return cx_err_set(err, ENOMEM, "config files");
		c->files = nf;
		b->cap_files = nc;
	}
	struct cfile *f = &c->files[c->n_files];
	memset(f, 0, sizeof *f);
	if ((size_t)snprintf(f->path, sizeof f->path, "%s", path) >= sizeof f->path)
		return cx_err_set(err, ENAMETOOLONG, "path %.100s...", path);
	f->data = malloc(len + 1);
	if (!f->data)
		return cx_err_set(err, ENOMEM, "config file");
	memcpy(f->data, data, len);
	f->data[len] = '\0';
	f->len = len;
	f->mode = mode;
	f->secret = secret;
	crypto_hash_sha256_state st;
	unsigned char h[crypto_hash_sha256_BYTES], m[4] = {(unsigned char)(mode >> 8), (unsigned char)mode, 0, 0};
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, m, sizeof m);
	crypto_hash_sha256_update(&st, (const unsigned char *)data, len);
	crypto_hash_sha256_final(&st, h);
	hex_of(h, sizeof h, f->hash);
	c->n_files++;
	return 0;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int is_npx(const char *cmd)
{
	const char *base = cmd ? strrchr(cmd, '/') : NULL;
	base = base ? base + 1 : cmd;
	return base && !strcmp(base, "npx");
}

/* Does this npx argument name the package (name, or name@anything)? */
static int names_pkg(const char *arg, const char *spec)
{
	const char *at = strrchr(spec, '@');
	size_t nlen = at && at != spec ? (size_t)(at - spec) : strlen(spec);
	return !strncmp(arg, spec, nlen) && (arg[nlen] == '\0' || arg[nlen] == '@');
}

/* One mcpServers entry: packaged stdio servers point at the cached package. */
static int add_mcp(struct builder *b, const char *name, json_t *row, cpkg_lookup_fn lookup, cx_err *err)
{
	cconfig *c = b->c;
	json_t *e = json_deep_copy(row);
	if (!e)
		return cx_err_set(err, ENOMEM, "mcp %s", name);
	const char *spec = jstr(row, "package");
	if (spec) {
		if (c->n_pkgs == b->cap_pkgs) {
			size_t nc = b->cap_pkgs ? b->cap_pkgs * 2 : 4;
			struct cpkg *np = realloc(c->pkgs, nc * sizeof *np);
			if (!np) {
				json_decref(e);
				return cx_err_set(err, ENOMEM, "mcp packages");
			}
			c->pkgs = np;
			b->cap_pkgs = nc;
		}
		struct cpkg *p = &c->pkgs[c->n_pkgs++];
		memset(p, 0, sizeof *p);
		snprintf(p->spec, sizeof p->spec, "%s", spec);
		char bin[128] = "";
		if (!lookup || !lookup(p, bin)) {
			/* Not installed yet: the server is left out until it is (the
			 * install's completion marks this config dirty). */
			p->key[0] = '\0';
			c->pkgs_missing++;
			json_decref(e);
			return 0;
		}
		snprintf(p->mount, sizeof p->mount, "p-%.16s", p->key);
		const char *cmd = jstr(row, "command");
		if (!cmd || is_npx(cmd)) {
			if (!bin[0]) {
				json_decref(e);
				return cx_err_set(err, ENOEXEC, "mcp %s: package %s has no bin to run", name, spec);
			}
			char path[400];
			snprintf(path, sizeof path, MCP_MOUNT_DIR "/%s/node_modules/.bin/%s", p->mount, bin);
			json_object_set_new(e, "command", json_string(path));
			/* npx -y pkg args... -> bin args... */
			json_t *args = json_object_get(row, "args"), *na = json_array();
			size_t i;
			json_t *a;
			int dropped_pkg = !cmd;
			json_array_foreach(args, i, a)
			{
				const char *s = json_string_value(a);
				if (!dropped_pkg && s && (!strcmp(s, "-y") || !strcmp(s, "--yes")))
					continue;
				if (!dropped_pkg && s && names_pkg(s, spec)) {
					dropped_pkg = 1;
					continue;
				}
				json_array_append(na, a);
			}
			json_object_set_new(e, "args", na);
		}
		json_object_del(e, "package");
	}
	json_object_set_new(b->mcp, name, e);
	return 0;
}

/* "~/rel" -> "/home/agent/rel" (settings.c validated rel). */
static int home_path(const char *tilde, char *out, size_t cap)
{
	if (strncmp(tilde, "~/", 2))
		return -1;
	return (size_t)snprintf(out, cap, HOME "/%s", tilde + 2) >= cap ? -1 : 0;
}

static int add_secret(struct builder *b, const char *user, const char *name, json_t *row,
		      const secrets_key *k, cx_err *err)
{
	const char *sealed = jstr(row, "sealed");
	if (!sealed)
		return cx_err_set(err, EBADMSG, "secret %s: record has no sealed value", name);
	char ad[128];
	snprintf(ad, sizeof ad, SET_AD_SECRET "%s", name);
	char *pt = NULL;
	size_t len = 0;
	if (secrets_open(k, user, ad, sealed, &pt, &len, err) < 0)
		return cx_err_wrap(err, "secret %s", name);
	int rc = 0;
	const char *env = jstr(row, "env"), *file = jstr(row, "file");
	/* A brokered secret: the sandbox gets the placeholder wherever the value
	 * would go; the egress proxy swaps it back for the secret's hosts only
	 * (egress/broker.h).  The value is still kept for the stream guard. */
	char ph[SECRETS_PLACEHOLDER_LEN + 1];
	const char *put = pt;
	size_t put_len = len;
	if (json_object_get(row, "broker")) {
		if (secrets_placeholder(k, user, name, ph, err) < 0) {
			secrets_free(pt, len);
			return cx_err_wrap(err, "secret %s", name);
		}
		put = ph;
		put_len = strlen(ph);
	}
	if (env)
		json_object_set_new(b->c->env, env, json_stringn(put, put_len));
	if (guard_keep(b, pt, len, err) < 0) {
		secrets_free(pt, len);
		return -1;
	}
	if (file) {
		char path[512];
		if (home_path(file, path, sizeof path) < 0)
			rc = cx_err_set(err, EINVAL, "secret %s: bad file %.100s", name, file);
		else
			rc = add_file(b, path, put, put_len, 0600, 1, err);
	}
	secrets_free(pt, len);
	return rc;
}

int cconfig_secret(store *st, const secrets_key *k, const char *user, const char *name, char **out,
		   size_t *len, cx_err *err)
{
	char key[400], ad[160];
	snprintf(key, sizeof key, "settings/%s/" SET_AD_SECRET "%s", user, name);
	char *v = NULL;
	size_t vl = 0;
	if (store_get(st, key, &v, &vl, err) < 0)
		return err->code == ENOENT ? cx_err_set(err, ENOENT, "secret '%s' is not set", name)
					   : cx_err_wrap(err, "secret %s", name);
	json_t *row = json_loadb(v, vl, 0, NULL);
	free(v);
	const char *sealed = jstr(row, "sealed");
	snprintf(ad, sizeof ad, SET_AD_SECRET "%s", name);
	int rc = sealed ? secrets_open(k, user, ad, sealed, out, len, err)
			: cx_err_set(err, EBADMSG, "secret %s: record has no sealed value", name);
	json_decref(row);
	return rc;
}

static int add_user(struct builder *b, json_t *row, cx_err *err)
{
	const char *md = jstr(row, "claude_md");
	if (md && add_file(b, HOME "/.claude/CLAUDE.md", md, strlen(md), 0644, 0, err) < 0)
		return -1;
	const char *model = jstr(row, "model");
	if (model)
		snprintf(b->c->model, sizeof b->c->model, "%s", model);
	const char *pm = jstr(row, "permission_mode");
	if (pm)
		snprintf(b->c->perm_mode, sizeof b->c->perm_mode, "%s", pm);
	const char *k;
	json_t *v;
	json_object_foreach(json_object_get(row, "env"), k, v)
	{
		if (json_is_string(v))
			json_object_set(b->c->env, k, v);
	}
	(void)err;
	return 0;
}

static int add_plugin(struct builder *b, const char *name, json_t *row, cx_err *err)
{
	static const char *const kinds[] = {"agents", "commands", "rules"};
	for (size_t i = 0; i < 3; i++) {
		const char *f;
		json_t *v;
		json_object_foreach(json_object_get(row, kinds[i]), f, v)
		{
			const char *txt = json_string_value(v);
			char path[512];
			if (!txt)
				continue;
			snprintf(path, sizeof path, HOME "/.claude/%s/%s/%s", kinds[i], name, f);
			if (add_file(b, path, txt, json_string_length(v), 0644, 0, err) < 0)
				return cx_err_wrap(err, "plugin %s", name);
		}
	}
	return 0;
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct cfile *)a)->path, ((const struct cfile *)b)->path);
}
static int cmp_pkg(const void *a, const void *b)
{
	return strcmp(((const struct cpkg *)a)->spec, ((const struct cpkg *)b)->spec);
}

/* The live part (what a hot agent takes by control request) and the base
 * (what it reads only at start).  ~/.claude.json is left out of the base: the
 * agent runs with --strict-mcp-config and gets its servers by mcp_set_servers.
 * PATH is left out too: it changes only with the MCP packages, whose servers
 * are named by absolute path (a hot agent's own PATH gains a new package's
 * bins at its next start). */
static void finish_split_hashes(cconfig *c)
{
	crypto_hash_sha256_state st;
	unsigned char h[crypto_hash_sha256_BYTES];
	char *mcp = c->mcp ? json_dumps(c->mcp, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	sha256_hex(mcp ? mcp : "", mcp ? strlen(mcp) : 0, c->mcp_hash);
	free(mcp);
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const unsigned char *)c->model, strlen(c->model) + 1);
	crypto_hash_sha256_update(&st, (const unsigned char *)c->perm_mode, strlen(c->perm_mode) + 1);
	crypto_hash_sha256_update(&st, (const unsigned char *)c->mcp_hash, 64);
	crypto_hash_sha256_final(&st, h);
	hex_of(h, sizeof h, c->live_hash);

	crypto_hash_sha256_init(&st);
	for (size_t i = 0; i < c->n_files; i++) {
		if (!strcmp(c->files[i].path, HOME "/.claude.json"))
			continue;
		crypto_hash_sha256_update(&st, (const unsigned char *)c->files[i].path, strlen(c->files[i].path) + 1);
		crypto_hash_sha256_update(&st, (const unsigned char *)c->files[i].hash, 64);
	}
	json_t *env = json_copy(c->env);
	json_object_del(env, "PATH");
	char *txt = env ? json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(env);
	if (txt) {
		crypto_hash_sha256_update(&st, (const unsigned char *)txt, strlen(txt));
		sodium_memzero(txt, strlen(txt)); /* holds secret values */
		free(txt);
	}
	crypto_hash_sha256_final(&st, h);
	hex_of(h, sizeof h, c->base_hash);
}

/* The three part hashes, then the whole. */
static void finish_hashes(cconfig *c)
{
	crypto_hash_sha256_state st;
	unsigned char h[crypto_hash_sha256_BYTES];

	if (c->n_files) /* qsort(NULL, 0) is undefined behaviour */
		qsort(c->files, c->n_files, sizeof *c->files, cmp_file);
	crypto_hash_sha256_init(&st);
	for (size_t i = 0; i < c->n_files; i++) {
		crypto_hash_sha256_update(&st, (const unsigned char *)c->files[i].path, strlen(c->files[i].path) + 1);
		crypto_hash_sha256_update(&st, (const unsigned char *)c->files[i].hash, 64);
	}
	crypto_hash_sha256_final(&st, h);
	hex_of(h, sizeof h, c->files_hash);

	if (c->n_pkgs)
		qsort(c->pkgs, c->n_pkgs, sizeof *c->pkgs, cmp_pkg);
	crypto_hash_sha256_init(&st);
	for (size_t i = 0; i < c->n_pkgs; i++) {
		crypto_hash_sha256_update(&st, (const unsigned char *)c->pkgs[i].spec, strlen(c->pkgs[i].spec) + 1);
		crypto_hash_sha256_update(&st, (const unsigned char *)c->pkgs[i].key, strlen(c->pkgs[i].key) + 1);
	}
	crypto_hash_sha256_final(&st, h);
	hex_of(h, sizeof h, c->pkgs_hash);

	char *env = json_dumps(c->env, JSON_COMPACT | JSON_SORT_KEYS);
	crypto_hash_sha256_init(&st);
	if (env)
		crypto_hash_sha256_update(&st, (const unsigned char *)env, strlen(env));
	crypto_hash_sha256_update(&st, (const unsigned char *)c->model, strlen(c->model) + 1);
	crypto_hash_sha256_final(&st, h);
	if (env) {
		sodium_memzero(env, strlen(env)); /* holds secret values */
		free(env);
	}
	hex_of(h, sizeof h, c->env_hash);

	char all[3 * 64];
	memcpy(all, c->files_hash, 64);
	memcpy(all + 64, c->pkgs_hash, 64);
	memcpy(all + 128, c->env_hash, 64);
	sha256_hex(all, sizeof all, c->all_hash);
	finish_split_hashes(c);
}

int cconfig_assemble(const char *user, const store_kv *kv, size_t n, const secrets_key *k,
		     cpkg_lookup_fn lookup, cconfig **out, cx_err *err)
{
	if (sodium_init() < 0)
		return cx_err_set(err, 0, "libsodium init");
	struct builder b = {0};
	b.c = calloc(1, sizeof *b.c);
	if (!b.c)
		return cx_err_set(err, ENOMEM, "config");
	b.c->refs = 1;
	b.c->env = json_object();
	b.mcp = json_object();
	char prefix[128];
	int plen = snprintf(prefix, sizeof prefix, "settings/%s/", user);
	int rc = 0;
	json_t **rows = calloc(n ? n : 1, sizeof *rows);
	if (!rows || !b.c->env || !b.mcp) {
		rc = cx_err_set(err, ENOMEM, "config");
		goto out;
	}
	/* Parse every row first; the provider and the user row apply after the
	 * others so their precedence does not depend on key order. */
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (strncmp(kv[i].key, prefix, (size_t)plen))
			continue; /* not this user's: never mixed in */
		rows[i] = json_loadb(kv[i].val, kv[i].len, 0, NULL);
		if (!json_is_object(rows[i]))
			rc = cx_err_set(err, EBADMSG, "settings row %s is not a JSON object", kv[i].key);
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (!rows[i])
			continue;
		const char *rest = kv[i].key + plen;
		if (!strncmp(rest, "mcp/", 4))
			rc = add_mcp(&b, rest + 4, rows[i], lookup, err);
		else if (!strncmp(rest, "secrets/", 8))
			rc = add_secret(&b, user, rest + 8, rows[i], k, err);
		else if (!strncmp(rest, "plugins/", 8))
			rc = add_plugin(&b, rest + 8, rows[i], err);
		else if (!strncmp(rest, "ai-providers/", 13)) {
			/* "default" wins; otherwise the first by name (rows are in key order). */
			if (!b.prov || !strcmp(rest + 13, "default")) {
				if (!b.prov || strcmp(b.prov_name, "default")) {
					b.prov = rows[i];
					b.prov_name = rest + 13;
				}
			}
		}
	}
	if (rc == 0 && b.prov) {
		const char *sealed = jstr(b.prov, "sealed_key");
		char ad[128];
		snprintf(ad, sizeof ad, SET_AD_PROVIDER "%s", b.prov_name);
		if (sealed && secrets_open(k, user, ad, sealed, &b.prov_key, &b.prov_key_len, err) < 0)
			rc = cx_err_wrap(err, "ai-provider %s", b.prov_name);
		if (rc == 0) {
			const char *url = jstr(b.prov, "base_url"), *model = jstr(b.prov, "model");
			/* Kept out of env: the gateway uses them; agent_env_of() puts them in
			 * the agent's env only when the gateway is off. */
			if (url)
				snprintf(b.c->prov_url, sizeof b.c->prov_url, "%s", url);
			if (model)
				snprintf(b.c->model, sizeof b.c->model, "%s", model);
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		if (rows[i] && !strcmp(kv[i].key + plen, "user"))
			rc = add_user(&b, rows[i], err);
	if (rc == 0) {
		/* Packaged servers' bins first on PATH, in package order. */
		char path[4096];
		size_t off = 0;
		path[0] = '\0';
		for (size_t i = 0; i < b.c->n_pkgs; i++)
			if (b.c->pkgs[i].key[0] && off < sizeof path)
				off += (size_t)snprintf(path + off, sizeof path - off,
							MCP_MOUNT_DIR "/%s/node_modules/.bin:", b.c->pkgs[i].mount);
		if (off < sizeof path)
			snprintf(path + off, sizeof path - off, "%s", BASE_PATH);
		json_object_set_new(b.c->env, "PATH", json_string(path));
		b.c->mcp = json_incref(b.mcp);
		json_t *cj = json_pack("{s:O}", "mcpServers", b.mcp);
		char *txt = json_dumps(cj, JSON_INDENT(2) | JSON_SORT_KEYS);
		json_decref(cj);
		rc = txt ? add_file(&b, HOME "/.claude.json", txt, strlen(txt), 0600, 0, err)
			 : cx_err_set(err, ENOMEM, "mcp config");
		free(txt);
	}
	if (rc == 0 && b.prov_key)
		rc = guard_keep(&b, b.prov_key, b.prov_key_len, err);
	if (rc == 0 && b.prov_key) { /* ownership moves to the config */
		b.c->prov_key = b.prov_key;
		b.c->prov_key_len = b.prov_key_len;
		b.prov_key = NULL;
	}
	if (rc == 0)
		rc = guard_build(&b.c->guard, (const char *const *)b.gvals, b.glens, b.n_gvals, err);
	if (rc == 0)
		finish_hashes(b.c);
out:
	for (size_t i = 0; i < b.n_gvals; i++) {
		sodium_memzero(b.gvals[i], b.glens[i]);
		free(b.gvals[i]);
	}
	free(b.gvals);
	free(b.glens);
	for (size_t i = 0; rows && i < n; i++)
		json_decref(rows[i]);
	free(rows);
	json_decref(b.mcp);
	if (b.prov_key)
		secrets_free(b.prov_key, b.prov_key_len);
	if (rc < 0) {
		cconfig_unref(b.c);
		return -1;
	}
	*out = b.c;
	return 0;
}

/* ---- the cache ---- */

static ccache_stats stats;

enum ccache_how ccache_check(const struct ccache_entry *e, uint64_t now_us, uint64_t ttl_us)
{
	if (!e->cfg)
		return CC_MISS;
	if (e->dirty)
		return CC_DIRTY;
	if (now_us - e->at_us >= ttl_us)
		return CC_EXPIRED;
	return CC_HIT;
}

void ccache_adopt(struct ccache_entry *e, const struct ccache_entry *from)
{
	if (e->cfg || !from->cfg || from->dirty)
		return;
	e->cfg = cconfig_ref(from->cfg);
	e->at_us = from->at_us;
	e->dirty = 0;
}

static int pkg_lookup(struct cpkg *cp, char bin[128])
{
	const npm_pkg *p = npmcache_lookup(cp->spec);
	if (!p)
		return 0;
	snprintf(cp->key, sizeof cp->key, "%s", p->key);
	snprintf(cp->dir, sizeof cp->dir, "%s", p->dir);
	snprintf(bin, 128, "%s", p->bin);
	return 1;
}

/* cortexd's own defaults under the user's env (the user's settings win;
 * PATH gains package bins there). */
static json_t *agent_env_of(const config *d, const cconfig *c)
{
	json_t *env = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "HOME", "/home/agent", "PATH", BASE_PATH,
				"LANG", "C.UTF-8", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1",
				"DISABLE_AUTOUPDATER", "1", "DISABLE_TELEMETRY", "1",
				"DISABLE_ERROR_REPORTING", "1");
	if (!env)
		return NULL;
	json_object_update(env, c->env);
	if (!d->gateway_enabled) {
		/* The old way, for comparison benchmarks only: the key enters the sandbox. */
		const char *url = c->prov_url[0] ? c->prov_url : d->provider_base_url;
		if (url[0])
			json_object_set_new(env, "ANTHROPIC_BASE_URL", json_string(url));
		if (c->prov_key)
			json_object_set_new(env, "ANTHROPIC_API_KEY", json_stringn(c->prov_key, c->prov_key_len));
		else if (d->provider_api_key[0])
			json_object_set_new(env, "ANTHROPIC_API_KEY", json_string(d->provider_api_key));
	}
	/* With the gateway, the agent link adds its URL and the session's token. */
	return env;
}

/* Without the gateway the provider's URL and key are in the agent's env, which
 * it reads only at start: a change of them must restart it, so they join the
 * base hash.  (With the gateway a provider change never reaches the agent.) */
static void fold_provider_into_base(cconfig *c)
{
	crypto_hash_sha256_state st;
	unsigned char h[crypto_hash_sha256_BYTES];
	const char *keys[] = {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"};

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const unsigned char *)c->base_hash, 64);
	for (size_t i = 0; i < 2; i++) {
		const char *v = json_string_value(json_object_get(c->agent_env, keys[i]));
		crypto_hash_sha256_update(&st, (const unsigned char *)(v ? v : ""), v ? strlen(v) + 1 : 1);
	}
	crypto_hash_sha256_final(&st, h);
	hex_of(h, sizeof h, c->base_hash);
}

/* One range read of the user's settings, then assembly. */
static cconfig *assemble_user(const struct ccache_src *src, const char *user, cx_err *err)
{
	char prefix[128];
	snprintf(prefix, sizeof prefix, "settings/%s/", user);
	store_kv *kv = NULL;
	size_t n = 0;
	int64_t rev = 0;
	if (store_list(src->st, prefix, 0, &kv, &n, err) < 0)
		return NULL;
	(void)store_revision(src->st, &rev, err);
	cconfig *c = NULL;
	if (cconfig_assemble(user, kv, n, src->key, pkg_lookup, &c, err) == 0) {
		c->revision = rev;
		if (!(c->agent_env = agent_env_of(src->cfg, c))) {
			cconfig_unref(c);
			c = NULL;
			cx_err_set(err, ENOMEM, "agent env");
		} else if (!src->cfg->gateway_enabled) {
			fold_provider_into_base(c);
		}
	}
	store_kv_free(kv, n);
	return c;
}

cconfig *ccache_get(struct ccache_entry *e, const struct ccache_src *src, const char *user, enum ccache_how *how,
		    cx_err *err)
{
	uint64_t now = cx_mono_us();
	uint64_t ttl = (uint64_t)(src->cfg->config_ttl_s > 0 ? src->cfg->config_ttl_s : 300) * 1000000u;
	enum ccache_how h = ccache_check(e, now, ttl);
	if (how)
		*how = h;
	if (h == CC_HIT) {
		stats.hits++;
		return e->cfg;
	}
	switch (h) {
	case CC_MISS: stats.misses++; break;
	case CC_DIRTY: stats.dirty++; break;
	default: stats.expired++; break;
	}
	cconfig *c = assemble_user(src, user, err);
	uint64_t t1 = cx_mono_us();
	stats.assemble_us_total += t1 - now;
	if (!c) {
		stats.errors++;
		return NULL;
	}
	cconfig_unref(e->cfg);
	e->cfg = c;
	e->at_us = t1;
	e->dirty = 0;
	return c;
}

void ccache_drop(struct ccache_entry *e)
{
	cconfig_unref(e->cfg);
	memset(e, 0, sizeof *e);
}

void ccache_get_stats(ccache_stats *out) { *out = stats; }

/* Packages whose install failed, so a message does not start npm again and
 * again for a bad package: they stay failed until the next settings write. */
struct failed_pkg {
	struct failed_pkg *next;
	char spec[300];
	char msg[600];
};
static struct failed_pkg *failed;

static void forget_failures(void)
{
	while (failed) {
		struct failed_pkg *f = failed;
		failed = f->next;
		free(f);
	}
}

static const struct failed_pkg *failure_of(const char *spec)
{
	for (const struct failed_pkg *f = failed; f; f = f->next)
		if (!strcmp(f->spec, spec))
			return f;
	return NULL;
}

const char *cconfig_failed_pkg(const cconfig *c, const char **spec)
{
	for (size_t i = 0; i < c->n_pkgs; i++) {
		const struct failed_pkg *f = c->pkgs[i].key[0] ? NULL : failure_of(c->pkgs[i].spec);
		if (f) {
			*spec = f->spec;
			return f->msg;
		}
	}
	return NULL;
}

static ccache_user_fn installed_hook;
static void *installed_arg;

void cconfig_set_installed_hook(ccache_user_fn fn, void *arg)
{
	installed_hook = fn;
	installed_arg = arg;
}

struct install_wait {
	char user[72];
	char spec[300];
};

static void install_ready(void *arg, const npm_pkg *pkg, int ok, const char *msg)
{
	struct install_wait *w = arg;
	if (!ok) {
		log_warn("user %s: MCP package %s: install failed: %s", w->user, w->spec, msg);
		struct failed_pkg *f = failure_of(w->spec) ? NULL : calloc(1, sizeof *f);
		if (f) {
			snprintf(f->spec, sizeof f->spec, "%s", w->spec);
			snprintf(f->msg, sizeof f->msg, "%s", msg ? msg : "npm failed");
			f->next = failed;
			failed = f;
		}
	} else {
		log_info("user %s: MCP package %s@%s ready", w->user, pkg->name, pkg->version);
	}
	if (installed_hook) /* configs that waited for it re-assemble */
		installed_hook(installed_arg, w->user);
	free(w);
}

/* 1 when one of c's missing packages got installed meanwhile (another user's
 * install finished): the caller's config is stale. */
int cconfig_start_installs(const cconfig *c, const char *user)
{
	int stale = 0;
	for (size_t i = 0; i < c->n_pkgs; i++) {
		if (c->pkgs[i].key[0] || failure_of(c->pkgs[i].spec))
			continue;
		struct install_wait *w = calloc(1, sizeof *w);
		const npm_pkg *p = NULL;
		cx_err err = CX_ERR_INIT;
		if (w) {
			snprintf(w->user, sizeof w->user, "%s", user);
			snprintf(w->spec, sizeof w->spec, "%s", c->pkgs[i].spec);
		}
		int r = w ? npmcache_ensure(c->pkgs[i].spec, install_ready, w, &p, &err) : -1;
		if (r != 0)
			free(w);
		if (r == 1)
			stale = 1;
		if (r < 0)
			log_warn("user %s: cannot install %s: %s", user, c->pkgs[i].spec, err.msg);
	}
	return stale;
}

void cconfig_forget_failures(void) { forget_failures(); }

void cconfig_prefetch(const struct ccache_src *src, const char *user)
{
	cx_err err = CX_ERR_INIT;
	cconfig *c = assemble_user(src, user, &err);
	if (!c) {
		log_warn("user %s: settings do not assemble: %s", user, err.msg);
		return;
	}
	(void)cconfig_start_installs(c, user);
	cconfig_unref(c);
}
