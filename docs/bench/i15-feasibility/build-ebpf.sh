#!/bin/sh
# Builds the XDP object as aya-build does for netshim-ebpf (nightly, bpfel, build-std=core,
# bpf-linker with BTF). Output: edt-ebpf/target/bpfel-unknown-none/release/edt-tc
set -e
cd "$(dirname "$0")/edt-ebpf"
PATH="$HOME/.cargo/bin:$PATH" CARGO_ENCODED_RUSTFLAGS="$(printf -- '--cfg=bpf_target_arch="x86_64"\037-Cdebuginfo=2\037-Clink-arg=--btf')" \
  cargo +nightly build --release --target bpfel-unknown-none -Z build-std=core
