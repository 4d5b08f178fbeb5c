/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the VM spec: parsing, validation (every bad value names its
 * field), defaults, generated MACs, file checks and the JSON round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "spec.h"
#include "test-helpers.h"

static const VmSpecDefaults defs_tcg = {.accel = VM_ACCEL_TCG, .check_files = false};
static const VmSpecDefaults defs_kvm = {.accel = VM_ACCEL_KVM, .check_files = false};

static json_t *load(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
	if (!j)
		fail_msg("test JSON does not parse: %s: %s", je.text, text);
	return j;
}

static int parse_with(const char *text, const VmSpecDefaults *defs, VmSpec *ret, HsError *err)
{
	json_auto_t *j = load(text);
	return vm_spec_from_json(j, defs, ret, err);
}

/* Parse a spec that must be valid. */
static void parse_ok(const char *text, const VmSpecDefaults *defs, VmSpec *ret)
{
	HsError err = {0};
	int r = parse_with(text, defs, ret, &err);
	if (r < 0)
		fail_msg("spec refused (%d, %s): %s\nspec: %s", r, err.kind, err.message, text);
}

/* A spec that must be refused with -EINVAL/"invalid-spec" and a message
 * starting with `prefix` (the field) and containing `also` if not NULL. */
static void expect_bad_with(const char *text, const VmSpecDefaults *defs, const char *prefix,
			    const char *also)
{
	VmSpec s = {0};
	HsError err = {0};
	int r = parse_with(text, defs, &s, &err);
	if (r == 0) {
		vm_spec_clear(&s);
		fail_msg("spec accepted, wanted an error naming '%s': %s", prefix, text);
	}
	if (r != -EINVAL || err.code != -EINVAL || strcmp(err.kind, "invalid-spec"))
		fail_msg("spec %s: wanted -EINVAL/invalid-spec, got %d/%d/'%s': %s", text, r,
			 err.code, err.kind, err.message);
	if (!hs_str_has_prefix(err.message, prefix))
		fail_msg("spec %s: message '%s' does not start with '%s'", text, err.message,
			 prefix);
	if (also && !strstr(err.message, also))
		fail_msg("spec %s: message '%s' does not mention '%s'", text, err.message, also);
	/* The output must not have been touched. */
	assert_null(s.machine);
	assert_int_equal(s.n_disks, 0);
}

static void expect_bad(const char *text, const char *prefix)
{
	expect_bad_with(text, &defs_tcg, prefix, NULL);
}

static bool is_generated_mac(const char *mac)
{
	if (strlen(mac) != 17 || !hs_str_has_prefix(mac, "52:54:00:"))
		return false;
	for (int i = 9; i < 17; i++) {
		if (i % 3 == 2 ? mac[i] != ':' : !strchr("0123456789abcdef", mac[i]))
			return false;
	}
	return true;
}

/* ---- valid specs and defaults ---- */

static void test_minimal_kernel(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"vm1\", \"kernel\": \"/boot/vmlinuz\"}", &defs_tcg, &s);
	assert_string_equal(s.name, "vm1");
	assert_int_equal(s.cpus, 1);
	assert_int_equal(s.memory_mib, 512);
	assert_int_equal(s.accel, VM_ACCEL_TCG);
	assert_string_equal(s.machine, "q35");
	assert_string_equal(s.kernel, "/boot/vmlinuz");
	assert_null(s.initrd);
	assert_null(s.cmdline);
	assert_int_equal(s.n_disks, 0);
	assert_int_equal(s.n_nics, 0);
	vm_spec_clear(&s);
	/* vm_spec_clear leaves a zeroed struct: clearing twice is harmless. */
	assert_null(s.machine);
	vm_spec_clear(&s);
}

static void test_minimal_disk(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"0\", \"disks\": [{\"path\": \"/var/lib/hs/a.qcow2\"}]}", &defs_kvm,
		 &s);
	assert_string_equal(s.name, "0");
	assert_int_equal(s.accel, VM_ACCEL_KVM); /* from the defaults */
	assert_null(s.kernel);
	assert_int_equal(s.n_disks, 1);
	assert_string_equal(s.disks[0].path, "/var/lib/hs/a.qcow2");
	assert_int_equal(s.disks[0].format, VM_DISK_QCOW2);
	assert_false(s.disks[0].readonly);
	vm_spec_clear(&s);
}

static void test_nulls_are_defaults(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"vm\", \"cpus\": null, \"memory_mib\": null, \"accel\": null,"
		 " \"machine\": null, \"kernel\": \"/k\", \"initrd\": null, \"cmdline\": null,"
		 " \"disks\": null, \"nics\": null}",
		 &defs_kvm, &s);
	assert_int_equal(s.cpus, 1);
	assert_int_equal(s.memory_mib, 512);
	assert_int_equal(s.accel, VM_ACCEL_KVM);
	assert_string_equal(s.machine, "q35");
	assert_null(s.initrd);
	vm_spec_clear(&s);
}

static const char full_spec[] =
    "{\"name\": \"web-01_a\", \"cpus\": 4, \"memory_mib\": 2048, \"accel\": \"tcg\","
    " \"machine\": \"pc-q35-7.2\", \"kernel\": \"/boot/vmlinuz-6.1\","
    " \"initrd\": \"/boot/initrd.img-6.1\", \"cmdline\": \"console=ttyS0 root=/dev/vda rw\","
    " \"disks\": [{\"path\": \"/var/lib/hs/web-01.qcow2\", \"format\": \"qcow2\","
    "              \"readonly\": false},"
    "             {\"path\": \"/var/lib/hs/seed,1.img\", \"format\": \"raw\","
    "              \"readonly\": true}],"
    " \"nics\": [{\"type\": \"user\", \"mac\": \"52:54:00:AB:cd:01\"},"
    "            {\"type\": \"bridge\", \"bridge\": \"br-lan.10\"},"
    "            {}]}";

static void test_full(void **state)
{
	VmSpec s;
	parse_ok(full_spec, &defs_kvm, &s);
	assert_string_equal(s.name, "web-01_a");
	assert_int_equal(s.cpus, 4);
	assert_int_equal(s.memory_mib, 2048);
	assert_int_equal(s.accel, VM_ACCEL_TCG); /* explicit beats the default */
	assert_string_equal(s.machine, "pc-q35-7.2");
	assert_string_equal(s.kernel, "/boot/vmlinuz-6.1");
	assert_string_equal(s.initrd, "/boot/initrd.img-6.1");
	assert_string_equal(s.cmdline, "console=ttyS0 root=/dev/vda rw");
	assert_int_equal(s.n_disks, 2);
	assert_string_equal(s.disks[0].path, "/var/lib/hs/web-01.qcow2");
	assert_int_equal(s.disks[0].format, VM_DISK_QCOW2);
	assert_false(s.disks[0].readonly);
	assert_string_equal(s.disks[1].path, "/var/lib/hs/seed,1.img");
	assert_int_equal(s.disks[1].format, VM_DISK_RAW);
	assert_true(s.disks[1].readonly);
	assert_int_equal(s.n_nics, 3);
	assert_int_equal(s.nics[0].type, VM_NIC_USER);
	assert_null(s.nics[0].bridge);
	assert_string_equal(s.nics[0].mac, "52:54:00:ab:cd:01"); /* lowercased */
	assert_int_equal(s.nics[1].type, VM_NIC_BRIDGE);
	assert_string_equal(s.nics[1].bridge, "br-lan.10");
	assert_true(is_generated_mac(s.nics[1].mac));
	assert_int_equal(s.nics[2].type, VM_NIC_USER); /* the default type */
	assert_true(is_generated_mac(s.nics[2].mac));
	assert_string_not_equal(s.nics[1].mac, s.nics[2].mac);
	vm_spec_clear(&s);
}

