/* SPDX-License-Identifier: Apache-2.0 */
/* Console tickets: issue, take once, expiry, binding to a VM and a kind,
 * voiding; the clock is the test's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "ticket.h"

static double test_clock(void *userdata)
{
	return *(double *)userdata;
}

static TicketStore *store(double *clock)
{
	*clock = 1795350000.0;
	TicketStore *ts = ticket_store_new(test_clock, clock);
	assert_non_null(ts);
	return ts;
}

static void test_token_shape(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char a[TICKET_TOKEN_SIZE], b[TICKET_TOKEN_SIZE];
	double exp = 0;
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 60, a, &exp), 0);
	assert_true(exp == clock + 60);
	assert_int_equal(strlen(a), 43);
	for (const char *p = a; *p; p++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789-_",
				       *p));
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 60, b, NULL), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(ticket_count(ts), 2);
	ticket_store_free(ts);
}

static void test_take_once(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char tok[TICKET_TOKEN_SIZE], vm[TICKET_VM_SIZE] = "";
	TicketKind kind = TICKET_SERIAL;
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 30, tok, NULL), 0);
	clock += 29;
	assert_int_equal(ticket_take(ts, tok, vm, &kind), 0);
	assert_string_equal(vm, "web1");
	assert_int_equal(kind, TICKET_SPICE);
	/* Reuse: refused, and nothing written. */
	vm[0] = '\0';
	assert_int_equal(ticket_take(ts, tok, vm, &kind), -EALREADY);
	assert_string_equal(vm, "");
	/* Still "used" a little after its expiry, then unknown. */
	clock += 30;
	assert_int_equal(ticket_take(ts, tok, NULL, NULL), -EALREADY);
	clock += 120;
	assert_int_equal(ticket_take(ts, tok, NULL, NULL), -ENOENT);
	ticket_store_free(ts);
}

static void test_expiry(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char tok[TICKET_TOKEN_SIZE];
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SERIAL, 5, tok, NULL), 0);
	clock += 5;
	assert_int_equal(ticket_take(ts, tok, NULL, NULL), -ETIME);
	/* Expired is not taken by the failed attempt: still expired. */
	assert_int_equal(ticket_take(ts, tok, NULL, NULL), -ETIME);
	assert_int_equal(ticket_count(ts), 0);
	clock += 3600;
	assert_int_equal(ticket_take(ts, tok, NULL, NULL), -ENOENT);
	ticket_store_free(ts);
}

static void test_unknown(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char tok[TICKET_TOKEN_SIZE];
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 60, tok, NULL), 0);
	char other[TICKET_TOKEN_SIZE];
	memcpy(other, tok, sizeof(other));
	other[42] = other[42] == 'A' ? 'B' : 'A';
	assert_int_equal(ticket_take(ts, other, NULL, NULL), -ENOENT);
	/* A prefix, a longer string, nothing. */
	char shorter[TICKET_TOKEN_SIZE];
	memcpy(shorter, tok, sizeof(shorter));
	shorter[42] = '\0';
	assert_int_equal(ticket_take(ts, shorter, NULL, NULL), -ENOENT);
	char longer[TICKET_TOKEN_SIZE + 1];
	memcpy(longer, tok, TICKET_TOKEN_LEN);
	longer[43] = 'x';
	longer[44] = '\0';
	assert_int_equal(ticket_take(ts, longer, NULL, NULL), -ENOENT);
	assert_int_equal(ticket_take(ts, "", NULL, NULL), -ENOENT);
	assert_int_equal(ticket_take(ts, NULL, NULL, NULL), -ENOENT);
	/* The real one is untouched by those. */
	assert_int_equal(ticket_take(ts, tok, NULL, NULL), 0);
	ticket_store_free(ts);
}

/* A ticket says which VM and kind it opens: the caller refuses it for
 * another (the web console asks for the VM and kind the ticket names). */
static void test_bound_to_vm_and_kind(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char a[TICKET_TOKEN_SIZE], b[TICKET_TOKEN_SIZE], vm[TICKET_VM_SIZE];
	TicketKind kind;
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SERIAL, 60, a, NULL), 0);
	assert_int_equal(ticket_issue(ts, "web2", TICKET_SPICE, 60, b, NULL), 0);
	assert_int_equal(ticket_take(ts, b, vm, &kind), 0);
	assert_string_equal(vm, "web2");
	assert_int_equal(kind, TICKET_SPICE);
	assert_int_equal(ticket_take(ts, a, vm, &kind), 0);
	assert_string_equal(vm, "web1");
	assert_int_equal(kind, TICKET_SERIAL);
	ticket_store_free(ts);
}

static void test_void_vm(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char a[TICKET_TOKEN_SIZE], b[TICKET_TOKEN_SIZE], c[TICKET_TOKEN_SIZE];
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 60, a, NULL), 0);
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SERIAL, 60, b, NULL), 0);
	assert_int_equal(ticket_issue(ts, "web10", TICKET_SPICE, 60, c, NULL), 0);
	assert_int_equal(ticket_take(ts, b, NULL, NULL), 0);
	assert_int_equal(ticket_void_vm(ts, "web1"), 2);
	assert_int_equal(ticket_take(ts, a, NULL, NULL), -ENOENT);
	assert_int_equal(ticket_take(ts, b, NULL, NULL), -ENOENT);
	/* Another VM's, even with a name that starts the same, stay. */
	assert_int_equal(ticket_take(ts, c, NULL, NULL), 0);
	assert_int_equal(ticket_void_vm(ts, "nope"), 0);
	ticket_store_free(ts);
}

static void test_limits(void **state)
{
	double clock;
	TicketStore *ts = store(&clock);
	char tok[TICKET_TOKEN_SIZE];
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 4.9, tok, NULL), -EINVAL);
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 601, tok, NULL), -EINVAL);
	assert_int_equal(ticket_issue(ts, "", TICKET_SPICE, 60, tok, NULL), -EINVAL);
	char longname[80];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(ticket_issue(ts, longname, TICKET_SPICE, 60, tok, NULL), -EINVAL);
	for (int i = 0; i < TICKET_MAX; i++)
		assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 10, tok, NULL), 0);
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 10, tok, NULL), -ENOSPC);
	/* Expired ones make room. */
	clock += 10;
	assert_int_equal(ticket_issue(ts, "web1", TICKET_SPICE, 10, tok, NULL), 0);
	assert_int_equal(ticket_count(ts), 1);
	assert_null(ticket_store_free(ts));
	assert_null(ticket_store_free(NULL));
}

static void test_kinds(void **state)
{
	TicketKind k;
	assert_int_equal(ticket_kind_from_string("spice", &k), 0);
	assert_int_equal(k, TICKET_SPICE);
	assert_int_equal(ticket_kind_from_string("serial", &k), 0);
	assert_int_equal(k, TICKET_SERIAL);
	assert_int_equal(ticket_kind_from_string("vnc", &k), -EINVAL);
	assert_int_equal(ticket_kind_from_string(NULL, &k), -EINVAL);
	assert_string_equal(ticket_kind_to_string(TICKET_SERIAL), "serial");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token_shape),
	    cmocka_unit_test(test_take_once),
	    cmocka_unit_test(test_expiry),
	    cmocka_unit_test(test_unknown),
	    cmocka_unit_test(test_bound_to_vm_and_kind),
	    cmocka_unit_test(test_void_vm),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_kinds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
