/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the on-disk VM store, in a fresh temp dir per test: round
 * trips, atomic writes, crash leftovers and corrupt files; and for the
 * atomic file helpers it is built on. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"
#include "test-helpers.h"

typedef struct Loaded {
	char name[VM_NAME_MAX + 1];
	VmSpec spec;
	VmStatus status;
} Loaded;

typedef struct Fixture {
	char *dir; /* the state dir */
	char *vms; /* <dir>/vms */
	Store st;
	/* What store_load_all reported. */
	Loaded loaded[32];
	size_t n_loaded;
	char bad[32][VM_NAME_MAX + 1];
	char bad_why[32][512];
	size_t n_bad;
	int fail_cb_at; /* the callback returns -EIO for this (1-based) VM */
} Fixture;

static int setup(void **state)
{
	Fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->dir = test_tmpdir_new("store");
	f->vms = hs_strdup_printf("%s/vms", f->dir);
	f->st.dirfd = -1;
	assert_int_equal(store_open(&f->st, f->dir), 0);
	*state = f;
	return 0;
}

static void loaded_clear(Fixture *f)
{
	for (size_t i = 0; i < f->n_loaded; i++)
		vm_spec_clear(&f->loaded[i].spec);
	f->n_loaded = 0;
	f->n_bad = 0;
}

static int teardown(void **state)
{
	Fixture *f = *state;
	loaded_clear(f);
	store_close(&f->st);
	test_tmpdir_remove(&f->dir);
	free(f->vms);
	free(f);
	return 0;
}

static int on_load(const char *name, VmSpec *spec, const VmStatus *status, void *ud)
{
	Fixture *f = ud;
	assert_true(f->n_loaded < ARRAY_SIZE(f->loaded));
	Loaded *l = &f->loaded[f->n_loaded++];
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->spec = *spec; /* taken */
	l->status = *status;
	if (f->fail_cb_at && (int)f->n_loaded == f->fail_cb_at)
		return -EIO;
	return 0;
}

static void on_bad(const char *name, const char *why, void *ud)
{
	Fixture *f = ud;
	assert_true(f->n_bad < ARRAY_SIZE(f->bad));
	snprintf(f->bad[f->n_bad], sizeof(f->bad[0]), "%s", name);
	snprintf(f->bad_why[f->n_bad], sizeof(f->bad_why[0]), "%s", why);
	f->n_bad++;
}

static int load_all(Fixture *f)
{
	loaded_clear(f);
	return store_load_all(&f->st, on_load, on_bad, f);
}

static void make_spec(VmSpec *s, const char *name, unsigned cpus)
{
	json_auto_t *j =
	    json_pack("{s:s, s:i, s:s, s:[{s:s, s:s, s:b}], s:[{s:s}]}", "name", name, "cpus",
		      (int)cpus, "kernel", "/boot/vmlinuz", "disks", "path", "/var/lib/hs/d.img",
		      "format", "raw", "readonly", 1, "nics", "mac", "52:54:00:00:00:42");
	assert_non_null(j);
	VmSpecDefaults d = {.accel = VM_ACCEL_TCG};
	HsError err = {0};
	if (vm_spec_from_json(j, &d, s, &err) < 0)
		fail_msg("make_spec: %s", err.message);
}

static void create_vm(Fixture *f, const char *name, const VmStatus *status)
{
	VmSpec s;
	make_spec(&s, name, 2);
	int r = store_create(&f->st, &s, status);
	vm_spec_clear(&s);
	if (r < 0)
		fail_msg("store_create %s: %s", name, strerror(-r));
}

static char *vm_file(Fixture *f, const char *name, const char *file)
{
	return hs_strdup_printf("%s/%s%s%s", f->vms, name, file ? "/" : "", file ? file : "");
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static const Loaded *find_loaded(Fixture *f, const char *name)
{
	for (size_t i = 0; i < f->n_loaded; i++)
		if (!strcmp(f->loaded[i].name, name))
			return &f->loaded[i];
	fail_msg("VM '%s' was not loaded", name);
	return NULL;
}

static void assert_status_equal(const VmStatus *a, const VmStatus *b)
{
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->pid, b->pid);
	assert_true(a->started_at == b->started_at);
	assert_true(a->stopped_at == b->stopped_at);
	assert_string_equal(a->exit_reason, b->exit_reason);
}

