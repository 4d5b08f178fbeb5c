/* SPDX-License-Identifier: Apache-2.0 */
/* The automatic ballooning policy (daemon/balloon-policy.c) on plain
 * structs. Sizes in MiB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "balloon-policy.h"

static const BalloonPolicyConfig cfg = {
    .low = 1000,
    .high = 1500,
    .max_step = 100,
    .min_step = 16,
    .margin = 64,
    .stale_after = 30,
};

/* A VM of 1024 MiB in the policy (floor 128), at its target, whose guest
 * has `avail` MiB available (fresh stats). */
static BalloonPolicyVm vm_with(uint64_t avail)
{
	return (BalloonPolicyVm){.target = 1024,
				 .floor = 128,
				 .actual = 1024,
				 .has_stats = true,
				 .guest_available = avail,
				 .stats_age = 2};
}

/* v with its balloon at `size` MiB (target in force and actual). */
static BalloonPolicyVm sized(BalloonPolicyVm v, uint64_t size)
{
	v.current = v.actual = size;
	return v;
}

/* The target a lone VM gets. */
static uint64_t decide_one(BalloonPolicyVm v, uint64_t avail, bool pressure)
{
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, avail, pressure, &v, 1, &r);
	return v.new_target;
}

static void test_hysteresis(void **state)
{
	BalloonPolicyVm v[1] = {vm_with(800)};
	BalloonPolicyResult r;
	/* Below low: pressure starts. */
	balloon_policy_decide(&cfg, 900, false, v, 1, &r);
	assert_true(r.pressure);
	assert_int_equal(r.phase, BALLOON_PHASE_RECLAIMING);
	assert_int_equal(v[0].new_target, 924);
	/* Between the watermarks it stays on... */
	v[0] = vm_with(800);
	balloon_policy_decide(&cfg, 1200, true, v, 1, &r);
	assert_true(r.pressure);
	assert_int_equal(v[0].new_target, 924);
	/* ... or off: hold. */
	v[0] = vm_with(800);
	v[0].current = 900;
	v[0].actual = 900;
	balloon_policy_decide(&cfg, 1200, false, v, 1, &r);
	assert_false(r.pressure);
	assert_int_equal(r.phase, BALLOON_PHASE_HOLDING);
	assert_int_equal(v[0].new_target, 900);
	/* Above high: off, memory goes back. */
	balloon_policy_decide(&cfg, 1600, true, v, 1, &r);
	assert_false(r.pressure);
	assert_int_equal(r.phase, BALLOON_PHASE_RETURNING);
	assert_int_equal(v[0].new_target, 1000);
	/* All at target: idle. */
	v[0] = vm_with(800);
	balloon_policy_decide(&cfg, 1600, false, v, 1, &r);
	assert_int_equal(r.phase, BALLOON_PHASE_IDLE);
	assert_int_equal(v[0].new_target, 1024);
}

static void test_most_available_first(void **state)
{
	BalloonPolicyVm v[3] = {vm_with(300), vm_with(800), vm_with(500)};
	BalloonPolicyResult r;
	/* 51 MiB needed (to 1501): all from the one with most available. */
	balloon_policy_decide(&cfg, 1450, true, v, 3, &r);
	assert_int_equal(r.needed, 51);
	assert_int_equal(v[0].new_target, 1024);
	assert_int_equal(v[1].new_target, 973);
	assert_int_equal(v[2].new_target, 1024);
	/* 251 needed: a step each from the richest, then the next. */
	for (int i = 0; i < 3; i++)
		v[i] = vm_with(i == 0 ? 300 : i == 1 ? 800 : 500);
	balloon_policy_decide(&cfg, 1250, true, v, 3, &r);
	assert_int_equal(v[1].new_target, 924);
	assert_int_equal(v[2].new_target, 924);
	assert_int_equal(v[0].new_target, 973);
	assert_int_equal(r.reclaimed, 251);
	/* Lots needed: bounded steps, one per VM per tick. */
	for (int i = 0; i < 3; i++)
		v[i] = vm_with(600);
	balloon_policy_decide(&cfg, 10, true, v, 3, &r);
	for (int i = 0; i < 3; i++)
		assert_int_equal(v[i].new_target, 924);
	assert_int_equal(r.reclaimed, 300);
}

static void test_ties_keep_order(void **state)
{
	BalloonPolicyVm v[3] = {vm_with(100), vm_with(700), vm_with(700)};
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, 1451, true, v, 3, &r);
	assert_int_equal(v[1].new_target, 974);
	assert_int_equal(v[2].new_target, 1024);
	assert_int_equal(v[0].new_target, 1024);
}

static void test_floor_and_usage(void **state)
{
	BalloonPolicyResult r;
	/* Never below the floor. */
	BalloonPolicyVm v[2] = {vm_with(900), vm_with(900)};
	v[0].floor = 1000;
	v[1].current = v[1].actual = 180;
	v[1].guest_available = 150; /* uses 30: 94 with the margin, floor 128 */
	balloon_policy_decide(&cfg, 0, true, v, 2, &r);
	assert_int_equal(v[0].new_target, 1000);
	assert_int_equal(v[1].new_target, 128);
	/* Never below what the guest uses plus the margin. */
	assert_int_equal(decide_one(vm_with(100), 0, true), 988);
	/* A guest that uses more than its target leaves room for gets some
	 * back, even under pressure, a step at a time. */
	assert_int_equal(decide_one(sized(vm_with(10), 500), 0, true), 554);
	/* A floor raised above the target in force lifts it. */
	BalloonPolicyVm u = sized(vm_with(400), 300);
	u.floor = 600;
	assert_int_equal(decide_one(u, 1200, false), 600);
}

