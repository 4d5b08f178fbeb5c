/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl template and hsctl snapshot: the images hsd keeps for VMs to start
 * from, and a VM's snapshots. hsd answers these calls once the work on the
 * images is done, which may take long (a copy, a merge, a guest's memory):
 * those calls get the long timeouts of hsctl.h. */
#include <getopt.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "hsctl.h"

/* What a subcommand was given. */
typedef struct SubArgs {
	const char *pos[2];
	const char *format; /* template import --format */
	const char *disk;   /* template from-vm --disk */
	bool memory;	    /* snapshot create --memory */
	bool warm, stop;    /* template from-vm --warm [--stop] */
} SubArgs;

typedef struct SubCommand {
	const char *name;
	const char *args; /* for the usage line, after "hsctl GROUP NAME" */
	size_t n_pos;
	unsigned in_url; /* bit k: the k-th argument goes into the request's path */
	const struct option *opts;
	int (*fn)(Ctl *ctl, const SubArgs *a);
} SubCommand;

/* Characters of any name hsd gives out (VMs, templates, snapshots): a name
 * with others cannot exist, and would not survive a request's path. */
static bool name_fits_url(const char *s)
{
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
	       strlen(s);
}

static void fmt_time(double t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (t <= 0 || !localtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, size, "-");
}

/* "23 ms", "1.4 s", "2m5s" */
static void fmt_seconds(double s, char *buf, size_t size)
{
	if (s < 1)
		snprintf(buf, size, "%.0f ms", s * 1000);
	else if (s < 60)
		snprintf(buf, size, "%.1f s", s);
	else
		snprintf(buf, size, "%ldm%lds", (long)s / 60, (long)s % 60);
}

/* The names of a JSON array of strings, comma-separated ("-" if none). New
 * string. */
static char *join_names(json_t *arr)
{
	size_t len = 0, i;
	json_t *v;
	json_array_foreach (arr, i, v)
		len += strlen(json_string_value(v) ? json_string_value(v) : "") + 2;
	char *s = malloc(len + 2);
	if (!s)
		return NULL;
	strcpy(s, "-");
	len = 0;
	json_array_foreach (arr, i, v) {
		const char *n = json_string_value(v) ? json_string_value(v) : "";
		len += (size_t)sprintf(s + len, "%s%s", i ? ", " : "", n);
	}
	return s;
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "-";
}

/* A subcommand's one call to hsd: METHOD at the path fmt makes, with body
 * (NULL: none), waiting up to timeout seconds per read (0: no limit). *ret
 * is the answer (new reference); under --json it is printed here whole, and
 * the caller has nothing left to print. Returns an exit code. */
static int sub_call(Ctl *ctl, const char *method, json_t *body, double timeout, json_t **ret,
		    const char *fmt, ...) _printf_(6, 7);
static int sub_call(Ctl *ctl, const char *method, json_t *body, double timeout, json_t **ret,
		    const char *fmt, ...)
{
	_cleanup_free_ char *path = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&path, fmt, ap);
	va_end(ap);
	if (n < 0) {
		path = NULL; /* undefined after a failure */
		fputs("hsctl: out of memory\n", stderr);
		return EXIT_HSD_ERROR;
	}
	ctl->client.timeout = timeout;
	int r = ctl_call(ctl, method, path, body, ret);
	if (r)
		return r;
	if (ctl->json)
		ctl_print_json(*ret);
	return EXIT_OK;
}

/* ---- templates ---- */

static int template_list(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *j = NULL;
	int r = sub_call(ctl, "GET", NULL, 0, &j, "/v1/templates");
	if (r || ctl->json)
		return r;
	printf("%-24s %-6s %10s %10s %s\n", "NAME", "FORMAT", "VIRTUAL", "ACTUAL", "USERS");
	size_t i;
	json_t *t;
	json_array_foreach (json_object_get(j, "templates"), i, t) {
		char vs[32], as[32];
		ctl_fmt_bytes(json_number_value(json_object_get(t, "virtual_size")), vs,
			      sizeof(vs));
		ctl_fmt_bytes(json_number_value(json_object_get(t, "actual_size")), as, sizeof(as));
		_cleanup_free_ char *users = join_names(json_object_get(t, "users"));
		printf("%-24s %-6s %10s %10s %s\n", str(t, "name"), str(t, "format"), vs, as,
		       users ? users : "?");
	}
	return 0;
}

