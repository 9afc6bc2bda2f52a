"""One small interface over the three interpreters a device may have.

Each backend takes preprocessed uint8 pixels (NHWC without the batch axis)
and returns the model's float output. Quantized inputs and outputs are
handled here, from the scale and zero point stored in the model.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from happysad.edge.errors import HappysadError
from happysad.edge.reading import open_regular, read_regular
from happysad.edge.runtime.quantization import dequantize, quantize

_log = logging.getLogger(__name__)

BACKENDS = ("litert", "tflite-runtime", "onnxruntime")
_TFLITE_MODULES = {"litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}


def is_tflite_bytes(head: bytes) -> bool:
    """True when bytes begin a TFLite flatbuffer: the file identifier ``TFL3`` at bytes 4..8."""
    return head[4:8] == b"TFL3"


def model_format(path: str | os.PathLike) -> str:
    """``"tflite"`` or ``"onnx"``, from the file's suffix, else its content.

    A TFLite flatbuffer carries the identifier ``TFL3`` at bytes 4..8; an
    ONNX ModelProto begins with its ir_version field (byte 0x08).

    Raises:
        UsageError: missing. HappysadError: not a regular file (:func:`edge.reading.open_regular`),
            unreadable, or of the other format than its suffix says (the message says to rename it).
    """
    path = Path(path)
    with open_regular(path, "model") as fh:  # a FIFO, device or folder: refused, never waited on
        try:
            head = fh.read(8)
        except OSError as exc:
            raise HappysadError(f"{path}: cannot read model ({exc.strerror or exc}); check the path") from None
    is_tflite = is_tflite_bytes(head)
    suffix = path.suffix.lower()
    if suffix == ".onnx" and is_tflite:
        raise HappysadError(f"{path}: this is a TFLite model named .onnx; rename it to .tflite")
    if (
        suffix == ".tflite" and head[:1] == b"\x08" and not is_tflite
    ):  # an ONNX ModelProto starts with field 1, ir_version
        raise HappysadError(f"{path}: this looks like an ONNX model named .tflite; rename it to .onnx")
    if suffix in (".tflite", ".onnx"):
        return suffix[1:]
    return "tflite" if is_tflite else "onnx"


def tflite_interpreter_class(name: str | None = None):
    """The ``Interpreter`` class of a TFLite backend: ``name`` ("litert" or
    "tflite-runtime"), else the first installed (:func:`default_backend`).

    Raises:
        HappysadError: no TFLite interpreter is installed, or not ``name``.
    """
    name = name or default_backend("tflite")
    try:
        return importlib.import_module(_TFLITE_MODULES[name]).Interpreter
    except ImportError:
        pkg = "ai-edge-litert" if name == "litert" else "tflite-runtime"
        raise HappysadError(f"backend {name} is not installed: pip install {pkg}") from None


def default_backend(fmt: str) -> str:
    """The backend to use for a format: litert, else tflite-runtime, for TFLite."""
    if fmt == "onnx":
        return "onnxruntime"
    for name in ("litert", "tflite-runtime"):
        try:
            importlib.import_module(_TFLITE_MODULES[name])
            return name
        except ImportError:
            continue
    raise HappysadError(
        "no TFLite interpreter installed: pip install ai-edge-litert "
        "(64-bit OS) or tflite-runtime==2.14.0 'numpy<2' (32-bit Raspberry Pi OS)"
    )


class Backend:
    """A loaded model. Subclasses fill the attributes and the three stages
    :meth:`set_input`, :meth:`invoke` and :meth:`get_output`, which
    :meth:`run` chains (a benchmark can time them apart).

    Attributes:
        name: backend name, one of :data:`BACKENDS`.
        input_shape: model input shape (1, H, W, C), NHWC.
        input_dtype: numpy dtype fed to the interpreter.
        input_quant, output_quant: (scale, zero point) of an integer input
            or output tensor, None for float ones.
        output_shape, output_dtype: the output tensor's shape and numpy dtype.
        load_ms: time to load the file and prepare the interpreter, ms.
    """

    name = ""
    input_shape: tuple[int, ...] = ()
    input_dtype = np.float32
    input_quant: tuple[float, int] | None = None
    output_quant: tuple[float, int] | None = None
    output_shape: tuple[int, ...] = ()
    output_dtype = np.float32
    load_ms = 0.0

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Run one image.

        Args:
            pixels: uint8 array (H, W, C) from :func:`edge.runtime.preprocess`.

        Returns:
            float32 array of the model's outputs for this image, shape (1,)
            for the happy/sad models (the sigmoid probability).

        Raises:
            HappysadError: the pixels' shape does not match the model input.
        """
        if pixels.shape != self.input_shape[1:]:
            raise HappysadError(
                f"input of shape {pixels.shape} does not fit the model's "
                f"{self.input_shape[1:]}; check the model's metadata"
            )
        self.set_input(pixels)
        self.invoke()
        return self.get_output()

    def set_input(self, pixels: np.ndarray) -> None:
        """Write one image into the input tensor, quantized for an integer input.

        Args:
            pixels: uint8 array (H, W, C) from :func:`edge.runtime.preprocess`.
        """
        raise NotImplementedError  # pragma: no cover

    def invoke(self) -> None:
        """Run the interpreter on the input written by :meth:`set_input`."""
        raise NotImplementedError  # pragma: no cover

    def get_output(self) -> np.ndarray:
        """The last invoke's outputs for the image: float32 (1,), dequantized."""
        raise NotImplementedError  # pragma: no cover


