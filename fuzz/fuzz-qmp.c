/* SPDX-License-Identifier: Apache-2.0 */
/* The QMP client against a fake QEMU that says anything. The first input
 * byte holds flags (only its low six bits count; '@' is 0, so seeds can be
 * text: "@\n" then QMP lines); the rest is what QEMU writes after a real
 * greeting. The client runs on one end of a socketpair in an ev loop that
 * is driven without blocking for a bounded number of iterations.
 *
 * Commands are queued before the handshake (ids hs-1.., in this order):
 *   hs-1 query-status, hs-2 a raw command with the caller's id {"n": 1},
 *   hs-3 a raw command without id, hs-4 cont without callback;
 * the ready callback queues hs-5 (query-kvm), and each successful reply
 * queues one more, up to MAX_SLOTS commands.
 *
 * Checked: every callback runs exactly once (cancelled at the latest when
 * the client is freed), with the reply/err combination qmp.h promises; a raw
 * command's reply carries the caller's id back; `closed` runs at most once,
 * after every pending command has failed; nothing stays active in the loop
 * once the client is freed. */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "qmp.h"

#define F_OWN_GREETING 0x01 /* no canned greeting: the input brings one (or not) */
#define F_EOF 0x02	    /* half-close after the input: QEMU went away */
#define F_FREE_IN_CB 0x04   /* free the client from the first reply or event callback */
#define F_SMALL_MAX 0x08    /* max_message 512 */
#define F_CHUNKED 0x10	    /* the input trickles in, 7 bytes a loop iteration */
#define F_SHUT_RD 0x20	    /* QEMU does not read: the client's writes fail */

#define MAX_SLOTS 12
#define MAX_ITERATIONS 400

static const char greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n";

typedef struct Slot {
	bool issued, called, raw;
	json_t *caller_id; /* raw only: the id the reply must carry; NULL: none */
} Slot;

typedef struct Run {
	QmpClient *c; /* NULL once freed */
	unsigned flags;
	Slot slots[MAX_SLOTS];
	unsigned n_slots;
	bool ready, closed;
	unsigned events;
} Run;

static struct ev_loop *loop;
static Run run;

static void on_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud);

static void free_client(void)
{
	QmpClient *c = run.c;
	run.c = NULL;
	qmp_client_free(c);
}

static Slot *slot_new(bool raw)
{
	if (run.n_slots == MAX_SLOTS)
		return NULL;
	Slot *s = &run.slots[run.n_slots++];
	s->raw = raw;
	return s;
}

/* Un-reserves the slot of a command the client refused. */
static void slot_drop(Slot *s)
{
	json_decref(s->caller_id);
	*s = (Slot){0};
	run.n_slots--;
}

static void issue(const char *command, json_t *args)
{
	Slot *s = run.c ? slot_new(false) : NULL;
	if (!s) {
		json_decref(args);
		return;
	}
	s->issued = true;
	int r = qmp_client_execute(run.c, command, args, 30, on_reply, s);
	if (r < 0) {
		FUZZ_CHECK(r == -ENOTCONN && qmp_client_is_closed(run.c));
		slot_drop(s);
	}
}

static void issue_raw(json_t *msg)
{
	Slot *s = run.c ? slot_new(true) : NULL;
	if (!s) {
		json_decref(msg);
		return;
	}
	s->issued = true;
	s->caller_id = json_incref(json_object_get(msg, "id"));
	HsError err = {0};
	int r = qmp_client_execute_raw(run.c, msg, 30, on_reply, s, &err);
	if (r < 0) {
		FUZZ_CHECK(r == -ENOTCONN && qmp_client_is_closed(run.c) && err.code == r);
		slot_drop(s);
	}
}

static void on_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Slot *s = ud;
	FUZZ_CHECK(s->issued && !s->called);
	s->called = true;
	if (!err) {
		FUZZ_CHECK(reply && json_object_get(reply, "return"));
	} else {
		FUZZ_CHECK(err->code < 0 && err->kind[0]);
		if (!strcmp(err->kind, "qmp-error"))
			FUZZ_CHECK(reply && err->code == -EREMOTEIO &&
				   json_object_get(reply, "error"));
		else
			FUZZ_CHECK(!reply);
	}
	if (reply && s->raw) {
		json_t *id = json_object_get(reply, "id");
		FUZZ_CHECK(s->caller_id ? id && json_equal(id, s->caller_id) : !id);
	}
	if (!run.c || !reply)
		return;
	if (run.flags & F_FREE_IN_CB) {
		free_client();
		return;
	}
	issue("query-name", NULL);
}

