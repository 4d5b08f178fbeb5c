/* SPDX-License-Identifier: Apache-2.0 */
#include "argv.h"

#include <ctype.h>
#include <inttypes.h>
#include <string.h>

typedef struct Argv {
	char **v;
	size_t n, cap;
	bool oom;
} Argv;

static void add_take(Argv *a, char *s)
{
	if (!s || a->oom) {
		a->oom = true;
		free(s);
		return;
	}
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		char **nv = realloc(a->v, cap * sizeof(char *));
		if (!nv) {
			a->oom = true;
			free(s);
			return;
		}
		a->v = nv;
		a->cap = cap;
	}
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void add(Argv *a, const char *s)
{
	add_take(a, strdup(s));
}

static void add2(Argv *a, const char *opt, char *val_take)
{
	add(a, opt);
	add_take(a, val_take);
}

/* QEMU's option parser splits on ',' and unescapes ',,'. */
static char *qemu_escape(const char *s)
{
	size_t n = 0;
	for (const char *p = s; *p; p++)
		n += *p == ',' ? 2 : 1;
	char *r = malloc(n + 1), *q = r;
	if (!r)
		return NULL;
	for (const char *p = s; *p; p++) {
		*q++ = *p;
		if (*p == ',')
			*q++ = ',';
	}
	*q = '\0';
	return r;
}

void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* Characters that never need quoting in a POSIX shell word. */
static bool shell_safe(const char *s)
{
	if (!*s)
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("@%+=:,./_-", *p))
			return false;
	return true;
}

char *strv_join(char *const *v)
{
	/* Worst case per word: a separator, two quotes, and 4 bytes ('\'')
	 * for every character. */
	size_t n = 1;
	for (char *const *p = v; *p; p++)
		n += 4 * strlen(*p) + 3;
	char *r = malloc(n), *q = r;
	if (!r)
		return NULL;
	for (char *const *p = v; *p; p++) {
		if (p != v)
			*q++ = ' ';
		if (shell_safe(*p)) {
			q = stpcpy(q, *p);
			continue;
		}
		*q++ = '\'';
		for (const char *c = *p; *c; c++) {
			if (*c == '\'')
				q = stpcpy(q, "'\\''");
			else
				*q++ = *c;
		}
		*q++ = '\'';
	}
	*q = '\0';
	return r;
}

void qemu_layer_node(size_t disk, unsigned id, char *buf, size_t size)
{
	if (id == 0)
		snprintf(buf, size, "hs-t%zu", disk);
	else
		snprintf(buf, size, "hs-l%u", id);
}

void qemu_layer_file_node(size_t disk, unsigned id, char *buf, size_t size)
{
	if (id == 0)
		snprintf(buf, size, "hs-tf%zu", disk);
	else
		snprintf(buf, size, "hs-lf%u", id);
}

/* Every layer of a managed disk: its fdset, a file node and a format node
 * whose backing is the layer below (the base has none). Only the active
 * layer is writable. */
