/* SPDX-License-Identifier: Apache-2.0 */
/* The VM spec: what a VM is, as stored and as given through the API.
 * Parsing validates every field and names the field in its error. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cloudinit.h"
#include "hs-util.h"

#define VM_NAME_MAX 63
#define VM_MAX_CPUS 255
#define VM_MAX_DISKS 16
#define VM_MAX_NICS 8
#define VM_MAX_HOSTDEVS 8
#define VM_MAX_HOTPLUG_PORTS 8
#define VM_MIN_MEMORY_MIB 16
#define VM_MAX_MEMORY_MIB (4u * 1024 * 1024)

typedef enum VmAccel {
	VM_ACCEL_KVM,
	VM_ACCEL_TCG,
} VmAccel;

typedef enum VmDiskFormat {
	VM_DISK_QCOW2,
	VM_DISK_RAW,
} VmDiskFormat;

typedef enum VmNicType {
	VM_NIC_USER,
	VM_NIC_BRIDGE,  /* a tap on a Linux bridge (an hsd network or "bridge" by name) */
	VM_NIC_MACVTAP, /* a macvtap on a host interface (an hsd network) */
	VM_NIC_VF,      /* an SR-IOV virtual function, passed through (an hsd network) */
	VM_NIC_NETWORK, /* "network" without "type": the network's type */
} VmNicType;

typedef enum VmNicModel {
	VM_NIC_VIRTIO,
	VM_NIC_E1000,
	VM_NIC_E1000E,
	VM_NIC_RTL8139,
} VmNicModel;

#define VM_NIC_ID_MAX 15
#define VM_NIC_MAX_QUEUES 8

#define VM_MAX_DISK_SIZE (64ull << 40)

/* I/O limits of a disk (QEMU's throttling, set over QMP and changed
 * live). [0] total, [1] read, [2] write; 0: no limit. Bursts (_max) let a
 * disk go above the rate for a while. Disks naming the same group share
 * one set of limits. */
typedef struct VmDiskLimits {
	uint64_t bps[3], bps_max[3];
	uint64_t iops[3], iops_max[3];
	char group[33];
} VmDiskLimits;

typedef struct VmDisk {
	/* Either a file of the caller's (path), or a disk hsd makes and keeps
	 * in its storage (managed): a layer chain on a template or blank. */
	bool managed;
	char *template; /* managed: the base template; NULL: blank */
	uint64_t size;  /* managed: virtual size in bytes; 0: the template's */
	VmDiskLimits limits;
	char *path;
	VmDiskFormat format;
	bool readonly;
} VmDisk;

typedef struct VmNic {
	char id[VM_NIC_ID_MAX + 1]; /* "net0": QEMU's device id; netdev "hs-<id>" */
	VmNicType type;
	char *bridge;  /* a Linux bridge by name (no network) */
	char *network; /* an hsd network (/v1/networks) */
	char mac[18];
	bool mac_given; /* parsing only: the MAC came with the spec (not generated) */
	VmNicModel model;
	unsigned queues; /* 0: one per vCPU (up to VM_NIC_MAX_QUEUES) */
	int vhost;       /* -1: when /dev/vhost-net exists; 0: never; 1: required */
	unsigned vlan;   /* 0: none */
	bool link_down;
} VmNic;

/* A host PCI device passed through (vfio-pci), by address or by
 * vendor:device id (the index-th such device, in address order). */
typedef struct VmHostdev {
	char address[16];        /* "0000:01:00.0"; "" when chosen by id */
	unsigned vendor, device; /* by id: both set (address "") */
	unsigned index;
	/* The slot's other functions too (a GPU and its audio function): 1
	 * yes, 0 no, -1 auto (yes for function 0 of a display controller). */
	int all_functions;
	bool x_vga;         /* the guest's VGA (legacy VGA ranges) */
	bool rom_bar_off;   /* "rom_bar": false: no option ROM BAR */
	char *rom_file;     /* the option ROM from this file; NULL: the device's */
	char display[8];    /* vfio-pci display= ("off", "on", "auto"); "": QEMU's default */
} VmHostdev;

/* The guest's screen (issue 10): a display device, QEMU's SPICE server
 * reached through hsd's UNIX socket, optionally on TCP too. */
typedef enum VmDisplayType {
	VM_DISPLAY_NONE, /* headless: no display device, no SPICE (the default) */
	VM_DISPLAY_VIRTIO, /* virtio-vga */
	VM_DISPLAY_QXL,    /* qxl-vga */
} VmDisplayType;

