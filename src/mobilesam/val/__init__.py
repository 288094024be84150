"""Validation: how well a model segments the objects of a labeled dataset (`mobilesam val`).

    from mobilesam.val import evaluate, save_report

    report = evaluate("mobile_sam.pt", "instances.json", "images/", ["box", "point", "clicks:5"])
    print(report.table())
    save_report(report, "report.json")  # and report_clicks.png beside it

`protocols` defines the prompts, `clicks` the click simulation, `metrics`
the numbers, `report` the result and its JSON, `plot` the IoU-vs-clicks plot.
"""

from .evaluate import evaluate
from .plot import clicks_plot_path, save_report
from .protocols import PROTOCOL_SYNTAX, Protocol, parse_protocols
from .report import Calibration, ProtocolResult, ValReport

__all__ = [
    "PROTOCOL_SYNTAX",
    "Calibration",
    "Protocol",
    "ProtocolResult",
    "ValReport",
    "clicks_plot_path",
    "evaluate",
    "parse_protocols",
    "save_report",
]
