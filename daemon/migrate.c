/* SPDX-License-Identifier: Apache-2.0 */
/* Live migration between two hsd: both sides of QEMU's own migration,
 * driven over each hsd's REST API (hsctl migrate, or an orchestrator).
 *
 * Destination (POST /v1/migrations/incoming): the VM is defined from the
 * source's spec, its managed disks made afresh (storage "copy"), QEMU
 * started paused with -incoming defer, limits and pins applied; for
 * "copy" QEMU exports those disks over NBD; then migrate-incoming listens
 * on a port of --migration-ports, and the answer says where to send. A
 * marker file (incoming.json in the VM's state dir) says the VM is not
 * ours yet: if its QEMU dies, the migration fails or is cancelled, or hsd
 * finds the marker without a live QEMU, the VM and its disks are removed.
 * When the stream completes, hsd resumes the guest at once (unless it was
 * paused at the source) and removes the marker: from then on the VM lives
 * here.
 *
 * Source (POST /v1/vms/NAME/migrate): capabilities and parameters set,
 * for "copy" every managed disk mirrored into the destination's NBD export
 * (blockdev-mirror) and the stream started only once every mirror is
 * ready; QEMU pauses before the switchover (pause-before-switchover), the
 * mirrors are cancelled once in sync (a point-in-time copy: the guest is
 * paused), and the switchover goes on. A failed or cancelled migration
 * leaves the source running (QEMU resumes it). A completed one leaves the
 * source QEMU paused in "postmigrate" until the driver, having seen the
 * guest run on the destination, confirms (the source then records where
 * the VM went and lets its QEMU go) or, if the destination failed after
 * all, aborts (the source resumes). So exactly one side runs the guest:
 * the destination only runs it once QEMU says the whole state arrived, and
 * the source never resumes after completion unless told the destination
 * did not take it.
 *
 * The source's migration is recorded in the run dir (migration.json), so
 * an hsd restarted mid-migration finds it again and settles it from QEMU's
 * own answer (query-migrate). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsd.h"
#include "storage.h"
#include "warm.h"

#define MIGRATION_FILE "migration.json"
#define INCOMING_MARKER "incoming.json"
#define POLL_INTERVAL 0.2

typedef enum MigPhase {
	MIG_PREPARING, /* dest: QEMU starting; source: capabilities, mirrors */
	MIG_MIRRORING, /* source: waiting for every mirror to be ready */
	MIG_ACTIVE,    /* the stream runs */
	MIG_SWITCHOVER,
	MIG_COMPLETED, /* source: awaiting confirm or abort; dest: owned */
	MIG_FAILED,
	MIG_CANCELLED,
	MIG_CONFIRMED, /* source: the VM lives at the destination */
	MIG_ABORTED,   /* source: resumed after a completed migration */
} MigPhase;

static const char *const phase_names[] = {
	[MIG_PREPARING] = "preparing", [MIG_MIRRORING] = "mirroring",
	[MIG_ACTIVE] = "active",       [MIG_SWITCHOVER] = "switchover",
	[MIG_COMPLETED] = "completed", [MIG_FAILED] = "failed",
	[MIG_CANCELLED] = "cancelled", [MIG_CONFIRMED] = "confirmed",
	[MIG_ABORTED] = "aborted",
};

struct Migration {
	bool incoming; /* destination side */
	MigPhase phase;
	char peer[256]; /* source: where to ("to"); dest: from */
	char uri[160];
	bool copy;
	bool tls;    /* the stream (and NBD) over TLS, certificates from --migration-tls-dir */
	bool paused; /* dest: keep the guest paused after the switchover */
	/* Tunables (source; multifd on both sides). */
	unsigned downtime_ms, multifd;
	uint64_t bandwidth;
	bool auto_converge, xbzrle;
	/* Post-copy (opt-in): after the first full pass the guest runs at the
	 * destination while the rest of its RAM follows on demand. Once that
	 * switch happened (postcopy_on), the source never resumes: the newest
	 * state is at the destination. */
	bool postcopy, postcopy_sent, postcopy_on;
	unsigned figures_tries; /* polls after completion for QEMU's final figures */
	double timeout;
	/* copy: the destination's NBD server and the mirrors. */
	char nbd_host[64];
	unsigned nbd_port;
	bool mirror_disk[VM_MAX_DISKS];
	unsigned n_mirrors, n_ready, n_cancelled;
	bool full_sync[VM_MAX_DISKS];
	/* dest: the address and the port being tried. */
	char address[64];
	unsigned port; /* NBD */
	/* Progress: QEMU's last query-migrate answer. */
	json_t *info;
	json_t *nodes; /* {"diskN": its top node} from query-block */
	double started, finished;
	char error[256];
	ev_timer poll;
	Pending *reply; /* dest: the incoming request, answered once listening */
	VmDoneCb abort_cb; /* source: the abort's answer, once resumed */
	void *abort_ud;
	Vm *vm;
};

static const char *phase_name(MigPhase p)
{
	return phase_names[p];
}

static bool phase_over(MigPhase p)
{
	return p == MIG_FAILED || p == MIG_CANCELLED || p == MIG_CONFIRMED || p == MIG_ABORTED;
}

/* ---- records ---- */

static json_t *migration_json(const Migration *m)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:b, s:b, s:b}", "role",
			      m->incoming ? "destination" : "source", "phase", phase_name(m->phase),
			      m->incoming ? "from" : "to", m->peer, "storage",
			      m->copy ? "copy" : "shared", "uri", m->uri, "started", m->started,
			      "tls", m->tls, "postcopy", m->postcopy, "postcopy_active",
			      m->postcopy_on);
	if (m->finished > 0)
		json_object_set_new(o, "finished", json_real(m->finished));
	if (m->error[0])
		json_object_set_new(o, "error", json_string(m->error));
	json_t *ram = json_object_get(m->info, "ram");
	json_t *p = json_object();
	const char *st = json_string_value(json_object_get(m->info, "status"));
	if (st)
		json_object_set_new(p, "qemu_status", json_string(st));
	static const char *const ram_keys[][2] = {
		{"transferred", "transferred_bytes"},
		{"remaining", "remaining_bytes"},
		{"total", "total_bytes"},
		{"dirty-sync-count", "dirty_syncs"},
		{"mbps", "mbps"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(ram_keys); i++) {
		json_t *v = json_object_get(ram, ram_keys[i][0]);
		if (v)
			json_object_set(p, ram_keys[i][1], v);
	}
	json_t *rate = json_object_get(ram, "dirty-pages-rate");
	json_t *psize = json_object_get(ram, "page-size");
	if (rate && psize)
		json_object_set_new(p, "dirty_bytes_per_s",
				    json_integer(json_integer_value(rate) *
						 json_integer_value(psize)));
	static const char *const keys[][2] = {
		{"expected-downtime", "expected_downtime_ms"},
		{"downtime", "downtime_ms"},
		{"total-time", "total_time_ms"},
		{"setup-time", "setup_time_ms"},
		{"cpu-throttle-percentage", "cpu_throttle_pct"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		json_t *v = json_object_get(m->info, keys[i][0]);
		if (v)
			json_object_set(p, keys[i][1], v);
	}
	json_object_set_new(o, "progress", p);
	if (!m->incoming)
		json_object_set_new(o, "tunables",
				    json_pack("{s:i, s:I, s:i, s:b, s:b}", "downtime_ms",
					      (int)m->downtime_ms, "bandwidth",
					      (json_int_t)m->bandwidth, "multifd", (int)m->multifd,
					      "auto_converge", m->auto_converge, "xbzrle",
					      m->xbzrle));
	return o;
}

json_t *migrate_vm_json(Vm *vm)
{
	return vm->migration ? migration_json(vm->migration) : NULL;
}

/* The source's record of an unfinished migration, in the run dir. */
static void save_record(Vm *vm)
{
	Migration *m = vm->migration;
	if (m->incoming || vm->run_dirfd < 0)
		return;
	json_auto_t *j = migration_json(m);
	json_t *mirrors = json_array();
	for (size_t i = 0; i < VM_MAX_DISKS; i++)
		if (m->mirror_disk[i])
			json_array_append_new(mirrors, json_integer((json_int_t)i));
	json_object_set_new(j, "mirrors", mirrors);
	_cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
	if (!text || hs_write_file_replace(vm->run_dirfd, MIGRATION_FILE, text, strlen(text),
					   0600) < 0)
		log_warning("vm %s: migration not recorded: a restarted hsd will not know it",
			    vm->spec.name);
}

/* Forgets the migration; a request still waiting gets status/code. */
static void migration_drop(Vm *vm, unsigned status, const char *code, const char *why)
{
	Migration *m = vm->migration;
	if (!m)
		return;
	ev_timer_stop(vm->hsd->loop, &m->poll);
	json_decref(m->info);
	json_decref(m->nodes);
	if (m->reply) {
		http_reply_error(m->reply->req, status, code, "%s", m->error[0] ? m->error : why);
		free(m->reply);
	}
	VmDoneCb cb = m->abort_cb;
	void *ud = m->abort_ud;
	free(m);
	vm->migration = NULL;
	if (cb) {
		HsError e;
		hs_error_set(&e, -ECANCELED, code, "%s", why);
		cb(vm, &e, ud);
	}
}

/* Over: its record in the run dir goes too. */
static void migration_free(Vm *vm)
{
	migration_drop(vm, 500, "migration-failed", "the migration ended");
	if (vm->run_dirfd >= 0)
		unlinkat(vm->run_dirfd, MIGRATION_FILE, 0);
}

/* hsd goes away (or the record is replaced): the run dir's record stays
 * for the next hsd. */
void migrate_vm_free(Vm *vm)
{
	migration_drop(vm, 503, "shutting-down", "hsd is shutting down");
}

static void publish(Vm *vm)
{
	Migration *m = vm->migration;
	events_publish(vm->hsd, json_pack("{s:s, s:s, s:o, s:f}", "type", "migration", "vm",
					  vm->spec.name, "migration", migration_json(m), "time",
					  hs_wall()));
}

static void set_phase(Vm *vm, MigPhase p)
{
	Migration *m = vm->migration;
	if (m->phase == p)
		return;
	log_info("vm %s: migration %s -> %s", vm->spec.name, phase_name(m->phase),
		 phase_name(p));
	m->phase = p;
	if (p >= MIG_COMPLETED && m->finished <= 0)
		m->finished = hs_wall();
	save_record(vm);
	publish(vm);
}

/* ---- a list of QMP commands, one after the other ---- */

typedef void (*BatchDone)(Vm *vm, const HsError *err);

typedef struct Batch {
	Vm *vm;
	json_t *cmds; /* [[command, arguments or null], ...] */
	size_t next;
	BatchDone done;
} Batch;

static void batch_next(Batch *b);

static void on_batch_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Batch *b = ud;
	if (err) {
		BatchDone done = b->done;
		Vm *vm = b->vm;
		json_decref(b->cmds);
		free(b);
		if (done && !(err->code == -ECANCELED && vm->hsd->stopping))
			done(vm, err);
		return;
	}
	batch_next(b);
}

