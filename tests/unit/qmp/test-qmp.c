/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the QMP client against a scripted fake QEMU (fake-qmp-peer)
 * and against conversations recorded from a real QEMU (tests/data/qmp/). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake-qmp-peer.h"
#include "qmp.h"

#ifndef QMP_TEST_DATA_DIR
#error "QMP_TEST_DATA_DIR must be defined"
#endif

#define TAG(n) ((void *)(intptr_t)(n))

/* One test's world. Callbacks append what they saw to `log` (an array of
 * objects with a "type": "ready", "event", "reply" or "closed"), so tests
 * can check both contents and order. */
typedef struct Test {
	struct ev_loop *loop;
	FakePeer *peer;
	QmpClient *client;
	json_t *log;
	int free_on_reply_tag; /* free the client from this command's callback */
	bool free_on_ready, free_on_event, free_on_closed;
} Test;

static Test *T;

static void log_push(json_t *entry)
{
	assert_non_null(entry);
	assert_int_equal(json_array_append_new(T->log, entry), 0);
}

static size_t log_len(void)
{
	return json_array_size(T->log);
}

static json_t *log_at(size_t i)
{
	json_t *e = json_array_get(T->log, i);
	if (!e)
		fail_msg("log has %zu entries, wanted entry %zu", log_len(), i);
	return e;
}

static const char *log_str(size_t i, const char *key)
{
	return json_string_value(json_object_get(log_at(i), key));
}

static json_int_t log_int(size_t i, const char *key)
{
	return json_integer_value(json_object_get(log_at(i), key));
}

static size_t log_count(const char *type)
{
	size_t n = 0;
	for (size_t i = 0; i < log_len(); i++)
		n += strcmp(log_str(i, "type"), type) == 0;
	return n;
}

static bool log_reached(void *arg)
{
	return log_len() >= (size_t)(uintptr_t)arg;
}

static void wait_log(size_t n)
{
	if (!test_run_until(T->loop, log_reached, TAG(n), 2.0))
		fail_msg("waited for %zu log entries, got %zu", n, log_len());
}

/* Let any stray I/O or timer happen. */
static void settle(void)
{
	test_run_until(T->loop, NULL, NULL, 0.05);
}

static void assert_reply_ok(size_t i, int tag)
{
	assert_string_equal(log_str(i, "type"), "reply");
	assert_int_equal(log_int(i, "tag"), tag);
	assert_null(log_str(i, "kind"));
	assert_non_null(json_object_get(json_object_get(log_at(i), "reply"), "return"));
}

static void assert_reply_err(size_t i, int tag, const char *kind, int code)
{
	assert_string_equal(log_str(i, "type"), "reply");
	assert_int_equal(log_int(i, "tag"), tag);
	assert_non_null(log_str(i, "kind"));
	assert_string_equal(log_str(i, "kind"), kind);
	assert_int_equal(log_int(i, "code"), code);
}

static void assert_closed(size_t i, const char *kind, int code)
{
	assert_string_equal(log_str(i, "type"), "closed");
	assert_string_equal(log_str(i, "kind"), kind);
	assert_int_equal(log_int(i, "code"), code);
}

static void on_ready(QmpClient *c, json_t *greeting, void *userdata)
{
	assert_ptr_equal(userdata, T);
	assert_true(qmp_client_is_ready(c));
	log_push(json_pack("{s:s, s:O?}", "type", "ready", "greeting", greeting));
	if (T->free_on_ready)
		T->client = qmp_client_free(c);
}

static void on_event(QmpClient *c, const char *name, json_t *data, double seconds, void *userdata)
{
	log_push(json_pack("{s:s, s:s, s:o?, s:f}", "type", "event", "name", name, "data",
			   json_deep_copy(data), "seconds", seconds));
	if (T->free_on_event)
		T->client = qmp_client_free(c);
}

static void on_closed(QmpClient *c, const HsError *err, void *userdata)
{
	assert_non_null(err);
	assert_true(qmp_client_is_closed(c));
	assert_int_equal(qmp_client_pending(c), 0);
	assert_int_equal(qmp_client_execute(c, "query-status", NULL, 0, NULL, NULL), -ENOTCONN);
	log_push(json_pack("{s:s, s:s, s:s, s:i}", "type", "closed", "kind", err->kind, "message",
			   err->message, "code", err->code));
	if (T->free_on_closed)
		T->client = qmp_client_free(c);
}

static void on_reply(QmpClient *c, json_t *reply, const HsError *err, void *userdata)
{
	int tag = (int)(intptr_t)userdata;

	/* A reply object comes with success and with QEMU's errors only. */
	if (!err || strcmp(err->kind, "qmp-error") == 0)
		assert_non_null(reply);
	else
		assert_null(reply);
	log_push(json_pack("{s:s, s:i, s:o?, s:s?, s:s?, s:i}", "type", "reply", "tag", tag,
			   "reply", json_deep_copy(reply), "kind", err ? err->kind : NULL,
			   "message", err ? err->message : NULL, "code", err ? err->code : 0));
	if (tag == T->free_on_reply_tag)
		T->client = qmp_client_free(c);
}

static const QmpCallbacks callbacks = {
    .ready = on_ready,
    .event = on_event,
    .closed = on_closed,
};

static void start_client(const QmpOptions *opts)
{
	int fd;
	T->peer = fake_peer_new(T->loop, &fd);
	T->client = qmp_client_new(T->loop, fd, &callbacks, opts, T);
	assert_non_null(T->client);
}

static void stop_client(void)
{
	T->client = qmp_client_free(T->client);
	T->peer = fake_peer_free(T->peer);
	json_array_clear(T->log);
}

static int setup(void **state)
{
	T = calloc(1, sizeof(*T));
	assert_non_null(T);
	T->loop = ev_loop_new(EVFLAG_AUTO);
	T->log = json_array();
	return 0;
}

static int teardown(void **state)
{
	stop_client();
	json_decref(T->log);
	ev_loop_destroy(T->loop);
	free(T);
	T = NULL;
	return 0;
}

static void send_line(const char *text)
{
	assert_int_equal(fake_peer_send_line(T->peer, text), 0);
}

static void send_reply(const char *id, const char *ret)
{
	char *text = NULL;
	assert_true(asprintf(&text, "{\"return\": %s, \"id\": \"%s\"}", ret, id) > 0);
	send_line(text);
	free(text);
}

static void execute(const char *command, json_t *args, double timeout, int tag)
{
	assert_int_equal(qmp_client_execute(T->client, command, args, timeout, on_reply, TAG(tag)),
			 0);
}

static void handshake(void)
{
	fake_peer_handshake(T->peer);
	wait_log(1);
	assert_string_equal(log_str(0, "type"), "ready");
	json_array_clear(T->log);
}

/* ---- tests ---- */

static void test_handshake(void **state)
{
	start_client(NULL);
	assert_false(qmp_client_is_ready(T->client));
	assert_ptr_equal(qmp_client_get_userdata(T->client), T);
	/* The client speaks only after the greeting. */
	assert_false(fake_peer_has_input(T->peer, 0.05));

	send_line(fake_peer_greeting);
	json_auto_t *caps = fake_peer_recv(T->peer);
	assert_string_equal(json_string_value(json_object_get(caps, "execute")),
			    "qmp_capabilities");
	assert_true(json_is_string(json_object_get(caps, "id")));
	assert_int_equal(json_object_size(caps), 2);
	assert_false(qmp_client_is_ready(T->client));
	assert_int_equal(log_len(), 0);

	send_reply(json_string_value(json_object_get(caps, "id")), "{}");
	wait_log(1);
	assert_string_equal(log_str(0, "type"), "ready");
	json_t *version = json_object_get(
	    json_object_get(json_object_get(log_at(0), "greeting"), "QMP"), "version");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(version, "qemu"), "major")), 7);
	assert_true(qmp_client_is_ready(T->client));
	assert_false(qmp_client_is_closed(T->client));
	assert_int_equal(qmp_client_pending(T->client), 0);
	settle();
	assert_int_equal(log_len(), 1);
}

