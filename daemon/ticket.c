/* SPDX-License-Identifier: Apache-2.0 */
#include "ticket.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "hs-util.h"

/* Expired and used tickets are kept this long after their expiry, so that
 * a late viewer hears "expired" or "used" rather than "unknown". */
#define TICKET_KEEP_EXPIRED 60.0

typedef struct Ticket {
	char token[TICKET_TOKEN_SIZE];
	char vm[TICKET_VM_SIZE];
	TicketKind kind;
	double expires_at;
	bool used;
} Ticket;

struct TicketStore {
	TicketClock clock;
	void *clock_userdata;
	Ticket *t;
	size_t n, cap;
};

static const char *const kinds[] = {
	[TICKET_SPICE] = "spice",
	[TICKET_SERIAL] = "serial",
};

const char *ticket_kind_to_string(TicketKind k)
{
	return (size_t)k < ARRAY_SIZE(kinds) ? kinds[k] : "?";
}

int ticket_kind_from_string(const char *s, TicketKind *ret)
{
	for (size_t i = 0; s && i < ARRAY_SIZE(kinds); i++)
		if (!strcmp(s, kinds[i])) {
			*ret = (TicketKind)i;
			return 0;
		}
	return -EINVAL;
}

static double wall_clock(void *userdata)
{
	(void)userdata;
	return hs_wall();
}

TicketStore *ticket_store_new(TicketClock clock, void *clock_userdata)
{
	TicketStore *ts = calloc(1, sizeof(*ts));
	if (!ts)
		return NULL;
	ts->clock = clock ? clock : wall_clock;
	ts->clock_userdata = clock_userdata;
	return ts;
}

static void ticket_remove(TicketStore *ts, size_t i)
{
	explicit_bzero(ts->t[i].token, sizeof(ts->t[i].token));
	ts->t[i] = ts->t[--ts->n];
	explicit_bzero(&ts->t[ts->n], sizeof(ts->t[ts->n]));
}

TicketStore *ticket_store_free(TicketStore *ts)
{
	if (!ts)
		return NULL;
	if (ts->t)
		explicit_bzero(ts->t, ts->cap * sizeof(*ts->t));
	free(ts->t);
	free(ts);
	return NULL;
}

static double now(TicketStore *ts)
{
	return ts->clock(ts->clock_userdata);
}

/* Drops tickets past their expiry by more than `keep` seconds. */
static void purge(TicketStore *ts, double keep)
{
	double t = now(ts);
	for (size_t i = 0; i < ts->n;)
		if (ts->t[i].expires_at + keep <= t)
			ticket_remove(ts, i);
		else
			i++;
}

static void base64url(const unsigned char *in, size_t n, char *out)
{
	static const char a[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t left = n - i;
		if (left > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		out[o++] = a[(v >> 18) & 63];
		out[o++] = a[(v >> 12) & 63];
		if (left > 1)
			out[o++] = a[(v >> 6) & 63];
		if (left > 2)
			out[o++] = a[v & 63];
	}
	out[o] = '\0';
}

int ticket_issue(TicketStore *ts, const char *vm, TicketKind kind, double ttl,
		 char ret_token[TICKET_TOKEN_SIZE], double *ret_expires_at)
{
	if (!(ttl >= TICKET_TTL_MIN && ttl <= TICKET_TTL_MAX) || !vm || !*vm ||
	    strlen(vm) >= TICKET_VM_SIZE || (size_t)kind >= ARRAY_SIZE(kinds))
		return -EINVAL;
	purge(ts, TICKET_KEEP_EXPIRED);
	if (ts->n >= TICKET_MAX) {
		/* Room first from the ones that only remain to say "expired". */
		purge(ts, 0);
		if (ts->n >= TICKET_MAX)
			return -ENOSPC;
	}
	if (ts->n == ts->cap) {
		size_t cap = ts->cap ? ts->cap * 2 : 16;
		Ticket *t = calloc(cap, sizeof(*t));
		if (!t)
			return -ENOMEM;
		if (ts->n) {
			memcpy(t, ts->t, ts->n * sizeof(*t));
			explicit_bzero(ts->t, ts->cap * sizeof(*t));
		}
		free(ts->t);
		ts->t = t;
		ts->cap = cap;
	}
	unsigned char bytes[32];
	if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes))
		return errno ? -errno : -EIO;
	Ticket *t = &ts->t[ts->n];
	*t = (Ticket){.kind = kind, .expires_at = now(ts) + ttl};
	base64url(bytes, sizeof(bytes), t->token);
	explicit_bzero(bytes, sizeof(bytes));
	snprintf(t->vm, sizeof(t->vm), "%s", vm);
	ts->n++;
	memcpy(ret_token, t->token, TICKET_TOKEN_SIZE);
	if (ret_expires_at)
		*ret_expires_at = t->expires_at;
	return 0;
}

/* Whether a (of TICKET_TOKEN_LEN characters) equals b, in time that does
 * not depend on where they differ. */
static bool token_equal(const char *a, const char *b)
{
	unsigned char d = 0;
	for (size_t i = 0; i < TICKET_TOKEN_LEN; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

int ticket_take(TicketStore *ts, const char *token, char ret_vm[TICKET_VM_SIZE],
		TicketKind *ret_kind)
{
	if (!token || strnlen(token, TICKET_TOKEN_SIZE) != TICKET_TOKEN_LEN)
		return -ENOENT;
	purge(ts, TICKET_KEEP_EXPIRED);
	for (size_t i = 0; i < ts->n; i++) {
		Ticket *t = &ts->t[i];
		if (!token_equal(t->token, token))
			continue;
		if (t->used)
			return -EALREADY;
		if (t->expires_at <= now(ts))
			return -ETIME;
		t->used = true;
		if (ret_vm)
			memcpy(ret_vm, t->vm, TICKET_VM_SIZE);
		if (ret_kind)
			*ret_kind = t->kind;
		return 0;
	}
	return -ENOENT;
}

size_t ticket_void_vm(TicketStore *ts, const char *vm)
{
	size_t n = 0;
	for (size_t i = 0; i < ts->n;)
		if (!strcmp(ts->t[i].vm, vm)) {
			ticket_remove(ts, i);
			n++;
		} else {
			i++;
		}
	return n;
}

size_t ticket_count(TicketStore *ts)
{
	purge(ts, 0);
	return ts->n;
}
