/* SPDX-License-Identifier: Apache-2.0 */
/* KSM always on: hsd turns KSM on at start and, every few seconds, feeds
 * the figures to the pure policy in ksm/ and writes the knobs it decides.
 * The configuration (mode, fixed values, CPU cap) is kept in
 * STATE/ksm.json so an API change survives restarts. */
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "hsd.h"

#define TICK 2.0
#define BOOTING_WINDOW 60.0

/* Writes the knobs whose value in sysfs (just read: another writer may
 * have changed them) differs from the decision. */
static int write_knobs(Hsd *h, const KsmDecision *d, const KsmStats *now)
{
	KsmTuner *t = &h->ksm;
	int r = 0;
	if (d->pages_to_scan != now->pages_to_scan)
		r = ksm_write_knob(h->host.rootfd, "pages_to_scan", d->pages_to_scan);
	if (r == 0 && d->sleep_millisecs != now->sleep_millisecs)
		r = ksm_write_knob(h->host.rootfd, "sleep_millisecs", d->sleep_millisecs);
	if (r == 0 && d->run != now->run)
		r = ksm_write_knob(h->host.rootfd, "run", (uint64_t)d->run);
	if (r == 0 && t->have_written &&
	    (now->pages_to_scan != t->written.pages_to_scan ||
	     now->sleep_millisecs != t->written.sleep_millisecs))
		log_debug("KSM: knobs were changed by someone else; set again");
	if (r < 0) {
		if (!t->error[0])
			log_warning("KSM: cannot tune /sys/kernel/mm/ksm: %s", strerror(-r));
		snprintf(t->error, sizeof(t->error), "cannot write /sys/kernel/mm/ksm: %s",
			 strerror(-r));
		return r;
	}
	if (!t->have_written || d->phase != t->written.phase)
		log_info("KSM: %s (pages_to_scan %" PRIu64 ", sleep %" PRIu64 " ms%s)",
			 ksm_phase_to_string(d->phase), d->pages_to_scan, d->sleep_millisecs,
			 d->cpu_capped ? ", capped by CPU" : "");
	t->error[0] = '\0';
	t->written = *d;
	t->have_written = true;
	return 0;
}

/* ksmd's priority follows the decision (the kernel's own 5 unless
 * boosting: also what a killed hsd left is put right), and goes back to 5
 * when hsd stops. */
static void set_ksmd_nice(KsmTuner *t, int nice)
{
	if (!t->can_renice || !t->ksmd)
		return;
	errno = 0;
	int cur = getpriority(PRIO_PROCESS, (id_t)t->ksmd);
	if (errno)
		return;
	if (cur != nice) {
		if (setpriority(PRIO_PROCESS, (id_t)t->ksmd, nice) < 0) {
			log_debug("KSM: cannot set ksmd's nice to %d: %m", nice);
			return;
		}
		log_debug("KSM: ksmd's nice %d -> %d", cur, nice);
	}
}

/* How fast a counter grew since the last tick, per second: 0 if it fell,
 * <0 (unknown) without a previous tick or too short a time since. */
static double growth_rate(uint64_t now, uint64_t before, double now_time, double before_time)
{
	double dt = now_time - before_time;
	if (before_time <= 0 || dt <= 0.1)
		return -1;
	return now > before ? (double)(now - before) / dt : 0;
}

/* The VMs whose memory KSM may merge: how fast they touch new memory (the
 * growth of their resident memory since the last tick, bytes/s; a VM that
 * stops takes its memory out of the sum: no growth), and how much more they
 * could touch (their memory as defined less their resident, bytes). */
static double mergeable_vm_memory(Hsd *h, double mono, uint64_t *untouched)
{
	KsmTuner *t = &h->ksm;
	uint64_t rss = 0;
	*untouched = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next)
		if (vm_state_is_active(vm->status.state) && vm->status.pid > 0 &&
		    !vm->spec.no_mem_merge) {
			uint64_t r = host_process_rss(h->host.rootfd, vm->status.pid);
			uint64_t mem = vm->spec.memory_mib << 20;
			rss += r;
			*untouched += mem > r ? mem - r : 0;
		}
	double growth = growth_rate(rss, t->vm_rss, mono, t->tick_time);
	t->vm_rss = rss; /* tick_time follows at the end of the tick */
	return growth;
}

void ksm_tuner_tick(Hsd *h)
{
	KsmTuner *t = &h->ksm;
	KsmStats now;
	if (ksm_read_stats(h->host.rootfd, &now) < 0 || !now.present) {
		snprintf(t->error, sizeof(t->error), "this kernel has no KSM");
		return;
	}
	host_refresh(&h->host);
	double mono = hs_now();
	uint64_t untouched;
	double vm_growth = mergeable_vm_memory(h, mono, &untouched);
	KsmPolicyInput in = {
		.config = t->config,
		.now = now,
		.before = t->last,
		.have_before = t->have_last,
		.interval = t->have_last ? mono - t->last_time : 0,
		.ksmd_cpu = -1,
		.mem_total = h->host.mem_total,
		.mem_available = h->host.mem_available,
		.vms_waiting = vm_count_pacing(h),
		.vm_memory_growth = vm_growth,
		.vm_untouched = untouched,
		.merge_rate = growth_rate(now.pages_sharing, t->stats.pages_sharing, mono,
					  t->tick_time),
		.current_pages_to_scan = now.pages_to_scan,
		.previous_phase = t->have_written ? (int)t->decision.phase : -1,
		.previous_pressure = t->have_written && t->decision.pressure,
	};
	double wall = hs_wall();
	for (Vm *vm = h->vms; vm; vm = vm->next)
		if (vm_state_is_active(vm->status.state) &&
		    wall - vm->status.started_at < BOOTING_WINDOW)
			in.vms_booting++;
	if (!t->ksmd)
		t->ksmd = ksm_find_ksmd(h->host.rootfd);
	uint64_t ticks;
	if (t->ksmd && ksm_read_cpu_ticks(h->host.rootfd, t->ksmd, &ticks) == 0) {
		double dt = mono - t->cpu_time;
		if (t->cpu_time > 0 && dt > 0.1 && ticks >= t->last_ticks)
			in.ksmd_cpu = (double)(ticks - t->last_ticks) /
				      ((double)sysconf(_SC_CLK_TCK) * dt);
		t->last_ticks = ticks;
		t->cpu_time = mono;
	}
	t->ksmd_cpu = in.ksmd_cpu;
	/* Compare against the counters of at least one full scan ago, so that
	 * "converged" means a whole pass found little. */
	if (!t->have_last || now.full_scans > t->last.full_scans || mono - t->last_time > 60) {
		t->last = now;
		t->last_time = mono;
		t->have_last = true;
	}
	t->stats = now;
	t->tick_time = mono;
	KsmDecision d = ksm_policy_decide(&in);
	t->decision = d;
	write_knobs(h, &d, &now);
	set_ksmd_nice(t, d.ksmd_nice);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	ksm_tuner_tick(w->data);
}

static json_t *config_to_json(const KsmConfig *c)
{
	return json_pack("{s:s, s:I, s:I, s:f, s:f, s:f}", "mode", ksm_mode_to_string(c->mode),
			 "pages_to_scan", (json_int_t)c->fixed_pages_to_scan, "sleep_millisecs",
			 (json_int_t)c->fixed_sleep_millisecs, "max_cpu", c->max_cpu,
			 "boost_max_cpu", c->boost_max_cpu, "pressure_available",
			 c->pressure_available);
}