static int template_show(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *t = NULL;
	int r = sub_call(ctl, "GET", NULL, 0, &t, "/v1/templates/%s", a->pos[0]);
	if (r || ctl->json)
		return r;
	char vs[32], as[32], created[32];
	ctl_fmt_bytes(json_number_value(json_object_get(t, "virtual_size")), vs, sizeof(vs));
	ctl_fmt_bytes(json_number_value(json_object_get(t, "actual_size")), as, sizeof(as));
	fmt_time(json_number_value(json_object_get(t, "created")), created, sizeof(created));
	json_t *u = json_object_get(t, "users");
	_cleanup_free_ char *users = json_array_size(u) ? join_names(u) : strdup("none");
	printf("Name:        %s\n", str(t, "name"));
	printf("Format:      %s\n", str(t, "format"));
	printf("Virtual:     %s\n", vs);
	printf("Actual:      %s (on the host's disk)\n", as);
	printf("Created:     %s\n", created);
	printf("Source:      %s\n", str(t, "source"));
	printf("Users:       %s\n", users ? users : "?");
	return 0;
}

/* POST /v1/templates and the line saying what was made. */
static int template_post(Ctl *ctl, json_t *body, const char *what)
{
	json_auto_t *t = NULL;
	int r = sub_call(ctl, "POST", body, CTL_TIMEOUT_COPY, &t, "/v1/templates");
	if (r || ctl->json)
		return r;
	char vs[32], as[32];
	ctl_fmt_bytes(json_number_value(json_object_get(t, "virtual_size")), vs, sizeof(vs));
	ctl_fmt_bytes(json_number_value(json_object_get(t, "actual_size")), as, sizeof(as));
	printf("template %s %s (%s, %s virtual, %s actual)\n", str(t, "name"), what,
	       str(t, "format"), vs, as);
	return 0;
}

static int template_import(Ctl *ctl, const SubArgs *a)
{
	if (a->format && strcmp(a->format, "qcow2") && strcmp(a->format, "raw")) {
		fprintf(stderr, "hsctl: --format: '%s' is not qcow2 or raw\n", a->format);
		return EXIT_USAGE;
	}
	_cleanup_free_ char *file = ctl_abs_path("template import", a->pos[1]);
	if (!file)
		return EXIT_USAGE;
	json_auto_t *body = json_pack("{s:s, s:s}", "name", a->pos[0], "file", file);
	if (a->format)
		json_object_set_new(body, "format", json_string(a->format));
	return template_post(ctl, body, "imported");
}

static int template_from_vm(Ctl *ctl, const SubArgs *a)
{
	unsigned long long disk = 0;
	if (a->disk && ctl_parse_uint("--disk", a->disk, 255, &disk) < 0)
		return EXIT_USAGE;
	json_auto_t *body = json_pack("{s:s, s:s}", "name", a->pos[0], "vm", a->pos[1]);
	if (a->disk)
		json_object_set_new(body, "disk", json_integer((json_int_t)disk));
	if (a->stop && !a->warm) /* hsd says why not */
		json_object_set_new(body, "then", json_string("stop"));
	if (a->warm) {
		/* The running guest's RAM and devices, not only its disk. */
		json_object_set_new(body, "warm", json_true());
		json_object_set_new(body, "then", json_string(a->stop ? "stop" : "resume"));
		json_auto_t *j = NULL;
		int r = sub_call(ctl, "POST", body, CTL_TIMEOUT_MEMORY, &j, "/v1/templates");
		if (r || ctl->json)
			return r;
		char took[32];
		fmt_seconds(json_number_value(json_object_get(j, "seconds")), took, sizeof(took));
		printf("warm template %s made from VM %s (state %.0f KiB, guest paused %.0f ms, "
		       "%s; VM %s)\n",
		       a->pos[0], a->pos[1], json_number_value(json_object_get(j, "state_size")) / 1024,
		       json_number_value(json_object_get(j, "paused_ms")), took,
		       a->stop ? "stopped" : "resumed");
		return 0;
	}
	_cleanup_free_ char *what = hs_strdup_printf("made from VM %s, disk %llu", a->pos[1], disk);
	return template_post(ctl, body, what ? what : "made");
}