static void test_queued_before_ready(void **state)
{
	start_client(NULL);
	execute("query-status", NULL, 0, 1);
	execute("query-kvm", json_pack("{s:b}", "x", 1), 0, 2);
	assert_int_equal(qmp_client_pending(T->client), 2);
	assert_false(fake_peer_has_input(T->peer, 0.05));

	send_line(fake_peer_greeting);
	_cleanup_free_ char *caps = fake_peer_expect(T->peer, "qmp_capabilities");
	/* Nothing else until qmp_capabilities has returned. */
	assert_false(fake_peer_has_input(T->peer, 0.05));
	send_reply(caps, "{}");

	_cleanup_free_ char *id1 = fake_peer_expect(T->peer, "query-status");
	json_auto_t *msg2 = fake_peer_recv(T->peer);
	assert_string_equal(json_string_value(json_object_get(msg2, "execute")), "query-kvm");
	json_auto_t *want_args = json_pack("{s:b}", "x", 1);
	assert_true(json_equal(json_object_get(msg2, "arguments"), want_args));
	const char *id2 = json_string_value(json_object_get(msg2, "id"));
	assert_non_null(id2);
	assert_string_not_equal(id1, id2);

	send_reply(id1, "{\"status\": \"running\"}");
	send_reply(id2, "{\"enabled\": true}");
	wait_log(3);
	assert_string_equal(log_str(0, "type"), "ready");
	assert_reply_ok(1, 1);
	assert_reply_ok(2, 2);
	assert_int_equal(qmp_client_pending(T->client), 0);
}

static void test_out_of_order_replies(void **state)
{
	char *ids[3];

	start_client(NULL);
	handshake();
	for (int i = 0; i < 3; i++)
		execute("query-status", NULL, 5, i + 1);
	for (int i = 0; i < 3; i++)
		ids[i] = fake_peer_expect(T->peer, "query-status");
	assert_int_equal(qmp_client_pending(T->client), 3);

	send_reply(ids[2], "{\"n\": 3}");
	send_reply(ids[0], "{\"n\": 1}");
	send_reply(ids[1], "{\"n\": 2}");
	wait_log(3);
	const int order[] = {3, 1, 2};
	for (size_t i = 0; i < 3; i++) {
		assert_reply_ok(i, order[i]);
		json_t *ret = json_object_get(json_object_get(log_at(i), "reply"), "return");
		assert_int_equal(json_integer_value(json_object_get(ret, "n")), order[i]);
	}
	assert_int_equal(qmp_client_pending(T->client), 0);
	for (int i = 0; i < 3; i++)
		free(ids[i]);
}

static void test_events_interleaved(void **state)
{
	char *text = NULL;

	start_client(NULL);
	handshake();
	execute("cont", NULL, 0, 1);
	execute("stop", NULL, 0, 2);
	_cleanup_free_ char *id1 = fake_peer_expect(T->peer, "cont");
	_cleanup_free_ char *id2 = fake_peer_expect(T->peer, "stop");

	/* All in one write: the client has to split and dispatch in order. */
	assert_true(asprintf(&text,
			     "{\"timestamp\": {\"seconds\": 1234, \"microseconds\": 567}, "
			     "\"event\": \"STOP\", \"data\": {\"a\": 1}}\r\n"
			     "{\"return\": {}, \"id\": \"%s\"}\r\n"
			     "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 500000}, "
			     "\"event\": \"RESUME\"}\r\n"
			     "{\"return\": {}, \"id\": \"%s\"}\r\n"
			     "{\"event\": \"NO_TIMESTAMP\"}\r\n",
			     id2, id1) > 0);
	assert_int_equal(fake_peer_send(T->peer, text, strlen(text)), 0);
	free(text);
	wait_log(5);

	assert_string_equal(log_str(0, "type"), "event");
	assert_string_equal(log_str(0, "name"), "STOP");
	json_auto_t *want = json_pack("{s:i}", "a", 1);
	assert_true(json_equal(json_object_get(log_at(0), "data"), want));
	assert_float_equal(json_real_value(json_object_get(log_at(0), "seconds")), 1234.000567,
			   1e-9);
	assert_reply_ok(1, 2);
	assert_string_equal(log_str(2, "name"), "RESUME");
	assert_true(json_is_null(json_object_get(log_at(2), "data")));
	assert_float_equal(json_real_value(json_object_get(log_at(2), "seconds")), 1700000000.5,
			   1e-6);
	assert_reply_ok(3, 1);
	/* No timestamp: stamped with the wall clock on arrival. */
	assert_string_equal(log_str(4, "name"), "NO_TIMESTAMP");
	assert_float_equal(json_real_value(json_object_get(log_at(4), "seconds")), hs_wall(), 5.0);
}

static void test_error_reply(void **state)
{
	start_client(NULL);
	handshake();
	execute("device_del", json_pack("{s:s}", "id", "x"), 0, 1);
	_cleanup_free_ char *id = fake_peer_expect(T->peer, "device_del");
	char *text = NULL;
	assert_true(asprintf(&text,
			     "{\"id\": \"%s\", \"error\": {\"class\": \"DeviceNotFound\", "
			     "\"desc\": \"Device 'x' not found\"}}",
			     id) > 0);
	send_line(text);
	free(text);
	wait_log(1);
	assert_reply_err(0, 1, "qmp-error", -EREMOTEIO);
	assert_string_equal(log_str(0, "message"), "Device 'x' not found");
	json_t *error = json_object_get(json_object_get(log_at(0), "reply"), "error");
	assert_string_equal(json_string_value(json_object_get(error, "class")), "DeviceNotFound");
	assert_true(qmp_client_is_ready(T->client));
}

/* QEMU's "unknown" uint64 (the balloon's guest-stats) is above INT64_MAX:
 * such integers arrive as reals, and the connection stays up. */
static void test_big_integers(void **state)
{
	start_client(NULL);
	handshake();
	execute("qom-get", NULL, 5, 1);
	_cleanup_free_ char *id = fake_peer_expect(T->peer, "qom-get");
	send_reply(id, "{\"stats\": {\"stat-free-memory\": 18446744073709551615, "
		       "\"stat-total-memory\": 228999168, \"x\": -1.5e3, \"n\": 2.25, "
		       "\"s\": \"12345678901234567890123 \\\" 99999999999999999999\"}, "
		       "\"last-update\": 0}");
	wait_log(1);
	assert_reply_ok(0, 1);
	json_t *ret = json_object_get(json_object_get(log_at(0), "reply"), "return");
	json_t *st = json_object_get(ret, "stats");
	json_t *big = json_object_get(st, "stat-free-memory");
	assert_true(json_is_real(big));
	assert_true(json_real_value(big) > 1.8e19);
	assert_int_equal(json_integer_value(json_object_get(st, "stat-total-memory")), 228999168);
	assert_true(json_real_value(json_object_get(st, "x")) == -1500);
	assert_true(json_real_value(json_object_get(st, "n")) == 2.25);
	assert_string_equal(json_string_value(json_object_get(st, "s")),
			    "12345678901234567890123 \" 99999999999999999999");
	assert_true(qmp_client_is_ready(T->client));
}

static void test_timeout_and_late_reply(void **state)
{
	start_client(NULL);
	handshake();
	double t0 = hs_now();
	execute("query-status", NULL, 0.05, 1);
	execute("query-kvm", NULL, 0, 2);
	_cleanup_free_ char *id1 = fake_peer_expect(T->peer, "query-status");
	_cleanup_free_ char *id2 = fake_peer_expect(T->peer, "query-kvm");

	wait_log(1);
	assert_true(hs_now() - t0 >= 0.045);
	assert_reply_err(0, 1, "timeout", -ETIMEDOUT);
	assert_non_null(strstr(log_str(0, "message"), "query-status"));
	assert_int_equal(qmp_client_pending(T->client), 1);

	/* The late reply is dropped; the connection stays usable. */
	send_reply(id1, "{\"late\": true}");
	send_reply(id2, "{}");
	wait_log(2);
	assert_reply_ok(1, 2);
	settle();
	assert_int_equal(log_len(), 2);
	assert_true(qmp_client_is_ready(T->client));
	assert_int_equal(qmp_client_pending(T->client), 0);
}

