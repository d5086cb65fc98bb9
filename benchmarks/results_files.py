"""Where every benchmark writes what it measured: `<name>.json` and Markdown files under
`benchmarks/results/` (README.md's result blocks are copied from the Markdown by
update_readme.py)."""
from __future__ import annotations

import json
import os

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(out_dir: str, name: str, result: dict, markdown: dict[str, str]) -> None:
    """`out_dir/<name>.json` and one `out_dir/<key>.md` per entry of `markdown`."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    for md_name, text in markdown.items():
        with open(os.path.join(out_dir, f"{md_name}.md"), "w") as f:
            f.write(text)
