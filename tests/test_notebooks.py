"""The notebooks in notebooks/ run top to bottom with small settings (nbclient, a kernel on this interpreter).

Each notebook has one cell tagged `parameters`; the test inserts a cell after it that shrinks the settings
further (as papermill does), runs the notebook in a temporary working directory with a per-cell timeout, and
fails with the cell's error. The kernel is this test's own interpreter, declared in a kernelspec written to a
temporary JUPYTER_PATH, so nothing is installed into the user's Jupyter set-up. Committed notebooks carry no
outputs (checked here too), so diffs stay readable and nothing stale is shown.
"""

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 240
KERNEL = "vrsjax-notebook-test"
# Per notebook: assignments run right after its `parameters` cell.
CI_PARAMETERS: dict[str, str] = {
    "porting_checkpoints.ipynb": "LORA_RANK = 2",
    "grpo_walkthrough.ipynb": "GROUP_SIZE = 4\nMAX_NEW_TOKENS = 10",
    "quickstart.ipynb": "NUM_FRAMES = 4",
}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for sys.executable in a temporary JUPYTER_PATH; the kernel runs on CPU with one device."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    env = {"JUPYTER_PATH": str(root), "JAX_PLATFORMS": "cpu", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    # the kernel inherits os.environ; drop the test suite's simulated multi-device flag so notebooks see 1 device
    saved = {key: os.environ.get(key) for key in [*env, "XLA_FLAGS"]}
    os.environ.update(env)
    os.environ.pop("XLA_FLAGS", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _with_parameters(nb, overrides: str):
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged `parameters` (the settings CI shrinks)"
    cell = nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


@pytest.mark.slow  # ~20 s each on an idle 2-core machine, mostly imports and jit compiles
@pytest.mark.parametrize("name", sorted(CI_PARAMETERS))
def test_notebook_runs(name, kernel_env, tmp_path):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, cell in enumerate(nb.cells) if cell.get("outputs") or cell.get("execution_count")]
    assert not stale, f"{name}: cells {stale} carry outputs; strip them before committing (see notebooks/README.md)"
    nb = _with_parameters(nb, CI_PARAMETERS[name])
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    client.execute()
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
    assert images >= 1, f"{name}: no figure was drawn"
