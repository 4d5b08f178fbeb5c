/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl network, sriov and nic: the host's networks (/v1/networks), its
 * SR-IOV physical functions (/v1/sriov) and a VM's NICs, changed live when
 * it runs (/v1/vms/NAME/nics). Also create's --nic and info's NIC lines.
 * hsd checks everything again; hsctl checks the command line so that a
 * mistake is named by its option. */
#include <getopt.h>
#include <string.h>

#include "hsctl.h"

static const char *const nic_models[] = {"virtio", "e1000", "e1000e", "rtl8139", NULL};
static const char *const macvtap_modes[] = {"bridge", "vepa", "private", "passthru", NULL};
static const char *const link_states[] = {"up", "down", NULL};
static const char *const on_off[] = {"on", "off", NULL};

static void network_usage(void)
{
	fputs("hsctl: usage: hsctl network list\n"
	      "       hsctl network show NAME\n"
	      "       hsctl network create NAME --bridge BR [--create] [--vlan-filtering]\n"
	      "       hsctl network create NAME --create [--vlan-filtering]\n"
	      "       hsctl network create NAME --macvtap PARENT [--mode MODE]\n"
	      "       hsctl network create NAME --sriov PF\n"
	      "       hsctl network delete NAME\n",
	      stderr);
}

static void sriov_usage(void)
{
	fputs("hsctl: usage: hsctl sriov list\n"
	      "       hsctl sriov set PF --numvfs N\n",
	      stderr);
}

static void nic_usage(void)
{
	fputs("hsctl: usage: hsctl nic list VM\n"
	      "       hsctl nic add VM --network NET [--mac MAC] [--model M] [--queues N] [--vlan V]\n"
	      "                        [--no-vhost] [--link-down]\n"
	      "       hsctl nic set VM ID [--link up|down] [--vlan V|none]\n"
	      "       hsctl nic del VM ID\n"
	      "  M: virtio, e1000, e1000e or rtl8139; V: a VLAN id from 1 to 4094\n",
	      stderr);
}

/* Is s one of choices? Prints the error naming opt when not. */
static bool check_choice(const char *opt, const char *s, const char *const *choices)
{
	for (size_t i = 0; choices[i]; i++)
		if (!strcmp(s, choices[i]))
			return true;
	fprintf(stderr, "hsctl: %s: '%s' is not one of", opt, s);
	for (size_t i = 0; choices[i]; i++)
		fprintf(stderr, "%s %s", i ? (choices[i + 1] ? "," : " or") : "", choices[i]);
	fputc('\n', stderr);
	return false;
}

/* Six pairs of hex digits joined by ':'. */
static bool mac_is_valid(const char *s)
{
	if (strlen(s) != 17)
		return false;
	for (size_t i = 0; i < 17; i++)
		if (i % 3 == 2 ? s[i] != ':' : !strchr("0123456789abcdefABCDEF", s[i]))
			return false;
	return true;
}

/* A VLAN id (1 to 4094) as a JSON integer, or with allow_none "none" as
 * null (removes the VLAN). NULL with the error printed naming opt. */
static json_t *parse_vlan(const char *opt, const char *s, bool allow_none)
{
	if (allow_none && !strcmp(s, "none"))
		return json_null();
	size_t digits = strspn(s, "0123456789");
	unsigned long v = digits && digits <= 4 && !s[digits] ? strtoul(s, NULL, 10) : 0;
	if (v < 1 || v > 4094) {
		fprintf(stderr, "hsctl: %s: '%s' is not a VLAN id from 1 to 4094%s\n", opt, s,
			allow_none ? " (or none)" : "");
		return NULL;
	}
	return json_integer((json_int_t)v);
}

/* The most queues a NIC may have (hsd's VM_NIC_MAX_QUEUES). */
#define NIC_MAX_QUEUES 8

/* One NIC field from text into nic: key as in --nic (vlan, mac, queues,
 * model, vhost); opt names it in errors. */
