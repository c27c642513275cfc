# Helpers shared by the scripts: install what is missing, say what cannot be.
# Sourced, not run.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

apt_updated=
# ensure_packages PKG...: installs the Debian packages that are not installed
# (as root), or says how to install them.
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A C compiler and linker: Rust needs one to link, and ring to build.
ensure_cc() {
  command -v cc >/dev/null 2>&1 || ensure_packages build-essential
}

# protoc: the containerd API's Rust bindings are generated at build time.
ensure_protoc() {
  command -v protoc >/dev/null 2>&1 || ensure_packages protobuf-compiler
}

# containerd with runc, and what the tests build Linux images with
# (busybox-static, umoci) and push them with (skopeo).
ensure_containerd() {
  ensure_packages containerd runc busybox-static umoci skopeo
}

# The wasm32-wasip2 target, which builds the guests.
ensure_wasm_target() {
  command -v rustup >/dev/null 2>&1 || return 0
  rustup target list --installed | grep -qx wasm32-wasip2 && return 0
  say "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2 >&2
}

# rustfmt and clippy, which the test script runs.
ensure_rust_components() {
  command -v rustup >/dev/null 2>&1 || return 0
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >&2
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >&2
}

# Python with venv and ensurepip, for the componentize-py toolchain test.
ensure_python_venv() {
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && return 0
  ensure_packages python3 python3-venv
}

# Postgres 15's server binaries: the tests start throwaway clusters with them.
ensure_postgres() {
  [ -x /usr/lib/postgresql/15/bin/initdb ] && [ -x /usr/lib/postgresql/15/bin/psql ] && return 0
  ensure_packages postgresql-15
}

# The CNCF distribution registry: `wasmctl dev --registry` and the cluster
# tests run it.
ensure_registry() {
  command -v docker-registry >/dev/null 2>&1 && return 0
  ensure_packages docker-registry
}

# Prometheus and promtool: the metrics tests scrape real endpoints with
# them. Only the binaries are used; the tests start their own server.
ensure_prometheus() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && return 0
  ensure_packages prometheus
}

# Chromium and its WebDriver: the dashboard's tests drive a real headless
# browser.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  ensure_packages chromium chromium-driver
}

# wasmtime-cli at the version the workspace pins: the benchmarks' baseline.
ensure_wasmtime_cli() {
  local version
  version=$(sed -n 's/^wasmtime = { version = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
  [ -n "$version" ] || die "cannot find the pinned wasmtime version in Cargo.toml"
  [ "$(wasmtime --version 2>/dev/null | cut -d' ' -f1,2)" = "wasmtime $version" ] && return 0
  say "installing wasmtime-cli $version (the baseline)"
  cargo install --locked --quiet wasmtime-cli --version "$version"
}
