/* SPDX-License-Identifier: Apache-2.0 */
/* Tap devices created by hsd and handed to QEMU as open descriptors, so
 * QEMU needs no network privilege and no setuid helper. */
#pragma once

#include <net/if.h>

#include "hs-util.h"

/* Creates a tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, not persistent: it
 * goes away when the last descriptor closes, i.e. when QEMU exits), brings
 * it up and enslaves it to `bridge`. Returns the fd; the kernel-chosen name
 * goes to ret_name. rootfd: where sys/class/net is read (bridge check). */
int net_tap_create(int rootfd, const char *bridge, char ret_name[IFNAMSIZ], HsError *err);
