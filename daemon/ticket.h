/* SPDX-License-Identifier: Apache-2.0 */
/* Console tickets (docs/architecture.md, "Graphical console (SPICE)"):
 * one-time tokens that open one VM's console of one kind, for a short
 * while. In hsd's memory only (a restart voids them all); pure, no I/O but
 * the random bytes of a token, with an injectable clock for tests.
 *
 * Use:
 *   TicketStore *ts = ticket_store_new(NULL, NULL);        (hs_wall clock)
 *   char token[TICKET_TOKEN_SIZE]; double exp;
 *   ticket_issue(ts, "web1", TICKET_SPICE, 60, token, &exp);
 *   ...
 *   char vm[TICKET_VM_SIZE]; TicketKind kind;
 *   if (ticket_take(ts, token, vm, &kind) == 0)   (now used: never again)
 *           ... open vm's console of that kind (check it is still running);
 *   ticket_void_vm(ts, "web1");                   (at its stop, delete)
 *   ts = ticket_store_free(ts);
 *
 * A ticket is bound to one VM (by name) and one kind: ticket_take says
 * which, and the caller refuses one that is not for what was asked. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* 256 random bits, base64url without padding: 43 characters and a NUL. */
#define TICKET_TOKEN_LEN 43
#define TICKET_TOKEN_SIZE (TICKET_TOKEN_LEN + 1)
#define TICKET_VM_SIZE 64 /* VM_NAME_MAX + 1 */
/* Time to live, seconds: what the API accepts. */
#define TICKET_TTL_MIN 5
#define TICKET_TTL_MAX 600
#define TICKET_TTL_DEFAULT 60
/* Live tickets at most (issuing more fails with -ENOSPC). */
#define TICKET_MAX 1024

typedef enum TicketKind {
	TICKET_SPICE,  /* the VM's SPICE display */
	TICKET_SERIAL, /* the VM's serial console */
} TicketKind;

const char *ticket_kind_to_string(TicketKind k);
/* "spice" / "serial"; -EINVAL for anything else. */
int ticket_kind_from_string(const char *s, TicketKind *ret);

/* Seconds on the wall clock (time(2)'s epoch): expiry times are absolute
 * so that the API can show them (expires_at). */
typedef double (*TicketClock)(void *userdata);

typedef struct TicketStore TicketStore;

/* clock NULL: the wall clock (hs_wall). NULL on OOM. */
TicketStore *ticket_store_new(TicketClock clock, void *clock_userdata);
/* Forgets every ticket (tokens wiped). NULL is fine; returns NULL. */
TicketStore *ticket_store_free(TicketStore *ts);

/* A new ticket for vm and kind, valid ttl seconds (TICKET_TTL_MIN ..
 * TICKET_TTL_MAX, else -EINVAL): its token in ret_token, its expiry (wall
 * clock) in ret_expires_at (may be NULL). -ENOSPC when TICKET_MAX are
 * live, -EINVAL for a vm name too long, or getrandom's error. */
int ticket_issue(TicketStore *ts, const char *vm, TicketKind kind, double ttl,
		 char ret_token[TICKET_TOKEN_SIZE], double *ret_expires_at);

/* Checks and uses a token: on success (0) the ticket is marked used (a
 * second take fails) and its VM and kind are written to ret_vm and
 * ret_kind (either may be NULL). Errors, nothing written:
 *   -ENOENT    unknown token (never issued, voided, or long expired)
 *   -EALREADY  already used
 *   -ETIME     expired
 * Tokens are compared in constant time. */
int ticket_take(TicketStore *ts, const char *token, char ret_vm[TICKET_VM_SIZE],
		TicketKind *ret_kind);

/* Voids every ticket of vm (used or not): at its stop and delete. Returns
 * how many. */
size_t ticket_void_vm(TicketStore *ts, const char *vm);

/* Live (unexpired) tickets, used or not; expired ones are dropped first. */
size_t ticket_count(TicketStore *ts);