/* ---- store ---- */

static void test_open_creates_vms_dir(void **state)
{
	Fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->vms, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0077, 0); /* private */

	/* A nested state dir that does not exist yet. */
	_cleanup_free_ char *deep = hs_strdup_printf("%s/a/b/c", f->dir);
	Store s2 = {.dirfd = -1};
	assert_int_equal(store_open(&s2, deep), 0);
	assert_true(s2.dirfd >= 0);
	_cleanup_free_ char *deep_vms = hs_strdup_printf("%s/vms", deep);
	assert_int_equal(stat(deep_vms, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	/* Opening again is fine. */
	store_close(&s2);
	assert_int_equal(s2.dirfd, -1);
	store_close(&s2);
	assert_int_equal(store_open(&s2, deep), 0);
	store_close(&s2);

	/* A state dir that is a file. */
	_cleanup_free_ char *file = hs_strdup_printf("%s/file", f->dir);
	test_write_file(file, "x", 1, 0600);
	assert_true(store_open(&s2, file) < 0);
}

static void test_empty(void **state)
{
	Fixture *f = *state;
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 0);
	assert_int_equal(f->n_bad, 0);
}

static void test_create_load_round_trip(void **state)
{
	Fixture *f = *state;
	VmStatus st_b = {.state = VM_STATE_RUNNING, .pid = 4242, .started_at = 1700000000.125};
	VmStatus st_a = {.state = VM_STATE_DEFINED};
	VmStatus st_c = {
	    .state = VM_STATE_CRASHED, .started_at = 1700000000.5, .stopped_at = 1700000123.0625};
	snprintf(st_c.exit_reason, sizeof(st_c.exit_reason), "guest panicked: \"oops\" \xc3\xa9");

	/* Made out of order: loaded sorted by name. */
	create_vm(f, "vm-b", &st_b);
	create_vm(f, "vm-a", &st_a);
	create_vm(f, "vm-c", &st_c);
	create_vm(f, "1st", &st_a);

	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_bad, 0);
	assert_int_equal(f->n_loaded, 4);
	assert_string_equal(f->loaded[0].name, "1st");
	assert_string_equal(f->loaded[1].name, "vm-a");
	assert_string_equal(f->loaded[2].name, "vm-b");
	assert_string_equal(f->loaded[3].name, "vm-c");

	VmSpec want;
	make_spec(&want, "vm-b", 2);
	const Loaded *b = find_loaded(f, "vm-b");
	json_auto_t *jw = vm_spec_to_json(&want);
	json_auto_t *jg = vm_spec_to_json(&b->spec);
	assert_true(json_equal(jw, jg));
	assert_string_equal(b->spec.nics[0].mac, "52:54:00:00:00:42");
	vm_spec_clear(&want);

	assert_status_equal(&find_loaded(f, "vm-a")->status, &st_a);
	assert_status_equal(&b->status, &st_b);
	assert_status_equal(&find_loaded(f, "vm-c")->status, &st_c);

	/* Each VM dir holds exactly its two files, nothing temporary. */
	_cleanup_free_ char *d = vm_file(f, "vm-b", NULL);
	assert_int_equal(test_count_entries(d, NULL), 2);
	assert_int_equal(test_count_entries(f->vms, NULL), 4);
}

static void test_create_duplicate(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "dup", &st);
	VmSpec s;
	make_spec(&s, "dup", 8);
	assert_int_equal(store_create(&f->st, &s, &st), -EEXIST);
	vm_spec_clear(&s);
	/* The first one is intact. */
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 1);
	assert_int_equal(f->loaded[0].spec.cpus, 2);
	/* No leftover from the refused attempt. */
	assert_int_equal(test_count_entries(f->vms, "."), 0);
}

/* A leftover .new.<name> from a crashed create does not block a new one. */
static void test_create_over_leftover(void **state)
{
	Fixture *f = *state;
	_cleanup_free_ char *tmp = hs_strdup_printf("%s/.new.vm", f->vms);
	_cleanup_free_ char *junk = hs_strdup_printf("%s/.new.vm/spec.json", f->vms);
	assert_int_equal(mkdir(tmp, 0700), 0);
	test_write_file(junk, "{", 1, 0600);
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "vm", &st);
	assert_false(exists(tmp));
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 1);
}

