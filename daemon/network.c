/* SPDX-License-Identifier: Apache-2.0 */
/* Networks and the host side of NICs.
 *
 * A network (/v1/networks) names how NICs reach the host's network: a Linux
 * bridge (one hsd made and owns, or one of the host's), a macvtap on a host
 * interface, or the virtual functions of an SR-IOV NIC. For each start hsd
 * makes the NICs' taps and macvtaps itself (tun ioctls, rtnetlink), puts
 * the VLAN on the bridge port, opens /dev/vhost-net, and hands QEMU the
 * descriptors: QEMU, unprivileged, never touches the host's network.
 *
 * Taps are not persistent: they go when QEMU closes them (it exits). A
 * macvtap is a link of its own: hsd deletes it when QEMU is gone, and after
 * a restart finds it again in <run>/vms/<name>/nics.json. */
#include "hsd.h"

#include <ctype.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "argv.h"
#include "net.h"
#include "nl.h"
#include "sriov.h"
#include "store.h"
#include "vfio.h"

#define NETWORKS_FILE "networks.json"
#define NICS_FILE "nics.json"
#define UNPLUG_WAIT 10.0

typedef enum NetType {
	NET_BRIDGE,
	NET_MACVTAP,
	NET_SRIOV,
} NetType;

static const char *const net_types[] = {"bridge", "macvtap", "sriov"};
static const char *const net_ifkey[] = {"bridge", "parent", "pf"};
static const char *const macvtap_modes[] = {"bridge", "vepa", "private", "passthru", NULL};

typedef struct Network {
	struct Network *next;
	char name[VM_NAME_MAX + 1];
	NetType type;
	char ifname[IFNAMSIZ]; /* the bridge, the macvtap parent, the PF */
	bool create;           /* bridge: made and owned by hsd */
	bool vlan_filtering;   /* a created bridge's */
	char mode[16];         /* macvtap */
} Network;

/* A NIC's host side while its VM is active. */
typedef struct NicRun {
	char id[VM_NIC_ID_MAX + 1];
	char ifname[IFNAMSIZ]; /* tap or macvtap; "" none (user, vf) */
	bool macvtap;
	bool vhost;
	unsigned queues;
	char vf[16];           /* vf: the PCI address */
	bool detaching;
} NicRun;

struct VmNet {
	NicRun nics[VM_MAX_NICS];
	size_t n;
};

/* ---- networks ---- */

static Network *network_find(Hsd *h, const char *name)
{
	for (Network *n = h->networks; n; n = n->next)
		if (!strcmp(n->name, name))
			return n;
	return NULL;
}

static json_t *network_to_json(const Network *n)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "name", n->name, "type", net_types[n->type],
			      net_ifkey[n->type], n->ifname);
	if (o && n->type == NET_BRIDGE) {
		json_object_set_new(o, "create", json_boolean(n->create));
		if (n->create)
			json_object_set_new(o, "vlan_filtering", json_boolean(n->vlan_filtering));
	}
	if (o && n->type == NET_MACVTAP)
		json_object_set_new(o, "mode", json_string(n->mode));
	return o;
}

/* A network from JSON (a request body, or networks.json): checks only the
 * form, not the host. */
static int network_from_json(json_t *j, Network *ret, HsError *err)
{
	Network n = {0};
	const char *key;
	json_t *v;
	if (!json_is_object(j))
		return hs_error_set(err, -EINVAL, "invalid", "a network must be a JSON object");
	const char *name = json_string_value(json_object_get(j, "name"));
	const char *type = json_string_value(json_object_get(j, "type"));
	if (!name || !vm_name_is_valid(name))
		return hs_error_set(err, -EINVAL, "invalid",
				    "name: required, a-z, 0-9, '_', '-' (starting with a letter "
				    "or digit), at most %d characters",
				    VM_NAME_MAX);
	snprintf(n.name, sizeof(n.name), "%s", name);
	size_t t = 0;
	while (type && t < ARRAY_SIZE(net_types) && strcmp(type, net_types[t]))
		t++;
	if (!type || t == ARRAY_SIZE(net_types))
		return hs_error_set(err, -EINVAL, "invalid",
				    "type: must be 'bridge', 'macvtap' or 'sriov'");
	n.type = (NetType)t;
	json_object_foreach (j, key, v) {
		if (!strcmp(key, "name") || !strcmp(key, "type") || !strcmp(key, net_ifkey[t]) ||
		    (n.type == NET_BRIDGE &&
		     (!strcmp(key, "create") || !strcmp(key, "vlan_filtering"))) ||
		    (n.type == NET_MACVTAP && !strcmp(key, "mode")))
			continue;
		return hs_error_set(err, -EINVAL, "invalid", "unknown field '%s' for a %s network",
				    key, type);
	}
	json_t *c = json_object_get(j, "create"), *f = json_object_get(j, "vlan_filtering");
	if ((c && !json_is_boolean(c)) || (f && !json_is_boolean(f)))
		return hs_error_set(err, -EINVAL, "invalid", "create, vlan_filtering: true or false");
	n.create = json_is_true(c);
	n.vlan_filtering = json_is_true(f);
	if (f && !n.create)
		return hs_error_set(err, -EINVAL, "invalid",
				    "vlan_filtering: only for a bridge hsd creates (an existing "
				    "bridge's is its own: ip link set BR type bridge "
				    "vlan_filtering 1)");
	const char *ifn = json_string_value(json_object_get(j, net_ifkey[t]));
	if (ifn && !vm_ifname_is_valid(ifn))
		return hs_error_set(err, -EINVAL, "invalid",
				    "%s: '%s' is not an interface name (at most 15 of a-z, A-Z, "
				    "0-9, '_', '.', '-')",
				    net_ifkey[t], ifn);
	if (ifn)
		snprintf(n.ifname, sizeof(n.ifname), "%s", ifn);
	else if (n.create)
		snprintf(n.ifname, sizeof(n.ifname), "hsbr-%.10s", n.name);
	else
		return hs_error_set(err, -EINVAL, "invalid", "%s: required%s", net_ifkey[t],
				    n.type == NET_BRIDGE ? " (or \"create\": true)" : "");
	const char *mode = json_string_value(json_object_get(j, "mode"));
	snprintf(n.mode, sizeof(n.mode), "%s", mode ? mode : "bridge");
	bool mode_ok = false;
	for (size_t i = 0; macvtap_modes[i]; i++)
		mode_ok |= !strcmp(n.mode, macvtap_modes[i]);
	if (!mode_ok)
		return hs_error_set(err, -EINVAL, "invalid",
				    "mode: must be bridge, vepa, private or passthru");
	*ret = n;
	return 0;
}

static int networks_save(Hsd *h)
{
	json_auto_t *a = json_array();
	for (Network *n = h->networks; n; n = n->next)
		json_array_append_new(a, network_to_json(n));
	json_auto_t *j = json_pack("{s:O}", "networks", a);
	return j ? store_save_setting(h->state_dir, NETWORKS_FILE, j) : -ENOMEM;
}

static void network_insert(Hsd *h, Network *n)
{
	Network **pp = &h->networks;
	while (*pp && strcmp((*pp)->name, n->name) < 0)
		pp = &(*pp)->next;
	n->next = *pp;
	*pp = n;
}

static bool if_exists(Hsd *h, const char *ifname)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "sys/class/net/%s", ifname);
	return fstatat(h->host.rootfd, path, &st, 0) == 0;
}

static void recover_macvtaps(Hsd *h);

