/* SPDX-License-Identifier: Apache-2.0 */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hs-util.h"

#define FUZZ_MAX_TMPDIRS 4

static char *tmpdirs[FUZZ_MAX_TMPDIRS];
static size_t n_tmpdirs;

void fuzz_die(const char *what)
{
	fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(errno));
	_exit(2);
}

static void remove_tmpdirs(void)
{
	for (size_t i = 0; i < n_tmpdirs; i++) {
		hs_rm_rf_at(AT_FDCWD, tmpdirs[i]);
		free(tmpdirs[i]);
		tmpdirs[i] = NULL;
	}
	n_tmpdirs = 0;
}

const char *fuzz_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	if (n_tmpdirs == FUZZ_MAX_TMPDIRS) {
		errno = EMFILE;
		fuzz_die("too many temp dirs");
	}
	char *d = hs_strdup_printf("%s/hs-%s-XXXXXX", base, tag);
	if (!d || !mkdtemp(d))
		fuzz_die("mkdtemp");
	if (n_tmpdirs == 0)
		atexit(remove_tmpdirs);
	tmpdirs[n_tmpdirs++] = d;
	return d;
}

ssize_t fuzz_send_some(int fd, const void *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n =
		    send(fd, (const char *)buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return -1;
		}
		off += (size_t)n;
	}
	return (ssize_t)off;
}

ssize_t fuzz_drain(int fd, bool *ret_eof)
{
	char buf[16384];
	ssize_t total = 0;
	*ret_eof = false;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			total += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return total;
		*ret_eof = true;
		return total;
	}
}

unsigned fuzz_popcount(const unsigned char *bitmap, size_t bytes)
{
	unsigned n = 0;
	for (size_t i = 0; i < bytes; i++)
		n += (unsigned)__builtin_popcount(bitmap[i]);
	return n;
}
