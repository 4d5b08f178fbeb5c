/* SPDX-License-Identifier: Apache-2.0 */
/* Console tickets (docs/console-spec.md, section 2): one-time tokens bound
 * to a VM and a kind ("spice" or "serial"), in hsd's memory only.
 *
 * A stand-in with the API of issue 10 part 1's store, so that the web
 * console (web.c) is built and tested before the two halves meet: part 1's
 * ticket.c and ticket.h replace these whole. */
#pragma once

#include "hsd.h"

#define TICKET_TOKEN_LEN 43 /* 256 random bits in base64url, unpadded */

/* A new ticket for vm, valid ttl seconds. */
int ticket_issue(Hsd *h, const char *vm, const char *kind, double ttl,
		 char ret_token[TICKET_TOKEN_LEN + 1], double *ret_expires_at, HsError *err);
/* The ticket's VM and kind, and the ticket marked used: -EACCES when it is
 * unknown, used or expired. */
int ticket_take(Hsd *h, const char *token, char vm[VM_NAME_MAX + 1], char kind[16],
		HsError *err);
/* The VM stopped (or went away): its tickets are void. */
void ticket_void_vm(Hsd *h, const char *vm);

/* POST /v1/vms/NAME/console-tickets. */
void api_console_tickets(Hsd *h, Vm *vm, HttpRequest *req);