static int template_delete(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *j = NULL;
	int r = sub_call(ctl, "DELETE", NULL, 0, &j, "/v1/templates/%s", a->pos[0]);
	if (r || ctl->json)
		return r;
	printf("template %s %s\n", a->pos[0], str(j, "state"));
	return 0;
}

/* ---- snapshots ---- */

static int snapshot_list(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *j = NULL;
	int r = sub_call(ctl, "GET", NULL, 0, &j, "/v1/vms/%s/snapshots", a->pos[0]);
	if (r || ctl->json)
		return r;
	/* '*': the snapshot the VM's disks now stand on. */
	printf("  %-24s %-19s %-6s %s\n", "NAME", "CREATED", "MEMORY", "PARENT");
	size_t i;
	json_t *s;
	json_array_foreach (json_object_get(j, "snapshots"), i, s) {
		char created[32];
		fmt_time(json_number_value(json_object_get(s, "created")), created,
			 sizeof(created));
		printf("%c %-24s %-19s %-6s %s\n",
		       json_is_true(json_object_get(s, "current")) ? '*' : ' ', str(s, "name"),
		       created, json_is_true(json_object_get(s, "memory")) ? "yes" : "no",
		       str(s, "parent"));
	}
	return 0;
}

static int snapshot_create(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *body = json_pack("{s:s}", "name", a->pos[1]);
	if (a->memory)
		json_object_set_new(body, "memory", json_true());
	json_auto_t *j = NULL;
	int r = sub_call(ctl, "POST", body, CTL_TIMEOUT_MEMORY, &j, "/v1/vms/%s/snapshots",
			 a->pos[0]);
	if (r || ctl->json)
		return r;
	char took[32];
	fmt_seconds(json_number_value(json_object_get(j, "seconds")), took, sizeof(took));
	printf("snapshot %s of %s taken (%s%s, %s)\n", str(j, "name"), a->pos[0],
	       json_is_true(json_object_get(j, "live")) ? "live" : "VM not running",
	       json_is_true(json_object_get(j, "memory")) ? ", with memory" : "", took);
	/* A live disk-only snapshot: frozen by the guest agent, or why not. */
	const char *note = json_string_value(json_object_get(j, "quiesce_note"));
	if (note && json_is_true(json_object_get(j, "live")) &&
	    !json_is_true(json_object_get(j, "memory")))
		printf("%s: %s\n",
		       json_is_true(json_object_get(j, "quiesced")) ? "quiesced" : "not quiesced",
		       note);
	return 0;
}

static int snapshot_rollback(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *j = NULL;
	int r = sub_call(ctl, "POST", NULL, CTL_TIMEOUT_MEMORY, &j,
			 "/v1/vms/%s/snapshots/%s/rollback", a->pos[0], a->pos[1]);
	if (r || ctl->json)
		return r;
	char disks[32], all[32];
	fmt_seconds(json_number_value(json_object_get(j, "disk_seconds")), disks, sizeof(disks));
	if (!json_is_true(json_object_get(j, "restarted"))) {
		printf("%s rolled back to snapshot %s (%s)\n", a->pos[0], str(j, "name"), disks);
		return 0;
	}
	fmt_seconds(json_number_value(json_object_get(j, "seconds")), all, sizeof(all));
	printf("%s rolled back to snapshot %s and restarted%s (disks %s, in all %s)\n", a->pos[0],
	       str(j, "name"),
	       json_is_true(json_object_get(j, "memory")) ? " from its memory" : "", disks, all);
	return 0;
}

static int snapshot_delete(Ctl *ctl, const SubArgs *a)
{
	json_auto_t *j = NULL;
	/* CTL_TIMEOUT_COPY: may merge layers. */
	int r = sub_call(ctl, "DELETE", NULL, CTL_TIMEOUT_COPY, &j, "/v1/vms/%s/snapshots/%s",
			 a->pos[0], a->pos[1]);
	if (r || ctl->json)
		return r;
	char took[32];
	fmt_seconds(json_number_value(json_object_get(j, "seconds")), took, sizeof(took));
	printf("snapshot %s of %s deleted (%s)\n", str(j, "deleted"), a->pos[0], took);
	return 0;
}

