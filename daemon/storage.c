/* SPDX-License-Identifier: Apache-2.0 */
#include "storage.h"

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "cloudinit.h"
#include "hsd.h"
#include "layers.h"
#include "tool.h"
#include "warm.h"

#define DISKS_JSON "disks.json"
#define LAYERS_DIR "layers"
#define SNAPSHOTS_DIR "snapshots"
#define TEMPLATES_DIR "templates"
#define CIDATA_ISO "cidata.iso"
#define QEMU_IMG "qemu-img"
#define TOOL_TIMEOUT_FAST 60.0
#define TOOL_TIMEOUT_COPY 3600.0
#define JOB_TIMEOUT 3600.0
#define MIGRATE_TIMEOUT 600.0
#define INCOMING_POLL 0.5 /* a safety net: the MIGRATION event says when */

typedef enum OpKind {
	OP_CREATE,
	OP_SNAPSHOT,
	OP_ROLLBACK,
	OP_DELETE,
} OpKind;

static const char *const op_names[] = {"create", "snapshot", "rollback", "delete-snapshot"};

enum { RB_STOP, RB_INTENT, RB_CREATE, RB_COMMIT, RB_STARTED };


typedef struct StorageOp {
	Vm *vm;
	Hsd *h;
	OpKind kind;
	int step;
	char snap[SNAPSHOT_NAME_MAX + 1];
	bool memory, live, was_running, restart;
	bool stopped, switched; /* live snapshot: CPUs stopped; disks switched */
	bool fw_saved; /* snapshot: UEFI variables and TPM state copied */
	/* Live disk-only snapshot: the guest agent froze the file systems
	 * (a thaw is owed until thawed), or why not. */
	bool frozen, quiesced;
	char quiesce_note[128];
	unsigned new_ids[VM_MAX_DISKS];
	size_t disk;        /* iteration over disks */
	unsigned children[64];
	size_t n_children, child;
	unsigned merged;    /* delete: the layer being merged away, per disk */
	int state_fd;       /* memory snapshot file */
	char job[32];
	ev_timer poll;
	double deadline;
	double t0;
	StorageDoneCb cb;
	void *ud;
	json_t *result;
	json_t *pending_args; /* block-stream, once the layer is writable */
	const char *poll_cmd;
	QmpReplyCb poll_cb;
} StorageOp;

/* A VM's storage state, hung on the Vm (vm->storage). */
struct VmStorage {
	VmDisks disks;
	StorageOp *op;
	struct TemplateJob *tjob; /* template from-vm copying this VM's disk */
	int incoming_fd;
	bool incoming_ignore_shared; /* a warm clone's start */
	StorageIncomingCb incoming_done;
	bool verify_chain; /* ask the re-adopted QEMU which layers it writes to */
	unsigned flattening; /* warm captures reading a frozen layer (storage_flatten_snapshot) */
	ev_timer incoming_poll;
	double incoming_deadline;
	bool incoming_querying; /* a query-migrate is out */
	bool incoming_evented;  /* a MIGRATION event came while it was */
};

static int templates_dirfd = -1;

static VmStorage *vs_get(Vm *vm)
{
	if (vm->storage)
		return vm->storage;
	VmStorage *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->incoming_fd = -1;
	vm->storage = s;
	return s;
}

static VmStorage *vs_find(Vm *vm)
{
	return vm ? vm->storage : NULL;
}

/* ---- paths and small helpers ---- */

static char *layer_path(Vm *vm, unsigned id)
{
	return hs_strdup_printf("%s/vms/%s/" LAYERS_DIR "/%u.qcow2", vm->hsd->state_dir,
				vm->spec.name, id);
}

static char *template_image_path(Hsd *h, const char *name)
{
	return hs_strdup_printf("%s/" TEMPLATES_DIR "/%s/image", h->state_dir, name);
}

static int save_disks(Vm *vm, VmStorage *vs)
{
	json_auto_t *j = vm_disks_to_json(&vs->disks);
	if (!j)
		return -ENOMEM;
	_cleanup_free_ char *s = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
	if (!s)
		return -ENOMEM;
	int r = hs_write_file_atomic(vm->state_dirfd, DISKS_JSON, s, strlen(s), 0600);
	if (r < 0)
		log_error("vm %s: cannot save %s: %s", vm->spec.name, DISKS_JSON, strerror(-r));
	return r;
}

static void unlink_layer(Vm *vm, unsigned id)
{
	char name[64];
	snprintf(name, sizeof(name), LAYERS_DIR "/%u.qcow2", id);
	if (unlinkat(vm->state_dirfd, name, 0) < 0 && errno != ENOENT)
		log_warning("vm %s: cannot remove %s: %m", vm->spec.name, name);
}

/* Drops layers nothing needs and deletes their files (after the model
 * without them is on disk). */
static void collect_garbage(Vm *vm, VmStorage *vs)
{
	unsigned gone[VM_MAX_DISKS][64];
	size_t n[VM_MAX_DISKS] = {0}, total = 0;
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		total += n[i] = vm_disks_collect(&vs->disks, i, gone[i], 64);
	if (!total)
		return;
	if (save_disks(vm, vs) < 0)
		return; /* the files stay; the next load sweeps them */
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		for (size_t k = 0; k < n[i]; k++)
			unlink_layer(vm, gone[i][k]);
}

static bool layer_known(const VmDisks *d, unsigned id)
{
	for (size_t i = 0; i < d->n_disks; i++)
		if (d->disks[i].managed && disk_layer(&d->disks[i], id))
			return true;
	return false;
}

/* Layer files the model does not know (a crash between making a file and
 * recording it, or between forgetting one and deleting it). */
static int sweep_layer(int dfd, const char *name, void *ud)
{
	Vm *vm = ud;
	VmStorage *vs = vm->storage;
	char *end;
	unsigned long id = strtoul(name, &end, 10);
	if (name[0] == '.' || strcmp(end, ".qcow2"))
		return 0;
	if (!layer_known(&vs->disks, (unsigned)id)) {
		log_info("vm %s: removing unreferenced layer %s", vm->spec.name, name);
		unlinkat(dfd, name, 0);
	}
	return 0;
}

/* Saved-memory files no snapshot names (a memory snapshot cut short). */
static int sweep_state(int dfd, const char *file, void *ud)
{
	Vm *vm = ud;
	VmStorage *vs = vm->storage;
	if (file[0] == '.')
		return 0;
	char name[300], snap[300];
	snprintf(name, sizeof(name), SNAPSHOTS_DIR "/%s", file);
	bool used = false;
	if (firmware_snapshot_file(file, snap, sizeof(snap)))
		used = vm_disks_find_snapshot(&vs->disks, snap) != NULL;
	for (size_t s = 0; s < vs->disks.n_snaps; s++)
		used |= vs->disks.snaps[s].memory && !strcmp(vs->disks.snaps[s].memory, name);
	if (!used) {
		log_info("vm %s: removing unreferenced %s", vm->spec.name, name);
		unlinkat(dfd, file, 0);
	}
	return 0;
}

static void sweep_unreferenced(Vm *vm)
{
	hs_dir_foreach(vm->state_dirfd, LAYERS_DIR, sweep_layer, vm);
	hs_dir_foreach(vm->state_dirfd, SNAPSHOTS_DIR, sweep_state, vm);
}

/* ---- the operation runner ---- */

static void op_free(StorageOp *op)
{
	ev_timer_stop(op->h->loop, &op->poll);
	if (op->state_fd >= 0)
		close(op->state_fd);
	json_decref(op->result);
	json_decref(op->pending_args);
	free(op);
}

static void op_done(StorageOp *op, const HsError *err)
{
	VmStorage *vs = vs_find(op->vm);
	if (vs)
		vs->op = NULL;
	if (!err)
		log_info("vm %s: %s%s%s done in %.0f ms", op->vm->spec.name, op_names[op->kind],
			 op->snap[0] ? " " : "", op->snap, (hs_now() - op->t0) * 1e3);
	else
		log_warning("vm %s: %s %s failed: %s", op->vm->spec.name, op_names[op->kind],
			    op->snap, err->message);
	StorageDoneCb cb = op->cb;
	void *ud = op->ud;
	Hsd *h = op->h;
	json_t *res = json_incref(op->result);
	op_free(op);
	if (cb)
		cb(h, err, res, ud);
	json_decref(res);
}

static StorageOp *op_new(Vm *vm, VmStorage *vs, OpKind kind, StorageDoneCb cb, void *ud)
{
	StorageOp *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->vm = vm;
	op->h = vm->hsd;
	op->kind = kind;
	op->cb = cb;
	op->ud = ud;
	op->state_fd = -1;
	op->t0 = hs_now();
	ev_timer_init(&op->poll, NULL, 0., 0.);
	op->poll.data = op;
	vs->op = op;
	return op;
}

/* Records in disks.json, before acting, what the operation is doing
 * (`phase`) and which layer ids it makes: a crash is sorted out from it. */
static int set_intent(StorageOp *op, VmStorage *vs, const char *phase, HsError *err)
{
	json_t *ids = json_array();
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		json_array_append_new(ids, json_integer(op->new_ids[i]));
	json_decref(vs->disks.intent);
	vs->disks.intent = json_pack("{s:s, s:s, s:s, s:o, s:b, s:b}", "op", op_names[op->kind],
				     "phase", phase, "snapshot", op->snap, "new", ids, "memory",
				     op->memory, "restart", op->restart);
	if (save_disks(op->vm, vs) < 0)
		return hs_error_set(err, -EIO, "internal", "cannot record the operation");
	return 0;
}

static int clear_intent(Vm *vm, VmStorage *vs)
{
	json_decref(vs->disks.intent);
	vs->disks.intent = NULL;
	return save_disks(vm, vs);
}

/* qemu-img create of layer `id` over `parent` of disk `disk`. */
static int run_create_layer(StorageOp *op, size_t disk, unsigned id, unsigned parent,
			    uint64_t size, ToolDoneCb cb, HsError *err)
{
	VmStorage *vs = vs_find(op->vm);
	const ManagedDisk *m = &vs->disks.disks[disk];
	_cleanup_free_ char *path = layer_path(op->vm, id);
	char backing[128], opts[256], sz[32] = "";
	layer_backing_name(m, parent, backing, sizeof(backing));
	if (backing[0])
		snprintf(opts, sizeof(opts), "backing_file=%s,backing_fmt=%s", backing,
			 parent ? "qcow2" : vm_disk_format_to_string(m->base_format));
	else
		snprintf(opts, sizeof(opts), "cluster_size=65536");
	if (size)
		snprintf(sz, sizeof(sz), "%" PRIu64, size);
	char *argv[] = {(char *)QEMU_IMG, (char *)"create", (char *)"-q", (char *)"-f",
			(char *)"qcow2", (char *)"-o", opts, path, sz[0] ? sz : NULL, NULL};
	return tool_run(op->h, argv, NULL, 0, TOOL_TIMEOUT_FAST, cb, op, err);
}

static void tool_error(const ToolResult *res, const char *what, HsError *err)
{
	char why[300];
	tool_describe_failure(res, why, sizeof(why));
	hs_error_set(err, -EIO, "storage-failed", "%s: qemu-img: %s", what, why);
}

/* ---- templates ---- */

static json_t *template_read(Hsd *h, const char *name)
{
	_cleanup_free_ char *data = NULL;
	char path[128];
	snprintf(path, sizeof(path), "%s/template.json", name);
	if (hs_read_file(templates_dirfd, path, 1 << 16, &data, NULL) < 0)
		return NULL;
	return json_loads(data, 0, NULL);
}

bool template_lookup(Hsd *h, const char *name, VmDiskFormat *format, uint64_t *size)
{
	if (!vm_name_is_valid(name))
		return false;
	json_auto_t *t = template_read(h, name);
	if (!t)
		return false;
	const char *kind = json_string_value(json_object_get(t, "kind"));
	if (kind && !strcmp(kind, "warm") && !json_object_get(t, "format"))
		return false; /* no disk image (a disk-less source): not a disk's base */
	const char *f = json_string_value(json_object_get(t, "format"));
	if (format)
		*format = f && !strcmp(f, "raw") ? VM_DISK_RAW : VM_DISK_QCOW2;
	if (size)
		*size = (uint64_t)json_integer_value(json_object_get(t, "virtual_size"));
	return true;
}

