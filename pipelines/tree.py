"""Config -> TFX pipeline: the collaborative-optimization deployment tree (ARCHITECTURE.md).

Each leaf (a template of `config.leaves` at one combination of the levels in
`pruning.target_sparsity` / `clustering.number_of_clusters`) is a chain of techniques from the
base model ending in an int8 `.tflite`, which is Vela-compiled for every target and evaluated; a
Selector picks the leaf that meets the thresholds and a stock TFX Pusher deploys it. Shared
prefixes (e.g. `prune75` under `prune75>ptq`, `prune75>cluster8>pcqat` and
`prune75>cluster16>pcqat`) are built once. Component ids carry the leaf's path with its levels
(`PreservingQAT_prune75_cluster8_pcqat`). Knows nothing of runners.
"""
from __future__ import annotations

import re
from typing import Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_node
from tfx.types import standard_artifacts

from collabopt.components.types import BLESSED
from collabopt.components import (Evaluator, PreservingQAT, Pruner, SparseClusterer, TFLiteConverter,
                        VelaCompiler, keys)
from collabopt.components.core.leaves import (BASELINE_LEAF, CLUSTER, PRUNE, SEPARATOR, Leaf,
                                             depth, leaf_key)
from collabopt.components.selector.component import Selector
from collabopt.pipelines.config import Mode, PipelineConfig


def _target_key(accelerator_config: str, index: int) -> str:
    return f"{index}_{re.sub(r'[^A-Za-z0-9]+', '_', accelerator_config)}"


