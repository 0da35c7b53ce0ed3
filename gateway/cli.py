"""`slmgw`: the gateway's command line. Heavy modules are imported inside commands so --help is instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(name="slmgw", help="slm-gateway: route OpenAI-compatible requests between small models "
                  "on vLLM and a hosted LLM.", no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Check routing policy files.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _mount() -> None:
    """Sub-commands owned by other packages; their modules import heavy libraries only when run."""
    from gateway import quality_cli
    from gateway.keys import cli as keys_cli
    from gateway.ledger import cli as ledger_cli
    from gateway.reports import cli as reports_cli
    from router import cli as router_cli
    from serving import cli as serving_cli

    app.add_typer(router_cli.app, name="router")
    app.add_typer(serving_cli.app, name="serving")
    app.add_typer(keys_cli.app, name="keys")
    app.add_typer(ledger_cli.app, name="ledger")
    app.command("report")(reports_cli.report)
    from gateway import policy_cli, route_cli

    app.add_typer(route_cli.app, name="route")
    app.add_typer(policy_cli.app, name="policy")
    app.add_typer(quality_cli.app, name="quality")


_mount()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Routing policy YAML file.")]


def _load(path: Path) -> object:
    """Load, validate and preflight a policy; print every problem and exit 2 if there are any."""
    from gateway.config import PolicyError, load_policy
    from gateway.preflight import preflight

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        _fail(path, exc.errors)
    problems = preflight(policy)
    if problems:
        _fail(path, problems)
    return policy


def _fail(path: Path, problems: list[str]) -> NoReturn:
    typer.echo(f"error: {path}: the policy is invalid:", err=True)
    for line in problems:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(2)


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="Policy file to check.")]) -> None:
    """Validate a policy: print every error with its field path; exit non-zero if there are any."""
    from gateway.config import Policy

    policy = _load(file)
    assert isinstance(policy, Policy)
    typer.echo(f"{file}: OK ({len(policy.domains)} domains, {len(policy.slm_backends)} SLM backends, "
               f"{len(policy.llm_backends)} LLM backends, router {policy.router.kind})")


@config_app.command("reference")
def config_reference() -> None:
    """Print the policy reference (Markdown) generated from the schema."""
    from gateway.config_reference import render

    typer.echo(render(), nl=False)


@app.command()
def serve(
    config: ConfigOpt,
    host: Annotated[str | None, typer.Option(help="Bind address (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the gateway."""
    import uvicorn

    from gateway.config import Policy

    policy = _load(config)
    assert isinstance(policy, Policy)
    bind = host or policy.server.host
    problem = open_gateway_problem(policy, bind)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    os.environ["SLMGW_CONFIG"] = str(config.resolve())
    uvicorn.run("gateway.app:app_from_env", factory=True, host=bind,
                port=port or policy.server.port, workers=workers, log_level=log_level,
                loop="uvloop", http="httptools", access_log=False, server_header=False,
                proxy_headers=False)  # the gateway never reads client addresses: skip the middleware


def open_gateway_problem(policy: Any, host: str) -> str | None:
    """Refuse to serve without client keys on an address others can reach, unless ``auth.open`` says so;
    warn whenever the gateway is open."""
    import ipaddress

    auth = policy.auth
    if auth.api_keys or auth.key_store.enabled:
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    typer.echo(f"warning: no client keys configured: the gateway answers anyone who can reach {host}", err=True)
    if loopback or auth.open:
        return None
    return (f"no client keys are configured (auth.api_keys, auth.key_store) and {host} is not a loopback "
            "address: anyone who can reach it could spend your provider budget. Add keys, bind 127.0.0.1, "
            "or set auth.open: true to serve without keys on purpose.")


@app.command()
def demo(
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="Policy to demo (default: the shipped example).")] = None,
) -> None:
    """Start the gateway against local stand-in upstreams and send example requests through it."""
    from gateway.demo import run_demo

    sys.exit(run_demo(config))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
