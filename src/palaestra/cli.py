"""The `palaestra` command: serve environments, list them, and run episodes against them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Column, Table

import palaestra
from palaestra import types as t
from palaestra.agents.client import Client, PalaestraError
from palaestra.agents.evaluate import add_eval_arguments, parse_options, run_eval_command
from palaestra.agents.policies import NoScriptedPolicy, make_policy, renderer
from palaestra.agents.train_cli import add_train_subcommands
from palaestra.cluster.cli import add_cluster_subcommands
from palaestra.pluginmanager import PluginError, Plugins, client_plugins
from palaestra.server.config import ConfigError, ServerConfig, load_config
from palaestra.store.cli import add_store_subcommands

DEFAULT_STORE = "palaestra-trajectories.sqlite"  # where `palaestra serve` records episodes by default

# Piped output (CI logs, files) gets a readable width instead of the 80-column default.
console = Console(width=None if sys.stdout.isatty() else 140)


class UsageError(Exception):
    """Flags that do not go together (e.g. --port for the embedded server, which would ignore it)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early = _early_flags(argv)
    logging.basicConfig(
        level=getattr(logging, early.log_level.upper()), format="%(asctime)s %(name)s %(message)s"
    )
    try:
        plugins = _client_plugins(early)
    except (PluginError, ConfigError) as exc:
        console.print(f"[red]plugin error:[/red] {escape(str(exc))}")
        return 2
    parser = build_parser(plugins)
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        result: int = args.handler(args)
        return result
    except (ConfigError, PluginError) as exc:
        console.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        return 2
    except (UsageError, NoScriptedPolicy) as exc:
        console.print(f"[red]usage error:[/red] {escape(str(exc))}")
        return 2
    except PalaestraError as exc:
        console.print(f"[red]server refused:[/red] {escape(str(exc))}")
        return 1


def _early_flags(argv: Sequence[str]) -> argparse.Namespace:
    """The flags needed before the parser exists: logging, and which plugins contribute to it."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    early.add_argument("--config")
    early.add_argument("--plugin", action="append", default=[])
    early.add_argument("--disable-plugin", action="append", default=[])
    return early.parse_known_args(argv)[0]


def _client_plugins(early: argparse.Namespace) -> Plugins:
    """The client-side plugin hooks (subcommands, scripted agents, text drawings) of every installed
    plugin and of the --plugin / [plugins] modules, honouring disabled plugins."""
    modules, disabled = list(early.plugin), list(early.disable_plugin)
    if early.config:
        config = load_config(early.config)
        modules += config.plugin_modules
        disabled += config.disabled_plugins
    return client_plugins(modules, disabled)


def build_parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """The `palaestra` parser: the built-in commands plus those the plugins add (`palaestra_cli_commands`)."""
    plugins = plugins if plugins is not None else client_plugins()
    parser = argparse.ArgumentParser(prog="palaestra", description=palaestra.__doc__)
    parser.set_defaults(plugins=plugins)
    parser.add_argument("--version", action="version", version=f"palaestra {palaestra.__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    # Also accepted before any command (e.g. for a plugin's own subcommand): `palaestra --plugin M cmd`.
    parser.add_argument("--plugin", dest="global_plugin", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument(
        "--disable-plugin", dest="global_disable_plugin", action="append", default=[], help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the environment server")
    _server_flags(serve)
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--max-message-mb", type=int, help="transport limit per message (default 64)")
    serve.add_argument("--grace", type=float, dest="grace_s", help="drain time on SIGTERM, s (default 120)")
    serve.add_argument(
        "--no-store", action="store_true", help=f"record no episodes (default: to {DEFAULT_STORE})"
    )
    serve.set_defaults(handler=cmd_serve)

    envs = commands.add_parser("envs", help="list environments")
    _target_flags(envs)
    envs.add_argument("--tag", action="append", default=[], help="only environments with this tag")
    envs.set_defaults(handler=cmd_envs)

    plugins_command = commands.add_parser("plugins", help="list plugins: loaded, unavailable and failed")
    _target_flags(plugins_command)
    plugins_command.set_defaults(handler=cmd_plugins)

    run = commands.add_parser("run", help="run episodes with a scripted or random agent and show the results")
    run.add_argument("env_id")
    run.add_argument("--episodes", type=int, default=4)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--policy", choices=["auto", "scripted", "random"], default="auto")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an open option")
    run.add_argument("--transcript", type=int, default=1, help="print the messages of this many episodes")
    _target_flags(run)
    run.set_defaults(handler=cmd_run)

    evaluate = commands.add_parser(
        "eval", help="evaluate a model (an OpenAI-compatible server, or vLLM in-process) on environments"
    )
    add_eval_arguments(evaluate)
    _target_flags(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    sandbox = commands.add_parser("sandbox", help="sandbox images")
    sandbox_commands = sandbox.add_subparsers(title="sandbox commands")
    build = sandbox_commands.add_parser("build", help="build the sandbox profile images")
    build.add_argument("--profile", action="append", default=None, help="only this profile (repeatable)")
    build.add_argument(
        "--source",
        choices=["auto", "dockerfile", "debootstrap"],
        default="auto",
        help="dockerfile needs a registry; debootstrap + docker import works offline; auto tries both",
    )
    build.add_argument("--force", action="store_true", help="rebuild images that exist")
    build.set_defaults(handler=cmd_sandbox_build)

    add_train_subcommands(commands, _serve_for_run)
    add_store_subcommands(commands)
    add_cluster_subcommands(commands)
    plugins.hook.palaestra_cli_commands(commands=commands)
    return parser


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--max-episodes", type=int)
    parser.add_argument("--auth-token")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--plugin", action="append", default=[], help="extra plugin module (repeatable)")
    parser.add_argument("--disable-plugin", action="append", default=[], help="plugin to skip (repeatable)")
    parser.add_argument("--store", help="record finished episodes in this SQLite file ([store] path)")
    parser.add_argument("--dashboard-port", type=int, help="serve the web dashboard on this port (0: any)")


def _target_flags(parser: argparse.ArgumentParser) -> None:
    add_client_flags(parser)
    _server_flags(parser)


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that talks to a server: one vocabulary across the CLI."""
    parser.add_argument(
        "--address",
        help="a running server host:port; several replicas host:port,host:port; or the replicas of a cluster "
        "directory:NAME (docs/deployment.md). Default: start an embedded server",
    )
    parser.add_argument("--token", help="bearer token for the server at --address")
    parser.add_argument("--tls-ca", help="PEM root certificate: connect to --address over TLS")


