/* SPDX-License-Identifier: Apache-2.0 */
/* hs-vfio: binds PCI devices to vfio-pci for a VM and gives them back to
 * the host. hsd (single-threaded, never blocking) runs it as root through
 * its spawner for every bind and release; an operator may run it too.
 *
 *   hs-vfio [--root DIR] [--claims DIR] [--timeout SECONDS] COMMAND ...
 *     bind --vm NAME [--owner UID:GID] ADDR...
 *     release [--vm NAME] ADDR...
 *     release-vm NAME
 *     recover [--keep NAME]...
 *     check [--vm NAME] ADDR...
 *     list
 *
 * Exit 0: done. Exit 1: failed, with exactly one line on stderr,
 * "hs-vfio: KIND: MESSAGE" (KIND: not-found, no-iommu, device-busy,
 * host-device, group-not-viable, bind-failed, invalid, internal). Exit 2:
 * usage error. Commands that change anything hold an exclusive flock on the
 * claims directory, so two runs never interleave.
 *
 * Test hook: with HS_VFIO_FAULT=STEP in the environment the tool exits
 * with status 99 (_exit, nothing cleaned up) just before the bind or
 * release step STEP ("claim", "override", "unbind", "probe", "bound",
 * "release", "restore-override", "release-unbind", "release-probe",
 * "unclaim"): a crash at that point, for crash-recovery tests.
 *
 * Only libc: it also builds statically,
 *   cc -static -O2 -D_GNU_SOURCE -I common -I vfio vfio/hs-vfio.c vfio/vfio.c common/hs-util.c -o
 * hs-vfio */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hs-util.h"
#include "vfio.h"

#define USAGE                                                                                      \
	"usage: hs-vfio [--root DIR] [--claims DIR] [--timeout SECONDS] COMMAND ...\n"             \
	"  bind --vm NAME [--owner UID:GID] ADDR...\n"                                             \
	"  release [--vm NAME] ADDR...\n"                                                          \
	"  release-vm NAME\n"                                                                      \
	"  recover [--keep NAME]...\n"                                                             \
	"  check [--vm NAME] ADDR...\n"                                                            \
	"  list\n"

#define EXIT_USAGE 2

typedef struct Tool {
	int rootfd;
	int claimsfd; /* -1: no --claims */
	double timeout;
} Tool;

static const char *fault_step;

static void fault_hook(const char *step)
{
	if (!strcmp(step, fault_step))
		_exit(99);
}

static int usage(const char *what)
{
	fprintf(stderr, "hs-vfio: %s\n" USAGE, what);
	return EXIT_USAGE;
}

static int fail(const HsError *err)
{
	fprintf(stderr, "hs-vfio: %s: %s\n", err->kind, err->message);
	return EXIT_FAILURE;
}

/* argv[*i] as option `name` ("--vm NAME" or "--vm=NAME"): its value, with
 * *i moved past it; NULL when argv[*i] is another word. A missing value is
 * *missing = true. */
static const char *opt_value(char **argv, int argc, int *i, const char *name, bool *missing)
{
	size_t len = strlen(name);
	if (strncmp(argv[*i], name, len))
		return NULL;
	if (argv[*i][len] == '=')
		return argv[*i] + len + 1;
	if (argv[*i][len])
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	*i += 1;
	return argv[*i];
}

/* Every claim; none without --claims. */
static int read_claims(const Tool *t, VfioClaim **ret, size_t *n, HsError *err)
{
	*ret = NULL;
	*n = 0;
	int r = t->claimsfd < 0 ? 0 : vfio_claims_list(t->claimsfd, ret, n);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot read the claims: %s", strerror(-r));
	return 0;
}

/* The ADDR... words, canonical. */
static int parse_addrs(char **words, int n, VfioAddr *ret, HsError *err)
{
	for (int i = 0; i < n; i++)
		if (!vfio_addr_parse(words[i], ret[i]))
			return hs_error_set(err, -EINVAL, "invalid",
					    "'%s' is not a PCI address (like 0000:01:00.0)",
					    words[i]);
	return 0;
}

static const VfioClaim *claim_of(const VfioClaim *claims, size_t n, const char *addr)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(claims[i].addr, addr))
			return &claims[i];
	return NULL;
}

