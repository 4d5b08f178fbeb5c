/* SPDX-License-Identifier: Apache-2.0 */
/* hsd's shared state: the daemon context and the VM object. */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/un.h>

#include "hs-util.h"
#include "http.h"
#include "launch.h"
#include "spawner.h"
#include "ksm.h"
#include "cgroup.h"
#include "numa.h"
#include "vfio.h"
#include "qmp.h"
#include "spec.h"
#include "store.h"
#include "balloon-policy.h"
#include "options.h"

typedef struct Hsd Hsd;

/* The automatic balloon policy's settings and state (balloon.c). */
typedef struct BalloonTuner {
	bool auto_mode;
	uint64_t low_mib, high_mib; /* as set; 0: 10 % and 15 % of MemTotal */
	uint64_t max_step_mib, margin_mib;
	double interval; /* seconds between guest stats and policy ticks */
	ev_timer timer;
	bool pressure;
	BalloonPolicyResult last;
	uint64_t mem_total_mib, mem_available_mib; /* at the last tick */
	char error[160];
} BalloonTuner;

/* A guest's memory statistics (virtio-balloon guest-stats), bytes or
 * counts; -1: the guest does not report it. */
typedef struct BalloonStats {
	double last_update; /* wall clock of the guest's report; 0: none yet */
	int64_t free, available, total, disk_caches;
	int64_t major_faults, minor_faults, swap_in, swap_out;
} BalloonStats;

typedef struct KsmTuner {
	KsmConfig config;
	ev_timer timer;
	KsmStats stats;       /* latest */
	KsmStats last;        /* one full scan (or a minute) ago */
	double last_time;
	bool have_last;
	pid_t ksmd;
	uint64_t last_ticks;
	double cpu_time; /* hs_now() of last_ticks */
	double ksmd_cpu;
	KsmDecision decision;
	KsmDecision written;
	bool have_written;
	double tick_time; /* hs_now() of the last tick: of stats and vm_rss */
	uint64_t vm_rss;  /* the mergeable VMs' resident memory */
	/* ksmd's priority is set only on the real host (not a --sysfs-root
	 * tree, whose pids are not this host's). */
	bool can_renice;
	char error[160];
} KsmTuner;
typedef struct Vm Vm;
enum { START_ASKED, START_SPAWNED, START_QMP, START_LOADED, START_DONE, VM_START_MARKS };
typedef struct VmStorage VmStorage;
typedef struct Waiter Waiter;
typedef struct ConsoleClient ConsoleClient;
typedef struct EventSub EventSub;
typedef struct Migration Migration;
typedef struct Web Web;

#define CONSOLE_RING_SIZE (64 * 1024)

typedef struct HostInfo {
	char qemu_binary[256];
	char qemu_version[64];
	bool kvm_usable;
	char kvm_reason[512];
	bool qemu_sandbox;
	char qemu_user[64]; /* empty: QEMU runs as hsd's own user */
	char cpu_model[128];
	unsigned cpus;
	uint64_t mem_total, mem_available;
	int rootfd; /* "/" or a fake tree (--sysfs-root) for sysfs and procfs */
	NumaTopology numa;
	KsmStats ksm;
	VfioHost vfio;
} HostInfo;

typedef enum StopKind {
	STOP_NONE,
	STOP_AGENT, /* the guest agent's guest-shutdown, then forced after a timeout */
	STOP_ACPI,  /* system_powerdown, then forced after a timeout */
	STOP_FORCE, /* SIGTERM (QEMU exits cleanly), SIGKILL if it hangs */
	STOP_KILL,  /* SIGKILL */
} StopKind;

struct Vm {
	Hsd *hsd;
	Vm *next;
	VmSpec spec;
	VmStatus status;
	int run_dirfd; /* <run>/vms/<name> */
	int state_dirfd;

