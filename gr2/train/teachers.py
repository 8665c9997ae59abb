"""Teachers that write reasoning traces for re-ranking samples: one protocol, two implementations.

* :class:`OpenAITeacher` calls any OpenAI-compatible chat endpoint (vLLM, KServe's OpenAI route, Triton's
  OpenAI frontend) with a targeted prompt, a client-side rate limit, timeouts and retries. A failing
  endpoint raises :class:`TeacherError` for that sample only; the caller counts it and moves on.
* :class:`gr2.train.feature_teacher.FeatureTeacher` is the offline default: a heuristic stand-in for an
  LLM teacher that reads Feast features.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import requests

from gr2.train.config import OpenAITeacherConfig

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


class TeacherError(RuntimeError):
    """The teacher gave no usable trace for one sample (after its retries); the message says why."""


@dataclass
class Trace:
    """One teacher answer: the reasoning, the ranking it ends with, and the answer text to train on."""

    reasoning: str
    ranking: list[int]
    text: str
    valid: bool = True


class Teacher(Protocol):
    """Writes a trace for a sample; ``reveal_target`` tells the teacher the answer (targeted fallback)."""

    name: str

    def propose(self, sample: Mapping[str, Any], temperature: float, reveal_target: bool = False,
                attempt: int = 0) -> Trace: ...


class RateLimiter:
    """At most ``rate`` calls per second across threads (minimum spacing between call starts)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


TEACHER_SYSTEM = (
    "You are an expert recommendation analyst for this catalog. Your task: re-rank the candidate items by how "
    "likely this user is to engage with each one next.\n"
    "Use your domain knowledge of the items (genre, era, audience, reputation, popularity) and of how tastes "
    "evolve over a history.\n"
    "Cite every item by its label exactly as written (its semantic ID when one is shown).\n"
    "Reason in structured steps inside <think>...</think>: Step 1, summarise the user's taste from the full "
    "history; Step 2, assess each candidate against that taste; Step 3, decide the order.\n"
    "Then give the complete ranking of all candidates in exactly the format of this example "
    "(its order is arbitrary):\n{example}"
)
REVEAL_HINT = ("\nFor this trace you are told the user's actual next item: {label}. Rank it first and justify "
               "the order only from evidence in the history and the items.")


def teacher_messages(sample: Mapping[str, Any], items: pd.DataFrame, sid_map: Any,
                     reveal_target: bool = False) -> tuple[list[dict[str, str]], dict[int, str]]:
    """The targeted prompt (role and task, full history and candidates, domain priming, SID citations,
    structured steps and answer) and the candidate labels."""
    from gr2.rerank.format import build_messages, candidate_labels, format_answer

    cands = [int(c) for c in sample["candidates"]]
    labels = dict(zip(cands, candidate_labels(cands, sid_map), strict=True))
    base = build_messages(dict(sample), items, sid_map, style="reasoning")
    example = format_answer(list(reversed(cands)), labels, "Step 1: ... Step 2: ... Step 3: ...")
    system = TEACHER_SYSTEM.format(example=example)
    if reveal_target:
        system += REVEAL_HINT.format(label=labels[int(sample["target"])])
    return [{"role": "system", "content": system}, *(m for m in base if m["role"] != "system")], labels


class OpenAITeacher:
    """A teacher behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"
    RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(self, cfg: OpenAITeacherConfig, items: pd.DataFrame, sid_map: Any = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg, self.items, self.sid_map = cfg, items, sid_map
        self.session = session or requests.Session()
        self.limiter = RateLimiter(cfg.requests_per_second, sleep=sleep)
        self._sleep = sleep
        self.stats: Counter[str] = Counter()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def complete(self, messages: list[dict[str, str]], temperature: float) -> str:
        """The assistant text for ``messages``, retrying timeouts, 429/5xx and malformed bodies."""
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        body = {"model": self.cfg.model, "messages": messages, "temperature": temperature,
                "max_tokens": self.cfg.max_tokens}
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
                self._sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            self.limiter.wait()
            self.stats["requests"] += 1
            try:
                resp = self.session.post(url, json=body, headers=self._headers(), timeout=self.cfg.timeout_s)
            except requests.Timeout:
                last = f"timeout after {self.cfg.timeout_s}s"
                self.stats["timeouts"] += 1
                continue
            except requests.ConnectionError as err:
                last = f"connection error: {err}"
                self.stats["connection_errors"] += 1
                continue
            if resp.status_code != 200:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                self.stats[f"http_{resp.status_code}"] += 1
                if resp.status_code in self.RETRY_STATUS:
                    continue
                raise TeacherError(f"{url}: {last}")
            try:
                content = resp.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"malformed response body: {resp.text[:200]!r}"
                self.stats["bad_json"] += 1
                continue
            if not isinstance(content, str) or not content.strip():
                last = "empty completion"
                self.stats["empty"] += 1
                continue
            return content
        raise TeacherError(f"{url}: gave up after {self.cfg.max_retries + 1} attempt(s); last error: {last}")

    def propose(self, sample: Mapping[str, Any], temperature: float, reveal_target: bool = False,
                attempt: int = 0) -> Trace:
        """Ask the endpoint for a trace; an answer whose ranking cannot be read counts as a failed try."""
        from gr2.rerank.format import format_answer, parse_ranking

        messages, labels = teacher_messages(sample, self.items, self.sid_map, reveal_target)
        content = self.complete(messages, temperature)
        cands = [int(c) for c in sample["candidates"]]
        parsed = parse_ranking(content, cands, [labels[c] for c in cands])
        match = _THINK.search(content)
        reasoning = (match.group(1) if match else content.split("</think>")[0]).strip()
        if not parsed.valid:
            self.stats["unparsable"] += 1
        ranking = [int(i) for i in parsed.ranking]
        return Trace(reasoning=reasoning, ranking=ranking, text=format_answer(ranking, labels, reasoning),
                     valid=bool(parsed.valid))
