/* SPDX-License-Identifier: Apache-2.0 */
#include "nl.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "hs-util.h"

#define NL_TIMEOUT_S 5
/* Dumps: the kernel sends up to 32 KiB per datagram. */
#define NL_RECV_SIZE 32768
/* A request buffer: MNL_SOCKET_BUFFER_SIZE is at most this. */
#define NL_REQ_SIZE 8192
#define VID_MAX 4094

static void mnl_socket_closep(struct mnl_socket **nl)
{
	if (*nl)
		mnl_socket_close(*nl);
}

/* The kind an errno gets when the call says nothing more precise. */
static const char *errno_kind(int code)
{
	switch (code) {
	case -EEXIST:
		return "exists";
	case -ENODEV:
		return "not-found";
	case -EOPNOTSUPP:
		return "unsupported";
	default:
		return "network";
	}
}

static bool name_ok(const char *name)
{
	return name && *name && strlen(name) < IFNAMSIZ;
}

static int ifindex_of(const char *name, const char *role, HsError *err)
{
	if (!name_ok(name))
		return hs_error_set(err, -EINVAL, "invalid", "invalid interface name '%s'",
				    name ? name : "");
	unsigned idx = if_nametoindex(name);
	if (!idx) {
		int code = errno == ENXIO || errno == 0 ? -ENODEV : -errno;
		return hs_error_set(err, code, errno_kind(code), "no %s %s: %s", role, name,
				    strerror(-code));
	}
	return (int)idx;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char end;
	if (strlen(s) != 17 || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3],
				      &v[4], &v[5], &end) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		if (s[i * 3] == ' ' || s[i * 3] == '+' || s[i * 3] == '-')
			return -EINVAL;
		mac[i] = (uint8_t)v[i];
	}
	return 0;
}

static struct nlmsghdr *put_link_header(void *buf, uint16_t type, uint16_t flags, uint8_t family,
					unsigned ifindex)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = family;
	ifm->ifi_index = (int)ifindex;
	return nlh;
}

static void set_up_flag(struct nlmsghdr *nlh, bool up)
{
	struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
	ifm->ifi_change |= IFF_UP;
	if (up)
		ifm->ifi_flags |= IFF_UP;
}

/* ---- one request, its answers, its ACK ---- */

/* What one exchange carries to the callbacks (mnl_cb_run2 passes the
 * same pointer to the data and the control callbacks). */
typedef struct NlAnswer {
	int error;        /* the NLMSG_ERROR code, 0 for an ACK */
	char extack[256]; /* the kernel's extended ACK message, if any */
	mnl_cb_t cb;      /* the caller's, for data messages */
	void *data;
} NlAnswer;

static int data_cb(const struct nlmsghdr *nlh, void *data)
{
	NlAnswer *a = data;
	return a->cb ? a->cb(nlh, a->data) : MNL_CB_OK;
}

static int extack_attr_cb(const struct nlattr *attr, void *data)
{
	NlAnswer *a = data;
	if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG &&
	    mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
		snprintf(a->extack, sizeof(a->extack), "%s", mnl_attr_get_str(attr));
	return MNL_CB_OK;
}

static int error_cb(const struct nlmsghdr *nlh, void *data)
{
	NlAnswer *a = data;
	const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
	if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e))) {
		a->error = -EBADMSG;
		errno = EBADMSG;
		return MNL_CB_ERROR;
	}
	a->error = e->error;
	if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
		size_t off = sizeof(*e);
		if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
			off += mnl_nlmsg_get_payload_len(&e->msg);
		if (mnl_nlmsg_size(off) <= nlh->nlmsg_len)
			mnl_attr_parse(nlh, (unsigned)off, extack_attr_cb, a);
	}
	if (e->error == 0)
		return MNL_CB_STOP;
	errno = -e->error;
	return MNL_CB_ERROR;
}

/* The end of a dump; a dump that failed on the way says so in it. */
static int done_cb(const struct nlmsghdr *nlh, void *data)
{
	NlAnswer *a = data;
	if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
		int e = *(const int *)mnl_nlmsg_get_payload(nlh);
		if (e < 0) {
			a->error = e;
			errno = -e;
			return MNL_CB_ERROR;
		}
	}
	return MNL_CB_STOP;
}

static unsigned next_seq(void)
{
	static unsigned seq;
	return __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
}

