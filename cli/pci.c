/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl pci: host PCI devices for passthrough (GET /v1/pci), giving a
 * device back to the host (POST /v1/pci/ADDR/release), and attaching or
 * detaching one to a VM (POST /v1/vms/NAME/hostdevs, DELETE
 * /v1/vms/NAME/hostdevs/ADDR: hot-plug when the VM runs). */
#include <getopt.h>
#include <stdbool.h>
#include <string.h>

#include "hsctl.h"

static void usage(void)
{
	fputs("hsctl: usage: hsctl pci list [--all]\n"
	      "       hsctl pci release ADDR\n"
	      "       hsctl pci attach VM DEVICE [--all-functions|--one-function] [--x-vga]\n"
	      "                        [--rom-file FILE] [--no-rom-bar] [--display off|on|auto]\n"
	      "       hsctl pci detach VM ADDR\n"
	      "  DEVICE: a PCI address (0000:01:00.0, 01:00.0) or VENDOR:DEVICE[#INDEX] (10de:1b80#1)\n",
	      stderr);
}

int ctl_hostdev_parse(const char *s, json_t *o)
{
	unsigned v, d, idx = 0;
	int n = 0;
	/* VENDOR:DEVICE has one colon and no dot (an address has a dot). */
	size_t colons = 0, dots = 0, first_colon = 0;
	for (size_t i = 0; s[i]; i++) {
		if (s[i] == ':' && !colons++)
			first_colon = i;
		dots += s[i] == '.';
	}
	bool id_form = colons == 1 && first_colon == 4 && !dots;
	if (id_form && sscanf(s, "%4x:%4x%n", &v, &d, &n) == 2 && n == 9 &&
	    (!s[n] || (s[n] == '#' && sscanf(s + n + 1, "%u", &idx) == 1))) {
		char id[16];
		snprintf(id, sizeof(id), "%04x:%04x", v, d);
		json_object_set_new(o, "id", json_string(id));
		if (s[n])
			json_object_set_new(o, "index", json_integer(idx));
		return 0;
	}
	if (!strchr(s, ':') || !strchr(s, '.')) {
		fprintf(stderr,
			"hsctl: '%s' is neither a PCI address (0000:01:00.0) nor VENDOR:DEVICE[#N]\n",
			s);
		return -1;
	}
	json_object_set_new(o, "address", json_string(s)); /* hsd checks it */
	return 0;
}

static void print_list(json_t *j, bool all)
{
	json_t *devs = json_object_get(j, "devices"), *d;
	size_t i;
	if (!json_is_true(json_object_get(j, "iommu")))
		printf("IOMMU off: %s\n\n", json_string_value(json_object_get(j, "advice")));
	printf("%-13s %-9s %-6s %5s %-16s %s\n", "ADDRESS", "ID", "CLASS", "GROUP", "DRIVER",
	       "HELD BY");
	json_array_foreach (devs, i, d) {
		json_t *claim = json_object_get(d, "claim");
		json_t *g = json_object_get(d, "iommu_group");
		bool bridge = json_is_true(json_object_get(d, "bridge"));
		if (bridge && !all && !claim)
			continue;
		char grp[16] = "-", held[160] = "-";
		if (json_is_integer(g))
			snprintf(grp, sizeof(grp), "%lld", json_integer_value(g));
		if (claim)
			snprintf(held, sizeof(held), "%s (%s%s%s)",
				 json_string_value(json_object_get(claim, "vm")),
				 json_string_value(json_object_get(claim, "state")),
				 json_string_value(json_object_get(claim, "host_driver")) ? ", host driver " : "",
				 json_string_value(json_object_get(claim, "host_driver")) ?: "");
		else if (json_is_true(json_object_get(d, "boot_vga")))
			snprintf(held, sizeof(held), "host console (boot VGA)");
		printf("%-13s %-9s %-6s %5s %-16s %s\n",
		       json_string_value(json_object_get(d, "address")),
		       json_string_value(json_object_get(d, "id")),
		       json_string_value(json_object_get(d, "class")), grp,
		       json_string_value(json_object_get(d, "driver")) ?: "-", held);
	}
}

