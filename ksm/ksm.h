/* SPDX-License-Identifier: Apache-2.0 */
/* KSM (kernel samepage merging): reads and writes /sys/kernel/mm/ksm
 * through a root directory fd, so tests point it at a fake tree. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct KsmStats {
	bool present; /* the kernel has KSM */
	int run;      /* 0 stop, 1 run, 2 unmerge */
	uint64_t pages_to_scan;
	uint64_t sleep_millisecs;
	uint64_t pages_shared;   /* shared pages in use */
	uint64_t pages_sharing;  /* sites sharing them: the saving */
	uint64_t pages_unshared; /* unique pages checked repeatedly */
	uint64_t pages_volatile; /* changing too fast to merge */
	uint64_t full_scans;
	int merge_across_nodes; /* -1 when absent */
	bool has_general_profit;
	int64_t general_profit; /* bytes, may be negative */
	bool has_zero_pages;
	uint64_t ksm_zero_pages;
	bool has_use_zero_pages;
	int use_zero_pages;
} KsmStats;

/* rootfd: "/" or a fake tree with sys/kernel/mm/ksm/. Returns 0 with
 * present=false when the kernel has no KSM. */
int ksm_read_stats(int rootfd, KsmStats *ret);
/* Bytes saved by merging: pages_sharing (+ zero pages) times the page
 * size. */
uint64_t ksm_saved_bytes(const KsmStats *s, long page_size);
/* Writes one knob (run, pages_to_scan, sleep_millisecs,
 * merge_across_nodes, use_zero_pages). */
int ksm_write_knob(int rootfd, const char *knob, uint64_t value);

/* Per process: /proc/PID/ksm_merging_pages and, where present, ksm_stat. */
typedef struct KsmProcess {
	bool present;
	uint64_t merging_pages;
	bool has_profit;
	int64_t profit;
} KsmProcess;
int ksm_read_process(int rootfd, pid_t pid, KsmProcess *ret);

/* ---- the tuning policy (pure) ---- */

typedef enum KsmMode {
	KSM_MODE_AUTO,  /* hsd tunes pages_to_scan / sleep_millisecs */
	KSM_MODE_OFF,   /* run=0: stop merging (already merged pages stay) */
	KSM_MODE_FIXED, /* the operator's values */
} KsmMode;

const char *ksm_mode_to_string(KsmMode m);
int ksm_mode_from_string(const char *s, KsmMode *ret);

typedef struct KsmConfig {
	KsmMode mode;
	uint64_t fixed_pages_to_scan;   /* KSM_MODE_FIXED */
	uint64_t fixed_sleep_millisecs; /* KSM_MODE_FIXED */
	double max_cpu;                 /* ksmd's CPU cap in auto mode, fraction of one CPU */
	double boost_max_cpu;           /* ...while boosting under memory pressure */
	/* Memory is under pressure below this share of MemTotal available
	 * (or when starts wait for memory, or the mergeable VMs could touch
	 * more than is available): only then, and until merging converged,
	 * does ksmd get boost_max_cpu and a higher priority. */
	double pressure_available;
} KsmConfig;

typedef struct KsmPolicyInput {
	KsmConfig config;
	KsmStats now;              /* current counters */
	KsmStats before;           /* counters one interval ago */
	bool have_before;
	double interval;           /* seconds between the two */
	double ksmd_cpu;           /* ksmd's CPU use over the interval, fraction of one CPU; <0 unknown */
	uint64_t mem_total;        /* bytes */
	uint64_t mem_available;    /* bytes */
	unsigned vms_booting;      /* VMs started in the last minute */
	unsigned vms_waiting;      /* starts held back for memory (pacing) */
	double vm_memory_growth;   /* bytes/s the VMs' resident memory grew by; <0 unknown */
	double merge_rate;         /* pages/s pages_sharing grew by over the last tick; <0 unknown */
	uint64_t vm_untouched;     /* bytes the mergeable running VMs could still touch:
				    * their memory as defined less their resident, summed */
	uint64_t current_pages_to_scan; /* what is set now */
	int previous_phase;        /* the last decision's KsmPhase; -1: none */
	bool previous_pressure;    /* the last decision's pressure */
} KsmPolicyInput;

typedef enum KsmPhase {
	KSM_PHASE_OFF,
	KSM_PHASE_FIXED,
	KSM_PHASE_BOOST,    /* VMs booting or memory under pressure: scan hard */
	KSM_PHASE_STEADY,   /* merging still finds pages */
	KSM_PHASE_CONVERGED /* little left to merge: back off */
} KsmPhase;

typedef struct KsmDecision {
	int run;
	uint64_t pages_to_scan;
	uint64_t sleep_millisecs;
	KsmPhase phase;
	bool cpu_capped;
	/* Memory under pressure: the boost scans as fast as boost_max_cpu
	 * allows, not at a fixed rate. */
	bool pressure;
	/* ksmd's nice value: raised in priority under memory pressure, so
	 * that it gets its CPU cap on a host whose vCPUs keep every core busy
	 * (at the kernel's 5 it got 1-3 % of a core at a load of 75). */
	int ksmd_nice;
} KsmDecision;

/* ksmd's nice value as the kernel sets it. */
#define KSMD_NICE_DEFAULT 5
/* ...and under memory pressure (the CPU cap still bounds what it takes). */
#define KSMD_NICE_BOOST (-10)

const char *ksm_phase_to_string(KsmPhase p);
/* The pure policy: what to write to KSM's knobs given the figures. */
KsmDecision ksm_policy_decide(const KsmPolicyInput *in);

/* ksmd, the kernel thread: its pid (0 if not found) and CPU time. */
pid_t ksm_find_ksmd(int rootfd);
/* utime + stime of proc/PID/stat, in clock ticks. */
int ksm_read_cpu_ticks(int rootfd, pid_t pid, uint64_t *ret);