static void test_no_or_stale_stats(void **state)
{
	BalloonPolicyVm v[3] = {vm_with(900), vm_with(900), vm_with(100)};
	v[0].has_stats = false;
	v[1].stats_age = 31;
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, 0, true, v, 3, &r);
	assert_int_equal(v[0].new_target, 1024);
	assert_int_equal(v[1].new_target, 1024);
	assert_int_equal(v[2].new_target, 988);
	/* Giving back needs no stats. */
	v[0].current = v[0].actual = 500;
	balloon_policy_decide(&cfg, 2000, false, v, 3, &r);
	assert_int_equal(v[0].new_target, 600);
}

static void test_not_in_policy(void **state)
{
	BalloonPolicyVm v[2] = {vm_with(900), vm_with(900)};
	v[0].floor = 0;
	v[0].current = 300; /* e.g. left by the policy before its floor went */
	v[0].target = 512;
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, 0, true, v, 2, &r);
	assert_int_equal(v[0].new_target, 512);
	assert_int_equal(v[1].new_target, 924);
}

static void test_inflight_counts(void **state)
{
	/* A balloon still inflating (actual 1024, target 800) will give 224:
	 * nothing more is taken for 200 needed. */
	BalloonPolicyVm v[2] = {vm_with(900), vm_with(900)};
	v[0].current = 800;
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, 1301, true, v, 2, &r);
	assert_int_equal(r.needed, 0);
	assert_int_equal(v[0].new_target, 800);
	assert_int_equal(v[1].new_target, 1024);
	/* So is what a balloon gave up lately (not in MemAvailable yet); the
	 * larger of the two counts, not both. */
	v[0].settling = 224;
	balloon_policy_decide(&cfg, 1101, true, v, 2, &r);
	assert_int_equal(r.needed, 400 - 224);
	/* Settled, in part. */
	v[0] = vm_with(900);
	v[0].current = v[0].actual = 800;
	v[0].settling = 224;
	balloon_policy_decide(&cfg, 1301, true, v, 2, &r);
	assert_int_equal(r.needed, 0);
	assert_int_equal(v[1].new_target, 1024);
	v[0].settling = 100;
	balloon_policy_decide(&cfg, 1301, true, v, 2, &r);
	assert_int_equal(r.needed, 100);
	assert_int_equal(v[0].new_target + v[1].new_target, 800 + 1024 - 100);
}

static void test_give_back(void **state)
{
	/* 200 above high: two steps of 100, least available first. */
	BalloonPolicyVm v[3] = {vm_with(400), vm_with(100), vm_with(200)};
	for (int i = 0; i < 3; i++)
		v[i].current = v[i].actual = 500;
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, 1700, false, v, 3, &r);
	assert_int_equal(v[1].new_target, 600);
	assert_int_equal(v[2].new_target, 600);
	assert_int_equal(v[0].new_target, 500);
	assert_int_equal(r.returned, 200);
	/* Never above the target; a balloon deflating counts against the
	 * budget. */
	BalloonPolicyVm u[2] = {vm_with(100), vm_with(100)};
	u[0].current = 1000;
	u[0].actual = 1000;
	u[1].current = 900;
	u[1].actual = 700; /* 200 still coming back */
	balloon_policy_decide(&cfg, 1750, false, u, 2, &r);
	assert_int_equal(u[0].new_target, 1024);
	assert_int_equal(u[1].new_target, 926);
	/* A target the user lowered below the one in force wins. */
	u[0] = vm_with(100);
	u[0].current = 1000;
	u[0].target = 512;
	balloon_policy_decide(&cfg, 1200, false, u, 1, &r);
	assert_int_equal(u[0].new_target, 512);
}

static void test_small_moves(void **state)
{
	/* 5 MiB needed: rounded up to a whole min_step. */
	assert_int_equal(decide_one(vm_with(800), 1496, true), 1008);
	/* A guest 20 MiB short of its margin gets them back (it uses 954 of
	 * 998: lowest 1018), one 14 MiB short does not (its figures wobble),
	 * and 6 MiB of room are not taken, unless that reaches the floor. */
	assert_int_equal(decide_one(sized(vm_with(44), 998), 0, true), 1018);
	assert_int_equal(decide_one(sized(vm_with(50), 998), 0, true), 998);
	assert_int_equal(decide_one(sized(vm_with(70), 998), 0, true), 998);
	assert_int_equal(decide_one(sized(vm_with(900), 138), 0, true), 128);
	/* Giving back: less than min_step only when it reaches the target
	 * (10 MiB above high: nothing; 30: the 24 that reach it). */
	assert_int_equal(decide_one(sized(vm_with(400), 1000), 1510, false), 1000);
	assert_int_equal(decide_one(sized(vm_with(400), 1000), 1530, false), 1024);
}

static void test_empty(void **state)
{
	BalloonPolicyResult r;
	balloon_policy_decide(&cfg, 0, false, NULL, 0, &r);
	assert_true(r.pressure);
	assert_int_equal(r.reclaimed, 0);
	assert_string_equal(balloon_phase_to_string(r.phase), "reclaiming");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hysteresis),
	    cmocka_unit_test(test_most_available_first),
	    cmocka_unit_test(test_ties_keep_order),
	    cmocka_unit_test(test_floor_and_usage),
	    cmocka_unit_test(test_no_or_stale_stats),
	    cmocka_unit_test(test_not_in_policy),
	    cmocka_unit_test(test_inflight_counts),
	    cmocka_unit_test(test_give_back),
	    cmocka_unit_test(test_small_moves),
	    cmocka_unit_test(test_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
