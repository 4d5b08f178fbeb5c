/* SPDX-License-Identifier: Apache-2.0 */
/* hsd's settings: built-in defaults, then the optional config file
 * (/etc/hsd/hsd.conf: "key = value" lines, keys named like the long
 * options), then the command line. Pure: parsing and validation only. */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

#include "hs-util.h"
#include "ksm.h"
#include "paths.h"

#define HSD_DEFAULT_CONFIG "/etc/hsd/hsd.conf"

typedef struct HsdOptions {
	char *state_dir, *run_dir, *socket, *qemu, *qemu_user, *api_group, *admin_group;
	char *sysroot;
	char *cgroup_base; /* NULL: found (delegated group, or "hsd" on the cgroup2 mount) */
	char *allowed[PATHS_MAX_DIRS];
	size_t n_allowed;
	bool seccomp;
	bool verbose;
	KsmMode ksm_mode;
	bool ksm_mode_set; /* given in the file or on the command line */
	double stop_timeout, qmp_timeout, overcommit, pacing_timeout;
	double tcg_tb_size; /* MiB; 0: QEMU's default */
	/* Incoming migrations: the address QEMU listens on (an IP literal)
	 * when the request names none, and the TCP ports it may take. */
	char *migration_address;
	unsigned migration_port_lo, migration_port_hi;
	/* TCP ports of SPICE servers of VMs whose display has a listen
	 * address (one per VM, picked at each start). */
	unsigned spice_port_lo, spice_port_hi;
	char *migration_tls_dir; /* QEMU's tls-creds-x509 dir for TLS migrations */
	char *memory_dir; /* file-backed guest RAM (memory_file VMs); NULL: RUN_DIR/memory */
	/* The automatic balloon policy: on (auto) or off, its watermarks of
	 * host MemAvailable (MiB; 0: 10 % and 15 % of MemTotal), and how often
	 * guests report their memory statistics (seconds). */
	bool balloon_auto;
	bool balloon_policy_set; /* given in the file or on the command line */
	uint64_t balloon_low_mib, balloon_high_mib;
	double balloon_stats_interval;
	/* The web console: where it listens ("ADDR:PORT"; NULL: off), where
	 * spice-html5 is (NULL: /usr/share/spice-html5), and xterm.js's files
	 * (NULL: none). */
	char *web_listen, *spice_html5_dir, *web_assets;
	char *ovmf_dir, *swtpm; /* firmware.c's defaults when NULL */
} HsdOptions;

void hsd_options_init(HsdOptions *o);
void hsd_options_clear(HsdOptions *o);

/* Sets one option by its long name ("state-dir", "overcommit", ...). The
 * flags "no-seccomp" and "verbose" take no value (value NULL) on the
 * command line; in the config file they are "seccomp = yes|no" and
 * "verbose = yes|no". -EINVAL with a message naming the key otherwise. */
int hsd_option_set(HsdOptions *o, const char *key, const char *value, HsError *err);

/* Parses a config file's text; errors name the line ("hsd.conf:3: ..."). */
int hsd_config_parse(const char *text, const char *filename, HsdOptions *o, HsError *err);

/* "127.0.0.1:8006" or "[::1]:8006" (an IP literal and a port 1-65535). */
int hsd_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);

/* Which keys can change while hsd runs (SIGHUP); the others need a
 * restart. */
bool hsd_option_reloadable(const char *key);
