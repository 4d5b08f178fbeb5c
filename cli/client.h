/* SPDX-License-Identifier: Apache-2.0 */
/* A small blocking HTTP/1.1 client for hsd's API socket (responses parsed
 * with http-parser). Used by hsctl and by the tests. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "hs-util.h"

typedef struct HsClient {
	int fd;
	char *socket_path;
	double timeout; /* seconds per read; <= 0: none */
} HsClient;

/* err->kind "unreachable" when nothing answers at path. */
int hs_client_connect(HsClient *c, const char *socket_path, HsError *err);
void hs_client_close(HsClient *c);

/* One request; body may be NULL (borrowed). *ret_json is the parsed body
 * (NULL if empty or not JSON); *ret_status the HTTP status. The connection
 * is kept alive for the next request. */
int hs_client_request(HsClient *c, const char *method, const char *path, json_t *body,
		      unsigned *ret_status, json_t **ret_json, HsError *err);

/* GET path and hand each line of the (endless) body to on_line until it
 * returns non-zero or the server ends the stream. */
int hs_client_stream(HsClient *c, const char *path,
		     int (*on_line)(const char *line, size_t len, void *ud), void *ud,
		     unsigned *ret_status, json_t **ret_error, HsError *err);

/* Upgrade: on success the connection (c->fd) is the raw channel; bytes the
 * server sent after its 101 are in *ret_extra (malloc'd). On a non-101 answer
 * returns -EPROTO with *ret_status and *ret_json set. */
int hs_client_upgrade(HsClient *c, const char *path, const char *protocol, char **ret_extra,
		      size_t *ret_extra_len, unsigned *ret_status, json_t **ret_json,
		      HsError *err);

/* The default socket: $HSD_SOCKET, else /run/hsd/hsd.sock for root,
 * $XDG_RUNTIME_DIR/hsd/hsd.sock for others. New string. */
char *hs_client_default_socket(void);
