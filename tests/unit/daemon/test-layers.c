/* SPDX-License-Identifier: Apache-2.0 */
/* The storage model of managed disks (layers.c): the layer tree, chains,
 * what is garbage, snapshots, and the stored JSON form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "layers.h"

/* A disk over template "t": 1 <- 2 <- 3 (top), snapshot a on 2. */
static void make(VmDisks *d)
{
	memset(d, 0, sizeof(*d));
	d->n_disks = 2; /* disk 1 is a path disk (not managed) */
	d->next_id = 4;
	ManagedDisk *m = &d->disks[0];
	m->managed = true;
	m->template = strdup("t");
	m->base_format = VM_DISK_RAW;
	m->size = 1 << 30;
	assert_int_equal(disk_add_layer(m, 1, 0), 0);
	assert_int_equal(disk_add_layer(m, 2, 1), 0);
	assert_int_equal(disk_add_layer(m, 3, 2), 0);
	m->top = 3;
	snprintf(d->snaps[0].name, sizeof(d->snaps[0].name), "a");
	d->snaps[0].layers[0] = 2;
	d->n_snaps = 1;
}

static void test_add_and_chain(void **state)
{
	VmDisks d;
	make(&d);
	ManagedDisk *m = &d.disks[0];
	assert_int_equal(disk_add_layer(m, 3, 1), -EINVAL);  /* id taken */
	assert_int_equal(disk_add_layer(m, 9, 7), -EINVAL);  /* no such parent */
	assert_int_equal(disk_add_layer(m, 0, 1), -EINVAL);  /* 0 is the base */
	unsigned ids[8];
	assert_int_equal(disk_chain(m, 3, ids, 8), 3);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 2);
	assert_int_equal(ids[2], 3);
	assert_int_equal(disk_chain(m, 3, ids, 2), -ELOOP); /* deeper than allowed */
	assert_int_equal(disk_chain(m, 42, ids, 8), -ENOENT);
	assert_int_equal(disk_chain(m, 0, ids, 8), 0);
	unsigned kids[4];
	assert_int_equal(disk_children(m, 1, kids, 4), 1);
	assert_int_equal(kids[0], 2);
	assert_int_equal(disk_children(m, 3, kids, 4), 0);
	assert_true(vm_disks_layer_is_snapshot(&d, 0, 2));
	assert_false(vm_disks_layer_is_snapshot(&d, 0, 3));
	assert_true(vm_disks_any_managed(&d));
	vm_disks_clear(&d);
}

static void test_collect_after_rollback(void **state)
{
	VmDisks d;
	make(&d);
	ManagedDisk *m = &d.disks[0];
	/* Rollback to a: new top 4 over 2; 3 is garbage, 1 and 2 stay. */
	assert_int_equal(disk_add_layer(m, 4, 2), 0);
	m->top = 4;
	unsigned gone[8];
	assert_int_equal(vm_disks_collect(&d, 0, gone, 8), 1);
	assert_int_equal(gone[0], 3);
	assert_null(disk_layer(m, 3));
	assert_non_null(disk_layer(m, 1));
	/* Nothing more the second time; the path disk has nothing. */
	assert_int_equal(vm_disks_collect(&d, 0, gone, 8), 0);
	assert_int_equal(vm_disks_collect(&d, 1, gone, 8), 0);
	vm_disks_clear(&d);
}

static void test_collect_branches(void **state)
{
	VmDisks d;
	make(&d);
	ManagedDisk *m = &d.disks[0];
	/* Branch: snapshot b on 3, rollback to a (5 over 2): 3 stays for b. */
	snprintf(d.snaps[1].name, sizeof(d.snaps[1].name), "b");
	d.snaps[1].layers[0] = 3;
	d.n_snaps = 2;
	assert_int_equal(disk_add_layer(m, 4, 3), 0);
	assert_int_equal(disk_add_layer(m, 5, 2), 0);
	m->top = 5;
	unsigned gone[8];
	assert_int_equal(vm_disks_collect(&d, 0, gone, 8), 1);
	assert_int_equal(gone[0], 4); /* b's old top */
	/* The snapshot below the current state is a; b's parent is a. */
	assert_string_equal(vm_disks_snapshot_below(&d, 5)->name, "a");
	assert_string_equal(vm_disks_snapshot_below(&d, disk_layer(m, 3)->parent)->name, "a");
	assert_null(vm_disks_snapshot_below(&d, 1));
	/* Deleting b frees 3. */
	assert_int_equal(vm_disks_remove_snapshot(&d, "b"), 0);
	assert_int_equal(vm_disks_remove_snapshot(&d, "b"), -ENOENT);
	assert_int_equal(vm_disks_collect(&d, 0, gone, 8), 1);
	assert_int_equal(gone[0], 3);
	vm_disks_clear(&d);
}

