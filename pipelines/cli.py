"""The `collabopt` command line (click + rich).

The console carries collabopt's own lines only: progress (one line per finished step), the result,
and errors as one line. TensorFlow, CUDA, absl and converter output goes to the run's log file
(`capture.OutputCapture`; `-v` shows it live), which is why TensorFlow is imported only inside a
capture: importing this module or the `collabopt` package does not import it.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
import warnings

# The Google client libraries TFX pulls in warn about Python 3.10 on import; not actionable here.
warnings.filterwarnings("ignore", category=FutureWarning)

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from collabopt.components.core.errors import CollaboptError

console = Console(stderr=True, soft_wrap=True)  # our lines are never cut or wrapped
out = Console()

METADATA_OPTION = click.option(
    "--metadata", "metadata", required=True, metavar="PATH|URL",
    help="ML Metadata store: a SQLite file, mysql://user:pw@host:port/db, or grpc://host:port.")
VERBOSE_OPTION = click.option(
    "-v", "--verbose", is_flag=True,
    help="Also show TensorFlow's, TFX's and the converters' own output (it goes to the run's log).")
RUN_ID_OPTION = click.option(
    "--run-id", default=None,
    help="A pipeline run id (default: the latest run that evaluated leaves; `collabopt runs` "
         "lists them).")


class RunFailedError(CollaboptError):
    """A step of the pipeline raised something collabopt did not expect."""


class _Group(click.Group):
    """Turns the errors collabopt raises on purpose into one clear message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CollaboptError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=_Group)
def main():
    """Collaborative optimization of Keras models for edge deployment, as TFX pipelines."""


def _real_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # e.g. click's CliRunner buffers
        return False


@contextlib.contextmanager
def _captured(log_path, verbose: bool, metadata: str = "", header: str = ""):
    """TensorFlow's and everyone else's output to `log_path` (None: dropped; `verbose`: shown too),
    passwords of `metadata` masked; our consoles keep writing to the terminal."""
    from collabopt.pipelines.capture import OutputCapture
    from collabopt.pipelines.metadata.store import secrets_of

    redirect = _real_fd(sys.stderr, 2) and _real_fd(sys.stdout, 1)
    with OutputCapture(log_path, verbose, secrets_of(metadata), header) as capture:
        if redirect:
            console.file, out.file = capture.terminal_err, capture.terminal_out
        try:
            yield capture
        finally:
            if redirect:
                console.file = out.file = None  # back to sys.stderr / sys.stdout


def _load_config(config_path: str, verbose: bool):
    """The validated config; checking values imports TensorFlow, whose chatter is dropped."""
    from collabopt.pipelines.config import load_config

    with _captured(None, verbose):
        return load_config(config_path)


def _run_with_progress(config, runner, run_id: str, log: str, wait: bool, verbose: bool):
    from collabopt.pipelines import runners
    from collabopt.pipelines.metadata.store import redact

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[last]}"),
                  console=console, transient=True,
                  disable=verbose or not console.is_terminal) as bar:
        task = bar.add_task("pipeline", total=None, last="starting")

        def progress(done, total, last):
            bar.update(task, completed=done, total=total, last=last)
            bar.console.print(f"[{done}/{total}] {last}", highlight=False, soft_wrap=True)

        def on_wait(other):
            bar.console.print(f"Waiting for {other} to finish…", highlight=False)

        def on_start(orphans):
            bar.console.print(f"Run {run_id} of {config.pipeline_name} on "
                              f"{redact(config.metadata)}", highlight=False)
            bar.console.print(f"Log: {log}" + ("" if verbose else "  (-v shows it here)"),
                              highlight=False)
            for o in orphans:
                bar.console.print(f"[yellow]Marked execution #{o.execution_id} ({o.node_id}) "
                                  f"CANCELED, abandoned: {o.reason}[/]", highlight=False)
            _preflight(config, bar.console)

        return runners.run(config, runner, progress=progress, run_id=run_id, wait=wait,
                           on_wait=on_wait, on_start=on_start)


