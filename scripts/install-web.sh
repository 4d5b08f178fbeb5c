#!/bin/bash
# The web console's npm parts, never committed: xterm.js (served by hsd
# --web-assets DIR/assets) and playwright-core (drives the system's
# chromium in tests/web/). Installed into a cache dir, HS_WEB_DIR (default
# ~/.cache/hypervisor-scale/web); prints HS_WEB_DIR=... when done.
# Idempotent: does nothing when all is there already.
set -euo pipefail

dir=${HS_WEB_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/web}
# Pinned majors: the page imports xterm.mjs (ES module build, 5.x and later).
pkgs=("@xterm/xterm@^6" "playwright-core@^1")

if ! command -v npm >/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-web: npm is missing (apt-get install npm)" >&2
		exit 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
mkdir -p "$dir"
if [ ! -f "$dir/node_modules/@xterm/xterm/lib/xterm.mjs" ] ||
	[ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
	echo "install-web: npm install ${pkgs[*]} into $dir" >&2
	[ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
	(cd "$dir" && timeout 600 npm install --no-audit --no-fund --silent "${pkgs[@]}")
fi
mkdir -p "$dir/assets"
for f in lib/xterm.mjs css/xterm.css; do
	cp -u "$dir/node_modules/@xterm/xterm/$f" "$dir/assets/"
done
echo "HS_WEB_DIR=$dir"
