/* sbx_probe.c — a static program the image-mode tests put into an image's
 * bottom layer (the image has no shell, no libc of its own).  One command per
 * run; it prints what it found, and "errno N" when a call failed:
 *
 *   cat PATH          the file's bytes, NULs shown as '|'
 *   ls DIR            one name per line
 *   exists PATH       "yes" or "errno N" (lstat)
 *   open PATH         "ok" or "errno N" (open for reading)
 *   readlink PATH     the target or "errno N"
 *   write PATH MB     writes MB MiB (1 MiB chunks, then fsync):
 *                     "wrote BYTES errno N" (N = 0 when all went)
 *   tcp PORT          connect to 127.0.0.1:PORT: "ok" or "errno N"
 *   unix NAME         connect to the abstract unix socket "\0NAME": "ok" or "errno N"
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int cat(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		printf("errno %d\n", errno);
		return 1;
	}
	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == '\0')
				buf[i] = '|';
		fwrite(buf, 1, (size_t)n, stdout);
	}
	close(fd);
	return n < 0;
}

static int ls(const char *path)
{
	DIR *d = opendir(path);
	if (!d) {
		printf("errno %d\n", errno);
		return 1;
	}
	for (struct dirent *de; (de = readdir(d));)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			printf("%s\n", de->d_name);
	closedir(d);
	return 0;
}

static int write_mb(const char *path, long mb)
{
	static char chunk[1 << 20];
	memset(chunk, 'x', sizeof chunk);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		printf("wrote 0 errno %d\n", errno);
		return 1;
	}
	long long total = 0;
	int e = 0;
	for (long i = 0; i < mb && !e; i++) {
		size_t off = 0;
		while (off < sizeof chunk) {
			ssize_t n = write(fd, chunk + off, sizeof chunk - off);
			if (n < 0) {
				e = errno;
				break;
			}
			off += (size_t)n;
			total += n;
		}
	}
	if (!e && fsync(fd) < 0)
		e = errno;
	close(fd);
	printf("wrote %lld errno %d\n", total, e);
	return e != 0;
}

/* "ok" when a connection was made, else "errno N" (stream sockets). */
static int connect_to(int family, const void *addr, socklen_t len)
{
	int fd = socket(family, SOCK_STREAM, 0);
	int rc = fd < 0 ? -1 : connect(fd, addr, len);
	if (rc == 0)
		printf("ok\n");
	else
		printf("errno %d\n", errno);
	if (fd >= 0)
		close(fd);
	return 0;
}

static int tcp(const char *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_port = htons((uint16_t)atoi(port));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return connect_to(AF_INET, &a, sizeof a);
}

static int abstract_unix(const char *name)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t n = strlen(name);
	if (n + 1 > sizeof a.sun_path)
		return 2;
	memcpy(a.sun_path + 1, name, n);
	return connect_to(AF_UNIX, &a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n));
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr,
			"usage: sbx_probe cat|ls|exists|open|readlink PATH | write PATH MB | "
			"tcp PORT | unix NAME\n");
		return 2;
	}
	const char *cmd = argv[1], *path = argv[2];
	struct stat st;
	char buf[4096];
	if (!strcmp(cmd, "cat"))
		return cat(path);
	if (!strcmp(cmd, "ls"))
		return ls(path);
	if (!strcmp(cmd, "exists")) {
		if (lstat(path, &st) == 0)
			printf("yes\n");
		else
			printf("errno %d\n", errno);
		return 0;
	}
	if (!strcmp(cmd, "open")) {
		int fd = open(path, O_RDONLY);
		if (fd >= 0)
			printf("ok\n");
		else
			printf("errno %d\n", errno);
		return 0;
	}
	if (!strcmp(cmd, "readlink")) {
		ssize_t n = readlink(path, buf, sizeof buf - 1);
		if (n >= 0)
			printf("%.*s\n", (int)n, buf);
		else
			printf("errno %d\n", errno);
		return 0;
	}
	if (!strcmp(cmd, "tcp"))
		return tcp(path);
	if (!strcmp(cmd, "unix"))
		return abstract_unix(path);
	if (!strcmp(cmd, "write") && argc == 4)
		return write_mb(path, atol(argv[3]));
	fprintf(stderr, "sbx_probe: unknown command %s\n", cmd);
	return 2;
}
