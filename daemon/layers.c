/* SPDX-License-Identifier: Apache-2.0 */
#include "layers.h"

#include <string.h>

#define INVALID "invalid-state"

bool snapshot_name_is_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > SNAPSHOT_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			return false;
	return true;
}

const DiskLayer *disk_layer(const ManagedDisk *m, unsigned id)
{
	for (size_t i = 0; i < m->n_layers; i++)
		if (m->layers[i].id == id)
			return &m->layers[i];
	return NULL;
}

int disk_add_layer(ManagedDisk *m, unsigned id, unsigned parent)
{
	if (id == 0 || disk_layer(m, id) || (parent && !disk_layer(m, parent)))
		return -EINVAL;
	DiskLayer *l = realloc(m->layers, sizeof(*l) * (m->n_layers + 1));
	if (!l)
		return -ENOMEM;
	m->layers = l;
	m->layers[m->n_layers++] = (DiskLayer){.id = id, .parent = parent};
	return 0;
}

int disk_chain(const ManagedDisk *m, unsigned id, unsigned *out, size_t max)
{
	unsigned rev[LAYERS_MAX_DEPTH * 4];
	size_t n = 0;
	while (id) {
		const DiskLayer *l = disk_layer(m, id);
		if (!l)
			return -ENOENT;
		if (n == ARRAY_SIZE(rev) || n == max)
			return -ELOOP;
		rev[n++] = id;
		id = l->parent;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = rev[n - 1 - i];
	return (int)n;
}

size_t disk_children(const ManagedDisk *m, unsigned id, unsigned *out, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n_layers; i++)
		if (m->layers[i].parent == id && m->layers[i].id != id && n < max)
			out[n++] = m->layers[i].id;
	return n;
}

bool vm_disks_layer_is_snapshot(const VmDisks *d, size_t disk, unsigned id)
{
	for (size_t s = 0; s < d->n_snaps; s++)
		if (d->snaps[s].layers[disk] == id)
			return true;
	return false;
}

static void mark_needed(const ManagedDisk *m, unsigned id, bool *needed)
{
	for (unsigned guard = 0; id && guard <= m->n_layers; guard++) {
		const DiskLayer *l = NULL;
		size_t i;
		for (i = 0; i < m->n_layers; i++)
			if (m->layers[i].id == id) {
				l = &m->layers[i];
				break;
			}
		if (!l || needed[i])
			return;
		needed[i] = true;
		id = l->parent;
	}
}

size_t vm_disks_collect(VmDisks *d, size_t disk, unsigned *out, size_t max)
{
	ManagedDisk *m = &d->disks[disk];
	if (!m->managed || m->n_layers == 0)
		return 0;
	bool *needed = calloc(m->n_layers, sizeof(bool));
	if (!needed)
		return 0;
	mark_needed(m, m->top, needed);
	for (size_t s = 0; s < d->n_snaps; s++)
		mark_needed(m, d->snaps[s].layers[disk], needed);
	size_t n = 0, keep = 0;
	for (size_t i = 0; i < m->n_layers; i++) {
		if (needed[i] || n == max) {
			m->layers[keep++] = m->layers[i];
			continue;
		}
		out[n++] = m->layers[i].id;
	}
	m->n_layers = keep;
	free(needed);
	return n;
}

void layer_file_name(unsigned id, char *buf, size_t size)
{
	snprintf(buf, size, "%u.qcow2", id);
}

void layer_backing_name(const ManagedDisk *m, unsigned parent, char *buf, size_t size)
{
	if (parent)
		layer_file_name(parent, buf, size);
	else if (m->template)
		/* <state>/vms/<vm>/layers/N.qcow2 -> <state>/templates/<t>/image */
		snprintf(buf, size, "../../../templates/%s/image", m->template);
	else
		snprintf(buf, size, "%s", "");
}

VmSnapshot *vm_disks_find_snapshot(VmDisks *d, const char *name)
{
	for (size_t s = 0; s < d->n_snaps; s++)
		if (!strcmp(d->snaps[s].name, name))
			return &d->snaps[s];
	return NULL;
}

static void snapshot_clear(VmSnapshot *s)
{
	free(s->memory);
	json_decref(s->spec);
	memset(s, 0, sizeof(*s));
}

