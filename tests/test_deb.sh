# The Debian package (debian/): `dpkg-buildpackage -us -uc -b` builds it from a copy of the
# source tree (`make distdir` into the test's tmp folder: no git, and nothing is written into
# the source tree; dpkg-buildpackage writes its results beside the copy). Then:
# - its files (dpkg-deb -c): daemon, converter with every module of tools/rnnd_convert, the
#   units, the conf file in /etc/rnnd (a conffile), man pages, the bundled model, the models
#   folder /var/lib/rnnd/models, and nothing else out of place;
# - its control fields (dpkg-deb -I): version = rnnd --version, the dependencies;
# - the installed unit and conf file: the service runs as the system user rnnd, systemd-analyze
#   verify is silent and security rates it 2.0 or lower; the conf file serves the models folder
#   and the bundled model; the packaged programs run from the unpacked tree, and are not a
#   sanitizer build even when this build is one (the package configures itself);
# - the maintainer scripts, run with every command they call replaced by a recorder: configure
#   creates the user, hands it /var/lib/rnnd and enables rnnd.service only; purge removes the
#   saved sessions and the stat override;
# - lintian reports no error (its other tags are printed).
# The package is built without its own test run (DEB_BUILD_OPTIONS=nocheck). Needs dpkg-dev,
# debhelper, lintian and the package's build dependencies (tools/setup installs them). Run by
# `make check` (POSIX sh; RNND_BIN, RNND_SRCDIR and RNND_TEST_TMP from the test environment).

set -u
: "${RNND_BIN:?}" "${RNND_SRCDIR:?}" "${RNND_TEST_TMP:?}"

T="$RNND_TEST_TMP/deb.$$"
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

for tool in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian \
            systemd-analyze:systemd readelf:binutils; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        echo "FAIL: ${tool%%:*} not found: install the Debian package ${tool#*:} (tools/setup)"
        exit 1
    fi
done

# The suite's environment is not the package build's: no outer jobserver, no PYTHONPATH
# into the source tree.
unset PYTHONPATH MAKEFLAGS MFLAGS MAKELEVEL

version=$("$RNND_BIN" --version | sed -n 's/^rnnd //p')
src="$T/rnnd-$version"
if ! ${MAKE:-make} -C "$builddir" --no-print-directory distdir distdir="$src" \
        >"$T/distdir.log" 2>&1; then
    tail -20 "$T/distdir.log"
    echo "FAIL: make distdir"
    exit 1
fi
chmod -R u+w "$src"   # a read-only source tree (make distcheck) gives a read-only copy

