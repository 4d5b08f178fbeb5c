/* SPDX-License-Identifier: Apache-2.0 */
/* Automatic ballooning policy: which balloon target each guest gets, from
 * the host's free memory and the guests' own memory statistics. Pure: it
 * takes plain structs and does no I/O; hsd (balloon.c) reads the figures
 * and applies the targets over QMP. Every size is in MiB.
 *
 * Host pressure, with hysteresis: it starts when MemAvailable < low and
 * ends when MemAvailable > high; in between it stays as it was.
 * - Under pressure: reclaim what brings MemAvailable back above high
 *   (less what balloons still inflating will give, or gave up lately:
 *   BalloonPolicyVm.settling), from the VMs whose
 *   guests have the most memory available first (ties: input order), each
 *   by at most max_step per tick, never below the VM's floor nor below
 *   what its guest uses plus margin. A VM without fresh stats (none, or
 *   older than stale_after) is not inflated; one whose guest now uses more
 *   than its target leaves room for gets back up to used + margin (by at
 *   most max_step, never above its configured target).
 * - No pressure and MemAvailable > high: give back towards each VM's
 *   configured target, max_step per VM per tick, the guests with the least
 *   available memory first, in all at most what keeps MemAvailable above
 *   high (so giving back does not bring the pressure back).
 * - No pressure, between the watermarks: hold.
 * A VM with floor 0 takes no part: its target is its configured one. A
 * target is never below the floor nor above the configured target. A
 * target moves by min_step at least (smaller moves would chase the noise of
 * the guest's figures), except to reach its floor or configured target. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct BalloonPolicyConfig {
	uint64_t low, high; /* host MemAvailable watermarks */
	uint64_t max_step;  /* most a VM's target moves per tick */
	/* Least it moves: smaller changes are not made (the guest's figures
	 * wobble by a few MiB), unless they reach the floor or the target. */
	uint64_t min_step;
	uint64_t margin;    /* a guest keeps this above what it uses */
	double stale_after; /* seconds: older guest stats are not used */
} BalloonPolicyConfig;

typedef struct BalloonPolicyVm {
	/* Input. */
	uint64_t target;  /* configured target (balloon_mib, or all of memory) */
	uint64_t floor;	  /* balloon_floor_mib; 0: not in the policy */
	uint64_t current; /* the target in force now (0: the configured one) */
	uint64_t actual;  /* what the guest has now (0: unknown) */
	/* What its balloon gave up lately that the host may not count as
	 * available yet (a huge page of guest RAM freed only in part waits for
	 * the kernel's deferred split): taken as still on its way, like a
	 * balloon still inflating, so it is not reclaimed twice. */
	uint64_t settling;
	bool has_stats;
	uint64_t guest_available; /* the guest's MemAvailable */
	double stats_age;	  /* seconds */
	/* Output. */
	uint64_t new_target;
} BalloonPolicyVm;

typedef enum BalloonPhase {
	BALLOON_PHASE_IDLE,	  /* nothing to do: no pressure, all at target */
	BALLOON_PHASE_RECLAIMING, /* under pressure */
	BALLOON_PHASE_HOLDING,	  /* between the watermarks */
	BALLOON_PHASE_RETURNING,  /* pressure over, giving memory back */
} BalloonPhase;

typedef struct BalloonPolicyResult {
	bool pressure; /* the state after this tick */
	BalloonPhase phase;
	uint64_t needed;    /* under pressure: what was still to reclaim */
	uint64_t reclaimed; /* sum of the targets lowered this tick */
	uint64_t returned;  /* sum of the targets raised this tick */
} BalloonPolicyResult;

/* Sets vms[i].new_target for every VM. `pressure` is the state before
 * this tick. */
void balloon_policy_decide(const BalloonPolicyConfig *config, uint64_t mem_available, bool pressure,
			   BalloonPolicyVm *vms, size_t n_vms, BalloonPolicyResult *ret);

const char *balloon_phase_to_string(BalloonPhase p);