int vm_disks_remove_snapshot(VmDisks *d, const char *name)
{
	VmSnapshot *s = vm_disks_find_snapshot(d, name);
	if (!s)
		return -ENOENT;
	size_t i = (size_t)(s - d->snaps);
	snapshot_clear(s);
	memmove(&d->snaps[i], &d->snaps[i + 1], sizeof(*s) * (d->n_snaps - i - 1));
	d->n_snaps--;
	memset(&d->snaps[d->n_snaps], 0, sizeof(*s));
	return 0;
}

const VmSnapshot *vm_disks_snapshot_below(const VmDisks *d, unsigned id)
{
	size_t disk;
	for (disk = 0; disk < d->n_disks && !d->disks[disk].managed; disk++)
		;
	if (disk == d->n_disks)
		return NULL;
	const ManagedDisk *m = &d->disks[disk];
	for (unsigned guard = 0; id && guard <= m->n_layers; guard++) {
		for (size_t s = 0; s < d->n_snaps; s++)
			if (d->snaps[s].layers[disk] == id)
				return &d->snaps[s];
		const DiskLayer *l = disk_layer(m, id);
		if (!l)
			return NULL;
		id = l->parent;
	}
	return NULL;
}

bool vm_disks_any_managed(const VmDisks *d)
{
	for (size_t i = 0; i < d->n_disks; i++)
		if (d->disks[i].managed)
			return true;
	return false;
}

void vm_disks_clear(VmDisks *d)
{
	for (size_t i = 0; i < d->n_disks; i++) {
		free(d->disks[i].template);
		free(d->disks[i].layers);
	}
	for (size_t s = 0; s < d->n_snaps; s++)
		snapshot_clear(&d->snaps[s]);
	json_decref(d->intent);
	memset(d, 0, sizeof(*d));
}

/* ---- JSON ---- */

json_t *vm_disks_to_json(const VmDisks *d)
{
	json_t *o = json_pack("{s:I}", "next_id", (json_int_t)d->next_id);
	json_t *disks = json_array();
	for (size_t i = 0; i < d->n_disks; i++) {
		const ManagedDisk *m = &d->disks[i];
		if (!m->managed) {
			json_array_append_new(disks, json_null());
			continue;
		}
		json_t *layers = json_array();
		for (size_t k = 0; k < m->n_layers; k++)
			json_array_append_new(layers, json_pack("{s:I, s:I}", "id",
								(json_int_t)m->layers[k].id,
								"parent",
								(json_int_t)m->layers[k].parent));
		json_t *dj = json_pack("{s:I, s:I, s:o}", "size", (json_int_t)m->size, "top",
				       (json_int_t)m->top, "layers", layers);
		if (m->template) {
			json_object_set_new(dj, "template", json_string(m->template));
			json_object_set_new(dj, "template_format",
					    json_string(vm_disk_format_to_string(m->base_format)));
		}
		json_array_append_new(disks, dj);
	}
	json_object_set_new(o, "disks", disks);
	json_t *snaps = json_array();
	for (size_t s = 0; s < d->n_snaps; s++) {
		const VmSnapshot *sn = &d->snaps[s];
		json_t *ls = json_array();
		for (size_t i = 0; i < d->n_disks; i++)
			json_array_append_new(ls, json_integer(sn->layers[i]));
		json_t *sj = json_pack("{s:s, s:f, s:o}", "name", sn->name, "created", sn->created,
				       "layers", ls);
		if (sn->memory)
			json_object_set_new(sj, "memory", json_string(sn->memory));
		if (sn->spec)
			json_object_set(sj, "spec", sn->spec);
		if (sn->quiesced || sn->quiesce_note[0])
			json_object_set_new(sj, "quiesced", json_boolean(sn->quiesced));
		if (sn->quiesce_note[0])
			json_object_set_new(sj, "quiesce_note", json_string(sn->quiesce_note));
		json_array_append_new(snaps, sj);
	}
	json_object_set_new(o, "snapshots", snaps);
	if (d->intent)
		json_object_set(o, "intent", d->intent);
	return o;
}

static int uint_of(json_t *v, unsigned *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)UINT32_MAX)
		return -EINVAL;
	*ret = (unsigned)json_integer_value(v);
	return 0;
}