start=$(date +%s)
checks=$((checks + 1))
if (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=2" DEB_BUILD_PROFILES=nocheck \
        dpkg-buildpackage -us -uc -b) >"$T/build.log" 2>&1; then
    echo "ok: dpkg-buildpackage -us -uc -b ($(($(date +%s) - start)) s)"
else
    tail -40 "$T/build.log"
    echo "FAIL: dpkg-buildpackage -us -uc -b (log above)"
    exit 1
fi
deb="$T/rnnd_${version}_$(dpkg --print-architecture).deb"
check "the package is $(basename "$deb")" test -f "$deb"

# ---- files ---------------------------------------------------------------------------------
dpkg-deb -c "$deb" >"$T/contents"
awk '{ print $6 }' "$T/contents" | sed 's|^\./|/|; s|/$||' >"$T/paths"
has() { grep -qxF "$1" "$T/paths"; }
for p in /usr/bin/rnnd /usr/bin/rnnd-convert /etc/rnnd/rnnd.conf \
         /lib/systemd/system/rnnd.service /lib/systemd/system/rnnd.socket \
         /usr/share/man/man8/rnnd.8.gz /usr/share/man/man1/rnnd-convert.1.gz \
         /usr/share/rnnd/models/charlm.rnnd /var/lib/rnnd/models \
         /usr/share/doc/rnnd/copyright /usr/share/doc/rnnd/README.md.gz; do
    check "the package holds $p" has "$p"
done
for f in "$RNND_SRCDIR"/tools/rnnd_convert/*.py; do
    p=/usr/share/rnnd/python/rnnd_convert/$(basename "$f")
    check "the package holds $p" has "$p"
done
check "/var/lib/rnnd/models is a folder" \
    grep -qE '^d[rwx-]{9} root/root .* \./var/lib/rnnd/models/$' "$T/contents"
check "the programs are executable" \
    sh -c "grep -qE '^-rwxr-xr-x .* \./usr/bin/rnnd$' '$T/contents' &&
           grep -qE '^-rwxr-xr-x .* \./usr/bin/rnnd-convert$' '$T/contents'"
check "every file belongs to root/root" \
    sh -c "! awk '\$2 != \"root/root\"' '$T/contents' | grep -q ."
check "nothing under /usr/local, no __pycache__" \
    sh -c "! grep -E '^/usr/local|__pycache__' '$T/paths'"

# ---- control fields ------------------------------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
check "Package: rnnd" test "$(field Package)" = rnnd
check "Version ($(field Version)) is rnnd --version ($version): debian/changelog is current" \
    test "$(field Version)" = "$version"
field Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' >"$T/depends"
for d in adduser python3 python3-numpy libmicrohttpd12 libjansson4 libopenblas0 libsystemd0; do
    check "Depends names $d" grep -qxF "$d" "$T/depends"
done
mkdir -p "$T/ctl"
dpkg-deb -e "$deb" "$T/ctl"
check "conffiles is exactly /etc/rnnd/rnnd.conf" \
    test "$(cat "$T/ctl/conffiles")" = /etc/rnnd/rnnd.conf

# ---- the unpacked files --------------------------------------------------------------------
x="$T/root"
dpkg-deb -x "$deb" "$x"
unit="$x/lib/systemd/system/rnnd.service"
exec_start='ExecStart=/usr/bin/rnnd serve --config /etc/rnnd/rnnd.conf'
exec_start="$exec_start"' --state-dir ${STATE_DIRECTORY}'
for line in 'User=rnnd' 'Group=rnnd' 'StateDirectory=rnnd' 'StateDirectoryMode=0700' \
            'Type=notify' "$exec_start"; do
    check "the packaged rnnd.service has '$line'" grep -qxF "$line" "$unit"
done
check "the packaged rnnd.service has no DynamicUser=" sh -c "! grep -q '^DynamicUser=' '$unit'"
mkdir -p "$T/units"
sed "s|^ExecStart=/usr/bin/rnnd |ExecStart=$x/usr/bin/rnnd |" "$unit" >"$T/units/rnnd.service"
cp "$x/lib/systemd/system/rnnd.socket" "$T/units/rnnd.socket"
checks=$((checks + 1))
if out=$(cd "$T/units" && systemd-analyze verify --man=no ./rnnd.socket ./rnnd.service 2>&1) &&
   [ -z "$out" ]; then
    echo "ok: systemd-analyze verify on the packaged units: clean"
else
    fail "systemd-analyze verify on the packaged units: $out"
fi
out=$(cd "$T/units" && systemd-analyze security --offline=yes --no-pager ./rnnd.service 2>&1)
score=$(printf '%s\n' "$out" |
        sed -n 's/.*Overall exposure level for rnnd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security on the packaged unit: ${score:-?} <= 2.0" \
    awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

"$x/usr/bin/rnnd" serve --config "$x/etc/rnnd/rnnd.conf" --print-config >"$T/conf" 2>&1
check "the packaged conf file serves /var/lib/rnnd/models" \
    grep -qx 'models = /var/lib/rnnd/models' "$T/conf"
check "the packaged conf file serves the bundled model" \
    grep -qx 'model = charlm=/usr/share/rnnd/models/charlm.rnnd' "$T/conf"
check "the packaged rnnd inspects the packaged model" \
    sh -c "'$x/usr/bin/rnnd' inspect '$x/usr/share/rnnd/models/charlm.rnnd' >/dev/null"
check "the packaged rnnd-convert runs from the unpacked tree" \
    sh -c "'$x/usr/bin/rnnd-convert' --help >/dev/null"
check "the packaged rnnd-convert runs /usr/bin/python3" \
    test "$(head -1 "$x/usr/bin/rnnd-convert")" = '#!/usr/bin/python3'
check "the packaged rnnd is not a sanitizer build" \
    sh -c "! readelf -d '$x/usr/bin/rnnd' | grep -qE 'lib(a|ub)san'"

# ---- maintainer scripts --------------------------------------------------------------------
for s in preinst postinst prerm postrm; do
    if [ -f "$T/ctl/$s" ]; then check "$s is valid sh" sh -n "$T/ctl/$s"; fi
done
# Every command the scripts may call is a recorder on an otherwise empty PATH: nothing touches
# this machine, and a command the test does not know fails the script. The recorders answer as
# on a fresh install: deb-systemd-helper's was-enabled is true and debian-installed false;
# dpkg-statoverride --list answers $OVERRIDDEN.
stubs="$T/stubs"
mkdir -p "$stubs"
for c in adduser deluser delgroup userdel groupdel dpkg-statoverride deb-systemd-helper \
         deb-systemd-invoke systemctl rm rmdir chown chmod; do
    cat >"$stubs/$c" <<EOF
#!/bin/sh
echo "\${0##*/} \$*" >>"$T/calls"
case "\${0##*/} \$*" in
    "dpkg-statoverride --list"*) exit "\$OVERRIDDEN" ;;
    *debian-installed*) exit 1 ;;