static int nic_field(json_t *nic, const char *key, const char *val, const char *opt)
{
	unsigned long long v;
	if (!strcmp(key, "vlan")) {
		json_t *vlan = parse_vlan(opt, val, false);
		if (!vlan)
			return -1;
		json_object_set_new(nic, "vlan", vlan);
	} else if (!strcmp(key, "mac")) {
		if (!mac_is_valid(val)) {
			fprintf(stderr,
				"hsctl: %s: '%s' is not a MAC address (six hex pairs: "
				"52:54:00:ab:cd:ef)\n",
				opt, val);
			return -1;
		}
		json_object_set_new(nic, "mac", json_string(val));
	} else if (!strcmp(key, "queues")) {
		if (ctl_parse_uint(opt, val, NIC_MAX_QUEUES, &v) < 0)
			return -1;
		json_object_set_new(nic, "queues", json_integer((json_int_t)v));
	} else if (!strcmp(key, "model")) {
		if (!check_choice(opt, val, nic_models))
			return -1;
		json_object_set_new(nic, "model", json_string(val));
	} else if (!strcmp(key, "vhost")) {
		if (!check_choice(opt, val, on_off))
			return -1;
		json_object_set_new(nic, "vhost", json_boolean(!strcmp(val, "on")));
	} else {
		fprintf(stderr, "hsctl: --nic: unknown key '%s' (vlan, mac, queues, model or vhost)\n",
			key);
		return -1;
	}
	return 0;
}

int ctl_nic_parse(const char *s, json_t **ret)
{
	*ret = NULL;
	if (!strcmp(s, "none"))
		return 0;
	if (!strcmp(s, "user")) {
		*ret = json_pack("{s:s}", "type", "user");
		return 0;
	}
	if (hs_str_has_prefix(s, "bridge:") && s[7]) {
		*ret = json_pack("{s:s, s:s}", "type", "bridge", "bridge", s + 7);
		return 0;
	}
	if (!hs_str_has_prefix(s, "network:") || !s[8] || s[8] == ',') {
		fprintf(stderr,
			"hsctl: --nic: '%s' is not user, none, bridge:BR or "
			"network:NET[,vlan=V][,mac=M][,queues=N][,model=M][,vhost=on|off]\n",
			s);
		return -1;
	}
	_cleanup_free_ char *copy = strdup(s + 8);
	if (!copy) {
		fputs("hsctl: out of memory\n", stderr);
		return -1;
	}
	json_auto_t *nic = json_object();
	char *save = NULL, *tok = strtok_r(copy, ",", &save);
	json_object_set_new(nic, "network", json_string(tok));
	while ((tok = strtok_r(NULL, ",", &save))) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok) {
			fprintf(stderr,
				"hsctl: --nic %s: '%s' is not KEY=VALUE (vlan, mac, queues, model "
				"or vhost)\n",
				s, tok);
			return -1;
		}
		*eq = '\0';
		char opt[64];
		snprintf(opt, sizeof(opt), "--nic %s", tok);
		if (strcmp(tok, "network") && json_object_get(nic, tok)) {
			fprintf(stderr, "hsctl: %s: given twice\n", opt);
			return -1;
		}
		if (nic_field(nic, tok, eq + 1, opt) < 0)
			return -1;
	}
	*ret = json_incref(nic);
	return 0;
}

/* A NIC's value for key: the running VM's (state), else the spec's. */
static json_t *nic_get(json_t *nic, json_t *state, const char *key)
{
	json_t *v = json_object_get(state, key);
	return v ? v : json_object_get(nic, key);
}

/* Where a NIC goes, as --nic takes it: network:lan, bridge:br0, user. */
static void fmt_nic_where(json_t *nic, char *buf, size_t size)
{
	const char *net = json_string_value(json_object_get(nic, "network"));
	const char *br = json_string_value(json_object_get(nic, "bridge"));
	const char *type = json_string_value(json_object_get(nic, "type"));
	if (net)
		snprintf(buf, size, "network:%s", net);
	else if (br)
		snprintf(buf, size, "bridge:%s", br);
	else
		snprintf(buf, size, "%s", type ? type : "user");
}

/* "on", "off" or "-" for a JSON boolean. */
static const char *fmt_bool(json_t *b)
{
	return json_is_boolean(b) ? (json_is_true(b) ? "on" : "off") : "-";
}

