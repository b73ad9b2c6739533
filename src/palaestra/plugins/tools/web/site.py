"""An original web site generated from a seed: a wiki of invented people, places and devices, and a shop.

Nothing is downloaded. The wiki's facts are spread over linked pages (a device's page names its
inventor, the inventor's page names the birthplace, the town's page names its river), so questions
need several hops. The shop's product pages take their chosen options from the URL query, and a
`/buy/` URL places the order.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

WIKI = "http://wiki.local"
SHOP = "http://shop.local"
SYLLABLES = [
    "ka",
    "ve",
    "lor",
    "min",
    "sa",
    "tor",
    "bel",
    "quin",
    "dra",
    "mos",
    "fen",
    "rul",
    "ith",
    "gar",
    "pel",
    "zon",
    "ova",
    "tesh",
    "wyn",
    "cor",
    "ast",
    "nim",
    "bro",
    "ek",
]
PURPOSES = [
    "measuring tides",
    "drying grain",
    "lighting mines",
    "sorting letters",
    "spinning wool",
    "cooling cellars",
    "signalling ships",
    "pressing olives",
    "weighing ore",
    "timing races",
]
CATEGORIES = {
    "scarf": (["wool", "cashmere", "cotton"], ["S", "M", "L"]),
    "backpack": (["canvas", "nylon", "leather"], []),
    "mug": (["ceramic", "enamel", "stoneware"], []),
    "jacket": (["waxed cotton", "down", "fleece"], ["S", "M", "L", "XL"]),
    "lamp": (["brass", "oak", "glass"], []),
    "sneakers": (["suede", "canvas", "mesh"], ["40", "41", "42", "43", "44"]),
}
COLORS = ["red", "green", "navy", "ochre", "grey", "black", "cream", "teal"]
BRANDS = ["Fjell", "Marrow", "Ostra", "Kettle & Co", "Halden", "Brume"]


def _name(rng: random.Random, used: set[str], parts: int = 2) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()
        if name not in used and len(name) > 3:
            used.add(name)
            return name


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


@dataclass
class WikiWorld:
    rivers: list[dict[str, Any]] = field(default_factory=list)
    towns: list[dict[str, Any]] = field(default_factory=list)
    inventors: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)


def generate_world(rng: random.Random, n_devices: int = 14) -> WikiWorld:
    used: set[str] = set()
    world = WikiWorld()
    for _ in range(5):
        world.rivers.append(
            {
                "name": f"{_name(rng, used)} River",
                "length_km": rng.randint(40, 900),
                "source": f"Mount {_name(rng, used)}",
            }
        )
    for _ in range(10):
        world.towns.append(
            {
                "name": _name(rng, used, 3),
                "population": rng.randint(1200, 480000),
                "elevation_m": rng.randint(3, 2100),
                "river": rng.choice(world.rivers)["name"],
                "founded": rng.randint(900, 1700),
            }
        )
    for _ in range(n_devices):
        first, last = _name(rng, used), _name(rng, used, 3)
        world.inventors.append(
            {
                "name": f"{first} {last}",
                "born": rng.randint(1780, 1950),
                "birthplace": rng.choice(world.towns)["name"],
            }
        )
    for inventor in world.inventors:
        world.devices.append(
            {
                "name": f"{_name(rng, used)} {rng.choice(['engine', 'lamp', 'press', 'loom', 'gauge'])}",
                "year": inventor["born"] + rng.randint(20, 50),
                "inventor": inventor["name"],
                "purpose": rng.choice(PURPOSES),
            }
        )
    return world


def _page(title: str, body: str) -> str:
    escaped = html.escape(title)
    return f"<html><head><title>{escaped}</title></head><body><h1>{escaped}</h1>{body}</body></html>"


def _wiki_link(name: str) -> str:
    return f'<a href="/wiki/{slug(name)}">{html.escape(name)}</a>'


def wiki_pages(world: WikiWorld) -> dict[str, str]:
    pages = {}
    for r in world.rivers:
        pages[f"{WIKI}/wiki/{slug(r['name'])}"] = _page(
            r["name"],
            (
                f"<p>The {r['name']} is a river that rises on {r['source']}. "
                f"It is {r['length_km']} km long.</p>"
                "<p>Its valley is known for slate quarries and water mills.</p>"
            ),
        )
    for t in world.towns:
        pages[f"{WIKI}/wiki/{slug(t['name'])}"] = _page(
            t["name"],
            (
                f"<p>{t['name']} is a market town founded in {t['founded']}. "
                f"It lies on the {_wiki_link(t['river'])}.</p>"
                f"<table><tr><td>Population</td><td>{t['population']}</td></tr>"
                f"<tr><td>Elevation</td><td>{t['elevation_m']} m</td></tr></table>"
            ),
        )
    for i in world.inventors:
        devices = [d for d in world.devices if d["inventor"] == i["name"]]
        works = "".join(f"<li>{_wiki_link(d['name'])}</li>" for d in devices)
        pages[f"{WIKI}/wiki/{slug(i['name'])}"] = _page(
            i["name"],
            (
                f"<p>{i['name']} (born {i['born']}) was an engineer born in "
                f"{_wiki_link(i['birthplace'])}.</p>"
                f"<h2>Works</h2><ul>{works}</ul>"
            ),
        )
    for d in world.devices:
        pages[f"{WIKI}/wiki/{slug(d['name'])}"] = _page(
            d["name"],
            (
                f"<p>The {d['name']} is a machine for {d['purpose']}, first built in {d['year']}.</p>"
                f"<p>It was invented by {_wiki_link(d['inventor'])}.</p>"
                "<p>Early models were made of cast iron and needed two operators.</p>"
            ),
        )
    return pages


# ---------------------------------------------------------------- the shop


def generate_products(rng: random.Random, n: int = 60) -> list[dict[str, Any]]:
    products = []
    categories = sorted(CATEGORIES)
    for k in range(n):
        category = categories[k % len(categories)]
        materials, sizes = CATEGORIES[category]
        material = rng.choice(materials)
        brand = rng.choice(BRANDS)
        products.append(
            {
                "id": f"p{k + 1:03d}",
                "title": f"{brand} {material} {category}",
                "category": category,
                "material": material,
                "brand": brand,
                "colors": sorted(rng.sample(COLORS, 3)),
                "sizes": list(sizes),
                "price": round(rng.uniform(12, 240), 2),
            }
        )
    return products


def product_url(product_id: str, **options: str) -> str:
    query = urlencode(sorted((k, v) for k, v in options.items() if v))
    return f"{SHOP}/product/{product_id}" + (f"?{query}" if query else "")


def product_page(product: dict[str, Any], chosen: dict[str, str]) -> str:
    color, size = chosen.get("color", ""), chosen.get("size", "")
    color_links = "".join(
        f'<li><a href="{html.escape(product_url(product["id"], color=c, size=size))}">color: {c}</a></li>'
        for c in product["colors"]
    )
    size_links = "".join(
        f'<li><a href="{html.escape(product_url(product["id"], color=color, size=s))}">size: {s}</a></li>'
        for s in product["sizes"]
    )
    buy = f"{SHOP}/buy/{product['id']}?" + urlencode(sorted(chosen.items()))
    return _page(
        product["title"],
        (
            f"<p>Price: ${product['price']:.2f}</p>"
            f"<p>Material: {product['material']}. Brand: {product['brand']}.</p>"
            f"<p>Chosen: color {color or '(none)'}, "
            f"size {size or '(none)' if product['sizes'] else 'n/a'}</p>"
            f"<h2>Colors</h2><ul>{color_links}</ul>"
            + (f"<h2>Sizes</h2><ul>{size_links}</ul>" if product["sizes"] else "")
            + f'<p><a href="{html.escape(buy)}">Buy now</a></p>'
        ),
    )


def search_doc(product: dict[str, Any]) -> str:
    return f"{product['title']} {product['category']} {product['material']} {' '.join(product['colors'])}"


@dataclass
class Site:
    world: WikiWorld
    products: list[dict[str, Any]]
    wiki: dict[str, str]

    @classmethod
    def generate(cls, seed: int) -> Site:
        rng = random.Random(seed)
        world = generate_world(rng)
        return cls(world, generate_products(rng), wiki_pages(world))

    def product(self, product_id: str) -> dict[str, Any] | None:
        return next((p for p in self.products if p["id"] == product_id), None)

    def fetch(self, url: str) -> tuple[str, dict[str, Any] | None] | None:
        """(html, purchase or None) for a URL of the site; None for a page that does not exist."""
        if url in self.wiki:
            return self.wiki[url], None
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != SHOP:
            return None
        chosen = {k: v[0] for k, v in parse_qs(parts.query).items() if k in ("color", "size")}
        section, _, product_id = parts.path.strip("/").partition("/")
        product = self.product(product_id)
        if product is None:
            return None
        if section == "product":
            return product_page(product, chosen), None
        if section == "buy":
            return self._buy(product, chosen)
        return None

    def _buy(self, product: dict[str, Any], chosen: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
        missing = [
            o
            for o, values in (("color", product["colors"]), ("size", product["sizes"]))
            if values and chosen.get(o) not in values
        ]
        back = f'<p><a href="{html.escape(product_url(product["id"], **chosen))}">Back to the product</a></p>'
        if missing:
            return _page(
                "Cannot buy yet", f"<p>Please choose a {' and a '.join(missing)} first.</p>{back}"
            ), None
        purchase = {"product_id": product["id"], "price": product["price"], **chosen}
        summary = ", ".join(f"{k} {v}" for k, v in sorted(chosen.items()))
        return _page(
            "Order placed",
            f"<p>You bought the {product['title']} ({summary}) for ${product['price']:.2f}.</p>",
        ), purchase

    def searchable(self, section: str) -> list[tuple[str, str, str]]:
        """(url, title, text) of the pages the search tool indexes in a section ('wiki' or 'shop')."""
        if section == "wiki":
            from palaestra.plugins.tools.web.render import render

            out = []
            for url, page in self.wiki.items():
                rendered = render(page, url)
                out.append((url, rendered.title, rendered.text))
            return out
        return [(product_url(p["id"]), p["title"], search_doc(p)) for p in self.products]
