/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the cloud-init NoCloud volume: validation of each field
 * (accepted and refused, with the words of the error), the instance-id,
 * meta-data that no value can inject keys into (parsed back with libyaml),
 * and the ISO itself, read back with real ISO readers (isoinfo from
 * genisoimage, osirrox from xorriso): volume id, Rock Ridge and Joliet
 * names, every file's exact content, and byte-identical output for the
 * same input. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <yaml.h>

#include "cloudinit.h"
#include "test-helpers.h"

/* Real keys made by ssh-keygen for these tests (their private halves were
 * thrown away). */
#define KEY_ED25519                                                                                \
	"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIXZPUvFva1pk3rRe8MbrymVz/eC2lzvUGvNQvPLWVYY "        \
	"alice@example"
#define KEY_RSA_B64                                                                                \
	"AAAAB3NzaC1yc2EAAAADAQABAAAAgQDFULlthktNBpJa1/kVGZL7ho/"                                  \
	"lEI3qHW4LVlzHClI+jF+OG3a3qBcv1IdGb"                                                       \
	"vkdUkbpX6zv9E9+XUFSQSfDvwVMxmEGpXuUuXM5e9+G6b0gMs+8ITvd/"                                 \
	"bT4kRLGvsltI1modyVoF4VT1GbuKj2J53"                                                        \
	"amnkdCO32qK5FX69+oRoTYkQ=="
#define KEY_RSA "ssh-rsa " KEY_RSA_B64 " bob@example"
#define KEY_ECDSA256                                                                               \
	"ecdsa-sha2-nistp256 "                                                                     \
	"AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBN1qxLm2xoIgghgntoxXmu7APESv+c/"      \
	"Eb1AUwqQ8HFWLWB3EKrjek2LIeU27mT2ByKabDu6B1naOQ3OV7SOVkw8= carol@example"
#define KEY_ECDSA521                                                                               \
	"ecdsa-sha2-nistp521 "                                                                     \
	"AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAGVKePViq0TEjvmv9w70fUYxDBAtd9Nahvr" \
	"r"                                                                                        \
	"XRxExQ3IuVhZZTLZKb5luVkOr3IXjauQO8yJpKOdh0j62tFZRT6pAGCgLxDxXGe9fnZK36KiitT+lG9LaJ/"      \
	"a53y7TW7x/wlfXzulI0YWdBzFVqcevUxTHHelsHKLJXlqN7rqEVBJpm29w=="

#define PRIVATE_KEY                                                                                \
	"-----BEGIN OPENSSH PRIVATE KEY-----\n"                                                    \
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"                 \
	"QyNTUxOQAAACCF2T1Lxb2taZN60XvDG68plc/3gtpc71BrzULzy1lWGAAAAJCd9f50nfX+\n"                 \
	"-----END OPENSSH PRIVATE KEY-----\n"

/* ------------------------------------------------------------------------ */
/* Helpers */

static void expect_ok(const CloudInitConfig *cfg)
{
	HsError err = {0};
	int r = cloudinit_config_validate(cfg, &err);
	if (r != 0)
		fail_msg("expected valid, got %d: %s", r, err.message);
}

static void expect_invalid(const CloudInitConfig *cfg, const char *field, const char *what)
{
	HsError err = {0};
	int r = cloudinit_config_validate(cfg, &err);
	if (r != -EINVAL)
		fail_msg("expected -EINVAL mentioning '%s', got %d", what, r);
	assert_string_equal(err.kind, "invalid-spec");
	assert_int_equal(err.code, -EINVAL);
	if (!strstr(err.message, field) || !strstr(err.message, what))
		fail_msg("message '%s' lacks '%s' or '%s'", err.message, field, what);
}

#define U(s) (&(CloudInitConfig){.user_data = (char *)(s)})
#define N(s) (&(CloudInitConfig){.network_config = (char *)(s)})
#define K(s) (&(CloudInitConfig){.ssh_key = (char *)(s)})
#define H(s) (&(CloudInitConfig){.hostname = (char *)(s)})

/* A text of exactly len bytes: prefix, then filler. */
static char *make_text(const char *prefix, char fill, size_t len)
{
	char *s = malloc(len + 1);
	assert_non_null(s);
	memset(s, fill, len);
	memcpy(s, prefix, strlen(prefix));
	s[len] = '\0';
	return s;
}

