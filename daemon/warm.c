/* SPDX-License-Identifier: Apache-2.0 */
/* Warm templates (warm.h).
 *
 * Capture (a running memory_file VM): stop the vCPUs, x-ignore-shared on,
 * migrate to the template's state file (RAM stays in the VM's file), copy
 * the RAM file into a sealed memfd and from it into the template's ram
 * file, all while the guest is paused; write template.json and rename the
 * directory into place (it appears whole or not at all: leftovers of a
 * crash are .new-* directories, removed at the next start); then
 * x-ignore-shared off and cont (then=resume) or kill QEMU (then=stop).
 *
 * Clone start: the sealed copy as memory-backend-file share=off, -incoming
 * defer, x-ignore-shared on, migrate-incoming from the state file
 * (storage_vm_incoming), then the normal start goes on to cont. */
#include "warm.h"

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include "hsd.h"

#define WARM_MARKER "warm-start"
#define WARM_POLL 0.002
#define WARM_TIMEOUT 600.0

/* Sealed copies of templates' RAM, one per template, made on first use. */
typedef struct WarmCache {
	struct WarmCache *next;
	char name[VM_NAME_MAX + 1];
	int fd;
} WarmCache;

static int templates_fd = -1;

int warm_init(Hsd *h, HsError *err)
{
	int r = hs_mkdir_p(h->memory_dir, 0711);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot make memory dir %s: %s",
				    h->memory_dir, strerror(-r));
	h->memory_dirfd = open(h->memory_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->memory_dirfd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open %s: %m", h->memory_dir);
	_cleanup_free_ char *p = hs_strdup_printf("%s/templates", h->state_dir);
	templates_fd = p ? open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (templates_fd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open %s: %m",
				    p ? p : "templates");
	return 0;
}

void warm_free(Hsd *h)
{
	while (h->warm) {
		WarmCache *c = h->warm;
		h->warm = c->next;
		close(c->fd);
		free(c);
	}
	if (h->memory_dirfd >= 0)
		close(h->memory_dirfd);
	h->memory_dirfd = -1;
	if (templates_fd >= 0)
		close(templates_fd);
	templates_fd = -1;
}