int network_init(Hsd *h, HsError *err)
{
	json_t *j = NULL;
	recover_macvtaps(h);
	int r = store_load_setting(h->state_dir, NETWORKS_FILE, &j);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot read %s/%s: %s", h->state_dir,
				    NETWORKS_FILE, strerror(-r));
	size_t i;
	json_t *nj;
	json_array_foreach (json_object_get(j, "networks"), i, nj) {
		Network tmp;
		HsError e;
		if (network_from_json(nj, &tmp, &e) < 0) {
			log_warning("network #%zu of %s ignored: %s", i, NETWORKS_FILE, e.message);
			continue;
		}
		Network *n = malloc(sizeof(*n));
		if (!n)
			break;
		*n = tmp;
		network_insert(h, n);
		/* A bridge of ours that is gone (the host rebooted): again. */
		if (n->create && !if_exists(h, n->ifname)) {
			if (nl_bridge_create(n->ifname, n->vlan_filtering, &e) < 0)
				log_warning("network %s: cannot make bridge %s again: %s", n->name,
					    n->ifname, e.message);
			else
				log_info("network %s: bridge %s made again", n->name, n->ifname);
		}
	}
	json_decref(j);
	return 0;
}

/* Macvtaps of VMs whose QEMU went while hsd was away. */
static void recover_macvtaps(Hsd *h)
{
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (vm_state_is_active(vm->status.state))
			continue;
		_cleanup_close_ int dfd = openat(h->run_vms_dirfd, vm->spec.name,
						 O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		_cleanup_free_ char *data = NULL;
		if (dfd < 0 || hs_read_file(dfd, NICS_FILE, 1 << 16, &data, NULL) < 0)
			continue;
		json_auto_t *a = json_loads(data, 0, NULL);
		size_t i;
		json_t *nj;
		json_array_foreach (a, i, nj) {
			const char *ifn = json_string_value(json_object_get(nj, "interface"));
			HsError e;
			if (json_is_true(json_object_get(nj, "macvtap")) && ifn && ifn[0] &&
			    nl_link_delete(ifn, &e) == 0)
				log_info("vm %s: macvtap %s of its last run deleted", vm->spec.name, ifn);
		}
		(void)unlinkat(dfd, NICS_FILE, 0);
	}
}

void network_free(Hsd *h)
{
	while (h->networks) {
		Network *n = h->networks;
		h->networks = n->next;
		free(n);
	}
}

static VmNicType net_nic_type(const Network *n)
{
	return n->type == NET_BRIDGE ? VM_NIC_BRIDGE : n->type == NET_MACVTAP ? VM_NIC_MACVTAP
									      : VM_NIC_VF;
}

/* The NIC's type, its network's when it names one (NULL when missing). */
static VmNicType nic_type(Hsd *h, const VmNic *nic, Network **ret)
{
	Network *n = nic->network ? network_find(h, nic->network) : NULL;
	if (ret)
		*ret = n;
	if (n)
		return net_nic_type(n);
	return nic->type == VM_NIC_NETWORK ? VM_NIC_BRIDGE : nic->type;
}

/* ---- NIC specs ---- */

/* The VM (other than vm) whose spec has a NIC with this MAC; NULL: none. */
static const char *mac_owner(Hsd *h, const char *mac, const char *vm)
{
	for (Vm *v = h->vms; v; v = v->next)
		for (size_t i = 0; i < v->spec.n_nics && (!vm || strcmp(v->spec.name, vm)); i++)
			if (!strcmp(v->spec.nics[i].mac, mac))
				return v->spec.name;
	return NULL;
}

static int nic_check(Hsd *h, VmNic *nic, const char *where, const char *vm, HsError *err)
{
	Network *n = NULL;
	if (nic->network) {
		n = network_find(h, nic->network);
		if (!n)
			return hs_error_set(err, -ENOENT, "unknown-network",
					    "%s.network: no network named '%s' (hsctl network list)",
					    where, nic->network);
		if (nic->type != VM_NIC_NETWORK && nic->type != net_nic_type(n))
			return hs_error_set(err, -EINVAL, "invalid",
					    "%s.type: '%s' but network '%s' is a %s network", where,
					    vm_nic_type_to_string(nic->type), n->name,
					    net_types[n->type]);
		VmNicType t = net_nic_type(n);
		if (t == VM_NIC_VF && nic->queues > 1)
			return hs_error_set(err, -EINVAL, "invalid",
					    "%s.queues: a VF NIC's queues are the VF's own", where);
		if (t == VM_NIC_MACVTAP && nic->vlan)
			return hs_error_set(err, -EINVAL, "invalid",
					    "%s.vlan: a macvtap NIC has no VLAN (put the VLAN on "
					    "its parent)",
					    where);
	}
	const char *owner = mac_owner(h, nic->mac, vm);
	if (owner && nic->mac_given)
		return hs_error_set(err, -EEXIST, "mac-in-use", "%s.mac: %s is already used by VM '%s'",
				    where, nic->mac, owner);
	/* Generated: drawn again until unique (3 random bytes: the loop ends
	 * long before the host has 16 million NICs). */
	for (unsigned tries = 0; owner && tries < 1000; tries++) {
		vm_mac_generate(nic->mac);
		owner = mac_owner(h, nic->mac, vm);
	}
	return 0;
}

int network_spec_check(Hsd *h, VmSpec *s, const char *vm, HsError *err)
{
	for (size_t i = 0; i < s->n_nics; i++) {
		char where[32];
		snprintf(where, sizeof(where), "nics[%zu]", i);
		int r = nic_check(h, &s->nics[i], where, vm, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- the host side of a VM's NICs ---- */

static struct VmNet *vm_net(Vm *vm)
{
	if (!vm->net)
		vm->net = calloc(1, sizeof(*vm->net));
	return vm->net;
}

static NicRun *nic_run(Vm *vm, const char *id)
{
	for (size_t i = 0; vm->net && i < vm->net->n; i++)
		if (!strcmp(vm->net->nics[i].id, id))
			return &vm->net->nics[i];
	return NULL;
}

/* metrics.c reads tap_names[] by NIC index. */
static void sync_tap_names(Vm *vm)
{
	for (size_t i = 0; i < VM_MAX_NICS; i++) {
		NicRun *r = i < vm->spec.n_nics ? nic_run(vm, vm->spec.nics[i].id) : NULL;
		snprintf(vm->tap_names[i], sizeof(vm->tap_names[i]), "%s", r ? r->ifname : "");
	}
}

static void net_save(Vm *vm)
{
	if (vm->run_dirfd < 0 || !vm->net)
		return;
	json_auto_t *a = json_array();
	for (size_t i = 0; i < vm->net->n; i++) {
		NicRun *r = &vm->net->nics[i];
		json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:b, s:i, s:s}", "id", r->id,
						   "interface", r->ifname, "macvtap", r->macvtap,
						   "vhost", r->vhost, "queues", (int)r->queues,
						   "vf", r->vf));
	}
	_cleanup_free_ char *s = json_dumps(a, JSON_COMPACT);
	if (!s || hs_write_file_atomic(vm->run_dirfd, NICS_FILE, s, strlen(s), 0600) < 0)
		log_warning("vm %s: cannot record its NICs' interfaces", vm->spec.name);
	sync_tap_names(vm);
}

static void nic_run_drop(Vm *vm, const char *id)
{
	NicRun *r = nic_run(vm, id);
	if (!r)
		return;
	HsError e;
	if (r->macvtap && r->ifname[0] && nl_link_delete(r->ifname, &e) < 0 && e.code != -ENODEV)
		log_warning("vm %s: macvtap %s not deleted: %s", vm->spec.name, r->ifname, e.message);
	*r = vm->net->nics[--vm->net->n];
	net_save(vm);
}

/* vhost-net descriptors, one per queue: 0 with vhost, 1 without (not
 * asked for, or absent while only wanted). */