static char *b64_encode(const unsigned char *in, size_t len)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	assert_non_null(out);
	for (size_t i = 0; i < len; i += 3) {
		uint32_t w = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			w |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			w |= in[i + 2];
		*o++ = tab[(w >> 18) & 63];
		*o++ = tab[(w >> 12) & 63];
		*o++ = i + 1 < len ? tab[(w >> 6) & 63] : '=';
		*o++ = i + 2 < len ? tab[w & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* An SSH key blob from its string fields: each uint32 BE length + bytes. */
static size_t blob_add(unsigned char *blob, size_t pos, const void *data, size_t len)
{
	blob[pos] = (unsigned char)(len >> 24);
	blob[pos + 1] = (unsigned char)(len >> 16);
	blob[pos + 2] = (unsigned char)(len >> 8);
	blob[pos + 3] = (unsigned char)len;
	memcpy(blob + pos + 4, data, len);
	return pos + 4 + len;
}

/* "<line_type> <base64 of a blob of blob_type with n_fields fields>". */
static char *make_key(const char *line_type, const char *blob_type, int n_fields)
{
	unsigned char blob[512], field[32];
	memset(field, 0x5a, sizeof(field));
	size_t pos = blob_add(blob, 0, blob_type, strlen(blob_type));
	for (int i = 1; i < n_fields; i++)
		pos = blob_add(blob, pos, field, sizeof(field));
	_cleanup_free_ char *b64 = b64_encode(blob, pos);
	return hs_strdup_printf("%s %s made-up@test", line_type, b64);
}

/* ------------------------------------------------------------------------ */
/* user_data */

static void test_user_data_accepted(void **state)
{
	(void)state;
	expect_ok(U("#cloud-config\n"));
	expect_ok(U("#cloud-config"));
	expect_ok(U("#cloud-config\r\npackages: [htop]\r\n"));
	expect_ok(U("#cloud-config\n"
		    "users:\n"
		    "  - name: alice\n"
		    "    ssh_authorized_keys: [\"" KEY_ED25519 "\"]\n"
		    "runcmd:\n"
		    "  - [sh, -c, 'echo hello > /tmp/x']\n"
		    "write_files:\n"
		    "  - path: /etc/motd\n"
		    "    content: |\n"
		    "      héllo wörld ✓\n"));
	expect_ok(U("#!/bin/sh\necho hello\n"));
	expect_ok(U("#! /usr/bin/env python3\nprint('x')"));
	expect_ok(U("#cloud-boothook\n#!/bin/sh\necho boot\n"));
	expect_ok(U("Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\n"));
	expect_ok(U("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\n"));
	/* NULL: the default, valid by construction. */
	expect_ok(&(CloudInitConfig){0});
}

static void test_user_data_bad_yaml(void **state)
{
	(void)state;
	/* The flow list opened on line 3 never closes: libyaml's problem,
	 * where it found it and where the list began. */
	expect_invalid(U("#cloud-config\na: 1\nb: [1, 2\nc: 3\n"), "cloud_init.user_data",
		       "not valid YAML");
	expect_invalid(U("#cloud-config\na: 1\nb: [1, 2\nc: 3\n"), "cloud_init.user_data",
		       "flow sequence at line 3");
	/* A tab used for indentation, line 3. */
	expect_invalid(U("#cloud-config\nfoo:\n\tbar: 1\n"), "cloud_init.user_data",
		       "found character that cannot start any token at line 3, column 1");
	/* Bad indentation on line 4. */
	expect_invalid(U("#cloud-config\nusers:\n  - name: a\n   shell: /bin/sh\n"),
		       "cloud_init.user_data", "line 4");
	/* Not UTF-8 (line 2, column 4). */
	expect_invalid(U("#cloud-config\na: \xff\n"), "cloud_init.user_data",
		       "invalid leading UTF-8 octet at line 2, column 4");
	/* Valid YAML, but not a mapping. */
	expect_invalid(
	    U("#cloud-config\n- a\n- b\n"), "cloud_init.user_data",
	    "must be a YAML mapping at the top level (\"key: value\" lines), not a list");
	expect_invalid(U("#cloud-config\njust some words\n"), "cloud_init.user_data",
		       "not a scalar");
	expect_invalid(U("#cloud-config\na: 1\n---\nb: 2\n"), "cloud_init.user_data",
		       "more than one YAML document ('---' at line 3)");
	expect_invalid(U("#cloud-config\na: *nowhere\n"), "cloud_init.user_data", "not valid YAML");
}

static void test_user_data_formats_refused(void **state)
{
	(void)state;
	const char *what = "must start with '#cloud-config' (a cloud-config YAML mapping), '#!' "
			   "(a script), '#cloud-boothook', or be a MIME multi-part message";
	expect_invalid(U(""), "cloud_init.user_data", what);
	expect_invalid(U("hello\n"), "cloud_init.user_data", what);
	expect_invalid(U(" #cloud-config\n"), "cloud_init.user_data", what);
	expect_invalid(U("#cloud-config-archive\n- a\n"), "cloud_init.user_data", what);
	expect_invalid(U("#include\nhttp://x\n"), "cloud_init.user_data", what);
	expect_invalid(U("Content-Type: text/plain\n\nhi"), "cloud_init.user_data", what);
	expect_invalid(U("{\"a\": 1}"), "cloud_init.user_data", what);
	/* Scripts need an interpreter and a body. */
	expect_invalid(U("#!\necho hi\n"), "cloud_init.user_data", "names no interpreter");
	expect_invalid(U("#!   \necho hi\n"), "cloud_init.user_data", "names no interpreter");
	expect_invalid(U("#!/bin/sh"), "cloud_init.user_data", "script is empty after its '#!'");
	expect_invalid(U("#!/bin/sh\n \n\t\n"), "cloud_init.user_data",
		       "script is empty after its '#!'");
}

static void test_user_data_size(void **state)
{
	(void)state;
	_cleanup_free_ char *max = make_text("#!/bin/sh\n", '#', CLOUDINIT_USER_DATA_MAX);
	expect_ok(U(max));
	_cleanup_free_ char *over = make_text("#!/bin/sh\n", '#', CLOUDINIT_USER_DATA_MAX + 1);
	expect_invalid(U(over), "cloud_init.user_data",
		       "1048577 bytes, more than the limit of 1 MiB");
	/* The limit applies before any parsing. */
	_cleanup_free_ char *yaml = make_text("#cloud-config\n", '\n', CLOUDINIT_USER_DATA_MAX + 1);
	expect_invalid(U(yaml), "cloud_init.user_data", "limit of 1 MiB");
}

/* ------------------------------------------------------------------------ */
/* network_config */

static void test_network_config(void **state)
{
	(void)state;
	expect_ok(N("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"));
	expect_ok(N("network:\n  version: 2\n  ethernets:\n    id0:\n      match: {macaddress: "
		    "'52:54:00:12:34:56'}\n      addresses: [192.0.2.10/24]\n"));
	expect_ok(N("{version: 2}"));
	expect_ok(N("version: \"2\"\n"));

	expect_invalid(N("version: 1\nconfig:\n  - type: physical\n    name: eth0\n"),
		       "cloud_init.network_config",
		       "network config version 1 is not supported: only version 2 is supported");
	expect_invalid(N("network:\n  version: 1\n  config: []\n"), "cloud_init.network_config",
		       "only version 2 is supported (netplan style, line 2)");
	expect_invalid(N("version: 3\n"), "cloud_init.network_config",
		       "'version' must be 2 (line 1)");
	expect_invalid(N("version: [2]\n"), "cloud_init.network_config", "'version' must be 2");
	expect_invalid(N("ethernets: {}\n"), "cloud_init.network_config", "no 'version'");
	expect_invalid(N("network: 2\n"), "cloud_init.network_config", "no 'version'");
	expect_invalid(N("- version: 2\n"), "cloud_init.network_config",
		       "must be a YAML mapping with 'version: 2', not a list");
	expect_invalid(N(""), "cloud_init.network_config", "is empty");
	expect_invalid(N("# only a comment\n"), "cloud_init.network_config", "is empty");
	expect_invalid(N("version: 2\nethernets: {eth0: {dhcp4: true}\n"),
		       "cloud_init.network_config", "not valid YAML");
	expect_invalid(N("version: 2\nethernets:\n  eth0: x\n bad: y\n"),
		       "cloud_init.network_config", "line 4");

	_cleanup_free_ char *max = make_text("version: 2\n", '#', CLOUDINIT_NETWORK_CONFIG_MAX);
	expect_ok(N(max));
	_cleanup_free_ char *over =
	    make_text("version: 2\n#", ' ', CLOUDINIT_NETWORK_CONFIG_MAX + 1);
	expect_invalid(N(over), "cloud_init.network_config", "65537 bytes, more than the limit");
}

/* ------------------------------------------------------------------------ */
/* ssh_key */

static void test_ssh_key_accepted(void **state)
{
	(void)state;
	expect_ok(K(KEY_ED25519));
	expect_ok(K(KEY_RSA));
	expect_ok(K(KEY_ECDSA256));
	expect_ok(K(KEY_ECDSA521));
	expect_ok(K("ssh-rsa " KEY_RSA_B64)); /* no comment */
	expect_ok(K("# team keys\n\n" KEY_ED25519 "\r\n  " KEY_RSA "  \n\t\n# end\n"));
	expect_ok(K(KEY_ED25519 " a comment: with {yaml} \"chars\" & 'quotes' #x"));
	expect_ok(
	    K("ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIIXZPUvFva1pk3rRe8MbrymVz/eC2lzvUGvNQvPLWVYY"));
	/* Security keys, whose blobs also carry the application. */
	_cleanup_free_ char *sk =
	    make_key("sk-ssh-ed25519@openssh.com", "sk-ssh-ed25519@openssh.com", 3);
	expect_ok(K(sk));
	_cleanup_free_ char *ske =
	    make_key("sk-ecdsa-sha2-nistp256@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", 4);
	expect_ok(K(ske));
}

static void test_ssh_key_refused(void **state)
{
	(void)state;
	expect_invalid(K(PRIVATE_KEY), "cloud_init.ssh_key", "this is a PRIVATE key");
	expect_invalid(K("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"),
		       "cloud_init.ssh_key", "PRIVATE key: give the public key instead");
	expect_invalid(K("---- BEGIN SSH2 PUBLIC KEY ----\nComment: \"x\"\nAAAAB3Nza\n"
			 "---- END SSH2 PUBLIC KEY ----\n"),
		       "cloud_init.ssh_key", "an RFC 4716 key is not an OpenSSH public key line");
	expect_invalid(
	    K("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"),
	    "cloud_init.ssh_key", "a PEM block is not an OpenSSH public key line");
	/* Not base64 / not canonical base64 / cut short. */
	expect_invalid(K("ssh-ed25519 AAAA!!!! x"), "cloud_init.ssh_key",
		       "line 1: the key data after 'ssh-ed25519' is not valid base64");
	/* "kQ==" -> "kR==": the same bytes, but bits set past the data. */
	_cleanup_free_ char *noncanon = strdup(KEY_RSA);
	char *pad = strstr(noncanon, "kQ==");
	assert_non_null(pad);
	pad[1] = 'R';
	expect_invalid(K(noncanon), "cloud_init.ssh_key", "not valid base64");
	expect_invalid(
	    K("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIXZPUvFva1pk3rRe8MbrymVz/eC2lzvUGvNQv"
	      "PLWVY x"),
	    "cloud_init.ssh_key", "not valid base64");
	expect_invalid(K("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIXZPUvFva1pk3rRe8MbrymVz/eC2lzv x"),
		       "cloud_init.ssh_key", "line 1: the key data is truncated or damaged");
	/* The line says one type, the blob another. */
	expect_invalid(K("ssh-ed25519 " KEY_RSA_B64 " bob"), "cloud_init.ssh_key",
		       "line 1: the line says 'ssh-ed25519' but the key data is a 'ssh-rsa' key");
	_cleanup_free_ char *mismatch = make_key("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp256", 3);
	expect_invalid(
	    K(mismatch), "cloud_init.ssh_key",
	    "says 'ecdsa-sha2-nistp384' but the key data is a 'ecdsa-sha2-nistp256' key");
	_cleanup_free_ char *garbage = make_key("ssh-ed25519", "\x01\x02", 2);
	expect_invalid(K(garbage), "cloud_init.ssh_key",
		       "the key data does not start with its type 'ssh-ed25519'");
	_cleanup_free_ char *fields = make_key("ssh-ed25519", "ssh-ed25519", 3);
	expect_invalid(K(fields), "cloud_init.ssh_key", "truncated or damaged");
	_cleanup_free_ char *only_type = make_key("ssh-ed25519", "ssh-ed25519", 1);
	expect_invalid(K(only_type), "cloud_init.ssh_key", "truncated or damaged");
	/* Types. */
	expect_invalid(K("ssh-dss AAAAB3NzaC1kc3MAAACBAP x"), "cloud_init.ssh_key",
		       "line 1: unknown key type 'ssh-dss'");
	expect_invalid(K("command=\"ls\" " KEY_ED25519), "cloud_init.ssh_key",
		       "unknown key type 'command=\"ls\"'");
	expect_invalid(K("ssh-ed25519"), "cloud_init.ssh_key", "no key data after 'ssh-ed25519'");
	expect_invalid(K("ssh-ed25519   "), "cloud_init.ssh_key", "no key data");
	/* The line number points at the bad line. */
	expect_invalid(K(KEY_ED25519 "\n# fine\nssh-rsa AAAA x\n"), "cloud_init.ssh_key",
		       "line 3:");
	expect_invalid(K(KEY_ED25519 " x\x01y"), "cloud_init.ssh_key",
		       "line 1: contains a control character");
	expect_invalid(K(KEY_ED25519 " caf\xc3"), "cloud_init.ssh_key", "not valid UTF-8");
	expect_invalid(K(""), "cloud_init.ssh_key", "holds no public key");
	expect_invalid(K("# nothing\n\n"), "cloud_init.ssh_key", "holds no public key");

	_cleanup_free_ char *over = make_text(KEY_ED25519 "\n#", ' ', CLOUDINIT_SSH_KEY_MAX + 1);
	expect_invalid(K(over), "cloud_init.ssh_key", "more than the limit of 64 KiB");
}

/* ------------------------------------------------------------------------ */
/* hostname */

static void test_hostname(void **state)
{
	(void)state;
	expect_ok(H("web-1"));
	expect_ok(H("a"));
	expect_ok(H("0"));
	expect_ok(H("Web1.Example.COM"));
	expect_ok(H("xn--bcher-kva.example"));
	char label63[64], label64[65];
	memset(label63, 'a', 63), label63[63] = '\0';
	memset(label64, 'a', 64), label64[64] = '\0';
	expect_ok(H(label63));
	/* 253 in all: three labels of 63, one of 61, three dots. */
	_cleanup_free_ char *n253 =
	    hs_strdup_printf("%s.%s.%s.%.61s", label63, label63, label63, label63);
	assert_int_equal(strlen(n253), 253);
	expect_ok(H(n253));
	_cleanup_free_ char *n254 =
	    hs_strdup_printf("%s.%s.%s.%.62s", label63, label63, label63, label63);
	expect_invalid(H(n254), "cloud_init.hostname", "longer than 253 characters");

	expect_invalid(H(""), "cloud_init.hostname", "must not be empty");
	expect_invalid(H(label64), "cloud_init.hostname", "longer than 63 characters");
	expect_invalid(H("-web"), "cloud_init.hostname", "label '-web' starts or ends with '-'");
	expect_invalid(H("web-"), "cloud_init.hostname", "starts or ends with '-'");
	expect_invalid(H("a.-b.c"), "cloud_init.hostname", "label '-b' starts or ends");
	expect_invalid(H("we_b"), "cloud_init.hostname", "character 0x5f ('_') is not allowed");
	expect_invalid(H("a b"), "cloud_init.hostname", "character 0x20 (' ')");
	expect_invalid(H("h\xc3\xa9llo"), "cloud_init.hostname", "character 0xc3 ('?')");
	expect_invalid(H("host\nname"), "cloud_init.hostname", "character 0x0a");
	expect_invalid(H("a..b"), "cloud_init.hostname", "empty label");
	expect_invalid(H(".a"), "cloud_init.hostname", "empty label");
	expect_invalid(H("a."), "cloud_init.hostname", "empty label");
}

static void test_hostname_default(void **state)
{
	(void)state;
	CloudInitConfig none = {0}, given = {.hostname = (char *)"db.example"};
	const struct {
		const char *vm, *host;
	} cases[] = {
	    {"web", "web"},    {"web_1", "web-1"}, {"db-", "db"},
	    {"a__b_", "a--b"}, {"9x", "9x"},	   {"_", "localhost"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *h = cloudinit_hostname(&none, cases[i].vm);
		assert_non_null(h);
		assert_string_equal(h, cases[i].host);
		expect_ok(H(h));
	}
	_cleanup_free_ char *h = cloudinit_hostname(&given, "web_1");
	assert_string_equal(h, "db.example");
}

/* ------------------------------------------------------------------------ */
/* JSON */

static void test_json_round_trip(void **state)
{
	(void)state;
	CloudInitConfig in = {
	    .user_data = (char *)"#cloud-config\npackages: [htop]\n",
	    .network_config = (char *)"version: 2\n",
	    .ssh_key = (char *)KEY_ED25519,
	    .hostname = (char *)"web-1",
	};
	json_auto_t *j = cloudinit_config_to_json(&in);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 4);
	assert_string_equal(json_string_value(json_object_get(j, "ssh_key")), KEY_ED25519);

	CloudInitConfig out = {0};
	HsError err = {0};
	assert_int_equal(cloudinit_config_from_json(j, &out, &err), 0);
	assert_string_equal(out.user_data, in.user_data);
	assert_string_equal(out.network_config, in.network_config);
	assert_string_equal(out.ssh_key, in.ssh_key);
	assert_string_equal(out.hostname, in.hostname);
	cloudinit_config_clear(&out);
	assert_null(out.user_data);

	/* Absent fields stay absent, both ways; null is absent. */
	json_auto_t *partial = json_pack("{s:s, s:n}", "hostname", "h", "ssh_key");
	assert_int_equal(cloudinit_config_from_json(partial, &out, &err), 0);
	assert_null(out.user_data);
	assert_null(out.ssh_key);
	assert_string_equal(out.hostname, "h");
	json_auto_t *back = cloudinit_config_to_json(&out);
	assert_int_equal(json_object_size(back), 1);
	cloudinit_config_clear(&out);

	json_auto_t *empty = json_object();
	assert_int_equal(cloudinit_config_from_json(empty, &out, &err), 0);
	assert_null(out.hostname);
}

static void expect_json_invalid(const char *text, const char *what)
{
	json_error_t jerr;
	json_auto_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	assert_non_null(j);
	CloudInitConfig out = {.hostname = (char *)"untouched"};
	HsError err = {0};
	assert_int_equal(cloudinit_config_from_json(j, &out, &err), -EINVAL);
	if (!strstr(err.message, what))
		fail_msg("message '%s' lacks '%s'", err.message, what);
	assert_string_equal(out.hostname, "untouched"); /* written only on success */
}

static void test_json_invalid(void **state)
{
	(void)state;
	expect_json_invalid("[]", "cloud_init: must be an object");
	expect_json_invalid("\"#cloud-config\"", "cloud_init: must be an object");
	expect_json_invalid("{\"userdata\": \"x\"}", "cloud_init: unknown field 'userdata'");
	expect_json_invalid("{\"user_data\": 1}", "cloud_init.user_data: must be a string");
	expect_json_invalid("{\"network_config\": {\"version\": 2}}",
			    "cloud_init.network_config: must be a string");
	expect_json_invalid("{\"ssh_key\": [\"ssh-ed25519 AAAA\"]}",
			    "cloud_init.ssh_key: must be a string");
	expect_json_invalid("{\"hostname\": true}", "cloud_init.hostname: must be a string");
	/* NUL bytes cannot reach a C string: refused by name. */
	expect_json_invalid("{\"user_data\": \"#!/bin/sh\\necho \\u0000 x\\n\"}",
			    "cloud_init.user_data: must not contain NUL bytes");
	expect_json_invalid("{\"ssh_key\": \"" KEY_ED25519 "\\u0000\"}",
			    "cloud_init.ssh_key: must not contain NUL bytes");
	/* Then validation, with its words. */
	expect_json_invalid("{\"hostname\": \"a_b\"}", "cloud_init.hostname: character 0x5f");
	expect_json_invalid("{\"network_config\": \"version: 1\"}", "only version 2 is supported");
	expect_json_invalid("{\"user_data\": \"#cloud-config\\n- x\\n\"}", "not a list");
}

/* ------------------------------------------------------------------------ */
/* instance-id */

static void assert_id_shape(const char *id)
{
	assert_non_null(id);
	assert_int_equal(strlen(id), 3 + 16);
	assert_true(hs_str_has_prefix(id, "hs-"));
	for (const char *p = id + 3; *p; p++)
		assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
}

static void test_instance_id(void **state)
{
	(void)state;
	CloudInitConfig base = {
	    .user_data = (char *)"#cloud-config\n",
	    .network_config = (char *)"version: 2\n",
	    .ssh_key = (char *)KEY_ED25519,
	    .hostname = (char *)"web",
	};
	_cleanup_free_ char *id = cloudinit_instance_id("vm1", "nonce-a", &base);
	assert_id_shape(id);
	/* Stable: same input, same id; a copy of the strings too. */
	_cleanup_free_ char *again = cloudinit_instance_id("vm1", "nonce-a", &base);
	assert_string_equal(id, again);
	char ud[] = "#cloud-config\n";
	CloudInitConfig copy = base;
	copy.user_data = ud;
	_cleanup_free_ char *same = cloudinit_instance_id("vm1", "nonce-a", &copy);
	assert_string_equal(id, same);

	/* Each input changes it. */
	char *variants[16];
	size_t n = 0;
	variants[n++] = cloudinit_instance_id("vm1", "nonce-b", &base); /* cloned */
	variants[n++] = cloudinit_instance_id("vm2", "nonce-a", &base); /* renamed */
	CloudInitConfig c;
	c = base, c.user_data = (char *)"#cloud-config\na: 1\n";
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.user_data = NULL; /* absent is not the same as given */
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.network_config = NULL;
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.network_config = (char *)"version: 2 \n";
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.ssh_key = (char *)KEY_RSA;
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.ssh_key = NULL;
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.hostname = (char *)"web2";
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.hostname = NULL;
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	c = base, c.hostname = (char *)"";
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);
	/* Fields are delimited: moving text across a boundary changes it. */
	variants[n++] = cloudinit_instance_id("vm1n", "once-a", &base);
	c = base, c.ssh_key = (char *)KEY_ED25519 "w", c.hostname = (char *)"eb";
	variants[n++] = cloudinit_instance_id("vm1", "nonce-a", &c);

	for (size_t i = 0; i < n; i++) {
		assert_id_shape(variants[i]);
		if (!strcmp(variants[i], id))
			fail_msg("variant %zu has the base id %s", i, id);
		for (size_t k = 0; k < i; k++)
			if (!strcmp(variants[i], variants[k]))
				fail_msg("variants %zu and %zu share id %s", k, i, id);
	}
	for (size_t i = 0; i < n; i++)
		free(variants[i]);
}

/* ------------------------------------------------------------------------ */
/* meta-data */

typedef struct Parsed {
	size_t n_keys;
	char *keys[8], *values[8]; /* scalar values; NULL for the list */
	size_t n_list;
	char *list[8]; /* public-keys */
} Parsed;

static char *scalar_dup(const yaml_node_t *n)
{
	assert_int_equal(n->type, YAML_SCALAR_NODE);
	return strndup((const char *)n->data.scalar.value, n->data.scalar.length);
}

/* Parses meta-data back with libyaml: one document, a mapping of scalars
 * and at most one list of scalars. */
static void parse_meta_data(const char *text, Parsed *ret)
{
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	memset(ret, 0, sizeof(*ret));
	assert_true(yaml_parser_initialize(&parser));
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
	if (!yaml_parser_load(&parser, &doc))
		fail_msg("meta-data does not parse: %s\n%s", parser.problem, text);
	assert_true(yaml_parser_load(&parser, &extra));
	assert_null(yaml_document_get_root_node(&extra)); /* one document only */
	yaml_document_delete(&extra);
	yaml_parser_delete(&parser);

	yaml_node_t *root = yaml_document_get_root_node(&doc);
	assert_non_null(root);
	assert_int_equal(root->type, YAML_MAPPING_NODE);
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++) {
		assert_true(ret->n_keys < ARRAY_SIZE(ret->keys));
		yaml_node_t *k = yaml_document_get_node(&doc, p->key);
		yaml_node_t *v = yaml_document_get_node(&doc, p->value);
		ret->keys[ret->n_keys] = scalar_dup(k);
		if (v->type == YAML_SEQUENCE_NODE) {
			for (yaml_node_item_t *it = v->data.sequence.items.start;
			     it < v->data.sequence.items.top; it++) {
				assert_true(ret->n_list < ARRAY_SIZE(ret->list));
				ret->list[ret->n_list++] =
				    scalar_dup(yaml_document_get_node(&doc, *it));
			}
		} else {
			ret->values[ret->n_keys] = scalar_dup(v);
		}
		ret->n_keys++;
	}
	yaml_document_delete(&doc);
}

