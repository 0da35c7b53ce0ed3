"""`slmgw route explain`: why a prompt (or a request body) would go where it goes under a policy file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Explain routing decisions.", no_args_is_help=True)


@app.command("explain")
def explain_cmd(
    prompt: Annotated[str | None, typer.Argument(help="A user message (or use --body).")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Policy file.")] = Path("policy.yaml"),
    body: Annotated[str | None, typer.Option("--body", help="A JSON request body, as a client sends it "
                                                            "(a file path or the JSON itself).")] = None,
    model: Annotated[str, typer.Option(help="The model the client asks for.")] = "auto",
) -> None:
    """Print the full decision as JSON: target, domain, reason, scores, the words that pushed it, the
    threshold, every escalation check and the targets in order (offline: no SLM health, no cache)."""
    from gateway.app import build_services
    from gateway.config import PolicyError, load_policy
    from gateway.errors import GatewayError
    from gateway.explain import explain
    from gateway.policy_version import model_digest, policy_version

    if (prompt is None) == (body is None):
        typer.echo("error: give a prompt or --body (not both)", err=True)
        raise typer.Exit(2)
    try:
        request: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]} \
            if prompt is not None else _body(body or "")
        policy = load_policy(config)
        services = build_services(policy)
        services.version = policy_version(policy, model_digest(policy))
        out = asyncio.run(explain(services, request, live=False))
    except PolicyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (GatewayError, ValueError, OSError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(out, indent=2))


def _body(value: str) -> dict[str, Any]:
    text = Path(value).read_text(encoding="utf-8") if not value.lstrip().startswith("{") else value
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("--body must be a JSON object")
    return data
