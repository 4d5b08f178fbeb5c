/* SPDX-License-Identifier: Apache-2.0 */
/* hsd's own seccomp allowlist, installed once hsd is initialised: from then
 * on hsd cannot exec, fork, ptrace, mount, load modules or change
 * credentials; everything else it does (files, sockets, the event loop,
 * taps, pidfds) stays allowed. Anything not listed fails with EPERM. */
#pragma once

#include "hs-util.h"

int hsd_seccomp_install(HsError *err);
