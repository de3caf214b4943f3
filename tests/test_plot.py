"""attention.plot: group finding on a hand-made matrix, and figures that render to non-trivial files (Agg)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import attention  # noqa: E402
from attention import plot  # noqa: E402

W = np.array(
    [
        [0.25, 0.25, 0.0, 0.25, 0.25, 0.0],  # two runs, one cluster {0, 1, 3, 4}
        [0.5, 0.2, 0.2, 0.1, 0.0, 0.0],  # one run {1, 2}
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # a lone weight: no group
        [0.1, 0.3, 0.1, 0.3, 0.1, 0.1],  # runs {4, 5}; clusters {1, 3} (0.3 first) and {0, 2, 4, 5}
    ]
)


def test_find_groups_runs():
    assert plot.find_groups(W[0], "runs") == [[0, 1], [3, 4]]
    assert plot.find_groups(W[1], "runs") == [[1, 2]]
    assert plot.find_groups(W[2], "runs") == []
    assert plot.find_groups(W[3], "runs") == [[4, 5]]
    assert plot.find_groups(W[2], "runs", min_size=1) == [[4]]
    assert plot.find_groups(np.zeros(4), "runs") == []  # zeros are never a group


def test_find_groups_clusters():
    assert plot.find_groups(W[0], "clusters") == [[0, 1, 3, 4]]
    assert plot.find_groups(W[1], "clusters") == [[1, 2]]
    assert plot.find_groups(W[2], "clusters") == []
    assert plot.find_groups(W[3], "clusters") == [[1, 3], [0, 2, 4, 5]]
    assert plot.find_groups(torch.tensor([0.3, 0.3 + 1e-9, 0.4]), "clusters", tol=1e-6) == [[0, 1]]
    with pytest.raises(ValueError):
        plot.find_groups(W[0], "blocks")


def test_find_groups_on_mappings():
    torch.manual_seed(0)
    x = torch.randn(20, 30, dtype=torch.float64)
    y = attention.fusedmax(x, lam=0.5)
    for row in y:
        for run in plot.find_groups(row, "runs"):
            assert run == list(range(run[0], run[-1] + 1))
            assert len(set(row[run].tolist())) == 1 and row[run[0]] > 0
    assert any(plot.find_groups(row, "runs") for row in y)  # lam = 0.5 fuses something


def _non_trivial(path, min_bytes):
    return path.exists() and path.stat().st_size > min_bytes


def test_heatmap_renders(tmp_path):
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    w = attention.fusedmax(torch.randn(8, 12), lam=0.3)
    ax = plot.heatmap(w, row_labels=[f"t{i}" for i in range(8)], col_labels=[f"s{j}" for j in range(12)],
                      title="fusedmax")
    assert len(ax.patches) == sum(len(plot.find_groups(row, "runs")) for row in w)
    written = plot.save(ax.figure, tmp_path / "fused")
    assert [p.suffix for p in written] == [".png", ".pdf"]
    assert all(_non_trivial(p, 5_000) for p in written)

    w = attention.oscarmax(torch.randn(8, 12), lam=0.1)
    ax = plot.heatmap(w, outline_groups="clusters")
    assert len(ax.patches) >= len([g for row in w for g in plot.find_groups(row, "clusters")])
    (png,) = plot.save(ax.figure, tmp_path / "oscar.png", formats=("png",))
    assert _non_trivial(png, 5_000)

    ax = plot.heatmap(W, outline_groups=False)
    assert len(ax.patches) == 0
    with pytest.raises(ValueError):
        plot.heatmap(np.zeros(3))
    plt.close("all")


def test_mapping_curves_render(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plot.mapping_curves(lam=0.3, p=1.5, alpha=1.5)
    lines = ax.get_lines()
    assert len(lines) == 6
    labels = [line.get_label() for line in lines]
    assert labels == ["softmax", "sparsemax", "sq-pnorm-max (p=1.5)", "1.5-entmax", "fusedmax (λ=0.3)",
                      "oscarmax (λ=0.3)"]
    t, y = lines[1].get_data()
    assert y[0] == 0.0 and y[-1] == 1.0  # sparsemax saturates at |t| >= gamma
    middle = np.abs(t) < 0.05
    for line in lines[1:]:
        assert np.allclose(line.get_data()[1][middle][[0, -1]].mean(), 0.5, atol=0.05)
    # sq-pnorm-max saturates at |t| = gamma too, but leaves sparsemax's straight line in between
    t, pnorm = lines[2].get_data()
    sparse = lines[1].get_data()[1]
    assert pnorm[np.abs(t) >= 1.0].tolist() == sparse[np.abs(t) >= 1.0].tolist()
    assert np.abs(pnorm - sparse)[np.abs(t) < 0.9].max() > 0.02
    # 1.5-entmax saturates only at |t| = gamma / (alpha - 1) = 2
    entmax_y = lines[3].get_data()[1]
    assert 0 < entmax_y[np.abs(t - 1.5).argmin()] < 1 and entmax_y[-1] == 1.0
    written = plot.save(fig, tmp_path / "sub" / "curves")
    assert all(_non_trivial(p, 5_000) for p in written)
    plt.close("all")
