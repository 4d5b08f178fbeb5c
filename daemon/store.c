/* SPDX-License-Identifier: Apache-2.0 */
#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

static const char *const state_names[_VM_STATE_MAX] = {
	[VM_STATE_DEFINED] = "defined", [VM_STATE_STARTING] = "starting",
	[VM_STATE_RUNNING] = "running", [VM_STATE_PAUSED] = "paused",
	[VM_STATE_STOPPING] = "stopping", [VM_STATE_STOPPED] = "stopped",
	[VM_STATE_CRASHED] = "crashed", [VM_STATE_INCOMING] = "incoming",
	[VM_STATE_MIGRATED] = "migrated",
};

const char *vm_state_to_string(VmState s)
{
	return s < _VM_STATE_MAX ? state_names[s] : "unknown";
}

int vm_state_from_string(const char *s, VmState *ret)
{
	for (int i = 0; i < _VM_STATE_MAX; i++)
		if (!strcmp(s, state_names[i])) {
			*ret = (VmState)i;
			return 0;
		}
	return -EINVAL;
}

int store_open(Store *st, const char *state_dir)
{
	_cleanup_free_ char *p = hs_strdup_printf("%s/vms", state_dir);
	if (!p)
		return -ENOMEM;
	int r = hs_mkdir_p(p, 0700);
	if (r < 0)
		return r;
	st->dirfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return st->dirfd < 0 ? -errno : 0;
}

void store_close(Store *st)
{
	if (st->dirfd >= 0)
		close(st->dirfd);
	st->dirfd = -1;
}

static int write_json_as(int dirfd, const char *name, json_t *j, bool durable)
{
	if (!j)
		return -ENOMEM;
	_cleanup_free_ char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!s)
		return -ENOMEM;
	size_t n = strlen(s);
	s[n] = '\n';
	int r = durable ? hs_write_file_atomic(dirfd, name, s, n + 1, 0600)
			: hs_write_file_replace(dirfd, name, s, n + 1, 0600);
	s[n] = '\0';
	return r;
}

/* Definitions must survive a power loss. */
static int write_json(int dirfd, const char *name, json_t *j)
{
	return write_json_as(dirfd, name, j, true);
}

json_t *vm_status_to_json(const VmStatus *s)
{
	json_t *j = json_pack("{s:s, s:i, s:f, s:f, s:s}", "state", vm_state_to_string(s->state),
			      "pid", (int)s->pid, "started_at", s->started_at, "stopped_at",
			      s->stopped_at, "exit_reason", s->exit_reason);
	if (j && s->migrated_to[0])
		json_object_set_new(j, "migrated_to", json_string(s->migrated_to));
	return j;
}

int vm_status_from_json(json_t *j, VmStatus *ret, HsError *err)
{
	const char *state = NULL, *reason = "", *to = "";
	int pid = 0;
	double started = 0, stopped = 0;
	json_error_t je;
	if (json_unpack_ex(j, &je, 0, "{s:s, s?i, s?F, s?F, s?s, s?s}", "state", &state, "pid",
			   &pid, "started_at", &started, "stopped_at", &stopped, "exit_reason",
			   &reason, "migrated_to", &to) < 0)
		return hs_error_set(err, -EINVAL, "corrupt-state", "status: %s", je.text);
	VmStatus s = {.pid = pid, .started_at = started, .stopped_at = stopped};
	if (vm_state_from_string(state, &s.state) < 0)
		return hs_error_set(err, -EINVAL, "corrupt-state", "status: unknown state '%s'",
				    state);
	snprintf(s.exit_reason, sizeof(s.exit_reason), "%s", reason);
	snprintf(s.migrated_to, sizeof(s.migrated_to), "%s", to);
	*ret = s;
	return 0;
}

