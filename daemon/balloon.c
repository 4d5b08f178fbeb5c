/* SPDX-License-Identifier: Apache-2.0 */
/* Ballooning beyond a fixed target: every guest is asked to report its
 * memory statistics (virtio-balloon guest-stats, QOM property of
 * balloon0), which one timer reads for all VMs with asynchronous QMP; on
 * the same timer, when the policy is on (auto), the host's MemAvailable and
 * those stats go to the pure policy (balloon-policy.c) and the targets it
 * decides are sent with QMP `balloon`. The user's target (balloon_mib)
 * stays the VM's normal one: the policy only goes below it under pressure
 * and returns to it. Settings are kept in STATE/balloon.json. */
#include <inttypes.h>
#include <string.h>

#include "hsd.h"

#define BALLOON_PATH "/machine/peripheral/balloon0"
#define SETTINGS_FILE "balloon.json"
#define DEFAULT_MAX_STEP_MIB 256
#define DEFAULT_MARGIN_MIB 64
#define MIN_STEP_MIB 16
/* Memory a balloon gave up counts as on its way to the host for this long
 * (seconds): guest RAM is backed by transparent huge pages, and a 2 MiB
 * page the balloon freed only in part is freed by the kernel's deferred
 * split, under memory pressure, so MemAvailable may show it only later.
 * Without this the policy would take the same memory again every tick. */
#define SETTLE_WINDOW 30.0
#define MIB_MAX (1ull << 40) /* 1 EiB in MiB: any host's memory */

static uint64_t configured_target(const Vm *vm)
{
	return vm->spec.balloon_mib ? vm->spec.balloon_mib : vm->spec.memory_mib;
}

/* The watermarks in force for those set (0: a share of MemTotal). */
static void watermarks_of(const Hsd *h, uint64_t low_mib, uint64_t high_mib, uint64_t *low,
			  uint64_t *high)
{
	const BalloonTuner *t = &h->balloon;
	uint64_t total = t->mem_total_mib ? t->mem_total_mib : h->host.mem_total >> 20;
	*low = low_mib ? low_mib : total / 10;
	*high = high_mib ? high_mib : total * 15 / 100;
}

static void watermarks(const Hsd *h, uint64_t *low, uint64_t *high)
{
	watermarks_of(h, h->balloon.low_mib, h->balloon.high_mib, low, high);
}

/* ---- guest stats ---- */

static int64_t stat_of(json_t *stats, const char *key)
{
	json_t *v = json_object_get(stats, key);
	/* Not reported: UINT64_MAX from QEMU, read as a real. */
	return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1;
}

static void on_stats(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	vm->balloon_inflight = false;
	if (err)
		return;
	json_t *ret = json_object_get(reply, "return"), *st = json_object_get(ret, "stats");
	BalloonStats *s = &vm->balloon_stats;
	s->last_update = (double)json_integer_value(json_object_get(ret, "last-update"));
	s->free = stat_of(st, "stat-free-memory");
	s->available = stat_of(st, "stat-available-memory");
	s->total = stat_of(st, "stat-total-memory");
	s->disk_caches = stat_of(st, "stat-disk-caches");
	s->major_faults = stat_of(st, "stat-major-faults");
	s->minor_faults = stat_of(st, "stat-minor-faults");
	s->swap_in = stat_of(st, "stat-swap-in");
	s->swap_out = stat_of(st, "stat-swap-out");
}

static void on_polling_set(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	vm->balloon_inflight = false;
	if (err) {
		if (err->code != -ECANCELED)
			log_debug("vm %s: no guest memory stats: %s", vm->spec.name, err->message);
		return;
	}
	vm->balloon_polling = true;
}

/* A re-adopted QEMU whose guest has less than its target: what the policy
 * of the hsd before took (it gives it back when it can). */
static void on_adopted_balloon(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	json_int_t actual = json_integer_value(
		json_object_get(json_object_get(reply, "return"), "actual"));
	if (err || actual <= 0)
		return;
	vm->balloon_actual = (uint64_t)actual;
	if ((uint64_t)actual >> 20 < configured_target(vm) && vm->spec.balloon_floor_mib)
		vm->balloon_auto = (uint64_t)actual >> 20;
}

