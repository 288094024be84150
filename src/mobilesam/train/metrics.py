"""Training metrics to a CSV file and, optionally, TensorBoard (rank 0 only)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic


class MetricsLog:
    """Appends one row per logged step to `run/metrics.csv`, and scalars to `run/tensorboard`.

    Args:
        run: The run folder.
        columns: CSV columns after "step".
        tensorboard: Also write TensorBoard event files.
        resume_step: On resume, rows after this step (logged after the checkpoint) are dropped.

    Raises:
        ImportError: TensorBoard asked for but not installed.
    """

    def __init__(self, run: Path, columns: list[str], *, tensorboard: bool, resume_step: int | None = None) -> None:
        self.path = run / "metrics.csv"
        self.columns = ["step", *columns]
        if resume_step is None or not self.path.is_file():
            write_text_atomic(self.path, ",".join(self.columns) + "\n")
        else:
            rows = list(csv.reader(io.StringIO(self.path.read_text(encoding="utf-8"))))
            kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= resume_step]
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(kept)
            write_text_atomic(self.path, buffer.getvalue())
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    f"TensorBoard logs need tensorboard: pip install 'mobilesam[train]', or pass --no-tensorboard ({err})"
                ) from err
            self.writer = SummaryWriter(str(run / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Record `values` (the CSV columns) at `step`."""
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([step, *(_fmt(values[c]) for c in self.columns[1:])])
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