/* Copies all of src (from offset 0) to dst; 0 or -errno. */
static int copy_all(int dst, int src, uint64_t size)
{
	off_t off = 0;
	while ((uint64_t)off < size) {
		ssize_t n = sendfile(dst, src, &off, size - (uint64_t)off > (1u << 30)
							     ? 1u << 30
							     : (size_t)(size - (uint64_t)off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
	}
	return 0;
}

/* A sealed memfd holding size bytes of src: writes and shared writable
 * mappings are refused to everyone; private mappings are fine. */
static int sealed_copy(const char *name, int src, uint64_t size)
{
	char mname[VM_NAME_MAX + 16];
	snprintf(mname, sizeof(mname), "hs-warm-%s", name);
	_cleanup_close_ int fd = memfd_create(mname, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		return -errno;
	int r = copy_all(fd, src, size);
	if (r < 0)
		return r;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	return TAKE_FD(fd);
}

static WarmCache *cache_find(Hsd *h, const char *name)
{
	for (WarmCache *c = h->warm; c; c = c->next)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

static int cache_add(Hsd *h, const char *name, int fd)
{
	WarmCache *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->fd = fd;
	c->next = h->warm;
	h->warm = c;
	return 0;
}

void warm_template_deleted(Hsd *h, const char *name)
{
	for (WarmCache **p = &h->warm; *p; p = &(*p)->next)
		if (!strcmp((*p)->name, name)) {
			WarmCache *c = *p;
			*p = c->next;
			close(c->fd);
			free(c);
			return;
		}
}

/* The template's sealed RAM copy (made from its ram file on first use:
 * the first clone start after hsd started pays for the copy). */
static int template_ram_fd(Hsd *h, const char *name, HsError *err)
{
	WarmCache *c = cache_find(h, name);
	if (c)
		return c->fd;
	char path[VM_NAME_MAX + 8];
	snprintf(path, sizeof(path), "%s/ram", name);
	_cleanup_close_ int src = openat(templates_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (src < 0 || fstat(src, &st) < 0)
		return hs_error_set(err, -errno, "storage-failed",
				    "warm template '%s': cannot open its RAM: %m", name);
	double t0 = hs_now();
	int fd = sealed_copy(name, src, (uint64_t)st.st_size);
	if (fd < 0)
		return hs_error_set(err, fd, "storage-failed",
				    "warm template '%s': cannot load its RAM: %s", name,
				    strerror(-fd));
	log_info("template %s: RAM loaded (%" PRIu64 " MiB in %.0f ms)", name,
		 (uint64_t)st.st_size >> 20, (hs_now() - t0) * 1e3);
	int r = cache_add(h, name, fd);
	if (r < 0)
		return hs_error_set(err, r, "internal", "out of memory");
	return fd;
}

static json_t *template_json(const char *name)
{
	char path[VM_NAME_MAX + 32];
	snprintf(path, sizeof(path), "%s/template.json", name);
	_cleanup_free_ char *data = NULL;
	if (hs_read_file(templates_fd, path, 1 << 20, &data, NULL) < 0)
		return NULL;
	return json_loads(data, 0, NULL);
}

static bool is_warm(json_t *t)
{
	const char *k = json_string_value(json_object_get(t, "kind"));
	return k && !strcmp(k, "warm");
}

/* ---- a VM's start ---- */

bool warm_vm_fresh(Vm *vm)
{
	return vm->spec.warm_template[0] &&
	       faccessat(vm->state_dirfd, WARM_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int warm_vm_created(Vm *vm, HsError *err)
{
	const char *t = vm->spec.warm_template;
	int r = hs_write_file_atomic(vm->state_dirfd, WARM_MARKER, t, strlen(t), 0600);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot mark the clone: %s", strerror(-r));
	return 0;
}

void warm_vm_resumed(Vm *vm)
{
	if (unlinkat(vm->state_dirfd, WARM_MARKER, 0) < 0 && errno != ENOENT)
		log_warning("vm %s: cannot remove %s: %m", vm->spec.name, WARM_MARKER);
}

static void ram_file_name(Vm *vm, char *buf, size_t size)
{
	snprintf(buf, size, "%s.ram", vm->spec.name);
}

/* A fresh RAM file (zeroes) for QEMU to map shared: owned by the QEMU
 * user (QEMU opens /proc/self/fd/N itself, read-write). */
static int new_ram_file(Vm *vm, HsError *err)
{
	Hsd *h = vm->hsd;
	char name[VM_NAME_MAX + 8];
	ram_file_name(vm, name, sizeof(name));
	unlinkat(h->memory_dirfd, name, 0);
	_cleanup_close_ int fd = openat(h->memory_dirfd, name,
					O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return hs_error_set(err, -errno, "internal", "cannot make RAM file %s/%s: %m",
				    h->memory_dir, name);
	if (ftruncate(fd, (off_t)(vm->spec.memory_mib << 20)) < 0 ||
	    (h->qemu_user.change && fchown(fd, h->qemu_user.uid, h->qemu_user.gid) < 0)) {
		int e = -errno;
		unlinkat(h->memory_dirfd, name, 0);
		return hs_error_set(err, e, "internal", "cannot set up RAM file %s: %s", name,
				    strerror(-e));
	}
	return TAKE_FD(fd);
}

int warm_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, char *info, HsError *err)
{
	if (!vm->spec.memory_file)
		return 0;
	bool fresh = warm_vm_fresh(vm);
	int fd;
	if (fresh) {
		const char *t = vm->spec.warm_template;
		int tfd = template_ram_fd(vm->hsd, t, err);
		if (tfd < 0)
			return tfd;
		char path[VM_NAME_MAX + 8];
		snprintf(path, sizeof(path), "%s/state", t);
		int sfd = openat(templates_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (sfd < 0)
			return hs_error_set(err, -errno, "storage-failed",
					    "warm template '%s': cannot open its state: %m", t);
		storage_vm_set_incoming(vm, sfd, true);
		fd = fcntl(tfd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return hs_error_set(err, -errno, "internal", "dup: %m");
		l->incoming = true;
		l->ram_private = true;
	} else {
		fd = new_ram_file(vm, err);
		if (fd < 0)
			return fd;
	}
	int r = child_fds_add(fds, fd);
	if (r < 0)
		return hs_error_set(err, r, "internal", "too many descriptors for QEMU");
	l->ram_fd = r;
	/* Fixed size: the guest's fw_cfg driver keeps the size it saw at boot
	 * (the template's), so every record is as long as every other. */
	int n = snprintf(info, WARM_CLONE_INFO_SIZE, "name=%s vmgenid=%s clone=%d", vm->spec.name,
			 vm->spec.vmgenid, fresh ? 1 : 0);
	for (size_t i = 0; i < vm->spec.n_nics && n > 0 && n < WARM_CLONE_INFO_SIZE; i++)
		n += snprintf(info + n, WARM_CLONE_INFO_SIZE - (size_t)n, " mac%zu=%s", i,
			      vm->spec.nics[i].mac);
	if (n < 0 || n >= WARM_CLONE_INFO_SIZE - 1)
		n = WARM_CLONE_INFO_SIZE - 2;
	memset(info + n, ' ', WARM_CLONE_INFO_SIZE - 2 - (size_t)n);
	info[WARM_CLONE_INFO_SIZE - 2] = '\n';
	info[WARM_CLONE_INFO_SIZE - 1] = '\0';
	l->clone_info = info;
	return 0;
}

void warm_vm_exited(Vm *vm)
{
	if (!vm->spec.memory_file || vm->hsd->memory_dirfd < 0)
		return;
	char name[VM_NAME_MAX + 8];
	ram_file_name(vm, name, sizeof(name));
	if (unlinkat(vm->hsd->memory_dirfd, name, 0) < 0 && errno != ENOENT)
		log_warning("vm %s: cannot remove RAM file %s: %m", vm->spec.name, name);
}

/* ---- clones ---- */

json_t *warm_clone_spec(Hsd *h, json_t *body, HsError *err)
{
	static const char *const keys[] = {"name", "warm_template", NULL};
	if (object_keys_check(body, keys, err) < 0) {
		snprintf(err->message + strlen(err->message),
			 sizeof(err->message) - strlen(err->message),
			 " (a clone of a warm template takes its settings from the template)");
		return NULL;
	}
	const char *t = json_string_value(json_object_get(body, "warm_template"));
	json_auto_t *tj = t && vm_name_is_valid(t) ? template_json(t) : NULL;
	if (!tj) {
		hs_error_set(err, -ENOENT, "not-found", "no template named '%s'", t ? t : "");
		return NULL;
	}
	if (!is_warm(tj)) {
		hs_error_set(err, -EINVAL, "invalid-argument",
			     "template '%s' is not warm (give it as a disk's template)", t);
		return NULL;
	}
	json_t *spec = json_deep_copy(json_object_get(tj, "spec"));
	if (!spec) {
		hs_error_set(err, -EIO, "storage-failed", "template '%s' has no spec", t);
		return NULL;
	}
	/* What must match the saved devices stays; identity is new. */
	json_object_set(spec, "name", json_object_get(body, "name"));
	json_object_set_new(spec, "warm_template", json_string(t));
	json_object_set_new(spec, "memory_file", json_true());
	json_object_del(spec, "vmgenid");
	size_t i;
	json_t *n;
	json_array_foreach (json_object_get(spec, "nics"), i, n)
		json_object_del(n, "mac");
	return spec;
}

/* ---- capture ---- */

enum {
	J_STOP,
	J_CAPS,
	J_MIGRATE,
	J_POLL,
	J_CAPS_OFF,
	J_END,
	J_DONE,
};

typedef struct WarmJob {
	Hsd *h;
	char name[VM_NAME_MAX + 1];
	char vm[VM_NAME_MAX + 1];
	char tmp[VM_NAME_MAX + 32];
	bool stop, was_running, migrating;
	int step;
	int state_fd;
	ev_timer poll;
	double t0, t_paused, deadline;
	StorageDoneCb cb;
	void *ud;
	json_t *result;
	json_t *spec;
} WarmJob;

static void job_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud);

static void job_free(WarmJob *j)
{
	ev_timer_stop(j->h->loop, &j->poll);
	if (j->state_fd >= 0)
		close(j->state_fd);
	json_decref(j->result);
	json_decref(j->spec);
	free(j);
}

static void job_finish(WarmJob *j, const HsError *err)
{
	if (err) {
		hs_rm_rf_at(templates_fd, j->tmp);
		log_warning("template %s: %s", j->name, err->message);
	} else {
		log_info("template %s: warm, made in %.0f ms (guest paused %.0f ms)", j->name,
			 (hs_now() - j->t0) * 1e3, j->result ? json_real_value(json_object_get(
								j->result, "paused_ms"))
							     : 0.0);
	}
	if (j->cb)
		j->cb(j->h, err, err ? NULL : j->result, j->ud);
	job_free(j);
}

/* Puts the source back as it was (best effort) and fails. */
static void job_fail(WarmJob *j, const HsError *err)
{
	Vm *vm = vm_find(j->h, j->vm);
	if (vm && vm->qmp) {
		if (j->migrating)
			qmp_client_execute(vm->qmp, "migrate_cancel", NULL, j->h->qmp_timeout, NULL,
					   NULL);
		if (j->step > J_CAPS)
			qmp_client_execute(vm->qmp, "migrate-set-capabilities",
					   json_pack("{s:[{s:s, s:b}]}", "capabilities",
						     "capability", "x-ignore-shared", "state", 0),
					   j->h->qmp_timeout, NULL, NULL);
		if (j->step > J_STOP && j->was_running)
			qmp_client_execute(vm->qmp, "cont", NULL, j->h->qmp_timeout, NULL, NULL);
	}
	job_finish(j, err);
}

static int job_send(WarmJob *j, const char *cmd, json_t *args)
{
	Vm *vm = vm_find(j->h, j->vm);
	if (!vm || !vm->qmp) {
		json_decref(args);
		return -ENOTCONN;
	}
	return qmp_client_execute(vm->qmp, cmd, args, j->h->qmp_timeout, job_reply, j);
}

/* The template's files, made while the guest is paused. */
static int job_save(WarmJob *j, HsError *err)
{
	Hsd *h = j->h;
	Vm *vm = vm_find(h, j->vm);
	if (!vm)
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' is gone", j->vm);
	if (fsync(j->state_fd) < 0)
		return hs_error_set(err, -errno, "internal", "cannot save the state: %m");
	struct stat st;
	if (fstat(j->state_fd, &st) < 0)
		return hs_error_set(err, -errno, "internal", "fstat: %m");
	uint64_t state_size = (uint64_t)st.st_size;
	close(j->state_fd);
	j->state_fd = -1;
	char name[VM_NAME_MAX + 8];
	ram_file_name(vm, name, sizeof(name));
	_cleanup_close_ int src = openat(h->memory_dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (src < 0)
		return hs_error_set(err, -errno, "internal", "cannot open the VM's RAM file: %m");
	uint64_t size = vm->spec.memory_mib << 20;
	double t0 = hs_now();
	/* The clones' copy first (from the VM's file), then the template's
	 * file on disk from it. */
	int mfd = sealed_copy(j->name, src, size);
	if (mfd < 0)
		return hs_error_set(err, mfd, "internal", "cannot copy the RAM: %s",
				    strerror(-mfd));
	char path[VM_NAME_MAX + 48];
	snprintf(path, sizeof(path), "%s/ram", j->tmp);
	_cleanup_close_ int dst = openat(templates_fd, path,
					 O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	int r = dst < 0 ? -errno : copy_all(dst, mfd, size);
	if (r == 0 && fsync(dst) < 0)
		r = -errno;
	if (r < 0) {
		close(mfd);
		return hs_error_set(err, r, "internal", "cannot write the template's RAM: %s",
				    strerror(-r));
	}
	double copy_ms = (hs_now() - t0) * 1e3;
	snprintf(path, sizeof(path), "%s/state", j->tmp);
	fchmodat(templates_fd, path, 0444, 0);
	json_t *spec = vm_spec_to_json(&vm->spec);
	json_auto_t *t = json_pack("{s:s, s:s, s:f, s:s, s:I, s:I, s:I, s:o}", "name", j->name,
				   "kind", "warm", "created", hs_wall(), "source",
				   vm->spec.name, "memory_mib", (json_int_t)vm->spec.memory_mib,
				   "ram_size", (json_int_t)size, "state_size",
				   (json_int_t)state_size, "spec", spec);
	_cleanup_free_ char *s = t ? json_dumps(t, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	_cleanup_close_ int dfd = openat(templates_fd, j->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = !s ? -ENOMEM
	       : dfd < 0 ? -errno : hs_write_file_atomic(dfd, "template.json", s, strlen(s), 0444);
	if (r == 0 && renameat2(templates_fd, j->tmp, templates_fd, j->name, RENAME_NOREPLACE) < 0)
		r = -errno;
	if (r == 0)
		fsync(templates_fd);
	if (r < 0) {
		close(mfd);
		return hs_error_set(err, r, r == -EEXIST ? "conflict" : "internal",
				    r == -EEXIST ? "a template named '%s' already exists"
						 : "cannot store template '%s'",
				    j->name);
	}
	warm_template_deleted(h, j->name); /* a stale copy of an older one */
	cache_add(h, j->name, mfd);
	j->result = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:s}", "name", j->name, "kind",
			      "warm", "source", vm->spec.name, "ram_size", (json_int_t)size,
			      "state_size", (json_int_t)state_size, "copy_ms", copy_ms, "then",
			      j->stop ? "stop" : "resume");
	return 0;
}

static void on_job_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	WarmJob *j = w->data;
	HsError e;
	if (job_send(j, "query-migrate", NULL) < 0) {
		hs_error_set(&e, -ENOTCONN, "vm-exited", "VM '%s' exited", j->vm);
		job_fail(j, &e);
	}
}

static void on_stopped(Vm *vm, const HsError *err, void *ud)
{
	WarmJob *j = ud;
	json_object_set_new(j->result, "seconds", json_real(hs_now() - j->t0));
	job_finish(j, NULL);
}

static void job_step(WarmJob *j, json_t *reply)
{
	HsError e;
	int r = 0;
	Vm *vm = vm_find(j->h, j->vm);
	switch (j->step) {
	case J_STOP:
		j->t_paused = hs_now();
		j->step = J_CAPS;
		r = job_send(j, "migrate-set-capabilities",
			     json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
				       "x-ignore-shared", "state", 1));
		break;
	case J_CAPS: {
		char path[VM_NAME_MAX + 48];
		snprintf(path, sizeof(path), "%s/state", j->tmp);
		j->state_fd = openat(templates_fd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
				     0600);
		if (j->state_fd < 0 || !vm || !vm->qmp) {
			hs_error_set(&e, -errno, "internal", "cannot make the state file: %m");
			job_fail(j, &e);
			return;
		}
		int fd = dup(j->state_fd);
		qmp_client_execute_fd(vm->qmp, "getfd", json_pack("{s:s}", "fdname", "hs-warm"), fd,
				      j->h->qmp_timeout, NULL, NULL);
		j->step = J_MIGRATE;
		j->migrating = true;
		j->deadline = hs_now() + WARM_TIMEOUT;
		r = job_send(j, "migrate", json_pack("{s:s}", "uri", "fd:hs-warm"));
		break;
	}
	case J_MIGRATE:
		j->step = J_POLL;
		r = job_send(j, "query-migrate", NULL);
		break;
	case J_POLL: {
		json_t *ret = json_object_get(reply, "return");
		const char *st = json_string_value(json_object_get(ret, "status")) ?: "";
		if (!strcmp(st, "failed") || !strcmp(st, "cancelled")) {
			const char *why = json_string_value(json_object_get(ret, "error-desc"));
			hs_error_set(&e, -EIO, "storage-failed", "saving the device state failed: %s",
				     why ? why : st);
			job_fail(j, &e);
			return;
		}
		if (strcmp(st, "completed")) {
			if (hs_now() > j->deadline) {
				hs_error_set(&e, -ETIMEDOUT, "timeout", "saving the state timed out");
				job_fail(j, &e);
				return;
			}
			ev_timer_init(&j->poll, on_job_poll, WARM_POLL, 0.);
			j->poll.data = j;
			ev_timer_start(j->h->loop, &j->poll);
			return;
		}
		j->migrating = false;
		if (job_save(j, &e) < 0) {
			job_fail(j, &e);
			return;
		}
		j->step = J_CAPS_OFF;
		r = job_send(j, "migrate-set-capabilities",
			     json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
				       "x-ignore-shared", "state", 0));
		break;
	}
	case J_CAPS_OFF:
		j->step = J_END;
		if (j->stop) {
			json_object_set_new(j->result, "paused_ms",
					    json_real((hs_now() - j->t_paused) * 1e3));
			/* The guest lives on in the template; no need to be
			 * gentle. */
			if (!vm || vm_stop(vm, STOP_KILL, 0, on_stopped, j, &e) < 0) {
				json_object_set_new(j->result, "seconds",
						    json_real(hs_now() - j->t0));
				job_finish(j, NULL);
			}
			return;
		}
		if (j->was_running) {
			r = job_send(j, "cont", NULL);
			break;
		}
		_fallthrough_;
	case J_END:
		json_object_set_new(j->result, "paused_ms",
				    json_real((hs_now() - j->t_paused) * 1e3));
		json_object_set_new(j->result, "seconds", json_real(hs_now() - j->t0));
		job_finish(j, NULL);
		return;
	default:
		return;
	}
	if (r < 0) {
		hs_error_set(&e, r, "vm-exited", "VM '%s' is not answering QMP", j->vm);
		job_fail(j, &e);
	}
}

static void job_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	WarmJob *j = ud;
	if (err) {
		if (err->code == -ECANCELED && j->h->stopping) {
			/* hsd is going: the .new- directory goes at the next start. */
			j->cb = NULL;
			job_free(j);
			return;
		}
		if (j->step >= J_CAPS_OFF) {
			/* The template is made; only putting the source back failed. */
			log_warning("template %s: after the capture: %s", j->name, err->message);
			json_object_set_new(j->result, "seconds", json_real(hs_now() - j->t0));
			job_finish(j, NULL);
			return;
		}
		HsError e = *err;
		job_fail(j, &e);
		return;
	}
	job_step(j, reply);
}

int warm_template_capture(Hsd *h, const char *name, Vm *vm, bool stop, StorageDoneCb cb,
			  void *ud, HsError *err)
{
	if (!vm_name_is_valid(name))
		return hs_error_set(err, -EINVAL, "invalid-name",
				    "'%s' is not a valid template name (1-63 of a-z 0-9 _ -, "
				    "starting with a letter or digit)",
				    name);
	if (!vm->spec.memory_file)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "VM '%s' has no file-backed RAM (create it with "
				    "\"memory_file\": true)",
				    vm->spec.name);
	if ((vm->status.state != VM_STATE_RUNNING && vm->status.state != VM_STATE_PAUSED) ||
	    !vm->qmp_ready)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; a warm template is taken from a running VM",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	if (vm->migration)
		return hs_error_set(err, -EBUSY, "conflict", "VM '%s' is migrating", vm->spec.name);
	for (size_t i = 0; i < vm->spec.n_disks; i++)
		if (!vm->spec.disks[i].readonly)
			return hs_error_set(err, -EINVAL, "invalid-argument",
					    "VM '%s' has a writable disk (disks[%zu]); warm "
					    "templates of VMs with disks are not supported yet",
					    vm->spec.name, i);
	struct stat st;
	if (fstatat(templates_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return hs_error_set(err, -EEXIST, "conflict", "a template named '%s' already exists",
				    name);
	WarmJob *j = calloc(1, sizeof(*j));
	if (!j)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	j->h = h;
	j->state_fd = -1;
	j->stop = stop;
	j->cb = cb;
	j->ud = ud;
	j->t0 = hs_now();
	j->was_running = vm->status.state == VM_STATE_RUNNING;
	snprintf(j->name, sizeof(j->name), "%s", name);
	snprintf(j->vm, sizeof(j->vm), "%s", vm->spec.name);
	snprintf(j->tmp, sizeof(j->tmp), ".new-%s-%08x", name, (unsigned)(hs_now_ns() & 0xffffffff));
	ev_timer_init(&j->poll, on_job_poll, WARM_POLL, 0.);
	if (mkdirat(templates_fd, j->tmp, 0755) < 0) {
		hs_error_set(err, -errno, "internal", "cannot make template dir: %m");
		free(j);
		return err->code;
	}
	log_info("template %s: warm capture of vm %s (then %s)", name, vm->spec.name,
		 stop ? "stop" : "resume");
	j->step = J_STOP;
	int r = qmp_client_execute(vm->qmp, "stop", NULL, h->qmp_timeout, job_reply, j);
	if (r < 0) {
		hs_rm_rf_at(templates_fd, j->tmp);
		free(j);
		return hs_error_set(err, r, "conflict", "VM '%s' is not answering QMP",
				    vm->spec.name);
	}
	return 0;
}

/* ---- accounting ---- */

/* Of the VM's RAM mapping of the template's copy: kB resident, and of
 * those the pages the guest wrote (its own, anonymous). */
static int read_template_mapping(Vm *vm, uint64_t *ret_rss, uint64_t *ret_anon)
{
	char path[64];
	snprintf(path, sizeof(path), "proc/%d/smaps", (int)vm->status.pid);
	_cleanup_close_ int fd = openat(vm->hsd->host.rootfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(TAKE_FD(fd), "r");
	if (!f)
		return -errno;
	char line[512];
	bool in = false, found = false;
	uint64_t rss = 0, anon = 0, v;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in = strstr(line, "/memfd:hs-warm-") != NULL;
			found |= in;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Rss: %" SCNu64, &v) == 1)
			rss += v;
		else if (sscanf(line, "Anonymous: %" SCNu64, &v) == 1)
			anon += v;
	}
	fclose(f);
	if (!found)
		return -ENOENT;
	*ret_rss = rss;
	*ret_anon = anon;
	return 0;
}

json_t *warm_vm_json(Vm *vm)
{
	if (!vm->spec.memory_file)
		return NULL;
	json_t *o = json_pack("{s:s, s:b}", "vmgenid", vm->spec.vmgenid, "fresh_clone",
			      warm_vm_fresh(vm));
	if (vm->spec.warm_template[0])
		json_object_set_new(o, "template", json_string(vm->spec.warm_template));
	uint64_t rss, anon;
	if (vm->status.pid > 0 && vm_state_is_active(vm->status.state) &&
	    read_template_mapping(vm, &rss, &anon) == 0) {
		/* Pages still the template's are shared with every other
		 * clone through the page cache, without KSM. */
		json_object_set_new(o, "template_shared_kib",
				    json_integer((json_int_t)(rss - (anon < rss ? anon : rss))));
		json_object_set_new(o, "private_kib", json_integer((json_int_t)anon));
	}
	return o;
}