static void add_chain(Argv *a, size_t disk, const QemuDiskChain *c, bool readonly)
{
	char below[32] = "";
	for (size_t k = 0; k < c->n; k++) {
		const QemuLayer *ly = &c->layers[k];
		long set = ly->id ? QEMU_FDSET_LAYER(ly->id) : QEMU_FDSET_TEMPLATE(disk);
		bool rw = k == c->n - 1 && !readonly && ly->fd_rw >= 0;
		char node[32], file[32];
		qemu_layer_node(disk, ly->id, node, sizeof(node));
		qemu_layer_file_node(disk, ly->id, file, sizeof(file));
		add2(a, "-add-fd",
		     hs_strdup_printf("fd=%d,set=%ld,opaque=%s-ro", ly->fd_ro, set, node));
		if (rw)
			add2(a, "-add-fd",
			     hs_strdup_printf("fd=%d,set=%ld,opaque=%s-rw", ly->fd_rw, set, node));
		/* No image locking: hsd alone decides who opens a layer, and
		 * QEMU's OFD locks conflict between the read-only and the
		 * read-write descriptions of one layer when it reopens it
		 * (after a memory snapshot: "Failed to get shared write
		 * lock"). */
		add2(a, "-blockdev",
		     hs_strdup_printf("driver=file,node-name=%s,filename=/dev/fdset/%ld,"
				      "read-only=%s,cache.direct=off,discard=unmap,locking=off",
				      file, set, rw ? "off" : "on"));
		/* The bottom image has no backing file (templates are
		 * standalone, a blank disk's first layer too). */
		char backing[48] = "";
		if (ly->format == VM_DISK_QCOW2 && below[0])
			snprintf(backing, sizeof(backing), ",backing=%s", below);
		add2(a, "-blockdev",
		     hs_strdup_printf("driver=%s,node-name=%s,file=%s,read-only=%s,discard=unmap%s",
				      vm_disk_format_to_string(ly->format), node, file,
				      rw ? "off" : "on", backing));
		snprintf(below, sizeof(below), "%s", node);
	}
}

/* A backend of guest RAM (-object): ordinary RAM, or with huge pages an
 * anonymous hugetlb memfd (no hugetlbfs mount needed) whose pages QEMU
 * takes at start (prealloc: a short pool fails the start, not the running
 * guest); bound to host_node when >= 0. The one place that picks the
 * type, for the machine's single backend and for NUMA cells alike. */
static char *ram_backend_object(const VmSpec *s, const char *id, uint64_t mib, int host_node)
{
	char type[96] = "memory-backend-ram", bind[48] = "";
	if (s->hugepage_size)
		snprintf(type, sizeof(type),
			 "memory-backend-memfd,hugetlb=on,hugetlbsize=%" PRIu64 ",prealloc=on",
			 s->hugepage_size);
	if (host_node >= 0)
		snprintf(bind, sizeof(bind), ",host-nodes=%d,policy=bind", host_node);
	return hs_strdup_printf("%s,id=%s,size=%" PRIu64 "M%s", type, id, mib, bind);
}

void qemu_hostfn_id(const char *addr, char *buf, size_t size)
{
	snprintf(buf, size, "hd-%s", addr);
	for (char *p = buf; *p; p++)
		if (*p == ':')
			*p = '-';
}

json_t *qemu_hostfn_props(const VmSpec *s, const QemuHostFn *f, const QemuHostFnPlace *place)
{
	const VmHostdev *hd = f->nic ? NULL : &s->hostdevs[f->dev];
	char id[32], bus[32], addr[16];
	if (f->nic)
		snprintf(id, sizeof(id), "%s", s->nics[f->nic_index].id);
	else
		qemu_hostfn_id(f->addr, id, sizeof(id));
	bool q35 = vm_machine_is_q35(s->machine);
	if (place) {
		snprintf(bus, sizeof(bus), "%s", place->bus);
		snprintf(addr, sizeof(addr), "%x.%u", q35 ? 0 : place->slot, f->guest_fn);
	} else if (q35) {
		snprintf(bus, sizeof(bus), "hs-hostport%u", f->dev);
		snprintf(addr, sizeof(addr), "0.%u", f->guest_fn);
	} else {
		snprintf(bus, sizeof(bus), "pci.0");
		snprintf(addr, sizeof(addr), "%x.%u", 0x10 + f->dev, f->guest_fn);
	}
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "driver", "vfio-pci", "host", f->addr,
			      "id", id, "bus", bus, "addr", addr);
	if (!o)
		return NULL;
	if (f->multifunction)
		json_object_set_new(o, "multifunction", json_true());
	if (!hd)
		return o; /* a VF NIC: the spec's MAC is set on the VF */
	if (hd->x_vga && f->vga)
		json_object_set_new(o, "x-vga", json_true());
	if (f->primary && hd->rom_file)
		json_object_set_new(o, "romfile", json_string(hd->rom_file));
	if (f->primary && hd->rom_bar_off)
		json_object_set_new(o, "rombar", json_integer(0));
	if (f->primary && hd->display[0])
		json_object_set_new(o, "display", json_string(hd->display));
	return o;
}

