/* SPDX-License-Identifier: Apache-2.0 */
/* Warm templates: a template that holds a booted guest's RAM and device
 * state, and clones that start by resuming it (see docs/architecture.md,
 * "Warm templates").
 *
 *   MEMORY_DIR/<vm>.ram                    a memory_file VM's RAM (share=on)
 *   <state>/templates/<name>/ram           the template's RAM (0444)
 *   <state>/templates/<name>/state         its device state (x-ignore-shared)
 *   <state>/templates/<name>/template.json kind "warm", the source's spec
 *   <state>/vms/<clone>/warm-start         the clone has not run yet: its
 *                                          next start resumes the template
 *
 * QEMU (an unprivileged user) cannot open the template's files; clones map
 * a sealed memfd copy of the RAM (F_SEAL_WRITE: MAP_PRIVATE only, nobody
 * can change it) that hsd makes once per template and keeps while it runs. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "argv.h"
#include "hs-util.h"
#include "launch.h"
#include "storage.h"

typedef struct Hsd Hsd;
typedef struct Vm Vm;

#define WARM_CLONE_INFO_SIZE 512

int warm_init(Hsd *h, HsError *err);
void warm_free(Hsd *h);

/* Before a start: 0 (go on), 1 (the template's RAM is being loaded into
 * its sealed copy, by a tool; vm->warm_loading is set and
 * vm_warm_ready() follows), or -errno. */
int warm_vm_prepare(Vm *vm, HsError *err);
/* At a start of a memory_file VM: its RAM descriptor (a fresh file, or for
 * a clone's first start the template's sealed copy, with the saved state
 * queued as the incoming migration), and the fw_cfg record (info,
 * WARM_CLONE_INFO_SIZE bytes). 0 for VMs without memory_file. */
int warm_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *l, char *info, HsError *err);
/* A QMP event of the VM (MIGRATION: a capture's save has ended). */
void warm_vm_event(Vm *vm, const char *name, json_t *data);
/* QEMU is gone: its RAM file goes. */
void warm_vm_exited(Vm *vm);
/* The saved state is loaded: the clone has diverged from the template. */
void warm_vm_resumed(Vm *vm);
/* Is the VM a clone that never ran (its next start resumes the template)? */
bool warm_vm_fresh(Vm *vm);
/* After vm_define of a clone: mark it fresh. */
int warm_vm_created(Vm *vm, HsError *err);
/* POST /v1/vms {"name", "warm_template"}: the clone's spec (new reference)
 * from the template's, with new MACs and vmgenid. */
json_t *warm_clone_spec(Hsd *h, json_t *body, HsError *err);
/* POST /v1/templates {"warm": true}: see the top of warm.c. */
int warm_template_capture(Hsd *h, const char *name, Vm *vm, bool stop, StorageDoneCb cb,
			  void *ud, HsError *err);
/* Is a warm template being taken from the VM? */
bool warm_vm_capturing(Vm *vm);
/* A warm template being made (capture under way): its object with
 * "state": "making" (new reference), or NULL. */
json_t *warm_template_making_json(const char *name);
/* Appends one such object per capture under way to `list`. */
void warm_templates_making(json_t *list);
/* Template `name` deleted: drop its sealed copy. */
void warm_template_deleted(Hsd *h, const char *name);
/* GET /v1/vms/NAME's "warm" object (RAM shared with the template); NULL
 * for VMs without memory_file. */
json_t *warm_vm_json(Vm *vm);
/* Bytes of a running clone's RSS that are its template's pages (shared
 * with the other clones, not its own); 0 for other VMs. */
uint64_t warm_vm_shared_bytes(Vm *vm);
/* GET /v1/ksm's "warm_templates": per warm template, its RAM size, the
 * bytes hsd holds of it (one copy), its clones (defined, running), the
 * template pages they map (sum of each clone's) and what that saves (that
 * sum minus the one copy held), apart from KSM's figures. *ret_saved: the
 * sum of the savings. */
json_t *warm_host_json(Hsd *h, uint64_t *ret_saved);
