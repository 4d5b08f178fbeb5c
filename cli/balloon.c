/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl balloon: the automatic balloon policy (GET/PUT /v1/balloon): its
 * mode and watermarks, the host's pressure, and what it reclaimed from
 * which VM. */
#include <getopt.h>
#include <string.h>

#include "hsctl.h"

static void usage(void)
{
	fputs("hsctl: usage: hsctl balloon [--mode auto|off] [--low SIZE] [--high SIZE]\n",
	      stderr);
}

static void print_state(json_t *j)
{
	json_t *cfg = json_object_get(j, "config"), *host = json_object_get(j, "host");
	printf("Policy:      %s, %s%s\n", json_string_value(json_object_get(cfg, "mode")),
	       json_is_true(json_object_get(j, "pressure")) ? "host under memory pressure, "
							    : "",
	       json_string_value(json_object_get(j, "phase")));
	printf("Host:        MemAvailable %lld MiB of %lld MiB; pressure below %lld MiB%s, ends "
	       "above %lld MiB%s\n",
	       json_integer_value(json_object_get(host, "mem_available_mib")),
	       json_integer_value(json_object_get(host, "mem_total_mib")),
	       json_integer_value(json_object_get(j, "low_mib")),
	       json_integer_value(json_object_get(cfg, "low_mib")) ? "" : " (10 %)",
	       json_integer_value(json_object_get(j, "high_mib")),
	       json_integer_value(json_object_get(cfg, "high_mib")) ? "" : " (15 %)");
	printf("Steps:       at most %lld MiB per VM every %g s; guests keep %lld MiB above "
	       "what they use\n",
	       json_integer_value(json_object_get(cfg, "max_step_mib")),
	       json_number_value(json_object_get(cfg, "stats_interval_s")),
	       json_integer_value(json_object_get(cfg, "margin_mib")));
	printf("Reclaimed:   %lld MiB\n", json_integer_value(json_object_get(j, "reclaimed_mib")));
	const char *e = json_string_value(json_object_get(j, "error"));
	if (e)
		printf("Error:       %s\n", e);
	json_t *vms = json_object_get(j, "vms"), *vm;
	size_t i;
	if (json_array_size(vms))
		printf("%-24s %8s %8s %8s %8s %10s %10s\n", "VM", "FLOOR", "TARGET", "POLICY",
		       "ACTUAL", "AVAILABLE", "RECLAIMED");
	json_array_foreach (vms, i, vm) {
		char fl[16] = "-", pol[16] = "-", act[16] = "-", av[16] = "-";
		json_int_t f = json_integer_value(json_object_get(vm, "floor_mib"));
		json_t *p = json_object_get(vm, "auto_target_mib");
		json_t *a = json_object_get(vm, "actual_mib");
		json_t *st = json_object_get(json_object_get(vm, "stats"), "available_mib");
		if (f)
			snprintf(fl, sizeof(fl), "%lld", f);
		if (p)
			snprintf(pol, sizeof(pol), "%lld", json_integer_value(p));
		if (a)
			snprintf(act, sizeof(act), "%lld", json_integer_value(a));
		if (st)
			snprintf(av, sizeof(av), "%lld", json_integer_value(st));
		printf("%-24s %8s %8lld %8s %8s %10s %10lld\n",
		       json_string_value(json_object_get(vm, "name")), fl,
		       json_integer_value(json_object_get(vm, "target_mib")), pol, act, av,
		       json_integer_value(json_object_get(vm, "reclaimed_mib")));
	}
}

int cmd_balloon(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"low", required_argument, NULL, 'l'},
		{"high", required_argument, NULL, 'H'},
		{0},
	};
	json_auto_t *body = json_object();
	uint64_t mib;
	int c;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'm':
			if (strcmp(optarg, "auto") && strcmp(optarg, "off")) {
				fprintf(stderr, "hsctl: --mode: '%s' is not auto or off\n", optarg);
				return EXIT_USAGE;
			}
			json_object_set_new(body, "mode", json_string(optarg));
			break;
		case 'l':
		case 'H':
			if (ctl_parse_mib(c == 'l' ? "--low" : "--high", optarg,
					  "; 0 for the default share of host memory", &mib) < 0)
				return EXIT_USAGE;
			json_object_set_new(body, c == 'l' ? "low_mib" : "high_mib",
					    json_integer((json_int_t)mib));
			break;
		default:
			usage();
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage();
		return EXIT_USAGE;
	}
	json_auto_t *j = NULL;
	int r = ctl_show_or_set(ctl, "/v1/balloon", body, &j);
	if (r == 0 && !ctl->json)
		print_state(j);
	return r;
}
