"""The README's demo: every optimizer learns digits, the CLI prints the table and the
Hessian report, and the figures are real PNGs with content."""

import numpy as np
import pytest

from gradxform import demo


@pytest.fixture(scope="module")
def rows():
    return demo.run(steps=40, batch_size=64)


@pytest.mark.slow  # trains the demo's optimizers
def test_every_optimizer_beats_chance_by_far(rows):
    assert [r["optimizer"] for r in rows] == list(demo.optimizers())
    for r in rows:
        assert r["test_accuracy"] > 0.6, r  # chance is 0.1 on 10 balanced classes
        assert r["train_loss"] < 2.302  # below log(10), the loss of a uniform guess
        assert len(r["losses"]) == 40 and np.all(np.isfinite(r["losses"]))


@pytest.mark.slow  # trains the demo's optimizers
def test_table_lists_every_optimizer(rows):
    table = demo.format_table(rows)
    for r in rows:
        assert r["optimizer"] in table


@pytest.mark.slow  # trains the demo's optimizers
def test_cli_end_to_end_writes_valid_figures(tmp_path, capsys):
    out = tmp_path / "figures"
    assert (
        demo.main(["demo", "--steps", "30", "--optimizers", "sgd,adam,lbfgs", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    for label in (
        "SGD",
        "Adam",
        "L-BFGS (full batch)",
        "top-5 eigenvalues",
        "trace (Hutch++)",
        "verdict",
    ):
        assert label in printed
    import matplotlib.image

    for name in ("loss_curves.png", "hessian_spectrum.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(out / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels[..., :3].std() > 0.05, name  # not a blank canvas


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        demo.main(["demo", "--steps", "0"])
    with pytest.raises(SystemExit):
        demo.main(["demo", "--optimizers", "sgd,adamax"])


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        demo.main(["demo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--optimizers", "--steps", "--seed", "--out", "--batch-size"):
        assert flag in text