static void batch_next(Batch *b)
{
	if (b->next == json_array_size(b->cmds)) {
		BatchDone done = b->done;
		Vm *vm = b->vm;
		json_decref(b->cmds);
		free(b);
		if (done)
			done(vm, NULL);
		return;
	}
	json_t *c = json_array_get(b->cmds, b->next++);
	json_t *args = json_array_get(c, 1);
	if (!b->vm->qmp ||
	    qmp_client_execute(b->vm->qmp, json_string_value(json_array_get(c, 0)),
			       json_is_null(args) ? NULL : json_incref(args),
			       b->vm->hsd->qmp_timeout, on_batch_reply, b) < 0) {
		HsError e;
		hs_error_set(&e, -ENOTCONN, "vm-exited", "QEMU's QMP connection is gone");
		on_batch_reply(NULL, NULL, &e, b);
	}
}

/* cmds: taken. */
static void batch_run(Vm *vm, json_t *cmds, BatchDone done)
{
	Batch *b = calloc(1, sizeof(*b));
	if (!b) {
		json_decref(cmds);
		HsError e;
		hs_error_set(&e, -ENOMEM, "internal", "out of memory");
		if (done)
			done(vm, &e);
		return;
	}
	*b = (Batch){.vm = vm, .cmds = cmds, .done = done};
	batch_next(b);
}

static void add_cmd(json_t *cmds, const char *cmd, json_t *args /* taken */)
{
	json_array_append_new(cmds, json_pack("[s, o]", cmd, args ? args : json_null()));
}

/* The capabilities this migration turns on, or (off) back off. */
static json_t *caps_json(const Migration *m, bool on)
{
	json_t *caps = json_array();
	struct {
		const char *name;
		bool want;
	} list[] = {
		{"events", true},
		{"pause-before-switchover", !m->incoming && m->copy},
		{"multifd", m->multifd > 0},
		{"auto-converge", !m->incoming && m->auto_converge},
		{"xbzrle", !m->incoming && m->xbzrle},
		{"postcopy-ram", m->postcopy},
	};
	for (size_t i = 0; i < ARRAY_SIZE(list); i++)
		if (list[i].want && (on || strcmp(list[i].name, "events")))
			json_array_append_new(caps, json_pack("{s:s, s:b}", "capability",
							      list[i].name, "state", on));
	if (on)
		/* Every page crosses, a memory_file VM's too: a warm clone's
		 * QEMU has it on since it loaded its template's state. */
		json_array_append_new(caps, json_pack("{s:s, s:b}", "capability",
						      "x-ignore-shared", "state", 0));
	return json_pack("{s:o}", "capabilities", caps);
}

/* Post-copy needs userfaultfd in the destination's QEMU: for a QEMU that
 * is not root, the kernel must allow it to unprivileged users. */
static int postcopy_check(Hsd *h, HsError *err)
{
	char buf[16];
	if ((h->qemu_user.change ? h->qemu_user.uid : geteuid()) == 0)
		return 0; /* QEMU runs as root */
	if (hs_read_small(h->host.rootfd, "proc/sys/vm/unprivileged_userfaultfd", buf,
			  sizeof(buf)) == 0 &&
	    atoi(buf) == 1)
		return 0;
	return hs_error_set(err, -EINVAL, "invalid-request",
			    "postcopy: QEMU (user %s) needs userfaultfd, which this host keeps "
			    "from unprivileged users: sysctl vm.unprivileged_userfaultfd=1",
			    h->host.qemu_user);
}

/* ---- TLS ---- */

#define TLS_ID "hs-mig-tls"

/* The certificates QEMU's tls-creds-x509 reads, for a server (the
 * destination) or a client (the source), are in --migration-tls-dir. */
static int tls_check(Hsd *h, bool server, HsError *err)
{
	if (!h->migration_tls_dir)
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "tls: this hsd has no --migration-tls-dir (the certificates)");
	const char *files[] = {"ca-cert.pem", server ? "server-cert.pem" : "client-cert.pem",
			       server ? "server-key.pem" : "client-key.pem"};
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", h->migration_tls_dir, files[i]);
		if (access(path, R_OK) < 0)
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "tls: %s: %s (QEMU's tls-creds-x509 %s needs it)", path,
					    strerror(errno), server ? "server" : "client");
	}
	return 0;
}

/* TLS credentials in QEMU, and the migration's use of them. An object of
 * an earlier migration goes first (its removal may fail: none). */
static void add_tls(Vm *vm, json_t *cmds, json_t *params, bool server, const char *host)
{
	if (vm->qmp)
		qmp_client_execute(vm->qmp, "object-del", json_pack("{s:s}", "id", TLS_ID),
				   vm->hsd->qmp_timeout, NULL, NULL);
	add_cmd(cmds, "object-add",
		json_pack("{s:s, s:s, s:s, s:s, s:b}", "qom-type", "tls-creds-x509", "id", TLS_ID,
			  "dir", vm->hsd->migration_tls_dir, "endpoint",
			  server ? "server" : "client", "verify-peer", 1));
	json_object_set_new(params, "tls-creds", json_string(TLS_ID));
	if (host)
		json_object_set_new(params, "tls-hostname", json_string(host));
}

/* Each, ignoring failures (what is left of a migration). */
static void run_ignoring(Vm *vm, json_t *cmds /* taken */)
{
	for (size_t i = 0; i < json_array_size(cmds); i++) {
		json_t *c = json_array_get(cmds, i);
		json_t *args = json_array_get(c, 1);
		if (vm->qmp)
			qmp_client_execute(vm->qmp, json_string_value(json_array_get(c, 0)),
					   json_is_null(args) ? NULL : json_incref(args),
					   vm->hsd->qmp_timeout, NULL, NULL);
	}
	json_decref(cmds);
}

/* The capabilities off again and no TLS (a later memory snapshot
 * migrates to a file). */
static void add_reset(const Migration *m, json_t *cmds)
{
	add_cmd(cmds, "migrate-set-capabilities", caps_json(m, false));
	if (m->tls) {
		add_cmd(cmds, "migrate-set-parameters",
			json_pack("{s:s, s:s}", "tls-creds", "", "tls-hostname", ""));
		add_cmd(cmds, "object-del", json_pack("{s:s}", "id", TLS_ID));
	}
}

/* {"diskN": node} of query-block's answer: the node at the top of each
 * disk (the device disk N is "/machine/peripheral/diskN/..."). */
