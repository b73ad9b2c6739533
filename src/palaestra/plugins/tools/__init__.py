"""The tools plugin: multi-turn tool use in stateful domains, a local web, MCP servers; checklist rewards.

Environments:

* `tools/shop`      - customer service for a shop (JSON database), 22 tasks
* `tools/travel`    - flight bookings (SQLite database), 22 tasks
* `tools/web-facts` - answer questions whose facts are spread over several pages of a generated wiki
* `tools/web-shop`  - search a generated shop, pick options and buy what the user wants
* `tools/mcp-demo`  - the tools of a bundled MCP server (stdio)
* `tools/mcp`       - the tools of the MCP server named in the `[plugins.tools.mcp]` config table, if any

Config (`[plugins.tools]`): checklist_mode ("dense" | "sparse"), stop_on_required, checklist_scale,
invalid_call_penalty, policy_penalty, user_model (the name of a server [llm.NAME] chat endpoint for a
model-backed simulated user; clients may only send a name), web_seed, mcp (see docs/tools.md). Clients
may override the first five per episode in their open options.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import cache
from typing import Any

from palaestra.env import EnvContext
from palaestra.hookspecs import ScriptedPolicy, hookimpl
from palaestra.plugins.tools.chat_env import ToolChatEnv, make_spec
from palaestra.plugins.tools.tasks import Domain
from palaestra.registry import EnvRegistry
from palaestra.types import EnvSpec

STATIC_ENVS = ("tools/shop", "tools/travel", "tools/web-facts", "tools/web-shop", "tools/mcp-demo")


@cache
def _static_domain(env_id: str, web_seed: int) -> Domain:
    # Imported lazily: building a domain generates its data, which only an env that is used should pay for.
    if env_id == "tools/shop":
        from palaestra.plugins.tools.domains.shop import ShopDomain

        return ShopDomain()
    if env_id == "tools/travel":
        from palaestra.plugins.tools.domains.travel import TravelDomain

        return TravelDomain()
    if env_id in ("tools/web-facts", "tools/web-shop"):
        from palaestra.plugins.tools.web.domain import WebFactsDomain, WebShopDomain

        return WebFactsDomain(web_seed) if env_id == "tools/web-facts" else WebShopDomain(web_seed)
    if env_id == "tools/mcp-demo":
        from palaestra.plugins.tools.mcp_bridge import demo_domain

        return demo_domain()
    raise KeyError(f"unknown tools environment {env_id!r}")


_configured_mcp: dict[str, Domain] = {}


def domain_for(env_id: str, config: Mapping[str, Any]) -> Domain:
    """The domain behind a tools environment id (built once per process)."""
    if env_id == "tools/mcp":
        table = config.get("mcp")
        if not table:
            raise KeyError("tools/mcp needs an [plugins.tools.mcp] table in the config")
        key = repr(sorted(dict(table).items()))
        if key not in _configured_mcp:
            from palaestra.plugins.tools.mcp_bridge import McpDomain

            _configured_mcp[key] = McpDomain.from_config(table)
        return _configured_mcp[key]
    return _static_domain(env_id, int(config.get("web_seed", 7)))


def _factory(env_id: str, config: Mapping[str, Any]) -> Any:
    def factory(ctx: EnvContext) -> ToolChatEnv:
        return ToolChatEnv(domain_for(env_id, config), ctx)

    return factory


@hookimpl
def palaestra_register_environments(registry: EnvRegistry, config: Mapping[str, Any]) -> None:
    env_ids = list(STATIC_ENVS)
    if importlib.util.find_spec("mcp") is None:  # the `mcp` extra is not installed
        env_ids.remove("tools/mcp-demo")
    if config.get("mcp"):
        env_ids.append("tools/mcp")
    for env_id in env_ids:
        domain = domain_for(env_id, config)
        registry.add(make_spec(env_id, domain, (env_id.split("/")[1],)), _factory(env_id, config))


@hookimpl
def palaestra_scripted_policy(spec: EnvSpec, seed: int | None) -> ScriptedPolicy | None:
    """The reference agent of the tool domains (client side: `palaestra run`, training warm-ups)."""
    if not spec.id.startswith("tools/"):
        return None
    from palaestra.plugins.tools.reference import make_scripted_policy

    return make_scripted_policy(spec.id, seed)
