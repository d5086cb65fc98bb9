"""Writes the measured figures into README.md from `benchmarks/results/`, never by hand.

README.md marks each generated block with a pair of comments:

    <!-- results:NAME -->
    ... replaced by benchmarks/results/NAME.md ...
    <!-- /results:NAME -->

Every block whose results file exists is replaced; a block without one is left as it is and
named on stderr. `--check` changes nothing and exits 1 when README.md is out of date (a CI or
pre-commit check).

    .venv/bin/python benchmarks/update_readme.py [--check]
"""
from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(HERE), "README.md")
RESULTS = os.path.join(HERE, "results")
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)",
                   re.DOTALL)


def render(text: str, results_dir: str = RESULTS) -> tuple[str, list[str]]:
    """README text with every block replaced by its results file; and the blocks left alone."""
    missing: list[str] = []

    def replace(match: re.Match) -> str:
        path = os.path.join(results_dir, f"{match['name']}.md")
        if not os.path.exists(path):
            missing.append(match["name"])
            return match.group(0)
        with open(path) as f:
            body = f.read().rstrip("\n") + "\n"
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(replace, text), missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", default=README)
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args()
    with open(args.readme) as f:
        text = f.read()
    new, missing = render(text, args.results)
    for name in missing:
        print(f"no {name}.md in {args.results}: block '{name}' left as it is", file=sys.stderr)
    if args.check:
        sys.exit(0 if new == text else 1)
    if new != text:
        with open(args.readme, "w") as f:
            f.write(new)
        print(f"Updated {args.readme}")


if __name__ == "__main__":
    main()
