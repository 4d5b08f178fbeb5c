/* SPDX-License-Identifier: Apache-2.0 */
/* hsd: main, paths, the listening socket, signals. */
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "hsd.h"
#include "cgroup.h"
#include "storage.h"
#include "warm.h"
#include "tool.h"
#include "options.h"
#include "sandbox.h"
#include "ticket.h"

int hsd_log_level = 6;

void hsd_log(int prio, const char *fmt, ...)
{
	if (prio > hsd_log_level)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* <N> prefixes are journald priorities. */
	fprintf(stderr, "<%d>%s\n", prio, buf);
}

/* systemd's readiness protocol (Type=notify), without libsystemd: one
 * datagram to $NOTIFY_SOCKET. */
static void sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
		return;
	size_t n = strlen(path);
	memcpy(sa.sun_path, path, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
		log_warning("cannot notify systemd at %s: %m", path);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_info("signal %d: stopping hsd (VMs keep running)", w->signum);
	ev_break(loop, EVBREAK_ALL);
}

static void on_spawner(struct ev_loop *loop, ev_io *w, int revents)
{
	Hsd *h = w->data;
	if (spawner_dispatch(&h->spawner, vm_spawner_exit, h) < 0) {
		log_error("the QEMU spawner died: VMs can no longer be started; restart hsd (running "
			  "VMs keep running and are re-adopted)");
		ev_io_stop(loop, w);
	}
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
	events_heartbeat(w->data);
}

static char *find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	_cleanup_free_ char *copy = strdup(path);
	char *save = NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *p = hs_strdup_printf("%s/%s", d, name);
		if (p && access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

static int listen_api(const char *path, HsError *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path) >= (int)sizeof(sa.sun_path))
		return hs_error_set(err, -ENAMETOOLONG, "internal", "socket path too long: %s",
				    path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hs_error_set(err, -errno, "internal", "socket: %m");
	/* The state lock already guarantees no other hsd owns this socket. */
	unlink(path);
	mode_t old = umask(0117);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		return hs_error_set(err, -errno, "internal", "cannot bind %s: %m", path);
	chmod(path, 0660);
	if (listen(fd, 512) < 0)
		return hs_error_set(err, -errno, "internal", "listen: %m");
	return TAKE_FD(fd);
}

/* An explicitly named group must exist; the default one may not. */
static int resolve_group(const char *name, const char *dflt, bool *ret_has, gid_t *ret_gid)
{
	struct group *g = getgrnam(name ? name : dflt);
	*ret_has = g != NULL;
	if (g)
		*ret_gid = g->gr_gid;
	else if (name) {
		log_error("group '%s' does not exist", name);
		return -ENOENT;
	}
	return 0;
}

static int load_cb(const char *name, VmSpec *spec, const VmStatus *status, void *ud)
{
	int r = vm_load(ud, spec, status);
	if (r < 0)
		vm_spec_clear(spec);
	return r;
}

static void load_bad(const char *name, const char *why, void *ud)
{
	log_error("vm %s: cannot load its definition (%s); left untouched on disk", name, why);
}

