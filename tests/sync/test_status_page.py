"""The status page of ``hubmirror serve`` in headless Chromium, for a library of many repositories: the check
phase's progress while a run checks its tags, failing and behind repositories first, a filter box (and
``?q=``), and each run's beginning besides when its copying started."""

from __future__ import annotations

import shutil
import time
from datetime import datetime

from test_serve import _chromium, _shot, serving
from test_sync_support import Env


def test_status_page_shows_the_check_progress_orders_and_filters_repositories_and_when_runs_began(env: Env) -> None:
    from selenium.webdriver.common.by import By

    env.seed()
    assert env.cli("--images", "tiny").returncode == 0  # tiny is mirrored: all done
    missing = env.root / "images.list"
    missing.write_text(f"{env.hub.host}/library/nosuch:1\n")  # fails
    browser = _chromium()
    try:
        # 2 requests a second to the Hub: the check lasts seconds; one pull: pyish is left behind (deferred).
        with serving(env, hub_rate=2, max_pulls=1, images=["pyish", "tiny"], list=str(missing)) as srv:
            st = srv.wait(
                "the check phase under way",
                lambda s: (
                    s["current"] is not None and 0 < s["current"]["tags_checked"] <= s["current"]["tags_to_check"] - 6
                ),
            )
            total = st["current"]["tags_to_check"]
            browser.get(srv.url + "/")
            checking = browser.find_element(By.ID, "current-checking")
            assert checking.is_displayed(), browser.find_element(By.ID, "current").text
            assert not browser.find_element(By.ID, "current-items").is_displayed()  # not "0 of 0 items"
            assert "checking tags" in checking.text and f"of {total}" in checking.text
            assert 0 < int(browser.find_element(By.ID, "check-done").text) <= total
            _shot(browser, "status-checking.png")
            st = srv.idle(1)

            run = st["runs"][0]
            began, copying = datetime.fromisoformat(run["began"]), datetime.fromisoformat(run["copying_started"])
            assert began < copying and (copying - began).total_seconds() >= 1  # the check took seconds
            assert run["started"] == run["copying_started"]

            browser.get(srv.url + "/")
            heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#runs th")]
            assert heads[1:3] == ["began", "copying started"]
            newest = browser.find_element(By.CSS_SELECTOR, "#runs tr.run")
            assert newest.find_element(By.CSS_SELECTOR, "td.began").text == began.strftime("%Y-%m-%d %H:%M:%S UTC")
            assert "planned in" in newest.find_element(By.CSS_SELECTOR, "td.copying").text
            states = [r.get_attribute("data-state") for r in browser.find_elements(By.CSS_SELECTOR, "tr.repo")]
            names = [r.get_attribute("data-name") for r in browser.find_elements(By.CSS_SELECTOR, "tr.repo")]
            assert states[0] == "failed" and names[0] == env.key("library/nosuch")
            assert "behind" in states and "ok" in states
            assert states == sorted(states, key=["failed", "behind", "ok"].index), states
            assert names[states.index("ok")] == env.key("tiny")

            def shown() -> list[str]:
                rows = browser.find_elements(By.CSS_SELECTOR, "tr.repo")
                return [r.get_attribute("data-name") for r in rows if r.is_displayed()]

            box = browser.find_element(By.ID, "repo-filter")
            box.send_keys("tiny")
            assert shown() == [env.key("tiny")]
            assert browser.find_element(By.ID, "repo-count").text == f"1 of {len(names)} repositories"
            assert browser.current_url.endswith("?q=tiny")
            box.clear()
            box.send_keys("behind")
            assert shown() == [n for n, s in zip(names, states, strict=True) if s == "behind"]
            browser.get(srv.url + "/?q=nosuch")  # a link to the filtered page
            time.sleep(0.2)
            assert shown() == [env.key("library/nosuch")]
            assert browser.find_element(By.ID, "repo-filter").get_attribute("value") == "nosuch"
            _shot(browser, "status-filtered.png")
    finally:
        browser.quit()
        shutil.rmtree(browser.hubmirror_profile, ignore_errors=True)
