"""The rendered configuration starts the real service.

For each value set, the settings ConfigMap becomes the environment and the
processors ConfigMap the processors file of a real `dsr-orchestrator`
process (on SQLite in a temporary directory, on loopback ports), which must
load them, answer /readyz and stop cleanly on SIGTERM. This proves the
service's own parsers accept what the chart writes (durations, enums, the
processors file's shape and quoting).

Needs a built binary: DSR_BINARY names one; otherwise the newest of debug/
and release/ in cargo's target directory, which is CARGO_TARGET_DIR (relative
to the repository root) when set, else what `cargo metadata` says, else
./target. Skipped, saying where it looked, when there is none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import FULLNAME, REPO, SCENARIOS


NAME = "dsr-orchestrator"


def target_directories() -> tuple[list[Path], list[str]]:
    """Where cargo may have put its builds, most likely first, and notes on
    the places that could not be asked."""
    dirs: list[Path] = []
    notes: list[str] = []
    if os.environ.get("CARGO_TARGET_DIR"):
        # A relative one is taken from the repository root, where cargo is
        # run for this repository.
        dirs.append(REPO / os.environ["CARGO_TARGET_DIR"])
    if shutil.which("cargo"):
        # Knows build.target-dir from .cargo/config.toml as well.
        try:
            out = subprocess.run(
                ["cargo", "metadata", "--format-version", "1", "--no-deps"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            dirs.append(Path(json.loads(out)["target_directory"]))
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            notes.append(f"`cargo metadata` failed: {e}")
    else:
        notes.append("cargo is not on PATH, so its target directory was not asked")
    dirs.append(REPO / "target")
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in (u.resolve() for u in unique):
            unique.append(d)
    return unique, notes


def find_binary() -> tuple[Path | None, str]:
    """The binary to start, or None and why there is none."""
    if os.environ.get("DSR_BINARY"):
        return Path(os.environ["DSR_BINARY"]), ""
    dirs, notes = target_directories()
    for d in dirs:
        found = [p for p in (d / profile / NAME for profile in ("debug", "release")) if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime), ""
    looked = ", ".join(f"{d}/{{debug,release}}/{NAME}" for d in dirs)
    return None, (
        f"no {NAME} binary: looked in {looked}"
        + "".join(f"; {n}" for n in notes)
        + ". Build it with `cargo build`, or set DSR_BINARY to the path of one."
    )


BINARY, NO_BINARY = find_binary()

ADMIN = re.compile(r'admin\W+(127\.0\.0\.1:\d+)')


@pytest.mark.skipif(BINARY is None, reason=NO_BINARY)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_service_starts_with_the_rendered_configuration(rendered, scenario, tmp_path):
    assert BINARY.is_file(), f"DSR_BINARY={BINARY} is not a file"
    r = rendered[scenario]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSR_", "OTEL_", "RUST_LOG"))}
    env.update(r.config)
    processors = r.one("ConfigMap", f"{FULLNAME}-processors")["data"]["processors.yaml"]
    (tmp_path / "processors.yaml").write_text(processors)
    env.update(
        {
            # Loopback and free ports here; a local SQLite file stands in for
            # the volume or the PostgreSQL Secret.
            "DSR_LISTEN_ADDR": "127.0.0.1:0",
            "DSR_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
            "DSR_DATABASE_URL": f"sqlite://{tmp_path}/dsr.db",
            "DSR_PROCESSORS_FILE": str(tmp_path / "processors.yaml"),
        }
    )
    # Nothing is exported from a test: no collector is reachable.
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BINARY)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        admin = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            m = ADMIN.search(log.read_text(errors="replace"))
            if m:
                admin = m.group(1)
                break
            time.sleep(0.1)
        assert admin, f"the service did not start:\n{log.read_text(errors='replace')}"
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=5) as answer:
            assert answer.status == 200
            assert answer.read() == b"ready\n"
        loaded = yaml.safe_load(processors)["processors"]
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as answer:
            assert answer.status == 200
        text = log.read_text(errors="replace")
        if loaded:
            assert re.search(rf'processors loaded\W+count\W+{len(loaded)}\b', text), text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
