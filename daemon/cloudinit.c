/* SPDX-License-Identifier: Apache-2.0 */
#include "cloudinit.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

/* Without libburn, libisofs.h declares struct burn_source (the image
 * stream) only when asked to. */
#define LIBISOFS_WITHOUT_LIBBURN 1
#include <libisofs/libisofs.h>
#include <nettle/sha2.h>
#include <yaml.h>

#define INVALID "invalid-spec"
#define F_USER_DATA "cloud_init.user_data"
#define F_NETWORK_CONFIG "cloud_init.network_config"
#define F_SSH_KEY "cloud_init.ssh_key"
#define F_HOSTNAME "cloud_init.hostname"

/* Every timestamp on the volume, so that the same input gives the same
 * bytes: 2000-01-01 00:00:00 UTC, both as time_t and as the ECMA-119
 * "YYYYMMDDhhmmsscc" text libisofs takes for the volume descriptors. */
#define ISO_FIXED_TIME ((time_t)946684800)
#define ISO_FIXED_TIME_TEXT "2000010100000000"

/* ------------------------------------------------------------------------ */
/* Small text helpers */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* s starts with word, followed by the end of the line or of the text. */
static bool starts_with_word(const char *s, const char *word)
{
	size_t n = strlen(word);
	return strncmp(s, word, n) == 0 && (s[n] == '\0' || is_blank(s[n]));
}

/* MIME headers are case-insensitive. */
static bool has_prefix_nocase(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	while (p < end) {
		unsigned char c = *p;
		size_t n;
		uint32_t cp, min;
		if (c < 0x80) {
			p++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if ((size_t)(end - p) <= n)
			return false;
		for (size_t i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		p += n + 1;
	}
	return true;
}

/* Length of the run of non-blank characters at s, not past end. */
static size_t word_len(const char *s, const char *end)
{
	const char *p = s;
	while (p < end && *p != ' ' && *p != '\t')
		p++;
	return (size_t)(p - s);
}

/* Iterates over the lines of text: *cursor is where the next line starts
 * (NULL when done). The line is returned without its end of line and
 * without leading and trailing blanks. */
static bool next_line(const char **cursor, const char **ret, size_t *ret_len)
{
	const char *s = *cursor;
	if (!s || !*s)
		return false;
	const char *nl = strchr(s, '\n');
	const char *end = nl ? nl : s + strlen(s);
	*cursor = nl ? nl + 1 : NULL;
	while (s < end && is_blank(*s))
		s++;
	while (end > s && is_blank(end[-1]))
		end--;
	*ret = s;
	*ret_len = (size_t)(end - s);
	return true;
}

/* ------------------------------------------------------------------------ */
/* YAML */

static int yaml_problem(const char *field, const char *text, size_t len, const yaml_parser_t *p,
			HsError *err)
{
	if (p->error == YAML_MEMORY_ERROR)
		return hs_error_set(err, -ENOMEM, "internal", "%s: out of memory parsing YAML",
				    field);
	const char *problem = p->problem ? p->problem : "syntax error";
	size_t line = 1, column = 1;
	if (p->error == YAML_READER_ERROR) {
		/* The reader (encoding errors) only knows a byte offset. */
		size_t end = p->problem_offset < len ? p->problem_offset : len;
		for (size_t i = 0; i < end; i++) {
			if (text[i] == '\n')
				line++, column = 1;
			else
				column++;
		}
	} else {
		line = p->problem_mark.line + 1;
		column = p->problem_mark.column + 1;
	}
	if (p->context && p->error != YAML_READER_ERROR)
		return hs_error_set(
		    err, -EINVAL, INVALID,
		    "%s: not valid YAML: %s at line %zu, column %zu (%s at line %zu)", field,
		    problem, line, column, p->context, p->context_mark.line + 1);
	return hs_error_set(err, -EINVAL, INVALID, "%s: not valid YAML: %s at line %zu, column %zu",
			    field, problem, line, column);
}

/* Loads text as a single YAML document into *ret_doc (yaml_document_delete
 * it). A stream with nothing in it gives a document without a root node. */
static int yaml_load_one(const char *field, const char *text, yaml_document_t *ret_doc,
			 HsError *err)
{
	size_t len = strlen(text);
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	int r = 0;

	if (!yaml_parser_initialize(&parser))
		return hs_error_set(err, -ENOMEM, "internal", "%s: out of memory", field);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		/* libyaml deletes the document itself on failure. */
		r = yaml_problem(field, text, len, &parser, err);
		yaml_parser_delete(&parser);
		return r;
	}
	if (!yaml_parser_load(&parser, &extra)) {
		r = yaml_problem(field, text, len, &parser, err);
	} else {
		if (yaml_document_get_root_node(&extra))
			r = hs_error_set(err, -EINVAL, INVALID,
					 "%s: more than one YAML document ('---' at line %zu): "
					 "cloud-init reads a single one",
					 field, extra.start_mark.line + 1);
		yaml_document_delete(&extra);
	}
	yaml_parser_delete(&parser);
	if (r < 0) {
		yaml_document_delete(&doc);
		return r;
	}
	*ret_doc = doc;
	return 0;
}

static const char *yaml_node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_NO_NODE:
	default:
		return "nothing";
	}
}