/* Frees what main's Hsd owns, on every way out of main. */
static void hsd_release(Hsd *h)
{
	free(h->state_dir);
	free(h->run_dir);
	free(h->memory_dir);
	free(h->ovmf_dir);
	free(h->swtpm);
	free(h->socket_path);
	allowed_dirs_clear(&h->allowed);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: hsd [OPTIONS]\n"
		   "  --config FILE       settings as 'key = value' lines, keys named like the\n"
		   "                      options below (default: " HSD_DEFAULT_CONFIG " if it\n"
		   "                      exists); options given here win; SIGHUP reloads\n"
		   "  --state-dir DIR     VM definitions (root: /var/lib/hsd; user: "
		   "$XDG_STATE_HOME/hsd)\n"
		   "  --run-dir DIR       sockets and pidfiles (root: /run/hsd; user: "
		   "$XDG_RUNTIME_DIR/hsd)\n"
		   "  --socket PATH       API socket (default: RUN_DIR/hsd.sock)\n"
		   "  --qemu PATH         qemu-system-x86_64 to run (default: from $PATH)\n"
		   "  --stop-timeout SEC  ACPI shutdown wait before forcing (default 60)\n"
		   "  --qmp-timeout SEC   per QMP command (default 10)\n"
		   "  --qemu-user USER    run QEMU as USER (root: default hsd-qemu, created if\n"
		   "                      missing; 'root' keeps QEMU as root, not advised)\n"
		   "  --allowed-dir DIR   VM files (kernels, disks) may be beneath DIR; repeatable\n"
		   "                      (always STATE_DIR/images; non-root hsd: / by default)\n"
		   "  --api-group GROUP   members may use the API (default: hsd, if it exists)\n"
		   "  --admin-group GROUP members may also use QMP passthrough (default:\n"
		   "                      hsd-admin, if it exists); root always may\n"
		   "  --no-seccomp        do not confine hsd with its seccomp allowlist\n"
		   "  --ksm-mode MODE     auto (default: hsd tunes KSM), off, or fixed (values set\n"
		   "                      with PUT /v1/ksm); a saved API setting wins\n"
		   "  --balloon-policy M  auto: take memory from guests with a balloon floor\n"
		   "                      while the host is short of it; off (default); a saved\n"
		   "                      API setting wins\n"
		   "  --balloon-low SIZE  pressure starts below this MemAvailable (default 10 %%\n"
		   "                      of MemTotal; MiB or 2G...)\n"
		   "  --balloon-high SIZE pressure ends above this (default 15 %% of MemTotal)\n"
		   "  --balloon-stats-interval S\n"
		   "                      guests report memory stats every S s (default 5)\n"
		   "  --overcommit RATIO  guest memory of running VMs may reach RATIO x host\n"
		   "                      memory (default 3.0); KSM makes up the difference\n"
		   "  --pacing-timeout S  a start waits up to S s for memory (default 120)\n"
		   "  --tcg-tb-size MiB   TCG translation buffer per TCG VM (default 12; 0:\n"
		   "                      QEMU's default, up to 1 GiB, none of it mergeable)\n"
		   "  --migration-address IP  incoming migrations listen on IP (default: the\n"
		   "                      address each request names)\n"
		   "  --migration-ports LO-HI  their TCP ports (default 49152-49215)\n"
		   "  --spice-ports LO-HI  TCP ports of SPICE servers of VMs whose display has\n"
		   "                      a listen address (default 5900-5999)\n"
		   "  --migration-tls-dir DIR  certificates for TLS migrations (QEMU's\n"
		   "                      tls-creds-x509: ca-cert.pem, server-*.pem, client-*.pem)\n"
		   "  --memory-dir DIR    guest RAM files of memory_file VMs (default\n"
		   "                      RUN_DIR/memory; best on tmpfs)\n"
		   "  --web-listen ADDR:PORT  the web console (SPICE and serial in a browser) on\n"
		   "                      TCP, e.g. 127.0.0.1:8006 (default: off); see\n"
		   "                      docs/operations.md before exposing it\n"
		   "  --spice-html5-dir DIR  spice-html5's files (default " WEB_SPICE_HTML5_DIR ")\n"
		   "  --ovmf-dir DIR      OVMF's 4M images for UEFI VMs (default " FW_OVMF_DIR ")\n"
		   "  --swtpm PATH        swtpm, for VMs with a TPM (default " FW_SWTPM ")\n"
		   "  --web-assets DIR    xterm.js's files (xterm.mjs, xterm.css), for the serial\n"
		   "                      console page\n"
		   "  --cgroup-base PATH  VMs' cgroups go under PATH on the cgroup2 mount\n"
		   "                      (default: hsd's delegated group, else \"hsd\")\n"
		   "  --sysfs-root DIR    where sys/ and proc/ are read (default /; for tests)\n"
		   "  -v, --verbose       debug logging\n"
		   "  --version\n");
}