/* VMs whose disks stand on `name`. */
static json_t *template_users(Hsd *h, const char *name)
{
	json_t *users = json_array();
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		/* A clone that migrated away left a record here, no user. */
		if (vm->status.state != VM_STATE_MIGRATED &&
		    !strcmp(vm->spec.warm_template, name)) {
			json_array_append_new(users, json_string(vm->spec.name));
			continue;
		}
		for (size_t i = 0; i < vm->spec.n_disks; i++)
			if (vm->spec.disks[i].template && !strcmp(vm->spec.disks[i].template, name)) {
				json_array_append_new(users, json_string(vm->spec.name));
				break;
			}
	}
	return users;
}

static json_t *template_json_with_users(Hsd *h, const char *name)
{
	json_t *t = template_read(h, name);
	if (!t)
		return NULL;
	json_object_set_new(t, "users", template_users(h, name));
	return t;
}

typedef struct TemplateList {
	Hsd *h;
	json_t *list;
} TemplateList;

static int template_list_add(int dfd, const char *name, void *ud)
{
	TemplateList *l = ud;
	if (name[0] == '.' || !vm_name_is_valid(name))
		return 0;
	json_t *t = template_json_with_users(l->h, name);
	if (t)
		json_array_append_new(l->list, t);
	return 0;
}

json_t *template_list_json(Hsd *h)
{
	json_t *list = json_array();
	hs_dir_foreach(templates_dirfd, ".", template_list_add, &(TemplateList){h, list});
	warm_templates_making(list);
	/* Stable order: by name. */
	size_t n = json_array_size(list);
	for (size_t i = 1; i < n; i++)
		for (size_t k = i; k > 0; k--) {
			json_t *a = json_array_get(list, k - 1), *b = json_array_get(list, k);
			if (strcmp(json_string_value(json_object_get(a, "name")),
				   json_string_value(json_object_get(b, "name"))) <= 0)
				break;
			json_incref(a);
			json_array_set(list, k - 1, b);
			json_array_set_new(list, k, a);
		}
	return list;
}

json_t *template_get_json(Hsd *h, const char *name, HsError *err)
{
	json_t *t = vm_name_is_valid(name) ? template_json_with_users(h, name) : NULL;
	if (!t && vm_name_is_valid(name))
		t = warm_template_making_json(name);
	if (!t)
		hs_error_set(err, -ENOENT, "not-found", "no template named '%s'", name);
	return t;
}

typedef struct TemplateJob TemplateJob;
struct TemplateJob {
	Hsd *h;
	char name[VM_NAME_MAX + 1];
	char tmp[VM_NAME_MAX + 32];
	char source[4096];
	char format[8];
	int src_fd;
	int step;
	StorageDoneCb cb;
	void *ud;
	double t0;
	Vm *vm; /* from-vm: its disks are busy while copied */
};

static void tjob_finish(TemplateJob *j, const HsError *err, json_t *res)
{
	if (err)
		hs_rm_rf_at(templates_dirfd, j->tmp);
	if (j->src_fd >= 0)
		close(j->src_fd);
	if (j->vm) {
		VmStorage *vs = vs_find(j->vm);
		if (vs && vs->tjob == j)
			vs->tjob = NULL;
	}
	if (err)
		log_warning("template %s: %s", j->name, err->message);
	else
		log_info("template %s: made in %.0f ms", j->name, (hs_now() - j->t0) * 1e3);
	j->cb(j->h, err, res, j->ud);
	free(j);
}

static void on_template_info(Hsd *h, const ToolResult *res, void *ud);

static int tjob_run_info(TemplateJob *j, HsError *err)
{
	_cleanup_free_ char *path = template_image_path(j->h, j->tmp);
	if (!path)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	char *argv[] = {(char *)QEMU_IMG, (char *)"info", (char *)"--output=json", (char *)"-f",
			j->format, path, NULL};
	return tool_run(j->h, argv, NULL, 0, TOOL_TIMEOUT_FAST, on_template_info, j, err);
}

static void on_template_copied(Hsd *h, const ToolResult *res, void *ud)
{
	TemplateJob *j = ud;
	HsError err;
	if (!res->ok) {
		tool_error(res, "cannot copy the image", &err);
		tjob_finish(j, &err, NULL);
		return;
	}
	if (tjob_run_info(j, &err) < 0)
		tjob_finish(j, &err, NULL);
}

