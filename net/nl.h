/* SPDX-License-Identifier: Apache-2.0 */
/* The rtnetlink requests hsd makes (over libmnl): bridges, bridge port
 * VLANs, macvtap links and SR-IOV VF settings. Each call opens a
 * NETLINK_ROUTE socket in the caller's network namespace, sends one
 * request, waits for the kernel's ACK (with a timeout) and closes it. They
 * return 0 (or a positive value where said) or -errno with err set: kind
 * "network" unless said otherwise, message naming the interface. */
#pragma once

#include <net/if.h>
#include <stdbool.h>

#include "hs-util.h"

/* A Linux bridge `name`, created up, with VLAN filtering on or off.
 * -EEXIST (kind "exists") when an interface of that name exists;
 * -EOPNOTSUPP (kind "unsupported") when vlan_filtering is asked for and
 * the kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING). */
int nl_bridge_create(const char *name, bool vlan_filtering, HsError *err);

/* Deletes the interface. -ENODEV (kind "not-found") when there is none. */
int nl_link_delete(const char *name, HsError *err);

/* Sets the interface up or down. */
int nl_link_set_up(const char *name, bool up, HsError *err);

/* Enslaves `name` to the bridge `master` (NULL: frees it from its master). */
int nl_link_set_master(const char *name, const char *master, HsError *err);

/* The bridge port `port` carries exactly one VLAN, `vid` (1..4094), as its
 * PVID and untagged on egress: every other VLAN of the port (the bridge's
 * default_pvid 1 among them) is removed. vid 0: the port gets back the
 * bridge's default (VLAN 1, PVID, untagged) and nothing else.
 * -EOPNOTSUPP (kind "unsupported") when the kernel or bridge cannot. */
int nl_bridge_port_vlan(const char *port, unsigned vid, HsError *err);

/* The VLANs of a bridge port: up to `max` VIDs into vids[] and the PVID
 * (0: none) into *ret_pvid. Returns how many VIDs there are. */
int nl_bridge_port_vlans(const char *port, unsigned *vids, size_t max, unsigned *ret_pvid,
			 HsError *err);

/* A macvtap link `name` on `parent` in `mode` ("bridge", "vepa",
 * "private", "passthru"), with the MAC address `mac` ("52:54:00:..."),
 * created up. Returns its ifindex (> 0). -ENODEV (kind "not-found") when
 * the parent does not exist; -EEXIST (kind "exists") when `name` does. */
int nl_macvtap_create(const char *name, const char *parent, const char *mode, const char *mac,
		      HsError *err);

/* The MAC address ("" for 00:00:00:00:00:00 or NULL: leave as is) and VLAN
 * (0: none; < 0: leave as is) of virtual function `vf` of the SR-IOV
 * physical function `pf`, set through the PF (IFLA_VFINFO_LIST). */
int nl_vf_set(const char *pf, unsigned vf, const char *mac, int vlan, HsError *err);

/* Builders, for unit tests and for the calls above: the request into
 * buf (size >= MNL_SOCKET_BUFFER_SIZE), returns its length or -errno. */
int nl_build_bridge_port_vlan(void *buf, size_t size, unsigned ifindex, unsigned vid, bool add,
			      bool pvid_untagged);
int nl_build_vf_set(void *buf, size_t size, unsigned pf_ifindex, unsigned vf, const char *mac,
		    int vlan);
int nl_build_macvtap(void *buf, size_t size, const char *name, unsigned parent_ifindex,
		     const char *mode, const char *mac);