/* A temp file from an atomic write interrupted by a crash is removed at
 * load; the real files are untouched. */
static void test_stale_temp_removed(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "vm", &st);
	_cleanup_free_ char *junk = hs_strdup_printf("%s/vm/.status.json.tmp.4242", f->vms);
	test_write_file(junk, "{\"sta", 5, 0600);
	assert_true(exists(junk));
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 1);
	assert_false(exists(junk));
}

static void test_save_status(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "vm", &st);

	VmStatus run = {.state = VM_STATE_RUNNING, .pid = 99, .started_at = 12.5};
	assert_int_equal(store_save_status(&f->st, "vm", &run), 0);
	_cleanup_free_ char *d = vm_file(f, "vm", NULL);
	assert_int_equal(test_count_entries(d, NULL), 2); /* no temp file left */
	assert_int_equal(load_all(f), 0);
	assert_status_equal(&f->loaded[0].status, &run);

	/* Many rewrites in a row leave nothing behind either. */
	for (int i = 0; i < 50; i++) {
		VmStatus s = {.state = (VmState)(i % _VM_STATE_MAX), .pid = i, .stopped_at = i};
		snprintf(s.exit_reason, sizeof(s.exit_reason), "round %d", i);
		assert_int_equal(store_save_status(&f->st, "vm", &s), 0);
	}
	assert_int_equal(test_count_entries(d, NULL), 2);
	assert_int_equal(load_all(f), 0);
	assert_string_equal(f->loaded[0].status.exit_reason, "round 49");
	assert_int_equal(f->loaded[0].status.state, (VmState)(49 % _VM_STATE_MAX));

	/* The file is valid JSON ending in a newline. */
	_cleanup_free_ char *p = vm_file(f, "vm", "status.json");
	int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	assert_int_equal(hs_read_file(dfd, "status.json", 1 << 16, &data, &len), 0);
	close(dfd);
	assert_true(len > 2);
	assert_int_equal(data[len - 1], '\n');
	json_auto_t *j = json_loads(data, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "state")),
			    vm_state_to_string((VmState)(49 % _VM_STATE_MAX)));
	struct stat sst;
	assert_int_equal(stat(p, &sst), 0);
	assert_int_equal(sst.st_mode & 0077, 0);

	/* No such VM. */
	assert_int_equal(store_save_status(&f->st, "nope", &run), -ENOENT);
	assert_int_equal(test_count_entries(f->vms, NULL), 1);
}

static void test_save_spec(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_STOPPED};
	create_vm(f, "vm", &st);
	VmSpec s;
	make_spec(&s, "vm", 16);
	assert_int_equal(store_save_spec(&f->st, &s), 0);
	vm_spec_clear(&s);
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->loaded[0].spec.cpus, 16);
	assert_int_equal(f->loaded[0].status.state, VM_STATE_STOPPED);
	_cleanup_free_ char *d = vm_file(f, "vm", NULL);
	assert_int_equal(test_count_entries(d, NULL), 2);

	make_spec(&s, "ghost", 1);
	assert_int_equal(store_save_spec(&f->st, &s), -ENOENT);
	vm_spec_clear(&s);
}

static void test_delete(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "a", &st);
	create_vm(f, "b", &st);
	/* Extra per-VM files go with it. */
	int dfd = store_vm_dirfd(&f->st, "a");
	assert_true(dfd >= 0);
	assert_int_equal(hs_write_file_atomic(dfd, "serial.log", "boot\n", 5, 0600), 0);
	assert_int_equal(mkdirat(dfd, "sub", 0700), 0);
	close(dfd);

	assert_int_equal(store_delete(&f->st, "a"), 0);
	_cleanup_free_ char *pa = vm_file(f, "a", NULL);
	assert_false(exists(pa));
	assert_int_equal(test_count_entries(f->vms, NULL), 1);
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 1);
	assert_string_equal(f->loaded[0].name, "b");

	assert_int_equal(store_delete(&f->st, "a"), -ENOENT);
	assert_int_equal(store_delete(&f->st, "b"), 0);
	assert_int_equal(test_count_entries(f->vms, NULL), 0);
	/* The name can be used again. */
	create_vm(f, "a", &st);
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 1);
}

