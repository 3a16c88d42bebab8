# Item 9 of issue 12: `make install DESTDIR=D` then `make installcheck DESTDIR=D` on this
# build pass: the staged programs run from where they lie. The rnnd-convert launcher must find
# the Python package staged beside it, since the configured $(pkgdatadir) does not exist until
# a real install (a package build stages its files this way too). Then the staged tree is
# moved: installcheck passes again and the launcher imports the package from the moved tree.
# Nothing is installed outside the test's tmp folder. Run by `make check` (POSIX sh; RNND_BIN
# and RNND_TEST_TMP from the test environment; the build directory is RNND_BIN's).

set -u
: "${RNND_BIN:?}" "${RNND_TEST_TMP:?}"

T="$RNND_TEST_TMP/install.$$"
mkdir -p "$T" || exit 1
T=$(cd "$T" && pwd)
trap 'rm -rf "$T"' EXIT
builddir=$(cd "$(dirname "$RNND_BIN")" && pwd)
failures=0
checks=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

check() {   # check NAME COMMAND...: COMMAND succeeds
    name=$1
    shift
    checks=$((checks + 1))
    if "$@"; then echo "ok: $name"; else fail "$name"; fi
}

# The suite's PYTHONPATH points at the source's tools/: with it any launcher finds the package.
# The outer make's jobserver is not ours to use.
unset PYTHONPATH MAKEFLAGS MFLAGS MAKELEVEL
mk() {
    ${MAKE:-make} -C "$builddir" --no-print-directory "$@" >"$T/make.log" 2>&1 ||
        { tail -20 "$T/make.log"; return 1; }
}

dest="$T/dest"
check "make install DESTDIR=$dest" mk install DESTDIR="$dest"
check "make installcheck DESTDIR=$dest" mk installcheck DESTDIR="$dest"

conv=$(find "$dest" -path '*/bin/rnnd-convert' -type f | head -1)
check "rnnd-convert staged under DESTDIR" test -n "$conv"

# Moved elsewhere, the tree passes installcheck again, and the launcher imports the package
# that lies in the moved tree (Python's -v names the file each module came from).
moved="$T/moved"
mv "$dest" "$moved"
check "make installcheck DESTDIR=$moved (the staged tree moved)" mk installcheck DESTDIR="$moved"
checks=$((checks + 1))
if PYTHONVERBOSE=1 PYTHONDONTWRITEBYTECODE=1 "$moved${conv#"$dest"}" --help >"$T/v.log" 2>&1 &&
   grep -Eq "^# code object from '?$moved/.*/rnnd_convert/cli\.py'?$" "$T/v.log"; then
    echo "ok: the moved launcher imports rnnd_convert from the moved tree"
else
    fail "the moved launcher did not import rnnd_convert from $moved:"
    grep -E "rnnd_convert|Error" "$T/v.log" | tail -5
fi

echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
