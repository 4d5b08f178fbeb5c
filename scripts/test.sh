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

run_unit() { # build dir
	echo "=== unit tests (cmocka), $1 ==="
	meson test -C "$1" --print-errorlogs --num-processes 2
	local rc=$? ok bad
	ok=$(grep -c '"result": "OK"' "$1/meson-logs/testlog.json" 2>/dev/null)
	bad=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR)"' "$1/meson-logs/testlog.json" 2>/dev/null)
	passed=$((passed + ${ok:-0})) failed=$((failed + ${bad:-0}))
	[ $rc -eq 0 ] || [ "${bad:-0}" -gt 0 ] || failed=$((failed + 1))
}

run_integration() { # build dir, pytest marker expression, more pytest arguments...
	echo "=== integration tests (real hsd, hsctl, QEMU, guest), $1${2:+ ($2)} ==="
	local out dir=$1 marks=${2:-}
	shift $(($# < 2 ? $# : 2))
	out=$(mktemp)
	HS_BUILD_DIR="$ROOT/$dir" /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider --durations=25 \
		${marks:+-m "$marks"} "$@" tests/integration 2>&1 | tee "$out"
	count "$(tail -n 1 "$out")"
	grep -qE '[0-9]+ (passed|failed)' "$out" || failed=$((failed + 1))
	rm -f "$out"
}

# The Secure Boot guest's test (one vCPU under TCG, ~5 minutes) runs in the
# background while the checks below that need no guest (static analysis,
# fuzzing, man pages, OpenAPI, unit tests) use the other core; its output
# is shown and counted after them.
EARLY=tests/integration/test_firmware_guest.py
early_out=$(mktemp)
HS_BUILD_DIR="$ROOT/$BUILD_DIR" /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider \
	--durations=3 "$EARLY" >"$early_out" 2>&1 &
early_pid=$!

echo "=== static analysis ==="
if bash scripts/lint.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "=== fuzzing smoke (libFuzzer, each harness briefly) ==="
if command -v clang >/dev/null; then
	out=$(mktemp)
	bash bench/fuzz --smoke 2>&1 | tee "$out"
	count "$(grep -E '^fuzz: ' "$out" | tail -n 1)"
	grep -qE '^fuzz: [0-9]+ passed' "$out" || failed=$((failed + 1))
	rm -f "$out"
else
	echo "fuzz smoke skipped: clang is not installed"
	skipped=$((skipped + 1))
fi

# Scripts that end with "N passed, N failed" (exit 77: skipped, with a
# message).
run_script() { # title, command...
	local title=$1 out rc
	shift
	echo "=== $title ==="
	out=$(mktemp)
	"$@" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -eq 77 ]; then
		skipped=$((skipped + 1))
	else
		count "$(grep -E '[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)"
		[ "$rc" -eq 0 ] || grep -qE '[1-9][0-9]* failed' "$out" || failed=$((failed + 1))
	fi
	rm -f "$out"
}
export HS_BUILD_DIR="$ROOT/$BUILD_DIR"
run_script "man pages" bash tests/cli/test-man.sh
run_script "bash completion" bash tests/cli/test-completion.sh
run_script "hsctl set against a real hsd" bash tests/cli/test-set.sh
run_script "hsctl network, sriov, nic command lines" bash tests/cli/test-network.sh
run_script "OpenAPI description (lint, route coverage)" bash tests/openapi/run.sh

run_unit "$BUILD_DIR"
echo "=== integration tests, in the background since the start: $EARLY ==="
wait "$early_pid"
cat "$early_out"
count "$(tail -n 1 "$early_out")"
grep -qE '[0-9]+ (passed|failed|skipped)' "$early_out" || failed=$((failed + 1))
rm -f "$early_out"
run_integration "$BUILD_DIR" "" --ignore="$EARLY"

# The same again with AddressSanitizer + UndefinedBehaviorSanitizer: memory
# errors and leaks (reported when hsd exits on SIGTERM) fail the tests.
ASAN_DIR=${ASAN_DIR:-build-asan}
if [ ! -f "$ASAN_DIR/build.ninja" ]; then
	meson setup "$ASAN_DIR" -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
ninja -C "$ASAN_DIR" >/dev/null || exit 1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
run_unit "$ASAN_DIR"
# The slow suite (a real Debian guest with cloud-init) ran on the normal
# build; hsd's code paths in it are all covered by the fast tests here.
run_integration "$ASAN_DIR" "not slow"

echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