static bool yaml_scalar_is(const yaml_node_t *n, const char *s)
{
	return n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(s) &&
	       memcmp(n->data.scalar.value, s, n->data.scalar.length) == 0;
}

/* The value of key in a mapping node, or NULL. */
static yaml_node_t *yaml_mapping_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++)
		if (yaml_scalar_is(yaml_document_get_node(doc, p->key), key))
			return yaml_document_get_node(doc, p->value);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Validation */

static int check_cloud_config(const char *text, HsError *err)
{
	yaml_document_t doc;
	int r = yaml_load_one(F_USER_DATA, text, &doc, err);
	if (r < 0)
		return r;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	/* Nothing but the header is an empty cloud-config: fine. */
	if (root && root->type != YAML_MAPPING_NODE)
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: a cloud-config must be a YAML mapping at the top level "
				 "(\"key: value\" lines), not %s (line %zu)",
				 F_USER_DATA, yaml_node_kind(root), root->start_mark.line + 1);
	yaml_document_delete(&doc);
	return r;
}

static int check_script(const char *text, HsError *err)
{
	const char *p = text + 2; /* past "#!" */
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || is_blank(*p))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: the '#!' line names no interpreter (e.g. '#!/bin/sh')",
				    F_USER_DATA);
	const char *body = strchr(p, '\n');
	for (; body && *body; body++)
		if (!is_blank(*body))
			return 0;
	return hs_error_set(err, -EINVAL, INVALID, "%s: the script is empty after its '#!' line",
			    F_USER_DATA);
}

static int check_user_data(const char *text, HsError *err)
{
	size_t len = strlen(text);
	if (len > CLOUDINIT_USER_DATA_MAX)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: %zu bytes, more than the limit of 1 MiB (%u bytes) for "
				    "data on the cloud-init volume",
				    F_USER_DATA, len, CLOUDINIT_USER_DATA_MAX);
	if (starts_with_word(text, "#cloud-config"))
		return check_cloud_config(text, err);
	if (hs_str_has_prefix(text, "#!"))
		return check_script(text, err);
	if (starts_with_word(text, "#cloud-boothook"))
		return 0;
	if (has_prefix_nocase(text, "Content-Type: multipart/") ||
	    has_prefix_nocase(text, "MIME-Version:"))
		return 0;
	return hs_error_set(
	    err, -EINVAL, INVALID,
	    "%s: unknown format: it must start with '#cloud-config' (a cloud-config "
	    "YAML mapping), '#!' (a script), '#cloud-boothook', or be a MIME "
	    "multi-part message ('Content-Type: multipart/...')",
	    F_USER_DATA);
}

static int check_network_config(const char *text, HsError *err)
{
	size_t len = strlen(text);
	if (len > CLOUDINIT_NETWORK_CONFIG_MAX)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: %zu bytes, more than the limit of 64 KiB (%u bytes)",
				    F_NETWORK_CONFIG, len, CLOUDINIT_NETWORK_CONFIG_MAX);
	yaml_document_t doc;
	int r = yaml_load_one(F_NETWORK_CONFIG, text, &doc, err);
	if (r < 0)
		return r;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	yaml_node_t *version = NULL;
	if (!root) {
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: is empty: expected a YAML mapping with 'version: 2'",
				 F_NETWORK_CONFIG);
		goto out;
	}
	if (root->type != YAML_MAPPING_NODE) {
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: must be a YAML mapping with 'version: 2', not %s",
				 F_NETWORK_CONFIG, yaml_node_kind(root));
		goto out;
	}
	/* cloud-init takes both "version: 2 ..." and "network: {version: 2 ...}". */
	version = yaml_mapping_get(&doc, root, "version");
	if (!version)
		version =
		    yaml_mapping_get(&doc, yaml_mapping_get(&doc, root, "network"), "version");
	if (!version)
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: no 'version' (expected 'version: 2' at the top level or "
				 "under 'network:')",
				 F_NETWORK_CONFIG);
	else if (yaml_scalar_is(version, "1"))
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: network config version 1 is not supported: only version 2 is "
				 "supported (netplan style, line %zu)",
				 F_NETWORK_CONFIG, version->start_mark.line + 1);
	else if (!yaml_scalar_is(version, "2"))
		r = hs_error_set(err, -EINVAL, INVALID,
				 "%s: 'version' must be 2 (line %zu): only version 2 is supported",
				 F_NETWORK_CONFIG, version->start_mark.line + 1);