void ctl_print_nic(json_t *nic, json_t *states, size_t idx)
{
	char label[32], line[512] = "";
	const char *id = json_string_value(json_object_get(nic, "id"));
	json_t *state = NULL, *st;
	size_t i;
	json_array_foreach (states, i, st) {
		const char *sid = json_string_value(json_object_get(st, "id"));
		if (id && sid && !strcmp(id, sid))
			state = st;
	}
	if (!state && !id)
		state = json_array_get(states, idx);
	if (id)
		snprintf(label, sizeof(label), "NIC %s:", id);
	else
		snprintf(label, sizeof(label), "NIC %zu:", idx);
	fmt_nic_where(nic, line, sizeof(line));
	const char *s;
	if ((s = json_string_value(json_object_get(nic, "mac"))))
		ctl_append(line, sizeof(line), "%s", s);
	if ((s = json_string_value(json_object_get(nic, "model"))))
		ctl_append(line, sizeof(line), "%s", s);
	json_int_t q = json_integer_value(nic_get(nic, state, "queues"));
	if (q > 0)
		ctl_append(line, sizeof(line), "%lld queue%s", q, q == 1 ? "" : "s");
	json_t *vlan = json_object_get(nic, "vlan");
	if (json_integer_value(vlan) > 0)
		ctl_append(line, sizeof(line), "vlan %lld", json_integer_value(vlan));
	if ((s = json_string_value(nic_get(nic, state, "link"))))
		ctl_append(line, sizeof(line), "link %s", s);
	if ((s = json_string_value(json_object_get(state, "interface"))))
		ctl_append(line, sizeof(line), "interface %s", s);
	json_t *vhost = nic_get(nic, state, "vhost");
	if (json_is_boolean(vhost))
		ctl_append(line, sizeof(line), "vhost-net %s%s", fmt_bool(vhost),
			   !state && json_is_true(vhost) ? " (required)" : "");
	if ((s = json_string_value(json_object_get(state, "state"))) && strcmp(s, "attached"))
		ctl_append(line, sizeof(line), "%s", s);
	printf("%-13s%s\n", label, line);
}

/* A NIC of GET /v1/vms/NAME/nics: while the VM is active, QUEUES and
 * VHOST are what the NIC has (queues_active, vhost_active), else what its
 * spec asks for ("-": the default). */
static void print_nics(json_t *j)
{
	size_t i;
	json_t *n;
	printf("%-8s %-18s %-17s %-7s %6s %4s %-4s %-15s %-5s %s\n", "ID", "NETWORK", "MAC",
	       "MODEL", "QUEUES", "VLAN", "LINK", "INTERFACE", "VHOST", "STATE");
	json_array_foreach (json_object_get(j, "nics"), i, n) {
		char where[64], q[16] = "-", vlan[16] = "-";
		json_t *queues = json_object_get(n, "queues_active");
		json_t *vhost = json_object_get(n, "vhost_active");
		fmt_nic_where(n, where, sizeof(where));
		if (!queues)
			queues = json_object_get(n, "queues");
		if (!vhost)
			vhost = json_object_get(n, "vhost");
		if (json_integer_value(queues) > 0)
			snprintf(q, sizeof(q), "%lld", json_integer_value(queues));
		if (json_integer_value(json_object_get(n, "vlan")) > 0)
			snprintf(vlan, sizeof(vlan), "%lld",
				 json_integer_value(json_object_get(n, "vlan")));
		printf("%-8s %-18s %-17s %-7s %6s %4s %-4s %-15s %-5s %s\n",
		       json_string_value(json_object_get(n, "id")) ?: "-", where,
		       json_string_value(json_object_get(n, "mac")) ?: "-",
		       json_string_value(json_object_get(n, "model")) ?: "-", q, vlan,
		       json_string_value(json_object_get(n, "link")) ?: "up",
		       json_string_value(json_object_get(n, "interface")) ?: "-", fmt_bool(vhost),
		       json_string_value(json_object_get(n, "state")) ?: "-");
	}
}

/* A network's device and settings: "bridge hsbr-lan, made by hsd, VLAN
 * filtering"; "macvtap on eth0, mode bridge"; "SR-IOV VFs of eth1". */