static void test_timeout_before_ready(void **state)
{
	start_client(NULL);
	execute("query-status", NULL, 0.05, 1);
	wait_log(1);
	assert_reply_err(0, 1, "timeout", -ETIMEDOUT);
	assert_int_equal(qmp_client_pending(T->client), 0);
	/* The timed-out command is never sent. */
	json_array_clear(T->log);
	handshake();
	assert_false(fake_peer_has_input(T->peer, 0.05));
}

static void test_eof_fails_pending(void **state)
{
	HsError err = {0};

	start_client(NULL);
	handshake();
	execute("query-status", NULL, 5, 1);
	execute("query-kvm", NULL, 0, 2);
	free(fake_peer_expect(T->peer, "query-status"));
	free(fake_peer_expect(T->peer, "query-kvm"));
	fake_peer_close(T->peer);

	wait_log(3);
	assert_reply_err(0, 1, "disconnected", -ECONNRESET);
	assert_reply_err(1, 2, "disconnected", -ECONNRESET);
	assert_closed(2, "disconnected", -ECONNRESET);
	assert_string_equal(log_str(2, "message"), "QEMU closed the QMP connection");
	assert_true(qmp_client_is_closed(T->client));
	assert_false(qmp_client_is_ready(T->client));

	assert_int_equal(
	    qmp_client_execute(T->client, "query-status", json_object(), 1, on_reply, TAG(3)),
	    -ENOTCONN);
	assert_int_equal(qmp_client_execute_raw(T->client, json_pack("{s:s}", "execute", "stop"), 1,
						on_reply, TAG(4), &err),
			 -ENOTCONN);
	assert_string_equal(err.kind, "disconnected");
	settle();
	assert_int_equal(log_len(), 3);
	assert_int_equal(log_count("closed"), 1);
}

static void test_garbage_input(void **state)
{
	start_client(NULL);
	handshake();
	execute("query-status", NULL, 0, 1);
	free(fake_peer_expect(T->peer, "query-status"));
	send_line("this is not json");
	wait_log(2);
	assert_reply_err(0, 1, "protocol-error", -EPROTO);
	assert_closed(1, "protocol-error", -EPROTO);
	assert_true(strncmp(log_str(1, "message"), "invalid JSON from QEMU", 22) == 0);
	/* The client hung up. */
	assert_true(fake_peer_got_eof(T->peer));
	settle();
	assert_int_equal(log_len(), 2);
}

static void test_non_object_input(void **state)
{
	start_client(NULL);
	handshake();
	send_line("[1, 2, 3]");
	wait_log(1);
	assert_closed(0, "protocol-error", -EPROTO);
	assert_string_equal(log_str(0, "message"), "QMP message is not a JSON object");
}

static char *make_event_line(size_t len)
{
	static const char head[] = "{\"event\": \"BIG\", \"data\": {\"s\": \"";
	static const char tail[] = "\"}}";
	if (len < sizeof(head) + sizeof(tail) || len > 1024 * 1024)
		fail_msg("bad event line length %zu", len);
	size_t fill = len - (sizeof(head) - 1) - (sizeof(tail) - 1);
	char *s = malloc(len + 1);

	if (!s)
		abort(); /* (assert_non_null() is not noreturn for GCC's bounds checks) */
	memcpy(s, head, sizeof(head) - 1);
	memset(s + sizeof(head) - 1, 'a', fill);
	memcpy(s + len - (sizeof(tail) - 1), tail, sizeof(tail));
	assert_int_equal(strlen(s), len);
	return s;
}

static void test_oversized_line(void **state)
{
	const QmpOptions opts = {.max_message = 1024};

	start_client(&opts);
	handshake();
	/* Exactly the limit is fine. */
	_cleanup_free_ char *ok = make_event_line(1024);
	send_line(ok);
	wait_log(1);
	assert_string_equal(log_str(0, "name"), "BIG");

	execute("query-status", NULL, 0, 1);
	free(fake_peer_expect(T->peer, "query-status"));
	_cleanup_free_ char *big = make_event_line(2000);
	send_line(big);
	wait_log(3);
	assert_reply_err(1, 1, "protocol-error", -EMSGSIZE);
	assert_closed(2, "protocol-error", -EMSGSIZE);
	assert_string_equal(log_str(2, "message"), "QMP message exceeds 1024 bytes");
	assert_int_equal(log_count("event"), 1);
}

static void test_oversized_partial(void **state)
{
	const QmpOptions opts = {.max_message = 1024};

	start_client(&opts);
	handshake();
	/* No newline ever comes: the client must not keep buffering. */
	_cleanup_free_ char *big = make_event_line(1500);
	assert_int_equal(fake_peer_send(T->peer, big, strlen(big)), 0);
	wait_log(1);
	assert_closed(0, "protocol-error", -EMSGSIZE);
	assert_string_equal(log_str(0, "message"), "QMP message exceeds 1024 bytes");
}

static void test_split_writes(void **state)
{
	char *text = NULL;

	start_client(NULL);
	_cleanup_free_ char *greeting = NULL;
	assert_true(asprintf(&greeting, "%s\r\n", fake_peer_greeting) > 0);
	assert_int_equal(fake_peer_send_chunked(T->peer, greeting, 1), 0);
	_cleanup_free_ char *caps = fake_peer_expect(T->peer, "qmp_capabilities");
	assert_true(asprintf(&text, "{\"return\": {}, \"id\": \"%s\"}\r\n", caps) > 0);
	assert_int_equal(fake_peer_send_chunked(T->peer, text, 7), 0);
	free(text);
	wait_log(1);
	assert_string_equal(log_str(0, "type"), "ready");

	execute("query-status", NULL, 0, 1);
	_cleanup_free_ char *id = fake_peer_expect(T->peer, "query-status");
	assert_true(
	    asprintf(&text,
		     "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}"
		     "\r\n{\"return\": {\"status\": \"paused\"}, \"id\": \"%s\"}\r\n",
		     id) > 0);
	assert_int_equal(fake_peer_send_chunked(T->peer, text, 3), 0);
	free(text);
	wait_log(3);
	assert_string_equal(log_str(1, "name"), "STOP");
	assert_reply_ok(2, 1);
	json_t *ret = json_object_get(json_object_get(log_at(2), "reply"), "return");
	assert_string_equal(json_string_value(json_object_get(ret, "status")), "paused");
}

static void test_large_command(void **state)
{
	const size_t size = 4 * 1024 * 1024; /* far more than a socket buffer */
	char *blob = malloc(size + 1);

	assert_non_null(blob);
	memset(blob, 'x', size);
	blob[size] = '\0';
	start_client(NULL);
	handshake();
	execute("guest-write", json_pack("{s:s}", "blob", blob), 0, 1);
	free(blob);
	json_auto_t *msg = fake_peer_recv(T->peer);
	const char *got =
	    json_string_value(json_object_get(json_object_get(msg, "arguments"), "blob"));
	assert_non_null(got);
	assert_int_equal(strlen(got), size);
	assert_int_equal(qmp_client_pending(T->client), 1);
}

