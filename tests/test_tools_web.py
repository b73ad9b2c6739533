"""The local web: rendering, BM25 search, browsing tools, fact and shop tasks with reference agents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from palaestra.env import EnvContext
from palaestra.plugins.tools import domain_for
from palaestra.plugins.tools.chat_env import ToolChatEnv
from palaestra.plugins.tools.reference import play, policy_for
from palaestra.plugins.tools.web.domain import WebShopDomain, purchase_score
from palaestra.plugins.tools.web.render import render
from palaestra.plugins.tools.web.site import Site, product_url
from palaestra.types import DEFAULT_AGENT, Action, AgentResult, Message, ToolCall


def test_render_numbers_links_and_keeps_blocks_apart() -> None:
    page = render(
        "<html><head><title>T</title><style>x{}</style></head><body><h1>Head</h1><p>One <a href='/a'>link"
        "</a> here.</p><ul><li>item &amp; more</li></ul><table><tr><td>Pop</td><td>12</td></tr></table>"
        "<script>no()</script></body></html>",
        "http://wiki.local/wiki/x",
    )
    assert page.title == "T"
    assert page.text.splitlines() == ["# Head", "One [1] link here.", "- item & more", "Pop 12"]
    assert page.links[0].url == "http://wiki.local/a"
    assert page.link(1) is page.link("link") is page.link("[1]") is page.links[0]
    assert page.link(7) is None and page.link("nothing") is None


def test_site_is_generated_from_the_seed() -> None:
    a, b, c = Site.generate(3), Site.generate(3), Site.generate(4)
    assert a.wiki == b.wiki and a.products == b.products
    assert a.wiki != c.wiki
    assert a.fetch("http://elsewhere.example/") is None


def make_env(env_id: str, task: int | str = 0) -> ToolChatEnv:
    return ToolChatEnv(domain_for(env_id, {}), EnvContext(env_id, "test", task=task))


def call(name: str, **arguments: Any) -> Action:
    return Action(message=Message("assistant", tool_calls=[ToolCall(name, json.dumps(arguments))]))


async def step(env: ToolChatEnv, action: Action) -> AgentResult:
    return (await env.step({DEFAULT_AGENT: action})).agents[DEFAULT_AGENT]


@pytest.mark.parametrize("env_id", ["tools/web-facts", "tools/web-shop"])
async def test_reference_agent_solves_every_web_task(env_id: str) -> None:
    domain = domain_for(env_id, {})
    assert len(domain.tasks()) >= 20
    policy = policy_for(domain)
    outcome = domain.outcome_components[0]
    for index, task in enumerate(domain.tasks()):
        results = await play(make_env(env_id, index), policy)
        values = {c.name: c.value for r in results for c in r.components if c.name == outcome}
        assert values == {outcome: 1.0}, task.id
        checklist = sum(c.value for r in results for c in r.components if c.name == "checklist")
        assert checklist == pytest.approx(1.0), task.id
        assert all(i.passed for r in results for i in r.checklist), task.id


async def test_search_finds_the_page_and_browsing_tools_work() -> None:
    domain: Any = domain_for("tools/web-facts", {})
    device = domain.site.world.devices[0]
    env = make_env("tools/web-facts")
    await env.reset()
    found = await step(env, call("search", query=device["name"]))
    assert device["name"] in found.observation.messages[0].content.splitlines()[3]  # the top result
    page = (await step(env, call("click", link=1))).observation.messages[0].content
    assert f"invented by [1] {device['inventor']}" in page
    hits = (await step(env, call("find", text="invented"))).observation.messages[0].content
    assert "invented by" in hits
    inventor = (await step(env, call("click", link=device["inventor"]))).observation.messages[0].content
    assert "born" in inventor
    back = (await step(env, call("back"))).observation.messages[0].content
    assert back == page
    missing = await step(env, call("open", url="/wiki/no-such-page"))
    assert "page not found" in missing.observation.messages[0].content
    assert not any(c.name == "invalid_tool_call" for c in missing.components)


async def test_a_wrong_answer_scores_zero_and_ends_on_the_required_item() -> None:
    env = make_env("tools/web-facts", 1)
    await env.reset()
    end = await step(env, Action(text="I do not know."))
    assert end.terminated and "answer" in end.info["stop_reason"]
    assert {c.name: c.value for c in end.components}["answer_correct"] == 0.0


async def test_buying_the_wrong_options_scores_partially() -> None:
    domain = domain_for("tools/web-shop", {})
    assert isinstance(domain, WebShopDomain)
    task = domain.tasks()[0]
    goal = task.data["goal"]
    product = next(
        p
        for p in domain.site.products
        if p["category"] == goal["category"]
        and p["material"] == goal["material"]
        and p["price"] <= goal["max_price"]
    )
    env = make_env("tools/web-shop", task.id)
    await env.reset()
    await step(env, call("open", url=product_url(product["id"])))
    wrong_color = next(c for c in product["colors"] if c != goal["color"])
    await step(env, call("click", link=f"color: {wrong_color}"))
    if product["sizes"]:
        await step(env, call("click", link=f"size: {goal['size']}"))
    bought = await step(env, call("click", link="Buy now"))
    assert "Order placed" in bought.observation.messages[0].content
    end = await step(env, Action(text="Bought it."))
    score = {c.name: c.value for c in end.components}["purchase_match"]
    expected, missed = purchase_score(
        domain.site, goal, {"product_id": product["id"], "color": wrong_color, "size": goal.get("size")}
    )
    assert score == pytest.approx(expected) and 0 < score < 1 and missed == ["color"]


async def test_buying_without_choosing_options_is_refused_by_the_page() -> None:
    domain: Any = domain_for("tools/web-shop", {})
    env = make_env("tools/web-shop")
    await env.reset()
    await step(env, call("open", url=product_url(domain.site.products[0]["id"])))
    page = (await step(env, call("click", link="Buy now"))).observation.messages[0].content
    assert "Please choose a color" in page
    end = await step(env, Action(text="Done"))
    assert {c.name: c.value for c in end.components}["purchase_match"] == 0.0
