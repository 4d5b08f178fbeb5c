/* SPDX-License-Identifier: Apache-2.0 */
#include "balloon-policy.h"

#include <stdlib.h>

const char *balloon_phase_to_string(BalloonPhase p)
{
	switch (p) {
	case BALLOON_PHASE_RECLAIMING:
		return "reclaiming";
	case BALLOON_PHASE_HOLDING:
		return "holding";
	case BALLOON_PHASE_RETURNING:
		return "returning";
	case BALLOON_PHASE_IDLE:
	default:
		return "idle";
	}
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* The target in force, within floor..target. */
static uint64_t current_of(const BalloonPolicyVm *v)
{
	uint64_t c = v->current ? min_u64(v->current, v->target) : v->target;
	return c < v->floor ? v->floor : c;
}

static bool fresh(const BalloonPolicyConfig *c, const BalloonPolicyVm *v)
{
	return v->has_stats && v->stats_age <= c->stale_after;
}

/* The smallest size that leaves the guest `margin` available: shrinking it
 * from its size now (actual) takes that much from what it has available.
 * Never below the floor. */
static uint64_t lowest_of(const BalloonPolicyConfig *c, const BalloonPolicyVm *v, uint64_t cur)
{
	uint64_t size = v->actual ? v->actual : cur;
	uint64_t used = size > v->guest_available ? size - v->guest_available : 0;
	uint64_t lo = used + c->margin;
	return lo < v->floor ? v->floor : lo;
}

/* What a guest has available for ordering; without fresh stats, nothing. */
static uint64_t avail_of(const BalloonPolicyConfig *c, const BalloonPolicyVm *v)
{
	return fresh(c, v) ? v->guest_available : 0;
}

/* Indices by available memory, most first (descending) or least first;
 * ties keep input order (insertion sort: stable, and n is small). */
static void order_by_available(const BalloonPolicyConfig *c, const BalloonPolicyVm *vms, size_t n,
			       bool descending, size_t *idx)
{
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		uint64_t a = avail_of(c, &vms[i]);
		while (j > 0) {
			uint64_t b = avail_of(c, &vms[idx[j - 1]]);
			if (descending ? b >= a : b <= a)
				break;
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = i;
	}
}

static void reclaim(const BalloonPolicyConfig *c, uint64_t avail, BalloonPolicyVm *vms, size_t n,
		    const size_t *idx, BalloonPolicyResult *ret)
{
	/* Balloons still inflating towards their target will free that much,
	 * and what they gave up lately may not show in MemAvailable yet (the
	 * larger: a balloon still inflating is part of what it gave up). */
	uint64_t inflight = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t cur = current_of(&vms[i]);
		uint64_t coming = vms[i].actual > cur ? vms[i].actual - cur : 0;
		if (vms[i].floor)
			inflight += coming > vms[i].settling ? coming : vms[i].settling;
	}
	uint64_t need = avail <= c->high ? c->high + 1 - avail : 0;
	need = need > inflight ? need - inflight : 0;
	ret->needed = need;
	for (size_t k = 0; k < n; k++) {
		BalloonPolicyVm *v = &vms[idx[k]];
		if (!v->floor || !fresh(c, v))
			continue;
		uint64_t cur = current_of(v), lo = lowest_of(c, v, cur);
		if (lo > cur) {
			/* The guest uses more than it has room for: some back. */
			if (lo - cur >= c->min_step || lo >= v->target)
				v->new_target =
					min_u64(v->target, cur + min_u64(lo - cur, c->max_step));
			ret->returned += v->new_target - cur;
			continue;
		}
		uint64_t room = cur - lo;
		uint64_t take = min_u64(min_u64(room, c->max_step), need);
		if (take && take < c->min_step) /* round a small need up, or leave it */
			take = room >= c->min_step ? c->min_step : lo == v->floor ? room : 0;
		v->new_target = cur - take;
		need -= min_u64(take, need);
		ret->reclaimed += take;
	}
}

static void give_back(const BalloonPolicyConfig *c, uint64_t avail, BalloonPolicyVm *vms, size_t n,
		      const size_t *idx, BalloonPolicyResult *ret)
{
	/* Balloons still deflating will take that much from the host. */
	uint64_t budget = avail - c->high;
	for (size_t i = 0; i < n; i++) {
		uint64_t cur = current_of(&vms[i]);
		if (vms[i].floor && vms[i].actual && vms[i].actual < cur)
			budget -= min_u64(budget, cur - vms[i].actual);
	}
	for (size_t k = 0; k < n; k++) {
		BalloonPolicyVm *v = &vms[idx[k]];
		uint64_t cur = current_of(v);
		if (!v->floor || cur >= v->target)
			continue;
		uint64_t give = min_u64(min_u64(v->target - cur, c->max_step), budget);
		if (give < c->min_step && cur + give != v->target)
			continue;
		v->new_target = cur + give;
		budget -= give;
		ret->returned += give;
	}
}

void balloon_policy_decide(const BalloonPolicyConfig *c, uint64_t avail, bool pressure,
			   BalloonPolicyVm *vms, size_t n, BalloonPolicyResult *ret)
{
	*ret = (BalloonPolicyResult){0};
	if (avail < c->low)
		pressure = true;
	else if (avail > c->high)
		pressure = false;
	ret->pressure = pressure;
	bool below = false;
	for (size_t i = 0; i < n; i++) {
		BalloonPolicyVm *v = &vms[i];
		v->new_target = v->floor ? current_of(v) : v->target;
		below |= v->new_target < v->target;
	}
	size_t *idx = n ? calloc(n, sizeof(*idx)) : NULL;
	if (n && !idx)
		return; /* every VM holds */
	if (pressure) {
		ret->phase = BALLOON_PHASE_RECLAIMING;
		order_by_available(c, vms, n, true, idx);
		reclaim(c, avail, vms, n, idx, ret);
	} else if (avail > c->high && below) {
		ret->phase = BALLOON_PHASE_RETURNING;
		order_by_available(c, vms, n, false, idx);
		give_back(c, avail, vms, n, idx, ret);
	} else {
		ret->phase = below ? BALLOON_PHASE_HOLDING : BALLOON_PHASE_IDLE;
	}
	free(idx);
}