/* The -device option list of an object of properties ("driver" first). */
static char *device_option(json_t *props)
{
	if (!props)
		return NULL;
	char *out = qemu_escape(json_string_value(json_object_get(props, "driver")));
	const char *k;
	json_t *v;
	json_object_foreach (props, k, v) {
		if (!out || !strcmp(k, "driver"))
			continue;
		_cleanup_free_ char *val = NULL;
		if (json_is_string(v))
			val = qemu_escape(json_string_value(v));
		else if (json_is_boolean(v))
			val = strdup(json_is_true(v) ? "on" : "off");
		else
			val = hs_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
		char *n = val ? hs_strdup_printf("%s,%s=%s", out, k, val) : NULL;
		free(out);
		out = n;
	}
	json_decref(props);
	return out;
}

static const char *nic_driver(VmNicModel m)
{
	switch (m) {
	case VM_NIC_E1000:
		return "e1000";
	case VM_NIC_E1000E:
		return "e1000e";
	case VM_NIC_RTL8139:
		return "rtl8139";
	case VM_NIC_VIRTIO:
	default:
		return "virtio-net-pci";
	}
}

/* Multi-queue virtio-net: a vector per queue each way, one for config
 * changes, one for the control queue. */
static unsigned nic_vectors(unsigned queues)
{
	return 2 * queues + 2;
}

static char *nic_device_arg(const VmNic *n, unsigned queues)
{
	if (queues > 1)
		return hs_strdup_printf("%s,netdev=hs-%s,id=%s,mac=%s,mq=on,vectors=%u",
					nic_driver(n->model), n->id, n->id, n->mac,
					nic_vectors(queues));
	return hs_strdup_printf("%s,netdev=hs-%s,id=%s,mac=%s", nic_driver(n->model), n->id, n->id,
				n->mac);
}

json_t *qemu_nic_netdev_props(const VmNic *n, const QemuNicFds *f, const char *prefix)
{
	char id[32];
	snprintf(id, sizeof(id), "hs-%s", n->id);
	json_t *o = json_pack("{s:s, s:s}", "type", "tap", "id", id);
	_cleanup_free_ char *fds = NULL, *vfds = NULL;
	for (unsigned q = 0; o && q < f->queues; q++) {
		char *x = hs_strdup_printf("%s%s%st%u", fds ? fds : "", q ? ":" : "", prefix, q);
		free(fds);
		fds = x;
		if (f->vhost) {
			x = hs_strdup_printf("%s%s%sv%u", vfds ? vfds : "", q ? ":" : "", prefix, q);
			free(vfds);
			vfds = x;
		}
	}
	if (!o || !fds || (f->vhost && !vfds)) {
		json_decref(o);
		return NULL;
	}
	json_object_set_new(o, f->queues > 1 ? "fds" : "fd", json_string(fds));
	json_object_set_new(o, "vhost", json_boolean(f->vhost));
	if (f->vhost)
		json_object_set_new(o, f->queues > 1 ? "vhostfds" : "vhostfd", json_string(vfds));
	return o;
}

json_t *qemu_nic_device_props(const VmNic *n, unsigned queues, const char *bus, int slot)
{
	char netdev[32];
	snprintf(netdev, sizeof(netdev), "hs-%s", n->id);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "driver", nic_driver(n->model), "id", n->id,
			      "netdev", netdev, "mac", n->mac);
	if (!o)
		return NULL;
	if (queues > 1) {
		json_object_set_new(o, "mq", json_true());
		json_object_set_new(o, "vectors", json_integer(nic_vectors(queues)));
	}
	if (bus)
		json_object_set_new(o, "bus", json_string(bus));
	if (bus && slot >= 0) {
		char addr[16];
		snprintf(addr, sizeof(addr), "0x%x", (unsigned)slot);
		json_object_set_new(o, "addr", json_string(addr));
	}
	return o;
}

