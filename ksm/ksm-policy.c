/* SPDX-License-Identifier: Apache-2.0 */
/* KSM tuning: scan hard while VMs boot or memory is tight, back off once
 * merging has converged, and never let ksmd use more CPU than its cap.
 * Pure: figures in, knob values out. */
#include <errno.h>
#include <string.h>

#include "ksm.h"

/* Scan rates, pages per wake-up, and the pause between wake-ups. */
#define BOOST_PAGES 4000
#define BOOST_SLEEP 10
#define STEADY_PAGES 1000
#define STEADY_SLEEP 20
#define CONVERGED_PAGES 100
#define CONVERGED_SLEEP 200
#define MIN_PAGES 64
/* Under memory pressure the boost follows its CPU cap instead of a fixed
 * rate: 4000 pages per 10 ms kept ksmd at 40 % of a core here, and one
 * scan of 100 filled guests (8.5 million pages) took 85 s at that rate.
 * The rate may at most double per tick, up to this. */
#define PRESSURE_MAX_PAGES 100000
#define PRESSURE_MAX_STEP 2.0
/* Default for pressure_available. */
#define PRESSURE_AVAILABLE 0.5
/* Converged: merging grew by less than this share over the interval. */
#define CONVERGED_GROWTH 0.01
/* Still merging fast: keep boosting past the boot window. */
#define BOOST_GROWTH 0.05
/* Guests touching new memory at this rate (bytes/s, all VMs together):
 * there is fresh memory to merge, however long ago they started. */
#define BOOST_MEMORY_GROWTH (8.0 * 1024 * 1024)
/* Merging more than this (pages/s, 8 MiB/s of 4 KiB pages) over the last
 * tick: much is left to merge, keep at it. (A whole scan of 100 VMs takes
 * minutes, too long to wait for before judging.) */
#define BOOST_MERGE_RATE 2048.0

const char *ksm_mode_to_string(KsmMode m)
{
	return m == KSM_MODE_OFF ? "off" : m == KSM_MODE_FIXED ? "fixed" : "auto";
}

int ksm_mode_from_string(const char *s, KsmMode *ret)
{
	if (!strcmp(s, "auto"))
		*ret = KSM_MODE_AUTO;
	else if (!strcmp(s, "off"))
		*ret = KSM_MODE_OFF;
	else if (!strcmp(s, "fixed"))
		*ret = KSM_MODE_FIXED;
	else
		return -EINVAL;
	return 0;
}

const char *ksm_phase_to_string(KsmPhase p)
{
	switch (p) {
	case KSM_PHASE_OFF:
		return "off";
	case KSM_PHASE_FIXED:
		return "fixed";
	case KSM_PHASE_BOOST:
		return "boost";
	case KSM_PHASE_STEADY:
		return "steady";
	case KSM_PHASE_CONVERGED:
		return "converged";
	default:
		return "?";
	}
}

static bool converged(const KsmPolicyInput *in)
{
	/* No full pass over memory since the reference: nothing new to judge
	 * by, so the last judgement stands (the phase must not flap between
	 * scans). */
	if (!in->have_before || in->now.full_scans <= in->before.full_scans)
		return in->previous_phase == KSM_PHASE_CONVERGED;
	uint64_t a = in->before.pages_sharing, b = in->now.pages_sharing;
	uint64_t growth = b > a ? b - a : 0;
	uint64_t base = b > 1000 ? b : 1000;
	return (double)growth < CONVERGED_GROWTH * (double)base;
}

/* Memory under pressure: starts wait for memory, or little is available,
 * or would be once the mergeable VMs touch what they may (their memory as
 * defined less what they have touched already) if merging did not keep up:
 * 44 guests booting took MemAvailable from 19 to 12 GiB in 2 minutes while
 * KSM waited for it to get there. Like a boost, it lasts until a whole
 * scan found almost nothing more, and not past that: with everything merged, ksmd's CPU buys
 * nothing (a host of 100 converged VMs, 50 GiB nominal on 24, kept ksmd at
 * 74 % of a core for nothing). */
static bool under_pressure(const KsmPolicyInput *in, bool conv)
{
	double share =
	    in->config.pressure_available > 0 ? in->config.pressure_available : PRESSURE_AVAILABLE;
	uint64_t projected = in->mem_available > in->vm_untouched
				     ? in->mem_available - in->vm_untouched
				     : 0;
	bool now = in->vms_waiting > 0 ||
		   (in->mem_total > 0 && (double)projected < share * (double)in->mem_total);
	return (now || in->previous_pressure) && !conv;
}