static void test_backing_names(void **state)
{
	VmDisks d;
	make(&d);
	char buf[128];
	layer_backing_name(&d.disks[0], 2, buf, sizeof(buf));
	assert_string_equal(buf, "2.qcow2");
	layer_backing_name(&d.disks[0], 0, buf, sizeof(buf));
	assert_string_equal(buf, "../../../templates/t/image");
	ManagedDisk blank = {.managed = true};
	layer_backing_name(&blank, 0, buf, sizeof(buf));
	assert_string_equal(buf, "");
	layer_file_name(17, buf, sizeof(buf));
	assert_string_equal(buf, "17.qcow2");
	vm_disks_clear(&d);
}

static void test_json_round_trip(void **state)
{
	VmDisks d, back;
	HsError err;
	make(&d);
	d.snaps[0].memory = strdup("snapshots/a.state");
	d.snaps[0].spec = json_pack("{s:s}", "name", "x");
	d.intent = json_pack("{s:s}", "op", "snapshot");
	json_t *j = vm_disks_to_json(&d);
	assert_int_equal(vm_disks_from_json(j, &back, &err), 0);
	assert_int_equal(back.n_disks, 2);
	assert_false(back.disks[1].managed);
	assert_string_equal(back.disks[0].template, "t");
	assert_int_equal(back.disks[0].base_format, VM_DISK_RAW);
	assert_int_equal(back.disks[0].top, 3);
	assert_int_equal(back.disks[0].n_layers, 3);
	assert_int_equal(back.next_id, 4);
	assert_int_equal(back.n_snaps, 1);
	assert_string_equal(back.snaps[0].memory, "snapshots/a.state");
	assert_non_null(back.intent);
	json_t *again = vm_disks_to_json(&back);
	assert_true(json_equal(j, again));
	json_decref(j);
	json_decref(again);
	vm_disks_clear(&d);
	vm_disks_clear(&back);
}

static void expect_malformed(const char *text)
{
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	VmDisks d;
	HsError err;
	if (vm_disks_from_json(j, &d, &err) == 0)
		fail_msg("accepted: %s", text);
	assert_int_equal(err.code, -EINVAL);
	json_decref(j);
}

static void test_json_malformed(void **state)
{
	expect_malformed("[]");
	expect_malformed("{\"next_id\": 2}");
	/* a layer id from the future, a cycle, a dangling parent, a bad top */
	expect_malformed("{\"next_id\": 2, \"disks\": [{\"size\": 1, \"top\": 5, \"layers\": "
			 "[{\"id\": 5, \"parent\": 0}]}]}");
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 1, \"layers\": "
			 "[{\"id\": 1, \"parent\": 2}, {\"id\": 2, \"parent\": 1}]}]}");
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 1, \"layers\": "
			 "[{\"id\": 1, \"parent\": 7}]}]}");
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 3, \"layers\": "
			 "[{\"id\": 1, \"parent\": 0}]}]}");
	/* a template name that would escape its directory */
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 1, \"template\": "
			 "\"../x\", \"layers\": [{\"id\": 1, \"parent\": 0}]}]}");
	/* snapshots: bad name, a layer that does not exist, wrong shape */
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 1, \"layers\": "
			 "[{\"id\": 1, \"parent\": 0}]}], \"snapshots\": [{\"name\": \"a/b\", "
			 "\"layers\": [1]}]}");
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 1, \"layers\": "
			 "[{\"id\": 1, \"parent\": 0}]}], \"snapshots\": [{\"name\": \"a\", "
			 "\"layers\": [4]}]}");
	expect_malformed("{\"next_id\": 9, \"disks\": [{\"size\": 1, \"top\": 1, \"layers\": "
			 "[{\"id\": 1, \"parent\": 0}]}], \"snapshots\": [{\"name\": \"a\", "
			 "\"layers\": [1, 1]}]}");
}

static void test_snapshot_names(void **state)
{
	assert_true(snapshot_name_is_valid("before-upgrade_2.1"));
	assert_false(snapshot_name_is_valid(""));
	assert_false(snapshot_name_is_valid(".hidden"));
	assert_false(snapshot_name_is_valid("-x"));
	assert_false(snapshot_name_is_valid("a/b"));
	assert_false(snapshot_name_is_valid("a b"));
	char long_name[80];
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(snapshot_name_is_valid(long_name));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add_and_chain),     cmocka_unit_test(test_collect_after_rollback),
	    cmocka_unit_test(test_collect_branches),  cmocka_unit_test(test_backing_names),
	    cmocka_unit_test(test_json_round_trip),   cmocka_unit_test(test_json_malformed),
	    cmocka_unit_test(test_snapshot_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
