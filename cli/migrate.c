/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl migrate: drives both hsd of a live migration. The destination is
 * another hsd's API socket: a path, or ssh://[user@]host[/socket], reached
 * through an OpenSSH forward of that remote UNIX socket (no new listener,
 * no new credentials: ssh's own).
 *
 *   1. GET the VM from the source (its spec, paused or not);
 *   2. POST /v1/migrations/incoming on the destination: it defines the VM,
 *      starts QEMU waiting, and says where to send (and its NBD exports);
 *   3. POST /v1/vms/NAME/migrate on the source, then follow its progress;
 *   4. completed: once the destination says the VM runs there, confirm on
 *      the source (it lets its paused QEMU go and keeps a record); if the
 *      destination does not have it, abort (the source resumes);
 *      failed or cancelled: cancel the destination's incoming VM.
 * Ctrl-C cancels a migration under way. */
#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hsctl.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	interrupted = 1;
}

static void sleep_s(double s)
{
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Disk i of the VM stands on template tpl: 0 if the destination (dst)
 * has the same one (its virtual size and format; the content is not
 * compared), TEMPLATE_MISSING if it has none (the disk is then copied
 * whole), an exit code otherwise (said on stderr). */
#define TEMPLATE_MISSING (-1)
static int template_there(Ctl *src, Ctl *dst, const char *tpl, size_t i, const char *to)
{
	_cleanup_free_ char *tp = hs_strdup_printf("/v1/templates/%s", tpl);
	json_auto_t *here = NULL, *there = NULL;
	unsigned st = 0;
	HsError e = {0};
	int r = ctl_call(src, "GET", tp, NULL, &here);
	if (r)
		return r;
	if (hs_client_request(&dst->client, "GET", tp, NULL, &st, &there, &e) < 0)
		return ctl_report(dst, 0, NULL, &e);
	if (st == 404) {
		fprintf(stderr, "hsctl: migrate: %s has no template '%s': disk %zu is copied whole\n",
			to, tpl, i);
		return TEMPLATE_MISSING;
	}
	if (st != 200)
		return ctl_report(dst, st, there, NULL);
	static const char *const same[] = {"virtual_size", "format"};
	for (size_t k = 0; k < ARRAY_SIZE(same); k++)
		if (!json_equal(json_object_get(here, same[k]), json_object_get(there, same[k]))) {
			fprintf(stderr,
				"hsctl: migrate: template '%s' at %s is not the one disk %zu stands "
				"on here (its %s differs)\n",
				tpl, to, i, same[k]);
			return EXIT_HSD_ERROR;
		}
	return 0;
}

/* The destination: its Ctl, and the ssh forward behind it if any. */
typedef struct Dest {
	Ctl ctl;
	pid_t ssh;
	char local[108];
	char label[256];
	char host[256]; /* ssh: the remote host (the default stream address) */
} Dest;

static void dest_close(Dest *d)
{
	ctl_release(&d->ctl);
	if (d->ssh > 0) {
		kill(d->ssh, SIGTERM);
		waitpid(d->ssh, NULL, 0);
		d->ssh = 0;
	}
	if (d->local[0])
		unlink(d->local);
}

/* ssh://[user@]host[/socket]: ssh -L LOCAL:REMOTE, waiting for LOCAL. */
static int dest_open_ssh(Dest *d, const char *spec, double timeout)
{
	const char *rest = spec + strlen("ssh://");
	const char *slash = strchr(rest, '/');
	char target[256];
	size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
	if (!n || n >= sizeof(target)) {
		fprintf(stderr, "hsctl: migrate: --to %s: expected ssh://[user@]host[/socket]\n",
			spec);
		return EXIT_USAGE;
	}
	memcpy(target, rest, n);
	target[n] = '\0';
	const char *at = strchr(target, '@');
	snprintf(d->host, sizeof(d->host), "%s", at ? at + 1 : target);
	const char *remote = slash ? slash : "/run/hsd/hsd.sock";
	snprintf(d->local, sizeof(d->local), "/tmp/hsctl-%d.sock", (int)getpid());
	unlink(d->local);
	char fwd[512];
	snprintf(fwd, sizeof(fwd), "%s:%s", d->local, remote);
	pid_t pid = fork();
	if (pid < 0) {
		perror("hsctl: fork");
		return EXIT_HSD_ERROR;
	}
	if (pid == 0) {
		/* $HSCTL_SSH: the ssh command and options of your own ("ssh -F
		 * cfg", "ssh -i key"), split at spaces; default "ssh". */
		char *argv[48];
		size_t k = 0;
		char *cmd = getenv("HSCTL_SSH") ? strdup(getenv("HSCTL_SSH")) : NULL, *save = NULL;
		for (char *w = cmd ? strtok_r(cmd, " ", &save) : NULL; w && k < 32;
		     w = strtok_r(NULL, " ", &save))
			argv[k++] = w;
		if (!k)
			argv[k++] = (char *)"ssh";
		const char *fixed[] = {"-nNT", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
				       "-o", "StreamLocalBindUnlink=yes", "-L", fwd, target};
		for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
			argv[k++] = (char *)fixed[i];
		argv[k] = NULL;
		execvp(argv[0], argv);
		perror("hsctl: ssh");
		_exit(127);
	}
	d->ssh = pid;
	double until = now_s() + timeout;
	struct stat st;
	while (stat(d->local, &st) < 0) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			d->ssh = 0;
			fprintf(stderr, "hsctl: migrate: ssh to %s failed (exit %d)\n", target,
				WIFEXITED(status) ? WEXITSTATUS(status) : -1);
			return EXIT_UNREACHABLE;
		}
		if (now_s() > until) {
			fprintf(stderr, "hsctl: migrate: ssh to %s: no forward after %.0f s\n",
				target, timeout);
			return EXIT_UNREACHABLE;
		}
		sleep_s(0.05);
	}
	d->ctl.socket_path = strdup(d->local);
	return 0;
}

