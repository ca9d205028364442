"""Images of the evaluation (matplotlib is optional and imported only here): PR curves, reliability."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SquadkitError



def require_matplotlib() -> None:
    """Fail early, with the install hint, when images are asked for and matplotlib is absent."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise SquadkitError("writing precision-recall images needs matplotlib: "
                            "pip install 'squadkit[plot]'") from None


def new_figure():
    """A figure on the Agg canvas, outside pyplot's global state (safe in threads, no display needed)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> None:
    """Save as PNG atomically: a reader sees the old image or the new one, never half of one."""
    from ..io import atomic_open

    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")


def plot_pr_curve(precisions: np.ndarray, recalls: np.ndarray, out_image, title: str) -> None:
    """The official step plot of precision against recall, filled below."""
    fig = new_figure()
    ax = fig.add_subplot()
    ax.step(recalls, precisions, color="b", alpha=0.2, where="post")
    ax.fill_between(recalls, precisions, step="post", alpha=0.2, color="b")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim([0.0, 1.05])
    ax.set_ylim([0.0, 1.05])
    ax.set_title(title)
    save_figure(fig, Path(out_image))


def make_image_dir(out_image_dir) -> None:
    try:
        Path(out_image_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SquadkitError(f"{out_image_dir}: cannot create the image folder: {exc.strerror or exc}") from None