static int open_vhost(const VmNic *nic, unsigned queues, int *vfds, HsError *err)
{
	for (unsigned q = 0; q < queues; q++)
		vfds[q] = -1;
	if (nic->vhost == 0)
		return 1;
	for (unsigned q = 0; q < queues; q++) {
		int fd = net_vhost_open();
		if (fd == -ENOENT && nic->vhost < 0)
			return 1;
		if (fd < 0) {
			net_close_fds(vfds, queues);
			return hs_error_set(err, fd == -ENOENT ? -ENODEV : fd, "no-vhost",
					    "NIC %s: vhost-net is required (\"vhost\": true) but "
					    "%s (modprobe vhost_net)",
					    nic->id,
					    fd == -ENOENT ? "this host has no /dev/vhost-net"
							  : "/dev/vhost-net cannot be opened");
		}
		vfds[q] = fd;
	}
	return 0;
}

/* Makes NIC's host side: its descriptors into f (real descriptors, not
 * yet the child's), its record into run. */
static int nic_prepare(Vm *vm, const VmNic *nic, QemuNicFds *f, NicRun *run, HsError *err)
{
	Hsd *h = vm->hsd;
	Network *n = NULL;
	VmNicType t = nic_type(h, nic, &n);
	memset(f, 0, sizeof(*f));
	memset(run, 0, sizeof(*run));
	snprintf(run->id, sizeof(run->id), "%s", nic->id);
	if (nic->network && !n)
		return hs_error_set(err, -ENOENT, "unknown-network",
				    "NIC %s: network '%s' does not exist (any more)", nic->id,
				    nic->network);
	if (t == VM_NIC_USER || t == VM_NIC_VF)
		return 0;
	unsigned queues = vm_nic_queues(nic, vm->spec.cpus);
	int r;
	if (t == VM_NIC_BRIDGE) {
		const char *br = n ? n->ifname : nic->bridge;
		int filtering;
		if (!net_bridge_exists(h->host.rootfd, br, &filtering))
			return hs_error_set(err, -ENODEV, "unknown-bridge",
					    "NIC %s: bridge '%s' does not exist on this host (or is "
					    "not a bridge)",
					    nic->id, br);
		if (nic->vlan && filtering != 1)
			return hs_error_set(err, -ENODEV, "vlan-filtering-off",
					    "NIC %s: VLAN %u on bridge '%s', which has no VLAN "
					    "filtering (ip link set %s type bridge vlan_filtering 1)",
					    nic->id, nic->vlan, br, br);
		r = net_tap_create(h->host.rootfd, br, queues, f->fds, run->ifname, err);
		if (r < 0)
			return r;
		if (nic->vlan && (r = nl_bridge_port_vlan(run->ifname, nic->vlan, err)) < 0) {
			net_close_fds(f->fds, queues);
			return r;
		}
	} else {
		HsError e;
		for (unsigned k = 0;; k++) {
			snprintf(run->ifname, sizeof(run->ifname), "hsmv%u", k);
			r = nl_macvtap_create(run->ifname, n->ifname, n->mode, nic->mac, &e);
			if (r != -EEXIST || k >= 9999)
				break;
		}
		if (r < 0) {
			run->ifname[0] = '\0';
			return hs_error_set(err, r == -ENODEV ? -ENODEV : r,
					    r == -ENODEV ? "unknown-interface" : "network",
					    "NIC %s: %s", nic->id, e.message);
		}
		run->macvtap = true;
		r = net_macvtap_open(h->host.rootfd, run->ifname, vm->run_dirfd, queues, f->fds,
				     err);
		if (r < 0) {
			(void)nl_link_delete(run->ifname, &e);
			return r;
		}
	}
	r = open_vhost(nic, queues, f->vhostfds, err);
	if (r < 0) {
		net_close_fds(f->fds, queues);
		if (run->macvtap)
			(void)nl_link_delete(run->ifname, &(HsError){0});
		return r;
	}
	f->queues = run->queues = queues;
	f->vhost = run->vhost = r == 0;
	return 0;
}

int network_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, HsError *err)
{
	struct VmNet *net = vm_net(vm);
	if (!net)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	for (size_t i = 0; i < vm->spec.n_nics; i++) {
		const VmNic *nic = &vm->spec.nics[i];
		QemuNicFds f;
		NicRun run;
		if (nic_type(vm->hsd, nic, NULL) == VM_NIC_VF) {
			/* Picked and bound with the host devices (network_vm_vfs). */
			memset(&l->nic_fds[i], 0, sizeof(l->nic_fds[i]));
			l->nic_fds[i].vf = true;
			continue;
		}
		int r = nic_prepare(vm, nic, &f, &run, err);
		if (r < 0) {
			network_vm_release(vm);
			return r;
		}
		net->nics[net->n++] = run;
		/* The child's numbers; child_fds_add takes each descriptor. */
		for (unsigned q = 0; q < f.queues; q++) {
			f.fds[q] = child_fds_add(fds, f.fds[q]);
			if (f.vhost)
				f.vhostfds[q] = child_fds_add(fds, f.vhostfds[q]);
			if (f.fds[q] < 0 || (f.vhost && f.vhostfds[q] < 0)) {
				for (unsigned k = q + 1; k < f.queues; k++) {
					close(f.fds[k]);
					if (f.vhost)
						close(f.vhostfds[k]);
				}
				network_vm_release(vm);
				return hs_error_set(err, -EMFILE, "internal",
						    "too many descriptors for QEMU");
			}
		}
		l->nic_fds[i] = f;
	}
	net_save(vm);
	return 0;
}

void network_vm_qmp_ready(Vm *vm)
{
	for (size_t i = 0; i < vm->spec.n_nics; i++)
		if (vm->spec.nics[i].link_down && vm->spec.nics[i].type != VM_NIC_VF)
			qmp_client_execute(vm->qmp, "set_link",
					   json_pack("{s:s, s:b}", "name", vm->spec.nics[i].id, "up",
						     0),
					   vm->hsd->qmp_timeout, NULL, NULL);
}

static void unplugs_vm_gone(Vm *vm);

void network_vm_release(Vm *vm)
{
	unplugs_vm_gone(vm);
	while (vm->net && vm->net->n)
		nic_run_drop(vm, vm->net->nics[0].id);
	if (vm->run_dirfd >= 0)
		(void)unlinkat(vm->run_dirfd, NICS_FILE, 0);
	memset(vm->tap_names, 0, sizeof(vm->tap_names));
}

void network_vm_free(Vm *vm)
{
	free(vm->net);
	vm->net = NULL;
}

void network_vm_adopted(Vm *vm)
{
	_cleanup_free_ char *data = NULL;
	if (vm->run_dirfd < 0 || hs_read_file(vm->run_dirfd, NICS_FILE, 1 << 16, &data, NULL) < 0)
		return;
	json_auto_t *a = json_loads(data, 0, NULL);
	struct VmNet *net = vm_net(vm);
	size_t i;
	json_t *j;
	if (!net)
		return;
	net->n = 0;
	json_array_foreach (a, i, j) {
		if (net->n >= VM_MAX_NICS)
			break;
		NicRun *r = &net->nics[net->n++];
		memset(r, 0, sizeof(*r));
		snprintf(r->id, sizeof(r->id), "%s",
			 json_string_value(json_object_get(j, "id")) ?: "");
		snprintf(r->ifname, sizeof(r->ifname), "%s",
			 json_string_value(json_object_get(j, "interface")) ?: "");
		snprintf(r->vf, sizeof(r->vf), "%s", json_string_value(json_object_get(j, "vf")) ?: "");
		r->macvtap = json_is_true(json_object_get(j, "macvtap"));
		r->vhost = json_is_true(json_object_get(j, "vhost"));
		r->queues = (unsigned)json_integer_value(json_object_get(j, "queues"));
	}
	sync_tap_names(vm);
}

