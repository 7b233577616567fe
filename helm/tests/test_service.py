"""The rendered configuration starts the real service.

For each value set, the settings ConfigMap becomes the environment and the
processors ConfigMap the processors file of a real `dsr-orchestrator`
process (on SQLite in a temporary directory, on loopback ports), which must
load them, answer /readyz and stop cleanly on SIGTERM. This proves the
service's own parsers accept what the chart writes (durations, enums, the
processors file's shape and quoting).

Needs a built binary (`cargo build` or `cargo test` leaves one in target/);
DSR_BINARY names another. Skipped when there is none.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import FULLNAME, REPO, SCENARIOS


def find_binary() -> Path | None:
    if os.environ.get("DSR_BINARY"):
        return Path(os.environ["DSR_BINARY"])
    found = [p for p in (REPO / "target" / d / "dsr-orchestrator" for d in ("debug", "release")) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


BINARY = find_binary()

ADMIN = re.compile(r'admin\W+(127\.0\.0\.1:\d+)')


@pytest.mark.skipif(BINARY is None, reason="no dsr-orchestrator binary in target/ (run cargo build)")
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_service_starts_with_the_rendered_configuration(rendered, scenario, tmp_path):
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