/* Whether `vm` (NULL: no VM, so any claim is in the way) may take addrs:
 * each device present, in an IOMMU group, not another VM's, not the boot
 * display; each group touched viable with addrs and what vm holds already,
 * and no device of it passed to another VM. */
static int check_set(const Tool *t, const char *vm, const VfioAddr *addrs, size_t n, HsError *err)
{
	_cleanup_free_ VfioClaim *claims = NULL;
	_cleanup_free_ VfioAddr *taking = NULL;
	_cleanup_free_ int *groups = NULL;
	size_t n_claims = 0, n_taking = 0;
	int r;

	if ((r = read_claims(t, &claims, &n_claims, err)) < 0)
		return r;
	taking = calloc(n + n_claims + 1, sizeof(*taking));
	groups = calloc(n + 1, sizeof(*groups));
	if (!taking || !groups)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	for (size_t i = 0; i < n; i++)
		memcpy(taking[n_taking++], addrs[i], sizeof(VfioAddr));
	for (size_t i = 0; vm && i < n_claims; i++)
		if (!strcmp(claims[i].vm, vm))
			memcpy(taking[n_taking++], claims[i].addr, sizeof(VfioAddr));

	for (size_t i = 0; i < n; i++) {
		VfioPciDev d;
		if ((r = vfio_device_check(t->rootfd, t->claimsfd, addrs[i], vm, &d, err)) < 0)
			return r;
		groups[i] = d.group;
	}
	for (size_t i = 0; i < n; i++) {
		char why[1200];
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			seen = seen || groups[j] == groups[i];
		if (seen)
			continue;
		for (size_t k = 0; k < n_claims; k++)
			if (claims[k].group == groups[i] && (!vm || strcmp(claims[k].vm, vm)))
				return hs_error_set(err, -EBUSY, "device-busy",
						    "IOMMU group %d is passed to VM '%s' (%s): a "
						    "group goes to one VM only",
						    groups[i], claims[k].vm, claims[k].addr);
		r = vfio_group_check(t->rootfd, groups[i], taking, n_taking, why, sizeof(why));
		if (r == -EBUSY)
			return hs_error_set(err, r, "group-not-viable", "%s", why);
		if (r < 0)
			return hs_error_set(err, r, "internal", "cannot read IOMMU group %d: %s",
					    groups[i], strerror(-r));
	}
	return 0;
}

/* The options of bind, check and release (--vm, and --owner where
 * owner is not NULL), up to the first word that is not one: *ret_i. 0 or
 * the usage exit status. */
static int sub_options(int argc, char **argv, const char **vm, const char **owner, int *ret_i)
{
	bool missing = false;
	const char *v;
	int i;
	for (i = 0; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if ((v = opt_value(argv, argc, &i, "--vm", &missing)))
			*vm = v;
		else if (owner && (v = opt_value(argv, argc, &i, "--owner", &missing)))
			*owner = v;
		else
			return usage(missing ? "an option is missing its value" : "unknown option");
	}
	*ret_i = i;
	return i == argc ? usage("no device address given") : 0;
}

static int cmd_check_or_bind(const Tool *t, bool bind, int argc, char **argv)
{
	const char *vm = NULL, *owner = NULL;
	long uid = -1, gid = -1;
	HsError err = {0};
	int i, r;

	if ((r = sub_options(argc, argv, &vm, bind ? &owner : NULL, &i)))
		return r;
	if (owner) {
		char *end;
		errno = 0;
		uid = strtol(owner, &end, 10);
		if (*end == ':')
			gid = strtol(end + 1, &end, 10);
		if (errno || *end || uid < 0 || gid < 0 || !strchr(owner, ':'))
			return usage("--owner wants UID:GID (numbers)");
	}
	if (bind && !vm)
		return usage("bind needs --vm NAME");
	size_t n = (size_t)(argc - i);
	/* One block: the addresses, then whether each was held before. */
	_cleanup_free_ VfioAddr *addrs = calloc(n, sizeof(*addrs) + sizeof(bool));
	if (!addrs)
		return usage("out of memory");
	bool *held = (bool *)(addrs + n);
	if (parse_addrs(argv + i, argc - i, addrs, &err) < 0 ||
	    check_set(t, vm, addrs, n, &err) < 0)
		return fail(&err);
	if (!bind)
		return EXIT_SUCCESS;

	VfioBindOpts opts = {.timeout = t->timeout, .owner_uid = uid, .owner_gid = gid};
	for (size_t k = 0; k < n; k++) {
		VfioClaim c;
		held[k] = vfio_claim_read(t->claimsfd, addrs[k], &c) == 0;
		if (vfio_bind(t->rootfd, t->claimsfd, addrs[k], vm, &opts, &err) < 0) {
			/* All or nothing: what this run bound goes back. */
			for (size_t j = 0; j < k; j++)
				if (!held[j])
					(void)vfio_release(t->rootfd, t->claimsfd, addrs[j], vm,
							   t->timeout, NULL);
			return fail(&err);
		}
	}
	return EXIT_SUCCESS;
}