/* Sends the request nlh (on a socket of its own) and reads the answers
 * until the ACK, the end of a dump or an error; data messages go to cb.
 * On failure err says "<what> <ifname>: <reason>". */
static int nl_talk(struct nlmsghdr *nlh, mnl_cb_t cb, void *data, const char *what,
		   const char *ifname, HsError *err)
{
	_cleanup_(mnl_socket_closep) struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE,
									      SOCK_CLOEXEC);
	if (!nl)
		return hs_error_set(err, -errno, "network", "%s %s: no rtnetlink socket: %m", what,
				    ifname);
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)
		return hs_error_set(err, -errno, "network", "%s %s: cannot bind rtnetlink: %m",
				    what, ifname);
	int fd = mnl_socket_get_fd(nl);
	struct timeval tv = {.tv_sec = NL_TIMEOUT_S};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return hs_error_set(err, -errno, "network", "%s %s: SO_RCVTIMEO: %m", what,
				    ifname);
	int one = 1;
	/* Only for better messages: fine when the kernel cannot. */
	(void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	(void)setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));

	unsigned portid = mnl_socket_get_portid(nl);
	unsigned seq = next_seq();
	nlh->nlmsg_seq = seq;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return hs_error_set(err, -errno, "network", "%s %s: cannot send to rtnetlink: %m",
				    what, ifname);

	static _Thread_local char buf[NL_RECV_SIZE] __attribute__((aligned(NLMSG_ALIGNTO)));
	/* With a control array, mnl_cb_run2 ignores the types it leaves NULL. */
	mnl_cb_t ctl[NLMSG_MIN_TYPE] = {[NLMSG_ERROR] = error_cb, [NLMSG_DONE] = done_cb};
	NlAnswer answer = {.cb = cb, .data = data};
	int r;
	do {
		ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return hs_error_set(err, -ETIMEDOUT, "network",
						    "%s %s: no answer from the kernel within %d s",
						    what, ifname, NL_TIMEOUT_S);
			return hs_error_set(err, -errno, "network",
					    "%s %s: cannot read rtnetlink: %m", what, ifname);
		}
		r = mnl_cb_run2(buf, (size_t)n, seq, portid, data_cb, &answer, ctl,
				ARRAY_SIZE(ctl));
	} while (r > MNL_CB_STOP);
	if (r < 0) {
		int code = answer.error ? answer.error : -errno;
		if (*answer.extack)
			return hs_error_set(err, code, errno_kind(code), "%s %s: %s (%s)", what,
					    ifname, strerror(-code), answer.extack);
		return hs_error_set(err, code, errno_kind(code), "%s %s: %s", what, ifname,
				    strerror(-code));
	}
	return 0;
}

/* ---- builders ---- */

static bool buf_ok(size_t size)
{
	return size >= (size_t)MNL_SOCKET_BUFFER_SIZE;
}

int nl_build_bridge_port_vlan(void *buf, size_t size, unsigned ifindex, unsigned vid, bool add,
			      bool pvid_untagged)
{
	if (!buf_ok(size))
		return -ENOBUFS;
	if (!ifindex || vid < 1 || vid > VID_MAX)
		return -EINVAL;
	struct nlmsghdr *nlh =
		put_link_header(buf, add ? RTM_SETLINK : RTM_DELLINK, 0, AF_BRIDGE, ifindex);
	struct bridge_vlan_info info = {.vid = (uint16_t)vid};
	if (pvid_untagged)
		info.flags = BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED;
	struct nlattr *spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
	mnl_attr_put(nlh, IFLA_BRIDGE_VLAN_INFO, sizeof(info), &info);
	mnl_attr_nest_end(nlh, spec);
	return (int)nlh->nlmsg_len;
}

