#!/usr/bin/env bash
# Build dist/hostsec_<version>_<arch>.deb: hostsec in its own virtualenv under
# /opt/hostsec (Debian's python3 3.11; the Python dependencies from PyPI, as pinned by
# pyproject.toml), /usr/bin/hostsec, the systemd unit, /etc/hostsec. Needs dpkg-deb and
# Debian's python3 with venv (python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${DEB_PYTHON:-/usr/bin/python3}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' hostsec/__init__.py)
arch=$(dpkg --print-architecture)
out=${1:-dist}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
venv_final=/opt/hostsec/venv
venv="$root$venv_final"

mkdir -p "$root/opt/hostsec" "$root/usr/bin" "$root/lib/systemd/system" \
         "$root/usr/share/doc/hostsec" "$root/DEBIAN"
"$PYTHON" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --no-compile .
# The venv was built under the staging directory: point its scripts at the final path.
grep -rlI --null "$venv" "$venv/bin" | xargs -0 -r sed -i "s|$venv|$venv_final|g"
rm -rf "$venv/lib"/python3*/site-packages/pip* "$venv/bin"/pip*
find "$venv" -name __pycache__ -prune -exec rm -rf {} +
ln -s "$venv_final/bin/hostsec" "$root/usr/bin/hostsec"
install -m 0644 packaging/hostsec.service "$root/lib/systemd/system/hostsec.service"
install -m 0644 README.md "$root/usr/share/doc/hostsec/README.md"
cp -r policies "$root/usr/share/doc/hostsec/examples"
install -d -m 0755 "$root/etc/hostsec/policies.d" "$root/etc/hostsec/certs" "$root/etc/hostsec/cacerts"
install -d -m 0700 "$root/etc/hostsec/secrets"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" packaging/debian/control.in > "$root/DEBIAN/control"
install -m 0755 packaging/debian/postinst packaging/debian/prerm "$root/DEBIAN/"
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$root" "$out/hostsec_${version}_${arch}.deb" >/dev/null
echo "$out/hostsec_${version}_${arch}.deb"
