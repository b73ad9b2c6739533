"""The dashboard in a real headless browser: Debian's chromium driven by Selenium through Debian's
chromium-driver (nothing is downloaded). A person logs in, every page loads, plays tic-tac-toe against
the minimax bot and a tools/shop episode (tool calls typed into the page) to the end, and reads the
episode viewer. With PALAESTRA_SCREENSHOTS=DIR the pages are saved there as PNG (docs/dashboard/)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from palaestra.agents.client import Client
from palaestra.plugins.tools import domain_for
from palaestra.plugins.tools.reference import scripted_policy
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig

pytestmark = pytest.mark.timeout(300)

IN_CI = os.environ.get("CI") == "true"
TOKEN = "browser-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = os.environ.get("PALAESTRA_SCREENSHOTS")

webdriver: Any = None
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported below
    pass

_missing = [
    name
    for name, present in (
        ("selenium (pip, in [dev])", webdriver is not None),
        ("chromium (apt)", Path(CHROMIUM).exists()),
        ("chromium-driver (apt)", Path(CHROMEDRIVER).exists()),
    )
    if not present
]
if _missing:
    if IN_CI:
        raise RuntimeError(f"CI must run the browser tests, but this machine lacks {', '.join(_missing)}")
    pytest.skip(
        f"this machine lacks {', '.join(_missing)} (scripts/test.sh installs them)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    path = tmp_path_factory.mktemp("store") / "browser.sqlite"
    config = ServerConfig(
        port=0,
        auth_token=TOKEN,
        store={"path": str(path), "flush_interval_s": 0.05},
        dashboard={"enabled": True, "port": 0},
    )
    with ServerThread(config) as thread:
        _record_some_episodes(thread)
        yield thread


def _record_some_episodes(server: ServerThread) -> None:
    """A dozen tools/shop episodes, alternately played by the reference agent and by a lazy one, so the
    episode list and the reward curve have something to show."""
    policy = scripted_policy("tools/shop")
    with Client(server.address, token=TOKEN) as client:
        for seed in range(12):
            [step] = client.open("tools/shop", seed=seed)
            history = [step.result.observation]
            while not step.done:
                action: Any = policy(history) if seed % 2 == 0 else "Sorry, I cannot help with that."
                step = client.step(step.episode_id, action)
                history.append(step.result.observation)
            client.close(step.episode_id)


@pytest.fixture(scope="module")
def browser(server: ServerThread) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        assert server.server is not None
        url = server.server.extras.dashboard.url
        driver.get(url + "/")
        assert driver.current_url.endswith("/login")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login").click()
        _wait(
            driver,
            lambda d: (
                "principal" not in d.find_element(By.ID, "who").text
                and "default" in d.find_element(By.ID, "who").text
            ),
        )
        driver.base_url = url
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout).until(condition)


def _go(driver: Any, route: str) -> None:
    driver.get(f"{driver.base_url}/#/{route}")
    driver.refresh()  # a hash change alone does not reload; the app routes on load


def _shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def _no_errors(driver: Any) -> None:
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "main .error")]
    assert not errors, errors
    severe = [
        entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
    ]  # JavaScript errors and failed requests
    assert not severe, severe


def _flush(server: ServerThread) -> None:
    assert server.server is not None and server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()


def test_every_page_loads(server: ServerThread, browser: Any) -> None:
    _flush(server)
    _go(browser, "catalog")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#catalog tbody tr")) > 20)
    assert "tools/shop" in browser.find_element(By.ID, "catalog").text
    _shot(browser, "catalog")
    _no_errors(browser)

    _go(browser, "episodes")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#episodes tbody tr")) >= 12)
    _shot(browser, "episodes")

    _go(browser, "curves/tools%2Fshop")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.curve circle")) >= 12)
    assert browser.find_elements(By.CSS_SELECTOR, "svg.curve polyline.avg")
    _shot(browser, "curves")

    _go(browser, "sandboxes")
    _wait(browser, lambda d: d.find_elements(By.ID, "pools"))
    assert "python" in browser.find_element(By.ID, "main").text
    _shot(browser, "sandboxes")

    with Client(server.address, token=TOKEN) as client:
        [opened] = client.open("tools/travel", seed=1)
        _go(browser, "live")
        _wait(browser, lambda d: opened.episode_id[:12] in d.find_element(By.ID, "live").text)
        _shot(browser, "live")
        client.close(opened.episode_id)
    _no_errors(browser)


def _status(driver: Any) -> str:
    return str(driver.find_element(By.ID, "play-status").text)


def _wait_turn(driver: Any) -> str:
    return str(
        _wait(
            driver,
            lambda d: (
                _status(d) if _status(d).startswith(("your move", "done", "refused", "error")) else None
            ),
        )
    )


def _open_play(driver: Any, env_id: str, seed: int, options: dict[str, Any] | None = None) -> None:
    _go(driver, "play/" + env_id.replace("/", "%2F"))
    _wait(driver, lambda d: d.find_elements(By.ID, "open-btn"))
    assert Select(driver.find_element(By.ID, "env-select")).first_selected_option.text == env_id
    seed_box = driver.find_element(By.ID, "seed")
    seed_box.clear()
    seed_box.send_keys(str(seed))
    if options is not None:
        box = driver.find_element(By.ID, "options")
        box.clear()
        box.send_keys(json.dumps(options))
    driver.find_element(By.ID, "open-btn").click()
    assert _wait_turn(driver).startswith("your move")


def test_a_person_plays_tictactoe_to_the_end(server: ServerThread, browser: Any) -> None:
    _open_play(browser, "games/tictactoe-text", seed=3)  # the page's preset: against minimax
    assert json.loads(browser.find_element(By.ID, "options").get_attribute("value")) == {
        "opponent": "minimax"
    }
    moves = 0
    while _status(browser).startswith("your move"):
        buttons = browser.find_elements(By.CSS_SELECTOR, "#controls .legal-action")
        assert buttons, "legal moves are offered as buttons"
        buttons[-1].click()
        moves += 1
        _wait_turn(browser)
    assert 3 <= moves <= 5
    status = _wait(browser, lambda d: _status(d) if "view the recorded episode" in _status(d) else None)
    assert status.startswith("done · player_1: ")
    assert float(status.split("player_1: ")[1].split()[0]) in (-1.0, 0.0)  # minimax does not lose
    assert "player_2 (O) played" in browser.find_element(By.ID, "transcript").text
    _shot(browser, "play-tictactoe")
    browser.find_element(By.ID, "viewer-link").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "trajectory"))
    text = browser.find_element(By.ID, "main").text
    assert "games/tictactoe-text" in text and "play: human" in text and "outcome" in text
    _no_errors(browser)

    _flush(server)
    _go(browser, "leaderboards")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".leader-row"))
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, ".leader-row")]
    assert any("bot:minimax" in r for r in rows) and any("human (default)" in r for r in rows)
    _shot(browser, "leaderboards")


def _shop_task() -> tuple[int, Any]:
    """A tools/shop task whose first turn calls tools and that has a second turn (seed = task index)."""
    tasks = list(domain_for("tools/shop", {}).tasks())
    for index, task in enumerate(tasks):
        if len(task.reference) >= 2 and task.reference[0].calls:
            return index, task
    raise AssertionError("no multi-turn tools/shop task with tool calls")


def test_a_person_plays_a_tool_use_episode_to_the_end(server: ServerThread, browser: Any) -> None:
    seed, task = _shop_task()
    _open_play(browser, "tools/shop", seed=seed, options={})
    assert task.reference[0].calls[0].tool in [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#tool-name option")
    ]
    for plan in task.reference:
        for call in plan.calls:
            Select(browser.find_element(By.ID, "tool-name")).select_by_value(call.tool)
            arguments = browser.find_element(By.ID, "tool-args")
            arguments.clear()
            arguments.send_keys(call.arguments_json())
            browser.find_element(By.ID, "add-call").click()
            browser.find_element(By.ID, "send-btn").click()
            assert _wait_turn(browser).startswith("your move")
        browser.find_element(By.ID, "message-content").send_keys(plan.reply)
        browser.find_element(By.ID, "send-btn").click()
        status = _wait_turn(browser)
    assert status.startswith("done"), status
    status = _wait(browser, lambda d: _status(d) if "view the recorded episode" in _status(d) else None)
    reward = float(status.split("agent: ")[1].split()[0])
    assert reward > 1.0  # state matched, facts conveyed, checklist items passed
    transcript = browser.find_element(By.ID, "transcript").text
    assert f"→ {task.reference[0].calls[0].tool}(" in transcript  # the call, and its tool result below
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#last-reward .badge")]
    _shot(browser, "play-tools")

    browser.find_element(By.ID, "viewer-link").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "trajectory"))
    viewer = browser.find_element(By.ID, "main")
    calls = [c.text for c in viewer.find_elements(By.CSS_SELECTOR, ".tool-call")]
    assert len(calls) == sum(len(p.calls) for p in task.reference)
    assert viewer.find_elements(By.CSS_SELECTOR, ".msg.tool")  # tool results
    components = " ".join(c.text for c in viewer.find_elements(By.CSS_SELECTOR, ".component"))
    assert "state_match = 1" in components and "checklist" in components
    items = viewer.find_elements(By.CSS_SELECTOR, ".checklist-item")
    assert items and any("passed" in i.text for i in items)
    assert viewer.find_elements(By.CSS_SELECTOR, ".evidence")
    assert "state_match" in viewer.find_element(By.ID, "totals").text
    _shot(browser, "episode-viewer")
    evidence = viewer.find_elements(By.CSS_SELECTOR, ".evidence")[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", evidence)
    _shot(browser, "episode-viewer-checklist")
    _no_errors(browser)