static void test_vm_dirfd(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "vm", &st);
	int fd = store_vm_dirfd(&f->st, "vm");
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(store_vm_dirfd(&f->st, "none"), -ENOENT);
}

/* What a kill -9 in the middle of a create or a delete leaves behind. */
static void test_leftovers_cleaned(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "keep", &st);
	create_vm(f, "half-deleted", &st);
	create_vm(f, "half-made", &st);
	_cleanup_free_ char *hd = vm_file(f, "half-deleted", NULL);
	_cleanup_free_ char *hd2 = vm_file(f, ".deleted.half-deleted", NULL);
	_cleanup_free_ char *hm = vm_file(f, "half-made", NULL);
	_cleanup_free_ char *hm2 = vm_file(f, ".new.half-made", NULL);
	_cleanup_free_ char *empty_new = vm_file(f, ".new.empty", NULL);
	_cleanup_free_ char *file_del = vm_file(f, ".deleted.file", NULL);
	_cleanup_free_ char *other_dot = vm_file(f, ".keep-me", NULL);
	_cleanup_free_ char *bad_name = vm_file(f, "Not-A-VM", NULL);
	assert_int_equal(rename(hd, hd2), 0);
	assert_int_equal(rename(hm, hm2), 0);
	assert_int_equal(mkdir(empty_new, 0700), 0);
	test_write_file(file_del, "x", 1, 0600);
	assert_int_equal(mkdir(other_dot, 0700), 0);
	assert_int_equal(mkdir(bad_name, 0700), 0);

	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 1);
	assert_string_equal(f->loaded[0].name, "keep");
	assert_int_equal(f->n_bad, 0);
	assert_false(exists(hd2));
	assert_false(exists(hm2));
	assert_false(exists(empty_new));
	assert_false(exists(file_del));
	/* Only the store's own temporaries are touched. */
	assert_true(exists(other_dot));
	assert_true(exists(bad_name));
	assert_int_equal(test_count_entries(f->vms, NULL), 3);
}

static void plant(Fixture *f, const char *name, const char *spec, const char *status)
{
	_cleanup_free_ char *d = vm_file(f, name, NULL);
	assert_int_equal(mkdir(d, 0700), 0);
	if (spec) {
		_cleanup_free_ char *p = vm_file(f, name, "spec.json");
		test_write_file(p, spec, strlen(spec), 0600);
	}
	if (status) {
		_cleanup_free_ char *p = vm_file(f, name, "status.json");
		test_write_file(p, status, strlen(status), 0600);
	}
}

static size_t find_bad(Fixture *f, const char *name)
{
	for (size_t i = 0; i < f->n_bad; i++)
		if (!strcmp(f->bad[i], name))
			return i;
	fail_msg("VM '%s' was not reported bad", name);
	return 0;
}

