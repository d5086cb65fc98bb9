"""A small reader for container/Dockerfile and .dockerignore, shared by the container and manifest tests."""
from __future__ import annotations

import ast
import json
import pathlib
import re
import sysconfig

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "container" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions(path: pathlib.Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
            current = ""
    return result


def final_stage(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(items) if k == "FROM")
    return items[last_from:]


def exec_form(args: str) -> list[str]:
    return json.loads(args)


def user_id(items: list[tuple[str, str]]) -> str:
    users = [a for k, a in final_stage(items) if k == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    return users[-1].split(":")[0]


def tfx_constants() -> dict[str, tuple[str, ...]]:
    """The commands TFX 1.16 compiles into Kubeflow V2 steps, read from its source (no import)."""
    root = pathlib.Path(sysconfig.get_paths()["purelib"]) / "tfx" / "orchestration" / "kubeflow" / "v2"
    found = {}
    for file, name in (("kubeflow_v2_dag_runner.py", "KUBEFLOW_TFX_CMD"),
                       ("step_builder.py", "_DRIVER_COMMANDS")):
        tree = ast.parse((root / file).read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found[name] = tuple(ast.literal_eval(node.value))
    return found


def ignore_patterns(path: pathlib.Path = DOCKERIGNORE) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _pattern(pattern: str) -> re.Pattern:
    """Docker's .dockerignore globs: `**` spans directories, `*` and `?` stay within one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def sent_to_builder(relpath: str, patterns: list[str]) -> bool:
    """Whether Docker sends `relpath` in the build context: the last matching pattern wins, and a
    pattern that matches a parent directory matches everything below it."""
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            included = negate
    return included