static void on_template_info(Hsd *h, const ToolResult *res, void *ud)
{
	TemplateJob *j = ud;
	HsError err;
	json_auto_t *info = res->ok ? json_loads(res->output, 0, NULL) : NULL;
	if (!info) {
		tool_error(res, "cannot read the copied image", &err);
		tjob_finish(j, &err, NULL);
		return;
	}
	json_int_t vsize = json_integer_value(json_object_get(info, "virtual-size"));
	json_int_t asize = json_integer_value(json_object_get(info, "actual-size"));
	json_auto_t *t = json_pack("{s:s, s:s, s:I, s:I, s:f, s:s}", "name", j->name, "format",
				   j->format, "virtual_size", vsize, "actual_size", asize,
				   "created", hs_wall(), "source", j->source);
	if (j->vm) {
		/* A UEFI VM's variables (boot entries, keys) go with it;
		 * clones start from a copy. */
		int tfd = openat(templates_dirfd, j->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int fr = tfd < 0 ? hs_error_set(&err, -errno, "internal", "cannot open %s: %m", j->tmp)
				 : firmware_template_save(j->vm, tfd, &err);
		if (tfd >= 0)
			close(tfd);
		if (fr < 0) {
			tjob_finish(j, &err, NULL);
			return;
		}
		if (fr > 0)
			json_object_set_new(t, "efivars", json_true());
	}
	_cleanup_free_ char *s = json_dumps(t, JSON_INDENT(1) | JSON_SORT_KEYS);
	char path[VM_NAME_MAX + 64];
	snprintf(path, sizeof(path), "%s/image", j->tmp);
	int r = -ENOMEM;
	/* Immutable from now on: read-only for everyone, hsd included. */
	if (s && fchmodat(templates_dirfd, path, 0444, 0) == 0) {
		int dfd = openat(templates_dirfd, j->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? -errno : hs_write_file_atomic(dfd, "template.json", s, strlen(s), 0444);
		if (dfd >= 0) {
			int ifd = openat(dfd, "image", O_RDONLY | O_CLOEXEC);
			if (ifd >= 0) {
				fsync(ifd);
				close(ifd);
			}
			close(dfd);
		}
	} else if (s) {
		r = -errno;
	}
	/* The template appears whole, or not at all. */
	if (r == 0 && renameat2(templates_dirfd, j->tmp, templates_dirfd, j->name,
				RENAME_NOREPLACE) < 0)
		r = -errno;
	if (r == 0) {
		int fd = openat(templates_dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
	}
	if (r < 0) {
		hs_error_set(&err, r, r == -EEXIST ? "conflict" : "internal",
			     r == -EEXIST ? "a template named '%s' already exists"
					  : "cannot store template '%s'",
			     j->name);
		tjob_finish(j, &err, NULL);
		return;
	}
	json_auto_t *out = template_json_with_users(h, j->name);
	tjob_finish(j, NULL, out);
}

static void on_source_info(Hsd *h, const ToolResult *res, void *ud)
{
	TemplateJob *j = ud;
	HsError err;
	json_auto_t *info = res->ok ? json_loads(res->output, 0, NULL) : NULL;
	if (!info) {
		char why[300];
		tool_describe_failure(res, why, sizeof(why));
		hs_error_set(&err, -EINVAL, "invalid-image", "'%s' is not a usable disk image: %s",
			     j->source, why);
		tjob_finish(j, &err, NULL);
		return;
	}
	const char *fmt = json_string_value(json_object_get(info, "format"));
	if (j->format[0] && fmt && strcmp(fmt, j->format) && strcmp(fmt, "raw")) {
		/* Declared raw, but it is a qcow2 (or other) image: taking it
		 * as raw would make a template of its metadata. */
		hs_error_set(&err, -EINVAL, "invalid-image", "'%s' is a %s image, not %s", j->source,
			     fmt, j->format);
		tjob_finish(j, &err, NULL);
		return;
	}
	if (j->format[0])
		fmt = NULL; /* the declared one stands */
	if (json_object_get(info, "backing-filename") || json_object_get(info, "full-backing-filename")) {
		/* Its backing file would name some other file of the host. */
		hs_error_set(&err, -EINVAL, "invalid-image",
			     "'%s' has a backing file; import a standalone image (qemu-img "
			     "convert it first)",
			     j->source);
		tjob_finish(j, &err, NULL);
		return;
	}
	if (!j->format[0] && (!fmt || (strcmp(fmt, "qcow2") && strcmp(fmt, "raw")))) {
		hs_error_set(&err, -EINVAL, "invalid-image",
			     "'%s' is a %s image; templates are qcow2 or raw", j->source,
			     fmt ? fmt : "unknown");
		tjob_finish(j, &err, NULL);
		return;
	}
	if (fmt)
		snprintf(j->format, sizeof(j->format), "%s", fmt);
	_cleanup_free_ char *dst = template_image_path(h, j->tmp);
	if (!dst) {
		hs_error_set(&err, -ENOMEM, "internal", "out of memory");
		tjob_finish(j, &err, NULL);
		return;
	}
	char *argv[] = {(char *)QEMU_IMG, (char *)"convert", (char *)"-q", (char *)"-f", j->format,
			(char *)"-O", j->format, (char *)"/dev/fd/3", dst, NULL};
	if (tool_run(h, argv, &j->src_fd, 1, TOOL_TIMEOUT_COPY, on_template_copied, j, &err) < 0)
		tjob_finish(j, &err, NULL);
}

static TemplateJob *tjob_new(Hsd *h, const char *name, StorageDoneCb cb, void *ud,
			     HsError *err)
{
	if (!vm_name_is_valid(name)) {
		hs_error_set(err, -EINVAL, "invalid-name",
			     "'%s' is not a valid template name (1-63 of a-z 0-9 _ -, starting "
			     "with a letter or digit)",
			     name);
		return NULL;
	}
	if (template_lookup(h, name, NULL, NULL)) {
		hs_error_set(err, -EEXIST, "conflict", "a template named '%s' already exists",
			     name);
		return NULL;
	}
	TemplateJob *j = calloc(1, sizeof(*j));
	if (!j) {
		hs_error_set(err, -ENOMEM, "internal", "out of memory");
		return NULL;
	}
	j->h = h;
	j->src_fd = -1;
	j->cb = cb;
	j->ud = ud;
	j->t0 = hs_now();
	snprintf(j->name, sizeof(j->name), "%s", name);
	snprintf(j->tmp, sizeof(j->tmp), ".new-%s-%08x", name, (unsigned)(hs_now_ns() & 0xffffffff));
	if (mkdirat(templates_dirfd, j->tmp, 0755) < 0) {
		hs_error_set(err, -errno, "internal", "cannot make template dir: %m");
		free(j);
		return NULL;
	}
	return j;
}

int template_import(Hsd *h, const char *name, const char *path, const char *format,
		    StorageDoneCb cb, void *ud, HsError *err)
{
	if (format && strcmp(format, "qcow2") && strcmp(format, "raw"))
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "format: must be 'qcow2' or 'raw', not '%s'", format);
	if (!path || path[0] != '/')
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "file: an absolute path is needed");
	int fd = paths_open_beneath(&h->allowed, path, O_RDONLY, "file", err);
	if (fd < 0)
		return fd;
	TemplateJob *j = tjob_new(h, name, cb, ud, err);
	if (!j) {
		close(fd);
		return err->code;
	}
	j->src_fd = fd;
	snprintf(j->source, sizeof(j->source), "%s", path);
	snprintf(j->format, sizeof(j->format), "%s", format ? format : "");
	/* Probe the format (checked against the one declared), and refuse
	 * images with a backing file. */
	char *argv[] = {(char *)QEMU_IMG, (char *)"info", (char *)"--output=json",
			(char *)"/dev/fd/3", NULL};
	int r = tool_run(h, argv, &j->src_fd, 1, TOOL_TIMEOUT_FAST, on_source_info, j, err);
	if (r < 0) {
		hs_rm_rf_at(templates_dirfd, j->tmp);
		close(j->src_fd);
		free(j);
	}
	return r;
}

int template_from_vm(Hsd *h, const char *name, Vm *vm, unsigned disk, StorageDoneCb cb,
		     void *ud, HsError *err)
{
	VmStorage *vs = vs_find(vm);
	if (vm_state_is_active(vm->status.state) || vm->pacing)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; stop it first (a template is made from a "
				    "stopped VM's disk)",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	if (disk >= vm->spec.n_disks || !vs || !vs->disks.disks[disk].managed)
		return hs_error_set(err, -EINVAL, "invalid-argument",
				    "VM '%s' has no managed disk %u", vm->spec.name, disk);
	if (vs->op || vs->tjob || vs->disks.intent)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' has a storage operation in progress", vm->spec.name);
	TemplateJob *j = tjob_new(h, name, cb, ud, err);
	if (!j)
		return err->code;
	snprintf(j->source, sizeof(j->source), "vm:%s/disks[%u]", vm->spec.name, disk);
	snprintf(j->format, sizeof(j->format), "qcow2");
	j->vm = vm;
	vs->tjob = j; /* the VM's disks are busy while copied */
	_cleanup_free_ char *src = layer_path(vm, vs->disks.disks[disk].top);
	_cleanup_free_ char *dst = template_image_path(h, j->tmp);
	char *argv[] = {(char *)QEMU_IMG, (char *)"convert", (char *)"-q", (char *)"-f",
			(char *)"qcow2", (char *)"-O", (char *)"qcow2", src, dst, NULL};
	int r = src && dst ? tool_run(h, argv, NULL, 0, TOOL_TIMEOUT_COPY, on_template_copied, j, err)
			   : hs_error_set(err, -ENOMEM, "internal", "out of memory");
	if (r < 0) {
		vs->tjob = NULL;
		hs_rm_rf_at(templates_dirfd, j->tmp);
		free(j);
	}
	return r;
}

int template_delete(Hsd *h, const char *name, HsError *err)
{
	json_auto_t *t = vm_name_is_valid(name) ? template_read(h, name) : NULL;
	if (!t)
		return hs_error_set(err, -ENOENT, "not-found", "no template named '%s'", name);
	json_auto_t *users = template_users(h, name);
	if (json_array_size(users)) {
		char list[400] = "";
		size_t i;
		json_t *u;
		json_array_foreach(users, i, u) {
			size_t len = strlen(list);
			snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
				 json_string_value(u));
		}
		return hs_error_set(err, -EBUSY, "in-use",
				    "template '%s' is used by %zu VM(s): %s; delete them first",
				    name, json_array_size(users), list);
	}
	char tmp[VM_NAME_MAX + 32];
	snprintf(tmp, sizeof(tmp), ".del-%s-%08x", name, (unsigned)(hs_now_ns() & 0xffffffff));
	if (renameat(templates_dirfd, name, templates_dirfd, tmp) < 0)
		return hs_error_set(err, -errno, "internal", "cannot delete template '%s': %m",
				    name);
	/* Make the files writable again so the removal works whatever the
	 * mode. */
	hs_rm_rf_at(templates_dirfd, tmp);
	warm_template_deleted(h, name);
	log_info("template %s: deleted", name);
	return 0;
}

/* ---- init ---- */

/* Half-made or half-deleted templates of a crash. */
static int remove_leftover(int dfd, const char *name, void *ud)
{
	if (hs_str_has_prefix(name, ".new-") || hs_str_has_prefix(name, ".del-")) {
		log_info("templates: removing leftover %s", name);
		hs_rm_rf_at(dfd, name);
	}
	return 0;
}

int storage_init(Hsd *h, HsError *err)
{
	_cleanup_free_ char *p = hs_strdup_printf("%s/" TEMPLATES_DIR, h->state_dir);
	int r = p ? hs_mkdir_p(p, 0755) : -ENOMEM;
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot make %s: %s", p ? p : "templates",
				    strerror(-r));
	templates_dirfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (templates_dirfd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open %s: %m", p);
	hs_dir_foreach(templates_dirfd, ".", remove_leftover, NULL);
	return 0;
}

void storage_free(Hsd *h)
{
	/* The VMs' own storage went with them (storage_vm_free). */
	if (templates_dirfd >= 0)
		close(templates_dirfd);
	templates_dirfd = -1;
}

void storage_vm_free(Vm *vm)
{
	VmStorage *s = TAKE_PTR(vm->storage);
	if (!s)
		return;
	if (s->tjob)
		s->tjob->vm = NULL;
	if (s->op) {
		/* The VM goes away under a running operation (hsd stopping):
		 * drop it; the intent on disk is finished at the next start. */
		s->op->cb = NULL;
		op_free(s->op);
	}
	ev_timer_stop(vm->hsd->loop, &s->incoming_poll);
	vm_disks_clear(&s->disks);
	if (s->incoming_fd >= 0)
		close(s->incoming_fd);
	free(s);
}

/* ---- a VM's disks: load, create, launch ---- */

static void op_step(StorageOp *op, const HsError *err);

static void on_tool_step(Hsd *h, const ToolResult *res, void *ud)
{
	StorageOp *op = ud;
	HsError err;
	if (!res->ok) {
		tool_error(res, op_names[op->kind], &err);
		op_step(op, &err);
		return;
	}
	op_step(op, NULL);
}

/* A QMP command cancelled because hsd itself is stopping: leave the
 * operation as it is (its intent is finished at the next start). Cancelled
 * because the VM's QEMU went away: that is a failure like any other. */
static bool going_away(Hsd *h, const HsError *err)
{
	return err && err->code == -ECANCELED && h->stopping;
}

static void on_qmp_step(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	StorageOp *op = ud;
	if (going_away(op->h, err))
		return; /* the intent is finished at restart */
	op_step(op, err);
}

static int alloc_ids(Vm *vm, VmStorage *vs, StorageOp *op)
{
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		op->new_ids[i] = vs->disks.disks[i].managed ? vs->disks.next_id++ : 0;
	return 0;
}

static void unlink_new(Vm *vm, StorageOp *op, size_t n_disks)
{
	for (size_t i = 0; i < n_disks; i++)
		if (op->new_ids[i])
			unlink_layer(vm, op->new_ids[i]);
}

/* Next managed disk at or after op->disk; false when past the last. */
static bool next_managed(StorageOp *op, VmStorage *vs)
{
	while (op->disk < vs->disks.n_disks && !vs->disks.disks[op->disk].managed)
		op->disk++;
	return op->disk < vs->disks.n_disks;
}

static int start_op(StorageOp *op)
{
	op_step(op, NULL);
	return 0;
}

int storage_vm_create(Vm *vm, StorageDoneCb cb, void *ud, HsError *err)
{
	VmStorage *vs = vs_get(vm);
	if (!vs)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	vm_disks_clear(&vs->disks);
	vs->disks.next_id = 1;
	vs->disks.n_disks = vm->spec.n_disks;
	for (size_t i = 0; i < vm->spec.n_disks; i++) {
		const VmDisk *d = &vm->spec.disks[i];
		ManagedDisk *m = &vs->disks.disks[i];
		if (!d->managed)
			continue;
		m->managed = true;
		uint64_t tsize = 0;
		if (d->template) {
			if (!template_lookup(vm->hsd, d->template, &m->base_format, &tsize))
				return hs_error_set(err, -EINVAL, "invalid-spec",
						    "disks[%zu].template: no template named '%s'", i,
						    d->template);
			m->template = strdup(d->template);
		}
		if (d->size && d->size < tsize)
			return hs_error_set(err, -EINVAL, "invalid-spec",
					    "disks[%zu].size: %" PRIu64 " bytes is smaller than "
					    "template '%s' (%" PRIu64 " bytes); disks only grow",
					    i, d->size, d->template, tsize);
		/* qcow2 sizes are whole 512-byte sectors. */
		m->size = ((d->size ? d->size : tsize) + 511) & ~(uint64_t)511;
	}
	if (!vm_disks_any_managed(&vs->disks))
		return 0;
	if (mkdirat(vm->state_dirfd, LAYERS_DIR, 0700) < 0 && errno != EEXIST)
		return hs_error_set(err, -errno, "internal", "cannot make the layers dir: %m");
	StorageOp *op = op_new(vm, vs, OP_CREATE, cb, ud);
	if (!op)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	return start_op(op);
}

int storage_vm_check_idle(Vm *vm, HsError *err)
{
	VmStorage *vs = vs_find(vm);
	if (!vs)
		return 0;
	/* A rollback starts the VM itself, on its new layers. */
	bool own_start = vs->op && vs->op->kind == OP_ROLLBACK && vs->op->step == RB_STARTED;
	if ((vs->op && !own_start) || vs->tjob)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' has a storage operation in progress (%s)", vm->spec.name,
				    vs->op ? op_names[vs->op->kind] : "template from-vm");
	if (vs->disks.intent)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' has an unfinished storage operation (%s)", vm->spec.name,
				    json_string_value(json_object_get(vs->disks.intent, "op")));
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		if (vs->disks.disks[i].managed && !vs->disks.disks[i].top)
			return hs_error_set(err, -EIO, "storage-failed",
					    "VM '%s': disks[%zu] was never made", vm->spec.name, i);
	return 0;
}

static int open_layer(Vm *vm, unsigned id, int flags, HsError *err)
{
	char name[64];
	snprintf(name, sizeof(name), LAYERS_DIR "/%u.qcow2", id);
	int fd = openat(vm->state_dirfd, name, flags | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return hs_error_set(err, -errno, "storage-failed", "cannot open layer %s: %m", name);
	return fd;
}

/* The VM's own random part of its cloud-init instance-id: made once, at
 * its first start; a VM made from a template (a clone) gets its own. */
static int instance_nonce(Vm *vm, char *buf, size_t size, HsError *err)
{
	_cleanup_free_ char *data = NULL;
	if (hs_read_file(vm->state_dirfd, "instance-nonce", 64, &data, NULL) == 0 &&
	    strlen(data) >= 16) {
		snprintf(buf, size, "%.32s", data);
		return 0;
	}
	unsigned char b[16];
	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		return hs_error_set(err, -EIO, "internal", "getrandom failed");
	for (size_t i = 0; i < sizeof(b) && 2 * i + 2 < size; i++)
		snprintf(buf + 2 * i, 3, "%02x", b[i]);
	int r = hs_write_file_atomic(vm->state_dirfd, "instance-nonce", buf, strlen(buf), 0600);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot save the instance nonce: %s",
				    strerror(-r));
	return 0;
}

