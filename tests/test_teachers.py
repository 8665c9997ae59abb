"""Teachers: the OpenAI-compatible client against a local stub server, and the feature-grounded teacher."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from gr2.rerank.format import candidate_labels, format_answer
from gr2.sid.sidmap import SIDMap
from gr2.train.config import OpenAITeacherConfig, TracesConfig
from gr2.train.feature_teacher import Cooccurrence, FeatureTeacher, ItemFeatures
from gr2.train.teachers import OpenAITeacher, RateLimiter, TeacherError, teacher_messages
from gr2.train.traces import acceptance_stats, trace_sample

ITEMS = pd.DataFrame({
    "item_id": np.arange(1, 13, dtype="int64"),
    "title": [f"Item {i}" for i in range(1, 13)],
    "categories": ["Drama|War", "Comedy", "Drama", "Horror", "Comedy|Drama", "War", "Drama", "Horror", "Comedy",
                   "Drama|Comedy", "War", "Horror"],
})
SID_MAP = SIDMap(np.arange(1, 13), np.array([[i % 4, i // 4, i % 3] for i in range(12)]), 4)
SAMPLE = {"sample_id": "train-u1-p9", "user_id": 1, "timestamp": 100, "history": [1, 3, 7, 2, 5],
          "candidates": [9, 10, 4, 11, 12], "target": 10, "target_position": 1, "protocol": "legacy"}


def _answer(ranking: list[int]) -> str:
    cands = SAMPLE["candidates"]
    labels = dict(zip(cands, candidate_labels(cands, SID_MAP), strict=True))
    return format_answer(ranking, labels, "Step 1: drama fan. Step 2: ... Step 3: decide.")


class Stub:
    """A local OpenAI-compatible server that plays a script of behaviours, one per request."""

    def __init__(self, script: list[str]) -> None:
        self.script, self.bodies = list(script), []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                action = stub.script.pop(0) if stub.script else "good"
                try:
                    if action == "slow":
                        time.sleep(1.0)
                        self._send(200, {"choices": [{"message": {"content": _answer([10, 9, 4, 11, 12])}}]})
                    elif action == "good":
                        self._send(200, {"choices": [{"message": {"role": "assistant",
                                                                  "content": _answer([10, 9, 4, 11, 12])}}]})
                    elif action == "wrong":
                        self._send(200, {"choices": [{"message": {"content": _answer([9, 10, 4, 11, 12])}}]})
                    elif action == "bad_json":
                        self._send(200, b"{not json")
                    elif action == "no_choices":
                        self._send(200, {"error": "nothing"})
                    elif action == "garbage":
                        self._send(200, {"choices": [{"message": {"content": "I cannot rank these."}}]})
                    else:
                        self._send(int(action), {"error": action})
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def _send(self, status: int, payload: object) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def _teacher(stub: Stub, **overrides) -> tuple[OpenAITeacher, list[float]]:
    sleeps: list[float] = []
    settings = {"base_url": stub.url, "model": "stub", "timeout_s": 0.3, "max_retries": 3, "backoff_s": 0.5,
                "requests_per_second": 1000, **overrides}
    cfg = OpenAITeacherConfig(**settings)
    return OpenAITeacher(cfg, ITEMS, SID_MAP, sleep=sleeps.append), sleeps


def test_good_answer_is_parsed_into_a_trace_with_the_targeted_prompt(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with Stub(["good"]) as stub:
        teacher, _ = _teacher(stub)
        trace = teacher.propose(SAMPLE, temperature=0.7)
    assert trace.valid and trace.ranking == [10, 9, 4, 11, 12]
    assert trace.reasoning.startswith("Step 1") and trace.text.startswith("<think>")
    sent = stub.bodies[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "stub" and sent["body"]["temperature"] == 0.7
    system, user = sent["body"]["messages"][0]["content"], sent["body"]["messages"][-1]["content"]
    assert "domain knowledge" in system and "Step 1" in system and "<think>" in system
    assert SID_MAP.token_string(1) in user and SID_MAP.token_string(12) in user  # full history and candidates
    assert "actual next item" not in system


def test_reveal_target_puts_the_answer_in_the_prompt() -> None:
    messages, labels = teacher_messages(SAMPLE, ITEMS, SID_MAP, reveal_target=True)
    assert f"actual next item: {labels[10]}" in messages[0]["content"]


@pytest.mark.parametrize("failure", ["bad_json", "no_choices", "500", "503", "429", "slow"])
def test_transient_failures_are_retried_with_backoff(failure: str) -> None:
    with Stub([failure, failure, "good"]) as stub:
        teacher, sleeps = _teacher(stub)
        trace = teacher.propose(SAMPLE, temperature=1.0)
    assert trace.ranking[0] == 10
    assert teacher.stats["requests"] == 3 and teacher.stats["retries"] == 2
    assert sleeps == [0.5, 1.0]  # exponential backoff
    key = {"bad_json": "bad_json", "no_choices": "bad_json", "slow": "timeouts"}.get(failure, f"http_{failure}")
    assert teacher.stats[key] == 2


def test_persistent_failure_is_reported_not_crashed() -> None:
    with Stub(["500"] * 20) as stub:
        teacher, _ = _teacher(stub, max_retries=2)
        with pytest.raises(TeacherError, match=r"gave up after 3 attempt\(s\); last error: HTTP 500"):
            teacher.propose(SAMPLE, temperature=1.0)
        row, events = trace_sample(teacher, SAMPLE, max_tries=2, temperature=1.0, targeted_fallback=True)
    assert not row["accepted"] and row["source"] == "rejected" and events["teacher_errors"] == 3


def test_client_errors_are_not_retried() -> None:
    with Stub(["404"]) as stub:
        teacher, _ = _teacher(stub)
        with pytest.raises(TeacherError, match="HTTP 404"):
            teacher.propose(SAMPLE, temperature=1.0)
    assert teacher.stats["requests"] == 1


def test_unreachable_endpoint_is_a_teacher_error() -> None:
    cfg = OpenAITeacherConfig(base_url="http://127.0.0.1:9/v1", timeout_s=0.2, max_retries=1, backoff_s=0)
    teacher = OpenAITeacher(cfg, ITEMS, SID_MAP, sleep=lambda s: None)
    with pytest.raises(TeacherError, match="connection error"):
        teacher.propose(SAMPLE, temperature=1.0)


def test_rejection_sampling_accepts_first_correct_and_falls_back() -> None:
    with Stub(["wrong", "garbage", "good"]) as stub:
        teacher, _ = _teacher(stub)
        row, events = trace_sample(teacher, SAMPLE, max_tries=4, temperature=1.0, targeted_fallback=False)
    assert row["accepted"] and row["source"] == "sampled" and row["tries"] == 3
    assert events["invalid_traces"] == 1 and teacher.stats["unparsable"] == 1
    with Stub(["wrong", "wrong", "good"]) as stub:
        teacher, _ = _teacher(stub)
        row, _ = trace_sample(teacher, SAMPLE, max_tries=2, temperature=1.0, targeted_fallback=True)
        assert "actual next item" in stub.bodies[-1]["body"]["messages"][0]["content"]
    assert row["accepted"] and row["source"] == "fallback" and row["tries"] == 2


def test_rate_limiter_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
    assert slept == pytest.approx([0.25, 0.25])


def _feature_teacher(seed: int = 0, **weights) -> FeatureTeacher:
    frame = ITEMS.set_index("item_id").assign(popularity=np.arange(12, 0, -1, dtype=float),
                                              last_seen_ts=np.arange(12, dtype=float))
    cooc = Cooccurrence({1: [5, 10, 3, 10], 2: [2, 10, 9], 3: [5, 10]}, window=2)
    cfg = TracesConfig(**weights)
    return FeatureTeacher(ItemFeatures(frame=ItemFeatures._clean(frame), source="test"), cooc, cfg, SID_MAP, seed)


def test_feature_teacher_is_deterministic_and_grounded() -> None:
    teacher = _feature_teacher()
    a = teacher.propose(SAMPLE, temperature=1.0, attempt=0)
    assert a.ranking == teacher.propose(SAMPLE, temperature=1.0, attempt=0).ranking
    assert sorted(a.ranking) == sorted(SAMPLE["candidates"])
    draws = {tuple(teacher.propose(SAMPLE, temperature=1.0, attempt=k).ranking) for k in range(8)}
    assert len(draws) > 1  # attempts sample different rankings
    assert "Step 1" in a.reasoning and "Step 3" in a.reasoning and SID_MAP.token_string(a.ranking[0]) in a.reasoning
    assert a.text.startswith("<think>") and a.valid


def test_feature_teacher_low_temperature_follows_scores_and_reveal_puts_target_first() -> None:
    teacher = _feature_teacher(w_category=0, w_recency=0, w_popularity=0, w_cooccurrence=1)
    trace = teacher.propose(SAMPLE, temperature=1e-4)
    assert trace.ranking[0] == 10  # 10 follows the recent item 5 in the sequences; nothing else does
    assert "often consumed right after" in trace.reasoning
    revealed = _feature_teacher(w_cooccurrence=0, w_popularity=5).propose(SAMPLE, 1e-4, reveal_target=True)
    assert revealed.ranking[0] == 10
    assert Cooccurrence({1: [5, 10]}, window=1).count(5, 10) == 1.0


def test_acceptance_stats_shows_selection_bias() -> None:
    rows = pd.DataFrame({"accepted": [True, True, True, False], "source": ["sampled", "sampled", "fallback", "rejected"],
                         "tries": [1, 3, 4, 4], "target_position": [0, 1, 8, 9]})
    stats = acceptance_stats(rows, Counter({"teacher_errors": 2}))
    assert stats["acceptance_rate"] == 0.5 and stats["mean_tries_accepted"] == 2.0
    assert stats["fallback_share"] == pytest.approx(1 / 3)
    assert stats["mean_target_position"]["sampled"] < stats["mean_target_position"]["all"]
    assert stats["acceptance_by_target_position"] == {0: 1.0, 1: 1.0, 8: 0.0, 9: 0.0}
    assert stats["teacher_errors"] == 2