static void parsed_clear(Parsed *p)
{
	for (size_t i = 0; i < p->n_keys; i++)
		free(p->keys[i]), free(p->values[i]);
	for (size_t i = 0; i < p->n_list; i++)
		free(p->list[i]);
}

static void test_meta_data_plain(void **state)
{
	(void)state;
	_cleanup_free_ char *md = cloudinit_meta_data("hs-0123456789abcdef", "web-1", NULL);
	assert_non_null(md);
	Parsed p;
	parse_meta_data(md, &p);
	assert_int_equal(p.n_keys, 2);
	assert_string_equal(p.keys[0], "instance-id");
	assert_string_equal(p.values[0], "hs-0123456789abcdef");
	assert_string_equal(p.keys[1], "local-hostname");
	assert_string_equal(p.values[1], "web-1");
	parsed_clear(&p);

	/* Keys: one entry per key line, comments and blank lines left out. */
	_cleanup_free_ char *md2 = cloudinit_meta_data(
	    "hs-1", "h", "# comment\n" KEY_ED25519 "\r\n\n   " KEY_RSA "   \n# tail\n");
	parse_meta_data(md2, &p);
	assert_int_equal(p.n_keys, 3);
	assert_string_equal(p.keys[2], "public-keys");
	assert_null(p.values[2]);
	assert_int_equal(p.n_list, 2);
	assert_string_equal(p.list[0], KEY_ED25519);
	assert_string_equal(p.list[1], KEY_RSA);
	parsed_clear(&p);

	/* Only comments: no public-keys at all. */
	_cleanup_free_ char *md3 = cloudinit_meta_data("hs-1", "h", "# none\n");
	parse_meta_data(md3, &p);
	assert_int_equal(p.n_keys, 2);
	parsed_clear(&p);
}

