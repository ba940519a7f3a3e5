#!/usr/bin/env bash
# Regenerates net/src/protocol/generated/runnel_generated.rs from net/schema/runnel.fbs.
#
#   net/schema/regenerate.sh          write the generated file (commit it with the schema)
#   net/schema/regenerate.sh --check  fail if the committed file is not what the schema generates
#
# Needs cmake and a C++ compiler (Debian: apt-get install cmake g++): the flatc-runner crate
# builds flatc 23.5.26 from the source vendored in the `flatc` crate, so nothing is downloaded
# besides crates. The first run takes a few minutes; later runs reuse the build.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v cmake >/dev/null 2>&1; then
    echo "regenerate.sh: cmake not found (Debian: apt-get install cmake g++)" >&2
    exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runnel/target}"
cargo run --quiet --release --locked --manifest-path "$here/flatc-runner/Cargo.toml" -- "$@"