typedef struct VmDisplay {
	VmDisplayType type;
	/* An IPv4 or IPv6 address SPICE also listens on (TCP, ticketing on,
	 * port chosen by hsd at each start); "": the UNIX socket only. */
	char listen[46];
} VmDisplay;

/* Firmware (issue 13): SeaBIOS, or OVMF with the VM's own UEFI variable
 * store (<state>/vms/NAME/efivars.fd). */
typedef enum VmFirmware {
	VM_FIRMWARE_BIOS, /* the default */
	VM_FIRMWARE_UEFI,
} VmFirmware;

typedef struct VmSpec {
	char name[VM_NAME_MAX + 1];
	unsigned cpus;
	uint64_t memory_mib;
	VmAccel accel;
	char *machine;
	bool no_mem_merge; /* "mem_merge": false: KSM may not merge this guest's RAM */
	bool agent; /* "agent": a virtio-serial port for qemu-guest-agent (agent.c) */
	char *cpu_model; /* QEMU -cpu value ("host", "EPYC-v4,+pdpe1gb"); NULL: QEMU's default */
	char *kernel;
	char *initrd;
	char *cmdline;
	VmDisk disks[VM_MAX_DISKS];
	size_t n_disks;
	VmNic nics[VM_MAX_NICS];
	size_t n_nics;
	CloudInitConfig *cloud_init; /* first-boot configuration; NULL: none */
	/* Memory balloon (virtio-balloon with free page reporting): the
	 * guest's target size, MiB; 0: all of memory_mib (no inflation). */
	uint64_t balloon_mib;
	/* The least the automatic balloon policy may leave the guest, MiB
	 * (16 to memory_mib, at most balloon_mib when that is set); 0: the VM
	 * takes no part in the policy. */
	uint64_t balloon_floor_mib;
	/* Host CPUs (kernel cpulists, "0-3,8") each vCPU thread may run on,
	 * and QEMU's other threads; NULL: not pinned. */
	char *vcpu_pins[VM_MAX_CPUS];
	char *emulator_pin;
	/* Host NUMA node for the guest's memory and CPUs; -1: hsd places it
	 * (numa/placement.c) when the host has several nodes. */
	int numa_node;
	/* cgroup v2 limits of the VM's group (0: none): CPU time in percent
	 * of one host CPU (cpu.max), cpu.weight, memory QEMU may use above the
	 * guest's RAM (memory.max = RAM + this; memory.high at 3/4 of it), and
	 * pids.max (QEMU's threads). */
	unsigned cpu_max_pct;
	unsigned cpu_weight;
	uint64_t memory_overhead_mib;
	uint64_t pids_max;
	/* "hugepages": guest RAM on hugetlb pages of this size, bytes (a
	 * power of two, VM_HUGEPAGE_MIN..VM_HUGEPAGE_MAX; memory_mib a whole
	 * number of them); 0: ordinary RAM. Whether the host has the size is
	 * checked at create and start, not here. */
	uint64_t hugepage_size;
	/* Host PCI devices (VFIO); claimed and bound before QEMU starts,
	 * given back to their host drivers after it exits. */
	VmHostdev hostdevs[VM_MAX_HOSTDEVS];
	size_t n_hostdevs;
	/* q35: empty PCIe root ports kept for hot-plugging host devices
	 * (PCIe has no hot-plug on the root bus). */
	unsigned hotplug_ports;
	/* "memory_file": guest RAM is a file hsd makes (memory-backend-file,
	 * share=on, in --memory-dir), so a warm template can be taken from
	 * the running VM (storage.h). Such a VM always has a vmgenid device
	 * (vmgenid: its GUID, made at create; a clone gets a new one). */
	bool memory_file;
	char vmgenid[37];
	/* A clone's warm template ("" for other VMs): its first start resumes
	 * the template's saved guest instead of booting. */
	char warm_template[VM_NAME_MAX + 1];
	VmDisplay display;
	/* Firmware, Secure Boot (UEFI on q35, SMM; the variable store made
	 * with Microsoft's keys enrolled) and a TPM 2.0 (swtpm, state in
	 * <state>/vms/NAME/tpm). */
	VmFirmware firmware;
	bool secure_boot;
	bool tpm;
} VmSpec;

/* A balloon target with huge pages is refused (at create and by PATCH):
 * the whole huge pages it frees go back to the host's pool, where another
 * VM may take them, and the guest faults on nothing when it deflates. */
