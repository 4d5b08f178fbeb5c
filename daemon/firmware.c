/* SPDX-License-Identifier: Apache-2.0 */
/* A VM's firmware and TPM (issue 13): OVMF with the VM's own UEFI
 * variable store, and a TPM 2.0 emulated by swtpm, which hsd starts with
 * each QEMU and stops after it. docs/architecture.md "Firmware and TPM".
 *
 * On disk, in the VM's state dir:
 *   efivars.fd              the variable store (made from OVMF's template,
 *                           or a template's store, at create)
 *   tpm/                    swtpm's state (owned by the QEMU user: swtpm
 *                           runs as that user, with no capabilities)
 *   snapshots/S.efivars     copies taken with snapshot S
 *   snapshots/S.tpm         (tpm2-00.permall)
 *   .rb-efivars.fd, tpm/.rb-tpm2-00.permall
 *                           a rollback's copies, renamed into place once
 *                           disks.json records the rollback
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsd.h"
#include "storage.h"

#define FW_VARS "efivars.fd"
#define FW_VARS_RB ".rb-efivars.fd"
#define TPM_DIR "tpm"
#define TPM_PERMALL "tpm2-00.permall"
#define TPM_PERMALL_RB ".rb-tpm2-00.permall"
#define SWTPM_PIDFILE "swtpm.pid"
#define SWTPM_LOG "swtpm.log"
#define FW_MAX_FILE (64 << 20)
#define SWTPM_TERM_TIMEOUT 3.0
/* swtpm exits as soon as QEMU's end of the socket closes, which may be a
 * moment before hsd sees QEMU itself exit: its exit counts as lost only if
 * QEMU still runs this long after. */
#define SWTPM_LOST_GRACE 2.0

typedef struct VmFirmwareRun {
	Vm *vm;
	pid_t pid; /* swtpm; 0: none */
	int pidfd;
	ev_io watch;
	ev_timer kill_timer;
	bool stopping;
	ev_timer lost_timer; /* swtpm exited: is QEMU going too? */
	pid_t lost_pid, lost_qemu; /* that swtpm, and the QEMU it served */
} VmFirmwareRun;

static const char *ovmf_code(const VmSpec *s)
{
	return s->secure_boot ? "OVMF_CODE_4M.secboot.fd" : "OVMF_CODE_4M.fd";
}

/* Secure Boot: the store with Microsoft's keys enrolled (Windows, and
 * shim, which Microsoft signs); otherwise an empty one. */
static const char *ovmf_vars(const VmSpec *s)
{
	return s->secure_boot ? "OVMF_VARS_4M.ms.fd" : "OVMF_VARS_4M.fd";
}

static int open_ovmf(Hsd *h, const char *file, HsError *err)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", h->ovmf_dir, file);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hs_error_set(err, -ENODEV, "no-firmware",
				    "UEFI firmware %s is missing (install Debian's 'ovmf', or see "
				    "--ovmf-dir): %m",
				    path);
	return fd;
}

int firmware_spec_check(Hsd *h, const VmSpec *s, HsError *err)
{
	if (s->firmware == VM_FIRMWARE_UEFI) {
		int fd = open_ovmf(h, ovmf_code(s), err);
		if (fd < 0)
			return fd;
		close(fd);
		if ((fd = open_ovmf(h, ovmf_vars(s), err)) < 0)
			return fd;
		close(fd);
	}
	if (s->tpm && access(h->swtpm, X_OK) < 0)
		return hs_error_set(err, -ENODEV, "no-swtpm",
				    "tpm: %s cannot be run (install Debian's 'swtpm', or see "
				    "--swtpm): %m",
				    h->swtpm);
	return 0;
}

