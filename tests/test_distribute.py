"""The training step under tf.distribute on 2 logical CPU devices matches the one-device step.

Logical devices must be configured before TensorFlow starts, so the check runs in a subprocess.
"""

import json
import os
import subprocess
import sys

from conftest import SMALL_NETS

SCRIPT = (
    f"SMALL = {SMALL_NETS!r}\n"
    + r"""
import json, warnings
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from dped.config import preset
from dped.training import DPEDModel
warnings.simplefilter("ignore")
cfg = preset("seed").replace(vgg_weights="random", batch_size=4, **SMALL)
single = DPEDModel(cfg)
mirrored = DPEDModel(cfg, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
rng = np.random.default_rng(0)
dslr = rng.random((4, SMALL["patch_size"], SMALL["patch_size"], 3), dtype=np.float32)
phone = (0.7 * dslr ** 1.4).astype(np.float32)
out = {"replicas": mirrored.strategy.num_replicas_in_sync, "logs": [], "weights": []}
for _ in range(2):
    a, b = single.train_step(phone, dslr), mirrored.train_step(phone, dslr)
    out["logs"].append({k: [float(a[k]), float(b[k])] for k in a})
for nets in (("generator",), ("discriminator",)):
    for wa, wb in zip(getattr(single, nets[0]).weights, getattr(mirrored, nets[0]).weights):
        out["weights"].append(float(np.abs(wa.numpy() - wb.numpy()).max()))
print("RESULT" + json.dumps(out))
"""
)


def test_mirrored_step_on_two_cpus_matches_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    assert result["replicas"] == 2
    for logs in result["logs"]:
        for name, (one, two) in logs.items():
            assert abs(one - two) <= 1e-4 * max(1.0, abs(one)), (name, one, two)
    # Adam moves each weight by about lr per step whatever the gradient's size, so where a
    # gradient is ~0 its float32 round-off (replica sums vs one sum) can flip the step's sign:
    # after 2 steps two runs can differ by up to 2 * 2 * lr = 4e-4 on such weights.
    assert max(result["weights"]) <= 4e-4
