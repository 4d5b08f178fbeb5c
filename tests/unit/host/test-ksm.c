/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake-tree.h"
#include "ksm.h"

static void write_ksm(const char *root, const char *knob, const char *v)
{
	char rel[256];
	snprintf(rel, sizeof(rel), "sys/kernel/mm/ksm/%s", knob);
	fake_write(root, rel, v);
}

static void test_absent(void **state)
{
	char *root = fake_tree_new();
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_false(s.present);
	assert_int_equal(ksm_write_knob(fd, "run", 1), -ENOENT);
	close(fd);
	fake_tree_free(root);
}

static void test_read_all(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "1\n");
	write_ksm(root, "pages_to_scan", "100\n");
	write_ksm(root, "sleep_millisecs", "20\n");
	write_ksm(root, "pages_shared", "1000\n");
	write_ksm(root, "pages_sharing", "9000\n");
	write_ksm(root, "pages_unshared", "50\n");
	write_ksm(root, "pages_volatile", "7\n");
	write_ksm(root, "full_scans", "3\n");
	write_ksm(root, "merge_across_nodes", "1\n");
	write_ksm(root, "general_profit", "-4096\n");
	write_ksm(root, "ksm_zero_pages", "10\n");
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_true(s.present);
	assert_int_equal(s.run, 1);
	assert_int_equal(s.pages_to_scan, 100);
	assert_int_equal(s.sleep_millisecs, 20);
	assert_int_equal(s.pages_shared, 1000);
	assert_int_equal(s.pages_sharing, 9000);
	assert_int_equal(s.pages_unshared, 50);
	assert_int_equal(s.pages_volatile, 7);
	assert_int_equal(s.full_scans, 3);
	assert_int_equal(s.merge_across_nodes, 1);
	assert_true(s.has_general_profit);
	assert_int_equal(s.general_profit, -4096);
	assert_true(s.has_zero_pages);
	assert_int_equal(ksm_saved_bytes(&s, 4096), (9000 + 10) * 4096ull);
	close(fd);
	fake_tree_free(root);
}

static void test_old_kernel_without_optional_files(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "0\n");
	write_ksm(root, "pages_sharing", "5\n");
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_true(s.present);
	assert_int_equal(s.run, 0);
	assert_false(s.has_general_profit);
	assert_false(s.has_zero_pages);
	assert_int_equal(s.merge_across_nodes, -1);
	assert_int_equal(ksm_saved_bytes(&s, 4096), 5 * 4096);
	close(fd);
	fake_tree_free(root);
}

static void test_garbage_is_an_error(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "yes please\n");
	int fd = fake_open(root);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), -EINVAL);
	close(fd);
	fake_tree_free(root);
}

static void test_write_knob(void **state)
{
	char *root = fake_tree_new();
	write_ksm(root, "run", "0\n");
	write_ksm(root, "pages_to_scan", "100\n");
	int fd = fake_open(root);
	assert_int_equal(ksm_write_knob(fd, "run", 1), 0);
	assert_int_equal(ksm_write_knob(fd, "pages_to_scan", 4000), 0);
	assert_int_equal(ksm_write_knob(fd, "../../../etc/passwd", 1), -EINVAL);
	assert_int_equal(ksm_write_knob(fd, "pages_shared", 1), -EINVAL);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	assert_int_equal(s.run, 1);
	assert_int_equal(s.pages_to_scan, 4000);
	close(fd);
	fake_tree_free(root);
}

static void test_process(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "proc/42/ksm_merging_pages", "123\n");
	fake_write(root, "proc/42/ksm_stat", "ksm_rmap_items 200\nksm_merging_pages 123\n"
					     "ksm_process_profit 4096\n");
	fake_write(root, "proc/43/ksm_stat", "ksm_merging_pages 9\n");
	int fd = fake_open(root);
	KsmProcess p;
	assert_int_equal(ksm_read_process(fd, 42, &p), 0);
	assert_true(p.present);
	assert_int_equal(p.merging_pages, 123);
	assert_true(p.has_profit);
	assert_int_equal(p.profit, 4096);
	assert_int_equal(ksm_read_process(fd, 43, &p), 0);
	assert_true(p.present);
	assert_int_equal(p.merging_pages, 9);
	assert_false(p.has_profit);
	assert_int_equal(ksm_read_process(fd, 44, &p), 0);
	assert_false(p.present);
	close(fd);
	fake_tree_free(root);
}