static const struct option long_opts[] = {
	{"config", required_argument, NULL, 'C'},
	{"state-dir", required_argument, NULL, 'L'},
	{"run-dir", required_argument, NULL, 'L'},
	{"socket", required_argument, NULL, 'L'},
	{"qemu", required_argument, NULL, 'L'},
	{"stop-timeout", required_argument, NULL, 'L'},
	{"qmp-timeout", required_argument, NULL, 'L'},
	{"sysfs-root", required_argument, NULL, 'L'},
	{"qemu-user", required_argument, NULL, 'L'},
	{"api-group", required_argument, NULL, 'L'},
	{"admin-group", required_argument, NULL, 'L'},
	{"allowed-dir", required_argument, NULL, 'L'},
	{"overcommit", required_argument, NULL, 'L'},
	{"ksm-mode", required_argument, NULL, 'L'},
	{"balloon-policy", required_argument, NULL, 'L'},
	{"balloon-low", required_argument, NULL, 'L'},
	{"balloon-high", required_argument, NULL, 'L'},
	{"balloon-stats-interval", required_argument, NULL, 'L'},
	{"pacing-timeout", required_argument, NULL, 'L'},
	{"tcg-tb-size", required_argument, NULL, 'L'},
	{"cgroup-base", required_argument, NULL, 'L'},
	{"migration-address", required_argument, NULL, 'L'},
	{"migration-ports", required_argument, NULL, 'L'},
	{"migration-tls-dir", required_argument, NULL, 'L'},
	{"spice-ports", required_argument, NULL, 'L'},
	{"memory-dir", required_argument, NULL, 'L'},
	{"web-listen", required_argument, NULL, 'L'},
	{"spice-html5-dir", required_argument, NULL, 'L'},
	{"web-assets", required_argument, NULL, 'L'},
	{"ovmf-dir", required_argument, NULL, 'L'},
	{"swtpm", required_argument, NULL, 'L'},
	{"no-seccomp", no_argument, NULL, 'L'},
	{"verbose", no_argument, NULL, 'v'},
	{"version", no_argument, NULL, 'V'},
	{"help", no_argument, NULL, 'h'},
	{0},
};

/* Built-in defaults, then the config file (if any), then the command line.
 * Returns 0, 1 (done: --help/--version), or an exit code + 2 on error. */
static int load_options(int argc, char **argv, HsdOptions *o, char **ret_config)
{
	const char *config = NULL;
	bool config_given = false;
	int c, idx;

	/* First pass: only --config, so the file comes before the options. */
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", long_opts, &idx)) >= 0)
		if (c == 'C') {
			config = optarg;
			config_given = true;
		}
	if (!config)
		config = HSD_DEFAULT_CONFIG;
	hsd_options_init(o);
	_cleanup_free_ char *text = NULL;
	int r = hs_read_file(AT_FDCWD, config, 1 << 20, &text, NULL);
	if (r == 0) {
		HsError err = {0};
		if (hsd_config_parse(text, config, o, &err) < 0) {
			fprintf(stderr, "hsd: %s\n", err.message);
			return 2 + 2;
		}
		*ret_config = strdup(config);
	} else if (r != -ENOENT || config_given) {
		fprintf(stderr, "hsd: cannot read %s: %s\n", config, strerror(-r));
		return 2 + 2;
	}

	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "vh", long_opts, &idx)) >= 0) {
		HsError err = {0};
		switch (c) {
		case 'C':
			break;
		case 'L':
			if (hsd_option_set(o, long_opts[idx].name, optarg, &err) < 0) {
				fprintf(stderr, "hsd: --%s\n", err.message);
				return 2 + 2;
			}
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'V':
			printf("hsd %s\n", HS_VERSION);
			return 1;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return 2 + 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2 + 2;
	}
	return 0;
}

