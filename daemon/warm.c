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
#include <sys/stat.h>

#include "hsd.h"
#include "layers.h"
#include "tool.h"

#define WARM_MARKER "warm-start"
/* The MIGRATION events say when the device state is saved; the poll is
 * only a safety net (an event lost with a QMP reconnect). */
#define WARM_POLL 0.5
#define WARM_TIMEOUT 600.0
#define WARM_COPY_TIMEOUT 600.0

/* Sealed copies of templates' RAM, one per template, made on first use.
 * fd is -1 while the copy is being made (by a tool: the loop never copies
 * guest RAM itself). */
typedef struct WarmCache {
	struct WarmCache *next;
	char name[VM_NAME_MAX + 1];
	int fd;
	bool deleted; /* the template went while its RAM was loading */
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
		if (c->fd >= 0)
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

/* An empty memfd that will hold a template's RAM (filled by ram_copy(),
 * then sealed by ram_seal()). */
static int ram_memfd(const char *name)
{
	char mname[VM_NAME_MAX + 16];
	snprintf(mname, sizeof(mname), "hs-warm-%s", name);
	int fd = memfd_create(mname, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	return fd < 0 ? -errno : fd;
}

/* Copies src to dst (from offset 0, dst truncated first) in a tool, not
 * in the loop: cp --sparse=always skips the source's holes (SEEK_DATA)
 * and leaves a hole for every all-zero page, so pages the guest never
 * touched cost nothing in the copy. */
static int ram_copy(Hsd *h, int src, int dst, ToolDoneCb cb, void *ud, HsError *err)
{
	char *argv[] = {(char *)"cp", (char *)"--sparse=always", (char *)"/proc/self/fd/3",
			(char *)"/proc/self/fd/4", NULL};
	const int fds[] = {src, dst};
	return tool_run(h, argv, fds, 2, WARM_COPY_TIMEOUT, cb, ud, err);
}

/* After ram_copy() into a memfd: writes and shared writable mappings are
 * refused to everyone from now on; private mappings are fine. */
static int ram_seal(int fd, uint64_t size)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != size)
		return -EIO;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	return 0;
}

