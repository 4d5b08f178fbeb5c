/* SPDX-License-Identifier: Apache-2.0 */
#include "net.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int net_bridge_exists(int rootfd, const char *bridge, int *ret_filtering)
{
	char path[128];
	struct stat st;
	if (ret_filtering)
		*ret_filtering = -1;
	snprintf(path, sizeof(path), "sys/class/net/%s/bridge", bridge);
	if (fstatat(rootfd, path, &st, 0) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	snprintf(path, sizeof(path), "sys/class/net/%s/bridge/vlan_filtering", bridge);
	_cleanup_free_ char *v = NULL;
	if (ret_filtering && hs_read_file(rootfd, path, 64, &v, NULL) >= 0)
		*ret_filtering = atoi(v) != 0;
	else if (ret_filtering)
		*ret_filtering = 0; /* no such attribute: a kernel without VLAN filtering */
	return 1;
}

void net_close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
}

static int tun_attach(const char *name, short flags, HsError *err)
{
	_cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return hs_error_set(err, -errno, "network", "cannot open /dev/net/tun: %m");
	struct ifreq ifr = {0};
	ifr.ifr_flags = flags;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return hs_error_set(err, -errno, "network", "cannot create or attach tap %s: %m",
				    name);
	return TAKE_FD(fd);
}

int net_tap_create(int rootfd, const char *bridge, unsigned queues, int *fds,
		   char ret_name[IFNAMSIZ], HsError *err)
{
	if (bridge && !net_bridge_exists(rootfd, bridge, NULL))
		return hs_error_set(err, -ENODEV, "unknown-bridge",
				    "bridge '%s' does not exist on this host (or is not a bridge)",
				    bridge);
	for (unsigned q = 0; q < queues; q++)
		fds[q] = -1;
	short flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (queues > 1 ? IFF_MULTI_QUEUE : 0);
	_cleanup_close_ int s = -1;
	int r = fds[0] = tun_attach("hstap%d", flags, err);
	if (r < 0)
		return r;
	struct ifreq ifr = {0};
	char name[IFNAMSIZ];
	if (ioctl(fds[0], TUNGETIFF, &ifr) < 0) {
		r = hs_error_set(err, -errno, "network", "cannot read the new tap's name: %m");
		goto fail;
	}
	snprintf(name, sizeof(name), "%s", ifr.ifr_name);
	for (unsigned q = 1; q < queues; q++)
		if ((r = fds[q] = tun_attach(name, flags, err)) < 0)
			goto fail;

	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		r = hs_error_set(err, -errno, "network", "socket: %m");
		goto fail;
	}
	if (bridge) {
		struct ifreq br = {0};
		snprintf(br.ifr_name, sizeof(br.ifr_name), "%s", bridge);
		br.ifr_ifindex = (int)if_nametoindex(name);
		if (br.ifr_ifindex == 0 || ioctl(s, SIOCBRADDIF, &br) < 0) {
			r = hs_error_set(err, -errno, "network", "cannot add %s to bridge %s: %m",
					 name, bridge);
			goto fail;
		}
	}
	struct ifreq up = {0};
	snprintf(up.ifr_name, sizeof(up.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &up) < 0) {
		r = hs_error_set(err, -errno, "network", "%s: cannot read flags: %m", name);
		goto fail;
	}
	up.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &up) < 0) {
		r = hs_error_set(err, -errno, "network", "%s: cannot bring up: %m", name);
		goto fail;
	}
	snprintf(ret_name, IFNAMSIZ, "%s", name);
	return 0;
fail:
	net_close_fds(fds, queues);
	return r;
}

int net_macvtap_open(int rootfd, const char *name, int devdirfd, unsigned queues, int *fds,
		     HsError *err)
{
	char path[160];
	_cleanup_free_ char *idx = NULL, *dev = NULL;
	snprintf(path, sizeof(path), "sys/class/net/%s/ifindex", name);
	int r = hs_read_file(rootfd, path, 32, &idx, NULL);
	if (r < 0)
		return hs_error_set(err, r, "network", "macvtap %s: no ifindex: %s", name,
				    strerror(-r));
	unsigned ifindex = (unsigned)atoi(idx);
	snprintf(path, sizeof(path), "sys/class/net/%s/macvtap/tap%u/dev", name, ifindex);
	r = hs_read_file(rootfd, path, 32, &dev, NULL);
	unsigned maj = 0, min = 0;
	if (r < 0 || sscanf(dev, "%u:%u", &maj, &min) != 2)
		return hs_error_set(err, r < 0 ? r : -EINVAL, "network",
				    "macvtap %s: no character device in sysfs", name);
	char node[32];
	snprintf(node, sizeof(node), "tap%u", ifindex);
	for (unsigned q = 0; q < queues; q++)
		fds[q] = -1;
	/* Our own node, of the number sysfs gives: a /dev of a container
	 * may have none, or a stale one of another device. */
	(void)unlinkat(devdirfd, node, 0);
	if (mknodat(devdirfd, node, S_IFCHR | 0600, makedev(maj, min)) < 0)
		return hs_error_set(err, -errno, "network", "macvtap %s: cannot make its device: %m",
				    name);
	for (unsigned q = 0; q < queues; q++) {
		fds[q] = openat(devdirfd, node, O_RDWR | O_CLOEXEC);
		struct ifreq ifr = {0};
		if (fds[q] < 0 || ioctl(fds[q], TUNGETIFF, &ifr) < 0) {
			r = hs_error_set(err, -errno, "network", "macvtap %s: cannot open it: %m",
					 name);
			goto fail;
		}
		ifr.ifr_flags |= IFF_VNET_HDR;
		if (ioctl(fds[q], TUNSETIFF, &ifr) < 0) {
			r = hs_error_set(err, -errno, "network", "macvtap %s: cannot set flags: %m",
					 name);
			goto fail;
		}
	}
	(void)unlinkat(devdirfd, node, 0);
	return 0;
fail:
	(void)unlinkat(devdirfd, node, 0);
	net_close_fds(fds, queues);
	return r;
}

int net_vhost_open(void)
{
	int fd = open("/dev/vhost-net", O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}