def _preflight(config, shown) -> None:
    """`collabopt check` before any training: a data or model mistake stops the run with its
    one-line error, and so does a tree where no leaf can build; otherwise one summary line."""
    from collabopt.pipelines.preflight import preflight

    report = preflight(config)
    shown.print(f"Pre-flight: {report.summary()}", highlight=False, soft_wrap=True)
    if report.leaves and all(leaf.builds is False for leaf in report.leaves):
        raise CollaboptError("No leaf of this config can be built: " + "; ".join(
            f"{leaf.path}: {leaf.reason}" for leaf in report.leaves)
            + ". `collabopt check` shows the details.")


def _outcome(config, run_id: str):
    """This run's leaves and what its Pusher did, read back from ML Metadata."""
    from collabopt.pipelines.metadata.read import open_reader
    from collabopt.pipelines.metadata.runs import pushes, run_info

    reader = open_reader(config.metadata)
    run = reader.run(run_id)
    info = run_info(reader, run)
    pushed = [p for p in pushes(reader, run) if p.pushed]
    if info.selected and pushed and pushed[0].state == "CACHED":
        message = (f"Selected [bold]{info.selected}[/]; an earlier run of this config already "
                   f"deployed it to {pushed[0].destination} (the Pusher was reused from the "
                   "cache): nothing new was pushed.")
    elif info.selected and pushed:
        message = f"Selected [bold]{info.selected}[/]; the Pusher deployed it to {pushed[0].destination}"
    elif info.selected:
        message = f"Selected [bold]{info.selected}[/], but nothing was pushed (see the log)."
    else:
        message = ("No leaf met the thresholds, so nothing was deployed; the verdict column says "
                   "which threshold each leaf missed and by how much.")
    return info.records, message


def _run_and_report(config, runner, wait: bool, verbose: bool) -> None:
    from collabopt.pipelines.run_files import log_path, new_run_id
    from collabopt.pipelines.run_lock import RunInProgressError

    run_id = new_run_id()
    log = log_path(config.pipeline_root, config.pipeline_name, run_id)
    header = (f"collabopt run {run_id} of {config.pipeline_name} on {config.metadata} "
              f"(pid {os.getpid()})")
    with _captured(log, verbose, config.metadata, header):
        try:
            result = _run_with_progress(config, runner, run_id, log, wait, verbose)
        except RunInProgressError:
            os.remove(log)  # this run never started
            raise
        except KeyboardInterrupt:
            raise
        except CollaboptError:
            traceback.print_exc()  # into the log; the console gets the message
            raise
        except Exception as exc:
            traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RunFailedError(f"Run {run_id} failed: {type(exc).__name__}: {first} "
                                 f"(the traceback is in {log})") from None
        records, message = _outcome(config, run_id)
        from collabopt.pipelines.leaves import leaves_table
    out.print(leaves_table(records, out))  # fitted to the console's width, once it is back
    trace = result.search_trace
    if trace:
        console.print(f"Search: {trace['leaves_tried']} of {trace['grid_leaves']} leaves of the "
                      f"grid tried in {trace['rounds']} rounds; " + "; ".join(trace["stopped"])
                      + ".", highlight=False)
    failed = [r for r in records if r.failure]
    if records and len(failed) == len(records):
        console.print("[bold red]No leaf could be built:[/]", highlight=False)
        for r in failed:
            console.print(f"  {r.path}: {'; '.join(r.reasons)}", highlight=False)
        sys.exit(1)
    console.print(message, highlight=False)
    if failed:
        console.print(f"{len(failed)} of {len(records)} leaves failed to build; the verdict "
                      "says why.", highlight=False)


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--runner", type=click.Choice(["local", "beam"]), default=None,
              help="Override the config's runner.")
@click.option("--wait", is_flag=True,
              help="If this pipeline is already running on the store, wait for it to finish "
                   "(then reuse what it built) instead of stopping.")
@VERBOSE_OPTION
def run(config_path, runner, wait, verbose):
    """Build the deployment tree from CONFIG_PATH (YAML), run it, and print its leaves.

    One run at a time per pipeline and store: a second one stops with the first's run id (or
    waits, with --wait). The run's own output goes to a log file under pipeline_root/logs/."""
    config = _load_config(config_path, verbose)
    _run_and_report(config, runner, wait, verbose)


