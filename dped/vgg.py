"""VGG-19 features up to `relu5_4`, as the original DPED computes them.

Input: RGB images in 0..1; the network sees `255 * x - RGB mean` and max-pools 2x2 with SAME
padding (so `relu5_4` of a 100x100 patch is 7x7). Weights come from one of:
- MatConvNet's `imagenet-vgg-verydeep-19.mat` (the file the original uses; kernels stored
  width-first, so axes 0 and 1 are swapped on load);
- Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (trained on BGR input: the first
  kernel's input channels are reversed so that both files take the same RGB input);
- `imagenet`: Keras downloads and caches that `.h5` (needs a network);
- `random`: only when asked for explicitly; every result that used it records the flag.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

RGB_MEAN = np.array([123.68, 116.779, 103.939], np.float32)
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))
# The layer sequence of the original vgg.py, which stops at relu5_4.
LAYERS = tuple(
    name
    for block, convs, _ in _BLOCKS
    for name in [n for i in range(1, convs + 1) for n in (f"conv{block}_{i}", f"relu{block}_{i}")]
    + ([f"pool{block}"] if block < 5 else [])
)
CONV_LAYERS = tuple(n for n in LAYERS if n.startswith("conv"))
MAT_URL_HINT = (
    "download imagenet-vgg-verydeep-19.mat (MatConvNet's pretrained VGG-19, ~550 MB, linked "
    "from the DPED authors' README and MatConvNet's pretrained-models page)"
)
H5_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
H5_HINT = f"get {H5_NAME} from the keras-applications release files, or use vgg_weights=imagenet"


class VGGWeightsError(FileNotFoundError):
    """Missing or malformed VGG-19 weights."""


def _out_channels(name: str) -> int:
    return dict((b, c) for b, _, c in _BLOCKS)[int(name[4])]


def load_mat(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{conv name: (HWIO kernel, bias)} from MatConvNet's imagenet-vgg-verydeep-19.mat."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise VGGWeightsError(
            f"no VGG-19 weights at {path}: {MAT_URL_HINT} and put it there, "
            "or set vgg_weights to its path"
        )
    try:
        entries = scipy.io.loadmat(str(path))["layers"][0]
        weights = {}
        for i, name in enumerate(LAYERS):
            if name.startswith("conv"):
                kernel, bias = entries[i][0][0][0][0]
                # MatConvNet stores kernels width-first; the original swaps axes 0 and 1.
                weights[name] = (np.transpose(kernel, (1, 0, 2, 3)), bias.reshape(-1))
    except Exception as err:
        raise VGGWeightsError(
            f"{path} is not MatConvNet's imagenet-vgg-verydeep-19.mat "
            f"({type(err).__name__}: {err}); {MAT_URL_HINT}"
        ) from None
    return weights


def load_h5(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{conv name: (HWIO kernel, bias)} from Keras' VGG19 no-top weights, converted to RGB input."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise VGGWeightsError(f"no VGG-19 weights at {path}: {H5_HINT}")
    weights = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            for name in CONV_LAYERS:
                block, index = name[4], name[6]
                group = root[f"block{block}_conv{index}"]
                kernel_key, bias_key = (
                    k.decode() if isinstance(k, bytes) else k for k in group.attrs["weight_names"]
                )
                weights[name] = (np.asarray(group[kernel_key]), np.asarray(group[bias_key]))
    except Exception as err:
        raise VGGWeightsError(
            f"{path} is not Keras' {H5_NAME} ({type(err).__name__}: {err}); {H5_HINT}"
        ) from None
    kernel, bias = weights["conv1_1"]
    # Keras' weights come from Caffe, trained on BGR: reverse the first layer's input channels.
    weights["conv1_1"] = (kernel[:, :, ::-1, :].copy(), bias)
    return weights


def random_weights(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """He-initialised weights in VGG-19's shapes: plumbing checks only, no ImageNet features."""
    rng = np.random.default_rng(seed)
    weights, cin = {}, 3
    for name in CONV_LAYERS:
        cout = _out_channels(name)
        kernel = rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2.0 / (9 * cin))
        weights[name] = (kernel.astype(np.float32), np.zeros(cout, np.float32))
        cin = cout
    return weights


