"""`helm test` for the gr2 re-ranker: wait for readiness, send one request, check the ranking.

Runs in the gr2 image as ``python -c`` (standard library and gr2.contract only), configured by the
GR2_* environment variables the chart sets. Exit 0 only when the answer's ranking is a permutation
of the candidates sent.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

from gr2.contract import INPUTS, OUTPUTS

RANKING = "ranking"
assert RANKING in OUTPUTS, "gr2.contract.OUTPUTS lost the ranking tensor"


def infer_request(user_id: int, candidates: list[int]) -> dict:
    """An Open Inference Protocol v2 request for one user and its K candidates."""
    return {"inputs": [
        {"name": "candidates", "datatype": INPUTS["candidates"][0], "shape": [1, len(candidates)], "data": candidates},
        {"name": "user_id", "datatype": INPUTS["user_id"][0], "shape": [1], "data": [user_id]},
    ]}


def ranking_problem(response: dict, candidates: list[int]) -> str | None:
    """What is wrong with a v2 response's ranking, or None when it permutes the candidates."""
    outputs = {o.get("name"): o for o in response.get("outputs", [])}
    if RANKING not in outputs:
        return f"no {RANKING!r} output; got {sorted(map(str, outputs))}"
    ranking = [int(x) for x in outputs[RANKING].get("data", [])]  # [1, K] flattened row-major
    if sorted(ranking) != sorted(candidates):
        return f"ranking {ranking} is not a permutation of the candidates {candidates}"
    return None


def _call(url: str, body: dict | None = None, timeout_s: float = 30.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(url: str, timeout_s: float) -> None:
    """Poll the v2 model readiness route until it answers 200."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = _call(url, timeout_s=5)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as err:
            last = str(err)
        time.sleep(2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s ({last})")


def main() -> int:
    base, model = os.environ["GR2_URL"].rstrip("/"), os.environ["GR2_MODEL_NAME"]
    user_id = int(os.environ["GR2_USER_ID"])
    candidates = [int(c) for c in os.environ["GR2_CANDIDATES"].split(",")]
    wait_ready(f"{base}/v2/models/{model}/ready", float(os.environ.get("GR2_READY_TIMEOUT_S", "120")))
    status, body = _call(f"{base}/v2/models/{model}/infer", infer_request(user_id, candidates))
    if status != 200:
        print(f"FAIL: infer answered HTTP {status}: {body[:500]!r}", file=sys.stderr)
        return 1
    problem = ranking_problem(json.loads(body), candidates)
    if problem:
        print(f"FAIL: {problem}", file=sys.stderr)
        return 1
    print(f"ok: {model} ranked {len(candidates)} candidates for user {user_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
