"""Vela compilation of int8 models for Ethos-U55 / U65 / U85 and parsing of its summary."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from collabopt.components.core import vela
from collabopt.components.core.data import representative_dataset
from collabopt.components.core.errors import ConfigError, VelaCompileError
from collabopt.components.core.keras_compat import keras, tf
from collabopt.components.core.tflite import QuantizationMode, convert


@pytest.fixture(scope="module")
def int8_digits(trained_digits_model, digits_train_ds):
    return convert(trained_digits_model, QuantizationMode.INT8,
                   representative_dataset(digits_train_ds, num_samples=50))


def _gather_channels(t):
    return tf.gather(t, [1, 0, 3, 2], axis=-1)  # GATHER: int8 in TFLite, not on Ethos-U55


def _tiny_with_gather():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Lambda(_gather_channels)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def _images():
    rng = np.random.default_rng(0)
    for _ in range(10):
        yield [rng.random((1, 8, 8, 1), dtype=np.float32)]


def _printed_ops(result):
    with open(os.path.join(os.path.dirname(result.tflite_path), "model_vela_log.txt")) as f:
        log = f.read()
    return {kind: int(n) for kind, n in re.findall(r"^(CPU|NPU) operators = (\d+)", log, re.M)}


@pytest.mark.parametrize("accelerator_config",
                         ["ethos-u55-128", "ethos-u65-256", "ethos-u85-256"])
def test_int8_digits_runs_all_on_the_npu(int8_digits, tmp_path, accelerator_config):
    result = vela.compile_model(int8_digits, vela.VelaOptions(accelerator_config), str(tmp_path))
    summary = result.summary
    assert summary.npu_ops > 0 and summary.cpu_ops == 0
    assert summary.cycles > 0 and summary.inference_ms > 0
    assert summary.sram_bytes > 0
    assert summary.flash_bytes + summary.dram_bytes >= summary.encoded_weight_bytes > 0
    assert summary.original_weight_bytes > 0
    assert os.path.exists(result.tflite_path) and os.path.exists(result.summary_csv_path)
    assert vela.parse_summary_csv(result.summary_csv_path) == summary
    assert _printed_ops(result) == {"CPU": 0, "NPU": summary.npu_ops}  # Vela's own count


def test_default_system_config_and_memory_mode_follow_the_family():
    for accelerator, family in (("ethos-u55-64", "U55"), ("ethos-u65-512", "U65"),
                                ("ethos-u85-1024", "U85")):
        options = vela.VelaOptions(accelerator)
        assert options.system_config.startswith(f"Ethos_{family}_")
        assert options.memory_mode in ("Shared_Sram", "Dedicated_Sram_384KB")
    assert vela.VelaOptions("ethos-u55-128").memory_mode == "Shared_Sram"


def test_optimise_size_and_performance_both_compile(int8_digits, tmp_path):
    size = vela.compile_model(int8_digits, vela.VelaOptions(optimise="Size"),
                              str(tmp_path / "size")).summary
    performance = vela.compile_model(
        int8_digits, vela.VelaOptions(optimise=vela.Optimise.PERFORMANCE),
        str(tmp_path / "performance")).summary
    assert size.cycles >= performance.cycles > 0
    assert size.sram_bytes <= performance.sram_bytes


def test_unsupported_op_stays_on_the_cpu(tmp_path):
    tflite_bytes = convert(_tiny_with_gather(), QuantizationMode.INT8, _images)
    result = vela.compile_model(tflite_bytes, vela.VelaOptions("ethos-u55-128"), str(tmp_path))
    assert result.summary.cpu_ops == 1 and result.summary.npu_ops >= 2
    assert _printed_ops(result) == {"CPU": 1, "NPU": result.summary.npu_ops}


def test_custom_config_file(int8_digits, tmp_path):
    ini = tmp_path / "board.ini"
    ini.write_text(
        "[System_Config.My_Board]\ncore_clock=100e6\naxi0_port=Sram\naxi1_port=OffChipFlash\n"
        "Sram_clock_scale=1.0\nOffChipFlash_clock_scale=0.25\n"
        "[Memory_Mode.My_Sram]\nconst_mem_area=Axi1\narena_mem_area=Axi0\ncache_mem_area=Axi0\n")
    options = vela.VelaOptions("ethos-u55-64", system_config="My_Board", memory_mode="My_Sram",
                               config_files=(str(ini),))
    result = vela.compile_model(int8_digits, options, str(tmp_path / "out"), name="digits")
    assert result.summary_csv_path.endswith("digits_summary_My_Board.csv")
    assert result.summary.cycles > 0 and result.summary.flash_bytes > 0


def test_garbage_and_corrupt_models_raise_vela_compile_error(int8_digits, tmp_path):
    with pytest.raises(VelaCompileError, match="not a TFLite flatbuffer"):
        vela.compile_model(os.urandom(1000), vela.VelaOptions(), str(tmp_path))
    with pytest.raises(VelaCompileError, match="vela --supported-ops-report"):
        vela.compile_model(int8_digits[:3000], vela.VelaOptions(), str(tmp_path))


def test_float_model_raises_vela_compile_error(tmp_path):
    float_bytes = convert(_tiny_with_gather(), QuantizationMode.FLOAT32)
    with pytest.raises(VelaCompileError, match="none of the .* operators .* on the NPU"):
        vela.compile_model(float_bytes, vela.VelaOptions(), str(tmp_path))


def test_unknown_options_are_config_errors():
    with pytest.raises(ConfigError, match="ethos-u55-128, ethos-u55-256"):
        vela.VelaOptions("ethos-u99-1")
    with pytest.raises(ConfigError, match="Ethos_U55_High_End_Embedded"):
        vela.VelaOptions(system_config="Fast_Board")
    with pytest.raises(ConfigError, match="Shared_Sram"):
        vela.VelaOptions(memory_mode="Lots_Of_Sram")
    with pytest.raises(ConfigError, match="Performance, Size"):
        vela.VelaOptions(optimise="Speed")
    with pytest.raises(ConfigError, match="not found"):
        vela.VelaOptions(config_files=("missing/board.ini",))
    assert vela.VelaOptions(optimise="size").optimise is vela.Optimise.SIZE