static void test_execute_raw_ids(void **state)
{
	HsError err = {0};
	json_t *wire[5];

	start_client(NULL);
	handshake();
	const char *cmds[] = {
	    "{\"execute\": \"query-status\", \"id\": \"caller-7\"}",
	    "{\"execute\": \"qom-list\", \"arguments\": {\"path\": \"/machine\"}, \"id\": 42}",
	    "{\"execute\": \"query-kvm\"}",
	    "{\"execute\": \"query-nope\", \"id\": {\"x\": [1]}}",
	    "{\"exec-oob\": \"migrate-pause\", \"id\": \"oob\"}",
	};
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		json_t *msg = json_loads(cmds[i], 0, NULL);
		assert_non_null(msg);
		assert_int_equal(
		    qmp_client_execute_raw(T->client, msg, 5, on_reply, TAG(i + 1), &err), 0);
	}
	assert_int_equal(qmp_client_pending(T->client), ARRAY_SIZE(cmds));

	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		json_auto_t *orig = json_loads(cmds[i], 0, NULL);
		wire[i] = fake_peer_recv(T->peer);
		/* Same command, the client's own id. */
		const char *id = json_string_value(json_object_get(wire[i], "id"));
		assert_non_null(id);
		assert_true(hs_str_has_prefix(id, "hs-"));
		json_object_del(orig, "id");
		json_auto_t *stripped = json_deep_copy(wire[i]);
		json_object_del(stripped, "id");
		assert_true(json_equal(orig, stripped));
	}
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		const char *id = json_string_value(json_object_get(wire[i], "id"));
		if (i == 3) {
			json_auto_t *e =
			    json_pack("{s:s, s:{s:s, s:s}}", "id", id, "error", "class",
				      "CommandNotFound", "desc", "no such command");
			_cleanup_free_ char *text = json_dumps(e, 0);
			send_line(text);
		} else {
			send_reply(id, "{}");
		}
		json_decref(wire[i]);
	}
	wait_log(ARRAY_SIZE(cmds));

	json_auto_t *id1 = json_string("caller-7"), *id2 = json_integer(42),
		    *id4 = json_pack("{s:[i]}", "x", 1), *id5 = json_string("oob");
	assert_reply_ok(0, 1);
	assert_true(json_equal(json_object_get(json_object_get(log_at(0), "reply"), "id"), id1));
	assert_reply_ok(1, 2);
	assert_true(json_equal(json_object_get(json_object_get(log_at(1), "reply"), "id"), id2));
	assert_reply_ok(2, 3);
	assert_null(json_object_get(json_object_get(log_at(2), "reply"), "id"));
	assert_reply_err(3, 4, "qmp-error", -EREMOTEIO);
	assert_string_equal(log_str(3, "message"), "no such command");
	assert_true(json_equal(json_object_get(json_object_get(log_at(3), "reply"), "id"), id4));
	assert_reply_ok(4, 5);
	assert_true(json_equal(json_object_get(json_object_get(log_at(4), "reply"), "id"), id5));
}

static void test_execute_raw_invalid(void **state)
{
	static const struct {
		const char *json, *message;
	} cases[] = {
	    {"[1]", "QMP command must be a JSON object"},
	    {"{}", "QMP command needs either \"execute\" or \"exec-oob\""},
	    {"{\"execute\": \"a\", \"exec-oob\": \"b\"}",
	     "QMP command needs either \"execute\" or \"exec-oob\""},
	    {"{\"execute\": 5}", "\"execute\" must be a string"},
	    {"{\"exec-oob\": null}", "\"exec-oob\" must be a string"},
	    {"{\"execute\": \"a\", \"foo\": 1}", "unexpected member \"foo\" in QMP command"},
	    {"{\"execute\": \"a\", \"arguments\": [1]}", "\"arguments\" must be a JSON object"},
	    {NULL, "QMP command must be a JSON object"},
	};

	start_client(NULL);
	handshake();
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		HsError err = {0};
		json_t *msg =
		    cases[i].json ? json_loads(cases[i].json, JSON_DECODE_ANY, NULL) : NULL;
		assert_true(!cases[i].json || msg);
		assert_int_equal(qmp_client_execute_raw(T->client, msg, 1, on_reply, TAG(1), &err),
				 -EINVAL);
		assert_int_equal(err.code, -EINVAL);
		assert_string_equal(err.kind, "invalid-argument");
		assert_string_equal(err.message, cases[i].message);
		/* err may be NULL too. */
		msg = cases[i].json ? json_loads(cases[i].json, JSON_DECODE_ANY, NULL) : NULL;
		assert_int_equal(qmp_client_execute_raw(T->client, msg, 1, on_reply, TAG(1), NULL),
				 -EINVAL);
	}
	/* Plain execute's own argument checks. */
	assert_int_equal(qmp_client_execute(T->client, NULL, NULL, 1, on_reply, TAG(1)), -EINVAL);
	assert_int_equal(
	    qmp_client_execute(T->client, "stop", json_pack("[i]", 1), 1, on_reply, TAG(1)),
	    -EINVAL);
	assert_int_equal(qmp_client_execute(T->client, "bad\xff", NULL, 1, on_reply, TAG(1)),
			 -EINVAL);

	assert_int_equal(qmp_client_pending(T->client), 0);
	assert_false(fake_peer_has_input(T->peer, 0.05));
	assert_int_equal(log_len(), 0);
}

static void test_unknown_replies_dropped(void **state)
{
	start_client(NULL);
	handshake();
	execute("query-status", NULL, 0, 1);
	_cleanup_free_ char *id = fake_peer_expect(T->peer, "query-status");
	send_reply("hs-999999", "{}");
	send_line("{\"return\": {}}");
	send_line("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}");
	send_line("{\"return\": {}, \"id\": 7}");
	send_line("{\"something-new\": {}}");
	send_line("");
	send_reply(id, "{}");
	wait_log(1);
	settle();
	assert_int_equal(log_len(), 1);
	assert_reply_ok(0, 1);
	assert_true(qmp_client_is_ready(T->client));
}

static void test_write_epipe(void **state)
{
	start_client(NULL);
	handshake();
	/* The peer stops reading: the client's send fails with EPIPE, which
	 * must not raise SIGPIPE (it would kill this test). */
	fake_peer_shutdown_read(T->peer);
	execute("query-status", NULL, 0, 1);
	wait_log(2);
	assert_reply_err(0, 1, "disconnected", -EPIPE);
	assert_closed(1, "disconnected", -EPIPE);
}

static void test_free_in_reply(void **state)
{
	char *text = NULL;

	start_client(NULL);
	handshake();
	T->free_on_reply_tag = 1;
	execute("query-status", NULL, 1, 1);
	execute("query-kvm", NULL, 1, 2);
	execute("query-version", NULL, 0, 3);
	_cleanup_free_ char *id1 = fake_peer_expect(T->peer, "query-status");
	_cleanup_free_ char *id2 = fake_peer_expect(T->peer, "query-kvm");
	free(fake_peer_expect(T->peer, "query-version"));
	/* One write: the client must stop after the first reply. */
	assert_true(asprintf(&text,
			     "{\"return\": {}, \"id\": \"%s\"}\r\n{\"event\": \"STOP\"}\r\n"
			     "{\"return\": {}, \"id\": \"%s\"}\r\n",
			     id1, id2) > 0);
	assert_int_equal(fake_peer_send(T->peer, text, strlen(text)), 0);
	free(text);
	wait_log(3);
	assert_null(T->client);
	assert_reply_ok(0, 1);
	assert_reply_err(1, 2, "cancelled", -ECANCELED);
	assert_reply_err(2, 3, "cancelled", -ECANCELED);
	assert_true(fake_peer_got_eof(T->peer));
	settle();
	assert_int_equal(log_len(), 3);
}

static void test_free_in_failed_reply(void **state)
{
	start_client(NULL);
	handshake();
	T->free_on_reply_tag = 1;
	execute("query-status", NULL, 1, 1);
	execute("query-kvm", NULL, 1, 2);
	fake_peer_close(T->peer);
	wait_log(2);
	assert_null(T->client);
	assert_reply_err(0, 1, "disconnected", -ECONNRESET);
	assert_reply_err(1, 2, "cancelled", -ECANCELED);
	/* The owner freed the client: no `closed`. */
	settle();
	assert_int_equal(log_len(), 2);
}

