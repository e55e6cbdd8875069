#!/usr/bin/env bash
# Installs QEMU >= 9.0 (qemu-system-aarch64) and the small tools Veil's tests use, on Debian
# (bookworm or newer) as root. Bookworm's own QEMU is 7.2 (no raspi4b, older GIC models), so
# there QEMU comes from bookworm-backports; a release whose own QEMU is new enough uses that.
# The mirror and key of the backports entry are read from the system's own Debian entry, never
# hard-coded. Does nothing when all is installed already.
set -euo pipefail

min_major=9

# The major version of an installed qemu-system-aarch64, or 0.
installed_major() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || { echo 0; return; }
    qemu-system-aarch64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1
}

need_qemu() {
    local v
    v=$(installed_major)
    [ "${v:-0}" -lt "$min_major" ]
}

# The major version APT would install from `$1` (a suite; empty = the default), or 0.
candidate_major() {
    local v
    v=$(apt-cache policy ${1:+-t "$1"} qemu-system-arm 2>/dev/null | awk '/Candidate:/{print $2; exit}')
    v=${v#*:}             # drop the epoch: 1:10.0.2+ds-2 -> 10.0.2+ds-2
    v=${v%%[!0-9]*}       # keep the leading number
    echo "${v:-0}"
}

if ! need_qemu && command -v dtc >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Veil needs qemu-system-aarch64 >= $min_major.0 and dtc; run this script as root to install them:" >&2
    echo "  sudo bash .ci/install-qemu.sh" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get: install qemu-system-aarch64 >= $min_major.0 and dtc with your package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

if need_qemu; then
    if [ "$(candidate_major)" -ge "$min_major" ]; then
        apt-get install -y -qq qemu-system-arm >/dev/null
    else
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        if [ -z "$codename" ]; then
            echo "cannot tell this system's release (no VERSION_CODENAME in /etc/os-release)" >&2
            exit 1
        fi
        suite="$codename-backports"
        src=/etc/apt/sources.list.d/debian.sources
        bp=/etc/apt/sources.list.d/veil-$suite.sources
        if [ ! -f "$bp" ]; then
            if [ -f "$src" ]; then
                # The first stanza of debian.sources is the main archive: reuse its URIs and key.
                uris=$(awk '/^URIs:/{print $2; exit}' "$src")
                key=$(awk '/^Signed-By:/{print $2; exit}' "$src")
            elif [ -f /etc/apt/sources.list ]; then
                # One-line style: `deb [options] URI suite components`; the key is APT's default.
                uris=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
                key=
            fi
            if [ -z "${uris:-}" ]; then
                echo "cannot find the Debian mirror in $src or /etc/apt/sources.list:" >&2
                echo "add $suite to your APT sources by hand, then rerun" >&2
                exit 1
            fi
            {
                echo "Types: deb"
                echo "URIs: $uris"
                echo "Suites: $suite"
                echo "Components: main"
                if [ -n "$key" ]; then echo "Signed-By: $key"; fi
            } >"$bp"
            apt-get update -qq
        fi
        if [ "$(candidate_major "$suite")" -lt "$min_major" ]; then
            echo "$suite has no qemu-system-arm >= $min_major.0: install a newer QEMU by hand" >&2
            exit 1
        fi
        apt-get install -y -qq -t "$suite" qemu-system-arm >/dev/null
    fi
fi
apt-get install -y -qq device-tree-compiler >/dev/null
qemu-system-aarch64 --version | head -1
