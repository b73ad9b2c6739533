"""The local web as tool environments: a browser state, browsing tools, fact-finding and shopping tasks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import bm25s

from palaestra.plugins.tools.domains.base import money
from palaestra.plugins.tools.tasks import Domain, PlannedCall, Task, TurnPlan
from palaestra.plugins.tools.toolbox import STRING, Tool, ToolError, obj
from palaestra.plugins.tools.web.render import Link, RenderedPage, render
from palaestra.plugins.tools.web.site import SHOP, WIKI, Site, product_url, slug
from palaestra.rewards.checklist import (
    ChecklistItem,
    JudgeContext,
    ReplyContains,
    StatePredicate,
    ToolCalled,
    mentions,
    normalized,
)
from palaestra.types import RewardComponent, RewardKind

MAX_PAGE_CHARS = 4000
SEARCH_RESULTS = 5


class SearchIndex:
    """BM25 over (url, title, text) documents, with bm25s."""

    def __init__(self, docs: Sequence[tuple[str, str, str]]) -> None:
        self.docs = list(docs)
        corpus = [f"{title} {title} {text}" for _, title, text in self.docs]  # titles count double
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    def search(self, query: str, k: int = SEARCH_RESULTS) -> list[tuple[str, str, str]]:
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not tokens or not tokens[0]:
            return []
        ids, scores = self.retriever.retrieve(tokens, k=min(k, len(self.docs)), show_progress=False)
        return [self.docs[int(i)] for i, s in zip(ids[0], scores[0], strict=True) if s > 0]


@dataclass
class Browser:
    site: Site
    index: SearchIndex
    home: str  # base URL for relative paths
    history: list[RenderedPage] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def page(self) -> RenderedPage:
        if not self.history:
            raise ToolError("no page is open; use search or open first")
        return self.history[-1]

    def show(self, page: RenderedPage) -> str:
        self.history.append(page)
        text = page.text if len(page.text) <= MAX_PAGE_CHARS else page.text[:MAX_PAGE_CHARS] + "\n[...]"
        return f"URL: {page.url}\nTitle: {page.title}\n\n{text}"

    def go(self, url: str) -> str:
        absolute = urljoin(self.home + "/", url.strip())
        fetched = self.site.fetch(absolute)
        if fetched is None:
            raise ToolError(f"page not found: {absolute}")
        html, purchase = fetched
        if purchase is not None:
            self.purchases.append(purchase)
        self.visited.append(absolute.split("?")[0])
        return self.show(render(html, absolute))


def search(state: Browser, query: str) -> str:
    results = state.index.search(query)
    links = [Link(n + 1, title, url) for n, (url, title, _) in enumerate(results)]
    lines = [f"[{link.number}] {link.text}" for link in links]
    snippets = [f"    {url}\n    {text[:160]}" for url, _, text in results]
    text = (
        "\n".join(f"{line}\n{snippet}" for line, snippet in zip(lines, snippets, strict=True))
        or "No results."
    )
    return state.show(
        RenderedPage(url=f"search:{query}", title=f"Search results for {query!r}", text=text, links=links)
    )


def open_url(state: Browser, url: str) -> str:
    return state.go(url)


def find(state: Browser, text: str) -> str:
    needle = text.lower()
    hits = [
        f"{n}: {line}" for n, line in enumerate(state.page.text.splitlines(), 1) if needle in line.lower()
    ]
    return "\n".join(hits) if hits else f"{text!r} does not occur on this page"


def click(state: Browser, link: str | int) -> str:
    target = state.page.link(link)
    if target is None:
        raise ToolError(f"no link {link!r} on this page; links are shown as [n] text")
    return state.go(target.url)


def back(state: Browser) -> str:
    if len(state.history) < 2:
        raise ToolError("there is no previous page")
    state.history.pop()
    return state.show(state.history.pop())


LINK_REF = {"type": ["string", "integer"], "description": "the link's number or its text"}
TOOLS = (
    Tool(
        "search", "Search the site; returns numbered results you can click.", obj({"query": STRING}), search
    ),
    Tool("open", "Open a URL of the site (absolute or a path).", obj({"url": STRING}), open_url),
    Tool("find", "Lines of the current page that contain a text.", obj({"text": STRING}), find),
    Tool("click", "Follow a link of the current page.", obj({"link": LINK_REF}), click),
    Tool("back", "Go back to the previous page.", obj({}), back),
)
# click also accepts integers: the schema allows it, the page lookup takes both
CLICK_INT_NOTE = "click(link) takes the number shown as [n] or the link text"

WEB_POLICY = (
    "You use a web browser through tools: search(query), open(url), find(text), click(link), back(). "
    "Pages are shown as text with links numbered [n]. "
    + CLICK_INT_NOTE
    + ". Work only from what the pages say. "
    "When you are done, reply to the user in plain text (no tool call); that reply ends the task."
)


class WebDomain(Domain):
    section = ""
    home = ""
    max_episode_steps = 20
    policy = WEB_POLICY

    def __init__(self, seed: int) -> None:
        self.site = Site.generate(seed)
        self.index = SearchIndex(self.site.searchable(self.section))
        self._tasks = self.build_tasks()

    def build_tasks(self) -> list[Task]:
        raise NotImplementedError

    def tools(self) -> Sequence[Tool]:
        return TOOLS

    def tasks(self) -> Sequence[Task]:
        return self._tasks

    def new_state(self, task: Task) -> Browser:
        return Browser(self.site, self.index, self.home)


def _visited(url: str) -> Any:
    return lambda browser: url in browser.visited


# ---------------------------------------------------------------- facts spread over pages


class WebFactsDomain(WebDomain):
    name = "web-facts"
    description = "Answer questions whose facts are spread over several pages of a generated wiki."
    section = "wiki"
    home = WIKI
    outcome_components = ("answer_correct",)

    def build_tasks(self) -> list[Task]:
        world = self.site.world
        towns = {t["name"]: t for t in world.towns}
        inventors = {i["name"]: i for i in world.inventors}
        tasks = []
        for n, device in enumerate(world.devices[:11]):
            inventor = inventors[device["inventor"]]
            town = towns[inventor["birthplace"]]
            two_hops = (
                f"In which year was the inventor of the {device['name']} born?",
                str(inventor["born"]),
                [device["name"], inventor["name"]],
            )
            three_hops = (
                f"What is the population of the town where the inventor of the {device['name']} was born?",
                str(town["population"]),
                [device["name"], inventor["name"], town["name"]],
            )
            for kind, (question, answer, path) in (("year", two_hops), ("population", three_hops)):
                tasks.append(self._task(f"web-facts-{kind}-{n}", question, answer, path))
        return tasks

    def _task(self, task_id: str, question: str, answer: str, path: list[str]) -> Task:
        calls = [PlannedCall("search", {"query": path[0]}), PlannedCall("click", {"link": path[0]})]
        calls += [PlannedCall("click", {"link": name}) for name in path[1:]]
        plan = TurnPlan(tuple(calls), f"The answer is {answer}.", (answer,))
        items = [
            ChecklistItem(
                f"visited-{slug(name)}",
                f"Did the agent read the page about {name}?",
                StatePredicate(_visited(f"{WIKI}/wiki/{slug(name)}"), f"visited {name}"),
            )
            for name in path
        ]
        items.append(
            ChecklistItem(
                "answer",
                f"Did the agent answer {answer}?",
                ReplyContains([answer]),
                weight=len(path),
                required=True,
            )
        )
        return Task(
            task_id, (question,), f"Ask: {question}", (plan,), tuple(normalized(items)), {"answer": answer}
        )

    def outcome(self, task: Task, state: Any, ctx: JudgeContext) -> list[RewardComponent]:
        answer = str(task.data["answer"])
        final = ctx.replies[-1].text if ctx.replies else ""
        correct = mentions(final, answer)
        return [
            RewardComponent(
                "answer_correct",
                RewardKind.OUTCOME,
                1.0 if correct else 0.0,
                detail="" if correct else f"expected {answer}",
            )
        ]


# ---------------------------------------------------------------- shopping


def goal_attributes(product: dict[str, Any], n: int) -> dict[str, Any]:
    goal: dict[str, Any] = {
        "category": product["category"],
        "material": product["material"],
        "color": product["colors"][n % 3],
    }
    if product["sizes"]:
        goal["size"] = product["sizes"][n % len(product["sizes"])]
    goal["max_price"] = float(math.ceil(product["price"] * 1.1))
    return goal


def purchase_score(
    site: Site, goal: dict[str, Any], purchase: dict[str, Any] | None
) -> tuple[float, list[str]]:
    """The fraction of goal attributes the purchase meets, and the ones it misses."""
    if purchase is None:
        return 0.0, ["no purchase"]
    product = site.product(purchase["product_id"]) or {}
    checks = {
        "category": product.get("category") == goal["category"],
        "material": product.get("material") == goal["material"],
        "color": purchase.get("color") == goal["color"],
        "price": product.get("price", math.inf) <= goal["max_price"],
    }
    if "size" in goal:
        checks["size"] = purchase.get("size") == goal["size"]
    missed = [name for name, ok in checks.items() if not ok]
    return (len(checks) - len(missed)) / len(checks), missed


class WebShopDomain(WebDomain):
    name = "web-shop"
    description = "Search a generated shop, pick the options the user wants and buy within the budget."
    section = "shop"
    home = SHOP
    outcome_components = ("purchase_match",)

    def build_tasks(self) -> list[Task]:
        return [self._task(n, product) for n, product in enumerate(self.site.products[::3][:20])]

    def _task(self, n: int, product: dict[str, Any]) -> Task:
        goal = goal_attributes(product, n)
        size = f", size {goal['size']}" if "size" in goal else ""
        request = (
            f"I'd like a {goal['material']} {goal['category']} in {goal['color']}{size}, "
            f"for at most ${goal['max_price']:.0f}. Please buy it for me."
        )
        calls = [
            PlannedCall("search", {"query": f"{goal['material']} {goal['category']} {goal['color']}"}),
            PlannedCall("open", {"url": product_url(product["id"])}),
            PlannedCall("click", {"link": f"color: {goal['color']}"}),
        ]
        if "size" in goal:
            calls.append(PlannedCall("click", {"link": f"size: {goal['size']}"}))
        calls.append(PlannedCall("click", {"link": "Buy now"}))
        plan = TurnPlan(tuple(calls), f"I bought the {product['title']} for ${money(product['price'])}.")
        items = [
            ChecklistItem("searched", "Did the agent search the shop?", ToolCalled("search")),
            ChecklistItem(
                "found",
                f"Did the agent open a {goal['material']} {goal['category']}?",
                StatePredicate(_opened_matching(self.site, goal), "opened a matching product"),
            ),
            ChecklistItem(
                "bought",
                "Did the agent buy something?",
                StatePredicate(lambda b: bool(b.purchases), "a purchase was made"),
                weight=2.0,
                required=True,
            ),
        ]
        return Task(
            f"web-shop-{n}",
            (request,),
            f"You want: {request}",
            (plan,),
            tuple(normalized(items)),
            {"goal": goal},
        )

    def outcome(self, task: Task, state: Any, ctx: JudgeContext) -> list[RewardComponent]:
        purchase = state.purchases[-1] if state.purchases else None
        score, missed = purchase_score(self.site, task.data["goal"], purchase)
        return [
            RewardComponent(
                "purchase_match", RewardKind.OUTCOME, score, detail=f"missed: {missed}" if missed else ""
            )
        ]


def _opened_matching(site: Site, goal: dict[str, Any]) -> Any:
    def predicate(browser: Browser) -> bool:
        for url in browser.visited:
            if url.startswith(f"{SHOP}/product/"):
                product = site.product(url.rsplit("/", 1)[1]) or {}
                if (product.get("category"), product.get("material")) == (goal["category"], goal["material"]):
                    return True
        return False

    return predicate
