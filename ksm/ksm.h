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
