/* SPDX-License-Identifier: Apache-2.0 */
#include "options.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

void hsd_options_init(HsdOptions *o)
{
	*o = (HsdOptions){
		.seccomp = true,
		.ksm_mode = KSM_MODE_AUTO,
		.stop_timeout = 60,
		.qmp_timeout = 10,
		.overcommit = 3.0,
		.pacing_timeout = 120,
		.tcg_tb_size = 12,
		/* libvirt's range: firewalls made for it fit */
		.migration_port_lo = 49152,
		.migration_port_hi = 49215,
		.spice_port_lo = 5900,
		.spice_port_hi = 5999,
		.balloon_stats_interval = 5,
	};
}

void hsd_options_clear(HsdOptions *o)
{
	char **strs[] = {&o->state_dir, &o->run_dir,	&o->socket,	 &o->qemu,
			 &o->qemu_user, &o->api_group, &o->admin_group, &o->sysroot,
			 &o->cgroup_base, &o->migration_address, &o->migration_tls_dir,
			 &o->memory_dir, &o->web_listen, &o->spice_html5_dir, &o->web_assets,
			 &o->ovmf_dir, &o->swtpm};
	for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
		free(*strs[i]);
		*strs[i] = NULL;
	}
	for (size_t i = 0; i < o->n_allowed; i++)
		free(o->allowed[i]);
	o->n_allowed = 0;
}

static int set_str(char **dst, const char *key, const char *value, bool path, HsError *err)
{
	if (!value || !*value)
		return hs_error_set(err, -EINVAL, "invalid-option", "%s: needs a value", key);
	if (path && value[0] != '/')
		return hs_error_set(err, -EINVAL, "invalid-option", "%s: '%s' is not an absolute path",
				    key, value);
	char *d = strdup(value);
	if (!d)
		return -ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
}

static int set_num(double *dst, const char *key, const char *value, double min, double max,
		   HsError *err)
{
	char *end;
	double v = value ? strtod(value, &end) : 0;
	if (!value || end == value || *end || v < min || v > max)
		return hs_error_set(err, -EINVAL, "invalid-option",
				    "%s: '%s' is not a number from %g to %g", key,
				    value ? value : "", min, max);
	*dst = v;
	return 0;
}

