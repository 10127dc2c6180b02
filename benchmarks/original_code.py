"""The authors' enhancement of one photo, as their test_model.py does it, for `make bench`.

`python benchmarks/original_code.py CHECKOUT WEIGHTS_DIR IN.png OUT.png`: imports models.py
from CHECKOUT (a clone of aiff22/DPED), builds their TF1 graph for the photo's size through
tf.compat.v1, restores iphone_orig, enhances the whole photo in one run and writes a PNG. Timed
from outside as a whole process, beside `dped enhance` on the same file.
"""

import sys

import imageio.v3 as iio
import numpy as np
import tensorflow as tf


def main(checkout: str, weights_dir: str, src: str, dst: str) -> None:
    tf.compat.v1.disable_v2_behavior()  # their _instance_norm reads Dimension.value
    sys.path.insert(0, checkout)
    import models  # their models.py

    image = iio.imread(src)[..., :3].astype(np.float32)[None] / 255
    x = tf.compat.v1.placeholder(tf.float32, image.shape)
    enhanced = models.resnet(x)
    with tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver().restore(session, f"{weights_dir}/iphone_orig")
        out = session.run(enhanced, {x: image})[0]
    iio.imwrite(dst, np.round(np.clip(out, 0, 1) * 255).astype(np.uint8))


if __name__ == "__main__":
    main(*sys.argv[1:5])
