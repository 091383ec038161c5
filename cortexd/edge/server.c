/* server.c — the libwebsockets context: one vhost serving HTTP routes and the
 * client WebSocket on protocols[0] "cortex", plus the "cortex-agent" client
 * protocol for connections to each session's ws-agent. */
#include "server.h"
#include "egress.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "exec.h"
#include "fswatch.h"
#include "build.h"
#include "imgstore.h"
#include "auth.h"
#include "caps.h"
#include "sdnotify.h"
#include "door.h"
#include "evloop.h"
#include "gwlink.h"
#include "http.h"
#include "lifecycle.h"
#include "metrics.h"
#include "jobs.h"
#include "log.h"
#include "npmcache.h"
#include "owner.h"
#include "peerwatch.h"
#include "nproxy.h"
#include "preview.h"
#include "refuse.h"
#include "turnlog.h"
#include "handover.h"
#include "work.h"

/* HTTP requests and the WebSocket they may upgrade to share one protocol, so
 * each connection carries both states. */
struct conn {
	struct http_conn h;
	struct client c;
	int preview;        /* a preview-port WebSocket (preview.c), not a client */
	struct preview *pv; /* ... its preview */
	int proxied;        /* a WebSocket proxied to its session's node (nproxy.c), not a client */
	struct nproxy *px;  /* ... its proxy */
};

/* The request's path is a preview port's (the upgrade request's headers are
 * still there from CONFIRM_UPGRADE to ESTABLISHED). */
/* The upgrade is for a session another node owns (nproxy.h); url: its node. */
static int proxy_upgrade(struct cortexd *d, struct lws *wsi, char *url, size_t cap)
{
	char uri[512], u[512];
	return lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0 &&
	       nproxy_target(d, uri, url ? url : u, url ? cap : sizeof u);
}

/* ... and served here: a preview of a session another node owns is proxied
 * (unless a node forwarded it already: this node's preview answers). */
static int preview_upgrade(struct cortexd *d, struct lws *wsi)
{
	char uri[512], hop[8];
	return lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0 && preview_is_route(uri) &&
	       (!proxy_upgrade(d, wsi, NULL, 0) ||
		lws_hdr_custom_copy(wsi, hop, sizeof hop, "x-cortex-hop:", 13) > 0);
}

static const struct lws_protocols protocols[];

static int callback_main(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			 size_t len)
{
	struct conn *conn = user;
	struct cortexd *d = lws_context_user(lws_get_context(wsi));
	switch (reason) {
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: /* user is lws's, not a conn */
		return lws_get_vhost(wsi) == d->vh ? door_accept((int)(intptr_t)in) : 0;
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		door_adopted(wsi);
		return 0;
	case LWS_CALLBACK_WSI_DESTROY: { /* every wsi of the vhost: only ours carry a door count */
		const struct lws_protocols *p = lws_get_protocol(wsi); /* lws's copy: compare names */
		if (p && p->name && !strcmp(p->name, protocols[0].name))
			door_destroyed(wsi);
		return 0;
	}
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		work_drain_done();
		gateway_service();
		return 0;
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_HTTP_BODY:
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
		if (!conn)
			return -1;
		return http_callback(d, wsi, reason, &conn->h, in, len);
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		if (preview_upgrade(d, wsi))
			return preview_ws_confirm(d, wsi);
		if (!d->stop && proxy_upgrade(d, wsi, NULL, 0))
			return nproxy_ws_confirm(d, wsi);
		return ws_client_callback(d, wsi, reason, conn ? &conn->c : NULL, in, len);
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		if (preview_upgrade(d, wsi) || proxy_upgrade(d, wsi, NULL, 0))
			return 0; /* answered at CONFIRM_UPGRADE */
		return ws_client_callback(d, wsi, reason, conn ? &conn->c : NULL, in, len);
	case LWS_CALLBACK_ESTABLISHED: {
		char url[512];
		if (conn && preview_upgrade(d, wsi)) {
			conn->preview = 1;
			return preview_ws_callback(d, wsi, reason, &conn->pv, in, len);
		}
		if (conn && proxy_upgrade(d, wsi, url, sizeof url)) {
			conn->proxied = 1;
			return nproxy_ws_callback(d, wsi, reason, &conn->px, url, in, len);
		}
		return ws_client_callback(d, wsi, reason, conn ? &conn->c : NULL, in, len);
	}
	case LWS_CALLBACK_RECEIVE:
	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
	case LWS_CALLBACK_CLOSED:
		if (conn && conn->preview)
			return preview_ws_callback(d, wsi, reason, &conn->pv, in, len);
		if (conn && conn->proxied)
			return nproxy_ws_callback(d, wsi, reason, &conn->px, NULL, in, len);
		return ws_client_callback(d, wsi, reason, conn ? &conn->c : NULL, in, len);
	case LWS_CALLBACK_TIMER: /* an image build log followed or a preview's peer watch (http.c), else the client's */
		if (conn && (conn->h.resp.stream_file[0] || conn->h.pv))
			return http_callback(d, wsi, reason, &conn->h, in, len);
		return ws_client_callback(d, wsi, reason, conn ? &conn->c : NULL, in, len);
	default:
		return ws_client_callback(d, wsi, reason, conn ? &conn->c : NULL, in, len);
	}
}

