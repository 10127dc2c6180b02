"""The generator's forward pass for inference, as traced TensorFlow graphs.

The same math as `models.build_generator`, arranged for the CPU:
- the 9x9 64->3 output convolution runs as a 1x9 64->27 convolution and nine row-shifted adds:
  oneDNN convolutions with 3 output channels run far below its rate with 27;
- instance norm takes its moments from one XLA program (row sums as batched matrix products)
  and applies scale, shift, ReLU and the residual add in one XLA-fused pass;
- a convolution followed by instance norm skips its bias: the mean subtraction cancels it.

Statistics are inputs of the traced graphs, not constants, so each graph is traced once per
generator. For instance-norm generators the `stage` graphs cut the network at its norms: stage i
turns norm i-1's input rows (and a residual block's skip rows) into norm i's input rows, so that
`inference.stream` can run a whole photo stage by stage through a scratch file; the middle
stages take their weights as inputs too, so two traced graphs serve all of them (tracing and
optimising a graph is a fixed cost of every process). Weights are read from the Keras variables
when a graph runs, so a generator trained further is never served stale weights.

`precision='bfloat16'` (the fast mode) runs the convolutions in bfloat16; statistics, the
normalisation and the output stay float32.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from dped.models import Affine, InstanceNormalization

PRECISIONS = ("float32", "bfloat16")


def bfloat16_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Elsewhere TensorFlow
    emulates it, slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@tf.function(jit_compile=True, autograph=False)
def _normalize_relu(h, mean, inv_std, scale, shift):
    """relu((h - mean) * inv_std * scale + shift) in float32, stored in h's dtype, in one fused
    pass. The original's order of operations: folding the mean into one multiply-add cancels
    catastrophically where a channel's mean dwarfs its spread."""
    return tf.cast(tf.nn.relu((tf.cast(h, tf.float32) - mean) * inv_std * scale + shift), h.dtype)


@tf.function(jit_compile=True, autograph=False)
def _normalize_relu_add(h, mean, inv_std, scale, shift, skip):
    """_normalize_relu(h) + skip: the second half of a residual block, in one fused pass."""
    return _normalize_relu(h, mean, inv_std, scale, shift) + skip


def _pooled_terms(stats, epsilon, scale, shift):
    """A streamed norm's (mean, inv_std, scale, shift) from its pooled [mean, variance]."""
    mean, var = tf.unstack(stats)
    return mean, tf.math.rsqrt(var + epsilon), scale, shift


def channel_moments(h, core=None):
    """Per-channel mean and variance of a (1, H, W, C) activation, over its rows core[0]:core[1]
    when given, else all of them."""
    if core is None:
        core = tf.stack([0, tf.shape(h)[1]])
    return _moments(h, core)


@tf.function(jit_compile=True, autograph=False)
def _moments(h, core):
    """One XLA program: row sums as matrix products with a row of ones (float32 over a row,
    then float64 over the core's rows: one float32 sum over a whole 512x512 image moved the
    original models' output by 9e-5), the variance centred on that mean. Rows outside the
    core are masked, not sliced: XLA compiles one program per window shape, not per core."""
    rows = tf.cast(h[0], tf.float32)
    height, width = tf.shape(rows)[0], tf.shape(rows)[1]
    ones = tf.ones([height, 1, width], tf.float32)
    y = tf.range(height)
    inside = tf.cast((y >= core[0]) & (y < core[1]), tf.float64)[:, None]
    n = tf.reduce_sum(inside) * tf.cast(width, tf.float64)

    def core_sum(values):  # (H, W, C) -> (C,): row sums, then the core rows' in float64
        row_sums = tf.cast(tf.matmul(ones, values)[:, 0], tf.float64)
        return tf.reduce_sum(row_sums * inside, 0) / n

    mean = tf.cast(core_sum(rows), tf.float32)
    return mean, tf.cast(core_sum(tf.square(rows - mean)), tf.float32)


def receptive_radius(generator: keras.Model) -> int:
    """Pixels of context each output pixel sees on each side (stride-1 convolutions)."""
    return generator.spec.radius