static void test_corrupt_spec(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_RUNNING, .pid = 7};
	create_vm(f, "good1", &st);
	create_vm(f, "zgood2", &st);
	static const char status[] = "{\"state\": \"stopped\"}";
	plant(f, "truncated", "{\"name\": \"truncated\", \"cpus\": 2, \"kern", status);
	plant(f, "empty", "", status);
	plant(f, "missing", NULL, status);
	plant(f, "other-name", "{\"name\": \"someone\", \"kernel\": \"/k\"}", status);
	plant(f, "invalid", "{\"name\": \"invalid\", \"kernel\": \"/k\", \"cpus\": 0}", status);
	plant(f, "not-object", "[1, 2]", status);
	_cleanup_free_ char *file = vm_file(f, "plainfile", NULL);
	test_write_file(file, "{}", 2, 0600);
	_cleanup_free_ char *link = vm_file(f, "symlink", NULL);
	_cleanup_free_ char *target = vm_file(f, "good1", NULL);
	assert_int_equal(symlink(target, link), 0);

	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_loaded, 2);
	assert_string_equal(f->loaded[0].name, "good1");
	assert_string_equal(f->loaded[1].name, "zgood2");
	assert_int_equal(f->loaded[0].status.state, VM_STATE_RUNNING);
	assert_int_equal(f->loaded[0].status.pid, 7);

	assert_int_equal(f->n_bad, 8);
	/* Reported in name order too, each with a reason. */
	for (size_t i = 1; i < f->n_bad; i++)
		assert_true(strcmp(f->bad[i - 1], f->bad[i]) < 0);
	for (size_t i = 0; i < f->n_bad; i++)
		assert_true(strlen(f->bad_why[i]) > 0);
	assert_non_null(strstr(f->bad_why[find_bad(f, "truncated")], "spec.json"));
	assert_non_null(strstr(f->bad_why[find_bad(f, "empty")], "spec.json"));
	assert_non_null(strstr(f->bad_why[find_bad(f, "missing")], "spec.json"));
	assert_non_null(strstr(f->bad_why[find_bad(f, "other-name")], "another VM"));
	assert_non_null(strstr(f->bad_why[find_bad(f, "invalid")], "cpus"));
	find_bad(f, "not-object");
	find_bad(f, "plainfile");
	find_bad(f, "symlink");

	/* Nothing was deleted. */
	assert_int_equal(test_count_entries(f->vms, NULL), 10);
	_cleanup_free_ char *p = vm_file(f, "truncated", "spec.json");
	assert_true(exists(p));
	free(p);
	p = vm_file(f, "empty", "spec.json");
	assert_true(exists(p));

	/* Without a bad callback, the others still load. */
	loaded_clear(f);
	assert_int_equal(store_load_all(&f->st, on_load, NULL, f), 0);
	assert_int_equal(f->n_loaded, 2);
	assert_int_equal(f->n_bad, 0);
}

static void test_corrupt_status(void **state)
{
	Fixture *f = *state;
	VmSpec s;
	make_spec(&s, "x", 1);
	json_auto_t *j = vm_spec_to_json(&s);
	vm_spec_clear(&s);
	static const char *const names[] = {"truncated", "empty",      "unknown-state",
					    "no-state",	 "wrong-type", "missing"};
	static const char *const statuses[] = {
	    "{\"state\": \"runn",
	    "",
	    "{\"state\": \"exploded\"}",
	    "{\"pid\": 3}",
	    "{\"state\": \"running\", \"pid\": \"12\"}",
	    NULL,
	};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		json_object_set_new(j, "name", json_string(names[i]));
		_cleanup_free_ char *text = json_dumps(j, 0);
		plant(f, names[i], text, statuses[i]);
	}
	assert_int_equal(load_all(f), 0);
	assert_int_equal(f->n_bad, 0);
	assert_int_equal(f->n_loaded, ARRAY_SIZE(names));
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		const Loaded *l = find_loaded(f, names[i]);
		/* The spec is intact; the state is re-derived later. */
		assert_string_equal(l->spec.name, names[i]);
		assert_int_equal(l->spec.n_disks, 1);
		VmState want = statuses[i] ? VM_STATE_STOPPED : VM_STATE_DEFINED;
		if (l->status.state != want)
			fail_msg("%s: state %s, wanted %s", names[i],
				 vm_state_to_string(l->status.state), vm_state_to_string(want));
		assert_int_equal(l->status.pid, 0);
	}
}

static void test_callback_error(void **state)
{
	Fixture *f = *state;
	VmStatus st = {.state = VM_STATE_DEFINED};
	create_vm(f, "a", &st);
	create_vm(f, "b", &st);
	create_vm(f, "c", &st);
	f->fail_cb_at = 2;
	/* The first error is returned; later VMs are not handed over (and not
	 * leaked: valgrind/ASan check that). */
	assert_int_equal(load_all(f), -EIO);
	assert_int_equal(f->n_loaded, 2);
	assert_string_equal(f->loaded[1].name, "b");
}

/* ---- status JSON ---- */

