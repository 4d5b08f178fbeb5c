/* SPDX-License-Identifier: Apache-2.0 */
#include "hs-util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

int hs_error_setv(HsError *err, int code, const char *kind, const char *fmt, va_list ap)
{
	if (code > 0)
		code = -code;
	if (code == 0)
		code = -EIO;
	if (err) {
		err->code = code;
		snprintf(err->kind, sizeof(err->kind), "%s", kind ? kind : "error");
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
	}
	return code;
}

int hs_error_set(HsError *err, int code, const char *kind, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = hs_error_setv(err, code, kind, fmt, ap);
	va_end(ap);
	return r;
}

uint64_t hs_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double hs_now(void)
{
	return (double)hs_now_ns() / 1e9;
}

double hs_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int hs_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int hs_write_value(int fd, const char *value)
{
	size_t len = strlen(value);
	ssize_t n;
	while ((n = write(fd, value, len)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

int hs_write_value_at(int dirfd, const char *path, const char *value)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return hs_write_value(fd, value);
}

static int write_file_atomic(int dirfd, const char *name, const void *data, size_t len, int mode,
			     bool durable);

int hs_write_file_atomic(int dirfd, const char *name, const void *data, size_t len, int mode)
{
	return write_file_atomic(dirfd, name, data, len, mode, true);
}

int hs_write_file_replace(int dirfd, const char *name, const void *data, size_t len, int mode)
{
	return write_file_atomic(dirfd, name, data, len, mode, false);
}

static int write_file_atomic(int dirfd, const char *name, const void *data, size_t len, int mode,
			     bool durable)
{
	char tmp[256];
	int r;

	if (snprintf(tmp, sizeof(tmp), ".%s.tmp.%d", name, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;

	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	r = hs_write_all(fd, data, len);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	/* Make the rename itself durable. */
	if (durable && fsync(dirfd == AT_FDCWD ? fd : dirfd) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}

int hs_read_file(int dirfd, const char *name, size_t max, char **ret_data, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	size_t cap = 4096, len = 0;
	_cleanup_free_ char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	if (cap > max)
		cap = max;
	for (;;) {
		if (len == cap) {
			/* Full at the limit: one more byte means too big. */
			char probe;
			ssize_t p;
			if (cap >= max) {
				while ((p = read(fd, &probe, 1)) < 0 && errno == EINTR)
					;
				if (p < 0)
					return -errno;
				if (p > 0)
					return -EFBIG;
				break;
			}
			cap = cap * 2 > max ? max : cap * 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				return -ENOMEM;
			buf = nb;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	*ret_data = TAKE_PTR(buf);
	return 0;
}

int hs_read_small(int dirfd, const char *path, char *buf, size_t size)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n;
	while ((n = read(fd, buf, size - 1)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

int hs_read_link_base(int dirfd, const char *path, char *buf, size_t size)
{
	char target[4096];
	ssize_t n = readlinkat(dirfd, path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	const char *base = strrchr(target, '/');
	if (snprintf(buf, size, "%s", base ? base + 1 : target) >= (int)size)
		return -ENAMETOOLONG;
	return 0;
}

int hs_mkdir_p(const char *path, int mode)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int hs_dir_foreach(int dirfd, const char *path, int (*cb)(int dfd, const char *name, void *ud),
		   void *ud)
{
	int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			r = cb(fd, de->d_name, ud);
	closedir(d);
	return r;
}

int hs_rm_rf_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOTDIR || errno == ELOOP) {
			if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
				return -errno;
			return 0;
		}
		return errno == ENOENT ? 0 : -errno;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int q = hs_rm_rf_at(fd, de->d_name);
		if (q < 0 && r == 0)
			r = q;
	}
	closedir(d);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	return r;
}

int hs_fd_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int hs_fd_cloexec(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFD);
	if (fl < 0)
		return -errno;
	fl = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
	return fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0;
}

char *hs_strdup_printf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

bool hs_str_has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

int hs_parse_size(const char *s, uint64_t *ret)
{
	/* Digits, at most one '.', then the suffix: strtod alone would take
	 * "1e3", "0x1p4", "nan". */
	if (!s || !(*s >= '0' && *s <= '9'))
		return -EINVAL;
	size_t digits = strspn(s, "0123456789.");
	if (memchr(s, '.', digits) != memrchr(s, '.', digits))
		return -EINVAL;
	errno = 0;
	char *end;
	double v = strtod(s, &end);
	if (errno || end != s + digits || v < 0)
		return -EINVAL;
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {
		{"", 0},     {"B", 0},	   {"K", 10},	{"KiB", 10}, {"M", 20},
		{"MiB", 20}, {"G", 30},	   {"GiB", 30}, {"T", 40},   {"TiB", 40},
	};
	for (size_t i = 0; i < ARRAY_SIZE(units); i++)
		if (!strcmp(end, units[i].suffix)) {
			double bytes = v * (double)(1ull << units[i].shift);
			if (bytes >= 18446744073709551615.0)
				return -EINVAL;
			/* Plain byte counts must be whole numbers. */
			if (units[i].shift == 0 && bytes != (double)(uint64_t)bytes)
				return -EINVAL;
			*ret = (uint64_t)bytes;
			return 0;
		}
	return -EINVAL;
}

unsigned hs_tcp_port_free(const char *address, unsigned lo, unsigned hi,
			  bool (*taken)(unsigned port, void *ud), void *ud)
{
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} a = {0};
	socklen_t len;
	if (inet_pton(AF_INET, address, &a.in.sin_addr) == 1) {
		a.in.sin_family = AF_INET;
		len = sizeof(a.in);
	} else if (inet_pton(AF_INET6, address, &a.in6.sin6_addr) == 1) {
		a.in6.sin6_family = AF_INET6;
		len = sizeof(a.in6);
	} else {
		return 0;
	}
	for (unsigned p = lo; p && p <= hi && p <= 65535; p++) {
		if (taken && taken(p, ud))
			continue;
		_cleanup_close_ int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return 0;
		if (a.sa.sa_family == AF_INET)
			a.in.sin_port = htons((uint16_t)p);
		else
			a.in6.sin6_port = htons((uint16_t)p);
		if (bind(fd, &a.sa, len) == 0)
			return p;
	}
	return 0;
}

int hs_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

int hs_pidfd_send_signal(int pidfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}
