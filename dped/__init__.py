"""dped: reproducible DPED photo enhancement (Ignatov et al., ICCV 2017) in TensorFlow 2.

Submodules import TensorFlow; this package root does not, so `dped.config` stays cheap. It
only arranges for TensorFlow's C++ start-up lines to be filtered when it is imported (quiet.py).
"""

from dped import quiet

quiet.install()

from dped.config import Config, ConfigError, preset  # noqa: E402

__all__ = ["Config", "ConfigError", "preset"]
__version__ = "0.1.0"
