#!/usr/bin/env bash
# Builds onedl-mmcv's wheel, C++ ops included, against the torch of the Python given, once per
# (mmcv version, torch version, Python) on this machine: later calls print the cached wheel's path.
#
#   tools/build_mmcv.sh PYTHON   -> prints the wheel's path (its only line on stdout)
#
# Why from source: no Linux wheel of onedl-mmcv exists (its -cu128-torch2-8 package ships a Windows
# wheel only). Why patched: its setup.py passes -std=c++17 to the C++ compiler, and torch >= 2.10's
# headers need C++20 (seen at torch 2.14: every op file compiles and runs with -std=c++20).
# Why -O0 -g0: the ops are compiled for tests and CPU use of nms/RoIAlign, where an unoptimised
# build runs fast enough, and it compiles in a fraction of the -O3 -g time (MMCV_CFLAGS overrides).
# The cache is VFMKD_WHEEL_CACHE (default ~/.cache/vfmkd_ray/wheels).
set -euo pipefail

PYTHON=${1:?usage: tools/build_mmcv.sh PYTHON}
# Absolute, without resolving the venv's symlink (the build runs in another directory).
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
MMCV_VERSION=2.3.6
CFLAGS_USED=${MMCV_CFLAGS:--O0 -g0}
CACHE=${VFMKD_WHEEL_CACHE:-$HOME/.cache/vfmkd_ray/wheels}

TORCH=$("$PYTHON" -c 'import torch; print(torch.__version__)')
# torch >= 2.10's headers need C++20; printed as major*100+minor, e.g. 214.
TORCH_MINOR=$("$PYTHON" -c 'import torch; a, b = torch.__version__.split(".")[:2]; print(int(a) * 100 + int(b))')
PYTAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# mmcv's setup.py builds CUDA ops when torch sees a GPU or FORCE_CUDA=1, CPU ops otherwise.
OPS=$("$PYTHON" -c 'import os, torch; print("cuda" if torch.cuda.is_available() or os.getenv("FORCE_CUDA") == "1" else "cpu")')
FLAGS_TAG=$(echo "$CFLAGS_USED" | tr -c 'A-Za-z0-9\n' '_')
DEST="$CACHE/onedl-mmcv-$MMCV_VERSION/torch-$TORCH-$PYTAG-$OPS-$FLAGS_TAG"
if compgen -G "$DEST/onedl_mmcv-$MMCV_VERSION-*.whl" > /dev/null; then
    echo "onedl-mmcv $MMCV_VERSION for torch $TORCH ($OPS ops, $CFLAGS_USED): cached in $DEST" >&2
    ls "$DEST"/onedl_mmcv-$MMCV_VERSION-*.whl | head -1
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "onedl-mmcv $MMCV_VERSION: building its $OPS ops against torch $TORCH (once per machine; minutes)" >&2
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "onedl-mmcv==$MMCV_VERSION" -d "$WORK" >&2
tar -xzf "$WORK/onedl_mmcv-$MMCV_VERSION.tar.gz" -C "$WORK"
SRC="$WORK/onedl_mmcv-$MMCV_VERSION"
if [ "$TORCH_MINOR" -ge 210 ]; then
    # The C++ flag for every build; nvcc's for CUDA builds (not tried here: no GPU on this VM).
    sed -i -e "s/extra_compile_args\['cxx'\] = \['-std=c++17'\]/extra_compile_args['cxx'] = ['-std=c++20']/" \
        -e "s/extra_compile_args\['nvcc'\] += \['-std=c++17'\]/extra_compile_args['nvcc'] += ['-std=c++20']/" \
        "$SRC/setup.py"
    if [ "$(grep -c -e "\['cxx'\] = \['-std=c++20'\]" -e "\['nvcc'\] += \['-std=c++20'\]" "$SRC/setup.py")" != 2 ]; then
        echo "onedl-mmcv's setup.py changed: the -std=c++20 patch did not apply (tools/build_mmcv.sh)" >&2
        exit 1
    fi
fi
# ninja compiles MAX_JOBS files at a time (without it setuptools compiles one by one).
"$PYTHON" -m pip install --quiet "ninja>=1.11" setuptools wheel >&2
STARTED=$(date +%s)
( cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS="$CFLAGS_USED" CXXFLAGS="$CFLAGS_USED" \
    PATH="$(dirname "$PYTHON"):$PATH" \
    "$PYTHON" -m pip wheel --quiet --no-build-isolation --no-deps -w "$WORK/wheel" . ) > "$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; echo "onedl-mmcv build failed (log above)" >&2; exit 1; }
mkdir -p "$DEST"
mv "$WORK"/wheel/onedl_mmcv-*.whl "$DEST/"
echo "onedl-mmcv $MMCV_VERSION built in $(( $(date +%s) - STARTED )) s -> $DEST" >&2
ls "$DEST"/onedl_mmcv-$MMCV_VERSION-*.whl | head -1