	/* The QEMU process. */
	int pidfd;
	ev_io pidfd_watch;
	bool spawned;   /* by this hsd's spawner, which reports the exit status */
	ev_timer exit_grace;
	QmpClient *qmp;
	bool qmp_ready;
	double qmp_rtt; /* last round trip, seconds */
	uint64_t balloon_actual; /* bytes the guest has now (BALLOON_CHANGE); 0: unknown */
	uint64_t balloon_auto;   /* MiB: the policy's target, below the spec's; 0: none */
	uint64_t balloon_settling; /* MiB the policy took lately (balloon.c) */
	double balloon_settling_since;
	BalloonStats balloon_stats;
	bool balloon_polling;    /* QEMU asks the guest for stats */
	bool balloon_inflight;   /* a stats read or polling set-up is pending */
	struct PlacementVm *placement; /* where its memory and CPUs are (while active); NULL: none */
	unsigned cgroup_skipped; /* CG_* limits asked for that the host's cgroup v2 lacks */
	struct VmStorage *storage; /* managed disks, snapshots (storage.c); NULL: none yet */
	Migration *migration;      /* either side of a live migration (migrate.c); NULL: none */
	struct VmHostdevs *hostdevs; /* host PCI functions (hostdev.c); NULL: none yet */
	struct VmNet *net;           /* its NICs' host side while active (network.c); NULL: none */
	struct VmSpice *spice;       /* its SPICE server's way in while active (spice.c); NULL: none */
	struct VmFirmwareRun *firmware; /* its swtpm (firmware.c); NULL: none yet */
	struct VmAgent *agent;       /* its guest agent connection and cache (agent.c); NULL: none */
	char machine_type[64];     /* the versioned machine QEMU runs ("pc-q35-7.2"); "" unknown */
	uint64_t disk_bytes[VM_MAX_DISKS]; /* each disk's virtual size, from QEMU; 0 unknown */
	ev_timer start_timer;
	ev_timer stop_timer;
	StopKind stop_kind;
	bool guest_shutdown;   /* SHUTDOWN event with guest=true seen */
	char shutdown_reason[64];
	char start_error[200]; /* why hsd gave up on a start (killed QEMU) */
	/* The last start's steps, hs_now(): asked for, QEMU spawned, QMP
	 * ready, saved state loaded (a warm clone, a memory snapshot), running
	 * or paused as asked. 0: not (yet) reached. */
	double start_marks[VM_START_MARKS];
	/* Metrics (metrics.c): collected from QMP without blocking a scrape. */
	json_t *blockstats;    /* last query-blockstats "return" */
	double stats_time;     /* hs_now() of that answer; 0: none */
	double stats_sent;
	bool stats_inflight;
	pid_t vcpu_tids[VM_MAX_CPUS];
	unsigned n_vcpu_tids;
	char tap_names[VM_MAX_NICS][16];

	bool pacing;           /* start held until the host can back its memory */
	double pacing_since;
	ev_timer pacing_timer;
	bool warm_loading;     /* start held until its warm template's RAM is loaded */
	bool adopting;
	bool start_paused;
	double start_mono;

	/* Serial console. */
	int serial_fd;
	ev_io serial_watch;
	char *ring; /* CONSOLE_RING_SIZE when ring_full, else ring_len bytes */
	size_t ring_head, ring_len;
	bool ring_full;
	ConsoleClient *consoles;
	char *pending_input; /* input queued while the socket is full */
	size_t pending_input_len;
	ev_io serial_wwatch;

	Waiter *waiters;
	bool deleting;
	int refs;
};

