/* SPDX-License-Identifier: Apache-2.0 */
/* The storage model of a VM's managed disks, pure (no I/O, unit-tested).
 *
 * A managed disk is a tree of qcow2 layers over an immutable base (a
 * template, or nothing for a blank disk). Each layer has one parent (0:
 * the base). The VM writes only to its disk's active layer ("top"); every
 * other layer is frozen. A snapshot names, for every managed disk, the
 * layer that was active when it was taken (frozen from then on): taking one
 * freezes the top and puts a new empty layer over it; rolling back drops
 * the top and puts a new empty layer over the snapshot's. Branches come
 * free: layers of older snapshots stay while a snapshot needs them.
 *
 * Saved as <vm dir>/disks.json (atomically); an operation records what it
 * is about to do ("intent") first, so hsd can finish or undo it after a
 * crash. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "hs-util.h"
#include "spec.h"

#define LAYERS_MAX_DEPTH 40 /* layers in one chain (each is an fd for QEMU) */
#define SNAPSHOTS_MAX 64
#define SNAPSHOT_NAME_MAX 63

typedef struct DiskLayer {
	unsigned id;
	unsigned parent; /* 0: the base */
} DiskLayer;

typedef struct ManagedDisk {
	bool managed;
	char *template;          /* the base; NULL: blank (no base) */
	VmDiskFormat base_format; /* the template's */
	uint64_t size;           /* virtual size, bytes */
	unsigned top;            /* the active layer */
	DiskLayer *layers;
	size_t n_layers;
} ManagedDisk;

typedef struct VmSnapshot {
	char name[SNAPSHOT_NAME_MAX + 1];
	double created;
	unsigned layers[VM_MAX_DISKS]; /* frozen layer per managed disk */
	char *memory;                  /* saved RAM + device state file; NULL: disk only */
	json_t *spec;                  /* the VM's spec when taken (memory snapshots) */
	/* The guest's file systems were frozen by its agent while the disks
	 * switched; if not, why ("" in records older than this). */
	bool quiesced;
	char quiesce_note[128];
} VmSnapshot;

typedef struct VmDisks {
	unsigned next_id;
	size_t n_disks; /* = the spec's disks */
	ManagedDisk disks[VM_MAX_DISKS];
	VmSnapshot snaps[SNAPSHOTS_MAX];
	size_t n_snaps;
	json_t *intent; /* an operation in progress; NULL: none */
} VmDisks;

int vm_disks_from_json(json_t *j, VmDisks *ret, HsError *err);
json_t *vm_disks_to_json(const VmDisks *d);
void vm_disks_clear(VmDisks *d);
bool vm_disks_any_managed(const VmDisks *d);

bool snapshot_name_is_valid(const char *name);
VmSnapshot *vm_disks_find_snapshot(VmDisks *d, const char *name);
int vm_disks_remove_snapshot(VmDisks *d, const char *name);

const DiskLayer *disk_layer(const ManagedDisk *m, unsigned id);
/* Adds layer `id` over `parent`. */
int disk_add_layer(ManagedDisk *m, unsigned id, unsigned parent);
/* The chain from the base's first layer up to `id` (ids, bottom first).
 * Returns its length, or -ELOOP/-ENOENT on a broken tree. */
int disk_chain(const ManagedDisk *m, unsigned id, unsigned *out, size_t max);
/* Layers whose parent is `id`. */
size_t disk_children(const ManagedDisk *m, unsigned id, unsigned *out, size_t max);
/* Is `id` frozen by some snapshot? */
bool vm_disks_layer_is_snapshot(const VmDisks *d, size_t disk, unsigned id);

/* Removes from the model every layer nothing needs any more (not the top,
 * not a snapshot's, not below either) and lists them in out (ids) so their
 * files can go. Returns how many. */
size_t vm_disks_collect(VmDisks *d, size_t disk, unsigned *out, size_t max);

/* File names, relative to the VM's layers/ directory. */
void layer_file_name(unsigned id, char *buf, size_t size);
/* What a layer's qcow2 header names as its backing file: the parent layer,
 * or the template, as a path relative to the layer's own directory (so the
 * state dir may move); NULL-free: "" when there is no backing file. */
void layer_backing_name(const ManagedDisk *m, unsigned parent, char *buf, size_t size);
/* The snapshot whose frozen layer is the nearest below `id` on disk 0 (the
 * one the current state descends from); NULL: none. */
const VmSnapshot *vm_disks_snapshot_below(const VmDisks *d, unsigned id);
