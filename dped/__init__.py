"""dped: reproducible DPED photo enhancement (Ignatov et al., ICCV 2017) in TensorFlow 2.

Submodules import TensorFlow; this package root does not, so `dped.config` stays cheap.
"""

from dped.config import Config, ConfigError, preset

__all__ = ["Config", "ConfigError", "preset"]
__version__ = "0.1.0"