static void test_free_in_closed(void **state)
{
	start_client(NULL);
	handshake();
	T->free_on_closed = true;
	execute("query-status", NULL, 1, 1);
	execute("query-kvm", NULL, 0, 2);
	fake_peer_close(T->peer);
	wait_log(3);
	assert_null(T->client);
	assert_reply_err(0, 1, "disconnected", -ECONNRESET);
	assert_reply_err(1, 2, "disconnected", -ECONNRESET);
	assert_closed(2, "disconnected", -ECONNRESET);
	settle();
	assert_int_equal(log_len(), 3);
}

static void test_free_in_event_and_ready(void **state)
{
	/* From an event callback. */
	start_client(NULL);
	handshake();
	T->free_on_event = true;
	execute("query-status", NULL, 1, 1);
	send_line("{\"event\": \"STOP\"}\r\n{\"event\": \"RESUME\"}");
	wait_log(2);
	assert_null(T->client);
	assert_string_equal(log_str(0, "name"), "STOP");
	assert_reply_err(1, 1, "cancelled", -ECANCELED);
	settle();
	assert_int_equal(log_len(), 2);
	stop_client();

	/* From ready, with a command queued during the handshake. */
	T->free_on_event = false;
	T->free_on_ready = true;
	start_client(NULL);
	execute("query-status", NULL, 1, 1);
	fake_peer_handshake(T->peer);
	wait_log(2);
	assert_null(T->client);
	assert_string_equal(log_str(0, "type"), "ready");
	assert_reply_err(1, 1, "cancelled", -ECANCELED);
	settle();
	assert_int_equal(log_len(), 2);
}

static void test_free_with_pending(void **state)
{
	assert_null(qmp_client_free(NULL));
	start_client(NULL);
	execute("query-status", NULL, 1, 1);
	execute("query-kvm", NULL, 0, 2);
	T->client = qmp_client_free(T->client);
	assert_int_equal(log_len(), 2);
	assert_reply_err(0, 1, "cancelled", -ECANCELED);
	assert_reply_err(1, 2, "cancelled", -ECANCELED);
	settle();
	assert_int_equal(log_len(), 2);
}

static void test_handshake_timeout(void **state)
{
	const QmpOptions opts = {.handshake_timeout = 0.05};

	for (int greet = 0; greet <= 1; greet++) {
		start_client(&opts);
		execute("query-status", NULL, 0, 1);
		if (greet) {
			/* Greeting, but qmp_capabilities is never answered. */
			send_line(fake_peer_greeting);
			free(fake_peer_expect(T->peer, "qmp_capabilities"));
		}
		wait_log(2);
		assert_reply_err(0, 1, "timeout", -ETIMEDOUT);
		assert_closed(1, "timeout", -ETIMEDOUT);
		assert_string_equal(log_str(1, "message"), "QMP handshake timed out after 0.05 s");
		assert_true(fake_peer_got_eof(T->peer));
		stop_client();
	}
}

static void test_bad_handshake(void **state)
{
	/* Something else than a greeting first. */
	start_client(NULL);
	send_line("{\"return\": {}}");
	wait_log(1);
	assert_closed(0, "protocol-error", -EPROTO);
	assert_string_equal(log_str(0, "message"), "expected the QMP greeting from QEMU");
	stop_client();

	/* qmp_capabilities refused. */
	start_client(NULL);
	send_line(fake_peer_greeting);
	_cleanup_free_ char *id = fake_peer_expect(T->peer, "qmp_capabilities");
	char *text = NULL;
	assert_true(asprintf(&text,
			     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, "
			     "\"id\": \"%s\"}",
			     id) > 0);
	send_line(text);
	free(text);
	wait_log(1);
	assert_closed(0, "protocol-error", -EPROTO);
	assert_string_equal(log_str(0, "message"), "qmp_capabilities failed: nope");
}

/* ---- descriptors passed with commands (execute_fd) ---- */

/* Descriptor numbers are allocated lowest first, so one moved up here is
 * never reused by the peer's recvmsg() (or anything else the test opens):
 * once the client has closed it, fcntl(F_GETFD) on its number is EBADF, and
 * a descriptor the peer receives is numbered below. */
static int high_fd_base(void)
{
	struct rlimit rl;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	return rl.rlim_cur / 2 > 700 ? 700 : (int)(rl.rlim_cur / 2);
}

static int move_high(int fd)
{
	int high = fcntl(fd, F_DUPFD_CLOEXEC, high_fd_base());

	assert_true(high >= high_fd_base());
	close(fd);
	return high;
}

static int memfd_with(const char *content)
{
	int fd = memfd_create("test-qmp", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	return move_high(fd);
}

static void assert_fd_content(int fd, const char *content)
{
	char buf[64] = {0};

	assert_int_equal(pread(fd, buf, sizeof(buf) - 1, 0), (ssize_t)strlen(content));
	assert_string_equal(buf, content);
}

static bool fd_is_closed(int fd)
{
	errno = 0;
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

static int count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d));)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void execute_fd(const char *command, json_t *args, int fd, double timeout, int tag)
{
	assert_int_equal(
	    qmp_client_execute_fd(T->client, command, args, fd, timeout, on_reply, TAG(tag)), 0);
}

/* Receives the next message, checks its "execute" and returns its id. */
static char *expect_fd(const char *execute, int *ret_fd)
{
	json_auto_t *msg = fake_peer_recv_fd(T->peer, ret_fd);
	const char *name = json_string_value(json_object_get(msg, "execute"));
	const char *id = json_string_value(json_object_get(msg, "id"));

	assert_non_null(name);
	assert_string_equal(name, execute);
	assert_non_null(id);
	return strdup(id);
}