static void fmt_network(json_t *n, char *buf, size_t size)
{
	const char *type = json_string_value(json_object_get(n, "type")) ?: "?";
	buf[0] = '\0';
	if (!strcmp(type, "bridge")) {
		ctl_append(buf, size, "bridge %s",
			   json_string_value(json_object_get(n, "bridge")) ?: "?");
		if (json_is_true(json_object_get(n, "create")))
			ctl_append(buf, size, "made by hsd");
		json_t *vf = json_object_get(n, "vlan_filtering");
		if (json_is_boolean(vf))
			ctl_append(buf, size, "VLAN filtering %s", fmt_bool(vf));
	} else if (!strcmp(type, "macvtap")) {
		ctl_append(buf, size, "macvtap on %s, mode %s",
			   json_string_value(json_object_get(n, "parent")) ?: "?",
			   json_string_value(json_object_get(n, "mode")) ?: "bridge");
	} else if (!strcmp(type, "sriov")) {
		ctl_append(buf, size, "SR-IOV VFs of %s",
			   json_string_value(json_object_get(n, "pf")) ?: "?");
	} else {
		ctl_append(buf, size, "%s", type);
	}
	json_t *present = json_object_get(n, "present");
	if (json_is_false(present))
		ctl_append(buf, size, "MISSING on the host");
}

/* VFs as a table: INDEX ADDRESS DRIVER VM, each line after indent. */
static void print_vfs(json_t *vfs, const char *indent)
{
	size_t i;
	json_t *vf;
	if (!json_array_size(vfs))
		return;
	printf("%s%-5s %-13s %-16s %s\n", indent, "VF", "ADDRESS", "DRIVER", "VM");
	json_array_foreach (vfs, i, vf)
		printf("%s%-5lld %-13s %-16s %s\n", indent,
		       json_integer_value(json_object_get(vf, "index")),
		       json_string_value(json_object_get(vf, "address")) ?: "-",
		       json_string_value(json_object_get(vf, "driver")) ?: "-",
		       json_string_value(json_object_get(vf, "vm")) ?: "-");
}

static void print_network(json_t *n)
{
	char what[256];
	fmt_network(n, what, sizeof(what));
	printf("Name:        %s\n", json_string_value(json_object_get(n, "name")));
	printf("Type:        %s\n", json_string_value(json_object_get(n, "type")));
	printf("Device:      %s\n", what);
	json_t *present = json_object_get(n, "present");
	if (json_is_boolean(present))
		printf("Present:     %s\n", json_is_true(present) ? "yes" : "no");
	json_t *ports = json_object_get(n, "ports"), *p;
	size_t i;
	if (json_array_size(ports)) {
		printf("Ports:\n  %-24s %-8s %-15s %4s %s\n", "VM", "NIC", "INTERFACE", "VLAN",
		       "MAC");
		json_array_foreach (ports, i, p) {
			char vlan[16] = "-";
			if (json_integer_value(json_object_get(p, "vlan")) > 0)
				snprintf(vlan, sizeof(vlan), "%lld",
					 json_integer_value(json_object_get(p, "vlan")));
			printf("  %-24s %-8s %-15s %4s %s\n",
			       json_string_value(json_object_get(p, "vm")) ?: "-",
			       json_string_value(json_object_get(p, "nic")) ?: "-",
			       json_string_value(json_object_get(p, "interface")) ?: "-", vlan,
			       json_string_value(json_object_get(p, "mac")) ?: "-");
		}
	} else {
		printf("Ports:       none\n");
	}
}

/* GET path; with --json the answer, else print(answer). */
static int show(Ctl *ctl, const char *path, void (*print)(json_t *))
{
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "GET", path, NULL, &j);
	if (r == 0 && ctl->json)
		ctl_print_json(j);
	else if (r == 0)
		print(j);
	return r;
}

static void print_networks(json_t *j)
{
	size_t i;
	json_t *n;
	printf("%-16s %-8s %s\n", "NAME", "TYPE", "DEVICE");
	json_array_foreach (json_object_get(j, "networks"), i, n) {
		char what[256];
		fmt_network(n, what, sizeof(what));
		printf("%-16s %-8s %s\n", json_string_value(json_object_get(n, "name")),
		       json_string_value(json_object_get(n, "type")) ?: "-", what);
	}
}