static void test_limits_accepted(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 255, \"memory_mib\": 16}",
		 &defs_tcg, &s);
	assert_int_equal(s.cpus, 255);
	assert_int_equal(s.memory_mib, 16);
	vm_spec_clear(&s);
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 1, \"memory_mib\": 4194304}",
		 &defs_tcg, &s);
	assert_int_equal(s.cpus, 1);
	assert_int_equal(s.memory_mib, VM_MAX_MEMORY_MIB);
	vm_spec_clear(&s);

	/* 16 disks and 8 NICs are allowed. */
	json_auto_t *j = json_pack("{s:s, s:[], s:[]}", "name", "many", "disks", "nics");
	for (int i = 0; i < VM_MAX_DISKS; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/d/%d.img", i);
		json_array_append_new(json_object_get(j, "disks"), json_pack("{s:s}", "path", p));
	}
	for (int i = 0; i < VM_MAX_NICS; i++)
		json_array_append_new(json_object_get(j, "nics"), json_object());
	HsError err = {0};
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), 0);
	assert_int_equal(s.n_disks, VM_MAX_DISKS);
	assert_int_equal(s.n_nics, VM_MAX_NICS);
	/* Generated MACs are of QEMU's OUI and unique within the VM. */
	for (size_t i = 0; i < s.n_nics; i++) {
		assert_true(is_generated_mac(s.nics[i].mac));
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(s.nics[i].mac, s.nics[k].mac);
	}
	vm_spec_clear(&s);
}

static void test_generated_macs_differ_between_parses(void **state)
{
	VmSpec a, b;
	const char *text = "{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{}]}";
	parse_ok(text, &defs_tcg, &a);
	parse_ok(text, &defs_tcg, &b);
	assert_true(is_generated_mac(a.nics[0].mac));
	assert_true(is_generated_mac(b.nics[0].mac));
	assert_string_not_equal(a.nics[0].mac, b.nics[0].mac);
	vm_spec_clear(&a);
	vm_spec_clear(&b);
}

/* ---- names ---- */

static void test_name_is_valid(void **state)
{
	char n63[64], n64[65];
	memset(n63, 'a', 63);
	n63[63] = '\0';
	memset(n64, 'a', 64);
	n64[64] = '\0';

	assert_true(vm_name_is_valid("a"));
	assert_true(vm_name_is_valid("0"));
	assert_true(vm_name_is_valid("9vm"));
	assert_true(vm_name_is_valid("web-01_b"));
	assert_true(vm_name_is_valid("a-"));
	assert_true(vm_name_is_valid("a_"));
	assert_true(vm_name_is_valid(n63));

	assert_false(vm_name_is_valid(""));
	assert_false(vm_name_is_valid(n64));
	assert_false(vm_name_is_valid("A"));
	assert_false(vm_name_is_valid("vmA"));
	assert_false(vm_name_is_valid("-a"));
	assert_false(vm_name_is_valid("_a"));
	assert_false(vm_name_is_valid(".a"));
	assert_false(vm_name_is_valid("a.b"));
	assert_false(vm_name_is_valid("a/b"));
	assert_false(vm_name_is_valid(".."));
	assert_false(vm_name_is_valid("a b"));
	assert_false(vm_name_is_valid("a,b"));
	assert_false(vm_name_is_valid("é"));
}

static void test_name_in_spec(void **state)
{
	char text[256];
	char n63[64];
	memset(n63, 'z', 63);
	n63[63] = '\0';

	VmSpec s;
	snprintf(text, sizeof(text), "{\"name\": \"%s\", \"kernel\": \"/k\"}", n63);
	parse_ok(text, &defs_tcg, &s);
	assert_string_equal(s.name, n63);
	vm_spec_clear(&s);

	snprintf(text, sizeof(text), "{\"name\": \"%sz\", \"kernel\": \"/k\"}", n63);
	expect_bad(text, "name");
	expect_bad("{\"kernel\": \"/k\"}", "name: required");
	expect_bad("{\"name\": null, \"kernel\": \"/k\"}", "name");
	expect_bad("{\"name\": 12, \"kernel\": \"/k\"}", "name");
	expect_bad("{\"name\": \"\", \"kernel\": \"/k\"}", "name");
	expect_bad("{\"name\": \"Vm\", \"kernel\": \"/k\"}", "name");
	expect_bad("{\"name\": \"-vm\", \"kernel\": \"/k\"}", "name");
	expect_bad("{\"name\": \"_vm\", \"kernel\": \"/k\"}", "name");
	expect_bad("{\"name\": \"../etc\", \"kernel\": \"/k\"}", "name");
}

/* A name with a NUL inside must not be cut at the NUL into another,
 * valid, name. */
static void test_name_with_nul(void **state)
{
	json_auto_t *j =
	    json_pack("{s:o, s:s}", "name", json_stringn("vm\0evil", 7), "kernel", "/k");
	VmSpec s = {0};
	HsError err = {0};
	int r = vm_spec_from_json(j, &defs_tcg, &s, &err);
	if (r == 0) {
		char name[sizeof(s.name)];
		memcpy(name, s.name, sizeof(name));
		vm_spec_clear(&s);
		fail_msg("a name with a NUL was accepted as '%s'", name);
	}
	assert_int_equal(r, -EINVAL);
	assert_string_equal(err.kind, "invalid-spec");
	assert_true(hs_str_has_prefix(err.message, "name"));
}

/* ---- every field's bad values ---- */

static void test_not_an_object(void **state)
{
	expect_bad("[]", "the VM spec must be a JSON object");
	expect_bad("\"vm\"", "the VM spec must be a JSON object");
	expect_bad("null", "the VM spec must be a JSON object");
}

static void test_unknown_fields(void **state)
{
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"cpu\": 2}", &defs_tcg,
			"unknown field 'cpu'", NULL);
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"Name\": \"a\"}", &defs_tcg,
			"unknown field 'Name'", NULL);
	expect_bad_with("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\"}, {\"path\": \"/e\","
			" \"cache\": \"none\"}]}",
			&defs_tcg, "disks[1]: unknown field 'cache'", NULL);
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{\"colour\": \"red\"}]}",
			&defs_tcg, "nics[0]: unknown field 'colour'", NULL);
}

static void test_bad_cpus(void **state)
{
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 0}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 256}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": -1}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 1.5}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 2.0}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": \"2\"}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": true}", "cpus");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 4294967297}", "cpus");
}

static void test_bad_memory(void **state)
{
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 15}", "memory_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 4194305}", "memory_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": -512}", "memory_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": \"1G\"}", "memory_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 512.5}", "memory_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": [512]}", "memory_mib");
}

static void test_bad_accel(void **state)
{
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"accel\": \"xen\"}", "accel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"accel\": \"KVM\"}", "accel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"accel\": \"\"}", "accel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"accel\": \"kvm,x=y\"}", "accel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"accel\": 1}", "accel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"accel\": true}", "accel");
}

static void test_cpu_model(void **state)
{
	VmSpecDefaults defs = {.accel = VM_ACCEL_KVM, .check_files = false};
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\"}", &defs, &s);
	assert_null(s.cpu_model);
	vm_spec_clear(&s);
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"cpu_model\": \"EPYC-v4,+pdpe1gb,-svm\"}",
		 &defs, &s);
	assert_string_equal(s.cpu_model, "EPYC-v4,+pdpe1gb,-svm");
	json_t *j = vm_spec_to_json(&s);
	assert_string_equal(json_string_value(json_object_get(j, "cpu_model")),
			    "EPYC-v4,+pdpe1gb,-svm");
	json_decref(j);
	vm_spec_clear(&s);
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpu_model\": \"\"}", "cpu_model");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpu_model\": \",host\"}", "cpu_model");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpu_model\": \"host -S\"}",
		   "cpu_model");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cpu_model\": 3}", "cpu_model");
}