/* ---- the command groups ---- */

static const struct option format_opts[] = {{"format", required_argument, NULL, 'f'}, {0}};
static const struct option disk_opts[] = {{"disk", required_argument, NULL, 'd'},
					  {"warm", no_argument, NULL, 'w'},
					  {"stop", no_argument, NULL, 's'},
					  {0}};
static const struct option memory_opts[] = {{"memory", no_argument, NULL, 'm'}, {0}};
static const struct option no_opts[] = {{0}};

static const SubCommand template_cmds[] = {
	{"list", "", 0, 0, no_opts, template_list},
	{"show", "NAME", 1, 1, no_opts, template_show},
	{"import", "NAME FILE [--format qcow2|raw]", 2, 0, format_opts, template_import},
	{"from-vm", "NAME VM [--disk N | --warm [--stop]]", 2, 0, disk_opts, template_from_vm},
	{"delete", "NAME", 1, 1, no_opts, template_delete},
};

static const SubCommand snapshot_cmds[] = {
	{"list", "VM", 1, 1, no_opts, snapshot_list},
	{"create", "VM SNAP [--memory]", 2, 1, memory_opts, snapshot_create},
	{"rollback", "VM SNAP", 2, 3, no_opts, snapshot_rollback},
	{"delete", "VM SNAP", 2, 3, no_opts, snapshot_delete},
};

static void sub_usage(const char *group, const SubCommand *s)
{
	fprintf(stderr, "hsctl: usage: hsctl %s %s%s%s\n", group, s->name, *s->args ? " " : "",
		s->args);
}

/* argv: GROUP SUBCOMMAND [ARGS and options, in any order]. */
static int run_group(Ctl *ctl, const char *group, const SubCommand *subs, size_t n, int argc,
		     char **argv)
{
	const SubCommand *s = NULL;
	for (size_t i = 0; argc >= 2 && i < n; i++)
		if (!strcmp(argv[1], subs[i].name))
			s = &subs[i];
	if (!s) {
		if (argc >= 2)
			fprintf(stderr, "hsctl: %s: unknown command '%s'\n", group, argv[1]);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, "%s hsctl %s %s%s%s\n",
				i ? "             " : "hsctl: usage:", group, subs[i].name,
				*subs[i].args ? " " : "", subs[i].args);
		return EXIT_USAGE;
	}

	/* getopt names argv[0] in its messages: "template import: ...". */
	char prog[64];
	snprintf(prog, sizeof(prog), "%s %s", group, s->name);
	argv[1] = prog;
	SubArgs a = {0};
	int c;
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", s->opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			a.format = optarg;
			break;
		case 'd':
			a.disk = optarg;
			break;
		case 'm':
			a.memory = true;
			break;
		case 'w':
			a.warm = true;
			break;
		case 's':
			a.stop = true;
			break;
		default:
			sub_usage(group, s);
			return EXIT_USAGE;
		}
	}
	char **pos = argv + 1 + optind;
	if ((size_t)(argc - 1 - optind) != s->n_pos) {
		sub_usage(group, s);
		return EXIT_USAGE;
	}
	for (size_t k = 0; k < s->n_pos; k++) {
		if (!ctl_is_name(pos[k])) {
			sub_usage(group, s);
			return EXIT_USAGE;
		}
		if ((s->in_url & (1u << k)) && !name_fits_url(pos[k])) {
			fprintf(stderr,
				"hsctl: %s: '%s' cannot be a name in hsd (letters, digits, '.', "
				"'_' and '-')\n",
				prog, pos[k]);
			return EXIT_USAGE;
		}
		a.pos[k] = pos[k];
	}
	return s->fn(ctl, &a);
}

int cmd_template(Ctl *ctl, int argc, char **argv)
{
	return run_group(ctl, "template", template_cmds, ARRAY_SIZE(template_cmds), argc, argv);
}

int cmd_snapshot(Ctl *ctl, int argc, char **argv)
{
	return run_group(ctl, "snapshot", snapshot_cmds, ARRAY_SIZE(snapshot_cmds), argc, argv);
}