static void test_state_strings(void **state)
{
	for (int i = 0; i < _VM_STATE_MAX; i++) {
		VmState s;
		const char *n = vm_state_to_string((VmState)i);
		assert_non_null(n);
		assert_int_equal(vm_state_from_string(n, &s), 0);
		assert_int_equal(s, i);
	}
	assert_string_equal(vm_state_to_string(VM_STATE_RUNNING), "running");
	assert_string_equal(vm_state_to_string(_VM_STATE_MAX), "unknown");
	VmState s = VM_STATE_PAUSED;
	assert_int_equal(vm_state_from_string("Running", &s), -EINVAL);
	assert_int_equal(vm_state_from_string("", &s), -EINVAL);
	assert_int_equal(s, VM_STATE_PAUSED);

	assert_true(vm_state_is_active(VM_STATE_RUNNING));
	assert_true(vm_state_is_active(VM_STATE_STARTING));
	assert_true(vm_state_is_active(VM_STATE_PAUSED));
	assert_true(vm_state_is_active(VM_STATE_STOPPING));
	assert_false(vm_state_is_active(VM_STATE_DEFINED));
	assert_false(vm_state_is_active(VM_STATE_STOPPED));
	assert_false(vm_state_is_active(VM_STATE_CRASHED));
	assert_true(vm_state_is_active(VM_STATE_INCOMING));
	assert_false(vm_state_is_active(VM_STATE_MIGRATED));
}

static void test_status_json(void **state)
{
	VmStatus a = {.state = VM_STATE_PAUSED, .pid = 123, .started_at = 1.25, .stopped_at = 0};
	snprintf(a.exit_reason, sizeof(a.exit_reason), "none");
	json_auto_t *j = vm_status_to_json(&a);
	assert_non_null(j);
	VmStatus b;
	HsError err = {0};
	assert_int_equal(vm_status_from_json(j, &b, &err), 0);
	assert_status_equal(&a, &b);
	assert_null(json_object_get(j, "migrated_to"));

	/* The record a VM that migrated away leaves: where it went. */
	VmStatus m = {.state = VM_STATE_MIGRATED, .stopped_at = 2.5};
	snprintf(m.migrated_to, sizeof(m.migrated_to), "ssh://root@b/run/hsd/hsd.sock");
	json_auto_t *jm = vm_status_to_json(&m);
	assert_string_equal(json_string_value(json_object_get(jm, "state")), "migrated");
	assert_int_equal(vm_status_from_json(jm, &b, &err), 0);
	assert_int_equal(b.state, VM_STATE_MIGRATED);
	assert_string_equal(b.migrated_to, "ssh://root@b/run/hsd/hsd.sock");

	/* Optional members; integers where doubles go. */
	json_auto_t *j2 = json_loads("{\"state\": \"stopped\", \"started_at\": 5}", 0, NULL);
	assert_int_equal(vm_status_from_json(j2, &b, &err), 0);
	assert_int_equal(b.state, VM_STATE_STOPPED);
	assert_int_equal(b.pid, 0);
	assert_true(b.started_at == 5.0);
	assert_string_equal(b.exit_reason, "");

	json_auto_t *j3 = json_loads("{\"state\": \"bogus\"}", 0, NULL);
	assert_int_equal(vm_status_from_json(j3, &b, &err), -EINVAL);
	assert_string_equal(err.kind, "corrupt-state");
	assert_non_null(strstr(err.message, "bogus"));
	json_auto_t *j4 = json_loads("{\"pid\": 1}", 0, NULL);
	assert_int_equal(vm_status_from_json(j4, &b, &err), -EINVAL);
	assert_string_equal(err.kind, "corrupt-state");
	assert_int_equal(vm_status_from_json(j4, &b, NULL), -EINVAL);

	/* A long reason is cut, not overflowed. */
	char longr[1000];
	memset(longr, 'r', sizeof(longr) - 1);
	longr[sizeof(longr) - 1] = '\0';
	json_auto_t *j5 = json_pack("{s:s, s:s}", "state", "crashed", "exit_reason", longr);
	assert_int_equal(vm_status_from_json(j5, &b, &err), 0);
	assert_int_equal(strlen(b.exit_reason), sizeof(b.exit_reason) - 1);
}

/* ---- the atomic file helpers ---- */