/* A display: the device, QEMU's SPICE server, a tablet (absolute
 * pointer: it follows the client's) and the agent's channel. SPICE has no
 * listener of its own unless on TCP: the UNIX socket is hsd's, which
 * hands each connection over with add_client (skipauth), so QEMU opens
 * nothing by path. On TCP, ticketing is on and no password is set: nobody
 * gets in until hsd sets one (set_password) for a console ticket. */
static void add_display(Argv *a, const VmSpec *s, const QemuLaunch *l)
{
	const VmDisplay *d = &s->display;
	if (d->type == VM_DISPLAY_NONE)
		return;
	if (d->listen[0] && l->spice_port) {
		_cleanup_free_ char *addr = qemu_escape(d->listen);
		add2(a, "-spice",
		     addr ? hs_strdup_printf("port=%u,addr=%s",
					     l->spice_port, addr)
			  : NULL);
	} else {
		add2(a, "-spice", strdup("disable-ticketing=on"));
	}
	add2(a, "-device", strdup(d->type == VM_DISPLAY_QXL ? "qxl-vga,id=hs-video0"
							    : "virtio-vga,id=hs-video0"));
	add2(a, "-device", strdup("qemu-xhci,id=hs-usb"));
	add2(a, "-device", strdup("usb-tablet,id=hs-tablet,bus=hs-usb.0"));
}

/* One virtio-serial controller for the SPICE agent's port (a display)
 * and the guest agent's (agent). Like the balloon's, its PCI slot is
 * QEMU's pick (pcie.0 on q35, pci.0 on pc), before the host devices'
 * fixed places. The guest agent's chardev is a socket hsd listens on
 * (qga.sock, as QMP's): hsd connects to it when it talks to the agent. */
static void add_serial_ports(Argv *a, const VmSpec *s, const QemuLaunch *l)
{
	bool spice = s->display.type != VM_DISPLAY_NONE, agent = s->agent && l->agent_fd > 0;
	if (!spice && !agent)
		return;
	add2(a, "-device", strdup("virtio-serial-pci,id=hs-vser"));
	if (spice) {
		add2(a, "-chardev", strdup("spicevmc,id=hs-vdagent,name=vdagent"));
		add2(a, "-device", strdup("virtserialport,bus=hs-vser.0,chardev=hs-vdagent,"
					  "name=" QEMU_SPICE_AGENT_PORT));
	}
	if (agent) {
		add2(a, "-chardev",
		     hs_strdup_printf("socket,id=hs-qga,fd=%d,server=on,wait=off", l->agent_fd));
		add2(a, "-device", strdup("virtserialport,bus=hs-vser.0,chardev=hs-qga,"
					  "name=" QEMU_GUEST_AGENT_PORT ",id=" QEMU_GUEST_AGENT_PORT_ID));
	}
}

