"""The IoU-vs-clicks plot of a validation report, and the report saved with its plot.

The plot needs matplotlib: ``pip install 'mobilesam[val]'``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_path
from .report import ValReport


def save_report(report: ValReport, path: str | os.PathLike[str]) -> list[Path]:
    """Write the JSON report and, when a ``clicks:K`` protocol ran, the IoU-vs-clicks plot beside it.

    Both files are written atomically; the plot is `clicks_plot_path(path)`.

    Args:
        report: What `mobilesam.val.evaluate` measured.
        path: The JSON file.

    Returns:
        The files written.

    Raises:
        ImportError: matplotlib is missing (the JSON is written first).
    """
    written = [report.save(path)]
    if any(result.per_click for result in report.protocols.values()):
        written.append(plot_clicks(report, clicks_plot_path(path)))
    return written


def clicks_plot_path(report_path: str | os.PathLike[str]) -> Path:
    """Where the IoU-vs-clicks plot of a report goes: `<report stem>_clicks.png` beside it."""
    path = Path(report_path)
    return path.with_name(f"{path.stem}_clicks.png")


def plot_clicks(report: ValReport, path: str | os.PathLike[str]) -> Path:
    """Draw mIoU against the number of clicks for each ``clicks:K`` protocol, as a PNG written atomically.

    With a teacher, the student-vs-teacher mIoU after each click is drawn dashed.

    Args:
        report: A report with at least one ``clicks:K`` result.
        path: The PNG file.

    Returns:
        `path` as a Path.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: The report has no ``clicks:K`` result.
    """
    try:
        # The Agg canvas directly: no pyplot global state, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("the clicks plot needs matplotlib: pip install 'mobilesam[val]'") from err
    results = [result for result in report.protocols.values() if result.per_click]
    if not results:
        raise ValueError("the report has no clicks:K result to plot")
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for result in results:
        clicks = range(1, len(result.per_click) + 1)
        axes.plot(clicks, result.per_click, marker="o", label=f"{result.protocol} vs ground truth")
        if result.teacher_per_click:
            axes.plot(clicks, result.teacher_per_click, marker="s", linestyle="--", label=f"{result.protocol} vs teacher")
    longest = max(len(result.per_click) for result in results)
    axes.set_xticks(range(1, longest + 1))
    axes.set_xlabel("number of clicks")
    axes.set_ylabel("mIoU")
    axes.set_ylim(0, 1)
    axes.grid(True, alpha=0.3)
    axes.set_title(f"{Path(report.model).name} on {Path(report.data).name} ({report.instances} objects)")
    axes.legend(loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)