int vm_disks_from_json(json_t *j, VmDisks *d, HsError *err)
{
	memset(d, 0, sizeof(*d));
	json_t *disks = json_object_get(j, "disks"), *snaps = json_object_get(j, "snapshots");
	if (!json_is_object(j) || uint_of(json_object_get(j, "next_id"), &d->next_id) < 0 ||
	    !json_is_array(disks) || json_array_size(disks) > VM_MAX_DISKS ||
	    (snaps && (!json_is_array(snaps) || json_array_size(snaps) > SNAPSHOTS_MAX)))
		return hs_error_set(err, -EINVAL, INVALID, "disks.json: malformed");
	d->n_disks = json_array_size(disks);
	for (size_t i = 0; i < d->n_disks; i++) {
		json_t *dj = json_array_get(disks, i);
		ManagedDisk *m = &d->disks[i];
		if (json_is_null(dj))
			continue;
		m->managed = true;
		json_t *layers = json_object_get(dj, "layers"), *t = json_object_get(dj, "template");
		if (!json_is_integer(json_object_get(dj, "size")) ||
		    uint_of(json_object_get(dj, "top"), &m->top) < 0 || !json_is_array(layers))
			goto bad;
		m->size = (uint64_t)json_integer_value(json_object_get(dj, "size"));
		if (t) {
			if (!json_is_string(t) || !vm_name_is_valid(json_string_value(t)))
				goto bad;
			m->template = strdup(json_string_value(t));
			const char *f = json_string_value(json_object_get(dj, "template_format"));
			m->base_format = f && !strcmp(f, "raw") ? VM_DISK_RAW : VM_DISK_QCOW2;
		}
		size_t k;
		json_t *lj;
		json_array_foreach(layers, k, lj) {
			unsigned id, parent;
			if (uint_of(json_object_get(lj, "id"), &id) < 0 ||
			    uint_of(json_object_get(lj, "parent"), &parent) < 0 || id == 0 ||
			    id >= d->next_id)
				goto bad;
			/* Parents may come later in the array: check after. */
			DiskLayer *nl = realloc(m->layers, sizeof(*nl) * (m->n_layers + 1));
			if (!nl)
				goto bad;
			m->layers = nl;
			m->layers[m->n_layers++] = (DiskLayer){.id = id, .parent = parent};
		}
		unsigned chain[LAYERS_MAX_DEPTH * 4];
		for (k = 0; k < m->n_layers; k++)
			if (disk_chain(m, m->layers[k].id, chain, ARRAY_SIZE(chain)) < 0)
				goto bad;
		if (m->top && !disk_layer(m, m->top))
			goto bad;
	}
	size_t s;
	json_t *sj;
	json_array_foreach(snaps, s, sj) {
		VmSnapshot *sn = &d->snaps[d->n_snaps];
		const char *name = json_string_value(json_object_get(sj, "name"));
		json_t *ls = json_object_get(sj, "layers");
		if (!name || !snapshot_name_is_valid(name) || !json_is_array(ls) ||
		    json_array_size(ls) != d->n_disks)
			goto bad;
		snprintf(sn->name, sizeof(sn->name), "%s", name);
		sn->created = json_number_value(json_object_get(sj, "created"));
		for (size_t i = 0; i < d->n_disks; i++)
			if (uint_of(json_array_get(ls, i), &sn->layers[i]) < 0 ||
			    (sn->layers[i] && !disk_layer(&d->disks[i], sn->layers[i])))
				goto bad;
		const char *mem = json_string_value(json_object_get(sj, "memory"));
		if (mem)
			sn->memory = strdup(mem);
		sn->spec = json_incref(json_object_get(sj, "spec"));
		sn->quiesced = json_is_true(json_object_get(sj, "quiesced"));
		const char *note = json_string_value(json_object_get(sj, "quiesce_note"));
		snprintf(sn->quiesce_note, sizeof(sn->quiesce_note), "%s", note ? note : "");
		d->n_snaps++;
	}
	d->intent = json_incref(json_object_get(j, "intent"));
	return 0;
bad:
	vm_disks_clear(d);
	return hs_error_set(err, -EINVAL, INVALID, "disks.json: malformed");
}