static int network_create(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"bridge", required_argument, NULL, 'b'},
		{"create", no_argument, NULL, 'c'},
		{"vlan-filtering", no_argument, NULL, 'v'},
		{"macvtap", required_argument, NULL, 'm'},
		{"mode", required_argument, NULL, 'M'},
		{"sriov", required_argument, NULL, 's'},
		{0},
	};
	const char *bridge = NULL, *parent = NULL, *mode = NULL, *pf = NULL;
	bool create = false, vlan_filtering = false;
	int c;
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'b':
			bridge = optarg;
			break;
		case 'c':
			create = true;
			break;
		case 'v':
			vlan_filtering = true;
			break;
		case 'm':
			parent = optarg;
			break;
		case 'M':
			if (!check_choice("--mode", optarg, macvtap_modes))
				return EXIT_USAGE;
			mode = optarg;
			break;
		case 's':
			pf = optarg;
			break;
		default:
			network_usage();
			return EXIT_USAGE;
		}
	}
	if (argc - 1 - optind != 1 || !ctl_is_name(argv[1 + optind])) {
		network_usage();
		return EXIT_USAGE;
	}
	const char *name = argv[1 + optind];
	int kinds = !!bridge + !!parent + !!pf;
	const char *err = NULL;
	if (kinds > 1)
		err = "give one of --bridge, --macvtap and --sriov";
	else if (!kinds && !create)
		err = "give --bridge BR, --create, --macvtap PARENT or --sriov PF";
	else if (create && (parent || pf))
		err = "--create is for a bridge (with --bridge BR, or alone for hsbr-NAME)";
	else if (vlan_filtering && !create)
		err = "--vlan-filtering only with --create (an existing bridge keeps its own "
		      "setting)";
	else if (mode && !parent)
		err = "--mode only with --macvtap";
	if (err) {
		fprintf(stderr, "hsctl: network create: %s\n", err);
		network_usage();
		return EXIT_USAGE;
	}
	json_auto_t *body = json_pack("{s:s, s:s}", "name", name, "type",
				      parent ? "macvtap" : pf ? "sriov" : "bridge");
	if (bridge)
		json_object_set_new(body, "bridge", json_string(bridge));
	if (create)
		json_object_set_new(body, "create", json_true());
	if (vlan_filtering)
		json_object_set_new(body, "vlan_filtering", json_true());
	if (parent)
		json_object_set_new(body, "parent", json_string(parent));
	if (mode)
		json_object_set_new(body, "mode", json_string(mode));
	if (pf)
		json_object_set_new(body, "pf", json_string(pf));
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "POST", "/v1/networks", body, &j);
	if (r == 0 && ctl->json) {
		ctl_print_json(j);
	} else if (r == 0) {
		char what[256];
		fmt_network(j, what, sizeof(what));
		printf("created network %s (%s)\n", name, what);
	}
	return r;
}

/* DELETE path (200 done, or 202 when hsd waits for a guest); prints done
 * or pending, or with --json hsd's answer. */
static int delete(Ctl *ctl, const char *path, const char *done, const char *pending)
{
	json_auto_t *j = NULL;
	unsigned status = 0;
	int r = ctl_call_status(ctl, "DELETE", path, NULL, &status, &j);
	if (r)
		return r;
	if (ctl->json && j)
		ctl_print_json(j);
	else if (!ctl->json)
		puts(status == 202 ? pending : done);
	return 0;
}

int cmd_network(Ctl *ctl, int argc, char **argv)
{
	const char *sub = argc >= 2 ? argv[1] : "";
	if (!strcmp(sub, "list") && argc == 2)
		return show(ctl, "/v1/networks", print_networks);
	if (!strcmp(sub, "create"))
		return network_create(ctl, argc, argv);
	if ((!strcmp(sub, "show") || !strcmp(sub, "delete")) && argc == 3 &&
	    ctl_is_name(argv[2])) {
		_cleanup_free_ char *path = hs_strdup_printf("/v1/networks/%s", argv[2]);
		if (!strcmp(sub, "show"))
			return show(ctl, path, print_network);
		_cleanup_free_ char *done = hs_strdup_printf("deleted network %s", argv[2]);
		return delete(ctl, path, done, done);
	}
	network_usage();
	return EXIT_USAGE;
}

