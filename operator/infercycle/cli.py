"""The ``infercycle`` command: ``run``, ``crds``, ``replay``, ``explain`` and ``agent``."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from infercycle import __version__


def _crds(args: argparse.Namespace) -> int:
    from infercycle.api.crd import render_crds  # noqa: PLC0415 - keep `--help` fast

    target = Path(args.directory)
    rendered = render_crds()
    if args.check:
        drift: list[str] = []
        for name, text in rendered.items():
            path = target / name
            current = path.read_text() if path.exists() else ""
            if current != text:
                drift.extend(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        fromfile=str(path),
                        tofile=f"{path} (generated)",
                    )
                )
        if drift:
            sys.stdout.writelines(drift)
            print(
                f"error: {target}/ differs from the models; run `infercycle crds` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{target}/ matches the models ({len(rendered)} CRDs)")
        return 0
    target.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (target / name).write_text(text)
        print(f"wrote {target / name}")
    return 0


def _replay(rest: Sequence[str]) -> int:
    from infercycle.replay import main  # noqa: PLC0415

    return int(main(list(rest)))


def _agent(rest: Sequence[str]) -> int:
    from infercycle.agent.server import main  # noqa: PLC0415

    return int(main(list(rest)))


def _run(rest: Sequence[str]) -> int:
    from infercycle.runner import main  # noqa: PLC0415

    return int(main(list(rest)))


def _explain(rest: Sequence[str]) -> int:
    from infercycle.explain import main  # noqa: PLC0415

    return int(main(list(rest)))


PASSTHROUGH = {"replay": _replay, "agent": _agent, "run": _run, "explain": _explain}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercycle",
        description="Recycle degrading LLM inference pods only when several signals agree.",
    )
    parser.add_argument("--version", action="version", version=f"infercycle {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("run", help="run the operator", add_help=False)
    crds = commands.add_parser("crds", help="write the CustomResourceDefinitions")
    crds.add_argument("directory", nargs="?", default="crds", help="target folder (crds)")
    crds.add_argument("--check", action="store_true", help="fail when the folder differs")
    crds.set_defaults(handler=_crds)
    commands.add_parser("replay", help="run the health engine over a trace", add_help=False)
    commands.add_parser(
        "explain", help="show a deployment's effective policy and verdicts", add_help=False
    )
    commands.add_parser("agent", help="run the recycle agent sidecar", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in PASSTHROUGH:
        return PASSTHROUGH[arguments[0]](arguments[1:])
    args = build_parser().parse_args(arguments)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