static int pci_list(Ctl *ctl, int argc, char **argv)
{
	bool all = argc == 3 && !strcmp(argv[2], "--all");
	if (argc > 3 || (argc == 3 && !all)) {
		usage();
		return EXIT_USAGE;
	}
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "GET", "/v1/pci", NULL, &j);
	if (r == 0) {
		if (ctl->json)
			ctl_print_json(j);
		else
			print_list(j, all);
	}
	return r;
}

static int pci_attach(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"all-functions", no_argument, NULL, 'a'},
		{"one-function", no_argument, NULL, '1'},
		{"x-vga", no_argument, NULL, 'v'},
		{"rom-file", required_argument, NULL, 'r'},
		{"no-rom-bar", no_argument, NULL, 'n'},
		{"display", required_argument, NULL, 'd'},
		{0},
	};
	json_auto_t *body = json_object();
	int c;
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'a':
		case '1':
			json_object_set_new(body, "all_functions", json_boolean(c == 'a'));
			break;
		case 'v':
			json_object_set_new(body, "x_vga", json_true());
			break;
		case 'r':
			json_object_set_new(body, "rom_file", json_string(optarg));
			break;
		case 'n':
			json_object_set_new(body, "rom_bar", json_false());
			break;
		case 'd':
			json_object_set_new(body, "display", json_string(optarg));
			break;
		default:
			usage();
			return EXIT_USAGE;
		}
	}
	if (argc - 1 - optind != 2) {
		usage();
		return EXIT_USAGE;
	}
	const char *vm = argv[1 + optind];
	if (ctl_hostdev_parse(argv[2 + optind], body) < 0)
		return EXIT_USAGE;
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/hostdevs", vm);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "POST", path, body, &j);
	if (r == 0 && ctl->json)
		ctl_print_json(j);
	else if (r == 0) {
		const char *st = json_string_value(json_object_get(j, "state")) ?: "";
		printf("%s: %s attached%s\n", vm, argv[2 + optind],
		       !strcmp(st, "running") || !strcmp(st, "paused") ? " (hot-plugged)"
								   : " (bound at its next start)");
	}
	return r;
}

static int pci_detach(Ctl *ctl, const char *vm, const char *addr)
{
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/hostdevs/%s", vm, addr);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, "DELETE", path, NULL, &j);
	if (r == 0 && ctl->json)
		ctl_print_json(j);
	else if (r == 0 && json_object_get(j, "released") &&
		 !json_is_true(json_object_get(j, "released")))
		printf("%s: %s detach requested: %s\n", vm, addr,
		       json_string_value(json_object_get(j, "message")));
	else if (r == 0)
		printf("%s: %s detached%s\n", vm, addr,
		       json_object_get(j, "released") ? " and given back to the host" : "");
	return r;
}

int cmd_pci(Ctl *ctl, int argc, char **argv)
{
	if (argc < 2) {
		usage();
		return EXIT_USAGE;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "list"))
		return pci_list(ctl, argc, argv);
	if (!strcmp(sub, "attach"))
		return pci_attach(ctl, argc, argv);
	if (!strcmp(sub, "detach") && argc == 4)
		return pci_detach(ctl, argv[2], argv[3]);
	if (!strcmp(sub, "release") && argc == 3) {
		_cleanup_free_ char *path = hs_strdup_printf("/v1/pci/%s/release", argv[2]);
		json_auto_t *j = NULL;
		int r = ctl_call(ctl, "POST", path, NULL, &j);
		if (r == 0 && ctl->json)
			ctl_print_json(j);
		else if (r == 0)
			printf("%s given back to the host\n", argv[2]);
		return r;
	}
	usage();
	return EXIT_USAGE;
}
