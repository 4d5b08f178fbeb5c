/* SPDX-License-Identifier: Apache-2.0 */
#include "tool.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "hsd.h"

#define TOOL_OUTPUT_MAX (1 << 20)

typedef struct Tool Tool;
struct Tool {
	Hsd *h;
	Tool *next;
	pid_t pid;
	int pidfd;
	int out_fd;
	char name[32];
	double started;
	bool exited, timed_out;
	int wstatus;
	ev_timer timer; /* timeout, then the deferred completion */
	ToolDoneCb cb;
	void *ud;
};

static Tool *tools;

static void tool_unlink(Tool *t)
{
	for (Tool **p = &tools; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			return;
		}
}

static void tool_free(Tool *t)
{
	ev_timer_stop(t->h->loop, &t->timer);
	if (t->pidfd >= 0)
		close(t->pidfd);
	if (t->out_fd >= 0)
		close(t->out_fd);
	free(t);
}

static void tool_finish(Tool *t)
{
	_cleanup_free_ char *out = NULL;
	off_t size = lseek(t->out_fd, 0, SEEK_END);
	if (size < 0)
		size = 0;
	if (size > TOOL_OUTPUT_MAX)
		size = TOOL_OUTPUT_MAX;
	out = calloc(1, (size_t)size + 1);
	if (out && size > 0) {
		ssize_t n = pread(t->out_fd, out, (size_t)size, 0);
		out[n > 0 ? n : 0] = '\0';
	}
	ToolResult res = {
		.ok = !t->timed_out && WIFEXITED(t->wstatus) && WEXITSTATUS(t->wstatus) == 0,
		.wstatus = t->wstatus,
		.timed_out = t->timed_out,
		.output = out ? out : "",
		.seconds = hs_now() - t->started,
	};
	log_debug("tool %s (pid %d): %s in %.3f s", t->name, (int)t->pid,
		  res.ok ? "done" : "failed", res.seconds);
	tool_unlink(t);
	ToolDoneCb cb = t->cb;
	void *ud = t->ud;
	Hsd *h = t->h;
	tool_free(t);
	cb(h, &res, ud);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	Tool *t = w->data;
	if (t->exited) {
		tool_finish(t);
		return;
	}
	/* Timed out: kill it; its exit report completes the run. */
	log_warning("tool %s (pid %d) timed out; killing it", t->name, (int)t->pid);
	t->timed_out = true;
	if (t->pidfd >= 0)
		hs_pidfd_send_signal(t->pidfd, SIGKILL);
	ev_timer_set(&t->timer, 30., 0.);
	ev_timer_start(loop, &t->timer);
}

int tool_run(Hsd *h, char *const *argv, const int *fds, unsigned n_fds, double timeout,
	     ToolDoneCb cb, void *ud, HsError *err)
{
	Tool *t = calloc(1, sizeof(*t));
	if (!t)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	t->h = h;
	t->pidfd = -1;
	t->cb = cb;
	t->ud = ud;
	snprintf(t->name, sizeof(t->name), "%s", strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1
									 : argv[0]);
	ev_timer_init(&t->timer, on_timer, timeout, 0.);
	t->timer.data = t;
	t->out_fd = memfd_create("hsd-tool-output", MFD_CLOEXEC);
	if (t->out_fd < 0) {
		int r = -errno;
		free(t);
		return hs_error_set(err, r, "internal", "memfd_create: %s", strerror(-r));
	}
	{
		_cleanup_free_ char *line = strv_join((char **)argv);
		log_debug("tool: %s", line ? line : argv[0]);
	}
	t->started = hs_now();
	pid_t pid = spawner_run(&h->spawner, (char **)argv, t->out_fd, fds, n_fds,
				vm_spawner_exit, h, err);
	if (pid < 0) {
		tool_free(t);
		return pid;
	}
	t->pid = pid;
	t->pidfd = hs_pidfd_open(pid);
	t->next = tools;
	tools = t;
	ev_timer_start(h->loop, &t->timer);
	return 0;
}

bool tool_spawner_exit(Hsd *h, pid_t pid, int wstatus)
{
	for (Tool *t = tools; t; t = t->next)
		if (t->pid == pid && !t->exited) {
			t->exited = true;
			t->wstatus = wstatus;
			/* Complete from the loop, not from inside the spawner's
			 * dispatch (which may run within another request). */
			ev_timer_stop(h->loop, &t->timer);
			ev_timer_set(&t->timer, 0., 0.);
			ev_timer_start(h->loop, &t->timer);
			return true;
		}
	return false;
}

void tool_free_all(Hsd *h)
{
	while (tools) {
		Tool *t = tools;
		tools = t->next;
		if (!t->exited && t->pidfd >= 0)
			hs_pidfd_send_signal(t->pidfd, SIGKILL);
		tool_free(t);
	}
}

void tool_describe_failure(const ToolResult *res, char *buf, size_t size)
{
	/* The last non-empty line of the output says most. */
	const char *out = res->output ? res->output : "";
	size_t len = strlen(out);
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
		len--;
	size_t start = len;
	while (start > 0 && out[start - 1] != '\n')
		start--;
	if (res->timed_out)
		snprintf(buf, size, "timed out after %.0f s", res->seconds);
	else if (WIFSIGNALED(res->wstatus))
		snprintf(buf, size, "killed by signal %d", WTERMSIG(res->wstatus));
	else if (len > start)
		snprintf(buf, size, "%.*s", (int)(len - start), out + start);
	else
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(res->wstatus));
}
