"""The webhook signatures of the orchestrator against an independent
implementation: the `standardwebhooks` package, Standard Webhooks' own
Python library. tests/fixtures/webhook_signatures.json holds messages and
their signatures; src/dispatch/webhook.rs checks that the orchestrator
signs each exactly so, and this test that the library agrees with every
one of them and accepts a delivery signed that way."""

import json
from datetime import datetime, timezone
from pathlib import Path

from standardwebhooks.webhooks import Webhook

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "webhook_signatures.json"


def cases():
    return json.loads(FIXTURE.read_text())["cases"]


def test_the_library_computes_every_fixture_signature():
    for case in cases():
        at = datetime.fromtimestamp(case["timestamp"], tz=timezone.utc)
        signed = Webhook(case["secret"]).sign(case["id"], at, case["body"])
        assert signed == case["signature"], case["id"]


def test_the_library_verifies_a_fresh_delivery_signed_the_same_way():
    # verify() refuses timestamps more than five minutes away, so the
    # fixture's message is signed again now, in the fixture's format.
    case = cases()[1]
    now = datetime.now(tz=timezone.utc).replace(microsecond=0)
    hook = Webhook(case["secret"])
    headers = {
        "webhook-id": case["id"],
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": hook.sign(case["id"], now, case["body"]),
    }
    assert hook.verify(case["body"], headers) == json.loads(case["body"])
