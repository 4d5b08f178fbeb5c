/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for QEMU argv building, on plain structs: the exact argv for
 * typical VMs, the accel/sandbox variants and option-injection attempts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "argv.h"

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	return d;
}

/* A kernel-boot TCG VM. */
static void spec_kernel_tcg(VmSpec *s)
{
	*s = (VmSpec){.cpus = 2, .memory_mib = 1024, .accel = VM_ACCEL_TCG};
	snprintf(s->name, sizeof(s->name), "vm1");
	s->machine = xstrdup("q35");
	s->kernel = xstrdup("/boot/vmlinuz");
	s->initrd = xstrdup("/boot/initrd.img");
	s->cmdline = xstrdup("console=ttyS0 root=/dev/vda rw");
}

/* Two disks (qcow2, raw read-only), a user and a bridge NIC, KVM. */
static void spec_disks_nics(VmSpec *s)
{
	*s = (VmSpec){.cpus = 4, .memory_mib = 4096, .accel = VM_ACCEL_KVM};
	snprintf(s->name, sizeof(s->name), "web-01");
	s->machine = xstrdup("pc-q35-7.2");
	s->cpu_model = xstrdup("host");
	s->disks[0] =
	    (VmDisk){.path = xstrdup("/var/lib/hs/web-01.qcow2"), .format = VM_DISK_QCOW2};
	s->disks[1] = (VmDisk){
	    .path = xstrdup("/var/lib/hs/seed.img"), .format = VM_DISK_RAW, .readonly = true};
	s->n_disks = 2;
	s->nics[0] = (VmNic){.id = "net0", .type = VM_NIC_USER, .mac = "52:54:00:00:00:01"};
	s->nics[1] =
	    (VmNic){.id = "net1", .type = VM_NIC_BRIDGE, .bridge = xstrdup("br0"),
		    .mac = "52:54:00:00:00:02"};
	s->n_nics = 2;
}

static const QemuLaunch launch_plain = {
    .binary = "/usr/bin/qemu-system-x86_64",
    .qmp_fd = 3,
    .serial_fd = 4,
    .serial_log = "/var/log/hs/vm1/serial.log",
    .sandbox = false,
};

static size_t strv_len(char *const *v)
{
	size_t n = 0;
	while (v[n])
		n++;
	return n;
}

static void assert_argv(char **got, const char *const *want, size_t n_want)
{
	size_t n = strv_len(got);
	bool same = n == n_want;
	for (size_t i = 0; same && i < n; i++)
		same = strcmp(got[i], want[i]) == 0;
	if (same)
		return;
	for (size_t i = 0; i < n || i < n_want; i++)
		print_error("%2zu %s %-60s | %s\n", i,
			    i < n && i < n_want && !strcmp(got[i], want[i]) ? " " : "!",
			    i < n ? got[i] : "(end)", i < n_want ? want[i] : "(end)");
	fail_msg("argv differs (got | want)");
}

/* Index of the value following option `opt` whose value starts with
 * `prefix`, or -1. */
static ssize_t find_opt(char **v, const char *opt, const char *prefix)
{
	for (size_t i = 0; v[i] && v[i + 1]; i++)
		if (!strcmp(v[i], opt) && hs_str_has_prefix(v[i + 1], prefix))
			return (ssize_t)i + 1;
	return -1;
}

static size_t count_arg(char **v, const char *arg)
{
	size_t n = 0;
	for (size_t i = 0; v[i]; i++)
		n += !strcmp(v[i], arg);
	return n;
}

/* QEMU's option-list splitting: the values of `key=` in `opts`, with ',,'
 * unescaped, as QEMU's get_opt_value() would read them. Returns how many
 * times the key appears; *ret_first gets the first value. */
static size_t qemu_opt_values(const char *opts, const char *key, char **ret_first)
{
	size_t count = 0, klen = strlen(key);
	*ret_first = NULL;
	const char *p = opts;
	while (*p) {
		/* One element: up to a ',' that is not ',,'. */
		char *val = malloc(strlen(p) + 1), *q = val;
		assert_non_null(val);
		while (*p) {
			if (*p == ',') {
				if (p[1] != ',')
					break;
				p++;
			}
			*q++ = *p++;
		}
		*q = '\0';
		if (*p == ',')
			p++;
		if (!strncmp(val, key, klen) && val[klen] == '=') {
			if (count++ == 0)
				*ret_first = strdup(val + klen + 1);
		}
		free(val);
	}
	return count;
}