static void on_ready(QmpClient *c, json_t *g, void *ud)
{
	FUZZ_CHECK(!run.ready && !run.closed);
	run.ready = true;
	FUZZ_CHECK(qmp_client_is_ready(c) && json_is_object(json_object_get(g, "QMP")));
	issue("query-kvm", json_pack("{s:b}", "all", 1));
}

static void on_event(QmpClient *c, const char *name, json_t *data, double seconds, void *ud)
{
	FUZZ_CHECK(name && !run.closed);
	run.events++;
	if (run.c && (run.flags & F_FREE_IN_CB) && run.events == 1)
		free_client();
}

static void on_closed(QmpClient *c, const HsError *err, void *ud)
{
	FUZZ_CHECK(!run.closed && c == run.c);
	run.closed = true;
	FUZZ_CHECK(err && err->code < 0 && err->kind[0]);
	FUZZ_CHECK(qmp_client_is_closed(c) && qmp_client_pending(c) == 0);
	for (unsigned i = 0; i < run.n_slots; i++)
		FUZZ_CHECK(run.slots[i].called);
	FUZZ_CHECK(qmp_client_execute(c, "query-status", NULL, 1, on_reply, NULL) == -ENOTCONN);
	if (run.flags & F_FREE_IN_CB)
		free_client(); /* the owner frees it from inside the callback */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
	if (!loop)
		fuzz_die("ev_loop_new");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	memset(&run, 0, sizeof(run));
	run.flags = data[0] & 0x3f;
	data++;
	size--;

	size_t len = (run.flags & F_OWN_GREETING ? 0 : sizeof(greeting) - 1) + size;
	char *in = malloc(len + 1);
	if (!in)
		fuzz_die("malloc");
	if (!(run.flags & F_OWN_GREETING))
		memcpy(in, greeting, sizeof(greeting) - 1);
	memcpy(in + len - size, data, size);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		fuzz_die("socketpair");
	int peer = sv[1];
	if (run.flags & F_SHUT_RD)
		shutdown(peer, SHUT_RD);

	QmpOptions opts = {.max_message = run.flags & F_SMALL_MAX ? 512 : 0};
	QmpCallbacks cbs = {.ready = on_ready, .event = on_event, .closed = on_closed};
	run.c = qmp_client_new(loop, sv[0], &cbs, &opts, &run);
	if (!run.c)
		fuzz_die("qmp_client_new");

	issue("query-status", NULL);
	issue_raw(json_pack("{s:s, s:{s:s}, s:{s:i}}", "execute", "human-monitor-command",
			    "arguments", "command-line", "info status", "id", "n", 1));
	issue_raw(json_pack("{s:s}", "execute", "query-version"));
	FUZZ_CHECK(qmp_client_execute(run.c, "cont", NULL, 0, NULL, NULL) == 0);
	FUZZ_CHECK(qmp_client_pending(run.c) == 4 && !qmp_client_is_ready(run.c));

	size_t off = 0;
	bool shut = false;
	unsigned idle = 0;
	for (unsigned it = 0; it < MAX_ITERATIONS; it++) {
		bool progress = false;
		if (off < len) {
			size_t n = len - off;
			if ((run.flags & F_CHUNKED) && n > 7)
				n = 7;
			ssize_t w = fuzz_send_some(peer, in + off, n);
			if (w < 0)
				off = len; /* the client closed its end */
			else
				off += (size_t)w;
			progress = w != 0;
		}
		if (off == len && (run.flags & F_EOF) && !shut) {
			shutdown(peer, SHUT_WR);
			shut = true;
		}
		bool eof;
		if (!(run.flags & F_SHUT_RD) && fuzz_drain(peer, &eof) > 0)
			progress = true;
		ev_run(loop, EVRUN_NOWAIT);
		if (!run.c || qmp_client_is_closed(run.c))
			break;
		idle = progress ? 0 : idle + 1;
		if (off == len && idle > 3)
			break;
	}

	free_client();
	close(peer);
	free(in);

	for (unsigned i = 0; i < run.n_slots; i++) {
		FUZZ_CHECK(run.slots[i].called);
		json_decref(run.slots[i].caller_id);
	}
	/* Every watcher of the client is stopped: nothing carries over. */
	FUZZ_CHECK(ev_run(loop, EVRUN_NOWAIT) == 0);
	FUZZ_CHECK(ev_pending_count(loop) == 0);
	return 0;
}