static int dest_open(Dest *d, const char *spec)
{
	memset(d, 0, sizeof(*d));
	d->ctl.client.fd = -1;
	snprintf(d->label, sizeof(d->label), "%s", spec);
	if (hs_str_has_prefix(spec, "ssh://"))
		return dest_open_ssh(d, spec, 20);
	if (spec[0] != '/') {
		fprintf(stderr,
			"hsctl: migrate: --to %s: the destination hsd's socket (an absolute path) "
			"or ssh://[user@]host[/socket]\n",
			spec);
		return EXIT_USAGE;
	}
	d->ctl.socket_path = strdup(spec);
	return 0;
}

static void migrate_usage(void)
{
	fputs("hsctl: usage: hsctl migrate NAME --to DEST [--storage shared|copy] [--address IP] "
	      "[--downtime MS] [--bandwidth RATE] [--multifd N] [--auto-converge] [--xbzrle] "
	      "[--tls] [--postcopy] [--timeout S]\n"
	      "       hsctl migrate NAME --cancel|--confirm|--abort\n",
	      stderr);
}

void ctl_fmt_migration(json_t *mig, char *buf, size_t size)
{
	json_t *p = json_object_get(mig, "progress");
	char sent[32], total[32], left[32], dirty[32];
	ctl_fmt_bytes((double)json_integer_value(json_object_get(p, "transferred_bytes")), sent,
		      sizeof(sent));
	ctl_fmt_bytes((double)json_integer_value(json_object_get(p, "total_bytes")), total,
		      sizeof(total));
	ctl_fmt_bytes((double)json_integer_value(json_object_get(p, "remaining_bytes")), left,
		      sizeof(left));
	ctl_fmt_bytes((double)json_integer_value(json_object_get(p, "dirty_bytes_per_s")), dirty,
		      sizeof(dirty));
	const char *err = json_string_value(json_object_get(mig, "error"));
	snprintf(buf, size,
		 "%s, %s of %s sent, %s left, dirtying %s/s, expected downtime %lld ms%s%s%s",
		 json_string_value(json_object_get(mig, "phase")), sent, total, left, dirty,
		 json_integer_value(json_object_get(p, "expected_downtime_ms")),
		 json_is_true(json_object_get(mig, "postcopy_active")) ? ", post-copy" : "",
		 err ? ": " : "", err ? err : "");
}

/* One progress line: "web1: active, 120.0 MiB of 512.0 MiB sent, 80.0 MiB
 * left, dirtying 1.2 MiB/s, expected downtime 12 ms". */
