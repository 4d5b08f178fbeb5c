/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl console: attach to a VM's serial console through hsd. Works on a
 * terminal (raw mode, Ctrl-] detaches) and with pipes, so a script can drive
 * a guest's serial shell: --wait-for TEXT ends with 0 once TEXT appeared,
 * --timeout bounds the whole session. */
#include <getopt.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>

#include "hsctl.h"

#define DETACH_KEY 0x1d /* Ctrl-] */

static struct termios saved_tio;
static bool tio_saved;

static void restore_tty(void)
{
	if (tio_saved)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tio);
	tio_saved = false;
}

/* Looks for `needle` in the output seen so far, across read boundaries. */
typedef struct Matcher {
	const char *needle;
	size_t nlen;
	char *window;
	size_t wlen;
	bool found;
} Matcher;

static void matcher_feed(Matcher *m, const char *buf, size_t len)
{
	if (!m->needle || m->found)
		return;
	char *nw = realloc(m->window, m->wlen + len + 1);
	if (!nw)
		return;
	m->window = nw;
	memcpy(m->window + m->wlen, buf, len);
	m->wlen += len;
	m->window[m->wlen] = '\0';
	if (memmem(m->window, m->wlen, m->needle, m->nlen)) {
		m->found = true;
		return;
	}
	if (m->wlen >= m->nlen) {
		size_t keep = m->nlen - 1;
		memmove(m->window, m->window + m->wlen - keep, keep);
		m->wlen = keep;
	}
}


/* --spice: what a native SPICE client needs. The VM's UNIX socket when it
 * has no TCP listener; on TCP a console ticket's one-time password, valid
 * ttl seconds. --viewer: remote-viewer is run with it (the URI, password
 * included, is on its command line for that short while). */
static int console_spice(Ctl *ctl, const char *name, bool viewer, double ttl)
{
	_cleanup_free_ char *path = hs_strdup_printf("/v1/vms/%s", name);
	json_auto_t *vm = NULL;
	int rc = ctl_call(ctl, "GET", path, NULL, &vm);
	if (rc != EXIT_OK)
		return rc;
	json_t *sp = json_object_get(vm, "spice");
	json_auto_t *ticket = NULL;
	_cleanup_free_ char *uri = NULL;
	if (sp && json_object_get(sp, "port")) {
		_cleanup_free_ char *tpath = hs_strdup_printf("/v1/vms/%s/console-tickets", name);
		json_t *body = json_pack("{s:s, s:f}", "kind", "spice", "ttl", ttl);
		rc = ctl_call(ctl, "POST", tpath, body, &ticket);
		json_decref(body);
		if (rc != EXIT_OK)
			return rc;
		json_t *ts = json_object_get(ticket, "spice");
		const char *host = json_string_value(json_object_get(ts, "host"));
		const char *pw = json_string_value(json_object_get(ts, "password"));
		json_int_t port = json_integer_value(json_object_get(ts, "port"));
		if (!host || !pw || !port) {
			fputs("hsctl: hsd's console ticket has no SPICE address\n", stderr);
			return EXIT_FAILURE;
		}
		bool v6 = strchr(host, ':') != NULL;
		uri = hs_strdup_printf("spice://%s%s%s:%" JSON_INTEGER_FORMAT "/?password=%s",
				       v6 ? "[" : "", host, v6 ? "]" : "", port, pw);
	} else if (sp) {
		uri = hs_strdup_printf("spice+unix://%s",
				       json_string_value(json_object_get(sp, "socket")));
	} else {
		/* Why there is none, in hsd's words (not-running, no-display). */
		_cleanup_free_ char *tpath = hs_strdup_printf("/v1/vms/%s/console-tickets", name);
		json_t *body = json_pack("{s:s}", "kind", "spice");
		rc = ctl_call(ctl, "POST", tpath, body, &ticket);
		json_decref(body);
		if (rc != EXIT_OK)
			return rc;
		fprintf(stderr, "hsctl: VM '%s' has no SPICE server\n", name);
		return EXIT_FAILURE;
	}
	if (!uri)
		return EXIT_FAILURE;
	if (viewer) {
		fflush(stdout);
		char prog[] = "remote-viewer";
		char *args[] = {prog, uri, NULL};
		execvp(args[0], args);
		fprintf(stderr, "hsctl: cannot run remote-viewer (Debian: virt-viewer): %m\n");
		return EXIT_FAILURE;
	}
	if (ctl->json) {
		json_auto_t *o = json_pack("{s:s}", "uri", uri);
		if (ticket)
			json_object_set(o, "expires_at", json_object_get(ticket, "expires_at"));
		ctl_print_json(o);
	} else {
		printf("%s\n", uri);
	}
	return EXIT_OK;
}

