"""The proxy keeps large freed blocks in its heap (glibc), and refuses nonsense thresholds."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from clearwall import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_thresholds_in_a_fresh_process():
    code = "from clearwall import allocator; print(allocator.keep_large_blocks())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": 0}, {"trim_threshold": -1}, {"mmap_threshold": 1 << 31}])
def test_thresholds_must_be_positive_c_ints(kwargs):
    with pytest.raises(ValueError):
        allocator.keep_large_blocks(**kwargs)