/* Collects the failures of several releases into one error: the first
 * one's kind, every message. */
static void add_failure(HsError *all, size_t *n_failed, const HsError *e)
{
	if ((*n_failed)++ == 0) {
		*all = *e;
		return;
	}
	size_t len = strlen(all->message), room = sizeof(all->message) - len;
	if (room > 3) /* what does not fit is cut */
		snprintf(all->message + len, room, "; %.*s", (int)(room - 3), e->message);
}

static void release_one(const Tool *t, const char *addr, const char *vm, HsError *all,
			size_t *n_failed)
{
	HsError e = {0};
	if (vfio_release(t->rootfd, t->claimsfd, addr, vm, t->timeout, &e) < 0)
		add_failure(all, n_failed, &e);
}

static int cmd_release(const Tool *t, int argc, char **argv)
{
	const char *vm = NULL;
	HsError all = {0};
	size_t n_failed = 0;
	int i, r;

	if ((r = sub_options(argc, argv, &vm, NULL, &i)))
		return r;
	for (; i < argc; i++) {
		VfioAddr a;
		HsError e = {0};
		if (parse_addrs(argv + i, 1, &a, &e) < 0)
			add_failure(&all, &n_failed, &e);
		else
			release_one(t, a, vm, &all, &n_failed);
	}
	return n_failed ? fail(&all) : EXIT_SUCCESS;
}

static bool name_in(const char *name, char **names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(names[i], name))
			return true;
	return false;
}

/* Releases each claim whose VM is (`match`) or is not among names. */
static int release_claims(const Tool *t, char **names, int n_names, bool match)
{
	_cleanup_free_ VfioClaim *claims = NULL;
	size_t n, n_failed = 0;
	HsError all = {0};
	if (read_claims(t, &claims, &n, &all) < 0)
		return fail(&all);
	for (size_t i = 0; i < n; i++)
		if (name_in(claims[i].vm, names, n_names) == match)
			release_one(t, claims[i].addr, claims[i].vm, &all, &n_failed);
	return n_failed ? fail(&all) : EXIT_SUCCESS;
}

/* A temp file of a claim write whose process died before renaming or
 * linking it (".ADDR.new.PID", ".ADDR.tmp.PID"). */
static int remove_stale_temp(int dfd, const char *name, void *ud)
{
	const char *dot = strrchr(name, '.');
	char *end;
	if (name[0] != '.' || !dot || dot - name < 5)
		return 0;
	long pid = strtol(dot + 1, &end, 10);
	if (*end || pid <= 0 ||
	    (!hs_str_has_prefix(dot - 4, ".new") && !hs_str_has_prefix(dot - 4, ".tmp")))
		return 0;
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		(void)unlinkat(dfd, name, 0);
	return 0;
}

static int cmd_recover(const Tool *t, int argc, char **argv)
{
	bool missing = false;
	const char *v;
	_cleanup_free_ char **keep = calloc((size_t)argc + 1, sizeof(*keep));
	int n_keep = 0;
	if (!keep)
		return usage("out of memory");
	for (int i = 0; i < argc; i++) {
		if ((v = opt_value(argv, argc, &i, "--keep", &missing)))
			keep[n_keep++] = (char *)v;
		else
			return usage(missing ? "--keep is missing its value" : "unknown argument");
	}
	(void)hs_dir_foreach(t->claimsfd, ".", remove_stale_temp, NULL);
	return release_claims(t, keep, n_keep, false);
}

