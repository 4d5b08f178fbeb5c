/* SPDX-License-Identifier: Apache-2.0 */
/* The web console's page and script, built into hsd (daemon/web/, embedded
 * by daemon/web/embed.py): each a NUL-terminated array and its length. */
#pragma once

#include <stddef.h>

extern const char web_page_console_html[];
extern const size_t web_page_console_html_len;
extern const char web_page_console_js[];
extern const size_t web_page_console_js_len;