static json_t *nic_json(Vm *vm, const VmNic *nic)
{
	json_t *o = vm_nic_to_json(nic);
	Network *n = NULL;
	VmNicType t = nic_type(vm->hsd, nic, &n);
	NicRun *r = nic_run(vm, nic->id);
	if (!o)
		return NULL;
	json_object_set_new(o, "type", json_string(vm_nic_type_to_string(t)));
	if (r) {
		if (r->ifname[0])
			json_object_set_new(o, "interface", json_string(r->ifname));
		if (r->vf[0])
			json_object_set_new(o, "vf", json_string(r->vf));
		json_object_set_new(o, "vhost_active", json_boolean(r->vhost));
		json_object_set_new(o, "queues_active", json_integer(r->queues));
		json_object_set_new(o, "state",
				    json_string(r->detaching ? "detaching" : "attached"));
	}
	return o;
}

json_t *network_vm_json(Vm *vm)
{
	if (!vm->net || !vm->net->n)
		return NULL;
	json_t *a = json_array();
	for (size_t i = 0; a && i < vm->net->n; i++) {
		NicRun *r = &vm->net->nics[i];
		json_t *o = json_pack("{s:s, s:b, s:i, s:s}", "id", r->id, "vhost", r->vhost,
				      "queues", (int)r->queues, "state",
				      r->detaching ? "detaching" : "attached");
		if (o && r->ifname[0])
			json_object_set_new(o, "interface", json_string(r->ifname));
		if (o && r->vf[0])
			json_object_set_new(o, "vf", json_string(r->vf));
		json_array_append_new(a, o);
	}
	return a;
}

static VmNic *spec_nic(const VmSpec *s, const char *id, size_t *ret_i)
{
	for (size_t i = 0; i < s->n_nics; i++)
		if (!strcmp(s->nics[i].id, id)) {
			if (ret_i)
				*ret_i = i;
			return (VmNic *)&s->nics[i];
		}
	return NULL;
}

/* ---- SR-IOV VFs given to VMs ---- */

bool network_vm_has_vfs(Vm *vm)
{
	for (size_t i = 0; i < vm->spec.n_nics; i++)
		if (nic_type(vm->hsd, &vm->spec.nics[i], NULL) == VM_NIC_VF)
			return true;
	return false;
}

