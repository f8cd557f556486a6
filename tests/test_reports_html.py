"""HTML reports render alone (issue 15, item 7): the Kubeflow UI serves one HTML artifact without the files
beside it, so every image must be carried in the page as a data: URI, and each must be a real PNG."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rlsd.config import load_config
from rlsd.evaluate import png_data_uri, run_evaluation, write_report
from rlsd.tasks import addition_tasks, write_tasks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    """Every URL a page loads or links: img/script/iframe/source src, link/a href."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "src" and tag == "img":
                self.imgs.append(value or "")
            elif key in ("src", "href") or (key == "data" and tag == "object"):
                self.other.append(value or "")


def _refs(html_text: str) -> _Refs:
    p = _Refs()
    p.feed(html_text)
    return p


def _decode_png(uri: str) -> tuple[int, int]:
    """(width, height) of a data:image/png;base64 URI whose payload is a whole, CRC-valid PNG."""
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:60]
    data = base64.b64decode(uri[len(prefix):], validate=True)
    assert data.startswith(PNG_SIGNATURE)
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(data):  # walk the chunks: length, type, data, CRC (a truncated file fails here)
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(ctype + body) == crc, ctype
        chunks.append(ctype)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_standalone(html_path: Path, expected_images: int) -> list[tuple[int, int]]:
    text = html_path.read_text(encoding="utf-8")
    refs = _refs(text)
    assert len(refs.imgs) == expected_images, refs.imgs
    relative = [s for s in refs.imgs + refs.other if not s.startswith("data:")]
    assert relative == [], f"links a standalone page cannot follow: {relative}"
    return [_decode_png(s) for s in refs.imgs]


def _result(with_baseline: bool) -> dict:
    side = {"model": "m", "pass@1": 0.5, "pass@k": 0.7, "greedy_pass@1": 0.5, "k": 4, "teacher_greedy_pass@1": None,
            "per_type": {"numeric": {"n_tasks": 3, "pass@1": 0.5, "pass@k": 0.7, "greedy_pass@1": 0.5}}}
    return {"candidate": side, "baseline": {**side, "pass@1": 0.25} if with_baseline else None,
            "comparison": {"diff_pass1": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n_tasks": 3} if with_baseline else None,
            "leakage": {"rate": 0.0, "n_checked": 3, "n_leaks": 0, "examples": [], "teacher_student_gap": None}}


@pytest.mark.parametrize("with_baseline, images", [(True, 2), (False, 1)])
def test_evaluation_report_embeds_its_plots(tmp_path, with_baseline, images):
    out = tmp_path / "out"
    out.mkdir()
    cand = {"format_score": 1.0, "leakage": {"n_leaks": 0, "n_checked": 3, "ngram": 6}}
    write_report(_result(with_baseline), out, cand=cand, base=cand if with_baseline else None,
                 boot_samples=np.linspace(0.1, 0.4, 50) if with_baseline else None)
    sizes = _check_standalone(out / "report.html", images)
    assert all(w > 100 and h > 100 for w, h in sizes)
    # the page alone, away from its folder (as the Kubeflow UI serves it), still has every image
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "report.html", alone / "report.html")
    assert _check_standalone(alone / "report.html", images) == sizes
    # the embedded images are the plots written beside it, byte for byte
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in _refs((out / "report.html").read_text()).imgs]
    assert embedded == [(out / n).read_bytes() for n in (["per_type.png", "bootstrap.png"][:images])]


def test_png_data_uri_refuses_what_is_not_a_png(tmp_path):
    (tmp_path / "x.png").write_bytes(b"<svg/>")
    with pytest.raises(ValueError, match="is not a PNG file"):
        png_data_uri(tmp_path / "x.png")


def test_real_evaluation_report_renders_alone(tmp_path):
    """run_evaluation on two tiny models: the report.html the evaluate component publishes as its HTML
    artifact carries both plots."""
    from rlsd.models import build_tiny_model

    build_tiny_model(tmp_path / "cand", hidden_size=32, num_layers=1, num_heads=1, seed=0)
    build_tiny_model(tmp_path / "base", hidden_size=32, num_layers=1, num_heads=1, seed=1)
    write_tasks(addition_tasks(3, seed=2), tmp_path / "eval.jsonl")
    cfg = load_config(overrides=["eval.k=1", "eval.max_new_tokens=2", "eval.bootstrap_samples=100"])
    run_evaluation(cfg, candidate=tmp_path / "cand", baseline=tmp_path / "base", tasks_path=tmp_path / "eval.jsonl",
                   out_dir=tmp_path / "out")
    _check_standalone(tmp_path / "out" / "report.html", 2)
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["comparison"]["n_tasks"] == 3


def test_no_report_writer_links_a_relative_image():
    """Every HTML writer of the library and components: no <img src=...> built from a file name."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in list((root / "src" / "rlsd").rglob("*.py")) + list((root / "components").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for line_no, line in enumerate(text.splitlines(), 1):
            if "<img" in line and "src=" in line and "data_uri" not in line:
                offenders.append(f"{path.relative_to(root)}:{line_no}: {line.strip()}")
    assert offenders == []