# Flags that configure the embedded server: with --address there is no embedded server to configure.
EMBEDDED_ONLY = ("config", "max_episodes", "auth_token", "metrics_port")


def check_target_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would be silently ignored."""
    if getattr(args, "host", None) is not None or getattr(args, "port", None) is not None:
        raise UsageError(
            "--host/--port apply to `palaestra serve`; the embedded server listens on a free loopback "
            "port. To use a server on a chosen port, start `palaestra serve --port N` and pass --address."
        )
    if args.address:
        given = [f"--{name.replace('_', '-')}" for name in EMBEDDED_ONLY if getattr(args, name, None)]
        if given:
            raise UsageError(f"{', '.join(given)} configure the embedded server, which --address replaces")
    elif args.token or args.tls_ca:
        raise UsageError("--token and --tls-ca are for a server at --address (embedded: --auth-token)")


def _config_from(args: argparse.Namespace) -> ServerConfig:
    overrides = {
        "host": args.host,
        "port": args.port,
        "max_episodes": args.max_episodes,
        "auth_token": args.auth_token,
        "metrics_port": args.metrics_port,
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
        "max_message_mb": getattr(args, "max_message_mb", None),
        "grace_s": getattr(args, "grace_s", None),
    }
    config = load_config(args.config, overrides)
    config.plugin_modules.extend([*args.global_plugin, *args.plugin])
    config.disabled_plugins.extend([*args.global_disable_plugin, *args.disable_plugin])
    if args.store:
        config.store["path"] = args.store
    if args.dashboard_port is not None:
        config.dashboard.update(enabled=True, port=args.dashboard_port)
    return config


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """A client for --address, or for an embedded server started for this command."""
    check_target_flags(args)
    if args.address:
        with Client(args.address, token=args.token, tls_root_cert=args.tls_ca) as client:
            yield client
        return
    from palaestra.server.app import ServerThread

    config = _config_from(args)
    config.port = 0  # a free port on loopback: the embedded server is this command's alone
    config.host = "127.0.0.1"
    with ServerThread(config) as server, Client(server.address, token=config.auth_token or None) as client:
        yield client


@contextlib.contextmanager
def _serve_for_run(record: Mapping[str, Any] | None) -> Iterator[str]:
    """The in-process server of a `palaestra train` run without --address (imported only when one starts)."""
    from palaestra.server.app import serve_for_run

    with serve_for_run(record) as address:
        yield address


# ---------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    from palaestra.server.app import serve

    config = _config_from(args)
    if not args.no_store:
        config.store.setdefault("path", DEFAULT_STORE)
    console.print(f"palaestra {palaestra.__version__} serving on {config.address}")
    if config.store.get("path"):
        console.print(f"recording episodes to {config.store['path']}")
    if config.dashboard.get("enabled") and config.dashboard.get("port", 8080):
        dashboard_host = config.dashboard.get("host", "127.0.0.1")
        console.print(f"dashboard on http://{dashboard_host}:{config.dashboard.get('port', 8080)}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    check_target_flags(args)
    if args.address:
        return run_eval_command(args, args.address, args.token, args.tls_ca)
    from palaestra.server.app import ServerThread

    config = _config_from(args)
    config.port = 0  # a free port on loopback: the embedded server is this command's alone
    config.host = "127.0.0.1"
    if config.store.get("path"):  # --store: every episode of this server is this evaluation's
        model = args.model or (str(args.vllm) if args.vllm else "")
        config.store.setdefault("run", {"kind": "eval", "model": model, "tags": {"envs": args.env_ids}})
    with ServerThread(config) as server:
        return run_eval_command(args, server.address, config.auth_token or None)


def cmd_envs(args: argparse.Namespace) -> int:
    with connect(args) as client:
        specs = client.list_envs(args.tag)
    table = Table(
        Column("id", no_wrap=True),  # ids are what users copy: never cut short
        "kind",
        "agents",
        "rewards (kind, range)",
        "options",
        "isolation",
        "plugin",
        "description",
    )
    for spec in specs:
        rewards = ", ".join(f"{c.name} ({c.kind.name.lower()}{_range(c)})" for c in spec.reward_components)
        options = ", ".join(sorted((spec.options_schema or {}).get("properties", {}))) or (
            "-" if spec.options_schema is not None else "(not declared)"
        )
        table.add_row(
            spec.id,
            spec.kind.name.lower(),
            ",".join(spec.agents),
            rewards,
            options,
            escape(spec.isolation),
            spec.plugin,
            spec.description,
        )
    console.print(table)
    console.print(_env_counts(specs))
    return 0


def _env_counts(specs: list[t.EnvSpec]) -> str:
    """How many environments are listed, per family (the id before its first '/') and per plugin."""
    families = Counter(spec.id.split("/")[0] for spec in specs)
    plugins = Counter(spec.plugin or "-" for spec in specs)

    def counted(counter: Counter[str]) -> str:
        return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))

    return (
        f"{len(specs)} environments listed. Per family: {counted(families)}. Per plugin: {counted(plugins)}. "
        "Ids a plugin resolves on first use (gym/, pettingzoo/, rg/, ta/ ...) are listed once opened."
    )


def _range(component: t.RewardComponentSpec) -> str:
    if component.low is None and component.high is None:
        return ""
    low = "-inf" if component.low is None else f"{component.low:g}"
    high = "inf" if component.high is None else f"{component.high:g}"
    return f" {low}..{high}"


def cmd_plugins(args: argparse.Namespace) -> int:
    """The server's plugins, with the unavailable and failed ones and why; exit 1 if any failed."""
    from palaestra.v1 import catalog_pb2

    with connect(args) as client:
        info = client.server_info()
    table = Table("plugin", "version", "state", "environments", "error")
    for plugin in info.plugins:
        state = catalog_pb2.PluginState.Name(plugin.state).removeprefix("PLUGIN_STATE_").lower()
        colour = {"loaded": "green", "unavailable": "yellow"}.get(state, "red")
        table.add_row(
            plugin.name,
            plugin.version,
            f"[{colour}]{state}[/{colour}]",
            str(len(plugin.environments)),
            escape(plugin.error),
        )
    console.print(f"protocol {info.protocol_version}, server {info.server_version}")
    console.print(table)
    return 1 if any(p.state == catalog_pb2.PLUGIN_STATE_FAILED for p in info.plugins) else 0


