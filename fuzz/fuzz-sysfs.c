/* SPDX-License-Identifier: Apache-2.0 */
/* The sysfs/procfs readers (ksm_read_stats, ksm_read_process,
 * numa_read_topology, numa_parse_cpulist) on fuzzed file contents. Two fake
 * trees are made once, with realistic content:
 *   A: the files of sys/kernel/mm/ksm, proc/1234/{ksm_merging_pages,ksm_stat},
 *      sys/devices/system/node/node{0,1}/{cpulist,meminfo,distance};
 *   B: an empty sys/devices/system/node (one node from cpu/online and
 *      proc/meminfo).
 * The first input byte picks a target (low 7 bits, modulo the number of
 * targets); with its high bit set the file is deleted instead of written.
 * The rest of the input becomes that file's content; the file gets its
 * original content back after the run, so runs do not depend on each other.
 * Two targets are not files: a CPU list parsed directly (next two bytes: the
 * bitmap size, little-endian, modulo 4097; the rest: the string) and node
 * directory names created in B (one a line). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "hs-util.h"
#include "ksm.h"
#include "numa.h"

#define KSM "sys/kernel/mm/ksm/"
#define NODE "sys/devices/system/node/"

typedef enum Tree { TREE_A, TREE_B } Tree;

typedef struct FakeFile {
	Tree tree;
	const char *path;
	const char *content;
} FakeFile;

static const FakeFile files[] = {
    {TREE_A, KSM "run", "1\n"},
    {TREE_A, KSM "pages_to_scan", "100\n"},
    {TREE_A, KSM "sleep_millisecs", "20\n"},
    {TREE_A, KSM "pages_shared", "1234\n"},
    {TREE_A, KSM "pages_sharing", "5678\n"},
    {TREE_A, KSM "pages_unshared", "42\n"},
    {TREE_A, KSM "pages_volatile", "7\n"},
    {TREE_A, KSM "full_scans", "3\n"},
    {TREE_A, KSM "merge_across_nodes", "1\n"},
    {TREE_A, KSM "general_profit", "-123456\n"},
    {TREE_A, KSM "ksm_zero_pages", "0\n"},
    {TREE_A, KSM "use_zero_pages", "0\n"},
    {TREE_A, "proc/1234/ksm_merging_pages", "17\n"},
    {TREE_A, "proc/1234/ksm_stat",
     "ksm_rmap_items 40\nksm_zero_pages 0\nksm_merging_pages 17\nksm_process_profit 61440\n"
     "ksm_merge_any: no\nksm_mergeable: yes\n"},
    {TREE_A, NODE "node0/cpulist", "0-1,4\n"},
    {TREE_A, NODE "node0/meminfo",
     "Node 0 MemTotal:        8123456 kB\nNode 0 MemFree:         4123456 kB\n"
     "Node 0 MemUsed:         4000000 kB\nNode 0 HugePages_Total:     0\n"},
    {TREE_A, NODE "node0/distance", "10 21\n"},
    {TREE_A, NODE "node1/cpulist", "2-3,5-7\n"},
    {TREE_A, NODE "node1/meminfo",
     "Node 1 MemTotal:        8388608 kB\nNode 1 MemFree:         1048576 kB\n"},
    {TREE_A, NODE "node1/distance", "21 10\n"},
    {TREE_B, "sys/devices/system/cpu/online", "0-3\n"},
    {TREE_B, "proc/meminfo",
     "MemTotal:       16315424 kB\nMemFree:         9216000 kB\nMemAvailable:   12000000 kB\n"},
};

enum {
	TARGET_CPULIST = ARRAY_SIZE(files),
	TARGET_NODE_DIRS,
	N_TARGETS,
};

#define MAX_NODE_DIRS 80

static int roots[2] = {-1, -1};
static int nodes_b = -1; /* B's sys/devices/system/node */

static void put(int rootfd, const char *path, const void *data, size_t len)
{
	char dir[256];
	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = dir; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdirat(rootfd, dir, 0755) < 0 && errno != EEXIST)
			fuzz_die("mkdirat");
		*p = '/';
	}
	/* Not O_TRUNC: on ext4, truncating a file with data to 0 and writing
	 * it again starts a writeback at close, thousands of times a second. */
	int fd = openat(rootfd, path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || (len && pwrite(fd, data, len, 0) != (ssize_t)len) ||
	    ftruncate(fd, (off_t)len) < 0)
		fuzz_die("writing a fake file");
	close(fd);
}

