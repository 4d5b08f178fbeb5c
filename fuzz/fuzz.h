/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the libFuzzer harnesses: the entry points and a few helpers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional: once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant of the code under test does not hold: print and abort, so
 * libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The harness itself cannot run (no temp dir, no socket...): not a finding
 * about the code under test, so it exits rather than aborts. */
_Noreturn void fuzz_die(const char *what);

/* A new directory under $TMPDIR (else /tmp), removed with its content at
 * exit. New string, owned by the helper. */
const char *fuzz_tmpdir(const char *tag);

/* send() what fits without blocking; returns bytes sent (0 when the socket is
 * full), or -1 when the peer is gone. */
ssize_t fuzz_send_some(int fd, const void *buf, size_t len);
/* Reads and discards whatever is readable now; returns the bytes read.
 * *ret_eof: the peer closed (or the socket failed). */
ssize_t fuzz_drain(int fd, bool *ret_eof);

unsigned fuzz_popcount(const unsigned char *bitmap, size_t bytes);