int storage_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, QemuDiskChain *chains, HsError *err)
{
	VmStorage *vs = vs_find(vm);
	int r;
	for (size_t i = 0; i < VM_MAX_DISKS; i++)
		l->chains[i] = NULL;
	l->cidata_fd = 0;
	if (vs && vm_disks_any_managed(&vs->disks)) {
		r = storage_vm_check_idle(vm, err);
		if (r < 0)
			return r;
		for (size_t i = 0; i < vs->disks.n_disks; i++) {
			const ManagedDisk *m = &vs->disks.disks[i];
			if (!m->managed)
				continue;
			unsigned ids[LAYERS_MAX_DEPTH];
			int n = disk_chain(m, m->top, ids, LAYERS_MAX_DEPTH);
			if (n < 0)
				return hs_error_set(err, n, "storage-failed",
						    "disks[%zu]: too many layers (at most %d): "
						    "delete snapshots",
						    i, LAYERS_MAX_DEPTH);
			QemuDiskChain *c = &chains[i];
			c->n = 0;
			if (m->template) {
				_cleanup_free_ char *tp = template_image_path(vm->hsd, m->template);
				int fd = tp ? open(tp, O_RDONLY | O_CLOEXEC) : -ENOMEM;
				if (fd < 0)
					return hs_error_set(err, -errno, "storage-failed",
							    "disks[%zu]: template '%s' is unreadable: %m",
							    i, m->template);
				r = child_fds_add(fds, fd);
				if (r < 0)
					goto too_many;
				c->layers[c->n++] = (QemuLayer){.id = 0, .format = m->base_format,
								.fd_ro = r, .fd_rw = -1};
			}
			for (int k = 0; k < n; k++) {
				bool top = k == n - 1;
				QemuLayer *ly = &c->layers[c->n++];
				*ly = (QemuLayer){.id = ids[k], .format = VM_DISK_QCOW2, .fd_rw = -1};
				r = open_layer(vm, ids[k], O_RDONLY, err);
				if (r < 0)
					return r;
				if ((r = ly->fd_ro = child_fds_add(fds, r)) < 0)
					goto too_many;
				if (top && !vm->spec.disks[i].readonly) {
					r = open_layer(vm, ids[k], O_RDWR, err);
					if (r < 0)
						return r;
					if ((r = ly->fd_rw = child_fds_add(fds, r)) < 0)
						goto too_many;
				}
			}
			l->chains[i] = c;
		}
	}
	if (vm->spec.cloud_init) {
		/* Made afresh at every start from the spec: what the guest
		 * sees always matches what the API shows. */
		char nonce[40];
		r = instance_nonce(vm, nonce, sizeof(nonce), err);
		if (r < 0)
			return r;
		r = cloudinit_write_iso(vm->state_dirfd, CIDATA_ISO, vm->spec.name, nonce,
					vm->spec.cloud_init, err);
		if (r < 0)
			return r;
		int fd = openat(vm->state_dirfd, CIDATA_ISO, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			return hs_error_set(err, -errno, "internal", "cannot open %s: %m", CIDATA_ISO);
		if ((r = child_fds_add(fds, fd)) < 0)
			goto too_many;
		l->cidata_fd = r;
	} else {
		unlinkat(vm->state_dirfd, CIDATA_ISO, 0);
	}
	if (vs && vs->incoming_fd >= 0)
		l->incoming = true;
	return 0;
too_many:
	return hs_error_set(err, -EMFILE, "storage-failed",
			    "VM '%s' has too many disk layers for one QEMU (delete snapshots)",
			    vm->spec.name);
}

json_t *storage_vm_disks_json(Vm *vm)
{
	VmStorage *vs = vs_find(vm);
	if (!vs || !vm_disks_any_managed(&vs->disks))
		return NULL;
	json_t *arr = json_array();
	for (size_t i = 0; i < vs->disks.n_disks; i++) {
		const ManagedDisk *m = &vs->disks.disks[i];
		if (!m->managed) {
			json_array_append_new(arr, json_null());
			continue;
		}
		unsigned ids[LAYERS_MAX_DEPTH];
		int n = disk_chain(m, m->top, ids, LAYERS_MAX_DEPTH);
		json_t *chain = json_array();
		for (int k = 0; k < n; k++)
			json_array_append_new(chain, json_integer(ids[k]));
		json_t *dj = json_pack("{s:I, s:I, s:o, s:I}", "size", (json_int_t)m->size, "top",
				       (json_int_t)m->top, "chain", chain, "layers",
				       (json_int_t)m->n_layers);
		if (m->template)
			json_object_set_new(dj, "template", json_string(m->template));
		json_array_append_new(arr, dj);
	}
	return arr;
}

json_t *storage_snapshots_json(Vm *vm)
{
	VmStorage *vs = vs_find(vm);
	json_t *arr = json_array();
	if (!vs)
		return arr;
	size_t d0;
	for (d0 = 0; d0 < vs->disks.n_disks && !vs->disks.disks[d0].managed; d0++)
		;
	const VmSnapshot *cur = d0 < vs->disks.n_disks
					? vm_disks_snapshot_below(&vs->disks, vs->disks.disks[d0].top)
					: NULL;
	for (size_t s = 0; s < vs->disks.n_snaps; s++) {
		const VmSnapshot *sn = &vs->disks.snaps[s];
		const VmSnapshot *parent = NULL;
		if (d0 < vs->disks.n_disks) {
			const DiskLayer *l = disk_layer(&vs->disks.disks[d0], sn->layers[d0]);
			parent = l ? vm_disks_snapshot_below(&vs->disks, l->parent) : NULL;
		}
		json_t *sj = json_pack("{s:s, s:f, s:b, s:b}", "name", sn->name, "created",
				       sn->created, "memory", sn->memory != NULL, "current",
				       sn == cur);
		if (sn->quiesced || sn->quiesce_note[0])
			json_object_set_new(sj, "quiesced", json_boolean(sn->quiesced));
		if (sn->quiesce_note[0])
			json_object_set_new(sj, "quiesce_note", json_string(sn->quiesce_note));
		json_object_set_new(sj, "parent", parent ? json_string(parent->name) : json_null());
		json_array_append_new(arr, sj);
	}
	return arr;
}

/* ---- operations, as step machines ---- */

/* The VM's QEMU is running and talking: operations go live over QMP. */
static bool vm_is_live(Vm *vm)
{
	return (vm->status.state == VM_STATE_RUNNING || vm->status.state == VM_STATE_PAUSED) &&
	       vm->qmp && vm->qmp_ready;
}

static void fail(StorageOp *op, const HsError *err)
{
	op_done(op, err);
}

/* The operation's outcome is in the model: disks.json is saved without
 * the intent. If it cannot be, the operation fails (op is gone: return). */
static int commit_or_fail(StorageOp *op, VmStorage *vs, const char *what)
{
	if (clear_intent(op->vm, vs) == 0)
		return 0;
	HsError e;
	hs_error_set(&e, -EIO, "internal", "cannot record the %s", what);
	fail(op, &e);
	return -1;
}

/* Undoes the making of new layers: their files and the intent go. */
static void drop_new_layers(StorageOp *op, VmStorage *vs)
{
	unlink_new(op->vm, op, vs->disks.n_disks);
	clear_intent(op->vm, vs);
}

/* Each disk's new layer (ids[disk], 0: none) becomes its top, standing
 * on `under`'s layer of that disk (the snapshot rolled back to) or, with
 * no `under`, on the disk's top (none yet for a disk being made). */
static void push_new_layers(VmStorage *vs, const unsigned *ids, const VmSnapshot *under)
{
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		if (ids[i]) {
			ManagedDisk *m = &vs->disks.disks[i];
			disk_add_layer(m, ids[i], under ? under->layers[i] : m->top);
			m->top = ids[i];
		}
}

/* The first phase of create, snapshot and rollback: new layer ids, the
 * intent ("creating") recorded, from the first disk on. */
static int begin_new_layers(StorageOp *op, VmStorage *vs, HsError *err)
{
	alloc_ids(op->vm, vs, op);
	int r = set_intent(op, vs, "creating", err);
	op->disk = 0;
	return r;
}

/* Makes the new layer of the next managed disk from op->disk on, where
 * push_new_layers() will put it (qemu-img create; at its end op steps
 * again): 1 when one is being made, 0 when every disk has its layer, < 0
 * (err set) when qemu-img cannot start. */
static int create_next_layer(StorageOp *op, VmStorage *vs, const VmSnapshot *under,
			     HsError *err)
{
	if (!next_managed(op, vs))
		return 0;
	const ManagedDisk *m = &vs->disks.disks[op->disk];
	unsigned parent = under ? under->layers[op->disk] : m->top;
	/* Only a new disk has a size of its own; overlays take their base's. */
	uint64_t size = op->kind == OP_CREATE ? m->size : 0;
	int r = run_create_layer(op, op->disk, op->new_ids[op->disk], parent, size, on_tool_step,
				 err);
	return r < 0 ? r : 1;
}

/* OP_CREATE: 0 intent, 1.. one layer per managed disk, then commit. */
static void step_create(StorageOp *op, VmStorage *vs, const HsError *err)
{
	HsError e;
	if (err) {
		drop_new_layers(op, vs);
		fail(op, err);
		return;
	}
	if (op->step == 0) {
		if (begin_new_layers(op, vs, &e) < 0) {
			fail(op, &e);
			return;
		}
		op->step = 1;
	} else {
		op->disk++;
	}
	int r = create_next_layer(op, vs, NULL, &e);
	if (r != 0) {
		if (r < 0)
			step_create(op, vs, &e);
		return;
	}
	/* The disks were made just now: every new layer is a base. */
	push_new_layers(vs, op->new_ids, NULL);
	if (commit_or_fail(op, vs, "new disks") < 0)
		return;
	op_done(op, NULL);
}

/* Hands QEMU a descriptor of layer `id`, read-only or read-write, in the
 * layer's fd set. */
static int qmp_add_layer_fd(Vm *vm, unsigned id, bool rw, HsError *err)
{
	int fd = open_layer(vm, id, rw ? O_RDWR : O_RDONLY, err);
	if (fd < 0)
		return fd;
	qmp_client_execute_fd(vm->qmp, "add-fd",
			      json_pack("{s:I, s:s}", "fdset-id", (json_int_t)QEMU_FDSET_LAYER(id),
					"opaque", rw ? "rw" : "ro"),
			      fd, vm->hsd->qmp_timeout, NULL, NULL);
	return 0;
}

/* Layer `id` of disk `disk` leaves QEMU: its format node (and its file
 * node, when that one was added on its own), then its descriptors, so its
 * space is freed now, not when QEMU exits. */
static void qmp_drop_layer(Vm *vm, size_t disk, unsigned id, bool file_node)
{
	char node[32], file[32];
	qemu_layer_node(disk, id, node, sizeof(node));
	qmp_client_execute(vm->qmp, "blockdev-del", json_pack("{s:s}", "node-name", node),
			   vm->hsd->qmp_timeout, NULL, NULL);
	if (file_node) {
		qemu_layer_file_node(disk, id, file, sizeof(file));
		qmp_client_execute(vm->qmp, "blockdev-del", json_pack("{s:s}", "node-name", file),
				   vm->hsd->qmp_timeout, NULL, NULL);
	}
	qmp_client_execute(vm->qmp, "remove-fd",
			   json_pack("{s:I}", "fdset-id", (json_int_t)QEMU_FDSET_LAYER(id)),
			   vm->hsd->qmp_timeout, NULL, NULL);
}

/* Live snapshot: add every new overlay to QEMU, then one transaction
 * switches all disks at once. */
static int live_add_overlays(StorageOp *op, VmStorage *vs, HsError *err)
{
	Vm *vm = op->vm;
	int r;
	for (size_t i = 0; i < vs->disks.n_disks; i++) {
		unsigned id = op->new_ids[i];
		if (!id)
			continue;
		char node[32], file[32], path[48];
		qemu_layer_node(i, id, node, sizeof(node));
		qemu_layer_file_node(i, id, file, sizeof(file));
		for (int rw = 0; rw < 2; rw++)
			if ((r = qmp_add_layer_fd(vm, id, rw, err)) < 0)
				return r;
		snprintf(path, sizeof(path), "/dev/fdset/%ld", QEMU_FDSET_LAYER(id));
		r = qmp_client_execute(
			vm->qmp, "blockdev-add",
			json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s}, s:n, s:s}", "driver",
				  "qcow2", "node-name", node, "file", "driver", "file", "node-name",
				  file, "filename", path, "discard", "unmap", "locking", "off", "backing",
				  "discard", "unmap"),
			vm->hsd->qmp_timeout, NULL, NULL);
		if (r < 0)
			return hs_error_set(err, r, "vm-exited", "QMP is gone");
	}
	return 0;
}

static json_t *snapshot_actions(StorageOp *op, VmStorage *vs)
{
	json_t *actions = json_array();
	for (size_t i = 0; i < vs->disks.n_disks; i++) {
		if (!op->new_ids[i])
			continue;
		char node[32], overlay[32];
		qemu_layer_node(i, vs->disks.disks[i].top, node, sizeof(node));
		qemu_layer_node(i, op->new_ids[i], overlay, sizeof(overlay));
		json_array_append_new(actions,
				      json_pack("{s:s, s:{s:s, s:s}}", "type", "blockdev-snapshot",
						"data", "node", node, "overlay", overlay));
	}
	return actions;
}

/* Polling QEMU until a migration or a job is over: op_poll() sends
 * `cmd` now and its answer goes to cb; cb calls op_poll_later() to ask
 * again in 50 ms, or fails the step past op->deadline. */
static void on_op_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	StorageOp *op = w->data;
	if (qmp_client_execute(op->vm->qmp, op->poll_cmd, NULL, op->h->qmp_timeout, op->poll_cb,
			       op) < 0) {
		HsError e;
		hs_error_set(&e, -ECONNRESET, "vm-exited", "the VM exited");
		op_step(op, &e);
	}
}

static void op_poll(StorageOp *op, const char *cmd, QmpReplyCb cb)
{
	op->poll_cmd = cmd;
	op->poll_cb = cb;
	on_op_poll(op->h->loop, &op->poll, 0);
}

static void op_poll_later(StorageOp *op, const char *what)
{
	if (hs_now() > op->deadline) {
		HsError e;
		hs_error_set(&e, -ETIMEDOUT, "timeout", "%s timed out", what);
		op_step(op, &e);
		return;
	}
	ev_timer_stop(op->h->loop, &op->poll);
	ev_timer_init(&op->poll, on_op_poll, 0.05, 0.);
	op->poll.data = op;
	ev_timer_start(op->h->loop, &op->poll);
}