static void check_topology(const NumaTopology *t)
{
	FUZZ_CHECK(t->n_nodes >= 1 && t->n_nodes <= NUMA_MAX_NODES);
	for (unsigned i = 0; i < t->n_nodes; i++) {
		const NumaNode *n = &t->nodes[i];
		FUZZ_CHECK(n->id < NUMA_MAX_NODES);
		FUZZ_CHECK(i == 0 || t->nodes[i - 1].id <= n->id);
		FUZZ_CHECK(n->n_cpus <= NUMA_MAX_CPUS);
		/* A list that fails half-way leaves n_cpus 0. */
		FUZZ_CHECK(n->n_cpus == 0 || n->n_cpus == fuzz_popcount(n->cpus, sizeof(n->cpus)));
	}
}

static void read_all(Tree tree)
{
	int root = roots[tree];
	NumaTopology *t = malloc(sizeof(*t));
	if (!t)
		fuzz_die("malloc");
	int r = numa_read_topology(root, t);
	FUZZ_CHECK(r == 0);
	check_topology(t);
	free(t);
	if (tree != TREE_A)
		return;
	KsmStats s;
	r = ksm_read_stats(root, &s);
	if (r == 0 && s.present)
		(void)ksm_saved_bytes(&s, 4096);
	KsmProcess p;
	r = ksm_read_process(root, 1234, &p);
	FUZZ_CHECK(r <= 0);
}

static void fuzz_cpulist(const uint8_t *data, size_t size)
{
	if (size < 2)
		return;
	unsigned max = (data[0] | (unsigned)data[1] << 8) % 4097;
	size_t bytes = (max + 7) / 8;
	unsigned char *bitmap = malloc(bytes ? bytes : 1);
	char *s = malloc(size - 1);
	if (!bitmap || !s) {
		fuzz_die("malloc");
		return; /* not reached; tells static analysers so */
	}
	memcpy(s, data + 2, size - 2);
	s[size - 2] = '\0';
	int r = numa_parse_cpulist(s, bitmap, max);
	if (r >= 0) {
		FUZZ_CHECK((unsigned)r <= max);
		FUZZ_CHECK((unsigned)r == fuzz_popcount(bitmap, bytes));
		if (max % 8)
			FUZZ_CHECK((bitmap[bytes - 1] >> (max % 8)) == 0);
	} else {
		FUZZ_CHECK(r == -EINVAL || r == -ERANGE);
	}
	free(s);
	free(bitmap);
}

static void fuzz_node_dirs(const uint8_t *data, size_t size)
{
	char *made[MAX_NODE_DIRS];
	size_t n_made = 0;
	char *text = malloc(size + 1);
	if (!text) {
		fuzz_die("malloc");
		return; /* not reached; tells static analysers so */
	}
	memcpy(text, data, size);
	text[size] = '\0';
	for (char *name = text, *end; name < text + size && n_made < MAX_NODE_DIRS;
	     name = end + 1) {
		end = name + strcspn(name, "\n");
		*end = '\0';
		if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
		    strlen(name) > 64)
			continue;
		if (mkdirat(nodes_b, name, 0755) < 0)
			continue; /* a repeated name */
		made[n_made++] = name;
		int d = openat(nodes_b, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d >= 0) {
			put(d, "cpulist", "0\n", 2);
			close(d);
		}
	}
	read_all(TREE_B);
	for (size_t i = 0; i < n_made; i++)
		hs_rm_rf_at(nodes_b, made[i]);
	free(text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dirs[2] = {fuzz_tmpdir("fuzz-sysfs-a"), fuzz_tmpdir("fuzz-sysfs-b")};
	for (int i = 0; i < 2; i++) {
		roots[i] = open(dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (roots[i] < 0)
			fuzz_die("open fake root");
	}
	for (size_t i = 0; i < ARRAY_SIZE(files); i++)
		put(roots[files[i].tree], files[i].path, files[i].content,
		    strlen(files[i].content));
	put(roots[TREE_B], NODE ".keep", "", 0);
	nodes_b = openat(roots[TREE_B], NODE, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (nodes_b < 0)
		fuzz_die("open node dir");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned target = (data[0] & 0x7f) % N_TARGETS;
	bool remove = data[0] & 0x80;
	data++;
	size--;

	if (target == TARGET_CPULIST) {
		fuzz_cpulist(data, size);
		return 0;
	}
	if (target == TARGET_NODE_DIRS) {
		fuzz_node_dirs(data, size);
		return 0;
	}
	const FakeFile *f = &files[target];
	int root = roots[f->tree];
	if (remove)
		unlinkat(root, f->path, 0);
	else
		put(root, f->path, data, size);
	read_all(f->tree);
	put(root, f->path, f->content, strlen(f->content));
	return 0;
}
