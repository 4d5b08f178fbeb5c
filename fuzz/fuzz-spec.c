/* SPDX-License-Identifier: Apache-2.0 */
/* The VM spec parser. Input: a JSON document (an API request body or a
 * stored spec). Whatever vm_spec_from_json accepts must survive the trip
 * through the stored form unchanged: to_json -> text -> parse -> from_json
 * -> to_json gives the same JSON, and so does vm_spec_copy. A rejection
 * must say why (kind and message set). */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "spec.h"

static char *dump(const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	FUZZ_CHECK(s);
	return s;
}

static void check_spec(const VmSpec *s)
{
	FUZZ_CHECK(vm_name_is_valid(s->name));
	FUZZ_CHECK(s->cpus >= 1 && s->cpus <= VM_MAX_CPUS);
	FUZZ_CHECK(s->memory_mib >= VM_MIN_MEMORY_MIB && s->memory_mib <= VM_MAX_MEMORY_MIB);
	FUZZ_CHECK(s->machine && s->machine[0]);
	FUZZ_CHECK(s->n_disks <= VM_MAX_DISKS && s->n_nics <= VM_MAX_NICS);
	FUZZ_CHECK(s->kernel || s->n_disks > 0);
	for (size_t i = 0; i < s->n_disks; i++)
		FUZZ_CHECK(s->disks[i].path && s->disks[i].path[0] == '/');
	for (size_t i = 0; i < s->n_nics; i++) {
		FUZZ_CHECK(strlen(s->nics[i].mac) == 17);
		FUZZ_CHECK((s->nics[i].type == VM_NIC_BRIDGE) == (s->nics[i].bridge != NULL));
	}
}

/* The stored form, read back the way store.c reads it. */
static void round_trip(const VmSpec *a, const char *a_text)
{
	/* The other accel default: a stored spec must not depend on it. */
	VmSpecDefaults defs = {.accel = a->accel == VM_ACCEL_KVM ? VM_ACCEL_TCG : VM_ACCEL_KVM,
			       .check_files = false};
	json_error_t je;
	json_auto_t *j = json_loads(a_text, 0, &je);
	if (!j) {
		fprintf(stderr, "stored spec does not parse back (%s): %s\n", je.text, a_text);
		abort();
	}
	VmSpec b;
	HsError err = {0};
	if (vm_spec_from_json(j, &defs, &b, &err) < 0) {
		fprintf(stderr, "stored spec refused (%s: %s): %s\n", err.kind, err.message,
			a_text);
		abort();
	}
	check_spec(&b);
	json_auto_t *jb = vm_spec_to_json(&b);
	FUZZ_CHECK(jb);
	char *b_text = dump(jb);
	if (strcmp(a_text, b_text) != 0) {
		fprintf(stderr, "round trip changed the spec:\n  %s\n  %s\n", a_text, b_text);
		abort();
	}
	free(b_text);
	vm_spec_clear(&b);

	VmSpec c;
	FUZZ_CHECK(vm_spec_copy(a, &c) == 0);
	json_auto_t *jc = vm_spec_to_json(&c);
	FUZZ_CHECK(jc);
	char *c_text = dump(jc);
	if (strcmp(a_text, c_text) != 0) {
		fprintf(stderr, "vm_spec_copy changed the spec:\n  %s\n  %s\n", a_text, c_text);
		abort();
	}
	free(c_text);
	vm_spec_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* As the API parses bodies, plus \u0000 in strings, which the spec
	 * must refuse on its own. */
	json_auto_t *j =
	    json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
	if (!j)
		return 0;
	VmSpecDefaults defs = {.accel = size & 1 ? VM_ACCEL_TCG : VM_ACCEL_KVM,
			       .check_files = false};
	VmSpec a;
	HsError err = {0};
	int r = vm_spec_from_json(j, &defs, &a, &err);
	if (r < 0) {
		FUZZ_CHECK(err.code == r);
		FUZZ_CHECK(err.kind[0] && err.message[0]);
		return 0;
	}
	check_spec(&a);
	json_auto_t *ja = vm_spec_to_json(&a);
	FUZZ_CHECK(ja);
	char *a_text = dump(ja);
	round_trip(&a, a_text);
	free(a_text);
	vm_spec_clear(&a);
	return 0;
}
