#!/usr/bin/env python3
"""Checks that fuzz/Cargo.lock follows the orchestrator's Cargo.lock: every
package the two locks share is locked at the same versions, so the fuzz
targets build the very code `cargo test` does. CI runs it after
`cargo metadata --locked` on fuzz/ (which fails when the lock lacks a
package). To bring the lock up to date:

    cp Cargo.lock fuzz/Cargo.lock && (cd fuzz && cargo metadata --format-version 1 >/dev/null)
"""

import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def versions(path: Path) -> dict[str, set[str]]:
    """Package name -> the versions the lock holds."""
    out: dict[str, set[str]] = defaultdict(set)
    for package in tomllib.loads(path.read_text())["package"]:
        out[package["name"]].add(package["version"])
    return out


def main() -> int:
    main_lock = versions(ROOT / "Cargo.lock")
    fuzz_lock = versions(ROOT / "fuzz" / "Cargo.lock")
    drifted = sorted(
        f"{name}: fuzz {sorted(fuzz_lock[name])}, orchestrator {sorted(main_lock[name])}"
        for name in fuzz_lock.keys() & main_lock.keys()
        if not fuzz_lock[name] <= main_lock[name]
    )
    if drifted:
        print("fuzz/Cargo.lock does not follow Cargo.lock:", *drifted, sep="\n  ")
        print(__doc__.split("To bring")[1].strip().replace("the lock up to date:", "To fix:"))
        return 1
    print(f"fuzz/Cargo.lock follows Cargo.lock ({len(fuzz_lock.keys() & main_lock.keys())} shared packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
