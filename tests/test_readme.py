"""The README's Python examples run as written: every ```python block whose info string says
``runnable`` is executed on its own (each must import and define what it uses), in a scratch
folder, so the README cannot drift from the code. Blocks indented under a list item count too."""
import re
import textwrap
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^( *)```python([^\n]*)\n(.*?)^\1```", re.M | re.S)


def _snippets():
    text = README.read_text()
    for match in BLOCK.finditer(text):
        if "runnable" in match.group(2).split():
            line = text.count("\n", 0, match.start()) + 1
            yield pytest.param(textwrap.dedent(match.group(3)), id=f"README.md:{line}")


SNIPPETS = list(_snippets())


def test_readme_has_runnable_snippets():
    assert len(SNIPPETS) >= 9  # 8 top-level blocks and the one indented under detection's list


@pytest.mark.parametrize("code", SNIPPETS)
def test_readme_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