@main.command()
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
@click.option("--convert-qat", is_flag=True,
              help="Also convert the quantization-aware model to int8 (slower).")
def check(config_path, as_json, convert_qat):
    """Pre-flight check of CONFIG_PATH without training: the data, the base model, which leaves
    will build, what each technique skips or refuses, Vela's CPU operators. Exits 1 when no leaf
    will build."""
    config = _load_config(config_path, verbose=False)
    with _captured(None, verbose=False):
        from collabopt.pipelines.preflight import preflight

        report = preflight(config, convert_qat=convert_qat)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        out.print(report)
    if report.leaves and all(leaf.builds is False for leaf in report.leaves):
        sys.exit(1)


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="demo-run", show_default=True)
@click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True)
@click.option("--mode", type=click.Choice(["exhaustive", "progressive", "search"]),
              default=None, help="Override the demo config's mode.")
@click.option("--wait", is_flag=True, help="Wait for a run of the demo already in progress.")
@VERBOSE_OPTION
def demo(workdir, runner, mode, wait, verbose):
    """Run the whole deployment tree on scikit-learn's digits (no download needed).

    Writes into WORKDIR the config it used (pipeline.yaml: edit and re-run it with
    `collabopt run`), metadata.sqlite, pipeline_root/ and serving/.
    """
    with _captured(None, verbose):
        from collabopt.pipelines.demo.setup import write_demo

        config_path = write_demo(workdir, runner=runner, mode=mode)
    console.print(f"Demo config: {config_path}")
    config = _load_config(config_path, verbose)
    _run_and_report(config, None, wait, verbose)


def _open(metadata: str):
    """The store, read-only; a bad one fails here, before TensorFlow is imported."""
    from collabopt.pipelines.metadata.store import open_store

    return open_store(metadata, readonly=True)


def _say_run(choice, what: str) -> None:
    """Which run a reader shows, and why it is not the latest when it is not."""
    console.print(f"{what} {choice.shown.summary()}", highlight=False)
    if choice.note:
        console.print(f"[yellow]{choice.note}[/]", highlight=False)


@main.command()
@METADATA_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@RUN_ID_OPTION
@VERBOSE_OPTION
def leaves(metadata, as_json, run_id, verbose):
    """Every leaf of a run (by default the latest that evaluated leaves) with its metrics, read
    from ML Metadata alone."""
    with _captured(None, verbose, metadata):
        store = _open(metadata)
        from collabopt.pipelines.leaves import leaves_table
        from collabopt.pipelines.metadata.read import read_run

        choice = read_run(metadata, run_id, store=store)
    records = choice.shown.records
    if not records:
        why = "" if run_id else " No run in this store evaluated a leaf yet."
        raise CollaboptError(f"{choice.note}{why}")
    _say_run(choice, "Leaves of")
    if as_json:
        out.print_json(json.dumps([r.to_json() for r in records]))
    else:
        out.print(leaves_table(records, out))


@main.command()
@METADATA_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@VERBOSE_OPTION
def runs(metadata, as_json, verbose):
    """The runs in a store: id, start, state, leaves evaluated, selected leaf, and what went wrong
    (a failed step's error; executions a killed run left RUNNING). Read-only: abandoned
    executions are reported here and marked CANCELED by the next `collabopt run`."""
    with _captured(None, verbose, metadata):
        store = _open(metadata)
        from collabopt.pipelines.metadata.read import read_runs

        infos = read_runs(metadata, store=store)
    if as_json:
        out.print_json(json.dumps([i.to_json() for i in infos]))
        return
    if not infos:
        console.print("This ML Metadata store holds no pipeline run yet.")
        return
    out.print(_runs_table(infos))


