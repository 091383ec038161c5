/* etcd_fixture.h — a real single-member etcd on loopback for the store tests:
 * its data in a dir of the test, client and peer ports picked free, fast
 * elections, and --max-request-bytes raised to hold the store's largest value
 * (STORE_VAL_MAX, base64 in a JSON body).  One runs at a time: starting one
 * stops the one before, and the last is stopped at exit. */
#ifndef CORTEX_ETCD_FIXTURE_H
#define CORTEX_ETCD_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define ETCD_FIXTURE_MAX_REQUEST (32u * 1024u * 1024u)

static pid_t etcd_fixture_pid = -1;
static char etcd_fixture_url[64]; /* the client URL of the one running */

static inline void etcd_fixture_stop(void)
{
	if (etcd_fixture_pid <= 0)
		return;
	kill(etcd_fixture_pid, SIGTERM);
	waitpid(etcd_fixture_pid, NULL, 0);
	etcd_fixture_pid = -1;
}

/* A free loopback TCP port (closed again: etcd binds it right after). */
static inline int etcd_fixture_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int port = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Start etcd with its data under dir; open a store on it into *out. */
static inline int etcd_fixture_open(store **out, const char *dir, cx_err *err)
{
	static int registered;
	if (!registered) {
		atexit(etcd_fixture_stop);
		registered = 1;
	}
	etcd_fixture_stop();
	int cport = etcd_fixture_port(), pport = etcd_fixture_port();
	if (cport < 0 || pport < 0)
		return cx_err_set(err, errno, "etcd fixture: picking ports");
	char data[600], logp[600], curl[64], purl[64], cluster[96], maxreq[32];
	snprintf(data, sizeof data, "%s/etcd", dir);
	snprintf(logp, sizeof logp, "%s/etcd.log", dir);
	snprintf(curl, sizeof curl, "http://127.0.0.1:%d", cport);
	snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pport);
	snprintf(cluster, sizeof cluster, "t=%s", purl);
	snprintf(maxreq, sizeof maxreq, "%u", ETCD_FIXTURE_MAX_REQUEST);
	char *argv[] = {"etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", curl,
			"--advertise-client-urls", curl, "--listen-peer-urls", purl,
			"--initial-advertise-peer-urls", purl, "--initial-cluster", cluster,
			"--heartbeat-interval", "10", "--election-timeout", "100",
			"--max-request-bytes", maxreq, NULL};
	int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0)
		return cx_err_set(err, errno, "etcd fixture: %s", logp);
	pid_t parent = getpid();
	etcd_fixture_pid = fork();
	if (etcd_fixture_pid == 0) { /* dies with the test, whatever kills it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		dup2(logfd, 1);
		dup2(logfd, 2);
		execvp("etcd", argv);
		_exit(127);
	}
	close(logfd);
	if (etcd_fixture_pid < 0) {
		etcd_fixture_pid = -1;
		return cx_err_set(err, errno, "etcd fixture: fork");
	}
	snprintf(etcd_fixture_url, sizeof etcd_fixture_url, "%s", curl);
	struct store_etcd_opts o = {.endpoints = curl, .max_request_bytes = ETCD_FIXTURE_MAX_REQUEST};
	for (int i = 0; i < 400; i++) { /* up to ~10 s */
		cx_err_clear(err);
		if (store_open_etcd(out, &o, err) == 0)
			return 0;
		if (waitpid(etcd_fixture_pid, NULL, WNOHANG) == etcd_fixture_pid) {
			etcd_fixture_pid = -1;
			return cx_err_set(err, 0, "etcd fixture: etcd exited (see %s)", logp);
		}
		nanosleep(&(struct timespec){0, 25 * 1000 * 1000}, NULL);
	}
	etcd_fixture_stop();
	return cx_err_wrap(err, "etcd fixture: not serving after 10 s (see %s)", logp);
}

#endif
