"""``python -m serving --model DIR [--mode score] [--feature_repo DIR] [--http_port 8080 --grpc_port 8081]``.

The container entry point: KServe's own flags plus the gr2 ones; ``gr2 serve`` is the same with the settings tree.
"""

from __future__ import annotations

import argparse

from kserve import model_server

from gr2.config import load_config
from serving.server import serve


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--model", dest="bundle", required=True, help="Serving bundle directory (gr2 export).")
    parser.add_argument("--mode", choices=["score", "generate", "reason"], help="Override serve.mode.")
    parser.add_argument("--feature_repo", help="Feast repo with the online store (override serve.feature_repo).")
    parser.add_argument("--profile", default="default", help="Settings profile (smoke, default).")
    parser.add_argument("--config", help="YAML overriding the profile.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE, e.g. serve.timeout_s=5")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    extra = [f"serve.mode={args.mode}"] if args.mode else []
    extra += [f"serve.feature_repo={args.feature_repo}"] if args.feature_repo else []
    cfg = load_config(args.profile, args.config, [*args.overrides, *extra]).serve
    serve(args.bundle, cfg, args.http_port, args.grpc_port)


if __name__ == "__main__":
    main()
