/* bench_sandbox_image — what image mode costs, on the library itself (root):
 *   overlay: sbx_overlay_open() of a 2-layer image with an upper (fsopen ..
 *            fsmount, then close), 200 runs;
 *   create:  sandbox_create() + sandbox_destroy() in image mode, in
 *            host-root mode and in image mode with its own network namespace
 *            (net_isolated, lo brought up), interleaved (image, host, netns,
 *            image, ...), 20 runs each; create alone is timed (returns once
 *            init is ready);
 *   disk:    sandbox_disk_attach() of a new 64 MB and a new 10 GB image
 *            (create sparse + mke2fs + loop + mount), 5 runs each.
 * Medians (and min/max) in ms, one JSON line per case.
 *   bench_sandbox_image <scratch dir> [create runs, default 20] */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox-internal.h"

#define UID 65534

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *name, uint64_t *us, size_t n)
{
	qsort(us, n, sizeof *us, cmp_u64);
	printf(
	    "{\"case\":\"%s\",\"runs\":%zu,\"median_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f}\n",
	    name, n, (double)us[n / 2] / 1000, (double)us[0] / 1000, (double)us[n - 1] / 1000);
}

static void mk(const char *path, uid_t owner)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	if (chown(path, owner, owner) < 0) {
		perror(path);
		exit(1);
	}
}

static void die(const char *what, const cx_err *err)
{
	fprintf(stderr, "%s: %s\n", what, err->msg);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3 || argv[1][0] != '/') {
		fprintf(stderr, "usage: bench_sandbox_image <absolute scratch dir> [runs]\n");
		return 2;
	}
	char d[4096], l0[4200], l1[4200], img[4200], disk[4200], p[4400];
	snprintf(d, sizeof d, "%s/bench-image-%d", argv[1], (int)getpid());
	mk(argv[1], 0);
	mk(d, 0);
	snprintf(l0, sizeof l0, "%s/l0", d);
	snprintf(l1, sizeof l1, "%s/l1", d);
	mk(l0, 0);
	mk(l1, 0);
	snprintf(p, sizeof p, "%s/etc", l1);
	mk(p, 0);
	snprintf(p, sizeof p, "%s/bin", l0);
	mk(p, 0);
	snprintf(img, sizeof img, "%s/disk.img", d);
	snprintf(disk, sizeof disk, "%s/disk", d);
	cx_err err = CX_ERR_INIT;
	if (sandbox_disk_attach(img, 256, disk, &err) < 0)
		die("disk", &err);
	const char *sub[] = {"home", "ws", "run", "upper", "work", "hhome", "hws", "hrun"};
	char dirs[8][4300];
	for (int i = 0; i < 8; i++) {
		snprintf(dirs[i], sizeof dirs[i], "%s/%s", disk, sub[i]);
		mk(dirs[i], i == 3 || i == 4 ? 0 : UID);
	}
	char root_i[4200], root_h[4200];
	snprintf(root_i, sizeof root_i, "%s/root-image", d);
	snprintf(root_h, sizeof root_h, "%s/root-host", d);
	mk(root_i, 0);
	mk(root_h, 0);
	const char *layers[] = {l1, l0, NULL};

	sandbox_opts img_o = SANDBOX_OPTS_INIT;
	img_o.id = "bench-image";
	img_o.root_mount = root_i;
	img_o.home_dir = dirs[0];
	img_o.workspace_dir = dirs[1];
	img_o.run_dir = dirs[2];
	img_o.uid = img_o.gid = UID;
	img_o.tmp_size = 16 << 20;
	img_o.cgroup_name = "cortex-bench";
	img_o.lower_dirs = layers;
	img_o.upper_dir = dirs[3];
	img_o.work_dir = dirs[4];
	sandbox_opts host_o = img_o;
	host_o.id = "bench-host";
	host_o.root_mount = root_h;
	host_o.home_dir = dirs[5];
	host_o.workspace_dir = dirs[6];
	host_o.run_dir = dirs[7];
	host_o.lower_dirs = NULL;
	host_o.upper_dir = host_o.work_dir = NULL;

	/* overlay mount alone */
	enum { NO = 200, NC_MAX = 1000, ND = 5 };
	int NC = argc == 3 ? atoi(argv[2]) : 20;
	if (NC < 1 || NC > NC_MAX)
		NC = 20;
	uint64_t t[NO];
	for (int i = 0; i < NO; i++) {
		int fd;
		uint64_t t0 = cx_mono_us();
		if (sbx_overlay_open(&img_o, &fd, &err) < 0)
			die("overlay", &err);
		t[i] = cx_mono_us() - t0;
		close(fd);
	}
	report("overlay_open", t, NO);

	sandbox_opts net_o = img_o; /* one at a time: the same dirs serve */
	net_o.net_isolated = true;

	/* create, interleaved */
	static uint64_t ti[NC_MAX], th[NC_MAX], tn[NC_MAX];
	const sandbox_opts *kinds[] = {&img_o, &host_o, &net_o};
	uint64_t *times[] = {ti, th, tn};
	for (int i = 0; i < NC; i++) {
		for (int k = 0; k < 3; k++) {
			sandbox *sb;
			uint64_t t0 = cx_mono_us();
			if (sandbox_create(&sb, kinds[k], &err) < 0)
				die("create", &err);
			times[k][i] = cx_mono_us() - t0;
			sandbox_destroy(sb);
		}
	}
	double mi, mh;
	report("create_image", ti, (size_t)NC);
	mi = (double)ti[NC / 2];
	report("create_host", th, (size_t)NC);
	mh = (double)th[NC / 2];
	printf("{\"case\":\"create_ratio_image_over_host\",\"ratio\":%.3f}\n", mi / mh);
	report("create_image_netns", tn, (size_t)NC);
	printf("{\"case\":\"create_ratio_netns_over_image\",\"ratio\":%.3f}\n",
	       (double)tn[NC / 2] / mi);
	if (sandbox_disk_detach(disk, &err) < 0)
		die("detach", &err);

	/* new disks */
	const uint64_t sizes[] = {64, 10240};
	for (size_t s = 0; s < 2; s++) {
		uint64_t td[ND];
		for (int i = 0; i < ND; i++) {
			unlink(img);
			uint64_t t0 = cx_mono_us();
			if (sandbox_disk_attach(img, sizes[s], disk, &err) < 0)
				die("disk", &err);
			td[i] = cx_mono_us() - t0;
			if (sandbox_disk_detach(disk, &err) < 0)
				die("detach", &err);
		}
		char name[64];
		snprintf(name, sizeof name, "disk_new_%llu_mb", (unsigned long long)sizes[s]);
		report(name, td, ND);
		struct stat st;
		if (stat(img, &st) == 0)
			printf("{\"case\":\"%s_allocated\",\"mb\":%.1f}\n", name,
			       (double)st.st_blocks * 512 / 1048576);
	}
	unlink(img);
	cx_rm_rf(d);
	return 0;
}