class _TreeBuilder:
    def __init__(self, config: PipelineConfig):
        self.config = config
        self.nodes: list[base_node.BaseNode] = []
        self.models: dict[str, tfx.dsl.Channel] = {}     # technique prefix -> model channel
        self.evaluations: dict[str, tfx.dsl.Channel] = {}
        data = config.data
        self.data_kwargs = {
            keys.FEATURE_KEY_KEY: data.feature_key,
            keys.LABEL_KEY_KEY: data.label_key,
            keys.FEATURE_SHAPE_KEY: ",".join(str(d) for d in data.feature_shape),
            keys.FEATURE_DTYPE_KEY: data.feature_dtype,
            keys.FEATURE_SCALE_KEY: data.feature_scale,
            keys.BATCH_SIZE_KEY: config.training.batch_size,
        }
        training = config.training
        self.training_kwargs = {
            key: getattr(training, key) for key in (
                keys.EPOCHS_KEY, keys.MAX_EPOCHS_KEY, keys.PATIENCE_KEY,
                keys.RECOVERY_TOLERANCE_KEY, keys.VALIDATION_FRACTION_KEY,
                keys.LEARNING_RATE_KEY, keys.SEED_KEY)}
        self.target_names = config.target_names()

    def add(self, node):
        self.nodes.append(node)
        return node

    # --- inputs ------------------------------------------------------------------------------
    def inputs(self) -> None:
        data = self.config.data
        self.example_gen = self.add(tfx.components.ImportExampleGen(
            input_base=data.examples,
            input_config=tfx.proto.Input(splits=[
                tfx.proto.Input.Split(name="train", pattern=data.train_pattern),
                tfx.proto.Input.Split(name="eval", pattern=data.eval_pattern)])))
        self.examples = self.example_gen.outputs["examples"]
        base = self.config.base_model
        if base.path:
            importer = self.add(tfx.dsl.Importer(
                source_uri=base.path, artifact_type=standard_artifacts.Model,
                reimport=False).with_id("BaseModelImporter"))
            self.models[""] = importer.outputs["result"]
        else:
            custom_config = {
                "feature_key": self.config.data.feature_key,
                "label_key": self.config.data.label_key,
                "feature_shape": list(self.config.data.feature_shape),
                "batch_size": self.config.training.batch_size,
                "epochs": base.train_epochs, **base.custom_config}
            trainer_source = ({"module_file": base.module_file} if base.module_file
                              else {"run_fn": base.run_fn})
            trainer = self.add(tfx.components.Trainer(
                examples=self.examples,
                train_args=tfx.proto.TrainArgs(num_steps=0),
                eval_args=tfx.proto.EvalArgs(num_steps=0),
                custom_config=custom_config, **trainer_source))
            self.models[""] = trainer.outputs["model"]

    # --- techniques --------------------------------------------------------------------------
    def model_for(self, leaf: Leaf, n_steps: int) -> tfx.dsl.Channel:
        """The model channel after the first `n_steps` techniques of `leaf` (0: the base model),
        building each step once: prefixes are keyed by their path with levels."""
        prefix = SEPARATOR.join(leaf.steps[:n_steps])
        if prefix in self.models:
            return self.models[prefix]
        source = self.model_for(leaf, n_steps - 1)
        technique = leaf.template.split(SEPARATOR)[n_steps - 1]
        common = dict(model=source, examples=self.examples, **self.data_kwargs,
                      **self.training_kwargs)
        if technique == PRUNE:
            p = self.config.pruning
            node = Pruner(
                target_sparsity=leaf.target_sparsity, pruning_schedule=p.pruning_schedule,
                initial_sparsity=p.initial_sparsity, begin_step=p.begin_step,
                end_step=p.end_step, frequency=p.frequency, sparsity_m_by_n=p.sparsity_m_by_n,
                pruning_policy=p.pruning_policy,
                layers=",".join(p.layers) if p.layers else None, **common)
        elif technique == CLUSTER:
            c = self.config.clustering
            node = SparseClusterer(
                number_of_clusters=leaf.number_of_clusters,
                cluster_centroids_init=c.cluster_centroids_init,
                preserve_sparsity=PRUNE in leaf.template.split(SEPARATOR)[:n_steps - 1],
                cluster_per_channel=c.cluster_per_channel,
                layers=",".join(c.layers) if c.layers else None, **common)
        else:
            raise ValueError(f"unknown technique {technique!r} in {leaf.template!r}")
        node = self.add(node.with_id(f"{type(node).__name__}_{leaf_key(prefix)}"))
        self.models[prefix] = node.outputs[keys.OPTIMIZED_MODEL_KEY]
        return self.models[prefix]

    # --- leaves ------------------------------------------------------------------------------
    def leaf(self, leaf: Leaf) -> None:
        path, key, last = leaf.path, leaf.key, leaf.steps[-1]
        model = self.model_for(leaf, len(leaf.steps) - 1)
        if last != "ptq":
            qat = self.add(PreservingQAT(
                model=model, examples=self.examples, mode=last, **self.data_kwargs,
                **self.training_kwargs).with_id(f"PreservingQAT_{key}"))
            model = qat.outputs[keys.OPTIMIZED_MODEL_KEY]
        conv = self.config.conversion
        converter = self.add(TFLiteConverter(
            model=model, examples=self.examples, quantization="int8", int8_io=conv.int8_io,
            num_calibration_samples=conv.num_calibration_samples,
            **self.data_kwargs).with_id(f"TFLiteConverter_{key}"))
        tflite = converter.outputs[keys.TFLITE_MODEL_KEY]
        vela_models = {}
        for index, (target, name) in enumerate(zip(self.config.targets, self.target_names)):
            vela = self.add(VelaCompiler(
                tflite_model=tflite, accelerator_config=target.accelerator_config,
                system_config=target.system_config, memory_mode=target.memory_mode,
                optimise=target.optimise,
            ).with_id(f"VelaCompiler_{key}_{_target_key(target.accelerator_config, index)}"))
            vela_models[name] = vela.outputs[keys.VELA_MODEL_KEY]
        baseline = None if leaf.is_baseline else self.evaluations[BASELINE_LEAF]
        # One target: its Vela model alone (the spec of a one-target pipeline is unchanged);
        # several: every target's, judged per target.
        vela_inputs = ({"vela_models": vela_models} if len(vela_models) > 1
                       else {"vela_model": next(iter(vela_models.values()))})
        evaluator = self.add(Evaluator(
            tflite_model=tflite, examples=self.examples, **vela_inputs,
            baseline_evaluation=baseline, **self.config.thresholds.as_dict(),
            **self.data_kwargs).with_id(f"Evaluator_{key}"))
        self.evaluations[path] = evaluator.outputs[keys.EVALUATION_KEY]

    def selector(self, node_id: str, search_trace: Optional[str] = None,
                 per_target: bool = False) -> Selector:
        """A Selector over the leaves evaluated so far; `per_target`: one blessing per target
        (the final Selector), else the primary target's only (progressive mode's gates)."""
        targets = self.target_names if per_target and len(self.target_names) > 1 else None
        return self.add(Selector(
            evaluations=dict(self.evaluations),
            thresholds=self.config.thresholds.as_dict(),
            objective=self.config.objective,
            objective_tolerance=self.config.objective_tolerance,
            search_trace=search_trace, targets=targets).with_id(node_id))

    def select_and_push(self, search_trace: Optional[str] = None, push: bool = True) -> None:
        selector = self.selector("Selector", search_trace, per_target=True)
        if not push:
            return
        self.add(tfx.components.Pusher(
            model=selector.outputs[keys.MODEL_KEY],
            model_blessing=selector.outputs[keys.BLESSING_KEY],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=self.config.serving_dir))).with_id("Pusher"))

    def build_all(self, leaves: list[Leaf], search_trace: Optional[str] = None,
                  push: bool = True) -> None:
        for leaf in leaves:
            self.leaf(leaf)
        self.select_and_push(search_trace, push)

    def build_progressive(self) -> None:
        """Level n+1 runs only when no leaf up to level n met the thresholds (TFX conditionals).

        After each level a gate Selector (outside any condition, so it always runs) judges every
        leaf evaluated so far; the next level sits in a `Cond` on that gate's blessing. A skipped
        level leaves the next gate with the earlier leaves only, which already met the thresholds,
        so every deeper level is skipped too. The final Selector sees every leaf that ran.
        """
        leaves = self.config.all_leaves()
        levels = sorted({depth(leaf.template) for leaf in leaves})
        gate = None
        for level in levels:
            at_level = [leaf for leaf in leaves if depth(leaf.template) == level]
            if gate is None:
                for leaf in at_level:
                    self.leaf(leaf)
            else:
                blessed = gate.outputs[keys.BLESSING_KEY].future()[0].custom_property(BLESSED)
                with tfx.dsl.Cond(blessed == 0):
                    for leaf in at_level:
                        self.leaf(leaf)
            if level != levels[-1]:
                gate = self.selector(f"Gate_level{level}")
        self.select_and_push()


def create_pipeline(config: PipelineConfig,
                    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig],
                    leaves: Optional[list[Leaf]] = None,
                    search_trace: Optional[str] = None, push: bool = True) -> tfx.dsl.Pipeline:
    """The deployment tree for `config` as a TFX pipeline (runner-agnostic).

    `leaves` builds those leaves only (a round of `mode: search`, which also hands its trace to
    the Selector, and pushes only in its last round: `push`); by default every leaf of the config
    (`config.all_leaves()`), or the gated levels of `mode: progressive`.
    """
    builder = _TreeBuilder(config)
    builder.inputs()
    if leaves is not None:
        builder.build_all(leaves, search_trace, push)
    elif config.mode == Mode.PROGRESSIVE:
        builder.build_progressive()
    else:
        builder.build_all(config.all_leaves())
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=builder.nodes,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