def _runs_table(infos):
    from collabopt.pipelines.tables import ColumnSpec, fit_table

    state_style = {"complete": "green", "failed": "red", "running": "cyan", "abandoned": "yellow"}
    pipelines = {i.pipeline for i in infos}
    columns = [ColumnSpec("run id"), ColumnSpec("pipeline"), ColumnSpec("started"),
               ColumnSpec("state"), ColumnSpec("leaves", "right"), ColumnSpec("selected"),
               ColumnSpec("what happened")]
    rows = []
    for i in infos:
        notes = [i.error] if i.error else []
        notes += [f"#{o.execution_id} {o.node_id} " + ("marked CANCELED: " if o.marked else "")
                  + o.reason for o in i.orphans]
        rows.append([i.run_id, i.pipeline, (i.started or "-")[:19].replace("T", " "),
                     f"[{state_style.get(i.state, '')}]{i.state}[/]", str(i.leaves),
                     i.selected or "-", "; ".join(notes)])
    keep = [c for c in range(len(columns)) if c != 1 or len(pipelines) > 1]
    return fit_table(out, "Runs", [columns[c] for c in keep], [[r[c] for c in keep] for r in rows],
                     note_column=len(keep) - 1)


@main.command()
@METADATA_OPTION
@click.argument("artifact_id", type=int, required=False)
@click.option("--selected", is_flag=True,
              help="Start from the model the Selector picked (of the latest run that evaluated "
                   "leaves, or --run-id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
@click.option("--full", is_flag=True,
              help="Also expand side inputs: the baseline evaluation and the leaves the Selector "
                   "did not pick.")
@RUN_ID_OPTION
@VERBOSE_OPTION
def lineage(metadata, artifact_id, selected, as_json, full, run_id, verbose):
    """Which steps and parameters produced ARTIFACT_ID (or the --selected model), back to the
    base model and the Examples, read from ML Metadata alone."""
    if (artifact_id is None) == (not selected):
        raise click.UsageError("give exactly one of ARTIFACT_ID or --selected "
                               "(`collabopt leaves --json` lists the leaves' artifact ids)")
    with _captured(None, verbose, metadata):
        store = _open(metadata)
        from collabopt.pipelines.lineage import render_tree
        from collabopt.pipelines.metadata.read import read_lineage, read_run

        choice = read_run(metadata, run_id, store=store) if selected else None
        result = read_lineage(metadata, artifact_id=artifact_id, selected=selected,
                              run_id=choice.shown.run_id if choice else None, full=full,
                              store=store)
    if choice:
        _say_run(choice, "Lineage of the model selected in")
    else:
        console.print(f"Lineage of artifact #{artifact_id}"
                      + (f" (produced in run {result.run})" if result.run else ""), highlight=False)
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        out.print(render_tree(result))


@main.command()
@METADATA_OPTION
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Directory to write index.html and its PNG figures into (or a path ending in "
                   ".html: the figures go next to it).")
@RUN_ID_OPTION
@VERBOSE_OPTION
def report(metadata, out_dir, run_id, verbose):
    """A self-contained HTML report of a run (by default the latest that evaluated leaves):
    leaves, Pareto fronts, the deployment tree and the weights of the selected leaf along its
    path."""
    with _captured(None, verbose, metadata):
        store = _open(metadata)
        from collabopt.pipelines.metadata.read import read_run
        from collabopt.pipelines.report import build_report

        choice = read_run(metadata, run_id, store=store)
        index = build_report(metadata, out_dir, run_id=run_id, store=store)
    _say_run(choice, "Report of")
    console.print(f"Wrote {os.path.abspath(index)}")


@main.command(name="compile")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the KFP v2 pipeline spec (JSON).")
@click.option("--image", required=True, help="Container image every step runs in.")
@click.option("--pipeline-root", default=None,
              help="Override the config's pipeline_root (e.g. gs://…, s3://…, minio://…).")
@VERBOSE_OPTION
def compile_(config_path, out_path, image, pipeline_root, verbose):
    """Compile the deployment tree for Kubeflow Pipelines v2 (TFX KubeflowV2DagRunner)."""
    config = _load_config(config_path, verbose)
    if pipeline_root:
        config = config.model_copy(update={"pipeline_root": pipeline_root})
    with _captured(None, verbose):
        from collabopt.pipelines import runners

        runners.compile_for_kubeflow(config, out_path, image)
    console.print(f"Wrote {os.path.abspath(out_path)}")


if __name__ == "__main__":
    main()