/* A query-migrate answer, for saving (a memory snapshot) or loading (a
 * rollback to one) a VM's memory: 1 completed, 0 still going, < 0 failed
 * or cancelled (err says why, after `what`). */
static int migrate_status(json_t *reply, const char *what, HsError *err)
{
	json_t *ret = json_object_get(reply, "return");
	const char *st = json_string_value(json_object_get(ret, "status"));
	if (st && !strcmp(st, "completed"))
		return 1;
	if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
		const char *why = json_string_value(json_object_get(ret, "error-desc"));
		return hs_error_set(err, -EIO, "storage-failed", "%s failed: %s", what,
				    why ? why : st);
	}
	return 0;
}

static void on_query_migrate(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	StorageOp *op = ud;
	if (err) {
		if (!going_away(op->h, err))
			op_step(op, err);
		return;
	}
	HsError e;
	int r = migrate_status(reply, "saving the VM's memory", &e);
	if (r > 0)
		op_step(op, NULL);
	else if (r < 0)
		op_step(op, &e);
	else
		op_poll_later(op, "saving the VM's memory");
}

static void snapshot_commit(StorageOp *op, VmStorage *vs)
{
	VmSnapshot *sn = &vs->disks.snaps[vs->disks.n_snaps++];
	memset(sn, 0, sizeof(*sn));
	snprintf(sn->name, sizeof(sn->name), "%s", op->snap);
	sn->created = hs_wall();
	/* The snapshot is the tops the new layers stand on. */
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		if (op->new_ids[i])
			sn->layers[i] = vs->disks.disks[i].top;
	push_new_layers(vs, op->new_ids, NULL);
	sn->quiesced = op->quiesced;
	snprintf(sn->quiesce_note, sizeof(sn->quiesce_note), "%s", op->quiesce_note);
	if (op->memory) {
		sn->memory = hs_strdup_printf(SNAPSHOTS_DIR "/%s.state", op->snap);
		sn->spec = vm_spec_to_json(&op->vm->spec);
		json_object_set_new(sn->spec, "hs_was_running", json_boolean(op->was_running));
	}
}

enum {
	SNAP_INTENT,
	SNAP_CREATE,
	SNAP_CREATED,
	SNAP_FROZEN,   /* disk only: the guest agent's freeze answered (or failed) */
	SNAP_STOPPED,  /* memory: CPUs stopped */
	SNAP_SWITCHED, /* transaction done */
	SNAP_SAVED,    /* memory: migration completed */
	SNAP_CONT,
	SNAP_RESUMED,
	SNAP_THAWED, /* disk only: the guest agent's thaw answered */
};


/* The guest agent answered a freeze or thaw of a snapshot (or could
 * not): neither stops the snapshot, which says what happened. */
static void on_agent_step(Vm *vm, const HsError *err, json_t *ret, void *ud)
{
	VmStorage *vs = vs_find(vm);
	StorageOp *op = ud;
	if (!vs || vs->op != op)
		return;
	if (op->step == SNAP_FROZEN) {
		if (err) {
			snprintf(op->quiesce_note, sizeof(op->quiesce_note),
				 "guest agent: freeze failed: %.90s", err->message);
		} else {
			op->frozen = true;
			op->quiesced = true;
			snprintf(op->quiesce_note, sizeof(op->quiesce_note),
				 "%lld file system(s) frozen by the guest agent",
				 (long long)json_integer_value(ret));
		}
	} else if (op->step == SNAP_THAWED && err) {
		log_warning("vm %s: thaw after snapshot '%s': %s (thawed again later)",
			    vm->spec.name, op->snap, err->message);
	}
	op_step(op, NULL);
}


/* Freezes the guest's file systems through its agent for a live
 * disk-only snapshot: 1 (the step goes on at the answer), or 0 (no agent:
 * the snapshot is taken without, and says so). */
static int snapshot_freeze(StorageOp *op)
{
	Vm *vm = op->vm;
	HsError e;
	if (!vm->spec.agent) {
		snprintf(op->quiesce_note, sizeof(op->quiesce_note), "the VM has no guest agent");
		return 0;
	}
	if (!agent_vm_available(vm)) {
		snprintf(op->quiesce_note, sizeof(op->quiesce_note),
			 "the guest agent is not connected");
		return 0;
	}
	if (agent_vm_fsfreeze(vm, true, 0, on_agent_step, op, &e) < 0) {
		snprintf(op->quiesce_note, sizeof(op->quiesce_note), "guest agent: %.100s",
			 e.message);
		return 0;
	}
	op->step = SNAP_FROZEN;
	return 1;
}

/* A thaw owed after a freeze: sent, and nobody waits for it (the agent
 * module thaws again until it is confirmed). */
static void snapshot_thaw_now(StorageOp *op)
{
	HsError e;
	if (!op->frozen)
		return;
	op->frozen = false;
	if (agent_vm_fsfreeze(op->vm, false, 0, NULL, NULL, &e) < 0)
		log_warning("vm %s: thaw after snapshot '%s': %s", op->vm->spec.name, op->snap,
			    e.message);
}

static void snapshot_undo(StorageOp *op, VmStorage *vs, const HsError *err)
{
	Vm *vm = op->vm;
	snapshot_thaw_now(op);
	if (op->switched || (op->step >= SNAP_CREATED && err &&
			     (!strcmp(err->kind, "disconnected") || !strcmp(err->kind, "vm-exited") ||
			      !strcmp(err->kind, "cancelled") || !strcmp(err->kind, "timeout")))) {
		/* QEMU may be writing to the new layers (or died mid-way
		 * having switched or not; either way the new layers stack
		 * consistently on the old): keep them, without the memory. */
		op->memory = false;
		snapshot_commit(op, vs);
		clear_intent(vm, vs);
		if (op->step >= SNAP_STOPPED && op->was_running && vm_is_live(vm))
			qmp_client_execute(vm->qmp, "cont", NULL, op->h->qmp_timeout, NULL, NULL);
		/* The snapshot itself failed; its frozen layer stays as part
		 * of the chain. */
		vm_disks_remove_snapshot(&vs->disks, op->snap);
		save_disks(vm, vs);
	} else {
		if (op->stopped && op->was_running && vm_is_live(vm))
			qmp_client_execute(vm->qmp, "cont", NULL, op->h->qmp_timeout, NULL, NULL);
		if (vm_is_live(vm))
			for (size_t i = 0; i < vs->disks.n_disks; i++)
				if (op->new_ids[i])
					qmp_drop_layer(vm, i, op->new_ids[i], false);
		drop_new_layers(op, vs);
	}
	if (op->state_fd >= 0) {
		char name[128];
		snprintf(name, sizeof(name), SNAPSHOTS_DIR "/%s.state", op->snap);
		if (vm_is_live(vm))
			qmp_client_execute(vm->qmp, "migrate_cancel", NULL, op->h->qmp_timeout, NULL,
					   NULL);
		unlinkat(vm->state_dirfd, name, 0);
	}
	firmware_snapshot_drop(vm, op->snap);
	fail(op, err);
}

