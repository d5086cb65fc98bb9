"""Config validation: every error names the key, the bad value and what is allowed."""
import pytest
import yaml

from collabopt.components.core.errors import ConfigError
from collabopt.components.core.leaves import LEAVES
from collabopt.pipelines.config import load_config, parse_config
from collabopt.pipelines.demo.setup import demo_config


def _raw(**overrides):
    raw = demo_config()
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def test_demo_config_is_valid_and_builds_every_leaf(tmp_path):
    config = parse_config(_raw(), base_dir=str(tmp_path))
    assert config.leaves == list(LEAVES)
    assert config.pipeline_root == str(tmp_path / "pipeline_root")
    assert config.data.examples == str(tmp_path / "data")


def test_unknown_key_is_an_error_naming_it():
    raw = _raw()
    raw["thresholds"]["max_latency_ms"] = 3
    with pytest.raises(ConfigError, match=r"thresholds\.max_latency_ms: unknown key"):
        parse_config(raw)


@pytest.mark.parametrize("override, match", [
    ({"thresholds__min_accuracy": 1.5}, r"thresholds: min_accuracy=1\.5 is out of range; it must be in \[0, 1\]"),
    ({"thresholds__max_inference_ms": -1}, r"thresholds: max_inference_ms=-1\.0 is out of range"),
    ({"thresholds__max_tflite_bytes": "big"}, r"thresholds\.max_tflite_bytes: .*valid integer.*\(got 'big'\)"),
    ({"mode": "greedy"}, r"mode: .*'exhaustive', 'progressive' or 'search' \(got 'greedy'\)"),
    ({"pruning__target_sparsity": [0.5, 1.2]}, r"pruning: .*target_sparsity.*1\.2"),
    ({"clustering__number_of_clusters": [16, 1]}, r"clustering: .*number_of_clusters"),
    ({"clustering__number_of_clusters": []}, r"clustering.number_of_clusters: give one level"),
    ({"objective_tolerance": 2}, r"objective_tolerance: .*less than or equal to 1"),
    ({"leaves": ["prune>qat"]}, r"leaves: .*unknown leaf 'prune>qat'; allowed: ptq, qat"),
    ({"pruning__target_sparsity": 1.0}, r"pruning: .*target_sparsity"),
    ({"pruning__sparsity_m_by_n": "4:2"}, r"pruning: sparsity_m_by_n='4:2' must be 'm:n'"),
    ({"clustering__cluster_centroids_init": "kmeans"}, r"clustering\.cluster_centroids_init"),
    ({"targets": [{"accelerator_config": "ethos-u99"}]}, r"targets\[0\]: .*ethos-u99"),
    ({"training__epochs": 0}, r"training\.epochs: .*greater than or equal to 1"),
    ({"training__max_epochs": 0}, r"training\.max_epochs: .*greater than or equal to 1"),
    ({"training__patience": 0}, r"training\.patience: .*greater than or equal to 1"),
    ({"training__recovery_tolerance": -0.01}, r"training\.recovery_tolerance: .*greater than"),
    ({"training__validation_fraction": 0.6}, r"training\.validation_fraction: .*less than"),
    ({"data__feature_shape": [8, 0, 1]}, r"data: feature_shape"),
])
def test_bad_values_name_key_value_and_allowed(override, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(_raw(**override))


def test_training_defaults_fine_tune_until_recovered_and_epochs_stays_available():
    raw = _raw()
    raw["training"] = {}
    training = parse_config(raw).training
    assert training.epochs is None and training.max_epochs == 8 and training.patience == 2
    assert training.recovery_tolerance == 0.005 and training.validation_fraction == 0.1
    assert parse_config(_raw(training__epochs=3)).training.epochs == 3


def test_base_model_needs_exactly_one_source():
    raw = _raw()
    raw["base_model"]["path"] = "model_dir"
    with pytest.raises(ConfigError, match="base_model: set exactly one of `path`"):
        parse_config(raw)


def test_baseline_leaf_is_always_built():
    config = parse_config(_raw(leaves=["prune>pqat"]))
    assert config.leaves == ["ptq", "prune>pqat"]


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist. `collabopt demo` writes one"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(str(bad))


def test_load_config_resolves_paths_relative_to_the_file(tmp_path):
    path = tmp_path / "sub" / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(_raw()))
    config = load_config(str(path))
    assert config.metadata == str(tmp_path / "sub" / "metadata.sqlite")


def _local_config(tmp_path, **base_model):
    from collabopt.pipelines.demo.data import write_digits_examples

    write_digits_examples(str(tmp_path / "data"))
    raw = _raw()
    raw["base_model"] = base_model or raw["base_model"]
    return parse_config(raw, base_dir=str(tmp_path))


def test_local_inputs_missing_model_is_named_before_the_run(tmp_path):
    from collabopt.pipelines.config import check_local_inputs

    config = _local_config(tmp_path, path="no_such_model")
    with pytest.raises(ConfigError, match="base_model.path: .*no_such_model.* does not exist"):
        check_local_inputs(config)
    (tmp_path / "not_a_model").mkdir()
    config = _local_config(tmp_path, path="not_a_model")
    with pytest.raises(ConfigError, match="holds no SavedModel"):
        check_local_inputs(config)


def test_local_inputs_empty_split_is_named(tmp_path):
    from collabopt.pipelines.config import check_local_inputs

    config = _local_config(tmp_path)
    check_local_inputs(config)  # the demo data is complete
    config = config.model_copy(update={"data": config.data.model_copy(
        update={"eval_pattern": "validation/*"})})
    with pytest.raises(ConfigError, match=r"data.eval_pattern: no file matches 'validation/\*'"):
        check_local_inputs(config)
