import numpy as np
import pytest
from conftest import SMALL_NETS

from dped.config import preset
from dped.evaluation import batch_terms
from dped.training import DPEDModel


def fixed_batch(batch=4, size=SMALL_NETS["patch_size"]):
    rng = np.random.default_rng(0)
    dslr = rng.random((batch, size, size, 3), dtype=np.float32)
    phone = (0.7 * dslr**1.4).astype(np.float32)
    return phone, dslr


@pytest.mark.parametrize("name", ["paper", "seed"])
def test_one_step_changes_weights_and_lowers_the_generator_loss(name):
    cfg = preset(name).replace(**SMALL_NETS, batch_size=4, vgg_weights="random")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = DPEDModel(cfg)
    assert model.vgg_random
    phone, dslr = fixed_batch()
    swaps = np.array([0, 1, 0, 1])
    before, _ = batch_terms(model, phone, dslr, swaps)
    g_before = [w.numpy().copy() for w in model.generator.trainable_weights]
    d_before = [w.numpy().copy() for w in model.discriminator.trainable_weights]

    logs = model.train_step(phone, dslr)

    assert set(logs) == {
        "content",
        "color",
        "texture",
        "tv",
        "generator",
        "discriminator",
        "d_accuracy",
    }
    assert all(np.isfinite(float(v)) for v in logs.values())
    for old, new in zip(g_before, model.generator.trainable_weights):
        assert not np.array_equal(old, new.numpy()), new.path
    assert any(
        not np.array_equal(o, n.numpy())
        for o, n in zip(d_before, model.discriminator.trainable_weights)
    )
    after, _ = batch_terms(model, phone, dslr, swaps)
    assert float(after["generator"]) < float(before["generator"])


@pytest.mark.parametrize("native, chosen", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_precision_computes_in_bfloat16_only_where_the_cpu_does_natively(
    monkeypatch, native, chosen
):
    from dped import training
    from dped.inference import graphs

    monkeypatch.setattr(graphs, "bfloat16_native", lambda: native)
    assert training.compute_precision("auto") == chosen
    assert training.compute_precision("float32") == "float32"  # a given precision is kept
    assert training.compute_precision("mixed_bfloat16") == "mixed_bfloat16"
    cfg = preset("seed").replace(**SMALL_NETS, vgg_weights="random", precision="auto")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = DPEDModel(cfg)
    assert model.precision == chosen
    assert model.generator.get_layer("conv2").compute_dtype == chosen.removeprefix("mixed_")


def test_mixed_bfloat16_step_is_close_to_float32_and_leaves_the_policy_alone():
    import keras

    phone, dslr = fixed_batch()
    swaps = np.array([0, 1, 0, 1])
    terms = {}
    for precision in ("float32", "mixed_bfloat16"):
        cfg = preset("seed").replace(
            **SMALL_NETS, batch_size=4, vgg_weights="random", precision=precision
        )
        with pytest.warns(UserWarning, match="RANDOM weights"):
            model = DPEDModel(cfg)
        assert keras.mixed_precision.global_policy().name == "float32"
        terms[precision], enhanced = batch_terms(model, phone, dslr, swaps)
        assert enhanced.dtype == "float32"
        logs = model.train_step(phone, dslr)
        assert all(np.isfinite(float(v)) for v in logs.values())
    bf16 = model.generator.get_layer("conv2")
    assert bf16.compute_dtype == "bfloat16" and bf16.kernel.dtype == "float32"
    for k in ("content", "color"):
        assert float(terms["mixed_bfloat16"][k]) == pytest.approx(
            float(terms["float32"][k]), rel=0.02
        )