int nl_build_vf_set(void *buf, size_t size, unsigned pf_ifindex, unsigned vf, const char *mac,
		    int vlan)
{
	uint8_t addr[6] = {0};
	if (!buf_ok(size))
		return -ENOBUFS;
	if (!pf_ifindex || vlan > 4095 || (mac && *mac && parse_mac(mac, addr) < 0))
		return -EINVAL;
	struct nlmsghdr *nlh = put_link_header(buf, RTM_SETLINK, 0, AF_UNSPEC, pf_ifindex);
	struct nlattr *list = mnl_attr_nest_start(nlh, IFLA_VFINFO_LIST);
	struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_VF_INFO);
	if (mac) {
		struct ifla_vf_mac m = {.vf = vf};
		memcpy(m.mac, addr, sizeof(addr));
		mnl_attr_put(nlh, IFLA_VF_MAC, sizeof(m), &m);
	}
	if (vlan >= 0) {
		struct ifla_vf_vlan v = {.vf = vf, .vlan = (unsigned)vlan};
		mnl_attr_put(nlh, IFLA_VF_VLAN, sizeof(v), &v);
	}
	mnl_attr_nest_end(nlh, info);
	mnl_attr_nest_end(nlh, list);
	return (int)nlh->nlmsg_len;
}

static const struct {
	const char *name;
	uint32_t mode;
} macvlan_modes[] = {
	{"bridge", MACVLAN_MODE_BRIDGE},
	{"vepa", MACVLAN_MODE_VEPA},
	{"private", MACVLAN_MODE_PRIVATE},
	{"passthru", MACVLAN_MODE_PASSTHRU},
};

static int macvlan_mode(const char *name, uint32_t *ret)
{
	for (size_t i = 0; i < ARRAY_SIZE(macvlan_modes); i++)
		if (!strcmp(name, macvlan_modes[i].name)) {
			*ret = macvlan_modes[i].mode;
			return 0;
		}
	return -EINVAL;
}

/* RTM_NEWLINK creating `name` of `kind`, up; its IFLA_INFO_DATA left open
 * for the caller (*ret_data) to fill and close with finish_newlink(). */
static struct nlmsghdr *put_newlink(void *buf, const char *name, const char *kind,
				    struct nlattr **ret_linkinfo, struct nlattr **ret_data)
{
	struct nlmsghdr *nlh =
		put_link_header(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, AF_UNSPEC, 0);
	set_up_flag(nlh, true);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	*ret_linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, kind);
	*ret_data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	return nlh;
}

static int finish_newlink(struct nlmsghdr *nlh, struct nlattr *linkinfo, struct nlattr *data)
{
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, linkinfo);
	return (int)nlh->nlmsg_len;
}

int nl_build_macvtap(void *buf, size_t size, const char *name, unsigned parent_ifindex,
		     const char *mode, const char *mac)
{
	uint8_t addr[6];
	uint32_t m;
	if (!buf_ok(size))
		return -ENOBUFS;
	if (!name_ok(name) || !parent_ifindex || !mode || macvlan_mode(mode, &m) < 0 ||
	    (mac && parse_mac(mac, addr) < 0))
		return -EINVAL;
	struct nlattr *linkinfo, *data;
	struct nlmsghdr *nlh = put_newlink(buf, name, "macvtap", &linkinfo, &data);
	mnl_attr_put_u32(nlh, IFLA_MACVLAN_MODE, m);
	finish_newlink(nlh, linkinfo, data);
	mnl_attr_put_u32(nlh, IFLA_LINK, parent_ifindex);
	if (mac)
		mnl_attr_put(nlh, IFLA_ADDRESS, sizeof(addr), addr);
	return (int)nlh->nlmsg_len;
}

static int build_bridge(void *buf, const char *name, bool vlan_filtering)
{
	struct nlattr *linkinfo, *data;
	struct nlmsghdr *nlh = put_newlink(buf, name, "bridge", &linkinfo, &data);
	/* Only when asked: a kernel without CONFIG_BRIDGE_VLAN_FILTERING
	 * refuses the attribute even as 0. */
	if (vlan_filtering)
		mnl_attr_put_u8(nlh, IFLA_BR_VLAN_FILTERING, 1);
	return finish_newlink(nlh, linkinfo, data);
}

/* ---- requests ---- */

int nl_bridge_create(const char *name, bool vlan_filtering, HsError *err)
{
	char buf[NL_REQ_SIZE];
	if (!name_ok(name))
		return hs_error_set(err, -EINVAL, "invalid", "invalid bridge name '%s'",
				    name ? name : "");
	build_bridge(buf, name, vlan_filtering);
	int r = nl_talk((struct nlmsghdr *)buf, NULL, NULL, "creating bridge", name, err);
	if (r == -EOPNOTSUPP && vlan_filtering)
		return hs_error_set(err, r, "unsupported",
				    "creating bridge %s: this kernel has no bridge VLAN filtering "
				    "(CONFIG_BRIDGE_VLAN_FILTERING)",
				    name);
	return r;
}

