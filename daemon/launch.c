/* SPDX-License-Identifier: Apache-2.0 */
#include "launch.h"

#include <cap-ng.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cgroup.h"
#include "net.h"

extern char **environ;

void child_fds_close(ChildFds *f)
{
	for (int i = 0; i < f->n; i++)
		if (f->src[i] >= 0)
			close(f->src[i]);
	f->n = 0;
}

int child_fds_add(ChildFds *f, int fd)
{
	if (f->n >= LAUNCH_MAX_FDS) {
		close(fd);
		return -EMFILE;
	}
	f->src[f->n] = fd;
	return 3 + f->n++;
}

static int open_for(ChildFds *f, int dirfd, const char *path, int flags, const char *field,
		    HsError *err)
{
	int fd = openat(dirfd, path, flags | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return hs_error_set(err, -errno, "invalid-spec", "%s: cannot open '%s': %m", field,
				    path);
	return child_fds_add(f, fd);
}

/* A file of the spec: only beneath an allowed directory. */
static int open_spec_file(ChildFds *f, const AllowedDirs *allowed, const char *path, int flags,
			  const char *field, HsError *err)
{
	int fd = paths_open_beneath(allowed, path, flags, field, err);
	if (fd == -EPERM)
		return fd;
	if (fd < 0) {
		/* The VM's stored definition names a file that is not there (or
		 * not readable) now: a conflict with the host's state, not a bad
		 * request and not a missing VM. */
		err->code = -ESTALE;
		snprintf(err->kind, sizeof(err->kind), "file-unavailable");
		return -ESTALE;
	}
	return child_fds_add(f, fd);
}

int launch_prepare(const VmSpec *s, const AllowedDirs *allowed, int state_dirfd, int rootfd,
		   int qmp_listen, int serial_listen, ChildFds *f, QemuLaunch *l, HsError *err)
{
	int r;
	char field[64];

	f->n = 0;
	l->pass_fds = true;
	l->qmp_fd = child_fds_add(f, qmp_listen);
	l->serial_fd = child_fds_add(f, serial_listen);
	r = l->serial_log_fd = open_for(f, state_dirfd, "console.log",
					O_WRONLY | O_CREAT | O_APPEND, "console log", err);
	if (r < 0)
		goto fail;
	l->kernel_fd = l->initrd_fd = -1;
	if (s->kernel && (r = l->kernel_fd = open_spec_file(f, allowed, s->kernel, O_RDONLY,
							    "kernel", err)) < 0)
		goto fail;
	if (s->initrd && (r = l->initrd_fd = open_spec_file(f, allowed, s->initrd, O_RDONLY,
							    "initrd", err)) < 0)
		goto fail;
	for (size_t i = 0; i < s->n_disks; i++) {
		l->disk_fds[i][0] = l->disk_fds[i][1] = -1;
		if (s->disks[i].managed)
			continue; /* storage.c opens its layers */
		snprintf(field, sizeof(field), "disks[%zu]", i);
		r = l->disk_fds[i][0] =
			open_spec_file(f, allowed, s->disks[i].path, O_RDONLY, field, err);
		if (r < 0)
			goto fail;
		l->disk_fds[i][1] = -1;
		if (!s->disks[i].readonly &&
		    (r = l->disk_fds[i][1] =
			     open_spec_file(f, allowed, s->disks[i].path, O_RDWR, field, err)) < 0)
			goto fail;
	}
	return 0;
fail:
	/* The listening sockets stay the caller's. */
	f->src[0] = f->src[1] = -1;
	child_fds_close(f);
	return r;
}

static int run_useradd(const char *name)
{
	char *const argv[] = {(char *)"useradd", (char *)"--system", (char *)"--user-group",
			      (char *)"--no-create-home", (char *)"--home-dir",
			      (char *)"/nonexistent", (char *)"--shell",
			      (char *)"/usr/sbin/nologin", (char *)"--comment",
			      (char *)"Hypervisor Scale QEMU processes", (char *)name, NULL};
	pid_t pid;
	int status;
	const char *bin = access("/usr/sbin/useradd", X_OK) == 0 ? "/usr/sbin/useradd"
								  : "/sbin/useradd";
	if (posix_spawn(&pid, bin, NULL, NULL, argv, environ) != 0)
		return -errno;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

int qemu_user_resolve(const char *name, bool create, QemuUser *ret, HsError *err)
{
	QemuUser u = {.change = true};
	struct passwd *pw = getpwnam(name);
	if (!pw && create && geteuid() == 0) {
		if (run_useradd(name) < 0)
			return hs_error_set(err, -EIO, "internal",
					    "QEMU user '%s' does not exist and useradd failed",
					    name);
		pw = getpwnam(name);
	}
	if (!pw)
		return hs_error_set(err, -ENOENT, "internal", "QEMU user '%s' does not exist",
				    name);
	snprintf(u.name, sizeof(u.name), "%s", name);
	u.uid = pw->pw_uid;
	u.gid = pw->pw_gid;
	struct group *kvm = getgrnam("kvm");
	if (kvm)
		u.groups[u.n_groups++] = kvm->gr_gid;
	*ret = u;
	return 0;
}

/* Drops to `user` (if it changes) with no capabilities at all, and sets
 * no_new_privs so nothing QEMU runs can gain any back. */
static int drop_privileges(const QemuUser *user)
{
	if (user->change) {
		if (setgroups(user->n_groups, user->groups) < 0)
			return -errno;
		capng_clear(CAPNG_SELECT_BOTH);
		if (capng_change_id((int)user->uid, (int)user->gid, CAPNG_CLEAR_BOUNDING) < 0)
			return -EPERM;
	} else if (geteuid() != 0) {
		/* Already unprivileged: clear whatever capabilities we hold. */
		capng_clear(CAPNG_SELECT_BOTH);
		if (capng_apply(CAPNG_SELECT_BOTH) < 0)
			return -EPERM;
	}
#ifdef PR_CAP_AMBIENT
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
#endif
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

void launch_child_reset_signals(void)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	setsid();
}

int launch_child_move_fds(const int *src, int n, int *moved, int *keep, int n_keep)
{
	int base = 3 + n + 16;
	for (int i = 0; i < n; i++)
		if ((moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, base)) < 0)
			return -1;
	for (int i = 0; i < n_keep; i++)
		if ((keep[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, base)) < 0)
			return -1;
	return 0;
}

int launch_child_place_fds(int null, int out, const int *moved, int n)
{
	if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
		return -1;
	for (int i = 0; i < n; i++)
		if (dup2(moved[i], 3 + i) < 0) /* dup2 clears FD_CLOEXEC */
			return -1;
	close_range((unsigned)(3 + n), ~0U, 0);
	return 0;
}

_Noreturn void launch_child(char **argv, const ChildFds *f, int log_fd, int run_dirfd,
			    const char *pidfile, int go_fd, int cgroup_fd, const QemuUser *user,
			    bool merge_any)
{
	launch_child_reset_signals();

	/* Move everything clear of the target numbers, then place it. */
	int moved[LAUNCH_MAX_FDS];
	int keep[2] = {log_fd, go_fd};
	if (launch_child_move_fds(f->src, f->n, moved, keep, 2) < 0)
		_exit(126);
	int lfd = keep[0], gfd = keep[1];
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		_exit(126);

	/* The pidfile is written before hsd's go, so it exists whenever QEMU
	 * may run. */
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	int pf = openat(run_dirfd, pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (pf >= 0) {
		(void)!write(pf, buf, (size_t)n);
		close(pf);
	}
	/* Wait until hsd has recorded our pid durably. If hsd dies first, the
	 * pipe gives EOF and we never become a QEMU nobody knows about. */
	char go;
	ssize_t k;
	while ((k = read(gfd, &go, 1)) < 0 && errno == EINTR)
		;
	if (k != 1)
		_exit(125);

	/* Into the VM's cgroup before QEMU's first instruction (and before the
	 * privilege drop: the cgroup files are root's). */
	if (cgroup_fd >= 0 && cgroup_enter(cgroup_fd) < 0) {
		dprintf(lfd, "hsd: cannot enter the VM's cgroup\n");
		_exit(123);
	}
	if (launch_child_place_fds(null, lfd, moved, f->n) < 0)
		_exit(126);

	/* QEMU's own heap and buffers are alike across VMs too; KSM may take
	 * them (Linux >= 6.4; needs CAP_SYS_RESOURCE, so before the drop;
	 * older kernels just say no). */
	if (merge_any)
		(void)prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
	int r = drop_privileges(user);
	if (r < 0) {
		dprintf(2, "hsd: cannot drop privileges to %s: %s\n",
			user->change ? user->name : "self", strerror(-r));
		_exit(124);
	}
	execv(argv[0], argv);
	dprintf(2, "hsd: cannot execute %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}
