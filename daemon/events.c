/* SPDX-License-Identifier: Apache-2.0 */
/* GET /v1/events: a stream of JSON lines (state changes and QMP events).
 * Each subscriber has a bounded queue; one that falls too far behind gets a
 * final "overflow" line and is disconnected, so it never holds hsd back. */
#include <string.h>

#include "hsd.h"

#define SUB_QUEUE_MAX (1024 * 1024)

struct EventSub {
	EventSub *next;
	Hsd *hsd;
	HttpStream *stream;
	char *vm; /* filter, or NULL */
	char *buf;
	size_t len, off;
	bool overflow, closing;
};

static void sub_unlink(EventSub *s)
{
	for (EventSub **p = &s->hsd->subs; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			return;
		}
}

static ssize_t sub_read(void *ud, char *buf, size_t max)
{
	EventSub *s = ud;
	size_t avail = s->len - s->off;
	if (avail == 0)
		return s->closing ? -1 : 0;
	size_t n = avail < max ? avail : max;
	memcpy(buf, s->buf + s->off, n);
	s->off += n;
	if (s->off == s->len)
		s->off = s->len = 0;
	return (ssize_t)n;
}

static void sub_done(void *ud)
{
	EventSub *s = ud;
	sub_unlink(s);
	free(s->vm);
	free(s->buf);
	free(s);
}

static const HttpStreamOps sub_ops = {
	.read = sub_read,
	.done = sub_done,
};

static void sub_push(EventSub *s, const char *line, size_t n)
{
	if (s->closing)
		return;
	if (s->len - s->off + n > SUB_QUEUE_MAX) {
		static const char ovf[] = "{\"type\":\"overflow\",\"message\":\"client too slow; "
					  "events were dropped\"}\n";
		s->closing = true;
		line = ovf;
		n = sizeof(ovf) - 1;
	}
	if (s->off > 0) {
		memmove(s->buf, s->buf + s->off, s->len - s->off);
		s->len -= s->off;
		s->off = 0;
	}
	char *nb = realloc(s->buf, s->len + n);
	if (!nb) {
		s->closing = true;
		http_stream_wake(s->stream);
		return;
	}
	memcpy(nb + s->len, line, n);
	s->buf = nb;
	s->len += n;
	http_stream_wake(s->stream);
}

void events_publish(Hsd *h, json_t *event)
{
	if (!event)
		return;
	_cleanup_free_ char *line = json_dumps(event, JSON_COMPACT);
	/* The event's own string: event is freed only after the loop. */
	json_auto_t *owned = event;
	const char *vm = json_string_value(json_object_get(owned, "vm"));
	if (!line)
		return;
	size_t n = strlen(line);
	line[n] = '\n';
	EventSub *next;
	for (EventSub *s = h->subs; s; s = next) {
		next = s->next;
		if (s->vm && (!vm || strcmp(s->vm, vm)))
			continue;
		sub_push(s, line, n + 1);
	}
	line[n] = '\0';
}

void events_publish_state(Vm *vm, VmState old)
{
	json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:f}", "type", "state", "vm", vm->spec.name,
			      "state", vm_state_to_string(vm->status.state), "previous",
			      vm_state_to_string(old), "time", hs_wall());
	if (e && vm->status.exit_reason[0] && !vm_state_is_active(vm->status.state))
		json_object_set_new(e, "reason", json_string(vm->status.exit_reason));
	events_publish(vm->hsd, e);
}

void events_subscribe(Hsd *h, HttpRequest *req, const char *vm_filter)
{
	EventSub *s = calloc(1, sizeof(*s));
	if (!s || (vm_filter && !(s->vm = strdup(vm_filter)))) {
		free(s);
		http_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	s->hsd = h;
	s->stream = http_reply_stream(req, "application/x-ndjson", &sub_ops, s);
	if (!s->stream) {
		free(s->vm);
		free(s);
		return;
	}
	s->next = h->subs;
	h->subs = s;
	/* A first line right away tells the client the stream is live. */
	static const char hello[] = "{\"type\":\"hello\"}\n";
	sub_push(s, hello, sizeof(hello) - 1);
}

void events_heartbeat(Hsd *h)
{
	/* An empty line: lets hsd notice subscribers that went away. */
	for (EventSub *s = h->subs; s; s = s->next)
		if (s->len == s->off)
			sub_push(s, "\n", 1);
}