#define VM_BALLOON_HUGEPAGES_ERROR                                                              \
	"balloon_mib: not with hugepages (the huge pages a balloon frees go back to the "      \
	"host's pool, where another VM may take them before the guest wants them back)"
#define VM_HUGEPAGE_MIN (64ull << 10)
#define VM_HUGEPAGE_MAX (16ull << 30)

bool vm_spec_pinned(const VmSpec *s);
/* Why KSM never merges this guest's RAM ("mem_merge is false", or its huge
 * pages), or NULL when it may. */
const char *vm_spec_ksm_excluded(const VmSpec *s);
/* A huge page size as the spec writes it: "2M", "1G", "64K". */
const char *vm_hugepages_to_string(uint64_t size, char *buf, size_t buf_size);

/* balloon_mib and balloon_floor_mib against memory_mib and each other;
 * the error names the field. */
int vm_spec_check_balloon(const VmSpec *s, HsError *err);

bool vm_disk_limits_any(const VmDiskLimits *l);
/* Parses {"bps_total": N, ..., "group": "g"} into *ret (field names the
 * errors); null or absent: no limits. */
int vm_disk_limits_from_json(json_t *j, const char *field, VmDiskLimits *ret, HsError *err);
json_t *vm_disk_limits_to_json(const VmDiskLimits *l);

/* What the daemon fills in where the request is silent. */
typedef struct VmSpecDefaults {
	VmAccel accel;
	/* Check that files named in the spec exist (off in unit tests of pure
	 * shape checks). */
	bool check_files;
} VmSpecDefaults;

bool vm_name_is_valid(const char *name);
/* A new random MAC, 52:54:00:xx:xx:xx. */
void vm_mac_generate(char out[18]);
/* A Linux interface name (at most 15 of a-z, A-Z, 0-9, '_', '.', '-'). */
bool vm_ifname_is_valid(const char *name);
/* A new random (version 4) GUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx". */
void vm_guid_generate(char out[37]);

/* One host device object ({"address": ...} or {"id": "10de:1b80"}, ...);
 * field names the errors ("hostdevs[0]"). */
int vm_hostdev_from_json(json_t *j, const char *field, VmHostdev *ret, HsError *err);
json_t *vm_hostdev_to_json(const VmHostdev *h);
void vm_hostdev_clear(VmHostdev *h);
/* "0000:01:00.0" or "10de:1b80#0": how messages name it. */
const char *vm_hostdev_describe(const VmHostdev *h, char *buf, size_t size);
/* Whether a q35 machine (the PCIe layout: root ports). */
bool vm_machine_is_q35(const char *machine);

/* Parse and validate; unknown fields are errors. On success *ret is filled
 * (free with vm_spec_clear). MACs missing from NICs are generated. */
int vm_spec_from_json(json_t *obj, const VmSpecDefaults *defaults, VmSpec *ret, HsError *err);
/* New reference; the form stored on disk and returned by the API. */
json_t *vm_spec_to_json(const VmSpec *spec);
void vm_spec_clear(VmSpec *spec);
int vm_spec_copy(const VmSpec *src, VmSpec *dst);

const char *vm_accel_to_string(VmAccel a);
const char *vm_disk_format_to_string(VmDiskFormat f);
const char *vm_nic_type_to_string(VmNicType t);
const char *vm_nic_model_to_string(VmNicModel m);
const char *vm_display_type_to_string(VmDisplayType t);
const char *vm_firmware_to_string(VmFirmware f);
/* {"type": "virtio"|"qxl"|"none", "listen": ADDR}; null: none. field names
 * the errors ("display"). */
int vm_display_from_json(json_t *j, const char *field, VmDisplay *ret, HsError *err);
json_t *vm_display_to_json(const VmDisplay *d);
/* One NIC of a spec (nics[] entry or a hot-plug body); field: where in the
 * input ("nics[1]", "body"); no id: the lowest "net<k>" not in used[]. */
int vm_nic_from_json(json_t *j, const char *field, char (*used)[VM_NIC_ID_MAX + 1],
		     size_t n_used, VmNic *ret, HsError *err);
json_t *vm_nic_to_json(const VmNic *n);
void vm_nic_clear(VmNic *n);
/* The number of queues the NIC gets with `cpus` vCPUs (1 when it cannot
 * have more: not virtio, user networking). */
unsigned vm_nic_queues(const VmNic *n, unsigned cpus);