static void print_progress(const char *name, json_t *mig, bool tty)
{
	char line[512];
	ctl_fmt_migration(mig, line, sizeof(line));
	fprintf(stderr, "%s%s: %s%s", tty ? "\r" : "", name, line, tty ? "\033[K" : "\n");
}

/* The source's migration until it is over (or completed). */
static int follow(Ctl *src, const char *name, json_t **ret_mig)
{
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s/migration", name);
	bool tty = isatty(STDERR_FILENO);
	double last_print = 0;
	bool cancel_sent = false;
	unsigned late = 0;
	for (;;) {
		json_t *mig = NULL;
		int r = ctl_call(src, "GET", path, NULL, &mig);
		if (r)
			return r;
		const char *phase = json_string_value(json_object_get(mig, "phase"));
		json_int_t total = json_integer_value(
			json_object_get(json_object_get(mig, "progress"), "total_time_ms"));
		if (phase && !strcmp(phase, "completed") && total <= 0 && ++late < 20) {
			/* QEMU's final figures come a moment after "completed". */
			json_decref(mig);
			sleep_s(0.05);
			continue;
		}
		if (!phase || !strcmp(phase, "completed") || !strcmp(phase, "failed") ||
		    !strcmp(phase, "cancelled") || !strcmp(phase, "confirmed") ||
		    !strcmp(phase, "aborted")) {
			if (tty && last_print > 0)
				fputc('\n', stderr);
			*ret_mig = mig;
			return 0;
		}
		if (now_s() - last_print >= (tty ? 0.2 : 2.0)) {
			print_progress(name, mig, tty);
			last_print = now_s();
		}
		json_decref(mig);
		if (interrupted && !cancel_sent) {
			fprintf(stderr, "\nhsctl: migrate: interrupted: cancelling\n");
			json_t *j = NULL;
			ctl_call(src, "DELETE", path, NULL, &j);
			json_decref(j);
			cancel_sent = true;
		}
		sleep_s(0.1);
	}
}

/* The destination's VM running (or paused, as asked) within timeout. */
static bool dest_has_vm(Dest *d, const char *name, bool paused, double timeout)
{
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s", name);
	double until = now_s() + timeout;
	while (now_s() < until) {
		unsigned status = 0;
		json_t *j = NULL;
		HsError err = {0};
		if (!d->ctl.connected && ctl_connect(&d->ctl) != 0) {
			sleep_s(0.2);
			continue;
		}
		if (hs_client_request(&d->ctl.client, "GET", path, NULL, &status, &j, &err) < 0) {
			hs_client_close(&d->ctl.client); /* connect again */
			d->ctl.connected = false;
			sleep_s(0.2);
			continue;
		}
		const char *st = json_string_value(json_object_get(j, "state"));
		bool ok = status == 200 && st &&
			  !strcmp(st, paused ? "paused" : "running");
		bool gone = status == 404 || (st && (!strcmp(st, "stopped") ||
						      !strcmp(st, "crashed")));
		json_decref(j);
		if (ok)
			return true;
		if (gone)
			return false;
		sleep_s(0.05);
	}
	return false;
}

static int finish_action(Ctl *ctl, const char *name, const char *action)
{
	_cleanup_free_ char *path =
		!strcmp(action, "cancel")
			? hs_strdup_printf("/v1/vms/%s/migration", name)
			: hs_strdup_printf("/v1/vms/%s/migration/%s", name, action);
	json_auto_t *j = NULL;
	int r = ctl_call(ctl, !strcmp(action, "cancel") ? "DELETE" : "POST", path, NULL, &j);
	if (r)
		return r;
	if (ctl->json)
		ctl_print_json(j);
	else
		printf("%s: migration %s\n", name,
		       json_string_value(json_object_get(json_object_get(j, "migration"),
							 "phase"))
			       ?: action);
	return 0;
}

