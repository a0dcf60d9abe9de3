#!/usr/bin/env bash
# Builds the dashboard's browser bundle (the `hydrate` build of streamlens-dashboard) into
# <site root>/pkg:
#
#   pkg/streamlens_dashboard.js        the wasm-bindgen loader the page imports
#   pkg/streamlens_dashboard_bg.wasm   the WebAssembly module it loads
#
# These are the names leptos' <HydrationScripts> asks for when the server was built without
# cargo-leptos (LEPTOS_OUTPUT_NAME unset at compile time): `{output_name}.js` and
# `{output_name}_bg.wasm`, with output_name = "streamlens_dashboard".
#
# Usage: dashboard/build-client.sh [--release]
#   STREAMLENS_SITE_ROOT   site root (default: <workspace>/target/site); the server's
#                          DashboardState::site_root must point at the same directory
#   --release              optimise for size (profile wasm-release) instead of a dev build
#
# Uses rustup's wasm32-unknown-unknown target when installed; otherwise the Debian toolchain
# (rustc-web, cargo-web, rust-web-src, lld) with -Zbuild-std. Installs wasm-bindgen-cli at the
# version of the wasm-bindgen crate in Cargo.lock when the installed one differs.
set -euo pipefail

say() { printf 'build-client: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

profile=dev
case "${1:-}" in
  "") ;;
  --release) profile=wasm-release ;;
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (expected --release)" ;;
esac

site_root="${STREAMLENS_SITE_ROOT:-$root/target/site}"
pkg_dir="$site_root/pkg"
# Reuse a shared target directory (CI keeps one outside the clone) when one is set.
target_dir="${CARGO_TARGET_DIR:-$root/target}/wasm"
out_name=streamlens_dashboard
target=wasm32-unknown-unknown

[[ -f Cargo.lock ]] || die "no Cargo.lock in $root; run 'cargo generate-lockfile' first"

# The wasm-bindgen CLI must match the wasm-bindgen crate exactly.
want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[[ -n "$want" ]] || die "wasm-bindgen is not in Cargo.lock"
have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
if [[ "$have" != "$want" ]]; then
  say "installing wasm-bindgen-cli $want (found '${have:-none}')"
  cargo install wasm-bindgen-cli --version "$want"
  have="$(wasm-bindgen --version | awk '{ print $2 }')"
  [[ "$have" == "$want" ]] || die "wasm-bindgen is $have after installing $want; is ~/.cargo/bin on PATH?"
fi

build_args=(build -p streamlens-dashboard --lib --target "$target"
  --no-default-features --features hydrate --target-dir "$target_dir")
if [[ "$profile" == dev ]]; then
  out_profile=debug
else
  build_args+=(--profile "$profile")
  out_profile="$profile"
fi

have_target() { command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; }
# The standard path first: rustup's own wasm32 target.
if ! have_target && command -v rustup >/dev/null; then
  say "adding rustup's $target"
  rustup target add "$target" || say "rustup could not add $target"
fi
if have_target; then
  say "compiling the hydrate build ($profile) with rustup's $target"
  cargo "${build_args[@]}"
else
  say "rustup has no $target; using the Debian toolchain with -Zbuild-std"
  if [[ ! -x /usr/bin/cargo || ! -x /usr/bin/rustc ]] || ! command -v wasm-ld >/dev/null \
    || ! dpkg -s rust-web-src >/dev/null 2>&1; then
    say "installing rustc-web cargo-web rust-web-src lld"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld
  fi
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
    /usr/bin/cargo "${build_args[@]}" -Zbuild-std=std,panic_abort
fi

wasm="$target_dir/$target/$out_profile/$out_name.wasm"
[[ -f "$wasm" ]] || die "the build did not produce $wasm"

say "generating bindings into $pkg_dir"
mkdir -p "$pkg_dir"
rm -f "$pkg_dir/$out_name.js" "$pkg_dir/${out_name}_bg.wasm"
wasm-bindgen --target web --no-typescript --out-name "$out_name" --out-dir "$pkg_dir" "$wasm"

for f in "$out_name.js" "${out_name}_bg.wasm"; do
  [[ -f "$pkg_dir/$f" ]] || die "wasm-bindgen did not write $pkg_dir/$f"
done
say "done: $pkg_dir/$out_name.js, $pkg_dir/${out_name}_bg.wasm ($(du -h "$pkg_dir/${out_name}_bg.wasm" | cut -f1))"