int cmd_console(Ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{"wait-for", required_argument, NULL, 'w'},
		{"timeout", required_argument, NULL, 't'},
		{"no-replay", no_argument, NULL, 'n'},
		{"spice", no_argument, NULL, 's'},
		{"viewer", no_argument, NULL, 'V'},
		{"ttl", required_argument, NULL, 'T'},
		{0},
	};
	Matcher m = {0};
	double timeout = 0, ttl = 60;
	bool replay = true, spice = false, viewer = false, ttl_set = false;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'w':
			m.needle = optarg;
			m.nlen = strlen(optarg);
			break;
		case 't': {
			char *end;
			timeout = strtod(optarg, &end);
			if (end == optarg || *end || timeout <= 0) {
				fputs("hsctl: --timeout: seconds > 0\n", stderr);
				return EXIT_USAGE;
			}
			break;
		}
		case 'n':
			replay = false;
			break;
		case 's':
			spice = true;
			break;
		case 'V':
			viewer = true;
			break;
		case 'T': {
			char *end;
			ttl = strtod(optarg, &end);
			if (end == optarg || *end || !(ttl >= 5 && ttl <= 600)) {
				fputs("hsctl: --ttl: seconds from 5 to 600\n", stderr);
				return EXIT_USAGE;
			}
			ttl_set = true;
			break;
		}
		default:
			return EXIT_USAGE;
		}
	}
	/* --viewer and --ttl go with --spice; --spice with none of the serial
	 * console's options. */
	if (optind != argc - 1 || argv[optind][0] == '-' || (m.needle && !m.nlen) ||
	    (!spice && (viewer || ttl_set)) || (spice && (m.needle || timeout > 0 || !replay))) {
		fputs("hsctl: usage: hsctl console NAME [--wait-for TEXT] [--timeout S] "
		      "[--no-replay]\n"
		      "       hsctl console NAME --spice [--viewer] [--ttl S]\n",
		      stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	if (ctl_connect(ctl) < 0)
		return EXIT_UNREACHABLE;
	if (spice)
		return console_spice(ctl, name, viewer, ttl);

	_cleanup_free_ char *path =
		hs_strdup_printf("/v1/vms/%s/console%s", name, replay ? "" : "?replay=0");
	_cleanup_free_ char *extra = NULL;
	size_t extra_len = 0;
	unsigned status = 0;
	json_auto_t *ej = NULL;
	HsError err = {0};
	int r = hs_client_upgrade(&ctl->client, path, "hs-console", &extra, &extra_len, &status,
				  &ej, &err);
	if (r == -EPROTO && status)
		return ctl_report(ctl, status, ej, NULL);
	if (r < 0)
		return ctl_report(ctl, 0, NULL, &err);

	int sock = ctl->client.fd;
	bool tty = isatty(STDIN_FILENO);
	if (tty && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
		struct termios raw = saved_tio;
		cfmakeraw(&raw);
		tio_saved = true;
		atexit(restore_tty);
		tcsetattr(STDIN_FILENO, TCSADRAIN, &raw);
		fprintf(stderr, "Connected to %s's console. Ctrl-] detaches.\r\n", name);
	}

	int rc = EXIT_OK;
	if (extra_len) {
		hs_write_all(STDOUT_FILENO, extra, extra_len);
		matcher_feed(&m, extra, extra_len);
	}
	double deadline = timeout > 0 ? hs_now() + timeout : 0;
	bool stdin_open = true;
	double linger_until = 0;
	char buf[16384];

	while (!m.found) {
		struct pollfd pfd[2] = {{.fd = sock, .events = POLLIN},
					{.fd = STDIN_FILENO, .events = POLLIN}};
		double now = hs_now();
		double until = deadline;
		if (linger_until > 0 && (until == 0 || linger_until < until))
			until = linger_until;
		int wait_ms = until > 0 ? (int)((until - now) * 1000) : -1;
		if (until > 0 && wait_ms <= 0) {
			if (deadline > 0 && now >= deadline && m.needle) {
				restore_tty();
				fprintf(stderr, "\nhsctl: timed out after %.0f s waiting for '%s'\n",
					timeout, m.needle);
				rc = EXIT_HSD_ERROR;
			}
			break;
		}
		int n = poll(pfd, stdin_open ? 2 : 1, wait_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents) {
			ssize_t k = recv(sock, buf, sizeof(buf), 0);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				restore_tty();
				fprintf(stderr, "\nhsctl: console of %s closed (VM stopped?)\n",
					name);
				if (m.needle)
					rc = EXIT_HSD_ERROR;
				break;
			}
			hs_write_all(STDOUT_FILENO, buf, (size_t)k);
			matcher_feed(&m, buf, (size_t)k);
		}
		if (stdin_open && pfd[1].revents) {
			ssize_t k = read(STDIN_FILENO, buf, sizeof(buf));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				stdin_open = false;
				/* Pipe mode: wait for the answer to what was sent. */
				if (!m.needle && deadline == 0)
					linger_until = hs_now() + 1.0;
				continue;
			}
			if (tty) {
				char *d = memchr(buf, DETACH_KEY, (size_t)k);
				if (d) {
					if (d > buf)
						send(sock, buf, (size_t)(d - buf), MSG_NOSIGNAL);
					restore_tty();
					fputs("\r\nDetached.\n", stderr);
					break;
				}
			}
			if (send(sock, buf, (size_t)k, MSG_NOSIGNAL) < 0)
				break;
		}
	}
	restore_tty();
	free(m.window);
	return rc;
}