int cmd_migrate(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"to", required_argument, NULL, 't'},
		{"storage", required_argument, NULL, 's'},
		{"address", required_argument, NULL, 'a'},
		{"downtime", required_argument, NULL, 'd'},
		{"bandwidth", required_argument, NULL, 'b'},
		{"multifd", required_argument, NULL, 'm'},
		{"auto-converge", no_argument, NULL, 'c'},
		{"xbzrle", no_argument, NULL, 'x'},
		{"timeout", required_argument, NULL, 'T'},
		{"cancel", no_argument, NULL, 'C'},
		{"confirm", no_argument, NULL, 'F'},
		{"abort", no_argument, NULL, 'A'},
		{"tls", no_argument, NULL, 'S'},
		{"postcopy", no_argument, NULL, 'P'},
		{0},
	};
	const char *to = NULL, *storage = NULL, *address = NULL, *action = NULL;
	json_auto_t *req = json_object();
	unsigned long long v;
	int c;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 't':
			to = optarg;
			break;
		case 's':
			if (strcmp(optarg, "shared") && strcmp(optarg, "copy")) {
				fprintf(stderr, "hsctl: migrate: --storage: '%s' is not shared or "
						"copy\n",
					optarg);
				return EXIT_USAGE;
			}
			storage = optarg;
			break;
		case 'a':
			address = optarg;
			break;
		case 'd':
			if (ctl_parse_uint("--downtime", optarg, 60000, &v) < 0 || !v)
				return EXIT_USAGE;
			json_object_set_new(req, "downtime_ms", json_integer((json_int_t)v));
			break;
		case 'b': {
			uint64_t b;
			if (hs_parse_size(optarg, &b) < 0) {
				fprintf(stderr, "hsctl: migrate: --bandwidth: '%s' is not a rate in "
						"bytes/s (100M, 1G)\n",
					optarg);
				return EXIT_USAGE;
			}
			json_object_set_new(req, "bandwidth", json_integer((json_int_t)b));
			break;
		}
		case 'm':
			if (ctl_parse_uint("--multifd", optarg, 32, &v) < 0)
				return EXIT_USAGE;
			json_object_set_new(req, "multifd", json_integer((json_int_t)v));
			break;
		case 'c':
			json_object_set_new(req, "auto_converge", json_true());
			break;
		case 'x':
			json_object_set_new(req, "xbzrle", json_true());
			break;
		case 'S':
			json_object_set_new(req, "tls", json_true());
			break;
		case 'P':
			json_object_set_new(req, "postcopy", json_true());
			break;
		case 'T':
			if (ctl_parse_uint("--timeout", optarg, 86400, &v) < 0 || !v)
				return EXIT_USAGE;
			json_object_set_new(req, "timeout_s", json_integer((json_int_t)v));
			break;
		case 'C':
		case 'F':
		case 'A':
			if (action) {
				migrate_usage();
				return EXIT_USAGE;
			}
			action = c == 'C' ? "cancel" : c == 'F' ? "confirm" : "abort";
			break;
		default:
			migrate_usage();
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || !ctl_is_name(argv[optind])) {
		migrate_usage();
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	if (action) {
		if (to) {
			fprintf(stderr, "hsctl: migrate: --%s goes to the source alone (no --to)\n",
				action);
			return EXIT_USAGE;
		}
		return finish_action(ctl, name, action);
	}
	if (!to) {
		fputs("hsctl: migrate: --to DEST is needed\n", stderr);
		migrate_usage();
		return EXIT_USAGE;
	}

	_cleanup_free_ char *vm_path = hs_strdup_printf("/v1/vms/%s", name);
	json_auto_t *vm = NULL;
	int r = ctl_call(ctl, "GET", vm_path, NULL, &vm);
	if (r)
		return r;
	const char *state = json_string_value(json_object_get(vm, "state"));
	bool paused = state && !strcmp(state, "paused");
	if (!storage) {
		/* A disk hsd keeps moves by copy; files given by path need the
		 * same path on the destination. */
		storage = "shared";
		size_t i;
		json_t *d;
		json_array_foreach (json_object_get(json_object_get(vm, "spec"), "disks"), i, d)
			if (!json_object_get(d, "path"))
				storage = "copy";
	}

	static Dest dest;
	r = dest_open(&dest, to);
	if (r) {
		dest_close(&dest);
		return r;
	}
	/* An ssh host given as an IP address is where the stream goes too;
	 * a name leaves it to the destination's --migration-address. */
	unsigned char ipbuf[16];
	if (!address && dest.host[0] && (inet_pton(AF_INET, dest.host, ipbuf) == 1 ||
					 inet_pton(AF_INET6, dest.host, ipbuf) == 1))
		address = dest.host;
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	/* The destination runs the versioned machine the source runs (not a
	 * newer one an alias like "q35" may mean there), and checks its QEMU
	 * and CPU against the source's. */
	json_auto_t *spec = json_deep_copy(json_object_get(vm, "spec"));
	json_t *mt = json_object_get(vm, "machine_type");
	if (json_is_string(mt))
		json_object_set(spec, "machine", mt);
	/* Copied storage: a file given by path becomes, at the destination, a
	 * disk hsd keeps, of the same size (the source mirrors all of it). So
	 * does a disk over a template the destination lacks (a warm template's
	 * image, say): the whole disk is copied, flattened. With the template
	 * there, only the VM's layer is; a template of that name but another
	 * size or format is refused (it cannot be the same one). */
	json_auto_t *full_copy = json_array();
	if (!strcmp(storage, "copy")) {
		size_t i;
		json_t *d;
		if (ctl_connect(&dest.ctl) < 0) {
			dest_close(&dest);
			return EXIT_UNREACHABLE;
		}
		json_array_foreach (json_object_get(spec, "disks"), i, d) {
			const char *tpl = json_string_value(json_object_get(d, "template"));
			if (tpl) {
				r = template_there(ctl, &dest.ctl, tpl, i, to);
				if (r == 0)
					continue; /* only the VM's layer crosses */
				if (r != TEMPLATE_MISSING) {
					dest_close(&dest);
					return r;
				}
				json_array_append_new(full_copy, json_integer((json_int_t)i));
			} else if (!json_object_get(d, "path")) {
				continue;
			}
			json_int_t size = json_integer_value(
				json_array_get(json_object_get(vm, "disk_sizes"), i));
			if (size <= 0) {
				fprintf(stderr,
					"hsctl: migrate: the size of VM '%s''s disk %zu is not known "
					"(is it running?)\n",
					name, i);
				dest_close(&dest);
				return EXIT_HSD_ERROR;
			}
			if (!tpl && json_is_true(json_object_get(d, "readonly"))) {
				fprintf(stderr,
					"hsctl: migrate: disk %zu (%s) is read-only: --storage copy "
					"moves writable disks; give the destination the same file and "
					"use --storage shared\n",
					i, json_string_value(json_object_get(d, "path")));
				dest_close(&dest);
				return EXIT_USAGE;
			}
			json_t *nd = json_pack("{s:I}", "size", size);
			if (json_object_get(d, "limits"))
				json_object_set(nd, "limits", json_object_get(d, "limits"));
			json_array_set_new(json_object_get(spec, "disks"), i, nd);
		}
	}
	json_auto_t *src_host = NULL;
	if (ctl_call(ctl, "GET", "/v1/host", NULL, &src_host)) {
		dest_close(&dest);
		return EXIT_HSD_ERROR;
	}
	json_auto_t *in = json_pack("{s:O, s:s, s:b, s:s, s:{s:O?, s:O?}}", "spec", spec,
				    "storage", storage, "paused", paused, "from",
				    host[0] ? host : "source", "source_host", "qemu_version",
				    json_object_get(json_object_get(src_host, "qemu"), "version"),
				    "cpu_model",
				    json_object_get(json_object_get(src_host, "cpu"), "model"));
	if (address)
		json_object_set_new(in, "address", json_string(address));
	static const char *const both[] = {"multifd", "tls", "postcopy"};
	for (size_t i = 0; i < ARRAY_SIZE(both); i++)
		if (json_object_get(req, both[i]))
			json_object_set(in, both[i], json_object_get(req, both[i]));
	json_auto_t *ans = NULL;
	unsigned dst_status = 0;
	HsError herr = {0};
	if (ctl_connect(&dest.ctl) < 0) {
		dest_close(&dest);
		return EXIT_UNREACHABLE;
	}
	r = hs_client_request(&dest.ctl.client, "POST", "/v1/migrations/incoming", in, &dst_status,
			      &ans, &herr);
	const char *emsg = json_string_value(
		json_object_get(json_object_get(ans, "error"), "message"));
	if (r == 0 && dst_status == 400 && emsg && strstr(emsg, "'source_host'")) {
		/* An older hsd there: without the host check it does not know. */
		json_object_del(in, "source_host");
		json_decref(ans);
		ans = NULL;
		r = hs_client_request(&dest.ctl.client, "POST", "/v1/migrations/incoming", in,
				      &dst_status, &ans, &herr);
	}
	r = r < 0 ? ctl_report(&dest.ctl, 0, NULL, &herr)
		  : dst_status >= 300 ? ctl_report(&dest.ctl, dst_status, ans, NULL) : 0;
	if (r) {
		fprintf(stderr, "hsctl: migrate: the destination (%s) refused VM '%s'\n", to, name);
		dest_close(&dest);
		return r;
	}
	json_object_set(req, "uri", json_object_get(ans, "uri"));
	json_object_set_new(req, "to", json_string(to));
	json_object_set_new(req, "storage", json_string(storage));
	if (json_object_get(ans, "nbd"))
		json_object_set(req, "nbd", json_object_get(ans, "nbd"));
	if (json_array_size(full_copy))
		json_object_set(req, "full_copy", full_copy);
	json_object_del(json_object_get(req, "nbd"), "disks");

	struct sigaction sa = {.sa_handler = on_sigint}, old_int, old_term;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	_cleanup_free_ char *mpath = hs_strdup_printf("/v1/vms/%s/migrate", name);
	_cleanup_free_ char *incoming = hs_strdup_printf("/v1/migrations/incoming/%s", name);
	json_auto_t *started = NULL;
	double t0 = now_s();
	r = ctl_call(ctl, "POST", mpath, req, &started);
	json_t *mig = NULL;
	if (!r)
		r = follow(ctl, name, &mig);
	const char *phase = json_string_value(json_object_get(mig, "phase"));
	if (r || !phase || strcmp(phase, "completed")) {
		/* Not there: the destination lets its waiting VM go. */
		json_t *j = NULL;
		HsError e = {0};
		unsigned st;
		if (dest.ctl.connected || ctl_connect(&dest.ctl) == 0)
			hs_client_request(&dest.ctl.client, "DELETE", incoming, NULL, &st, &j, &e);
		json_decref(j);
		if (!r)
			fprintf(stderr, "hsctl: migrate: VM '%s' stays here: migration %s%s%s\n",
				name, phase ? phase : "ended",
				json_object_get(mig, "error") ? ": " : "",
				json_string_value(json_object_get(mig, "error")) ?: "");
		json_decref(mig);
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
		dest_close(&dest);
		return r ? r : EXIT_HSD_ERROR;
	}
	double total = now_s() - t0;
	json_t *p = json_object_get(mig, "progress");
	json_int_t downtime = json_integer_value(json_object_get(p, "downtime_ms"));
	double sent = (double)json_integer_value(json_object_get(p, "transferred_bytes"));
	json_decref(mig);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);

	/* The destination has the whole state: the VM must run there now. */
	if (!dest_has_vm(&dest, name, paused, 60)) {
		fprintf(stderr,
			"hsctl: migrate: the destination does not run VM '%s' after the "
			"switchover: resuming it here\n",
			name);
		int ar = finish_action(ctl, name, "abort");
		dest_close(&dest);
		return ar ? ar : EXIT_HSD_ERROR;
	}
	_cleanup_free_ char *cpath = hs_strdup_printf("/v1/vms/%s/migration/confirm", name);
	json_auto_t *done = NULL;
	r = ctl_call(ctl, "POST", cpath, NULL, &done);
	dest_close(&dest);
	if (r) {
		fprintf(stderr,
			"hsctl: migrate: VM '%s' runs at %s, but the source did not take the "
			"confirmation: run 'hsctl migrate %s --confirm' there\n",
			name, to, name);
		return r;
	}
	char sb[32];
	ctl_fmt_bytes(sent, sb, sizeof(sb));
	if (ctl->json)
		ctl_print_json(done);
	else
		printf("%s: migrated to %s in %.2f s (downtime %lld ms, %s sent)\n", name, to,
		       total, downtime, sb);
	return 0;
}