static void test_execute_fd(void **state)
{
	struct stat st_got, st_ours;
	int pfd[2], got = -1;
	char buf[16];

	start_client(NULL);
	handshake();
	assert_int_equal(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
	int w = move_high(pfd[1]);
	execute_fd("add-fd", json_pack("{s:i}", "fdset-id", 7), w, 5, 1);
	/* Sending happens in the loop: until then the client holds it. */
	assert_false(fd_is_closed(w));
	assert_int_equal(qmp_client_pending(T->client), 1);

	json_auto_t *msg = fake_peer_recv_fd(T->peer, &got);
	/* Exactly one descriptor (more fails in fake_peer_recv_fd), numbered
	 * below w, so w's number was not reused: the client closed its copy. */
	assert_true(got >= 0 && got < high_fd_base());
	assert_true(fd_is_closed(w));
	assert_string_equal(json_string_value(json_object_get(msg, "execute")), "add-fd");
	json_auto_t *want = json_pack("{s:i}", "fdset-id", 7);
	assert_true(json_equal(json_object_get(msg, "arguments"), want));
	const char *id = json_string_value(json_object_get(msg, "id"));
	assert_non_null(id);

	/* The very same pipe: same inode, and bytes written to the received
	 * end come out of the read end the test kept. */
	assert_int_equal(fstat(got, &st_got), 0);
	assert_int_equal(fstat(pfd[0], &st_ours), 0);
	assert_true(S_ISFIFO(st_got.st_mode));
	assert_int_equal(st_got.st_dev, st_ours.st_dev);
	assert_int_equal(st_got.st_ino, st_ours.st_ino);
	assert_int_equal(write(got, "hello", 5), 5);
	assert_int_equal(read(pfd[0], buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "hello", 5);
	/* With the received end closed no writer is left anywhere: EOF (a
	 * copy left open in the client would give EAGAIN). */
	close(got);
	assert_int_equal(read(pfd[0], buf, sizeof(buf)), 0);
	close(pfd[0]);

	assert_false(fake_peer_has_input(T->peer, 0.05));
	send_reply(id, "{\"fdset-id\": 7, \"fd\": 12}");
	wait_log(1);
	assert_reply_ok(0, 1);
	assert_int_equal(qmp_client_pending(T->client), 0);
	assert_true(qmp_client_is_ready(T->client));
}

static void test_execute_fd_queued_before_ready(void **state)
{
	int got[3] = {-1, -1, -1};
	char *ids[3];
	int base = count_open_fds();

	start_client(NULL);
	int first = memfd_with("first"), second = memfd_with("second");
	execute_fd("add-fd", json_pack("{s:i}", "fdset-id", 1), first, 5, 1);
	execute("query-status", NULL, 5, 2);
	execute_fd("getfd", json_pack("{s:s}", "fdname", "second"), second, 5, 3);
	assert_int_equal(qmp_client_pending(T->client), 3);
	assert_false(fake_peer_has_input(T->peer, 0.05));
	assert_false(fd_is_closed(first));
	assert_false(fd_is_closed(second));

	/* All three go out together once qmp_capabilities has returned; each
	 * descriptor comes with its own line. */
	fake_peer_handshake(T->peer);
	ids[0] = expect_fd("add-fd", &got[0]);
	ids[1] = expect_fd("query-status", &got[1]);
	ids[2] = expect_fd("getfd", &got[2]);
	assert_true(got[0] >= 0);
	assert_int_equal(got[1], -1);
	assert_true(got[2] >= 0);
	assert_fd_content(got[0], "first");
	assert_fd_content(got[2], "second");
	assert_true(fd_is_closed(first));
	assert_true(fd_is_closed(second));
	close(got[0]);
	close(got[2]);
	assert_false(fake_peer_has_input(T->peer, 0.05));

	for (int i = 0; i < 3; i++) {
		send_reply(ids[i], "{}");
		free(ids[i]);
	}
	wait_log(4);
	assert_string_equal(log_str(0, "type"), "ready");
	for (int i = 1; i <= 3; i++)
		assert_reply_ok((size_t)i, i);
	assert_int_equal(qmp_client_pending(T->client), 0);
	stop_client();
	assert_int_equal(count_open_fds(), base);
}

/* A descriptor whose command never goes out is closed all the same. */
static void test_execute_fd_not_sent(void **state)
{
	int base = count_open_fds();

	/* 0: freed before the handshake (the descriptor is in the command);
	 * 1: freed when ready, before the loop ran (in the output queue);
	 * 2: the connection breaks before the handshake. */
	for (int mode = 0; mode <= 2; mode++) {
		start_client(NULL);
		if (mode == 1)
			handshake();
		int fd = memfd_with("never sent");
		execute_fd("add-fd", json_pack("{s:i}", "fdset-id", 1), fd, 5, 1);
		execute("query-status", NULL, 0, 2);
		assert_false(fd_is_closed(fd));
		if (mode < 2) {
			T->client = qmp_client_free(T->client);
			assert_int_equal(log_len(), 2);
			assert_reply_err(0, 1, "cancelled", -ECANCELED);
			assert_reply_err(1, 2, "cancelled", -ECANCELED);
			assert_true(fake_peer_got_eof(T->peer));
		} else {
			fake_peer_close(T->peer);
			wait_log(3);
			assert_reply_err(0, 1, "disconnected", -ECONNRESET);
			assert_reply_err(1, 2, "disconnected", -ECONNRESET);
			assert_closed(2, "disconnected", -ECONNRESET);
		}
		assert_true(fd_is_closed(fd));
		if (mode < 2)
			assert_false(fake_peer_has_input(T->peer, 0.05));
		stop_client();
		assert_int_equal(count_open_fds(), base);
	}
}

static void test_execute_fd_invalid(void **state)
{
	start_client(NULL);
	handshake();
	int base = count_open_fds(), fd;

	/* No descriptor (the arguments are freed all the same). */
	assert_int_equal(qmp_client_execute_fd(T->client, "add-fd", json_pack("{s:i}", "x", 1), -1,
					       5, on_reply, TAG(1)),
			 -EINVAL);
	assert_int_equal(qmp_client_execute_fd(T->client, "add-fd", NULL, -5, 5, on_reply, TAG(1)),
			 -EINVAL);
	/* Arguments not an object. */
	fd = memfd_with("x");
	assert_int_equal(qmp_client_execute_fd(T->client, "add-fd", json_pack("[i]", 1), fd, 5,
					       on_reply, TAG(1)),
			 -EINVAL);
	assert_true(fd_is_closed(fd));
	fd = memfd_with("x");
	assert_int_equal(
	    qmp_client_execute_fd(T->client, "add-fd", json_string("x"), fd, 5, on_reply, TAG(1)),
	    -EINVAL);
	assert_true(fd_is_closed(fd));
	/* No command, no client, a command name that is not UTF-8. */
	fd = memfd_with("x");
	assert_int_equal(qmp_client_execute_fd(T->client, NULL, NULL, fd, 5, on_reply, TAG(1)),
			 -EINVAL);
	assert_true(fd_is_closed(fd));
	fd = memfd_with("x");
	assert_int_equal(
	    qmp_client_execute_fd(NULL, "add-fd", json_object(), fd, 5, on_reply, TAG(1)), -EINVAL);
	assert_true(fd_is_closed(fd));
	fd = memfd_with("x");
	assert_int_equal(qmp_client_execute_fd(T->client, "bad\xff", NULL, fd, 5, on_reply, TAG(1)),
			 -EINVAL);
	assert_true(fd_is_closed(fd));

	assert_int_equal(qmp_client_pending(T->client), 0);
	assert_false(fake_peer_has_input(T->peer, 0.05));
	assert_int_equal(log_len(), 0);
	assert_int_equal(count_open_fds(), base);

	/* A closed client. */
	fake_peer_close(T->peer);
	wait_log(1);
	assert_closed(0, "disconnected", -ECONNRESET);
	base = count_open_fds();
	fd = memfd_with("x");
	assert_int_equal(qmp_client_execute_fd(T->client, "add-fd", json_pack("{s:i}", "x", 1), fd,
					       5, on_reply, TAG(1)),
			 -ENOTCONN);
	assert_true(fd_is_closed(fd));
	assert_int_equal(count_open_fds(), base);
	settle();
	assert_int_equal(log_len(), 1);
}

/* More descriptors at once than the client's first batch: all go out, in
 * order, each with its own line, whether issued when ready or queued
 * during the handshake. */
static void test_execute_fd_many(void **state)
{
	enum { N = 40 };
	int fds[N];
	char *ids[N + 1];
	int base = count_open_fds();

	for (int early = 0; early <= 1; early++) {
		start_client(NULL);
		if (!early)
			handshake();
		for (int i = 0; i < N; i++) {
			char content[16];
			snprintf(content, sizeof(content), "fd-%d", i);
			fds[i] = memfd_with(content);
			execute_fd("add-fd", json_pack("{s:i}", "fdset-id", i), fds[i], 5, i + 1);
		}
		execute("query-fdsets", NULL, 5, N + 1);
		assert_int_equal(qmp_client_pending(T->client), N + 1);
		if (early) {
			fake_peer_handshake(T->peer);
			wait_log(1);
			assert_string_equal(log_str(0, "type"), "ready");
			json_array_clear(T->log);
		}

		for (int i = 0; i < N; i++) {
			char content[16];
			int got = -1;
			json_auto_t *msg = fake_peer_recv_fd(T->peer, &got);
			assert_string_equal(json_string_value(json_object_get(msg, "execute")),
					    "add-fd");
			assert_int_equal(json_integer_value(json_object_get(
					     json_object_get(msg, "arguments"), "fdset-id")),
					 i);
			ids[i] = strdup(json_string_value(json_object_get(msg, "id")));
			assert_true(got >= 0 && got < high_fd_base());
			snprintf(content, sizeof(content), "fd-%d", i);
			assert_fd_content(got, content);
			close(got);
		}
		int got = 0;
		ids[N] = expect_fd("query-fdsets", &got);
		assert_int_equal(got, -1);
		for (int i = 0; i < N; i++)
			assert_true(fd_is_closed(fds[i]));
		assert_false(fake_peer_has_input(T->peer, 0.05));

		for (int i = 0; i <= N; i++) {
			send_reply(ids[i], "{}");
			free(ids[i]);
		}
		wait_log(N + 1);
		for (int i = 0; i <= N; i++)
			assert_reply_ok((size_t)i, i + 1);
		assert_int_equal(qmp_client_pending(T->client), 0);
		assert_true(qmp_client_is_ready(T->client));
		stop_client();
		assert_int_equal(count_open_fds(), base);
	}
}

/* ---- replay of recorded conversations ---- */

/* Replace the first quoted occurrence of `from` in text with `to`. */
static char *replace_id(const char *text, const char *from, const char *to)
{
	_cleanup_free_ char *quoted = NULL;
	char *out = NULL;

	assert_true(asprintf(&quoted, "\"%s\"", from) > 0);
	const char *at = strstr(text, quoted);
	assert_non_null(at);
	assert_true(
	    asprintf(&out, "%.*s\"%s\"%s", (int)(at - text), text, to, at + strlen(quoted)) > 0);
	return out;
}

static void replay_file(const char *path)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0, n_commands = 0;
	ssize_t n;
	json_auto_t *ids = json_object(); /* recorded id -> the client's id */

	print_message("replaying %s\n", path);
	assert_non_null(f);
	start_client(NULL);
	while ((n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		if (n < 3 || (strncmp(line, "S: ", 3) && strncmp(line, "C: ", 3)))
			fail_msg("%s: bad line: %s", path, line);
		const char *text = line + 3;
		json_auto_t *msg = json_loads(text, 0, NULL);
		assert_non_null(msg);
		const char *rec_id = json_string_value(json_object_get(msg, "id"));

		if (line[0] == 'C') {
			/* What the recorded client sent, ours must send too. */
			const char *name = json_string_value(json_object_get(msg, "execute"));
			json_t *args = json_object_get(msg, "arguments");
			assert_non_null(name);
			assert_non_null(rec_id);
			if (strcmp(name, "qmp_capabilities") != 0)
				execute(name, json_incref(args), 5, (int)++n_commands);
			json_auto_t *sent = fake_peer_recv(T->peer);
			assert_string_equal(json_string_value(json_object_get(sent, "execute")),
					    name);
			assert_true(args ? json_equal(args, json_object_get(sent, "arguments"))
					 : !json_object_get(sent, "arguments"));
			json_t *id = json_object_get(sent, "id");
			assert_true(json_is_string(id));
			json_object_set(ids, rec_id, id);
			continue;
		}

		/* QEMU's line, as QEMU wrote it, with our id put in. */
		_cleanup_free_ char *out = NULL;
		if (rec_id) {
			const char *mine = json_string_value(json_object_get(ids, rec_id));
			if (!mine)
				fail_msg("%s: reply to unknown id %s", path, rec_id);
			out = replace_id(text, rec_id, mine);
			json_object_set_new(msg, "id", json_string(mine));
		}
		size_t before = log_len();
		send_line(out ? out : text);
		if (json_object_get(msg, "QMP"))
			continue; /* the next C: line checks the reaction */
		wait_log(before + 1);
		json_t *got = log_at(before);
		const char *type = log_str(before, "type");
		if (json_object_get(msg, "event")) {
			json_t *ts = json_object_get(msg, "timestamp");
			assert_string_equal(type, "event");
			assert_string_equal(log_str(before, "name"),
					    json_string_value(json_object_get(msg, "event")));
			json_t *data = json_object_get(msg, "data");
			assert_true(data ? json_equal(data, json_object_get(got, "data"))
					 : json_is_null(json_object_get(got, "data")));
			double seconds =
			    (double)json_integer_value(json_object_get(ts, "seconds")) +
			    (double)json_integer_value(json_object_get(ts, "microseconds")) / 1e6;
			assert_float_equal(json_real_value(json_object_get(got, "seconds")),
					   seconds, 1e-6);
		} else if (strcmp(type, "ready") == 0) {
			assert_true(qmp_client_is_ready(T->client));
		} else {
			assert_string_equal(type, "reply");
			assert_true(json_equal(json_object_get(got, "reply"), msg));
			json_t *error = json_object_get(msg, "error");
			if (error) {
				assert_string_equal(log_str(before, "kind"), "qmp-error");
				assert_string_equal(
				    log_str(before, "message"),
				    json_string_value(json_object_get(error, "desc")));
			} else {
				assert_null(log_str(before, "kind"));
			}
		}
	}
	assert_int_equal(log_count("ready"), 1);
	assert_int_equal(log_count("reply"), n_commands);
	assert_int_equal(qmp_client_pending(T->client), 0);
	/* QEMU exits after quit. */
	fake_peer_close(T->peer);
	size_t before = log_len();
	wait_log(before + 1);
	assert_closed(before, "disconnected", -ECONNRESET);
	stop_client();
}

static int is_recording(const struct dirent *de)
{
	size_t len = strlen(de->d_name);
	return len > 4 && strcmp(de->d_name + len - 4, ".txt") == 0;
}

static void test_replay_recorded(void **state)
{
	struct dirent **list;
	int n = scandir(QMP_TEST_DATA_DIR, &list, is_recording, alphasort);

	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		_cleanup_free_ char *path = NULL;
		assert_true(asprintf(&path, "%s/%s", QMP_TEST_DATA_DIR, list[i]->d_name) > 0);
		replay_file(path);
		free(list[i]);
	}
	free(list);
}

/* ---- guest agent mode (qemu-ga) ---- */

static const QmpOptions agent_opts = {.guest_agent = true, .handshake_timeout = 0.2};

/* The next command the client sent to the agent: its name checked, no id. */
static json_t *agent_expect(const char *execute)
{
	json_t *msg = fake_peer_recv(T->peer);
	assert_string_equal(json_string_value(json_object_get(msg, "execute")), execute);
	assert_null(json_object_get(msg, "id"));
	return msg;
}

static void agent_sync_ok(void)
{
	fake_peer_agent_sync(T->peer);
	wait_log(1);
	assert_string_equal(log_str(0, "type"), "ready");
	assert_true(json_is_null(json_object_get(log_at(0), "greeting")));
	json_array_clear(T->log);
}

static void send_raw(const char *text)
{
	assert_int_equal(fake_peer_send(T->peer, text, strlen(text)), 0);
}

/* Stale output before the sync's 0xFF, and a stale sync answer after
 * one, are dropped; commands queued meanwhile go out one at a time. */
static void test_agent_sync_stale(void **state)
{
	start_client(&agent_opts);
	execute("guest-info", NULL, 0, 1);
	execute("guest-get-host-name", NULL, 0, 2);
	json_int_t id = fake_peer_expect_agent_sync(T->peer);
	assert_false(qmp_client_is_ready(T->client));
	/* A late reply of an earlier connection's command, half a reply, a
	 * stale sync's answer: all before the real one. */
	send_raw("{\"return\": {\"stale\": 1}}\n{\"return\": {\"cut");
	char *text = NULL;
	assert_true(asprintf(&text, "\xff{\"return\": %" JSON_INTEGER_FORMAT "}\n", id + 1) > 0);
	send_raw(text);
	free(text);
	send_raw("\xff{\"return\": {}}\n");
	settle();
	assert_int_equal(log_len(), 0);
	assert_false(fake_peer_has_input(T->peer, 0.02));
	assert_true(asprintf(&text, "junk\xff{\"return\": %" JSON_INTEGER_FORMAT "}\n", id) > 0);
	send_raw(text);
	free(text);
	wait_log(1);
	assert_string_equal(log_str(0, "type"), "ready");
	assert_true(qmp_client_is_ready(T->client));

	/* One command on the wire at a time; a reply has no id. */
	json_decref(agent_expect("guest-info"));
	assert_false(fake_peer_has_input(T->peer, 0.05));
	send_line("{\"return\": {\"version\": \"7.2\"}}");
	wait_log(2);
	assert_reply_ok(1, 1);
	json_decref(agent_expect("guest-get-host-name"));
	send_line("{\"error\": {\"class\": \"GenericError\", \"desc\": \"no name\"}}");
	wait_log(3);
	assert_reply_err(2, 2, "qmp-error", -EREMOTEIO);
	assert_string_equal(log_str(2, "message"), "no name");
	/* No reply is waited for: a stray line is dropped. */
	send_line("{\"return\": {\"stray\": true}}");
	settle();
	assert_int_equal(log_len(), 3);
	assert_int_equal(qmp_client_pending(T->client), 0);
}

/* No agent in the guest (or a hung one): the sync times out and the
 * client closes, failing what waited. */
static void test_agent_hung(void **state)
{
	start_client(&agent_opts);
	execute("guest-info", NULL, 10, 1);
	double t0 = hs_now();
	fake_peer_expect_agent_sync(T->peer);
	wait_log(2);
	assert_true(hs_now() - t0 < 1.0);
	assert_reply_err(0, 1, "timeout", -ETIMEDOUT);
	assert_closed(1, "timeout", -ETIMEDOUT);
	assert_string_equal(log_str(1, "message"),
			    "the guest agent did not answer guest-sync-delimited within 0.2 s");
	assert_true(fake_peer_got_eof(T->peer));
}

/* A command that times out (the guest paused, the agent busy): the client
 * syncs again, so its late reply is never taken for the next command's. */
static void test_agent_timeout_resync(void **state)
{
	start_client(&agent_opts);
	agent_sync_ok();
	execute("guest-network-get-interfaces", NULL, 0.05, 1);
	json_decref(agent_expect("guest-network-get-interfaces"));
	wait_log(1);
	assert_reply_err(0, 1, "timeout", -ETIMEDOUT);
	assert_string_equal(log_str(0, "message"),
			    "guest agent command guest-network-get-interfaces timed out after 0.05 s");
	execute("guest-get-host-name", NULL, 0, 2);
	json_int_t id = fake_peer_expect_agent_sync(T->peer);
	assert_true(qmp_client_is_ready(T->client));
	assert_false(fake_peer_has_input(T->peer, 0.05)); /* waits for the sync */
	send_line("{\"return\": [{\"name\": \"late\"}]}");
	char *text = NULL;
	assert_true(asprintf(&text, "\xff{\"return\": %" JSON_INTEGER_FORMAT "}\n", id) > 0);
	send_raw(text);
	free(text);
	json_decref(agent_expect("guest-get-host-name"));
	send_line("{\"return\": {\"host-name\": \"g1\"}}");
	wait_log(2);
	assert_reply_ok(1, 2);
	assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
						log_at(1), "reply"), "return"), "host-name")),
			    "g1");
	assert_int_equal(log_count("ready"), 0); /* ready once only */
}