void balloon_vm_ready(Vm *vm)
{
	if (!vm->qmp || vm->balloon_inflight)
		return;
	if (vm->adopting)
		qmp_client_execute(vm->qmp, "query-balloon", NULL, vm->hsd->qmp_timeout,
				   on_adopted_balloon, vm);
	json_t *args = json_pack("{s:s, s:s, s:I}", "path", BALLOON_PATH, "property",
				 "guest-stats-polling-interval", "value",
				 (json_int_t)vm->hsd->balloon.interval);
	if (qmp_client_execute(vm->qmp, "qom-set", args, vm->hsd->qmp_timeout, on_polling_set,
			       vm) == 0)
		vm->balloon_inflight = true;
}

void balloon_vm_reset(Vm *vm)
{
	memset(&vm->balloon_stats, 0, sizeof(vm->balloon_stats));
	vm->balloon_polling = false;
	vm->balloon_inflight = false;
	vm->balloon_auto = 0;
	vm->balloon_settling = 0;
}

static void collect(Hsd *h)
{
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm->qmp || !vm->qmp_ready || vm->balloon_inflight)
			continue;
		if (!vm->balloon_polling) {
			balloon_vm_ready(vm); /* refused before: the device may be late */
			continue;
		}
		json_t *args = json_pack("{s:s, s:s}", "path", BALLOON_PATH, "property",
					 "guest-stats");
		if (qmp_client_execute(vm->qmp, "qom-get", args, h->balloon.interval, on_stats,
				       vm) == 0)
			vm->balloon_inflight = true;
	}
}

/* ---- the policy ---- */

static void on_balloon_reply(QmpClient *c, json_t *reply, const HsError *err, void *ud)
{
	Vm *vm = ud;
	if (err && err->code != -ECANCELED)
		log_warning("vm %s: automatic balloon target refused: %s", vm->spec.name,
			    err->message);
}

/* Sends `mib` as the VM's target if it differs from the one in force;
 * logged and published once per change. */
static void set_target(Vm *vm, uint64_t mib, const char *why)
{
	uint64_t target = configured_target(vm);
	uint64_t now = vm->balloon_auto ? vm->balloon_auto : target;
	if (mib == now || !vm->qmp)
		return;
	json_t *args = json_pack("{s:I}", "value", (json_int_t)(mib << 20));
	if (qmp_client_execute(vm->qmp, "balloon", args, vm->hsd->qmp_timeout, on_balloon_reply,
			       vm) < 0)
		return;
	vm->balloon_auto = mib < target ? mib : 0;
	if (mib < now) {
		vm->balloon_settling += now - mib;
		vm->balloon_settling_since = hs_now();
	} else {
		vm->balloon_settling = 0;
	}
	log_info("vm %s: balloon %s from %" PRIu64 " to %" PRIu64 " MiB (target %" PRIu64
		 " MiB, floor %" PRIu64 " MiB; %s)",
		 vm->spec.name, mib < now ? "lowered" : "raised", now, mib, target,
		 vm->spec.balloon_floor_mib, why);
	events_publish(vm->hsd, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:f}", "type", "balloon",
					  "vm", vm->spec.name, "target_mib", (json_int_t)mib,
					  "previous_mib", (json_int_t)now, "configured_mib",
					  (json_int_t)target, "reason", why, "time", hs_wall()));
}

static bool takes_part(const Vm *vm)
{
	return vm->status.state == VM_STATE_RUNNING && vm->qmp && vm->qmp_ready;
}