static void step_snapshot(StorageOp *op, VmStorage *vs, const HsError *err)
{
	Vm *vm = op->vm;
	HsError e;
	int r;
	if (err) {
		snapshot_undo(op, vs, err);
		return;
	}
	switch (op->step) {
	case SNAP_INTENT:
		if (begin_new_layers(op, vs, &e) < 0) {
			fail(op, &e);
			return;
		}
		op->step = SNAP_CREATE;
		goto create;
	case SNAP_CREATE:
		op->disk++;
	create:
		if ((r = create_next_layer(op, vs, NULL, &e)) != 0) {
			if (r < 0)
				snapshot_undo(op, vs, &e);
			return;
		}
		if (set_intent(op, vs, "created", &e) < 0) {
			snapshot_undo(op, vs, &e);
			return;
		}
		op->step = SNAP_CREATED;
		if (!op->live)
			break; /* commit */
		r = live_add_overlays(op, vs, &e);
		if (r < 0) {
			snapshot_undo(op, vs, &e);
			return;
		}
		if (op->memory) {
			/* Disk and memory must be of one instant: stop the
			 * CPUs, switch the disks, save the RAM, go on. */
			op->was_running = vm->status.state == VM_STATE_RUNNING;
			op->step = SNAP_STOPPED; /* at its reply */
			qmp_client_execute(vm->qmp, "stop", NULL, op->h->qmp_timeout, on_qmp_step,
					   op);
			/* The RAM is saved with the disks: consistent as it
			 * is (a freeze would be saved frozen too). */
			snprintf(op->quiesce_note, sizeof(op->quiesce_note),
				 "a memory snapshot: the guest's RAM is saved with its disks");
			return;
		}
		/* Disk only: the guest's file systems frozen by its agent
		 * while the disks switch, when it has one that answers. */
		if (snapshot_freeze(op) > 0)
			return;
		_fallthrough_;
	case SNAP_FROZEN:
	case SNAP_STOPPED:
		op->stopped = op->memory;
		qmp_client_execute(vm->qmp, "transaction",
				   json_pack("{s:o}", "actions", snapshot_actions(op, vs)),
				   op->h->qmp_timeout, on_qmp_step, op);
		op->step = SNAP_SWITCHED; /* at its reply */
		return;
	case SNAP_SWITCHED:
		op->switched = true;
		if (op->frozen) {
			HsError te;
			op->frozen = false;
			op->step = SNAP_THAWED; /* at its answer */
			if (agent_vm_fsfreeze(vm, false, 0, on_agent_step, op, &te) == 0)
				return;
			log_warning("vm %s: thaw after snapshot '%s': %s", vm->spec.name, op->snap,
				    te.message);
		}
		if (!op->memory)
			break;
		{
			char name[128];
			snprintf(name, sizeof(name), SNAPSHOTS_DIR "/%s.state", op->snap);
			mkdirat(vm->state_dirfd, SNAPSHOTS_DIR, 0700);
			op->state_fd = openat(vm->state_dirfd, name,
					      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (op->state_fd < 0) {
				hs_error_set(&e, -errno, "internal", "cannot create %s: %m", name);
				snapshot_undo(op, vs, &e);
				return;
			}
			int fd = dup(op->state_fd);
			qmp_client_execute_fd(vm->qmp, "getfd", json_pack("{s:s}", "fdname", "hs-save"),
					      fd, op->h->qmp_timeout, NULL, NULL);
			qmp_client_execute(vm->qmp, "migrate", json_pack("{s:s}", "uri", "fd:hs-save"),
					   op->h->qmp_timeout, on_qmp_step, op);
			op->step = SNAP_SAVED;
			op->deadline = hs_now() + MIGRATE_TIMEOUT;
		}
		return;
	case SNAP_SAVED:
		/* migrate accepted: poll until it completes */
		op->step = SNAP_CONT;
		op_poll(op, "query-migrate", on_query_migrate);
		return;
	case SNAP_CONT:
		if (fsync(op->state_fd) < 0) {
			hs_error_set(&e, -errno, "internal", "cannot save the memory state: %m");
			snapshot_undo(op, vs, &e);
			return;
		}
		/* The CPUs are still stopped: firmware state of the same
		 * instant as the disks and the RAM. */
		if (firmware_snapshot_save(vm, op->snap, &e) < 0) {
			snapshot_undo(op, vs, &e);
			return;
		}
		op->fw_saved = true;
		if (op->was_running) {
			/* Answer once the guest runs again. */
			op->step = SNAP_RESUMED;
			qmp_client_execute(vm->qmp, "cont", NULL, op->h->qmp_timeout, on_qmp_step,
					   op);
			return;
		}
		break;
	case SNAP_RESUMED:
		op->stopped = false;
		break;
	case SNAP_THAWED:
		break;
	default:
		break;
	}
	if (!op->fw_saved && firmware_snapshot_save(vm, op->snap, &e) < 0) {
		snapshot_undo(op, vs, &e);
		return;
	}
	op->fw_saved = true;
	/* Commit: the snapshot exists from this write on. */
	snapshot_commit(op, vs);
	if (commit_or_fail(op, vs, "snapshot") < 0)
		return;
	op->result = json_pack("{s:s, s:b, s:b, s:f, s:b}", "name", op->snap, "memory", op->memory,
			       "live", op->live, "seconds", hs_now() - op->t0, "quiesced",
			       op->quiesced);
	if (op->quiesce_note[0])
		json_object_set_new(op->result, "quiesce_note", json_string(op->quiesce_note));
	op_done(op, NULL);
}

/* OP_ROLLBACK: 0 stop QEMU if running, 1 intent + one new layer per disk
 * over the snapshot's, 2 commit (the old tops become garbage), 3 start
 * again (from the saved memory for a --memory snapshot). */

static void on_rollback_vm(Vm *vm, const HsError *err, void *ud)
{
	VmStorage *vs = vs_find(vm);
	if (!vs || !vs->op || vs->op != ud)
		return;
	op_step(vs->op, err);
}

static void step_rollback(StorageOp *op, VmStorage *vs, const HsError *err)
{
	Vm *vm = op->vm;
	HsError e;
	int r;
	VmSnapshot *sn = vm_disks_find_snapshot(&vs->disks, op->snap);
	if (err && op->step == RB_STOP && err->code == -ENOTCONN)
		err = NULL; /* it was already down */
	if (err) {
		if (op->step == RB_CREATE)
			drop_new_layers(op, vs);
		fail(op, err);
		return;
	}
	if (!sn) {
		hs_error_set(&e, -ENOENT, "not-found", "snapshot '%s' is gone", op->snap);
		fail(op, &e);
		return;
	}
	switch (op->step) {
	case RB_STOP:
		op->step = RB_INTENT;
		if (vm_state_is_active(vm->status.state)) {
			op->restart = true;
			/* The guest's state is thrown away: no need to be gentle. */
			if (vm_stop(vm, STOP_KILL, 0, on_rollback_vm, op, &e) < 0) {
				fail(op, &e);
			}
			return;
		}
		_fallthrough_;
	case RB_INTENT:
		if (sn->memory)
			op->restart = true;
		if (begin_new_layers(op, vs, &e) < 0) {
			fail(op, &e);
			return;
		}
		op->step = RB_CREATE;
		goto create;
	case RB_CREATE:
		op->disk++;
	create:
		if ((r = create_next_layer(op, vs, sn, &e)) != 0) {
			if (r < 0)
				step_rollback(op, vs, &e);
			return;
		}
		_fallthrough_;
	case RB_COMMIT:
		/* The snapshot's UEFI variables and TPM state, ready to be
		 * put in place once the rollback is recorded (the next start
		 * finishes that if hsd dies in between). */
		if (firmware_rollback_prepare(vm, op->snap, &e) < 0) {
			drop_new_layers(op, vs);
			fail(op, &e);
			return;
		}
		push_new_layers(vs, op->new_ids, sn);
		if (commit_or_fail(op, vs, "rollback") < 0) {
			firmware_rollback_finish(vm, false);
			return;
		}
		firmware_rollback_finish(vm, true);
		collect_garbage(vm, vs);
		op->result = json_pack("{s:s, s:b, s:b}", "name", op->snap, "memory",
				       sn->memory != NULL, "restarted", op->restart);
		json_object_set_new(op->result, "disk_seconds", json_real(hs_now() - op->t0));
		if (!op->restart)
			break;
		if (sn->memory) {
			/* The devices must be the same as when the RAM was
			 * saved: the spec goes back to the snapshot's. */
			json_t *spj = json_deep_copy(sn->spec);
			bool was_running = json_is_true(json_object_get(spj, "hs_was_running"));
			json_object_del(spj, "hs_was_running");
			VmSpec spec;
			VmSpecDefaults defs = {.accel = vm->spec.accel, .check_files = false};
			HsError pe;
			if (vm_spec_from_json(spj, &defs, &spec, &pe) == 0) {
				vm_spec_clear(&vm->spec);
				vm->spec = spec;
				store_save_spec(&vm->hsd->store, &vm->spec);
			}
			json_decref(spj);
			int fd = openat(vm->state_dirfd, sn->memory, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				hs_error_set(&e, -errno, "storage-failed",
					     "cannot open the saved memory of '%s': %m", op->snap);
				fail(op, &e);
				return;
			}
			if (vs->incoming_fd >= 0)
				close(vs->incoming_fd);
			vs->incoming_fd = fd;
			op->was_running = was_running;
		} else {
			op->was_running = true;
		}
		op->step = RB_STARTED;
		if (vm_start(vm, !op->was_running, on_rollback_vm, op, &e) < 0) {
			if (vs->incoming_fd >= 0)
				close(vs->incoming_fd);
			vs->incoming_fd = -1;
			fail(op, &e);
		}
		return;
	case RB_STARTED:
		json_object_set_new(op->result, "seconds", json_real(hs_now() - op->t0));
		break;
	default:
		break;
	}
	op_done(op, NULL);
}

/* OP_DELETE: for every disk, the snapshot's layer L is merged into each
 * layer standing on it (live block-stream for the one in QEMU's chain,
 * qemu-img rebase for the rest), then L is dropped. */
enum { DEL_INTENT, DEL_MERGE, DEL_MERGED, DEL_FINISH };
static void delete_next(StorageOp *op, VmStorage *vs);
static void step_delete(StorageOp *op, VmStorage *vs, const HsError *err);


static void on_reopened(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	StorageOp *op = ud;
	VmStorage *vs = vs_find(op->vm);
	if (!vs || going_away(op->h, err))
		return;
	if (err) {
		step_delete(op, vs, err);
		return;
	}
	op->step = DEL_MERGE;
	delete_next(op, vs);
}

static void on_query_jobs(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	StorageOp *op = ud;
	HsError e;
	if (err) {
		if (!going_away(op->h, err))
			op_step(op, err);
		return;
	}
	json_t *jobs = json_object_get(reply, "return"), *job = NULL, *j;
	size_t i;
	json_array_foreach(jobs, i, j)
		if (!strcmp(json_string_value(json_object_get(j, "id")) ?: "", op->job))
			job = j;
	const char *st = json_string_value(json_object_get(job, "status"));
	if (!job || (st && !strcmp(st, "concluded"))) {
		const char *why = json_string_value(json_object_get(job, "error"));
		if (job)
			qmp_client_execute(op->vm->qmp, "job-dismiss",
					   json_pack("{s:s}", "id", op->job), op->h->qmp_timeout,
					   NULL, NULL);
		if (why) {
			hs_error_set(&e, -EIO, "storage-failed", "merging layers failed: %s", why);
			op_step(op, &e);
		} else {
			op_step(op, NULL);
		}
		return;
	}
	op_poll_later(op, "merging layers");
}

/* Is layer `id` of disk `disk` in QEMU's chain (the top or below it)? */
static bool in_running_chain(Vm *vm, VmStorage *vs, size_t disk, unsigned id)
{
	unsigned ids[LAYERS_MAX_DEPTH * 4];
	int n = disk_chain(&vs->disks.disks[disk], vs->disks.disks[disk].top, ids,
			   ARRAY_SIZE(ids));
	for (int k = 0; k < n; k++)
		if (ids[k] == id)
			return true;
	return false;
}


static void step_delete(StorageOp *op, VmStorage *vs, const HsError *err)
{
	Vm *vm = op->vm;
	HsError e;
	if (err) {
		/* Nothing is lost: a failed merge leaves its layer standing on
		 * L (QEMU and qemu-img switch the backing file last); merges
		 * done are recorded. The snapshot stays; deleting it again
		 * carries on. */
		clear_intent(vm, vs);
		fail(op, err);
		return;
	}
	VmSnapshot *sn = vm_disks_find_snapshot(&vs->disks, op->snap);
	if (!sn) {
		clear_intent(vm, vs);
		op_done(op, NULL);
		return;
	}
	switch (op->step) {
	case DEL_INTENT:
		if (set_intent(op, vs, "merging", &e) < 0) {
			fail(op, &e);
			return;
		}
		op->disk = 0;
		op->step = DEL_MERGE;
		delete_next(op, vs);
		return;
	case DEL_MERGED: {
		/* Child op->children[op->child] now stands on L's parent. */
		ManagedDisk *m = &vs->disks.disks[op->disk];
		const DiskLayer *l = disk_layer(m, op->merged);
		for (size_t k = 0; l && k < m->n_layers; k++)
			if (m->layers[k].id == op->children[op->child])
				m->layers[k].parent = l->parent;
		save_disks(vm, vs);
		if (op->live && in_running_chain(vm, vs, op->disk, op->children[op->child]))
			/* The merged layer's nodes are now unused in QEMU. */
			qmp_drop_layer(vm, op->disk, op->merged, true);
		op->child++;
		op->step = DEL_MERGE;
		delete_next(op, vs);
		return;
	}
	case DEL_FINISH:
	default:
		break;
	}
	/* Every disk done: the snapshot and its layers go. */
	char mem[160] = "";
	if (sn->memory)
		snprintf(mem, sizeof(mem), "%s", sn->memory);
	vm_disks_remove_snapshot(&vs->disks, op->snap);
	if (commit_or_fail(op, vs, "deletion") < 0)
		return;
	if (mem[0])
		unlinkat(vm->state_dirfd, mem, 0);
	firmware_snapshot_drop(vm, op->snap);
	collect_garbage(vm, vs);
	op->result = json_pack("{s:s, s:f}", "deleted", op->snap, "seconds", hs_now() - op->t0);
	op_done(op, NULL);
}

/* Starts the next merge, or moves to the next disk, or finishes. */
static void delete_next(StorageOp *op, VmStorage *vs)
{
	Vm *vm = op->vm;
	HsError e;
	VmSnapshot *sn = vm_disks_find_snapshot(&vs->disks, op->snap);
	for (;;) {
		if (!next_managed(op, vs)) {
			op->step = DEL_FINISH;
			step_delete(op, vs, NULL);
			return;
		}
		ManagedDisk *m = &vs->disks.disks[op->disk];
		unsigned L = sn->layers[op->disk];
		if (op->merged != L || op->child == 0) {
			op->merged = L;
			op->n_children = disk_children(m, L, op->children, ARRAY_SIZE(op->children));
			/* Merge into the layers not in QEMU's chain first. */
			for (size_t a = 0; a < op->n_children; a++)
				if (op->live && in_running_chain(vm, vs, op->disk, op->children[a]) &&
				    a + 1 < op->n_children) {
					unsigned t = op->children[a];
					op->children[a] = op->children[op->n_children - 1];
					op->children[op->n_children - 1] = t;
				}
		}
		if (op->child >= op->n_children) {
			op->disk++;
			op->child = 0;
			op->merged = 0;
			continue;
		}
		break;
	}
	ManagedDisk *m = &vs->disks.disks[op->disk];
	const DiskLayer *l = disk_layer(m, op->merged);
	unsigned child = op->children[op->child];
	char backing[128];
	layer_backing_name(m, l->parent, backing, sizeof(backing));
	op->step = DEL_MERGED;
	if (op->live && in_running_chain(vm, vs, op->disk, child)) {
		if (op->pending_args) {
			/* Reopened read-write: stream now. */
			json_t *args = op->pending_args;
			op->pending_args = NULL;
			op->deadline = hs_now() + JOB_TIMEOUT;
			qmp_client_execute(vm->qmp, "block-stream", args, op->h->qmp_timeout,
					   on_qmp_step, op);
			op->step = DEL_MERGE + 100;
			return;
		}
		char node[32], base[32];
		qemu_layer_node(op->disk, child, node, sizeof(node));
		snprintf(op->job, sizeof(op->job), "hs-stream-%u", child);
		json_t *args = json_pack("{s:s, s:s, s:b}", "job-id", op->job, "device", node,
					 "auto-dismiss", 0);
		if (l->parent || m->template) {
			qemu_layer_node(op->disk, l->parent, base, sizeof(base));
			json_object_set_new(args, "base-node", json_string(base));
			json_object_set_new(args, "backing-file", json_string(backing));
		}
		if (child != m->top) {
			/* An inner layer is read-only in QEMU: give it a
			 * writable descriptor and reopen it read-write for the
			 * merge (its content, the snapshot's view, stays). */
			if (qmp_add_layer_fd(vm, child, true, &e) < 0) {
				json_decref(args);
				step_delete(op, vs, &e);
				return;
			}
			char file[32], below[32], path[48];
			const DiskLayer *cl = disk_layer(m, child);
			qemu_layer_file_node(op->disk, child, file, sizeof(file));
			qemu_layer_node(op->disk, cl->parent, below, sizeof(below));
			snprintf(path, sizeof(path), "/dev/fdset/%ld", QEMU_FDSET_LAYER(child));
			json_t *opts = json_pack(
				"[{s:s, s:s, s:s, s:b, s:s, s:s, s:s}, {s:s, s:s, s:s, s:s, s:b, s:s}]",
				"driver", "file", "node-name", file, "filename", path, "read-only", 0,
				"discard", "unmap", "locking", "off", "cache", "direct", "driver",
				"qcow2", "node-name", node, "file", file, "backing", below, "read-only",
				0, "discard", "unmap");
			/* cache: the same as at launch (cache.direct=off). */
			json_object_set_new(json_array_get(opts, 0), "cache",
					    json_pack("{s:b}", "direct", 0));
			qmp_client_execute(vm->qmp, "blockdev-reopen", json_pack("{s:o}", "options", opts),
					   op->h->qmp_timeout, on_reopened, op);
			op->pending_args = args;
			op->step = DEL_MERGE + 50; /* at its reply: stream */
			return;
		}
		op->deadline = hs_now() + JOB_TIMEOUT;
		qmp_client_execute(vm->qmp, "block-stream", args, op->h->qmp_timeout,
				   on_qmp_step, op);
		op->step = DEL_MERGE + 100; /* at its reply: poll the job */
		return;
	}
	_cleanup_free_ char *path = layer_path(vm, child);
	const char *fmt = l->parent ? "qcow2" : vm_disk_format_to_string(m->base_format);
	char *argv[] = {(char *)QEMU_IMG, (char *)"rebase", (char *)"-q", (char *)"-f",
			(char *)"qcow2", (char *)"-F", (char *)fmt, (char *)"-b", backing, path,
			NULL};
	if (!backing[0]) {
		/* No base below: the layer becomes standalone. */
		argv[5] = (char *)"-b";
		argv[6] = backing;
		argv[7] = path;
		argv[8] = NULL;
	}
	if (tool_run(op->h, argv, NULL, 0, TOOL_TIMEOUT_COPY, on_tool_step, op, &e) < 0)
		step_delete(op, vs, &e);
}

static void op_step(StorageOp *op, const HsError *err)
{
	VmStorage *vs = vs_find(op->vm);
	if (!vs)
		return;
	switch (op->kind) {
	case OP_CREATE:
		step_create(op, vs, err);
		break;
	case OP_SNAPSHOT:
		step_snapshot(op, vs, err);
		break;
	case OP_ROLLBACK:
		step_rollback(op, vs, err);
		break;
	case OP_DELETE:
		/* block-stream accepted: wait for the job. Refused because
		 * the job is there already (hsd was killed while QEMU went on
		 * merging; this is the merge carried on at restart): wait for
		 * that one. */
		if (op->step == DEL_MERGE + 100 &&
		    (!err || (!strcmp(err->kind, "qmp-error") && strstr(err->message, op->job)))) {
			op->step = DEL_MERGED;
			op_poll(op, "query-jobs", on_query_jobs);
			return;
		}
		step_delete(op, vs, err);
		break;
	}
}

/* ---- entry points ---- */

static int op_precheck(Vm *vm, VmStorage *vs, HsError *err)
{
	if (!vs || !vm_disks_any_managed(&vs->disks))
		return hs_error_set(err, -EINVAL, "no-managed-disk",
				    "VM '%s' has no hsd-managed disk (snapshots cover disks made "
				    "with 'template' or 'size')",
				    vm->spec.name);
	if (vm->pacing || vm->status.state == VM_STATE_STARTING ||
	    vm->status.state == VM_STATE_STOPPING)
		return hs_error_set(err, -EBUSY, "conflict", "VM '%s' is %s; try again", vm->spec.name,
				    vm->pacing ? "waiting for memory"
					       : vm_state_to_string(vm->status.state));
	/* Not while a warm capture reads a frozen layer: a deleted snapshot
	 * merges layers. Starts and stops are fine (they write above it). */
	if (vs->flattening)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s': a warm template is being made from its disk; try "
				    "again when it is ready",
				    vm->spec.name);
	return storage_vm_check_idle(vm, err);
}

