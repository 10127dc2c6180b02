"""TensorFlow imported without its C++ start-up lines.

TensorFlow writes them (the absl banner, oneDNN, cudart_stub, cpu_feature_guard and, on a
machine without an NVIDIA driver, `failed call to cuInit`) before absl logging is initialised,
so `TF_CPP_MIN_LOG_LEVEL` does not hide them, and users cannot tell them from real errors.
`install()`, run by `import dped`, wraps the first `import tensorflow` (whoever triggers it:
keras, tensorboard or our modules) in a redirect of file descriptor 2 and prints back the lines
at or above the log level. `DPED_VERBOSE=1` (`dped --verbose`) or `TF_CPP_MIN_LOG_LEVEL=0`
shows everything.

`skipping()` makes that first import lean where a process only runs inference: Keras imports
matplotlib, pandas, IPython, scipy and h5py when they are installed (for its plot galleries,
DataFrame inputs to `fit`, notebook display, image utilities and .h5 files), and loading them
took ~1 s of every `dped enhance` start here.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

DEFAULT_LEVEL = 2  # hide INFO and WARNING, as TF_CPP_MIN_LOG_LEVEL=2 would if it could
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_RECORD = re.compile(r"^([IWEF])\d{4} ")  # absl's prefix: severity, MMDD, time, thread, file
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
# Harmless only where no NVIDIA driver is installed; on a GPU machine it is a real error.
_NO_GPU = re.compile(r"failed call to cuInit|Could not find cuda drivers")
# TFLite's converter (every int8 export) and interpreter (every model loaded) chatter.
_TFLITE = re.compile(r"^(fully_quantize: |INFO: Created TensorFlow Lite XNNPACK delegate)")


def install() -> None:
    """Hook the first `import tensorflow` unless the user asked for TensorFlow's own output."""
    if os.environ.get("DPED_VERBOSE") == "1" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(DEFAULT_LEVEL))
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())


def level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL))
    except ValueError:
        return DEFAULT_LEVEL


def keep(lines: list[str], min_level: int, has_gpu_driver: bool) -> list[str]:
    """The start-up lines a user should see: records at or above `min_level`, each with its
    continuation lines; the cuInit failure only where a GPU driver exists."""
    kept, showing = [], True
    for line in lines:
        record = _RECORD.match(line)
        if line.startswith(_BANNER) or _TFLITE.match(line):
            showing = min_level == 0
        elif record:
            showing = _SEVERITY[record.group(1)] >= min_level and not (
                min_level > 0 and not has_gpu_driver and _NO_GPU.search(line)
            )
        if showing:
            kept.append(line)
    return kept


@contextlib.contextmanager
def filtered_stderr():
    """Send file descriptor 2 to a temporary file, then write back the lines `keep` passes."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            gpu = Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()
            shown = keep(text.splitlines(), level(), gpu)
            if shown:
                sys.stderr.write("\n".join(shown) + "\n")
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self.loader.exec_module(module)
            module.config.list_physical_devices()  # device start-up: where cuInit complains


# Optional imports of Keras and TensorFlow that inference never uses.
INFERENCE_SKIPS = ("matplotlib", "pandas", "IPython", "scipy", "h5py")


@contextlib.contextmanager
def skipping(names: tuple[str, ...] = INFERENCE_SKIPS):
    """Inside the block, importing `names` or their submodules fails with ImportError, as if
    they were not installed; Keras and TensorFlow then go without them. Only where TensorFlow is
    not imported yet: a process that has it keeps what its Keras found. Imports after the
    block work as usual."""
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _SkipFinder(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


class _SkipFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]):
        self.names = frozenset(names)

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in self.names:
            raise ImportError(f"{name}: skipped while TensorFlow is imported for inference")
        return None


class _QuietFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and the lookup below must not find us again
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec
