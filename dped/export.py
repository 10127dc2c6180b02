"""Generators to TensorFlow Lite for phones (`dped export`), and exported files run back here.

The route that works with Keras 3 and the TensorFlow we pin: `Model.export` writes a SavedModel
whose serving signature takes images of any height and width, and `TFLiteConverter.from_saved_model`
converts it (`from_keras_model` fails on Keras 3 models in several TensorFlow releases). Instance
norms keep image-wide statistics, as the authors' graph computes them; only the way the mean is
summed changes (see `_RowwiseInstanceNorm`). An app resizes the input tensor to its photo's
size before allocating (`Interpreter.resize_tensor_input`, then `allocate_tensors`).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from dped import quiet
from dped.models import InstanceNormalization

QUANTIZATIONS = ("none", "float16", "int8")
CALIBRATION_PATCH = 256  # side of the crops int8 calibration reads from the user's photos
CALIBRATION_IMAGES = 64


class _RowwiseInstanceNorm(InstanceNormalization):
    """The same statistics, averaged a row at a time and then over rows. TFLite's MEAN adds in
    float32 one element after another: one mean over a 512x512 image moved the original
    models' output by 2.3e-4; means of rows (at most a few thousand terms each) do not."""

    def call(self, x):
        h = ops.cast(x, "float32")
        mean = ops.mean(ops.mean(h, axis=2, keepdims=True), axis=1, keepdims=True)
        centred = h - mean
        var = ops.mean(ops.mean(ops.square(centred), axis=2, keepdims=True), axis=1, keepdims=True)
        scale, shift = ops.cast(self.scale, "float32"), ops.cast(self.shift, "float32")
        out = centred * ops.rsqrt(var + self.epsilon) * scale + shift
        return ops.cast(out, x.dtype)


def mobile_graph(generator: keras.Model) -> keras.Model:
    """The generator with its instance norms summed row-wise, every weight shared."""

    def clone(layer):
        if isinstance(layer, InstanceNormalization):
            return _RowwiseInstanceNorm.from_config(layer.get_config())
        return layer  # the original layer: its weights, no copy

    mobile = keras.models.clone_model(generator, clone_function=clone)
    for norm in mobile.layers:
        if isinstance(norm, _RowwiseInstanceNorm):
            norm.set_weights(generator.get_layer(norm.name).get_weights())
    return mobile


# int8 keeps these in float32: the instance norms' statistics and scaling, the residual
# additions and the input's centring. Quantised, the norms' means and variances over a whole
# image lose the small differences the next layer amplifies (tests/test_export.py holds each
# reference model's int8 output to its PSNR target against float32).
FLOAT_IN_INT8 = ["MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SUB", "MUL", "ADD"]


def convert(
    generator: keras.Model, quantize: str = "none", calibration: Iterator[np.ndarray] | None = None
) -> bytes:
    """The .tflite bytes: float32 (`none`), float16 weights, or int8 convolutions (weights and
    activations) calibrated on `calibration` (HxWx3 float32 images in 0..1); input and output
    stay float32."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"--quantize: expected one of {' | '.join(QUANTIZATIONS)}, got {quantize!r}"
        )
    with tempfile.TemporaryDirectory(prefix="dped-export-") as saved:
        mobile_graph(generator).export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize == "none":
            return converter.convert()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
            return converter.convert()
        if calibration is None:
            raise ValueError("int8 needs calibration images")
        images = list(calibration)
        converter.representative_dataset = lambda: ([img[None]] for img in images)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        # TensorFlow's documented route to leave chosen ops unquantised.
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=FLOAT_IN_INT8)
        # It runs tf.lite.Interpreter (deprecated) internally; the quantiser prints a line.
        with warnings.catch_warnings(), quiet.filtered_stderr():
            warnings.simplefilter("ignore", UserWarning)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=lambda: ([img[None]] for img in images[:2]),
                debug_options=options,
            )
            return debugger.get_nondebug_quantized_model()


def calibration_images(folder: str | Path) -> Iterator[np.ndarray]:
    """Up to CALIBRATION_IMAGES centre crops of CALIBRATION_PATCH pixels from a folder of
    photos (the mini dataset's whole phone photos by default): what int8 ranges are fitted on."""
    from dped.inference.driver import list_inputs
    from dped.inference.images import load_image

    files, _ = list_inputs([str(folder)])
    if not files:
        raise FileNotFoundError(f"--calibration {folder}: no images there to calibrate int8 on")
    for path in files[:CALIBRATION_IMAGES]:
        image = load_image(path)[0]
        h, w = image.shape[:2]
        s = min(CALIBRATION_PATCH, h, w)
        y, x = (h - s) // 2, (w - s) // 2
        yield np.ascontiguousarray(image[y : y + s, x : x + s])


def default_calibration() -> Path:
    """The mini dataset's whole phone photos (`make data` builds them): its training patches
    are as small as the cpu profile's, too small to show a 9x9 network its activation ranges."""
    from dped.config import project_root
    from dped.minidata import MINI_PHONE, MINI_ROOT

    folder = project_root() / MINI_ROOT / MINI_PHONE / "test_data" / "full_size_test_images"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"int8 calibrates on the mini dataset's patches, not found at {folder}: run "
            "`make data` (or `dped data`), or pass --calibration DIR with photos of your own"
        )
    return folder


def export(
    model: str,
    out: str | Path,
    quantize: str = "none",
    calibration: str | Path | None = None,
    weights_dir: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export any model `dped enhance` accepts to `out` (.tflite), written atomically; an
    existing `out` is replaced only with `overwrite`."""
    from dped.inference.driver import load_generator
    from dped.runs import atomic_write

    out = Path(out)
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"--quantize: expected one of {' | '.join(QUANTIZATIONS)}, got {quantize!r}"
        )
    if out.suffix != ".tflite":
        raise ValueError(f"--out {out}: name the file FILE.tflite")
    if out.is_dir() or not out.parent.is_dir():
        raise ValueError(f"--out {out}: expected a file in an existing folder")
    if Path(model).suffix == ".tflite":
        raise ValueError(f"{model} is already a TFLite model: export a run folder or checkpoint")
    if out.exists() and not overwrite:
        raise FileExistsError(_exists(out))
    _check_writable(out)  # before minutes of conversion
    generator = load_generator(model, weights_dir)
    images = None
    if quantize == "int8":
        images = calibration_images(calibration or default_calibration())
    flat = convert(generator, quantize, images)
    try:
        atomic_write(out, flat, replace=overwrite)
    except FileExistsError:  # it appeared during the conversion: still the user's file
        raise FileExistsError(_exists(out)) from None
    return out


def _exists(out: Path) -> str:
    return f"--out {out} already exists: pass --overwrite to replace it, or another --out"


def _check_writable(out: Path) -> None:
    try:  # a file of our own, uniquely named, removed on close
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".dped-export-"):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write there ({err.strerror})") from None
