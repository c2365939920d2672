#!/usr/bin/env bash
# An emulated aarch64 compute node for tests: Debian 12 arm64 Python 3.11 and MPICH,
# matdx's dependencies as aarch64 wheels, all run by qemu-aarch64-static (no binfmt, no
# root inside). Built once into ~/.cache/matdx/aarch64-node and reused while
# pyproject.toml's dependencies are unchanged. Prints the node directory.
#
#   bash scripts/aarch64_node.sh            # build if needed (needs root for apt-get)
#
# Layout: root/ (the arm64 sysroot: python3.11, libmpich), site/ (aarch64 wheels of
# matdx's dependencies and mpi4py), python (a wrapper: qemu-aarch64-static -L root
# root/usr/bin/python3.11). matdx itself is not installed: tests install the wheel of the
# tree under test next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE="${MATDX_AARCH64_NODE:-$HOME/.cache/matdx/aarch64-node}"
PY=.venv/bin/python
KEY=$(sed -n '/^dependencies/,/^]/p;/^mpi = /p' pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$NODE/stamp" ] && [ "$(cat "$NODE/stamp")" = "$KEY" ]; then
    echo "$NODE"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
command -v qemu-aarch64-static >/dev/null || apt-get install -y -qq qemu-user-static >/dev/null
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
fi
rm -rf "$NODE"
mkdir -p "$NODE/debs" "$NODE/root"
# Debian 12's python3.11 and MPICH 4.0 for arm64, unpacked (no maintainer scripts needed)
(cd "$NODE/debs" && apt-get download -qq \
    python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
    libc6:arm64 zlib1g:arm64 libexpat1:arm64 libssl3:arm64 libffi8:arm64 libbz2-1.0:arm64 \
    liblzma5:arm64 libsqlite3-0:arm64 libuuid1:arm64 libgcc-s1:arm64 libstdc++6:arm64 \
    libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 libdb5.3:arm64 libcrypt1:arm64 \
    libnsl2:arm64 libtirpc3:arm64 media-types libmpich12:arm64 libgfortran5:arm64 \
    libhwloc15:arm64 libucx0:arm64 libnuma1:arm64 libudev1:arm64 libxml2:arm64 \
    libicu72:arm64 libltdl7:arm64 libibverbs1:arm64 librdmacm1:arm64 libnl-3-200:arm64 \
    libnl-route-3-200:arm64 2>&1 | grep -v unsandboxed || true)
for deb in "$NODE"/debs/*.deb; do dpkg -x "$deb" "$NODE/root"; done
rm -rf "$NODE/debs"
# mpi4py's wheels load the MPI library by its MPICH ABI name
ln -sf libmpich.so.12 "$NODE/root/usr/lib/aarch64-linux-gnu/libmpi.so.12"
# matdx's dependencies (and mpi4py) as aarch64 wheels
WHEEL=$(mktemp -d)
"$PY" -m pip wheel -q --no-deps -w "$WHEEL" .
"$PY" -m pip install -q --target "$NODE/site" --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 \
    --python-version 3.11 --only-binary=:all: "$WHEEL"/matdx-*.whl mpi4py
rm -rf "$WHEEL" "$NODE"/site/matdx "$NODE"/site/matdx-*.dist-info
cat > "$NODE/python" <<EOF
#!/bin/sh
PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$NODE/site" export PYTHONPATH
exec qemu-aarch64-static -L "$NODE/root" "$NODE/root/usr/bin/python3.11" "\$@"
EOF
chmod +x "$NODE/python"
"$NODE/python" -c "import platform, mpi4py.MPI, numpy; assert platform.machine() == 'aarch64'"
echo "$KEY" > "$NODE/stamp"
echo "$NODE"
