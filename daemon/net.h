/* SPDX-License-Identifier: Apache-2.0 */
/* Tap and macvtap descriptors made by hsd and handed to QEMU, so QEMU needs
 * no network privilege and no setuid helper. */
#pragma once

#include <net/if.h>
#include <stdbool.h>

#include "hs-util.h"

/* Whether `bridge` is a Linux bridge (sys/class/net/BR/bridge under
 * rootfd): 1 yes, with *ret_filtering its VLAN filtering (-1 unknown);
 * 0 no such bridge. */
int net_bridge_exists(int rootfd, const char *bridge, int *ret_filtering);

/* Creates a tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, IFF_MULTI_QUEUE when
 * queues > 1; not persistent: it goes away when the last descriptor
 * closes, i.e. when QEMU exits) with `queues` descriptors into fds[],
 * brings it up and, with a bridge, enslaves it (before it is up, so no
 * frame passes on the bridge's default VLAN). The kernel-chosen name goes
 * to ret_name. */
int net_tap_create(int rootfd, const char *bridge, unsigned queues, int *fds,
		   char ret_name[IFNAMSIZ], HsError *err);

/* `queues` descriptors of the macvtap `name` (its /dev/tapN; made in
 * devdirfd with mknod when /dev has none, as in a container without
 * udev), IFF_VNET_HDR set. */
int net_macvtap_open(int rootfd, const char *name, int devdirfd, unsigned queues, int *fds,
		     HsError *err);

/* A /dev/vhost-net descriptor: -ENOENT when the host has no vhost-net. */
int net_vhost_open(void);

/* Closes n descriptors of fds[] (those >= 0) and sets them to -1. */
void net_close_fds(int *fds, unsigned n);
