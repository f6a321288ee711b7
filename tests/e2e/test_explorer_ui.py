"""The anomaly explorer page in a real headless Chromium (Debian's `chromium`, installed by
`make system-deps`; Playwright drives it through `executable_path`, never a downloaded
browser), served by the real operator over HTTPS, signed in with real ServiceAccount
tokens checked by the real apiserver.

A screenshot of the job's view is kept outside the repository, under
$MLJOB_CACHE_DIR/artifacts/ (default ~/.cache/mljob-operator/artifacts/), for a person to
look at; the test prints its path.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, service_account_token
from devtools.processes import free_port
from devtools.run import DAY_START, demo_events
from mljob_operator.http.explorer import add_ui_routes
from tests.e2e.jobs import mljob, wait_for, wait_state

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = (
    Path(os.environ.get("MLJOB_CACHE_DIR", Path.home() / ".cache" / "mljob-operator")) / "artifacts"
)
JOB = "event-rate"
LIVE = "live"
BURST_MS = (DAY_START + 15 * 3600) * 1000
"""The demo's burst: ten minutes from 15:00 with twelve times the usual rate."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "needs Debian's chromium: run `make system-deps`"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def console_error(kind: str, text: str) -> bool:
    """A script error or a refused Content-Security-Policy; the 401, 403 and 404 answers
    the test provokes (and a job without a model plot) are logged as failed loads."""
    return kind == "error" and not text.startswith("Failed to load resource")


def sign_in(page: Page, token: str, namespace: str) -> None:
    page.fill("#token", token)
    page.fill("#sign-in-namespace", namespace)
    page.click("#sign-in-form button[type=submit]")


def demo_job(cp: ControlPlane, ns: str, op: OperatorProcess, editor: str) -> None:
    """make run's demo (a day of events with a burst at 15:00, then closed), with the
    model plot on."""
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(JOB, modelPlotConfig={"enabled": True}))
    wait_state(cp, ns, JOB, "opened")
    code, counts = op.request(
        "POST", f"/v1/namespaces/{ns}/mljobs/{JOB}/data", demo_events(), token=editor
    )
    assert code == 202, counts
    cp.kubectl("patch", "mljob", JOB, "-n", ns, "--type=merge", "-p", '{"spec":{"state":"closed"}}')
    wait_state(cp, ns, JOB, "closed", timeout=120)


def live_job(cp: ControlPlane, ns: str, op: OperatorProcess, editor: str) -> None:
    """An open job fed the demo's day up to the middle of the burst, with interim results
    for the bucket in progress."""
    cutoff = DAY_START + 15 * 3600 + 7 * 60
    lines = [line for line in demo_events().split(b"\n") if json.loads(line)["time"] < cutoff]
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(LIVE))
    wait_state(cp, ns, LIVE, "opened")
    code, counts = op.request(
        "POST", f"/v1/namespaces/{ns}/mljobs/{LIVE}/data", b"\n".join(lines), token=editor
    )
    assert code == 202, counts
    code, flushed = op.request(
        "POST", f"/v1/namespaces/{ns}/mljobs/{LIVE}/flush?calcInterim=true", token=editor
    )
    assert code == 200, flushed


def lister_token(cp: ControlPlane, ns: str) -> str:
    """A ServiceAccount that may list MLJobs in the namespace and nothing more."""
    user = f"system:serviceaccount:{ns}:lister"
    cp.kubectl("create", "serviceaccount", "lister", "-n", ns)
    cp.kubectl(
        "create", "role", "lister", "--verb=list", "--resource=mljobs.ml.mljob.dev", "-n", ns
    )
    cp.kubectl(
        "create",
        "rolebinding",
        "lister",
        "--role=lister",
        f"--serviceaccount={ns}:lister",
        "-n",
        ns,
    )

    def allowed() -> bool:
        can = cp.kubectl("auth", "can-i", "list", "mljobs.ml.mljob.dev", "-n", ns, f"--as={user}")
        return can.stdout.strip() == "yes"

    wait_for(allowed, "RBAC to see the lister's binding")
    return cp.kubectl("create", "token", "lister", "-n", ns).stdout.strip()


