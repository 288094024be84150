"""The web format: `mobilesam serve`'s click-to-segment page as a static folder that segments in the browser.

`OUT/index.html` is the page, marked static; `OUT/static/` its scripts, style
and the vendored onnxruntime-web; `OUT/models/` the onnx format's folder with
its int8 encoder; `OUT/web.json` what the page reads in static mode (the
model's constants, where each graph is, each file's SHA-256). Any static file
server serves the folder; nothing leaves the page once it has loaded.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_text_atomic
from ..modeling import Sam
from ..weights import sha256_file
from .exporter import export_onnx

WEB_FILE = "web.json"
PAGE_FILE = "index.html"
MODELS_DIR = "models"
STATIC_DIR = "static"
# Where onnxruntime-web sits inside the page folder, with its VERSION.json (version, file -> SHA-256).
VENDOR_DIR = "vendor/onnxruntime-web"
# The page reads this tag to choose between asking the service and reading web.json.
SERVED_TAG = re.compile(r"""<meta\s+name=["']mobilesam-page["']\s+content=["']served["']\s*/?>""")
STATIC_TAG = '<meta name="mobilesam-page" content="static">'


def export_web(
    model: Sam,
    out: str | Path,
    *,
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
    page_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write `out`: index.html, static/ (the page's files), models/ (the onnx format with its int8 encoder), web.json.

    The vendored onnxruntime-web is checked against its VERSION.json before
    anything is written, and the graphs run once in onnxruntime (`export_onnx`).
    Every file is replaced atomically, so re-exporting into a folder never
    leaves a half-written one; web.json is written last.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: Folder to write into (created if needed).
        model_name: Registry name ("vit_t"), recorded in the sidecars.
        weights: Checkpoint the weights came from, whose SHA-256 goes into models/metadata.json; None for random weights.
        quantize: Must be None: the folder always holds both the fp32 and the int8 encoder, and the page picks one.
        page_dir: The page folder to copy; None: `mobilesam serve`'s own (`served_page_dir`).

    Returns:
        Role ("page", "encoder", "encoder_int8", "decoder", "metadata") -> path; "metadata" is web.json.

    Raises:
        ValueError: `quantize` is given.
        RuntimeError: The page folder lacks its `mobilesam-page` tag, or a vendored onnxruntime-web file is missing or damaged.
        ImportError: onnx or onnxruntime is not installed.
    """
    if quantize is not None:
        raise ValueError(
            f"the web format has no {quantize!r} encoder to add; its quantize options: none (it writes fp32 and int8)"
        )
    page = Path(served_page_dir() if page_dir is None else page_dir)
    # Both checks come before the export, so a broken page folder costs nothing and writes nothing.
    version = check_vendor(page)
    index = static_page(page / PAGE_FILE)
    out = Path(out)
    graphs = export_onnx(model, out / MODELS_DIR, model_name=model_name, weights=weights, quantize="int8")
    written = list(graphs.values())
    written += _copy_page(page, out / STATIC_DIR)
    written.append(write_text_atomic(out / PAGE_FILE, index))
    check_vendor(out / STATIC_DIR)
    hashes = {_relative(path, out): sha256_file(path) for path in written}
    manifest = _manifest(out, graphs, version, hashes)
    paths = {"page": out / PAGE_FILE, **{role: graphs[role] for role in ("encoder", "encoder_int8", "decoder")}}
    paths["metadata"] = write_text_atomic(out / WEB_FILE, json.dumps(manifest, indent=2) + "\n")
    return paths


def served_page_dir() -> Path:
    """The folder of `mobilesam serve`'s page, `mobilesam/server/static`.

    Found through the package's import spec, which locates `mobilesam.server`
    without running it: export/ sits below server/ and never imports it
    (docs/architecture.md), and the page's files are data, not code.

    Raises:
        RuntimeError: The server package is not installed.
    """
    spec = importlib.util.find_spec("mobilesam.server")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mobilesam.server is not installed: the web format copies its page")
    return Path(next(iter(spec.submodule_search_locations))) / STATIC_DIR


def check_vendor(page: Path) -> str:
    """Check every vendored onnxruntime-web file in page folder `page` against its VERSION.json; return the version.

    Raises:
        RuntimeError: VERSION.json is missing or unreadable, or a file it lists is missing or has another SHA-256.
    """
    vendor = page / VENDOR_DIR
    try:
        facts = json.loads((vendor / "VERSION.json").read_text())
        version, files = str(facts["version"]), dict(facts["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeError(f"the vendored onnxruntime-web in {vendor} has no readable VERSION.json ({err})") from None
    for name, expected in files.items():
        path = vendor / name
        if not path.is_file():
            raise RuntimeError(f"the vendored onnxruntime-web file {path} is missing")
        if sha256_file(path) != expected:
            raise RuntimeError(f"the vendored onnxruntime-web file {path} is damaged: its SHA-256 is not VERSION.json's")
    return version


def static_page(template: Path) -> str:
    """The text of page `template` with its `mobilesam-page` tag switched from "served" to "static".

    Raises:
        RuntimeError: The template holds no such tag, or more than one.
    """
    text, count = SERVED_TAG.subn(STATIC_TAG, template.read_text(encoding="utf-8"))
    if count != 1:
        raise RuntimeError(
            f'the page template {template} must hold one <meta name="mobilesam-page" content="served"> tag, '
            f"which the web format marks static; it holds {count}"
        )
    return text


def _copy_page(page: Path, target: Path) -> list[Path]:
    """Copy every file of `page` but its index.html into `target`, each atomically; return the copies."""
    copies = []
    for source in sorted(page.rglob("*")):
        relative = source.relative_to(page)
        # Hidden names are editors' and writers' temporaries, not part of the page.
        if not source.is_file() or relative.as_posix() == PAGE_FILE or any(part.startswith(".") for part in relative.parts):
            continue
        with atomic_path(target / relative) as tmp:
            shutil.copyfile(source, tmp)
        copies.append(target / relative)
    return copies


def _manifest(out: Path, graphs: dict[str, Path], version: str, files: dict[str, str]) -> dict[str, Any]:
    """web.json: the model's constants from the onnx sidecar, where the graphs are, and each file's SHA-256."""
    metadata = json.loads(graphs["metadata"].read_text())
    preprocessing = metadata["preprocessing"]
    return {
        "format": "web",
        "model": metadata["model"],
        "image_size": metadata["image_size"],
        "pixel_mean": preprocessing["pixel_mean"],
        "pixel_std": preprocessing["pixel_std"],
        "mask_threshold": preprocessing["mask_threshold"],
        "encoders": {"fp32": _relative(graphs["encoder"], out), "int8": _relative(graphs["encoder_int8"], out)},
        "decoder": _relative(graphs["decoder"], out),
        "onnxruntime_web": version,
        "files": dict(sorted(files.items())),
    }


def _relative(path: Path, out: Path) -> str:
    """`path` as the page names it: relative to `out`, with forward slashes."""
    return path.relative_to(out).as_posix()
