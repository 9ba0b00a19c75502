"""Files every evaluation leaves behind: one JSON with everything, per-utterance TSVs, a summary TSV."""

from __future__ import annotations

import json
from pathlib import Path

from vita_core.eval.scoring import CorpusScore
from vita_core.eval.seedtts import SeedTtsReport
from vita_core.eval.wavs import write_text

UTTERANCE_COLUMNS = (
    "id",
    "status",
    "wer",
    "substitutions",
    "deletions",
    "insertions",
    "ref_len",
    "reference",
    "hypothesis",
)


def _cell(value) -> str:
    if value is None:
        return ""
    return str(value).replace("\t", " ").replace("\n", " ")


def utterance_tsv(score: CorpusScore) -> str:
    """Header + one row per utterance (missing/empty ones included, their wer blank unless scored as errors)."""
    rows = ["\t".join(UTTERANCE_COLUMNS)]
    for u in score.utterances:
        rows.append("\t".join(_cell(getattr(u, c)) for c in UTTERANCE_COLUMNS))
    return "\n".join(rows) + "\n"


def pct(value: float | None, digits: int = 3) -> str:
    """A fraction as percent rounded like the Seed-TTS scorer (`round(x*100, 3)`); '-' when undefined."""
    return "-" if value is None else f"{round(value * 100, digits)}"


def seedtts_rows(report: SeedTtsReport) -> list[dict[str, str]]:
    """The summary table: one row per mode, the headline (mean of per-utterance rates, in percent) and its
    difference from the baseline in percentage points, then the pooled rate for reference."""
    metric = "CER" if report.lang == "zh" else "WER"
    rows = []
    for r in report.results:
        s = r.score
        delta = report.delta(r)
        rows.append(
            {
                "mode": r.mode,
                "n": str(len(s.utterances)),
                "scored": str(len(s.scored)),
                "missing": str(s.missing),
                "empty": str(s.empty),
                f"{metric} %": pct(s.mean),
                f"vs {report.baseline.mode}": "-"
                if delta is None
                else f"{'+' if delta >= 0 else ''}{round(delta * 100, 3)}",
                f"pooled {metric} %": pct(s.pooled),
            }
        )
    return rows


def write_seedtts(report: SeedTtsReport, out_dir: Path) -> list[Path]:
    """`seed-tts.json` (everything), `summary.tsv` (the table) and `<mode>.tsv` per mode; returns the paths."""
    out_dir = Path(out_dir)
    written = [out_dir / "seed-tts.json", out_dir / "summary.tsv"]
    write_text(written[0], json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    rows = seedtts_rows(report)
    write_text(written[1], "\n".join("\t".join(r) for r in [list(rows[0]), *[list(r.values()) for r in rows]]) + "\n")
    for r in report.results:
        path = out_dir / f"{r.mode}.tsv"
        write_text(path, utterance_tsv(r.score))
        written.append(path)
    return written
