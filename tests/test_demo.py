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
    # the fixture's steps and batch size: run() reuses the three training functions that
    # the fixture compiled (in this process), instead of compiling them again
    argv = ["demo", "--steps", "40", "--batch-size", "64", "--optimizers", "sgd,adam,lbfgs"]
    assert demo.main(argv + ["--out", str(out)]) == 0
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


def fake_rows(steps=300):
    """Rows shaped like run()'s, with known losses: two pairs of identical curves, and a
    full-batch L-BFGS that reaches 0."""
    t = np.arange(steps)
    rows = []
    for i, name in enumerate(demo.OPTIMIZERS):
        losses = 2.0 * np.exp(-t / (60.0 + 10 * (i // 2))) + 0.05 + 0.01 * np.cos(t)
        if demo.OPTIMIZERS[name][2]:
            losses = np.where(t < 40, 2.0 * 0.7**t, 0.0)
        label = demo.OPTIMIZERS[name][0]
        rows.append({"name": name, "optimizer": label, "losses": losses, "train_loss": losses[-1]})
    return rows


def test_loss_figure_shows_each_optimizer_in_its_own_panel_on_the_data_range():
    import matplotlib.pyplot as plt

    rows = fake_rows()
    fig = demo.loss_figure(rows)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == len(rows)  # identical curves (pairs above) cannot hide each other
    window = 20
    assert f"trailing mean over {window} steps" in fig.get_suptitle()
    bottom, top = panels[0].get_ylim()
    minibatch = [r for r in rows if not demo.OPTIMIZERS[r["name"]][2]]
    for ax, row in zip(panels, rows):
        assert ax.get_title().startswith(row["optimizer"])
        assert ax.get_legend() is None
        mine = [line for line in ax.get_lines() if line.get_color() != "0.82"]
        assert len(mine) == 1 and len(ax.get_lines()) == len(rows) + 1
        if not demo.OPTIMIZERS[row["name"]][2]:  # the trailing mean, by cumulative sums
            c = np.concatenate([[0.0], np.cumsum(row["losses"])])
            np.testing.assert_allclose(mine[0].get_ydata(), (c[window:] - c[:-window]) / window)
            np.testing.assert_array_equal(mine[0].get_xdata(), np.arange(window, 301))
    peak = max(np.max(r["losses"]) for r in rows)
    lowest = min(
        np.min(np.convolve(r["losses"], np.ones(window) / window, "valid")) for r in minibatch
    )
    assert peak <= top <= 1.5 * peak  # not 5 for data that peaks at 2
    assert lowest / 2 <= bottom <= lowest
    lbfgs = panels[len(rows) - 1]
    assert any("0 (float32) from step 41" in t.get_text() for t in lbfgs.texts)
    plt.close(fig)