esac
exit 0
EOF
    chmod +x "$stubs/$c"
done
run_script() {   # run_script OVERRIDDEN SCRIPT ARGS...: the calls go to $T/calls
    ov=$1
    shift
    : >"$T/calls"
    (cd "$T" && PATH="$stubs" OVERRIDDEN=$ov /bin/sh "$T/ctl/$@") >"$T/script.log" 2>&1 ||
        { cat "$T/script.log"; return 1; }
}
called() { grep -qxF "$1" "$T/calls"; }
line_of() { grep -nxF "$1" "$T/calls" | head -1 | cut -d: -f1; }

check "postinst configure (fresh install) runs" run_script 1 postinst configure
adduser_call='adduser --system --group --quiet --home /var/lib/rnnd --no-create-home rnnd'
override_call='dpkg-statoverride --update --add rnnd rnnd 0700 /var/lib/rnnd'
enable_call="deb-systemd-helper enable rnnd.service"
check "postinst creates the system user rnnd" called "$adduser_call"
check "postinst gives /var/lib/rnnd to rnnd, mode 0700 (stat override)" called "$override_call"
check "postinst enables rnnd.service" called "$enable_call"
check "postinst creates the user before it hands over /var/lib/rnnd and enables the service" \
    sh -c "[ $(line_of "$adduser_call") -lt $(line_of "$override_call") ] &&
           [ $(line_of "$override_call") -lt $(line_of "$enable_call") ]"
check "postinst does not enable rnnd.socket" sh -c "! grep -q 'enable rnnd.socket' '$T/calls'"
check "postinst configure with an override in place runs" run_script 0 postinst configure 0.1.0
check "postinst keeps an existing stat override" \
    sh -c "! grep -q 'dpkg-statoverride --update' '$T/calls'"
check "postrm purge runs" run_script 0 postrm purge
check "postrm purge removes the saved sessions" \
    called 'rm -f /var/lib/rnnd/sessions.snap /var/lib/rnnd/sessions.snap.tmp'
check "postrm purge removes the stat override" called 'dpkg-statoverride --remove /var/lib/rnnd'
check "postrm purge leaves the user rnnd" \
    sh -c "! grep -qE '^(deluser|delgroup|userdel|groupdel) ' '$T/calls'"
check "postrm remove runs" run_script 0 postrm remove
check "postrm remove keeps the saved sessions and the stat override" \
    sh -c "! grep -qE '^(rm|rmdir|dpkg-statoverride --remove) ' '$T/calls'"
check "prerm stops both units on removal" \
    sh -c "grep -q \"stop 'rnnd.service'\" '$T/ctl/prerm' &&
           grep -q \"stop 'rnnd.socket'\" '$T/ctl/prerm'"

# ---- lintian -------------------------------------------------------------------------------
changes="$T/rnnd_${version}_$(dpkg --print-architecture).changes"
checks=$((checks + 1))
if lintian --fail-on error -I --pedantic "$changes" >"$T/lintian.log" 2>&1; then
    echo "ok: lintian: no error"
else
    fail "lintian reports errors"
fi
echo "lintian's tags:"
grep -E '^[EWIPX]: ' "$T/lintian.log" || echo "(none)"

echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