out:
	yaml_document_delete(&doc);
	return r;
}

#define SSH_KEY_TYPES                                                                              \
	"ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, "    \
	"sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com"

/* The key types OpenSSH accepts today, and how many fields their blob has:
 * each an SSH "string" (uint32 big-endian length, bytes), the type name
 * first, then e.g. e and n (RSA), curve and point (ECDSA), the key (Ed25519)
 * and the application (security keys). */
static const struct {
	const char *name;
	unsigned fields;
} ssh_key_types[] = {
    {"ssh-ed25519", 2},
    {"ssh-rsa", 3},
    {"ecdsa-sha2-nistp256", 3},
    {"ecdsa-sha2-nistp384", 3},
    {"ecdsa-sha2-nistp521", 3},
    {"sk-ssh-ed25519@openssh.com", 3},
    {"sk-ecdsa-sha2-nistp256@openssh.com", 4},
};

static int base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict RFC 4648 base64, padded, as OpenSSH writes it: returns the decoded
 * length (out must have room for len / 4 * 3 bytes), or -1. */
static ssize_t base64_decode(const char *in, size_t len, unsigned char *out)
{
	size_t o = 0;
	if (len == 0 || len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		size_t pad = 0;
		for (size_t j = 0; j < 4; j++) {
			char c = in[i + j];
			if (c == '=') {
				if (i + 4 != len || j < 2)
					return -1;
				v[j] = 0;
				pad++;
			} else {
				if (pad)
					return -1;
				v[j] = base64_value(c);
				if (v[j] < 0)
					return -1;
			}
		}
		/* The bits past the data must be zero (one encoding per blob). */
		if ((pad == 1 && (v[2] & 3)) || (pad == 2 && (v[1] & 15)))
			return -1;
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		out[o++] = (unsigned char)(w >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(w >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)w;
	}
	return (ssize_t)o;
}

/* One key line (trimmed, not a comment): "<type> <base64> [comment]". */
static int check_ssh_key_line(const char *line, size_t len, size_t lineno, HsError *err)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: line %zu: contains a control character", F_SSH_KEY,
					    lineno);
	}
	if (!utf8_valid(line, len))
		return hs_error_set(err, -EINVAL, INVALID, "%s: line %zu: not valid UTF-8",
				    F_SSH_KEY, lineno);

	const char *end = line + len;
	size_t type_len = word_len(line, end);
	const char *type = NULL;
	unsigned fields = 0;
	for (size_t i = 0; i < ARRAY_SIZE(ssh_key_types); i++)
		if (strlen(ssh_key_types[i].name) == type_len &&
		    memcmp(line, ssh_key_types[i].name, type_len) == 0) {
			type = ssh_key_types[i].name;
			fields = ssh_key_types[i].fields;
		}
	if (!type)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: line %zu: unknown key type '%.*s' (expected an OpenSSH "
				    "public key line '<type> <base64> [comment]', type one of "
				    "" SSH_KEY_TYPES ")",
				    F_SSH_KEY, lineno, (int)(type_len > 40 ? 40 : type_len), line);

	const char *b64 = line + type_len;
	while (b64 < end && (*b64 == ' ' || *b64 == '\t'))
		b64++;
	size_t b64_len = word_len(b64, end);
	if (b64_len == 0)
		return hs_error_set(err, -EINVAL, INVALID, "%s: line %zu: no key data after '%s'",
				    F_SSH_KEY, lineno, type);

	_cleanup_free_ unsigned char *blob = malloc(b64_len / 4 * 3 + 3);
	if (!blob)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	ssize_t n = base64_decode(b64, b64_len, blob);
	if (n < 0)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: line %zu: the key data after '%s' is not valid base64",
				    F_SSH_KEY, lineno, type);
	/* The blob starts with its own type: uint32 big-endian length, name. */
	size_t tl = strlen(type);
	uint32_t name_len = 0;
	if (n >= 4)
		name_len = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 |
			   (uint32_t)blob[2] << 8 | (uint32_t)blob[3];
	if (n < 4 || name_len > (size_t)n - 4)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: line %zu: the key data is truncated or damaged (it does "
				    "not start with the key type)",
				    F_SSH_KEY, lineno);
	if (name_len != tl || memcmp(blob + 4, type, tl) != 0) {
		bool printable = name_len > 0 && name_len <= 64;
		for (uint32_t i = 0; i < name_len && printable; i++)
			printable = blob[4 + i] > 0x20 && blob[4 + i] < 0x7f;
		if (printable)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: line %zu: the line says '%s' but the key data is "
					    "a '%.*s' key",
					    F_SSH_KEY, lineno, type, (int)name_len, blob + 4);
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: line %zu: the key data does not start with its type '%s' "
				    "(damaged key?)",
				    F_SSH_KEY, lineno, type);
	}
	/* The rest: exactly the fields of that type, nothing cut short. */
	size_t pos = 0;
	unsigned count = 0;
	while (pos < (size_t)n) {
		if ((size_t)n - pos < 4)
			break;
		uint32_t l = (uint32_t)blob[pos] << 24 | (uint32_t)blob[pos + 1] << 16 |
			     (uint32_t)blob[pos + 2] << 8 | (uint32_t)blob[pos + 3];
		if (l > (size_t)n - pos - 4)
			break;
		pos += 4 + l;
		count++;
	}
	if (pos != (size_t)n || count != fields)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: line %zu: the key data is truncated or damaged (not the "
				    "fields of a '%s' key)",
				    F_SSH_KEY, lineno, type);
	return 0;
}