static WarmCache *cache_find(Hsd *h, const char *name)
{
	for (WarmCache *c = h->warm; c; c = c->next)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

static WarmCache *cache_add(Hsd *h, const char *name, int fd)
{
	WarmCache *c = calloc(1, sizeof(*c));
	if (!c) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->fd = fd;
	c->next = h->warm;
	h->warm = c;
	return c;
}

static void cache_remove(Hsd *h, WarmCache *c)
{
	for (WarmCache **p = &h->warm; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			if (c->fd >= 0)
				close(c->fd);
			free(c);
			return;
		}
}

void warm_template_deleted(Hsd *h, const char *name)
{
	WarmCache *c = cache_find(h, name);
	if (!c)
		return;
	if (c->fd < 0) {
		/* Loading: the load's end drops it. */
		snprintf(c->name, sizeof(c->name), "%s", "");
		c->deleted = true;
		return;
	}
	cache_remove(h, c);
}

/* A load of a template's RAM after hsd's start (the first clone start of
 * it pays for the copy; the copy runs in a tool, the start waits). */
typedef struct WarmLoad {
	Hsd *h;
	WarmCache *c;
	char name[VM_NAME_MAX + 1];
	int mfd;
	uint64_t size;
} WarmLoad;

static void on_ram_loaded(Hsd *h, const ToolResult *res, void *ud)
{
	WarmLoad *l = ud;
	WarmCache *c = l->c;
	HsError e = {0};
	int r = 0;
	if (!res->ok) {
		char why[160];
		tool_describe_failure(res, why, sizeof(why));
		hs_error_set(&e, -EIO, "storage-failed", "warm template '%s': cannot load its RAM: %s",
			     l->name, why);
	} else if ((r = ram_seal(l->mfd, l->size)) < 0) {
		hs_error_set(&e, r, "storage-failed", "warm template '%s': cannot seal its RAM: %s",
			     l->name, strerror(-r));
	} else {
		log_info("template %s: RAM loaded (%" PRIu64 " MiB in %.0f ms, by cp)", l->name,
			 l->size >> 20, res->seconds * 1e3);
	}
	if (e.code || c->deleted) {
		close(l->mfd);
		cache_remove(h, c);
	} else {
		c->fd = l->mfd;
	}
	/* The starts that waited go on (or fail). */
	for (Vm *vm = h->vms; vm;) {
		Vm *next = vm->next;
		if (vm->warm_loading && !strcmp(vm->spec.warm_template, l->name))
			vm_warm_ready(vm, e.code ? &e : NULL);
		vm = next;
	}
	free(l);
}

/* The template's sealed RAM copy: 0 with *ret_fd, 1 while it loads (the
 * VMs waiting get vm_warm_ready()), or -errno. */
static int template_ram_fd(Hsd *h, const char *name, int *ret_fd, HsError *err)
{
	WarmCache *c = cache_find(h, name);
	if (c && c->fd >= 0) {
		*ret_fd = c->fd;
		return 0;
	}
	if (c)
		return 1;
	char path[VM_NAME_MAX + 8];
	snprintf(path, sizeof(path), "%s/ram", name);
	_cleanup_close_ int src = openat(templates_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (src < 0 || fstat(src, &st) < 0)
		return hs_error_set(err, -errno, "storage-failed",
				    "warm template '%s': cannot open its RAM: %m", name);
	WarmLoad *l = calloc(1, sizeof(*l));
	c = l ? cache_add(h, name, -1) : NULL;
	if (!c) {
		free(l);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	l->h = h;
	l->c = c;
	l->size = (uint64_t)st.st_size;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->mfd = ram_memfd(name);
	int r = l->mfd < 0 ? hs_error_set(err, l->mfd, "internal", "memfd_create: %s",
					  strerror(-l->mfd))
			   : ram_copy(h, src, l->mfd, on_ram_loaded, l, err);
	if (r < 0) {
		if (l->mfd >= 0)
			close(l->mfd);
		cache_remove(h, c);
		free(l);
		return r;
	}
	log_info("template %s: loading its RAM (%" PRIu64 " MiB)", name, l->size >> 20);
	return 1;
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

int warm_vm_prepare(Vm *vm, HsError *err)
{
	if (!vm->spec.memory_file || !warm_vm_fresh(vm))
		return 0;
	int fd;
	int r = template_ram_fd(vm->hsd, vm->spec.warm_template, &fd, err);
	if (r > 0) {
		vm->warm_loading = true;
		log_info("vm %s: waiting for template %s's RAM", vm->spec.name,
			 vm->spec.warm_template);
	}
	return r;
}

int warm_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, char *info, HsError *err)
{
	if (!vm->spec.memory_file)
		return 0;
	bool fresh = warm_vm_fresh(vm);
	int fd;
	if (fresh) {
		const char *t = vm->spec.warm_template;
		int tfd = -1;
		int r = template_ram_fd(vm->hsd, t, &tfd, err);
		if (r < 0)
			return r;
		if (r > 0) /* warm_vm_prepare() said it was ready: it went since */
			return hs_error_set(err, -EAGAIN, "conflict",
					    "warm template '%s': its RAM is loading; try again", t);
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

/* ---- capture ---- */

enum {
	J_STOP,
	J_FREEZE,   /* a disk-only live snapshot freezes the managed disk's top */
	J_CAPS,
	J_MIGRATE,
	J_POLL,
	J_COPY,     /* cp: the VM's RAM file into the memfd; guest paused */
	J_CAPS_OFF,
	J_CONT,     /* cont, or QEMU killed (then=stop) */
	J_WRITE,    /* cp: the memfd into the template's ram file; guest runs */
	J_FLATTEN,  /* qemu-img convert: the frozen disk chain into the image */
	J_SYNC,     /* sync: the state, ram (and image) files */
	J_DONE,
};

typedef struct WarmJob {
	struct WarmJob *next; /* captures under way (jobs) */
	Hsd *h;
	char name[VM_NAME_MAX + 1];
	char vm[VM_NAME_MAX + 1];
	char tmp[VM_NAME_MAX + 32];
	char snap[SNAPSHOT_NAME_MAX + 1]; /* freezes the managed disk; "": none */
	bool stop, was_running, migrating, caps_on, paused;
	bool querying; /* a query-migrate is out (J_POLL) */
	bool evented;  /* a MIGRATION event came while it was */
	int step;
	int state_fd;
	int mfd;    /* the sealed copy for clones */
	int ram_fd; /* the template's ram file */
	int image_fd; /* the template's disk image (flattened) */
	size_t disk;  /* the managed disk's index */
	uint64_t size, state_size, disk_size;
	ev_timer poll;
	double created; /* hs_wall() at the start: "created" while making */
	double t0, t_paused, deadline, paused_ms, copy_ms, write_ms, freeze_ms, flatten_ms;
	StorageDoneCb cb;
	void *ud;
	json_t *result;
} WarmJob;

static void job_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud);

/* Captures under way: a clone of one, or another capture of its name, is
 * refused (409) until it is whole. */
static WarmJob *jobs;

static WarmJob *job_find(const char *name)
{
	for (WarmJob *j = jobs; j; j = j->next)
		if (!strcmp(j->name, name))
			return j;
	return NULL;
}

static void job_free(WarmJob *j)
{
	for (WarmJob **p = &jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	ev_timer_stop(j->h->loop, &j->poll);
	if (j->image_fd >= 0)
		close(j->image_fd);
	if (j->state_fd >= 0)
		close(j->state_fd);
	if (j->mfd >= 0)
		close(j->mfd);
	if (j->ram_fd >= 0)
		close(j->ram_fd);
	json_decref(j->result);
	free(j);
}

static void job_finish(WarmJob *j, const HsError *err)
{
	if (err) {
		hs_rm_rf_at(templates_fd, j->tmp);
		log_warning("template %s: %s", j->name, err->message);
	} else {
		log_info("template %s: warm, made in %.0f ms (guest paused %.0f ms, disk frozen in "
			 "%.0f ms, RAM copied in %.0f ms, written in %.0f ms, disk flattened in "
			 "%.0f ms)",
			 j->name, (hs_now() - j->t0) * 1e3, j->paused_ms, j->freeze_ms, j->copy_ms,
			 j->write_ms, j->flatten_ms);
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
		if (j->caps_on)
			qmp_client_execute(vm->qmp, "migrate-set-capabilities",
					   json_pack("{s:[{s:s, s:b}]}", "capabilities",
						     "capability", "x-ignore-shared", "state", 0),
					   j->h->qmp_timeout, NULL, NULL);
		if (j->paused && j->was_running && !j->stop)
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

static void job_tool_failed(WarmJob *j, const ToolResult *res, const char *what)
{
	char why[160];
	HsError e;
	tool_describe_failure(res, why, sizeof(why));
	hs_error_set(&e, -EIO, "storage-failed", "%s: %s", what, why);
	job_fail(j, &e);
}

/* The device state is saved: the RAM goes into the memfd, by a tool,
 * while the guest stays paused. */
static int job_copy(WarmJob *j, HsError *err);

/* The template appears: template.json, then the directory renamed into
 * place (whole or not at all), then its sealed copy is the clones'. */
static int job_store(WarmJob *j, HsError *err)
{
	char path[VM_NAME_MAX + 48];
	snprintf(path, sizeof(path), "%s/state", j->tmp);
	fchmodat(templates_fd, path, 0444, 0);
	snprintf(path, sizeof(path), "%s/image", j->tmp);
	if (j->snap[0] && fchmodat(templates_fd, path, 0444, 0) < 0)
		return hs_error_set(err, -errno, "internal", "cannot seal the template's disk: %m");
	Vm *vm = vm_find(j->h, j->vm);
	json_t *spec = vm ? vm_spec_to_json(&vm->spec) : NULL;
	if (!spec)
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' is gone", j->vm);
	json_auto_t *t = json_pack("{s:s, s:s, s:f, s:s, s:I, s:I, s:I, s:o}", "name", j->name,
				   "kind", "warm", "created", hs_wall(), "source", j->vm,
				   "memory_mib", (json_int_t)(j->size >> 20), "ram_size",
				   (json_int_t)j->size, "state_size", (json_int_t)j->state_size,
				   "spec", spec);
	if (t && j->snap[0]) {
		/* Its disk: "image", a disk template's like any other (clones
		 * get an overlay on it; template_lookup). */
		json_object_set_new(t, "format", json_string("qcow2"));
		json_object_set_new(t, "virtual_size", json_integer((json_int_t)j->disk_size));
		json_object_set_new(t, "disk", json_integer((json_int_t)j->disk));
		json_object_set_new(t, "source_snapshot", json_string(j->snap));
	}
	_cleanup_free_ char *s = t ? json_dumps(t, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	_cleanup_close_ int dfd = openat(templates_fd, j->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = !s ? -ENOMEM
		   : dfd < 0 ? -errno
			     : hs_write_file_atomic(dfd, "template.json", s, strlen(s), 0444);
	if (r == 0 && renameat2(templates_fd, j->tmp, templates_fd, j->name, RENAME_NOREPLACE) < 0)
		r = -errno;
	if (r == 0)
		fsync(templates_fd);
	if (r < 0)
		return hs_error_set(err, r, r == -EEXIST ? "conflict" : "internal",
				    r == -EEXIST ? "a template named '%s' already exists"
						 : "cannot store template '%s'",
				    j->name);
	warm_template_deleted(j->h, j->name); /* a stale copy of an older one */
	/* Out of memory, cache_add closes it: the first clone start loads it. */
	cache_add(j->h, j->name, TAKE_FD(j->mfd));
	j->result = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:s, s:f}", "name",
			      j->name, "kind", "warm", "source", j->vm, "ram_size",
			      (json_int_t)j->size, "state_size", (json_int_t)j->state_size,
			      "copy_ms", j->copy_ms, "write_ms", j->write_ms, "paused_ms",
			      j->paused_ms, "then", j->stop ? "stop" : "resume", "seconds",
			      hs_now() - j->t0);
	if (j->result && j->snap[0]) {
		json_object_set_new(j->result, "disk_snapshot", json_string(j->snap));
		json_object_set_new(j->result, "freeze_ms", json_real(j->freeze_ms));
		json_object_set_new(j->result, "flatten_ms", json_real(j->flatten_ms));
		json_object_set_new(j->result, "virtual_size", json_integer((json_int_t)j->disk_size));
	}
	return 0;
}

static void on_synced(Hsd *h, const ToolResult *res, void *ud)
{
	WarmJob *j = ud;
	HsError e;
	if (!res->ok) {
		job_tool_failed(j, res, "cannot sync the template's files");
		return;
	}
	if (job_store(j, &e) < 0) {
		job_fail(j, &e);
		return;
	}
	job_finish(j, NULL);
}

static void job_sync(WarmJob *j)
{
	HsError e;
	j->step = J_SYNC;
	char *argv[] = {(char *)"sync", (char *)"/proc/self/fd/3", (char *)"/proc/self/fd/4",
			(char *)"/proc/self/fd/5", NULL};
	const int fds[] = {j->state_fd, j->ram_fd, j->image_fd};
	if (j->image_fd < 0)
		argv[3] = NULL;
	if (tool_run(j->h, argv, fds, j->image_fd < 0 ? 2 : 3, WARM_COPY_TIMEOUT, on_synced, j,
		     &e) < 0)
		job_fail(j, &e);
}

static void on_flattened(Hsd *h, const ToolResult *res, void *ud)
{
	WarmJob *j = ud;
	HsError e;
	if (!res->ok) {
		job_tool_failed(j, res, "cannot flatten the frozen disk: qemu-img");
		return;
	}
	j->flatten_ms = res->seconds * 1e3;
	char path[VM_NAME_MAX + 48];
	snprintf(path, sizeof(path), "%s/image", j->tmp);
	j->image_fd = openat(templates_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (j->image_fd < 0) {
		hs_error_set(&e, -errno, "internal", "cannot open the template's disk: %m");
		job_fail(j, &e);
		return;
	}
	job_sync(j);
}

/* The source runs on (its disk writes go above the frozen layer): its
 * frozen chain becomes the template's own disk, in the background. */
static void job_flatten(WarmJob *j)
{
	HsError e;
	Vm *vm = vm_find(j->h, j->vm);
	_cleanup_free_ char *dst = hs_strdup_printf("%s/templates/%s/image", j->h->state_dir,
						    j->tmp);
	j->step = J_FLATTEN;
	int r = !vm    ? hs_error_set(&e, -ENOENT, "not-found", "VM '%s' is gone", j->vm)
		: !dst ? hs_error_set(&e, -ENOMEM, "internal", "out of memory")
		       : storage_flatten_snapshot(vm, j->snap, dst, &j->disk, &j->disk_size,
						  on_flattened, j, &e);
	if (r < 0)
		job_fail(j, &e);
	else
		log_info("template %s: flattening vm %s's disk frozen by snapshot %s", j->name,
			 j->vm, j->snap);
}

static void on_written(Hsd *h, const ToolResult *res, void *ud)
{
	WarmJob *j = ud;
	if (!res->ok) {
		job_tool_failed(j, res, "cannot write the template's RAM");
		return;
	}
	j->write_ms = res->seconds * 1e3;
	if (j->snap[0])
		job_flatten(j);
	else
		job_sync(j);
}

/* The guest runs again (or is gone): the template's ram file is written
 * from the sealed copy, which nobody can change any more. */
static void job_write(WarmJob *j)
{
	HsError e;
	j->step = J_WRITE;
	char path[VM_NAME_MAX + 48];
	snprintf(path, sizeof(path), "%s/ram", j->tmp);
	j->ram_fd = openat(templates_fd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (j->ram_fd < 0) {
		hs_error_set(&e, -errno, "internal", "cannot make the template's RAM file: %m");
		job_fail(j, &e);
		return;
	}
	if (ram_copy(j->h, j->mfd, j->ram_fd, on_written, j, &e) < 0)
		job_fail(j, &e);
}

static void on_source_stopped(Vm *vm, const HsError *err, void *ud)
{
	job_write(ud);
}

static void on_copied(Hsd *h, const ToolResult *res, void *ud)
{
	WarmJob *j = ud;
	HsError e;
	if (!res->ok) {
		job_tool_failed(j, res, "cannot copy the RAM");
		return;
	}
	int r = ram_seal(j->mfd, j->size);
	if (r < 0) {
		hs_error_set(&e, r, "internal", "cannot seal the RAM copy: %s", strerror(-r));
		job_fail(j, &e);
		return;
	}
	j->copy_ms = res->seconds * 1e3;
	j->step = J_CAPS_OFF;
	r = job_send(j, "migrate-set-capabilities",
		     json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "x-ignore-shared",
			       "state", 0));
	if (r < 0) {
		hs_error_set(&e, r, "vm-exited", "VM '%s' is not answering QMP", j->vm);
		job_fail(j, &e);
	}
}

static int job_copy(WarmJob *j, HsError *err)
{
	Vm *vm = vm_find(j->h, j->vm);
	if (!vm)
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' is gone", j->vm);
	struct stat st;
	if (fstat(j->state_fd, &st) < 0)
		return hs_error_set(err, -errno, "internal", "fstat: %m");
	j->state_size = (uint64_t)st.st_size;
	char name[VM_NAME_MAX + 8];
	ram_file_name(vm, name, sizeof(name));
	_cleanup_close_ int src = openat(j->h->memory_dirfd, name,
					 O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (src < 0)
		return hs_error_set(err, -errno, "internal", "cannot open the VM's RAM file: %m");
	j->size = vm->spec.memory_mib << 20;
	j->mfd = ram_memfd(j->name);
	if (j->mfd < 0)
		return hs_error_set(err, j->mfd, "internal", "memfd_create: %s", strerror(-j->mfd));
	j->step = J_COPY;
	return ram_copy(j->h, src, j->mfd, on_copied, j, err);
}

static void job_query(WarmJob *j)
{
	HsError e;
	ev_timer_stop(j->h->loop, &j->poll);
	j->querying = true;
	j->evented = false;
	if (job_send(j, "query-migrate", NULL) < 0) {
		hs_error_set(&e, -ENOTCONN, "vm-exited", "VM '%s' exited", j->vm);
		job_fail(j, &e);
	}
}

static void on_job_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	job_query(w->data);
}

void warm_vm_event(Vm *vm, const char *name, json_t *data)
{
	if (strcmp(name, "MIGRATION"))
		return;
	const char *st = json_string_value(json_object_get(data, "status")) ?: "";
	if (strcmp(st, "completed") && strcmp(st, "failed") && strcmp(st, "cancelled"))
		return;
	for (WarmJob *j = jobs, *next; j; j = next) {
		next = j->next; /* job_query may fail the job (and free it) */
		if (strcmp(j->vm, vm->spec.name) || j->step != J_POLL)
			continue;
		/* The answer (with QEMU's error-desc) at once. */
		if (j->querying)
			j->evented = true;
		else
			job_query(j);
	}
}

/* The source goes on as asked; from here, the RAM copy is whole. */
static void job_release_source(WarmJob *j)
{
	HsError e;
	Vm *vm = vm_find(j->h, j->vm);
	j->step = J_CONT;
	j->paused_ms = (hs_now() - j->t_paused) * 1e3;
	if (j->stop) {
		/* The guest lives on in the template; no need to be gentle. */
		if (vm && vm_stop(vm, STOP_KILL, 0, on_source_stopped, j, &e) == 0)
			return;
		job_write(j);
		return;
	}
	if (j->was_running && job_send(j, "cont", NULL) == 0)
		return;
	j->paused = false;
	job_write(j);
}

static void job_step(WarmJob *j, json_t *reply);

static void on_frozen(Hsd *h, const HsError *err, json_t *result, void *ud)
{
	WarmJob *j = ud;
	if (err) {
		HsError e = *err;
		snprintf(e.message, sizeof(e.message), "cannot freeze the disk: %.480s",
			 err->message);
		job_fail(j, &e);
		return;
	}
	j->freeze_ms = (hs_now() - j->t_paused) * 1e3;
	job_step(j, NULL);
}

static void job_step(WarmJob *j, json_t *reply)
{
	HsError e;
	int r = 0;
	Vm *vm = vm_find(j->h, j->vm);
	switch (j->step) {
	case J_STOP:
		j->t_paused = hs_now();
		j->paused = true;
		if (j->snap[0]) {
			/* Paused: the disk is frozen at the instant the RAM
			 * is saved, by a disk-only live snapshot (one QMP
			 * transaction puts a new overlay on top). */
			j->step = J_FREEZE;
			if (!vm || storage_snapshot_create(vm, j->snap, false, on_frozen, j, &e) < 0) {
				if (!vm)
					hs_error_set(&e, -ENOENT, "not-found", "VM '%s' is gone", j->vm);
				job_fail(j, &e);
			}
			return;
		}
		_fallthrough_;
	case J_FREEZE:
		j->step = J_CAPS;
		j->caps_on = true;
		r = job_send(j, "migrate-set-capabilities",
			     json_pack("{s:[{s:s, s:b}, {s:s, s:b}]}", "capabilities", "capability",
				       "x-ignore-shared", "state", 1, "capability", "events",
				       "state", 1));
		break;
	case J_CAPS: {
		char path[VM_NAME_MAX + 48];
		snprintf(path, sizeof(path), "%s/state", j->tmp);
		j->state_fd = openat(templates_fd, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
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
		job_query(j);
		return;
	case J_POLL: {
		j->querying = false;
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
			if (j->evented) {
				/* The event overtook this answer. */
				job_query(j);
				return;
			}
			ev_timer_init(&j->poll, on_job_poll, WARM_POLL, 0.);
			j->poll.data = j;
			ev_timer_start(j->h->loop, &j->poll);
			return;
		}
		j->migrating = false;
		if (job_copy(j, &e) < 0)
			job_fail(j, &e);
		return;
	}
	case J_CAPS_OFF:
		j->caps_on = false;
		job_release_source(j);
		return;
	case J_CONT:
		j->paused = false;
		job_write(j);
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
		if (j->step == J_CAPS_OFF || j->step == J_CONT) {
			/* The RAM copy is whole and sealed; only putting the
			 * source back failed: the template is still made. */
			log_warning("template %s: after the RAM copy: %s", j->name, err->message);
			if (j->step == J_CAPS_OFF) {
				j->caps_on = false;
				job_release_source(j);
			} else {
				job_write(j);
			}
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
	/* A clone resuming the template's guest would resume its TPM too
	 * (one identity for all), and its firmware's variables are not
	 * carried yet. */
	if (vm->spec.tpm || vm->spec.firmware != VM_FIRMWARE_BIOS)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "VM '%s' has %s; warm templates are of BIOS VMs without a TPM "
				    "(make a template of its disk instead)",
				    vm->spec.name, vm->spec.tpm ? "a TPM" : "UEFI firmware");
	if ((vm->status.state != VM_STATE_RUNNING && vm->status.state != VM_STATE_PAUSED) ||
	    !vm->qmp_ready)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; a warm template is taken from a running VM",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	if (vm->migration)
		return hs_error_set(err, -EBUSY, "conflict", "VM '%s' is migrating", vm->spec.name);
	size_t n_managed = 0;
	for (size_t i = 0; i < vm->spec.n_disks; i++) {
		if (vm->spec.disks[i].managed)
			n_managed++;
		else if (!vm->spec.disks[i].readonly)
			return hs_error_set(err, -EINVAL, "invalid-argument",
					    "VM '%s': disks[%zu] is a writable file of yours (%s); "
					    "hsd cannot freeze it for the template (make it readonly "
					    "or use a managed disk)",
					    vm->spec.name, i, vm->spec.disks[i].path);
	}
	if (n_managed > 1)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "VM '%s' has %zu managed disks; a warm template takes one at "
				    "most (for now)",
				    vm->spec.name, n_managed);
	if (n_managed && storage_vm_check_idle(vm, err) < 0)
		return err->code;
	struct stat st;
	if (fstatat(templates_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return hs_error_set(err, -EEXIST, "conflict", "a template named '%s' already exists",
				    name);
	if (job_find(name))
		return hs_error_set(err, -EBUSY, "conflict",
				    "template '%s' is being made; try again when it is ready", name);
	WarmJob *j = calloc(1, sizeof(*j));
	if (!j)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	j->h = h;
	j->state_fd = j->mfd = j->ram_fd = j->image_fd = -1;
	if (n_managed) {
		/* The source keeps the snapshot (its disk at the capture). */
		snprintf(j->snap, sizeof(j->snap), "warm-%.*s", SNAPSHOT_NAME_MAX - 5, name);
		if (vm->storage && storage_snapshot_exists(vm, j->snap)) {
			free(j);
			return hs_error_set(err, -EEXIST, "conflict",
					    "VM '%s' already has a snapshot '%s' (of an earlier "
					    "warm template); delete it first",
					    vm->spec.name, j->snap);
		}
	}
	j->stop = stop;
	j->cb = cb;
	j->ud = ud;
	j->t0 = hs_now();
	j->created = hs_wall();
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
	j->next = jobs;
	jobs = j;
	return 0;
}
/* A template being made: what GET /v1/templates/NAME says until it is
 * whole (clones of it are refused until then). */
static json_t *job_json(const WarmJob *j)
{
	json_t *t = json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:f, s:[]}", "name", j->name,
			      "kind", "warm", "source", j->vm, "state", "making", "then",
			      j->stop ? "stop" : "resume", "created", j->created, "seconds",
			      hs_now() - j->t0, "users");
	if (t && j->size)
		json_object_set_new(t, "ram_size", json_integer((json_int_t)j->size));
	return t;
}

bool warm_vm_capturing(Vm *vm)
{
	for (WarmJob *j = jobs; j; j = j->next)
		if (!strcmp(j->vm, vm->spec.name))
			return true;
	return false;
}

json_t *warm_template_making_json(const char *name)
{
	WarmJob *j = job_find(name);
	return j ? job_json(j) : NULL;
}

void warm_templates_making(json_t *list)
{
	for (WarmJob *j = jobs; j; j = j->next)
		json_array_append_new(list, job_json(j));
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
	WarmJob *job = !tj && t ? job_find(t) : NULL;
	if (job) {
		hs_error_set(err, -EBUSY, "conflict",
			     "warm template '%s' is not ready yet (%s); try again when it is",
			     t, job->step >= J_FLATTEN ? "its disk is being flattened"
						       : "it is being captured");
		return NULL;
	}
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
	/* The managed disk: a thin overlay on the template's frozen disk. */
	json_t *di = json_object_get(tj, "disk");
	json_t *d = json_is_integer(di) ? json_array_get(json_object_get(spec, "disks"),
							  (size_t)json_integer_value(di))
				       : NULL;
	if (d) {
		json_object_del(d, "size");
		json_object_set_new(d, "template", json_string(t));
	}
	return spec;
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
	/* procfs says 1 KiB blocks: some 250 reads for a QEMU's smaps */
	setvbuf(f, NULL, _IOFBF, 64 * 1024);
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

uint64_t warm_vm_shared_bytes(Vm *vm)
{
	uint64_t rss, anon;
	if (!vm->spec.warm_template[0] || vm->status.pid <= 0 ||
	    read_template_mapping(vm, &rss, &anon) < 0)
		return 0;
	return (rss - (anon < rss ? anon : rss)) << 10;
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

typedef struct WarmList {
	Hsd *h;
	json_t *list;
	uint64_t saved;
} WarmList;

static int warm_list_add(int dfd, const char *name, void *ud)
{
	WarmList *l = ud;
	if (name[0] == '.' || !vm_name_is_valid(name))
		return 0;
	json_auto_t *t = template_json(name);
	if (!t || !is_warm(t))
		return 0;
	/* The one copy hsd holds: the sealed memfd's resident pages (holes,
	 * the pages the guest never touched, cost nothing). */
	WarmCache *c = cache_find(l->h, name);
	struct stat st;
	uint64_t held = c && c->fd >= 0 && fstat(c->fd, &st) == 0 ? (uint64_t)st.st_blocks * 512
								   : 0;
	unsigned clones = 0, running = 0;
	uint64_t shared = 0;
	for (Vm *vm = l->h->vms; vm; vm = vm->next) {
		if (strcmp(vm->spec.warm_template, name))
			continue;
		clones++;
		uint64_t rss, anon;
		if (vm->status.pid <= 0 || !vm_state_is_active(vm->status.state))
			continue;
		running++;
		if (read_template_mapping(vm, &rss, &anon) == 0)
			shared += (rss - (anon < rss ? anon : rss)) << 10;
	}
	/* Without the template, each clone would hold its shared pages
	 * itself; with it, they are held once. */
	uint64_t saved = shared > held ? shared - held : 0;
	l->saved += saved;
	json_array_append_new(
		l->list, json_pack("{s:s, s:I, s:I, s:b, s:i, s:i, s:I, s:I}", "name", name,
				   "ram_size", json_integer_value(json_object_get(t, "ram_size")),
				   "held_bytes", (json_int_t)held, "loaded", c && c->fd >= 0,
				   "clones", (int)clones, "clones_running", (int)running,
				   "clones_shared_bytes", (json_int_t)shared, "saved_bytes",
				   (json_int_t)saved));
	return 0;
}

json_t *warm_host_json(Hsd *h, uint64_t *ret_saved)
{
	WarmList l = {h, json_array(), 0};
	hs_dir_foreach(templates_fd, ".", warm_list_add, &l);
	if (ret_saved)
		*ret_saved = l.saved;
	return l.list;
}