def cmd_sandbox_build(args: argparse.Namespace) -> int:
    from palaestra.sandbox.images import build_images

    for profile, tag in build_images(args.profile, source=args.source, force=args.force).items():
        console.print(f"{profile}: {tag}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    options = parse_options(args.option)
    with connect(args) as client:
        spec = client.describe(args.env_id)
        summaries: list[t.EpisodeSummary] = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{args.env_id}", total=args.episodes)
            for index in range(args.episodes):
                show = index < args.transcript
                summaries.append(
                    run_episode(client, spec, args.seed + index, options, args.policy, show, args.plugins)
                )
                progress.advance(task)
    console.print(results_table(args.env_id, summaries))
    return 0 if all(s.infra_failure is None for s in summaries) else 1


def run_episode(
    client: Client,
    spec: t.EnvSpec,
    seed: int,
    options: dict[str, Any],
    policy_kind: str,
    show: bool,
    plugins: Plugins,
) -> t.EpisodeSummary:
    policy_name, policy = make_policy(spec, seed, policy_kind, plugins)
    [step] = client.open(spec.id, seed=seed, options=options)
    render = renderer(plugins, spec)
    if show:
        console.rule(f"{spec.id} seed {seed} - {policy_name} agent")
        show_step(step, render)
    cap = spec.max_episode_steps or 10_000
    while not step.done and step.step_index < cap:
        actions = policy(step)
        if show:
            for agent, action in actions.items():
                console.print(f"[bold cyan]{agent} >[/bold cyan] {escape(describe_action(action))}")
        step = client.step(step.episode_id, actions)
        if show:
            show_step(step, render)
    [summary] = client.close(step.episode_id)
    return summary


def describe_action(action: t.Action) -> str:
    if action.message is not None:
        calls = "".join(f"\n  -> {c.name}({c.arguments})" for c in action.message.tool_calls)
        return action.message.content + calls
    if action.tensor is not None:
        return str(action.tensor.tolist())
    return str(action.text if action.text is not None else action.discrete)


def show_step(step: t.EpisodeStep, render: Callable[[t.Observation], str | None] | None = None) -> None:
    for agent, result in step.agents.items():
        for message in result.observation.messages:
            console.print(f"[dim]{message.role}[/dim] {escape(message.content)}")
        if render is not None and result.observation.tensor is not None and not result.observation.messages:
            drawing = render(result.observation)
            if drawing is not None:
                console.print(f"[dim]{agent} sees[/dim]\n{escape(drawing)}")
        if result.components:
            parts = ", ".join(
                f"{c.name}={c.value:g}"
                + ("" if c.status is t.ComponentStatus.OK else f" \\[{c.status.name.lower()}]")
                for c in result.components
            )
            console.print(f"[green]{agent} reward {result.scalar_reward:+.3f}[/green] ({parts})")
        for item in result.checklist:
            mark = "[green]x[/green]" if item.passed else " "
            console.print(f"  \\[{mark}] {item.item_id} (w={item.weight:g}) {escape(item.reason)}")
    if step.infra_failure is not None:
        console.print(
            f"[red]infrastructure failure ({step.infra_failure.source}): {step.infra_failure.message}[/red]"
        )


def results_table(env_id: str, summaries: list[t.EpisodeSummary]) -> Table:
    table = Table(
        "episode", "agent", "return", "steps", "end", "components", "seconds", title=f"{env_id} results"
    )
    for number, summary in enumerate(summaries):
        end = (
            "infra failure"
            if summary.infra_failure
            else ("terminated" if summary.terminated else "truncated")
        )
        for agent in summary.agents or [t.AgentSummary("-", 0.0, [])]:
            components = ", ".join(f"{c.name}={c.total:g}" for c in agent.components)
            table.add_row(
                str(number),
                agent.agent,
                f"{agent.episode_return:.3f}",
                str(summary.steps),
                end,
                components,
                f"{summary.wall_seconds:.2f}",
            )
    return table


if __name__ == "__main__":
    sys.exit(main())