static void policy_tick(Hsd *h)
{
	BalloonTuner *t = &h->balloon;
	if (!t->auto_mode) {
		/* Off: whatever the policy took goes back at once. */
		for (Vm *vm = h->vms; vm; vm = vm->next)
			if (vm->balloon_auto && takes_part(vm))
				set_target(vm, configured_target(vm), "policy off");
		t->pressure = false;
		t->last = (BalloonPolicyResult){0};
		return;
	}
	uint64_t total, avail;
	int r = host_read_meminfo(h->host.rootfd, &total, &avail);
	if (r < 0) {
		snprintf(t->error, sizeof(t->error), "cannot read /proc/meminfo: %s", strerror(-r));
		return;
	}
	t->error[0] = '\0';
	t->mem_total_mib = total >> 20;
	t->mem_available_mib = avail >> 20;
	size_t n = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next)
		n += takes_part(vm);
	_cleanup_free_ BalloonPolicyVm *in = n ? calloc(n, sizeof(*in)) : NULL;
	_cleanup_free_ Vm **vms = n ? calloc(n, sizeof(*vms)) : NULL;
	if (n && (!in || !vms))
		return;
	size_t i = 0;
	double wall = hs_wall();
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!takes_part(vm))
			continue;
		const BalloonStats *s = &vm->balloon_stats;
		if (hs_now() - vm->balloon_settling_since > SETTLE_WINDOW)
			vm->balloon_settling = 0;
		vms[i] = vm;
		in[i] = (BalloonPolicyVm){
			.target = configured_target(vm),
			.floor = vm->spec.balloon_floor_mib,
			.current = vm->balloon_auto,
			.actual = vm->balloon_actual >> 20,
			.settling = vm->balloon_settling,
			.has_stats = s->last_update > 0 && s->available >= 0,
			.guest_available = s->available > 0 ? (uint64_t)s->available >> 20 : 0,
			.stats_age = wall - s->last_update,
		};
		i++;
	}
	BalloonPolicyConfig cfg = {
		.max_step = t->max_step_mib,
		.min_step = MIN_STEP_MIB,
		.margin = t->margin_mib,
		/* A few missed reports are fine; a guest silent longer is not
		 * known well enough to take memory from. */
		.stale_after = 3 * t->interval + 10,
	};
	watermarks(h, &cfg.low, &cfg.high);
	bool was = t->pressure;
	balloon_policy_decide(&cfg, t->mem_available_mib, was, in, n, &t->last);
	t->pressure = t->last.pressure;
	if (was != t->pressure)
		log_info("balloon: host memory pressure %s (MemAvailable %" PRIu64
			 " MiB; low %" PRIu64 ", high %" PRIu64 " MiB)",
			 t->pressure ? "began" : "ended", t->mem_available_mib, cfg.low, cfg.high);
	const char *phase = balloon_phase_to_string(t->last.phase);
	for (i = 0; i < n; i++)
		set_target(vms[i], in[i].new_target, in[i].floor ? phase : "not in the policy");
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	Hsd *h = w->data;
	collect(h);
	policy_tick(h);
}

/* ---- settings ---- */

static json_t *config_to_json(const BalloonTuner *t)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:f}", "mode", t->auto_mode ? "auto" : "off",
			 "low_mib", (json_int_t)t->low_mib, "high_mib", (json_int_t)t->high_mib,
			 "max_step_mib", (json_int_t)t->max_step_mib, "margin_mib",
			 (json_int_t)t->margin_mib, "stats_interval_s", t->interval);
}

static int get_mib(json_t *j, const char *key, uint64_t min, uint64_t *ret, HsError *err)
{
	json_t *v = json_object_get(j, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
	    (uint64_t)json_integer_value(v) > MIB_MAX)
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "%s: an integer of MiB from %" PRIu64 " to %llu", key, min,
				    MIB_MAX);
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

/* Validates a (partial) configuration over *t's. stats_interval_s is an
 * hsd option only (shown, and accepted unchanged in a saved file). */
static int config_from_json(Hsd *h, json_t *j, BalloonTuner *t, HsError *err)
{
	static const char *const keys[] = {"mode",	 "low_mib",    "high_mib", "max_step_mib",
					   "margin_mib", "stats_interval_s", NULL};
	int r = object_keys_check(j, keys, err);
	if (r < 0)
		return r;
	BalloonTuner c = *t;
	json_t *v = json_object_get(j, "mode");
	if (v) {
		const char *m = json_string_value(v);
		if (!m || (strcmp(m, "auto") && strcmp(m, "off")))
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "mode: must be 'auto' or 'off'");
		c.auto_mode = !strcmp(m, "auto");
	}
	r = get_mib(j, "low_mib", 0, &c.low_mib, err);
	if (r == 0)
		r = get_mib(j, "high_mib", 0, &c.high_mib, err);
	if (r == 0)
		r = get_mib(j, "max_step_mib", 1, &c.max_step_mib, err);
	if (r == 0)
		r = get_mib(j, "margin_mib", 0, &c.margin_mib, err);
	if (r < 0)
		return r;
	uint64_t low, high;
	watermarks_of(h, c.low_mib, c.high_mib, &low, &high);
	if (low > high)
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "low_mib: %" PRIu64 " MiB is above high_mib (%" PRIu64
				    " MiB): pressure starts below low and ends above high",
				    low, high);
	t->auto_mode = c.auto_mode;
	t->low_mib = c.low_mib;
	t->high_mib = c.high_mib;
	t->max_step_mib = c.max_step_mib;
	t->margin_mib = c.margin_mib;
	return 0;
}

int balloon_configure(Hsd *h, json_t *body, HsError *err)
{
	BalloonTuner c = h->balloon;
	int r = config_from_json(h, body, &c, err);
	if (r < 0)
		return r;
	json_auto_t *j = config_to_json(&c);
	if ((r = store_save_setting(h->state_dir, SETTINGS_FILE, j)) < 0)
		return hs_error_set(err, r, r == -ENOSPC ? "no-space" : "internal",
				    "cannot save the balloon policy's settings");
	bool mode_changed = c.auto_mode != h->balloon.auto_mode;
	h->balloon.auto_mode = c.auto_mode;
	h->balloon.low_mib = c.low_mib;
	h->balloon.high_mib = c.high_mib;
	h->balloon.max_step_mib = c.max_step_mib;
	h->balloon.margin_mib = c.margin_mib;
	uint64_t low, high;
	watermarks(h, &low, &high);
	if (mode_changed)
		log_info("balloon: policy %s (low %" PRIu64 " MiB, high %" PRIu64 " MiB)",
			 c.auto_mode ? "auto" : "off", low, high);
	policy_tick(h);
	return 0;
}

static json_t *options_json(const HsdOptions *o)
{
	json_t *j = json_object();
	if (o->balloon_policy_set)
		json_object_set_new(j, "mode", json_string(o->balloon_auto ? "auto" : "off"));
	if (o->balloon_low_mib)
		json_object_set_new(j, "low_mib", json_integer((json_int_t)o->balloon_low_mib));
	if (o->balloon_high_mib)
		json_object_set_new(j, "high_mib", json_integer((json_int_t)o->balloon_high_mib));
	return j;
}

void balloon_init(Hsd *h, const HsdOptions *o)
{
	BalloonTuner *t = &h->balloon;
	t->auto_mode = o->balloon_auto;
	t->low_mib = o->balloon_low_mib;
	t->high_mib = o->balloon_high_mib;
	t->max_step_mib = DEFAULT_MAX_STEP_MIB;
	t->margin_mib = DEFAULT_MARGIN_MIB;
	t->interval = o->balloon_stats_interval;
	HsError err = {0};
	json_auto_t *given = options_json(o);
	if (config_from_json(h, given, t, &err) < 0) {
		log_warning("balloon: %s; watermarks back to 10 %% and 15 %% of MemTotal",
			    err.message);
		t->low_mib = t->high_mib = 0;
	}
	/* A setting saved through the API wins, as for KSM. */
	json_auto_t *saved = NULL;
	int r = store_load_setting(h->state_dir, SETTINGS_FILE, &saved);
	if ((r < 0 && r != -ENOENT) || (r == 0 && config_from_json(h, saved, t, &err) < 0))
		log_warning("balloon: ignoring %s/%s: %s", h->state_dir, SETTINGS_FILE,
			    r < 0 ? strerror(-r) : err.message);
	uint64_t low, high;
	watermarks(h, &low, &high);
	log_info("balloon: policy %s (low %" PRIu64 " MiB, high %" PRIu64
		 " MiB), guest stats every %g s",
		 t->auto_mode ? "auto" : "off", low, high, t->interval);
	ev_timer_init(&t->timer, on_tick, t->interval, t->interval);
	t->timer.data = h;
	ev_timer_start(h->loop, &t->timer);
}

