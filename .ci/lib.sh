# Shared by the .ci/install-*.sh scripts: quiet logging, root, and host packages.
# Source it after setting NAME (the script's name for messages).

LOG=$(mktemp -t "$NAME.XXXXXX")
trap 'rm -f "$LOG"' EXIT

die() {
    echo "$NAME: $*" >&2
    if [ -s "$LOG" ]; then
        echo "--- log ---" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

# Run a command with its output in $LOG; show the log only if it fails.
quiet() {
    "$@" </dev/null >>"$LOG" 2>&1 || die "failed: $*"
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo)"
    SUDO=(sudo -n)
fi

# install_host_pkgs PKG...: install the missing ones; `apt-get update` only if needed
# (no package lists at all, a package without install candidate, or an install that
# fails on stale lists).
install_host_pkgs() {
    local missing=() p st cand need_update=0
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$st" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    local APT_INSTALL=(apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0)
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        need_update=1
    else
        for p in "${missing[@]}"; do
            cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
            if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
        done
    fi
    if [ $need_update -eq 1 ]; then
        quiet "${SUDO[@]}" apt-get update -qq
    fi
    if ! "${SUDO[@]}" "${APT_INSTALL[@]}" "${missing[@]}" </dev/null >>"$LOG" 2>&1; then
        [ $need_update -eq 1 ] && die "apt-get install ${missing[*]} failed"
        quiet "${SUDO[@]}" apt-get update -qq
        quiet "${SUDO[@]}" "${APT_INSTALL[@]}" "${missing[@]}"
    fi
}