/* ---- policy ---- */

static KsmPolicyInput base_input(void)
{
	KsmPolicyInput in = {
		.config = {.mode = KSM_MODE_AUTO, .max_cpu = 0.25},
		.mem_total = 16ull << 30,
		.mem_available = 12ull << 30,
		.ksmd_cpu = 0.05,
		.current_pages_to_scan = 1000,
		.previous_phase = -1,
	};
	in.now.present = in.before.present = true;
	in.now.pages_to_scan = 1000;
	in.now.sleep_millisecs = 20;
	return in;
}

static void test_policy_modes(void **state)
{
	KsmPolicyInput in = base_input();
	in.config.mode = KSM_MODE_OFF;
	KsmDecision d = ksm_policy_decide(&in);
	assert_int_equal(d.run, 0);
	assert_int_equal(d.phase, KSM_PHASE_OFF);
	in.config.mode = KSM_MODE_FIXED;
	in.config.fixed_pages_to_scan = 777;
	in.config.fixed_sleep_millisecs = 33;
	in.vms_booting = 5; /* ignored in fixed mode */
	d = ksm_policy_decide(&in);
	assert_int_equal(d.run, 1);
	assert_int_equal(d.pages_to_scan, 777);
	assert_int_equal(d.sleep_millisecs, 33);
	assert_int_equal(d.phase, KSM_PHASE_FIXED);
	KsmMode m;
	assert_int_equal(ksm_mode_from_string("fixed", &m), 0);
	assert_int_equal(m, KSM_MODE_FIXED);
	assert_int_equal(ksm_mode_from_string("FAST", &m), -EINVAL);
	assert_string_equal(ksm_mode_to_string(KSM_MODE_AUTO), "auto");
}

static void test_policy_boost_when_booting_waiting_or_tight(void **state)
{
	KsmPolicyInput in = base_input();
	KsmDecision steady = ksm_policy_decide(&in);
	assert_int_equal(steady.phase, KSM_PHASE_STEADY);

	in.vms_booting = 1;
	KsmDecision d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	assert_true(d.pages_to_scan > steady.pages_to_scan);
	assert_true(d.sleep_millisecs <= steady.sleep_millisecs);

	in = base_input();
	in.vms_waiting = 1;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_BOOST);

	in = base_input();
	in.mem_available = 1ull << 30; /* 1 of 16 GiB left */
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	assert_true(d.pressure);

	/* Guests touching new memory long after they started (filling it
	 * at 20 MiB/s together): boost; a trickle (1 MiB/s) or unknown: not. */
	in = base_input();
	in.vm_memory_growth = 20.0 * 1024 * 1024;
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	in.vm_memory_growth = 1024 * 1024;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_STEADY);
	in.vm_memory_growth = -1;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_STEADY);

	/* Merging fast over the last tick (12 MiB/s after the guests filled):
	 * keep at it, without waiting minutes for a whole scan; slow: steady. */
	in = base_input();
	in.merge_rate = 3000;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_BOOST);
	in.merge_rate = 500;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_STEADY);
}

/* ksmd runs at a higher priority exactly while boosting: on a host whose
 * vCPUs keep every core busy it would not get its CPU cap otherwise. */