int qemu_argv_build(const VmSpec *s, const QemuLaunch *l, char ***ret_argv)
{
	Argv a = {0};
	_cleanup_free_ char *name = qemu_escape(s->name);
	_cleanup_free_ char *machine = qemu_escape(s->machine);

	if (!name || !machine)
		return -ENOMEM;

	add(&a, l->binary);
	add2(&a, "-name", hs_strdup_printf("guest=%s,debug-threads=on", name));
	add(&a, "-nodefaults");
	add(&a, "-no-user-config");
	/* Start paused: hsd finishes its set-up, then sends 'cont'. */
	add(&a, "-S");
	if (l->incoming)
		add2(&a, "-incoming", strdup("defer"));
	/* A guest poweroff leaves QEMU alive in the 'shutdown' state, so the
	 * reason survives even when hsd is not there to see the event. */
	add(&a, "-no-shutdown");
	/* mem-merge=off: this guest's RAM is not offered to KSM (tenants that
	 * want it for side-channel reasons). */
	/* Huge pages without NUMA cells: the machine's RAM is one backend. */
	bool file_ram = s->memory_file && l->ram_fd > 0;
	bool ram_backend = (s->hugepage_size && !l->n_numa_cells) || file_ram;
	/* UEFI: OVMF's two flash chips are block nodes (below); Secure Boot
	 * needs SMM, and its variables writable only from SMM. */
	bool uefi = l->fw_code_fd > 0 && l->fw_vars_fd > 0;
	add2(&a, "-machine",
	     hs_strdup_printf("%s%s%s%s%s", machine, s->no_mem_merge ? ",mem-merge=off" : "",
			      ram_backend ? ",memory-backend=hs-ram" : "",
			      uefi ? ",pflash0=hs-fw-code,pflash1=hs-fw-vars" : "",
			      uefi && s->secure_boot ? ",smm=on" : ""));
	if (uefi) {
		if (s->secure_boot)
			add2(&a, "-global", strdup("driver=cfi.pflash01,property=secure,value=on"));
		add2(&a, "-add-fd",
		     hs_strdup_printf("fd=%d,set=%d,opaque=hs-fw-code", l->fw_code_fd,
				      QEMU_FDSET_FW_CODE));
		add2(&a, "-blockdev",
		     hs_strdup_printf("driver=file,node-name=hs-fw-code-file,filename=/dev/fdset/%d,"
				      "read-only=on",
				      QEMU_FDSET_FW_CODE));
		add2(&a, "-blockdev",
		     strdup("driver=raw,node-name=hs-fw-code,file=hs-fw-code-file,read-only=on"));
		add2(&a, "-add-fd",
		     hs_strdup_printf("fd=%d,set=%d,opaque=hs-fw-vars", l->fw_vars_fd,
				      QEMU_FDSET_FW_VARS));
		add2(&a, "-blockdev",
		     hs_strdup_printf("driver=file,node-name=hs-fw-vars-file,filename=/dev/fdset/%d,"
				      "read-only=off",
				      QEMU_FDSET_FW_VARS));
		add2(&a, "-blockdev",
		     strdup("driver=raw,node-name=hs-fw-vars,file=hs-fw-vars-file,read-only=off"));
	}
	/* TCG's translation buffer is guest-independent memory that KSM can
	 * never merge (QEMU's default reserves up to 1 GiB, ~50 MiB used by a
	 * small guest): a bounded one is the biggest per-VM saving for dense
	 * TCG hosts. */
	if (s->accel == VM_ACCEL_TCG && l->tcg_tb_size_mib)
		add2(&a, "-accel", hs_strdup_printf("tcg,tb-size=%u", l->tcg_tb_size_mib));
	else
		add2(&a, "-accel", strdup(vm_accel_to_string(s->accel)));
	/* The -cpu value is an option list on purpose (model,+flag,...); the
	 * spec parser allows only model/flag characters. No default: QEMU's
	 * own model is the migration-safe baseline ("host" is opt-in). */
	if (s->cpu_model)
		add2(&a, "-cpu", strdup(s->cpu_model));
	add2(&a, "-m", hs_strdup_printf("%" PRIu64 "M", s->memory_mib));
	if (file_ram)
		/* A file hsd made (or a warm template's sealed copy, mapped
		 * privately): x-ignore-shared leaves it out of saved states.
		 * One backend, never split into NUMA cells: a template's and
		 * its clones' RAM blocks must be the same. */
		add2(&a, "-object",
		     hs_strdup_printf("memory-backend-file,id=hs-ram,size=%" PRIu64
				      "M,share=%s,mem-path=/proc/self/fd/%d",
				      s->memory_mib, l->ram_private ? "off" : "on", l->ram_fd));
	else if (ram_backend)
		add2(&a, "-object", ram_backend_object(s, "hs-ram", s->memory_mib, -1));
	/* NUMA placement: guest RAM in one backend per cell, bound to its
	 * host node; a VM on one node is one cell. */
	for (size_t i = 0; !file_ram && i < l->n_numa_cells; i++) {
		const QemuNumaCell *c = &l->numa_cells[i];
		char id[32];
		snprintf(id, sizeof(id), "hs-ram%zu", i);
		add2(&a, "-object", ram_backend_object(s, id, c->mem_mib, (int)c->host_node));
		if (c->n_vcpus)
			add2(&a, "-numa",
			     hs_strdup_printf("node,nodeid=%zu,memdev=hs-ram%zu,cpus=%u-%u", i, i,
					      c->first_vcpu, c->first_vcpu + c->n_vcpus - 1));
		else
			add2(&a, "-numa", hs_strdup_printf("node,nodeid=%zu,memdev=hs-ram%zu", i, i));
	}
	add2(&a, "-smp", hs_strdup_printf("%u", s->cpus));
	add2(&a, "-display", strdup("none"));
	if (l->sandbox) {
		/* A bridge NIC without a tap fd runs qemu-bridge-helper, which
		 * needs spawn; with fds passed, nothing is ever spawned. */
		bool spawn = false;
		for (size_t i = 0; i < s->n_nics; i++)
			spawn |= s->nics[i].type == VM_NIC_BRIDGE && !l->nic_fds[i].queues;
		add2(&a, "-sandbox",
		     hs_strdup_printf("on,obsolete=deny,elevateprivileges=deny,spawn=%s,"
				      "resourcecontrol=deny",
				      spawn ? "allow" : "deny"));
	}

	add2(&a, "-chardev",
	     hs_strdup_printf("socket,id=hs-qmp,fd=%d,server=on,wait=off", l->qmp_fd));
	add2(&a, "-mon", strdup("chardev=hs-qmp,mode=control"));
	if (l->pass_fds && l->serial_log_fd >= 0) {
		add2(&a, "-add-fd",
		     hs_strdup_printf("fd=%d,set=%d,opaque=serial-log", l->serial_log_fd,
				      QEMU_FDSET_SERIAL_LOG));
		add2(&a, "-chardev",
		     hs_strdup_printf("socket,id=hs-serial0,fd=%d,server=on,wait=off,"
				      "logfile=/dev/fdset/%d,logappend=on",
				      l->serial_fd, QEMU_FDSET_SERIAL_LOG));
	} else if (!l->pass_fds && l->serial_log) {
		_cleanup_free_ char *log = qemu_escape(l->serial_log);
		add2(&a, "-chardev",
		     log ? hs_strdup_printf("socket,id=hs-serial0,fd=%d,server=on,wait=off,"
					    "logfile=%s,logappend=on",
					    l->serial_fd, log)
			 : NULL);
	} else {
		add2(&a, "-chardev",
		     hs_strdup_printf("socket,id=hs-serial0,fd=%d,server=on,wait=off",
				      l->serial_fd));
	}
	add2(&a, "-serial", strdup("chardev:hs-serial0"));

	if (s->kernel) {
		/* -kernel takes a plain file name, not an option list. With
		 * fds, QEMU reads its own descriptor through /proc/self/fd. */
		add2(&a, "-kernel", l->pass_fds ? hs_strdup_printf("/proc/self/fd/%d", l->kernel_fd)
					       : strdup(s->kernel));
		if (s->initrd)
			add2(&a, "-initrd",
			     l->pass_fds ? hs_strdup_printf("/proc/self/fd/%d", l->initrd_fd)
					 : strdup(s->initrd));
		if (s->cmdline)
			add2(&a, "-append", strdup(s->cmdline));
	}

	for (size_t i = 0; i < s->n_disks; i++) {
		const VmDisk *d = &s->disks[i];
		const char *ro = d->readonly ? "on" : "off";
		if (l->pass_fds && l->chains[i]) {
			add_chain(&a, i, l->chains[i], d->readonly);
			char top[32];
			const QemuDiskChain *c = l->chains[i];
			qemu_layer_node(i, c->layers[c->n - 1].id, top, sizeof(top));
			add2(&a, "-device",
			     hs_strdup_printf("virtio-blk-pci,drive=%s,id=disk%zu%s", top, i,
					      i == 0 ? ",bootindex=1" : ""));
			continue;
		}
		_cleanup_free_ char *path = NULL;
		if (l->pass_fds) {
			/* QEMU picks the descriptor whose access mode fits. */
			for (int m = 0; m < 2; m++)
				if (l->disk_fds[i][m] >= 0)
					add2(&a, "-add-fd",
					     hs_strdup_printf("fd=%d,set=%zu,opaque=disk%zu-%s",
							      l->disk_fds[i][m], QEMU_FDSET_DISK(i),
							      i, m ? "rw" : "ro"));
			path = hs_strdup_printf("/dev/fdset/%zu", QEMU_FDSET_DISK(i));
		} else {
			path = qemu_escape(d->path);
		}
		add2(&a, "-blockdev",
		     path ? hs_strdup_printf("driver=file,node-name=hs-file%zu,filename=%s,"
					     "read-only=%s,cache.direct=off,discard=unmap",
					     i, path, ro)
			  : NULL);
		add2(&a, "-blockdev",
		     hs_strdup_printf("driver=%s,node-name=hs-disk%zu,file=hs-file%zu,read-only=%s,"
				      "discard=unmap",
				      vm_disk_format_to_string(d->format), i, i, ro));
		add2(&a, "-device",
		     hs_strdup_printf("virtio-blk-pci,drive=hs-disk%zu,id=disk%zu%s", i, i,
				      i == 0 ? ",bootindex=1" : ""));
	}
	if (l->pass_fds && l->cidata_fd > 0) {
		/* cloud-init's NoCloud volume, a CD-ROM on its own virtio-scsi
		 * controller: every guest kernel made for VMs has virtio_scsi
		 * and sr_mod (Debian's cloud kernel has no AHCI driver, so an
		 * ide-cd on q35 would be invisible to it). */
		add2(&a, "-add-fd",
		     hs_strdup_printf("fd=%d,set=%d,opaque=cidata", l->cidata_fd, QEMU_FDSET_CIDATA));
		add2(&a, "-blockdev",
		     hs_strdup_printf("driver=file,node-name=hs-cidata-file,filename=/dev/fdset/%d,"
				      "read-only=on",
				      QEMU_FDSET_CIDATA));
		add2(&a, "-blockdev",
		     strdup("driver=raw,node-name=hs-cidata,file=hs-cidata-file,read-only=on"));
		add2(&a, "-device", strdup("virtio-scsi-pci,id=hs-scsi0"));
		add2(&a, "-device", strdup("scsi-cd,drive=hs-cidata,id=cidata,bus=hs-scsi0.0"));
	}

	/* Every guest has a balloon: hsd can take memory back (hsctl set
	 * --balloon), and free page reporting hands pages the guest frees back
	 * to the host as it goes. */
	/* Not with huge pages: what the guest reports free would go back to
	 * the host's pool as whole huge pages, for any other VM to take. */
	add2(&a, "-device", hs_strdup_printf("virtio-balloon-pci,id=balloon0,free-page-reporting=%s",
					     s->hugepage_size ? "off" : "on"));

	for (size_t i = 0; i < s->n_nics; i++) {
		const VmNic *n = &s->nics[i];
		const QemuNicFds *f = &l->nic_fds[i];
		if (n->type == VM_NIC_VF || f->vf)
			continue; /* a host function (hostfns) */
		if (f->queues) {
			_cleanup_free_ char *fds = NULL, *vfds = NULL;
			for (unsigned q = 0; q < f->queues; q++) {
				char *x = hs_strdup_printf("%s%s%d", fds ? fds : "", q ? ":" : "",
							   f->fds[q]);
				free(fds);
				fds = x;
				if (f->vhost) {
					x = hs_strdup_printf("%s%s%d", vfds ? vfds : "", q ? ":" : "",
							     f->vhostfds[q]);
					free(vfds);
					vfds = x;
				}
			}
			bool one = f->queues == 1;
			add2(&a, "-netdev",
			     !fds || (f->vhost && !vfds)
				     ? NULL
				     : f->vhost ? hs_strdup_printf("tap,id=hs-%s,%s=%s,vhost=on,%s=%s", n->id,
								  one ? "fd" : "fds", fds,
								  one ? "vhostfd" : "vhostfds", vfds)
						: hs_strdup_printf("tap,id=hs-%s,%s=%s,vhost=off", n->id,
								  one ? "fd" : "fds", fds));
		} else if (n->type == VM_NIC_BRIDGE && n->bridge) {
			_cleanup_free_ char *br = qemu_escape(n->bridge);
			add2(&a, "-netdev",
			     br ? hs_strdup_printf("bridge,id=hs-%s,br=%s", n->id, br) : NULL);
		} else {
			add2(&a, "-netdev", hs_strdup_printf("user,id=hs-%s", n->id));
		}
		unsigned queues = f->queues ? f->queues : 1;
		add2(&a, "-device", nic_device_arg(n, queues));
	}

	if (s->memory_file) {
		/* A clone gets a new GUID: QEMU writes it into guest memory
		 * after loading the state and tells the guest (ACPI). */
		add2(&a, "-device", hs_strdup_printf("vmgenid,id=vmgenid0,guid=%s", s->vmgenid));
		/* fw_cfg is not migrated: every start says who the VM is now. */
		_cleanup_free_ char *info = qemu_escape(l->clone_info ? l->clone_info : "");
		add2(&a, "-fw_cfg",
		     info ? hs_strdup_printf("name=opt/org.hypervisor-scale/clone,string=%s", info)
			  : NULL);
	}

	add_display(&a, s, l);
	add_serial_ports(&a, s, l);

	if (l->tpm_fd > 0) {
		/* A connected socket: QEMU is the client of swtpm's control
		 * channel (and hands it the data channel over it). */
		add2(&a, "-chardev", hs_strdup_printf("socket,id=hs-tpm-ctrl,fd=%d", l->tpm_fd));
		add2(&a, "-tpmdev", strdup("emulator,id=hs-tpm,chardev=hs-tpm-ctrl"));
		add2(&a, "-device", strdup("tpm-crb,tpmdev=hs-tpm,id=tpm0"));
	}

	/* Host PCI devices: on q35 a PCIe root port each (and the spare
	 * ones hot-plugs take), on pc a slot of the PCI bus each. */
	bool q35 = vm_machine_is_q35(s->machine);
	for (size_t i = 0; q35 && i < s->n_hostdevs; i++)
		add2(&a, "-device",
		     hs_strdup_printf("pcie-root-port,id=hs-hostport%zu,chassis=%zu,bus=pcie.0", i,
				      1 + i));
	/* VF NICs: a root port each, after the host devices' (chassis after
	 * the spare ports'). */
	for (size_t i = 0; q35 && i < l->n_hostfns; i++)
		if (l->hostfns[i].nic)
			add2(&a, "-device",
			     hs_strdup_printf("pcie-root-port,id=hs-hostport%u,chassis=%u,bus=pcie.0",
					      l->hostfns[i].dev,
					      1 + 2 * VM_MAX_HOSTDEVS + l->hostfns[i].dev));
	for (unsigned i = 0; q35 && i < s->hotplug_ports; i++)
		add2(&a, "-device",
		     hs_strdup_printf("pcie-root-port,id=hs-hotport%u,chassis=%u,bus=pcie.0", i,
				      1 + VM_MAX_HOSTDEVS + i));
	for (size_t i = 0; i < l->n_hostfns; i++)
		add2(&a, "-device", device_option(qemu_hostfn_props(s, &l->hostfns[i], NULL)));

	if (a.oom) {
		strv_free(a.v);
		return -ENOMEM;
	}
	*ret_argv = a.v;
	return 0;
}
