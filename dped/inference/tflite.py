"""An exported .tflite file run back here (`dped enhance --model X.tflite`, the export's checks):
the `tiling.Generator` interface over TensorFlow Lite's interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dped import quiet

# An instance-norm model runs on the whole image, and the TFLite interpreter keeps all its
# activations: a memory model of the interpreter's arena per input pixel (the peak RSS rows of
# `make bench`'s tflite section show it), against a budget that leaves the machine usable.
WHOLE_IMAGE_BYTES_PER_PIXEL = 3300
WHOLE_IMAGE_BUDGET = 4 * 2**30


class TFLiteGenerator:
    """An exported .tflite file, run with the interface `enhance` uses for Keras generators:
    norm-free models tile (their receptive radius read from the convolutions), models with
    instance norms run on the whole image (their statistics are image-wide)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            with quiet.filtered_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except ValueError as err:
            raise ValueError(f"{path}: not a TensorFlow Lite model ({err})") from None
        ops_ = self.interpreter._get_ops_details()
        tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        convs = [o for o in ops_ if o["op_name"] == "CONV_2D"]
        # Filters are [out, kh, kw, in]; every generator conv has stride 1 and SAME padding.
        self.radius = sum((tensors[o["inputs"][1]]["shape"][1] - 1) // 2 for o in convs)
        self.whole_image_only = any(o["op_name"] == "MEAN" for o in ops_)
        # No stage graphs: an instance-norm model runs whole, a norm-free one in tiles.
        self.instance, self.norms, self.streams, self.channels = [], [], False, 0
        self.float_ops = float_ops(ops_, tensors)
        self._shape = None

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Resize the input tensor and allocate for `shape` (XNNPACK sets up here), once per
        shape; an instance-norm model too large for memory says so instead."""
        need = shape[1] * shape[2] * WHOLE_IMAGE_BYTES_PER_PIXEL
        if self.whole_image_only and need > WHOLE_IMAGE_BUDGET:
            largest = WHOLE_IMAGE_BUDGET / WHOLE_IMAGE_BYTES_PER_PIXEL / 1e6
            raise ValueError(
                f"{self.path.name} normalises over the whole image, which TFLite holds in memory "
                f"at once: about {need / 2**30:.1f} GB for {shape[1]}x{shape[2]} (budget "
                f"{WHOLE_IMAGE_BUDGET / 2**30:.0f} GB); enhance with the Keras model (streamed, "
                f"any size) or a photo of at most {largest:.1f} MP"
            )
        if self._shape != tuple(shape):
            it = self.interpreter
            it.resize_tensor_input(it.get_input_details()[0]["index"], shape)
            with quiet.filtered_stderr():
                it.allocate_tensors()
            self._shape = tuple(shape)

    def one_pass(self, x: np.ndarray) -> np.ndarray:
        self.prepare(x.shape)
        it = self.interpreter
        it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(x, np.float32))
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])


def float_ops(ops_, tensors) -> list[str]:
    """Ops of a quantised model that compute in float32 (their first input is float32)."""
    names = set()
    for o in ops_:
        if o["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not len(o["inputs"]):
            continue
        first = tensors.get(o["inputs"][0])
        if first is not None and first["dtype"] == np.float32:
            names.add(o["op_name"])
    return sorted(names)