static void print_pf(json_t *pf)
{
	printf("%-16s %-13s %4lld of %lld\n", json_string_value(json_object_get(pf, "name")),
	       json_string_value(json_object_get(pf, "address")) ?: "-",
	       json_integer_value(json_object_get(pf, "numvfs")),
	       json_integer_value(json_object_get(pf, "totalvfs")));
	print_vfs(json_object_get(pf, "vfs"), "    ");
}

static void print_pfs(json_t *j)
{
	size_t i;
	json_t *pf;
	if (!json_array_size(json_object_get(j, "pfs"))) {
		printf("no SR-IOV physical functions on this host\n");
		return;
	}
	printf("%-16s %-13s %s\n", "PF", "ADDRESS", "VFS");
	json_array_foreach (json_object_get(j, "pfs"), i, pf)
		print_pf(pf);
}

int cmd_sriov(Ctl *ctl, int argc, char **argv)
{
	const char *sub = argc >= 2 ? argv[1] : "";
	if (!strcmp(sub, "list") && argc == 2)
		return show(ctl, "/v1/sriov", print_pfs);
	if (strcmp(sub, "set")) {
		sriov_usage();
		return EXIT_USAGE;
	}
	static const struct option opts[] = {{"numvfs", required_argument, NULL, 'n'}, {0}};
	unsigned long long numvfs = 0;
	bool has_numvfs = false;
	int c;
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) >= 0) {
		if (c != 'n') {
			sriov_usage();
			return EXIT_USAGE;
		}
		if (ctl_parse_uint("--numvfs", optarg, UINT16_MAX, &numvfs) < 0)
			return EXIT_USAGE;
		has_numvfs = true;
	}
	if (argc - 1 - optind != 1 || !ctl_is_name(argv[1 + optind]) || !has_numvfs) {
		sriov_usage();
		return EXIT_USAGE;
	}
	const char *pf = argv[1 + optind];
	_cleanup_free_ char *path = hs_strdup_printf("/v1/sriov/%s", pf);
	json_auto_t *body = json_pack("{s:I}", "numvfs", (json_int_t)numvfs);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "PUT", path, body, &j);
	if (r == 0 && ctl->json)
		ctl_print_json(j);
	else if (r == 0)
		printf("%s: %lld of %lld VFs\n", pf, json_integer_value(json_object_get(j, "numvfs")),
		       json_integer_value(json_object_get(j, "totalvfs")));
	return r;
}

/* "web1: net1 added (network:lan, 52:54:00:ab:cd:ef, interface hstap3)
 * (live)" and the like: what hsd answered for a NIC. It has a "state" when
 * the VM is active (the change is live), none when it is stopped. */
static void print_nic_result(const char *vm, json_t *nic, const char *what)
{
	char line[512];
	fmt_nic_where(nic, line, sizeof(line));
	const char *s;
	if ((s = json_string_value(json_object_get(nic, "mac"))))
		ctl_append(line, sizeof(line), "%s", s);
	json_int_t vlan = json_integer_value(json_object_get(nic, "vlan"));
	if (vlan > 0)
		ctl_append(line, sizeof(line), "vlan %lld", vlan);
	else
		ctl_append(line, sizeof(line), "no vlan");
	ctl_append(line, sizeof(line), "link %s",
		   json_string_value(json_object_get(nic, "link")) ?: "up");
	const char *ifname = json_string_value(json_object_get(nic, "interface"));
	if (ifname)
		ctl_append(line, sizeof(line), "interface %s", ifname);
	printf("%s: %s %s (%s) (%s)\n", vm, json_string_value(json_object_get(nic, "id")) ?: "?",
	       what, line,
	       json_object_get(nic, "state") ? "live" : "stored; used at the next start");
}