_ONNX_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def check_interface(
    path, n_inputs: int, n_outputs: int, input_dtypes: list, input_ranks: list, float_only: bool = False
) -> None:
    """Refuse a model whose interface is not one image in, one tensor out.

    Args:
        n_inputs, n_outputs: the graph's input and output counts.
        input_dtypes: numpy dtype name of the input; input_ranks: its rank.
        float_only: an ONNX file, whose input must be float32.

    Raises:
        HappysadError: not exactly one input and one output, an input of
            another rank than 4 (NHWC) or another dtype than float32 (or,
            for TFLite, int8 or uint8).
    """
    if n_inputs != 1 or n_outputs != 1:
        raise HappysadError(
            f"{path}: the model has {n_inputs} inputs and {n_outputs} outputs, not one "
            "image in and one score out; export it with happysad-export"
        )
    allowed = ("float32",) if float_only else ("float32", "int8", "uint8")
    if input_dtypes[0] not in allowed or input_ranks[0] != 4:
        raise HappysadError(
            f"{path}: the model's input is a rank-{input_ranks[0]} {input_dtypes[0]} tensor, "
            f"not an NHWC image of {' or '.join(allowed)}; export it with happysad-export"
        )


class TFLiteBackend(Backend):
    """ai-edge-litert or tflite-runtime, with XNNPACK where the build has it."""

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, name: str = "litert", content: bytes | None = None
    ):
        interpreter = tflite_interpreter_class(name)
        if content is None:  # through the regular-file gate, never an open that waits on a FIFO
            content = read_regular(path, "model")
        start = time.perf_counter()
        try:
            self._interp = interpreter(model_content=content, num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HappysadError(f"{path}: not a valid TFLite model ({first}); copy or export it again") from None
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.name = name
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        check_interface(
            path,
            len(inputs),
            len(outputs),
            [np.dtype(inputs[0]["dtype"]).name] if inputs else [],
            [len(inputs[0]["shape"])] if inputs else [],
        )
        inp, out = inputs[0], outputs[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = inp["dtype"]
        # TFLite reports (0.0, 0) for a float tensor.
        self.input_quant = tuple(inp["quantization"]) if inp["quantization"][0] else None
        self.output_quant = tuple(out["quantization"]) if out["quantization"][0] else None
        self.output_shape = tuple(int(d) for d in out["shape"])
        self.output_dtype = out["dtype"]
        # Preallocated input buffer, reused for every image.
        self._buffer = np.zeros(self.input_shape, dtype=self.input_dtype)
        # int8 input with scale 1 and zero point -128 (what the export gives
        # every model that starts with Rescaling(1/255)): q = x - 128, which
        # for x in 0..255 is x with its top bit flipped, read as two's-
        # complement int8. One XOR into the buffer, no arithmetic, no copy.
        self._xor128 = (
            self.input_dtype == np.int8
            and self.input_quant is not None
            and self.input_quant[0] == 1.0
            and self.input_quant[1] == -128
        )
        self._buffer_bytes = self._buffer.view(np.uint8)

    @property
    def interpreter(self):
        """The TFLite interpreter itself (for reading the graph: tensors, ops)."""
        return self._interp

    def set_input(self, pixels: np.ndarray) -> None:
        if self._xor128:
            np.bitwise_xor(pixels, 0x80, out=self._buffer_bytes[0])
        elif self.input_quant:
            self._buffer[0] = quantize(pixels, *self.input_quant, self.input_dtype)
        else:
            self._buffer[0] = pixels
        self._interp.set_tensor(self._in_index, self._buffer)

    def invoke(self) -> None:
        self._interp.invoke()

    def get_output(self) -> np.ndarray:
        out = self._interp.get_tensor(self._out_index)[0]
        if self.output_quant:
            return dequantize(out, *self.output_quant)
        return out.astype(np.float32)


class OnnxBackend(Backend):
    """onnxruntime on the CPU execution provider (float or QDQ int8 models)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, content: bytes | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise HappysadError("backend onnxruntime is not installed: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if content is None:  # through the regular-file gate, never an open that waits on a FIFO
            content = read_regular(path, "model")
        start = time.perf_counter()
        try:
            self.session = ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own, unexported classes
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise HappysadError(f"{path}: not a valid ONNX model ({first}); copy or export it again") from None
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.name = "onnxruntime"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        check_interface(
            path,
            len(inputs),
            len(outputs),
            [_ONNX_TYPES.get(inputs[0].type, inputs[0].type)] if inputs else [],
            [len(inputs[0].shape)] if inputs else [],
            float_only=True,
        )
        if outputs[0].type != "tensor(float)":
            raise HappysadError(
                f"{path}: the model's output is {outputs[0].type}, not a float tensor; "
                "export it again with happysad-export"
            )
        inp = inputs[0]
        self._in_name = inp.name
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        self.input_shape = tuple(shape)
        self.input_dtype = np.float32
        out = self.session.get_outputs()[0]
        self.output_shape = tuple(d if isinstance(d, int) else 1 for d in out.shape)
        self._buffer = np.zeros(self.input_shape, dtype=np.float32)

    def set_input(self, pixels: np.ndarray) -> None:
        self._buffer[0] = pixels

    def invoke(self) -> None:
        self._outputs = self.session.run(None, {self._in_name: self._buffer})

    def get_output(self) -> np.ndarray:
        return self._outputs[0][0].astype(np.float32)


def load_backend(
    path: str | os.PathLike, threads: int | None = None, backend: str | None = None, content: bytes | None = None
) -> Backend:
    """Load a model file with the right interpreter.

    Args:
        path: a .tflite or .onnx file.
        threads: interpreter threads; None leaves the interpreter's default.
        backend: force one of :data:`BACKENDS`; None chooses from the file
            (ai-edge-litert, else tflite-runtime, for TFLite; onnxruntime for ONNX).

    Threads beyond the CPU count are clamped to it, with a warning.

    Raises:
        HappysadError: unknown or missing backend, a backend that cannot read
            this format, or an unreadable model file.
    """
    fmt = model_format(path)
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        # onnxruntime spins up every thread asked for (10,000 hang the
        # process); more threads than cores never run faster.
        _log.warning(
            "happysad: warning: --threads %d is more than this machine's %d cores; using %d", threads, cores, cores
        )
        threads = cores
    if backend is not None and backend not in BACKENDS:
        raise HappysadError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    name = backend or default_backend(fmt)
    if (fmt == "onnx") != (name == "onnxruntime"):
        raise HappysadError(f"{path}: backend {name} cannot run a {fmt} model")
    if name == "onnxruntime":
        return OnnxBackend(path, threads, content)
    return TFLiteBackend(path, threads, name, content)