static json_t *disk_nodes(json_t *reply)
{
	json_t *nodes = json_object();
	size_t i;
	json_t *b;
	json_array_foreach (json_object_get(reply, "return"), i, b) {
		const char *qdev = json_string_value(json_object_get(b, "qdev"));
		const char *node = json_string_value(
			json_object_get(json_object_get(b, "inserted"), "node-name"));
		unsigned d;
		if (qdev && node && sscanf(qdev, "/machine/peripheral/disk%u/", &d) == 1) {
			char key[32];
			snprintf(key, sizeof(key), "disk%u", d);
			json_object_set_new(nodes, key, json_string(node));
		}
	}
	return nodes;
}

/* ---- polling QEMU's progress ---- */

static void on_poll(struct ev_loop *loop, ev_timer *w, int revents);
static void source_settle(Vm *vm, const char *status);
static void dest_settle(Vm *vm, const char *status);

static void on_query_migrate(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	Migration *m = vm->migration;
	if (err || !m)
		return;
	json_t *ret = json_object_get(reply, "return");
	json_decref(m->info);
	m->info = json_incref(ret);
	const char *st = json_string_value(json_object_get(ret, "status"));
	if (m->incoming)
		dest_settle(vm, st);
	else
		source_settle(vm, st);
}

static void poll_now(Vm *vm)
{
	if (vm->qmp && vm->qmp_ready)
		qmp_client_execute(vm->qmp, "query-migrate", NULL, vm->hsd->qmp_timeout,
				   on_query_migrate, vm);
}

static void on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	Vm *vm = w->data;
	Migration *m = vm->migration;
	if (!m)
		return;
	if (m->phase == MIG_COMPLETED && !m->incoming && ++m->figures_tries > 20) {
		ev_timer_stop(loop, w); /* QEMU never gave them: the record stays as is */
		return;
	}
	if (m->timeout > 0 && m->phase < MIG_COMPLETED && hs_wall() - m->started > m->timeout &&
	    !m->incoming) {
		snprintf(m->error, sizeof(m->error), "timed out after %.0f s", m->timeout);
		log_warning("vm %s: migration %s: cancelling", vm->spec.name, m->error);
		HsError e;
		migrate_cancel(vm, &e);
	}
	poll_now(vm);
}

static void start_polling(Vm *vm)
{
	Migration *m = vm->migration;
	ev_timer_stop(vm->hsd->loop, &m->poll);
	ev_timer_init(&m->poll, on_poll, POLL_INTERVAL, POLL_INTERVAL);
	m->poll.data = vm;
	ev_timer_start(vm->hsd->loop, &m->poll);
}

/* ---- source ---- */

static void source_failed(Vm *vm, const HsError *err);

/* After a failure or a cancel: no mirror, no NBD target, the
 * capabilities off again (a later memory snapshot migrates to a file). */
static void source_cleanup(Vm *vm)
{
	Migration *m = vm->migration;
	json_t *cmds = json_array();
	for (size_t i = 0; i < VM_MAX_DISKS; i++) {
		if (!m->mirror_disk[i])
			continue;
		char job[32], node[32];
		snprintf(job, sizeof(job), "hs-mig%zu", i);
		snprintf(node, sizeof(node), "hs-mig-tgt%zu", i);
		add_cmd(cmds, "block-job-cancel", json_pack("{s:s, s:b}", "device", job, "force", 1));
		add_cmd(cmds, "blockdev-del", json_pack("{s:s}", "node-name", node));
	}
	add_reset(m, cmds);
	run_ignoring(vm, cmds);
}

static void source_end(Vm *vm, MigPhase phase, const char *why)
{
	Migration *m = vm->migration;
	if (why && !m->error[0])
		snprintf(m->error, sizeof(m->error), "%s", why);
	ev_timer_stop(vm->hsd->loop, &m->poll);
	source_cleanup(vm);
	set_phase(vm, phase);
	log_info("vm %s: migration to %s %s%s%s; the VM stays here", vm->spec.name, m->peer,
		 phase_name(phase), m->error[0] ? ": " : "", m->error);
	if (vm->run_dirfd >= 0)
		unlinkat(vm->run_dirfd, MIGRATION_FILE, 0);
}

static void source_failed(Vm *vm, const HsError *err)
{
	if (!vm->migration || phase_over(vm->migration->phase))
		return;
	source_end(vm, MIG_FAILED, err->message);
}

static void on_mirrors_cancelled(Vm *vm);

static void on_continued(Vm *vm, const HsError *err)
{
	if (err)
		source_failed(vm, err);
}

/* pre-switchover: the guest is paused; the mirrors are cancelled (each
 * then holds a point-in-time copy), then the switchover goes on. */
static void switchover(Vm *vm)
{
	Migration *m = vm->migration;
	if (m->phase == MIG_SWITCHOVER)
		return;
	set_phase(vm, MIG_SWITCHOVER);
	m->n_cancelled = 0;
	if (!m->n_mirrors) {
		on_mirrors_cancelled(vm);
		return;
	}
	for (size_t i = 0; i < VM_MAX_DISKS; i++) {
		if (!m->mirror_disk[i])
			continue;
		char job[32];
		snprintf(job, sizeof(job), "hs-mig%zu", i);
		qmp_client_execute(vm->qmp, "block-job-cancel", json_pack("{s:s}", "device", job),
				   vm->hsd->qmp_timeout, NULL, NULL);
	}
}

static void on_mirrors_cancelled(Vm *vm)
{
	json_t *cmds = json_array();
	add_cmd(cmds, "migrate-continue", json_pack("{s:s}", "state", "pre-switchover"));
	batch_run(vm, cmds, on_continued);
}

static void source_settle(Vm *vm, const char *st)
{
	Migration *m = vm->migration;
	if (!st || phase_over(m->phase))
		return;
	if (!strcmp(st, "completed")) {
		/* QEMU 7.2 says completed a moment before it has computed the
		 * downtime and total time: ask again until they are there. */
		bool figures = json_integer_value(json_object_get(m->info, "total-time")) > 0;
		if (m->phase == MIG_COMPLETED) {
			if (figures && m->figures_tries) {
				m->figures_tries = 0;
				ev_timer_stop(vm->hsd->loop, &m->poll);
				save_record(vm);
				publish(vm);
			}
			return;
		}
		if (!figures && m->figures_tries < 20) {
			m->figures_tries++;
			ev_timer_stop(vm->hsd->loop, &m->poll);
			ev_timer_init(&m->poll, on_poll, 0.01, 0.05);
			m->poll.data = vm;
			ev_timer_start(vm->hsd->loop, &m->poll);
		} else {
			ev_timer_stop(vm->hsd->loop, &m->poll);
		}
		set_phase(vm, MIG_COMPLETED);
		{
			_cleanup_free_ char *d = json_dumps(m->info, JSON_COMPACT);
			log_debug("vm %s: query-migrate: %s", vm->spec.name, d ? d : "?");
		}
		log_info("vm %s: migration to %s completed (downtime %lld ms, %lld ms in all); "
			 "paused here until confirmed",
			 vm->spec.name, m->peer,
			 json_integer_value(json_object_get(m->info, "downtime")),
			 json_integer_value(json_object_get(m->info, "total-time")));
	} else if (m->postcopy_on && (!strcmp(st, "failed") || !strcmp(st, "postcopy-paused"))) {
		/* The guest ran at the destination: never resumed here. */
		ev_timer_stop(vm->hsd->loop, &m->poll);
		snprintf(m->error, sizeof(m->error),
			 "post-copy broke after the switch (QEMU: %s): the guest's newest state is "
			 "at the destination; this side stays paused and cannot resume",
			 st);
		log_error("vm %s: %s", vm->spec.name, m->error);
		set_phase(vm, MIG_FAILED);
	} else if (!strcmp(st, "failed")) {
		const char *why = json_string_value(json_object_get(m->info, "error-desc"));
		source_end(vm, MIG_FAILED, why ? why : "QEMU says the migration failed");
	} else if (!strcmp(st, "postcopy-active")) {
		if (!m->postcopy_on) {
			m->postcopy_on = true;
			log_info("vm %s: post-copy: the guest runs at %s now", vm->spec.name,
				 m->peer);
			save_record(vm);
			publish(vm);
		}
	} else if (!strcmp(st, "cancelled")) {
		source_end(vm, MIG_CANCELLED, NULL);
	} else if (!strcmp(st, "pre-switchover")) {
		switchover(vm);
	} else if (!strcmp(st, "active") || !strcmp(st, "setup") || !strcmp(st, "device")) {
		if (m->phase < MIG_ACTIVE)
			set_phase(vm, MIG_ACTIVE);
		/* Post-copy once a whole pass went over: what is left follows
		 * on demand. */
		json_int_t syncs = json_integer_value(
			json_object_get(json_object_get(m->info, "ram"), "dirty-sync-count"));
		log_debug("vm %s: migration %s, %lld passes", vm->spec.name, st, (long long)syncs);
		if (m->postcopy && !m->postcopy_sent && !strcmp(st, "active") && syncs >= 2) {
			m->postcopy_sent = true;
			log_info("vm %s: switching to post-copy", vm->spec.name);
			qmp_client_execute(vm->qmp, "migrate-start-postcopy", NULL,
					   vm->hsd->qmp_timeout, NULL, NULL);
		}
	}
}

