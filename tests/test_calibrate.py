"""dped.calibrate directly: each term's magnitude at initialisation and for the identity mapping,
and the table `dped calibrate` prints and notebook 01 shows."""

import numpy as np
import pytest

from dped import calibrate, losses
from dped.config import preset

CFG = preset("paper").replace(batch_size=2, patch_size=32, filters=8, vgg_weights="random")


def test_the_identity_rows_are_the_losses_of_the_phone_patches_themselves():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        values = calibrate.measure(CFG, batches=2)
    kernel = losses.gauss_kernel(CFG.blur_size, CFG.blur_nsig, 3)
    color = np.mean(
        [
            float(losses.color_loss(*calibrate.sample_batch(2, 32, CFG.seed + b), kernel))
            for b in range(2)
        ]
    )
    tv = np.mean(
        [
            float(losses.total_variation_loss(calibrate.sample_batch(2, 32, CFG.seed + b)[0]))
            for b in range(2)
        ]
    )
    assert values["identity"]["color"] == pytest.approx(color, rel=1e-5)
    assert values["identity"]["tv"] == pytest.approx(tv, rel=1e-5)
    assert values["init"]["color"] != pytest.approx(color)  # the generator is not the identity


def test_the_table_weighs_each_term_by_its_configs_weight():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        table = calibrate.table({"paper": CFG}, batches=1)
    assert list(table.index) == [("paper", term) for term in calibrate.TERMS]
    for term in calibrate.TERMS:
        row = table.loc[("paper", term)]
        assert row["weight"] == getattr(CFG, f"w_{term}")
        assert row["w*|init|"] == pytest.approx(row["weight"] * row["|init|"])