static void test_write_read_file(void **state)
{
	Fixture *f = *state;
	int dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	_cleanup_free_ char *data = NULL;
	size_t len = 99;

	assert_int_equal(hs_write_file_atomic(dfd, "f", "hello", 5, 0640), 0);
	assert_int_equal(hs_read_file(dfd, "f", 1 << 20, &data, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal(data, "hello");
	free(TAKE_PTR(data));

	/* Replaced whole, never appended or mixed. */
	assert_int_equal(hs_write_file_atomic(dfd, "f", "bye", 3, 0640), 0);
	assert_int_equal(hs_read_file(dfd, "f", 1 << 20, &data, NULL), 0);
	assert_string_equal(data, "bye");
	free(TAKE_PTR(data));

	/* Empty file; binary data with NULs (the length tells). */
	assert_int_equal(hs_write_file_atomic(dfd, "e", "", 0, 0600), 0);
	assert_int_equal(hs_read_file(dfd, "e", 16, &data, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal(data, "");
	free(TAKE_PTR(data));
	assert_int_equal(hs_write_file_atomic(dfd, "b", "a\0b", 3, 0600), 0);
	assert_int_equal(hs_read_file(dfd, "b", 16, &data, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(data, "a\0b", 4); /* NUL-terminated too */
	free(TAKE_PTR(data));

	/* Large content, across the reader's buffer growth. */
	size_t big = 300000;
	char *buf = malloc(big);
	assert_non_null(buf);
	for (size_t i = 0; i < big; i++)
		buf[i] = (char)('a' + i % 26);
	assert_int_equal(hs_write_file_atomic(dfd, "big", buf, big, 0600), 0);
	assert_int_equal(hs_read_file(dfd, "big", 1 << 20, &data, &len), 0);
	assert_int_equal(len, big);
	assert_memory_equal(data, buf, big);
	free(TAKE_PTR(data));

	/* Over the limit. */
	assert_int_equal(hs_read_file(dfd, "big", 8192, &data, &len), -EFBIG);
	assert_null(data);
	assert_int_equal(hs_read_file(dfd, "big", big - 1, &data, &len), -EFBIG);
	assert_null(data);
	assert_int_equal(hs_read_file(dfd, "big", big + 1, &data, &len), 0);
	free(TAKE_PTR(data));
	free(buf);

	/* Missing; a symlink is not followed. */
	assert_int_equal(hs_read_file(dfd, "nope", 16, &data, &len), -ENOENT);
	assert_int_equal(symlinkat("f", dfd, "link"), 0);
	assert_int_equal(hs_read_file(dfd, "link", 16, &data, &len), -ELOOP);
	assert_null(data);

	/* No temporaries left; the mode is applied (through the umask). */
	assert_int_equal(test_count_entries(f->dir, "."), 0);
	struct stat st;
	assert_int_equal(fstatat(dfd, "f", &st, 0), 0);
	mode_t um = umask(0);
	umask(um);
	assert_int_equal(st.st_mode & 0777, 0640 & ~um);

	/* A directory that cannot be written: an error, nothing half-done. */
	assert_int_equal(hs_write_file_atomic(dfd, "vms", "x", 1, 0600) < 0, true);
	assert_int_equal(hs_write_file_atomic(-1, "x", "x", 1, 0600), -EBADF);
	close(dfd);
}

/* The limit is "at most max bytes": a file of exactly max bytes is read,
 * one byte more is -EFBIG, whatever the size of the reader's first
 * buffer. */
static void test_read_file_limit_edges(void **state)
{
	Fixture *f = *state;
	int dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	char buf[8193];
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(hs_write_file_atomic(dfd, "8192", buf, 8192, 0600), 0);
	assert_int_equal(hs_write_file_atomic(dfd, "100", buf, 100, 0600), 0);
	_cleanup_free_ char *data = NULL;
	size_t len;
	int exact = hs_read_file(dfd, "8192", 8192, &data, &len);
	free(TAKE_PTR(data));
	int small = hs_read_file(dfd, "100", 64, &data, &len);
	free(TAKE_PTR(data));
	close(dfd);
	assert_int_equal(exact, 0);
	assert_int_equal(small, -EFBIG);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_open_creates_vms_dir),
	    T(test_empty),
	    T(test_create_load_round_trip),
	    T(test_create_duplicate),
	    T(test_create_over_leftover),
	    T(test_stale_temp_removed),
	    T(test_save_status),
	    T(test_save_spec),
	    T(test_delete),
	    T(test_vm_dirfd),
	    T(test_leftovers_cleaned),
	    T(test_corrupt_spec),
	    T(test_corrupt_status),
	    T(test_callback_error),
	    cmocka_unit_test(test_state_strings),
	    cmocka_unit_test(test_status_json),
	    T(test_write_read_file),
	    T(test_read_file_limit_edges),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