static const struct lws_protocols protocols[] = {
	/* tx_packet_size: lws sends at most this much per syscall (else the rx
	 * buffer size, 64 KiB) and buffers the rest in a copy: a 64 KB delta
	 * frame or a batch of frames goes in one send. */
	{"cortex", callback_main, sizeof(struct conn), 64 * 1024, 0, NULL, 256 * 1024},
	{"cortex-agent", callback_agent, 0, 256 * 1024, 0, NULL, 0},
	{"cortex-agent-out", callback_agent_stdout, 0, 0, 0, NULL, 0}, /* the agent's stdout (agent_stdout.c) */
	{"cortex-preview", preview_inside_callback, 0, 0, 0, NULL, 0},
	{"cortex-owner", nproxy_owner_callback, 0, 64 * 1024, 0, NULL, 0},
	{DOOR_PROTOCOL, door_callback, 0, 0, 0, NULL, 0},
	{"cortex-fswatch", fswatch_callback, 0, 0, 0, NULL, 0},
	{"cortex-exec", exec_callback, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Keepalive for client WebSockets: lws pings an idle peer and drops a dead one. */
static const lws_retry_bo_t client_retry = {
	.secs_since_valid_ping = 20,
	.secs_since_valid_hangup = 60,
};

/* systemd's watchdog (sdnotify.h): pinged from the service loop itself, so
 * a loop that stops turning stops the pings and systemd restarts us. */
static lws_sorted_usec_list_t sul_watchdog;
static uint64_t watchdog_us;
static struct lws_context *watchdog_ctx;
static void watchdog_ping(lws_sorted_usec_list_t *sul)
{
	sdnotify("WATCHDOG=1");
	lws_sul_schedule(watchdog_ctx, 0, sul, watchdog_ping, (lws_usec_t)watchdog_us);
}

/* The one daemon a signal can stop (the handler has no argument). */
static struct cortexd *signalled;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		signalled->upgrade = 1; /* an upgrade restart (handover.h) */
	signalled->stop = 1;
	if (signalled->ctx)
		lws_cancel_service(signalled->ctx); /* a write to lws's pipe: safe in a handler */
}

static void lws_log_bridge(int level, const char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	log_msg(level == LLL_ERR ? LOG_ERROR : level == LLL_WARN ? LOG_WARN : LOG_DEBUG, "lws: %.*s",
		(int)n, line);
}

/* Can uid:gid walk down to dir?  (every ancestor searchable by it) */
static int traversable_by(const char *dir, uid_t uid, gid_t gid)
{
	char p[4200];
	snprintf(p, sizeof p, "%s", dir);
	for (;;) {
		struct stat st;
		if (stat(p, &st) == 0) {
			int ok = (st.st_mode & S_IXOTH) || (st.st_uid == uid && (st.st_mode & S_IXUSR)) ||
				 (st.st_gid == gid && (st.st_mode & S_IXGRP));
			if (!ok)
				return 0;
		}
		char *slash = strrchr(p, '/');
		if (!slash || slash == p)
			return 1;
		*slash = '\0';
	}
}

/* Where MCP packages live.  npm runs as the sandbox uid, so the dir must be
 * reachable by it: DATA/npm when the data dir's ancestors allow that, else
 * (a data dir under /root or a 0700 temp dir) a dir under /var/cache/cortex
 * named by the data dir's hash.  "npm.cache_dir" in the config file wins. */
static int npm_root(const config *c, char *out, size_t cap, cx_err *err)
{
	if (c->npm_cache_dir[0]) {
		snprintf(out, cap, "%s", c->npm_cache_dir);
		return 0;
	}
	if (traversable_by(c->data_dir, c->sandbox_uid, c->sandbox_gid)) {
		snprintf(out, cap, "%s/npm", c->data_dir);
		return 0;
	}
	unsigned char h[crypto_hash_sha256_BYTES];
	char hex[2 * sizeof h + 1];
	crypto_hash_sha256(h, (const unsigned char *)c->data_dir, strlen(c->data_dir));
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	if ((mkdir("/var/cache/cortex", 0755) < 0 && errno != EEXIST))
		return cx_err_set(err, errno, "mkdir /var/cache/cortex");
	snprintf(out, cap, "/var/cache/cortex/%.16s", hex);
	if (mkdir(out, 0755) < 0 && errno != EEXIST)
		return cx_err_set(err, errno, "mkdir %s", out);
	log_info("npm cache: the data dir is not reachable by uid %u; packages go to %s",
		 (unsigned)c->sandbox_uid, out);
	snprintf(out + strlen(out), cap - strlen(out), "/npm");
	return 0;
}

/* The npm cache on a file system of its own (an ext4 file of npm.cache_max_mb,
 * loop-mounted on the cache dir): the MCP packages bound into sandboxes then
 * show a path inside that disk in mountinfo, not the host's data dir, and
 * npm cannot fill the data dir's disk.  A cache dir that already holds
 * packages (made before this) is left as it is. */
static int npm_disk(struct cortexd *d, const char *root, cx_err *err)
{
	char img[4200];
	snprintf(img, sizeof img, "%s.img", root);
	snprintf(d->npm_disk, sizeof d->npm_disk, "%s", root);
	if (access(img, F_OK) < 0) {
		DIR *dir = opendir(root);
		int used = 0;
		for (struct dirent *e; dir && (e = readdir(dir));)
			used |= strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
		if (dir)
			closedir(dir);
		if (used) {
			log_warn("npm cache: %s holds packages from before; not moved onto a disk of its own", root);
			d->npm_disk[0] = '\0';
			return 0;
		}
	}
	uint64_t mb = d->cfg.npm_cache_max ? (d->cfg.npm_cache_max >> 20) + 256 : 8192;
	if (sandbox_disk_attach(img, mb, root, err) < 0)
		return cx_err_wrap(err, "npm cache disk");
	if (chmod(root, 0755) < 0)
		return cx_err_set(err, errno, "chmod %s", root);
	return 0;
}

/* The session dirs spread over the file system's block groups: ext4's
 * allocator (Orlov) does that for the subdirs of a dir flagged TOPDIR, as
 * for the root's; else each lands next to its parent.  A dir's files get
 * inodes in its group, and on an ext4 without a journal a new inode is
 * taken only after walking past every inode of the group freed in the last
 * seconds (ext4's recently_deleted): after a burst of deletes, every file
 * and dir of the next creates paid for all of them (~30% of a prepare job's
 * CPU, bench/create_burst.js).  Where there is no such flag, nothing. */
static void spread_subdirs(const char *path)
{
	cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int fl = 0;
	if (fd < 0 || ioctl(fd, FS_IOC_GETFLAGS, &fl) < 0 || (fl & FS_TOPDIR_FL))
		return;
	fl |= FS_TOPDIR_FL;
	if (ioctl(fd, FS_IOC_SETFLAGS, &fl) < 0)
		log_info("%s: no TOPDIR flag (%s): session dirs stay near it", path, strerror(errno));
}

/* The data dir, the store, the master key, the admin token, the sessions,
 * the npm cache: everything before the first socket.  0, or -1 (logged). */
static int open_state(struct cortexd *d)
{
	cx_err err = CX_ERR_INIT;
	config *c = &d->cfg;
	if (mkdir(c->data_dir, 0711) < 0 && errno != EEXIST) {
		log_error("data dir %s: %s", c->data_dir, strerror(errno));
		return -1;
	}
	/* Traversable, not listable: npm installs MCP packages into DATA/npm as
	 * the sandbox uid.  Everything secret below is 0600/0700 on its own. */
	if (chmod(c->data_dir, 0711) < 0) {
		log_error("data dir %s: chmod: %s", c->data_dir, strerror(errno));
		return -1;
	}
	char path[4200];
	snprintf(path, sizeof path, "%s", c->sessions_dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		log_error("%s: %s", path, strerror(errno));
		return -1;
	}
	spread_subdirs(path);
	snprintf(path, sizeof path, "%s/cortex.db", c->data_dir);
	struct store_etcd_opts eo = {.endpoints = c->etcd_endpoints,
				     .ns = c->etcd_namespace[0] ? c->etcd_namespace : NULL,
				     .max_request_bytes = c->etcd_max_request_bytes};
	if (strcmp(c->store_kind, "etcd") == 0 ? store_open_etcd(&d->st, &eo, &err) < 0
					       : store_open(&d->st, c->store_kind, path, &err) < 0) {
		log_error("store: %s", err.msg);
		return -1;
	}
	/* The master key: CORTEX_MASTER_KEY_FILE, or generated into the data dir. */
	const char *kf = getenv("CORTEX_MASTER_KEY_FILE");
	char keyp[4200];
	snprintf(keyp, sizeof keyp, "%s/master.key", c->data_dir);
	if (secrets_key_load(&d->skey, kf && *kf ? kf : keyp, 1, &err) < 0) {
		log_error("master key: %s", err.msg);
		return -1;
	}
	if (npm_root(c, path, sizeof path, &err) < 0 || npm_disk(d, path, &err) < 0) {
		log_error("npm cache: %s", err.msg);
		return -1;
	}
	if (auth_admin_init(c->data_dir, d->admin_token, &err) < 0 || owner_init(d, &err) < 0 ||
	    lifecycle_load(d, &err) < 0 ||
	    sandbox_runtime_init(&err) < 0 ||
	    npmcache_init(d->st, path, c->npm_path, c->sandbox_uid, c->sandbox_gid, c->npm_cache_max,
			  &err) < 0) {
		log_error("%s", err.msg);
		return -1;
	}

	return 0;
}

/* The image store and the builder (docs/images.md).  A store that cannot open
 * leaves the image routes answering 503; the daemon still serves sessions. */
static void open_images(struct cortexd *d)
{
	config *c = &d->cfg;
	cx_err err = CX_ERR_INIT;
	char dir[4200], work[4200];
	if (c->images_dir[0])
		snprintf(dir, sizeof dir, "%s", c->images_dir);
	else
		snprintf(dir, sizeof dir, "%s/images", c->data_dir);
	snprintf(work, sizeof work, "%s/uploads", c->data_dir);
	cx_rm_rf(work); /* bodies of requests cut by an earlier stop */
	snprintf(work, sizeof work, "%s/builds", c->data_dir);
	if (imgstore_open(&d->images, dir, c->images_budget, &err) < 0) {
		log_error("image store %s: %s", dir, err.msg);
		d->images = NULL;
		return;
	}
	struct builder_config bc = {
		.dir = work,
		.base = c->images_build_base,
		.max_context = c->images_max_context,
		.max_builds = c->images_max_builds,
		.max_per_user = c->images_max_user_builds,
	};
	if (builder_open(&d->builder, &bc, d->images, &err) < 0) {
		log_error("image builder: %s", err.msg);
		d->builder = NULL;
	}
}

/* images.import_dir_default: the machine's default image (make image) put
 * into the store under images.default at start, on a worker; sessions on it
 * wait meanwhile (lifecycle.c, image_pending). */
static void import_default_run(void *arg)
{
	struct cortexd *d = arg;
	config *c = &d->cfg;
	cx_err err = CX_ERR_INIT;
	/* Always: layers already unpacked are only checked (milliseconds), and
	 * a rebuilt default image (make image) replaces the one stored. */
	uint64_t t0 = cx_mono_ms();
	if (imgstore_import_dir(d->images, c->images_default, c->images_import_dir_default, NULL, NULL, &err) < 0)
		log_error("default image from %s: %s", c->images_import_dir_default, err.msg);
	else
		log_info("default image %s from %s in %llu ms", c->images_default, c->images_import_dir_default,
			 (unsigned long long)(cx_mono_ms() - t0));
}

/* Service thread: sessions waiting for the default image look again. */
static void import_default_done(void *arg)
{
	struct cortexd *d = arg;
	d->default_importing = 0;
	for (struct session *s = d->sessions; s; s = s->next)
		if (s->lc.image_wait) {
			s->lc.image_wait = 0;
			lifecycle_reconcile(s);
		}
}

static int start_egress(const config *c, cx_err *err)
{
	char ca_dir[4200];
	snprintf(ca_dir, sizeof ca_dir, "%s/egress-ca", c->data_dir);
	json_t *ap = json_loads(c->egress_allow_private, 0, NULL);
	cleanup_close int dfd = jobs_private_dir(c, JOBS_SOCK_DIR, err);
	if (dfd < 0) {
		json_decref(ap);
		return -1;
	}
	struct egress_opts o = {
	    .sock_dirfd = dfd,
	    .default_mode = c->egress_default_mode,
	    .max_conns = c->egress_max_conns,
	    .max_conns_session = c->egress_max_conns_session,
	    .max_conns_user = c->egress_max_conns_user,
	    .connect_timeout_ms = c->egress_connect_timeout_ms,
	    .head_timeout_ms = 10000,
	    .allow_private = ap,
	    .ca_dir = ca_dir,
	    .upstream_ca_file = c->egress_upstream_ca[0] ? c->egress_upstream_ca : NULL,
	};
	int rc = egress_start(&o, err);
	json_decref(ap);
	/* What sandboxes trust, bound read-only at /cortex/ca (jobs.c). */
	char trust[4200];
	snprintf(trust, sizeof trust, "%s/" JOBS_TRUST_DIR, c->data_dir);
	if (rc == 0 && egress_ca_pem() && egress_write_trust(trust, "/etc/ssl/certs/ca-certificates.crt", err) < 0) {
		egress_stop();
		return cx_err_wrap(err, "egress: the sandboxes' trust store");
	}
	return rc;
}

int server_run(struct cortexd *d)
{
	cx_err err = CX_ERR_INIT;
	config *c = &d->cfg;
	int rc = 1;

	if (open_state(d) < 0)
		goto out_store;
	lifecycle_init(d);
	files_route_init();
	exec_init();

	signalled = d;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = c->listen_port ? c->listen_port : CONTEXT_PORT_NO_LISTEN_SERVER;
	info.iface = c->listen_host;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DISABLE_IPV6 |
		       LWS_SERVER_OPTION_VALIDATE_UTF8;
	info.retry_and_idle_policy = &client_retry;
	info.timeout_secs = 30;
	/* The door (door.c) passes first heads of up to CX_CAP_HTTP_HEAD: lws's
	 * header table must hold one. */
	info.max_http_header_data = CX_CAP_HTTP_HEAD + 2048;
	info.user = d;
	struct evloop loop;
	if (evloop_open(&loop, (enum evloop_kind)evloop_kind_of_name(c->http_event_loop), &info, &err) < 0) {
		log_error("%s", err.msg);
		goto out_store;
	}
	d->ctx = lws_create_context(&info);
	info.foreign_loops = NULL; /* the vhost's info below: the context has the loop */
	if (!d->ctx) {
		log_error("lws context creation failed (event loop %s)", c->http_event_loop);
		goto out_ctx;
	}
	if (!c->listen_port)
		info.port = 0; /* lws: 0 asks the kernel for a free port */
	/* An upgrade restart of a daemon on a kernel-chosen port: the same one
	 * again, so clients find it where they left it. */
	const char *up = getenv("CORTEX_UPGRADE_PORT");
	if (up && !c->listen_port)
		info.port = atoi(up);
	unsetenv("CORTEX_UPGRADE_PORT");
	d->vh = lws_create_vhost(d->ctx, &info);
	if (!d->vh) {
		log_error("cannot listen on %s:%d", c->listen_host, c->listen_port);
		goto out_ctx;
	}
	d->port = lws_get_vhost_listen_port(d->vh);
	const struct door_opts door_o = {
	    .max_conns = c->http_max_conns,
	    .max_conns_per_ip = c->http_max_conns_per_ip,
	};
	door_start(d->vh, &door_o);
	metrics_register("edge", refuse_metrics_write, NULL);
	nproxy_init();
	/* The model gateway: its own loopback listener, for sandboxes only (they
	 * share the host's network namespace, so 127.0.0.1 reaches it). */
	struct gateway_ops gw;
	gwlink_ops(d, &gw);
	const struct gateway_limits gwl = {
	    .max_inflight = c->gateway_max_inflight,
	    .max_inflight_per_user = c->gateway_max_inflight_per_user,
	    .body_deadline_s = c->gateway_body_deadline_s,
	    .max_queued = c->gateway_max_queued,
	    .queue_timeout_ms = c->gateway_queue_timeout_ms,
	};
	if (c->gateway_enabled &&
	    gateway_start(d->ctx, c->gateway_host, c->gateway_port, &gw, &gwl, &err) < 0) {
		log_error("model gateway: %s", err.msg);
		goto out_ctx;
	}
	/* ... and on DATA/sock/@gateway.sock for sandboxes with their own
	 * network namespace (ws-agent forwards their 127.0.0.1:port to it). */
	if (c->gateway_enabled) {
		int gdir = jobs_private_dir(c, JOBS_SOCK_DIR, &err);
		int grc = gdir < 0 ? -1 : gateway_listen_unix(gdir, JOBS_GATEWAY_SOCK, &err);
		if (gdir >= 0)
			close(gdir);
		if (grc < 0) {
			log_error("model gateway: %s", err.msg);
			goto out_ctx;
		}
	}
	/* The egress proxy: the sandboxes' only way out (docs/network.md). */
	if (c->sandbox_net_isolated && c->egress_enabled && start_egress(c, &err) < 0) {
		log_error("%s", err.msg);
		goto out_ctx;
	}
	/* Sandbox jobs have their own lane: a create burst does not hold up
	 * store writes and API replies (work.h). */
	if (work_start(d->ctx, 2, &err) < 0 || work_start_lane(WORK_SANDBOX, (unsigned)c->sandbox_workers, &err) < 0 ||
	    work_start_lane(WORK_BACKGROUND, 2, &err) < 0) {
		log_error("%s", err.msg);
		goto out_ctx;
	}
	turnlog_start(d);
	/* A shared store: settings written on other nodes mark configs here. */
	if (strcmp(c->store_kind, "etcd") == 0 && peerwatch_start(d, &err) < 0) {
		log_error("%s", err.msg);
		goto out_ctx;
	}
	/* Every store: a token check on the service thread is a hash probe, not
	 * a store read (on SQLite such a read waits for the store's lock while
	 * a group commit, fdatasync included, holds it: every stream stalls). */
	if (auth_cache_start(d->st, &err) < 0) {
		log_error("%s", err.msg);
		goto out_ctx;
	}
	if (owner_start(d, &err) < 0) { /* nodes/<id>: other nodes send its sessions' requests here */
		log_error("%s", err.msg);
		goto out_ctx;
	}
	open_images(d);
	if (d->images && c->images_import_dir_default[0]) {
		d->default_importing = 1;
		work_submit(import_default_run, import_default_done, d);
	}
	handover_resume(d); /* sessions a previous process handed over link up again */
	printf("cortexd listening on http://%s:%d\n", c->listen_host, d->port);
	char ready[200];
	snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on http://%s:%d\nMAINPID=%ld", c->listen_host,
		 d->port, (long)getpid());
	if (sdnotify(ready) < 0)
		log_warn("sd_notify READY: %s", strerror(errno));
	watchdog_ctx = d->ctx;
	if ((watchdog_us = sdnotify_watchdog_us()))
		lws_sul_schedule(d->ctx, 0, &sul_watchdog, watchdog_ping, (lws_usec_t)watchdog_us);
	fflush(stdout);
	log_info("data dir %s, store %s, sandbox uid %u, event loop %s", c->data_dir, c->store_kind,
		 (unsigned)c->sandbox_uid, evloop_name(loop.kind));

	while (!d->stop)
		if (evloop_service(&loop, d->ctx) < 0)
			break;
	int upgrade = d->upgrade && d->argv && d->exe[0];
	if (upgrade) {
		/* The agents' output up to now is read (and logged) before the
		 * sandboxes are handed over: bounded. */
		uint64_t t0 = cx_mono_ms();
		cx_listen_keep_for_exec(); /* the gateway's and egress's sockets: sandboxes hold them */
		handover_detach_all(d);
		while (d->ho_pending && cx_mono_ms() - t0 < HANDOVER_DRAIN_MS)
			if (evloop_service(&loop, d->ctx) < 0)
				break;
		if (d->ho_pending)
			log_warn("upgrade restart: %u session(s) did not detach in %d ms: stopped", d->ho_pending,
				 HANDOVER_DRAIN_MS);
	}
	log_info(upgrade ? "upgrade restart: shutting down for the re-exec" : "shutting down");
	sdnotify(upgrade ? "RELOADING=1" : "STOPPING=1"); /* the next image says READY=1 */
	lws_sul_cancel(&sul_watchdog);
	rc = 0;
	gateway_stop(); /* aborts and joins the provider requests in flight */
	egress_stop();  /* shuts every proxied connection down, joins their threads */
	npmcache_shutdown(); /* joins installs; their reports drain in work_stop() */
	builder_close(d->builder); /* kills running buildah children, joins their threads */
	d->builder = NULL;
	peerwatch_stop(); /* no event is queued past this */
	owner_takeover_stop(); /* a sweep ending after this loads nothing */
	auth_cache_stop();
	work_stop();
	if (upgrade && handover_write(d) < 0)
		upgrade = 0; /* no record: nothing is kept, the next start finds them sleeping */
	lifecycle_shutdown(d); /* stops sandboxes (not those handed over), takes their disks off */
	store_put_flush(d);    /* the puts queued behind the last group commit */
	if (!upgrade)
		owner_stop(d); /* sandboxes stopped, disks off: the lease goes, others take our sessions */
	if (!upgrade) {
		jobs_runtime_unmount_all(c);
		if (d->npm_disk[0] && sandbox_disk_detach(d->npm_disk, &err) < 0)
			log_warn("npm cache disk: %s", err.msg);
	}
	imgstore_close(d->images);
	d->images = NULL;
out_ctx:
	evloop_close(&loop, d->ctx);
	d->ctx = NULL;
out_store:
	secrets_key_wipe(&d->skey);
	store_close(d->st);
	if (rc == 0 && upgrade) {
		handover_exec(d); /* returns only if it failed: the kept sandboxes die with us */
		rc = 1;
	}
	return rc;
}