def refuses_bad_tokens(page: Page, ns: str, stranger: str) -> None:
    """A rejected token and a token without rights each get a clear message; sign-out
    forgets the token."""
    expect(page.locator("#sign-in")).to_be_visible()
    sign_in(page, "not-a-token", ns)
    expect(page.locator("#message")).to_contain_text("Token not accepted")
    expect(page.locator("#sign-in")).to_be_visible()

    sign_in(page, stranger, ns)
    message = page.locator("#message")
    expect(message).to_contain_text(f"You may not list MLJobs in {ns}")
    expect(message).to_contain_text(f"system:serviceaccount:{ns}:stranger cannot list MLJobs")
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(message).to_contain_text("Signed out")
    assert page.evaluate("sessionStorage.getItem('mljob.token')") is None


def lists_but_may_not_read(page: Page, ns: str, lister: str) -> None:
    """RBAC decides per call: a token that may list the jobs but not read their results
    sees the list, then a message naming what it may not do."""
    sign_in(page, lister, ns)
    job_row = page.locator(f"#jobs-table tr[data-job='{JOB}']")
    expect(job_row).to_contain_text("closed")
    assert job_row.locator(".score").inner_text() == "\u2013", (
        "no figure of results it may not read"
    )
    job_row.locator("a").click()
    message = page.locator("#message")
    expect(message).to_contain_text("You may not")
    expect(message).to_contain_text(f"system:serviceaccount:{ns}:lister cannot")
    expect(message).to_contain_text('on "mljobs/')
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()


def shows_the_burst(page: Page) -> None:
    """The jobs list, then the job's chart with the burst marked, swimlane and tables."""
    job_row = page.locator(f"#jobs-table tr[data-job='{JOB}']")
    expect(job_row).to_contain_text("closed")
    max_score = float(job_row.locator(".score").inner_text())
    assert max_score >= 75, max_score
    expect(page.locator(f"#jobs-table tr[data-job='{LIVE}']")).to_contain_text("opened")
    screenshot(page, "explorer-jobs.png")

    job_row.locator("a").click()
    markers = page.locator("#chart circle.marker")
    expect(markers.first).to_be_attached()
    found = markers.evaluate_all(
        "els => els.map(e => [Number(e.dataset.score), Number(e.dataset.time)])"
    )
    score, when = max(found)
    assert score >= 75, found
    assert BURST_MS <= when < BURST_MS + 15 * 60_000, (when, BURST_MS)
    assert page.locator("#chart polyline.actual").count() == 1
    expect(page.locator("#chart polygon.band")).to_be_attached()
    expect(page.locator("#legend")).to_contain_text("expected (model bounds)")
    critical = page.locator("#swimlane rect.cell.sev-critical").first
    expect(critical).to_be_attached()
    assert abs(int(critical.get_attribute("data-time") or 0) - BURST_MS) <= 30 * 60_000
    expect(page.locator("#records-table tbody tr").first).to_contain_text("15:")
    expect(page.locator("#snapshots-table tbody tr").first).to_contain_text("(active)")


def shows_interim_results(page: Page, ns: str) -> None:
    """The open job, in the middle of its burst: its bucket in progress is interim."""
    page.click("#back")
    expect(page.locator(f"#jobs-table tr[data-job='{LIVE}']")).to_contain_text("opened")
    page.locator(f"#jobs-table tr[data-job='{LIVE}'] a").click()
    expect(page.locator("#job-name")).to_have_text(LIVE)
    expect(page.locator("#chart rect.interim-zone")).to_have_count(1)
    zone = int(page.locator("#chart rect.interim-zone").get_attribute("data-time") or 0)
    assert zone == BURST_MS + 5 * 60_000, zone
    expect(page.locator("#swimlane rect.cell.interim").first).to_be_attached()
    screenshot(page, "explorer-live-interim.png")


def zooms(page: Page) -> None:
    """A drag across the chart narrows the time range; "Show all" restores it."""
    whole = page.locator("#range").inner_text()
    box = page.locator("#chart").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.55, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
    page.mouse.up()
    expect(page.locator("#range")).not_to_have_text(whole)
    expect(page.locator("#zoom-out")).to_be_enabled()
    page.click("#zoom-reset")
    expect(page.locator("#range")).to_have_text(whole)


