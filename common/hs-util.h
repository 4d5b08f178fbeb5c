/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by every module: cleanup attributes, the error
 * object, and atomic file I/O relative to a directory fd. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_ __attribute__((warn_unused_result))
#define _fallthrough_ __attribute__((fallthrough))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _tp = (p);                                                           \
		(p) = NULL;                                                                        \
		_tp;                                                                               \
	})

#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _tf = (fd);                                                                    \
		(fd) = -1;                                                                         \
		_tf;                                                                               \
	})

/* The error object: filled only on failure, by the function that failed.
 * `code` is a negative errno; `kind` is a short machine-readable word used
 * as the REST API's error code ("invalid-spec", "not-found", ...). */
typedef struct HsError {
	int code;
	char kind[48];
	char message[512];
} HsError;

/* Sets *err (when err is not NULL) and returns code (a negative errno). */
int hs_error_set(HsError *err, int code, const char *kind, const char *fmt, ...) _printf_(4, 5);
int hs_error_setv(HsError *err, int code, const char *kind, const char *fmt, va_list ap)
	_printf_(4, 0);

/* Monotonic clock in nanoseconds / seconds. */
uint64_t hs_now_ns(void);
double hs_now(void);
/* Wall clock, seconds since the epoch. */
double hs_wall(void);

/* A TCP port from lo..hi that address (a numeric IPv4 or IPv6 address) can
 * be bound on now, found by binding it (the caller's listener, QEMU's,
 * binds it a moment later); ports for which taken(port, ud) is true are
 * passed over (taken may be NULL). 0: none free, or not an address. */
unsigned hs_tcp_port_free(const char *address, unsigned lo, unsigned hi,
			  bool (*taken)(unsigned port, void *ud), void *ud);

/* Write `len` bytes to dirfd/name atomically: a temp file in the same
 * directory, fsync, rename over the target, fsync the directory. A crash at
 * any moment leaves either the old or the new content, never a mix. */
int hs_write_file_atomic(int dirfd, const char *name, const void *data, size_t len, int mode);
/* The same, still atomic (temp + rename) but without the fsyncs: for state
 * that only has to survive the process crashing, not the machine (a VM's
 * runtime status: after a power loss its QEMU is gone anyway). */
int hs_write_file_replace(int dirfd, const char *name, const void *data, size_t len, int mode);
/* Read a whole file (at most max bytes; -EFBIG beyond) into a NUL-terminated
 * buffer. */
int hs_read_file(int dirfd, const char *name, size_t max, char **ret_data, size_t *ret_len);

/* Reads a small text file (sysfs, procfs) into buf, NUL-terminated;
 * truncated to size-1 bytes. */
int hs_read_small(int dirfd, const char *path, char *buf, size_t size);
/* The last component of the target of the symlink dirfd/path (a sysfs
 * driver, physfn or virtfnN link). -ENAMETOOLONG when it does not fit. */
int hs_read_link_base(int dirfd, const char *path, char *buf, size_t size);

/* mkdir -p relative to dirfd (AT_FDCWD for absolute paths). */
int hs_mkdir_p(const char *path, int mode);
/* Calls cb for each entry of the directory dirfd/path but "." and "..",
 * with a descriptor of that directory (for *at() calls on the entry) and
 * the entry's name. cb returns 0 to go on; anything else stops the walk
 * and is returned. -errno when the directory cannot be opened. */
int hs_dir_foreach(int dirfd, const char *path, int (*cb)(int dfd, const char *name, void *ud),
		   void *ud);
/* rm -rf of dirfd/name (does not follow symlinks). */
int hs_rm_rf_at(int dirfd, const char *name);

/* pidfd_open(2) and pidfd_send_signal(2) (glibc 2.36 has no wrappers). */
int hs_pidfd_open(pid_t pid);
int hs_pidfd_send_signal(int pidfd, int sig);

int hs_fd_nonblock(int fd, bool on);
int hs_fd_cloexec(int fd, bool on);

/* write()/read() the whole buffer, retrying on EINTR (blocking fds only). */
int hs_write_all(int fd, const void *buf, size_t len);

/* One value into a sysfs, cgroupfs or procfs file with a single write(),
 * as those take one value per write (and act on it before it returns).
 * No O_CREAT: a missing file is ENOENT (cgroupfs would say EACCES). */
int hs_write_value(int fd, const char *value);
int hs_write_value_at(int dirfd, const char *path, const char *value);

/* "20G", "512M", "4096" (bytes), "1.5T": suffixes K M G T (also KiB,
 * MiB...), powers of 1024. -EINVAL on anything else or overflow. */
int hs_parse_size(const char *s, uint64_t *ret);

char *hs_strdup_printf(const char *fmt, ...) _printf_(1, 2);
bool hs_str_has_prefix(const char *s, const char *prefix);