static void test_bad_machine(void **state)
{
	char text[256];
	char m65[66];
	memset(m65, 'm', 65);
	m65[65] = '\0';

	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": \"\"}", "machine");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": \"q35,accel=kvm\"}",
		   "machine");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": \"q35 \"}", "machine");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": \"q35\\n\"}", "machine");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": 35}", "machine");
	snprintf(text, sizeof(text), "{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": \"%s\"}",
		 m65);
	expect_bad(text, "machine");
	m65[64] = '\0'; /* 64 is the limit */
	VmSpec s;
	snprintf(text, sizeof(text), "{\"name\": \"a\", \"kernel\": \"/k\", \"machine\": \"%s\"}",
		 m65);
	parse_ok(text, &defs_tcg, &s);
	vm_spec_clear(&s);
}

/* Paths that are not absolute and normalised, for each field that holds a
 * path. */
static void check_bad_paths(const char *before, const char *after, const char *field)
{
	static const char *const bad[] = {
	    "vmlinuz",
	    "./vmlinuz",
	    "",
	    "/boot/../etc/shadow",
	    "/boot/./vmlinuz",
	    "//boot/vmlinuz",
	    "/boot//vmlinuz",
	    "/boot/",
	    "/",
	    "/boot/..",
	    "/boot/.",
	    "/boot/vm\\u0001linuz",
	    "/boot/vm\\u007flinuz",
	    "/boot/\\nx",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char text[512];
		snprintf(text, sizeof(text), "%s%s%s", before, bad[i], after);
		expect_bad(text, field);
	}
}

static void test_bad_paths(void **state)
{
	check_bad_paths("{\"name\": \"a\", \"kernel\": \"", "\"}", "kernel");
	check_bad_paths("{\"name\": \"a\", \"kernel\": \"/k\", \"initrd\": \"", "\"}", "initrd");
	check_bad_paths("{\"name\": \"a\", \"disks\": [{\"path\": \"", "\"}]}", "disks[0].path");
	check_bad_paths("{\"name\": \"a\", \"disks\": [{\"path\": \"/ok\"}, {\"path\": \"", "\"}]}",
			"disks[1].path");

	/* Names that merely contain dots are fine. */
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/boot/.hidden/..k/...\","
		 " \"disks\": [{\"path\": \"/a.b/c..d\"}]}",
		 &defs_tcg, &s);
	vm_spec_clear(&s);

	expect_bad("{\"name\": \"a\", \"kernel\": 5}", "kernel");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"initrd\": [\"/i\"]}", "initrd");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": true}]}", "disks[0].path");

	/* Length limits: 4095 bytes for a path. */
	char *p = malloc(4097 + 64);
	assert_non_null(p);
	p[0] = '/';
	memset(p + 1, 'k', 4095);
	p[4096] = '\0';
	json_auto_t *j = json_pack("{s:s, s:s}", "name", "a", "kernel", p);
	HsError err = {0};
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), -EINVAL);
	assert_true(hs_str_has_prefix(err.message, "kernel"));
	p[4095] = '\0';
	json_object_set_new(j, "kernel", json_string(p));
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), 0);
	vm_spec_clear(&s);
	free(p);
}

static void test_bad_cmdline(void **state)
{
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"cmdline\": 1}", "cmdline");
	char *c = malloc(4098);
	assert_non_null(c);
	memset(c, 'c', 4097);
	c[4097] = '\0';
	json_auto_t *j = json_pack("{s:s, s:s, s:s}", "name", "a", "kernel", "/k", "cmdline", c);
	VmSpec s;
	HsError err = {0};
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), -EINVAL);
	assert_true(hs_str_has_prefix(err.message, "cmdline"));
	c[4096] = '\0';
	json_object_set_new(j, "cmdline", json_string(c));
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), 0);
	vm_spec_clear(&s);
	free(c);
}

static void test_kernel_and_disk_rules(void **state)
{
	expect_bad_with("{\"name\": \"a\", \"initrd\": \"/i\", \"disks\": [{\"path\": \"/d\"}]}",
			&defs_tcg, "initrd", "kernel");
	expect_bad_with(
	    "{\"name\": \"a\", \"cmdline\": \"quiet\", \"disks\": [{\"path\": \"/d\"}]}", &defs_tcg,
	    "cmdline", "kernel");
	expect_bad_with("{\"name\": \"a\", \"initrd\": \"/i\", \"cmdline\": \"quiet\","
			" \"disks\": [{\"path\": \"/d\"}]}",
			&defs_tcg, "initrd", "kernel");
	expect_bad_with("{\"name\": \"a\"}", &defs_tcg, "kernel", "disk");
	expect_bad_with("{\"name\": \"a\", \"disks\": []}", &defs_tcg, "kernel", "disk");
	expect_bad_with("{\"name\": \"a\", \"disks\": null, \"nics\": [{}]}", &defs_tcg, "kernel",
			"disk");
}

static void test_managed_disks(void **state)
{
	json_auto_t *j = json_loads("{\"name\": \"a\", \"kernel\": \"/k\", \"disks\": ["
				    "{\"template\": \"debian-12\", \"size\": \"20G\"},"
				    "{\"size\": 1048576}, {\"template\": \"base\"}]}",
				    0, NULL);
	VmSpecDefaults d = {.accel = VM_ACCEL_TCG};
	VmSpec s;
	HsError err;
	assert_int_equal(vm_spec_from_json(j, &d, &s, &err), 0);
	assert_true(s.disks[0].managed);
	assert_string_equal(s.disks[0].template, "debian-12");
	assert_int_equal(s.disks[0].size, 20ull << 30);
	assert_null(s.disks[0].path);
	assert_true(s.disks[1].managed);
	assert_null(s.disks[1].template);
	assert_int_equal(s.disks[1].size, 1048576);
	assert_int_equal(s.disks[2].size, 0);
	/* Round trip through the stored form. */
	json_auto_t *out = vm_spec_to_json(&s);
	VmSpec s2;
	assert_int_equal(vm_spec_from_json(out, &d, &s2, &err), 0);
	assert_string_equal(s2.disks[0].template, "debian-12");
	assert_int_equal(s2.disks[0].size, 20ull << 30);
	assert_false(json_object_get(json_array_get(json_object_get(out, "disks"), 1), "path"));
	vm_spec_clear(&s);
	vm_spec_clear(&s2);
}

