/* SPDX-License-Identifier: Apache-2.0 */
/* A failed call's return value and the HsError it filled (include after
 * cmocka.h). */
#pragma once

#include <string.h>

#include "hs-util.h"

/* r is code, err says code and kind, and its message names `what`. */
static inline void assert_error(int r, const HsError *err, int code, const char *kind,
				const char *what)
{
	assert_int_equal(r, code);
	assert_int_equal(err->code, code);
	assert_string_equal(err->kind, kind);
	assert_non_null(strstr(err->message, what));
}