/* SIGHUP: read the config again and apply what can change safely. */
static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
	Hsd *h = w->data;
	HsdOptions o;
	_cleanup_free_ char *cfg = NULL;
	if (load_options(h->argc, h->argv, &o, &cfg) != 0) {
		log_error("SIGHUP: configuration not reloaded (see the error above)");
		hsd_options_clear(&o);
		return;
	}
	h->default_stop_timeout = o.stop_timeout;
	h->qmp_timeout = o.qmp_timeout;
	h->overcommit = o.overcommit;
	h->pacing_timeout = o.pacing_timeout;
	h->tcg_tb_size = (unsigned)o.tcg_tb_size;
	free(h->migration_address);
	h->migration_address = o.migration_address ? strdup(o.migration_address) : NULL;
	h->migration_port_lo = o.migration_port_lo;
	h->migration_port_hi = o.migration_port_hi;
	h->spice_port_lo = o.spice_port_lo;
	h->spice_port_hi = o.spice_port_hi;
	free(h->migration_tls_dir);
	h->migration_tls_dir = o.migration_tls_dir ? strdup(o.migration_tls_dir) : NULL;
	hsd_log_level = o.verbose ? 7 : 6;
	/* Allowed dirs: STATE/images stays first. */
	while (h->allowed.n > 1)
		free(h->allowed.dirs[--h->allowed.n]);
	for (size_t i = 0; i < o.n_allowed; i++)
		allowed_dirs_add(&h->allowed, o.allowed[i]);
	if (!o.n_allowed && geteuid() != 0)
		allowed_dirs_add(&h->allowed, "/");
	/* Only a mode the file (or command line) names replaces the running
	 * one, which may have been set through the API. */
	if (o.ksm_mode_set && o.ksm_mode != h->ksm.config.mode) {
		json_auto_t *j = json_pack("{s:s}", "mode", ksm_mode_to_string(o.ksm_mode));
		HsError err = {0};
		if (ksm_tuner_configure(h, j, &err) < 0)
			log_error("SIGHUP: KSM mode: %s", err.message);
	}
	balloon_reload(h, &o);
	sd_notify_msg("READY=1");
	log_info("SIGHUP: reloaded %s: timeouts, overcommit, pacing, allowed dirs, KSM mode, "
		 "migration address and ports, SPICE ports, balloon policy, verbosity (paths, socket, users, groups and seccomp need a restart)",
		 cfg ? cfg : "(no config file)");
	hsd_options_clear(&o);
}