static int set_bool(bool *dst, const char *key, const char *value, HsError *err)
{
	if (value && (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1")))
		*dst = true;
	else if (value && (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0")))
		*dst = false;
	else
		return hs_error_set(err, -EINVAL, "invalid-option", "%s: '%s' is not yes or no", key,
				    value ? value : "");
	return 0;
}

/* A size in MiB: "2G", "512M", or a bare number of MiB. */
static int set_mib(uint64_t *dst, const char *key, const char *value, HsError *err)
{
	uint64_t bytes = 0;
	size_t digits = value ? strspn(value, "0123456789") : 0;
	if (value && digits && !value[digits] && digits < 12)
		bytes = strtoull(value, NULL, 10) << 20;
	else if (!value || hs_parse_size(value, &bytes) < 0 || bytes >> 60)
		return hs_error_set(err, -EINVAL, "invalid-option",
				    "%s: '%s' is not a size (MiB, or a number with K, M, G or T)",
				    key, value ? value : "");
	*dst = bytes >> 20;
	return 0;
}

/* "LO-HI" within 1024-65535. */
static int set_port_range(const char *key, const char *value, unsigned *lo, unsigned *hi,
			  HsError *err)
{
	unsigned l, h;
	int n = 0;
	if (!value || sscanf(value, "%u-%u%n", &l, &h, &n) != 2 || value[n] || l < 1024 ||
	    h > 65535 || l > h)
		return hs_error_set(err, -EINVAL, "invalid-option",
				    "%s: '%s' is not a port range LO-HI within 1024-65535", key,
				    value ? value : "");
	*lo = l;
	*hi = h;
	return 0;
}

int hsd_option_set(HsdOptions *o, const char *key, const char *value, HsError *err)
{
	if (!strcmp(key, "state-dir"))
		return set_str(&o->state_dir, key, value, true, err);
	if (!strcmp(key, "run-dir"))
		return set_str(&o->run_dir, key, value, true, err);
	if (!strcmp(key, "socket"))
		return set_str(&o->socket, key, value, true, err);
	if (!strcmp(key, "qemu"))
		return set_str(&o->qemu, key, value, true, err);
	if (!strcmp(key, "sysfs-root"))
		return set_str(&o->sysroot, key, value, true, err);
	if (!strcmp(key, "cgroup-base"))
		return set_str(&o->cgroup_base, key, value, false, err);
	if (!strcmp(key, "qemu-user"))
		return set_str(&o->qemu_user, key, value, false, err);
	if (!strcmp(key, "api-group"))
		return set_str(&o->api_group, key, value, false, err);
	if (!strcmp(key, "admin-group"))
		return set_str(&o->admin_group, key, value, false, err);
	if (!strcmp(key, "migration-address")) {
		unsigned char buf[16];
		if (!value || (inet_pton(AF_INET, value, buf) != 1 &&
			       inet_pton(AF_INET6, value, buf) != 1))
			return hs_error_set(err, -EINVAL, "invalid-option",
					    "migration-address: '%s' is not an IP address",
					    value ? value : "");
		return set_str(&o->migration_address, key, value, false, err);
	}
	if (!strcmp(key, "web-listen")) {
		struct sockaddr_storage sa;
		socklen_t len;
		if (!value || hsd_parse_listen(value, &sa, &len) < 0)
			return hs_error_set(err, -EINVAL, "invalid-option",
					    "web-listen: '%s' is not ADDR:PORT (an IP address, "
					    "[IPv6]:PORT)",
					    value ? value : "");
		return set_str(&o->web_listen, key, value, false, err);
	}
	if (!strcmp(key, "spice-html5-dir"))
		return set_str(&o->spice_html5_dir, key, value, true, err);
	if (!strcmp(key, "ovmf-dir"))
		return set_str(&o->ovmf_dir, key, value, true, err);
	if (!strcmp(key, "swtpm"))
		return set_str(&o->swtpm, key, value, true, err);
	if (!strcmp(key, "web-assets"))
		return set_str(&o->web_assets, key, value, true, err);
	if (!strcmp(key, "memory-dir"))
		return set_str(&o->memory_dir, key, value, true, err);
	if (!strcmp(key, "migration-tls-dir"))
		return set_str(&o->migration_tls_dir, key, value, true, err);
	if (!strcmp(key, "migration-ports"))
		return set_port_range(key, value, &o->migration_port_lo, &o->migration_port_hi, err);
	if (!strcmp(key, "spice-ports"))
		return set_port_range(key, value, &o->spice_port_lo, &o->spice_port_hi, err);
	if (!strcmp(key, "allowed-dir")) {
		if (!value || value[0] != '/')
			return hs_error_set(err, -EINVAL, "invalid-option",
					    "allowed-dir: '%s' is not an absolute path",
					    value ? value : "");
		if (o->n_allowed >= PATHS_MAX_DIRS - 1)
			return hs_error_set(err, -E2BIG, "invalid-option",
					    "allowed-dir: at most %d", PATHS_MAX_DIRS - 1);
		if (!(o->allowed[o->n_allowed] = strdup(value)))
			return -ENOMEM;
		o->n_allowed++;
		return 0;
	}
	if (!strcmp(key, "stop-timeout"))
		return set_num(&o->stop_timeout, key, value, 0.1, 86400, err);
	if (!strcmp(key, "qmp-timeout"))
		return set_num(&o->qmp_timeout, key, value, 0.1, 3600, err);
	if (!strcmp(key, "overcommit"))
		return set_num(&o->overcommit, key, value, 0.1, 100, err);
	if (!strcmp(key, "tcg-tb-size"))
		return set_num(&o->tcg_tb_size, key, value, 0, 4096, err);
	if (!strcmp(key, "pacing-timeout"))
		return set_num(&o->pacing_timeout, key, value, 0, 86400, err);
	if (!strcmp(key, "ksm-mode")) {
		if (!value || ksm_mode_from_string(value, &o->ksm_mode) < 0)
			return hs_error_set(err, -EINVAL, "invalid-option",
					    "ksm-mode: '%s' is not auto, off or fixed",
					    value ? value : "");
		o->ksm_mode_set = true;
		return 0;
	}
	if (!strcmp(key, "balloon-policy")) {
		if (!value || (strcmp(value, "auto") && strcmp(value, "off")))
			return hs_error_set(err, -EINVAL, "invalid-option",
					    "balloon-policy: '%s' is not auto or off",
					    value ? value : "");
		o->balloon_auto = !strcmp(value, "auto");
		o->balloon_policy_set = true;
		return 0;
	}
	if (!strcmp(key, "balloon-low"))
		return set_mib(&o->balloon_low_mib, key, value, err);
	if (!strcmp(key, "balloon-high"))
		return set_mib(&o->balloon_high_mib, key, value, err);
	if (!strcmp(key, "balloon-stats-interval"))
		return set_num(&o->balloon_stats_interval, key, value, 1, 3600, err);
	if (!strcmp(key, "no-seccomp") && !value) {
		o->seccomp = false;
		return 0;
	}
	if (!strcmp(key, "seccomp"))
		return set_bool(&o->seccomp, key, value, err);
	if (!strcmp(key, "verbose"))
		return value ? set_bool(&o->verbose, key, value, err) : (o->verbose = true, 0);
	return hs_error_set(err, -EINVAL, "invalid-option", "unknown option '%s'", key);
}

int hsd_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *start = s;
	size_t hlen;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		start = s + 1;
		hlen = (size_t)(close - start);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, start, hlen);
	host[hlen] = '\0';
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || port < 1 || port > 65535 || !isdigit((unsigned char)colon[1]))
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ret;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
	if (s[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*ret_len = sizeof(*in4);
	} else if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*ret_len = sizeof(*in6);
	} else {
		return -EINVAL;
	}
	return 0;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int hsd_config_parse(const char *text, const char *filename, HsdOptions *o, HsError *err)
{
	_cleanup_free_ char *copy = strdup(text);
	if (!copy)
		return -ENOMEM;
	unsigned lineno = 0;
	char *save = NULL;
	for (char *line = copy; line; line = save) {
		char *nl = strchr(line, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *l = trim(line);
		if (!*l)
			continue;
		char *eq = strchr(l, '=');
		if (!eq)
			return hs_error_set(err, -EINVAL, "invalid-config",
					    "%s:%u: expected 'key = value', got '%s'", filename,
					    lineno, l);
		*eq = '\0';
		char *key = trim(l), *value = trim(eq + 1);
		if (!strcmp(key, "no-seccomp"))
			return hs_error_set(err, -EINVAL, "invalid-config",
					    "%s:%u: write 'seccomp = no'", filename, lineno);
		HsError e = {0};
		int r = hsd_option_set(o, key, value, &e);
		if (r < 0)
			return hs_error_set(err, r, "invalid-config", "%s:%u: %s", filename, lineno,
					    e.message);
	}
	return 0;
}

bool hsd_option_reloadable(const char *key)
{
	static const char *const keys[] = {"stop-timeout", "qmp-timeout", "overcommit",
					   "pacing-timeout", "allowed-dir", "ksm-mode",
					   "verbose",	    "tcg-tb-size", "migration-address",
					   "migration-ports", "migration-tls-dir", "balloon-policy",
					   "spice-ports",
					   "balloon-low",   "balloon-high", NULL};
	for (size_t i = 0; keys[i]; i++)
		if (!strcmp(key, keys[i]))
			return true;
	return false;
}
