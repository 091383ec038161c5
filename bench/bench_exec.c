/* bench_exec — command start -> first output through the sandbox library
 * directly (root): one image-mode sandbox on the given layers, then `runs`
 * times sandbox_exec("/bin/echo x") with a stdout pipe and an exit fd, as
 * cortexd's exec does (core/exec.c), timing from the call to the first byte
 * on the pipe, and to the wait status on the exit fd.  Also a pty run each
 * time (sandbox_openpty + ctty).  p50/p95 in ms, one JSON line per case;
 * bench/exec.js runs it beside the same commands through cortexd (BENCH_RAW=1:
 * every sample instead, to pool blocks of runs).
 *   bench_exec <scratch dir> <runs> <layer dir, top first>... */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

#define UID 65534

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *name, uint64_t *us, size_t n)
{
	if (getenv("BENCH_RAW")) { /* every sample, for a caller that pools runs */
		printf("{\"case\":\"%s\",\"samples_ms\":[", name);
		for (size_t i = 0; i < n; i++)
			printf("%s%.3f", i ? "," : "", (double)us[i] / 1000);
		printf("]}\n");
		return;
	}
	qsort(us, n, sizeof *us, cmp_u64);
	printf("{\"case\":\"%s\",\"runs\":%zu,\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"max_ms\":%.3f}\n", name, n,
	       (double)us[n / 2] / 1000, (double)us[n * 95 / 100] / 1000, (double)us[n - 1] / 1000);
}

static void die(const char *what, const cx_err *err)
{
	fprintf(stderr, "bench_exec: %s: %s\n", what, err ? err->msg : strerror(errno));
	exit(1);
}

static void mk(const char *path, uid_t owner)
{
	if ((mkdir(path, 0755) < 0 && errno != EEXIST) || chown(path, owner, owner) < 0)
		die(path, NULL);
}

static uint64_t wait_byte(int fd)
{
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, 10000) != 1)
		die("no output in 10 s", NULL);
	return cx_mono_us();
}

/* One run: *first = call -> first output, *exit = call -> wait status. */
static void one(sandbox *sb, int pty, uint64_t *first, uint64_t *exited)
{
	cx_err err = CX_ERR_INIT;
	int out[2], ex[2], m = -1, s = -1;
	if (pipe2(ex, O_CLOEXEC) < 0)
		die("pipe", NULL);
	const char *argv[] = {"/bin/echo", "x", NULL};
	const char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/home/agent", NULL};
	sandbox_exec_opts eo = SANDBOX_EXEC_OPTS_INIT;
	eo.argv = argv;
	eo.envp = envp;
	eo.cwd = "/workspace";
	eo.exit_fd = ex[1];
	uint64_t t0 = cx_mono_us();
	if (pty) {
		if (sandbox_openpty(sb, &m, &s, &err) < 0)
			die("openpty", &err);
		eo.stdin_fd = eo.stdout_fd = eo.stderr_fd = s;
		eo.ctty = true;
	} else {
		if (pipe2(out, O_CLOEXEC) < 0)
			die("pipe", NULL);
		eo.stdout_fd = out[1];
	}
	if (sandbox_exec(sb, NULL, &eo, &err) < 0)
		die("exec", &err);
	close(ex[1]);
	if (pty)
		close(s);
	else
		close(out[1]);
	int rfd = pty ? m : out[0];
	*first = wait_byte(rfd) - t0;
	int32_t st = -1;
	struct pollfd p = {ex[0], POLLIN, 0};
	if (poll(&p, 1, 10000) != 1 || read(ex[0], &st, sizeof st) != sizeof st || !WIFEXITED(st) || WEXITSTATUS(st))
		die("no exit status", NULL);
	*exited = cx_mono_us() - t0;
	close(ex[0]);
	close(rfd);
}

int main(int argc, char **argv)
{
	if (argc < 4 || argv[1][0] != '/') {
		fprintf(stderr, "usage: bench_exec <absolute scratch dir> <runs> <layer dir, top first>...\n");
		return 2;
	}
	int runs = atoi(argv[2]);
	if (runs < 1 || runs > 100000)
		runs = 200;
	char d[4096], disk[4200], img[4200], root[4200], dirs[5][4300];
	snprintf(d, sizeof d, "%s/bench-exec-%d", argv[1], (int)getpid());
	mk(argv[1], 0);
	mk(d, 0);
	snprintf(img, sizeof img, "%s/disk.img", d);
	snprintf(disk, sizeof disk, "%s/disk", d);
	snprintf(root, sizeof root, "%s/root", d);
	cx_err err = CX_ERR_INIT;
	if (sandbox_disk_attach(img, 256, disk, &err) < 0)
		die("disk", &err);
	const char *sub[] = {"home", "ws", "run", "upper", "work"};
	for (int i = 0; i < 5; i++) {
		snprintf(dirs[i], sizeof dirs[i], "%s/%s", disk, sub[i]);
		mk(dirs[i], i < 3 ? UID : 0);
	}
	mk(root, 0);
	const char **layers = calloc((size_t)argc, sizeof *layers);
	for (int i = 3; i < argc; i++)
		layers[i - 3] = argv[i];
	sandbox_opts o = SANDBOX_OPTS_INIT;
	o.id = "bench-exec";
	o.root_mount = root;
	o.home_dir = dirs[0];
	o.workspace_dir = dirs[1];
	o.run_dir = dirs[2];
	o.uid = o.gid = UID;
	o.cgroup_name = "cortex-bench";
	o.lower_dirs = layers;
	o.upper_dir = dirs[3]; /* as a session's root: writable, on its disk */
	o.work_dir = dirs[4];
	o.net_isolated = true;
	sandbox *sb;
	if (sandbox_create(&sb, &o, &err) < 0)
		die("create", &err);
	uint64_t *f = calloc((size_t)runs, 8), *e = calloc((size_t)runs, 8), *pf = calloc((size_t)runs, 8),
		 *pe = calloc((size_t)runs, 8);
	for (int i = 0; i < 10; i++) /* warm the page cache */
		one(sb, 0, &f[0], &e[0]);
	for (int i = 0; i < runs; i++) {
		one(sb, 0, &f[i], &e[i]);
		one(sb, 1, &pf[i], &pe[i]);
	}
	report("direct_first_output", f, (size_t)runs);
	report("direct_exit", e, (size_t)runs);
	report("direct_pty_first_output", pf, (size_t)runs);
	report("direct_pty_exit", pe, (size_t)runs);
	sandbox_destroy(sb);
	if (sandbox_disk_detach(disk, &err) < 0)
		die("detach", &err);
	cx_rm_rf(d);
	free(layers);
	free(f);
	free(e);
	free(pf);
	free(pe);
	return 0;
}
