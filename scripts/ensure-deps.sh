#!/usr/bin/env bash
# Installs what the integration tests need, and only what is missing, so that a second run
# takes well under a second. Safe to run repeatedly (npm test runs it every time).
#   Debian packages: libiscsi-bin (iscsi-test-cu, iscsi-inq), qemu-utils + qemu-block-extra
#   (qemu-io/qemu-img with the iscsi:// driver), tgt (baseline peer), then the VM harness's
#   own `setup` (packages, guest kernel, initramfs), unless SKIP_VM=1.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKGS=(libiscsi-bin qemu-utils qemu-block-extra tgt)

say() { echo "ensure-deps: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else say "need root for: $*"; return 1; fi
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  # The package lists on a fresh machine can be stale or empty: update only when needed.
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
else
  say "debian packages present (${PKGS[*]})"
fi

if [ "${SKIP_VM:-0}" = 1 ]; then
  say "SKIP_VM=1: not setting up the VM initiator"
  exit 0
fi

# CI clones the repo with shared/ beside it; a developer's tree lives in /work/main.
harness=""
for h in "${VM_INITIATOR:-}" "$repo_root/../shared/harness/vm-initiator" /work/shared/harness/vm-initiator; do
  if [ -n "$h" ] && [ -f "$h" ]; then harness=$h; break; fi
done
if [ -z "$harness" ]; then
  say "vm-initiator harness not found (looked in $repo_root/../shared/harness and /work/shared/harness); set SKIP_VM=1 to run without the VM tests"
  exit 1
fi
say "vm-initiator setup ($harness)"
# Idempotent and fast when the guest image is current; it installs its own packages.
# Run through bash: a copied shared/ may have lost the executable bit.
as_root bash "$harness" setup