/* A request on `name` by name (IFLA_IFNAME), with one optional u32. */
static int link_request(const char *name, uint16_t type, int up, int attr, uint32_t value,
			const char *what, HsError *err)
{
	char buf[NL_REQ_SIZE];
	if (!name_ok(name))
		return hs_error_set(err, -EINVAL, "invalid", "invalid interface name '%s'",
				    name ? name : "");
	struct nlmsghdr *nlh = put_link_header(buf, type, 0, AF_UNSPEC, 0);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	if (up >= 0)
		set_up_flag(nlh, up);
	if (attr >= 0)
		mnl_attr_put_u32(nlh, (uint16_t)attr, value);
	return nl_talk(nlh, NULL, NULL, what, name, err);
}

int nl_link_delete(const char *name, HsError *err)
{
	return link_request(name, RTM_DELLINK, -1, -1, 0, "deleting", err);
}

int nl_link_set_up(const char *name, bool up, HsError *err)
{
	return link_request(name, RTM_SETLINK, up, -1, 0, up ? "setting up" : "setting down",
			    err);
}

int nl_link_set_master(const char *name, const char *master, HsError *err)
{
	int midx = 0;
	if (master) {
		midx = ifindex_of(master, "bridge", err);
		if (midx < 0)
			return midx;
	}
	char what[64];
	snprintf(what, sizeof(what), master ? "enslaving to %s" : "freeing from its master%s",
		 master ? master : "");
	return link_request(name, RTM_SETLINK, -1, IFLA_MASTER, (uint32_t)midx, what, err);
}

/* ---- bridge port VLANs ---- */

typedef struct PortVlans {
	unsigned ifindex;
	bool found;
	unsigned *vids;
	size_t max, n;
	unsigned pvid;
	unsigned range_start; /* of a BRIDGE_VLAN_INFO_RANGE_BEGIN, 0: none */
} PortVlans;

static void port_vlans_add(PortVlans *pv, unsigned vid)
{
	if (pv->n < pv->max)
		pv->vids[pv->n] = vid;
	pv->n++;
}

static int vlan_info_cb(const struct nlattr *attr, void *data)
{
	PortVlans *pv = data;
	if (mnl_attr_get_type(attr) != IFLA_BRIDGE_VLAN_INFO ||
	    mnl_attr_get_payload_len(attr) < sizeof(struct bridge_vlan_info))
		return MNL_CB_OK;
	const struct bridge_vlan_info *info = mnl_attr_get_payload(attr);
	if (info->flags & BRIDGE_VLAN_INFO_PVID)
		pv->pvid = info->vid;
	if (info->flags & BRIDGE_VLAN_INFO_RANGE_BEGIN) {
		pv->range_start = info->vid;
		return MNL_CB_OK;
	}
	unsigned first = info->vid;
	if ((info->flags & BRIDGE_VLAN_INFO_RANGE_END) && pv->range_start)
		first = pv->range_start;
	pv->range_start = 0;
	for (unsigned vid = first; vid <= info->vid; vid++)
		port_vlans_add(pv, vid);
	return MNL_CB_OK;
}

static int link_attr_cb(const struct nlattr *attr, void *data)
{
	if (mnl_attr_get_type(attr) == IFLA_AF_SPEC)
		mnl_attr_parse_nested(attr, vlan_info_cb, data);
	return MNL_CB_OK;
}

static int port_vlans_cb(const struct nlmsghdr *nlh, void *data)
{
	PortVlans *pv = data;
	const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
	if (nlh->nlmsg_type != RTM_NEWLINK || ifm->ifi_family != AF_BRIDGE ||
	    (unsigned)ifm->ifi_index != pv->ifindex)
		return MNL_CB_OK;
	pv->found = true;
	return mnl_attr_parse(nlh, sizeof(*ifm), link_attr_cb, pv);
}

static int read_port_vlans(const char *port, PortVlans *pv, HsError *err)
{
	char buf[NL_REQ_SIZE];
	int idx = ifindex_of(port, "bridge port", err);
	if (idx < 0)
		return idx;
	pv->ifindex = (unsigned)idx;
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_GETLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	ifm->ifi_family = AF_BRIDGE;
	mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN);
	int r = nl_talk(nlh, port_vlans_cb, pv, "reading the VLANs of", port, err);
	if (r < 0)
		return r;
	if (!pv->found)
		return hs_error_set(err, -EOPNOTSUPP, "unsupported",
				    "reading the VLANs of %s: it is not a bridge port", port);
	return 0;
}