int storage_snapshot_create(Vm *vm, const char *name, bool memory, StorageDoneCb cb, void *ud,
			    HsError *err)
{
	VmStorage *vs = vs_find(vm);
	int r = op_precheck(vm, vs, err);
	if (r < 0)
		return r;
	if (!snapshot_name_is_valid(name))
		return hs_error_set(err, -EINVAL, "invalid-name",
				    "'%s' is not a valid snapshot name (1-63 of a-z A-Z 0-9 . _ -, "
				    "not starting with . or -)",
				    name);
	if (vm_disks_find_snapshot(&vs->disks, name))
		return hs_error_set(err, -EEXIST, "conflict", "VM '%s' already has a snapshot '%s'",
				    vm->spec.name, name);
	if (vs->disks.n_snaps >= SNAPSHOTS_MAX)
		return hs_error_set(err, -EOVERFLOW, "limit", "VM '%s' has %d snapshots, the most it may",
				    vm->spec.name, SNAPSHOTS_MAX);
	for (size_t i = 0; i < vm->spec.n_disks; i++)
		if (!vm->spec.disks[i].managed && !vm->spec.disks[i].readonly)
			return hs_error_set(err, -EINVAL, "unmanaged-disk",
					    "disks[%zu] is a writable file of yours (%s): a snapshot "
					    "could not bring it back; make it readonly or use a "
					    "managed disk",
					    i, vm->spec.disks[i].path);
	for (size_t i = 0; i < vs->disks.n_disks; i++) {
		unsigned ids[LAYERS_MAX_DEPTH];
		const ManagedDisk *m = &vs->disks.disks[i];
		if (m->managed && disk_chain(m, m->top, ids, LAYERS_MAX_DEPTH - 1) < 0)
			return hs_error_set(err, -EOVERFLOW, "limit",
					    "disks[%zu] has %d layers, the most a VM may start with; "
					    "delete a snapshot first",
					    i, LAYERS_MAX_DEPTH);
	}
	bool live = vm_state_is_active(vm->status.state);
	if (live && !vm_is_live(vm))
		return hs_error_set(err, -EBUSY, "conflict", "VM '%s' is not answering QMP yet",
				    vm->spec.name);
	if (memory && !live)
		return hs_error_set(err, -ENOTCONN, "not-running",
				    "VM '%s' is not running: a memory snapshot needs a running VM",
				    vm->spec.name);
	StorageOp *op = op_new(vm, vs, OP_SNAPSHOT, cb, ud);
	if (!op)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	snprintf(op->snap, sizeof(op->snap), "%s", name);
	op->memory = memory;
	op->live = live;
	return start_op(op);
}

int storage_snapshot_rollback(Vm *vm, const char *name, StorageDoneCb cb, void *ud,
			      HsError *err)
{
	VmStorage *vs = vs_find(vm);
	int r = op_precheck(vm, vs, err);
	if (r < 0)
		return r;
	if (!vm_disks_find_snapshot(&vs->disks, name))
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' has no snapshot '%s'",
				    vm->spec.name, name);
	StorageOp *op = op_new(vm, vs, OP_ROLLBACK, cb, ud);
	if (!op)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	snprintf(op->snap, sizeof(op->snap), "%s", name);
	return start_op(op);
}

int storage_snapshot_delete(Vm *vm, const char *name, StorageDoneCb cb, void *ud,
			    HsError *err)
{
	VmStorage *vs = vs_find(vm);
	int r = op_precheck(vm, vs, err);
	if (r < 0)
		return r;
	if (!vm_disks_find_snapshot(&vs->disks, name))
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' has no snapshot '%s'",
				    vm->spec.name, name);
	bool live = vm_state_is_active(vm->status.state);
	if (live && !vm_is_live(vm))
		return hs_error_set(err, -EBUSY, "conflict", "VM '%s' is not answering QMP yet",
				    vm->spec.name);
	StorageOp *op = op_new(vm, vs, OP_DELETE, cb, ud);
	if (!op)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	snprintf(op->snap, sizeof(op->snap), "%s", name);
	op->live = live;
	return start_op(op);
}

/* ---- load and recovery ---- */

static void on_recovered(Hsd *h, const HsError *err, json_t *result, void *ud)
{
	Vm *vm = vm_find(h, (const char *)ud);
	if (err)
		log_error("vm %s: finishing an interrupted storage operation failed: %s",
			  vm ? vm->spec.name : (const char *)ud, err->message);
	free(ud);
}

/* Stops a directory walk at the first name not starting with a dot. */
static int is_visible(int dfd, const char *name, void *ud)
{
	return name[0] != '.';
}

int storage_vm_load(Vm *vm)
{
	VmStorage *vs = vs_get(vm);
	if (!vs)
		return -ENOMEM;
	bool any = false;
	for (size_t i = 0; i < vm->spec.n_disks; i++)
		any |= vm->spec.disks[i].managed;
	if (!any)
		return 0;
	_cleanup_free_ char *data = NULL;
	HsError err;
	int r = hs_read_file(vm->state_dirfd, DISKS_JSON, 16 << 20, &data, NULL);
	json_auto_t *j = r == 0 ? json_loads(data, 0, NULL) : NULL;
	if (!j || vm_disks_from_json(j, &vs->disks, &err) < 0) {
		bool have_layers =
			hs_dir_foreach(vm->state_dirfd, LAYERS_DIR, is_visible, NULL) > 0;
		if (r == -ENOENT && !have_layers) {
			/* Defined, but hsd stopped before recording its disks:
			 * make them now. */
			log_info("vm %s: making its disks (interrupted at create)", vm->spec.name);
			return storage_vm_create(vm, on_recovered, strdup(vm->spec.name), &err);
		}
		/* Never guess over existing layers: they are the guest's data. */
		log_error("vm %s: %s is %s; its disks are left as they are and the VM cannot "
			  "start until it is restored",
			  vm->spec.name, DISKS_JSON, r == -ENOENT ? "missing" : "unreadable");
		vs->disks.n_disks = vm->spec.n_disks;
		vs->disks.intent = json_pack("{s:s}", "op", "unreadable disks.json");
		return -EINVAL;
	}
	json_t *in = vs->disks.intent;
	/* A rollback's firmware copies: put in place once it is recorded,
	 * dropped while it is not. */
	const char *op_name = in ? json_string_value(json_object_get(in, "op")) : NULL;
	firmware_rollback_finish(vm, !op_name || strcmp(op_name, "rollback"));
	if (!in) {
		sweep_unreferenced(vm);
		return 0;
	}
	const char *opn = json_string_value(json_object_get(in, "op")) ?: "";
	const char *phase = json_string_value(json_object_get(in, "phase")) ?: "";
	const char *snap = json_string_value(json_object_get(in, "snapshot")) ?: "";
	json_t *ids = json_object_get(in, "new");
	log_warning("vm %s: an interrupted '%s' (%s) is being %s", vm->spec.name, opn, phase,
		    !strcmp(opn, "delete-snapshot") ? "finished" : "sorted out");
	StorageOp tmp = {.vm = vm};
	for (size_t i = 0; i < vs->disks.n_disks && i < json_array_size(ids); i++)
		tmp.new_ids[i] = (unsigned)json_integer_value(json_array_get(ids, i));
	VmSnapshot *sn = snap[0] ? vm_disks_find_snapshot(&vs->disks, snap) : NULL;
	bool qemu_alive = vm_state_is_active(vm->status.state);

	if (!strcmp(opn, "create")) {
		/* Layers are cheap: make them again. */
		unlink_new(vm, &tmp, vs->disks.n_disks);
		vm_disks_clear(&vs->disks);
		return storage_vm_create(vm, on_recovered, strdup(vm->spec.name), &err);
	} else if (!strcmp(opn, "snapshot") && !strcmp(phase, "created")) {
		/* Every new layer is whole. Whether or not QEMU switched to
		 * them, they stack on the old tops with the same content:
		 * keep them (a switched QEMU may have written there). A QEMU
		 * that lives on is asked which layer it writes to once its QMP
		 * is up (storage_vm_adopted), and the model follows it. The
		 * snapshot itself is not recorded: it was never confirmed. */
		push_new_layers(vs, tmp.new_ids, NULL);
		vs->verify_chain = qemu_alive;
	} else if (!strcmp(opn, "delete-snapshot") && sn) {
		/* Merges are safe to redo: carry on once QEMU (if any) is
		 * reachable. */
		StorageOp *op = op_new(vm, vs, OP_DELETE, on_recovered, strdup(vm->spec.name));
		if (!op)
			return -ENOMEM;
		snprintf(op->snap, sizeof(op->snap), "%s", snap);
		op->live = qemu_alive;
		op->step = DEL_INTENT;
		vs->op = op;
		/* Started from storage_vm_resume() once QMP is up (or now). */
		if (!qemu_alive)
			start_op(op);
		return 0;
	} else {
		/* Not yet begun in earnest: undo. */
		unlink_new(vm, &tmp, vs->disks.n_disks);
	}
	clear_intent(vm, vs);
	collect_garbage(vm, vs);
	sweep_unreferenced(vm);
	return 0;
}

