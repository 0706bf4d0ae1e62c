"""The guides' examples run as written: each is copied out of its Markdown file into a
temporary directory and run there, so a guide and its example cannot drift apart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown.read_text(), re.S | re.M)


def test_the_testing_guide_example_passes(tmp_path: Path) -> None:
    (example,) = python_blocks(DOCS / "testing.md")
    test_file = tmp_path / "test_shout.py"
    test_file.write_text(example)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test_file.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tests = re.findall(r"^async def (test_\w+)", example, re.M)
    assert len(tests) == 3
    assert re.search(rf"^{len(tests)} passed", done.stdout.splitlines()[-1]), done.stdout
