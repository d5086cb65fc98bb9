"""Component parameters, the Evaluator's thresholds and artifact plumbing (fast, no pipeline)."""
from __future__ import annotations

import json
import os

import pytest

from collabopt.components import keys, params
from collabopt.components.core.errors import ConfigError, ModelLoadError
from collabopt.components.core.selection import LeafMetrics, Thresholds, reasons as judge


@pytest.mark.parametrize("value, expected", [
    ("8,8,1", (8, 8, 1)), ("[8, 8, 1]", (8, 8, 1)), ([28, 28], (28, 28)), (None, None), ("", None),
])
def test_parse_int_list(value, expected):
    assert params.parse_int_list("feature_shape", value) == expected


@pytest.mark.parametrize("value", ["8,-1", "8,x", "[8.5]", "{}", "[]"])
def test_parse_int_list_rejects(value):
    with pytest.raises(ConfigError, match="feature_shape"):
        params.parse_int_list("feature_shape", value)


@pytest.mark.parametrize("value, expected", [
    ("2:4", (2, 4)), ("2,4", (2, 4)), ("[1, 4]", (1, 4)), ((2, 4), (2, 4)), (None, None)])
def test_parse_m_by_n(value, expected):
    assert params.parse_m_by_n(value) == expected


@pytest.mark.parametrize("value", ["4:2", "2:2", "2", "2:4:8", "a:b"])
def test_parse_m_by_n_rejects(value):
    with pytest.raises(ConfigError, match="sparsity_m_by_n.*'2:4'"):
        params.parse_m_by_n(value)


def test_parse_str_list():
    assert params.parse_str_list("layers", "conv1, dense1") == ("conv1", "dense1")
    assert params.parse_str_list("layers", '["conv1"]') == ("conv1",)
    assert params.parse_str_list("layers", None) is None
    with pytest.raises(ConfigError, match="layers"):
        params.parse_str_list("layers", "[1]")


def test_pruning_params_from_exec_properties():
    p = params.pruning_params({keys.TARGET_SPARSITY_KEY: 0.6, keys.SPARSITY_M_BY_N_KEY: "2:4",
                               keys.LAYERS_KEY: "conv2,dense1", keys.END_STEP_KEY: None})
    assert p.target_sparsity == 0.6 and p.sparsity_m_by_n == (2, 4)
    assert p.layers == ("conv2", "dense1") and p.end_step is None


@pytest.mark.parametrize("flag, expected", [(True, True), (False, False), (1, True), (0, False)])
def test_clustering_flags_accept_kubeflows_integers(flag, expected):
    """KFP v2 hands bool ExecutionParameters to the step as NUMBER_INTEGER (1 / 0)."""
    cp = params.clustering_params({keys.NUMBER_OF_CLUSTERS_KEY: 8, keys.PRESERVE_SPARSITY_KEY: flag,
                                   keys.CLUSTER_PER_CHANNEL_KEY: flag})
    assert cp.preserve_sparsity is expected and cp.cluster_per_channel is expected


@pytest.mark.parametrize("flag", [2, "yes", 1.0])
def test_clustering_flags_reject_other_values(flag):
    with pytest.raises(ConfigError, match="preserve_sparsity=.*must be true or false"):
        params.clustering_params({keys.PRESERVE_SPARSITY_KEY: flag})


def test_training_params_from_exec_properties():
    recover = params.training_params({keys.EPOCHS_KEY: None, keys.MAX_EPOCHS_KEY: 5,
                                      keys.PATIENCE_KEY: 1, keys.RECOVERY_TOLERANCE_KEY: 0.01,
                                      keys.VALIDATION_FRACTION_KEY: 0.2})
    assert recover.recovers and recover.max_epochs == 5 and recover.patience == 1
    assert recover.recovery_tolerance == 0.01 and recover.validation_fraction == 0.2
    defaults = params.training_params({})
    assert defaults.epochs is None and defaults.max_epochs == params.DEFAULT_MAX_EPOCHS
    assert params.training_params({keys.EPOCHS_KEY: 2}).epochs == 2
    for key, value in ((keys.EPOCHS_KEY, 0), (keys.MAX_EPOCHS_KEY, 0), (keys.PATIENCE_KEY, 1.5),
                       (keys.RECOVERY_TOLERANCE_KEY, 2.0), (keys.VALIDATION_FRACTION_KEY, 0.0)):
        with pytest.raises(ConfigError, match=f"{key}={value!r}"):
            params.training_params({key: value})


def test_feature_spec_takes_the_model_shape_when_unset():
    assert params.feature_spec({}, (8, 8, 1)).feature_shape == (8, 8, 1)
    assert params.feature_spec({keys.FEATURE_SHAPE_KEY: "64"}, (8, 8, 1)).feature_shape == (64,)
    with pytest.raises(ConfigError, match="feature_shape"):
        params.feature_spec({})


def test_parameters_json_is_sorted_and_drops_none():
    assert params.parameters_json({"b": 1, "a": None, "c": "x"}) == '{"b": 1, "c": "x"}'


def test_thresholds_validate_ranges():
    with pytest.raises(ConfigError, match=r"max_accuracy_drop=2.*\[0, 1\]"):
        Thresholds(max_accuracy_drop=2)
    with pytest.raises(ConfigError, match="max_tflite_bytes=0"):
        Thresholds(max_tflite_bytes=0)
    with pytest.raises(ConfigError, match="max_inference_ms"):
        Thresholds(max_inference_ms=-1.0)