/* Validates a (partial) configuration over `base`. */
static int config_from_json(json_t *j, KsmConfig *base, HsError *err)
{
	static const char *const keys[] = {"mode",	    "pages_to_scan",
					   "sleep_millisecs", "max_cpu",
					   "boost_max_cpu", "pressure_available",
					   NULL};
	json_t *v;
	KsmConfig c = *base;
	int r = object_keys_check(j, keys, err);
	if (r < 0)
		return r;
	v = json_object_get(j, "mode");
	if (v && (!json_is_string(v) || ksm_mode_from_string(json_string_value(v), &c.mode) < 0))
		return hs_error_set(err, -EINVAL, "invalid-request",
				    "mode: must be 'auto', 'off' or 'fixed'");
	v = json_object_get(j, "pages_to_scan");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 1000000)
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "pages_to_scan: an integer from 1 to 1000000");
		c.fixed_pages_to_scan = (uint64_t)json_integer_value(v);
	}
	v = json_object_get(j, "sleep_millisecs");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 60000)
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "sleep_millisecs: an integer from 1 to 60000");
		c.fixed_sleep_millisecs = (uint64_t)json_integer_value(v);
	}
	static const struct {
		const char *key;
		const char *what;
		size_t offset; /* of the double in KsmConfig */
	} fractions[] = {
		{"max_cpu", "a fraction of one CPU", offsetof(KsmConfig, max_cpu)},
		{"boost_max_cpu", "a fraction of one CPU", offsetof(KsmConfig, boost_max_cpu)},
		{"pressure_available", "a share of the host's memory",
		 offsetof(KsmConfig, pressure_available)},
	};
	for (size_t i = 0; i < ARRAY_SIZE(fractions); i++) {
		v = json_object_get(j, fractions[i].key);
		if (!v)
			continue;
		if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1)
			return hs_error_set(err, -EINVAL, "invalid-request",
					    "%s: %s, above 0 and at most 1", fractions[i].key,
					    fractions[i].what);
		double f = json_number_value(v);
		memcpy((char *)&c + fractions[i].offset, &f, sizeof(f));
	}
	*base = c;
	return 0;
}

int ksm_tuner_configure(Hsd *h, json_t *body, HsError *err)
{
	KsmConfig c = h->ksm.config;
	int r = config_from_json(body, &c, err);
	if (r < 0)
		return r;
	json_auto_t *j = config_to_json(&c);
	if ((r = store_save_setting(h->state_dir, "ksm.json", j)) < 0)
		return hs_error_set(err, r, r == -ENOSPC ? "no-space" : "internal",
				    "cannot save the KSM configuration");
	h->ksm.config = c;
	log_info("KSM: mode %s", ksm_mode_to_string(c.mode));
	ksm_tuner_tick(h);
	return 0;
}

void ksm_tuner_init(Hsd *h, KsmMode mode)
{
	KsmTuner *t = &h->ksm;
	t->config = (KsmConfig){.mode = mode, .fixed_pages_to_scan = 100,
				.fixed_sleep_millisecs = 20, .max_cpu = 0.25,
				.boost_max_cpu = 0.75, .pressure_available = 0.5};
	json_auto_t *j = NULL;
	int r = store_load_setting(h->state_dir, "ksm.json", &j);
	HsError err = {0};
	if ((r < 0 && r != -ENOENT) || (r == 0 && config_from_json(j, &t->config, &err) < 0))
		log_warning("KSM: ignoring %s/ksm.json: %s", h->state_dir,
			    r < 0 ? strerror(-r) : err.message);
	/* On a multi-node host, merge pages only within a node, so a VM kept
	 * on one node keeps its memory there. The knob can only change while
	 * nothing is merged. */
	KsmStats st;
	if (h->host.numa.n_nodes > 1 && ksm_read_stats(h->host.rootfd, &st) == 0 &&
	    st.merge_across_nodes == 1) {
		if (st.pages_shared == 0 &&
		    ksm_write_knob(h->host.rootfd, "merge_across_nodes", 0) == 0)
			log_info("KSM: %u NUMA nodes: merging within nodes only",
				 h->host.numa.n_nodes);
		else
			log_info("KSM: %u NUMA nodes but merge_across_nodes stays 1 (pages are "
				 "already merged)",
				 h->host.numa.n_nodes);
	}
	struct stat a, b;
	t->can_renice = fstat(h->host.rootfd, &a) == 0 && stat("/", &b) == 0 &&
			a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	ev_timer_init(&t->timer, on_tick, 0., TICK);
	t->timer.data = h;
	ev_timer_start(h->loop, &t->timer);
}

