"""Compile an int8 `.tflite` for an Arm Ethos-U NPU with Vela and read its performance estimate.

Vela runs as its own process (`python -m ethosu.vela`, the `vela` CLI) in a private temporary
directory; its outputs — the compiled `<name>_vela.tflite` and the summary CSV — are then copied
to `output_dir` (local or a remote filesystem URI). The summary CSV is parsed into a typed
`VelaSummary`, as Arm's mlia does.
"""
from __future__ import annotations

import configparser
import csv
import dataclasses
import enum
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Sequence

from ethosu.vela.architecture_features import CONFIG_FILES_PATH, Accelerator

from collabopt.components.core.errors import ConfigError, VelaCompileError
from collabopt.components.core.keras_compat import tf

ACCELERATOR_CONFIGS: tuple[str, ...] = tuple(Accelerator.member_list())
DEFAULT_CONFIG_FILE = "Arm/vela.ini"  # shipped with Vela, in its config_files directory
# Vela's own defaults per NPU family (ArchitectureFeatures._set_default_sys_config /
# _set_default_mem_mode), passed explicitly so they are recorded and Vela does not warn.
DEFAULT_SYSTEM_CONFIGS = {
    "ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65": ("Ethos_U65_Client_Server", "Dedicated_Sram_384KB"),
    "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}
SUPPORTED_OPS_HINT = ("Check the operators with `vela --supported-ops-report` (it writes "
                      "SUPPORTED_OPS.md) and convert the model to full-integer int8.")
_ETHOS_U_CUSTOM_CODE = b"ethos-u"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Optimise(str, enum.Enum):
    PERFORMANCE = "Performance"
    SIZE = "Size"


def _resolve_config_file(path: str) -> str:
    """Vela's rule: a relative `dir/file.ini` names a file in Vela's config_files directory."""
    norm = os.path.normpath(path)
    parts = norm.split(os.sep)
    if len(parts) == 2 and not os.path.isabs(norm) and not path.startswith((".", "~")):
        return os.path.join(CONFIG_FILES_PATH, norm)
    return os.path.abspath(os.path.expanduser(path))


def _vela_config_arg(path: str) -> str:
    """What to pass to `--config`: Vela-shipped files as Vela names them, others absolute."""
    resolved = _resolve_config_file(path)
    if os.path.dirname(os.path.dirname(resolved)) == os.path.normpath(CONFIG_FILES_PATH):
        return os.path.relpath(resolved, CONFIG_FILES_PATH)
    return resolved


@dataclasses.dataclass(frozen=True)
class VelaOptions:
    """Vela's target options, in Vela's words. `None` system_config / memory_mode take Vela's own
    default for the accelerator's family from `Arm/vela.ini` (see DEFAULT_SYSTEM_CONFIGS).

    config_files: Vela .ini files (`Arm/vela.ini` style names are looked up in Vela's
    config_files directory); empty means Vela's `Arm/vela.ini`.
    """

    accelerator_config: str = "ethos-u55-128"
    system_config: str | None = None
    memory_mode: str | None = None
    optimise: Optimise = Optimise.PERFORMANCE
    config_files: tuple[str, ...] = ()

    def __post_init__(self):
        if self.accelerator_config not in ACCELERATOR_CONFIGS:
            raise ConfigError(
                f"accelerator_config {self.accelerator_config!r} is not a Vela accelerator "
                f"configuration; use one of: {', '.join(ACCELERATOR_CONFIGS)}.")
        object.__setattr__(self, "optimise", _optimise(self.optimise))
        files = (self.config_files,) if isinstance(self.config_files, str) else self.config_files
        object.__setattr__(self, "config_files", tuple(str(f) for f in files or ()))
        sections = self._config_sections()
        family_defaults = DEFAULT_SYSTEM_CONFIGS[self.accelerator_config.rsplit("-", 1)[0]]
        for field, kind, default in (("system_config", "System_Config", family_defaults[0]),
                                     ("memory_mode", "Memory_Mode", family_defaults[1])):
            value = getattr(self, field)
            if value is None:
                value = default
                object.__setattr__(self, field, value)
            available = sorted(s.split(".", 1)[1] for s in sections if s.startswith(kind + "."))
            if value not in available:
                raise ConfigError(
                    f"{field} {value!r} is not defined in the Vela config file(s) "
                    f"{list(self.effective_config_files)}; use one of: {', '.join(available)}"
                    + (", or add a config file that defines it." if available else
                       ". Add a config file that defines it to config_files."))

    @property
    def effective_config_files(self) -> tuple[str, ...]:
        return self.config_files or (DEFAULT_CONFIG_FILE,)

    def _config_sections(self) -> list[str]:
        parser = configparser.ConfigParser()
        for path in self.effective_config_files:
            resolved = _resolve_config_file(path)
            if not resolved.endswith(".ini"):
                raise ConfigError(
                    f"config_files entry {path!r} is not a Vela .ini configuration file.")
            if not os.access(resolved, os.R_OK):
                raise ConfigError(
                    f"config_files entry {path!r} not found (looked at {resolved}). Give a path "
                    "to a Vela .ini file, or a name such as 'Arm/vela.ini' from "
                    "`vela --list-config-files`.")
            try:
                parser.read(resolved)
            except configparser.Error as exc:
                raise ConfigError(f"Vela config file {path!r} cannot be parsed: {exc}") from exc
        return parser.sections()

    def cli_args(self) -> list[str]:
        args = ["--accelerator-config", self.accelerator_config,
                "--system-config", self.system_config,
                "--memory-mode", self.memory_mode,
                "--optimise", self.optimise.value]
        for path in self.effective_config_files:
            args += ["--config", _vela_config_arg(path)]
        return args


def _optimise(value) -> Optimise:
    if isinstance(value, Optimise):
        return value
    for member in Optimise:
        if str(value).lower() in (member.value.lower(), member.name.lower()):
            return member
    raise ConfigError(f"optimise {value!r} is not a Vela optimisation strategy; use one of: "
                      f"{', '.join(m.value for m in Optimise)}.")


@dataclasses.dataclass(frozen=True)
class VelaSummary:
    """Vela's estimate for one inference. Memory in bytes (Vela reports KiB).

    flash_bytes: off-chip plus on-chip flash used (weights in Shared_Sram mode); dram_bytes: DRAM
    used (weights and arena in the Dedicated_Sram modes); npu_ops / cpu_ops: operators of the
    input model that Vela placed on the NPU / left to the CPU.
    """

    cycles: int
    inference_ms: float
    sram_bytes: int
    flash_bytes: int
    original_weight_bytes: int
    encoded_weight_bytes: int
    npu_ops: int
    cpu_ops: int
    dram_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class VelaResult:
    tflite_path: str
    summary_csv_path: str
    summary: VelaSummary


def compile_model(tflite_bytes: bytes, options: VelaOptions, output_dir: str,
                  name: str = "model", timeout_s: float = 900.0) -> VelaResult:
    """Compiles `tflite_bytes` with Vela into `output_dir`.

    Writes `<name>_vela.tflite`, `<name>_summary_<system_config>.csv` (Vela's names) and
    `<name>_vela_log.txt` (Vela's console output) to `output_dir`.

    Raises:
      ConfigError: `name` is not a plain file name.
      VelaCompileError: Vela failed (with the tail of its error output), or placed no operator
        on the NPU (a float model).
    """
    if not _NAME_PATTERN.match(name or ""):
        raise ConfigError(
            f"name {name!r} must be a plain file name (letters, digits, '_', '.', '-').")
    if not isinstance(options, VelaOptions):
        raise ConfigError(f"options must be a VelaOptions, got {type(options).__name__}.")
    target = f"{options.accelerator_config} ({options.system_config}, {options.memory_mode})"
    data = bytes(tflite_bytes or b"")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise VelaCompileError(
            f"Vela could not compile {name!r} for {target}: the input is not a TFLite flatbuffer "
            f"(no 'TFL3' identifier in {len(data)} bytes). Pass the bytes of an int8 .tflite file.")

    work = tempfile.mkdtemp(prefix="collabopt_vela_")
    try:
        network = os.path.join(work, name + ".tflite")
        with open(network, "wb") as f:
            f.write(data)
        out = os.path.join(work, "out")
        cmd = [sys.executable, "-m", "ethosu.vela", network, "--output-dir", out,
               *options.cli_args()]
        logging.info("Running Vela: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise VelaCompileError(
                f"Vela did not finish compiling {name!r} for {target} within {timeout_s:.0f} s. "
                "Try optimise 'Size' or a smaller model.") from exc
        log = f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        if proc.returncode != 0:
            raise VelaCompileError(
                f"Vela could not compile {name!r} for {target} (exit code {proc.returncode}): "
                f"{_tail(proc.stderr or proc.stdout)}. {SUPPORTED_OPS_HINT}")

        compiled = os.path.join(out, f"{name}_vela.tflite")
        summary_csv = os.path.join(out, f"{name}_summary_{options.system_config}.csv")
        for path in (compiled, summary_csv):
            if not os.path.exists(path):
                raise VelaCompileError(
                    f"Vela exited without writing {os.path.basename(path)} for {name!r} on "
                    f"{target}: {_tail(proc.stdout + proc.stderr)}")
        summary = parse_summary_csv(summary_csv, compiled)
        _check_vela_counts(summary, proc.stdout)
        if summary.npu_ops == 0:
            unsupported = [line.strip() for line in proc.stdout.splitlines()
                           if line.startswith(("Warning (supported operators)", "Reason:"))]
            raise VelaCompileError(
                f"Vela placed none of the {summary.cpu_ops} operators of {name!r} on the NPU "
                f"({target}): is the model full-integer (int8) quantized? "
                f"{' '.join(unsupported[:8])} {SUPPORTED_OPS_HINT}")

        tf.io.gfile.makedirs(output_dir)
        result_tflite = os.path.join(output_dir, os.path.basename(compiled))
        result_csv = os.path.join(output_dir, os.path.basename(summary_csv))
        tf.io.gfile.copy(compiled, result_tflite, overwrite=True)
        tf.io.gfile.copy(summary_csv, result_csv, overwrite=True)
        with tf.io.gfile.GFile(os.path.join(output_dir, f"{name}_vela_log.txt"), "w") as f:
            f.write(log)
        logging.info("Vela compiled %s for %s: %s", name, target, summary)
        return VelaResult(tflite_path=result_tflite, summary_csv_path=result_csv, summary=summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_summary_csv(path: str, vela_tflite_path: str | None = None) -> VelaSummary:
    """Reads Vela's `<network>_summary_<system_config>.csv` into a VelaSummary.

    The CSV holds the total operator count (`passes_before_fusing`) but not the NPU / CPU split;
    the CPU operators are counted in the compiled model (every operator that is not an `ethos-u`
    custom op runs on the CPU), by default `<network>_vela.tflite` next to the CSV.
    """
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            rows = list(csv.DictReader(io.StringIO(f.read())))
    except (tf.errors.NotFoundError, OSError) as exc:
        raise VelaCompileError(f"Cannot read the Vela summary CSV {path!r}: {exc}") from exc
    if not rows:
        raise VelaCompileError(f"The Vela summary CSV {path!r} has no data row.")
    row = rows[0]

    def number(column: str) -> float:
        if column not in row:
            raise VelaCompileError(
                f"The Vela summary CSV {path!r} has no column {column!r}: written by an "
                f"unsupported Vela version? Columns: {', '.join(row)}")
        try:
            return float(row[column])
        except (TypeError, ValueError) as exc:
            raise VelaCompileError(
                f"Column {column!r} of the Vela summary CSV {path!r} is not a number: "
                f"{row[column]!r}") from exc

    def kib(column: str) -> int:
        return int(round(number(column) * 1024))

    if vela_tflite_path is None:
        vela_tflite_path = os.path.join(os.path.dirname(path),
                                        f"{row.get('network', '')}_vela.tflite")
    cpu_ops = count_cpu_ops(vela_tflite_path)
    total_ops = int(number("passes_before_fusing"))
    return VelaSummary(
        cycles=int(round(number("cycles_total"))),
        inference_ms=number("inference_time") * 1000.0,
        sram_bytes=kib("sram_memory_used"),
        flash_bytes=kib("off_chip_flash_memory_used") + kib("on_chip_flash_memory_used"),
        original_weight_bytes=int(number("total_original_weights")),
        encoded_weight_bytes=int(number("total_npu_encoded_weights")),
        npu_ops=max(total_ops - cpu_ops, 0),
        cpu_ops=cpu_ops,
        dram_bytes=kib("dram_memory_used"),
    )


def count_cpu_ops(vela_tflite_path: str) -> int:
    """Operators of a Vela-compiled `.tflite` other than Ethos-U custom ops: they run on the CPU."""
    return len(cpu_operators(vela_tflite_path))


def cpu_operators(vela_tflite_path: str) -> list[str]:
    """The builtin names (e.g. 'LSTM') of the operators a Vela-compiled `.tflite` runs on the CPU:
    every operator that is not an Ethos-U custom op, in model order."""
    from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
    from ethosu.vela.tflite.Model import Model

    names = {code: name for name, code in vars(BuiltinOperator).items() if name.isupper()}
    try:
        with tf.io.gfile.GFile(vela_tflite_path, "rb") as f:
            buf = f.read()
        model = Model.GetRootAsModel(buf, 0)
        found = []
        for s in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(s)
            for i in range(subgraph.OperatorsLength()):
                code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                if builtin == BuiltinOperator.CUSTOM:
                    custom = code.CustomCode() or b""
                    if custom != _ETHOS_U_CUSTOM_CODE:
                        found.append(f"CUSTOM({custom.decode(errors='replace')})")
                else:
                    found.append(names.get(builtin, str(builtin)))
        return found
    except (tf.errors.NotFoundError, OSError) as exc:
        raise VelaCompileError(
            f"Cannot read the Vela-compiled model {vela_tflite_path!r} to count its CPU operators: "
            f"{exc}. Pass vela_tflite_path=<name>_vela.tflite.") from exc
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct / index errors
        raise VelaCompileError(
            f"{vela_tflite_path!r} is not a readable TFLite flatbuffer: {exc!r}") from exc


def _check_vela_counts(summary: VelaSummary, stdout: str) -> None:
    """Logs if Vela's printed operator counts differ from the ones parsed (a Vela change)."""
    printed = dict(re.findall(r"^(CPU|NPU) operators = (\d+)", stdout, flags=re.M))
    if printed and (int(printed.get("CPU", summary.cpu_ops)) != summary.cpu_ops
                    or int(printed.get("NPU", summary.npu_ops)) != summary.npu_ops):
        logging.warning("Vela printed CPU/NPU operators %s but the summary gives %d/%d",
                        printed, summary.cpu_ops, summary.npu_ops)


def target_names(targets: Sequence[VelaOptions]) -> list[str]:
    """A name for each target, in order: its accelerator_config, followed by the options that tell
    it apart from other targets on the same accelerator ('ethos-u55-128' next to
    'ethos-u55-128/Size'; '#<index>' for identical targets)."""
    names = []
    for index, target in enumerate(targets):
        same = [t for t in targets if t.accelerator_config == target.accelerator_config]
        parts = [target.accelerator_config]
        if len(same) > 1:
            for field in ("system_config", "memory_mode", "optimise"):
                values = {str(getattr(t, field).value if isinstance(getattr(t, field), Optimise)
                              else getattr(t, field)) for t in same}
                if len(values) > 1:
                    value = getattr(target, field)
                    parts.append(value.value if isinstance(value, Optimise) else str(value))
        names.append("/".join(parts))
    return [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]


def _tail(text: str, lines: int = 12, chars: int = 2000) -> str:
    kept = [line.rstrip() for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    tail = " | ".join(kept)
    return tail[-chars:] if tail else "no output"


__all__ = ["ACCELERATOR_CONFIGS", "DEFAULT_CONFIG_FILE", "DEFAULT_SYSTEM_CONFIGS", "Optimise",
           "VelaOptions", "VelaSummary", "VelaResult", "compile_model", "parse_summary_csv",
           "count_cpu_ops", "cpu_operators", "target_names"]