/* A re-adopted QEMU answers QMP: make the model agree with the layers it
 * really writes to, and carry on with an interrupted merge. */
static void on_adopt_query_block(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	VmStorage *vs = vs_find(vm);
	if (err || !vs)
		return;
	bool changed = false;
	size_t k;
	json_t *dev;
	json_array_foreach(json_object_get(reply, "return"), k, dev) {
		const char *qdev = json_string_value(json_object_get(dev, "qdev")) ?: "";
		const char *node = json_string_value(
			json_object_get(json_object_get(dev, "inserted"), "node-name"));
		for (size_t i = 0; node && i < vs->disks.n_disks; i++) {
			char want[32], parent_node[32];
			snprintf(want, sizeof(want), "/disk%zu/", i);
			ManagedDisk *m = &vs->disks.disks[i];
			if (!m->managed || !strstr(qdev, want))
				continue;
			const DiskLayer *top = disk_layer(m, m->top);
			if (!top)
				continue;
			qemu_layer_node(i, top->parent, parent_node, sizeof(parent_node));
			unsigned kids[4];
			if (top->parent && !strcmp(node, parent_node) &&
			    !disk_children(m, m->top, kids, 4) &&
			    !vm_disks_layer_is_snapshot(&vs->disks, i, m->top)) {
				log_info("vm %s: QEMU never switched disks[%zu] to layer %u; "
					 "dropping it",
					 vm->spec.name, i, m->top);
				m->top = top->parent;
				changed = true;
			}
		}
	}
	if (changed) {
		save_disks(vm, vs);
		collect_garbage(vm, vs);
	}
}

/* Before an interrupted merge is carried on in a re-adopted QEMU: the
 * stream jobs the killed hsd started may still run there (or be concluded,
 * waiting to be dismissed). Wait for them, dismiss them, then carry on. */
static void on_recover_jobs(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	StorageOp *op = ud;
	if (err) {
		if (!going_away(op->h, err))
			op_step(op, err);
		return;
	}
	bool running = false;
	size_t i;
	json_t *j;
	json_array_foreach(json_object_get(reply, "return"), i, j) {
		const char *id = json_string_value(json_object_get(j, "id")) ?: "";
		const char *st = json_string_value(json_object_get(j, "status")) ?: "";
		if (!hs_str_has_prefix(id, "hs-stream-"))
			continue;
		if (!strcmp(st, "concluded"))
			qmp_client_execute(op->vm->qmp, "job-dismiss", json_pack("{s:s}", "id", id),
					   op->h->qmp_timeout, NULL, NULL);
		else
			running = true;
	}
	if (running)
		op_poll_later(op, "the interrupted merge");
	else
		start_op(op);
}

void storage_vm_adopted(Vm *vm)
{
	VmStorage *vs = vs_find(vm);
	if (!vs || !vm->qmp)
		return;
	if (vs->verify_chain) {
		vs->verify_chain = false;
		qmp_client_execute(vm->qmp, "query-block", NULL, vm->hsd->qmp_timeout,
				   on_adopt_query_block, vm);
	}
	if (vs->op && vs->op->kind == OP_DELETE && vs->op->step == DEL_INTENT) {
		vs->op->deadline = hs_now() + JOB_TIMEOUT;
		op_poll(vs->op, "query-jobs", on_recover_jobs);
	}
}

/* ---- memory snapshots: loading the saved state into a new QEMU ---- */

static void incoming_done(Vm *vm, VmStorage *vs, const HsError *err)
{
	ev_timer_stop(vm->hsd->loop, &vs->incoming_poll);
	vs->incoming_ignore_shared = false;
	if (vs->incoming_fd >= 0)
		close(vs->incoming_fd);
	vs->incoming_fd = -1;
	StorageIncomingCb cb = vs->incoming_done;
	vs->incoming_done = NULL;
	if (cb)
		cb(vm, err);
}

static void on_incoming_poll(struct ev_loop *loop, ev_timer *w, int revents);

static void incoming_query(Vm *vm);

static void on_incoming_status(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	VmStorage *vs = vs_find(vm);
	if (!vs || going_away(vm->hsd, err))
		return;
	vs->incoming_querying = false;
	if (!vs->incoming_done)
		return; /* the MIGRATION event said it first */
	HsError e;
	if (err) {
		incoming_done(vm, vs, err);
		return;
	}
	int r = migrate_status(reply, "loading the saved memory", &e);
	if (r > 0) {
		incoming_done(vm, vs, NULL);
	} else if (r < 0) {
		incoming_done(vm, vs, &e);
	} else if (hs_now() > vs->incoming_deadline) {
		hs_error_set(&e, -ETIMEDOUT, "timeout", "loading the saved memory timed out");
		incoming_done(vm, vs, &e);
	} else if (vs->incoming_evented) {
		incoming_query(vm); /* the event overtook this answer */
	} else {
		/* The MIGRATION event says when it is loaded; the poll is
		 * only a safety net. */
		ev_timer_stop(vm->hsd->loop, &vs->incoming_poll);
		ev_timer_init(&vs->incoming_poll, on_incoming_poll, INCOMING_POLL, 0.);
		vs->incoming_poll.data = vm;
		ev_timer_start(vm->hsd->loop, &vs->incoming_poll);
	}
}

static void incoming_query(Vm *vm)
{
	VmStorage *vs = vs_find(vm);
	if (!vs)
		return;
	ev_timer_stop(vm->hsd->loop, &vs->incoming_poll);
	vs->incoming_querying = true;
	vs->incoming_evented = false;
	if (qmp_client_execute(vm->qmp, "query-migrate", NULL, vm->hsd->qmp_timeout,
			       on_incoming_status, vm) < 0) {
		HsError e;
		vs->incoming_querying = false;
		hs_error_set(&e, -ECONNRESET, "vm-exited", "the VM exited");
		incoming_done(vm, vs, &e);
	}
}

static void on_incoming_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	incoming_query(w->data);
}

void storage_vm_event(Vm *vm, const char *name, json_t *data)
{
	VmStorage *vs = vs_find(vm);
	if (!vs || !vs->incoming_done || strcmp(name, "MIGRATION"))
		return;
	const char *st = json_string_value(json_object_get(data, "status")) ?: "";
	if (!strcmp(st, "completed")) {
		/* Loaded: the event is QEMU's word for it, no query needed
		 * (failures are asked about: query-migrate has the reason). */
		incoming_done(vm, vs, NULL);
		return;
	}
	if (strcmp(st, "failed") && strcmp(st, "cancelled"))
		return;
	if (vs->incoming_querying)
		vs->incoming_evented = true;
	else if (ev_is_active(&vs->incoming_poll))
		incoming_query(vm); /* not before migrate-incoming's answer */
}

static void on_migrate_incoming(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	VmStorage *vs = vs_find(vm);
	if (!vs || going_away(vm->hsd, err))
		return;
	if (err) {
		incoming_done(vm, vs, err);
		return;
	}
	incoming_query(vm);
}

int storage_vm_incoming(Vm *vm, StorageIncomingCb done)
{
	VmStorage *vs = vs_find(vm);
	if (!vs || vs->incoming_fd < 0)
		return 0; /* nothing to load */
	vs->incoming_done = done;
	vs->incoming_deadline = hs_now() + MIGRATE_TIMEOUT;
	int fd = vs->incoming_fd;
	vs->incoming_fd = -1; /* handed to QEMU */
	vs->incoming_querying = vs->incoming_evented = false;
	qmp_client_execute(vm->qmp, "migrate-set-capabilities",
			   json_pack("{s:[{s:s, s:b}, {s:s, s:b}]}", "capabilities", "capability",
				     "x-ignore-shared", "state", vs->incoming_ignore_shared,
				     "capability", "events", "state", 1),
			   vm->hsd->qmp_timeout, NULL, NULL);
	qmp_client_execute_fd(vm->qmp, "getfd", json_pack("{s:s}", "fdname", "hs-incoming"), fd,
			      vm->hsd->qmp_timeout, NULL, NULL);
	qmp_client_execute(vm->qmp, "migrate-incoming", json_pack("{s:s}", "uri", "fd:hs-incoming"),
			   vm->hsd->qmp_timeout, on_migrate_incoming, vm);
	return 1;
}

int storage_vm_disk_layers(Vm *vm, size_t disk)
{
	VmStorage *vs = vs_find(vm);
	if (!vs || disk >= vs->disks.n_disks || !vs->disks.disks[disk].managed)
		return 0;
	const ManagedDisk *m = &vs->disks.disks[disk];
	unsigned chain[64];
	return disk_chain(m, m->top, chain, ARRAY_SIZE(chain));
}

int storage_vm_set_incoming(Vm *vm, int fd, bool ignore_shared)
{
	VmStorage *vs = vs_get(vm);
	if (!vs) {
		close(fd);
		return -ENOMEM;
	}
	if (vs->incoming_fd >= 0)
		close(vs->incoming_fd);
	vs->incoming_fd = fd;
	vs->incoming_ignore_shared = ignore_shared;
	return 0;
}

bool storage_snapshot_exists(Vm *vm, const char *snap)
{
	VmStorage *vs = vs_find(vm);
	return vs && vm_disks_find_snapshot(&vs->disks, snap);
}

typedef struct Flatten {
	char vm[VM_NAME_MAX + 1];
	ToolDoneCb cb;
	void *ud;
} Flatten;

static void on_flattened(Hsd *h, const ToolResult *res, void *ud)
{
	Flatten *f = ud;
	Vm *vm = vm_find(h, f->vm);
	VmStorage *vs = vs_find(vm);
	if (vs && vs->flattening)
		vs->flattening--;
	ToolDoneCb cb = f->cb;
	void *cud = f->ud;
	free(f);
	cb(h, res, cud);
}

int storage_flatten_snapshot(Vm *vm, const char *snap, const char *dst, size_t *ret_disk,
			     uint64_t *ret_size, ToolDoneCb cb, void *ud, HsError *err)
{
	VmStorage *vs = vs_find(vm);
	VmSnapshot *sn = vs ? vm_disks_find_snapshot(&vs->disks, snap) : NULL;
	if (!sn)
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' has no snapshot '%s'",
				    vm->spec.name, snap);
	size_t disk = VM_MAX_DISKS;
	for (size_t i = 0; i < vs->disks.n_disks; i++)
		if (vs->disks.disks[i].managed && sn->layers[i]) {
			if (disk != VM_MAX_DISKS)
				return hs_error_set(err, -EINVAL, "invalid-argument",
						    "VM '%s' has more than one managed disk",
						    vm->spec.name);
			disk = i;
		}
	if (disk == VM_MAX_DISKS)
		return hs_error_set(err, -EINVAL, "no-managed-disk",
				    "snapshot '%s' of VM '%s' froze no disk", snap, vm->spec.name);
	Flatten *f = calloc(1, sizeof(*f));
	_cleanup_free_ char *src = layer_path(vm, sn->layers[disk]);
	if (!f || !src) {
		free(f);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	snprintf(f->vm, sizeof(f->vm), "%s", vm->spec.name);
	f->cb = cb;
	f->ud = ud;
	/* The frozen layer and what it stands on, flattened: a standalone
	 * image (as template_from_vm makes). */
	char *argv[] = {(char *)QEMU_IMG, (char *)"convert", (char *)"-q", (char *)"-f",
			(char *)"qcow2", (char *)"-O", (char *)"qcow2", src, (char *)dst, NULL};
	int r = tool_run(vm->hsd, argv, NULL, 0, TOOL_TIMEOUT_COPY, on_flattened, f, err);
	if (r < 0) {
		free(f);
		return r;
	}
	vs->flattening++;
	*ret_disk = disk;
	*ret_size = vs->disks.disks[disk].size;
	return 0;
}

bool storage_vm_has_incoming(Vm *vm)
{
	VmStorage *vs = vs_find(vm);
	return vs && vs->incoming_fd >= 0;
}
