/* SPDX-License-Identifier: Apache-2.0 */
/* Console tickets: the stand-in store (see ticket.h). A short list in
 * hsd's memory; expired and used tickets are dropped as it is walked. */
#include "ticket.h"

#include <string.h>

typedef struct Ticket {
	struct Ticket *next;
	char token[TICKET_TOKEN_LEN + 1];
	char vm[VM_NAME_MAX + 1];
	char kind[16];
	double expires; /* hs_now() */
} Ticket;

static Ticket *tickets;

static void tickets_prune(const char *vm)
{
	double now = hs_now();
	for (Ticket **p = &tickets; *p;) {
		Ticket *t = *p;
		if (t->expires <= now || (vm && !strcmp(t->vm, vm))) {
			*p = t->next;
			explicit_bzero(t->token, sizeof(t->token));
			free(t);
		} else {
			p = &t->next;
		}
	}
}

int ticket_issue(Hsd *h, const char *vm, const char *kind, double ttl,
		 char ret_token[TICKET_TOKEN_LEN + 1], double *ret_expires_at, HsError *err)
{
	tickets_prune(NULL);
	Ticket *t = calloc(1, sizeof(*t));
	if (!t)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	if (web_random_token(t->token) < 0) {
		free(t);
		return hs_error_set(err, -EIO, "internal", "getrandom failed");
	}
	snprintf(t->vm, sizeof(t->vm), "%s", vm);
	snprintf(t->kind, sizeof(t->kind), "%s", kind);
	t->expires = hs_now() + ttl;
	t->next = tickets;
	tickets = t;
	memcpy(ret_token, t->token, sizeof(t->token));
	*ret_expires_at = hs_wall() + ttl;
	return 0;
}

int ticket_take(Hsd *h, const char *token, char vm[VM_NAME_MAX + 1], char kind[16],
		HsError *err)
{
	tickets_prune(NULL);
	for (Ticket **p = &tickets; token && *p; p = &(*p)->next) {
		Ticket *t = *p;
		if (strcmp(t->token, token))
			continue;
		memcpy(vm, t->vm, sizeof(t->vm));
		memcpy(kind, t->kind, sizeof(t->kind));
		*p = t->next;
		explicit_bzero(t->token, sizeof(t->token));
		free(t);
		return 0;
	}
	return hs_error_set(err, -EACCES, "bad-ticket", "unknown, used or expired ticket");
}

void ticket_void_vm(Hsd *h, const char *vm)
{
	tickets_prune(vm);
}

void api_console_tickets(Hsd *h, Vm *vm, HttpRequest *req)
{
	json_auto_t *body = body_json(req, true);
	if (!body)
		return;
	static const char *const keys[] = {"kind", "ttl", NULL};
	if (!body_keys_ok(req, body, keys))
		return;
	const char *kind = json_string_value(json_object_get(body, "kind"));
	json_t *jttl = json_object_get(body, "ttl");
	double ttl = jttl ? json_number_value(jttl) : 60;
	if (!kind)
		kind = "serial"; /* no display in this branch yet */
	if (strcmp(kind, "serial") && strcmp(kind, "spice")) {
		http_reply_error(req, 400, "invalid-argument", "kind: 'spice' or 'serial'");
		return;
	}
	if ((jttl && !json_is_number(jttl)) || ttl < 5 || ttl > 600) {
		http_reply_error(req, 400, "invalid-argument", "ttl: seconds from 5 to 600");
		return;
	}
	if (vm->status.state != VM_STATE_RUNNING && vm->status.state != VM_STATE_PAUSED) {
		http_reply_error(req, 409, "not-running", "VM '%s' is %s", vm->spec.name,
				 vm_state_to_string(vm->status.state));
		return;
	}
	char token[TICKET_TOKEN_LEN + 1];
	double expires_at;
	HsError err = {0};
	if (ticket_issue(h, vm->spec.name, kind, ttl, token, &expires_at, &err) < 0) {
		http_reply_hserror(req, &err);
		return;
	}
	json_t *j = json_pack("{s:s, s:s, s:s, s:f}", "vm", vm->spec.name, "kind", kind, "token",
			      token, "expires_at", expires_at);
	const char *base = web_base_url(h);
	if (base && j) {
		_cleanup_free_ char *url = hs_strdup_printf("%s/console/?token=%s", base, token);
		json_object_set_new(j, "url", json_string(url));
	}
	explicit_bzero(token, sizeof(token));
	http_reply_json(req, 201, j);
}
