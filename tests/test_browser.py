"""A real browser in the Prefect UI: a deployment's run form (typed fields render and submit), and a
finished production run's Artifacts tab (the timeline picture and the progress artifacts render).

Debian's chromium, driven by playwright's Python API (no playwright-managed browser download).
The screenshot of the filled form goes to the test's tmp folder; with UPDATE_DOCS_SCREENSHOT=1
(or when it is missing) it also replaces docs/operator-run-form.png, so a normal test run
leaves the checkout clean.
"""

from __future__ import annotations

import os
import re
import time
import shutil

import pytest

from conftest import chromium_or_skip, read_all
from test_deployments import REPO, deploy, read_deployment

# One rule for "is chromium here", the one ci.yml and .ci/run use (`command -v chromium`).
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO / "docs" / "operator-run-form.png"
ARTIFACTS_SCREENSHOT = REPO / "docs" / "run-artifacts.png"
UI_TIMEOUT_MS = 30_000
RUN_NAME = "rebuild-stg-customers"

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def chromium() -> str:
    return chromium_or_skip()


def _property(page, label: str):
    """The form block of one flow parameter, found by its label (optional ones read 'name (Optional)')."""
    name = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))
    return page.locator(".schema-form-property").filter(has=name)


def _choose(page, label: str, option: str) -> None:
    """Pick `option` in the dropdown of `label`: the UI's own select, a button plus a listbox of options.

    The listbox opens from the keyboard (Space on the focused button); in headless chromium a
    synthetic mouse click on the button does not open it.
    """
    control = _property(page, label).locator(".p-select-button__control")
    choice = page.locator(".p-select-options [role=option]", has_text=re.compile(rf"^{re.escape(option)}$"))
    control.focus()
    page.keyboard.press(" ")
    choice.wait_for(state="visible")
    choice.click()
    page.locator(".p-select-options").wait_for(state="detached")
    _expect_choice(control, option)


def _expect_choice(control, option: str) -> None:
    # The UI re-renders the button's text a moment after the listbox closes (slower under load):
    # playwright's expect retries until it shows, where a plain read raced it.
    from playwright.sync_api import expect

    expect(control).to_have_text(re.compile(rf"^\s*{re.escape(option)}\s*$"), timeout=UI_TIMEOUT_MS)


def test_operator_fills_and_submits_the_adhoc_run_form(prefect_server, tmp_path):
    from playwright.sync_api import sync_playwright
    from prefect.client.orchestration import get_client

    deploy("adhoc-dev")
    deployment = read_deployment("adhoc-dev")
    ui = prefect_server.removesuffix("/api")
    before = {run.id for run in _runs_of(deployment)}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1250})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{ui}/deployments/deployment/{deployment.id}/run")

            environment = _property(page, "environment")
            environment.wait_for()
            _expect_choice(environment.locator(".p-select-button__control"), "dev")  # the deployment's default
            page.locator(".flow-run-name-input input").fill(RUN_NAME)
            _choose(page, "environment", "local")
            _choose(page, "command", "build")

            select = _property(page, "select")
            select.get_by_role("button", name="Add item").click()
            select.locator("textarea").last.fill("stg_customers+")

            screenshot = tmp_path / SCREENSHOT.name
            page.screenshot(path=str(screenshot), type="png")
            # The per-worker SQLite server can answer 503 when its database is busy (seen once at the end
            # of a loaded suite): the form stays filled, and an operator would submit again. Nothing else
            # is retried, and a 503 on every attempt still fails.
            for _attempt in range(3):
                with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
                    page.get_by_role("button", name="Submit").click()
                if created.value.status != 503:
                    break
                time.sleep(2)
            assert created.value.status == 201, created.value.text()
            flow_run_id = created.value.json()["id"]
            # After submitting, the UI goes back to the deployment's page.
            page.wait_for_url(re.compile(rf"/deployments/deployment/{deployment.id}(\?.*)?$"))
        finally:
            browser.close()

    runs = [run for run in _runs_of(deployment) if run.id not in before]
    with get_client(sync_client=True) as client:
        try:
            assert [str(run.id) for run in runs] == [flow_run_id]
            (run,) = runs
            assert run.deployment_id == deployment.id
            assert run.name == RUN_NAME
            assert run.state.is_scheduled()
            assert run.parameters["environment"] == "local"
            assert run.parameters["command"] == "build"
            assert run.parameters["select"] == ["stg_customers+"]
            assert run.parameters["vars"] == {}  # the UI sends JSON-kind values; the server hydrates them
            assert run.parameters.get("confirm_prod", False) is False
        finally:
            for run in runs:  # nothing is left for a worker of a later test to pick up (only this test's runs)
                client.delete_flow_run(run.id)
    assert screenshot.stat().st_size < 300_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        shutil.copy(screenshot, SCREENSHOT)


def _runs_of(deployment) -> list:
    """Every flow run of `deployment` (adhoc-dev: no schedule, so only submitted runs), all pages."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return read_all(client.read_flow_runs,
                        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


def test_a_finished_runs_artifacts_show_the_timeline_picture_and_the_progress(prefect_server, landed_home, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from conftest import artifacts_of
    from flows.core.artifacts import artifact_key
    from flows.production import production_run

    # A whole run of the bundled project: seeds, snapshots, three layers, several threads.
    state = production_run(environment="local", generate_docs=False, return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    by_key = {artifact.key: artifact for artifact in artifacts_of(flow_run_id)}
    timeline, progress = by_key[artifact_key("local", "timeline")], by_key[artifact_key("local", "progress")]
    ui = prefect_server.removesuffix("/api")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1400})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
            page.get_by_text("Artifacts", exact=True).first.click()  # the tab (a ?tab= query does not select it)
            # The tab lists a card per artifact; a card renders its description's first line as markdown.
            card = page.locator(".artifact-card", has_text=timeline.key)
            _expect_image_drawn(card.get_by_role("img", name="run timeline"))
            # the whole run's card, not a step's (their keys extend it: dbt-local-progress-seeds, ...)
            title = page.locator(".artifact-card__title", has_text=re.compile(rf"^\s*{re.escape(progress.key)}\s*$"))
            expect(page.locator(".artifact-card", has=title)).to_contain_text("whole run:")
            screenshot = tmp_path / ARTIFACTS_SCREENSHOT.name
            page.screenshot(path=str(screenshot), type="png", full_page=True)

            page.goto(f"{ui}/artifacts/artifact/{timeline.id}")  # the artifact itself: the picture, full size
            _expect_image_drawn(page.locator(".artifact-data-markdown").get_by_role("img", name="run timeline"))
            page.goto(f"{ui}/artifacts/artifact/{progress.id}")
            expect(page.locator(".artifact-data-progress")).to_have_text(re.compile(r"Progress:\s*100%"))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1" or not ARTIFACTS_SCREENSHOT.exists():
        shutil.copy(screenshot, ARTIFACTS_SCREENSHOT)


def _expect_image_drawn(image) -> None:
    """The <img> loaded and decoded its data: URI (an SVG the browser could not read has no width)."""
    image.wait_for(state="visible")
    image.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                                 timeout=UI_TIMEOUT_MS)
