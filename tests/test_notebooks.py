"""The notebooks run top to bottom (nbclient), so they never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str) -> list[str]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=-1, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return [
        "".join(o.get("text", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    ]


def test_equilibrium_notebook_reproduces_figure_1():
    out = "\n".join(execute("01_equilibrium.ipynb"))
    assert "EquiNorm kernel: positive +9.000  negative -9.000" in out


def test_results_notebook_explores_a_tree(tmp_path, monkeypatch):
    for seed, acc in enumerate([90.0, 91.0, 92.0]):
        write_run(tmp_path, "digits_demo", "digits-preact_resnet18-equi", seed, acc)
        write_run(tmp_path, "digits_demo", "digits-preact_resnet18-bn", seed, acc - 1)
    write_run(
        tmp_path, "digits_demo", "digits-preact_resnet18-bn", 3, 50.0, status="running", epochs=4
    )
    monkeypatch.setenv("EQUINORM_RESULTS", str(tmp_path))
    out = "\n".join(execute("02_results.ipynb"))
    assert "7 runs in 1 experiments" in out