/* Copies src (in sdir) to dst (in ddir) atomically and durably. */
static int copy_file(int sdir, const char *src, int ddir, const char *dst, int mode,
		     const QemuUser *owner)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = hs_read_file(sdir, src, FW_MAX_FILE, &data, &len);
	if (r < 0)
		return r;
	r = hs_write_file_atomic(ddir, dst, data, len, mode);
	if (r == 0 && owner && owner->change &&
	    fchownat(ddir, dst, owner->uid, owner->gid, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	return r;
}

/* The template a VM's variable store is made from: the store kept with
 * the template of its first templated disk, if that has one. */
static int template_vars_dir(Hsd *h, const VmSpec *s)
{
	for (size_t i = 0; i < s->n_disks; i++) {
		if (!s->disks[i].template)
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/templates/%s", h->state_dir, s->disks[i].template);
		int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return -1;
		if (faccessat(dfd, FW_VARS, R_OK, 0) == 0)
			return dfd;
		close(dfd);
		return -1;
	}
	return -1;
}

static int open_tpm_dir(Vm *vm, bool create, HsError *err)
{
	Hsd *h = vm->hsd;
	if (create && mkdirat(vm->state_dirfd, TPM_DIR, 0700) == 0 && h->qemu_user.change &&
	    fchownat(vm->state_dirfd, TPM_DIR, h->qemu_user.uid, h->qemu_user.gid, 0) < 0)
		return hs_error_set(err, -errno, "internal", "cannot give %s/%s to %s: %m",
				    vm->spec.name, TPM_DIR, h->qemu_user.name);
	int fd = openat(vm->state_dirfd, TPM_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && (create || errno != ENOENT))
		return hs_error_set(err, -errno, "internal", "cannot open %s/%s: %m",
				    vm->spec.name, TPM_DIR);
	return fd;
}

int firmware_vm_prepare(Vm *vm, HsError *err)
{
	Hsd *h = vm->hsd;
	const VmSpec *s = &vm->spec;
	if (s->firmware == VM_FIRMWARE_UEFI && faccessat(vm->state_dirfd, FW_VARS, F_OK, 0) < 0) {
		int tdir = template_vars_dir(h, s);
		int r;
		if (tdir >= 0) {
			r = copy_file(tdir, FW_VARS, vm->state_dirfd, FW_VARS, 0600, NULL);
			close(tdir);
		} else {
			char path[512];
			snprintf(path, sizeof(path), "%s/%s", h->ovmf_dir, ovmf_vars(s));
			r = copy_file(AT_FDCWD, path, vm->state_dirfd, FW_VARS, 0600, NULL);
		}
		if (r < 0)
			return hs_error_set(err, r == -ENOENT ? -ENODEV : r,
					    r == -ENOENT ? "no-firmware" : "internal",
					    "cannot make the UEFI variable store of '%s': %s",
					    s->name, strerror(-r));
		log_info("vm %s: UEFI variable store made (%s)", s->name,
			 tdir >= 0 ? "from its template" : ovmf_vars(s));
	}
	if (s->tpm) {
		int fd = open_tpm_dir(vm, true, err);
		if (fd < 0)
			return fd;
		close(fd);
	}
	return 0;
}

static void on_swtpm_lost(struct ev_loop *loop, ev_timer *w, int revents);

static VmFirmwareRun *fw_get(Vm *vm)
{
	if (!vm->firmware) {
		vm->firmware = calloc(1, sizeof(*vm->firmware));
		if (vm->firmware) {
			vm->firmware->vm = vm;
			vm->firmware->pidfd = -1;
			ev_timer_init(&vm->firmware->lost_timer, on_swtpm_lost, SWTPM_LOST_GRACE, 0.);
			vm->firmware->lost_timer.data = vm->firmware;
		}
	}
	return vm->firmware;
}

static void swtpm_forget(VmFirmwareRun *f)
{
	Hsd *h = f->vm->hsd;
	ev_io_stop(h->loop, &f->watch);
	ev_timer_stop(h->loop, &f->kill_timer);
	if (f->pidfd >= 0)
		close(f->pidfd);
	f->pidfd = -1;
	f->pid = 0;
	f->stopping = false;
	unlinkat(f->vm->run_dirfd, SWTPM_PIDFILE, 0);
}

static void on_swtpm_lost(struct ev_loop *loop, ev_timer *w, int revents)
{
	VmFirmwareRun *f = w->data;
	Vm *vm = f->vm;
	struct pollfd p = {.fd = vm->pidfd, .events = POLLIN};
	if (vm->pidfd < 0 || vm->status.pid != f->lost_qemu ||
	    !vm_state_is_active(vm->status.state) || vm->status.state == VM_STATE_STOPPING ||
	    poll(&p, 1, 0) > 0)
		return; /* QEMU went too (or is being stopped): an ordinary end */
	/* The guest's TPM is gone under it: its next command fails. */
	log_error("vm %s: swtpm (pid %d) exited while QEMU runs; the guest's TPM no longer "
		  "answers (see %s)",
		  vm->spec.name, (int)f->lost_pid, SWTPM_LOG);
	events_publish(vm->hsd, json_pack("{s:s, s:s, s:s}", "type", "tpm", "vm", vm->spec.name,
					  "event", "swtpm-exited"));
}

static void on_swtpm_exit(struct ev_loop *loop, ev_io *w, int revents)
{
	VmFirmwareRun *f = w->data;
	Vm *vm = f->vm;
	log_debug("vm %s: swtpm exited", vm->spec.name);
	if (!f->stopping && vm->pidfd >= 0) {
		f->lost_pid = f->pid;
		f->lost_qemu = vm->status.pid;
		ev_timer_start(loop, &f->lost_timer);
	}
	swtpm_forget(f);
}

static void on_swtpm_kill(struct ev_loop *loop, ev_timer *w, int revents)
{
	VmFirmwareRun *f = w->data;
	if (f->pidfd >= 0) {
		log_warning("vm %s: swtpm ignores SIGTERM; killing it", f->vm->spec.name);
		hs_pidfd_send_signal(f->pidfd, SIGKILL);
	}
}

static void swtpm_watch(VmFirmwareRun *f, pid_t pid, int pidfd)
{
	Hsd *h = f->vm->hsd;
	f->pid = pid;
	f->pidfd = pidfd;
	f->stopping = false;
	ev_io_init(&f->watch, on_swtpm_exit, pidfd, EV_READ);
	f->watch.data = f;
	ev_io_start(h->loop, &f->watch);
	ev_timer_init(&f->kill_timer, on_swtpm_kill, SWTPM_TERM_TIMEOUT, 0.);
	f->kill_timer.data = f;
}

/* An old swtpm of this VM that is still there when a new one must start
 * (a restart right after QEMU exited) holds the state's lock: it gets
 * SIGKILL and a moment to go (the only wait in this file, bounded). */
static void swtpm_reap_now(VmFirmwareRun *f)
{
	if (f->pidfd < 0)
		return;
	hs_pidfd_send_signal(f->pidfd, SIGKILL);
	struct pollfd p = {.fd = f->pidfd, .events = POLLIN};
	(void)poll(&p, 1, 1000);
	swtpm_forget(f);
}

static int swtpm_spawn(Vm *vm, int ctrl, int tpm_dir, HsError *err)
{
	Hsd *h = vm->hsd;
	VmFirmwareRun *f = fw_get(vm);
	if (!f)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	swtpm_reap_now(f);
	_cleanup_close_ int log_fd = openat(vm->state_dirfd, SWTPM_LOG,
					    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open %s: %m", SWTPM_LOG);
	/* The control channel is fd 3 (QEMU holds the other end of the
	 * pair and gives swtpm the data channel over it); the state dir is
	 * fd 4, reached through /proc/self/fd: swtpm runs as the QEMU user,
	 * who may not walk hsd's state dir but owns this one. --terminate:
	 * it exits once QEMU's data channel closes. Its log is fd 5 (given
	 * fd 2, swtpm closes it before it starts logging). */
	char *argv[] = {h->swtpm,
			(char *)"socket",
			(char *)"--tpm2",
			(char *)"--ctrl",
			(char *)"type=unixio,clientfd=3",
			(char *)"--tpmstate",
			(char *)"dir=/proc/self/fd/4,mode=0600",
			(char *)"--terminate",
			(char *)"--log",
			(char *)"fd=5,level=1",
			NULL};
	ChildFds cf = {.n = 0};
	int dups[3] = {dup(ctrl), dup(tpm_dir), dup(log_fd)};
	for (int i = 0; i < 3; i++)
		if (dups[i] < 0 || child_fds_add(&cf, dups[i]) < 0) {
			for (int k = i + 1; k < 3; k++)
				if (dups[k] >= 0)
					close(dups[k]);
			child_fds_close(&cf);
			return hs_error_set(err, -EMFILE, "internal", "cannot pass swtpm its files");
		}
	int go[2];
	if (pipe2(go, O_CLOEXEC) < 0) {
		child_fds_close(&cf);
		return hs_error_set(err, -errno, "internal", "pipe: %m");
	}
	pid_t pid = spawner_spawn(&h->spawner, argv, &cf, log_fd, vm->run_dirfd, SWTPM_PIDFILE,
				  go[0], -1, &h->qemu_user, false, vm_spawner_exit, h, err);
	close(go[0]);
	child_fds_close(&cf);
	if (pid < 0) {
		close(go[1]);
		return pid;
	}
	int pidfd = hs_pidfd_open(pid);
	(void)!write(go[1], "g", 1);
	close(go[1]);
	if (pidfd < 0) {
		int r = -errno;
		kill(pid, SIGKILL);
		return hs_error_set(err, r, "internal", "pidfd_open: %s", strerror(-r));
	}
	swtpm_watch(f, pid, pidfd);
	log_info("vm %s: swtpm started (pid %d)", vm->spec.name, (int)pid);
	return 0;
}

int firmware_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, HsError *err)
{
	Hsd *h = vm->hsd;
	const VmSpec *s = &vm->spec;
	int r = firmware_vm_prepare(vm, err);
	if (r < 0)
		return r;
	if (s->firmware == VM_FIRMWARE_UEFI) {
		int code = open_ovmf(h, ovmf_code(s), err);
		if (code < 0)
			return code;
		if ((l->fw_code_fd = child_fds_add(fds, code)) < 0)
			return hs_error_set(err, -EMFILE, "internal", "too many descriptors");
		int vars = openat(vm->state_dirfd, FW_VARS, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (vars < 0)
			return hs_error_set(err, -errno, "internal", "cannot open %s: %m", FW_VARS);
		if ((l->fw_vars_fd = child_fds_add(fds, vars)) < 0)
			return hs_error_set(err, -EMFILE, "internal", "too many descriptors");
	}
	if (s->tpm) {
		_cleanup_close_ int dir = open_tpm_dir(vm, true, err);
		if (dir < 0)
			return dir;
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			return hs_error_set(err, -errno, "internal", "socketpair: %m");
		r = swtpm_spawn(vm, sv[1], dir, err);
		close(sv[1]);
		if (r < 0) {
			close(sv[0]);
			return r;
		}
		if ((l->tpm_fd = child_fds_add(fds, sv[0])) < 0)
			return hs_error_set(err, -EMFILE, "internal", "too many descriptors");
	}
	return 0;
}

void firmware_vm_release(Vm *vm)
{
	VmFirmwareRun *f = vm->firmware;
	if (f) /* QEMU is gone: a swtpm that went first was not lost */
		ev_timer_stop(vm->hsd->loop, &f->lost_timer);
	if (!f || f->pidfd < 0 || f->stopping)
		return;
	/* QEMU is gone: swtpm has nothing left to serve. It exits by itself
	 * when QEMU's data channel closes (--terminate); one that never got
	 * one (QEMU failed early) is told to. */
	f->stopping = true;
	hs_pidfd_send_signal(f->pidfd, SIGTERM);
	ev_timer_start(vm->hsd->loop, &f->kill_timer);
}

/* Is pid the swtpm of this VM? Its fd 4 is the VM's tpm dir. */
static bool pid_is_our_swtpm(Vm *vm, pid_t pid)
{
	char path[64], link[4096], want[4096];
	snprintf(path, sizeof(path), "/proc/%d/fd/4", (int)pid);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = '\0';
	snprintf(want, sizeof(want), "%s/vms/%s/%s", vm->hsd->state_dir, vm->spec.name, TPM_DIR);
	return !strcmp(link, want);
}

void firmware_vm_adopt(Vm *vm)
{
	if (!vm->spec.tpm)
		return;
	char buf[32];
	if (hs_read_small(vm->run_dirfd, SWTPM_PIDFILE, buf, sizeof(buf)) < 0)
		return;
	pid_t pid = (pid_t)atoi(buf);
	VmFirmwareRun *f = fw_get(vm);
	if (pid <= 0 || !f)
		return;
	int pidfd = hs_pidfd_open(pid);
	if (pidfd < 0 || !pid_is_our_swtpm(vm, pid)) {
		if (pidfd >= 0)
			close(pidfd);
		log_warning("vm %s: its swtpm (pid %d) is gone", vm->spec.name, (int)pid);
		unlinkat(vm->run_dirfd, SWTPM_PIDFILE, 0);
		return;
	}
	swtpm_watch(f, pid, pidfd);
	log_info("vm %s: swtpm (pid %d) found again", vm->spec.name, (int)pid);
	if (vm->pidfd < 0)
		firmware_vm_release(vm);
}

void firmware_vm_free(Vm *vm)
{
	VmFirmwareRun *f = vm->firmware;
	if (!f)
		return;
	/* hsd goes, swtpm stays with its QEMU (found again at restart). */
	ev_io_stop(vm->hsd->loop, &f->watch);
	ev_timer_stop(vm->hsd->loop, &f->kill_timer);
	ev_timer_stop(vm->hsd->loop, &f->lost_timer);
	if (f->pidfd >= 0)
		close(f->pidfd);
	free(f);
	vm->firmware = NULL;
}

json_t *firmware_vm_json(Vm *vm)
{
	const VmSpec *s = &vm->spec;
	json_t *o = json_pack("{s:s}", "type", vm_firmware_to_string(s->firmware));
	if (s->firmware == VM_FIRMWARE_UEFI) {
		struct stat st;
		json_object_set_new(o, "secure_boot", json_boolean(s->secure_boot));
		json_object_set_new(o, "code", json_string(ovmf_code(s)));
		json_object_set_new(o, "vars_bytes",
				    fstatat(vm->state_dirfd, FW_VARS, &st, 0) == 0
					    ? json_integer((json_int_t)st.st_size)
					    : json_null());
	}
	if (s->tpm) {
		VmFirmwareRun *f = vm->firmware;
		json_t *t = json_pack("{s:s, s:b}", "version", "2.0", "running", f && f->pid > 0);
		if (f && f->pid > 0)
			json_object_set_new(t, "swtpm_pid", json_integer(f->pid));
		json_object_set_new(o, "tpm", t);
	}
	return o;
}

/* ---- snapshots and templates ---- */

static void snap_file(char *buf, size_t size, const char *snap, const char *what)
{
	snprintf(buf, size, "%s.%s", snap, what);
}

static int open_snapshots_dir(Vm *vm, bool create)
{
	if (create)
		mkdirat(vm->state_dirfd, "snapshots", 0700);
	return openat(vm->state_dirfd, "snapshots", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int firmware_snapshot_save(Vm *vm, const char *snap, HsError *err)
{
	char name[128];
	int r = 0;
	_cleanup_close_ int sdir = open_snapshots_dir(vm, true);
	if (sdir < 0)
		r = -errno;
	/* A store being written while it is copied is what a power cut
	 * leaves: OVMF's fault-tolerant writes recover either way. */
	if (r == 0 && faccessat(vm->state_dirfd, FW_VARS, F_OK, 0) == 0) {
		snap_file(name, sizeof(name), snap, "efivars");
		r = copy_file(vm->state_dirfd, FW_VARS, sdir, name, 0600, NULL);
	}
	/* swtpm replaces its state file whole (write + rename). */
	_cleanup_close_ int dir = r == 0 ? open_tpm_dir(vm, false, err) : -1;
	if (r == 0 && dir >= 0 && faccessat(dir, TPM_PERMALL, F_OK, 0) == 0) {
		snap_file(name, sizeof(name), snap, "tpm");
		r = copy_file(dir, TPM_PERMALL, sdir, name, 0600, NULL);
	}
	if (r < 0) {
		firmware_snapshot_drop(vm, snap);
		return hs_error_set(err, r == -ENOENT ? -EIO : r, "storage-failed",
				    "cannot save the firmware state with snapshot '%s': %s", snap,
				    strerror(-r));
	}
	return 0;
}

void firmware_snapshot_drop(Vm *vm, const char *snap)
{
	char name[128];
	_cleanup_close_ int sdir = open_snapshots_dir(vm, false);
	if (sdir < 0)
		return;
	snap_file(name, sizeof(name), snap, "efivars");
	unlinkat(sdir, name, 0);
	snap_file(name, sizeof(name), snap, "tpm");
	unlinkat(sdir, name, 0);
}

bool firmware_snapshot_file(const char *file, char *snap, size_t size)
{
	const char *dot = strrchr(file, '.');
	if (!dot || (strcmp(dot, ".efivars") && strcmp(dot, ".tpm")))
		return false;
	snprintf(snap, size, "%.*s", (int)(dot - file), file);
	return true;
}

int firmware_rollback_prepare(Vm *vm, const char *snap, HsError *err)
{
	char name[128];
	int r = 0;
	_cleanup_close_ int sdir = open_snapshots_dir(vm, false);
	if (sdir < 0)
		return 0; /* no snapshot of this VM has firmware state */
	snap_file(name, sizeof(name), snap, "efivars");
	if (faccessat(sdir, name, F_OK, 0) == 0)
		r = copy_file(sdir, name, vm->state_dirfd, FW_VARS_RB, 0600, NULL);
	snap_file(name, sizeof(name), snap, "tpm");
	if (r == 0 && faccessat(sdir, name, F_OK, 0) == 0) {
		_cleanup_close_ int dir = open_tpm_dir(vm, true, err);
		if (dir < 0)
			r = dir;
		else
			r = copy_file(sdir, name, dir, TPM_PERMALL_RB, 0600, &vm->hsd->qemu_user);
	}
	if (r < 0) {
		firmware_rollback_finish(vm, false);
		return hs_error_set(err, r == -ENOENT ? -EIO : r, "storage-failed",
				    "cannot restore the firmware state of snapshot '%s': %s", snap,
				    strerror(-r));
	}
	return 0;
}

void firmware_rollback_finish(Vm *vm, bool commit)
{
	HsError err;
	_cleanup_close_ int dir = open_tpm_dir(vm, false, &err);
	if (!commit) {
		unlinkat(vm->state_dirfd, FW_VARS_RB, 0);
		if (dir >= 0)
			unlinkat(dir, TPM_PERMALL_RB, 0);
		return;
	}
	if (renameat(vm->state_dirfd, FW_VARS_RB, vm->state_dirfd, FW_VARS) == 0)
		log_info("vm %s: UEFI variables rolled back", vm->spec.name);
	if (dir >= 0 && renameat(dir, TPM_PERMALL_RB, dir, TPM_PERMALL) == 0) {
		/* The rest of swtpm's state (a suspended TPM's volatile
		 * state) belongs to the state thrown away. */
		unlinkat(dir, "tpm2-00.volatilestate", 0);
		unlinkat(dir, "tpm2-00.savestate", 0);
		log_info("vm %s: TPM state rolled back", vm->spec.name);
	}
	fsync(vm->state_dirfd);
	if (dir >= 0)
		fsync(dir);
}

int firmware_template_save(Vm *vm, int tmpl_dirfd, HsError *err)
{
	if (faccessat(vm->state_dirfd, FW_VARS, F_OK, 0) < 0)
		return 0;
	/* The variables (boot entries, enrolled keys) go with the image;
	 * the TPM never does: a clone gets a TPM of its own. */
	int r = copy_file(vm->state_dirfd, FW_VARS, tmpl_dirfd, FW_VARS, 0444, NULL);
	if (r < 0)
		return hs_error_set(err, r, "internal",
				    "cannot copy the UEFI variables of '%s' into the template: %s",
				    vm->spec.name, strerror(-r));
	return 1;
}
