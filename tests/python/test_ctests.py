"""Builds the C tests (tests/c) under AddressSanitizer + UndefinedBehaviorSanitizer and runs them with ctest.

One pytest command then covers the C unit tests too. Skipped only when there is no
CMake or no C compiler on the machine (the package could not have been built either).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_c_tests_under_sanitizers(tmp_path_factory):
    build = tmp_path_factory.mktemp("build-asan")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    for cmd in (["cmake", "-S", str(ROOT), "-B", str(build), "-DVLC_BUILD_TESTS=ON", "-DVLC_SANITIZE=ON",
                 "-DCMAKE_BUILD_TYPE=Debug"],
                ["cmake", "--build", str(build), "-j2"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert r.returncode == 0, " ".join(cmd) + "\n" + r.stdout[-4000:] + r.stderr[-4000:]
    r = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "tests passed" in r.stdout