class FastGenerator:
    """Inference graphs for a generator built by `models.build_generator` (any norm or head)."""

    whole_image_only = False  # it has stage graphs: instance-norm photos of any size stream

    def __init__(self, generator: keras.Model, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {' | '.join(PRECISIONS)}, got {precision!r}"
            )
        self.precision = precision
        self.dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
        spec = self.spec = generator.spec  # the layers, as models.GeneratorSpec describes them
        self.stem = generator.get_layer(spec.stem.name)
        self.block_convs = [
            [generator.get_layer(c.name) for c in spec.block(j)] for j in range(spec.res_blocks)
        ]
        self.tail = [generator.get_layer(c.name) for c in spec.tail]
        self.out = generator.get_layer(spec.out.name)
        self.blocks = spec.res_blocks
        self.norms = [generator.get_layer(f"norm{i}") for i in range(2 * self.blocks)]
        self.tanh = spec.head == "tanh"
        self.offset = tf.constant(spec.offset, tf.float32)
        self.out_offset = tf.constant(spec.out_offset, tf.float32)
        self.instance = [
            i for i, n in enumerate(self.norms) if isinstance(n, InstanceNormalization)
        ]
        self.channels = spec.filters
        self.radius = spec.radius
        image = tf.TensorSpec([1, None, None, 3], tf.float32)
        self.one_pass = tf.function(self._forward, input_signature=[image], autograph=False)
        self._stages = {}
        self.streams = len(self.instance) == len(self.norms) > 0
        sizes = [(c.size - 1) // 2 for c in spec.convs()]
        # Rows of context each stage reads above and below the rows it writes: the stem and the
        # first block conv; one conv; the tail convs and the head.
        self.stage_halo = (
            [sizes[0] + sizes[1]]
            + [1] * (len(self.norms) - 1)
            + [sum(sizes[-len(self.tail) - 1 :])]
        )

    def stage(self, i: int, skip_out: bool = False):
        """Streaming stage i of an instance-norm generator: a graph over a window of full-width
        rows; `core` = [top, bottom) are the band's own rows in it, with at least
        `stage_halo[i]` rows of context above and below (fewer only at the image's edges).
        Outputs cover the whole window (the caller keeps the core rows: no sliced copies).
        Activations are in the graphs' dtype, as a one-pass run keeps them (float32, or bfloat16
        in the fast mode); the moments and the enhanced rows are float32:
        - stage 0: (image rows, core) -> (stem output = block 0's skip, norm 0's input, moments);
        - stage i, 1 <= i < number of norms: (norm i-1's input, skip, stats of norm i-1, core) ->
          ([the block's output, with `skip_out`,] norm i's input, its moments over the core);
        - the last stage: (last norm's input, skip, its stats, core) -> the enhanced core rows.
        """
        last = len(self.norms)
        if not 0 < i < last:
            if i not in self._stages:
                self._stages[i] = self._end_graph(i)
            return self._stages[i]
        # The middle stages differ only in their weights, which are inputs: two traced graphs
        # (after a block's first norm, after its last) serve them all, so a process traces and
        # optimises 4 graphs rather than 9 before its first photo.
        key = ((i - 1) % 2, skip_out)
        if key not in self._stages:
            self._stages[key] = self._middle_graph(*key)
        graph = self._stages[key]
        conv, norm = self.block_convs[i // 2][i % 2], self.norms[i - 1]

        def run(h, skip, stats, core):
            weights = (conv.kernel, norm.scale, norm.shift, norm.epsilon)  # read at every call
            return graph(h, skip, stats, core, *(tf.convert_to_tensor(w) for w in weights))

        return run

    def _pre_norm(self, a, conv, core):
        """A norm's input from the activation before its conv (bias skipped: the norm's mean
        subtraction cancels it), and its moments over the core rows."""
        h = tf.nn.conv2d(tf.cast(a, self.dtype), tf.cast(conv, self.dtype), 1, "SAME")
        return (h, *channel_moments(h, core))

    def _middle_graph(self, adds_skip: int, skip_out: bool):
        """Stage i, 1 <= i < number of norms, with norm i-1's and conv i's weights as inputs;
        norm i-1 ends a block where `adds_skip` (its input is added back)."""
        rows = tf.TensorSpec([1, None, None, self.channels], self.dtype)
        signature = [
            rows,
            rows,
            tf.TensorSpec([2, self.channels], tf.float32),  # norm i-1's mean and variance
            tf.TensorSpec([2], tf.int32),
            tf.TensorSpec([None, None, self.channels, self.channels], tf.float32),
            tf.TensorSpec([self.channels], tf.float32),
            tf.TensorSpec([self.channels], tf.float32),
            tf.TensorSpec([], tf.float32),
        ]

        def stage(h, skip, stats, core, conv, scale, shift, epsilon):
            terms = _pooled_terms(stats, epsilon, scale, shift)
            a = _normalize_relu_add(h, *terms, skip) if adds_skip else _normalize_relu(h, *terms)
            return ((a,) if skip_out else ()) + self._pre_norm(a, conv, core)

        return tf.function(stage, input_signature=signature, autograph=False)

    def _end_graph(self, i: int):
        """Stage 0 (the image in) or the last stage (the enhanced rows out)."""
        core = tf.TensorSpec([2], tf.int32)
        if i == 0:

            def stage(x, core):
                stem = self._conv(tf.cast(x - self.offset, self.dtype), self.stem, relu=True)
                return (stem, *self._pre_norm(stem, self.block_convs[0][0].kernel, core))

            signature = [tf.TensorSpec([1, None, None, 3], tf.float32), core]
        else:
            layer = self.norms[i - 1]

            def stage(h, skip, stats, core):
                weights = (tf.convert_to_tensor(w) for w in (layer.scale, layer.shift))
                terms = _pooled_terms(stats, layer.epsilon, *weights)
                a = tf.cast(_normalize_relu_add(h, *terms, skip), self.dtype)
                for conv in self.tail:
                    a = self._conv(a, conv, relu=True)
                return (self._head(a) + self.out_offset)[:, core[0] : core[1]]

            rows = tf.TensorSpec([1, None, None, self.channels], self.dtype)
            stat = tf.TensorSpec([2, self.channels], tf.float32)
            signature = [rows, rows, stat, core]
        return tf.function(stage, input_signature=signature, autograph=False)

    def _conv(self, h, layer, bias: bool = True, relu: bool = False):
        # Grappler fuses conv + bias + relu into one oneDNN call.
        y = tf.nn.conv2d(h, tf.cast(layer.kernel, self.dtype), 1, "SAME")
        if bias:
            y = tf.nn.bias_add(y, tf.cast(layer.bias, self.dtype))
        return tf.nn.relu(y) if relu else y

    def _norm_terms(self, i: int, h):
        """(mean, inv_std, scale, shift), float32 per channel: norm_i(h) =
        (h - mean) * inv_std * scale + shift."""
        layer = self.norms[i]
        if isinstance(layer, InstanceNormalization):
            mean, var = channel_moments(h)
            inv_std = tf.math.rsqrt(var + layer.epsilon)
            return (
                mean,
                inv_std,
                tf.convert_to_tensor(layer.scale),
                tf.convert_to_tensor(layer.shift),
            )
        if isinstance(layer, Affine):
            inv_std = tf.fill([self.channels], 1.0 / (1.0 + layer.epsilon) ** 0.5)
            zero = tf.zeros([self.channels])
            return (
                zero,
                inv_std,
                tf.convert_to_tensor(layer.gamma),
                tf.convert_to_tensor(layer.beta),
            )
        # BatchNormalization at inference: its moving statistics.
        variance, mean = (
            tf.convert_to_tensor(v) for v in (layer.moving_variance, layer.moving_mean)
        )
        inv_std = tf.math.rsqrt(variance + layer.epsilon)
        return mean, inv_std, tf.convert_to_tensor(layer.gamma), tf.convert_to_tensor(layer.beta)

    def _block(self, block: int, h):
        skip = h
        for half in range(2):
            i = 2 * block + half
            layer = self.block_convs[block][half]
            if isinstance(self.norms[i], keras.layers.Identity):
                h = self._conv(h, layer, relu=True)
                continue
            instance = isinstance(self.norms[i], InstanceNormalization)
            h = self._conv(h, layer, bias=not instance)
            norm = self._norm_terms(i, h)
            h = _normalize_relu_add(h, *norm, skip) if half == 1 else _normalize_relu(h, *norm)
        if isinstance(self.norms[2 * block + 1], keras.layers.Identity):
            h = h + skip
        return h

    def _forward(self, x):
        """The enhanced image (float32)."""
        h = self._conv(tf.cast(x - self.offset, self.dtype), self.stem, relu=True)
        for block in range(self.blocks):
            h = self._block(block, h)
        for layer in self.tail:
            h = self._conv(h, layer, relu=True)
        return self._head(h) + self.out_offset

    def _head(self, h):
        layer = self.out
        size = layer.kernel_size[0]
        if size == 1:
            y = tf.cast(self._conv(h, layer), tf.float32)
        else:
            # k x k C->o as a 1 x k C->(k*o) convolution (channel dy*o + j) and k row shifts.
            kernel = tf.transpose(layer.kernel, [1, 2, 0, 3])
            rows = tf.reshape(kernel, [1, size, self.channels, size * layer.filters])
            q = tf.nn.conv2d(h, tf.cast(rows, self.dtype), 1, "SAME")
            y = _row_shift_sum(q, tf.convert_to_tensor(layer.bias), size)
        return tf.tanh(y) * 0.58 + 0.5 if self.tanh else y


@tf.function(jit_compile=True, autograph=False)
def _row_shift_sum(q, bias, size: int):
    """out[y, x, j] = bias[j] + sum_dy q[y + dy - size // 2, x, dy * o + j] (zero outside)."""
    pad = size // 2
    o = q.shape[-1] // size
    q = tf.pad(tf.cast(q, tf.float32), [[0, 0], [pad, pad], [0, 0], [0, 0]])
    height = tf.shape(q)[1] - 2 * pad
    out = bias
    for dy in range(size):
        out = out + q[:, dy : dy + height, :, dy * o : (dy + 1) * o]
    return out


def inference_graphs(model, precision: str = "float32"):
    """The graphs a caller makes once and holds for a run: a FastGenerator for a Keras
    generator; an exported TFLite model (`tflite.TFLiteGenerator`) runs as it is."""
    return FastGenerator(model, precision) if isinstance(model, keras.Model) else model