static int check_ssh_key(const char *text, HsError *err)
{
	size_t len = strlen(text);
	if (len > CLOUDINIT_SSH_KEY_MAX)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: %zu bytes, more than the limit of 64 KiB (%u bytes)",
				    F_SSH_KEY, len, CLOUDINIT_SSH_KEY_MAX);
	if (strstr(text, "-----BEGIN") && strstr(text, "PRIVATE KEY"))
		return hs_error_set(
		    err, -EINVAL, INVALID,
		    "%s: this is a PRIVATE key: give the public key instead (the "
		    "one-line '.pub' file, e.g. ~/.ssh/id_ed25519.pub); the private "
		    "key must never leave its owner",
		    F_SSH_KEY);
	if (strstr(text, "BEGIN SSH2 PUBLIC KEY"))
		return hs_error_set(
		    err, -EINVAL, INVALID,
		    "%s: an RFC 4716 key is not an OpenSSH public key line (convert "
		    "it with 'ssh-keygen -i -f FILE')",
		    F_SSH_KEY);
	if (strstr(text, "-----BEGIN"))
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: a PEM block is not an OpenSSH public key line (convert it "
				    "with 'ssh-keygen -i -m PKCS8 -f FILE')",
				    F_SSH_KEY);

	const char *cursor = text, *line;
	size_t line_len, lineno = 0, keys = 0;
	while (next_line(&cursor, &line, &line_len)) {
		lineno++;
		if (line_len == 0 || line[0] == '#')
			continue;
		int r = check_ssh_key_line(line, line_len, lineno, err);
		if (r < 0)
			return r;
		keys++;
	}
	if (keys == 0)
		return hs_error_set(err, -EINVAL, INVALID,
				    "%s: holds no public key (only empty or comment lines)",
				    F_SSH_KEY);
	return 0;
}

static bool is_hostname_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

static int check_hostname(const char *name, HsError *err)
{
	size_t n = strlen(name);
	if (n == 0)
		return hs_error_set(err, -EINVAL, INVALID, "%s: must not be empty", F_HOSTNAME);
	if (n > CLOUDINIT_HOSTNAME_MAX)
		return hs_error_set(err, -EINVAL, INVALID, "%s: longer than %d characters",
				    F_HOSTNAME, CLOUDINIT_HOSTNAME_MAX);
	for (const char *label = name;;) {
		size_t l = strcspn(label, ".");
		if (l == 0)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: '%s' has an empty label (a leading, trailing or "
					    "doubled '.')",
					    F_HOSTNAME, name);
		if (l > 63)
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: label '%.20s...' is longer than 63 characters",
					    F_HOSTNAME, label);
		for (size_t i = 0; i < l; i++)
			if (!is_hostname_char(label[i]))
				return hs_error_set(
				    err, -EINVAL, INVALID,
				    "%s: character 0x%02x ('%c') is not allowed: only letters, "
				    "digits and '-', in labels separated by '.' (RFC 1123)",
				    F_HOSTNAME, (unsigned char)label[i],
				    (unsigned char)label[i] >= 0x20 &&
					    (unsigned char)label[i] < 0x7f
					? label[i]
					: '?');
		if (label[0] == '-' || label[l - 1] == '-')
			return hs_error_set(err, -EINVAL, INVALID,
					    "%s: label '%.*s' starts or ends with '-'", F_HOSTNAME,
					    (int)l, label);
		if (label[l] == '\0')
			break;
		label += l + 1;
	}
	return 0;
}

