"""Pre-flight: what a run will do, from the config, the data and the base model alone.

`preflight(config)` reads both splits through once, checks that the base model fits the data,
asks each technique which layers it wraps, skips or refuses (the same support checks the steps
run before training), converts the base model to int8 and compiles it with Vela for every target
(which operators stay on the CPU), and says for every leaf whether it will build. No training:
seconds for a small model. Data and model mistakes raise their typed error (core.checks); what a
technique refuses is reported per leaf. A base model that a TFX Trainer makes does not exist yet:
then only the data is checked and the report says the model checks come after training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from typing import Any, Optional

from collabopt.components.core.errors import CollaboptError, UnsupportedLayerError
from collabopt.components.core.leaves import BASELINE_LEAF, CLUSTER, PRUNE, SEPARATOR, Leaf
from collabopt.pipelines.config import PipelineConfig, check_local_inputs

QAT_MODES = ("qat", "pqat", "cqat", "pcqat")


@dataclasses.dataclass(frozen=True)
class SplitReport:
    name: str
    files: int
    examples: int
    labels: list[int]


@dataclasses.dataclass(frozen=True)
class TechniqueReport:
    """One technique (at one level) on the base model: the layers it wraps and leaves alone."""

    name: str                              # e.g. "prune 0.5", "cluster 16 (preserve_sparsity)"
    ok: bool
    wrapped: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)   # layer -> why
    refused: list[str] = dataclasses.field(default_factory=list)        # layers it cannot take
    error: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class TargetReport:
    accelerator_config: str
    npu_ops: int = 0
    cpu_ops: int = 0
    cpu_operators: list[str] = dataclasses.field(default_factory=list)
    error: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class LeafReport:
    path: str
    builds: Optional[bool]                 # None: unknown until the Trainer made the model
    steps: list[str]                       # technique report names, in order
    reason: Optional[str] = None


@dataclasses.dataclass
class PreflightReport:
    splits: list[SplitReport]
    leaves: list[LeafReport]
    techniques: dict[str, TechniqueReport]
    targets: list[TargetReport]
    fine_tuning_steps: int                 # Pruner / SparseClusterer / PreservingQAT executions
    max_fine_tuning_epochs: int            # their epoch budget together
    qat_converted: bool = False            # whether QAT leaves' int8 conversion was tried
    model: Optional[dict[str, Any]] = None
    note: Optional[str] = None
    ptq_error: Optional[str] = None
    seconds: float = 0.0

    @property
    def buildable(self) -> list[str]:
        return [leaf.path for leaf in self.leaves if leaf.builds]

    def summary(self) -> str:
        """One line for the start of a run (the whole report is `collabopt check`'s)."""
        if self.model is None:
            built = f"{len(self.leaves)} leaves, checked after the Trainer made the model"
        else:
            built = f"{len(self.buildable)} of {len(self.leaves)} leaves will build"
            wont = [leaf.path for leaf in self.leaves if leaf.builds is False]
            if wont:
                built += f" (not {', '.join(wont[:4])}{', …' if len(wont) > 4 else ''})"
        cpu = sorted({op for t in self.targets for op in t.cpu_operators})
        examples = ", ".join(f"{s.name} {s.examples}" for s in self.splits)
        return (f"data ok ({examples} examples); {built}; {self.fine_tuning_steps} fine-tuning "
                f"steps" + (f"; Vela leaves {', '.join(cpu)} on the CPU" if cpu else "")
                + f" ({self.seconds:.0f} s)")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __rich__(self):
        return render(self)


# --- the checks --------------------------------------------------------------------------------

def _feature_spec(config: PipelineConfig):
    from collabopt.components.core.data import FeatureSpec

    data = config.data
    return FeatureSpec(feature_key=data.feature_key, label_key=data.label_key,
                       feature_shape=tuple(data.feature_shape), feature_dtype=data.feature_dtype,
                       scale=data.feature_scale)


def _split_files(config: PipelineConfig) -> dict[str, list[str]]:
    from collabopt.components.core.data import tfrecord_files

    data = config.data
    return {"train": tfrecord_files(os.path.join(data.examples, data.train_pattern)),
            "eval": tfrecord_files(os.path.join(data.examples, data.eval_pattern))}


def fine_tuning_steps(leaves: list[Leaf]) -> list[str]:
    """The Keras steps (prefixes ending in a prune, cluster or QAT step) the tree runs, by path
    with levels; shared prefixes once."""
    prefixes = []
    for leaf in leaves:
        for i, step in enumerate(leaf.steps):
            prefix = SEPARATOR.join(leaf.steps[:i + 1])
            if step != BASELINE_LEAF and prefix not in prefixes:
                prefixes.append(prefix)
    return prefixes


@contextlib.contextmanager
def _quiet():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Checker:
    """Runs each technique's support check once per (technique, level, preserve_sparsity)."""

    def __init__(self, config: PipelineConfig, model, convert_qat: bool):
        self.config, self.model = config, model
        self.reports: dict[str, TechniqueReport] = {}
        self.qat_conversion_error: Optional[str] = None
        self._qat_converted = not convert_qat

    def technique(self, technique: str, level: Optional[float], after: list[str]) -> TechniqueReport:
        if technique == "prune":
            return self._prune(level)
        if technique == "cluster":
            return self._cluster(level, preserve_sparsity="prune" in after)
        if technique in QAT_MODES:
            return self._qat(technique)
        raise CollaboptError(f"Unknown technique {technique!r} in the leaves of the config.")

    def _run(self, name: str, plan) -> TechniqueReport:
        if name in self.reports:
            return self.reports[name]
        try:
            wrapped, skipped = plan()
            report = TechniqueReport(name, True, list(wrapped), dict(skipped))
        except UnsupportedLayerError as exc:
            report = TechniqueReport(name, False, refused=list(exc.layers), error=str(exc))
        except CollaboptError as exc:
            report = TechniqueReport(name, False, error=str(exc))
        self.reports[name] = report
        return report

    def _prune(self, target_sparsity: float) -> TechniqueReport:
        from collabopt.components import params
        from collabopt.components.core import pruning

        props = {**self.config.pruning.model_dump(), "target_sparsity": target_sparsity}
        pruning_params = params.pruning_params(props)

        def plan():
            layer_plan = pruning.plan_pruning(self.model, pruning_params)
            return layer_plan.wrapped, layer_plan.skipped

        return self._run(f"prune {pruning_params.target_sparsity:g}", plan)

    def _cluster(self, number_of_clusters: int, preserve_sparsity: bool) -> TechniqueReport:
        from collabopt.components import params
        from collabopt.components.core import clustering

        props = {**self.config.clustering.model_dump(), "preserve_sparsity": preserve_sparsity,
                 "number_of_clusters": number_of_clusters}
        name = (f"cluster {props['number_of_clusters']}"
                + (" (preserve_sparsity)" if preserve_sparsity else ""))

        def plan():
            layer_plan = clustering.plan_clustering(self.model, params.clustering_params(props))
            return layer_plan.wrapped, layer_plan.skipped

        return self._run(name, plan)

    def _qat(self, mode: str) -> TechniqueReport:
        from collabopt.components.core import qat, tflite

        # cqat and pcqat share one registry: what one supports, the other does.
        twin = {"cqat": "pcqat", "pcqat": "cqat"}.get(mode)
        if twin in self.reports and mode not in self.reports:
            self.reports[mode] = dataclasses.replace(self.reports[twin], name=mode)

        def plan():
            with _quiet():  # TFMOT logs a warning per unpruned kernel under pcqat
                qat_model = qat.check_quantizable(self.model, mode)
            if not self._qat_converted:  # every mode converts to the same int8 graph
                self._qat_converted = True
                try:
                    tflite.convert(qat_model, "int8", int8_io=self.config.conversion.int8_io)
                except CollaboptError as exc:
                    self.qat_conversion_error = str(exc)
            wrapped = [layer.name for layer in self.model.layers if layer.weights]
            return wrapped, qat.unquantized_layers(self.model)

        return self._run(mode, plan)


def _ptq_and_vela(config: PipelineConfig, model, train_files: list[str], spec
                  ) -> tuple[Optional[str], list[TargetReport]]:
    from collabopt.components import params
    from collabopt.components.core import data, tflite, vela

    samples = min(config.conversion.num_calibration_samples, 100)
    calibration = data.representative_dataset(
        data.dataset_from_tfrecords(train_files, spec, batch_size=32), num_samples=samples)
    try:
        int8 = tflite.convert(model, "int8", calibration, int8_io=config.conversion.int8_io)
    except CollaboptError as exc:
        return str(exc), []
    targets = []
    with tempfile.TemporaryDirectory(prefix="collabopt_preflight_") as work:
        for i, target in enumerate(config.targets):
            name = target.accelerator_config
            try:
                result = vela.compile_model(int8, params.vela_options(target.model_dump()),
                                            os.path.join(work, str(i)), name="preflight")
                targets.append(TargetReport(name, result.summary.npu_ops, result.summary.cpu_ops,
                                            vela.cpu_operators(result.tflite_path)))
            except CollaboptError as exc:
                targets.append(TargetReport(name, error=str(exc)))
    return None, targets


def preflight(config: PipelineConfig, convert_qat: bool = False) -> PreflightReport:
    """Checks the data, the base model and every leaf of `config` without training.

    Raises the typed error (DatasetError, ModelDataMismatchError, ConfigError, ModelLoadError)
    for a data or model mistake; reports per leaf what a technique refuses. `convert_qat` also
    converts the (untrained) quantization-aware model to int8, which catches the rare graphs the
    TFLite converter cannot quantize after QAT (e.g. dilated convolutions) but takes as long as
    a TFLiteConverter step (a minute for MobileNet on 2 cores).
    """
    from collabopt.components.core import checks, data, qat

    start = time.perf_counter()
    check_local_inputs(config)
    spec = _feature_spec(config)
    files = _split_files(config)
    statistics = {split: data.split_statistics(paths, spec) for split, paths in files.items()}
    splits = [SplitReport(split, len(s.files), s.num_examples, s.labels)
              for split, s in statistics.items()]
    leaves = config.all_leaves()
    keras_steps = fine_tuning_steps(leaves)
    budget = config.training.epochs or config.training.max_epochs
    report = PreflightReport(splits, [], {}, [], len(keras_steps), len(keras_steps) * budget)

    if not config.base_model.path:
        checks.check_labels(statistics, None, spec.label_key)
        report.note = ("The base model is trained by the pipeline's Trainer, so it does not exist "
                       "yet: the data was checked; the model checks (input layout, output size "
                       "against the labels, what each technique supports, operators Vela leaves "
                       "on the CPU) happen after training.")
        report.leaves = [LeafReport(leaf.path, None, list(leaf.steps)) for leaf in leaves]
        report.seconds = time.perf_counter() - start
        return report

    model = qat.load_model(config.base_model.path)
    checks.check_model_matches_data(model, spec, statistics)
    report.model = {"name": model.name, "input_shape": list(model.input_shape[1:]),
                    "outputs": int(model.output_shape[-1]),
                    "parameters": int(model.count_params())}
    report.ptq_error, report.targets = _ptq_and_vela(config, model, files["train"], spec)

    checker = _Checker(config, model, convert_qat)
    for leaf in leaves:
        steps, reason = [], report.ptq_error
        techniques = leaf.template.split(SEPARATOR)
        for i, technique in enumerate(techniques):
            if technique == BASELINE_LEAF:
                continue
            level = {PRUNE: leaf.target_sparsity, CLUSTER: leaf.number_of_clusters}.get(technique)
            technique_report = checker.technique(technique, level, techniques[:i])
            steps.append(technique_report.name)
            if not technique_report.ok and reason is None:
                reason = f"{technique_report.name}: {technique_report.error}"
        if reason is None and techniques[-1] in QAT_MODES and checker.qat_conversion_error:
            reason = checker.qat_conversion_error
        failed_targets = [t for t in report.targets if t.error]
        if reason is None and failed_targets:
            reason = f"Vela ({failed_targets[0].accelerator_config}): {failed_targets[0].error}"
        report.leaves.append(LeafReport(leaf.path, reason is None, steps, reason))
    report.techniques = checker.reports
    report.qat_converted = convert_qat
    report.seconds = time.perf_counter() - start
    return report


# --- rendering ---------------------------------------------------------------------------------

def _short(text: Optional[str], limit: int = 240) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _by_reason(skipped: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for layer, why in skipped.items():
        grouped.setdefault(why, []).append(layer)
    return grouped


def _names(layers: list[str], shown: int = 3) -> str:
    more = f" and {len(layers) - shown} more" if len(layers) > shown else ""
    return ", ".join(layers[:shown]) + more


def render(report: PreflightReport):
    """A short rich summary: data, model, leaves, techniques, Vela targets, fine-tuning steps."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = []
    data_line = "; ".join(
        f"{s.name}: {s.examples} examples in {s.files} file(s), labels "
        f"{s.labels[0]}..{s.labels[-1]} ({len(s.labels)} values)" for s in report.splits)
    parts.append(Text(f"Data: {data_line}"))
    if report.model:
        m = report.model
        parts.append(Text(f"Model: '{m['name']}', input {tuple(m['input_shape'])}, "
                          f"{m['outputs']} outputs, {m['parameters']} parameters"))
    if report.note:
        parts.append(Text(report.note, style="yellow"))

    leaves = Table(title="Leaves", title_justify="left")
    for column in ("leaf", "builds", "why not / what is skipped"):
        leaves.add_column(column)
    for leaf in report.leaves:
        if leaf.builds is None:
            verdict, detail = "[yellow]after training[/]", ""
        elif leaf.builds:
            skipped = {layer for name in leaf.steps
                       for layer in report.techniques[name].skipped}
            verdict = "[green]yes[/]"
            detail = f"leaves {len(skipped)} layer(s) as they are" if skipped else ""
        else:
            verdict, detail = "[red]no[/]", _short(leaf.reason)
        leaves.add_row(leaf.path, verdict, detail)
    parts.append(leaves)

    if report.techniques:
        techniques = Table(title="Techniques on the base model", title_justify="left")
        for column in ("technique", "wraps", "skips (why) / refuses"):
            techniques.add_column(column)
        for t in report.techniques.values():
            if t.ok:
                detail = "; ".join(f"{why}: {_names(layers)}"
                                   for why, layers in _by_reason(t.skipped).items())
            else:
                detail = "[red]refuses[/] " + (", ".join(t.refused) or _short(t.error, 160))
            techniques.add_row(t.name, str(len(t.wrapped)), detail or "-")
        parts.append(techniques)

    if report.ptq_error:
        parts.append(Text(f"int8 conversion of the base model failed: "
                          f"{_short(report.ptq_error)}", style="red"))
    if report.targets:
        targets = Table(title="Vela (the base model, int8)", title_justify="left")
        for column in ("target", "NPU ops", "CPU ops", "on the CPU"):
            targets.add_column(column)
        for t in report.targets:
            if t.error:
                targets.add_row(t.accelerator_config, "-", "-", f"[red]{_short(t.error, 160)}[/]")
            else:
                targets.add_row(t.accelerator_config, str(t.npu_ops), str(t.cpu_ops),
                                ", ".join(sorted(set(t.cpu_operators))) or "-")
        parts.append(targets)
    if report.model and not report.qat_converted and any(
            leaf.path.split(SEPARATOR)[-1] in QAT_MODES for leaf in report.leaves):
        parts.append(Text("The QAT leaves' int8 conversion was not tried (`--convert-qat` tries "
                          "it; it takes as long as a TFLiteConverter step).", style="dim"))
    parts.append(Text(f"Fine-tuning: {report.fine_tuning_steps} Keras step(s) (Pruner / "
                      f"SparseClusterer / PreservingQAT), at most {report.max_fine_tuning_epochs} "
                      f"epochs together. Checked in {report.seconds:.0f} s."))
    return Group(*parts)


__all__ = ["preflight", "PreflightReport", "LeafReport", "TechniqueReport", "TargetReport",
           "SplitReport", "fine_tuning_steps", "render"]
