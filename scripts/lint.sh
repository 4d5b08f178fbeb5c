#!/bin/bash
# Static analysis: cppcheck over all C sources; any finding fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=(common qmp daemon cli ksm numa vfio net)
[ -d fuzz ] && dirs+=(fuzz)
incs=()
for d in "${dirs[@]}"; do incs+=(-I "$d"); done
cppcheck --enable=warning,performance,portability --inline-suppr --error-exitcode=1 --quiet \
	-D_GNU_SOURCE "${incs[@]}" --include=/usr/include/jansson.h \
	--suppress=missingIncludeSystem "${dirs[@]}"
echo "lint: cppcheck clean (${dirs[*]})"