int store_vm_dirfd(Store *st, const char *name)
{
	int fd = openat(st->dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

int store_create(Store *st, const VmSpec *spec, const VmStatus *status)
{
	char tmp[128];
	int r;
	json_auto_t *js = vm_spec_to_json(spec);
	json_auto_t *jt = vm_status_to_json(status);

	if (faccessat(st->dirfd, spec->name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	snprintf(tmp, sizeof(tmp), ".new.%s", spec->name);
	hs_rm_rf_at(st->dirfd, tmp);
	if (mkdirat(st->dirfd, tmp, 0700) < 0)
		return -errno;
	_cleanup_close_ int fd = openat(st->dirfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = write_json(fd, "spec.json", js);
	if (r == 0)
		r = write_json(fd, "status.json", jt);
	if (r < 0)
		goto fail;
	/* RENAME_NOREPLACE: never clobber a VM made meanwhile. */
	if (renameat2(st->dirfd, tmp, st->dirfd, spec->name, RENAME_NOREPLACE) < 0) {
		r = -errno;
		goto fail;
	}
	fsync(st->dirfd);
	return 0;
fail:
	hs_rm_rf_at(st->dirfd, tmp);
	return r;
}

static int save_in_vm_dir(Store *st, const char *name, const char *file, json_t *j)
{
	_cleanup_close_ int fd = store_vm_dirfd(st, name);
	if (fd < 0)
		return fd;
	return write_json(fd, file, j);
}

int store_save_status(Store *st, const char *name, const VmStatus *status)
{
	/* Status is rewritten on every state change. It must stay whole
	 * across an hsd crash (atomic rename) but need not be fsync'd: after
	 * a power loss no QEMU is left to describe, and every VM is found
	 * stopped or crashed from its pidfile anyway. */
	json_auto_t *j = vm_status_to_json(status);
	_cleanup_close_ int fd = store_vm_dirfd(st, name);
	if (fd < 0)
		return fd;
	return write_json_as(fd, "status.json", j, false);
}

int store_save_spec(Store *st, const VmSpec *spec)
{
	json_auto_t *j = vm_spec_to_json(spec);
	return save_in_vm_dir(st, spec->name, "spec.json", j);
}

int store_delete(Store *st, const char *name)
{
	char tmp[128];
	snprintf(tmp, sizeof(tmp), ".deleted.%s", name);
	hs_rm_rf_at(st->dirfd, tmp);
	/* One atomic step removes the VM; the rest is cleanup that a restart
	 * finishes if interrupted. */
	if (renameat(st->dirfd, name, st->dirfd, tmp) < 0)
		return -errno;
	fsync(st->dirfd);
	return hs_rm_rf_at(st->dirfd, tmp);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Temp files of an atomic write that a crash interrupted: ".X.tmp.PID". */
static void remove_stale_temps(int dirfd)
{
	int dfd = dup(dirfd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp."))
			unlinkat(dirfd, de->d_name, 0);
	closedir(d);
}

static int load_one(Store *st, const char *name, VmSpec *ret_spec, VmStatus *ret_status,
		    HsError *err)
{
	_cleanup_close_ int fd = store_vm_dirfd(st, name);
	if (fd < 0)
		return hs_error_set(err, fd, "corrupt-state", "cannot open: %s", strerror(-fd));
	remove_stale_temps(fd);
	_cleanup_free_ char *data = NULL;
	int r = hs_read_file(fd, "spec.json", 1 << 20, &data, NULL);
	if (r < 0)
		return hs_error_set(err, r, "corrupt-state", "spec.json: %s", strerror(-r));
	json_error_t je;
	json_auto_t *j = json_loads(data, 0, &je);
	if (!j)
		return hs_error_set(err, -EINVAL, "corrupt-state", "spec.json: %s", je.text);
	VmSpecDefaults d = {.accel = VM_ACCEL_TCG, .check_files = false};
	r = vm_spec_from_json(j, &d, ret_spec, err);
	if (r < 0)
		return r;
	if (strcmp(ret_spec->name, name)) {
		vm_spec_clear(ret_spec);
		return hs_error_set(err, -EINVAL, "corrupt-state", "spec.json names another VM");
	}

	VmStatus s = {.state = VM_STATE_DEFINED};
	free(data);
	data = NULL;
	r = hs_read_file(fd, "status.json", 1 << 16, &data, NULL);
	if (r == 0) {
		json_auto_t *js = json_loads(data, 0, &je);
		if (!js || vm_status_from_json(js, &s, NULL) < 0)
			/* The definition is intact; the runtime state will be
			 * re-derived from the process, if any. */
			s = (VmStatus){.state = VM_STATE_STOPPED};
	}
	*ret_status = s;
	return 0;
}

int store_load_all(Store *st, StoreLoadCb cb,
		   void (*bad)(const char *name, const char *why, void *userdata), void *userdata)
{
	int dfd = dup(st->dirfd);
	if (dfd < 0)
		return -errno;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	rewinddir(d);
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.') {
			if (hs_str_has_prefix(de->d_name, ".new.") ||
			    hs_str_has_prefix(de->d_name, ".deleted."))
				hs_rm_rf_at(st->dirfd, de->d_name);
			continue;
		}
		if (!vm_name_is_valid(de->d_name))
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(char *));
		if (!nn)
			break;
		names = nn;
		/* No NULL in the array: cmp_str would pass it to strcmp. */
		if (!(names[n] = strdup(de->d_name)))
			continue;
		n++;
	}
	closedir(d);
	/* names is NULL when there are none: qsort must not see it. */
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_str);
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		VmSpec spec;
		VmStatus status;
		HsError err = {0};
		if (load_one(st, names[i], &spec, &status, &err) < 0) {
			if (bad)
				bad(names[i], err.message, userdata);
		} else if (r == 0) {
			r = cb(names[i], &spec, &status, userdata);
		} else {
			vm_spec_clear(&spec);
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int store_save_setting(const char *state_dir, const char *file, json_t *j)
{
	_cleanup_free_ char *s = json_dumps(j, JSON_INDENT(2));
	_cleanup_close_ int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!s)
		return -ENOMEM;
	if (dfd < 0)
		return -errno;
	return hs_write_file_atomic(dfd, file, s, strlen(s), 0600);
}

int store_load_setting(const char *state_dir, const char *file, json_t **ret)
{
	_cleanup_close_ int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *data = NULL;
	if (dfd < 0)
		return -errno;
	int r = hs_read_file(dfd, file, 65536, &data, NULL);
	if (r < 0)
		return r;
	json_t *j = json_loads(data, 0, NULL);
	if (!j)
		return -EINVAL;
	*ret = j;
	return 0;
}