struct Hsd {
	struct ev_loop *loop;
	char *state_dir, *run_dir, *socket_path;
	Store store;
	int run_vms_dirfd;
	HostInfo host;
	Vm *vms; /* sorted by name */
	unsigned n_vms;
	HttpServer *http;
	EventSub *subs;
	FILE *log;
	double default_stop_timeout;
	double overcommit;     /* guest memory of active VMs <= overcommit x MemTotal */
	double pacing_timeout; /* how long a start waits for memory */
	unsigned tcg_tb_size;  /* MiB, for TCG VMs; 0: QEMU's default */
	double qmp_timeout;
	ev_signal sigterm, sigint, sigpipe;
	ev_timer heartbeat;
	uid_t api_uid;
	bool stopping; /* in hsd's own shutdown */
	int argc;      /* kept for SIGHUP's reload */
	char **argv;
	ev_signal sighup;
	bool has_api_group, has_admin_group;
	gid_t api_gid, admin_gid;
	int audit_fd; /* <state>/audit.log, O_APPEND */
	QemuUser qemu_user;
	Spawner spawner;
	KsmTuner ksm;
	BalloonTuner balloon;
	ev_timer metrics_timer;
	ev_io spawner_watch;
	AllowedDirs allowed; /* where spec files may be */
	CgroupHost cgroup;   /* valid when has_cgroup */
	bool has_cgroup;
	bool verbose;
	/* Live migration, as destination: the address QEMU listens on when
	 * the request names none, and the ports it may take. */
	char *migration_address;
	unsigned migration_port_lo, migration_port_hi;
	char *migration_tls_dir; /* certificates for TLS migrations; NULL: none */
	/* SPICE on TCP (display.listen): the ports QEMU may take. */
	unsigned spice_port_lo, spice_port_hi;
	/* Console tickets (ticket.h), in memory only. */
	struct TicketStore *tickets;
	/* PCI passthrough: the hs-vfio tool, the root it works on, and the
	 * claims directory (<state>/pci: which VM holds which device). */
	char *vfio_tool, *vfio_root, *pci_claims_dir;
	/* memory_file VMs' RAM files (<vm>.ram), and warm templates' sealed
	 * copies of theirs (warm.c). */
	char *memory_dir;
	int memory_dirfd;
	struct WarmCache *warm;
	int pci_claims_fd;
	struct Network *networks; /* /v1/networks (network.c), sorted by name */
	Web *web;                 /* the web console (web.c); NULL: off */
	char *ovmf_dir, *swtpm;   /* UEFI firmware images, the TPM emulator (firmware.c) */
};

/* Logging to stderr with journald priority prefixes. */
void hsd_log(int prio, const char *fmt, ...) _printf_(2, 3);
#define log_error(...) hsd_log(3, __VA_ARGS__)
#define log_warning(...) hsd_log(4, __VA_ARGS__)
#define log_info(...) hsd_log(6, __VA_ARGS__)
#define log_debug(...) hsd_log(7, __VA_ARGS__)
extern int hsd_log_level;

/* vm.c */
Vm *vm_find(Hsd *h, const char *name);
/* The spawner reported that `pid` exited with `wstatus`. */
void vm_spawner_exit(pid_t pid, int wstatus, void *hsd);
int vm_define(Hsd *h, VmSpec *spec /* taken */, Vm **ret, HsError *err);
int vm_load(Hsd *h, VmSpec *spec /* taken */, const VmStatus *status);
int vm_delete(Vm *vm, HsError *err);
void vm_free_all(Hsd *h);

/* <run_dir>/vms/<name>/<file>, a UNIX socket's address (-ENAMETOOLONG). */
int vm_unix_path(Vm *vm, const char *file, struct sockaddr_un *sa, HsError *err);
/* A listening socket there (any old one replaced); new fd or < 0 (err). */
int vm_unix_listen(Vm *vm, const char *file, int backlog, HsError *err);
/* A non-blocking connection to it; new fd or a negative errno. */
int vm_unix_connect(Vm *vm, const char *file);

/* Lifecycle calls answer through a callback once done (or failed). */
typedef void (*VmDoneCb)(Vm *vm, const HsError *err, void *ud);
int vm_start(Vm *vm, bool paused, VmDoneCb cb, void *ud, HsError *err);
/* Starts held back for memory. */
unsigned vm_count_pacing(Hsd *h);
/* The warm template's RAM a held start waited for is loaded (err NULL) or
 * could not be: the start goes on, or fails. */
void vm_warm_ready(Vm *vm, const HsError *err);
int vm_stop(Vm *vm, StopKind kind, double timeout, VmDoneCb cb, void *ud, HsError *err);
int vm_reboot(Vm *vm, VmDoneCb cb, void *ud, HsError *err);
int vm_pause(Vm *vm, bool pause, VmDoneCb cb, void *ud, HsError *err);
int vm_qmp_passthrough(Vm *vm, json_t *msg, QmpReplyCb cb, void *ud, HsError *err);
json_t *vm_to_json(Vm *vm, bool with_spec);
/* Sets and records the state (and tells the event stream). */
void vm_set_state(Vm *vm, VmState state);
/* Drop every pending callback of `ud` (its requester is gone). */
void vm_forget_waiters(Hsd *h, void *ud);

