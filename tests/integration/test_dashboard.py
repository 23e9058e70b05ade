"""The dashboard in a real browser (Debian's chromium through Playwright), against a real controller
serving two real embedded runs (ARPO and GRPO, the shipped tiny agent on the demo benchmark): sign-in,
the runs list, the curves image, the tree viewer (leaves and branch points of a known tree, keyboard
navigation) and the side-by-side comparison. Screenshots go to $ARPO_TEST_ARTIFACTS (default: the test's
temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arpo.localredis import free_port, start_server

TOKEN = "dashboard-test-token-0123"
SPEC: dict[str, Any] = {
    "model": {"name_or_path": "arpo:agent-tiny", "dtype": "float32"},
    "dataset": {"path_or_name": "arpo:agentic", "split": "rl"},
    "config": {
        "seed": 3,
        "rollout": {"max_response_tokens": 160, "temperature": 1.0},
        "branching": {"group_size": 6, "initial_rollouts": 2, "entropy_window": 4, "beta": 0.0},
        "optim": {"batch_prompts": 3, "mini_batch_prompts": 3, "total_steps": 2, "lr": 1e-5},
    },
}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is needed for the dashboard tests: apt-get install chromium (scripts/test.sh does)"
        )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A controller on a private Redis holding an ARPO run and a GRPO run."""
    tmp = tmp_path_factory.mktemp("dashboard")
    redis = start_server()
    env = os.environ | {"REDIS_URL": redis.url, "OMP_NUM_THREADS": "1"}
    runs = {}
    for method, initial in (("arpo", 2), ("grpo", 6)):
        spec = json.loads(json.dumps(SPEC)) | {"name": method}
        spec["config"]["branching"]["initial_rollouts"] = initial
        path = tmp / f"{method}.json"
        path.write_text(json.dumps(spec))
        run_id = f"{method}-dash"
        done = subprocess.run(
            [sys.executable, "-m", "arpo", "run", str(path), "--run-id", run_id, "--dir", str(tmp / "runs")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[method] = run_id
    port = free_port()
    log = (tmp / "controller.log").open("wb")
    controller = subprocess.Popen(
        [sys.executable, "-m", "arpo.services.controller"],
        env=env | {"ARPO_CONTROLLER_TOKEN": TOKEN, "ARPO_CONTROLLER_PORT": str(port)},
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield {"url": url, "runs": runs, "artifacts": Path(os.environ.get("ARPO_TEST_ARTIFACTS", tmp))}
    finally:
        controller.terminate()
        controller.wait(30)
        redis.close()


@pytest.fixture
def page(served: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(30_000)
        outside: list[str] = []
        own = (served["url"], f"blob:{served['url']}")  # blob: the curves image, fetched with the token
        page.on("request", lambda r: None if r.url.startswith(own) else outside.append(r.url))
        yield page
        browser.close()
        assert not outside, f"the dashboard fetched from outside the controller: {outside}"


def _sign_in(page: Any, url: str) -> None:
    page.goto(f"{url}/")
    page.fill("#token", "wrong-token-0123456789")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login-error:has-text('refused')")
    page.fill("#token", TOKEN)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#runs")


def _image_colours(page: Any) -> int:
    """Distinct colours in the curves image (a blank or broken image has one or none)."""
    page.wait_for_function("document.querySelector('#curves')?.naturalWidth > 0")
    return int(
        page.evaluate(
            """() => {
            const img = document.querySelector('#curves');
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data, seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            return seen.size;
        }"""
        )
    )


def test_runs_curves_and_the_tree_viewer(served: dict[str, Any], page: Any) -> None:
    url, run_id = served["url"], served["runs"]["arpo"]
    _sign_in(page, url)
    rows = page.locator("#runs tbody tr")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.run)")) == sorted(served["runs"].values())
    assert "finished" in page.locator(f"tr[data-run='{run_id}']").inner_text()

    page.click(f"a[href='#/runs/{run_id}']")
    assert _image_colours(page) > 20
    page.wait_for_selector("#tree [role=treeitem]")

    # The tree shown (the step's first) against the API's own record of it.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    trees = httpx.get(f"{url}/v1/runs/{run_id}/trees/1", headers=headers).json()
    first = trees[0]
    children: dict[str, int] = {}
    for node in first["nodes"]:
        if node["parent_id"] is not None:
            children[node["parent_id"]] = children.get(node["parent_id"], 0) + 1
    assert page.locator("#tree li.leaf").count() == len(first["trajectories"])
    assert page.locator("#tree li.branch-point").count() == sum(c >= 2 for c in children.values())
    assert page.locator("#tree [role=treeitem]").count() == len(first["nodes"])
    assert page.locator(".tree-list button").count() == len(trees)
    entropies = page.locator("#tree .tok[title^='entropy']")
    assert entropies.count() > 0  # every model token carries its value, not only its colour

    # Keyboard: the first item takes focus, arrows move through the tree and read each segment out.
    page.focus("#tree [role=treeitem][tabindex='0']")
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("document.activeElement.dataset.node")
    assert focused == first["nodes"][1]["node_id"]
    assert "segment" in page.inner_text("#focus-detail")
    page.keyboard.press("ArrowLeft")  # collapse the node that has children, or go to its parent
    page.keyboard.press("Home")
    assert page.evaluate("document.activeElement.dataset.node") == first["nodes"][0]["node_id"]
    served["artifacts"].mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(served["artifacts"] / "dashboard-run.png"), full_page=True)


def test_arpo_and_grpo_side_by_side(served: dict[str, Any], page: Any) -> None:
    _sign_in(page, served["url"])
    for run_id in served["runs"].values():
        page.check(f"tr[data-run='{run_id}'] input[type=checkbox]")
    page.click("text=Compare the two selected runs")
    page.wait_for_selector("h1:has-text('Compare runs')")
    assert _image_colours(page) > 20
    page.screenshot(path=str(served["artifacts"] / "dashboard-compare.png"))


def test_the_views_api_refuses_without_the_token_and_names_bad_steps(served: dict[str, Any]) -> None:
    url, run_id = served["url"], served["runs"]["arpo"]
    assert httpx.get(f"{url}/v1/runs/{run_id}/curves.png").status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bad = httpx.get(f"{url}/v1/runs/{run_id}/trees/-1/view", headers=headers)
    assert bad.status_code == 422 and "step" in bad.text
    missing = httpx.get(f"{url}/v1/runs/nope/curves.png", headers=headers)
    assert missing.status_code == 404
    assert httpx.get(f"{url}/dashboard/").status_code == 200  # the pages themselves are public