static void test_policy_ksmd_priority(void **state)
{
	KsmPolicyInput in = base_input();
	KsmDecision d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_STEADY);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_DEFAULT);
	/* VMs booting on a host with memory to spare: a boost, at the
	 * kernel's priority */
	in.vms_booting = 2;
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	assert_false(d.pressure);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_DEFAULT);
	in.vms_booting = 0;
	in.vms_waiting = 2;
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	assert_true(d.pressure);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_BOOST);
	assert_true(KSMD_NICE_BOOST < KSMD_NICE_DEFAULT);
	/* the cap still applies while boosting */
	in.current_pages_to_scan = 4000;
	in.ksmd_cpu = 0.5;
	d = ksm_policy_decide(&in);
	assert_true(d.cpu_capped);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_BOOST);
	/* converged, off and fixed: the kernel's own */
	in = base_input();
	in.have_before = true;
	in.before.full_scans = 1;
	in.now.full_scans = 2;
	in.before.pages_sharing = in.now.pages_sharing = 100000;
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_CONVERGED);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_DEFAULT);
	in.vms_booting = 3;
	in.config.mode = KSM_MODE_OFF;
	assert_int_equal(ksm_policy_decide(&in).ksmd_nice, KSMD_NICE_DEFAULT);
	in.config.mode = KSM_MODE_FIXED;
	assert_int_equal(ksm_policy_decide(&in).ksmd_nice, KSMD_NICE_DEFAULT);
}

static void test_policy_backs_off_when_converged(void **state)
{
	KsmPolicyInput in = base_input();
	in.have_before = true;
	in.before.full_scans = 10;
	in.now.full_scans = 12;
	in.before.pages_sharing = 500000;
	in.now.pages_sharing = 500100; /* +0.02 % over a whole scan */
	KsmDecision d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_CONVERGED);
	assert_true(d.pages_to_scan <= 100);
	assert_true(d.sleep_millisecs >= 100);

	/* still finding many pages (guests filling memory): keep boosting */
	in.now.pages_sharing = 600000;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_BOOST);
	/* finding some: steady */
	in.now.pages_sharing = 510000;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_STEADY);
	/* no full scan since the reference: cannot tell yet... */
	in.now.pages_sharing = 500100;
	in.now.full_scans = 10;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_STEADY);
	/* ...so a converged judgement stands until the next full scan */
	in.previous_phase = KSM_PHASE_CONVERGED;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_CONVERGED);
	in.previous_phase = KSM_PHASE_STEADY;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_STEADY);
	/* booting wins over converged */
	in.now.full_scans = 12;
	in.vms_booting = 2;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_BOOST);

	/* A boost lasts until a whole scan found almost nothing more, past
	 * its trigger: no full scan since the reference, or one that still
	 * found 2 %: boost; one that found 0.02 %: converged. */
	in.vms_booting = 0;
	in.previous_phase = KSM_PHASE_BOOST;
	in.now.full_scans = 10;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_BOOST);
	in.now.full_scans = 12;
	in.now.pages_sharing = 510000;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_BOOST);
	in.now.pages_sharing = 500100;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_CONVERGED);
}

/* The scan rate decided when `current` pages are set and ksmd used `cpu`
 * of a CPU over the last tick (the input keeps both). */
static uint64_t rate_at(KsmPolicyInput *in, uint64_t current, double cpu)
{
	in->current_pages_to_scan = current;
	in->ksmd_cpu = cpu;
	return ksm_policy_decide(in).pages_to_scan;
}