static void test_kernel_tcg(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	/* clang-format off */
	static const char *const want[] = {
		"/usr/bin/qemu-system-x86_64",
		"-name", "guest=vm1,debug-threads=on",
		"-nodefaults",
		"-no-user-config",
		"-S",
		"-no-shutdown",
		"-machine", "q35",
		"-accel", "tcg",
		"-m", "1024M",
		"-smp", "2",
		"-display", "none",
		"-chardev", "socket,id=hs-qmp,fd=3,server=on,wait=off",
		"-mon", "chardev=hs-qmp,mode=control",
		"-chardev", ("socket,id=hs-serial0,fd=4,server=on,wait=off,"
			    "logfile=/var/log/hs/vm1/serial.log,logappend=on"),
		"-serial", "chardev:hs-serial0",
		"-kernel", "/boot/vmlinuz",
		"-initrd", "/boot/initrd.img",
		"-append", "console=ttyS0 root=/dev/vda rw",
		"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
	};
	/* clang-format on */
	assert_argv(v, want, ARRAY_SIZE(want));
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_disks_nics_kvm(void **state)
{
	VmSpec s;
	spec_disks_nics(&s);
	QemuLaunch l = {
	    .binary = "qemu-system-x86_64",
	    .qmp_fd = 7,
	    .serial_fd = 9,
	    .serial_log = NULL,
	    .sandbox = true,
	};
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	/* clang-format off */
	static const char *const want[] = {
		"qemu-system-x86_64",
		"-name", "guest=web-01,debug-threads=on",
		"-nodefaults",
		"-no-user-config",
		"-S",
		"-no-shutdown",
		"-machine", "pc-q35-7.2",
		"-accel", "kvm",
		"-cpu", "host",
		"-m", "4096M",
		"-smp", "4",
		"-display", "none",
		"-sandbox", ("on,obsolete=deny,elevateprivileges=deny,spawn=allow,"
			    "resourcecontrol=deny"),
		"-chardev", "socket,id=hs-qmp,fd=7,server=on,wait=off",
		"-mon", "chardev=hs-qmp,mode=control",
		"-chardev", "socket,id=hs-serial0,fd=9,server=on,wait=off",
		"-serial", "chardev:hs-serial0",
		"-blockdev", ("driver=file,node-name=hs-file0,filename=/var/lib/hs/web-01.qcow2,"
			     "read-only=off,cache.direct=off,discard=unmap"),
		"-blockdev", ("driver=qcow2,node-name=hs-disk0,file=hs-file0,read-only=off,"
			     "discard=unmap"),
		"-device", "virtio-blk-pci,drive=hs-disk0,id=disk0,bootindex=1",
		"-blockdev", ("driver=file,node-name=hs-file1,filename=/var/lib/hs/seed.img,"
			     "read-only=on,cache.direct=off,discard=unmap"),
		"-blockdev", ("driver=raw,node-name=hs-disk1,file=hs-file1,read-only=on,"
			     "discard=unmap"),
		"-device", "virtio-blk-pci,drive=hs-disk1,id=disk1",
		"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
		"-netdev", "user,id=hs-net0",
		"-device", "virtio-net-pci,netdev=hs-net0,id=net0,mac=52:54:00:00:00:01",
		"-netdev", "bridge,id=hs-net1,br=br0",
		"-device", "virtio-net-pci,netdev=hs-net1,id=net1,mac=52:54:00:00:00:02",
	};
	/* clang-format on */
	assert_argv(v, want, ARRAY_SIZE(want));
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_accel(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	char **v = NULL;

	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_true(find_opt(v, "-accel", "tcg") > 0);
	assert_int_equal(count_arg(v, "-cpu"), 0);
	strv_free(v);

	/* A bounded TCG translation buffer when asked. */
	QemuLaunch tb = launch_plain;
	tb.tcg_tb_size_mib = 16;
	assert_int_equal(qemu_argv_build(&s, &tb, &v), 0);
	assert_true(find_opt(v, "-accel", "tcg,tb-size=16") > 0);
	strv_free(v);

	/* KVM: no -cpu unless asked (QEMU's model is the migration-safe one). */
	s.accel = VM_ACCEL_KVM;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_true(find_opt(v, "-accel", "kvm") > 0);
	assert_int_equal(count_arg(v, "-accel"), 1);
	assert_int_equal(count_arg(v, "-cpu"), 0);
	strv_free(v);

	s.cpu_model = xstrdup("EPYC-v4,+pdpe1gb,-svm");
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_int_equal(count_arg(v, "-cpu"), 1);
	assert_true(find_opt(v, "-cpu", "EPYC-v4,+pdpe1gb,-svm") > 0);
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_sandbox(void **state)
{
	VmSpec s;
	QemuLaunch l = launch_plain;
	char **v = NULL;
	ssize_t i;

	/* Off: no -sandbox at all. */
	spec_disks_nics(&s);
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(count_arg(v, "-sandbox"), 0);
	strv_free(v);

	/* On with a bridge NIC: spawn allowed (qemu-bridge-helper). */
	l.sandbox = true;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(count_arg(v, "-sandbox"), 1);
	i = find_opt(v, "-sandbox", "on,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], "spawn=allow"));
	strv_free(v);

	/* On with only user NICs: spawn denied. */
	s.nics[1].type = VM_NIC_USER;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	i = find_opt(v, "-sandbox", "on,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], "spawn=deny"));
	assert_null(strstr(v[i], "spawn=allow"));
	strv_free(v);
	vm_spec_clear(&s);

	/* On with no NIC at all: denied too. */
	spec_kernel_tcg(&s);
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	i = find_opt(v, "-sandbox", "on,");
	assert_true(i > 0);
	assert_string_equal(v[i], "on,obsolete=deny,elevateprivileges=deny,spawn=deny,"
				  "resourcecontrol=deny");
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_always_paused_and_no_shutdown(void **state)
{
	VmSpec s;
	char **v = NULL;
	QemuLaunch l = launch_plain;

	for (int variant = 0; variant < 4; variant++) {
		if (variant % 2)
			spec_disks_nics(&s);
		else
			spec_kernel_tcg(&s);
		l.sandbox = variant >= 2;
		l.serial_log = variant >= 2 ? NULL : launch_plain.serial_log;
		assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
		assert_int_equal(count_arg(v, "-S"), 1);
		assert_int_equal(count_arg(v, "-no-shutdown"), 1);
		assert_int_equal(count_arg(v, "-nodefaults"), 1);
		assert_string_equal(v[0], l.binary);
		strv_free(v);
		vm_spec_clear(&s);
	}
}

static void test_fd_numbers(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	QemuLaunch l = launch_plain;
	l.qmp_fd = 1023;
	l.serial_fd = 0;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-chardev", "socket,id=hs-qmp,fd=1023,server=on,wait=off") > 0);
	assert_true(find_opt(v, "-chardev", "socket,id=hs-serial0,fd=0,server=on,wait=off") > 0);
	strv_free(v);
	vm_spec_clear(&s);
}

/* A value with commas must stay one value: QEMU reads ',,' as ','. */
static void test_commas_doubled(void **state)
{
	VmSpec s;
	spec_disks_nics(&s);
	free(s.disks[0].path);
	s.disks[0].path = xstrdup("/x,driver=raw");
	free(s.disks[1].path);
	s.disks[1].path = xstrdup("/y,,file.filename=/etc/shadow,");
	free(s.nics[1].bridge);
	s.nics[1].bridge = xstrdup("br0,helper=/tmp/evil");
	free(s.machine);
	s.machine = xstrdup("q35,accel=kvm,kernel-irqchip=off");
	/* Names can't hold commas (validated), but escaping is uniform. */
	snprintf(s.name, sizeof(s.name), "a,debug-threads=off");
	QemuLaunch l = launch_plain;
	l.serial_log = "/var/log/x,logappend=off";
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	_cleanup_free_ char *val = NULL;
	ssize_t i;

	i = find_opt(v, "-blockdev", "driver=file,node-name=hs-file0,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], "filename=/x,,driver=raw,"));
	assert_int_equal(qemu_opt_values(v[i], "driver", &val), 1);
	assert_string_equal(val, "file");
	free(TAKE_PTR(val));
	assert_int_equal(qemu_opt_values(v[i], "filename", &val), 1);
	assert_string_equal(val, "/x,driver=raw");
	free(TAKE_PTR(val));

	i = find_opt(v, "-blockdev", "driver=file,node-name=hs-file1,");
	assert_true(i > 0);
	assert_int_equal(qemu_opt_values(v[i], "filename", &val), 1);
	assert_string_equal(val, "/y,,file.filename=/etc/shadow,");
	free(TAKE_PTR(val));
	assert_int_equal(qemu_opt_values(v[i], "file.filename", &val), 0);
	assert_int_equal(qemu_opt_values(v[i], "read-only", &val), 1);
	assert_string_equal(val, "on");
	free(TAKE_PTR(val));

	i = find_opt(v, "-netdev", "bridge,");
	assert_true(i > 0);
	assert_string_equal(v[i], "bridge,id=hs-net1,br=br0,,helper=/tmp/evil");
	assert_int_equal(qemu_opt_values(v[i], "helper", &val), 0);
	assert_int_equal(qemu_opt_values(v[i], "br", &val), 1);
	assert_string_equal(val, "br0,helper=/tmp/evil");
	free(TAKE_PTR(val));

	i = find_opt(v, "-machine", "q35");
	assert_true(i > 0);
	assert_string_equal(v[i], "q35,,accel=kvm,,kernel-irqchip=off");
	assert_int_equal(qemu_opt_values(v[i], "accel", &val), 0);
	assert_int_equal(qemu_opt_values(v[i], "kernel-irqchip", &val), 0);

	i = find_opt(v, "-name", "guest=");
	assert_true(i > 0);
	assert_string_equal(v[i], "guest=a,,debug-threads=off,debug-threads=on");
	assert_int_equal(qemu_opt_values(v[i], "debug-threads", &val), 1);
	assert_string_equal(val, "on");
	free(TAKE_PTR(val));

	i = find_opt(v, "-chardev", "socket,id=hs-serial0,");
	assert_true(i > 0);
	assert_int_equal(qemu_opt_values(v[i], "logfile", &val), 1);
	assert_string_equal(val, "/var/log/x,logappend=off");
	free(TAKE_PTR(val));
	assert_int_equal(qemu_opt_values(v[i], "logappend", &val), 1);
	assert_string_equal(val, "on");
	free(TAKE_PTR(val));

	strv_free(v);
	vm_spec_clear(&s);
}

/* -kernel, -initrd and -append take plain strings: no doubling there. */
static void test_kernel_values_verbatim(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	free(s.kernel);
	s.kernel = xstrdup("/boot/vmlinuz,x");
	free(s.cmdline);
	s.cmdline = xstrdup("console=ttyS0,115200n8 quiet");
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_true(find_opt(v, "-kernel", "/boot/vmlinuz,x") > 0);
	assert_string_equal(v[find_opt(v, "-kernel", "/")], "/boot/vmlinuz,x");
	assert_string_equal(v[find_opt(v, "-append", "")], "console=ttyS0,115200n8 quiet");
	strv_free(v);

	/* Without a kernel there is no -kernel/-initrd/-append. */
	free(s.kernel);
	free(s.initrd);
	free(s.cmdline);
	s.kernel = s.initrd = s.cmdline = NULL;
	s.disks[0] = (VmDisk){.path = xstrdup("/d.img"), .format = VM_DISK_RAW};
	s.n_disks = 1;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_int_equal(count_arg(v, "-kernel"), 0);
	assert_int_equal(count_arg(v, "-initrd"), 0);
	assert_int_equal(count_arg(v, "-append"), 0);
	assert_true(find_opt(v, "-device", "virtio-blk-pci,drive=hs-disk0,id=disk0,bootindex=1") >
		    0);
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_many_disks_and_nics(void **state)
{
	VmSpec s = {.cpus = 1, .memory_mib = 512, .accel = VM_ACCEL_TCG};
	snprintf(s.name, sizeof(s.name), "big");
	s.machine = xstrdup("q35");
	for (size_t i = 0; i < VM_MAX_DISKS; i++)
		s.disks[i] = (VmDisk){.path = hs_strdup_printf("/d/%zu.img", i)};
	s.n_disks = VM_MAX_DISKS;
	for (size_t i = 0; i < VM_MAX_NICS; i++) {
		s.nics[i].type = VM_NIC_USER;
		snprintf(s.nics[i].id, sizeof(s.nics[i].id), "net%zu", i);
		snprintf(s.nics[i].mac, sizeof(s.nics[i].mac), "52:54:00:00:01:%02zx", i);
	}
	s.n_nics = VM_MAX_NICS;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_int_equal(count_arg(v, "-blockdev"), 2 * VM_MAX_DISKS);
	assert_int_equal(count_arg(v, "-netdev"), VM_MAX_NICS);
	assert_int_equal(count_arg(v, "-device"), VM_MAX_DISKS + VM_MAX_NICS + 1 /* balloon */);
	assert_true(find_opt(v, "-device", "virtio-blk-pci,drive=hs-disk15,id=disk15") > 0);
	assert_true(find_opt(v, "-device",
			     "virtio-net-pci,netdev=hs-net7,id=net7,mac=52:54:00:00:01:07") > 0);
	/* Only the first disk boots. */
	size_t boot = 0;
	for (size_t i = 0; v[i]; i++)
		boot += strstr(v[i], "bootindex=") != NULL;
	assert_int_equal(boot, 1);
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_strv_join(void **state)
{
	char *plain[] = {(char *)"qemu", (char *)"-m", (char *)"512M", NULL};
	_cleanup_free_ char *a = strv_join(plain);
	assert_string_equal(a, "qemu -m 512M");

	char *spaces[] = {(char *)"qemu",
			  (char *)"-append",
			  (char *)"console=ttyS0 quiet",
			  (char *)"-name",
			  (char *)"guest=a,debug-threads=on",
			  NULL};
	_cleanup_free_ char *b = strv_join(spaces);
	assert_string_equal(b, "qemu -append 'console=ttyS0 quiet' -name guest=a,debug-threads=on");

	/* A single quote inside must not end the quoting early. */
	char *quotes[] = {(char *)"echo", (char *)"it's", (char *)"a \"b\"", (char *)"tab\there",
			  NULL};
	_cleanup_free_ char *c = strv_join(quotes);
	assert_string_equal(c, "echo 'it'\\''s' 'a \"b\"' 'tab\there'");

	/* An empty argument stays visible. */
	char *empty[] = {(char *)"x", (char *)"", (char *)"y", NULL};
	_cleanup_free_ char *d = strv_join(empty);
	assert_string_equal(d, "x '' y");

	/* Shell-special characters are quoted. */
	char *special[] = {(char *)"a;b", (char *)"$HOME", (char *)"x|y", (char *)"*", NULL};
	_cleanup_free_ char *e = strv_join(special);
	assert_string_equal(e, "'a;b' '$HOME' 'x|y' '*'");

	char *none[] = {NULL};
	_cleanup_free_ char *f = strv_join(none);
	assert_string_equal(f, "");

	/* Worst case for the buffer: every character a quote. */
	char *allq[] = {(char *)"''''", (char *)"'", NULL};
	_cleanup_free_ char *g = strv_join(allq);
	assert_string_equal(g, "''\\'''\\'''\\'''\\''' ''\\'''");

	/* The argv built for a VM joins into one line. */
	VmSpec s;
	spec_kernel_tcg(&s);
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	_cleanup_free_ char *line = strv_join(v);
	assert_non_null(strstr(line, " -append 'console=ttyS0 root=/dev/vda rw'"));
	assert_true(hs_str_has_prefix(line, "/usr/bin/qemu-system-x86_64 -name "));
	strv_free(v);
	vm_spec_clear(&s);
}

/* Multi-queue taps with vhost-net, the models, link and a VF NIC. */
static void test_nics(void **state)
{
	VmSpec s;
	spec_disks_nics(&s);
	s.cpus = 4;
	for (size_t i = 0; i < s.n_nics; i++)
		vm_nic_clear(&s.nics[i]);
	s.nics[0] = (VmNic){.id = "lan", .type = VM_NIC_NETWORK, .network = xstrdup("lan"),
			    .mac = "52:54:00:00:00:01", .queues = 4};
	s.nics[1] = (VmNic){.id = "old", .type = VM_NIC_BRIDGE, .bridge = xstrdup("br0"),
			    .mac = "52:54:00:00:00:02", .model = VM_NIC_E1000};
	s.nics[2] = (VmNic){.id = "fast", .type = VM_NIC_NETWORK, .network = xstrdup("sr"),
			    .mac = "52:54:00:00:00:03"};
	s.n_nics = 3;
	QemuLaunch l = launch_plain;
	l.pass_fds = true;
	l.serial_log_fd = l.kernel_fd = l.initrd_fd = -1;
	for (size_t i = 0; i < VM_MAX_DISKS; i++)
		l.disk_fds[i][0] = l.disk_fds[i][1] = -1;
	l.disk_fds[0][0] = 5;
	l.disk_fds[1][0] = 6;
	l.nic_fds[0] = (QemuNicFds){.queues = 4, .vhost = true, .fds = {10, 11, 12, 13},
				    .vhostfds = {14, 15, 16, 17}};
	l.nic_fds[1] = (QemuNicFds){.queues = 1, .fds = {18}};
	l.nic_fds[2] = (QemuNicFds){.vf = true};
	l.hostfns[0] = (QemuHostFn){.addr = "0000:01:10.1", .dev = 0, .primary = true, .nic = true,
				    .nic_index = 2};
	l.n_hostfns = 1;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-netdev",
			     "tap,id=hs-lan,fds=10:11:12:13,vhost=on,vhostfds=14:15:16:17") > 0);
	assert_true(find_opt(v, "-device",
			     "virtio-net-pci,netdev=hs-lan,id=lan,mac=52:54:00:00:00:01,mq=on,"
			     "vectors=10") > 0);
	assert_true(find_opt(v, "-netdev", "tap,id=hs-old,fd=18,vhost=off") > 0);
	assert_true(find_opt(v, "-device", "e1000,netdev=hs-old,id=old,mac=52:54:00:00:00:02") > 0);
	/* The VF: no netdev, a root port of its own, vfio-pci named after the NIC. */
	assert_int_equal(count_arg(v, "-netdev"), 2);
	assert_true(find_opt(v, "-device",
			     "pcie-root-port,id=hs-hostport0,chassis=17,bus=pcie.0") > 0);
	assert_true(find_opt(v, "-device",
			     "vfio-pci,host=0000:01:10.1,id=fast,bus=hs-hostport0,addr=0.0") > 0);
	strv_free(v);

	/* Hot-plug arguments: fds by getfd name, the device where it goes. */
	json_auto_t *nd = qemu_nic_netdev_props(&s.nics[0], &l.nic_fds[0], "p-");
	json_auto_t *want = json_pack("{s:s, s:s, s:s, s:b, s:s}", "type", "tap", "id", "hs-lan",
				      "fds", "p-t0:p-t1:p-t2:p-t3", "vhost", 1, "vhostfds",
				      "p-v0:p-v1:p-v2:p-v3");
	assert_true(json_equal(nd, want));
	json_auto_t *one = qemu_nic_netdev_props(&s.nics[1], &l.nic_fds[1], "q-");
	json_auto_t *want1 = json_pack("{s:s, s:s, s:s, s:b}", "type", "tap", "id", "hs-old", "fd",
				       "q-t0", "vhost", 0);
	assert_true(json_equal(one, want1));
	json_auto_t *dev = qemu_nic_device_props(&s.nics[0], 4, "pci.0", 0x18);
	json_auto_t *wantd = json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:s, s:s}", "driver",
				       "virtio-net-pci", "id", "lan", "netdev", "hs-lan", "mac",
				       "52:54:00:00:00:01", "mq", 1, "vectors", 10, "bus", "pci.0",
				       "addr", "0x18");
	assert_true(json_equal(dev, wantd));
	json_auto_t *devq = qemu_nic_device_props(&s.nics[1], 1, "hs-hotport0", -1);
	assert_null(json_object_get(devq, "addr"));
	assert_null(json_object_get(devq, "mq"));
	assert_string_equal(json_string_value(json_object_get(devq, "bus")), "hs-hotport0");
	vm_spec_clear(&s);
}

/* With pass_fds QEMU opens no path: every file is a descriptor. */
static void test_pass_fds(void **state)
{
	VmSpec s;
	spec_disks_nics(&s);
	s.kernel = xstrdup("/boot/vmlinuz");
	s.initrd = xstrdup("/boot/initrd.img");
	QemuLaunch l = {
	    .binary = "qemu-system-x86_64",
	    .qmp_fd = 3,
	    .serial_fd = 4,
	    .serial_log = "/must/not/appear",
	    .sandbox = true,
	    .pass_fds = true,
	    .serial_log_fd = 5,
	    .kernel_fd = 6,
	    .initrd_fd = 7,
	    .disk_fds = {{8, 9}, {10, -1}},
	    .nic_fds = {{0}, {.queues = 1, .fds = {11}}},
	};
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	for (char **p = v; *p; p++) {
		assert_null(strstr(*p, "/must/not/appear"));
		assert_null(strstr(*p, "/var/lib/hs"));
		assert_null(strstr(*p, "/boot/"));
		assert_null(strstr(*p, "bridge"));
	}
	assert_true(find_opt(v, "-kernel", "/proc/self/fd/6") > 0);
	assert_true(find_opt(v, "-initrd", "/proc/self/fd/7") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=5,set=1,") > 0);
	assert_true(find_opt(v, "-chardev",
			     "socket,id=hs-serial0,fd=4,server=on,wait=off,logfile=/dev/fdset/1,") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=8,set=10,") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=9,set=10,") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=10,set=11,") > 0);
	assert_int_equal(count_arg(v, "-add-fd"), 4);
	assert_true(find_opt(v, "-blockdev", "driver=file,node-name=hs-file0,filename=/dev/fdset/10,") > 0);
	assert_true(find_opt(v, "-blockdev", "driver=file,node-name=hs-file1,filename=/dev/fdset/11,") > 0);
	assert_true(find_opt(v, "-netdev", "user,id=hs-net0") > 0);
	assert_true(find_opt(v, "-netdev", "tap,id=hs-net1,fd=11") > 0);
	assert_true(find_opt(v, "-machine", "pc-q35-7.2") > 0);
	assert_true(find_opt(v, "-accel", "kvm") > 0);
	strv_free(v);
	/* A guest that refuses KSM. */
	s.no_mem_merge = true;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-machine", "pc-q35-7.2,mem-merge=off") > 0);
	/* Nothing to spawn with taps passed in. */
	assert_true(find_opt(v, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,") > 0);
	strv_free(v);
	vm_spec_clear(&s);
}

static void test_strv_free_null(void **state)
{
	strv_free(NULL);
}

/* A managed disk: every layer its own fdset and node, the chain spelled
 * out with backing=, only the top writable; cloud-init CD; -incoming. */
static void test_managed_chain(void **state)
{
	VmSpec s;
	spec_disks_nics(&s);
	free(s.disks[0].path);
	s.disks[0] = (VmDisk){.managed = true, .template = xstrdup("base"), .format = VM_DISK_QCOW2};
	QemuDiskChain c = {.n = 3,
			   .layers = {{.id = 0, .format = VM_DISK_RAW, .fd_ro = 8, .fd_rw = -1},
				      {.id = 4, .format = VM_DISK_QCOW2, .fd_ro = 9, .fd_rw = -1},
				      {.id = 7, .format = VM_DISK_QCOW2, .fd_ro = 10, .fd_rw = 11}}};
	QemuLaunch l = {
	    .binary = "qemu-system-x86_64", .qmp_fd = 3, .serial_fd = 4, .pass_fds = true,
	    .serial_log_fd = -1, .kernel_fd = -1, .initrd_fd = -1,
	    .disk_fds = {{-1, -1}, {12, -1}}, .nic_fds = {{0}, {.queues = 1, .fds = {13}}},
	    .chains = {&c}, .cidata_fd = 14, .incoming = true,
	};
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-add-fd", "fd=8,set=500,") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=9,set=1004,") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=10,set=1007,") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=11,set=1007,") > 0);
	/* The template: raw, read-only, no backing option. */
	assert_true(find_opt(v, "-blockdev",
			     "driver=file,node-name=hs-tf0,filename=/dev/fdset/500,read-only=on,") > 0);
	ssize_t t = find_opt(v, "-blockdev", "driver=raw,node-name=hs-t0,file=hs-tf0,read-only=on");
	assert_true(t > 0);
	assert_null(strstr(v[t], "backing"));
	assert_true(find_opt(v, "-blockdev", "driver=qcow2,node-name=hs-l4,file=hs-lf4,read-only=on,"
				      "discard=unmap,backing=hs-t0") > 0);
	assert_true(find_opt(v, "-blockdev", "driver=qcow2,node-name=hs-l7,file=hs-lf7,read-only=off,"
				      "discard=unmap,backing=hs-l4") > 0);
	ssize_t f = find_opt(v, "-blockdev", "driver=file,node-name=hs-lf7,");
	assert_true(f > 0 && strstr(v[f], "read-only=off") && strstr(v[f], "locking=off"));
	assert_true(find_opt(v, "-device", "virtio-blk-pci,drive=hs-l7,id=disk0,bootindex=1") > 0);
	/* The path disk next to it keeps its own fdset. */
	assert_true(find_opt(v, "-add-fd", "fd=12,set=11,") > 0);
	assert_true(find_opt(v, "-device", "virtio-blk-pci,drive=hs-disk1,id=disk1") > 0);
	/* cloud-init volume and restoring saved memory. */
	assert_true(find_opt(v, "-add-fd", "fd=14,set=2,opaque=cidata") > 0);
	assert_true(find_opt(v, "-device", "scsi-cd,drive=hs-cidata,") > 0);
	assert_true(find_opt(v, "-incoming", "defer") > 0);
	strv_free(v);
	/* A read-only managed disk: even its top is read-only. */
	s.disks[0].readonly = true;
	l.incoming = false;
	l.cidata_fd = 0;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-blockdev", "driver=qcow2,node-name=hs-l7,file=hs-lf7,read-only=on,") > 0);
	assert_int_equal(find_opt(v, "-add-fd", "fd=11,"), -1);
	assert_int_equal(count_arg(v, "-incoming"), 0);
	assert_int_equal(find_opt(v, "-device", "scsi-cd"), -1);
	strv_free(v);
	vm_spec_clear(&s);
}

/* NUMA cells: one bound memory backend per cell, vCPU ranges. */
static void test_numa_cells(void **state)
{
	VmSpec s;
	spec_disks_nics(&s);
	s.cpus = 4;
	s.memory_mib = 3072;
	QemuLaunch l = launch_plain;
	l.n_numa_cells = 3;
	l.numa_cells[0] = (QemuNumaCell){.host_node = 2, .mem_mib = 2048, .first_vcpu = 0, .n_vcpus = 3};
	l.numa_cells[1] = (QemuNumaCell){.host_node = 3, .mem_mib = 512, .first_vcpu = 3, .n_vcpus = 1};
	l.numa_cells[2] = (QemuNumaCell){.host_node = 5, .mem_mib = 512};
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-object", "memory-backend-ram,id=hs-ram0,size=2048M,host-nodes=2,"
				   "policy=bind") > 0);
	assert_true(find_opt(v, "-object", "memory-backend-ram,id=hs-ram2,size=512M,host-nodes=5,"
				   "policy=bind") > 0);
	assert_true(find_opt(v, "-numa", "node,nodeid=0,memdev=hs-ram0,cpus=0-2") > 0);
	assert_true(find_opt(v, "-numa", "node,nodeid=1,memdev=hs-ram1,cpus=3-3") > 0);
	ssize_t i = find_opt(v, "-numa", "node,nodeid=2,memdev=hs-ram2");
	assert_true(i > 0 && !strstr(v[i], "cpus"));
	assert_int_equal(count_arg(v, "-numa"), 3);
	strv_free(v);
	/* No cells: no binding at all. */
	l.n_numa_cells = 0;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(count_arg(v, "-numa"), 0);
	assert_int_equal(count_arg(v, "-object"), 0);
	strv_free(v);
	vm_spec_clear(&s);
}

/* Huge pages: guest RAM from a hugetlb memfd, preallocated; the machine's
 * one backend without cells, the cells' backends (still bound) with them;
 * no free page reporting. */
static void test_hugepages(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	s.hugepage_size = 2ull << 20;
	s.no_mem_merge = true;
	QemuLaunch l = launch_plain;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	ssize_t i = find_opt(v, "-object", "memory-backend-memfd,");
	assert_true(i > 0);
	assert_string_equal(v[i], "memory-backend-memfd,hugetlb=on,hugetlbsize=2097152,prealloc=on,"
				  "id=hs-ram,size=1024M");
	assert_int_equal(count_arg(v, "-object"), 1);
	i = find_opt(v, "-machine", "q35");
	assert_true(i > 0);
	assert_string_equal(v[i], "q35,mem-merge=off,memory-backend=hs-ram");
	assert_true(find_opt(v, "-m", "1024M") > 0);
	assert_true(find_opt(v, "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=off") >
		    0);
	assert_int_equal(count_arg(v, "-numa"), 0);
	strv_free(v);

	/* Placed (1 GiB pages over two cells): per-cell backends, bound. */
	s.hugepage_size = 1ull << 30;
	s.memory_mib = 3072;
	l.n_numa_cells = 2;
	l.numa_cells[0] = (QemuNumaCell){.host_node = 1, .mem_mib = 2048, .n_vcpus = 1};
	l.numa_cells[1] = (QemuNumaCell){.host_node = 3, .mem_mib = 1024, .first_vcpu = 1,
					 .n_vcpus = 1};
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-object", "memory-backend-memfd,hugetlb=on,hugetlbsize=1073741824,"
				   "prealloc=on,id=hs-ram0,size=2048M,host-nodes=1,policy=bind") > 0);
	assert_true(find_opt(v, "-object", "memory-backend-memfd,hugetlb=on,hugetlbsize=1073741824,"
				   "prealloc=on,id=hs-ram1,size=1024M,host-nodes=3,policy=bind") > 0);
	assert_int_equal(count_arg(v, "-object"), 2);
	assert_true(find_opt(v, "-numa", "node,nodeid=1,memdev=hs-ram1,cpus=1-1") > 0);
	i = find_opt(v, "-machine", "q35");
	assert_true(i > 0 && !strstr(v[i], "memory-backend"));
	strv_free(v);
	vm_spec_clear(&s);
}

/* memory_file: RAM on the passed descriptor, shared (a fresh file) or
 * private (a warm clone's first start), one backend whatever the NUMA
 * cells, the vmgenid device and the fw_cfg clone record. */
static void test_memory_file(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	s.memory_file = true;
	snprintf(s.vmgenid, sizeof(s.vmgenid), "6b167dea-0b91-47d4-923d-b6b658db710b");
	QemuLaunch l = launch_plain;
	l.ram_fd = 7;
	l.clone_info = "name=a,b clone=0";
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-object", "memory-backend-file,id=hs-ram,size=1024M,share=on,"
				   "mem-path=/proc/self/fd/7") > 0);
	assert_true(find_opt(v, "-machine", "q35,memory-backend=hs-ram") > 0);
	assert_true(find_opt(v, "-device", "vmgenid,id=vmgenid0,guid=6b167dea-0b91-47d4-923d-"
				   "b6b658db710b") > 0);
	/* The record's commas are doubled: no option injection. */
	assert_true(find_opt(v, "-fw_cfg", "name=opt/org.hypervisor-scale/clone,string=name=a,,b "
				   "clone=0") > 0);
	assert_true(find_opt(v, "-incoming", "defer") < 0);
	strv_free(v);

	l.ram_private = true;
	l.incoming = true;
	l.n_numa_cells = 2;
	l.numa_cells[0] = (QemuNumaCell){.host_node = 0, .mem_mib = 512, .n_vcpus = 1};
	l.numa_cells[1] = (QemuNumaCell){.host_node = 1, .mem_mib = 512, .first_vcpu = 1,
					 .n_vcpus = 0};
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-object", "memory-backend-file,id=hs-ram,size=1024M,share=off,") >
		    0);
	assert_int_equal(count_arg(v, "-object"), 1);
	assert_int_equal(count_arg(v, "-numa"), 0);
	assert_true(find_opt(v, "-incoming", "defer") > 0);
	strv_free(v);
	vm_spec_clear(&s);
}

