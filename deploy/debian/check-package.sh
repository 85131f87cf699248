#!/usr/bin/env bash
# Builds the Debian package with `cargo deb`, installs it on this machine (as
# root; CI's machine is its own), and checks the installed layout: the binary,
# the service user, the unit (systemd-analyze verify), and `courtline check`
# run by the service user from the installed paths. Purges it again at the end
# (the user and /var/lib/courtline stay, as after any purge).
#   bash deploy/debian/check-package.sh                 # release build, as shipped
#   bash deploy/debian/check-package.sh --profile dev --fast   # CI: reuses the test build
# cargo-deb is pinned: 3.8 warns that --profile dev will become an error.
set -euo pipefail
cd "$(dirname "$0")/../.."

if dpkg -s courtline >/dev/null 2>&1; then
  # CI's machine may keep one from a run that was killed before its purge;
  # anywhere else it may be a real installation.
  if [ "${CI:-}" != true ]; then
    echo "check-package: courtline is already installed here; not touching it" >&2
    exit 1
  fi
  dpkg --purge courtline
fi
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  start=$(date +%s)
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
  echo "check-package: cargo install cargo-deb took $(( $(date +%s) - start )) s"
fi
start=$(date +%s)
deb=$(cargo deb "$@" | tail -n 1)
echo "check-package: cargo deb $* took $(( $(date +%s) - start )) s: $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'

trap 'dpkg --purge courtline >/dev/null; rmdir --ignore-fail-on-non-empty /var/lib/courtline 2>/dev/null || true' EXIT
dpkg -i "$deb"

test -x /usr/bin/courtline
id courtline
unit=/usr/lib/systemd/system/courtline.service
test -f "$unit"
# verify exits 0 on unknown keys and bad values: any output is a failure.
out=$(systemd-analyze verify "$unit" 2>&1)
if [ -n "$out" ]; then
  echo "check-package: systemd-analyze verify $unit:" >&2
  echo "$out" >&2
  exit 1
fi
test "$(stat -c '%U:%G %a' /etc/courtline/courtline.toml)" = "root:courtline 640"
test "$(stat -c '%U:%G %a' /var/lib/courtline)" = "courtline:courtline 750"
for wav in three_rules_zh three_rules_en busy_zh after_hours_zh greetings/pudong; do
  test -f "/usr/share/courtline/audio/$wav.wav"
done

# As the service runs it: the installed configuration, found without --config
# from a directory that has no config/courtline.toml.
(cd / && runuser -u courtline -- courtline check)
# The Shanghai example, from /usr/share/courtline as from the repository root.
(cd /usr/share/courtline && runuser -u courtline -- courtline --config config/examples/shanghai/courtline.toml check)
courtline --help | grep -q '/etc/courtline/courtline.toml'
echo "check-package: $deb installs and checks"