int cloudinit_config_validate(const CloudInitConfig *cfg, HsError *err)
{
	int r;
	if (cfg->user_data && (r = check_user_data(cfg->user_data, err)) < 0)
		return r;
	if (cfg->network_config && (r = check_network_config(cfg->network_config, err)) < 0)
		return r;
	if (cfg->ssh_key && (r = check_ssh_key(cfg->ssh_key, err)) < 0)
		return r;
	if (cfg->hostname && (r = check_hostname(cfg->hostname, err)) < 0)
		return r;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Hostname, instance-id, meta-data */

char *cloudinit_hostname(const CloudInitConfig *cfg, const char *vm_name)
{
	if (cfg && cfg->hostname)
		return strdup(cfg->hostname);
	/* VM names are [a-z0-9][a-z0-9_-]*, up to 63: map what a hostname
	 * label cannot hold to '-', then trim the '-' at the ends. */
	const char *s = vm_name;
	while (*s && !(is_hostname_char(*s) && *s != '-'))
		s++;
	char *h = strndup(s, 63);
	if (!h)
		return NULL;
	for (char *p = h; *p; p++)
		if (!is_hostname_char(*p))
			*p = '-';
	size_t n = strlen(h);
	while (n > 0 && h[n - 1] == '-')
		h[--n] = '\0';
	if (n == 0) {
		free(h);
		return strdup("localhost");
	}
	return h;
}

static void hash_field(struct sha256_ctx *ctx, const char *s)
{
	uint8_t head[9] = {0};
	if (s) {
		uint64_t n = strlen(s);
		head[0] = 1;
		for (int i = 0; i < 8; i++)
			head[1 + i] = (uint8_t)(n >> (56 - 8 * i));
	}
	sha256_update(ctx, s ? sizeof(head) : 1, head);
	if (s)
		sha256_update(ctx, strlen(s), (const uint8_t *)s);
}

char *cloudinit_instance_id(const char *vm_name, const char *nonce, const CloudInitConfig *cfg)
{
	static const char domain[] = "hsd cloud-init instance-id v1";
	struct sha256_ctx ctx;
	uint8_t digest[SHA256_DIGEST_SIZE];

	sha256_init(&ctx);
	sha256_update(&ctx, sizeof(domain), (const uint8_t *)domain);
	hash_field(&ctx, vm_name);
	hash_field(&ctx, nonce);
	hash_field(&ctx, cfg ? cfg->user_data : NULL);
	hash_field(&ctx, cfg ? cfg->network_config : NULL);
	hash_field(&ctx, cfg ? cfg->ssh_key : NULL);
	hash_field(&ctx, cfg ? cfg->hostname : NULL);
	sha256_digest(&ctx, sizeof(digest), digest);

	char hex[3 + 16 + 1] = "hs-";
	for (size_t i = 0; i < 8; i++)
		snprintf(hex + 3 + 2 * i, 3, "%02x", digest[i]);
	return strdup(hex);
}

static bool emit_scalar(yaml_emitter_t *e, const char *s, size_t len, yaml_scalar_style_t style)
{
	yaml_event_t ev;
	if (len > INT_MAX)
		return false;
	return yaml_scalar_event_initialize(&ev, NULL, NULL, (const yaml_char_t *)s, (int)len, 1, 1,
					    style) &&
	       yaml_emitter_emit(e, &ev);
}

/* A key (a fixed, plain word) and its value, always double-quoted: whatever
 * the value holds (':', '#', newlines, quotes), it stays one string. */
static bool emit_pair(yaml_emitter_t *e, const char *key, const char *value)
{
	return emit_scalar(e, key, strlen(key), YAML_PLAIN_SCALAR_STYLE) &&
	       emit_scalar(e, value, strlen(value), YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}

static bool emit_meta_data(yaml_emitter_t *e, const char *instance_id, const char *hostname,
			   const char *ssh_key)
{
	yaml_event_t ev;
	if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) ||
	    !yaml_emitter_emit(e, &ev))
		return false;
	if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) ||
	    !yaml_emitter_emit(e, &ev))
		return false;
	if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
	    !yaml_emitter_emit(e, &ev))
		return false;
	if (!emit_pair(e, "instance-id", instance_id) || !emit_pair(e, "local-hostname", hostname))
		return false;

	const char *cursor = ssh_key, *line;
	size_t len;
	bool started = false;
	while (ssh_key && next_line(&cursor, &line, &len)) {
		if (len == 0 || line[0] == '#')
			continue;
		if (!started) {
			if (!emit_scalar(e, "public-keys", strlen("public-keys"),
					 YAML_PLAIN_SCALAR_STYLE) ||
			    !yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
								  YAML_BLOCK_SEQUENCE_STYLE) ||
			    !yaml_emitter_emit(e, &ev))
				return false;
			started = true;
		}
		if (!emit_scalar(e, line, len, YAML_DOUBLE_QUOTED_SCALAR_STYLE))
			return false;
	}
	if (started && (!yaml_sequence_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev)))
		return false;

	return yaml_mapping_end_event_initialize(&ev) && yaml_emitter_emit(e, &ev) &&
	       yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(e, &ev) &&
	       yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(e, &ev);
}

