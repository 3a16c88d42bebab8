# The Debian package (debian/): `dpkg-buildpackage -us -uc -b` builds it from a copy of the
# source tree (`make distdir` into the test's tmp folder: no git, and nothing is written into
# the source tree; dpkg-buildpackage writes its results beside the copy). Then:
# - its files (dpkg-deb -c): daemon, converter with every module of tools/rnnd_convert, the
#   units, the conf file in /etc/rnnd (a conffile), man pages, the bundled model, the models
#   folder /var/lib/rnnd/models, root's like /var/lib/rnnd, and nothing else out of place;
# - its control fields (dpkg-deb -I): version = rnnd --version, the dependencies;
# - the installed unit and conf file: the service runs as the system user rnnd and may write
#   only its state folder /var/lib/rnnd/state and its snapshot key folder /var/lib/rnnd/key,
#   systemd-analyze verify is silent and security
#   rates it 2.0 or lower; the conf file serves the models folder
#   and the bundled model; the packaged programs run from the unpacked tree, and are not a
#   sanitizer build even when this build is one (the package configures itself);
# - the maintainer scripts, run on a fake root with every command they call replaced by a
#   recorder: configure creates the user and enables rnnd.service only, and hands the user
#   nothing on a fresh install; an upgrade from the first layout (/var/lib/rnnd the user's)
#   gives /var/lib/rnnd back to root and moves the snapshot into the state folder; purge
#   removes the saved sessions, the state folder, the snapshot key with its folder and the
#   stat override;
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
for f in "$RNND_SRCDIR"/tools/rnnd_convert/*.py "$RNND_SRCDIR"/tools/rnnd_modules/*.py; do
    p=/usr/share/rnnd/python/${f#"$RNND_SRCDIR"/tools/}
    check "the package holds $p" has "$p"
done
# The service user owns nothing the package ships: /var/lib/rnnd and its models folder are
# root's, so it can neither replace the folder nor put a model in it.
check "/var/lib/rnnd is root/root, mode 0755" \
    grep -qE '^drwxr-xr-x root/root .* \./var/lib/rnnd/$' "$T/contents"
check "/var/lib/rnnd/models is a folder, root/root, mode 0755" \
    grep -qE '^drwxr-xr-x root/root .* \./var/lib/rnnd/models/$' "$T/contents"
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
for d in adduser python3 python3-numpy libmicrohttpd12 libjansson4 libopenblas0 libsystemd0 \
    libhiredis0.14; do
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
exec_start="$exec_start"' --state-dir %S/rnnd/state --snapshot-key-file %S/rnnd/key/snapshot.key'
for line in 'User=rnnd' 'Group=rnnd' 'StateDirectory=rnnd/state rnnd/key' \
            'StateDirectoryMode=0700' \
            'ProtectSystem=strict' 'Type=notify' "$exec_start"; do
    check "the packaged rnnd.service has '$line'" grep -qxF "$line" "$unit"
done
check "the packaged rnnd.service has no DynamicUser=" sh -c "! grep -q '^DynamicUser=' '$unit'"
# Under ProtectSystem=strict the service writes only the folders these lines name: the state
# folder must be the only one, and not the folder that holds the models.
writable='ProtectSystem|ReadWritePaths|(State|Runtime|Cache|Logs)Directory'
grep -E "^($writable)=" "$unit" | sort >"$T/writable"
check "the service may write /var/lib/rnnd/state and key only (no ReadWritePaths=, no other)" \
    test "$(cat "$T/writable")" = \
         "$(printf 'ProtectSystem=strict\nStateDirectory=rnnd/state rnnd/key')"
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
# The scripts run on a copy whose /var/lib/rnnd and /run/systemd/system lie under the fake
# root $F, each time laid out as the case needs, so that what they leave there is checked
# and nothing touches this machine. Every command they may call is a recorder on an otherwise
# empty PATH (a command the test does not know fails the script): mkdir, mv, rm, rmdir and
# chmod also run, on $F; chown only records (the user rnnd does not exist here). The
# recorders answer as on a fresh install: deb-systemd-helper's was-enabled is true and
# debian-installed false; dpkg-statoverride --list prints $OVERRIDE, and fails if it is empty.
F="$T/fakeroot"
scripts="$T/scripts"
stubs="$T/stubs"
mkdir -p "$scripts" "$stubs"
for s in postinst postrm; do
    sed -e "s|/var/lib/rnnd|$F&|g" -e "s|/run/systemd/system|$F&|g" "$T/ctl/$s" >"$scripts/$s"
done
for c in adduser deluser delgroup userdel groupdel dpkg-statoverride deb-systemd-helper \
         deb-systemd-invoke systemctl chown; do
    cat >"$stubs/$c" <<EOF
#!/bin/sh
echo "\${0##*/} \$*" >>"$T/calls"
case "\${0##*/} \$*" in
    "dpkg-statoverride --list"*) [ -n "\$OVERRIDE" ] || exit 1; echo "\$OVERRIDE"; exit 0 ;;
    *debian-installed*) exit 1 ;;