int nl_bridge_port_vlans(const char *port, unsigned *vids, size_t max, unsigned *ret_pvid,
			 HsError *err)
{
	PortVlans pv = {.vids = vids, .max = vids ? max : 0};
	int r = read_port_vlans(port, &pv, err);
	if (r < 0)
		return r;
	if (ret_pvid)
		*ret_pvid = pv.pvid;
	return (int)pv.n;
}

static int port_vlan_request(const char *port, unsigned ifindex, unsigned vid, bool add,
			     HsError *err)
{
	char buf[NL_REQ_SIZE];
	char what[64];
	nl_build_bridge_port_vlan(buf, sizeof(buf), ifindex, vid, add, add);
	snprintf(what, sizeof(what), add ? "setting VLAN %u (PVID, untagged) on" :
					   "removing VLAN %u from", vid);
	int r = nl_talk((struct nlmsghdr *)buf, NULL, NULL, what, port, err);
	if (r == -EOPNOTSUPP)
		return hs_error_set(err, r, "unsupported",
				    "%s %s: the kernel cannot (no bridge VLAN filtering, "
				    "CONFIG_BRIDGE_VLAN_FILTERING) or %s is not a bridge port",
				    what, port, port);
	return r;
}

int nl_bridge_port_vlan(const char *port, unsigned vid, HsError *err)
{
	unsigned vids[VID_MAX + 1];
	if (vid > VID_MAX)
		return hs_error_set(err, -ERANGE, "invalid", "VLAN %u of %s: not in 1..%d", vid,
				    port ? port : "", VID_MAX);
	PortVlans pv = {.vids = vids, .max = ARRAY_SIZE(vids)};
	int r = read_port_vlans(port, &pv, err);
	if (r < 0)
		return r;
	unsigned want = vid ? vid : 1;
	r = port_vlan_request(port, pv.ifindex, want, true, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < pv.n && i < pv.max; i++) {
		if (vids[i] == want)
			continue;
		r = port_vlan_request(port, pv.ifindex, vids[i], false, err);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	return 0;
}

/* ---- macvtap, VFs ---- */

int nl_macvtap_create(const char *name, const char *parent, const char *mode, const char *mac,
		      HsError *err)
{
	char buf[NL_REQ_SIZE];
	if (!name_ok(name))
		return hs_error_set(err, -EINVAL, "invalid", "invalid macvtap name '%s'",
				    name ? name : "");
	int pidx = ifindex_of(parent, "parent interface", err);
	if (pidx < 0)
		return pidx;
	if (nl_build_macvtap(buf, sizeof(buf), name, (unsigned)pidx, mode ? mode : "bridge", mac) <
	    0)
		return hs_error_set(err, -EINVAL, "invalid",
				    "macvtap %s: invalid mode '%s' or MAC address '%s'", name,
				    mode ? mode : "", mac ? mac : "");
	int r = nl_talk((struct nlmsghdr *)buf, NULL, NULL, "creating macvtap", name, err);
	if (r < 0)
		return r;
	unsigned idx = if_nametoindex(name);
	if (!idx)
		return hs_error_set(err, -ENODEV, "network",
				    "creating macvtap %s: gone right after it was made", name);
	return (int)idx;
}

int nl_vf_set(const char *pf, unsigned vf, const char *mac, int vlan, HsError *err)
{
	char buf[NL_REQ_SIZE];
	int pidx = ifindex_of(pf, "physical function", err);
	if (pidx < 0)
		return pidx;
	if (!mac && vlan < 0)
		return 0;
	if (nl_build_vf_set(buf, sizeof(buf), (unsigned)pidx, vf, mac, vlan) < 0)
		return hs_error_set(err, -EINVAL, "invalid",
				    "VF %u of %s: invalid MAC address '%s' or VLAN %d", vf, pf,
				    mac ? mac : "", vlan);
	char what[64];
	snprintf(what, sizeof(what), "setting VF %u of", vf);
	return nl_talk((struct nlmsghdr *)buf, NULL, NULL, what, pf, err);
}
