#!/bin/bash
# One command from a fresh Debian 12 machine to every test: installs
# packages, builds, builds the test guest, runs the cmocka unit tests and the
# integration tests (real hsd, hsctl, QEMU and guest under TCG).
# Ends with a line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export BUILD_DIR=${BUILD_DIR:-build}

bash scripts/install-deps.sh || exit 1
bash scripts/build.sh || exit 1
bash tests/guest/build-guest.sh >/dev/null || { echo "test guest build failed" >&2; exit 1; }

passed=0 failed=0 skipped=0
count() { # parses "N passed", "N failed", "N skipped" from a summary
	local line=$1 n
	n=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+') && passed=$((passed + n))
	n=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+') && failed=$((failed + n))
	n=$(grep -oE '[0-9]+ (skipped|error)' <<<"$line" | grep -oE '[0-9]+') && skipped=$((skipped + n))
	return 0
}

echo "=== unit tests (cmocka) ==="
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2
rc=$?
ok=$(grep -c '"result": "OK"' "$BUILD_DIR/meson-logs/testlog.json" 2>/dev/null || echo 0)
bad=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR)"' "$BUILD_DIR/meson-logs/testlog.json" 2>/dev/null || echo 0)
passed=$((passed + ok)) failed=$((failed + bad))
[ $rc -eq 0 ] || [ "$bad" -gt 0 ] || failed=$((failed + 1))

echo "=== integration tests (real hsd, hsctl, QEMU, guest) ==="
out=$(mktemp)
HS_BUILD_DIR="$ROOT/$BUILD_DIR" /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider \
	tests/integration 2>&1 | tee "$out"
count "$(tail -n 1 "$out")"
grep -qE '[0-9]+ (passed|failed)' "$out" || failed=$((failed + 1))
rm -f "$out"

echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
