/* SPDX-License-Identifier: Apache-2.0 */
/* hsd's options and config file parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <string.h>

#include "options.h"

static void test_defaults(void **state)
{
	HsdOptions o;
	hsd_options_init(&o);
	assert_true(o.seccomp);
	assert_int_equal(o.ksm_mode, KSM_MODE_AUTO);
	assert_true(o.overcommit == 3.0);
	assert_true(o.stop_timeout == 60);
	assert_null(o.state_dir);
	hsd_options_clear(&o);
}

static void test_set(void **state)
{
	HsdOptions o;
	HsError err = {0};
	hsd_options_init(&o);
	assert_int_equal(hsd_option_set(&o, "state-dir", "/srv/hsd", &err), 0);
	assert_string_equal(o.state_dir, "/srv/hsd");
	assert_int_equal(hsd_option_set(&o, "state-dir", "/srv/other", &err), 0);
	assert_string_equal(o.state_dir, "/srv/other");
	assert_int_equal(hsd_option_set(&o, "overcommit", "2.5", &err), 0);
	assert_true(o.overcommit == 2.5);
	assert_int_equal(hsd_option_set(&o, "ksm-mode", "fixed", &err), 0);
	assert_int_equal(o.ksm_mode, KSM_MODE_FIXED);
	assert_int_equal(hsd_option_set(&o, "allowed-dir", "/a", &err), 0);
	assert_int_equal(hsd_option_set(&o, "allowed-dir", "/b", &err), 0);
	assert_int_equal(o.n_allowed, 2);
	assert_int_equal(hsd_option_set(&o, "no-seccomp", NULL, &err), 0);
	assert_false(o.seccomp);
	assert_int_equal(hsd_option_set(&o, "seccomp", "yes", &err), 0);
	assert_true(o.seccomp);

	assert_int_equal(hsd_option_set(&o, "state-dir", "relative", &err), -EINVAL);
	assert_non_null(strstr(err.message, "state-dir"));
	assert_int_equal(hsd_option_set(&o, "overcommit", "lots", &err), -EINVAL);
	assert_non_null(strstr(err.message, "overcommit"));
	assert_int_equal(hsd_option_set(&o, "overcommit", "1000", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "ksm-mode", "turbo", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "seccomp", "maybe", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "colour", "blue", &err), -EINVAL);
	assert_non_null(strstr(err.message, "unknown option 'colour'"));
	assert_int_equal(hsd_option_set(&o, "qemu-user", "", &err), -EINVAL);

	/* The web console: off by default; ADDR:PORT. */
	assert_null(o.web_listen);
	assert_int_equal(hsd_option_set(&o, "web-listen", "127.0.0.1:8006", &err), 0);
	assert_string_equal(o.web_listen, "127.0.0.1:8006");
	assert_int_equal(hsd_option_set(&o, "web-listen", "[::1]:8006", &err), 0);
	const char *bad_listen[] = {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
				    "localhost:8006", "::1:8006", "[::1]8006", "1.2.3.4:80x",
				    ":8006", "[127.0.0.1]:80", "127.0.0.1:-1"};
	for (size_t i = 0; i < sizeof(bad_listen) / sizeof(bad_listen[0]); i++) {
		assert_int_equal(hsd_option_set(&o, "web-listen", bad_listen[i], &err), -EINVAL);
		assert_non_null(strstr(err.message, "web-listen"));
	}
	assert_string_equal(o.web_listen, "[::1]:8006");
	struct sockaddr_storage sa;
	socklen_t sa_len;
	assert_int_equal(hsd_parse_listen("10.1.2.3:443", &sa, &sa_len), 0);
	assert_int_equal(sa.ss_family, AF_INET);
	assert_int_equal(sa_len, sizeof(struct sockaddr_in));
	assert_int_equal(ntohs(((struct sockaddr_in *)&sa)->sin_port), 443);
	assert_int_equal(hsd_parse_listen("[::]:8006", &sa, &sa_len), 0);
	assert_int_equal(sa.ss_family, AF_INET6);
	assert_int_equal(hsd_option_set(&o, "spice-html5-dir", "/opt/spice-html5", &err), 0);
	assert_string_equal(o.spice_html5_dir, "/opt/spice-html5");
	assert_int_equal(hsd_option_set(&o, "spice-html5-dir", "rel", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "web-assets", "/var/cache/hs/web", &err), 0);
	assert_string_equal(o.web_assets, "/var/cache/hs/web");
	assert_false(hsd_option_reloadable("web-listen"));

	/* Incoming migrations: an IP literal, a port range. */
	assert_int_equal(o.migration_port_lo, 49152);
	assert_int_equal(o.migration_port_hi, 49215);
	assert_int_equal(hsd_option_set(&o, "migration-address", "10.0.0.2", &err), 0);
	assert_string_equal(o.migration_address, "10.0.0.2");
	assert_int_equal(hsd_option_set(&o, "migration-address", "fd00::2", &err), 0);
	assert_int_equal(hsd_option_set(&o, "migration-address", "host.example", &err), -EINVAL);
	assert_non_null(strstr(err.message, "not an IP address"));
	assert_int_equal(hsd_option_set(&o, "migration-ports", "50000-50010", &err), 0);
	assert_int_equal(o.migration_port_lo, 50000);
	assert_int_equal(o.migration_port_hi, 50010);
	assert_int_equal(hsd_option_set(&o, "migration-ports", "80-90", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "migration-ports", "50010-50000", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "migration-ports", "50000-", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "migration-ports", "50000-70000", &err), -EINVAL);
	assert_true(hsd_option_reloadable("migration-ports"));
	assert_int_equal(o.spice_port_lo, 5900);
	assert_int_equal(o.spice_port_hi, 5999);
	assert_int_equal(hsd_option_set(&o, "spice-ports", "6000-6001", &err), 0);
	assert_int_equal(o.spice_port_lo, 6000);
	assert_int_equal(o.spice_port_hi, 6001);
	assert_int_equal(hsd_option_set(&o, "spice-ports", "6001-6000", &err), -EINVAL);
	assert_int_equal(hsd_option_set(&o, "spice-ports", "5900", &err), -EINVAL);
	assert_true(hsd_option_reloadable("spice-ports"));
	hsd_options_clear(&o);
}