def pages_the_jobs(page: Page, op: OperatorProcess, ns: str, viewer: str) -> None:
    """The listing pages through the real apiserver's limit/continue, and the page's "More
    jobs" button follows `continue` (its requests rewritten to one job a page here)."""
    code, first = op.request("GET", f"/v1/namespaces/{ns}/mljobs?limit=1", token=viewer)
    assert (code, first["count"], first["remainingItemCount"]) == (200, 1, 1), first
    token = first["continue"]
    code, second = op.request(
        "GET", f"/v1/namespaces/{ns}/mljobs?limit=1&continue={quote(token)}", token=viewer
    )
    assert code == 200, second
    assert [first["jobs"][0]["name"], second["jobs"][0]["name"]] == sorted([JOB, LIVE])
    assert second["continue"] is None
    code, bad = op.request("GET", f"/v1/namespaces/{ns}/mljobs?continue=garbage", token=viewer)
    assert code == 400, bad
    code, bad = op.request("GET", f"/v1/namespaces/{ns}/mljobs?limit=501", token=viewer)
    assert (code, bad["error"]["message"]) == (400, "limit must be between 1 and 500, got 501")

    def one_a_page(route: Route) -> None:
        route.continue_(url=route.request.url.replace("limit=100", "limit=1"))

    page.route("**/mljobs?*", one_a_page)
    page.click("#home")  # from the job's view back to the jobs
    rows = page.locator("#jobs-table tbody tr")
    expect(rows).to_have_count(1)
    more = page.locator("#jobs-more")
    expect(more).to_be_visible()
    more.click()
    expect(rows).to_have_count(2)
    expect(more).to_be_hidden()
    page.unroute("**/mljobs?*")


def screenshot(page: Page, name: str) -> Path:
    shot = ARTIFACTS / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    return shot


def test_explorer_shows_the_burst_to_a_viewer_and_refuses_strangers(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, browser: Browser
) -> None:
    cp, ns, op = control_plane, namespace, operator
    editor = service_account_token(cp, ns, "pipeline", "mljob-editor")
    demo_job(cp, ns, op, editor)
    live_job(cp, ns, op, editor)
    viewer = service_account_token(cp, ns, "dashboard", "mljob-viewer")
    stranger = service_account_token(cp, ns, "stranger", None)
    lister = lister_token(cp, ns)
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda m: problems.append(m.text) if console_error(m.type, m.text) else None)

    page.goto(f"{op.url}/ui/")
    refuses_bad_tokens(page, ns, stranger)
    lists_but_may_not_read(page, ns, lister)
    sign_in(page, viewer, ns)
    shows_the_burst(page)
    assert page.evaluate("sessionStorage.getItem('mljob.token')") == viewer
    screenshot(page, "explorer-single-metric-view.png")
    lane = page.locator("#swimlane").bounding_box()
    assert lane is not None
    page.screenshot(  # the README's picture: the chart and the swimlane
        path=str(ARTIFACTS / "explorer-readme.png"),
        clip={"x": 0, "y": 0, "width": lane["x"] + lane["width"] + 16, "height": lane["y"] + 76},
    )
    zooms(page)
    shows_interim_results(page, ns)
    pages_the_jobs(page, op, ns, viewer)
    assert not problems, problems
    context.close()


# -- the chart's model-plot drawing, against canned answers -------------------------------

STUB_TOKEN = "stub-token"
T0 = BURST_MS - 30 * 300_000
SPAN_S = 300


def canned(n: int = 48, spike: int = 36) -> dict[str, list[dict[str, Any]]]:
    """Two series (by-field values a and b) with a model plot; b spikes at bucket `spike`;
    the last two buckets are interim."""
    plot, records, buckets = [], [], []
    for i in range(n):
        t = T0 + i * SPAN_S * 1000
        interim = i >= n - 2
        for by, level in (("a", 40.0), ("b", 60.0)):
            actual = level + (5 * (i % 4)) + (80 if by == "b" and i == spike else 0)
            plot.append(
                {
                    "timestamp": t,
                    "bucketSpan": SPAN_S,
                    "detectorIndex": 0,
                    "actual": actual,
                    "modelMedian": level + 7.5,
                    "modelLower": level - 4,
                    "modelUpper": level + 19,
                    "byFieldValue": by,
                    "isInterim": interim,
                }
            )
        score = 92.0 if i == spike else 0.0
        buckets.append(
            {
                "timestamp": t,
                "bucketSpan": SPAN_S,
                "anomalyScore": score,
                "initialAnomalyScore": score,
                "isInterim": interim,
                "eventCount": 100,
            }
        )
    records.append(
        {
            "timestamp": T0 + spike * SPAN_S * 1000,
            "bucketSpan": SPAN_S,
            "detectorIndex": 0,
            "recordScore": 92.0,
            "initialRecordScore": 92.0,
            "probability": 1e-9,
            "function": "mean",
            "fieldName": "value",
            "byFieldName": "host",
            "byFieldValue": "b",
            "partitionFieldName": None,
            "partitionFieldValue": None,
            "actual": [140.0 + 5 * (spike % 4)],
            "typical": [67.5],
            "isInterim": False,
            "influencers": [],
        }
    )
    influencers = [
        {
            "timestamp": T0 + spike * SPAN_S * 1000,
            "influencerFieldName": "host",
            "influencerFieldValue": value,
            "influencerScore": score,
            "initialInfluencerScore": score,
            "probability": 1e-6,
            "isInterim": False,
        }
        for value, score in (("b", 88.0), ("c", 12.0))
    ]
    return {"plot": plot, "records": records, "buckets": buckets, "influencers": influencers}