/* limits.c: I/O throttling and the balloon target, over QMP. At start
 * (both false): the disks with limits and the balloon target if any. Live
 * (a PATCH): every disk when live_disks (zero limits lift them), the
 * balloon target when live_balloon (0: all of memory back). cb runs once
 * every reply is in. */
int limits_apply(Vm *vm, const VmSpec *spec, bool live_disks, bool live_balloon, VmDoneCb cb,
		 void *ud, HsError *err);
json_t *limits_throttle_args(size_t disk, const VmDiskLimits *l);
/* PATCH /v1/vms/NAME: balloon target and disk limits, live when running,
 * stored either way. */
void api_patch_vm(Hsd *h, Vm *vm, HttpRequest *req);

/* pinning.c: vCPU threads (tids from QMP) and QEMU's other threads onto
 * the spec's host CPUs. pinning_start asks QMP for the vCPU threads, pins,
 * then cb; pinning_apply pins with the tids already known. */
int pinning_start(Vm *vm, VmDoneCb cb, void *ud, HsError *err);
int pinning_apply(Vm *vm, const VmSpec *spec, HsError *err);
/* Moves the threads of a VM whose vCPU threads are known into the threaded
 * sub-groups of its cgroup (vcpuN, emu), cpusets following spec's pins. */
void pinning_place_threads(Vm *vm, const VmSpec *spec);

/* placement.c (daemon side): host NUMA node(s) for a VM being started. */
int vm_place(Vm *vm, QemuLaunch *launch, HsError *err);
/* At create: a spec with "hugepages" names a size the host has. */
int vm_check_host_hugepages(Hsd *h, const VmSpec *spec, HsError *err);
void vm_unplace(Vm *vm);
/* A re-adopted VM's placement, as its start recorded it. */
int vm_placement_load(Vm *vm);
json_t *vm_placement_json(Vm *vm);

/* The VM's cgroup limits from spec (pinning.c): cpu, memory, pids, io.max
 * for the host devices vm's disks are on, the emulator threads' cpuset. */
void vm_cgroup_limits(const Vm *vm, const VmSpec *spec, CgroupLimits *ret);

/* console.c */
void console_attach_serial(Vm *vm, int fd);
void console_detach_serial(Vm *vm);
void console_seed_from_log(Vm *vm);
/* A VM that is not running keeps only its last few KiB of output. */
void console_shrink(Vm *vm);
void console_attach_client(Vm *vm, HttpUpgrade *u, int fd, const char *extra, size_t extra_len,
			   bool replay);
void console_close_clients(Vm *vm);
/* Last `lines` lines of console output (new string). */
char *console_tail(Vm *vm, unsigned lines);
unsigned console_client_count(Vm *vm);
/* Input for the guest's serial port, as a console client's. */
void console_input(Vm *vm, const char *data, size_t len);
/* The recent output a client sees at attach (new buffer, *ret_len bytes;
 * NULL when there is none). */
char *console_ring_copy(Vm *vm, size_t *ret_len);

/* web.c: the web console (--web-listen), docs/architecture.md "Web console". */
#define WEB_TOKEN_LEN 43 /* session ids: 256 random bits, base64url */
#define WEB_SPICE_HTML5_DIR "/usr/share/spice-html5"
/* Listens when o->web_listen is set (0 and nothing done otherwise). */
int web_init(Hsd *h, const HsdOptions *o, HsError *err);
Web *web_free(Web *w);
/* "http://ADDR:PORT" for ticket URLs; NULL when off. */
const char *web_base_url(Hsd *h);
int web_random_token(char out[WEB_TOKEN_LEN + 1]);
/* The guest printed on its serial port: to the web viewers too. */
void web_serial_output(Vm *vm, const char *data, size_t len);
/* QEMU is gone: the VM's viewers are closed. */
void web_vm_stopped(Vm *vm);

