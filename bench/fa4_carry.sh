#!/usr/bin/env bash
# FlashAttention-4 onto a device machine that has no network, in two calls of at most 64 MiB each.
#
#   bash bench/fa4_carry.sh pack                  # here (has PyPI): .fa4/part1 (~57 MiB) and .fa4/part2 (~21 MiB)
#   bash bench/fa4_carry.sh install .fa4/part1    # there, call 1 (carry .fa4/part1); the machine keeps /tmp/site
#   bash bench/fa4_carry.sh install .fa4/part2    # there, call 2 while still warm (carry .fa4/part2); then checks
#
# FA4 (flash-attn-4, CuTe DSL) rides on nvidia-cutlass-dsl, whose CUDA 13 library wheel is 92 MB: its two big
# shared objects travel xz-compressed (50 + 13 MB), one per part. Everything lands in /tmp/site, which a one-line
# .pth in the device's own site-packages adds as a site dir (so the cutlass wheel's own .pth runs); the device's
# packages stay first on sys.path. Versions: the ones measured in bench/NOTES.md (session 6 on; torch 2.11, cu130).
set -euo pipefail
FA4=flash-attn-4==4.0.0b36
CUTLASS=4.8.1
PART1=(nvidia-cutlass-dsl==$CUTLASS nvidia-cutlass-dsl-libs-base==$CUTLASS nvidia-cutlass-dsl-libs-core==$CUTLASS
       "$FA4" apache-tvm-ffi==0.1.11 torch-c-dlpack-ext==0.1.5 quack-kernels==0.5.3 einops==0.8.2)
PART2=(cuda-bindings==13.5.0 cuda-pathfinder==1.9.1)
LIBS=nvidia_cutlass_dsl_libs_cu13-$CUTLASS-cp312-cp312-manylinux_2_28_x86_64.whl
BIG1=nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so
BIG2=nvidia_cutlass_dsl/cu13/lib/libcute_dsl_runtime.so
SITE=/tmp/site

download() {  # wheels for the device's Python 3.12 on x86-64
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$@"
}

pack() {
  local out=.fa4 tmp; tmp=$(mktemp -d)
  rm -rf "$out"; mkdir -p "$out/part1" "$out/part2"
  download "$out/part1" "${PART1[@]}"
  download "$out/part2" "${PART2[@]}"
  download "$tmp" "nvidia-cutlass-dsl-libs-cu13==$CUTLASS"
  python3 -m zipfile -e "$tmp/$LIBS" "$tmp/libs"
  xz -T0 -9e -c "$tmp/libs/$BIG1" > "$out/part1/big.so.xz"; echo "$BIG1" > "$out/part1/big.path"
  xz -T0 -9e -c "$tmp/libs/$BIG2" > "$out/part2/big.so.xz"; echo "$BIG2" > "$out/part2/big.path"
  cp "$tmp/$LIBS" "$out/part2/libs.zip" && zip -q -d "$out/part2/libs.zip" "$BIG1" "$BIG2"
  rm -rf "$tmp"; du -sh "$out"/part*
}

install() {
  local part=$1 hook
  mkdir -p "$SITE"
  if ls "$part"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$part"/*.whl
  fi
  [ -f "$part/libs.zip" ] && python3 -m zipfile -e "$part/libs.zip" "$SITE"  # no unzip on the device
  mkdir -p "$SITE/$(dirname "$(cat "$part/big.path")")"
  xz -dc "$part/big.so.xz" > "$SITE/$(cat "$part/big.path")"
  hook=$(python3 -c 'import site; print(site.getsitepackages()[0])')/golf_fa4_site.pth
  echo "import site; site.addsitedir('$SITE')" > "$hook"
  if [ -f "$SITE/$BIG1" ] && [ -f "$SITE/$BIG2" ]; then
    python3 -c "import flash_attn.cute.interface, importlib.metadata as m; print('fa4', m.version('flash-attn-4'))"
  else
    echo "fa4: $part installed; the other part is still to come"
  fi
}

case ${1:-} in
  pack) pack ;;
  install) install "${2:?install needs the part folder}" ;;
  *) echo "usage: bash bench/fa4_carry.sh pack | install .fa4/partN" >&2; exit 2 ;;
esac