static void test_policy_cpu_cap(void **state)
{
	KsmPolicyInput in = base_input();
	in.vms_booting = 1;             /* wants 4000 pages */
	in.current_pages_to_scan = 4000;
	in.ksmd_cpu = 0.5;              /* twice the 0.25 cap */
	KsmDecision d = ksm_policy_decide(&in);
	assert_true(d.cpu_capped);
	assert_int_equal(d.pages_to_scan, 2000);
	in.ksmd_cpu = 100.0; /* never below the floor */
	d = ksm_policy_decide(&in);
	assert_int_equal(d.pages_to_scan, 64);
	in.ksmd_cpu = 0.1; /* under the cap: full rate */
	d = ksm_policy_decide(&in);
	assert_false(d.cpu_capped);
	assert_int_equal(d.pages_to_scan, 4000);
	in.ksmd_cpu = -1; /* unknown: no cap applied */
	assert_false(ksm_policy_decide(&in).cpu_capped);
	in.config.max_cpu = 0.1;
	in.ksmd_cpu = 0.2;
	d = ksm_policy_decide(&in);
	assert_true(d.cpu_capped);
	assert_int_equal(d.pages_to_scan, 2000);

	/* Under memory pressure the boost cap applies; otherwise max_cpu,
	 * booting or not. */
	in = base_input();
	in.config.boost_max_cpu = 0.75;
	in.vms_booting = 1;
	in.current_pages_to_scan = 4000;
	in.ksmd_cpu = 0.5; /* above max_cpu, under the boost cap */
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	assert_false(d.pressure);
	assert_true(d.cpu_capped);
	assert_int_equal(d.pages_to_scan, 2000);
	in.mem_available = 6ull << 30; /* 6 of 16 GiB: under the default half */
	d = ksm_policy_decide(&in);
	assert_true(d.pressure);
	assert_false(d.cpu_capped);
	/* ...and the rate grows toward the cap, at most doubling per tick */
	assert_int_equal(d.pages_to_scan, 6000);
	assert_int_equal(rate_at(&in, 4000, 0.25), 8000);
	assert_int_equal(rate_at(&in, 80000, 0.1), 100000);
	/* ksmd's CPU unknown: the rate holds; ksmd idle: it doubles */
	assert_int_equal(rate_at(&in, 20000, -1), 20000);
	assert_int_equal(rate_at(&in, 20000, 0), 40000);
	/* never below the plain boost rate while under the cap */
	assert_int_equal(rate_at(&in, 100, 0.7), 4000);
	/* over the cap: scaled down, even below the plain boost rate */
	in.current_pages_to_scan = 4000;
	in.ksmd_cpu = 1.0;
	d = ksm_policy_decide(&in);
	assert_true(d.cpu_capped);
	assert_int_equal(d.pages_to_scan, 3000);
	assert_int_equal(rate_at(&in, 40000, 1.0), 30000);
	in.vms_booting = 0; /* steady, memory back: max_cpu */
	in.mem_available = 12ull << 30;
	in.current_pages_to_scan = 1000;
	in.ksmd_cpu = 0.5;
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_STEADY);
	assert_true(d.cpu_capped);
	assert_int_equal(d.pages_to_scan, 500);
	/* a boost cap under max_cpu never lowers it */
	in.vms_waiting = 1;
	in.config.boost_max_cpu = 0.1;
	in.current_pages_to_scan = 4000;
	in.ksmd_cpu = 0.2;
	d = ksm_policy_decide(&in);
	assert_true(d.pressure);
	assert_false(d.cpu_capped);
}

/* Memory under pressure: starts waiting, MemAvailable under
 * pressure_available of MemTotal (default half), or more nominal memory in
 * mergeable VMs than is available. */
static void test_policy_memory_pressure(void **state)
{
	KsmPolicyInput in = base_input(); /* 12 of 16 GiB available */
	assert_false(ksm_policy_decide(&in).pressure);
	in.mem_available = 7ull << 30;
	KsmDecision d = ksm_policy_decide(&in);
	assert_true(d.pressure);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	in.config.pressure_available = 0.25; /* the operator's share */
	assert_false(ksm_policy_decide(&in).pressure);
	in.mem_available = 3ull << 30;
	assert_true(ksm_policy_decide(&in).pressure);
	in.config.pressure_available = 1.0; /* always */
	in.mem_available = 15ull << 30;
	assert_true(ksm_policy_decide(&in).pressure);
	/* 12 of 16 GiB available, the VMs could still touch 3 GiB: 9 would be
	 * left, over half; 5 GiB: 7 left, pressure */
	in = base_input();
	in.vm_untouched = 3ull << 30;
	assert_false(ksm_policy_decide(&in).pressure);
	in.vm_untouched = 5ull << 30;
	d = ksm_policy_decide(&in);
	assert_true(d.pressure);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_BOOST);

	/* Pressure lasts past its cause until a whole scan found almost
	 * nothing more... */
	in = base_input();
	in.previous_phase = KSM_PHASE_BOOST;
	in.previous_pressure = true;
	d = ksm_policy_decide(&in);
	assert_true(d.pressure);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	in.have_before = true;
	in.before.full_scans = 3;
	in.now.full_scans = 4;
	in.before.pages_sharing = 1000000;
	in.now.pages_sharing = 1050000; /* +5 % in a scan: still merging */
	assert_true(ksm_policy_decide(&in).pressure);
	/* ...and not past that, even with memory short: nothing left to
	 * merge, ksmd's CPU would buy nothing */
	in.now.pages_sharing = 1000500;
	in.mem_available = 2ull << 30;
	d = ksm_policy_decide(&in);
	assert_false(d.pressure);
	assert_int_equal(d.phase, KSM_PHASE_CONVERGED);
	assert_int_equal(d.ksmd_nice, KSMD_NICE_DEFAULT);
	/* converged stands until the next whole scan, unless guests touch
	 * new memory: then a boost, and the pressure again */
	in.previous_phase = KSM_PHASE_CONVERGED;
	in.previous_pressure = false;
	in.now.full_scans = 3;
	assert_int_equal(ksm_policy_decide(&in).phase, KSM_PHASE_CONVERGED);
	in.vm_memory_growth = 50.0 * 1024 * 1024;
	d = ksm_policy_decide(&in);
	assert_int_equal(d.phase, KSM_PHASE_BOOST);
	assert_false(d.pressure);
	in.previous_phase = KSM_PHASE_BOOST;
	assert_true(ksm_policy_decide(&in).pressure);
	/* fixed mode: no pressure boost */
	in.config.mode = KSM_MODE_FIXED;
	assert_false(ksm_policy_decide(&in).pressure);
}