/* events.c */
void events_publish(Hsd *h, json_t *event /* stolen */);
void events_publish_state(Vm *vm, VmState old);
void events_subscribe(Hsd *h, HttpRequest *req, const char *vm_filter);
void events_heartbeat(Hsd *h);

/* metrics.c */
void metrics_init(Hsd *h);
void metrics_free(Hsd *h);
void metrics_reply(Hsd *h, HttpRequest *req);
void metrics_vm_reset(Vm *vm);

/* ksm-tuner.c */
void ksm_tuner_init(Hsd *h, KsmMode mode);
void ksm_tuner_free(Hsd *h);
void ksm_tuner_tick(Hsd *h);
int ksm_tuner_configure(Hsd *h, json_t *body, HsError *err);
json_t *ksm_tuner_to_json(Hsd *h);

/* balloon.c: guest memory stats and the automatic balloon policy, on one
 * timer for all VMs. */
void balloon_init(Hsd *h, const HsdOptions *o);
void balloon_free(Hsd *h);
/* SIGHUP: the policy settings the options name. */
void balloon_reload(Hsd *h, const HsdOptions *o);
/* QMP is up (a start or a re-adopted QEMU): ask for guest stats. */
void balloon_vm_ready(Vm *vm);
/* QEMU is gone (or the VM freed): forget its stats and automatic target. */
void balloon_vm_reset(Vm *vm);
int balloon_configure(Hsd *h, json_t *body, HsError *err);
json_t *balloon_to_json(Hsd *h);
/* GET /v1/vms/NAME's "balloon" object. */
json_t *balloon_vm_json(Vm *vm);

/* firmware.c: UEFI (OVMF and the VM's variable store) and the TPM
 * (swtpm, started with QEMU, stopped after it). */
#define FW_OVMF_DIR "/usr/share/OVMF"
#define FW_SWTPM "/usr/bin/swtpm"
/* At create: the firmware files and swtpm the spec needs are there. */
int firmware_spec_check(Hsd *h, const VmSpec *s, HsError *err);
/* The variable store (from OVMF's template, or the VM's template's
 * store) and the TPM state dir, made when missing: at create and start. */
int firmware_vm_prepare(Vm *vm, HsError *err);
/* A start: OVMF's and the store's descriptors, swtpm started on a socket
 * pair whose other end goes to QEMU. */
int firmware_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, HsError *err);
/* QEMU is gone (or never started): swtpm stopped. */
void firmware_vm_release(Vm *vm);
/* hsd restarted: the VM's swtpm found again from its pidfile. */
void firmware_vm_adopt(Vm *vm);
void firmware_vm_free(Vm *vm);
/* GET /v1/vms/NAME's "firmware" object. */
json_t *firmware_vm_json(Vm *vm);
/* Snapshots (storage.c): the store and TPM state copied with snapshot
 * `snap`, dropped with it; a rollback's copies prepared before disks.json
 * records it, then put in place (commit) or dropped. */
int firmware_snapshot_save(Vm *vm, const char *snap, HsError *err);
void firmware_snapshot_drop(Vm *vm, const char *snap);
/* A file of the snapshots dir that is a snapshot's firmware copy: its
 * snapshot's name. */
bool firmware_snapshot_file(const char *file, char *snap, size_t size);
int firmware_rollback_prepare(Vm *vm, const char *snap, HsError *err);
void firmware_rollback_finish(Vm *vm, bool commit);
/* A template made from the VM: its variable store goes along (1), or it
 * has none (0). */
int firmware_template_save(Vm *vm, int tmpl_dirfd, HsError *err);

/* network.c: networks (/v1/networks), SR-IOV (/v1/sriov), and the host
 * side of VMs' NICs: taps and macvtaps made for a start and handed to
 * QEMU, VLANs on bridge ports, live NIC changes (/v1/vms/NAME/nics). */
