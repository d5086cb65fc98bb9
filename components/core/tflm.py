"""Peak memory on a microcontroller: the tensor arena TensorFlow Lite for Microcontrollers needs.

A `.tflite` runs on a Cortex-M under TFLM from one statically sized buffer, the *tensor arena*:
activations, the interpreter's own structures and every kernel's scratch memory. Its size is the
figure that decides whether a model fits a microcontroller at all. TFLM's Python interpreter
(`tflite-micro`) loads a model with a `RecordingMicroAllocator` and reports what it allocated;
`measure` loads the model, runs one inference on zeros and reads that report.

TFLM has fewer kernels than TFLite. Its interpreter names only the first operator it has no
kernel for, so `measure` asks again with that operator's code swapped for one TFLM has, until it
has named every missing one (the swapped model is only asked, never run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from typing import Iterator, Optional

import numpy as np

from collabopt.components.core.errors import TFLMError

# The interpreter needs an arena to be given; it is grown until the model fits, then the report
# says how much of it was used.
_FIRST_ARENA_BYTES = 256 * 1024
_MAX_ARENA_BYTES = 512 * 1024 * 1024
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_MISSING_BUILTIN = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_MISSING_CUSTOM = re.compile(r"Didn't find op for custom opcode '([^']+)'")
_OUT_OF_ARENA = ("Failed to allocate", "Failed to resize buffer", "missing:")


@dataclasses.dataclass(frozen=True)
class TFLMReport:
    """What TFLM says about one model.

    arena_bytes: the tensor arena the model needs (None when TFLM cannot run it);
    ops: the model's distinct operators; unsupported_ops: those TFLM has no kernel for (custom
    ops by their custom code); error: why TFLM could not run the model, when it could not.
    """

    arena_bytes: Optional[int]
    ops: tuple[str, ...]
    unsupported_ops: tuple[str, ...] = ()
    error: Optional[str] = None

    @property
    def supported(self) -> bool:
        return self.arena_bytes is not None


def measure(tflite_bytes: bytes) -> TFLMReport:
    """The tensor arena TFLM needs for `tflite_bytes` and the operators it cannot run.

    A model TFLM cannot run (an operator without a TFLM kernel, a failing kernel) is a report
    with `arena_bytes=None` and the reason, not an error: it is a figure of the leaf.

    Raises:
      TFLMError: the bytes are not a TFLite flatbuffer.
    """
    data = _check_flatbuffer(tflite_bytes)
    model = _model_object(data)
    ops = tuple(dict.fromkeys(_op_name(model, op.opcodeIndex) for subgraph in model.subgraphs
                              for op in (subgraph.operators or [])))
    unsupported = _unsupported_ops(model)
    if unsupported:
        return TFLMReport(None, ops, unsupported,
                          f"TFLM has no kernel for {', '.join(unsupported)}: replace "
                          f"{'this operator' if len(unsupported) == 1 else 'these operators'} "
                          "to run the model on a microcontroller")
    try:
        return TFLMReport(arena_bytes(data), ops)
    except TFLMError as exc:
        return TFLMReport(None, ops, (), str(exc))


def arena_bytes(tflite_bytes: bytes) -> int:
    """Bytes of tensor arena TFLM allocates to run the model (its RecordingMicroAllocator's
    total after one inference on zeros).

    Raises:
      TFLMError: not a flatbuffer, or TFLM cannot load or run the model (the message carries
        TFLM's own words and what to do).
    """
    data = _check_flatbuffer(tflite_bytes)
    size = max(_FIRST_ARENA_BYTES, 4 * len(data))
    while True:
        with _captured_stderr() as said:
            try:
                interpreter = _load(data, size)
                _invoke_on_zeros(interpreter, _model_object(data))
                interpreter.print_allocations()
                error = None
            except (RuntimeError, ValueError) as exc:
                error = exc
        text = said()
        if error is None:
            found = _ARENA_TOTAL.search(text)
            if not found:
                raise TFLMError("TFLM ran the model but reported no arena allocation "
                                f"(tflite-micro changed its report?): {_tail(text)}")
            return int(found.group(1))
        if any(marker in text for marker in _OUT_OF_ARENA) and size < _MAX_ARENA_BYTES:
            size *= 4
            continue
        missing = _MISSING_BUILTIN.findall(text) + _MISSING_CUSTOM.findall(text)
        if missing:
            raise TFLMError(f"TFLM has no kernel for operator {missing[0]}: the model cannot run "
                            "on a microcontroller with TFLM. Replace the operator (see TFLM's "
                            "list of supported operators) or run the model on an NPU.")
        raise TFLMError(f"TFLM could not run the model ({error}): {_tail(text)}. Check that it "
                        "is a full-integer or float model with TFLite built-in operators.")


def unsupported_ops(tflite_bytes: bytes) -> tuple[str, ...]:
    """The model's operators TFLM has no kernel for (empty: it has them all)."""
    return _unsupported_ops(_model_object(_check_flatbuffer(tflite_bytes)))


# --- helpers -------------------------------------------------------------------------------------

def _check_flatbuffer(tflite_bytes) -> bytes:
    if not isinstance(tflite_bytes, (bytes, bytearray)) or len(tflite_bytes) < 8 \
            or bytes(tflite_bytes[4:8]) != b"TFL3":
        raise TFLMError("Not a TFLite flatbuffer (no 'TFL3' identifier): pass the bytes of a "
                        ".tflite file, e.g. the output of collabopt.components.core.tflite.convert().")
    return bytes(tflite_bytes)


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
    return schema_py_generated


def _model_object(data: bytes):
    from tflite_micro.python.tflite_micro import runtime
    try:
        return runtime.convert_bytearray_to_object(bytearray(data))
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct / index errors
        raise TFLMError(f"The .tflite cannot be read as a TFLite model: {exc!r}") from exc


_BUILTIN_NAMES: dict[int, str] = {}


def _op_name(model, opcode_index: int) -> str:
    from tflite_micro.python.tflite_micro import runtime

    if not _BUILTIN_NAMES:
        ops = _schema().BuiltinOperator
        _BUILTIN_NAMES.update({v: k for k, v in vars(ops).items() if not k.startswith("_")})
    code = model.operatorCodes[opcode_index]
    builtin = runtime.get_builtin_code_from_operator_code(code)
    if builtin == _schema().BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return _BUILTIN_NAMES.get(builtin, str(builtin))


def _load(data: bytes, arena_size: int):
    from tflite_micro.python.tflite_micro import runtime
    return runtime.Interpreter.from_bytes(data, arena_size=arena_size)


def _invoke_on_zeros(interpreter, model) -> None:
    for index in range(len(model.subgraphs[0].inputs)):
        detail = interpreter.get_input_details(index)
        interpreter.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), index)
    interpreter.invoke()