def test_judge_names_every_failed_threshold_with_the_measured_value():
    measured = LeafMetrics("prune>ptq", int8_accuracy=0.8, tflite_bytes=60000,
                           accuracy_drop=0.15, inference_ms=2.5, sram_bytes=40000)
    reasons = judge(measured, Thresholds(min_accuracy=0.9, max_accuracy_drop=0.05,
                                         max_tflite_bytes=50000, max_inference_ms=1.0,
                                         max_sram_bytes=30000))
    assert len(reasons) == 5
    text = json.dumps(reasons)
    for fragment in ("int8_accuracy 0.8 is below min_accuracy=0.9", "accuracy_drop 0.15 is above",
                     "tflite_bytes 60000 is above max_tflite_bytes=50000",
                     "inference_ms 2.5 is above max_inference_ms=1",
                     "sram_bytes 40000 is above max_sram_bytes=30000"):
        assert fragment in text
    assert judge(measured, Thresholds(min_accuracy=0.5, max_inference_ms=3.0)) == []
    assert judge(measured, Thresholds()) == []


def test_judge_drop_does_not_apply_to_the_baseline_but_missing_vela_figures_fail():
    baseline = LeafMetrics("ptq", int8_accuracy=0.9, tflite_bytes=1)
    assert judge(baseline, Thresholds(max_accuracy_drop=0.01)) == []
    reasons = judge(baseline, Thresholds(max_inference_ms=1.0))
    assert reasons and "inference_ms was not measured" in reasons[0]


# --- artifact plumbing ------------------------------------------------------------------------

def _model_artifact(uri):
    from tfx.types import standard_artifacts

    artifact = standard_artifacts.Model()
    artifact.uri = str(uri)
    return artifact


def test_model_path_prefers_trainer_format_serving(tmp_path):
    from collabopt.components import artifact_io

    (tmp_path / "Format-Serving").mkdir()
    (tmp_path / "Format-Serving" / "saved_model.pb").write_bytes(b"")
    assert artifact_io.model_path(_model_artifact(tmp_path)) == str(tmp_path / "Format-Serving")


def test_model_path_accepts_a_model_saved_directly(tmp_path):
    from collabopt.components import artifact_io

    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert artifact_io.model_path(_model_artifact(tmp_path)) == str(tmp_path)
    other = tmp_path / "h5"
    other.mkdir()
    (other / "model.h5").write_bytes(b"")
    assert artifact_io.model_path(_model_artifact(other)) == str(other / "model.h5")


def test_model_path_explains_an_empty_artifact(tmp_path):
    from collabopt.components import artifact_io

    with pytest.raises(ModelLoadError, match="Format-Serving.*saved_model.pb"):
        artifact_io.model_path(_model_artifact(tmp_path))


def test_technique_path_replaces_base():
    from collabopt.components import artifact_io, types

    base = _model_artifact("/x")
    assert artifact_io.technique_path(base) == "base"
    assert artifact_io.technique_path(base, "prune") == "prune"
    pruned = _model_artifact("/y")
    pruned.set_string_custom_property(types.TECHNIQUE_PATH, "prune>cluster")
    assert artifact_io.technique_path(pruned, "pcqat") == "prune>cluster>pcqat"


def test_set_properties_types():
    from collabopt.components import artifact_io

    artifact = _model_artifact("/x")
    artifact_io.set_properties(artifact, {"i": 3, "f": 0.5, "s": "a", "b": True, "l": ["x"],
                                          "none": None})
    assert artifact.get_int_custom_property("i") == 3
    assert artifact.get_float_custom_property("f") == 0.5
    assert artifact.get_string_custom_property("s") == "a"
    assert artifact.get_int_custom_property("b") == 1
    assert json.loads(artifact.get_string_custom_property("l")) == ["x"]
    assert not artifact.has_custom_property("none")
    assert artifact_io.get_property(artifact, "missing", 7) == 7


def test_split_dataset_names_missing_split(tmp_path):
    from tfx.types import standard_artifacts

    from collabopt.components import artifact_io
    from collabopt.components.core.errors import DatasetError

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path)
    examples.split_names = '["train"]'
    os.makedirs(tmp_path / "Split-train")
    with pytest.raises(DatasetError, match="no 'eval' split"):
        artifact_io.split_dataset([examples], "eval", {keys.FEATURE_SHAPE_KEY: "8,8,1"})


def test_a_keras_step_aims_at_the_reference_its_input_recorded():
    from tfx.types import standard_artifacts

    from collabopt.components import artifact_io, types
    from collabopt.components.keras_step import fine_tuning_params

    trained = standard_artifacts.Model()  # a Trainer's output: no reference recorded
    assert fine_tuning_params(trained, {}).reference_floor is None
    pruned = standard_artifacts.Model()
    artifact_io.set_properties(pruned, {types.REFERENCE_ACCURACY: 0.975})
    assert fine_tuning_params(pruned, {}).reference_floor == pytest.approx(0.975)
    # Fixed epochs measure no recovery, so there is nothing to aim at.
    assert fine_tuning_params(pruned, {keys.EPOCHS_KEY: 2}).reference_floor is None