int network_init(Hsd *h, HsError *err);
void network_free(Hsd *h);
/* The NICs of a spec about to be created: their networks exist and agree
 * on the type; MACs unique on the host (generated ones are drawn again,
 * given ones clash: 409 mac-in-use). vm: the VM the spec is of (its own
 * MACs do not clash); NULL: a new VM. */
int network_spec_check(Hsd *h, VmSpec *s, const char *vm, HsError *err);
/* A start: each NIC's tap or macvtap made (VLAN set, vhost-net opened),
 * its descriptors added to fds and put in l->nic_fds. */
int network_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, HsError *err);
/* VF NICs (on SR-IOV networks): whether the spec has any; a free VF of
 * each NIC's PF picked, as host functions for hostdev.c to bind (after the
 * VM's host devices', out[0..*ret_n)); then, once the binding is cleared,
 * each VF's MAC and VLAN set through its PF. */
bool network_vm_has_vfs(Vm *vm);
int network_vm_vfs(Vm *vm, QemuHostFn *out, size_t max, size_t *ret_n, HsError *err);
int network_vm_vfs_configure(Vm *vm, HsError *err);
/* QMP is up on a start: links asked to be down are set down before cont. */
void network_vm_qmp_ready(Vm *vm);
/* QEMU is gone (or never started): macvtaps deleted, state dropped. */
void network_vm_release(Vm *vm);
void network_vm_adopted(Vm *vm);
void network_vm_free(Vm *vm);
void network_vm_event(Vm *vm, const char *name, json_t *data);
/* GET /v1/vms/NAME's "nics_state"; NULL when not active. */
json_t *network_vm_json(Vm *vm);
void api_networks(Hsd *h, HttpRequest *req, const char *rest);
void api_sriov(Hsd *h, HttpRequest *req, const char *rest);
void api_vm_nics(Hsd *h, Vm *vm, HttpRequest *req, const char *id);

/* hostdev.c: PCI passthrough (the host side is vfio/, binding runs in
 * the hs-vfio tool). */
int hostdev_init(Hsd *h, const char *sysroot, HsError *err);
void hostdev_free(Hsd *h);
/* Claims of VMs whose QEMU is gone go back to the host (after load). */
void hostdev_recover(Hsd *h);
typedef void (*HostdevDoneCb)(Vm *vm, const HsError *err, void *ud);
/* Before QEMU starts: the spec's devices checked and bound to vfio-pci.
 * 0: the VM has none (cb not called); 1: binding, cb follows; < 0: err
 * (nothing changed). */
int hostdev_vm_bind(Vm *vm, HostdevDoneCb cb, void *ud, HsError *err);
bool hostdev_vm_busy(Vm *vm);
/* The bound functions into QEMU's launch. */
void hostdev_vm_launch(Vm *vm, QemuLaunch *l);
uint64_t hostdev_memlock_bytes(const VmSpec *s);
/* QEMU (pid) may lock guest RAM + 1 GiB. */
int hostdev_set_memlock(Vm *vm, pid_t pid, HsError *err);
/* QEMU is gone: its devices go back to their host drivers (async). */
void hostdev_vm_release(Vm *vm);
void hostdev_vm_free(Vm *vm);
int hostdev_vm_check_migratable(Vm *vm, HsError *err);
/* GET /v1/vms/NAME's "hostdevs_bound"; NULL when the spec has none. */
json_t *hostdev_vm_json(Vm *vm);
/* QMP events (DEVICE_DELETED of an unplug). */
void hostdev_vm_event(Vm *vm, const char *name, json_t *data);
/* /v1/pci (rest: what follows "/v1/pci/", "" for the list). */
void api_pci(Hsd *h, HttpRequest *req, const char *rest);
/* Where a hot-plugged device goes, from query-pci's reply: an empty spare
 * root port (q35: bus "hs-hotport<k>", slot -1) or a free slot from 0x18 on
 * pci.0 (pc). -ENOSPC (kind no-free-slot) when there is none. */
int hostdev_hotplug_place(Vm *vm, json_t *reply, char *bus, size_t size, int *slot,
			  HsError *err);