static void test_parse_size(void **state)
{
	uint64_t v;
	assert_int_equal(hs_parse_size("20G", &v), 0);
	assert_int_equal(v, 20ull << 30);
	assert_int_equal(hs_parse_size("512MiB", &v), 0);
	assert_int_equal(v, 512ull << 20);
	assert_int_equal(hs_parse_size("1.5T", &v), 0);
	assert_int_equal(v, 3ull << 39);
	assert_int_equal(hs_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(hs_parse_size("1.5", &v), -EINVAL);
	assert_int_equal(hs_parse_size("-1G", &v), -EINVAL);
	assert_int_equal(hs_parse_size("G", &v), -EINVAL);
	assert_int_equal(hs_parse_size("10 G", &v), -EINVAL);
	assert_int_equal(hs_parse_size("", &v), -EINVAL);
	assert_int_equal(hs_parse_size("99999999999T", &v), -EINVAL);
	assert_int_equal(hs_parse_size("1e3", &v), -EINVAL);
	assert_int_equal(hs_parse_size("0x10", &v), -EINVAL);
	assert_int_equal(hs_parse_size("nanG", &v), -EINVAL);
	assert_int_equal(hs_parse_size("1.2.3G", &v), -EINVAL);
	assert_int_equal(hs_parse_size(".5G", &v), -EINVAL);
}

static void test_bad_disks(void **state)
{
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"disks\": {}}", "disks");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"disks\": \"/d\"}", "disks");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"disks\": [\"/d\"]}", "disks[0]");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\"}, {}]}", "disks[1]: needs");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\"}, {\"path\": null}]}",
		   "disks[1]: needs");
	/* Managed disks: a template and/or a size, never with a path. */
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"template\": \"t\"}]}",
		   "disks[0]: either");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"size\": \"1G\"}]}",
		   "disks[0]: either");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"template\": \"../x\"}]}",
		   "disks[0].template");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"size\": \"12Q\"}]}", "disks[0].size");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"size\": -1}]}", "disks[0].size");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"size\": \"65T\"}]}", "disks[0].size");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"size\": \"1G\", \"format\": \"raw\"}]}",
		   "disks[0].format: a managed disk");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"format\": \"vmdk\"}]}",
		   "disks[0].format");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"format\": \"RAW\"}]}",
		   "disks[0].format");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"format\": 1}]}",
		   "disks[0].format");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"format\": \"\"}]}",
		   "disks[0].format");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"readonly\": \"yes\"}]}",
		   "disks[0].readonly");
	expect_bad("{\"name\": \"a\", \"disks\": [{\"path\": \"/d\", \"readonly\": 1}]}",
		   "disks[0].readonly");

	json_auto_t *j = json_pack("{s:s, s:[]}", "name", "a", "disks");
	for (int i = 0; i <= VM_MAX_DISKS; i++)
		json_array_append_new(json_object_get(j, "disks"),
				      json_pack("{s:s}", "path", "/d"));
	VmSpec s;
	HsError err = {0};
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), -EINVAL);
	assert_string_equal(err.kind, "invalid-spec");
	assert_true(hs_str_has_prefix(err.message, "disks"));
}

static void test_bad_nics(void **state)
{
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": {}}", "nics");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [\"user\"]}", "nics[0]");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{}, {\"type\": \"tap\"}]}",
		   "nics[1].type");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{\"type\": 1}]}",
		   "nics[0].type");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{\"type\": \"bridge\"}]}",
		   "nics[0].bridge");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\","
		   " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"\"}]}",
		   "nics[0].bridge");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\","
		   " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"br0,helper=/bin/sh\"}]}",
		   "nics[0].bridge");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\","
		   " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"br 0\"}]}",
		   "nics[0].bridge");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\","
		   " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"br/0\"}]}",
		   "nics[0].bridge");
	/* IFNAMSIZ: at most 15 characters. */
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\","
		   " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"bridge0123456789\"}]}",
		   "nics[0].bridge");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{\"type\": \"user\", "
		   "\"bridge\": \"br0\"}]}",
		   "nics[0].bridge");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\","
		   " \"nics\": [{\"type\": \"user\", \"bridge\": \"br0\"}]}",
		   "nics[0].bridge");

	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\","
		 " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"bridge012345678\"}]}",
		 &defs_tcg, &s);
	assert_string_equal(s.nics[0].bridge, "bridge012345678");
	vm_spec_clear(&s);

	json_auto_t *j = json_pack("{s:s, s:s, s:[]}", "name", "a", "kernel", "/k", "nics");
	for (int i = 0; i <= VM_MAX_NICS; i++)
		json_array_append_new(json_object_get(j, "nics"), json_object());
	HsError err = {0};
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, &err), -EINVAL);
	assert_true(hs_str_has_prefix(err.message, "nics"));
}

static void test_bad_macs(void **state)
{
	static const char *const bad[] = {
	    "52:54:00:12:34",	  "52:54:00:12:34:567",
	    "52-54-00-12-34-56",  "5254.0012.3456",
	    "52:54:00:12:34:5g",  "01:00:5e:00:00:01",
	    "ff:ff:ff:ff:ff:ff",  "53:54:00:12:34:56",
	    "52:54:00:12:34:56 ", "",
	    " 2:54:00:12:34:56",  "52::4:00:12:34:56",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char text[256];
		snprintf(text, sizeof(text),
			 "{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{}, {\"mac\": \"%s\"}]}",
			 bad[i]);
		expect_bad(text, "nics[1].mac");
	}
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": [{\"mac\": 5}]}",
		   "nics[0].mac");
}

#define NICS(x) "{\"name\": \"a\", \"kernel\": \"/k\", \"cpus\": 2, \"nics\": [" x "]}"

/* NIC ids, networks, models, queues, vhost, VLAN, link. */
static void test_nic_fields(void **state)
{
	VmSpec s;
	parse_ok(NICS("{\"network\": \"lan\", \"queues\": 4, \"vlan\": 10, \"vhost\": false,"
		      " \"link\": \"down\"},"
		      " {\"id\": \"net0\", \"type\": \"macvtap\", \"network\": \"mv\", \"model\": \"e1000\"},"
		      " {\"type\": \"vf\", \"network\": \"sr\", \"vlan\": 7}, {}"),
		 &defs_kvm, &s);
	assert_int_equal(s.n_nics, 4);
	/* Generated ids go around the given one. */
	assert_string_equal(s.nics[0].id, "net1");
	assert_string_equal(s.nics[1].id, "net0");
	assert_string_equal(s.nics[2].id, "net2");
	assert_string_equal(s.nics[3].id, "net3");
	assert_int_equal(s.nics[0].type, VM_NIC_NETWORK);
	assert_string_equal(s.nics[0].network, "lan");
	assert_int_equal(s.nics[0].queues, 4);
	assert_int_equal(vm_nic_queues(&s.nics[0], s.cpus), 4);
	assert_int_equal(s.nics[0].vlan, 10);
	assert_int_equal(s.nics[0].vhost, 0);
	assert_true(s.nics[0].link_down);
	assert_int_equal(s.nics[1].type, VM_NIC_MACVTAP);
	assert_int_equal(s.nics[1].model, VM_NIC_E1000);
	assert_int_equal(vm_nic_queues(&s.nics[1], s.cpus), 1); /* not virtio */
	assert_int_equal(s.nics[1].vhost, -1);
	assert_int_equal(s.nics[2].type, VM_NIC_VF);
	assert_int_equal(s.nics[3].type, VM_NIC_USER);
	assert_int_equal(vm_nic_queues(&s.nics[3], s.cpus), 1);
	/* Round trip: the same spec again, ids and all. */
	json_auto_t *j = vm_spec_to_json(&s);
	json_t *n0 = json_array_get(json_object_get(j, "nics"), 0);
	assert_null(json_object_get(n0, "type")); /* the network's */
	assert_string_equal(json_string_value(json_object_get(n0, "link")), "down");
	assert_true(json_is_false(json_object_get(n0, "vhost")));
	VmSpec again;
	HsError err = {0};
	assert_int_equal(vm_spec_from_json(j, &defs_kvm, &again, &err), 0);
	json_auto_t *j2 = vm_spec_to_json(&again);
	assert_true(json_equal(j, j2));
	vm_spec_clear(&again);
	vm_spec_clear(&s);

	/* Default queues: one per vCPU, at most VM_NIC_MAX_QUEUES. */
	VmNic n = {.type = VM_NIC_BRIDGE};
	assert_int_equal(vm_nic_queues(&n, 3), 3);
	assert_int_equal(vm_nic_queues(&n, 64), VM_NIC_MAX_QUEUES);

	expect_bad(NICS("{\"id\": \"x\"}, {\"id\": \"x\"}"), "nics[1].id");
	expect_bad(NICS("{\"id\": \"Net0\"}"), "nics[0].id");
	expect_bad(NICS("{\"id\": \"abcdefghijklmnop\"}"), "nics[0].id");
	expect_bad(NICS("{\"model\": \"ne2k\"}"), "nics[0].model");
	expect_bad(NICS("{\"network\": \"lan\", \"queues\": 9}"), "nics[0].queues");
	expect_bad(NICS("{\"queues\": 2}"), "nics[0].queues"); /* user networking */
	expect_bad(NICS("{\"network\": \"lan\", \"model\": \"e1000\", \"queues\": 2}"),
		   "nics[0].queues");
	expect_bad(NICS("{\"network\": \"lan\", \"vlan\": 4095}"), "nics[0].vlan");
	expect_bad(NICS("{\"vlan\": 5}"), "nics[0].vlan");
	expect_bad(NICS("{\"type\": \"macvtap\", \"network\": \"mv\", \"vlan\": 5}"), "nics[0].vlan");
	expect_bad(NICS("{\"type\": \"vf\"}"), "nics[0].network");
	expect_bad(NICS("{\"type\": \"user\", \"network\": \"lan\"}"), "nics[0].type");
	expect_bad(NICS("{\"type\": \"network\", \"network\": \"lan\"}"), "nics[0].type");
	expect_bad(NICS("{\"network\": \"Lan!\"}"), "nics[0].network");
	expect_bad(NICS("{\"network\": \"lan\", \"bridge\": \"br0\"}"), "nics[0].bridge");
	expect_bad(NICS("{\"network\": \"lan\", \"vhost\": 1}"), "nics[0].vhost");
	expect_bad(NICS("{\"network\": \"lan\", \"link\": \"off\"}"), "nics[0].link");
}