def _unsupported_ops(model) -> tuple[str, ...]:
    """Asks TFLM to load the model; each operator it names as missing is swapped for ADD in a
    copy of the model (so TFLM looks past it), until it names none."""
    import copy

    import flatbuffers

    probe = copy.deepcopy(model)
    missing: list[str] = []
    for _ in range(len(probe.operatorCodes) + 1):
        builder = flatbuffers.Builder(1024)
        builder.Finish(probe.Pack(builder), file_identifier=b"TFL3")
        with _captured_stderr() as said:
            try:
                _load(bytes(builder.Output()), _FIRST_ARENA_BYTES)
            except (RuntimeError, ValueError):
                pass
        text = said()
        names = _MISSING_BUILTIN.findall(text) + _MISSING_CUSTOM.findall(text)
        name = names[0] if names else None
        indices = [i for i in range(len(probe.operatorCodes))
                   if name is not None and _op_name(probe, i) == name]
        if not indices:
            break
        missing.append(name)
        for i in indices:
            code = probe.operatorCodes[i]
            code.builtinCode = code.deprecatedBuiltinCode = _schema().BuiltinOperator.ADD
            code.customCode, code.version = None, 1
    return tuple(missing)


@contextlib.contextmanager
def _captured_stderr() -> Iterator:
    """TFLM writes its reports and errors to file descriptor 2 from C++: read them from there."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        text: list[str] = []
        try:
            yield lambda: "".join(text)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"


__all__ = ["TFLMReport", "measure", "arena_bytes", "unsupported_ops"]
