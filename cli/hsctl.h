/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <getopt.h>

#include "client.h"

/* Exit codes. */
enum {
	EXIT_OK = 0,
	EXIT_HSD_ERROR = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
};

/* Client timeouts (seconds per read) of calls that wait for long work,
 * each a little over hsd's own bound for that work, so that hsd's error is
 * the one seen: copying an image or merging a layer (1 h in hsd), saving or
 * loading a guest's memory (10 min in hsd). Other calls wait without limit. */
#define CTL_TIMEOUT_COPY (3600.0 + 300)
#define CTL_TIMEOUT_MEMORY (600.0 + 300)

typedef struct Ctl {
	char *socket_path;
	bool json;
	HsClient client;
	bool connected;
} Ctl;

int ctl_connect(Ctl *ctl);
/* Closes the connection (the next call connects again). */
void ctl_release(Ctl *ctl);
/* Prints an API error (or a transport error) and returns the exit code. */
int ctl_report(Ctl *ctl, unsigned status, json_t *body, const HsError *err);
/* One request; on success *ret is the body (new reference). Returns an exit
 * code; on failure the error is printed. */
int ctl_call(Ctl *ctl, const char *method, const char *path, json_t *body, json_t **ret);
/* ctl_call, and the HTTP status of a success (202 from 200/204). */
int ctl_call_status(Ctl *ctl, const char *method, const char *path, json_t *body,
		    unsigned *ret_status, json_t **ret);
void ctl_print_json(json_t *j);
/* A host setting (/v1/ksm, /v1/balloon): PUT body when it has fields, else
 * GET; the answer in *ret, printed as JSON with --json. Returns an exit
 * code. */
int ctl_show_or_set(Ctl *ctl, const char *path, json_t *body, json_t **ret);
/* Appends ", " (unless s is empty) and the formatted text to s. */
void ctl_append(char *s, size_t size, const char *fmt, ...) _printf_(3, 4);
/* "20.0 GiB" */
void ctl_fmt_bytes(double b, char *buf, size_t size);
/* Something that may be a name (not empty, not an option). */
bool ctl_is_name(const char *s);
/* A whole number up to max; prints the error naming opt. */
int ctl_parse_uint(const char *opt, const char *s, unsigned long long max,
		   unsigned long long *ret);
/* realpath(p), or NULL with the error printed naming opt. New string. */
char *ctl_abs_path(const char *opt, const char *p);

/* A balloon target (--balloon): "512M", "1.5G", a bare number of MiB, "0"
 * or "all" (0: all of the memory). In MiB; prints the error naming opt. */
int ctl_parse_balloon(const char *opt, const char *s, uint64_t *ret_mib);
/* A size in MiB: "512M", "1.5G", "1T", a bare number of MiB; the error
 * (naming opt) ends with `zero`, what 0 means. */
int ctl_parse_mib(const char *opt, const char *s, const char *zero, uint64_t *ret_mib);
/* A balloon floor (--balloon-floor): a size as for --balloon; 0 or "none":
 * no floor (the VM takes no part in the automatic policy). */
int ctl_parse_balloon_floor(const char *opt, const char *s, uint64_t *ret_mib);
/* A disk's "limits" object in words ("read 10.0 MiB/s, 200 IOPS total,
 * group g1") into buf; false (and "") when it limits nothing. */
bool ctl_fmt_disk_limits(json_t *limits, char *buf, size_t size);

/* The most vCPUs (--cpus) and host CPUs (numbers 0 to 1023) hsctl takes;
 * hsd has its own limits (numa.h NUMA_MAX_CPUS, spec.h VM_MAX_CPUS). */
#define CTL_MAX_VCPUS 1024
#define CTL_MAX_HOST_CPUS 1024
/* The highest NUMA node hsd knows (numa.h NUMA_MAX_NODES - 1). */
#define CTL_MAX_NUMA_NODE 63

