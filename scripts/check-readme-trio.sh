#!/bin/sh
# Builds the README's contract/server/client trio in a fresh workspace, from the README's own
# code blocks (each marked `<!-- file: inventory/... -->`), as a new user would copy them: the
# blocks must compile outside this repository's workspace. The `webmesh` path in the manifests
# is pointed at this checkout; the lock file is this repository's, which pins what it can (the
# registry is needed for what it lacks, such as tracing-subscriber's default features).
# Usage: scripts/check-readme-trio.sh [dir]   (default: target/readme-trio)
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/target/readme-trio}"
rm -rf "$dir"
mkdir -p "$dir"
python3 - "$root/README.md" "$dir" "$root" <<'PY'
import os, re, sys
readme, out, root = sys.argv[1:4]
text = open(readme, encoding="utf-8").read()
blocks = re.findall(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)\n```", text, re.S)
if len(blocks) < 7:
    sys.exit(f"expected the trio's 7 files in the README, found {len(blocks)}")
for path, body in blocks:
    body = body.replace("../../webmesh-rs/webmesh", os.path.join(root, "webmesh"))
    target = os.path.join(out, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as f:
        f.write(body + "\n")
    print("wrote", path)
PY
cp "$root/Cargo.lock" "$dir/inventory/Cargo.lock"
cd "$dir/inventory"
# The repository's target directory: dependencies built for it are reused.
export CARGO_TARGET_DIR="$root/target"
cargo build --workspace
cargo build -p inventory-client
echo "README trio builds in a fresh workspace"
