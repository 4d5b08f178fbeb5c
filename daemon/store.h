/* SPDX-License-Identifier: Apache-2.0 */
/* Durable VM state under the state dir: one directory per VM holding
 * spec.json (the definition) and status.json (last known runtime state).
 * Every write is atomic; a VM directory appears and disappears atomically
 * (built aside, then renamed), so a kill -9 at any point leaves every VM
 * either fully there or not there at all. */
#pragma once

#include <sys/types.h>

#include "spec.h"

typedef enum VmState {
	VM_STATE_DEFINED,
	VM_STATE_STARTING,
	VM_STATE_RUNNING,
	VM_STATE_PAUSED,
	VM_STATE_STOPPING,
	VM_STATE_STOPPED,
	VM_STATE_CRASHED,
	VM_STATE_INCOMING, /* a migration's destination: QEMU receives the VM */
	VM_STATE_MIGRATED, /* the record a VM that migrated away leaves */
	_VM_STATE_MAX,
} VmState;

const char *vm_state_to_string(VmState s);
int vm_state_from_string(const char *s, VmState *ret);
/* States in which a QEMU process is expected to exist. */
static inline int vm_state_is_active(VmState s)
{
	return s == VM_STATE_STARTING || s == VM_STATE_RUNNING || s == VM_STATE_PAUSED ||
	       s == VM_STATE_STOPPING || s == VM_STATE_INCOMING;
}

typedef struct VmStatus {
	VmState state;
	pid_t pid;           /* QEMU's pid while active, else 0 */
	double started_at;   /* wall clock of the last start, 0 if never */
	double stopped_at;   /* wall clock of the last exit, 0 if none */
	char exit_reason[256];
	char migrated_to[256]; /* VM_STATE_MIGRATED: where it went */
} VmStatus;

typedef struct Store {
	int dirfd; /* <state>/vms */
} Store;

int store_open(Store *st, const char *state_dir);
void store_close(Store *st);

/* Creates <vms>/<name> with spec.json and status.json; -EEXIST if there. */
int store_create(Store *st, const VmSpec *spec, const VmStatus *status);
int store_save_status(Store *st, const char *name, const VmStatus *status);
int store_save_spec(Store *st, const VmSpec *spec);
int store_delete(Store *st, const char *name);

typedef int (*StoreLoadCb)(const char *name, VmSpec *spec /* taken */, const VmStatus *status,
			   void *userdata);
/* Loads every VM (sorted by name). A VM whose files cannot be read is
 * reported through `bad` and skipped, never deleted. Half-made or
 * half-deleted directories from a crash are cleaned up. */
int store_load_all(Store *st, StoreLoadCb cb, void (*bad)(const char *name, const char *why,
							  void *userdata),
		   void *userdata);

json_t *vm_status_to_json(const VmStatus *s);
int vm_status_from_json(json_t *j, VmStatus *ret, HsError *err);
/* Host settings hsd keeps beside vms/ (ksm.json, balloon.json), so that an
 * API change survives restarts: written atomically (0600) as indented JSON. */
int store_save_setting(const char *state_dir, const char *file, json_t *j);
/* The saved setting (new reference in *ret): -ENOENT when none was saved,
 * -EINVAL when the file is not JSON. */
int store_load_setting(const char *state_dir, const char *file, json_t **ret);

/* Opens (creating) <vms>/<name> as a directory fd for per-VM files. */
int store_vm_dirfd(Store *st, const char *name);