static int cmd_list(const Tool *t)
{
	_cleanup_free_ VfioPciDev *devs = NULL;
	_cleanup_free_ VfioClaim *claims = NULL;
	size_t n, n_claims = 0;
	HsError err = {0};
	int r = vfio_pci_list(t->rootfd, &devs, &n);
	if (r < 0) {
		hs_error_set(&err, r, "internal", "cannot list the PCI devices: %s", strerror(-r));
		return fail(&err);
	}
	if (read_claims(t, &claims, &n_claims, &err) < 0)
		return fail(&err);
	for (size_t i = 0; i < n; i++) {
		const VfioPciDev *d = &devs[i];
		const VfioClaim *c = claim_of(claims, n_claims, d->addr);
		char group[16] = "-";
		if (d->group >= 0)
			snprintf(group, sizeof(group), "%d", d->group);
		printf("%s\t%04x:%04x\t%06x\t%s\t%s\t%s\t%s\t%s\t%d\n", d->addr, d->vendor,
		       d->device, d->class_code, d->driver[0] ? d->driver : "-", group,
		       c ? c->vm : "-", c ? vfio_claim_state_to_string(c->state) : "-",
		       d->reset_methods[0] ? d->reset_methods : "-", d->boot_vga ? 1 : 0);
	}
	return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int open_claims(const char *path, bool lock, HsError *err)
{
	int r = hs_mkdir_p(path, 0700);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot create claims directory %s: %s",
				    path, strerror(-r));
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return hs_error_set(err, -errno, "internal", "cannot open claims directory %s: %s",
				    path, strerror(errno));
	if (lock && flock(fd, LOCK_EX) < 0) {
		r = -errno;
		close(fd);
		return hs_error_set(err, r, "internal", "cannot lock claims directory %s: %s", path,
				    strerror(-r));
	}
	return fd;
}

int main(int argc, char **argv)
{
	const char *root = "/", *claims = NULL, *v;
	Tool t = {.rootfd = -1, .claimsfd = -1, .timeout = 5};
	bool missing = false;
	HsError err = {0};
	int i;

	fault_step = getenv("HS_VFIO_FAULT");
	if (fault_step && *fault_step)
		vfio_step_hook = fault_hook;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if ((v = opt_value(argv, argc, &i, "--root", &missing)))
			root = v;
		else if ((v = opt_value(argv, argc, &i, "--claims", &missing)))
			claims = v;
		else if ((v = opt_value(argv, argc, &i, "--timeout", &missing))) {
			char *end;
			t.timeout = strtod(v, &end);
			if (end == v || *end || !(t.timeout > 0 && t.timeout <= 3600))
				return usage("--timeout wants seconds (0 < s <= 3600)");
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(USAGE, stdout);
			return EXIT_SUCCESS;
		} else
			return usage(missing ? "an option is missing its value" : "unknown option");
	}
	if (i == argc)
		return usage("no command given");
	const char *cmd = argv[i++];
	int sub_argc = argc - i;
	char **sub_argv = argv + i;

	bool list = !strcmp(cmd, "list"), check = !strcmp(cmd, "check");
	if (!list && !check && strcmp(cmd, "bind") && strcmp(cmd, "release") &&
	    strcmp(cmd, "release-vm") && strcmp(cmd, "recover"))
		return usage("unknown command");
	if (!list && !check && !claims)
		return usage("this command needs --claims DIR");

	t.rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t.rootfd < 0) {
		hs_error_set(&err, -errno, "invalid", "cannot open root %s: %s", root,
			     strerror(errno));
		return fail(&err);
	}
	if (claims && (t.claimsfd = open_claims(claims, !list && !check, &err)) < 0)
		return fail(&err);

	if (list)
		return sub_argc ? usage("list takes no arguments") : cmd_list(&t);
	if (check || !strcmp(cmd, "bind"))
		return cmd_check_or_bind(&t, !check, sub_argc, sub_argv);
	if (!strcmp(cmd, "release"))
		return cmd_release(&t, sub_argc, sub_argv);
	if (!strcmp(cmd, "release-vm")) {
		if (sub_argc != 1)
			return usage("release-vm takes one VM name");
		return release_claims(&t, sub_argv, 1, true);
	}
	return cmd_recover(&t, sub_argc, sub_argv);
}
