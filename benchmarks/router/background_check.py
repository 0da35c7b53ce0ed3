"""Does the shipped general background give in-domain-only training a general detector?

    .venv/bin/python -m benchmarks.router.background_check

The user of the issue: only in-domain examples (here the project's hand-written sql and support chat
prompts, ``train_chat.jsonl``). Trained without the background, the model knows no ``general`` label,
so every request goes to an SLM. Trained with it (what ``slmgw router train`` does by default), then
calibrated without general examples (``calibrate`` then measures leakage on the background's held-out
sources), it is evaluated on general prompts from sources the background never held: the project's
``train_general.jsonl`` and ``eval.jsonl`` general prompts and, if the data is present,
InstructionWild (non-commercial, evaluation only); and on sql/support prompts of public sources.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from router import background, corpora, starter  # noqa: E402
from router.calibrate import calibrate  # noqa: E402
from router.data import read_examples  # noqa: E402
from router.examples import CHAT_FILE, EVAL_FILE, GENERAL_FILE  # noqa: E402
from router.metrics import route  # noqa: E402
from router.model import RouterModel, train  # noqa: E402


def background_probs(model: RouterModel, bg: background.Background) -> np.ndarray:
    rows = background.rows_for(bg.calibration_rows(), bg, model.featurizer)  # type: ignore[arg-type]
    z = np.asarray(rows @ model.coef.T) + model.intercept
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), dtype=np.float32)


def main() -> int:
    texts, labels = read_examples([CHAT_FILE])
    dom = [(t, lab) for t, lab in zip(texts, labels, strict=True) if lab in ("sql", "support")]
    fit_part = [d for i, d in enumerate(dom) if i % 10 < 7]  # 70% trains, 30% calibrates
    cal_part = [d for i, d in enumerate(dom) if i % 10 >= 7]
    bg = background.load()
    model = train([t for t, _ in fit_part], [lab for _, lab in fit_part], background=bg)
    probs = np.vstack([model.predict_proba([t for t, _ in cal_part]), background_probs(model, bg)])
    true = [lab for _, lab in cal_part] + ["general"] * (len(probs) - len(cal_part))
    thr, got = calibrate(probs, true, model.labels, starter.MAX_LEAKAGE)
    print(f"trained on {len(fit_part)} sql/support chat prompts + {model.manifest['training']['background_rows']} "
          f"background rows; thresholds from {len(cal_part)} held-out chat prompts and "
          f"{len(probs) - len(cal_part)} held-out background rows (as `calibrate` does without general data): "
          + ", ".join(f"{k}={v:.2f}" for k, v in thr.items())
          + f" (there: coverage {got['coverage']:.1%}, leakage {got['leakage']:.1%})")
    sets: list[tuple[str, list[str], list[str]]] = []
    gt, gl = read_examples([GENERAL_FILE])
    sets.append(("train_general.jsonl", [t for t, lab in zip(gt, gl, strict=True) if lab == "general"], []))
    et, el = read_examples([EVAL_FILE])
    sets.append(("eval.jsonl general", [t for t, lab in zip(et, el, strict=True) if lab == "general"], []))
    sets.append(("eval.jsonl sql+support", [t for t, lab in zip(et, el, strict=True) if lab in ("sql", "support")],
                 [lab for lab in el if lab in ("sql", "support")]))
    root = starter.data_dir()
    if root.is_dir():
        pool = corpora.load(root, cap=500, include_nc=True)
        sets.append(("instruction_wild (general)", [e.text for e in pool if e.source == "instruction_wild"], []))
        for src in ("kaggledbqa", "sede", "staqc_sql", "bitext", "hint3", "banking77+clinc_banking"):
            ex = [e for e in pool if e.source == src]
            sets.append((src, [e.text for e in ex], [e.label for e in ex]))
    print(f"{'set':<28} {'n':>5} {'to an SLM':>10} {'coverage':>9}")
    for name, xs, ys in sets:
        r = route(model.predict_proba(xs), model.labels, thr)
        pred = np.asarray(model.labels)[r.pred]
        if ys:
            cov = float((r.slm & (pred == np.asarray(ys))).mean())
            print(f"{name:<28} {len(xs):>5} {r.slm.mean():>10.1%} {cov:>9.1%}")
        else:
            print(f"{name:<28} {len(xs):>5} {r.slm.mean():>10.1%} {'(leakage)':>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
