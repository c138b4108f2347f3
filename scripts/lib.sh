# shellcheck shell=bash
# Shared helpers for scripts/*: logging, temp dirs, mounts and cleanup.
# Source it from a script that has `set -euo pipefail`; it defines functions and a few
# globals (ROOT, STRATA, TMPBASE) and installs nothing until lib_init_cleanup is called.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# Temp dirs of these scripts all start with this prefix, so that a later run can find and
# unmount what an earlier, killed run left behind.
TMPBASE="$(realpath -m "${TMPDIR:-/tmp}")"
CI_PREFIX="$TMPBASE/strata-ci."

# Cargo's target dir (honours CARGO_TARGET_DIR); logs of the conformance runs go below it.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
# The strata binary: $STRATA_BIN, else the release build of this workspace.
STRATA="${STRATA_BIN:-$TARGET_DIR/release/strata}"

_ts() { date +%H:%M:%S; }
log() { printf '[%s] %s\n' "$(_ts)" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$(_ts)" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$(_ts)" "$*" >&2
    exit 1
}

require_root() {
    [[ "$(id -u)" -eq 0 ]] || die "$1 must run as root (FUSE allow_other, uid switching, drop_caches)"
}

require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run scripts/install-deps"
    done
}

# ---------------------------------------------------------------- mounts

