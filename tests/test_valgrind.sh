#!/bin/sh
# The daemon's HTTP integration tests again, with every daemon they start running under
# valgrind memcheck (issue 7: "valgrind memcheck for the daemon's integration test"): each
# test must still pass, and every daemon must exit with no memcheck error, nothing definitely
# or indirectly lost, and no invalid access. The tests chosen are the ones that drive the most
# code paths (sessions, infer, errors, every endpoint, keys, v2, text) without long timed
# phases that valgrind's ~30x slow-down would push past their bounds. Valgrind hides
# AVX-512 from the program, so the daemon runs its avx2 kernels here.
# Not part of a --enable-sanitizers build (valgrind and ASan cannot share a process).
set -eu
: "${PYTHON3:?}" "${RNND_BIN:?}" "${RNND_SRCDIR:?}" "${RNND_TEST_TMP:?}"
command -v valgrind >/dev/null ||
    { echo "test_valgrind.sh: valgrind is not installed (tools/setup installs it)"; exit 1; }

logs="$RNND_TEST_TMP/valgrind"
rm -rf "$logs"
mkdir -p "$logs"
RNND_DAEMON_WRAPPER="valgrind --leak-check=full --show-leak-kinds=definite,indirect \
--errors-for-leak-kinds=definite,indirect --error-exitcode=99 --log-file=$logs/vg.%p.log"
export RNND_DAEMON_WRAPPER

fail=0
# test_websocket is left out for now: in a loaded CI rehearsal its test_generate waited over
# 20 s for a stream's first message under memcheck (not reproduced in 7 quiet runs)
for t in test_http_sessions test_http_errors test_http_api test_auth test_text; do
    if "$PYTHON3" "$RNND_SRCDIR/tests/$t.py" >"$logs/$t.out" 2>&1; then
        echo "ok   $t.py passes with its daemons under memcheck ($(tail -n 1 "$logs/$t.out"))"
    else
        echo "FAIL $t.py under memcheck; its last lines:"
        tail -n 20 "$logs/$t.out" | sed 's/^/    /'
        fail=1
    fi
done

n=0
for f in "$logs"/vg.*.log; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    if ! grep -q "ERROR SUMMARY: 0 errors from 0 contexts" "$f" ||
        grep -q "definitely lost: [1-9]\|indirectly lost: [1-9]" "$f"; then
        echo "FAIL memcheck found errors in $(basename "$f"):"
        grep -A 12 "Invalid\|uninitialised\|definitely lost\|indirectly lost" "$f" |
            head -n 60 | sed 's/^/    /'
        fail=1
    elif ! grep -q "ERROR SUMMARY" "$f"; then
        echo "FAIL $(basename "$f"): the daemon did not reach memcheck's summary"
        fail=1
    fi
done
# one log per daemon started: test_http_api alone starts nine
if [ "$n" -lt 10 ]; then
    echo "FAIL only $n daemons ran under memcheck"
    fail=1
else
    echo "ok   $n daemons ran under memcheck: 0 errors, 0 bytes definitely or indirectly lost"
fi
exit $fail
