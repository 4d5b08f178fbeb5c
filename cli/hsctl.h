/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "client.h"

/* Exit codes. */
enum {
	EXIT_OK = 0,
	EXIT_HSD_ERROR = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
};

typedef struct Ctl {
	char *socket_path;
	bool json;
	HsClient client;
	bool connected;
} Ctl;

int ctl_connect(Ctl *ctl);
/* Prints an API error (or a transport error) and returns the exit code. */
int ctl_report(Ctl *ctl, unsigned status, json_t *body, const HsError *err);
int cmd_console(Ctl *ctl, int argc, char **argv);