/* The pinning options of create and set: --vcpu-pin LIST (every vCPU),
 * --vcpu-pin N:LIST (vCPU N; overrides LIST), --emulator-pin LIST. The
 * strings are borrowed from argv. Start with max_vcpu = -1. */
typedef struct CtlPins {
	const char *all;
	const char *vcpu[CTL_MAX_VCPUS];
	long max_vcpu; /* the highest N of N:LIST, -1 without */
	const char *emulator;
	bool any;
} CtlPins;

/* A kernel CPU list ("2", "0-3,8"): digits, '-' and ','; prints the error
 * naming opt. */
bool ctl_check_cpu_list(const char *opt, const char *s);
/* One --vcpu-pin or --emulator-pin argument; prints the error. */
int ctl_pins_add_vcpu(CtlPins *p, const char *arg);
int ctl_pins_set_emulator(CtlPins *p, const char *arg);
/* cpu_pinning.vcpus for a VM of cpus vCPUs: LIST as a string, or one entry
 * per vCPU (null: not pinned) when N:LIST was given; NULL without
 * --vcpu-pin. New reference. */
json_t *ctl_pins_vcpus_json(const CtlPins *p, unsigned cpus);
/* A spec's cpu_pinning in words ("0-1→2-3, 2→0; emulator 0-1") into buf;
 * false (and "") when nothing is pinned. */
bool ctl_fmt_pinning(json_t *spec, char *buf, size_t size);
/* info's lines for a VM's pinning, NUMA node, placement and cgroup. */
void ctl_print_placement(json_t *vm);

/* The cgroup options of create and set, as getopt entries (val from
 * CTL_OPT_RESOURCE up): --cpu-max PCT, --cpu-weight N, --memory-overhead
 * SIZE, --pids-max N; each takes "none" (no limit). */
#define CTL_OPT_RESOURCE 0x200
#define CTL_N_RESOURCE_OPTS 4
extern const struct option ctl_resource_opts[CTL_N_RESOURCE_OPTS];
/* One of them (opt: its getopt val) into res, the spec's "resources"
 * object: the value, or null for "none". Prints the error naming the
 * option. */
int ctl_resource_opt(int opt, const char *arg, json_t *res);
/* res's fields over the resources object `into` (null: removed). */
void ctl_resources_merge(json_t *into, json_t *res);

int cmd_console(Ctl *ctl, int argc, char **argv);
int cmd_set(Ctl *ctl, int argc, char **argv);
int cmd_migrate(Ctl *ctl, int argc, char **argv);
/* A migration object in words: "active, 120.0 MiB of 512.0 MiB sent, ...". */
void ctl_fmt_migration(json_t *mig, char *buf, size_t size);
int cmd_template(Ctl *ctl, int argc, char **argv);
int cmd_snapshot(Ctl *ctl, int argc, char **argv);
int cmd_balloon(Ctl *ctl, int argc, char **argv);
int cmd_pci(Ctl *ctl, int argc, char **argv);
/* A host device argument (an address, or VENDOR:DEVICE[#N]) into a
 * hostdev object; -1 (message printed) when it is neither. */
int ctl_hostdev_parse(const char *s, json_t *o);
int cmd_network(Ctl *ctl, int argc, char **argv);
int cmd_sriov(Ctl *ctl, int argc, char **argv);
int cmd_nic(Ctl *ctl, int argc, char **argv);
/* One --nic argument of create: user, none, bridge:BR or
 * network:NET[,vlan=V][,mac=M][,queues=N][,model=M][,vhost=on|off]. *ret
 * is the NIC object (NULL for none); -1 (message printed) when it is
 * none of these. */
int ctl_nic_parse(const char *s, json_t **ret);
/* info's line for NIC idx of the spec, with what the running QEMU has from
 * states (the VM's nics_state: the entry of the same id, else of the same
 * place; NULL when the VM does not run). */
void ctl_print_nic(json_t *nic, json_t *states, size_t idx);