def load_weights(spec: str, seed: int = 0) -> tuple[dict, bool]:
    """Weights for `spec` (a .mat or .h5 path, 'imagenet' or 'random'); returns (weights, is_random)."""
    if spec == "random":
        warnings.warn(
            "VGG-19 has RANDOM weights (vgg_weights: random): the content loss compares random "
            "features, not ImageNet ones; results are flagged vgg_random=True",
            stacklevel=2,
        )
        return random_weights(seed), True
    if spec == "imagenet":
        from keras.src.applications.vgg19 import WEIGHTS_PATH_NO_TOP

        try:
            path = keras.utils.get_file(H5_NAME, WEIGHTS_PATH_NO_TOP, cache_subdir="models")
        except Exception as err:
            raise VGGWeightsError(
                f"vgg_weights=imagenet: Keras could not fetch {H5_NAME} ({err}); with no network, "
                f"put the file in ~/.keras/models/ or give its path as vgg_weights"
            ) from None
        return load_h5(path), False
    suffix = Path(spec).suffix.lower()
    if suffix == ".mat":
        return load_mat(spec), False
    if suffix == ".h5":
        return load_h5(spec), False
    raise VGGWeightsError(
        f"vgg_weights={spec!r}: expected a .mat or .h5 path, 'imagenet' or 'random'"
    )


class FrozenConv2D(layers.Conv2D):
    """A 3x3, stride-1, SAME convolution whose kernel never trains, with the gradient to its
    input computed as the forward convolution of the incoming gradient with the flipped,
    transposed kernel: the same sums, through the forward kernel, which on CPUs runs far faster
    than TensorFlow's input-gradient kernel at the small 512-channel maps of blocks 4 and 5
    (`make bench`, training section). The content loss back-propagates through it every step.
    The flipped kernel is a weight of its own, set by `freeze()` once the kernel is loaded:
    flipping 2.4 M weights per layer in every step would cost more than the convolutions."""

    def build(self, input_shape):
        super().build(input_shape)
        height, width, channels_in, channels_out = self.kernel.shape
        self.flipped = self.add_weight(
            name="flipped_kernel",
            shape=(height, width, channels_out, channels_in),
            initializer="zeros",
            trainable=False,
        )

    def freeze(self) -> None:
        """Derive the input gradient's kernel from the kernel: call after setting the weights."""
        from keras import ops

        # d/dx of a SAME 3x3 correlation = a SAME correlation with the kernel rotated 180
        # degrees and its input/output channels swapped.
        self.flipped.assign(ops.transpose(ops.flip(self.kernel, (0, 1)), (0, 1, 3, 2)))

    def convolution_op(self, inputs, kernel):
        import tensorflow as tf

        kernel = tf.stop_gradient(tf.convert_to_tensor(kernel))
        flipped = tf.cast(self.flipped, kernel.dtype)

        @tf.custom_gradient
        def conv(x):
            def grad(dy):
                return tf.nn.conv2d(dy, flipped, 1, "SAME")

            return tf.nn.conv2d(x, kernel, 1, "SAME"), grad

        return conv(inputs)


def build_vgg(weights: dict, layer: str = "relu5_4", name: str = "vgg19") -> keras.Model:
    """A frozen VGG-19 from RGB 0..1 input to `layer`, mean subtraction included."""
    if layer not in LAYERS:
        raise ValueError(f"content_layer: expected a VGG-19 layer up to relu5_4, got {layer!r}")
    image = keras.Input(shape=(None, None, 3), name="rgb01")
    # The original feeds 255 * image - RGB mean (vgg.preprocess).
    x = layers.Rescaling(255.0, offset=(-RGB_MEAN).tolist(), name="preprocess")(image)
    for name_ in LAYERS[: LAYERS.index(layer) + 1]:
        if name_.startswith("conv"):
            x = FrozenConv2D(_out_channels(name_), 3, padding="same", name=name_)(x)
        elif name_.startswith("relu"):
            x = layers.ReLU(name=name_)(x)
        else:
            x = layers.MaxPooling2D(2, 2, padding="same", name=name_)(x)
    model = keras.Model(image, x, name=name)
    for lay in model.layers:
        if lay.name in weights:
            kernel, bias = weights[lay.name]
            lay.kernel.assign(kernel)
            lay.bias.assign(bias)
            lay.freeze()
    model.trainable = False
    return model