void ksm_tuner_free(Hsd *h)
{
	ev_timer_stop(h->loop, &h->ksm.timer);
	set_ksmd_nice(&h->ksm, KSMD_NICE_DEFAULT);
}

json_t *ksm_tuner_to_json(Hsd *h)
{
	KsmTuner *t = &h->ksm;
	long page = sysconf(_SC_PAGESIZE);
	/* The kernel's counters now; the policy's figures stay those of its
	 * last tick (a request must not make it decide on a few hundred
	 * milliseconds of ksmd's CPU time: that threw the scan rate back and
	 * forth while a benchmark polled). */
	KsmStats fresh;
	const KsmStats *s = ksm_read_stats(h->host.rootfd, &fresh) == 0 && fresh.present
				    ? &fresh
				    : &t->stats;
	json_t *vms = json_array();
	uint64_t vm_merging = 0;
	for (Vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm_state_is_active(vm->status.state) || vm->status.pid <= 0)
			continue;
		KsmProcess p = {0};
		ksm_read_process(h->host.rootfd, vm->status.pid, &p);
		vm_merging += p.merging_pages;
		json_t *o = json_pack("{s:s, s:b, s:I, s:I}", "name", vm->spec.name, "mem_merge",
				      !vm->spec.no_mem_merge, "merging_pages",
				      (json_int_t)p.merging_pages, "merging_bytes",
				      (json_int_t)(p.merging_pages * (uint64_t)page));
		if (p.has_profit)
			json_object_set_new(o, "profit_bytes", json_integer(p.profit));
		/* QEMU's own memory may still be merged; the guest's RAM not. */
		const char *why = vm_spec_ksm_excluded(&vm->spec);
		if (why)
			json_object_set_new(o, "guest_ram_not_merged", json_string(why));
		json_array_append_new(vms, o);
	}
	json_t *stats = json_pack(
		"{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "run", s->run, "pages_to_scan",
		(json_int_t)s->pages_to_scan, "sleep_millisecs", (json_int_t)s->sleep_millisecs,
		"pages_shared", (json_int_t)s->pages_shared, "pages_sharing",
		(json_int_t)s->pages_sharing, "pages_unshared", (json_int_t)s->pages_unshared,
		"pages_volatile", (json_int_t)s->pages_volatile, "full_scans",
		(json_int_t)s->full_scans, "page_size", (json_int_t)page);
	if (s->has_general_profit)
		json_object_set_new(stats, "general_profit", json_integer(s->general_profit));
	if (s->has_zero_pages)
		json_object_set_new(stats, "ksm_zero_pages", json_integer((json_int_t)s->ksm_zero_pages));
	if (s->merge_across_nodes >= 0)
		json_object_set_new(stats, "merge_across_nodes", json_integer(s->merge_across_nodes));
	json_t *o = json_pack("{s:b, s:o, s:s, s:b, s:b, s:o, s:I, s:I, s:o}", "present",
			      s->present, "config", config_to_json(&t->config), "phase",
			      ksm_phase_to_string(t->decision.phase), "cpu_capped",
			      t->decision.cpu_capped, "pressure", t->decision.pressure, "stats",
			      stats, "saved_bytes", (json_int_t)ksm_saved_bytes(s, page),
			      "vm_merging_bytes", (json_int_t)(vm_merging * (uint64_t)page), "vms",
			      vms);
	if (t->ksmd_cpu >= 0)
		json_object_set_new(o, "ksmd_cpu", json_real(t->ksmd_cpu));
	errno = 0;
	int nice = t->ksmd ? getpriority(PRIO_PROCESS, (id_t)t->ksmd) : 0;
	if (t->can_renice && t->ksmd && errno == 0)
		json_object_set_new(o, "ksmd_nice", json_integer(nice));
	if (t->error[0])
		json_object_set_new(o, "error", json_string(t->error));
	return o;
}
