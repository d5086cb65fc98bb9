"""The zoo: its generated data, its builders, the TFRecord writer and quick training."""
from __future__ import annotations

import numpy as np
import pytest

from collabopt.components.core.data import FeatureSpec, dataset_from_tfrecords
from collabopt.components.core.qat import load_model
from collabopt.pipelines import zoo


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_each_workload_builds_a_model_for_its_data(name):
    (x_train, y_train), (x_eval, y_eval) = zoo.workload(name).load(seed=0)
    assert len(x_train) > 1000 and len(x_eval) > 300
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    num_classes = int(y_train.max()) + 1
    assert set(np.unique(y_eval)) <= set(range(num_classes))
    model = zoo.workload(name).build(input_shape=x_train.shape[1:], num_classes=num_classes)
    assert model.output_shape == (None, num_classes)
    assert model(x_eval[:2]).shape == (2, num_classes)


def test_generated_data_is_deterministic_and_class_dependent():
    a, b = zoo.signals_1d(seed=3), zoo.signals_1d(seed=3)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], zoo.signals_1d(seed=4)[0][0])
    (x, y), _ = zoo.kws_features(noise=0.0, max_shift=0)
    # Without noise or shift, examples of one class differ only by their scale.
    first, second = x[y == 0][:2]
    ratio = first[np.abs(second) > 1e-3] / second[np.abs(second) > 1e-3]
    assert np.allclose(ratio, ratio[0], rtol=1e-4)
    assert not np.allclose(x[y == 0][0], x[y == 1][0], atol=0.1)


def test_image_variants_keep_the_digits_split():
    (small, labels), _ = zoo.digits_images()
    (large, same_labels), _ = zoo.digits_images(size=32, channels=3)
    assert small.shape[1:] == (8, 8, 1) and large.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(labels, same_labels)
    assert zoo.digits_images(flat=True)[0][0].shape[1:] == (64,)


def test_write_workload_stores_data_and_a_model_a_pipeline_can_read(tmp_path):
    written = zoo.write_workload("cnn_1d", str(tmp_path), feature_key="signal",
                                 label_key="class_id", epochs=3)
    spec = FeatureSpec(feature_key="signal", label_key="class_id",
                       feature_shape=written.feature_shape)
    eval_ds = dataset_from_tfrecords(str(tmp_path / "data" / "eval"), spec, batch_size=64)
    model = load_model(written.model_path)
    from collabopt.components.core.training import keras_accuracy

    # The model reads the written examples as well as the arrays it was measured on.
    assert keras_accuracy(model, eval_ds) == pytest.approx(written.accuracy, abs=1e-6)
    assert written.data_config()["feature_shape"] == [128, 1]


@pytest.mark.parametrize("name", ["mlp", "cnn_1d"])
def test_quick_workloads_train_to_a_useful_accuracy(name):
    assert zoo.train(name).accuracy > 0.85