void balloon_reload(Hsd *h, const HsdOptions *o)
{
	json_auto_t *j = options_json(o);
	HsError err = {0};
	if (json_object_size(j) && balloon_configure(h, j, &err) < 0)
		log_error("SIGHUP: balloon policy: %s", err.message);
}

void balloon_free(Hsd *h)
{
	ev_timer_stop(h->loop, &h->balloon.timer);
}

/* ---- answers ---- */

static json_t *stats_json(const BalloonStats *s)
{
	json_t *o = json_object();
	const struct {
		const char *key;
		int64_t v;
		bool mib;
	} f[] = {
		{"free_mib", s->free, true},
		{"available_mib", s->available, true},
		{"total_mib", s->total, true},
		{"disk_caches_mib", s->disk_caches, true},
		{"major_faults", s->major_faults, false},
		{"minor_faults", s->minor_faults, false},
		{"swap_in", s->swap_in, false},
		{"swap_out", s->swap_out, false},
	};
	for (size_t i = 0; i < ARRAY_SIZE(f); i++)
		if (f[i].v >= 0)
			json_object_set_new(o, f[i].key,
					    json_integer(f[i].mib ? f[i].v >> 20 : f[i].v));
	json_object_set_new(o, "age_s", json_real(hs_wall() - s->last_update));
	return o;
}

json_t *balloon_vm_json(Vm *vm)
{
	Hsd *h = vm->hsd;
	json_t *o = json_pack("{s:I, s:I, s:b}", "target_mib", (json_int_t)configured_target(vm),
			      "floor_mib", (json_int_t)vm->spec.balloon_floor_mib, "auto",
			      h->balloon.auto_mode && vm->spec.balloon_floor_mib > 0);
	if (!vm_state_is_active(vm->status.state))
		return o;
	if (vm->balloon_auto)
		json_object_set_new(o, "auto_target_mib",
				    json_integer((json_int_t)vm->balloon_auto));
	if (vm->balloon_actual)
		json_object_set_new(o, "actual_mib",
				    json_integer((json_int_t)(vm->balloon_actual >> 20)));
	if (vm->balloon_stats.last_update > 0)
		json_object_set_new(o, "stats", stats_json(&vm->balloon_stats));
	return o;
}

json_t *balloon_to_json(Hsd *h)
{
	BalloonTuner *t = &h->balloon;
	uint64_t total, avail, low, high;
	if (host_read_meminfo(h->host.rootfd, &total, &avail) == 0) {
		t->mem_total_mib = total >> 20;
		t->mem_available_mib = avail >> 20;
	}
	watermarks(h, &low, &high);
	json_t *vms = json_array();
	uint64_t reclaimed = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm_state_is_active(vm->status.state))
			continue;
		json_t *o = balloon_vm_json(vm);
		uint64_t target = configured_target(vm);
		uint64_t got = vm->balloon_auto ? target - vm->balloon_auto : 0;
		reclaimed += got;
		json_object_set_new(o, "name", json_string(vm->spec.name));
		json_object_set_new(o, "reclaimed_mib", json_integer((json_int_t)got));
		json_array_append_new(vms, o);
	}
	json_t *o = json_pack(
		"{s:o, s:I, s:I, s:{s:I, s:I}, s:b, s:s, s:I, s:o}", "config", config_to_json(t),
		"low_mib", (json_int_t)low, "high_mib", (json_int_t)high, "host", "mem_total_mib",
		(json_int_t)t->mem_total_mib, "mem_available_mib", (json_int_t)t->mem_available_mib,
		"pressure", t->pressure, "phase", balloon_phase_to_string(t->last.phase),
		"reclaimed_mib", (json_int_t)reclaimed, "vms", vms);
	if (t->error[0])
		json_object_set_new(o, "error", json_string(t->error));
	return o;
}
