"""Run a command and write its own peak RSS (bytes) to a file: python tools/peak_rss.py FILE CMD...

Why a launcher: Linux records the parent's memory high-water mark in a child's ru_maxrss when
the child execs (vfork shares the parent's pages, and fork copies their count), so os.wait4 from
a process that holds TensorFlow reports that process's size, not the command's. This small
process starts the command itself, so the figure is the command's. Exit status: the command's
(128 + N when a signal N ended it). Its stdin, stdout and stderr are the command's.
"""

import os
import subprocess
import sys


def main() -> int:
    out, cmd = sys.argv[1], sys.argv[2:]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    with open(out, "w") as f:
        f.write(f"{usage.ru_maxrss * 1024}\n")  # ru_maxrss is KiB on Linux
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