static int sriov_root(Hsd *h)
{
	return open(h->vfio_root ? h->vfio_root : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int network_vm_vfs(Vm *vm, QemuHostFn *out, size_t max, size_t *ret_n, HsError *err)
{
	Hsd *h = vm->hsd;
	*ret_n = 0;
	if (!network_vm_has_vfs(vm))
		return 0;
	struct VmNet *net = vm_net(vm);
	_cleanup_close_ int root = sriov_root(h);
	if (!net || root < 0)
		return hs_error_set(err, -ENOMEM, "internal", "cannot look at SR-IOV devices");
	/* Taken: every claimed device (other VMs', host devices) and the VFs
	 * other VMs picked but have not bound yet. */
	char taken[64][16];
	size_t n_taken = 0;
	VfioClaim *claims = NULL;
	size_t nc = 0;
	if (vfio_claims_list(h->pci_claims_fd, &claims, &nc) == 0)
		for (size_t i = 0; i < nc && n_taken < ARRAY_SIZE(taken); i++)
			snprintf(taken[n_taken++], sizeof(taken[0]), "%s", claims[i].addr);
	free(claims);
	for (Vm *o = h->vms; o; o = o->next)
		for (size_t i = 0; o->net && i < o->net->n && n_taken < ARRAY_SIZE(taken); i++)
			if (o->net->nics[i].vf[0])
				snprintf(taken[n_taken++], sizeof(taken[0]), "%s", o->net->nics[i].vf);
	unsigned k = 0;
	for (size_t i = 0; i < vm->spec.n_nics; i++) {
		Network *n = NULL;
		const VmNic *nic = &vm->spec.nics[i];
		if (nic_type(h, nic, &n) != VM_NIC_VF)
			continue;
		SriovVf vf;
		int r = n ? sriov_vf_pick(root, n->ifname, (const char(*)[16])taken, n_taken, &vf, err)
			  : hs_error_set(err, -ENOENT, "unknown-network",
					 "NIC %s: network '%s' does not exist (any more)", nic->id,
					 nic->network);
		if (r < 0 || *ret_n >= max || net->n >= VM_MAX_NICS) {
			net->n = 0;
			return r < 0 ? r
				     : hs_error_set(err, -E2BIG, "invalid",
						    "too many host functions for one VM");
		}
		NicRun *run = &net->nics[net->n++];
		memset(run, 0, sizeof(*run));
		snprintf(run->id, sizeof(run->id), "%s", nic->id);
		snprintf(run->vf, sizeof(run->vf), "%s", vf.address);
		run->queues = 1;
		if (n_taken < ARRAY_SIZE(taken))
			snprintf(taken[n_taken++], sizeof(taken[0]), "%s", vf.address);
		QemuHostFn *f = &out[(*ret_n)++];
		memset(f, 0, sizeof(*f));
		snprintf(f->addr, sizeof(f->addr), "%s", vf.address);
		f->dev = (unsigned)vm->spec.n_hostdevs + k++;
		f->primary = true;
		f->nic = true;
		f->nic_index = (unsigned)i;
		log_info("vm %s: NIC %s gets VF %u of %s (%s)", vm->spec.name, nic->id, vf.index,
			 n->ifname, vf.address);
	}
	return 0;
}

int network_vm_vfs_configure(Vm *vm, HsError *err)
{
	Hsd *h = vm->hsd;
	_cleanup_close_ int root = sriov_root(h);
	for (size_t i = 0; vm->net && i < vm->net->n; i++) {
		NicRun *run = &vm->net->nics[i];
		size_t idx;
		const VmNic *nic = run->vf[0] ? spec_nic(&vm->spec, run->id, &idx) : NULL;
		char pf[IFNAMSIZ];
		unsigned index;
		if (!nic)
			continue;
		if (root < 0 || sriov_vf_of(root, run->vf, pf, &index) < 0)
			return hs_error_set(err, -ENODEV, "device-missing",
					    "NIC %s: VF %s is no longer a virtual function", nic->id,
					    run->vf);
		/* The guest's MAC and VLAN are the PF's to enforce: the
		 * guest cannot change them from inside. */
		int r = nl_vf_set(pf, index, nic->mac, (int)nic->vlan, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- /v1/networks ---- */

static json_t *network_state_json(Hsd *h, const Network *n)
{
	json_t *o = network_to_json(n);
	if (!o)
		return NULL;
	int filtering = -1;
	bool present = n->type == NET_BRIDGE ? net_bridge_exists(h->host.rootfd, n->ifname,
								 &filtering) == 1
					     : if_exists(h, n->ifname);
	json_object_set_new(o, "present", json_boolean(present));
	if (n->type == NET_BRIDGE)
		json_object_set_new(o, "vlan_filtering",
				    present && filtering >= 0 ? json_boolean(filtering) : json_null());
	json_t *ports = json_array();
	for (Vm *vm = h->vms; vm; vm = vm->next)
		for (size_t i = 0; i < vm->spec.n_nics; i++) {
			const VmNic *nic = &vm->spec.nics[i];
			NicRun *r = nic_run(vm, nic->id);
			if (!nic->network || strcmp(nic->network, n->name) || !r)
				continue;
			json_t *p = json_pack("{s:s, s:s, s:s, s:s}", "vm", vm->spec.name, "nic",
					      nic->id, "mac", nic->mac, "interface",
					      r->vf[0] ? r->vf : r->ifname);
			if (p && nic->vlan)
				json_object_set_new(p, "vlan", json_integer(nic->vlan));
			json_array_append_new(ports, p);
		}
	json_object_set_new(o, "ports", ports);
	return o;
}

static void networks_create(Hsd *h, HttpRequest *req)
{
	json_auto_t *body = body_json(req, false);
	if (!body)
		return;
	Network tmp;
	HsError err = {0};
	if (network_from_json(body, &tmp, &err) < 0) {
		http_reply_hserror(req, &err);
		return;
	}
	if (network_find(h, tmp.name)) {
		http_reply_error(req, 409, "exists", "network '%s' exists already", tmp.name);
		return;
	}
	for (Network *o = h->networks; o; o = o->next)
		if (o->create && tmp.create && !strcmp(o->ifname, tmp.ifname)) {
			http_reply_error(req, 409, "exists", "bridge %s is network '%s''s",
					 tmp.ifname, o->name);
			return;
		}
	int r = 0;
	if (tmp.type == NET_BRIDGE && tmp.create) {
		r = nl_bridge_create(tmp.ifname, tmp.vlan_filtering, &err);
		if (r == -EOPNOTSUPP)
			hs_error_set(&err, -ENODEV, "unsupported",
				     "bridge %s: this kernel has no bridge VLAN filtering "
				     "(CONFIG_BRIDGE_VLAN_FILTERING); create the network without "
				     "\"vlan_filtering\" or on a host that has it",
				     tmp.ifname);
	} else if (tmp.type == NET_BRIDGE) {
		if (!net_bridge_exists(h->host.rootfd, tmp.ifname, NULL))
			r = hs_error_set(&err, -ENOENT, "unknown-bridge",
					 "bridge '%s' does not exist on this host (or is not a "
					 "bridge); \"create\": true makes one",
					 tmp.ifname);
	} else if (!if_exists(h, tmp.ifname)) {
		r = hs_error_set(&err, -ENOENT, "unknown-interface",
				 "interface '%s' does not exist on this host", tmp.ifname);
	} else if (tmp.type == NET_SRIOV) {
		SriovPf pf = {0};
		_cleanup_close_ int root = sriov_root(h);
		r = sriov_pf_read(root, tmp.ifname, &pf, &err);
		if (r == -EOPNOTSUPP)
			err.code = -EBUSY; /* 409 */
		sriov_pf_clear(&pf);
	}
	if (r < 0) {
		http_reply_hserror(req, &err);
		return;
	}
	Network *n = malloc(sizeof(*n));
	if (!n) {
		if (tmp.create)
			(void)nl_link_delete(tmp.ifname, &err);
		http_reply_error(req, 503, "internal", "out of memory");
		return;
	}
	*n = tmp;
	network_insert(h, n);
	r = networks_save(h);
	if (r < 0) {
		for (Network **pp = &h->networks; *pp; pp = &(*pp)->next)
			if (*pp == n) {
				*pp = n->next;
				break;
			}
		if (tmp.create)
			(void)nl_link_delete(tmp.ifname, &err);
		free(n);
		http_reply_error(req, r == -ENOSPC ? 507 : 500, r == -ENOSPC ? "no-space" : "internal",
				 "cannot save the networks: %s", strerror(-r));
		return;
	}
	log_info("api: network %s (%s %s) created uid=%u", n->name, net_types[n->type], n->ifname,
		 (unsigned)http_request_peer(req)->uid);
	http_reply_json(req, 201, network_state_json(h, n));
}

static void networks_delete(Hsd *h, HttpRequest *req, Network *n)
{
	char users[256] = "";
	size_t len = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next)
		for (size_t i = 0; i < vm->spec.n_nics; i++)
			if (vm->spec.nics[i].network && !strcmp(vm->spec.nics[i].network, n->name)) {
				if (len < sizeof(users))
					len += (size_t)snprintf(users + len, sizeof(users) - len,
								"%s%s", len ? ", " : "",
								vm->spec.name);
				break;
			}
	if (users[0]) {
		http_reply_error(req, 409, "in-use", "network '%s' is used by VM%s %s", n->name,
				 strchr(users, ',') ? "s" : "", users);
		return;
	}
	Network **pp = &h->networks;
	while (*pp != n)
		pp = &(*pp)->next;
	*pp = n->next;
	int r = networks_save(h);
	if (r < 0) {
		network_insert(h, n);
		http_reply_error(req, 500, "internal", "cannot save the networks: %s", strerror(-r));
		return;
	}
	HsError e;
	if (n->create && nl_link_delete(n->ifname, &e) < 0 && e.code != -ENODEV)
		log_warning("network %s: bridge %s not deleted: %s", n->name, n->ifname, e.message);
	log_info("api: network %s deleted uid=%u", n->name, (unsigned)http_request_peer(req)->uid);
	char name[VM_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", n->name);
	free(n);
	http_reply_json(req, 200, json_pack("{s:s, s:s}", "name", name, "state", "deleted"));
}

void api_networks(Hsd *h, HttpRequest *req, const char *rest)
{
	const char *m = http_request_method(req);
	if (!rest[0]) {
		if (!strcmp(m, "GET")) {
			json_t *a = json_array();
			for (Network *n = h->networks; n; n = n->next)
				json_array_append_new(a, network_state_json(h, n));
			http_reply_json(req, 200, json_pack("{s:o}", "networks", a));
		} else if (!strcmp(m, "POST")) {
			networks_create(h, req);
		} else {
			method_not_allowed(req, "GET, POST");
		}
		return;
	}
	if (strcmp(m, "GET") && strcmp(m, "DELETE")) {
		method_not_allowed(req, "GET, DELETE");
		return;
	}
	Network *n = vm_name_is_valid(rest) ? network_find(h, rest) : NULL;
	if (!n)
		http_reply_error(req, 404, "not-found", "no network named '%s'", rest);
	else if (!strcmp(m, "GET"))
		http_reply_json(req, 200, network_state_json(h, n));
	else
		networks_delete(h, req, n);
}

/* ---- /v1/sriov ---- */

static const char *vf_holder(Hsd *h, const char *addr)
{
	for (Vm *vm = h->vms; vm; vm = vm->next)
		for (size_t i = 0; vm->net && i < vm->net->n; i++)
			if (!strcmp(vm->net->nics[i].vf, addr))
				return vm->spec.name;
	return NULL;
}

static json_t *pf_json(Hsd *h, const SriovPf *pf)
{
	json_t *vfs = json_array();
	for (size_t i = 0; i < pf->n_vfs; i++) {
		const SriovVf *v = &pf->vfs[i];
		const char *vm = vf_holder(h, v->address);
		json_array_append_new(vfs, json_pack("{s:i, s:s, s:s*, s:s*, s:s*}", "index",
						     (int)v->index, "address", v->address, "driver",
						     v->driver[0] ? v->driver : NULL, "netdev",
						     v->netdev[0] ? v->netdev : NULL, "vm", vm));
	}
	return json_pack("{s:s, s:s, s:i, s:i, s:o}", "name", pf->name, "address", pf->address,
			 "totalvfs", (int)pf->totalvfs, "numvfs", (int)pf->numvfs, "vfs", vfs);
}

void api_sriov(Hsd *h, HttpRequest *req, const char *rest)
{
	const char *m = http_request_method(req);
	HsError err = {0};
	_cleanup_close_ int root = sriov_root(h);
	if (root < 0) {
		http_reply_error(req, 500, "internal", "cannot open the sysfs root: %m");
		return;
	}
	if (!rest[0]) {
		if (strcmp(m, "GET")) {
			method_not_allowed(req, "GET");
			return;
		}
		SriovPf *pfs = NULL;
		size_t n = 0;
		if (sriov_list(root, &pfs, &n, &err) < 0) {
			http_reply_hserror(req, &err);
			return;
		}
		json_t *a = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(a, pf_json(h, &pfs[i]));
		sriov_list_free(pfs, n);
		http_reply_json(req, 200, json_pack("{s:o}", "pfs", a));
		return;
	}
	if (strcmp(m, "GET") && strcmp(m, "PUT")) {
		method_not_allowed(req, "GET, PUT");
		return;
	}
	if (!vm_ifname_is_valid(rest)) {
		http_reply_error(req, 404, "not-found", "no interface '%s'", rest);
		return;
	}
	SriovPf pf = {0};
	int r = sriov_pf_read(root, rest, &pf, &err);
	if (r < 0) {
		if (r == -ENODEV)
			err.code = -ENOENT; /* 404 */
		else if (r == -EOPNOTSUPP)
			err.code = -EBUSY; /* 409: not this interface's */
		http_reply_hserror(req, &err);
		return;
	}
	if (!strcmp(m, "PUT")) {
		json_auto_t *body = body_json(req, false);
		json_t *nv = body ? json_object_get(body, "numvfs") : NULL;
		if (!body) {
			sriov_pf_clear(&pf);
			return;
		}
		if (!json_is_integer(nv) || json_integer_value(nv) < 0 || json_object_size(body) != 1) {
			sriov_pf_clear(&pf);
			http_reply_error(req, 400, "invalid",
					 "the body is {\"numvfs\": N}, N from 0 to %u", pf.totalvfs);
			return;
		}
		for (size_t i = 0; i < pf.n_vfs; i++) {
			const char *vm = vf_holder(h, pf.vfs[i].address);
			if (vm) {
				http_reply_error(req, 409, "in-use",
						 "VF %u of %s (%s) is VM '%s''s: stop it first",
						 pf.vfs[i].index, pf.name, pf.vfs[i].address, vm);
				sriov_pf_clear(&pf);
				return;
			}
		}
		r = sriov_set_numvfs(root, rest, (unsigned)json_integer_value(nv), &err);
		sriov_pf_clear(&pf);
		if (r < 0 || (r = sriov_pf_read(root, rest, &pf, &err)) < 0) {
			http_reply_hserror(req, &err);
			return;
		}
		log_info("api: %s sriov_numvfs %u uid=%u", rest, pf.numvfs,
			 (unsigned)http_request_peer(req)->uid);
	}
	http_reply_json(req, 200, pf_json(h, &pf));
	sriov_pf_clear(&pf);
}

/* ---- /v1/vms/NAME/nics: hot-plug, live changes, unplug ---- */

static void nic_event(Vm *vm, const char *id, const char *action)
{
	events_publish(vm->hsd, json_pack("{s:s, s:s, s:s, s:s, s:f}", "type", "nic", "vm",
					  vm->spec.name, "nic", id, "action", action, "time",
					  hs_wall()));
}

/* The VM's spec with a NIC added (add, at the end) or the NIC `drop`
 * removed, validated as a whole. */
static int spec_nics_with(Vm *vm, json_t *add, const char *drop, VmSpec *ret, HsError *err)
{
	json_auto_t *j = vm_spec_to_json(&vm->spec);
	if (!j)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	json_t *a = json_object_get(j, "nics");
	if (!a) {
		a = json_array();
		json_object_set_new(j, "nics", a);
	}
	if (add)
		json_array_append(a, add);
	for (size_t i = 0; drop && i < json_array_size(a); i++)
		if (!strcmp(json_string_value(json_object_get(json_array_get(a, i), "id")) ?: "", drop))
			json_array_remove(a, i--);
	VmSpecDefaults d = {.accel = vm->spec.accel, .check_files = false};
	return vm_spec_from_json(j, &d, ret, err);
}

static int spec_commit(Vm *vm, VmSpec *s, HsError *err)
{
	int r = store_save_spec(&vm->hsd->store, s);
	if (r < 0)
		return hs_error_set(err, r, r == -ENOSPC ? "no-space" : "internal",
				    "cannot save VM '%s': %s", vm->spec.name, strerror(-r));
	VmSpec old = vm->spec;
	vm->spec = *s;
	memset(s, 0, sizeof(*s));
	vm_spec_clear(&old);
	sync_tap_names(vm);
	return 0;
}

static bool vm_live(Vm *vm)
{
	return vm_state_is_active(vm->status.state);
}

static bool vm_pluggable(Vm *vm)
{
	return (vm->status.state == VM_STATE_RUNNING || vm->status.state == VM_STATE_PAUSED) &&
	       vm->qmp_ready && !vm->migration;
}

typedef struct NicPlug {
	Hsd *h;
	HttpRequest *req;
	char vm[VM_NAME_MAX + 1];
	VmSpec spec; /* with the NIC added, last */
	QemuNicFds f;
	NicRun run;
	bool netdev_added;
} NicPlug;

static void plug_done(NicPlug *p, Vm *vm, const HsError *err)
{
	if (err) {
		http_reply_hserror(p->req, err);
		if (vm && vm->qmp && p->netdev_added) {
			char nd[32];
			snprintf(nd, sizeof(nd), "hs-%s", p->run.id);
			qmp_client_execute(vm->qmp, "netdev_del", json_pack("{s:s}", "id", nd),
					   p->h->qmp_timeout, NULL, NULL);
		}
		net_close_fds(p->f.fds, p->f.queues);
		net_close_fds(p->f.vhostfds, p->f.queues);
		HsError e;
		if (p->run.macvtap && nl_link_delete(p->run.ifname, &e) < 0)
			log_warning("vm %s: macvtap %s not deleted: %s", p->vm, p->run.ifname,
				    e.message);
	}
	vm_spec_clear(&p->spec);
	free(p);
}

/* The VM of a hot-plug step; NULL when the step failed or the VM went
 * away (the plug is then answered and freed). */
static Vm *plug_step(NicPlug *p, const HsError *err)
{
	Vm *vm = vm_find(p->h, p->vm);
	HsError e;
	if (!err && !vm)
		err = &e, hs_error_set(&e, -EBUSY, "conflict", "VM '%s' went away", p->vm);
	if (err) {
		plug_done(p, vm, err);
		return NULL;
	}
	return vm;
}

static void on_nic_device_added(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	NicPlug *p = ud;
	Vm *vm = plug_step(p, err);
	HsError e;
	if (!vm)
		return;
	VmNic *nic = &p->spec.nics[p->spec.n_nics - 1];
	if (nic->link_down)
		qmp_client_execute(vm->qmp, "set_link", json_pack("{s:s, s:b}", "name", nic->id, "up", 0),
				   p->h->qmp_timeout, NULL, NULL);
	struct VmNet *net = vm_net(vm);
	if (net && net->n < VM_MAX_NICS)
		net->nics[net->n++] = p->run;
	char id[VM_NIC_ID_MAX + 1];
	snprintf(id, sizeof(id), "%s", nic->id);
	p->netdev_added = false;
	if (spec_commit(vm, &p->spec, &e) < 0)
		log_warning("vm %s: NIC %s hot-plugged but not recorded: %s", p->vm, id, e.message);
	net_save(vm);
	log_info("vm %s: NIC %s hot-plugged (%s)", p->vm, id, p->run.ifname);
	nic_event(vm, id, "attached");
	http_reply_json(p->req, 201, nic_json(vm, spec_nic(&vm->spec, id, NULL)));
	plug_done(p, vm, NULL);
}

static void on_nic_place(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	NicPlug *p = ud;
	Vm *vm = plug_step(p, err);
	HsError e;
	char bus[32];
	int slot;
	if (!vm)
		return;
	if (hostdev_hotplug_place(vm, reply, bus, sizeof(bus), &slot, &e) < 0) {
		plug_done(p, vm, &e);
		return;
	}
	VmNic *nic = &p->spec.nics[p->spec.n_nics - 1];
	qmp_client_execute(vm->qmp, "device_add",
			   qemu_nic_device_props(nic, p->f.queues, bus, slot), p->h->qmp_timeout,
			   on_nic_device_added, p);
}

static void on_nic_netdev_added(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	NicPlug *p = ud;
	Vm *vm = plug_step(p, err);
	if (!vm)
		return;
	p->netdev_added = true;
	/* QEMU has its own copies now. */
	net_close_fds(p->f.fds, p->f.queues);
	net_close_fds(p->f.vhostfds, p->f.queues);
	qmp_client_execute(vm->qmp, "query-pci", NULL, p->h->qmp_timeout, on_nic_place, p);
}

static int nic_attach(Hsd *h, Vm *vm, HttpRequest *req, HsError *err)
{
	json_auto_t *body = body_json(req, false);
	if (!body)
		return 1;
	if (vm->spec.n_nics >= VM_MAX_NICS)
		return hs_error_set(err, -EINVAL, "invalid", "VM '%s' has %d NICs, the most it may have",
				    vm->spec.name, VM_MAX_NICS);
	NicPlug *p = calloc(1, sizeof(*p));
	if (!p)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	p->h = h;
	p->req = req;
	snprintf(p->vm, sizeof(p->vm), "%s", vm->spec.name);
	for (unsigned q = 0; q < VM_NIC_MAX_QUEUES; q++)
		p->f.fds[q] = p->f.vhostfds[q] = -1;
	int r = spec_nics_with(vm, body, NULL, &p->spec, err);
	VmNic *nic = r == 0 ? &p->spec.nics[p->spec.n_nics - 1] : NULL;
	if (r == 0) {
		/* Only the new NIC's MAC may be drawn again. */
		nic->mac_given = json_object_get(body, "mac") != NULL;
		char where[8] = "body";
		r = nic_check(h, nic, where, vm->spec.name, err);
	}
	if (r == 0 && !vm_live(vm)) {
		char id[VM_NIC_ID_MAX + 1];
		snprintf(id, sizeof(id), "%s", nic->id);
		r = spec_commit(vm, &p->spec, err);
		if (r == 0) {
			log_info("api: NIC %s added to vm=%s (stopped) uid=%u", id, vm->spec.name,
				 (unsigned)http_request_peer(req)->uid);
			http_reply_json(req, 201, nic_json(vm, spec_nic(&vm->spec, id, NULL)));
			r = 1;
		}
	} else if (r == 0 && !vm_pluggable(vm)) {
		r = hs_error_set(err, -EBUSY, "conflict",
				 "VM '%s' is %s; NICs are hot-plugged into a running or paused VM",
				 vm->spec.name,
				 vm->migration ? "migrating" : vm_state_to_string(vm->status.state));
	} else if (r == 0 && nic_type(h, nic, NULL) == VM_NIC_VF) {
		r = hs_error_set(err, -EOPNOTSUPP, "unsupported",
				 "a VF NIC is added while the VM is stopped (hot-plug of VFs is "
				 "not supported)");
	} else if (r == 0) {
		r = nic_prepare(vm, nic, &p->f, &p->run, err);
	}
	if (r != 0) {
		plug_done(p, NULL, NULL);
		return r;
	}
	if (nic_type(h, nic, NULL) == VM_NIC_USER) {
		char id[32];
		snprintf(id, sizeof(id), "hs-%s", nic->id);
		qmp_client_execute(vm->qmp, "netdev_add", json_pack("{s:s, s:s}", "type", "user", "id", id),
				   h->qmp_timeout, on_nic_netdev_added, p);
	} else {
		char prefix[32];
		snprintf(prefix, sizeof(prefix), "hsnic-%s-", nic->id);
		for (unsigned q = 0; q < p->f.queues; q++) {
			char name[48];
			snprintf(name, sizeof(name), "%st%u", prefix, q);
			qmp_client_execute_fd(vm->qmp, "getfd", json_pack("{s:s}", "fdname", name),
					      p->f.fds[q], h->qmp_timeout, NULL, NULL);
			p->f.fds[q] = -1; /* taken */
			if (p->f.vhost) {
				snprintf(name, sizeof(name), "%sv%u", prefix, q);
				qmp_client_execute_fd(vm->qmp, "getfd",
						      json_pack("{s:s}", "fdname", name),
						      p->f.vhostfds[q], h->qmp_timeout, NULL, NULL);
				p->f.vhostfds[q] = -1;
			}
		}
		qmp_client_execute(vm->qmp, "netdev_add", qemu_nic_netdev_props(nic, &p->f, prefix),
				   h->qmp_timeout, on_nic_netdev_added, p);
	}
	log_info("api: hot-plug NIC %s into vm=%s uid=%u", nic->id, vm->spec.name,
		 (unsigned)http_request_peer(req)->uid);
	http_defer(req);
	return 1;
}

/* PATCH: link and VLAN, live and in the spec. */
typedef struct NicPatch {
	Hsd *h;
	HttpRequest *req;
	char vm[VM_NAME_MAX + 1];
	char id[VM_NIC_ID_MAX + 1];
	VmSpec spec;
} NicPatch;

static void on_nic_link_set(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	NicPatch *p = ud;
	Vm *vm = vm_find(p->h, p->vm);
	HsError e;
	if (!err && !vm)
		err = &e, hs_error_set(&e, -EBUSY, "conflict", "VM '%s' went away", p->vm);
	if (!err && spec_commit(vm, &p->spec, &e) < 0)
		err = &e;
	if (err) {
		http_reply_hserror(p->req, err);
	} else {
		nic_event(vm, p->id, "changed");
		http_reply_json(p->req, 200, nic_json(vm, spec_nic(&vm->spec, p->id, NULL)));
	}
	vm_spec_clear(&p->spec);
	free(p);
}

static int nic_patch(Hsd *h, Vm *vm, HttpRequest *req, const char *id, HsError *err)
{
	json_auto_t *body = body_json(req, false);
	if (!body)
		return 1;
	const char *key;
	json_t *v;
	json_object_foreach (body, key, v)
		if (strcmp(key, "link") && strcmp(key, "vlan"))
			return hs_error_set(err, -EINVAL, "invalid",
					    "unknown field '%s' (link and vlan change live)", key);
	size_t idx;
	if (!spec_nic(&vm->spec, id, &idx))
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' has no NIC '%s'",
				    vm->spec.name, id);
	/* The changed NIC, validated as a spec entry. */
	json_auto_t *nj = vm_nic_to_json(&vm->spec.nics[idx]);
	json_object_update(nj, body);
	if (json_is_null(json_object_get(nj, "vlan")) ||
	    json_integer_value(json_object_get(nj, "vlan")) == 0)
		json_object_del(nj, "vlan");
	json_auto_t *sj = vm_spec_to_json(&vm->spec);
	json_array_set(json_object_get(sj, "nics"), idx, nj);
	NicPatch *p = calloc(1, sizeof(*p));
	if (!p)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	VmSpecDefaults d = {.accel = vm->spec.accel, .check_files = false};
	int r = vm_spec_from_json(sj, &d, &p->spec, err);
	VmNic *now = r == 0 ? &p->spec.nics[idx] : NULL;
	const VmNic *was = &vm->spec.nics[idx];
	NicRun *run = nic_run(vm, id);
	if (r == 0 && now->vlan != was->vlan && run && vm_live(vm)) {
		Network *n = NULL;
		VmNicType t = nic_type(h, now, &n);
		int filtering = 0;
		const char *br = n ? n->ifname : now->bridge;
		if (t != VM_NIC_BRIDGE || !run->ifname[0])
			r = hs_error_set(err, -EOPNOTSUPP, "unsupported",
					 "NIC %s: the VLAN of a %s NIC changes at its next start", id,
					 vm_nic_type_to_string(t));
		else if (now->vlan && (net_bridge_exists(h->host.rootfd, br, &filtering) != 1 ||
				       filtering != 1))
			r = hs_error_set(err, -ENODEV, "vlan-filtering-off",
					 "NIC %s: bridge '%s' has no VLAN filtering (ip link set %s "
					 "type bridge vlan_filtering 1)",
					 id, br, br);
		else
			r = nl_bridge_port_vlan(run->ifname, now->vlan, err);
		if (r == 0)
			log_info("vm %s: NIC %s (%s) now on VLAN %u", vm->spec.name, id, run->ifname,
				 now->vlan);
	}
	if (r < 0) {
		vm_spec_clear(&p->spec);
		free(p);
		return r;
	}
	p->h = h;
	p->req = req;
	snprintf(p->vm, sizeof(p->vm), "%s", vm->spec.name);
	snprintf(p->id, sizeof(p->id), "%s", id);
	if (vm_live(vm) && vm->qmp_ready && now->link_down != was->link_down &&
	    nic_type(h, now, NULL) != VM_NIC_VF) {
		qmp_client_execute(vm->qmp, "set_link",
				   json_pack("{s:s, s:b}", "name", id, "up", !now->link_down),
				   h->qmp_timeout, on_nic_link_set, p);
		http_defer(req);
		return 1;
	}
	on_nic_link_set(NULL, NULL, NULL, p);
	return 1;
}

/* Unplug: device_del, DEVICE_DELETED, netdev_del, then the host side. */
typedef struct NicUnplug {
	Hsd *h;
	HttpRequest *req; /* NULL once answered 202 */
	char vm[VM_NAME_MAX + 1];
	char id[VM_NIC_ID_MAX + 1];
	ev_timer timer;
	struct NicUnplug *next;
} NicUnplug;

static NicUnplug *unplugs;

static void unplug_free(NicUnplug *u)
{
	for (NicUnplug **pp = &unplugs; *pp; pp = &(*pp)->next)
		if (*pp == u) {
			*pp = u->next;
			break;
		}
	ev_timer_stop(u->h->loop, &u->timer);
	free(u);
}

/* The NIC is out of the guest (or the VM is gone): out of the spec. */
static void unplug_finish(NicUnplug *u, Vm *vm)
{
	HsError e = {0};
	VmSpec s = {0};
	int r = spec_nics_with(vm, NULL, u->id, &s, &e);
	if (r == 0)
		r = spec_commit(vm, &s, &e);
	vm_spec_clear(&s);
	if (vm->net && nic_run(vm, u->id))
		nic_run_drop(vm, u->id);
	if (r < 0)
		log_warning("vm %s: NIC %s unplugged but still in the spec: %s", u->vm, u->id,
			    e.message);
	else
		log_info("vm %s: NIC %s unplugged", u->vm, u->id);
	nic_event(vm, u->id, "detached");
	if (u->req) {
		if (r < 0)
			http_reply_hserror(u->req, &e);
		else
			http_reply_json(u->req, 200,
					json_pack("{s:s, s:s, s:s}", "vm", u->vm, "nic", u->id, "state",
						  "detached"));
	}
	unplug_free(u);
}

static void on_unplug_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	NicUnplug *u = w->data;
	if (u->req) {
		http_reply_json(u->req, 202,
				json_pack("{s:s, s:s, s:s}", "vm", u->vm, "nic", u->id, "state",
					  "detaching"));
		u->req = NULL;
	}
}

static void on_unplug_sent(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	NicUnplug *u = ud;
	Vm *vm = vm_find(u->h, u->vm);
	if (!err)
		return;
	NicRun *r = vm ? nic_run(vm, u->id) : NULL;
	if (r)
		r->detaching = false;
	if (u->req)
		http_reply_hserror(u->req, err);
	unplug_free(u);
}

void network_vm_event(Vm *vm, const char *name, json_t *data)
{
	if (strcmp(name, "DEVICE_DELETED"))
		return;
	const char *dev = json_string_value(json_object_get(data, "device"));
	for (NicUnplug *u = unplugs; dev && u; u = u->next)
		if (!strcmp(u->vm, vm->spec.name) && !strcmp(u->id, dev)) {
			char nd[32];
			snprintf(nd, sizeof(nd), "hs-%s", u->id);
			qmp_client_execute(vm->qmp, "netdev_del", json_pack("{s:s}", "id", nd),
					   vm->hsd->qmp_timeout, NULL, NULL);
			unplug_finish(u, vm);
			return;
		}
}

/* The VM stopped with unplugs pending: they are done. */
static void unplugs_vm_gone(Vm *vm)
{
	for (NicUnplug *u = unplugs, *next; u; u = next) {
		next = u->next;
		if (!strcmp(u->vm, vm->spec.name))
			unplug_finish(u, vm);
	}
}

static int nic_detach(Hsd *h, Vm *vm, HttpRequest *req, const char *id, HsError *err)
{
	if (!spec_nic(&vm->spec, id, NULL))
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' has no NIC '%s'",
				    vm->spec.name, id);
	NicRun *run = nic_run(vm, id);
	if (vm_live(vm) && !vm_pluggable(vm))
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; NICs are unplugged from a running or paused VM",
				    vm->spec.name,
				    vm->migration ? "migrating" : vm_state_to_string(vm->status.state));
	if (run && run->detaching)
		return hs_error_set(err, -EALREADY, "conflict", "NIC %s is being unplugged already",
				    id);
	if (run && run->vf[0])
		return hs_error_set(err, -EOPNOTSUPP, "unsupported",
				    "a VF NIC is removed while the VM is stopped");
	NicUnplug *u = calloc(1, sizeof(*u));
	if (!u)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	u->h = h;
	u->req = req;
	snprintf(u->vm, sizeof(u->vm), "%s", vm->spec.name);
	snprintf(u->id, sizeof(u->id), "%s", id);
	ev_timer_init(&u->timer, on_unplug_timeout, UNPLUG_WAIT, 0);
	u->timer.data = u;
	u->next = unplugs;
	unplugs = u;
	if (!vm_live(vm)) {
		unplug_finish(u, vm);
		return 1;
	}
	if (run)
		run->detaching = true;
	ev_timer_start(h->loop, &u->timer);
	log_info("api: unplug NIC %s of vm=%s uid=%u", id, vm->spec.name,
		 (unsigned)http_request_peer(req)->uid);
	qmp_client_execute(vm->qmp, "device_del", json_pack("{s:s}", "id", id), h->qmp_timeout,
			   on_unplug_sent, u);
	http_defer(req);
	return 1;
}

void api_vm_nics(Hsd *h, Vm *vm, HttpRequest *req, const char *id)
{
	const char *m = http_request_method(req);
	HsError err = {0};
	int r = 0;
	if (!id) {
		if (!strcmp(m, "GET")) {
			json_t *a = json_array();
			for (size_t i = 0; i < vm->spec.n_nics; i++)
				json_array_append_new(a, nic_json(vm, &vm->spec.nics[i]));
			http_reply_json(req, 200, json_pack("{s:o}", "nics", a));
		} else if (!strcmp(m, "POST")) {
			r = nic_attach(h, vm, req, &err);
		} else {
			method_not_allowed(req, "GET, POST");
		}
	} else if (!strcmp(m, "GET")) {
		VmNic *nic = spec_nic(&vm->spec, id, NULL);
		if (nic)
			http_reply_json(req, 200, nic_json(vm, nic));
		else
			http_reply_error(req, 404, "not-found", "VM '%s' has no NIC '%s'",
					 vm->spec.name, id);
	} else if (!strcmp(m, "PATCH")) {
		r = nic_patch(h, vm, req, id, &err);
	} else if (!strcmp(m, "DELETE")) {
		r = nic_detach(h, vm, req, id, &err);
	} else {
		method_not_allowed(req, "GET, PATCH, DELETE");
	}
	if (r < 0)
		http_reply_hserror(req, &err);
}
