/* SPDX-License-Identifier: Apache-2.0 */
/* A scripted fake QEMU for the QMP client tests: the other end of a
 * socketpair, driven from the test's own ev loop. The test writes QEMU's
 * side with fake_peer_send*() and reads what the client sent with
 * fake_peer_recv()/fake_peer_expect(), which run the loop until a whole
 * line has arrived (failing the test after a couple of seconds). */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct FakePeer FakePeer;

/* *ret_client_fd is the end to hand to qmp_client_new(). */
FakePeer *fake_peer_new(struct ev_loop *loop, int *ret_client_fd);
FakePeer *fake_peer_free(FakePeer *p);

/* Write bytes as they are (nothing appended). Returns 0 or -errno (e.g.
 * -EPIPE once the client has closed its end). */
int fake_peer_send(FakePeer *p, const char *data, size_t len);
/* One message: text + "\r\n". */
int fake_peer_send_line(FakePeer *p, const char *text);
/* text in chunks of `chunk` bytes, running the loop once after each. */
int fake_peer_send_chunked(FakePeer *p, const char *text, size_t chunk);
/* A typical greeting line (without "\r\n"). */
extern const char fake_peer_greeting[];

/* Next message from the client (new reference); fails the test if none
 * arrives within 2 s. Descriptors that came with it are closed. */
json_t *fake_peer_recv(FakePeer *p);
/* The same, and *ret_fd (may be NULL: closed) is the descriptor that came
 * with the message's bytes (SCM_RIGHTS), -1 if none. More than one fails
 * the test. */
json_t *fake_peer_recv_fd(FakePeer *p, int *ret_fd);
/* The same, with every descriptor: the first max_fds go to fds (the rest
 * are closed), *ret_n_fds (may be NULL) is how many came. */
json_t *fake_peer_recv_fds(FakePeer *p, int *fds, size_t max_fds, size_t *ret_n_fds);
/* fake_peer_recv() and check its "execute"; returns its "id" as a new
 * string (free it). */
char *fake_peer_expect(FakePeer *p, const char *execute);
/* Runs the loop for `seconds` and returns whether the client sent anything
 * (a whole line or not) meanwhile or before. */
bool fake_peer_has_input(FakePeer *p, double seconds);
/* Greeting, qmp_capabilities, its return. */
void fake_peer_handshake(FakePeer *p);

/* Guest agent mode: the client's sync, a 0xFF byte and then
 * guest-sync-delimited (with no "id" member); returns its arguments' id. */
json_int_t fake_peer_expect_agent_sync(FakePeer *p);
/* The same, answered as qemu-ga does: 0xFF, then {"return": id}. */
void fake_peer_agent_sync(FakePeer *p);

/* Closes the peer's end: the client sees EOF. */
void fake_peer_close(FakePeer *p);
/* shutdown(SHUT_RD): the client's next send fails with EPIPE. */
void fake_peer_shutdown_read(FakePeer *p);
/* Runs the loop until the client has closed its end (2 s at most). */
bool fake_peer_got_eof(FakePeer *p);

/* Runs the loop until done(arg) is true or `seconds` passed; returns done(arg).
 * done may be NULL: just run for `seconds`. */
bool test_run_until(struct ev_loop *loop, bool (*done)(void *arg), void *arg, double seconds);
