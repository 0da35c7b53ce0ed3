"""Sensitive-data rule: find personal data in a request and keep it in-house or mask it.

Detectors are regular expressions with an optional checksum, so a random 16-digit number is not taken
for a card: ``card`` needs the Luhn check, ``iban`` the ISO 13616 mod-97 check. ``privacy.patterns``
adds your own; ``privacy.presidio`` adds Microsoft Presidio's analyzer (the ``privacy`` extra).

Actions (``privacy.action``):

- ``keep_local``: the request may only go to in-house SLMs. Its hosted-LLM fallbacks are removed; a
  request the router sent to the LLM goes to ``privacy.local_backend`` instead, or is refused. If the
  SLM fails, the client gets 503 saying why, never a silent escalation to a hosted LLM.
- ``mask``: every match is replaced by ``[NAME]`` (e.g. ``[EMAIL]``) in the text sent to any backend.

Either way the decision's reason starts with ``privacy:<action>[<kinds>]`` (so it is in the
``x-slmgw-reason`` header and the ledger's ``reason`` column) and the ledger row's ``extra.privacy``
names the kinds found.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.errors import NoBackendAvailable

if TYPE_CHECKING:
    from gateway.config import Policy
    from gateway.records import RequestRecord
    from router.base import Decision
    from serving.dispatch import Target


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = re.sub(r"\s", "", text).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


_DATE = re.compile(r"\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./ ]\d{1,2}[-./ ]\d{2,4}")


def _phone(match: str) -> bool:
    if _DATE.fullmatch(match):
        return False  # 2024-01-15, 15.01.2024: dates, not phone numbers
    digits = re.sub(r"\D", "", match)
    separators = len(re.findall(r"[ .()-]", match))
    return 8 <= len(digits) <= 15 and (match.startswith(("+", "(")) or separators >= 2)


_BUILTIN: dict[str, tuple[str, Callable[[str], bool] | None]] = {
    "email": (r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}"
              r"(?![\w-])", None),
    "phone": (r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,5}(?![\w-]|[.-]\d)",
              _phone),
    "card": (r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", _card),
    "iban": (r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])", iban_ok),
}
_CHECKS: dict[str, Callable[[str], bool] | None] = {"none": None, "luhn": _card, "iban": iban_ok}


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    regex: re.Pattern[str]
    check: Callable[[str], bool] | None = None

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        for m in self.regex.finditer(text):
            if self.check is None or self.check(m.group(0)):
                yield m.start(), m.end()


def _strings(obj: Any) -> Iterator[str]:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _map_strings(obj: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_strings(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_strings(v, fn) for v in obj]
    return obj


_FIELDS = ("messages", "prompt", "input")
"""The parts of a request body holding user text (a message's content, tool calls, names)."""


class Privacy:
    def __init__(self, policy: Policy) -> None:
        cfg = policy.privacy
        self.action = cfg.action
        self.local_backend = cfg.local_backend
        self.max_chars = cfg.max_chars
        self.detectors = [Detector(n, re.compile(_BUILTIN[n][0]), _BUILTIN[n][1]) for n in cfg.detectors]
        self.detectors += [Detector(p.name, re.compile(p.regex), _CHECKS[p.check]) for p in cfg.patterns]
        self._presidio: Any = None
        if cfg.presidio:
            try:
                from presidio_analyzer import AnalyzerEngine
            except ImportError as exc:
                raise RuntimeError("privacy.presidio needs the `privacy` extra: pip install "
                                   "'slm-gateway[privacy]'") from exc
            self._presidio = AnalyzerEngine()

    # -- detection --------------------------------------------------------------------------------
    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, kind) spans, earliest and longest first."""
        found = [(s, e, d.name) for d in self.detectors for s, e in d.spans(text)]
        if self._presidio is not None:
            found += [(r.start, r.end, r.entity_type) for r in self._presidio.analyze(text=text, language="en")]
        found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
        out: list[tuple[int, int, str]] = []
        for span in found:
            if not out or span[0] >= out[-1][1]:
                out.append(span)
        return out

    def kinds(self, body: dict[str, Any]) -> list[str]:
        kinds: set[str] = set()
        budget = self.max_chars
        for field in _FIELDS:
            for text in _strings(body.get(field)):
                if budget <= 0:
                    return sorted(kinds | {"unscanned"})
                kinds.update(k for _, _, k in self.find(text[:budget]))
                budget -= len(text)
        return sorted(kinds)

    def mask_text(self, text: str) -> str:
        spans = self.find(text)
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for start, end, kind in spans:
            parts.append(text[pos:start])
            parts.append(f"[{kind.upper()}]")
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def mask(self, body: dict[str, Any]) -> dict[str, Any]:
        out = copy.copy(body)
        for field in _FIELDS:
            if field in out:
                out[field] = _map_strings(out[field], self.mask_text)
        return out

    # -- the pipeline's hook ----------------------------------------------------------------------
    def apply(self, body: dict[str, Any], decision: Decision, targets: list[Target],
              rec: RequestRecord) -> tuple[Decision, list[Target], dict[str, Any]]:
        """The decision, targets and body to use for this request under the privacy rule."""
        if self.action == "off":
            return decision, targets, body
        kinds = self.kinds(body)
        if not kinds:
            return decision, targets, body
        label = f"privacy:{self.action}[{','.join(kinds)}]"
        rec.extra["privacy"] = ",".join(kinds)
        if self.action == "mask":
            return replace(decision, reason=f"{label} {decision.reason}"), targets, self.mask(body)
        from serving.dispatch import Target

        local = [t for t in targets if t.route == "slm"]
        if not local and self.local_backend:
            local = [Target("slm", self.local_backend)]
        if not local:
            rec.reason = f"{label} {decision.reason}"
            raise NoBackendAvailable(
                f"The request contains sensitive data ({', '.join(kinds)}). The gateway's privacy policy keeps "
                "such requests on in-house models, and no in-house model serves this request, so it was not "
                "sent to a hosted LLM.", code="sensitive_data_kept_local", headers={"x-slmgw-reason": label})
        return replace(decision, target="slm", reason=f"{label} {decision.reason}"), local, body

    def explain_failure(self, exc: NoBackendAvailable, rec: RequestRecord) -> None:
        """Say why a keep_local request was not escalated when its SLM failed."""
        kinds = rec.extra.get("privacy")
        if self.action != "keep_local" or kinds is None or exc.code == "sensitive_data_kept_local":
            return
        exc.message = (f"The request contains sensitive data ({kinds.replace(',', ', ')}) and the privacy policy "
                       f"keeps it on in-house models, which failed; it was not sent to a hosted LLM. {exc.message}")
        exc.code = "sensitive_data_kept_local"
        exc.headers = {**exc.headers, "x-slmgw-reason": f"privacy:keep_local[{kinds}]"}