/* Host PCI devices: a GPU with its audio function on one root port (q35),
 * its options on the function the spec names, spare hot-plug ports; on pc
 * a slot of the PCI bus. */
static void test_hostdevs(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	s.n_hostdevs = 2;
	snprintf(s.hostdevs[0].address, 16, "0000:01:00.0");
	s.hostdevs[0].x_vga = true;
	s.hostdevs[0].rom_file = xstrdup("/srv/roms/gpu,1.rom");
	s.hostdevs[0].rom_bar_off = true;
	snprintf(s.hostdevs[0].display, 8, "off");
	snprintf(s.hostdevs[1].address, 16, "0000:03:10.2");
	s.hotplug_ports = 2;
	QemuLaunch l = launch_plain;
	l.n_hostfns = 3;
	l.hostfns[0] = (QemuHostFn){.addr = "0000:01:00.0", .dev = 0, .guest_fn = 0,
				    .multifunction = true, .primary = true, .vga = true};
	l.hostfns[1] = (QemuHostFn){.addr = "0000:01:00.1", .dev = 0, .guest_fn = 1};
	l.hostfns[2] = (QemuHostFn){.addr = "0000:03:10.2", .dev = 1, .guest_fn = 0,
				    .primary = true};
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-device", "pcie-root-port,id=hs-hostport0,chassis=1,bus=pcie.0") > 0);
	assert_true(find_opt(v, "-device", "pcie-root-port,id=hs-hostport1,chassis=2,bus=pcie.0") > 0);
	assert_true(find_opt(v, "-device", "pcie-root-port,id=hs-hotport0,chassis=9,bus=pcie.0") > 0);
	assert_true(find_opt(v, "-device", "pcie-root-port,id=hs-hotport1,chassis=10,bus=pcie.0") > 0);
	ssize_t i = find_opt(v, "-device", "vfio-pci,host=0000:01:00.0,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], ",id=hd-0000-01-00.0,"));
	assert_non_null(strstr(v[i], ",bus=hs-hostport0,addr=0.0"));
	assert_non_null(strstr(v[i], ",multifunction=on"));
	assert_non_null(strstr(v[i], ",x-vga=on"));
	assert_non_null(strstr(v[i], ",romfile=/srv/roms/gpu,,1.rom")); /* comma doubled */
	assert_non_null(strstr(v[i], ",rombar=0"));
	assert_non_null(strstr(v[i], ",display=off"));
	i = find_opt(v, "-device", "vfio-pci,host=0000:01:00.1,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], ",bus=hs-hostport0,addr=0.1"));
	assert_null(strstr(v[i], "multifunction"));
	assert_null(strstr(v[i], "x-vga"));
	assert_null(strstr(v[i], "romfile"));
	i = find_opt(v, "-device", "vfio-pci,host=0000:03:10.2,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], ",bus=hs-hostport1,addr=0.0"));
	strv_free(v);

	/* pc: slot 0x10 + the device's index on the PCI bus; no ports. */
	free(s.machine);
	s.machine = xstrdup("pc");
	s.hotplug_ports = 0;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(count_arg(v, "-device") - 1 /* balloon */, 3);
	i = find_opt(v, "-device", "vfio-pci,host=0000:01:00.1,");
	assert_true(i > 0);
	assert_non_null(strstr(v[i], ",bus=pci.0,addr=10.1"));
	i = find_opt(v, "-device", "vfio-pci,host=0000:03:10.2,");
	assert_non_null(strstr(v[i], ",bus=pci.0,addr=11.0"));
	strv_free(v);

	/* A hot-plug's device_add arguments: on the port it was given. */
	QemuHostFnPlace place = {.bus = "hs-hotport1"};
	free(s.machine);
	s.machine = xstrdup("pc-q35-7.2");
	json_t *p = qemu_hostfn_props(&s, &l.hostfns[2], &place);
	assert_string_equal(json_string_value(json_object_get(p, "driver")), "vfio-pci");
	assert_string_equal(json_string_value(json_object_get(p, "bus")), "hs-hotport1");
	assert_string_equal(json_string_value(json_object_get(p, "addr")), "0.0");
	assert_string_equal(json_string_value(json_object_get(p, "id")), "hd-0000-03-10.2");
	json_decref(p);
	vm_spec_clear(&s);
}

/* A display: the device, SPICE (UNIX through hsd: no listener and no
 * ticketing; TCP: the port hsd picked, ticketing on), a tablet on xhci and
 * the agent's channel, after the other devices. */
static void test_display(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	s.display.type = VM_DISPLAY_VIRTIO;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	/* clang-format off */
	static const char *const tail[] = {
		"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
		"-spice", "disable-ticketing=on",
		"-device", "virtio-vga,id=hs-video0",
		"-device", "qemu-xhci,id=hs-usb",
		"-device", "usb-tablet,id=hs-tablet,bus=hs-usb.0",
		"-device", "virtio-serial-pci,id=hs-vser",
		"-chardev", "spicevmc,id=hs-vdagent,name=vdagent",
		"-device", "virtserialport,bus=hs-vser.0,chardev=hs-vdagent,name=com.redhat.spice.0",
	};
	/* clang-format on */
	size_t n = strv_len(v);
	assert_true(n > ARRAY_SIZE(tail));
	assert_argv(v + n - ARRAY_SIZE(tail), tail, ARRAY_SIZE(tail));
	/* SPICE is no -display backend: that stays none. */
	assert_true(find_opt(v, "-display", "none") > 0);
	assert_int_equal(count_arg(v, "-display"), 1);
	assert_int_equal(count_arg(v, "-vga"), 0);
	strv_free(v);

	/* TCP: the address (escaped) and the port; ticketing stays on. */
	s.display.type = VM_DISPLAY_QXL;
	snprintf(s.display.listen, sizeof(s.display.listen), "127.0.0.1");
	QemuLaunch l = launch_plain;
	l.spice_port = 5907;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-spice", "port=5907,addr=127.0.0.1") > 0);
	assert_int_equal(count_arg(v, "-spice"), 1);
	assert_true(find_opt(v, "-device", "qxl-vga,id=hs-video0") > 0);
	for (size_t i = 0; v[i]; i++)
		assert_null(strstr(v[i], "disable-ticketing"));
	strv_free(v);

	/* listen without a port picked (never at a start): the UNIX socket only. */
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	assert_true(find_opt(v, "-spice", "disable-ticketing=on") > 0);
	strv_free(v);

	/* Headless: none of it. */
	s.display = (VmDisplay){.type = VM_DISPLAY_NONE};
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(count_arg(v, "-spice"), 0);
	assert_int_equal(find_opt(v, "-device", "usb-tablet"), -1);
	assert_int_equal(find_opt(v, "-chardev", "spicevmc"), -1);
	strv_free(v);
	vm_spec_clear(&s);
}

/* UEFI: OVMF's code and the VM's variables as flash nodes on descriptors;
 * Secure Boot adds SMM and secure flash; a TPM is swtpm's socket. */
static void test_firmware_tpm(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	s.firmware = VM_FIRMWARE_UEFI;
	QemuLaunch l = launch_plain;
	l.pass_fds = true;
	l.fw_code_fd = 7;
	l.fw_vars_fd = 8;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-machine", "q35,pflash0=hs-fw-code,pflash1=hs-fw-vars") > 0);
	assert_int_equal(find_opt(v, "-machine", "q35,pflash0=hs-fw-code,pflash1=hs-fw-vars,smm"),
			 -1);
	assert_true(find_opt(v, "-add-fd", "fd=7,set=3,opaque=hs-fw-code") > 0);
	assert_true(find_opt(v, "-add-fd", "fd=8,set=4,opaque=hs-fw-vars") > 0);
	ssize_t i = find_opt(v, "-blockdev", "driver=file,node-name=hs-fw-code-file,");
	assert_true(i > 0);
	assert_string_equal(v[i], "driver=file,node-name=hs-fw-code-file,filename=/dev/fdset/3,"
				  "read-only=on");
	assert_true(find_opt(v, "-blockdev",
			     "driver=raw,node-name=hs-fw-vars,file=hs-fw-vars-file,read-only=off") > 0);
	assert_int_equal(count_arg(v, "-global"), 0);
	assert_int_equal(find_opt(v, "-tpmdev", ""), -1);
	strv_free(v);

	s.secure_boot = true;
	s.tpm = true;
	l.tpm_fd = 9;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-machine", "q35,pflash0=hs-fw-code,pflash1=hs-fw-vars,smm=on") > 0);
	assert_true(find_opt(v, "-global", "driver=cfi.pflash01,property=secure,value=on") > 0);
	assert_true(find_opt(v, "-chardev", "socket,id=hs-tpm-ctrl,fd=9") > 0);
	assert_true(find_opt(v, "-tpmdev", "emulator,id=hs-tpm,chardev=hs-tpm-ctrl") > 0);
	assert_true(find_opt(v, "-device", "tpm-crb,tpmdev=hs-tpm,id=tpm0") > 0);
	strv_free(v);

	/* No descriptors (a BIOS VM): no flash, no SMM setting. */
	s.firmware = VM_FIRMWARE_BIOS;
	s.secure_boot = s.tpm = false;
	assert_int_equal(qemu_argv_build(&s, &launch_plain, &v), 0);
	for (size_t k = 0; v[k]; k++)
		assert_null(strstr(v[k], "pflash"));
	strv_free(v);
	vm_spec_clear(&s);
}

/* The guest agent: a port on the virtio-serial controller (the display's
 * when there is one, never a second), its chardev on hsd's socket. */
static void test_agent(void **state)
{
	VmSpec s;
	spec_kernel_tcg(&s);
	s.agent = true;
	QemuLaunch l = launch_plain;
	l.agent_fd = 7;
	char **v = NULL;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	/* clang-format off */
	static const char *const tail[] = {
		"-device", "virtio-serial-pci,id=hs-vser",
		"-chardev", "socket,id=hs-qga,fd=7,server=on,wait=off",
		"-device", "virtserialport,bus=hs-vser.0,chardev=hs-qga,"
			   "name=org.qemu.guest_agent.0,id=hs-qga-port",
	};
	/* clang-format on */
	size_t n = strv_len(v);
	assert_true(n > ARRAY_SIZE(tail));
	assert_argv(v + n - ARRAY_SIZE(tail), tail, ARRAY_SIZE(tail));
	strv_free(v);

	/* With a display: one controller, both ports. */
	s.display.type = VM_DISPLAY_VIRTIO;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(count_arg(v, "virtio-serial-pci,id=hs-vser"), 1);
	assert_true(find_opt(v, "-chardev", "spicevmc,id=hs-vdagent") > 0);
	assert_true(find_opt(v, "-chardev", "socket,id=hs-qga,fd=7,") >
		    find_opt(v, "-chardev", "spicevmc"));
	strv_free(v);

	/* pc: the same devices (QEMU picks their slots on pci.0). */
	free(s.machine);
	s.machine = xstrdup("pc");
	s.display.type = VM_DISPLAY_NONE;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_true(find_opt(v, "-device", "virtio-serial-pci,id=hs-vser") > 0);
	assert_true(find_opt(v, "-device", "virtserialport,bus=hs-vser.0,chardev=hs-qga,") > 0);
	strv_free(v);

	/* No agent (or no socket): no controller, no port. */
	s.agent = false;
	assert_int_equal(qemu_argv_build(&s, &l, &v), 0);
	assert_int_equal(find_opt(v, "-device", "virtio-serial-pci"), -1);
	assert_int_equal(find_opt(v, "-chardev", "socket,id=hs-qga"), -1);
	strv_free(v);
	vm_spec_clear(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kernel_tcg),
	    cmocka_unit_test(test_disks_nics_kvm),
	    cmocka_unit_test(test_accel),
	    cmocka_unit_test(test_sandbox),
	    cmocka_unit_test(test_always_paused_and_no_shutdown),
	    cmocka_unit_test(test_fd_numbers),
	    cmocka_unit_test(test_commas_doubled),
	    cmocka_unit_test(test_kernel_values_verbatim),
	    cmocka_unit_test(test_many_disks_and_nics),
	    cmocka_unit_test(test_strv_join),
	    cmocka_unit_test(test_strv_free_null),
	    cmocka_unit_test(test_pass_fds),
	    cmocka_unit_test(test_managed_chain),
	    cmocka_unit_test(test_numa_cells),
	    cmocka_unit_test(test_hugepages),
	    cmocka_unit_test(test_memory_file),
	    cmocka_unit_test(test_hostdevs),
	    cmocka_unit_test(test_nics),
	    cmocka_unit_test(test_display),
	    cmocka_unit_test(test_firmware_tpm),
	    cmocka_unit_test(test_agent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