static void test_duplicate_macs(void **state)
{
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": ["
			"{\"mac\": \"52:54:00:00:00:01\"}, {\"mac\": \"52:54:00:00:00:02\"},"
			"{\"mac\": \"52:54:00:00:00:01\"}]}",
			&defs_tcg, "nics[2].mac", "nics[0]");
	/* Case does not make two MACs different. */
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"nics\": ["
			"{\"mac\": \"52:54:00:aa:bb:cc\"}, {\"mac\": \"52:54:00:AA:BB:CC\"}]}",
			&defs_tcg, "nics[1].mac", "nics[0]");
}

/* ---- files on disk ---- */

typedef struct Files {
	char *dir;
	char *kernel, *disk, *subdir, *unreadable, *missing;
} Files;

static int files_setup(void **state)
{
	Files *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->dir = test_tmpdir_new("spec");
	/* Let an unprivileged uid look inside (for the unreadable check). */
	assert_int_equal(chmod(f->dir, 0755), 0);
	f->kernel = hs_strdup_printf("%s/vmlinuz", f->dir);
	f->disk = hs_strdup_printf("%s/disk.img", f->dir);
	f->subdir = hs_strdup_printf("%s/adir", f->dir);
	f->unreadable = hs_strdup_printf("%s/secret.img", f->dir);
	f->missing = hs_strdup_printf("%s/missing.img", f->dir);
	test_write_file(f->kernel, "kernel", 6, 0644);
	test_write_file(f->disk, "disk", 4, 0644);
	test_write_file(f->unreadable, "disk", 4, 0000);
	assert_int_equal(mkdir(f->subdir, 0755), 0);
	*state = f;
	return 0;
}

static int files_teardown(void **state)
{
	Files *f = *state;
	test_tmpdir_remove(&f->dir);
	free(f->kernel);
	free(f->disk);
	free(f->subdir);
	free(f->unreadable);
	free(f->missing);
	free(f);
	return 0;
}

static int parse_files(const char *kernel, const char *disk, bool check, HsError *err)
{
	json_auto_t *j = json_pack("{s:s, s:s*, s:[{s:s}]}", "name", "a", "kernel", kernel, "disks",
				   "path", disk);
	assert_non_null(j);
	VmSpecDefaults d = {.accel = VM_ACCEL_TCG, .check_files = check};
	VmSpec s;
	int r = vm_spec_from_json(j, &d, &s, err);
	if (r == 0)
		vm_spec_clear(&s);
	return r;
}

static void expect_file_error(int r, const HsError *err, const char *field, const char *what)
{
	if (r != -EINVAL || strcmp(err->kind, "invalid-spec"))
		fail_msg("wanted -EINVAL/invalid-spec, got %d/'%s': %s", r, err->kind,
			 err->message);
	if (!hs_str_has_prefix(err->message, field) || !strstr(err->message, what))
		fail_msg("message '%s' should name '%s' and say '%s'", err->message, field, what);
}

static void test_check_files(void **state)
{
	Files *f = *state;
	HsError err = {0};

	/* Off: nothing is looked at. */
	assert_int_equal(parse_files(f->missing, f->missing, false, &err), 0);
	assert_int_equal(parse_files(f->subdir, f->subdir, false, &err), 0);
	/* On, with real files. */
	assert_int_equal(parse_files(f->kernel, f->disk, true, &err), 0);
	assert_int_equal(parse_files(NULL, f->disk, true, &err), 0);

	int r = parse_files(f->missing, f->disk, true, &err);
	expect_file_error(r, &err, "kernel", f->missing);
	r = parse_files(f->kernel, f->missing, true, &err);
	expect_file_error(r, &err, "disks[0].path", f->missing);
	r = parse_files(f->subdir, f->disk, true, &err);
	expect_file_error(r, &err, "kernel", "not a regular file");
	r = parse_files(f->kernel, f->subdir, true, &err);
	expect_file_error(r, &err, "disks[0].path", "not a regular file");

	/* initrd is checked too. */
	json_auto_t *j =
	    json_pack("{s:s, s:s, s:s}", "name", "a", "kernel", f->kernel, "initrd", f->missing);
	VmSpecDefaults d = {.accel = VM_ACCEL_TCG, .check_files = true};
	VmSpec s;
	r = vm_spec_from_json(j, &d, &s, &err);
	expect_file_error(r, &err, "initrd", f->missing);

	/* A symlink to a regular file is fine; a dangling one is not. */
	_cleanup_free_ char *link = hs_strdup_printf("%s/link", f->dir);
	_cleanup_free_ char *dangling = hs_strdup_printf("%s/dangling", f->dir);
	assert_int_equal(symlink(f->disk, link), 0);
	assert_int_equal(symlink(f->missing, dangling), 0);
	assert_int_equal(parse_files(f->kernel, link, true, &err), 0);
	r = parse_files(f->kernel, dangling, true, &err);
	expect_file_error(r, &err, "disks[0].path", dangling);
}

/* root reads every file whatever its mode, so the unreadable case runs in
 * a child that has given up root. The child reports through a pipe. */
typedef struct ChildResult {
	int r;
	HsError err;
} ChildResult;

static void test_check_files_unreadable(void **state)
{
	Files *f = *state;
	ChildResult res = {0};

	if (geteuid() != 0) {
		res.r = parse_files(f->kernel, f->unreadable, true, &res.err);
		if (res.r == 0)
			skip(); /* e.g. CAP_DAC_OVERRIDE without being root */
	} else {
		int p[2];
		assert_int_equal(pipe2(p, O_CLOEXEC), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			if (setresgid(65534, 65534, 65534) < 0 ||
			    setresuid(65534, 65534, 65534) < 0)
				_exit(2);
			res.r = parse_files(f->kernel, f->unreadable, true, &res.err);
			_exit(write(p[1], &res, sizeof(res)) == sizeof(res) ? 0 : 3);
		}
		close(p[1]);
		ssize_t n = read(p[0], &res, sizeof(res));
		close(p[0]);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
		assert_int_equal(n, sizeof(res));
	}
	expect_file_error(res.r, &res.err, "disks[0].path", "cannot read");
}

/* ---- round trip ---- */

static void assert_spec_equal(const VmSpec *a, const VmSpec *b)
{
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->cpus, b->cpus);
	assert_int_equal(a->memory_mib, b->memory_mib);
	assert_int_equal(a->accel, b->accel);
	assert_string_equal(a->machine, b->machine);
	assert_int_equal(a->hugepage_size, b->hugepage_size);