static void test_meta_data_injection(void **state)
{
	(void)state;
	/* Values that would add keys, lists or documents if pasted into YAML
	 * (meta_data does not validate: it must be safe on its own). */
	const char *hostnames[] = {
	    "evil\npublic-keys: [\"ssh-rsa AAAA attacker\"]",
	    "a: b",
	    "x\ninstance-id: other",
	    "'quoted' \"double\" \\back\\ #hash {flow: map} [list] &anchor *alias !tag |",
	    "--- \n...\n- item",
	    "\t\r\n\x1b[31m",
	    "null",
	    "~",
	    "yes",
	    "0x1F",
	    "",
	    " leading and trailing ",
	    "ünïcödé ✓",
	};
	const char *keys[] = {
	    KEY_ED25519 " comment\ninstance-id: injected",
	    KEY_ED25519 " x\"]\nlocal-hostname: \"pwned",
	    KEY_ED25519 " a: b # c {d: e} [f] 'g' \"h\" \\i",
	    KEY_ED25519 " - item\n- other",
	};
	for (size_t i = 0; i < ARRAY_SIZE(hostnames); i++) {
		_cleanup_free_ char *md = cloudinit_meta_data("hs-1", hostnames[i], NULL);
		assert_non_null(md);
		Parsed p;
		parse_meta_data(md, &p);
		if (p.n_keys != 2)
			fail_msg("hostname %zu gave %zu keys:\n%s", i, p.n_keys, md);
		assert_string_equal(p.keys[0], "instance-id");
		assert_string_equal(p.values[0], "hs-1");
		assert_string_equal(p.keys[1], "local-hostname");
		assert_string_equal(p.values[1], hostnames[i]);
		parsed_clear(&p);
	}
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		_cleanup_free_ char *md = cloudinit_meta_data("hs-1", "h", keys[i]);
		assert_non_null(md);
		Parsed p;
		parse_meta_data(md, &p);
		if (p.n_keys != 3)
			fail_msg("keys %zu gave %zu keys:\n%s", i, p.n_keys, md);
		assert_string_equal(p.values[0], "hs-1");
		assert_string_equal(p.values[1], "h");
		assert_string_equal(p.keys[2], "public-keys");
		/* Each line is one entry, verbatim. */
		const char *cursor = keys[i];
		for (size_t k = 0; k < p.n_list; k++) {
			size_t len = strcspn(cursor, "\n");
			assert_int_equal(strlen(p.list[k]), len);
			assert_memory_equal(p.list[k], cursor, len);
			cursor += len + (cursor[len] == '\n');
		}
		assert_string_equal(cursor, "");
		parsed_clear(&p);
	}
	/* Not UTF-8: refused rather than emitted. */
	assert_null(cloudinit_meta_data("hs-1", "caf\xc3", NULL));
}