char *cloudinit_meta_data(const char *instance_id, const char *hostname, const char *ssh_key)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f)
		return NULL;
	yaml_emitter_t e;
	bool ok = yaml_emitter_initialize(&e);
	if (ok) {
		yaml_emitter_set_output_file(&e, f);
		yaml_emitter_set_unicode(&e, 1);
		yaml_emitter_set_width(&e, -1); /* never fold long keys */
		ok = emit_meta_data(&e, instance_id, hostname, ssh_key);
		yaml_emitter_delete(&e);
	}
	if (fclose(f) != 0)
		ok = false;
	if (!ok) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ------------------------------------------------------------------------ */
/* The ISO9660 volume */

static int iso_errno(int iso_code)
{
	return iso_code == (int)ISO_OUT_OF_MEM ? -ENOMEM : -EIO;
}

/* Sets err from a libisofs error code, adding the first message libisofs
 * queued (its writer thread reports only there), then empties the queue. */
static void iso_msgs_discard(void)
{
	char never[] = "NEVER", severity[80], text[ISO_MSGS_MESSAGE_LEN];
	int code, imgid;
	while (iso_obtain_msgs(never, &code, &imgid, text, severity) > 0)
		;
}

static int iso_fail(HsError *err, int iso_code, const char *what)
{
	char min[] = "SORRY", severity[80], text[ISO_MSGS_MESSAGE_LEN];
	int code, imgid;
	if (iso_obtain_msgs(min, &code, &imgid, text, severity) <= 0)
		text[0] = '\0';
	iso_msgs_discard();
	return hs_error_set(err, iso_errno(iso_code), "internal", "cloud-init volume: %s: %s%s%s",
			    what, iso_code < 0 ? iso_error_to_msg(iso_code) : "failed",
			    text[0] ? ": " : "", text);
}

static int iso_init_once(HsError *err)
{
	static bool done;
	if (done)
		return 0;
	/* bit0: leave the process's locale alone. */
	int r = iso_init_with_flag(1);
	if (r < 0)
		return hs_error_set(err, iso_errno(r), "internal",
				    "cloud-init volume: cannot initialise libisofs: %s",
				    iso_error_to_msg(r));
	/* A library does not print: queue problems for iso_fail, print none. */
	char queue[] = "SORRY", print[] = "NEVER", id[] = "libisofs: ", utf8[] = "UTF-8";
	iso_set_msgs_severities(queue, print, id);
	/* Names are ASCII; say so rather than depend on the locale. */
	iso_set_local_charset(utf8, 0);
	done = true;
	return 0;
}

static void iso_node_fix(IsoNode *node, mode_t mode)
{
	iso_node_set_permissions(node, mode);
	iso_node_set_uid(node, 0);
	iso_node_set_gid(node, 0);
	iso_node_set_mtime(node, ISO_FIXED_TIME);
	iso_node_set_atime(node, ISO_FIXED_TIME);
	iso_node_set_ctime(node, ISO_FIXED_TIME);
}

static int iso_add_file(IsoImage *image, const char *name, const char *text, HsError *err)
{
	size_t len = strlen(text);
	unsigned char *buf = malloc(len + 1);
	if (!buf)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	memcpy(buf, text, len);
	IsoStream *stream = NULL;
	int r = iso_memory_stream_new(buf, len, &stream);
	if (r < 0) {
		free(buf); /* owned by the stream only once it exists */
		return iso_fail(err, r, name);
	}
	IsoFile *file = NULL;
	/* The file takes our reference to the stream, on success only. */
	r = iso_image_add_new_file(image, iso_image_get_root(image), name, stream, &file);
	if (r < 0) {
		iso_stream_unref(stream);
		return iso_fail(err, r, name);
	}
	iso_node_fix((IsoNode *)file, 0444);
	return 0;
}