#define OPT_STR_EQ(x, y)                                                                           \
	do {                                                                                       \
		if ((x) || (y)) {                                                                  \
			assert_non_null(x);                                                        \
			assert_non_null(y);                                                        \
			assert_string_equal(x, y);                                                 \
		}                                                                                  \
	} while (0)
	OPT_STR_EQ(a->kernel, b->kernel);
	OPT_STR_EQ(a->initrd, b->initrd);
	OPT_STR_EQ(a->cmdline, b->cmdline);
	assert_int_equal(a->n_disks, b->n_disks);
	for (size_t i = 0; i < a->n_disks; i++) {
		assert_string_equal(a->disks[i].path, b->disks[i].path);
		assert_int_equal(a->disks[i].format, b->disks[i].format);
		assert_int_equal(a->disks[i].readonly, b->disks[i].readonly);
	}
	assert_int_equal(a->n_nics, b->n_nics);
	for (size_t i = 0; i < a->n_nics; i++) {
		assert_int_equal(a->nics[i].type, b->nics[i].type);
		OPT_STR_EQ(a->nics[i].bridge, b->nics[i].bridge);
		assert_string_equal(a->nics[i].mac, b->nics[i].mac);
	}
#undef OPT_STR_EQ
}

static void round_trip(const char *text, const VmSpecDefaults *defs)
{
	VmSpec a, b, c;
	parse_ok(text, defs, &a);
	json_auto_t *j = vm_spec_to_json(&a);
	assert_non_null(j);
	/* The stored form is explicit: parsing it under other defaults gives
	 * the same VM. */
	HsError err = {0};
	const VmSpecDefaults *other = defs->accel == VM_ACCEL_KVM ? &defs_tcg : &defs_kvm;
	if (vm_spec_from_json(j, other, &b, &err) < 0)
		fail_msg("to_json output refused: %s", err.message);
	assert_spec_equal(&a, &b);
	json_auto_t *j2 = vm_spec_to_json(&b);
	assert_true(json_equal(j, j2));

	assert_int_equal(vm_spec_copy(&a, &c), 0);
	assert_spec_equal(&a, &c);
	vm_spec_clear(&a);
	vm_spec_clear(&b);
	vm_spec_clear(&c);
}

static void test_round_trip(void **state)
{
	round_trip(full_spec, &defs_kvm);
	round_trip("{\"name\": \"vm1\", \"kernel\": \"/boot/vmlinuz\"}", &defs_kvm);
	round_trip("{\"name\": \"vm1\", \"disks\": [{\"path\": \"/d\"}]}", &defs_tcg);
	round_trip(
	    "{\"name\": \"q\", \"kernel\": \"/k\", \"cmdline\": \"a \\\"b\\\" 'c' \\u00e9\"}",
	    &defs_tcg);
}

static void test_balloon_floor(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 512, "
		 "\"balloon_mib\": 384, \"balloon_floor_mib\": 128}",
		 &defs_kvm, &s);
	assert_int_equal(s.balloon_floor_mib, 128);
	json_t *j = vm_spec_to_json(&s);
	assert_int_equal(json_integer_value(json_object_get(j, "balloon_floor_mib")), 128);
	json_decref(j);
	vm_spec_clear(&s);
	/* Absent or 0: not in the policy, and not in the stored form. */
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"balloon_floor_mib\": 0}", &defs_kvm,
		 &s);
	assert_int_equal(s.balloon_floor_mib, 0);
	j = vm_spec_to_json(&s);
	assert_null(json_object_get(j, "balloon_floor_mib"));
	json_decref(j);
	vm_spec_clear(&s);
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"balloon_floor_mib\": 15}",
		   "balloon_floor_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 512, "
		   "\"balloon_floor_mib\": 513}",
		   "balloon_floor_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"balloon_floor_mib\": -1}",
		   "balloon_floor_mib");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"balloon_floor_mib\": \"1G\"}",
		   "balloon_floor_mib");
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 512, "
			"\"balloon_mib\": 256, \"balloon_floor_mib\": 300}",
			&defs_tcg, "balloon_floor_mib", "balloon_mib");
}

static void test_mem_merge(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\"}", &defs_kvm, &s);
	assert_false(s.no_mem_merge);
	vm_spec_clear(&s);
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"mem_merge\": false}", &defs_kvm, &s);
	assert_true(s.no_mem_merge);
	json_t *j = vm_spec_to_json(&s);
	assert_true(json_is_false(json_object_get(j, "mem_merge")));
	json_decref(j);
	vm_spec_clear(&s);
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"mem_merge\": \"no\"}", "mem_merge");
}

/* "hugepages": a size string, stored canonically; memory a whole number of
 * pages; no balloon target with it; KSM said not to apply. */
static void test_hugepages(void **state)
{
	static const struct {
		const char *given, *stored;
		uint64_t size;
	} ok[] = {
	    {"2M", "2M", 2ull << 20},	   {"2MiB", "2M", 2ull << 20}, {"2048K", "2M", 2ull << 20},
	    {"1G", "1G", 1ull << 30},	   {"1GiB", "1G", 1ull << 30}, {"64K", "64K", 64ull << 10},
	    {"16G", "16G", 16ull << 30}, {"32M", "32M", 32ull << 20},
	};
	char text[256];
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		VmSpec s;
		snprintf(text, sizeof(text),
			 "{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 16384, "
			 "\"hugepages\": \"%s\"}",
			 ok[i].given);
		parse_ok(text, &defs_kvm, &s);
		assert_int_equal(s.hugepage_size, ok[i].size);
		json_auto_t *j = vm_spec_to_json(&s);
		assert_string_equal(json_string_value(json_object_get(j, "hugepages")), ok[i].stored);
		assert_non_null(strstr(vm_spec_ksm_excluded(&s), "huge pages"));
		vm_spec_clear(&s);
		round_trip(text, &defs_tcg);
	}
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"hugepages\": null}", &defs_kvm, &s);
	assert_int_equal(s.hugepage_size, 0);
	assert_null(vm_spec_ksm_excluded(&s));
	json_auto_t *j = vm_spec_to_json(&s);
	assert_null(json_object_get(j, "hugepages"));
	s.no_mem_merge = true;
	assert_string_equal(vm_spec_ksm_excluded(&s), "mem_merge is false");
	vm_spec_clear(&s);

	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 129, "
			"\"hugepages\": \"2M\"}",
			&defs_tcg, "memory_mib: 129 is not a whole number of 2M huge pages",
			"multiple of 2");
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 1536, "
			"\"hugepages\": \"1G\"}",
			&defs_tcg, "memory_mib", "multiple of 1024");
	static const char *const bad[] = {"\"3M\"", "\"0\"",   "\"4K\"",    "\"32G\"", "\"2X\"",
					  "\"\"",	  "\"-2M\"", "\"1.5M\"", "2",	     "true"};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(text, sizeof(text),
			 "{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 1024, "
			 "\"hugepages\": %s}",
			 bad[i]);
		expect_bad(text, "hugepages: ");
	}
	expect_bad_with("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_mib\": 128, "
			"\"hugepages\": \"2M\", \"balloon_mib\": 64}",
			&defs_tcg, "balloon_mib: not with hugepages", NULL);

	char buf[16];
	assert_string_equal(vm_hugepages_to_string(2ull << 20, buf, sizeof(buf)), "2M");
	assert_string_equal(vm_hugepages_to_string(1ull << 30, buf, sizeof(buf)), "1G");
	assert_string_equal(vm_hugepages_to_string(1ull << 40, buf, sizeof(buf)), "1T");
	assert_string_equal(vm_hugepages_to_string(3ull << 20, buf, sizeof(buf)), "3M");
}