static void on_migrate_sent(Vm *vm, const HsError *err)
{
	if (err) {
		source_failed(vm, err);
		return;
	}
	set_phase(vm, MIG_ACTIVE);
	start_polling(vm);
	poll_now(vm);
}

static void send_stream(Vm *vm)
{
	Migration *m = vm->migration;
	json_t *cmds = json_array();
	add_cmd(cmds, "migrate", json_pack("{s:s}", "uri", m->uri));
	batch_run(vm, cmds, on_migrate_sent);
}

static void on_mirrors_started(Vm *vm, const HsError *err)
{
	Migration *m = vm->migration;
	if (err) {
		source_failed(vm, err);
		return;
	}
	if (m->n_ready == m->n_mirrors)
		send_stream(vm);
}

static void on_prepared(Vm *vm, const HsError *err)
{
	Migration *m = vm->migration;
	if (!m || phase_over(m->phase))
		return;
	if (err) {
		source_failed(vm, err);
		return;
	}
	if (!m->n_mirrors) {
		send_stream(vm);
		return;
	}
	set_phase(vm, MIG_MIRRORING);
	json_t *cmds = json_array();
	for (size_t i = 0; i < VM_MAX_DISKS; i++) {
		if (!m->mirror_disk[i])
			continue;
		char job[32], node[32], port[16], export_[32], device[32];
		snprintf(job, sizeof(job), "hs-mig%zu", i);
		snprintf(node, sizeof(node), "hs-mig-tgt%zu", i);
		snprintf(port, sizeof(port), "%u", m->nbd_port);
		snprintf(export_, sizeof(export_), "disk%zu", i);
		snprintf(device, sizeof(device), "disk%zu", i);
		json_t *target = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:s}", "driver", "nbd",
					   "node-name", node, "server", "type", "inet", "host",
					   m->nbd_host, "port", port, "export", export_);
		if (m->tls) {
			json_object_set_new(target, "tls-creds", json_string(TLS_ID));
			json_object_set_new(target, "tls-hostname", json_string(m->nbd_host));
		}
		add_cmd(cmds, "blockdev-add", target);
		json_t *top = json_object_get(m->nodes, device);
		add_cmd(cmds, "blockdev-mirror",
			json_pack("{s:s, s:s, s:s, s:s}", "job-id", job, "device",
				  json_string_value(top), "target", node, "sync",
				  m->full_sync[i] ? "full" : "top"));
	}
	batch_run(vm, cmds, on_mirrors_started);
}

/* The top node of each mirrored disk, from query-block. */
static void on_tops(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	Migration *m = vm->migration;
	if (!m)
		return;
	if (err) {
		source_failed(vm, err);
		return;
	}
	json_decref(m->nodes);
	m->nodes = disk_nodes(reply);
	for (size_t k = 0; k < VM_MAX_DISKS; k++) {
		char key[32];
		snprintf(key, sizeof(key), "disk%zu", k);
		if (m->mirror_disk[k] && !json_object_get(m->nodes, key)) {
			HsError e;
			hs_error_set(&e, -ENOENT, "internal", "QEMU shows no node for disk %zu", k);
			source_failed(vm, &e);
			return;
		}
	}
	json_t *cmds = json_array();
	add_cmd(cmds, "migrate-set-capabilities", caps_json(m, true));
	json_t *params = json_pack("{s:I}", "downtime-limit", (json_int_t)m->downtime_ms);
	if (m->bandwidth)
		json_object_set_new(params, "max-bandwidth", json_integer((json_int_t)m->bandwidth));
	if (m->multifd)
		json_object_set_new(params, "multifd-channels", json_integer((json_int_t)m->multifd));
	if (m->tls) {
		/* The certificate names the destination's address. */
		char host[64];
		const char *h = m->uri + 4, *colon = strrchr(h, ':');
		snprintf(host, sizeof(host), "%.*s", (int)(colon - h), h);
		if (host[0] == '[') {
			memmove(host, host + 1, strlen(host));
			host[strcspn(host, "]")] = '\0';
		}
		add_tls(vm, cmds, params, false, host);
	}
	add_cmd(cmds, "migrate-set-parameters", params);
	batch_run(vm, cmds, on_prepared);
}

/* Mirror job events (source) and MIGRATION events (both sides). */
void migrate_vm_event(Vm *vm, const char *name, json_t *data)
{
	Migration *m = vm->migration;
	if (!m)
		return;
	if (!strcmp(name, "MIGRATION")) {
		const char *st = json_string_value(json_object_get(data, "status"));
		if (st && m->incoming && !strcmp(st, "completed")) {
			/* At once: the guest is paused until hsd says cont. */
			dest_settle(vm, st);
			poll_now(vm); /* the figures */
			return;
		}
		if (st && !strcmp(st, "postcopy-active")) {
			/* At once: the destination's guest waits for its cont. */
			if (m->incoming)
				dest_settle(vm, st);
			else
				source_settle(vm, st);
		}
		if (st && (!strcmp(st, "completed") || !strcmp(st, "failed") ||
			   !strcmp(st, "cancelled") || !strcmp(st, "pre-switchover") ||
			   !strcmp(st, "postcopy-paused")))
			poll_now(vm); /* the figures with the answer */
		return;
	}
	const char *dev = json_string_value(json_object_get(data, "device"));
	unsigned d;
	if (m->incoming || !dev || sscanf(dev, "hs-mig%u", &d) != 1 || d >= VM_MAX_DISKS ||
	    !m->mirror_disk[d])
		return;
	if (!strcmp(name, "BLOCK_JOB_READY")) {
		if (++m->n_ready == m->n_mirrors && m->phase == MIG_MIRRORING)
			send_stream(vm);
	} else if (!strcmp(name, "BLOCK_JOB_COMPLETED") || !strcmp(name, "BLOCK_JOB_CANCELLED")) {
		if (m->phase == MIG_SWITCHOVER) {
			if (!strcmp(name, "BLOCK_JOB_CANCELLED") ||
			    json_object_get(data, "error")) {
				HsError e;
				const char *why = json_string_value(json_object_get(data, "error"));
				hs_error_set(&e, -EIO, "migration-failed",
					     "disk %u's mirror ended before the switchover%s%s", d,
					     why ? ": " : "", why ? why : "");
				json_t *cmds = json_array();
				add_cmd(cmds, "migrate_cancel", NULL);
				batch_run(vm, cmds, NULL);
				source_failed(vm, &e);
				return;
			}
			if (++m->n_cancelled == m->n_mirrors)
				on_mirrors_cancelled(vm);
		} else if (m->phase < MIG_COMPLETED) {
			HsError e;
			const char *why = json_string_value(json_object_get(data, "error"));
			hs_error_set(&e, -EIO, "migration-failed", "disk %u's mirror failed%s%s", d,
				     why ? ": " : "", why ? why : "");
			if (m->phase == MIG_ACTIVE) {
				json_t *cmds = json_array();
				add_cmd(cmds, "migrate_cancel", NULL);
				batch_run(vm, cmds, NULL);
			}
			source_failed(vm, &e);
		}
	}
}

static int parse_uint(json_t *j, const char *field, uint64_t min, uint64_t max, uint64_t *ret,
		      HsError *err)
{
	json_t *v = json_object_get(j, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
	    (uint64_t)json_integer_value(v) > max)
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "%s: must be an integer from %" PRIu64 " to %" PRIu64, field, min,
				    max);
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static int parse_bool(json_t *j, const char *field, bool *ret, HsError *err)
{
	json_t *v = json_object_get(j, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return hs_error_set(err, -EINVAL, "invalid-request", "%s: must be true or false",
				    field);
	*ret = json_is_true(v);
	return 0;
}

/* "storage": "shared" (the default) or "copy". */
static int parse_storage(json_t *j, bool *copy, HsError *err)
{
	json_t *v = json_object_get(j, "storage");
	const char *s = json_string_value(v);
	if (v && (!s || (strcmp(s, "shared") && strcmp(s, "copy"))))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "storage: must be \"shared\" or \"copy\"");
	*copy = s && !strcmp(s, "copy");
	return 0;
}