/* POST /v1/vms/NAME/hostdevs (hot-plug), DELETE .../hostdevs/ADDR. */
void api_vm_hostdevs(Hsd *h, Vm *vm, HttpRequest *req, const char *addr);

/* spice.c: a display's SPICE server. hsd listens on the VM's spice.sock
 * and hands each connection to QEMU (getfd + add_client), so QEMU opens
 * nothing by path; with display.listen QEMU also listens on TCP at a port
 * of --spice-ports, ticketing on. */
#define SPICE_SOCK "spice.sock"
/* A start: the port picked (into l->spice_port) and the socket made. */
int spice_vm_launch(Vm *vm, QemuLaunch *l, HsError *err);
/* QMP is up (a start, or a QEMU re-adopted: the socket made again and the
 * port asked from QEMU): connections are handed over from now on. */
void spice_vm_qmp_ready(Vm *vm);
/* QEMU is gone (or never started): the socket removed. */
void spice_vm_release(Vm *vm);
/* GET /v1/vms/NAME's "spice"; NULL when none. */
json_t *spice_vm_json(Vm *vm);
/* POST /v1/vms/NAME/console-tickets (the method checked by the caller). */
void api_vm_console_tickets(Hsd *h, Vm *vm, HttpRequest *req);

/* agent.c: the QEMU guest agent (spec "agent"), docs/architecture.md
 * "Guest agent". No call blocks or waits long: an absent or hung agent
 * makes only agent calls fail (409 agent-unavailable, 504 timeout). */
typedef struct VmAgent VmAgent;
/* An agent call's outcome: err NULL on success, ret (borrowed; may be
 * NULL) the agent's "return" (fsfreeze: the number of file systems) or,
 * for agent_vm_refresh, the VM's agent object. err->kind: "agent-unavailable"
 * (-ENOTCONN), "timeout" (-ETIMEDOUT), "agent-error" (-EREMOTEIO: the
 * agent's own error). */
typedef void (*AgentDoneCb)(Vm *vm, const HsError *err, json_t *ret, void *ud);
/* The guest has the port open and its agent answered a sync. */
bool agent_vm_available(Vm *vm);
/* guest-fsfreeze-freeze (freeze) or -thaw. timeout <= 0: 30 s for a
 * freeze, 10 s for a thaw. A freeze needs agent_vm_available; once one
 * is tried, a thaw is owed: after a successful freeze the caller thaws
 * (whatever became of its snapshot); after a failed or timed-out one hsd
 * thaws by itself, and keeps trying (guest-fsfreeze-status checks a thaw
 * that timed out) until one is confirmed; a freeze nobody thaws is thawed
 * after 5 minutes. < 0 (err) when the call cannot be sent; else cb once. */
int agent_vm_fsfreeze(Vm *vm, bool freeze, double timeout, AgentDoneCb cb, void *ud,
		      HsError *err);
/* guest-shutdown (mode powerdown). It answers nothing when it works: cb
 * gets err NULL once it is sent and unanswered, an error if the agent
 * refuses. */
int agent_vm_shutdown(Vm *vm, AgentDoneCb cb, void *ud, HsError *err);
/* Asks the agent afresh (at most ~5 s); cb gets agent_vm_json's object. */
int agent_vm_refresh(Vm *vm, AgentDoneCb cb, void *ud, HsError *err);
/* Hooks of vm.c: a start's socket (qga.sock, into l->agent_fd); QMP up (a
 * start or an adoption: whether the port is open is asked); QMP events
 * (VSERPORT_CHANGE); QEMU gone (connection and cache dropped); the Vm
 * freed (QEMU left running). */
int agent_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, HsError *err);
void agent_vm_qmp_ready(Vm *vm);
void agent_vm_qmp_event(Vm *vm, const char *name, json_t *data);
void agent_vm_release(Vm *vm);
void agent_vm_free(Vm *vm);
/* GET /v1/vms/NAME's "agent": {"connected", "version", "os", "hostname",
 * "interfaces", "updated", "fs_frozen"}; NULL when the spec has no agent. */
json_t *agent_vm_json(Vm *vm);
/* GET /v1/vms/NAME/agent: fresh answers (the method checked by the caller). */
void api_vm_agent(Hsd *h, Vm *vm, HttpRequest *req);