static void test_to_json_shape(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"vm1\", \"kernel\": \"/k\","
		 " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"br0\","
		 " \"mac\": \"52:54:00:00:00:09\"}],"
		 " \"disks\": [{\"path\": \"/d\", \"format\": \"raw\"}]}",
		 &defs_kvm, &s);
	json_auto_t *j = vm_spec_to_json(&s);
	json_auto_t *want = load("{\"name\": \"vm1\", \"cpus\": 1, \"memory_mib\": 512,"
				 " \"accel\": \"kvm\", \"machine\": \"q35\", \"kernel\": \"/k\","
				 " \"mem_merge\": true,"
				 " \"disks\": [{\"path\": \"/d\", \"format\": \"raw\","
				 " \"readonly\": false}],"
				 " \"nics\": [{\"type\": \"bridge\", \"bridge\": \"br0\","
				 " \"mac\": \"52:54:00:00:00:09\", \"id\": \"net0\","
				 " \"model\": \"virtio\", \"link\": \"up\"}]}");
	if (!json_equal(j, want)) {
		_cleanup_free_ char *got = json_dumps(j, JSON_SORT_KEYS);
		fail_msg("to_json gave %s", got);
	}
	vm_spec_clear(&s);
}

static void test_enum_strings(void **state)
{
	assert_string_equal(vm_accel_to_string(VM_ACCEL_KVM), "kvm");
	assert_string_equal(vm_accel_to_string(VM_ACCEL_TCG), "tcg");
	assert_string_equal(vm_disk_format_to_string(VM_DISK_QCOW2), "qcow2");
	assert_string_equal(vm_disk_format_to_string(VM_DISK_RAW), "raw");
	assert_string_equal(vm_nic_type_to_string(VM_NIC_USER), "user");
	assert_string_equal(vm_nic_type_to_string(VM_NIC_BRIDGE), "bridge");
}

/* A NULL error object is allowed. */
static void test_null_err(void **state)
{
	json_auto_t *j = load("{\"name\": \"A\"}");
	VmSpec s;
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &s, NULL), -EINVAL);
}

#define K "\"name\":\"g\",\"kernel\":\"/k\""
static void test_hostdevs(void **state)
{
	VmSpec s;
	parse_ok("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\",\"x_vga\":true,"
		 "\"rom_file\":\"/r.rom\",\"rom_bar\":false,\"display\":\"off\"},"
		 "{\"id\":\"10DE:1b80\",\"index\":1,\"all_functions\":false}],"
		 "\"hotplug_ports\":2}",
		 &defs_tcg, &s);
	assert_int_equal(s.n_hostdevs, 2);
	assert_string_equal(s.hostdevs[0].address, "0000:01:00.0");
	assert_true(s.hostdevs[0].x_vga);
	assert_true(s.hostdevs[0].rom_bar_off);
	assert_string_equal(s.hostdevs[0].rom_file, "/r.rom");
	assert_string_equal(s.hostdevs[0].display, "off");
	assert_int_equal(s.hostdevs[0].all_functions, -1);
	assert_string_equal(s.hostdevs[1].address, "");
	assert_int_equal(s.hostdevs[1].vendor, 0x10de);
	assert_int_equal(s.hostdevs[1].device, 0x1b80);
	assert_int_equal(s.hostdevs[1].index, 1);
	assert_int_equal(s.hostdevs[1].all_functions, 0);
	assert_int_equal(s.hotplug_ports, 2);
	/* Round trip through the stored form. */
	json_auto_t *j = vm_spec_to_json(&s);
	VmSpec c;
	assert_int_equal(vm_spec_from_json(j, &defs_tcg, &c, NULL), 0);
	json_auto_t *j2 = vm_spec_to_json(&c);
	assert_true(json_equal(j, j2));
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(j, "hostdevs"), 1), "id")),
			    "10de:1b80");
	vm_spec_clear(&c);
	vm_spec_clear(&s);

	expect_bad("{" K ",\"hostdevs\":{}}", "hostdevs: must be an array");
	expect_bad("{" K ",\"hostdevs\":[{}]}", "hostdevs[0]: give either 'address'");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"1:2:3\"}]}", "hostdevs[0].address:");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"00:20.0\"}]}", "hostdevs[0].address:");
	expect_bad("{" K ",\"hostdevs\":[{\"id\":\"10de-1b80\"}]}", "hostdevs[0].id:");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\",\"index\":1}]}",
		   "hostdevs[0].index: only with 'id'");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\",\"display\":\"x\"}]}",
		   "hostdevs[0].display:");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\",\"rom_file\":\"r\"}]}",
		   "hostdevs[0].rom_file:");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\",\"bogus\":1}]}",
		   "hostdevs[0]: unknown field 'bogus'");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\"},{\"address\":\"0000:01:00.0\"}]}",
		   "hostdevs[1]: 0000:01:00.0 already given as hostdevs[0]");
	expect_bad("{" K ",\"hostdevs\":[{\"address\":\"01:00.0\",\"x_vga\":true},"
		   "{\"address\":\"02:00.0\",\"x_vga\":true}]}",
		   "hostdevs[1].x_vga: only one");
	expect_bad("{" K ",\"machine\":\"pc\",\"hotplug_ports\":1}", "hotplug_ports: only for q35");
	expect_bad("{" K ",\"hotplug_ports\":9}", "hotplug_ports: must be an integer");
}
#undef K

/* memory_file: a vmgenid made when absent, kept when given; vmgenid and
 * warm_template only with memory_file; not with hugepages. */
static void test_memory_file(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_file\": true}", &defs_tcg, &s);
	assert_true(s.memory_file);
	assert_int_equal(strlen(s.vmgenid), 36);
	assert_int_equal(s.vmgenid[14], '4');
	json_auto_t *j = vm_spec_to_json(&s);
	assert_string_equal(json_string_value(json_object_get(j, "vmgenid")), s.vmgenid);
	assert_true(json_is_true(json_object_get(j, "memory_file")));
	vm_spec_clear(&s);
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_file\": true, \"vmgenid\": "
		 "\"6b167dea-0b91-47d4-923d-b6b658db710b\", \"warm_template\": \"t1\"}",
		 &defs_tcg, &s);
	assert_string_equal(s.vmgenid, "6b167dea-0b91-47d4-923d-b6b658db710b");
	assert_string_equal(s.warm_template, "t1");
	vm_spec_clear(&s);
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\"}", &defs_tcg, &s);
	assert_false(s.memory_file);
	assert_string_equal(s.vmgenid, "");
	vm_spec_clear(&s);
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"vmgenid\": "
		   "\"6b167dea-0b91-47d4-923d-b6b658db710b\"}",
		   "vmgenid: only with memory_file");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_file\": true, "
		   "\"vmgenid\": \"xyz\"}",
		   "vmgenid: 'xyz' is not a GUID");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"warm_template\": \"t\"}",
		   "warm_template: only with memory_file");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"memory_file\": true, "
		   "\"memory_mib\": 1024, \"hugepages\": \"2M\"}",
		   "memory_file: not with hugepages");
}

/* "firmware", "secure_boot", "tpm": absent is BIOS without a TPM (and
 * stays absent in the stored form); Secure Boot only with UEFI on q35. */
