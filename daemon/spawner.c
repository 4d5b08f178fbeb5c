/* SPDX-License-Identifier: Apache-2.0 */
#include "spawner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define SP_MAGIC 0x48535350u /* "HSSP" */
#define SP_MAX_ARGV (64 * 1024)
#define SP_MAX_FDS (LAUNCH_MAX_FDS + 3) /* 253: the most one message carries */

enum { SP_SPAWN = 1, SP_SPAWNED = 2, SP_EXITED = 3, SP_RUN = 4 };

typedef struct SpRequest {
	uint32_t magic, type;
	uint32_t n_fds; /* log, run dir, go, then the child's */
	uint32_t argv_len;
	QemuUser user;
	uint32_t merge_any;
	uint32_t has_cgroup; /* the 4th descriptor is the VM's cgroup */
	char pidfile[64];
} SpRequest;

typedef struct SpReply {
	uint32_t magic, type;
	int32_t pid; /* or -errno */
	int32_t wstatus;
} SpReply;

static int send_with_fds(int sock, const void *a, size_t alen, const void *b, size_t blen,
			 const int *fds, unsigned n_fds)
{
	struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
	char cbuf[CMSG_SPACE(sizeof(int) * SP_MAX_FDS)];
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = blen ? 2 : 1};
	if (n_fds) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	ssize_t n;
	while ((n = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return n < 0 ? -errno : 0;
}

/* ---- the spawner process ---- */

static void report(int sock, uint32_t type, pid_t pid, int wstatus)
{
	SpReply r = {.magic = SP_MAGIC, .type = type, .pid = pid, .wstatus = wstatus};
	send_with_fds(sock, &r, sizeof(r), NULL, 0, NULL, 0);
}

/* A tool (qemu-img): runs as the spawner's own user, output (stdout and
 * stderr) to out_fd, the descriptors from fd 3 on; killed with the
 * spawner (a tool never outlives hsd: every storage step is safe to cut). */
static _Noreturn void tool_child(char **argv, int out_fd, const int *fds, int n)
{
	launch_child_reset_signals();
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	umask(077); /* images are hsd's alone */
	int moved[SP_MAX_FDS];
	int ofd = out_fd;
	if (launch_child_move_fds(fds, n, moved, &ofd, 1) < 0)
		_exit(126);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null < 0 || launch_child_place_fds(null, ofd, moved, n) < 0)
		_exit(126);
	execvp(argv[0], argv);
	dprintf(2, "hsd: cannot execute %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static void handle_request(int sock)
{
	static char buf[sizeof(SpRequest) + SP_MAX_ARGV + 1];
	char cbuf[CMSG_SPACE(sizeof(int) * SP_MAX_FDS)];
	struct iovec iov = {buf, sizeof(buf) - 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf)};
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n == 0)
		_exit(0); /* hsd is gone */
	if (n < 0)
		return;
	int fds[SP_MAX_FDS];
	unsigned nf = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			nf = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			if (nf > SP_MAX_FDS)
				nf = SP_MAX_FDS;
			memcpy(fds, CMSG_DATA(c), nf * sizeof(int));
		}
	SpRequest req;
	pid_t pid = -EINVAL;
	if ((size_t)n < sizeof(req) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		goto out;
	memcpy(&req, buf, sizeof(req));
	if (req.magic != SP_MAGIC || (req.type != SP_SPAWN && req.type != SP_RUN) ||
	    req.n_fds != nf || nf < (req.type == SP_RUN ? 1u : 3u) ||
	    req.argv_len != (size_t)n - sizeof(req) || req.argv_len == 0)
		goto out;
	req.pidfile[sizeof(req.pidfile) - 1] = '\0';
	char *args = buf + sizeof(req);
	args[req.argv_len] = '\0';
	static char *argv[4096];
	size_t argc = 0;
	for (char *p = args; p < args + req.argv_len && argc < 4095; p += strlen(p) + 1)
		argv[argc++] = p;
	argv[argc] = NULL;
	if (req.type == SP_RUN) {
		pid = fork();
		if (pid == 0)
			tool_child(argv, fds[0], fds + 1, (int)nf - 1);
		if (pid < 0)
			pid = -errno;
		goto out;
	}
	unsigned first = req.has_cgroup ? 4 : 3;
	if (nf < first)
		goto out;
	ChildFds cf = {.n = (int)(nf - first)};
	memcpy(cf.src, fds + first, sizeof(int) * (nf - first));
	pid = fork();
	if (pid == 0)
		launch_child(argv, &cf, fds[0], fds[1], req.pidfile, fds[2],
			     req.has_cgroup ? fds[3] : -1, &req.user, req.merge_any != 0);
	if (pid < 0)
		pid = -errno;
out:
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	report(sock, SP_SPAWNED, pid, 0);
}

static _Noreturn void spawner_main(int sock)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_NAME, "hsd-spawner");
	if (getppid() == 1)
		_exit(0);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	for (;;) {
		struct pollfd p[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			_exit(1);
		if (p[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) > 0)
				;
			int st;
			pid_t pid;
			while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
				report(sock, SP_EXITED, pid, st);
		}
		if (p[0].revents & (POLLHUP | POLLERR))
			_exit(0);
		if (p[0].revents & POLLIN)
			handle_request(sock);
	}
}