static int iso_opts_new(IsoWriteOpts **ret, HsError *err)
{
	IsoWriteOpts *opts = NULL;
	char uuid[] = ISO_FIXED_TIME_TEXT;
	int r = iso_write_opts_new(&opts, 0);
	if (r < 0)
		return iso_fail(err, r, "write options");
	/* Level 2: 31-character ISO names; the real names are in Rock Ridge
	 * (what Linux reads) and Joliet (what Windows reads). */
	if ((r = iso_write_opts_set_iso_level(opts, 2)) < 0 ||
	    (r = iso_write_opts_set_rockridge(opts, 1)) < 0 ||
	    (r = iso_write_opts_set_joliet(opts, 1)) < 0 ||
	    /* Keep the volume id "cidata" as given: libisofs would
	     * upper-case it to ISO9660 d-characters ("CIDATA"), as neither
	     * cloud-localds (genisoimage) nor older cloud-init expect. */
	    (r = iso_write_opts_set_relaxed_vol_atts(opts, 1)) < 0 ||
	    /* Reproducible: fixed modes, owners and times, whatever the
	     * nodes, the clock and the time zone say. */
	    (r = iso_write_opts_set_replace_mode(opts, 2, 2, 2, 2)) < 0 ||
	    (r = iso_write_opts_set_default_dir_mode(opts, 0555)) < 0 ||
	    (r = iso_write_opts_set_default_file_mode(opts, 0444)) < 0 ||
	    (r = iso_write_opts_set_default_uid(opts, 0)) < 0 ||
	    (r = iso_write_opts_set_default_gid(opts, 0)) < 0 ||
	    (r = iso_write_opts_set_replace_timestamps(opts, 2)) < 0 ||
	    (r = iso_write_opts_set_default_timestamp(opts, ISO_FIXED_TIME)) < 0 ||
	    (r = iso_write_opts_set_always_gmt(opts, 1)) < 0 ||
	    /* The volume times; vol_uuid also fixes libisofs' "now", used in
	     * the ISO9660 and Joliet directory records. */
	    (r = iso_write_opts_set_pvd_times(opts, ISO_FIXED_TIME, ISO_FIXED_TIME, 0, 0, uuid)) <
		0) {
		iso_write_opts_free(opts);
		return iso_fail(err, r, "write options");
	}
	*ret = opts;
	return 0;
}

/* Reads the image libisofs generates (in its own thread) into memory. */
static int iso_produce(IsoImage *image, IsoWriteOpts *opts, void **ret_data, size_t *ret_len,
		       HsError *err)
{
	struct burn_source *src = NULL;
	int r = iso_image_create_burn_source(image, opts, &src);
	if (r < 0)
		return iso_fail(err, r, "cannot start the image writer");

	off_t total = src->get_size(src);
	size_t cap = total > 0 ? (size_t)total : 64 * 2048, len = 0;
	unsigned char *buf = malloc(cap);
	r = buf ? 0 : hs_error_set(err, -ENOMEM, "internal", "out of memory");
	while (r == 0) {
		if (cap - len < 2048) {
			unsigned char *nb = realloc(buf, cap * 2);
			if (!nb) {
				r = hs_error_set(err, -ENOMEM, "internal", "out of memory");
				break;
			}
			buf = nb;
			cap *= 2;
		}
		int n = src->read_xt(src, buf + len, 2048);
		if (n < 0)
			r = iso_fail(err, ISO_WRITE_ERROR, "writing the image");
		else if (n == 0)
			break;
		else
			len += (size_t)n;
	}
	/* Stops the writer thread if it still runs, and joins it. */
	src->free_data(src);
	free(src);
	if (r == 0 && total > 0 && (off_t)len != total)
		r = hs_error_set(err, -EIO, "internal",
				 "cloud-init volume: %zu bytes produced, %lld announced", len,
				 (long long)total);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret_data = buf;
	*ret_len = len;
	return 0;
}

