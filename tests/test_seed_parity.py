"""`seed` computes what JuheonYi/DPED-TensorFlow's own code computes (../shared/reference/seed/).

The golden values were made by running the seed's DPED class (batch 4, the fake VGG-19 .mat,
fixed batches, augmentation off): its generator outputs from `init`, every loss term, two
discriminator pre-training steps, three joint iterations and its evaluation protocol. Tolerances
are the reference README's (float summation order only).
"""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from dped.cli import main
from dped.config import preset
from dped.evaluation import PairMetrics, batch_terms
from dped.models import VGG_MEAN

TERMS = ("color", "texture", "content", "tv", "generator", "discriminator")


@pytest.fixture(scope="module")
def seed_ref(reference):
    folder = reference / "seed"
    return folder, json.loads((folder / "seed_golden_A.json").read_text())


def image(reference, name):
    return iio.imread(reference / f"in_{name}.png").astype(np.float32) / 255.0


def batches(reference, golden):
    """Phone patches from the astronaut, DSLR patches at the same positions from the authors'
    iPhone output rounded to uint8, as the golden run cut them; 0..1 (our side of the shift)."""
    phone = image(reference, "astronaut_512x512")
    dslr = np.round(
        np.clip(np.load(reference / "out_iphone_orig_astronaut_512x512.npy"), 0, 1) * 255
    )
    dslr = dslr.astype(np.float32) / 255.0
    cut = lambda img, pos: np.stack([img[r : r + 100, c : c + 100] for r, c in pos])  # noqa: E731
    return [(cut(phone, pos), cut(dslr, pos)) for pos in golden["positions"]]


@pytest.fixture(scope="module")
def seed_model(seed_ref, fake_vgg_mat):
    from dped.training import DPEDModel

    folder, _ = seed_ref
    cfg = preset("seed").replace(
        vgg_weights=str(fake_vgg_mat),
        batch_size=4,
        augment=False,
        init_checkpoint=str(folder / "init" / "DPED"),
    )
    return DPEDModel(cfg)


def relative(ours, theirs):
    return abs(float(ours) - theirs) / abs(theirs)


def discriminator_terms(model, fake, dslr):
    """The seed's discriminator loss and accuracy with `fake` as the enhanced side."""
    return model.losses.adversarial_terms(model.critic(fake, dslr, None), None)


def check_terms(model, phone, dslr, fake, golden, tolerance, parity, label):
    terms, _ = batch_terms(model, phone, dslr, np.zeros(len(phone), np.int32))
    terms.update(discriminator_terms(model, fake, dslr))
    for name in TERMS:
        error = relative(terms[name], golden[name])
        tol = max(tolerance, 1e-3) if name == "content" else tolerance
        parity(f"seed {label}", f"{name} relative error", error, tol)
        assert error <= tol, (label, name, float(terms[name]), golden[name])


def test_seed_training_sequence_matches_the_seeds_code(seed_model, seed_ref, reference, parity):
    folder, golden = seed_ref
    model = seed_model
    data = batches(reference, golden)
    centre = VGG_MEAN / 255.0

    for name in ("astronaut_crop_64x96", "grace_hopper_600x512"):
        ours = model.generator(image(reference, name)[None]).numpy()[0] - centre
        error = float(np.abs(ours - np.load(folder / f"out_init_{name}.npy")).max())
        parity("seed init output max |ours - ref|", name, error, 1e-4)
        assert error <= 1e-4, name

    phone3, dslr3 = data[3]
    check_terms(
        model, phone3, dslr3, phone3, golden["init_losses_eval_batch"], 1e-4, parity, "init terms"
    )

    for step, (phone, dslr) in enumerate(data[:2]):
        model.pretrain_step(phone, dslr)
        loss = float(discriminator_terms(model, phone3, dslr3)["discriminator"])
        error = relative(loss, golden["pretrain_d_loss_after_each_step"][step])
        parity("seed D pre-training", f"step {step + 1} loss relative error", error, 1e-3)
        assert error <= 1e-3

    for it, (phone, dslr) in enumerate(data[:3]):
        model.train_step(phone, dslr)
        enhanced3 = model.generator(phone3)
        expected = golden["losses_eval_batch_after_each_iteration"][it]
        check_terms(model, phone3, dslr3, enhanced3, expected, 1e-3, parity, f"iteration {it + 1}")

    for name in ("astronaut_crop_64x96", "grace_hopper_600x512"):
        ours = model.generator(image(reference, name)[None]).numpy()[0] - centre
        error = float(np.abs(ours - np.load(folder / f"out_trained3_{name}.npy")).max())
        parity("seed trained3 output max |ours - ref|", name, error, 1e-3)
        assert error <= 1e-3, name

    metrics = PairMetrics()
    metrics.update(phone3, model.generator(phone3), dslr3)
    result = metrics.result("seed")
    for key in ("dslr_enhanced", "phone_enhanced"):
        error = abs(result[f"psnr_{key}"] - golden[f"eval_psnr_{key}"])
        parity("seed evaluation protocol", f"psnr {key} |ours - ref| dB", error, 1e-3)
        assert error <= 1e-3
    assert result["psnr"] == result["psnr_dslr_enhanced"]


def test_enhance_with_the_seeds_checkpoint_writes_image_space_raw(
    seed_ref, reference, tmp_path, parity
):
    folder, _ = seed_ref
    src = reference / "in_astronaut_crop_64x96.png"
    code = main(
        [
            "enhance",
            str(src),
            "--model",
            str(folder / "init" / "DPED"),
            "--raw",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    raw = np.load(tmp_path / "in_astronaut_crop_64x96.npy")
    expected = np.load(folder / "out_init_astronaut_crop_64x96.npy") + VGG_MEAN / 255.0
    error = float(np.abs(raw - expected).max())
    parity("dped enhance --raw (seed init)", "astronaut_crop_64x96", error, 1e-4)
    assert error <= 1e-4
    # The folder form (checkpoint/<phone>/ as the seed saves it) is accepted too.
    assert (
        main(["enhance", str(src), "--model", str(folder / "init"), "--out", str(tmp_path / "f")])
        == 0
    )


def test_an_incomplete_seed_checkpoint_is_refused(seed_ref, tmp_path):
    import tensorflow as tf

    from dped.pretrained import CheckpointError, generator_from_checkpoint, read_checkpoint

    folder, _ = seed_ref
    tensors = read_checkpoint(folder / "init" / "DPED")
    # The seed's own format (TF1 Saver names), without the head: a foreign or cut checkpoint.
    kept = {k: tf.Variable(v) for k, v in tensors.items() if not k.startswith("generator/CONV_5")}
    tf.compat.v1.train.Saver(var_list=kept).save(None, str(tmp_path / "DPED"))
    with pytest.raises(CheckpointError, match="tmp"):
        generator_from_checkpoint(tmp_path / "DPED")
