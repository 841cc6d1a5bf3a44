#!/usr/bin/env python3
"""Copies examples/inventory/{contract,server,client} sources into the README's trio blocks.

The README shows the inventory example file by file; `cargo test -p webmesh-tests --test readme`
fails when they differ. Run this after changing the example: python3 scripts/sync-readme-trio.py
"""
import os
import re

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
readme_path = os.path.join(root, "README.md")
readme = open(readme_path, encoding="utf-8").read()
for source in ["contract/src/lib.rs", "server/src/main.rs", "client/src/main.rs"]:
    body = open(os.path.join(root, "examples/inventory", source), encoding="utf-8").read().rstrip()
    marker = f"<!-- file: inventory/{source} -->\n```rust\n"
    pattern = re.escape(marker) + r".*?\n```"
    readme, n = re.subn(pattern, lambda _m: marker + body + "\n```", readme, count=1, flags=re.S)
    if n != 1:
        raise SystemExit(f"README.md has no block for inventory/{source}")
open(readme_path, "w", encoding="utf-8").write(readme)
print("README trio synced")