static int nic_add(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"network", required_argument, NULL, 'n'},
		{"mac", required_argument, NULL, 'm'},
		{"model", required_argument, NULL, 'M'},
		{"queues", required_argument, NULL, 'q'},
		{"vlan", required_argument, NULL, 'v'},
		{"no-vhost", no_argument, NULL, 'V'},
		{"link-down", no_argument, NULL, 'l'},
		{0},
	};
	json_auto_t *body = json_object();
	int c;
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'n':
			if (!ctl_is_name(optarg)) {
				fprintf(stderr, "hsctl: --network: '%s' is not a network name\n",
					optarg);
				return EXIT_USAGE;
			}
			json_object_set_new(body, "network", json_string(optarg));
			break;
		case 'm':
		case 'M':
		case 'q':
		case 'v': {
			const char *key = c == 'm' ? "mac" : c == 'M' ? "model" : c == 'q' ? "queues"
											  : "vlan";
			char opt[16];
			snprintf(opt, sizeof(opt), "--%s", key);
			if (nic_field(body, key, optarg, opt) < 0)
				return EXIT_USAGE;
			break;
		}
		case 'V':
			json_object_set_new(body, "vhost", json_false());
			break;
		case 'l':
			json_object_set_new(body, "link", json_string("down"));
			break;
		default:
			nic_usage();
			return EXIT_USAGE;
		}
	}
	if (argc - 1 - optind != 1 || !ctl_is_name(argv[1 + optind])) {
		nic_usage();
		return EXIT_USAGE;
	}
	if (!json_object_get(body, "network")) {
		fputs("hsctl: nic add: --network NET is needed\n", stderr);
		nic_usage();
		return EXIT_USAGE;
	}
	const char *vm = argv[1 + optind];
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/nics", vm);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "POST", path, body, &j);
	if (r == 0 && ctl->json)
		ctl_print_json(j);
	else if (r == 0)
		print_nic_result(vm, j, "added");
	return r;
}

static int nic_set(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"link", required_argument, NULL, 'l'},
		{"vlan", required_argument, NULL, 'v'},
		{0},
	};
	json_auto_t *body = json_object();
	int c;
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) >= 0) {
		json_t *vlan;
		switch (c) {
		case 'l':
			if (!check_choice("--link", optarg, link_states))
				return EXIT_USAGE;
			json_object_set_new(body, "link", json_string(optarg));
			break;
		case 'v':
			if (!(vlan = parse_vlan("--vlan", optarg, true)))
				return EXIT_USAGE;
			json_object_set_new(body, "vlan", vlan);
			break;
		default:
			nic_usage();
			return EXIT_USAGE;
		}
	}
	if (argc - 1 - optind != 2 || !ctl_is_name(argv[1 + optind]) ||
	    !ctl_is_name(argv[2 + optind])) {
		nic_usage();
		return EXIT_USAGE;
	}
	if (!json_object_size(body)) {
		fputs("hsctl: nic set: nothing to change: give --link or --vlan\n", stderr);
		nic_usage();
		return EXIT_USAGE;
	}
	const char *vm = argv[1 + optind], *id = argv[2 + optind];
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/nics/%s", vm, id);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "PATCH", path, body, &j);
	if (r == 0 && ctl->json)
		ctl_print_json(j);
	else if (r == 0)
		print_nic_result(vm, json_is_object(j) ? j : body, "changed");
	return r;
}

int cmd_nic(Ctl *ctl, int argc, char **argv)
{
	const char *sub = argc >= 2 ? argv[1] : "";
	if (!strcmp(sub, "add"))
		return nic_add(ctl, argc, argv);
	if (!strcmp(sub, "set"))
		return nic_set(ctl, argc, argv);
	if (!strcmp(sub, "list") && argc == 3 && ctl_is_name(argv[2])) {
		_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/nics", argv[2]);
		return show(ctl, path, print_nics);
	}
	if (!strcmp(sub, "del") && argc == 4 && ctl_is_name(argv[2]) && ctl_is_name(argv[3])) {
		_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/nics/%s", argv[2], argv[3]);
		_cleanup_free_ char *done = hs_strdup_printf("%s: %s removed", argv[2], argv[3]);
		_cleanup_free_ char *pending = hs_strdup_printf(
			"%s: %s unplug requested: the guest has not let it go yet; it is removed "
			"when the guest does, or when the VM stops",
			argv[2], argv[3]);
		return delete(ctl, path, done, pending);
	}
	nic_usage();
	return EXIT_USAGE;
}