/* The agent goes (qemu-ga stopped, the port closed: EOF); a new
 * connection syncs afresh. */
static void test_agent_reconnect(void **state)
{
	start_client(&agent_opts);
	agent_sync_ok();
	execute("guest-info", NULL, 5, 1);
	json_decref(agent_expect("guest-info"));
	fake_peer_close(T->peer);
	wait_log(2);
	assert_reply_err(0, 1, "disconnected", -ECONNRESET);
	assert_closed(1, "disconnected", -ECONNRESET);
	assert_string_equal(log_str(1, "message"), "QEMU closed the guest agent connection");
	stop_client();

	start_client(&agent_opts);
	agent_sync_ok();
	execute("guest-info", NULL, 5, 2);
	json_decref(agent_expect("guest-info"));
	send_line("{\"return\": {}}");
	wait_log(1);
	assert_reply_ok(0, 2);
}

/* guest-shutdown answers nothing when it works: the caller sees a
 * timeout; an agent that refuses answers an error. */
static void test_agent_shutdown_no_reply(void **state)
{
	start_client(&agent_opts);
	agent_sync_ok();
	execute("guest-shutdown", json_pack("{s:s}", "mode", "powerdown"), 0.05, 1);
	json_auto_t *msg = agent_expect("guest-shutdown");
	assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "arguments"),
							      "mode")),
			    "powerdown");
	wait_log(1);
	assert_reply_err(0, 1, "timeout", -ETIMEDOUT);
	/* The guest goes down: the sync after the timeout is never answered. */
	fake_peer_expect_agent_sync(T->peer);
	fake_peer_close(T->peer);
	wait_log(2);
	assert_closed(1, "disconnected", -ECONNRESET);
	stop_client();

	start_client(&agent_opts);
	agent_sync_ok();
	execute("guest-shutdown", NULL, 1, 2);
	json_decref(agent_expect("guest-shutdown"));
	send_line("{\"error\": {\"class\": \"GenericError\", \"desc\": "
		  "\"Command guest-shutdown has been disabled\"}}");
	wait_log(1);
	assert_reply_err(0, 2, "qmp-error", -EREMOTEIO);
}

