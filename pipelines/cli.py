"""The `collabopt` command line (click + rich)."""
from __future__ import annotations

import json
import os
import sys
import warnings

# The Google client libraries TFX pulls in warn about Python 3.10 on import; not actionable here.
warnings.filterwarnings("ignore", category=FutureWarning)

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from collabopt.components.core.errors import CollaboptError

# Tables are wide: give them room when the output is a file or a pipe rather than a terminal.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)

METADATA_OPTION = click.option(
    "--metadata", "metadata", required=True, metavar="PATH|URL",
    help="ML Metadata store: a SQLite file, mysql://user:pw@host:port/db, or grpc://host:port.")


class _Group(click.Group):
    """Turns the errors collabopt raises on purpose into one clear message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CollaboptError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            sys.exit(2)


@click.group(cls=_Group)
def main():
    """Collaborative optimization of Keras models for edge deployment, as TFX pipelines."""


def _run_with_progress(config, runner=None):
    from collabopt.pipelines import runners

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[last]}"),
                  console=console, transient=False) as bar:
        task = bar.add_task("pipeline", total=None, last="starting")

        def progress(done, total, last):
            bar.update(task, completed=done, total=total, last=last)
            if not console.is_terminal:  # a log file gets one line per finished step
                console.print(f"[{done}/{total}] {last}", highlight=False)

        runners.run(config, runner, progress=progress)
        total = bar.tasks[0].total
        bar.update(task, completed=total, last="finished")


def _print_outcome(config) -> None:
    """The leaves table, then what was deployed (or why nothing was)."""
    from collabopt.pipelines.leaves import leaves_table, read_leaves

    records = read_leaves(config.metadata)
    out.print(leaves_table(records))
    selected = [r for r in records if r.selected]
    if selected:
        console.print(f"Selected [bold]{selected[0].path}[/]; the Pusher deploys it under "
                      f"{config.serving_dir}", highlight=False)
    else:
        console.print("No leaf met the thresholds, so nothing was deployed; the verdict column "
                      "says which threshold each leaf missed and by how much.", highlight=False)


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--runner", type=click.Choice(["local", "beam"]), default=None,
              help="Override the config's runner.")
def run(config_path, runner):
    """Build the deployment tree from CONFIG_PATH (YAML), run it, and print the leaves."""
    from collabopt.pipelines.config import load_config

    config = load_config(config_path)
    _run_with_progress(config, runner)
    _print_outcome(config)


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
@click.option("--convert-qat", is_flag=True,
              help="Also convert the quantization-aware model to int8 (slower).")
def check(config_path, as_json, convert_qat):
    """Pre-flight check of CONFIG_PATH without training: the data, the base model, which leaves
    will build, what each technique skips or refuses, Vela's CPU operators. Exits 1 when no leaf
    will build."""
    from collabopt.pipelines.config import load_config
    from collabopt.pipelines.preflight import preflight

    report = preflight(load_config(config_path), convert_qat=convert_qat)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        out.print(report)
    if report.leaves and all(leaf.builds is False for leaf in report.leaves):
        sys.exit(1)


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="demo-run", show_default=True)
@click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True)
@click.option("--mode", type=click.Choice(["exhaustive", "progressive"]), default="exhaustive",
              show_default=True)
def demo(workdir, runner, mode):
    """Run the whole deployment tree on scikit-learn's digits (no download needed).

    Writes into WORKDIR the config it used (pipeline.yaml: edit and re-run it with
    `collabopt run`), metadata.sqlite, pipeline_root/ and serving/.
    """
    from collabopt.pipelines.config import load_config
    from collabopt.pipelines.demo.setup import write_demo

    config_path = write_demo(workdir, runner=runner, mode=mode)
    console.print(f"Demo config: {config_path}")
    config = load_config(config_path)
    _run_with_progress(config)
    _print_outcome(config)


@main.command()
@METADATA_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--run-id", default=None, help="A pipeline run id (default: the latest run).")
def leaves(metadata, as_json, run_id):
    """Every leaf of the last run with its metrics, read from ML Metadata alone."""
    from collabopt.pipelines.leaves import leaves_table, read_leaves

    records = read_leaves(metadata, run_id=run_id)
    if as_json:
        out.print_json(json.dumps([r.to_json() for r in records]))
    else:
        out.print(leaves_table(records))


@main.command()
@METADATA_OPTION
@click.argument("artifact_id", type=int, required=False)
@click.option("--selected", is_flag=True,
              help="Start from the model the Selector of the latest run picked.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
@click.option("--full", is_flag=True,
              help="Also expand side inputs: the baseline evaluation and the leaves the Selector "
                   "did not pick.")
@click.option("--run-id", default=None,
              help="With --selected: a pipeline run id (default: the latest run).")
def lineage(metadata, artifact_id, selected, as_json, full, run_id):
    """Which steps and parameters produced ARTIFACT_ID (or the --selected model), back to the
    base model and the Examples, read from ML Metadata alone."""
    from collabopt.pipelines.lineage import read_lineage

    if (artifact_id is None) == (not selected):
        raise click.UsageError("give exactly one of ARTIFACT_ID or --selected "
                               "(`collabopt leaves --json` lists the leaves' artifact ids)")
    result = read_lineage(metadata, artifact_id=artifact_id, selected=selected, run_id=run_id,
                          full=full)
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        out.print(result.tree())


@main.command()
@METADATA_OPTION
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Directory to write index.html and its PNG figures into (or a path ending in "
                   ".html: the figures go next to it).")
@click.option("--run-id", default=None, help="A pipeline run id (default: the latest run).")
def report(metadata, out_dir, run_id):
    """A self-contained HTML report of the last run: leaves, Pareto fronts, the deployment tree
    and the weights of the selected leaf along its path."""
    from collabopt.pipelines.report import build_report

    index = build_report(metadata, out_dir, run_id=run_id)
    console.print(f"Wrote {os.path.abspath(index)}")


@main.command(name="compile")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the KFP v2 pipeline spec (JSON).")
@click.option("--image", required=True, help="Container image every step runs in.")
@click.option("--pipeline-root", default=None,
              help="Override the config's pipeline_root (e.g. gs://…, s3://…, minio://…).")
def compile_(config_path, out_path, image, pipeline_root):
    """Compile the deployment tree for Kubeflow Pipelines v2 (TFX KubeflowV2DagRunner)."""
    from collabopt.pipelines import runners
    from collabopt.pipelines.config import load_config

    config = load_config(config_path)
    if pipeline_root:
        config = config.model_copy(update={"pipeline_root": pipeline_root})
    runners.compile_for_kubeflow(config, out_path, image)
    console.print(f"Wrote {os.path.abspath(out_path)}")


if __name__ == "__main__":
    main()