/* ---- hsd's side ---- */

int spawner_start(Spawner *sp, HsError *err)
{
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return hs_error_set(err, -errno, "internal", "socketpair: %m");
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pair[0]);
		close(pair[1]);
		return hs_error_set(err, -e, "internal", "fork: %s", strerror(e));
	}
	if (pid == 0) {
		close(pair[0]);
		/* Keep only the socket and stdio. */
		int s = pair[1];
		if (s != 3 && dup2(s, 3) < 0)
			_exit(1);
		close_range(4, ~0U, 0);
		spawner_main(3);
	}
	close(pair[1]);
	sp->pid = pid;
	sp->fd = pair[0];
	return 0;
}

void spawner_stop(Spawner *sp)
{
	if (sp->fd >= 0)
		close(sp->fd); /* the spawner exits on EOF */
	sp->fd = -1;
	if (sp->pid > 0) {
		int st;
		while (waitpid(sp->pid, &st, 0) < 0 && errno == EINTR)
			;
	}
	sp->pid = 0;
}

static int read_reply(Spawner *sp, SpReply *r, int flags)
{
	ssize_t n;
	while ((n = recv(sp->fd, r, sizeof(*r), flags)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return -EPIPE;
	if (n < 0)
		return -errno;
	if ((size_t)n != sizeof(*r) || r->magic != SP_MAGIC)
		return -EPROTO;
	return 0;
}

int spawner_dispatch(Spawner *sp, SpawnerExitCb on_exit, void *ud)
{
	SpReply r;
	int ret;
	while ((ret = read_reply(sp, &r, MSG_DONTWAIT)) == 0)
		if (r.type == SP_EXITED && on_exit)
			on_exit(r.pid, r.wstatus, ud);
	return ret == -EAGAIN ? 0 : ret;
}

static pid_t request(Spawner *sp, SpRequest *req, char **argv, const int *fds, unsigned n_fds,
		     SpawnerExitCb on_exit, void *ud, HsError *err)
{
	size_t len = 0;
	for (char **p = argv; *p; p++)
		len += strlen(*p) + 1;
	if (len > SP_MAX_ARGV)
		return hs_error_set(err, -E2BIG, "internal", "QEMU's command line is too long");
	_cleanup_free_ char *packed = malloc(len);
	if (!packed)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	size_t off = 0;
	for (char **p = argv; *p; p++) {
		size_t n = strlen(*p) + 1;
		memcpy(packed + off, *p, n);
		off += n;
	}
	req->argv_len = (uint32_t)len;
	req->n_fds = n_fds;
	int r = send_with_fds(sp->fd, req, sizeof(*req), packed, len, fds, n_fds);
	if (r < 0)
		return hs_error_set(err, r, "internal", "the spawner is gone: %s", strerror(-r));
	for (;;) {
		SpReply rep;
		r = read_reply(sp, &rep, 0);
		if (r < 0)
			return hs_error_set(err, r, "internal", "the spawner is gone: %s",
					    strerror(-r));
		if (rep.type == SP_EXITED) {
			if (on_exit)
				on_exit(rep.pid, rep.wstatus, ud);
			continue;
		}
		if (rep.pid < 0)
			return hs_error_set(err, rep.pid, "internal", "cannot fork %s: %s", argv[0],
					    strerror(-rep.pid));
		return rep.pid;
	}
}

pid_t spawner_spawn(Spawner *sp, char **argv, const ChildFds *cf, int log_fd, int run_dirfd,
		    const char *pidfile, int go_fd, int cgroup_fd, const QemuUser *user,
		    bool merge_any, SpawnerExitCb on_exit, void *ud, HsError *err)
{
	SpRequest req = {.magic = SP_MAGIC, .type = SP_SPAWN, .user = *user,
			 .merge_any = merge_any, .has_cgroup = cgroup_fd >= 0};
	snprintf(req.pidfile, sizeof(req.pidfile), "%s", pidfile);
	int fds[SP_MAX_FDS] = {log_fd, run_dirfd, go_fd, cgroup_fd};
	unsigned first = cgroup_fd >= 0 ? 4 : 3;
	if (first + (unsigned)cf->n > SP_MAX_FDS)
		return hs_error_set(err, -E2BIG, "internal", "too many descriptors for QEMU");
	for (int i = 0; i < cf->n; i++)
		fds[first + i] = cf->src[i];
	return request(sp, &req, argv, fds, first + (unsigned)cf->n, on_exit, ud, err);
}

pid_t spawner_run(Spawner *sp, char **argv, int out_fd, const int *fds, unsigned n_fds,
		  SpawnerExitCb on_exit, void *ud, HsError *err)
{
	if (n_fds + 1 > SP_MAX_FDS)
		return hs_error_set(err, -E2BIG, "internal", "too many descriptors for %s",
				    argv[0]);
	SpRequest req = {.magic = SP_MAGIC, .type = SP_RUN};
	int all[SP_MAX_FDS] = {out_fd};
	for (unsigned i = 0; i < n_fds; i++)
		all[1 + i] = fds[i];
	return request(sp, &req, argv, all, n_fds + 1, on_exit, ud, err);
}
