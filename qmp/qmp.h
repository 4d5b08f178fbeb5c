/* SPDX-License-Identifier: Apache-2.0 */
/* An asynchronous QMP client on libev. One QmpClient per QEMU monitor
 * socket. It never blocks the loop: commands are queued with a callback and
 * a timeout; replies are matched to commands by id; events go to the event
 * callback; EOF or a protocol error fails every pending command. */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>

#include "hs-util.h"

typedef struct QmpClient QmpClient;

/* A command's outcome. On success err is NULL and reply is the whole reply
 * object ({"return": ...}), borrowed for the duration of the call. On failure
 * err is set: err->kind is "qmp-error" for an error reply from QEMU (then
 * err->message is QEMU's "desc", err->code is -EREMOTEIO and reply is the
 * whole error reply, borrowed), "timeout" (-ETIMEDOUT), "disconnected"
 * (-ECONNRESET, -EPIPE...: reply NULL) or "cancelled" (-ECANCELED: the client
 * was freed). */
typedef void (*QmpReplyCb)(QmpClient *c, json_t *reply, const HsError *err, void *userdata);

typedef struct QmpCallbacks {
	/* Greeting received and qmp_capabilities accepted; commands may flow.
	 * greeting is borrowed. */
	void (*ready)(QmpClient *c, json_t *greeting, void *userdata);
	/* An asynchronous event. data may be NULL; both borrowed. seconds is the
	 * event's timestamp (wall clock, seconds.micros). */
	void (*event)(QmpClient *c, const char *name, json_t *data, double seconds, void *userdata);
	/* The connection is gone (EOF, read error, protocol error, oversized
	 * message). Called once, after every pending command has been failed.
	 * The client must still be freed by its owner (possibly from inside
	 * this callback). */
	void (*closed)(QmpClient *c, const HsError *err, void *userdata);
} QmpCallbacks;

typedef struct QmpOptions {
	/* Largest single message accepted from QEMU, bytes. 0: 16 MiB. */
	size_t max_message;
	/* Timeout for the greeting + capabilities negotiation, seconds. 0: 10.
	 * Guest agent: for each sync. */
	double handshake_timeout;
	/* The peer is a QEMU guest agent (qemu-ga on a virtio-serial port),
	 * not QEMU's monitor: no greeting, no capabilities, no events, and
	 * no ids (old agents refuse them). The client syncs at connect and
	 * again after a command timed out: a 0xFF byte (resets the agent's
	 * parser), then guest-sync-delimited with a random id; everything
	 * the agent sent before its 0xFF and the matching {"return": id} is
	 * dropped (stale replies). One command is on the wire at a time and
	 * the next reply is its reply. `ready` runs (greeting NULL) after
	 * the first sync; a sync that times out closes the client
	 * ("timeout"). A command that sends no reply on success
	 * (guest-shutdown) ends with "timeout". */
	bool guest_agent;
} QmpOptions;

/* Takes ownership of fd (a connected stream socket; made non-blocking).
 * opts may be NULL. Returns NULL with errno set on allocation failure. */
QmpClient *qmp_client_new(struct ev_loop *loop, int fd, const QmpCallbacks *cbs,
			  const QmpOptions *opts, void *userdata);

/* Fails every pending command with "cancelled" (calling their callbacks),
 * stops the watchers, closes the fd. Does not call `closed`. NULL is fine.
 * Safe to call from inside any callback of this client. Returns NULL. */
QmpClient *qmp_client_free(QmpClient *c);

/* Queue `command` with `arguments` (stolen; may be NULL). Commands issued
 * before the handshake completes are sent once it does. timeout in seconds
 * (<= 0: no timeout). cb may be NULL (the reply is then ignored). Returns 0,
 * or a negative errno if the client is already closed (-ENOTCONN; cb is not
 * called then). */
int qmp_client_execute(QmpClient *c, const char *command, json_t *arguments, double timeout,
		       QmpReplyCb cb, void *userdata);

/* The same, with a descriptor (taken; closed once sent or on failure)
 * passed along with the command over the socket (SCM_RIGHTS), for
 * add-fd and getfd. */
int qmp_client_execute_fd(QmpClient *c, const char *command, json_t *arguments, int fd,
			  double timeout, QmpReplyCb cb, void *userdata);

/* Passthrough: `msg` (stolen) is a whole QMP command object, e.g.
 * {"execute": "query-status", "arguments": {...}, "id": anything}. It must
 * have a string "execute" (or "exec-oob") member and no other members than
 * execute/exec-oob/arguments/id; else -EINVAL with err set and msg freed. The client substitutes
 * its own id on the wire and puts the caller's id (if any) back into the
 * reply handed to cb. */
int qmp_client_execute_raw(QmpClient *c, json_t *msg, double timeout, QmpReplyCb cb,
			   void *userdata, HsError *err);

/* Ready: the handshake (guest agent: the first sync) is done, and the
 * client not closed (a guest agent client may be re-syncing). */
bool qmp_client_is_ready(const QmpClient *c);
bool qmp_client_is_closed(const QmpClient *c);
/* Number of commands sent or queued and not yet answered. */
unsigned qmp_client_pending(const QmpClient *c);
void *qmp_client_get_userdata(const QmpClient *c);
