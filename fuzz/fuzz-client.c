/* SPDX-License-Identifier: Apache-2.0 */
/* hsctl's HTTP client (cli/client.c) reading whatever a server sends. The
 * first input byte picks the call, the rest is the server's whole answer,
 * already waiting in the other end of a socketpair, which is then
 * half-closed: every read ends at the input's end, so nothing can hang.
 *   byte % 4 == 0: GET request, then a second one on the same connection
 *             1: POST with a JSON body
 *             2: hs_client_upgrade
 *             3: hs_client_stream; its line callback stops after byte / 4
 *                lines (0: never) */
#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "fuzz.h"

typedef struct Lines {
	unsigned seen, stop_after;
} Lines;

static int on_line(const char *line, size_t len, void *ud)
{
	Lines *l = ud;
	FUZZ_CHECK(strlen(line) == len || memchr(line, '\0', len));
	l->seen++;
	return l->stop_after && l->seen >= l->stop_after;
}

static void check_result(int r, const HsError *err)
{
	if (r < 0)
		FUZZ_CHECK(err->code == r && err->kind[0]);
}

static void do_request(HsClient *c, const char *method, json_t *body)
{
	unsigned status = 0;
	json_t *j = NULL;
	HsError err = {0};
	int r = hs_client_request(c, method, "/v1/vms", body, &status, &j, &err);
	check_result(r, &err);
	if (r == 0)
		FUZZ_CHECK(status <= 999); /* http-parser takes any three digits */
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned mode = data[0] % 4, arg = data[0] / 4;
	data++;
	size--;

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		fuzz_die("socketpair");
	/* Inputs are far smaller than a socket buffer (-max_len); what does
	 * not fit is cut, never waited for. */
	if (fuzz_send_some(sv[1], data, size) < 0)
		fuzz_die("send");
	shutdown(sv[1], SHUT_WR);

	HsClient c = {.fd = sv[0], .socket_path = NULL, .timeout = 0.05};
	HsError err = {0};
	unsigned status = 0;
	json_t *j = NULL;
	int r;

	switch (mode) {
	case 0:
		do_request(&c, "GET", NULL);
		do_request(&c, "GET", NULL);
		break;
	case 1: {
		json_t *body = json_pack("{s:s, s:i}", "name", "vm1", "cpus", 2);
		do_request(&c, "POST", body);
		json_decref(body);
		break;
	}
	case 2: {
		char *extra = NULL;
		size_t extra_len = 0;
		r = hs_client_upgrade(&c, "/v1/vms/vm1/console", "hsd-console", &extra, &extra_len,
				      &status, &j, &err);
		if (r == 0)
			FUZZ_CHECK(status == 101 && !j && (extra || extra_len == 0) &&
				   extra_len <= size);
		else
			FUZZ_CHECK(!extra && extra_len == 0);
		if (r < 0 && r != -EPROTO)
			check_result(r, &err);
		free(extra);
		json_decref(j);
		break;
	}
	default: {
		Lines l = {.stop_after = arg};
		r = hs_client_stream(&c, "/v1/events", on_line, &l, &status, &j, &err);
		check_result(r, &err);
		FUZZ_CHECK(!l.stop_after || l.seen <= l.stop_after);
		FUZZ_CHECK(c.timeout == 0.05);
		json_decref(j);
		break;
	}
	}
	hs_client_close(&c);
	close(sv[1]);
	return 0;
}
