import h5py
import numpy as np
import pytest

from dped import vgg


@pytest.fixture(scope="module")
def mat_weights(vgg_mat):
    return vgg.load_mat(vgg_mat)


def write_keras_h5(path, weights):
    """A file in the layout of Keras' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5."""
    with h5py.File(path, "w") as f:
        names = [f"block{n[4]}_conv{n[6]}" for n in vgg.CONV_LAYERS]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for ours, theirs in zip(vgg.CONV_LAYERS, names):
            kernel, bias = weights[ours]
            if ours == "conv1_1":
                kernel = kernel[:, :, ::-1, :]  # Keras' file expects BGR input
            group = f.create_group(theirs)
            keys = [f"{theirs}_W_1:0", f"{theirs}_b_1:0"]
            group.attrs["weight_names"] = [k.encode() for k in keys]
            group[keys[0]], group[keys[1]] = kernel, bias


def test_mat_loader_transposes_matconvnet_kernels(vgg_mat, mat_weights):
    import scipy.io

    raw_kernel = scipy.io.loadmat(vgg_mat)["layers"][0][0][0][0][0][0][0]
    assert not np.array_equal(raw_kernel, raw_kernel.transpose(1, 0, 2, 3))  # it can tell
    np.testing.assert_array_equal(mat_weights["conv1_1"][0], raw_kernel.transpose(1, 0, 2, 3))
    assert set(mat_weights) == set(vgg.CONV_LAYERS) and len(vgg.CONV_LAYERS) == 16


def test_relu5_4_of_a_100x100_patch_is_7x7(mat_weights):
    model = vgg.build_vgg(mat_weights)
    assert model(np.zeros((2, 100, 100, 3), np.float32)).shape == (2, 7, 7, 512)
    assert not model.trainable_weights


def test_h5_and_mat_give_the_same_features(tmp_path, mat_weights):
    path = tmp_path / vgg.H5_NAME
    write_keras_h5(path, mat_weights)
    x = np.random.default_rng(0).random((1, 64, 48, 3), dtype=np.float32)
    a = vgg.build_vgg(mat_weights, "relu3_4")(x).numpy()
    b = vgg.build_vgg(vgg.load_h5(path), "relu3_4")(x).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_imagenet_uses_keras_cache(tmp_path, monkeypatch, mat_weights):
    path = tmp_path / vgg.H5_NAME
    write_keras_h5(path, mat_weights)
    monkeypatch.setattr(vgg.keras.utils, "get_file", lambda *a, **k: str(path))
    weights, is_random = vgg.load_weights("imagenet")
    assert not is_random
    np.testing.assert_array_equal(weights["conv5_4"][0], mat_weights["conv5_4"][0])


def test_imagenet_offline_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(vgg.keras.utils, "get_file", offline)
    with pytest.raises(
        vgg.VGGWeightsError, match="could not fetch .*put the file in ~/.keras/models"
    ):
        vgg.load_weights("imagenet")


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(
        vgg.VGGWeightsError,
        match=f"no VGG-19 weights at {tmp_path}/x.mat: download imagenet-vgg-verydeep-19.mat",
    ):
        vgg.load_weights(str(tmp_path / "x.mat"))
    with pytest.raises(
        vgg.VGGWeightsError, match=f"no VGG-19 weights at {tmp_path}/x.h5: get {vgg.H5_NAME}"
    ):
        vgg.load_weights(str(tmp_path / "x.h5"))
    with pytest.raises(
        vgg.VGGWeightsError, match="expected a .mat or .h5 path, 'imagenet' or 'random'"
    ):
        vgg.load_weights("vgg19.pth")


def test_malformed_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"garbage")
    with pytest.raises(vgg.VGGWeightsError, match="bad.mat is not MatConvNet's"):
        vgg.load_weights(str(tmp_path / "bad.mat"))
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_group("something_else")
    with pytest.raises(vgg.VGGWeightsError, match=f"bad.h5 is not Keras' {vgg.H5_NAME}"):
        vgg.load_weights(str(tmp_path / "bad.h5"))


def test_random_weights_only_when_asked_and_flagged():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        weights, is_random = vgg.load_weights("random", seed=3)
    assert is_random
    assert weights["conv1_1"][0].shape == (3, 3, 3, 64)


def test_unknown_content_layer():
    with pytest.raises(ValueError, match="content_layer: expected a VGG-19 layer"):
        vgg.build_vgg(vgg.random_weights(), "relu6_1")


def test_the_reference_fake_mat_file_loads(fake_vgg_mat):
    weights = vgg.load_mat(fake_vgg_mat)
    assert weights["conv5_4"][0].shape == (3, 3, 512, 512)


def test_frozen_convolution_gradients_equal_tensorflows_own(mat_weights):
    import tensorflow as tf

    # The content loss back-propagates through every VGG convolution by the custom input
    # gradient: compare with autodiff through tf.nn.conv2d, layer by layer, odd sizes included.
    net = vgg.build_vgg(mat_weights, "relu5_4")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((2, 37, 45, 3), dtype=np.float32))

    def autodiff(images):
        h = net.get_layer("preprocess")(images)
        for layer in net.layers[2:]:
            is_conv = isinstance(layer, vgg.FrozenConv2D)
            h = tf.nn.conv2d(h, layer.kernel, 1, "SAME") + layer.bias if is_conv else layer(h)
        return h

    weights = tf.constant(rng.standard_normal(net(x).shape), tf.float32)  # 37x45 -> 3x3
    results = []
    for forward in (net, autodiff):
        with tf.GradientTape() as tape:
            tape.watch(x)
            features = forward(x)
            loss = tf.reduce_sum(features * weights)
        results.append((features, tape.gradient(loss, x)))
    (features, grad), (want_features, want_grad) = results
    np.testing.assert_allclose(features, want_features, rtol=1e-4, atol=1e-3)
    scale = float(tf.reduce_max(tf.abs(want_grad)))
    assert scale > 0
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=1e-4 * scale)
    assert not net.trainable_weights