static void test_firmware(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\"}", &defs_tcg, &s);
	assert_int_equal(s.firmware, VM_FIRMWARE_BIOS);
	assert_false(s.secure_boot);
	assert_false(s.tpm);
	json_auto_t *j0 = vm_spec_to_json(&s);
	assert_null(json_object_get(j0, "firmware"));
	assert_null(json_object_get(j0, "secure_boot"));
	assert_null(json_object_get(j0, "tpm"));
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"firmware\": \"uefi\", "
		 "\"secure_boot\": true, \"tpm\": true}",
		 &defs_tcg, &s);
	assert_int_equal(s.firmware, VM_FIRMWARE_UEFI);
	assert_true(s.secure_boot);
	assert_true(s.tpm);
	VmSpec c;
	assert_int_equal(vm_spec_copy(&s, &c), 0);
	assert_int_equal(c.firmware, VM_FIRMWARE_UEFI);
	assert_true(c.secure_boot);
	assert_true(c.tpm);
	json_auto_t *j1 = vm_spec_to_json(&c);
	assert_string_equal(json_string_value(json_object_get(j1, "firmware")), "uefi");
	vm_spec_clear(&c);
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"firmware\": \"bios\", \"tpm\": true}",
		 &defs_tcg, &s);
	assert_int_equal(s.firmware, VM_FIRMWARE_BIOS);
	assert_true(s.tpm);
	vm_spec_clear(&s);

	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"firmware\": \"efi\"}",
		   "firmware: must be \"bios\" or \"uefi\"");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"firmware\": 1}", "firmware:");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"secure_boot\": true}",
		   "secure_boot: only with \"firmware\": \"uefi\"");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"firmware\": \"uefi\", "
		   "\"machine\": \"pc\", \"secure_boot\": true}",
		   "secure_boot: needs a q35 machine");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"tpm\": \"yes\"}",
		   "tpm: must be true or false");
}

/* "agent": false by default (and absent from the stored form), true
 * kept through a round trip, nothing but a boolean. */
static void test_agent(void **state)
{
	VmSpec s, c;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\"}", &defs_tcg, &s);
	assert_false(s.agent);
	json_auto_t *j0 = vm_spec_to_json(&s);
	assert_null(json_object_get(j0, "agent"));
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"agent\": false}", &defs_tcg, &s);
	assert_false(s.agent);
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"agent\": true}", &defs_tcg, &s);
	assert_true(s.agent);
	json_auto_t *j1 = vm_spec_to_json(&s);
	assert_true(json_is_true(json_object_get(j1, "agent")));
	assert_int_equal(vm_spec_copy(&s, &c), 0);
	assert_true(c.agent);
	vm_spec_clear(&c);
	vm_spec_clear(&s);

	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"agent\": \"yes\"}",
		   "agent: must be true or false");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"agent\": 1}",
		   "agent: must be true or false");
}

/* "display": absent is headless (and stays absent in the stored form);
 * a type, and a TCP address only with a display. */
static void test_display(void **state)
{
	VmSpec s;
	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\"}", &defs_tcg, &s);
	assert_int_equal(s.display.type, VM_DISPLAY_NONE);
	assert_string_equal(s.display.listen, "");
	json_auto_t *j0 = vm_spec_to_json(&s);
	assert_null(json_object_get(j0, "display"));
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": {\"type\": \"none\"}}",
		 &defs_tcg, &s);
	assert_int_equal(s.display.type, VM_DISPLAY_NONE);
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": null}", &defs_tcg, &s);
	assert_int_equal(s.display.type, VM_DISPLAY_NONE);
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": {\"type\": \"virtio\"}}",
		 &defs_tcg, &s);
	assert_int_equal(s.display.type, VM_DISPLAY_VIRTIO);
	json_auto_t *j1 = vm_spec_to_json(&s);
	json_t *d = json_object_get(j1, "display");
	assert_string_equal(json_string_value(json_object_get(d, "type")), "virtio");
	assert_null(json_object_get(d, "listen"));
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", "
		 "\"display\": {\"type\": \"qxl\", \"listen\": \"::1\"}}",
		 &defs_tcg, &s);
	assert_int_equal(s.display.type, VM_DISPLAY_QXL);
	assert_string_equal(s.display.listen, "::1");
	json_auto_t *j2 = vm_spec_to_json(&s);
	d = json_object_get(j2, "display");
	assert_string_equal(json_string_value(json_object_get(d, "listen")), "::1");
	/* The stored form parses back to the same. */
	VmSpec c;
	assert_int_equal(vm_spec_copy(&s, &c), 0);
	assert_int_equal(c.display.type, VM_DISPLAY_QXL);
	assert_string_equal(c.display.listen, "::1");
	vm_spec_clear(&c);
	vm_spec_clear(&s);

	parse_ok("{\"name\": \"a\", \"kernel\": \"/k\", "
		 "\"display\": {\"type\": \"virtio\", \"listen\": \"127.0.0.1\"}}",
		 &defs_tcg, &s);
	assert_string_equal(s.display.listen, "127.0.0.1");
	vm_spec_clear(&s);

	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": \"virtio\"}",
		   "display: must be an object");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": {}}",
		   "display.type: required");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": {\"type\": \"vnc\"}}",
		   "display.type: must be");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", \"display\": {\"type\": 1}}",
		   "display.type: must be");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", "
		   "\"display\": {\"type\": \"virtio\", \"port\": 5900}}",
		   "display: unknown field 'port'");
	static const char *const bad_listen[] = {"localhost", "127.0.0.1,port=1", "1.2.3",
						 "", "0.0.0.0:5900", "fe80::1%eth0"};
	char text[256];
	for (size_t i = 0; i < ARRAY_SIZE(bad_listen); i++) {
		snprintf(text, sizeof(text),
			 "{\"name\": \"a\", \"kernel\": \"/k\", "
			 "\"display\": {\"type\": \"virtio\", \"listen\": \"%s\"}}",
			 bad_listen[i]);
		expect_bad(text, "display.listen: ");
	}
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", "
		   "\"display\": {\"type\": \"virtio\", \"listen\": 1}}",
		   "display.listen: must be a string");
	expect_bad("{\"name\": \"a\", \"kernel\": \"/k\", "
		   "\"display\": {\"type\": \"none\", \"listen\": \"127.0.0.1\"}}",
		   "display.listen: only with a display");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_minimal_kernel),
	    cmocka_unit_test(test_minimal_disk),
	    cmocka_unit_test(test_nulls_are_defaults),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_limits_accepted),
	    cmocka_unit_test(test_generated_macs_differ_between_parses),
	    cmocka_unit_test(test_name_is_valid),
	    cmocka_unit_test(test_name_in_spec),
	    cmocka_unit_test(test_name_with_nul),
	    cmocka_unit_test(test_not_an_object),
	    cmocka_unit_test(test_unknown_fields),
	    cmocka_unit_test(test_bad_cpus),
	    cmocka_unit_test(test_bad_memory),
	    cmocka_unit_test(test_bad_accel),
	    cmocka_unit_test(test_bad_machine),
		cmocka_unit_test(test_cpu_model),
		cmocka_unit_test(test_mem_merge),
	    cmocka_unit_test(test_bad_paths),
	    cmocka_unit_test(test_bad_cmdline),
	    cmocka_unit_test(test_kernel_and_disk_rules),
	    cmocka_unit_test(test_bad_disks),
	    cmocka_unit_test(test_managed_disks),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_bad_nics),
	    cmocka_unit_test(test_bad_macs),
	    cmocka_unit_test(test_duplicate_macs),
	    cmocka_unit_test(test_nic_fields),
	    cmocka_unit_test_setup_teardown(test_check_files, files_setup, files_teardown),
	    cmocka_unit_test_setup_teardown(test_check_files_unreadable, files_setup,
					    files_teardown),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_hugepages),
	    cmocka_unit_test(test_balloon_floor),
	    cmocka_unit_test(test_to_json_shape),
	    cmocka_unit_test(test_enum_strings),
	    cmocka_unit_test(test_null_err),
	    cmocka_unit_test(test_hostdevs),
	    cmocka_unit_test(test_memory_file),
	    cmocka_unit_test(test_display),
	    cmocka_unit_test(test_firmware),
	    cmocka_unit_test(test_agent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
