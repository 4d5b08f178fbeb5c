/* SPDX-License-Identifier: Apache-2.0 */
#include "sandbox.h"

#include <linux/if_tun.h>
#include <sched.h>
#include <string.h>
#include <linux/sockios.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <termios.h>

/* What hsd calls after start-up (found with strace over the integration
 * tests, plus what glibc, libev and libmicrohttpd may use for the same
 * work). */
static const char *const allowed[] = {
	/* files */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close", "open",
	"openat", "openat2", "creat", "stat", "fstat", "lstat", "newfstatat", "statx", "access",
	"faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "mkdir", "mkdirat",
	"unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2", "fsync", "fdatasync",
	"ftruncate", "fcntl", "dup", "dup2", "dup3", "pipe2", "flock", "close_range", "umask",
	"fstatfs", "statfs", "memfd_create", "fchmod", "fchmodat", "linkat",
	/* macvtap NICs: the /dev/tapN node, where /dev has none */
	"mknodat", "mknod",
	/* warm templates: a memory_file VM's RAM file goes to the QEMU user
	 * (RAM is copied by a tool, cp, not by hsd) */
	"fchown",
	/* SPICE sockets (spice.c) go to the admin group */
	"fchownat",
	/* memory */
	"mmap", "munmap", "mremap", "mprotect", "brk", "madvise",
	/* signals, the loop, time */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
	"select", "pselect6", "eventfd2", "signalfd4", "timerfd_create", "timerfd_settime",
	"clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
	/* sockets: API, QMP, consoles, the spawner */
	"socket", "socketpair", "connect", "accept", "accept4", "bind", "listen", "getsockname",
	"getpeername", "getsockopt", "setsockopt", "sendto", "sendmsg", "recvfrom", "recvmsg",
	"shutdown",
	/* processes: watch and signal QEMUs through pidfds; reap the spawner */
	"pidfd_open", "pidfd_send_signal", "waitid", "wait4",
	/* identity and misc */
	"getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
	"getrandom", "uname", "sysinfo", "getrlimit", "prlimit64", "sched_yield", "futex",
	"sched_getaffinity", "sched_setaffinity", "tgkill", "exit", "exit_group",
	/* KSM: ksmd's priority while memory is at stake (ksm-tuner.c) */
	"getpriority", "setpriority",
	/* threads (libisofs writes an ISO from a thread of its own) */
	"set_robust_list", "rseq", "get_robust_list",
	NULL,
};

/* ioctls: taps and macvtaps for NICs, and what stdio may ask. */
static const unsigned long allowed_ioctls[] = {
	TUNSETIFF, TUNGETIFF, SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCBRADDIF, SIOCGIFINDEX, FIONBIO, FIONREAD,
	TCGETS, FIOCLEX,
};

int hsd_seccomp_install(HsError *err)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		return hs_error_set(err, -ENOMEM, "internal", "seccomp_init failed");
	int r = 0;
	for (size_t i = 0; allowed[i] && r == 0; i++) {
		int nr = seccomp_syscall_resolve_name(allowed[i]);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture */
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	}
	for (size_t i = 0; i < ARRAY_SIZE(allowed_ioctls) && r == 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_EQ, allowed_ioctls[i]));
	/* Threads yes, processes no: clone only with CLONE_THREAD; clone3's
	 * flags sit in memory a filter cannot read, so glibc is told it does
	 * not exist and falls back to clone. */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot install the seccomp filter: %s",
				    strerror(-r));
	return 0;
}