int cloudinit_build_iso(const char *vm_name, const char *nonce, const CloudInitConfig *cfg,
			void **ret_data, size_t *ret_len, HsError *err)
{
	int r = iso_init_once(err);
	if (r < 0)
		return r;

	_cleanup_free_ char *instance_id = cloudinit_instance_id(vm_name, nonce, cfg);
	_cleanup_free_ char *hostname = cloudinit_hostname(cfg, vm_name);
	if (!instance_id || !hostname)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	_cleanup_free_ char *meta_data = cloudinit_meta_data(instance_id, hostname, cfg->ssh_key);
	if (!meta_data)
		return hs_error_set(err, -EINVAL, INVALID,
				    "cloud_init: cannot write meta-data (out of memory, or a value "
				    "is not valid UTF-8)");

	IsoImage *image = NULL;
	r = iso_image_new("cidata", &image);
	if (r < 0)
		return iso_fail(err, r, "cannot create the image");
	iso_image_set_volume_id(image, "cidata");
	iso_node_fix((IsoNode *)iso_image_get_root(image), 0555);

	IsoWriteOpts *opts = NULL;
	r = iso_add_file(image, "meta-data", meta_data, err);
	if (r == 0)
		r = iso_add_file(image, "user-data",
				 cfg->user_data ? cfg->user_data : CLOUDINIT_DEFAULT_USER_DATA,
				 err);
	if (r == 0 && cfg->network_config)
		r = iso_add_file(image, "network-config", cfg->network_config, err);
	if (r == 0)
		r = iso_opts_new(&opts, err);
	if (r == 0)
		r = iso_produce(image, opts, ret_data, ret_len, err);

	if (opts)
		iso_write_opts_free(opts);
	iso_image_unref(image);
	iso_msgs_discard();
	return r;
}

int cloudinit_write_iso(int dirfd, const char *name, const char *vm_name, const char *nonce,
			const CloudInitConfig *cfg, HsError *err)
{
	int r = cloudinit_config_validate(cfg, err);
	if (r < 0)
		return r;
	_cleanup_free_ void *data = NULL;
	size_t len = 0;
	r = cloudinit_build_iso(vm_name, nonce, cfg, &data, &len, err);
	if (r < 0)
		return r;
	/* The volume may hold secrets (passwords in a cloud-config): 0600. */
	r = hs_write_file_atomic(dirfd, name, data, len, 0600);
	if (r < 0)
		return hs_error_set(err, r, "internal", "cannot write the cloud-init volume %s: %s",
				    name, strerror(-r));
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Life cycle and JSON */

void cloudinit_config_clear(CloudInitConfig *cfg)
{
	if (!cfg)
		return;
	free(cfg->user_data);
	free(cfg->network_config);
	free(cfg->ssh_key);
	free(cfg->hostname);
	*cfg = (CloudInitConfig){0};
}

json_t *cloudinit_config_to_json(const CloudInitConfig *cfg)
{
	const struct {
		const char *key;
		const char *value;
	} fields[] = {
	    {"user_data", cfg->user_data},
	    {"network_config", cfg->network_config},
	    {"ssh_key", cfg->ssh_key},
	    {"hostname", cfg->hostname},
	};
	json_t *obj = json_object();
	if (!obj)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		if (!fields[i].value)
			continue;
		if (json_object_set_new(obj, fields[i].key, json_string(fields[i].value)) < 0) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

static int get_string(json_t *obj, const char *key, char **ret, HsError *err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return hs_error_set(err, -EINVAL, INVALID, "cloud_init.%s: must be a string", key);
	const char *s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return hs_error_set(err, -EINVAL, INVALID,
				    "cloud_init.%s: must not contain NUL bytes", key);
	*ret = strdup(s);
	if (!*ret)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	return 0;
}

int cloudinit_config_from_json(json_t *obj, CloudInitConfig *ret, HsError *err)
{
	static const char *const keys[] = {"user_data", "network_config", "ssh_key", "hostname"};
	if (!json_is_object(obj))
		return hs_error_set(err, -EINVAL, INVALID, "cloud_init: must be an object");
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		bool known = false;
		for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
			known = known || !strcmp(key, keys[i]);
		if (!known)
			return hs_error_set(err, -EINVAL, INVALID,
					    "cloud_init: unknown field '%s' (known: user_data, "
					    "network_config, ssh_key, hostname)",
					    key);
	}

	_cleanup_(cloudinit_config_clear) CloudInitConfig cfg = {0};
	int r;
	if ((r = get_string(obj, "user_data", &cfg.user_data, err)) < 0 ||
	    (r = get_string(obj, "network_config", &cfg.network_config, err)) < 0 ||
	    (r = get_string(obj, "ssh_key", &cfg.ssh_key, err)) < 0 ||
	    (r = get_string(obj, "hostname", &cfg.hostname, err)) < 0)
		return r;
	r = cloudinit_config_validate(&cfg, err);
	if (r < 0)
		return r;
	*ret = cfg;
	cfg = (CloudInitConfig){0};
	return 0;
}