static void test_balloon_options(void **state)
{
	HsdOptions o;
	HsError err = {0};
	hsd_options_init(&o);
	assert_false(o.balloon_auto);
	assert_false(o.balloon_policy_set);
	assert_true(o.balloon_stats_interval == 5);
	assert_int_equal(hsd_option_set(&o, "balloon-policy", "auto", &err), 0);
	assert_true(o.balloon_auto && o.balloon_policy_set);
	assert_int_equal(hsd_option_set(&o, "balloon-low", "2G", &err), 0);
	assert_int_equal(o.balloon_low_mib, 2048);
	assert_int_equal(hsd_option_set(&o, "balloon-high", "3072", &err), 0);
	assert_int_equal(o.balloon_high_mib, 3072);
	assert_int_equal(hsd_option_set(&o, "balloon-stats-interval", "2", &err), 0);
	assert_true(o.balloon_stats_interval == 2);
	assert_int_equal(hsd_option_set(&o, "balloon-policy", "on", &err), -EINVAL);
	assert_non_null(strstr(err.message, "balloon-policy"));
	assert_int_equal(hsd_option_set(&o, "balloon-low", "lots", &err), -EINVAL);
	assert_non_null(strstr(err.message, "balloon-low"));
	assert_int_equal(hsd_option_set(&o, "balloon-stats-interval", "0", &err), -EINVAL);
	assert_true(hsd_option_reloadable("balloon-policy"));
	hsd_options_clear(&o);
}

static void test_config_file(void **state)
{
	HsdOptions o;
	HsError err = {0};
	hsd_options_init(&o);
	const char *text = "# hsd settings\n"
			   "\n"
			   "state-dir = /srv/hsd   # trailing comment\n"
			   "  overcommit=1.5\n"
			   "allowed-dir = /srv/images\n"
			   "seccomp = no\n"
			   "ksm-mode = off\n";
	assert_int_equal(hsd_config_parse(text, "hsd.conf", &o, &err), 0);
	assert_string_equal(o.state_dir, "/srv/hsd");
	assert_true(o.overcommit == 1.5);
	assert_int_equal(o.n_allowed, 1);
	assert_false(o.seccomp);
	assert_int_equal(o.ksm_mode, KSM_MODE_OFF);
	hsd_options_clear(&o);

	hsd_options_init(&o);
	assert_int_equal(hsd_config_parse("state-dir = /x\ncolour = blue\n", "/etc/hsd/hsd.conf",
					  &o, &err),
			 -EINVAL);
	assert_string_equal(err.kind, "invalid-config");
	assert_non_null(strstr(err.message, "/etc/hsd/hsd.conf:2: unknown option 'colour'"));
	assert_int_equal(hsd_config_parse("overcommit\n", "c", &o, &err), -EINVAL);
	assert_non_null(strstr(err.message, "c:1: expected 'key = value'"));
	assert_int_equal(hsd_config_parse("a\n\nb = \n", "c", &o, &err), -EINVAL);
	assert_int_equal(hsd_config_parse("no-seccomp = yes\n", "c", &o, &err), -EINVAL);
	assert_non_null(strstr(err.message, "seccomp = no"));
	assert_int_equal(hsd_config_parse("qmp-timeout = 0\n", "c", &o, &err), -EINVAL);
	assert_non_null(strstr(err.message, "c:1: qmp-timeout"));
	hsd_options_clear(&o);
}

static void test_reloadable(void **state)
{
	assert_true(hsd_option_reloadable("overcommit"));
	assert_true(hsd_option_reloadable("allowed-dir"));
	assert_false(hsd_option_reloadable("state-dir"));
	assert_false(hsd_option_reloadable("seccomp"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_set),
		cmocka_unit_test(test_balloon_options),
		cmocka_unit_test(test_config_file),
		cmocka_unit_test(test_reloadable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