/* "tcp:HOST:PORT" with a host of [A-Za-z0-9.:-] (IPv6 in brackets). */
static bool uri_valid(const char *u)
{
	if (!u || strncmp(u, "tcp:", 4) || strlen(u) > 150)
		return false;
	const char *colon = strrchr(u + 4, ':');
	if (!colon || colon == u + 4 || !colon[1] || strspn(colon + 1, "0123456789") !=
							     strlen(colon + 1))
		return false;
	return strspn(u + 4, "0123456789abcdefABCDEF.:-[]_") >= (size_t)(colon - (u + 4)) ||
	       strspn(u + 4, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
		       (size_t)(colon - (u + 4));
}

static bool host_valid(const char *s)
{
	return s && *s && strlen(s) < 64 &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-") ==
		       strlen(s);
}

int migrate_start(Vm *vm, json_t *j, HsError *err)
{
	static const char *const keys[] = {"uri",     "to",       "storage",       "nbd",
					   "downtime_ms", "bandwidth", "multifd",
					   "auto_converge", "xbzrle", "timeout_s", "tls", "postcopy",
					   "full_copy", NULL};
	if (object_keys_check(j, keys, err) < 0)
		return -EINVAL;
	/* Disks to copy whole although they stand on a template: the
	 * destination does not have it (it made them standalone). */
	bool full_copy[VM_MAX_DISKS] = {false};
	json_t *fc = json_object_get(j, "full_copy"), *fv;
	size_t fi;
	if (fc && !json_is_array(fc))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "full_copy: a list of disk indexes");
	json_array_foreach (fc, fi, fv) {
		if (!json_is_integer(fv) || json_integer_value(fv) < 0 ||
		    (size_t)json_integer_value(fv) >= vm->spec.n_disks)
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "full_copy[%zu]: not a disk of VM '%s'", fi,
					    vm->spec.name);
		full_copy[json_integer_value(fv)] = true;
	}
	/* memory_file VMs (warm clones too) migrate with their RAM sent in
	 * full: x-ignore-shared stays off (caps_json). */
	if (warm_vm_capturing(vm))
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s': a warm template is being taken from it", vm->spec.name);
	if (vm->migration && !phase_over(vm->migration->phase))
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is already migrating to %s (%s)", vm->spec.name,
				    vm->migration->peer, phase_name(vm->migration->phase));
	if ((vm->status.state != VM_STATE_RUNNING && vm->status.state != VM_STATE_PAUSED) ||
	    !vm->qmp_ready)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is %s; only a running or paused VM migrates",
				    vm->spec.name, vm_state_to_string(vm->status.state));
	int r = storage_vm_check_idle(vm, err);
	if (r < 0 || (r = hostdev_vm_check_migratable(vm, err)) < 0)
		return r;
	const char *uri = json_string_value(json_object_get(j, "uri"));
	if (!uri_valid(uri))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "uri: must be the destination's answer, tcp:HOST:PORT");
	bool copy;
	if (parse_storage(j, &copy, err) < 0)
		return -EINVAL;
	const char *to = json_string_value(json_object_get(j, "to"));
	if (json_object_get(j, "to") && (!to || !*to || strlen(to) > 200))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "to: a name for the destination, 1 to 200 characters");
	Migration *m = calloc(1, sizeof(*m));
	if (!m)
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	*m = (Migration){.copy = copy, .downtime_ms = 300, .timeout = 3600, .vm = vm};
	uint64_t u;
	bool ok = true;
	ok = ok && (u = m->downtime_ms, parse_uint(j, "downtime_ms", 1, 60000, &u, err) == 0) &&
	     (m->downtime_ms = (unsigned)u, true);
	ok = ok && parse_uint(j, "bandwidth", 0, UINT64_C(1) << 40, &m->bandwidth, err) == 0;
	ok = ok && (u = 0, parse_uint(j, "multifd", 0, 32, &u, err) == 0) &&
	     (m->multifd = (unsigned)u, true);
	ok = ok && (u = 3600, parse_uint(j, "timeout_s", 1, 86400, &u, err) == 0) &&
	     (m->timeout = (double)u, true);
	ok = ok && parse_bool(j, "auto_converge", &m->auto_converge, err) == 0;
	ok = ok && parse_bool(j, "tls", &m->tls, err) == 0;
	ok = ok && parse_bool(j, "postcopy", &m->postcopy, err) == 0;
	ok = ok && (!m->tls || tls_check(vm->hsd, false, err) == 0);
	ok = ok && parse_bool(j, "xbzrle", &m->xbzrle, err) == 0;
	if (!ok) {
		free(m);
		return -EINVAL;
	}
	json_t *nbd = json_object_get(j, "nbd");
	for (size_t i = 0; i < vm->spec.n_disks; i++) {
		const VmDisk *d = &vm->spec.disks[i];
		if (d->managed && !copy) {
			free(m);
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "disk %zu is a disk hsd keeps in its own state "
					    "directory: it moves with storage \"copy\" only",
					    i);
		}
		if (!d->managed && copy && d->readonly) {
			free(m);
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "disk %zu (%s) is read-only: storage \"copy\" moves "
					    "writable disks; give the destination the same file",
					    i, d->path);
		}
		if (copy) {
			/* A file given by path becomes a disk the destination
			 * keeps: all of it is copied. One layer over a template:
			 * its clusters alone (the destination has the template). */
			m->mirror_disk[i] = true;
			m->n_mirrors++;
			m->full_sync[i] = !d->managed || storage_vm_disk_layers(vm, i) != 1 ||
					  !d->template || full_copy[i];
		}
	}
	if (m->postcopy && m->n_mirrors) {
		free(m);
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "postcopy: not with storage \"copy\" (the disk mirrors must be in "
				    "sync when the guest stops here; post-copy moves it before)");
	}
	if (m->n_mirrors) {
		const char *host = json_string_value(json_object_get(nbd, "host"));
		json_int_t port = json_integer_value(json_object_get(nbd, "port"));
		if (!host_valid(host) || port <= 0 || port > 65535) {
			free(m);
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "nbd: the destination's answer {\"host\", \"port\"} "
					    "is needed with storage \"copy\"");
		}
		snprintf(m->nbd_host, sizeof(m->nbd_host), "%s", host);
		m->nbd_port = (unsigned)port;
	}
	snprintf(m->uri, sizeof(m->uri), "%s", uri);
	snprintf(m->peer, sizeof(m->peer), "%s", to ? to : uri + 4);
	m->started = hs_wall();
	migrate_vm_free(vm); /* the last one's record */
	vm->migration = m;
	save_record(vm);
	publish(vm);
	log_info("vm %s: migrating to %s (%s, storage %s, %u disk mirror%s%s%s)", vm->spec.name,
		 m->peer, m->uri, copy ? "copy" : "shared", m->n_mirrors,
		 m->n_mirrors == 1 ? "" : "s", m->tls ? ", TLS" : "",
		 m->postcopy ? ", post-copy" : "");
	qmp_client_execute(vm->qmp, "query-block", NULL, vm->hsd->qmp_timeout, on_tops, vm);
	return 0;
}

int migrate_cancel(Vm *vm, HsError *err)
{
	Migration *m = vm->migration;
	if (!m || m->incoming || phase_over(m->phase))
		return hs_error_set(err, -ENOENT, "not-found", "VM '%s' is not migrating",
				    vm->spec.name);
	if (m->phase == MIG_COMPLETED)
		return hs_error_set(err, -EBUSY, "conflict",
				    "the migration of VM '%s' completed: confirm it, or abort it "
				    "if the destination does not run the VM",
				    vm->spec.name);
	if (m->postcopy_on || m->postcopy_sent)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is in post-copy: the guest runs at %s already; it "
				    "cannot come back",
				    vm->spec.name, m->peer);
	if (!m->error[0])
		snprintf(m->error, sizeof(m->error), "cancelled");
	if (m->phase == MIG_ACTIVE || m->phase == MIG_SWITCHOVER) {
		/* QEMU answers with MIGRATION cancelled, then resumes the
		 * guest; the mirrors go in source_end. */
		qmp_client_execute(vm->qmp, "migrate_cancel", NULL, vm->hsd->qmp_timeout, NULL,
				   NULL);
		poll_now(vm);
		return 0;
	}
	source_end(vm, MIG_CANCELLED, NULL);
	return 0;
}

static void on_aborted(Vm *vm, const HsError *err)
{
	Migration *m = vm->migration;
	if (!m)
		return;
	VmDoneCb cb = m->abort_cb;
	m->abort_cb = NULL;
	if (err) {
		snprintf(m->error, sizeof(m->error), "cannot resume: %.220s", err->message);
		publish(vm);
	} else {
		set_phase(vm, MIG_ABORTED);
		if (vm->run_dirfd >= 0)
			unlinkat(vm->run_dirfd, MIGRATION_FILE, 0);
	}
	if (cb)
		cb(vm, err, m->abort_ud);
}