/* A reply over max_message closes the client, as in QMP mode; so does a
 * stale line that large while syncing. */
static void test_agent_reply_too_large(void **state)
{
	const QmpOptions opts = {.guest_agent = true, .max_message = 1024};

	start_client(&opts);
	agent_sync_ok();
	execute("guest-network-get-interfaces", NULL, 5, 1);
	json_decref(agent_expect("guest-network-get-interfaces"));
	_cleanup_free_ char *big = make_event_line(2000);
	send_line(big);
	wait_log(2);
	assert_reply_err(0, 1, "protocol-error", -EMSGSIZE);
	assert_closed(1, "protocol-error", -EMSGSIZE);
	assert_string_equal(log_str(1, "message"), "guest agent message exceeds 1024 bytes");
	assert_true(fake_peer_got_eof(T->peer));
	stop_client();

	start_client(&opts);
	fake_peer_expect_agent_sync(T->peer);
	assert_int_equal(fake_peer_send(T->peer, big, strlen(big)), 0);
	wait_log(1);
	assert_closed(0, "protocol-error", -EMSGSIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T_(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	    T_(test_handshake),
	    T_(test_queued_before_ready),
	    T_(test_out_of_order_replies),
	    T_(test_events_interleaved),
	    T_(test_error_reply),
	    T_(test_big_integers),
	    T_(test_timeout_and_late_reply),
	    T_(test_timeout_before_ready),
	    T_(test_eof_fails_pending),
	    T_(test_garbage_input),
	    T_(test_non_object_input),
	    T_(test_oversized_line),
	    T_(test_oversized_partial),
	    T_(test_split_writes),
	    T_(test_large_command),
	    T_(test_execute_raw_ids),
	    T_(test_execute_raw_invalid),
	    T_(test_unknown_replies_dropped),
	    T_(test_write_epipe),
	    T_(test_free_in_reply),
	    T_(test_free_in_failed_reply),
	    T_(test_free_in_closed),
	    T_(test_free_in_event_and_ready),
	    T_(test_free_with_pending),
	    T_(test_handshake_timeout),
	    T_(test_bad_handshake),
	    T_(test_execute_fd),
	    T_(test_execute_fd_queued_before_ready),
	    T_(test_execute_fd_not_sent),
	    T_(test_execute_fd_invalid),
	    T_(test_execute_fd_many),
	    T_(test_replay_recorded),
	    T_(test_agent_sync_stale),
	    T_(test_agent_hung),
	    T_(test_agent_timeout_resync),
	    T_(test_agent_reconnect),
	    T_(test_agent_shutdown_no_reply),
	    T_(test_agent_reply_too_large),
#undef T_
	};
	return cmocka_run_group_tests_name("qmp", tests, NULL, NULL);
}
