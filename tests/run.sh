#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the test layers (unit, bpf, lab, fuzz, or all) and ends with one line "N passed, N failed".
# Every test program prints "ok - NAME" / "not ok - NAME" lines; a program that exits non-zero
# without a "not ok" line counts as one failure under its own name. Output per program goes to
# $AMBIT_BUILD/test-logs/ and is shown only on failure (all of it with VERBOSE=1).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export AMBIT_BUILD=${AMBIT_BUILD:-build}
export AMBIT_TOP=$top
# LeakSanitizer reports are failures; libbpf/libnl keep a few intentional globals.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$top/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
layer=${1:-all}
logs=$AMBIT_BUILD/test-logs
mkdir -p "$logs"
passed=0
failed=0
failures=()

run_one() { # name, command...
	local name=$1; shift
	local log="$logs/$(echo "$name" | tr '/ ' '__').log"
	local start=$SECONDS
	"$@" >"$log" 2>&1 </dev/null
	local rc=$?
	local p f
	p=$(grep -c '^ok ' "$log")
	f=$(grep -c '^not ok ' "$log")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		echo "not ok - $name (exit $rc)" >>"$log"
	elif [ "$rc" -eq 0 ] && [ "$f" -eq 0 ] && [ "${name%%/*}" != fuzz ] &&
		! grep -q '^# skip' "$log" && ! grep -Eq '[0-9]+ passed, [0-9]+ failed' "$log"; then
		# unit, BPF and lab tests end with their own summary line: one that did not
		# print it stopped before its end (e.g. a helper exited the script early)
		f=1
		echo "not ok - $name (no summary line: it ended before its last check)" >>"$log"
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	printf '%-44s %4d ok %3d failed  (%ds)\n' "$name" "$p" "$f" $((SECONDS - start))
	# A test that cannot run here says so ("# skip - ..."): shown, never counted as passed.
	grep '^# skip' "$log" | sed -e 's/^/    | /'
	if [ "$f" -gt 0 ] || [ -n "${VERBOSE:-}" ]; then
		failures+=("$name")
		sed -e 's/^/    | /' "$log" | tail -n 60
	fi
}

if [ "$layer" = unit ] || [ "$layer" = all ]; then
	for t in "$AMBIT_BUILD"/tests/unit/test_*; do
		[ -x "$t" ] && run_one "unit/$(basename "$t")" "$t"
	done
fi
if [ "$layer" = bpf ] || [ "$layer" = all ]; then
	for t in "$AMBIT_BUILD"/tests/bpf/test_*; do
		[ -x "$t" ] && run_one "bpf/$(basename "$t")" "$t"
	done
fi
if [ "$layer" = lab ] || [ "$layer" = all ]; then
	for t in tests/lab/test_*.sh tests/lab/test_*.py; do
		[ -f "$t" ] || continue
		case "$t" in *.py) run_one "lab/$(basename "$t")" python3 "$t" ;;
		*) run_one "lab/$(basename "$t")" bash "$t" ;; esac
	done
fi
# Fuzz smoke: each libFuzzer target (make fuzz-build) replays its committed seeds, then mutates
# for FUZZ_SMOKE_SECONDS from a fixed seed (FUZZ_SMOKE_SEED, 1), so the gate does the same work
# on every run; a crash, leak, UB or failed property is "not ok" (make fuzz: longer, random).
fuzz_smoke() { # name, binary
	local work rc
	work=$(mktemp -d) || return 1
	"$2" -max_total_time="${FUZZ_SMOKE_SECONDS:-4}" -seed="${FUZZ_SMOKE_SEED:-1}" -timeout=10 -artifact_prefix="$work/" \
		"$work" "tests/fuzz/corpus/$1"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		echo "ok - fuzz/$1"
	else
		mkdir -p "$AMBIT_FUZZ_BUILD/crashes"
		cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$AMBIT_FUZZ_BUILD/crashes/" 2>/dev/null
		echo "not ok - fuzz/$1 (exit $rc; inputs kept in $AMBIT_FUZZ_BUILD/crashes/)"
	fi
	rm -rf "$work"
	return "$rc"
}
if [ "$layer" = fuzz ] || [ "$layer" = all ]; then
	export AMBIT_FUZZ_BUILD=${AMBIT_FUZZ_BUILD:-build/fuzz}
	for t in tests/fuzz/*.c; do
		n=$(basename "$t" .c)
		[ -x "$AMBIT_FUZZ_BUILD/$n" ] && run_one "fuzz/$n" fuzz_smoke "$n" "$AMBIT_FUZZ_BUILD/$n"
	done
fi
# A digest of each failure just above the summary (CI may keep only the end of the output):
# its first "not ok" lines and the diagnostics after the first one.
for name in "${failures[@]}"; do
	log="$logs/$(echo "$name" | tr '/ ' '__').log"
	echo "== $name"
	grep -m 3 '^not ok' "$log" | cut -c1-200
	awk '/^not ok/ { n = 1; next } n && /^#/ && n <= 6 { print; n++ } n && !/^#/ { exit }' "$log" | cut -c1-200
	# a test that stopped on its own (no "not ok" of its own): its last words
	grep -q '^not ok' <(head -n -1 "$log") || head -n -1 "$log" | tail -n 5 | cut -c1-200
done
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
