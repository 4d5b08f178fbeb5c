/* SPDX-License-Identifier: Apache-2.0 */
/* hsd's storage: templates (immutable golden images) and the layered,
 * managed disks of VMs (thin qcow2 overlays), with snapshots.
 *
 *   <state>/templates/<name>/image          the template, read-only (0444)
 *   <state>/templates/<name>/template.json  what it is
 *   <state>/vms/<vm>/layers/<id>.qcow2      a VM's layers (see layers.h)
 *   <state>/vms/<vm>/disks.json             the layer tree and snapshots
 *   <state>/vms/<vm>/snapshots/<name>.state saved RAM + devices (--memory)
 *
 * Images are made and changed only by qemu-img (run through the spawner)
 * and by QEMU's block layer over QMP; never by hand. Every operation
 * records its intent in disks.json before acting, so a crash at any point
 * is finished or undone at the next start (storage_vm_recover). */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "argv.h"
#include "hs-util.h"
#include "launch.h"
#include "tool.h"

typedef struct Hsd Hsd;
typedef struct Vm Vm;

/* err is NULL on success; result (borrowed, may be NULL) is the answer. */
typedef void (*StorageDoneCb)(Hsd *h, const HsError *err, json_t *result, void *ud);

int storage_init(Hsd *h, HsError *err);
void storage_free(Hsd *h);

/* ---- templates ---- */
json_t *template_list_json(Hsd *h);
json_t *template_get_json(Hsd *h, const char *name, HsError *err);
/* Imports `path` (beneath an allowed dir) as template `name`: copied
 * (qemu-img convert: flattened, never sharing blocks with the source).
 * format: "qcow2", "raw" or NULL (probe; a source with a backing file is
 * refused). */
int template_import(Hsd *h, const char *name, const char *path, const char *format,
		    StorageDoneCb cb, void *ud, HsError *err);
/* A stopped VM's disk (its whole chain, flattened) becomes a template. */
int template_from_vm(Hsd *h, const char *name, Vm *vm, unsigned disk, StorageDoneCb cb,
		     void *ud, HsError *err);
/* Refused while any VM (or a snapshot of one) uses it; the error names them. */
int template_delete(Hsd *h, const char *name, HsError *err);
/* Does template `name` exist? Fills its format and virtual size. */
bool template_lookup(Hsd *h, const char *name, VmDiskFormat *format, uint64_t *size);

/* ---- a VM's managed disks ---- */
/* At load: reads disks.json, finishes or undoes an interrupted operation,
 * removes layer files nothing refers to. */
int storage_vm_load(Vm *vm);
/* A re-adopted VM's QMP is up: check and carry on what needs QEMU. */
void storage_vm_adopted(Vm *vm);
/* After vm_define: makes the first layer of every managed disk. */
int storage_vm_create(Vm *vm, StorageDoneCb cb, void *ud, HsError *err);
/* Opens every layer and fills launch->chains (chains: VM_MAX_DISKS slots
 * of the caller's) and the cloud-init volume. */
int storage_vm_launch(Vm *vm, ChildFds *fds, QemuLaunch *launch, QemuDiskChain *chains,
		      HsError *err);
/* Can the VM start now (no storage operation half done)? */
int storage_vm_check_idle(Vm *vm, HsError *err);
void storage_vm_free(Vm *vm);
json_t *storage_vm_disks_json(Vm *vm);

int storage_snapshot_create(Vm *vm, const char *name, bool memory, StorageDoneCb cb, void *ud,
			    HsError *err);
int storage_snapshot_rollback(Vm *vm, const char *name, StorageDoneCb cb, void *ud,
			      HsError *err);
int storage_snapshot_delete(Vm *vm, const char *name, StorageDoneCb cb, void *ud,
			    HsError *err);
json_t *storage_snapshots_json(Vm *vm);

/* Memory snapshots: QEMU was started with -incoming defer; feed it the
 * state. done(vm, err) once it is loaded. */
typedef void (*StorageIncomingCb)(Vm *vm, const HsError *err);
int storage_vm_incoming(Vm *vm, StorageIncomingCb done);
/* A QMP event of the VM (MIGRATION: the incoming state is loaded). */
void storage_vm_event(Vm *vm, const char *name, json_t *data);
bool storage_vm_has_incoming(Vm *vm);
/* The state to load at the next start (fd taken); ignore_shared: saved
 * with x-ignore-shared (a warm template: RAM comes from its file). */
int storage_vm_set_incoming(Vm *vm, int fd, bool ignore_shared);
bool storage_snapshot_exists(Vm *vm, const char *snap);
/* A warm capture: the one managed disk's layer frozen by snapshot `snap`
 * (and what it stands on) flattened into a standalone qcow2 at dst by
 * qemu-img (a tool); snapshot operations on the VM are refused until cb.
 * *ret_disk, *ret_size: which disk, its virtual size. */
int storage_flatten_snapshot(Vm *vm, const char *snap, const char *dst, size_t *ret_disk,
			     uint64_t *ret_size, ToolDoneCb cb, void *ud, HsError *err);
/* The layers of managed disk `disk`'s chain (template not counted); 0:
 * not a managed disk. */
int storage_vm_disk_layers(Vm *vm, size_t disk);
