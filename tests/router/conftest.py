"""Shared fixtures: a router model really trained on the project's example prompts (once per session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Policy, parse_policy
from router.data import read_examples
from router.examples import TRAIN_FILE
from router.model import RouterModel, train

DOMAINS = ("sql", "code", "support", "math")


def make_policy(model_path: Path | str, domains: dict[str, float | None] | None = None,
                threshold: float = 0.5, context_length: int = 4096, max_chars: int = 4000) -> Policy:
    doms = domains if domains is not None else dict.fromkeys(DOMAINS)
    raw: dict[str, Any] = {
        "slm_backends": {"vllm": {"base_url": "http://127.0.0.1:9/v1", "model": "base",
                                  "context_length": context_length}},
        "llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}},
        "domains": [{"name": d, "backend": "vllm", **({"threshold": t} if t is not None else {})}
                    for d, t in doms.items()],
        "router": {"kind": "classifier", "model_path": str(model_path), "threshold": threshold,
                   "max_chars": max_chars},
        "fallback": {"llm": "llm"},
    }
    return parse_policy(raw, "<test>", "/")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RouterModel, Path]:
    texts, labels = read_examples([TRAIN_FILE])
    model = train(texts, labels)
    path = model.save(tmp_path_factory.mktemp("router") / "model.npz")
    return model, path


@pytest.fixture
def model_path(trained: tuple[RouterModel, Path], tmp_path: Path) -> Path:
    """A private copy of the trained model file (tests may damage it)."""
    dest = tmp_path / "model.npz"
    dest.write_bytes(trained[1].read_bytes())
    return dest