static void test_ksmd_lookup_and_cpu(void **state)
{
	char *root = fake_tree_new();
	fake_write(root, "proc/1/comm", "init\n");
	fake_write(root, "proc/57/comm", "ksmd\n");
	fake_write(root, "proc/57/stat",
		   "57 (ksmd) S 2 0 0 0 -1 2097248 0 0 0 0 1234 56 0 0 25 5 1 0 8 0 0 "
		   "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0\n");
	fake_write(root, "proc/58/comm", "kworker/0:1\n");
	fake_write(root, "proc/self/comm", "x\n");
	int fd = fake_open(root);
	assert_int_equal(ksm_find_ksmd(fd), 57);
	uint64_t t;
	assert_int_equal(ksm_read_cpu_ticks(fd, 57, &t), 0);
	assert_int_equal(t, 1234 + 56);
	assert_int_equal(ksm_read_cpu_ticks(fd, 99, &t), -ENOENT);
	fake_write(root, "proc/58/stat", "garbage\n");
	assert_int_equal(ksm_read_cpu_ticks(fd, 58, &t), -EINVAL);
	close(fd);
	fake_tree_free(root);
}

/* The real kernel's tree, read-only: must parse whatever this kernel has. */
static void test_real_kernel(void **state)
{
	int fd = open("/", O_RDONLY | O_DIRECTORY);
	KsmStats s;
	assert_int_equal(ksm_read_stats(fd, &s), 0);
	if (s.present)
		assert_true(s.run >= 0 && s.run <= 2);
	/* The real ksmd exists where KSM does. */
	if (s.present) {
		pid_t k = ksm_find_ksmd(fd);
		uint64_t t;
		assert_true(k > 0);
		assert_int_equal(ksm_read_cpu_ticks(fd, k, &t), 0);
	}
	KsmProcess p;
	assert_int_equal(ksm_read_process(fd, getpid(), &p), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_absent),
		cmocka_unit_test(test_read_all),
		cmocka_unit_test(test_old_kernel_without_optional_files),
		cmocka_unit_test(test_garbage_is_an_error),
		cmocka_unit_test(test_write_knob),
		cmocka_unit_test(test_process),
		cmocka_unit_test(test_real_kernel),
		cmocka_unit_test(test_policy_modes),
		cmocka_unit_test(test_policy_boost_when_booting_waiting_or_tight),
		cmocka_unit_test(test_policy_memory_pressure),
		cmocka_unit_test(test_policy_backs_off_when_converged),
		cmocka_unit_test(test_policy_cpu_cap),
		cmocka_unit_test(test_policy_ksmd_priority),
		cmocka_unit_test(test_ksmd_lookup_and_cpu),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