# Escape a path the way /proc/self/mountinfo does (space, tab, newline, backslash).
_mi_escape() {
    local p=$1
    p=${p//\\/\\134}
    p=${p// /\\040}
    p=${p//$'\t'/\\011}
    p=${p//$'\n'/\\012}
    printf '%s' "$p"
}

# is_mounted PATH: true if PATH is a mount point. Reads mountinfo only (never stats PATH,
# which would hang on a dead FUSE daemon).
is_mounted() {
    local esc
    esc=$(_mi_escape "$1")
    awk -v p="$esc" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# mount_fstype PATH: filesystem type of the mount at PATH (e.g. fuse.strata), or nothing.
mount_fstype() {
    local esc
    esc=$(_mi_escape "$1")
    awk -v p="$esc" '$5 == p { for (i = 7; i <= NF; i++) if ($i == "-") { t = $(i + 1) } } END { print t }' /proc/self/mountinfo
}

# mounts_under PREFIX: mount points whose path starts with PREFIX, deepest first.
mounts_under() {
    local esc
    esc=$(_mi_escape "$1")
    awk -v p="$esc" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo |
        sed -e 's/\\040/ /g' -e 's/\\011/\t/g' -e 's/\\134/\\/g' | sort -r
}

# fuse_abort PATH: abort the FUSE connection behind PATH (last resort for a hung daemon).
fuse_abort() {
    local esc devno major minor
    esc=$(_mi_escape "$1")
    devno=$(awk -v p="$esc" '$5 == p { print $3 }' /proc/self/mountinfo | tail -n 1)
    [[ -n "$devno" ]] || return 0
    major=${devno%%:*}
    minor=${devno##*:}
    [[ "$major" == 0 ]] || return 0
    if [[ ! -d /sys/fs/fuse/connections/$minor ]]; then
        mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
    fi
    if [[ -w /sys/fs/fuse/connections/$minor/abort ]]; then
        warn "aborting FUSE connection $minor of $1"
        echo 1 >"/sys/fs/fuse/connections/$minor/abort" || true
    fi
}

# unmount_path PATH [strata]: unmount, politely first. With "strata", ask `strata umount`
# (flush + daemon exit) before fusermount3 -u; then umount -l; then abort the connection.
unmount_path() {
    local mnt=$1 kind=${2:-fuse}
    is_mounted "$mnt" || return 0
    if [[ "$kind" == strata && -x "$STRATA" ]]; then
        timeout -k 5 "${STRATA_UMOUNT_TIMEOUT:-120}" "$STRATA" umount "$mnt" </dev/null >/dev/null 2>&1 ||
            warn "strata umount $mnt failed; falling back to fusermount3 -u"
        is_mounted "$mnt" || return 0
    fi
    timeout -k 5 30 fusermount3 -u -q "$mnt" </dev/null >/dev/null 2>&1 || true
    is_mounted "$mnt" || return 0
    warn "fusermount3 -u $mnt failed; lazy unmount"
    umount -l "$mnt" 2>/dev/null || true
    is_mounted "$mnt" || return 0
    fuse_abort "$mnt"
    umount -l "$mnt" 2>/dev/null || true
    if is_mounted "$mnt"; then
        warn "could not unmount $mnt"
        return 1
    fi
}

# daemon_pid NAME MOUNTPOINT: pid of the process named NAME with MOUNTPOINT as one of its
# arguments (the FUSE daemon serving it), or nothing.
daemon_pid() {
    local name=$1 mnt=$2 pid
    for pid in $(pgrep -x "$name" 2>/dev/null || true); do
        if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$mnt" &&
            ! tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qx 'umount'; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 0
}

# proc_status_kib PID FIELD: a /proc/PID/status field (VmHWM, VmRSS) in KiB, or nothing.
proc_status_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# ---------------------------------------------------------------- cleanup

CLEANUP_MOUNTS=() # "kind|path", unmounted in reverse order
CLEANUP_PIDS=()   # daemons we started, killed if still alive after their unmount
CLEANUP_DIRS=()   # removed when nothing is mounted below them
CLEANUP_HOOKS=()  # extra commands (function names) run first

# run_child DIR CMD...: run CMD in DIR in the background and wait for it. A TERM/INT to
# the script then runs its cleanup at once (bash defers traps while a foreground child
# runs), and the cleanup stops the child. Redirections of the call apply to CMD.
CHILD_PID=
run_child() {
    local dir=$1 rc=0
    shift
    (cd "$dir" && exec "$@") &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=
    return "$rc"
}

_lib_cleanup() {
    local rc=$? i entry pid d n
    set +e
    trap - EXIT INT TERM HUP
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        for ((n = 0; n < 50; n++)); do
            kill -0 "$CHILD_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$CHILD_PID" 2>/dev/null
    fi
    for ((i = ${#CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do
        "${CLEANUP_HOOKS[$i]}"
    done
    for ((i = ${#CLEANUP_MOUNTS[@]} - 1; i >= 0; i--)); do
        entry=${CLEANUP_MOUNTS[$i]}
        unmount_path "${entry#*|}" "${entry%%|*}"
    done
    for pid in "${CLEANUP_PIDS[@]}"; do
        for ((n = 0; n < 50; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "daemon $pid still alive after unmount; killing it"
            kill -TERM "$pid" 2>/dev/null
            sleep 2
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    for d in "${CLEANUP_DIRS[@]}"; do
        [[ -d "$d" ]] || continue
        if [[ -n "$(mounts_under "$d/")" ]]; then
            warn "leaving $d: something is still mounted below it"
        else
            rm -rf --one-file-system "$d"
        fi
    done
    exit "$rc"
}

# Call once per script, before creating anything.
lib_init_cleanup() {
    trap _lib_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# make_workdir NAME VAR: create a fresh temp dir, removed on exit and tagged with our pid
# for reap_stale, and store its path in the variable VAR (not printed: a command
# substitution would run in a subshell and lose the cleanup registration).
make_workdir() {
    local d
    mkdir -p "$TMPBASE"
    d=$(mktemp -d "${CI_PREFIX}$1.XXXXXX")
    # mktemp makes it 0700: other users (pjdfstest's uid switching, allow_other) must be
    # able to reach a mount point inside it.
    chmod 755 "$d"
    echo "$$" >"$d/.owner"
    CLEANUP_DIRS+=("$d")
    printf -v "$2" '%s' "$d"
}

# reap_stale: unmount and delete what earlier runs of these scripts left behind (their
# owner process is gone). With CI=true or STRATA_REAP_ALL=1, also unmount every strata
# FUSE mount below $TMPDIR (e.g. left by a crashed end-to-end test).
reap_stale() {
    local d owner mnt t n=0
    for d in "$CI_PREFIX"*; do
        [[ -d "$d" ]] || continue
        owner=$(cat "$d/.owner" 2>/dev/null || true)
        if [[ -n "$owner" ]] && kill -0 "$owner" 2>/dev/null; then
            continue
        fi
        while IFS= read -r mnt; do
            [[ -n "$mnt" ]] || continue
            warn "unmounting stale $mnt"
            t=fuse
            if is_strata_mount "$mnt"; then t=strata; fi
            unmount_path "$mnt" "$t" || true
        done < <(mounts_under "$d/")
        if [[ -z "$(mounts_under "$d/")" ]]; then
            rm -rf --one-file-system "$d"
            n=$((n + 1))
        fi
    done
    if [[ "${CI:-}" == true || "${STRATA_REAP_ALL:-}" == 1 ]]; then
        while IFS= read -r mnt; do
            [[ -n "$mnt" ]] || continue
            is_strata_mount "$mnt" || continue
            warn "unmounting stale strata mount $mnt (store $(_mount_source "$mnt"))"
            unmount_path "$mnt" strata || true
        done < <(mounts_under "$TMPBASE/")
    fi
    if ((n > 0)); then log "removed $n stale temp dir(s) of earlier runs"; fi
    return 0
}

# is_strata_mount PATH: a FUSE mount whose source is a strata store (has strata.toml) or
# whose type names strata.
is_strata_mount() {
    local t src
    t=$(mount_fstype "$1")
    [[ "$t" == fuse* ]] || return 1
    [[ "$t" != *strata* ]] || return 0
    src=$(_mount_source "$1")
    [[ "$src" == /* && -f "$src/strata.toml" ]]
}

_mount_source() {
    local esc
    esc=$(_mi_escape "$1")
    awk -v p="$esc" '$5 == p { for (i = 7; i <= NF; i++) if ($i == "-") { s = $(i + 2) } } END { print s }' /proc/self/mountinfo
}

# ---------------------------------------------------------------- strata

# strata_init STORE: `strata init STORE $STRATA_INIT_ARGS`.
strata_init() {
    local store=$1 out
    local -a extra=()
    [[ -x "$STRATA" ]] || die "strata binary not found at $STRATA (cargo build --release, or set STRATA_BIN)"
    if [[ -n "${STRATA_INIT_ARGS:-}" ]]; then read -r -a extra <<<"$STRATA_INIT_ARGS"; fi
    if ! out=$("$STRATA" init "$store" "${extra[@]}" </dev/null 2>&1); then
        printf '%s\n' "$out" >&2
        die "strata init $store failed"
    fi
}

# strata_mount STORE MOUNTPOINT LOGFILE [MOUNT-OPTION...]: mount, wait until ready,
# register for cleanup. Sets STRATA_PID to the daemon's pid (empty if it could not be
# found, e.g. for a second mount served by an already running daemon).
STRATA_PID=
strata_mount() {
    local store=$1 mnt=$2 logf=$3 n
    mkdir -p "$mnt"
    CLEANUP_MOUNTS+=("strata|$mnt")
    if ! timeout -k 5 "${STRATA_MOUNT_TIMEOUT:-60}" "$STRATA" mount "${@:4}" "$store" "$mnt" </dev/null >>"$logf" 2>&1; then
        tail -n 30 "$logf" >&2 || true
        die "strata mount $store $mnt failed (log: $logf)"
    fi
    for ((n = 0; n < 50; n++)); do
        is_mounted "$mnt" && break
        sleep 0.2
    done
    if ! is_mounted "$mnt"; then
        tail -n 30 "$logf" >&2 || true
        die "strata mount returned but $mnt is not a mount point after 10 s"
    fi
    STRATA_PID=$(daemon_pid strata "$mnt")
    if [[ -n "$STRATA_PID" ]]; then
        CLEANUP_PIDS+=("$STRATA_PID")
    else
        warn "could not find the strata daemon serving $mnt (RSS will not be recorded)"
    fi
}

# strata_umount MOUNTPOINT: `strata umount`, then check that the mount and daemon are gone.
strata_umount() {
    local mnt=$1 pid=${STRATA_PID:-} n
    if ! timeout -k 5 "${STRATA_UMOUNT_TIMEOUT:-120}" "$STRATA" umount "$mnt" </dev/null >&2; then
        die "strata umount $mnt failed"
    fi
    if is_mounted "$mnt"; then die "strata umount returned but $mnt is still mounted"; fi
    if [[ -n "$pid" ]]; then
        for ((n = 0; n < 100; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then die "strata umount returned but daemon $pid is still running after 10 s"; fi
    fi
    STRATA_PID=
}

# strata_verify STORE: `strata verify STORE`, output shown on failure.
strata_verify() {
    local out
    if ! out=$(timeout -k 5 "${STRATA_VERIFY_TIMEOUT:-600}" "$STRATA" verify "$1" </dev/null 2>&1); then
        printf '%s\n' "$out" | tail -n 40 >&2
        return 1
    fi
}

# ---------------------------------------------------------------- known-failure lists

# read_list FILE: non-comment, non-blank lines (first word of each), sorted and unique.
read_list() {
    [[ -f "$1" ]] || return 0
    sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]].*$//' "$1" | grep -v '^$' | sort -u || true
}
