/* SPDX-License-Identifier: Apache-2.0 */
/* First-boot configuration for guests: cloud-init's NoCloud data source, a
 * small ISO9660 volume labelled "cidata" holding meta-data, user-data and
 * (optionally) network-config. hsd runs under seccomp without fork/exec, so
 * the volume is built in-process with libisofs; YAML is checked with libyaml
 * and the instance-id hashed with nettle's SHA-256.
 *
 * Everything here is pure except cloudinit_write_iso. */
#pragma once

#include <jansson.h>

#include "hs-util.h"

/* Limits on the text given (bytes). user-data: cloud-init itself has no
 * hard limit, but the data travel through the API and the VM spec, and 1 MiB
 * is far beyond any sensible first-boot script or cloud-config. */
#define CLOUDINIT_USER_DATA_MAX (1024u * 1024)
#define CLOUDINIT_NETWORK_CONFIG_MAX (64u * 1024)
#define CLOUDINIT_SSH_KEY_MAX (64u * 1024)
#define CLOUDINIT_HOSTNAME_MAX 253

/* What user-data is when none is given. */
#define CLOUDINIT_DEFAULT_USER_DATA "#cloud-config\n"

typedef struct CloudInitConfig {
	char *user_data;      /* NULL: CLOUDINIT_DEFAULT_USER_DATA */
	char *network_config; /* netplan-style network config v2; NULL: none on the volume */
	char *ssh_key;	      /* OpenSSH public key lines ('#' comments allowed); may be NULL */
	char *hostname;	      /* NULL: derived from the VM name (cloudinit_hostname) */
} CloudInitConfig;

/* Checks every field, naming it ("cloud_init.user_data: ...") in err (kind
 * "invalid-spec", -EINVAL):
 * - user_data: "#cloud-config" (then a YAML mapping, or empty: libyaml's
 *   problem and line/column are reported), "#!" script (interpreter and a
 *   body required), "#cloud-boothook", or MIME multi-part ("Content-Type:
 *   multipart/..." or "MIME-Version: ..." first); at most 1 MiB.
 * - network_config: a YAML mapping with "version: 2" at the top level or
 *   under "network:"; at most 64 KiB.
 * - ssh_key: each line that is not empty or a '#' comment is "<type>
 *   <base64> [comment]", with a known key type, the blob decoding to that
 *   same type name (uint32 big-endian length + name) followed by the key;
 *   private keys are refused by name; at most 64 KiB.
 * - hostname: RFC 1123 labels of [a-zA-Z0-9-], 1-63 each, not starting or
 *   ending with '-', at most 253 in all. */
int cloudinit_config_validate(const CloudInitConfig *cfg, HsError *err);

/* The hostname the guest gets: cfg->hostname, or else the VM name made a
 * valid hostname label ('_' and anything else not allowed becomes '-', '-'
 * at either end dropped, "localhost" if nothing is left). NULL on ENOMEM. */
char *cloudinit_hostname(const CloudInitConfig *cfg, const char *vm_name);

/* "hs-" and the first 16 hex digits of a SHA-256 over the VM name, the VM's
 * nonce (new when a VM is cloned) and every field of cfg (each with its
 * length, and NULL distinct from ""): it changes when any of them does, so
 * cloud-init runs its per-instance modules again. NULL on ENOMEM. */
char *cloudinit_instance_id(const char *vm_name, const char *nonce, const CloudInitConfig *cfg);

/* The meta-data file (YAML, emitted by libyaml with every value a
 * double-quoted scalar): instance-id, local-hostname and, when ssh_key has
 * keys, public-keys (one entry per key line). NULL on ENOMEM or when a value
 * is not valid UTF-8. */
char *cloudinit_meta_data(const char *instance_id, const char *hostname, const char *ssh_key);

/* Validates cfg, builds the volume (ISO9660 with Rock Ridge and Joliet,
 * volume id "cidata", files meta-data, user-data and network-config when
 * given, each 0444, owned by 0:0, fixed timestamps: the same input always
 * gives the same bytes) and writes it to dirfd/name atomically (temp file,
 * fsync, rename), mode 0600. Returns 0, or a negative errno with err set.
 * libisofs produces the image in a thread of its own, joined before this
 * returns. */
int cloudinit_write_iso(int dirfd, const char *name, const char *vm_name, const char *nonce,
			const CloudInitConfig *cfg, HsError *err);

/* The volume's bytes, as cloudinit_write_iso writes them; cfg must have been
 * validated. */
int cloudinit_build_iso(const char *vm_name, const char *nonce, const CloudInitConfig *cfg,
			void **ret_data, size_t *ret_len, HsError *err);

void cloudinit_config_clear(CloudInitConfig *cfg);

/* {"user_data": s, "network_config": s, "ssh_key": s, "hostname": s}, absent
 * members for NULL fields. New reference; NULL on ENOMEM. */
json_t *cloudinit_config_to_json(const CloudInitConfig *cfg);
/* Parses (unknown members and non-strings are errors, null means absent)
 * and validates; *ret is written only on success (free with
 * cloudinit_config_clear). */
int cloudinit_config_from_json(json_t *obj, CloudInitConfig *ret, HsError *err);
