"""The README's notebook example runs as written (with a one-epoch budget)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # Lightning writes checkpoints/ into the working directory
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0]
    assert "max_epochs=20" in code
    code = code.replace("max_epochs=20", "max_epochs=1, enable_progress_bar=False")
    code = code.replace("GaussianMixtureDataModule()", "GaussianMixtureDataModule(n_train=1024)")
    exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "sliced_w2" in out
