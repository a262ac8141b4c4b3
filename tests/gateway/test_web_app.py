"""The web app in a real headless Chromium: chat with a streamed, verified answer and its fee split, the
explorer's node map, epochs and charts, a job's timeline, and one key never seeing another key's jobs.

Debian's chromium (scripts/ensure-chromium.sh installs it) driven by playwright with `executable_path`: no
browser download. Screenshots go to $LORANET_ARTIFACTS/screenshots (default test-artifacts/screenshots),
which CI keeps."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import GatewayThread

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright: pip install playwright"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: apt-get install chromium (scripts/ensure-chromium.sh does it as root)"
)

MODEL = os.environ["LORANET_MODEL"]  # tests/conftest.py: the tiny model unless LORANET_TEST_MODEL names another
ALICE = "sk-web-alice-0123456789"
BOB = "sk-web-bob-0123456789"
ARTIFACTS = Path(os.environ.get("LORANET_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
SHOTS = ARTIFACTS / "screenshots"
# The flags Chromium needs on a machine with no network and no GPU (no background calls home).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def gateway(devnet):
    gw = GatewayThread(
        GatewaySettings(
            nats_url=devnet[0].url_for("gateway"),
            gateway_client_nats_url=devnet[0].nats_url,
            gateway_keys={ALICE: "alice", BOB: "bob"},
            gateway_host="127.0.0.1",
            gateway_port=0,
            log_level="WARNING",
            job_timeout_s=120,
        )
    ).start()
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def sign_in(page, gateway: GatewayThread, key: str) -> None:
    page.goto(gateway.url + "/")
    page.fill("#api-key", key)
    page.click("#signin-form button")
    page.wait_for_selector("#chat:not([hidden])")


def get(gateway: GatewayThread, path: str, key: str) -> tuple[int, dict]:
    req = urllib.request.Request(gateway.url + path, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_chat_answers_with_its_verdict_and_split_and_the_explorer_shows_it(gateway, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, gateway, ALICE)

    # Chat: an adapter, a streamed answer, then its verdict, node, verifier, fee split and transaction.
    page.wait_for_selector(f"#model option[value^='{MODEL}:']", state="attached")
    adapter = page.locator(f"#model option[value^='{MODEL}:']").last.get_attribute("value")
    page.select_option("#model", adapter)
    page.fill("#prompt", "What is the capital of France?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant .badge.verified", timeout=120_000)
    bubble = page.locator(".msg.assistant").last
    assert bubble.locator(".text").inner_text().strip(), "the answer is shown"
    receipt = bubble.locator(".receipt").inner_text()
    # the verdict shown is one of the committee's (the session devnet runs verifier-0 and verifier-1)
    assert "node-0" in receipt and ("verifier-0" in receipt or "verifier-1" in receipt) and "OPEN" in receipt
    assert bubble.locator(".tx").inner_text().startswith("0x")
    parties = {s.get_attribute("data-party") for s in bubble.locator(".legend span").all()}
    assert parties >= {"node", "developer", "contributor", "verifier", "treasury"}
    paid = bubble.locator(".contributors").inner_text()  # each data contributor, and why they were paid
    assert "data contributors" in paid and paid.count("OPEN") >= 1
    page.screenshot(path=str(SHOTS / "chat.png"), full_page=True)

    # A job's timeline, from the link under the answer.
    job_id = bubble.locator(".receipt a").inner_text()
    bubble.locator(".receipt a").click()
    page.wait_for_selector("#job:not([hidden]) .timeline li")
    stages = [li.locator("strong").inner_text() for li in page.locator(".timeline li").all()]
    assert stages[0] == "submitted" and "verdict" in stages and stages[-1] == "settled"
    page.screenshot(path=str(SHOTS / "job.png"), full_page=True)

    # The explorer: the node map, adapters, this key's jobs, epochs on chain, charts.
    page.click("nav a[data-page='explorer']")
    page.wait_for_selector("#nodes table")
    assert "node-0" in page.locator("#nodes").inner_text()
    assert adapter in page.locator("#adapters").inner_text()
    page.wait_for_selector(f"#jobs a[href='#/jobs/{job_id}']")
    assert page.locator("#epochs tbody tr").count() >= 1
    assert page.locator("#chart-tps svg").count() == 1 and page.locator("#chart-split .splitbar div").count() >= 3
    page.fill("#balance-address", "0x123")
    page.click("#balance-form button")
    page.wait_for_selector("#balance .error")  # a bad address: one line, no crash
    page.screenshot(path=str(SHOTS / "explorer.png"), full_page=True)
    assert not errors, errors

    # Another key sees none of alice's jobs, in the page or through the API.
    other = browser.new_page()
    sign_in(other, gateway, BOB)
    other.goto(gateway.url + "/#/explorer")
    other.wait_for_selector("#jobs")
    other.wait_for_selector("#nodes table")
    assert job_id not in other.locator("#jobs").inner_text()
    status, body = get(gateway, f"/v1/loranet/jobs/{job_id}", BOB)
    assert status == 404 and body["error"]["message"]
    assert job_id not in json.dumps(get(gateway, "/v1/loranet/jobs", BOB)[1])
    assert job_id in json.dumps(get(gateway, "/v1/loranet/jobs", ALICE)[1])


def test_the_app_refuses_bad_keys_and_bad_input_with_one_line(gateway, browser):
    page = browser.new_page()
    page.goto(gateway.url + "/")
    page.fill("#api-key", "sk-not-a-key-000000")
    page.click("#signin-form button")
    page.wait_for_selector("#signin-error:has-text('refused')")
    for path in ("/v1/loranet/jobs/zz", "/v1/loranet/balance/0x12", "/v1/loranet/jobs/" + "0" * 32):
        status, body = get(gateway, path, ALICE)
        assert status in (400, 404) and "\n" not in body["error"]["message"], path
    assert get(gateway, "/v1/loranet/nodes", "sk-wrong-0000000000")[0] == 401
