"""Example prompts written for this project (not taken from any dataset), the demo router model and the
general background.

``train.jsonl`` (plain, instruction-like, generated) and ``train_chat.jsonl`` / ``train_general.jsonl`` /
``train_code.jsonl`` (chat-style, written by hand) join the public corpora in the starter recipe
(``router.starter``) that trains ``demo-router.npz``; ``eval.jsonl`` is a differently-styled evaluation set
for the benchmark; ``background.npz`` holds the general background (``router.background``: derived
features, no texts). All are written by ``python -m router.examples.build`` (the jsonl files from the
templates in ``router/examples/build.py``).
"""

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
TRAIN_FILE = EXAMPLES_DIR / "train.jsonl"
EVAL_FILE = EXAMPLES_DIR / "eval.jsonl"
CHAT_FILE = EXAMPLES_DIR / "train_chat.jsonl"
GENERAL_FILE = EXAMPLES_DIR / "train_general.jsonl"
DEMO_MODEL = EXAMPLES_DIR / "demo-router.npz"