int migrate_finish(Vm *vm, bool confirm, VmDoneCb cb, void *ud, HsError *err)
{
	Migration *m = vm->migration;
	if (!m || m->incoming || m->phase != MIG_COMPLETED)
		return hs_error_set(err, -ENOENT, "not-found",
				    "VM '%s' has no completed migration to %s", vm->spec.name,
				    confirm ? "confirm" : "abort");
	if (!confirm && m->postcopy_on)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' went over in post-copy: the guest ran at %s, this side "
				    "cannot resume it",
				    vm->spec.name, m->peer);
	if (!confirm) {
		/* The destination did not take it: the guest runs here again.
		 * 'cont' reactivates the disks QEMU handed over. */
		log_warning("vm %s: migration to %s aborted after completion: resuming here",
			    vm->spec.name, m->peer);
		source_cleanup(vm);
		if (m->abort_cb)
			return hs_error_set(err, -EBUSY, "conflict", "an abort is under way");
		m->abort_cb = cb;
		m->abort_ud = ud;
		json_t *cmds = json_array();
		add_cmd(cmds, "cont", NULL);
		batch_run(vm, cmds, on_aborted);
		return 0;
	}
	set_phase(vm, MIG_CONFIRMED);
	snprintf(vm->status.migrated_to, sizeof(vm->status.migrated_to), "%s", m->peer);
	log_info("vm %s: now lives at %s; letting its QEMU go", vm->spec.name, m->peer);
	/* Answered once QEMU is gone and the record says "migrated". */
	return vm_stop(vm, STOP_FORCE, 0, cb, ud, err);
}

/* ---- destination ---- */

static void dest_remove_later(Vm *vm);

/* The incoming migration failed: said, and answered if still asked. */
static bool dest_mark_failed(Vm *vm, const char *why)
{
	Migration *m = vm->migration;
	if (!m || phase_over(m->phase))
		return false;
	snprintf(m->error, sizeof(m->error), "%s", why);
	log_warning("vm %s: incoming migration failed: %s", vm->spec.name, why);
	set_phase(vm, MIG_FAILED);
	ev_timer_stop(vm->hsd->loop, &m->poll);
	if (m->reply) {
		http_reply_error(m->reply->req, 502, "migration-failed",
				 "VM '%s' cannot receive the migration: %s", vm->spec.name, why);
		free(m->reply);
		m->reply = NULL;
	}
	return true;
}

/* ... and the VM goes: its QEMU first (then removed once gone). */
static void dest_failed(Vm *vm, const char *why)
{
	if (!dest_mark_failed(vm, why))
		return;
	if (vm_state_is_active(vm->status.state)) {
		HsError e;
		if (vm_stop(vm, STOP_KILL, 0, NULL, NULL, &e) < 0)
			log_warning("vm %s: %s", vm->spec.name, e.message);
	} else {
		dest_remove_later(vm);
	}
}

static void on_dest_resumed(Vm *vm, const HsError *err)
{
	Migration *m = vm->migration;
	if (!m)
		return;
	if (err) {
		snprintf(m->error, sizeof(m->error), "received, but cannot resume: %.200s",
			 err->message);
		log_error("vm %s: %s", vm->spec.name, m->error);
	}
	vm_set_state(vm, m->paused || err ? VM_STATE_PAUSED : VM_STATE_RUNNING);
	if (err)
		publish(vm);
	migration_free(vm); /* the VM is just ours now */
}

static void dest_settle(Vm *vm, const char *st)
{
	Migration *m = vm->migration;
	if (!st || phase_over(m->phase) || m->phase == MIG_COMPLETED ||
	    vm->status.state != VM_STATE_INCOMING)
		return;
	if (!strcmp(st, "postcopy-active") && !m->postcopy_on) {
		/* The guest runs here from now on (the rest of its RAM comes
		 * on demand): ours, even if the source goes. */
		m->postcopy_on = true;
		unlinkat(vm->state_dirfd, INCOMING_MARKER, 0);
		log_info("vm %s: post-copy: running here, RAM still coming from %s",
			 vm->spec.name, m->peer);
		if (!m->paused)
			qmp_client_execute(vm->qmp, "cont", NULL, vm->hsd->qmp_timeout, NULL, NULL);
		publish(vm);
	} else if (!strcmp(st, "completed")) {
		/* The whole state is here: the VM is ours. */
		ev_timer_stop(vm->hsd->loop, &m->poll);
		unlinkat(vm->state_dirfd, INCOMING_MARKER, 0);
		set_phase(vm, MIG_COMPLETED);
		log_info("vm %s: arrived from %s", vm->spec.name, m->peer);
		json_t *cmds = json_array();
		if (!m->paused)
			add_cmd(cmds, "cont", NULL); /* first: the guest waits for nothing else */
		batch_run(vm, cmds, on_dest_resumed);
		json_t *after = json_array();
		if (m->copy)
			add_cmd(after, "nbd-server-stop", NULL);
		add_reset(m, after);
		run_ignoring(vm, after);
	} else if (m->postcopy_on && (!strcmp(st, "failed") || !strcmp(st, "postcopy-paused"))) {
		/* The source has pages the guest needs: QEMU waits (paused).
		 * Not removed: this is where the guest lives now. */
		ev_timer_stop(vm->hsd->loop, &m->poll);
		snprintf(m->error, sizeof(m->error),
			 "post-copy broke (QEMU: %s): the guest waits for RAM the source holds", st);
		log_error("vm %s: %s", vm->spec.name, m->error);
		set_phase(vm, MIG_FAILED);
	} else if (!strcmp(st, "failed") || !strcmp(st, "cancelled")) {
		const char *why = json_string_value(json_object_get(m->info, "error-desc"));
		dest_failed(vm, why ? why : st);
	} else if (m->phase < MIG_ACTIVE && strcmp(st, "none")) {
		set_phase(vm, MIG_ACTIVE);
	}
}

static bool port_is_skip(unsigned port, void *ud)
{
	return port == *(const unsigned *)ud;
}

/* A free TCP port of --migration-ports on address (a numeric IP), found
 * by binding it; QEMU binds it a moment later. skip: a port taken already
 * by this search. 0: none free. */
static unsigned free_port(Hsd *h, const char *address, unsigned skip)
{
	return hs_tcp_port_free(address, h->migration_port_lo, h->migration_port_hi, port_is_skip,
				&skip);
}

static void on_listening(Vm *vm, const HsError *err);

static void listen_start(Vm *vm)
{
	Migration *m = vm->migration;
	Hsd *h = vm->hsd;
	unsigned stream = free_port(h, m->address, 0);
	unsigned nbd = m->copy ? free_port(h, m->address, stream) : 0;
	if (!stream || (m->copy && !nbd)) {
		char why[200];
		snprintf(why, sizeof(why), "no free port in %u-%u on %s (--migration-ports)",
			 h->migration_port_lo, h->migration_port_hi, m->address);
		dest_failed(vm, why);
		return;
	}
	m->port = nbd;
	json_t *cmds = json_array();
	if (m->copy) {
		char port[16];
		snprintf(port, sizeof(port), "%u", nbd);
		/* addr is a SocketAddressLegacy here: {type, data}. */
		json_t *args = json_pack("{s:{s:s, s:{s:s, s:s}}}", "addr", "type", "inet", "data",
					 "host", m->address, "port", port);
		if (m->tls)
			json_object_set_new(args, "tls-creds", json_string(TLS_ID));
		add_cmd(cmds, "nbd-server-start", args);
		for (size_t i = 0; i < vm->spec.n_disks; i++) {
			if (!vm->spec.disks[i].managed)
				continue;
			char id[32], name[32];
			snprintf(id, sizeof(id), "hs-mig%zu", i);
			snprintf(name, sizeof(name), "disk%zu", i);
			json_t *node = json_object_get(m->nodes, name);
			add_cmd(cmds, "block-export-add",
				json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id", id,
					  "node-name", json_string_value(node), "name", name,
					  "writable", 1));
		}
	}
	bool v6 = strchr(m->address, ':') != NULL;
	snprintf(m->uri, sizeof(m->uri), "tcp:%s%s%s:%u", v6 ? "[" : "", m->address, v6 ? "]" : "",
		 stream);
	add_cmd(cmds, "migrate-incoming", json_pack("{s:s}", "uri", m->uri));
	batch_run(vm, cmds, on_listening);
}

static void on_listening(Vm *vm, const HsError *err)
{
	Migration *m = vm->migration;
	if (!m || phase_over(m->phase))
		return;
	if (err) {
		char why[256];
		snprintf(why, sizeof(why), "cannot listen on %s: %.150s", m->address, err->message);
		dest_failed(vm, why);
		return;
	}
	vm_set_state(vm, VM_STATE_INCOMING);
	set_phase(vm, MIG_ACTIVE);
	json_t *ans = json_pack("{s:s, s:s, s:o}", "vm", vm->spec.name, "uri", m->uri, "migration",
				migration_json(m));
	if (m->copy) {
		json_t *exports = json_array();
		for (size_t i = 0; i < vm->spec.n_disks; i++)
			if (vm->spec.disks[i].managed)
				json_array_append_new(exports, json_integer((json_int_t)i));
		json_object_set_new(ans, "nbd",
				    json_pack("{s:s, s:i, s:o}", "host", m->address, "port",
					      (int)m->port, "disks", exports));
	}
	log_info("vm %s: waiting for the migration from %s on %s", vm->spec.name, m->peer,
		 m->uri);
	if (m->reply) {
		http_reply_json(m->reply->req, 201, ans);
		free(m->reply);
		m->reply = NULL;
	} else {
		json_decref(ans);
	}
	start_polling(vm);
}

