/* SPDX-License-Identifier: Apache-2.0 */
#include "net.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

int net_tap_create(int rootfd, const char *bridge, char ret_name[IFNAMSIZ], HsError *err)
{
	char path[128];
	struct stat st;
	snprintf(path, sizeof(path), "sys/class/net/%s/bridge", bridge);
	if (fstatat(rootfd, path, &st, 0) < 0 || !S_ISDIR(st.st_mode))
		return hs_error_set(err, -ENODEV, "unknown-bridge",
				    "bridge '%s' does not exist on this host (or is not a bridge)",
				    bridge);

	_cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return hs_error_set(err, -errno, "network", "cannot open /dev/net/tun: %m");
	struct ifreq ifr = {0};
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "hstap%%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return hs_error_set(err, -errno, "network", "cannot create a tap device: %m");
	char name[IFNAMSIZ];
	snprintf(name, sizeof(name), "%s", ifr.ifr_name);

	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return hs_error_set(err, -errno, "network", "socket: %m");
	struct ifreq up = {0};
	snprintf(up.ifr_name, sizeof(up.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &up) < 0)
		return hs_error_set(err, -errno, "network", "%s: cannot read flags: %m", name);
	up.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &up) < 0)
		return hs_error_set(err, -errno, "network", "%s: cannot bring up: %m", name);
	struct ifreq br = {0};
	snprintf(br.ifr_name, sizeof(br.ifr_name), "%s", bridge);
	br.ifr_ifindex = (int)if_nametoindex(name);
	if (br.ifr_ifindex == 0 || ioctl(s, SIOCBRADDIF, &br) < 0)
		return hs_error_set(err, -errno, "network", "cannot add %s to bridge %s: %m", name,
				    bridge);
	snprintf(ret_name, IFNAMSIZ, "%s", name);
	return TAKE_FD(fd);
}