/* api.c */
void api_handle(HttpRequest *req, void *userdata);
/* A request answered later (lifecycle and storage calls). */
typedef struct Pending {
	HttpRequest *req;
	Hsd *hsd;
} Pending;
Pending *pending_new(Hsd *h, HttpRequest *req);
/* r < 0: answer err now; else the answer comes later (http_defer). */
void reply_or_defer(HttpRequest *req, Pending *p, int r, const HsError *err);
/* The body as a JSON object (an empty body: {} when allow_empty); on
 * failure the request is answered and NULL returned. */
json_t *body_json(HttpRequest *req, bool allow_empty);
bool body_keys_ok(HttpRequest *req, json_t *j, const char *const *allowed);
/* j is an object with no other keys than `allowed` (NULL-terminated). */
int object_keys_check(json_t *j, const char *const *allowed, HsError *err);
void method_not_allowed(HttpRequest *req, const char *allowed);

/* Every file of the spec beneath an allowed directory (POST /v1/vms and
 * incoming migrations). */
int api_check_spec_files(Hsd *h, const VmSpec *spec, HsError *err);

/* migrate.c: live migration (see the top of migrate.c). */
/* Destination: POST /v1/migrations/incoming; answers req itself (201 with
 * where to send once QEMU listens) unless it fails at once (< 0, err). */
int migrate_incoming(Hsd *h, json_t *body, HttpRequest *req, HsError *err);
int migrate_incoming_cancel(Hsd *h, const char *name, HsError *err);
/* Source: POST /v1/vms/NAME/migrate (starts it), DELETE .../migration,
 * POST .../migration/confirm (true: cb once QEMU is gone) or .../abort
 * (false: cb at once, the guest resuming). */
int migrate_start(Vm *vm, json_t *body, HsError *err);
int migrate_cancel(Vm *vm, HsError *err);
int migrate_finish(Vm *vm, bool confirm, VmDoneCb cb, void *ud, HsError *err);
json_t *migrate_vm_json(Vm *vm);
/* Hooks of vm.c: QMP events; QEMU gone (returns MIGRATE_EXIT_*); the VM
 * loaded at hsd's start, and its QEMU re-adopted; the Vm freed. */
enum { MIGRATE_EXIT_NONE, MIGRATE_EXIT_MIGRATED, MIGRATE_EXIT_INCOMING_FAILED };
void migrate_vm_event(Vm *vm, const char *name, json_t *data);
int migrate_vm_exited(Vm *vm);
void migrate_vm_loaded(Vm *vm);
void migrate_vm_adopted(Vm *vm);
void migrate_vm_free(Vm *vm);
bool migrate_vm_incoming(Vm *vm);
/* Calls that would disturb a migration under way are refused (409). */
int migrate_vm_check_idle(Vm *vm, HsError *err);

/* api-storage.c: /v1/templates..., /v1/vms/NAME/snapshots... */
void api_templates(Hsd *h, HttpRequest *req, const char *name);
void api_snapshots(Hsd *h, Vm *vm, HttpRequest *req, const char *snap, const char *action);
/* POST /v1/vms with managed disks: answered once they are made. */
void api_create_storage(Hsd *h, Vm *vm, HttpRequest *req);
/* Audit: every mutating call, console attach and refusal, one JSON line. */
void api_answered(HttpRequest *req, unsigned status, const char *error_code, void *userdata);

/* host.c */
void host_probe(HostInfo *host, const char *qemu_binary);
void host_refresh(HostInfo *host);
/* MemTotal and MemAvailable of ROOT/proc/meminfo, bytes. */
int host_read_meminfo(int rootfd, uint64_t *ret_total, uint64_t *ret_available);
/* VmRSS of a process, bytes (0 if unknown). */
uint64_t host_process_rss(int rootfd, pid_t pid);
/* KVM is usable only if QEMU, running as `user`, can open /dev/kvm. */
void host_check_kvm_for(HostInfo *host, const QemuUser *user);
json_t *host_to_json(const HostInfo *host, Hsd *h);
