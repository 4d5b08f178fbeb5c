/* SPDX-License-Identifier: Apache-2.0 */
/* hsd's seccomp allowlist, installed in a child process: what hsd needs
 * works, forbidden calls fail with EPERM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sandbox.h"

/* Runs fn in a child under the filter; returns its exit code. */
static int in_child(int (*fn)(void))
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		HsError err = {0};
		if (hsd_seccomp_install(&err) < 0) {
			fprintf(stderr, "%s\n", err.message);
			_exit(100);
		}
		_exit(fn());
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static int allowed_ops(void)
{
	char buf[64];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof(buf)) <= 0)
		return 1;
	close(fd);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 2;
	if (send(sv[0], "x", 1, MSG_NOSIGNAL) != 1 || recv(sv[1], buf, 1, 0) != 1)
		return 3;
	close(sv[0]);
	close(sv[1]);
	int pfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
	if (pfd < 0)
		return 4;
	close(pfd);
	void *p = malloc(1 << 20);
	if (!p)
		return 5;
	free(p);
	char tmpl[] = "/tmp/hs-sbx-XXXXXX";
	if (!mkdtemp(tmpl))
		return 6;
	if (rmdir(tmpl) < 0)
		return 7;
	return 0;
}

static int forbidden_ops(void)
{
	char *const argv[] = {(char *)"/bin/true", NULL};
	char *const envp[] = {NULL};
	if (execve("/bin/true", argv, envp) == 0 || errno != EPERM)
		return 10;
	if (syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) != -1 || errno != EPERM)
		return 11;
	if (ptrace(PTRACE_TRACEME, 0, 0, 0) != -1 || errno != EPERM)
		return 12;
	if (mount("none", "/mnt", "tmpfs", 0, NULL) != -1 || errno != EPERM)
		return 13;
	if (syscall(SYS_setuid, 0) != -1 || errno != EPERM)
		return 14;
	if (unshare(CLONE_NEWNS) != -1 || errno != EPERM)
		return 15;
	if (syscall(SYS_init_module, NULL, 0, "") != -1 || errno != EPERM)
		return 16;
	/* an ioctl outside the short list */
	if (ioctl(0, TIOCSTI, "x") != -1 || errno != EPERM)
		return 17;
	return 0;
}

static void test_allowed_work(void **state)
{
	assert_int_equal(in_child(allowed_ops), 0);
}

static void test_forbidden_refused(void **state)
{
	assert_int_equal(in_child(forbidden_ops), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed_work),
		cmocka_unit_test(test_forbidden_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
