/* SPDX-License-Identifier: Apache-2.0 */
/* Building QEMU's argv from a VM spec: pure, no I/O, unit-tested. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "spec.h"

/* A disk made of layers (hsd-managed storage): a base (template) and
 * qcow2 overlays, each opened by hsd and handed over as an fdset; QEMU
 * gets the chain spelled out node by node (-blockdev ...,backing=), so it
 * never opens a backing file by the name written in an image. */
#define QEMU_MAX_LAYERS 48
typedef struct QemuLayer {
	unsigned id;         /* 0: the template (the base) */
	VmDiskFormat format;
	int fd_ro, fd_rw;    /* fd numbers in the child; fd_rw -1: read-only layer */
} QemuLayer;
typedef struct QemuDiskChain {
	QemuLayer layers[QEMU_MAX_LAYERS]; /* base first, the active layer last */
	size_t n;
} QemuDiskChain;

/* Node names and fdsets of a managed disk's layers (the same in argv and in
 * the live operations over QMP). Layer ids are unique within a VM. */
#define QEMU_FDSET_LAYER(id) (1000 + (long)(id))
#define QEMU_FDSET_TEMPLATE(disk) (500 + (long)(disk))
#define QEMU_FDSET_CIDATA 2
void qemu_layer_node(size_t disk, unsigned id, char *buf, size_t size);
void qemu_layer_file_node(size_t disk, unsigned id, char *buf, size_t size);

/* Guest NUMA cells, each backed by memory bound to one host node. */
#define QEMU_MAX_NUMA_CELLS 16
typedef struct QemuNumaCell {
	unsigned host_node;
	uint64_t mem_mib;
	unsigned first_vcpu, n_vcpus; /* n_vcpus 0: a memory-only cell */
} QemuNumaCell;

/* One host PCI function passed through (vfio-pci), where the guest sees
 * it: host devices go on a PCIe root port each (q35; hs-hostport<dev>) or
 * on slot 0x10 + dev of the PCI bus (pc); functions keep their numbers
 * when function 0 comes along, else are numbered from 0. */
#define QEMU_MAX_HOSTFNS (VM_MAX_HOSTDEVS * 8)
typedef struct QemuHostFn {
	char addr[16];      /* host address "0000:01:00.1" */
	unsigned dev;       /* index in the spec's hostdevs (its port or slot) */
	unsigned guest_fn;
	bool multifunction; /* guest function 0 of several */
	bool primary;       /* the function the spec names: its options apply */
	bool vga;           /* a display controller (x_vga goes to this one) */
	bool nic;           /* an SR-IOV VF for nics[nic_index] (dev: n_hostdevs + k) */
	unsigned nic_index;
} QemuHostFn;

/* Where a host function goes when hot-plugged rather than at start. */
typedef struct QemuHostFnPlace {
	const char *bus; /* "hs-hotport2" (q35) or "pci.0" */
	int slot;        /* pc: the slot on pci.0; q35: 0 */
} QemuHostFnPlace;

/* The QEMU id of a host function's device: "hd-0000-01-00.1". */
void qemu_hostfn_id(const char *addr, char *buf, size_t size);
/* vfio-pci properties of f as a device_add argument object ("driver":
 * "vfio-pci", "host", "id", "bus", "addr", and the spec's options); place
 * NULL: where a start puts it. New reference; NULL on OOM. */
json_t *qemu_hostfn_props(const VmSpec *s, const QemuHostFn *f, const QemuHostFnPlace *place);

/* A tap or macvtap NIC's descriptors (fd numbers in the child, or names
 * given with getfd for a hot-plug): one per queue, and as many vhost-net
 * ones when vhost is used. queues 0: none (user networking, or a bridge
 * through qemu-bridge-helper without pass_fds). */
typedef struct QemuNicFds {
	bool vf; /* an SR-IOV VF (one of hostfns), no netdev */
	unsigned queues;
	bool vhost;
	int fds[VM_NIC_MAX_QUEUES];
	int vhostfds[VM_NIC_MAX_QUEUES];
} QemuNicFds;

/* netdev_add / device_add arguments of a NIC (hot-plug): fds by the names
 * "<prefix>t<q>" and "<prefix>v<q>" given with getfd; bus/addr: where it
 * goes (bus NULL: QEMU picks). New references; NULL on OOM. */
