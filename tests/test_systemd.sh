# The systemd units: `systemd-analyze verify` on rnnd.service and rnnd.socket, generated from
# systemd/rnnd.service.in the way `make install` does but with @bindir@ = the build directory
# (verify checks that ExecStart's binary exists), must print nothing and exit 0; and
# `systemd-analyze security --offline=yes` must rate the service's exposure 2.0 or lower.
# Also checks that the unit says what docs/ops.md and the issue promise (Type=notify, the
# watchdog, the stop timeout above shutdown_timeout_s, the state directory flag), that a
# broken copy is caught (so a silent verify means something), and that every man page the
# units name exists. Needs systemd-analyze (Debian package systemd; tools/setup installs it).
# Run by `make check` (POSIX sh; RNND_BIN, RNND_SRCDIR and RNND_TEST_TMP from the test
# environment).

set -u
: "${RNND_BIN:?}" "${RNND_SRCDIR:?}" "${RNND_TEST_TMP:?}"

T="$RNND_TEST_TMP/systemd.$$"
mkdir -p "$T" || exit 1
trap 'rm -rf "$T"' EXIT
failures=0
checks=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

ok() {
    echo "ok: $*"
}

check() {   # check NAME COMMAND...: COMMAND succeeds
    name=$1
    shift
    checks=$((checks + 1))
    if "$@"; then ok "$name"; else fail "$name"; fi
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "FAIL: systemd-analyze not found: install the Debian package systemd (tools/setup)"
    exit 1
fi

bindir=$(cd "$(dirname "$RNND_BIN")" && pwd)
unit="$T/rnnd.service"
sed -e "s|@bindir[@]|$bindir|g" -e "s|@sysconfdir[@]|$T/etc|g" \
    "$RNND_SRCDIR/systemd/rnnd.service.in" >"$unit"
cp "$RNND_SRCDIR/systemd/rnnd.socket" "$T/rnnd.socket"

check "every @VARIABLE@ of rnnd.service.in is substituted" \
    sh -c "! grep -n '@[a-z]*@' '$unit'"

# The daemon's own facts the unit relies on
shutdown_default=$("$RNND_BIN" serve --print-config | sed -n 's/^shutdown_timeout_s = //p')
stop_timeout=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$unit")
check "TimeoutStopSec ($stop_timeout) is above shutdown_timeout_s's default ($shutdown_default)" \
    test "${stop_timeout:-0}" -gt "${shutdown_default:-99999}"
for line in 'Type=notify' 'NotifyAccess=main' 'ExecReload=kill -HUP $MAINPID' \
            'DynamicUser=yes' \
            'StateDirectory=rnnd rnnd-key' 'ConfigurationDirectory=rnnd' 'Restart=on-failure' \
            'ProtectSystem=strict' 'NoNewPrivileges=yes' 'MemoryDenyWriteExecute=yes' \
            'CapabilityBoundingSet=' 'SystemCallFilter=@system-service' \
            'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'LimitNOFILE=65536'; do
    check "rnnd.service has '$line'" grep -qxF "$line" "$unit"
done
check "WatchdogSec is set" grep -qE '^WatchdogSec=[1-9][0-9]*$' "$unit"
# the snapshot key in a state folder of its own, not in the sessions' (docs/state.md)
key_flags='--state-dir %S/rnnd --snapshot-key-file %S/rnnd-key/snapshot.key'
check "ExecStart runs rnnd serve with --state-dir %S/rnnd and the key in %S/rnnd-key" \
    grep -qE "^ExecStart=$bindir/rnnd serve .*$key_flags\$" "$unit"
# every ExecStart flag is one rnnd serve knows
flags=$(sed -n 's/^ExecStart=[^ ]* serve //p' "$unit" | tr ' ' '\n' | grep '^--' | sed 's/^--//')
for f in $flags; do
    check "rnnd serve knows --$f" sh -c "'$RNND_BIN' serve --help | grep -q -- '--$f'"
done
check "rnnd.socket listens on 127.0.0.1:8080, one socket, Accept=no" \
    sh -c "grep -qx 'ListenStream=127.0.0.1:8080' '$T/rnnd.socket' &&
           test \"\$(grep -c '^ListenStream=' '$T/rnnd.socket')\" -eq 1 &&
           grep -qx 'Accept=no' '$T/rnnd.socket'"

# Every man page the units name exists in the source (verify runs with --man=no: a build
# machine need not have man(1) or the pages installed).
for page in $(sed -n 's/^Documentation=//p' "$unit" "$T/rnnd.socket" | tr ' ' '\n' |
              sed -n 's/^man:\([a-z-]*\)(\([0-9]\))$/\1.\2/p' | sort -u); do
    check "man page $page named by Documentation= exists" test -f "$RNND_SRCDIR/man/$page"
done

# verify: silent and exit 0
checks=$((checks + 1))
if out=$(cd "$T" && systemd-analyze verify --man=no ./rnnd.socket ./rnnd.service 2>&1) &&
   [ -z "$out" ]; then
    ok "systemd-analyze verify rnnd.socket rnnd.service: clean"
else
    fail "systemd-analyze verify: $out"
fi

# ... and it does catch mistakes: an unknown key, a missing binary
awk '{ print } /^\[Service\]$/ { print "NoSuchKey=1" }' "$unit" >"$T/broken1.service"
sed -e "s|^ExecStart=$bindir/rnnd|ExecStart=$T/no-such-rnnd|" "$unit" >"$T/broken2.service"
for b in broken1 broken2; do
    checks=$((checks + 1))
    out=$(cd "$T" && systemd-analyze verify --man=no "./$b.service" 2>&1)
    if [ -n "$out" ]; then
        ok "verify reports $b.service"
    else
        fail "verify silent on $b.service"
    fi
done

# security: overall exposure <= 2.0
out=$(cd "$T" && systemd-analyze security --offline=yes --no-pager ./rnnd.service 2>&1)
score=$(printf '%s\n' "$out" |
        sed -n 's/.*Overall exposure level for rnnd.service: \([0-9.]*\).*/\1/p')
checks=$((checks + 1))
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    ok "systemd-analyze security --offline=yes: exposure $score <= 2.0"
else
    fail "systemd-analyze security: exposure '${score:-?}' (want <= 2.0); its report:"
    printf '%s\n' "$out" | grep -E '✗|Overall' | head -40
fi

echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
