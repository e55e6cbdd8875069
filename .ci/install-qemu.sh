#!/usr/bin/env bash
# Installs QEMU >= 9.0 (qemu-system-aarch64) and the small tools Veil's tests use, on Debian
# bookworm as root. Bookworm's own QEMU is 7.2 (no raspi4b, older GIC models), so QEMU comes
# from bookworm-backports. The mirror and key are read from the system's own Debian entry,
# never hard-coded.
set -euo pipefail

need_qemu() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || return 0
    local v
    v=$(qemu-system-aarch64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
    [ "${v:-0}" -lt 9 ]
}

if ! need_qemu && command -v dtc >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Veil needs qemu-system-aarch64 >= 9.0 and dtc; run this script as root to install them." >&2
    exit 1
fi

src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/veil-bookworm-backports.sources
if need_qemu && [ ! -f "$bp" ]; then
    if [ ! -f "$src" ]; then
        echo "no $src: add bookworm-backports to your APT sources by hand, then rerun" >&2
        exit 1
    fi
    # The first stanza of debian.sources is the main archive; reuse its URIs and Signed-By.
    uris=$(awk '/^URIs:/{print $2; exit}' "$src")
    key=$(awk '/^Signed-By:/{print $2; exit}' "$src")
    cat >"$bp" <<EOT
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: $key
EOT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if need_qemu; then
    apt-get install -y -qq -t bookworm-backports qemu-system-arm >/dev/null
fi
apt-get install -y -qq device-tree-compiler >/dev/null
qemu-system-aarch64 --version | head -1