json_t *qemu_nic_netdev_props(const VmNic *n, const QemuNicFds *f, const char *prefix);
json_t *qemu_nic_device_props(const VmNic *n, unsigned queues, const char *bus, int slot);

typedef struct QemuLaunch {
	const char *binary;     /* qemu-system-x86_64 path */
	int qmp_fd;             /* listening socket fd number in the child */
	int serial_fd;          /* listening socket fd number in the child */
	const char *serial_log; /* QEMU appends all serial output here; may be NULL */
	bool sandbox;           /* QEMU built with seccomp: -sandbox on,... */
	unsigned tcg_tb_size_mib; /* TCG translation buffer; 0: QEMU's default */

	/* With pass_fds, QEMU opens nothing by path: hsd opens every file and
	 * hands QEMU descriptors (fd numbers in the child), so QEMU can run
	 * as an unprivileged user with no access to hsd's directories. */
	bool pass_fds;
	int serial_log_fd;             /* -add-fd, logfile=/dev/fdset/N; -1: no log */
	int kernel_fd, initrd_fd;      /* -kernel /proc/self/fd/N */
	int disk_fds[VM_MAX_DISKS][2]; /* -add-fd: [0] O_RDONLY, [1] O_RDWR (-1 if read-only) */
	const QemuDiskChain *chains[VM_MAX_DISKS]; /* managed disks (pass_fds only) */
	bool incoming;                 /* -incoming defer: RAM comes from a saved state */
	QemuNumaCell numa_cells[QEMU_MAX_NUMA_CELLS]; /* n_numa_cells 0: no binding */
	size_t n_numa_cells;
	int cidata_fd;                 /* cloud-init volume (read-only CD-ROM); 0: none */
	QemuNicFds nic_fds[VM_MAX_NICS]; /* tap/macvtap NICs: descriptors made by hsd */
	QemuHostFn hostfns[QEMU_MAX_HOSTFNS]; /* host PCI functions (VFIO) */
	size_t n_hostfns;
	/* memory_file: guest RAM is memory-backend-file on this descriptor
	 * (-object ...,mem-path=/proc/self/fd/N); 0: none. ram_private: a
	 * warm clone's first start maps the template's RAM copy-on-write
	 * (share=off). clone_info: what the guest reads from fw_cfg
	 * opt/org.hypervisor-scale/clone (a fixed-size record). */
	int ram_fd;
	bool ram_private;
	const char *clone_info;
	/* A display's SPICE server on TCP (display.listen): the port hsd
	 * picked; 0: none. Clients of the UNIX socket come through hsd
	 * (QMP add_client), so QEMU listens on nothing else. */
	unsigned spice_port;
	/* UEFI (firmware "uefi"): OVMF's code, read-only, and the VM's own
	 * variable store, read-write, as fd numbers; 0: none (SeaBIOS). */
	int fw_code_fd, fw_vars_fd;
	/* TPM: QEMU's end of a connected socket pair whose other end is
	 * the control channel of the VM's swtpm; 0: none. */
	int tpm_fd;
	/* The guest agent's chardev (spec "agent"): hsd's listening socket
	 * (qga.sock), fd number in the child, as for QMP; 0: none. */
	int agent_fd;
} QemuLaunch;

/* The SPICE agent's channel (clipboard, resize). */
#define QEMU_SPICE_AGENT_PORT "com.redhat.spice.0"
/* The QEMU guest agent's port: its name in the guest (qemu-ga opens
 * /dev/virtio-ports/<name>) and its QEMU id (VSERPORT_CHANGE's "id"). */
#define QEMU_GUEST_AGENT_PORT "org.qemu.guest_agent.0"
#define QEMU_GUEST_AGENT_PORT_ID "hs-qga-port"

/* fdset ids used with pass_fds. */
#define QEMU_FDSET_SERIAL_LOG 1
#define QEMU_FDSET_FW_CODE 3
#define QEMU_FDSET_FW_VARS 4
#define QEMU_FDSET_DISK(i) (10 + (i))

/* A NULL-terminated argv. Every value that goes into a QEMU option list has
 * its commas doubled, so no spec value can inject an option. */
int qemu_argv_build(const VmSpec *spec, const QemuLaunch *launch, char ***ret_argv);
void strv_free(char **v);
/* The argv as one shell-like line (for logs only). */
char *strv_join(char *const *v);