@contextmanager
def stub_api(data: dict[str, list[dict[str, Any]]]) -> Iterator[str]:
    """The page's own routes (`add_ui_routes`) beside canned JSON answers, on loopback."""
    job = "/v1/namespaces/team/mljobs/latency"
    answers = {
        "/v1/namespaces/team/mljobs": {
            "count": 1,
            "jobs": [
                {
                    "name": "latency",
                    "state": "opened",
                    "closed": False,
                    "lastClose": None,
                    "maxAnomalyScore": 92.0,
                    "bucketCount": 48,
                }
            ],
        },
        job + "/stats": {
            "jobId": "team/latency",
            "state": "opened",
            "open": True,
            "modelSnapshotId": None,
            "dataCounts": {"processedRecordCount": 4800},
            "modelSizeStats": {},
        },
        job + "/results/buckets": {"count": 48, "buckets": data["buckets"]},
        job + "/results/records": {"count": 1, "records": data["records"]},
        job + "/results/modelplot": {"count": 96, "modelPlot": data["plot"]},
        job + "/results/influencers": {"count": 2, "influencers": data["influencers"]},
        job + "/modelsnapshots": {"count": 0, "modelSnapshots": []},
    }

    async def answer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {STUB_TOKEN}":
            return web.json_response({"error": {"message": "no"}}, status=401)
        return web.json_response(answers[request.path])

    app = web.Application()
    add_ui_routes(app)
    for path in answers:
        app.router.add_get(path, answer)
    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        # Its own thread and loop: Playwright's sync API holds this thread's loop.
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the stub API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_model_plot_band_series_and_interim_buckets(browser: Browser) -> None:
    with stub_api(canned()) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.goto(f"{url}/ui/#ns=team&job=latency")
        sign_in(page, STUB_TOKEN, "team")
        expect(page.locator("#chart polygon.band")).to_be_attached()
        expect(page.locator("#chart polyline.median")).to_be_attached()
        assert page.locator("#series option").all_inner_texts() == ["a", "b"]
        assert page.locator("#chart circle.marker").count() == 0, "series a has no anomaly"
        assert page.locator("#chart rect.interim-zone").count() == 2
        expect(page.locator("#legend")).to_contain_text("expected (model bounds)")
        lanes = page.locator("#swimlane text.lane-label").all_text_contents()
        assert lanes == ["overall", "a", "b"]
        assert page.locator("#swimlane rect.cell.interim").count() >= 1

        assert page.locator("#influencers-table tbody tr").all_inner_texts()[0].split("\t")[:2] == [
            "host",
            "b",
        ]
        page.select_option("#series", "b")
        marker = page.locator("#chart circle.marker.sev-critical")
        expect(marker).to_have_count(1)
        assert marker.get_attribute("data-score") == "92.00"
        screenshot(page, "explorer-model-plot.png")
        assert not problems, problems
        page.close()


def test_several_detectors_are_separate_series(browser: Browser) -> None:
    data = canned()
    for item in [*data["plot"], *data["records"]]:
        item["detectorIndex"] = 0 if item["byFieldValue"] == "a" else 1
        item["byFieldValue"] = None
    with stub_api(data) as url:
        page = browser.new_page()
        page.goto(f"{url}/ui/#ns=team&job=latency")
        sign_in(page, STUB_TOKEN, "team")
        expect(page.locator("#chart polygon.band")).to_be_attached()
        assert page.locator("#series option").all_inner_texts() == ["detector 0", "detector 1"]
        page.select_option("#series", "detector 1")
        expect(page.locator("#chart circle.marker.sev-critical")).to_have_count(1)
        page.close()