esac
exit 0
EOF
    chmod +x "$stubs/$c"
done
for c in mkdir mv rm rmdir chmod; do
    printf '#!/bin/sh\necho "${0##*/} $*" >>"%s"\nexec %s "$@"\n' \
        "$T/calls" "$(command -v "$c")" >"$stubs/$c"
    chmod +x "$stubs/$c"
done
lib="$F/var/lib/rnnd"
old_override='rnnd rnnd 700 /var/lib/rnnd'
lay_out() {   # lay_out old|new: $F as the first package (and its service) or this one left it
    chmod -R u+w "$F" 2>/dev/null
    rm -rf "$F"
    mkdir -p "$lib/models" "$F/run/systemd/system"
    if [ "$1" = old ]; then
        chmod 0700 "$lib"
        echo saved >"$lib/sessions.snap"
        echo partial >"$lib/sessions.snap.tmp"
    else
        mkdir -m 0700 "$lib/state" "$lib/key"
        echo saved >"$lib/state/sessions.snap"
        echo partial >"$lib/state/sessions.snap.tmp-0123456789abcdef"   # a crashed snapshot's
        echo key >"$lib/key/snapshot.key"
        echo 1795430348 >"$lib/key/snapshot.key.serial"
    fi
}
run_script() {   # run_script OVERRIDE SCRIPT ARGS...: the calls, $F taken out, go to $T/calls
    ov=$1
    shift
    : >"$T/calls"
    (cd "$T" && PATH="$stubs" OVERRIDE=$ov /bin/sh "$scripts/$@") >"$T/script.log" 2>&1 ||
        { cat "$T/script.log"; return 1; }
    sed -i "s|$F||g" "$T/calls"
}
called() { grep -qxF "$1" "$T/calls"; }
line_of() { grep -nxF "$1" "$T/calls" | head -1 | cut -d: -f1; }
before() { [ "$(line_of "$1")" -lt "$(line_of "$2")" ] 2>/dev/null; }
mode_of() { stat -c %a "$1"; }

lay_out new
rm -r "$lib/state"
check "postinst configure (fresh install) runs" run_script '' postinst configure
adduser_call='adduser --system --group --quiet --home /var/lib/rnnd --no-create-home rnnd'
enable_call="deb-systemd-helper enable rnnd.service"
check "postinst creates the system user rnnd" called "$adduser_call"
check "postinst enables rnnd.service" called "$enable_call"
check "postinst creates the user before it enables the service" \
    before "$adduser_call" "$enable_call"
check "postinst does not enable rnnd.socket" sh -c "! grep -q 'enable rnnd.socket' '$T/calls'"
check "postinst (fresh install) hands rnnd nothing: no stat override, chown, chmod or move" \
    sh -c "! grep -qE '^(dpkg-statoverride --(add|update|remove)|chown|chmod|mkdir|mv) ' \
           '$T/calls'"

# An upgrade from the first layout: /var/lib/rnnd was rnnd's (the stat override), with the
# snapshot in it. The service is stopped first (it writes the snapshot as it stops), the
# folder becomes root's before anything in it moves, and the snapshot moves to state/.
lay_out old
stop_call='deb-systemd-invoke stop rnnd.service'
unoverride_call='dpkg-statoverride --remove /var/lib/rnnd'
root_call='chown root:root /var/lib/rnnd'
state_call='chown rnnd:rnnd /var/lib/rnnd/state'
move_call='mv -f /var/lib/rnnd/sessions.snap /var/lib/rnnd/state/sessions.snap'
restart_call='deb-systemd-invoke restart rnnd.service'
check "postinst configure (upgrade from the first layout) runs" \
    run_script "$old_override" postinst configure 0.1.0