/* ------------------------------------------------------------------------ */
/* The ISO volume, read back with real ISO readers */

typedef struct Fixture {
	char *dir;
	int dirfd;
} Fixture;

static int setup(void **state)
{
	Fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->dir = test_tmpdir_new("cloudinit");
	f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->dirfd >= 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	Fixture *f = *state;
	close(f->dirfd);
	test_tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

static bool have_tool(const char *tool)
{
	_cleanup_free_ char *cmd =
	    hs_strdup_printf("PATH=\"$PATH:/usr/sbin:/sbin\" command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

#define NEED_TOOLS()                                                                               \
	do {                                                                                       \
		if (!have_tool("isoinfo") || !have_tool("osirrox") || !have_tool("blkid")) {       \
			print_message("SKIP: isoinfo (genisoimage), osirrox (xorriso) or blkid "   \
				      "(util-linux) missing: run scripts/install-deps.sh\n");      \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

/* Runs a shell command, returns its stdout (NUL-terminated); fails the test
 * when it exits non-zero. */
static char *run(const char *fmt, ...) _printf_(1, 2);
static char *run(const char *fmt, ...)
{
	va_list ap;
	char *cmd = NULL;
	va_start(ap, fmt);
	assert_true(vasprintf(&cmd, fmt, ap) >= 0);
	va_end(ap);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char *out = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&out, &len);
	assert_non_null(mem);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		fwrite(buf, 1, n, mem);
	fclose(mem);
	int st = pclose(p);
	if (st != 0)
		fail_msg("'%s' failed (status %d): %s", cmd, st, out);
	free(cmd);
	return out;
}

static char *read_path(const char *path, size_t *ret_len)
{
	char *data = NULL;
	size_t len = 0;
	int r = hs_read_file(AT_FDCWD, path, 4 * 1024 * 1024, &data, &len);
	if (r < 0)
		fail_msg("cannot read %s: %s", path, strerror(-r));
	if (ret_len)
		*ret_len = len;
	return data;
}

/* Extracts the volume with osirrox (Rock Ridge names and modes) into
 * <dir>/<sub> and checks the files there, each against its expected content
 * (NULL: must be absent). */
static void check_extracted(Fixture *f, const char *iso, const char *sub,
			    const char *const names[3], const char *const contents[3])
{
	_cleanup_free_ char *out = hs_strdup_printf("%s/%s", f->dir, sub);
	free(run("osirrox -indev '%s/%s' -extract / '%s' 2>&1", f->dir, iso, out));
	size_t expected = 0;
	for (size_t i = 0; i < 3; i++) {
		_cleanup_free_ char *path = hs_strdup_printf("%s/%s", out, names[i]);
		struct stat st;
		if (!contents[i]) {
			assert_int_equal(lstat(path, &st), -1);
			continue;
		}
		expected++;
		assert_int_equal(lstat(path, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0444); /* Rock Ridge mode */
		size_t len;
		_cleanup_free_ char *data = read_path(path, &len);
		assert_int_equal(len, strlen(contents[i]));
		assert_memory_equal(data, contents[i], len);
	}
	assert_int_equal(test_count_entries(out, NULL), expected);
	/* osirrox keeps the modes: make the tree removable. */
	free(run("chmod -R u+w '%s'", out));
}

static void test_iso_contents(void **state)
{
	Fixture *f = *state;
	NEED_TOOLS();
	CloudInitConfig cfg = {
	    .user_data = (char *)"#cloud-config\npackages: [htop]\nruncmd:\n  - echo ✓\n",
	    .network_config = (char *)"version: 2\nethernets:\n  eth0: {dhcp4: true}\n",
	    .ssh_key = (char *)KEY_ED25519 "\n" KEY_RSA "\n",
	    .hostname = (char *)"web-1.example",
	};
	HsError err = {0};
	int r = cloudinit_write_iso(f->dirfd, "cidata.iso", "vm1", "n0nce", &cfg, &err);
	if (r < 0)
		fail_msg("write: %s", err.message);
	/* Atomic write: only the volume is left, private to hsd. */
	assert_int_equal(test_count_entries(f->dir, NULL), 1);
	struct stat st;
	assert_int_equal(fstatat(f->dirfd, "cidata.iso", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size % 2048, 0);

	/* The primary volume descriptor, read by isoinfo. */
	_cleanup_free_ char *pvd = run("isoinfo -d -i '%s/cidata.iso'", f->dir);
	if (!strstr(pvd, "Volume id: cidata\n"))
		fail_msg("no 'Volume id: cidata' in:\n%s", pvd);
	assert_non_null(strstr(pvd, "Rock Ridge signatures version 1 found"));
	assert_non_null(strstr(pvd, "Joliet with UCS level 3 found"));

	/* Rock Ridge: names, modes, contents (osirrox). */
	_cleanup_free_ char *id = cloudinit_instance_id("vm1", "n0nce", &cfg);
	_cleanup_free_ char *md = cloudinit_meta_data(id, "web-1.example", cfg.ssh_key);
	const char *names[3] = {"meta-data", "user-data", "network-config"};
	const char *contents[3] = {md, cfg.user_data, cfg.network_config};
	check_extracted(f, "cidata.iso", "rr", names, contents);

	/* Joliet: the same names (with the version suffix ";1" that readers
	 * strip) and bytes (isoinfo -J). */
	_cleanup_free_ char *joliet = run("isoinfo -J -l -i '%s/cidata.iso'", f->dir);
	for (size_t i = 0; i < 3; i++) {
		_cleanup_free_ char *entry = hs_strdup_printf("  %s.;1 \n", names[i]);
		if (!strstr(joliet, entry))
			fail_msg("no Joliet name '%s' in:\n%s", names[i], joliet);
		_cleanup_free_ char *data =
		    run("isoinfo -J -i '%s/cidata.iso' -x '/%s.;1'", f->dir, names[i]);
		assert_string_equal(data, contents[i]);
	}
	/* What cloud-init looks for: a filesystem labelled "cidata", as
	 * libblkid sees it. */
	_cleanup_free_ char *label =
	    run("PATH=\"$PATH:/usr/sbin:/sbin\" blkid -p -o value -s LABEL "
		"-s TYPE '%s/cidata.iso'",
		f->dir);
	assert_string_equal(label, "cidata\niso9660\n");
	/* And the meta-data really carries what cloud-init reads. */
	Parsed p;
	parse_meta_data(md, &p);
	assert_int_equal(p.n_keys, 3);
	assert_string_equal(p.values[0], id);
	assert_string_equal(p.values[1], "web-1.example");
	assert_int_equal(p.n_list, 2);
	assert_string_equal(p.list[1], KEY_RSA);
	parsed_clear(&p);
}

static void test_iso_defaults(void **state)
{
	Fixture *f = *state;
	NEED_TOOLS();
	/* Nothing given: default user-data, no network-config, the hostname
	 * from the VM name, no public-keys. */
	CloudInitConfig cfg = {0};
	HsError err = {0};
	assert_int_equal(cloudinit_write_iso(f->dirfd, "d.iso", "web_1", "n", &cfg, &err), 0);
	_cleanup_free_ char *id = cloudinit_instance_id("web_1", "n", &cfg);
	_cleanup_free_ char *md = cloudinit_meta_data(id, "web-1", NULL);
	const char *names[3] = {"meta-data", "user-data", "network-config"};
	const char *contents[3] = {md, CLOUDINIT_DEFAULT_USER_DATA, NULL};
	check_extracted(f, "d.iso", "out", names, contents);
	assert_non_null(strstr(md, "local-hostname: \"web-1\""));
	assert_null(strstr(md, "public-keys"));
}

static void test_iso_reproducible(void **state)
{
	(void)state;
	CloudInitConfig cfg = {
	    .user_data = (char *)"#!/bin/sh\necho hello\n",
	    .network_config = (char *)"network:\n  version: 2\n",
	    .ssh_key = (char *)KEY_ECDSA256,
	};
	HsError err = {0};
	void *a = NULL, *b = NULL, *c = NULL;
	size_t alen = 0, blen = 0, clen = 0;
	assert_int_equal(cloudinit_build_iso("vm", "n1", &cfg, &a, &alen, &err), 0);
	/* Another second, another time zone: the same bytes. */
	const char *tz = getenv("TZ");
	_cleanup_free_ char *saved_tz = tz ? strdup(tz) : NULL;
	setenv("TZ", "XYZ-13:45", 1);
	tzset();
	nanosleep(&(struct timespec){.tv_sec = 1, .tv_nsec = 100 * 1000 * 1000}, NULL);
	int r = cloudinit_build_iso("vm", "n1", &cfg, &b, &blen, &err);
	if (saved_tz)
		setenv("TZ", saved_tz, 1);
	else
		unsetenv("TZ");
	tzset();
	assert_int_equal(r, 0);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);
	assert_int_equal(alen % 2048, 0);
	/* The volume id is in the primary volume descriptor (sector 16). */
	assert_true(alen > 17 * 2048);
	assert_memory_equal((char *)a + 16 * 2048 + 1, "CD001", 5);
	assert_memory_equal((char *)a + 16 * 2048 + 40, "cidata  ", 8);

	/* Other data, other bytes. */
	cfg.user_data = (char *)"#!/bin/sh\necho hellO\n";
	assert_int_equal(cloudinit_build_iso("vm", "n1", &cfg, &c, &clen, &err), 0);
	assert_true(clen != alen || memcmp(a, c, alen) != 0);
	free(a);
	free(b);
	free(c);
}

static size_t count_threads(void)
{
	return test_count_entries("/proc/self/task", NULL);
}

/* Our threads, once a joined one is gone: pthread_join returns when the
 * kernel clears the thread's tid, a moment before its /proc/self/task
 * entry goes (seen under ASan). A thread left running stays: 1 s. */
static size_t count_threads_settled(void)
{
	size_t n = count_threads();
	for (int i = 0; i < 100 && n > 1; i++) {
		usleep(10000);
		n = count_threads();
	}
	return n;
}

static void test_iso_thread_joined(void **state)
{
	(void)state;
	/* libisofs writes the image from a thread of its own: hsd must be
	 * single-threaded again once the call returns. */
	assert_int_equal(count_threads(), 1);
	for (int i = 0; i < 5; i++) {
		CloudInitConfig cfg = {0};
		void *data = NULL;
		size_t len = 0;
		HsError err = {0};
		assert_int_equal(cloudinit_build_iso("vm", "n", &cfg, &data, &len, &err), 0);
		free(data);
		assert_int_equal(count_threads_settled(), 1);
	}
}

static void test_iso_large_user_data(void **state)
{
	Fixture *f = *state;
	NEED_TOOLS();
	/* The largest user-data allowed survives byte for byte. */
	_cleanup_free_ char *big = make_text("#!/bin/sh\n", 'x', CLOUDINIT_USER_DATA_MAX);
	for (size_t i = 10; i < CLOUDINIT_USER_DATA_MAX; i += 77)
		big[i] = '\n';
	CloudInitConfig cfg = {.user_data = big};
	HsError err = {0};
	int r = cloudinit_write_iso(f->dirfd, "big.iso", "vm", "n", &cfg, &err);
	if (r < 0)
		fail_msg("write: %s", err.message);
	_cleanup_free_ char *out = hs_strdup_printf("%s/big-user-data", f->dir);
	free(run("osirrox -indev '%s/big.iso' -extract /user-data '%s' 2>&1", f->dir, out));
	size_t len;
	_cleanup_free_ char *data = read_path(out, &len);
	assert_int_equal(len, CLOUDINIT_USER_DATA_MAX);
	assert_memory_equal(data, big, len);
}

static void test_iso_errors(void **state)
{
	Fixture *f = *state;
	HsError err = {0};
	/* Invalid data: refused, nothing written. */
	CloudInitConfig bad = {.hostname = (char *)"bad_host"};
	assert_int_equal(cloudinit_write_iso(f->dirfd, "x.iso", "vm", "n", &bad, &err), -EINVAL);
	assert_non_null(strstr(err.message, "cloud_init.hostname"));
	assert_int_equal(test_count_entries(f->dir, NULL), 0);

	/* A write that fails: the errno, the name, no temp file left. */
	CloudInitConfig ok = {0};
	memset(&err, 0, sizeof(err));
	assert_int_equal(cloudinit_write_iso(f->dirfd, "missing/x.iso", "vm", "n", &ok, &err),
			 -ENOENT);
	assert_non_null(strstr(err.message, "missing/x.iso"));
	assert_int_equal(test_count_entries(f->dir, NULL), 0);

	/* An existing volume is replaced whole. */
	_cleanup_free_ char *old = hs_strdup_printf("%s/y.iso", f->dir);
	test_write_file(old, "old", 3, 0600);
	assert_int_equal(cloudinit_write_iso(f->dirfd, "y.iso", "vm", "n", &ok, &err), 0);
	struct stat st;
	assert_int_equal(fstatat(f->dirfd, "y.iso", &st, 0), 0);
	assert_true(st.st_size > 17 * 2048);
	assert_int_equal(test_count_entries(f->dir, NULL), 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_user_data_accepted),
	    cmocka_unit_test(test_user_data_bad_yaml),
	    cmocka_unit_test(test_user_data_formats_refused),
	    cmocka_unit_test(test_user_data_size),
	    cmocka_unit_test(test_network_config),
	    cmocka_unit_test(test_ssh_key_accepted),
	    cmocka_unit_test(test_ssh_key_refused),
	    cmocka_unit_test(test_hostname),
	    cmocka_unit_test(test_hostname_default),
	    cmocka_unit_test(test_json_round_trip),
	    cmocka_unit_test(test_json_invalid),
	    cmocka_unit_test(test_instance_id),
	    cmocka_unit_test(test_meta_data_plain),
	    cmocka_unit_test(test_meta_data_injection),
	    cmocka_unit_test(test_iso_thread_joined),
	    T(test_iso_contents),
	    T(test_iso_defaults),
	    T(test_iso_reproducible),
	    T(test_iso_large_user_data),
	    T(test_iso_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