static void on_dest_nodes(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	Migration *m = vm->migration;
	if (!m || phase_over(m->phase))
		return;
	if (err) {
		dest_failed(vm, err->message);
		return;
	}
	json_decref(m->nodes);
	m->nodes = disk_nodes(reply);
	listen_start(vm);
}

static void on_dest_caps(Vm *vm, const HsError *err)
{
	if (err) {
		dest_failed(vm, err->message);
		return;
	}
	qmp_client_execute(vm->qmp, "query-block", NULL, vm->hsd->qmp_timeout, on_dest_nodes, vm);
}

/* QEMU is up, paused, waiting for -incoming; limits and pins are on. */
static void on_dest_started(Vm *vm, const HsError *err, void *ud)
{
	Migration *m = vm->migration;
	if (!m || phase_over(m->phase))
		return;
	if (err) {
		dest_failed(vm, err->message);
		return;
	}
	json_t *cmds = json_array(), *params = json_object();
	add_cmd(cmds, "migrate-set-capabilities", caps_json(m, true));
	if (m->multifd)
		json_object_set_new(params, "multifd-channels", json_integer((json_int_t)m->multifd));
	if (m->tls)
		add_tls(vm, cmds, params, true, NULL);
	if (json_object_size(params))
		add_cmd(cmds, "migrate-set-parameters", params);
	else
		json_decref(params);
	batch_run(vm, cmds, on_dest_caps);
}

static void dest_start(Vm *vm)
{
	HsError err;
	if (vm_start(vm, true, on_dest_started, NULL, &err) < 0)
		dest_failed(vm, err.message);
}

static void on_dest_disks(Hsd *h, const HsError *err, json_t *result, void *ud)
{
	char *name = ud;
	Vm *vm = vm_find(h, name);
	free(name);
	if (!vm || !vm->migration)
		return;
	if (err) {
		dest_failed(vm, err->message);
		return;
	}
	dest_start(vm);
}

typedef struct Removal {
	ev_timer t;
	Hsd *h;
	char name[VM_NAME_MAX + 1];
} Removal;

static void on_remove(struct ev_loop *loop, ev_timer *w, int revents)
{
	Removal *r = (Removal *)w;
	Vm *vm = vm_find(r->h, r->name);
	if (vm && vm->migration && vm->migration->incoming &&
	    vm->migration->phase != MIG_COMPLETED && !vm_state_is_active(vm->status.state)) {
		HsError e;
		migrate_vm_free(vm);
		unlinkat(vm->state_dirfd, INCOMING_MARKER, 0);
		if (vm_delete(vm, &e) < 0)
			log_error("vm %s: the failed incoming VM stays: %s", r->name, e.message);
		else
			log_info("vm %s: removed (its incoming migration failed)", r->name);
	}
	free(r);
}

/* Removal outside the call chain that found the VM gone. */
static void dest_remove_later(Vm *vm)
{
	Removal *r = calloc(1, sizeof(*r));
	if (!r)
		return;
	r->h = vm->hsd;
	snprintf(r->name, sizeof(r->name), "%s", vm->spec.name);
	ev_timer_init(&r->t, on_remove, 0., 0.);
	ev_timer_start(vm->hsd->loop, &r->t);
}

int migrate_vm_exited(Vm *vm)
{
	Migration *m = vm->migration;
	if (!m)
		return MIGRATE_EXIT_NONE;
	if (m->incoming && m->phase != MIG_COMPLETED && !m->postcopy_on) {
		dest_mark_failed(vm, "QEMU exited before the VM arrived");
		dest_remove_later(vm);
		return MIGRATE_EXIT_INCOMING_FAILED;
	}
	int r = MIGRATE_EXIT_NONE;
	if (!m->incoming && m->phase == MIG_CONFIRMED)
		r = MIGRATE_EXIT_MIGRATED;
	else if (!m->incoming && !phase_over(m->phase) && m->phase != MIG_COMPLETED)
		log_warning("vm %s: QEMU exited during the migration to %s", vm->spec.name,
			    m->peer);
	if (m->reply) {
		http_reply_error(m->reply->req, 502, "vm-exited", "QEMU exited");
		free(m->reply);
		m->reply = NULL;
	}
	migration_free(vm);
	return r;
}

bool migrate_vm_incoming(Vm *vm)
{
	return vm->migration && vm->migration->incoming && vm->migration->phase < MIG_COMPLETED;
}

int migrate_vm_check_idle(Vm *vm, HsError *err)
{
	Migration *m = vm->migration;
	if (!m || phase_over(m->phase) || (m->incoming && m->phase == MIG_COMPLETED))
		return 0;
	if (m->incoming)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' is arriving from %s; wait for it (or cancel it: "
				    "DELETE /v1/migrations/incoming/%s)",
				    vm->spec.name, m->peer, vm->spec.name);
	if (m->phase == MIG_COMPLETED)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' has migrated to %s and waits here, paused: confirm "
				    "the migration, or abort it if the destination does not run it",
				    vm->spec.name, m->peer);
	return hs_error_set(err, -EBUSY, "conflict",
			    "VM '%s' is migrating to %s (%s); cancel the migration first",
			    vm->spec.name, m->peer, phase_name(m->phase));
}

/* "7.2.19" → 70219 (each part below 100); 0: not a version. */
static unsigned qemu_version_num(const char *v)
{
	unsigned a = 0, b = 0, c = 0;
	if (!v || sscanf(v, "%u.%u.%u", &a, &b, &c) < 2 || b >= 100 || c >= 100)
		return 0;
	return a * 10000 + b * 100 + c;
}

/* Can this host run what the source runs? QEMU loads streams from its own
 * version or older ones only, and a guest on the host's CPU model ("host")
 * needs the same CPU here. The machine type comes versioned in the spec
 * ("pc-q35-7.2"): QEMU refuses one it does not have, naming it. */
static int host_compatible(Hsd *h, const VmSpec *spec, json_t *src, HsError *err)
{
	if (!src)
		return 0;
	if (!json_is_object(src))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "source_host: {\"qemu_version\", \"cpu_model\"} of the source");
	const char *qv = json_string_value(json_object_get(src, "qemu_version"));
	const char *cpu = json_string_value(json_object_get(src, "cpu_model"));
	unsigned theirs = qemu_version_num(qv), ours = qemu_version_num(h->host.qemu_version);
	if (theirs && ours && ours < theirs)
		return hs_error_set(err, -ENODEV, "incompatible-host",
				    "this host's QEMU %s is older than the source's %s: a VM "
				    "migrates to the same QEMU version or a newer one",
				    h->host.qemu_version, qv);
	if (spec->cpu_model && !strcmp(spec->cpu_model, "host") && cpu &&
	    strcmp(cpu, h->host.cpu_model))
		return hs_error_set(err, -ENODEV, "incompatible-host",
				    "VM '%s' runs on the host's CPU model (cpu_model \"host\"): "
				    "the source has '%s', this host '%s'; use a named CPU model "
				    "both have",
				    spec->name, cpu, h->host.cpu_model);
	return 0;
}

