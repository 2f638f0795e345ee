"""The page: self-contained (nothing to fetch), a grid per GPU, a bar per run and attempt, the
tables behind the pictures, a live page that reloads itself, and the summary at scale."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser

import pytest

from migbench.report import ReportBuilder
from migbench.state import state_dir_for
from tests.report.test_data import SMALL
from tests.support.reportkit import plan_sweep, write_state
from tests.support.statedir import sd_of


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.items.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.items.append((tag, dict(attrs)))

    def find(self, tag: str | None = None, **want: str) -> list[dict[str, str | None]]:
        out = []
        for t, a in self.items:
            if (tag is None or t == tag) and all(a.get(k.rstrip("_").replace("_", "-")) == v for k, v in want.items()):
                out.append(a)
        return out


def parse(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return plan_sweep(tmp_path_factory.mktemp("html"), SMALL, time_limit_s=0.5)


def assert_self_contained(html: str) -> None:
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.I), "a network address in the page"
    assert not re.search(r"<(link|iframe|object|embed|img)\b|\bsrc=|@import", html, re.I)
    for url in re.findall(r"url\(([^)]*)\)", html):
        assert url.startswith("#"), url
    for href in re.findall(r'href="([^"]*)"', html):
        assert href.startswith(("#", "data:image/png;base64,")), href


def test_a_launched_sweeps_page_has_a_grid_per_gpu_and_a_bar_per_run_and_attempt(plan):
    write_state(plan)
    html = ReportBuilder(plan, state_dir=sd_of(plan), grain=False).build().html
    assert_self_contained(html)
    el = parse(html)
    assert sorted(int(a["data-gpu"] or -1) for a in el.find("figure", class_="gpu")) == plan.gpus()
    planned = {a["data-run"] for a in el.find("rect", data_kind="planned")}
    assert planned == {r.id for r in plan.placed_runs()}
    actual = el.find("rect", data_kind="actual")
    assert {a["data-run"] for a in actual} == planned and len(actual) == len(planned) + 2
    assert len(el.find("g", class_="instance")) == len(plan.instances)
    assert {a.get("data-grid-run") for a in el.find("text") if a.get("data-grid-run")} == planned
    assert "refresh" not in html
    for section in ("grid", "timeline", "over-time", "grain", "memory"):
        assert el.find("section", id=section)
    assert html.count("<table") >= 6  # the numbers behind each picture


def test_a_running_sweeps_page_reloads_itself_and_a_finished_ones_does_not(plan):
    write_state(plan, done_fraction=0.5, alive_pid=os.getpid())
    b = ReportBuilder(plan, state_dir=sd_of(plan), grain=False)
    assert '<meta http-equiv="refresh" content="7">' in b.build(refresh_s=7).html
    write_state(plan)
    assert "http-equiv" not in b.build(refresh_s=7).html


def test_at_scale_the_page_says_what_it_summarises_and_draws_a_heat_map(plan):
    write_state(plan)
    html = ReportBuilder(plan, state_dir=sd_of(plan), grain=False).build(detail=False).html
    assert_self_contained(html)
    assert "At this scale the page summarises" in html
    assert "data:image/png;base64," in html
    assert "memory per group" in html


def test_without_a_grain_lever_the_page_says_how_to_get_one(plan):
    for p in state_dir_for(plan).glob("launch.db*"):
        p.unlink()
    html = ReportBuilder(plan, state_dir=sd_of(plan), grain=False).build().html
    assert "migbench grain SWEEP" in html and "not launched yet" in html
