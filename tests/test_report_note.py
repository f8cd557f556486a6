"""The recipe's eval.note (what a short demo run can and cannot show) opens report.md and report.html."""

from __future__ import annotations

from rlsd.evaluate import write_report

CAND = {"format_score": 1.0, "leakage": {"n_leaks": 0, "n_checked": 3, "ngram": 6}}


def _result() -> dict:
    side = {"model": "m", "pass@1": 0.5, "pass@k": 0.7, "greedy_pass@1": 0.5, "k": 4, "teacher_greedy_pass@1": None,
            "per_type": {"numeric": {"n_tasks": 3, "pass@1": 0.5, "pass@k": 0.7, "greedy_pass@1": 0.5}}}
    return {"candidate": side, "baseline": None, "comparison": None,
            "leakage": {"rate": 0.0, "n_checked": 3, "n_leaks": 0, "examples": [], "teacher_student_gap": None}}


def test_note_opens_both_reports_escaped_and_on_one_line(tmp_path):
    note = "A 15-minute run shows the pipeline works;\n  it cannot show <a gain> & its interval."
    write_report(_result(), tmp_path, cand=CAND, base=None, note=note)
    md = (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()
    assert md[:3] == ["# Evaluation report", "",
                      "> **Note:** A 15-minute run shows the pipeline works; it cannot show <a gain> & its interval."]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert ("<h1>Evaluation report</h1>\n<p class='note'><strong>Note:</strong> A 15-minute run shows the pipeline "
            "works; it cannot show &lt;a gain&gt; &amp; its interval.</p>") in page
    assert page.index("class='note'") < page.index("<table")


def test_no_note_no_note_block(tmp_path):
    for note in ("", "  \n "):
        write_report(_result(), tmp_path, cand=CAND, base=None, note=note)
        assert "Note:" not in (tmp_path / "report.md").read_text(encoding="utf-8")
        assert "class='note'" not in (tmp_path / "report.html").read_text(encoding="utf-8")
        assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("# Evaluation report\n\n| model |")
