#!/bin/bash
# Checks docs/openapi.yaml: Redocly CLI's lint (pinned in package.json and
# package-lock.json, installed here with `npm ci` when missing) and
# check-routes.py (the description against daemon/api.c and a live hsd).
# Exit 0: all good; 1: a failure; 77: the lint skipped (no usable Node.js /
# npm; the route check still runs).
# Environment: HS_BUILD_DIR (default build) gives daemon/hsd.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
export HS_BUILD_DIR=${HS_BUILD_DIR:-$ROOT/build}

# Without a usable Node.js the lint is skipped (exit 77); the route check,
# which needs only Python, still runs and can still fail.
skip() {
	echo "openapi: $1"
	echo "=== openapi: routes (daemon/api.c and a live hsd) ==="
	/usr/bin/python3 tests/openapi/check-routes.py || exit 1
	echo "openapi: skipped: the Redocly lint did not run"
	exit 77
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	skip "node and npm are needed for the Redocly lint (Debian: nodejs npm)"
fi
# @redocly/cli 2.x wants Node.js >= 20.19 (20.x) or >= 22.12.
node -e '
const [a, b] = process.versions.node.split(".").map(Number);
process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1);
' || skip "Node.js $(node --version) is too old for @redocly/cli (needs 20.19+ or 22.12+)"

want=$(node -p 'require("./tests/openapi/package.json").devDependencies["@redocly/cli"]')
have=$(node -p 'try { require("./tests/openapi/node_modules/@redocly/cli/package.json").version } catch (e) { "" }')
if [ "$have" != "$want" ]; then
	echo "openapi: installing @redocly/cli $want (npm ci)"
	npm ci --prefix tests/openapi --no-audit --no-fund --loglevel=error >/dev/null || {
		echo "openapi: npm ci failed" >&2
		exit 1
	}
fi

passed=0 failed=0
echo "=== openapi: redocly lint ==="
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
# (Redocly writes to stderr; its boxed Node.js deprecation notice is left out)
tests/openapi/node_modules/.bin/redocly lint --config tests/openapi/redocly.yaml \
	--format stylish docs/openapi.yaml 2>&1 | grep -v '[╔║╚]'
if [ "${PIPESTATUS[0]}" -eq 0 ]; then
	echo "ok    redocly lint docs/openapi.yaml"
	passed=1
else
	echo "FAIL  redocly lint docs/openapi.yaml"
	failed=1
fi

echo "=== openapi: routes (daemon/api.c and a live hsd) ==="
out=$(mktemp)
/usr/bin/python3 tests/openapi/check-routes.py | tee "$out"
rc=${PIPESTATUS[0]}
line=$(tail -n 1 "$out")
rm -f "$out"
if [[ $line =~ ^openapi:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
	passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
fi
[ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || failed=$((failed + 1))

echo "openapi (lint and routes): $passed passed, $failed failed"
[ "$failed" -eq 0 ]