int main(int argc, char **argv)
{
	/* Static: hsd's one context, reachable for the whole process. */
	static Hsd h = {.run_vms_dirfd = -1, .audit_fd = -1, .spawner = {.fd = -1},
			.pci_claims_fd = -1, .memory_dirfd = -1};
	static HsdOptions o;
	_cleanup_free_ char *config_file = NULL;
	static char *qemu;

	int lr = load_options(argc, argv, &o, &config_file);
	if (lr == 1)
		return 0;
	if (lr > 1)
		return lr - 2;
	h.argc = argc;
	h.argv = argv;
	h.store.dirfd = -1;
	h.default_stop_timeout = o.stop_timeout;
	h.qmp_timeout = o.qmp_timeout;
	h.overcommit = o.overcommit;
	h.pacing_timeout = o.pacing_timeout;
	h.tcg_tb_size = (unsigned)o.tcg_tb_size;
	h.migration_address = o.migration_address ? strdup(o.migration_address) : NULL;
	h.migration_port_lo = o.migration_port_lo;
	h.migration_port_hi = o.migration_port_hi;
	h.spice_port_lo = o.spice_port_lo;
	h.spice_port_hi = o.spice_port_hi;
	h.migration_tls_dir = o.migration_tls_dir ? strdup(o.migration_tls_dir) : NULL;
	if (o.verbose)
		hsd_log_level = 7;
	h.state_dir = o.state_dir ? strdup(o.state_dir) : NULL;
	h.run_dir = o.run_dir ? strdup(o.run_dir) : NULL;
	h.memory_dir = o.memory_dir ? strdup(o.memory_dir) : NULL;
	h.ovmf_dir = strdup(o.ovmf_dir ? o.ovmf_dir : FW_OVMF_DIR);
	h.swtpm = strdup(o.swtpm ? o.swtpm : FW_SWTPM);
	h.socket_path = o.socket ? strdup(o.socket) : NULL;
	qemu = o.qemu ? strdup(o.qemu) : NULL;
	for (size_t i = 0; i < o.n_allowed; i++)
		allowed_dirs_add(&h.allowed, o.allowed[i]);
	const char *sysroot = o.sysroot ? o.sysroot : "/";
	const char *qemu_user = o.qemu_user;
	const char *api_group = o.api_group, *admin_group = o.admin_group;
	bool use_seccomp = o.seccomp;
	KsmMode ksm_mode = o.ksm_mode;

	if (geteuid() == 0) {
		if (!h.state_dir)
			h.state_dir = strdup("/var/lib/hsd");
		if (!h.run_dir)
			h.run_dir = strdup("/run/hsd");
	} else {
		const char *xs = getenv("XDG_STATE_HOME"), *xr = getenv("XDG_RUNTIME_DIR");
		const char *home = getenv("HOME");
		if (!h.state_dir)
			h.state_dir = xs ? hs_strdup_printf("%s/hsd", xs)
					 : hs_strdup_printf("%s/.local/state/hsd", home ? home : "");
		if (!h.run_dir) {
			if (!xr) {
				fprintf(stderr, "hsd: XDG_RUNTIME_DIR is not set; use --run-dir\n");
				return 1;
			}
			h.run_dir = hs_strdup_printf("%s/hsd", xr);
		}
	}
	if (!h.socket_path)
		h.socket_path = hs_strdup_printf("%s/hsd.sock", h.run_dir);
	if (!h.memory_dir)
		h.memory_dir = hs_strdup_printf("%s/memory", h.run_dir);
	if (!qemu)
		qemu = getenv("HSD_QEMU") ? strdup(getenv("HSD_QEMU"))
					  : find_in_path("qemu-system-x86_64");
	if (!qemu) {
		log_error("qemu-system-x86_64 not found in $PATH (install qemu-system-x86 or use "
			  "--qemu)");
		return 1;
	}
	if (config_file)
		log_info("configuration from %s", config_file);
	h.api_uid = geteuid();

	int r = hs_mkdir_p(h.state_dir, 0700);
	if (r == 0)
		r = hs_mkdir_p(h.run_dir, 0755);
	if (r < 0) {
		log_error("cannot create %s or %s: %s", h.state_dir, h.run_dir, strerror(-r));
		return 1;
	}
	/* One hsd per state dir. */
	_cleanup_free_ char *lockpath = hs_strdup_printf("%s/hsd.lock", h.state_dir);
	_cleanup_close_ int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		log_error("another hsd is using %s", h.state_dir);
		return 1;
	}
	/* VM files live beneath allowed directories: hsd's own images dir,
	 * those given, and for an unprivileged hsd (which can open only what
	 * its user can anyway) everything. */
	{
		_cleanup_free_ char *images = hs_strdup_printf("%s/images", h.state_dir);
		bool explicit_dirs = h.allowed.n > 0;
		if (hs_mkdir_p(images, 0700) < 0 || allowed_dirs_add(&h.allowed, images) < 0 ||
		    (!explicit_dirs && geteuid() != 0 && allowed_dirs_add(&h.allowed, "/") < 0)) {
			log_error("cannot set up %s", images);
			return 1;
		}
		_cleanup_free_ char *list = allowed_dirs_join(&h.allowed);
		log_info("VM files allowed beneath: %s", list ? list : "?");
	}
	r = store_open(&h.store, h.state_dir);
	if (r < 0) {
		log_error("cannot open state dir %s: %s", h.state_dir, strerror(-r));
		return 1;
	}
	_cleanup_free_ char *runvms = hs_strdup_printf("%s/vms", h.run_dir);
	if (hs_mkdir_p(runvms, 0700) < 0 ||
	    (h.run_vms_dirfd = open(runvms, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		log_error("cannot open %s: %m", runvms);
		return 1;
	}

	/* Each VM holds a few descriptors: take the whole allowed limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	h.loop = ev_default_loop(EVFLAG_AUTO);
	h.host.rootfd = open(sysroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h.host.rootfd < 0) {
		log_error("cannot open --sysfs-root %s: %m", sysroot);
		return 1;
	}
	host_probe(&h.host, qemu);
	{
		/* cgroup v2: a group per VM where the host has one; without it
		 * everything else works (said once, here and in hsctl host). */
		HsError cerr = {0};
		h.has_cgroup = cgroup_host_open(h.host.rootfd, o.cgroup_base, &h.cgroup, &cerr) == 0;
		if (!h.has_cgroup)
			log_warning("no cgroups for VMs: %s", cerr.message);
		else if (h.cgroup.missing[0])
			log_warning("cgroup v2 at /%s/%s: %s", h.cgroup.mount, h.cgroup.base,
				    h.cgroup.missing);
	}
	if (geteuid() == 0 && !(qemu_user && !strcmp(qemu_user, "root"))) {
		HsError uerr = {0};
		if (qemu_user_resolve(qemu_user ? qemu_user : "hsd-qemu", true, &h.qemu_user,
				      &uerr) < 0) {
			log_error("%s", uerr.message);
			return 1;
		}
		host_check_kvm_for(&h.host, &h.qemu_user);
	} else if (geteuid() == 0) {
		log_warning("QEMU runs as root (--qemu-user root): a guest escaping QEMU owns the "
			    "host");
	} else if (qemu_user) {
		log_error("--qemu-user needs hsd to run as root");
		return 1;
	}
	log_info("hsd %s: QEMU %s (%s), KVM %s: %s", HS_VERSION, h.host.qemu_version, qemu,
		 h.host.kvm_usable ? "usable" : "not usable", h.host.kvm_reason);

	/* The spawner is forked now, small, before hsd confines itself. */
	{
		HsError serr = {0};
		if (spawner_start(&h.spawner, &serr) < 0) {
			log_error("%s", serr.message);
			return 1;
		}
		ev_io_init(&h.spawner_watch, on_spawner, h.spawner.fd, EV_READ);
		h.spawner_watch.data = &h;
		ev_io_start(h.loop, &h.spawner_watch);
	}
	{
		HsError serr = {0};
		if (storage_init(&h, &serr) < 0 || warm_init(&h, &serr) < 0) {
			log_error("%s", serr.message);
			return 1;
		}
	}
	{
		HsError perr = {0};
		if (hostdev_init(&h, sysroot, &perr) < 0) {
			log_error("%s", perr.message);
			return 1;
		}
	}
	h.tickets = ticket_store_new(NULL, NULL);
	if (!h.tickets) {
		log_error("out of memory");
		return 1;
	}
	r = store_load_all(&h.store, load_cb, load_bad, &h);
	if (r < 0) {
		log_error("cannot load VMs: %s", strerror(-r));
		return 1;
	}
	/* Devices a crash left bound for VMs whose QEMU is gone go back. */
	hostdev_recover(&h);
	{
		HsError nerr;
		if (network_init(&h, &nerr) < 0)
			log_warning("networks not loaded: %s", nerr.message);
	}

	if (resolve_group(api_group, "hsd", &h.has_api_group, &h.api_gid) < 0 ||
	    resolve_group(admin_group, "hsd-admin", &h.has_admin_group, &h.admin_gid) < 0)
		return 1;
	_cleanup_free_ char *audit = hs_strdup_printf("%s/audit.log", h.state_dir);
	h.audit_fd = open(audit, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (h.audit_fd < 0)
		log_warning("cannot open the audit log %s: %m", audit);

	ksm_tuner_init(&h, ksm_mode);
	balloon_init(&h, &o);
	metrics_init(&h);

	HsError err = {0};
	int lfd = listen_api(h.socket_path, &err);
	if (lfd < 0) {
		log_error("%s", err.message);
		return 1;
	}
	if (h.has_api_group && geteuid() == 0 && chown(h.socket_path, 0, h.api_gid) < 0)
		log_warning("cannot give %s to group %u: %m", h.socket_path, (unsigned)h.api_gid);
	HttpOptions hopts = {.answered = api_answered, .answered_ud = &h};
	h.http = http_server_new(h.loop, lfd, &hopts, api_handle, &h, &err);
	if (!h.http) {
		log_error("%s", err.message);
		return 1;
	}
	if (web_init(&h, &o, &err) < 0) {
		log_error("%s", err.message);
		return 1;
	}
	ev_signal_init(&h.sigterm, on_stop_signal, SIGTERM);
	ev_signal_start(h.loop, &h.sigterm);
	ev_signal_init(&h.sigint, on_stop_signal, SIGINT);
	ev_signal_start(h.loop, &h.sigint);
	ev_signal_init(&h.sighup, on_sighup, SIGHUP);
	h.sighup.data = &h;
	ev_signal_start(h.loop, &h.sighup);
	ev_timer_init(&h.heartbeat, on_heartbeat, 15., 15.);
	h.heartbeat.data = &h;
	ev_timer_start(h.loop, &h.heartbeat);

#if defined(__SANITIZE_ADDRESS__)
	/* LeakSanitizer needs ptrace and clone at exit. */
	if (use_seccomp)
		log_info("sanitizer build: seccomp allowlist not installed");
	use_seccomp = false;
#endif
	if (use_seccomp) {
		HsError serr = {0};
		if (hsd_seccomp_install(&serr) < 0) {
			log_error("%s", serr.message);
			return 1;
		}
		log_info("seccomp allowlist installed: no exec, fork, ptrace or mount from here on");
	}
	_cleanup_free_ char *pidfile = hs_strdup_printf("%s/hsd.pid", h.run_dir);
	{
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
		_cleanup_close_ int rfd = open(h.run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (rfd < 0 || hs_write_file_atomic(rfd, "hsd.pid", buf, (size_t)n, 0644) < 0)
			log_warning("cannot write %s", pidfile);
	}
	log_info("hsd ready: %u VMs, API on %s, state in %s", h.n_vms, h.socket_path,
		 h.state_dir);
	{
		char msg[64];
		snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%d", (int)getpid());
		sd_notify_msg(msg);
	}
	ev_run(h.loop, 0);

	h.stopping = true;
	sd_notify_msg("STOPPING=1");
	ksm_tuner_free(&h);
	balloon_free(&h);
	metrics_free(&h);
	vm_free_all(&h);
	h.tickets = ticket_store_free(h.tickets);
	tool_free_all(&h);
	warm_free(&h);
	storage_free(&h);
	hostdev_free(&h);
	network_free(&h);
	h.web = web_free(h.web);
	h.http = http_server_free(h.http);
	ev_io_stop(h.loop, &h.spawner_watch);
	spawner_stop(&h.spawner);
	unlink(h.socket_path);
	unlink(pidfile);
	store_close(&h.store);
	close(h.run_vms_dirfd);
	close(h.host.rootfd);
	if (h.audit_fd >= 0)
		close(h.audit_fd);
	ev_loop_destroy(h.loop);
	log_info("hsd stopped");
	hsd_release(&h);
	hsd_options_clear(&o);
	free(qemu);
	return 0;
}