int migrate_incoming(Hsd *h, json_t *j, HttpRequest *req, HsError *err)
{
	static const char *const keys[] = {"spec", "storage", "address", "from", "paused",
					   "multifd", "tls", "postcopy", "source_host", NULL};
	if (object_keys_check(j, keys, err) < 0)
		return -EINVAL;
	json_t *js = json_object_get(j, "spec");
	if (!json_is_object(js))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "spec: the VM's spec (its GET's \"spec\") is needed");
	bool copy;
	if (parse_storage(j, &copy, err) < 0)
		return -EINVAL;
	const char *address = json_string_value(json_object_get(j, "address"));
	if (json_object_get(j, "address") && !host_valid(address))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "address: this host's IP address for the stream");
	if (!address)
		address = h->migration_address;
	if (!address || !*address)
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "address: needed (hsd has no --migration-address): this "
				    "host's IP address the source can reach");
	const char *from = json_string_value(json_object_get(j, "from"));
	bool paused = false, tls = false, postcopy = false;
	uint64_t multifd = 0;
	if (parse_bool(j, "paused", &paused, err) < 0 ||
	    parse_uint(j, "multifd", 0, 32, &multifd, err) < 0 ||
	    parse_bool(j, "tls", &tls, err) < 0 || (tls && tls_check(h, true, err) < 0) ||
	    parse_bool(j, "postcopy", &postcopy, err) < 0 ||
	    (postcopy && postcopy_check(h, err) < 0))
		return -EINVAL;

	VmSpec spec;
	VmSpecDefaults defs = {.accel = VM_ACCEL_TCG, .check_files = true};
	if (vm_spec_from_json(js, &defs, &spec, err) < 0)
		return -EINVAL;
	if (spec.n_hostdevs) {
		vm_spec_clear(&spec);
		return hs_error_set(err, -EINVAL, "invalid-spec",
				    "spec: a VM with host devices (hostdevs) cannot migrate");
	}
	if (spec.warm_template[0]) {
		/* A warm clone's RAM comes in full, into a file of its own:
		 * here it is an ordinary memory_file VM (its MACs and
		 * vmgenid kept), no template's clone. */
		log_info("vm %s: a clone of warm template %s elsewhere; here a memory_file VM",
			 spec.name, spec.warm_template);
		spec.warm_template[0] = '\0';
	}
	for (size_t i = 0; i < spec.n_disks; i++)
		if (spec.disks[i].managed && !copy) {
			vm_spec_clear(&spec);
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "disk %zu is a disk hsd keeps: it moves with storage "
					    "\"copy\" only",
					    i);
		}
	if (api_check_spec_files(h, &spec, err) < 0 ||
	    host_compatible(h, &spec, json_object_get(j, "source_host"), err) < 0) {
		vm_spec_clear(&spec);
		return -EINVAL;
	}
	if (spec.accel == VM_ACCEL_KVM && !h->host.kvm_usable) {
		hs_error_set(err, -ENODEV, "kvm-unavailable",
			     "VM '%s' runs under KVM and KVM is not usable here: %s", spec.name,
			     h->host.kvm_reason);
		vm_spec_clear(&spec);
		return -ENODEV;
	}
	Vm *old = vm_find(h, spec.name);
	if (old && old->status.state == VM_STATE_MIGRATED) {
		/* It left from here before and comes back. */
		if (vm_delete(old, err) < 0) {
			vm_spec_clear(&spec);
			return -EBUSY;
		}
	} else if (old) {
		hs_error_set(err, -EEXIST, "conflict", "a VM named '%s' is here already (%s)",
			     spec.name, vm_state_to_string(old->status.state));
		vm_spec_clear(&spec);
		return -EEXIST;
	}
	bool managed = false;
	for (size_t i = 0; i < spec.n_disks; i++)
		managed |= spec.disks[i].managed;
	Vm *vm;
	if (vm_define(h, &spec, &vm, err) < 0) {
		vm_spec_clear(&spec);
		return -EINVAL;
	}
	Migration *m = calloc(1, sizeof(*m));
	Pending *p = pending_new(h, req);
	if (!m || !p) {
		free(m);
		free(p);
		HsError e;
		vm_delete(vm, &e);
		return hs_error_set(err, -ENOMEM, "internal", "out of memory");
	}
	*m = (Migration){.incoming = true, .copy = copy, .paused = paused, .tls = tls,
			 .postcopy = postcopy,
			 .multifd = (unsigned)multifd, .vm = vm, .reply = p};
	snprintf(m->address, sizeof(m->address), "%s", address);
	snprintf(m->peer, sizeof(m->peer), "%s", from ? from : "(unnamed source)");
	m->started = hs_wall();
	vm->migration = m;
	/* Not ours until the stream completes: the marker says so to a
	 * restarted hsd. */
	json_auto_t *mj = migration_json(m);
	_cleanup_free_ char *marker = json_dumps(mj, JSON_COMPACT);
	if (!marker || hs_write_file_atomic(vm->state_dirfd, INCOMING_MARKER, marker,
					    strlen(marker), 0600) < 0) {
		m->reply = NULL;
		free(p);
		migrate_vm_free(vm);
		HsError e;
		vm_delete(vm, &e);
		return hs_error_set(err, -EIO, "internal", "cannot record the incoming VM");
	}
	log_info("vm %s: incoming from %s (storage %s)", vm->spec.name, m->peer,
		 copy ? "copy" : "shared");
	http_defer(req);
	if (managed) {
		char *name = strdup(vm->spec.name);
		if (!name || storage_vm_create(vm, on_dest_disks, name, err) < 0) {
			free(name);
			dest_failed(vm, err->message);
		}
	} else {
		dest_start(vm);
	}
	return 0;
}

int migrate_incoming_cancel(Hsd *h, const char *name, HsError *err)
{
	Vm *vm = vm_find(h, name);
	if (!vm || !vm->migration || !vm->migration->incoming ||
	    vm->migration->phase == MIG_COMPLETED)
		return hs_error_set(err, -ENOENT, "not-found", "no incoming migration of '%s'",
				    name);
	if (vm->migration->postcopy_on)
		return hs_error_set(err, -EBUSY, "conflict",
				    "VM '%s' runs here already (post-copy): it is not given up",
				    name);
	dest_failed(vm, "cancelled");
	return 0;
}

/* ---- hsd restarts ---- */

void migrate_vm_loaded(Vm *vm)
{
	/* Destination: a VM still marked incoming. */
	struct stat st;
	if (vm->state_dirfd >= 0 && fstatat(vm->state_dirfd, INCOMING_MARKER, &st, 0) == 0) {
		Migration *m = calloc(1, sizeof(*m));
		if (!m)
			return;
		_cleanup_free_ char *data = NULL;
		json_auto_t *j = NULL;
		if (hs_read_file(vm->state_dirfd, INCOMING_MARKER, 1 << 16, &data, NULL) == 0)
			j = json_loads(data, 0, NULL);
		*m = (Migration){.incoming = true, .phase = MIG_ACTIVE, .vm = vm};
		m->copy = !strcmp(json_string_value(json_object_get(j, "storage")) ?: "", "copy");
		m->tls = json_is_true(json_object_get(j, "tls"));
		m->postcopy = json_is_true(json_object_get(j, "postcopy"));
		snprintf(m->peer, sizeof(m->peer), "%s",
			 json_string_value(json_object_get(j, "from")) ?: "?");
		m->started = json_number_value(json_object_get(j, "started"));
		vm->migration = m;
		if (!vm_state_is_active(vm->status.state) || vm->pidfd < 0) {
			snprintf(m->error, sizeof(m->error), "QEMU is gone (hsd restarted)");
			m->phase = MIG_FAILED;
			dest_remove_later(vm);
		} else {
			vm->status.state = VM_STATE_INCOMING;
		}
		return;
	}
	/* Source: an unfinished migration recorded in the run dir. */
	if (vm->run_dirfd < 0 || vm->pidfd < 0)
		return;
	_cleanup_free_ char *data = NULL;
	if (hs_read_file(vm->run_dirfd, MIGRATION_FILE, 1 << 16, &data, NULL) < 0)
		return;
	json_auto_t *j = json_loads(data, 0, NULL);
	Migration *m = calloc(1, sizeof(*m));
	if (!m || !j) {
		free(m);
		return;
	}
	*m = (Migration){.phase = MIG_ACTIVE, .vm = vm};
	m->copy = !strcmp(json_string_value(json_object_get(j, "storage")) ?: "", "copy");
	m->tls = json_is_true(json_object_get(j, "tls"));
	m->postcopy = json_is_true(json_object_get(j, "postcopy"));
	m->postcopy_on = m->postcopy_sent = json_is_true(json_object_get(j, "postcopy_active"));
	snprintf(m->peer, sizeof(m->peer), "%s", json_string_value(json_object_get(j, "to")) ?: "?");
	snprintf(m->uri, sizeof(m->uri), "%s", json_string_value(json_object_get(j, "uri")) ?: "");
	m->started = json_number_value(json_object_get(j, "started"));
	const char *phase = json_string_value(json_object_get(j, "phase"));
	if (phase && !strcmp(phase, "completed"))
		m->phase = MIG_COMPLETED;
	json_t *t = json_object_get(j, "tunables");
	m->downtime_ms = (unsigned)json_integer_value(json_object_get(t, "downtime_ms"));
	m->multifd = (unsigned)json_integer_value(json_object_get(t, "multifd"));
	m->auto_converge = json_is_true(json_object_get(t, "auto_converge"));
	m->xbzrle = json_is_true(json_object_get(t, "xbzrle"));
	m->timeout = 3600;
	size_t i;
	json_t *d;
	json_array_foreach (json_object_get(j, "mirrors"), i, d) {
		json_int_t k = json_integer_value(d);
		if (k >= 0 && k < VM_MAX_DISKS) {
			m->mirror_disk[k] = true;
			m->n_mirrors++;
		}
	}
	m->n_ready = m->n_mirrors;
	vm->migration = m;
	log_info("vm %s: migration to %s was under way (%s): asking QEMU", vm->spec.name, m->peer,
		 phase ? phase : "?");
}

void migrate_vm_adopted(Vm *vm)
{
	Migration *m = vm->migration;
	if (!m)
		return;
	if (m->incoming) {
		/* Events go to the QMP connection that asked for them: ask
		 * again, then follow QEMU's answers. */
		json_t *cmds = json_array();
		add_cmd(cmds, "migrate-set-capabilities", caps_json(m, true));
		batch_run(vm, cmds, NULL);
		start_polling(vm);
		poll_now(vm);
		return;
	}
	if (m->phase != MIG_COMPLETED)
		start_polling(vm);
	poll_now(vm);
}