check "postinst stops rnnd.service before it changes /var/lib/rnnd" \
    before "$stop_call" "$unoverride_call"
check "postinst removes the stat override that gave /var/lib/rnnd to rnnd" \
    called "$unoverride_call"
check "postinst gives /var/lib/rnnd to root, mode 0755" \
    sh -c "grep -qxF '$root_call' '$T/calls' && [ $(mode_of "$lib") = 755 ]"
check "postinst makes /var/lib/rnnd root's before it creates the state folder" \
    before "$root_call" "mkdir -p /var/lib/rnnd/state"
check "postinst gives /var/lib/rnnd/state to rnnd, mode 0700" \
    sh -c "grep -qxF '$state_call' '$T/calls' && [ -d '$lib/state' ] &&
           [ $(mode_of "$lib/state" 2>/dev/null) = 700 ]"
check "postinst creates the user before it hands it the state folder" \
    before "$adduser_call" "$state_call"
check "postinst moves the saved sessions to /var/lib/rnnd/state" \
    sh -c "[ \"\$(cat '$lib/state/sessions.snap' 2>/dev/null)\" = saved ] &&
           [ ! -e '$lib/sessions.snap' ] && [ ! -e '$lib/sessions.snap.tmp' ]"
check "postinst leaves the models folder" test -d "$lib/models"
check "postinst starts the service again after the move" before "$move_call" "$restart_call"

# The first layout let the service user put a link at state/, to have postinst chown where
# it points: the link is removed, never followed.
lay_out old
mkdir -m 0755 "$F/elsewhere"
ln -s "$F/elsewhere" "$lib/state"
check "postinst configure (upgrade, a link at /var/lib/rnnd/state) runs" \
    run_script "$old_override" postinst configure 0.1.0
check "postinst replaces a link at /var/lib/rnnd/state by a folder, and leaves its target" \
    sh -c "[ ! -L '$lib/state' ] && [ -d '$lib/state' ] && [ $(mode_of "$F/elsewhere") = 755 ] &&
           [ ! -e '$F/elsewhere/sessions.snap' ]"

lay_out new
check "postinst configure (upgrade on this layout) runs" run_script '' postinst configure 0.1.0
check "postinst (upgrade on this layout) changes nothing in /var/lib/rnnd" \
    sh -c "! grep -qE '^(dpkg-statoverride --(add|update|remove)|chown|chmod|mkdir|mv|rm) ' \
           '$T/calls'"
lay_out new
check "postinst configure with the administrator's stat override runs" \
    run_script 'root adm 750 /var/lib/rnnd' postinst configure 0.1.0
check "postinst keeps a stat override that does not give /var/lib/rnnd to rnnd" \
    sh -c "! grep -qE '^(dpkg-statoverride --(add|update|remove)|chown|chmod) ' '$T/calls'"

lay_out new
touch "$lib/models/en.rnnd"
check "postrm purge runs" run_script '' postrm purge
check "postrm purge removes the saved sessions and the state folder" test ! -e "$lib/state"
check "postrm purge removes the snapshot key and its folder" test ! -e "$lib/key"
check "postrm purge keeps the models you put in /var/lib/rnnd/models" \
    test -f "$lib/models/en.rnnd"
check "postrm purge leaves the user rnnd" \
    sh -c "! grep -qE '^(deluser|delgroup|userdel|groupdel) ' '$T/calls'"
lay_out old
check "postrm purge (the first layout, never configured) runs" \
    run_script "$old_override" postrm purge
check "postrm purge removes the stat override and the whole of /var/lib/rnnd" \
    sh -c "grep -qxF '$unoverride_call' '$T/calls' && [ ! -e '$lib' ]"
lay_out new
check "postrm remove runs" run_script '' postrm remove
check "postrm remove keeps the saved sessions and the stat override" \
    sh -c "! grep -qE '^(rm|rmdir|dpkg-statoverride --remove) ' '$T/calls' &&
           [ -f '$lib/state/sessions.snap' ]"
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