/* Scan hard: memory under pressure, VMs booting, guests touching new
 * memory or merging going fast; or a whole scan still found much to merge
 * (guests filling their memory after boot); or a boost that has not seen a
 * whole scan find almost nothing more (it ends then, not when its trigger
 * does: the last pages of a boot storm need two more scans, KSM's unstable
 * tree, and at the steady rate one scan of 100 filled guests took 3 minutes
 * here). */
static bool boosting(const KsmPolicyInput *in, bool pressure, bool conv)
{
	if (pressure || in->vms_booting > 0 || in->vms_waiting > 0 ||
	    in->vm_memory_growth > BOOST_MEMORY_GROWTH || in->merge_rate > BOOST_MERGE_RATE)
		return true;
	uint64_t base = in->before.pages_sharing > 1000 ? in->before.pages_sharing : 1000;
	if (in->have_before && in->now.full_scans > in->before.full_scans &&
	    in->now.pages_sharing >
		in->before.pages_sharing + (uint64_t)(BOOST_GROWTH * (double)base))
		return true;
	return in->previous_phase == KSM_PHASE_BOOST && !conv;
}

KsmDecision ksm_policy_decide(const KsmPolicyInput *in)
{
	KsmDecision d = {.run = 1, .ksmd_nice = KSMD_NICE_DEFAULT};
	switch (in->config.mode) {
	case KSM_MODE_OFF:
		d.run = 0;
		d.phase = KSM_PHASE_OFF;
		d.pages_to_scan = in->now.pages_to_scan;
		d.sleep_millisecs = in->now.sleep_millisecs;
		return d;
	case KSM_MODE_FIXED:
		d.phase = KSM_PHASE_FIXED;
		d.pages_to_scan = in->config.fixed_pages_to_scan;
		d.sleep_millisecs = in->config.fixed_sleep_millisecs;
		return d;
	case KSM_MODE_AUTO:
	default:
		break;
	}

	bool conv = converged(in);
	bool pressure = under_pressure(in, conv);
	if (boosting(in, pressure, conv)) {
		d.phase = KSM_PHASE_BOOST;
		d.pages_to_scan = BOOST_PAGES;
		d.sleep_millisecs = BOOST_SLEEP;
		if (pressure) {
			d.pressure = true;
			d.ksmd_nice = KSMD_NICE_BOOST;
		}
	} else if (conv) {
		d.phase = KSM_PHASE_CONVERGED;
		d.pages_to_scan = CONVERGED_PAGES;
		d.sleep_millisecs = CONVERGED_SLEEP;
	} else {
		d.phase = KSM_PHASE_STEADY;
		d.pages_to_scan = STEADY_PAGES;
		d.sleep_millisecs = STEADY_SLEEP;
	}

	/* The CPU cap: ksmd's cost is about proportional to pages scanned per
	 * second, so scale the current rate to fit. Under memory pressure the
	 * boost cap applies, and the rate also grows toward it: memory is at
	 * stake, and a whole scan of 100 guests at 25 % of a CPU took 3
	 * minutes here. Without pressure (a few VMs booting on a host with
	 * memory to spare) merging can wait: max_cpu, the kernel's priority. */
	double cap = in->config.max_cpu > 0 ? in->config.max_cpu : 0.25;
	if (d.pressure && in->config.boost_max_cpu > cap)
		cap = in->config.boost_max_cpu;
	if (in->ksmd_cpu > cap && in->current_pages_to_scan > 0) {
		double fit = (double)in->current_pages_to_scan * cap / in->ksmd_cpu;
		uint64_t pages = fit < MIN_PAGES ? MIN_PAGES : (uint64_t)fit;
		if (pages < d.pages_to_scan || d.pressure) {
			d.pages_to_scan = pages;
			d.cpu_capped = true;
		}
	} else if (d.pressure && in->current_pages_to_scan > 0) {
		/* ksmd's CPU unknown: hold the rate */
		double step = in->ksmd_cpu < 0	  ? 1.0
			      : in->ksmd_cpu == 0 ? PRESSURE_MAX_STEP
						  : cap / in->ksmd_cpu;
		double want = (double)in->current_pages_to_scan *
			      (step < PRESSURE_MAX_STEP ? step : PRESSURE_MAX_STEP);
		if (want > PRESSURE_MAX_PAGES)
			want = PRESSURE_MAX_PAGES;
		if (want > (double)d.pages_to_scan)
			d.pages_to_scan = (uint64_t)want;
	}
	return d;
}
