"""Every speed or memory number that README.md and the docs quote equals the committed benchmark result files'.

The files are benchmarks/results/*.json, written by `make bench` (benchmarks/soft_dtw.py, training_step.py,
phone_probe.py with ``--out benchmarks/results``; laser_fairseq/bench_results.py). Three checks:

- QUOTES: a phrase of a doc (a regex whose one group is the number as written) against a key path of a file,
  rounded as the doc rounds it;
- TABLES: the result tables the docs show are the scripts' own rendering of the files' rows, verbatim;
- REGIONS: inside the docs' benchmark passages every number with a unit of time, memory or speed-up
  (ms, s, min, MB, GB, %, x, ×) is covered by a quote or a table, or is one of the settings listed in
  SETTINGS (sizes of the problem, not measurements): a number added there without a file fails.

The tests at the end feed the checks changed copies of the docs, to show a changed number does fail them.
The benchmark scripts themselves are smoke-tested on tiny sizes with ``--out`` a temporary folder (never the
committed one).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import pytest

from benchmarks import phone_probe, soft_dtw, training_step, yardsticks
from laser_fairseq import bench_results
from laser_fairseq.checkout import REPO

RESULTS = os.path.join(REPO, "benchmarks", "results")


@dataclass(frozen=True)
class Quote:
    """``pattern`` (one group: the number as the doc writes it) in ``doc`` quotes ``file``.json at ``path``.

    A space in ``pattern`` matches any run of white space (the docs wrap lines). ``fmt`` is the doc's rounding
    (a format spec; "date" for the day of an ISO date); ``scale`` converts units (ms -> s: 1e-3) or applies
    the documented arithmetic of an estimate (docs/gpu.md).
    """

    doc: str
    pattern: str
    file: str
    path: str
    fmt: str
    scale: float = 1.0
    count: int = 1  # how many times the phrase must occur

    @property
    def regex(self) -> str:
        return self.pattern.replace(" ", r"\s+")

    def expected(self, records: Dict[str, dict]) -> str:
        value = bench_results.lookup(records[self.file], self.path)
        if self.fmt == "date":
            return value[:10]
        if isinstance(value, str):
            return value
        return format(value * self.scale, self.fmt)


SDTW_REF = "results.sections.reference.rows"
SDTW_VAR = "results.sections.variable.rows"
STEP = "results.step"
PERTURB = "results.perturbation.rows"
LOAD_BEFORE, LOAD_AFTER = "load_average.before.0", "load_average.after.0"
NUMBER = r"(\d+(?:\.\d+)?)"


def run_context(doc: str, file: str) -> List[Quote]:
    """The date, machine and load a doc states for the run of ``file``."""
    return [
        Quote(doc, r"This run: (\d{4}-\d\d-\d\d),", file, "date", "date"),
        Quote(doc, r"(\d+) cores, (?:[\d.]+ GB, )?no GPU", file, "machine.cores", ".0f"),
        Quote(doc, rf"\*\*load average {NUMBER} before", file, LOAD_BEFORE, ".1f"),
        Quote(doc, rf"before and {NUMBER} after\*\*", file, LOAD_AFTER, ".1f"),
    ]


def perturbation_quotes(doc: str, ours_ms: str, torchaudio_ms: str, first_call_s: str, resident_mb: str) -> List[Quote]:
    """The perturbation timings a doc quotes, each given by its phrase (one group: the number)."""
    return [
        Quote(doc, ours_ms, "training_step", f"{PERTURB}[ours (rational 9/8)].median_ms", ".1f"),
        Quote(doc, torchaudio_ms, "training_step", f"{PERTURB}[torchaudio PitchShift].median_ms", ".0f"),
        Quote(doc, first_call_s, "training_step", f"{PERTURB}[torchaudio PitchShift].first_call_ms", ".1f", 1e-3),
        Quote(doc, resident_mb, "training_step", f"{PERTURB}[torchaudio PitchShift].first_call_resident_mb", ".0f"),
    ]


def probe_row(prefix: str, file: str) -> List[Quote]:
    """The cells of one row of docs/phone_probe.md's cost table."""
    cells = ["statistics_s", "solve_s", "predict_and_score_s", "total_s"]
    quotes = [Quote("docs/phone_probe.md", prefix + r" \|" + r" [\d.]+ s \|" * i + rf" {NUMBER} s \|", file,
                    f"results.speed.{cell}", ".1f") for i, cell in enumerate(cells)]
    quotes.append(Quote("docs/phone_probe.md", prefix + r"(?: \| [\d.]+ s){4} \| " + NUMBER + r" / ", file,
                        LOAD_BEFORE, ".1f"))
    quotes.append(Quote("docs/phone_probe.md", prefix + r"(?: \| [\d.]+ s){4} \| [\d.]+ / " + NUMBER + r" \|", file,
                        LOAD_AFTER, ".1f"))
    return quotes


QUOTES: List[Quote] = [
    # README.md: "What this implementation adds"
    Quote("README.md", r"takes (\d+) ms against \d+ ms", "soft_dtw", f"{SDTW_REF}[ours (numba)].median_ms", ".0f"),
    Quote("README.md", r"against (\d+) ms for pysdtw", "soft_dtw", f"{SDTW_REF}[pysdtw (CPU)].median_ms", ".0f"),
    Quote("README.md", r"and (\d+) s for the authors' recipe", "soft_dtw",
          f"{SDTW_REF}[authors' recipe (f64, broadcast)].median_ms", ".0f", 1e-3),
    Quote("README.md", rf"soft-DTW at load {NUMBER}–", "soft_dtw", LOAD_BEFORE, ".1f"),
    Quote("README.md", rf"soft-DTW at load [\d.]+–{NUMBER};", "soft_dtw", LOAD_AFTER, ".1f"),
    Quote("README.md", rf"the loss is {NUMBER} % of the step", "training_step", f"{STEP}.styles.ours.loss_percent",
          ".1f"),
    Quote("README.md", r"per-pair recipe: (\d+) %", "training_step", f"{STEP}.styles.authors.loss_percent", ".0f"),
    Quote("README.md", rf"step is {NUMBER}× faster", "training_step", f"{STEP}.speedup", ".2f"),
    Quote("README.md", rf"with {NUMBER}× the peak memory", "training_step", f"{STEP}.peak_ratio", ".2f"),
    Quote("README.md", rf"step at load {NUMBER}–", "training_step", LOAD_BEFORE, ".1f"),
    Quote("README.md", rf"step at load [\d.]+–{NUMBER};", "training_step", LOAD_AFTER, ".1f"),
    # docs/soft_dtw.md: "Benchmark"
    *run_context("docs/soft_dtw.md", "soft_dtw"),
    Quote("docs/soft_dtw.md", r"(\d+(?:\.\d+)?) GB, no GPU", "soft_dtw", "machine.ram_gb", "g"),
    Quote("docs/soft_dtw.md", r"\n(torch \S+ \(\d+ threads\), numba [^\n]*)\n", "soft_dtw", "results.header", "s"),
    Quote("docs/soft_dtw.md", r"\n(reference: B=[^\n]*)\n", "soft_dtw", "results.sections.reference.title", "s"),
    Quote("docs/soft_dtw.md", r"\n(variable lengths: B=[^\n]*)\n", "soft_dtw", "results.sections.variable.title", "s"),
    Quote("docs/soft_dtw.md", rf"this run, at load {NUMBER}–", "soft_dtw", LOAD_BEFORE, ".1f"),
    Quote("docs/soft_dtw.md", rf"this run, at load [\d.]+–{NUMBER},", "soft_dtw", LOAD_AFTER, ".1f"),
    Quote("docs/soft_dtw.md", r"gives (\d+) ms \(min", "soft_dtw", f"{SDTW_REF}[ours (numba)].median_ms", ".0f"),
    Quote("docs/soft_dtw.md", r"\(min (\d+) ms\)", "soft_dtw", f"{SDTW_REF}[ours (numba)].min_ms", ".0f"),
    Quote("docs/soft_dtw.md", rf"\*\*not met\*\*: {NUMBER}×", "soft_dtw", f"{SDTW_REF}[pysdtw (CPU)].vs_ours", ".1f"),
    Quote("docs/soft_dtw.md", rf"\(tslearn: {NUMBER}×", "soft_dtw", f"{SDTW_REF}[tslearn (matmul cost)].vs_ours", ".1f"),
    Quote("docs/soft_dtw.md", r"the authors' recipe: (\d+)×\)", "soft_dtw",
          f"{SDTW_REF}[authors' recipe (f64, broadcast)].vs_ours", ".0f"),
    Quote("docs/soft_dtw.md", r"cells takes \((\d+) vs \d+ ms\)", "soft_dtw", f"{SDTW_VAR}[ours (numba)].median_ms",
          ".0f"),
    Quote("docs/soft_dtw.md", r"cells takes \(\d+ vs (\d+) ms\)", "soft_dtw",
          f"{SDTW_VAR}[ours (numba), equal 553x553 (same real cells)].median_ms", ".0f"),
    Quote("docs/soft_dtw.md", r"against (\d+) ms for all-real", "soft_dtw",
          f"{SDTW_VAR}[ours (numba), equal 800x800 (all cells real)].median_ms", ".0f"),
    Quote("docs/soft_dtw.md", rf"There ours is {NUMBER}× faster than pysdtw", "soft_dtw",
          f"{SDTW_VAR}[pysdtw (CPU)].vs_ours", ".1f"),
    Quote("docs/soft_dtw.md", rf"pysdtw and {NUMBER}× than tslearn", "soft_dtw",
          f"{SDTW_VAR}[tslearn (matmul cost)].vs_ours", ".1f"),
    # docs/training.md: "What a training step costs"
    *run_context("docs/training.md", "training_step"),
    Quote("docs/training.md", r"authors' loss, (\d+) % of their step", "training_step",
          f"{STEP}.styles.authors.loss_percent", ".0f"),
    Quote("docs/training.md", r"most of its (\d+) MB of tensors", "training_step", f"{STEP}.styles.ours.tensors_mb",
          ".0f"),
    *perturbation_quotes("docs/training.md", rf"takes {NUMBER} ms with the task's", r"against (\d+) ms with torchaudio's",
                         rf"first call also takes {NUMBER} s", r"leaves (\d+) MB resident"),
    Quote("docs/training.md", r"\((\d+)× slower; medians", "training_step", f"{PERTURB}[torchaudio PitchShift].ratio",
          ".0f"),
    # docs/phone_probe.md: "Cost"
    Quote("docs/phone_probe.md", r"Measured on the 2-core machine \((\d{4}-\d\d-\d\d)\)", "phone_probe", "date",
          "date"),
    *probe_row(r"\| 500 \+ 3,000 \(the default training cap\)", "phone_probe"),
    *probe_row(r"\| 3,000 \+ 3,000", "phone_probe_train3000"),
    # docs/gpu.md: the CPU measurements behind the estimates, and the estimates' arithmetic
    Quote("docs/gpu.md", rf"\| {NUMBER} s per step of 4 pairs of 4 s", "training_step",
          f"{STEP}.styles.ours.median_s.total", ".1f"),
    Quote("docs/gpu.md", rf"4 pairs of 4 s on 2 cores at load {NUMBER}", "training_step", LOAD_BEFORE, ".1f"),
    Quote("docs/gpu.md", r"\| \*\*~(\d+) min\*\* \(estimate\) \| per step", "training_step", f"{STEP}.styles.ours.median_s.total",
          ".0f", 3600 * 2 * 3.2 / 100 / 60),
    Quote("docs/gpu.md", r"\| ([\d.]+) s per step \([\d.]+ % of it,", "training_step",
          f"{STEP}.styles.ours.median_s.loss", ".2f"),
    Quote("docs/gpu.md", rf"s per step \({NUMBER} % of it,", "training_step", f"{STEP}.styles.ours.loss_percent",
          ".1f"),
    Quote("docs/gpu.md", rf"\| {NUMBER} ms per 4 s utterance on one core", "training_step",
          f"{PERTURB}[ours (rational 9/8)].median_ms", ".1f"),
    Quote("docs/gpu.md", r"\| \*\*~(\d+) CPU-min\*\*", "training_step", f"{PERTURB}[ours (rational 9/8)].median_ms",
          ".0f", 28539 / 1000 / 60),
    # examples/laser/README.md: "Fast pitch shift"
    *perturbation_quotes("examples/laser/README.md", rf"\): {NUMBER} ms per 4 s utterance",
                         r"later calls (\d+) ms per 4 s utterance", rf"its first call took {NUMBER} s",
                         r"and left (\d+) MB resident"),
    Quote("examples/laser/README.md", rf"at load {NUMBER} on 2 cores", "training_step", LOAD_BEFORE, ".1f"),
    # docs/superb.md and examples/abx/README.md: the yardsticks' cost
    Quote("docs/superb.md", rf"`benchmarks/yardsticks.py`: {NUMBER} s wall-clock", "yardsticks",
          "results.superb_pr.wall_s", ".1f"),
    Quote("docs/superb.md", rf"wall-clock, {NUMBER} s CPU for the committed", "yardsticks",
          "results.superb_pr.cpu_s", ".1f"),
    Quote("docs/superb.md", rf"tiny HuBERT at load average {NUMBER},", "yardsticks", "load_average.before.0", ".1f"),
    Quote("examples/abx/README.md", rf"test utterances\) at load average {NUMBER}:", "yardsticks",
          "load_average.before.0", ".1f"),
    Quote("examples/abx/README.md", rf"average [\d.]+: {NUMBER} s wall-clock", "yardsticks", "results.abx.wall_s", ".1f"),
    Quote("examples/abx/README.md", rf"\(encoding {NUMBER} s, scoring [\d.]+ s\), against", "yardsticks",
          "results.abx.result.seconds.encoding", ".1f"),
    Quote("examples/abx/README.md", rf"scoring {NUMBER} s\), against", "yardsticks",
          "results.abx.result.seconds.scoring", ".1f"),
    Quote("examples/abx/README.md", r"study's corpus \((\d+) test utterances\)", "yardsticks",
          "results.abx.result.utterances", ".0f"),
]


def table_soft_dtw(records: Dict[str, dict], name: str = "soft_dtw") -> List[str]:
    """The tables of docs/soft_dtw.md: benchmarks/soft_dtw.py's rendering of each stored section."""
    tables = []
    for section in records[name]["results"]["sections"].values():
        rendered = soft_dtw.format_table(section["title"], soft_dtw.rows_of(section))
        tables.append(rendered.split("\n", 2)[2])  # without the "## title" line and the blank line
    return tables


def table_step(records: Dict[str, dict]) -> List[str]:
    """The table of docs/training.md: benchmarks/training_step.py's rendering of the stored step."""
    record = records["training_step"]
    rendered = training_step.stored_table(record["results"]["step"], record["settings"]["pairs"])
    assert rendered == record["results"]["step"]["table"], "the stored table is not the rendering of the stored numbers"
    return [rendered]


TABLES: Dict[str, Callable[[Dict[str, dict]], List[str]]] = {
    "docs/soft_dtw.md": table_soft_dtw,
    "docs/training.md": table_step,
}

# (doc, first line of the passage, the line that ends it (excluded) or None for the end of the file)
REGIONS = [
    ("README.md", "What this implementation adds", "- **Real fairseq training**"),
    ("docs/soft_dtw.md", "## Benchmark", "\nSpeed settings are scoped"),
    ("docs/training.md", "## What a training step costs", None),
    ("docs/phone_probe.md", "## Cost", "\n## "),
    ("docs/gpu.md", "| model (frozen trunk + top 2 blocks", "\nSo an epoch"),
    ("examples/laser/README.md", "- **Fast pitch shift.**", "training_step.json))."),
]

# Numbers with a unit that are settings of a benchmark (the problem's size), targets, or the assumptions of an
# estimate -- not measurements.
SETTINGS = [
    r"8 pairs of 500 × 450 frames",
    r"≤ 150 ms", r"≥ 5×", r"so 5×",
    r"4 pairs of 4 s", r"one 4 s utterance", r"at 4 s", r"per 4 s\s+utterance",
    r"utterances of 2 s",
    r"12\.6 s utterances", r"assumed 1–3 µs each, 2\.5–7\.5 ms, plus ~1 ms", r"~15–30 s for 3,600 steps",
    r"\*\*< 1 min\*\*",
]
UNIT = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(?:\s?(?:ms|s|min|MB|GB|%)(?!\w)|[×x](?![\w\d]|\s*\d))")


def read_records(folder: str = RESULTS) -> Dict[str, dict]:
    return {name[:-5]: json.load(open(os.path.join(folder, name), encoding="utf-8"))
            for name in sorted(os.listdir(folder)) if name.endswith(".json")}


def read_docs() -> Dict[str, str]:
    docs = {quote.doc for quote in QUOTES} | set(TABLES) | {doc for doc, *_ in REGIONS}
    return {doc: open(os.path.join(REPO, doc), encoding="utf-8").read() for doc in docs}


def quote_problems(docs: Dict[str, str], records: Dict[str, dict]) -> List[str]:
    problems = []
    for quote in QUOTES:
        matches = list(re.finditer(quote.regex, docs[quote.doc]))
        if len(matches) != quote.count:
            problems.append(f"{quote.doc}: {quote.pattern!r} occurs {len(matches)} times, expected {quote.count}")
            continue
        expected = quote.expected(records)
        for match in matches:
            if match.group(1) != expected:
                problems.append(f"{quote.doc}: {match.group(0)!r} quotes {match.group(1)}, but "
                                f"{quote.file}.json holds {expected} at {quote.path}")
    return problems


def table_problems(docs: Dict[str, str], records: Dict[str, dict]) -> List[str]:
    problems = []
    for doc, render in TABLES.items():
        for table in render(records):
            if table not in docs[doc]:
                problems.append(f"{doc}: does not show this table of the result files verbatim:\n{table}")
    return problems


def region_problems(docs: Dict[str, str]) -> List[str]:
    """Numbers with a unit inside REGIONS that no quote, table or setting covers."""
    problems = []
    for doc, start, end in REGIONS:
        text = docs[doc]
        begin = text.index(start)
        stop = text.index(end, begin + len(start)) if end else len(text)
        covered = []
        for quote in QUOTES:
            if quote.doc == doc:
                covered += [m.span(1) for m in re.finditer(quote.regex, text)]
        for setting in SETTINGS:
            covered += [m.span() for m in re.finditer(setting, text)]
        for tables in ([t for t in TABLES[doc](read_records())] if doc in TABLES else []):
            position = text.find(tables)
            if position >= 0:
                covered.append((position, position + len(tables)))
        for match in UNIT.finditer(text, begin, stop):
            if not any(a <= match.start(1) and match.end(1) <= b for a, b in covered):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{doc}:{line}: {match.group(0)!r} is not read from a result file "
                                f"(add a Quote to tests/test_bench_numbers.py, or a SETTINGS entry if it is a size)")
    return problems


# ------------------------------------------------------------------------------------------------ the checks


def test_every_quoted_number_equals_the_result_files():
    problems = quote_problems(read_docs(), read_records())
    assert not problems, "\n".join(problems)


def test_the_result_tables_are_shown_verbatim():
    problems = table_problems(read_docs(), read_records())
    assert not problems, "\n".join(problems)


def test_no_number_in_the_benchmark_passages_is_unbacked():
    problems = region_problems(read_docs())
    assert not problems, "\n".join(problems)


def test_every_result_file_records_its_context():
    records = read_records()
    assert {quote.file for quote in QUOTES} <= set(records)
    for name, record in records.items():
        assert record["name"] == name
        # benchmarks/<name>.py; records measured before the move out of scripts/ name scripts/benchmark*.py
        assert record["command"].startswith(("python benchmarks/", "python scripts/benchmark")), record["command"]
        assert record["machine"]["cores"] and record["machine"]["cpu"] and record["machine"]["ram_gb"]
        assert len(record["load_average"]["before"]) == 3 and len(record["load_average"]["after"]) == 3
        versions = record["versions"]
        for package in ("python", "torch", "numba", "laser_fairseq"):
            assert versions.get(package), f"{name}.json: no version of {package}"
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", versions["laser_fairseq"])


# ------------------------------------------------------------------------------------------------ the checks fail


def changed(text: str, pattern: str) -> str:
    """``text`` with the first number the pattern's group matches increased by one in its last digit."""
    match = re.search(pattern, text)
    assert match, pattern
    number = match.group(1)
    digits = [c for c in number]
    last = max(i for i, c in enumerate(digits) if c.isdigit())
    digits[last] = str((int(digits[last]) + 1) % 10)
    return text[:match.start(1)] + "".join(digits) + text[match.end(1):]


@pytest.mark.parametrize("quote", QUOTES, ids=lambda q: f"{q.doc}:{q.pattern[:30]}")
def test_a_changed_quoted_number_fails(quote):
    docs = read_docs()
    docs[quote.doc] = changed(docs[quote.doc], quote.regex)
    assert any(quote.pattern in problem or quote.path in problem for problem in quote_problems(docs, read_records()))


@pytest.mark.parametrize("doc", sorted(TABLES))
def test_a_changed_table_cell_fails(doc):
    docs = read_docs()
    table = TABLES[doc](read_records())[0]
    row = table.splitlines()[3]
    number = re.search(r"\d+\.\d+", row).group(0)
    docs[doc] = docs[doc].replace(row, row.replace(number, f"{float(number) + 1:.{len(number.split('.')[1])}f}", 1))
    assert table_problems(docs, read_records())


def test_an_unbacked_number_in_a_passage_fails():
    docs = read_docs()
    doc, start, _ = REGIONS[0]
    docs[doc] = docs[doc].replace(start, start + " A new claim: 2.5× less memory, 40 ms per step.", 1)
    problems = region_problems(docs)
    assert any("2.5×" in p for p in problems) and any("40 ms" in p for p in problems)


# ------------------------------------------------------------------------------------------------ the scripts


def test_benchmark_writes_its_record_only_with_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = ["--batch", "2", "--n", "12", "--m", "10", "--dim", "4", "--min-len", "6", "--max-len", "14",
            "--repeats", "1", "--skip-slow"]
    soft_dtw.main(tiny)
    assert os.listdir(tmp_path) == []  # nothing written without --out
    soft_dtw.main(tiny + ["--out", str(tmp_path / "results")])
    record = bench_results.read("soft_dtw", str(tmp_path / "results"))
    assert record["command"] == "python benchmarks/soft_dtw.py " + " ".join(tiny + ["--out", str(tmp_path / "results")])
    rows = record["results"]["sections"]["reference"]["rows"]
    ours = bench_results.lookup(record, f"{SDTW_REF}[ours (numba)]")
    assert ours["median_ms"] > 0 and ours["vs_ours"] == 1.0 and len(ours["times_ms"]) == 1
    assert ours["values_rel"] < 1e-5  # float32 against the float64 reference
    skipped = [row for row in rows if row["median_ms"] is None]
    assert {row["name"] for row in skipped} == {"ours (torch)", "authors' recipe (f64, broadcast)"}
    assert table_soft_dtw({"soft_dtw": record})[0] in "\n".join(
        soft_dtw.format_table(s["title"], soft_dtw.rows_of(s)) for s in record["results"]["sections"].values())


def test_phone_probe_benchmark_writes_its_record(tmp_path):
    phone_probe.main(["--utterances", "4", "--train-utterances", "10", "--seconds", "0.5", "--dim", "8", "--classes", "4",
                "--name", "probe_tiny", "--out", str(tmp_path)])
    record = bench_results.read("probe_tiny", str(tmp_path))
    speed = record["results"]["speed"]
    assert speed["total_s"] == pytest.approx(speed["statistics_s"] + speed["solve_s"] + speed["predict_and_score_s"])
    assert 0 <= speed["accuracy"] <= 1 and speed["frames_per_utterance"] == 24
    assert record["settings"]["train_utterances"] == 10 and "out" not in record["settings"]


def test_yardsticks_benchmark_times_each_call_against_its_target(tmp_path, monkeypatch):
    slow = yardsticks.timed("abx", lambda: time.sleep(0.05) or {"per": 0.4})
    assert slow["wall_s"] >= 0.05 and slow["target_s"] == 120 and slow["target_met"] and slow["result"] == {"per": 0.4}
    monkeypatch.setitem(yardsticks.TARGET_SECONDS, "probe", 0.01)  # a target the call misses
    assert yardsticks.timed("probe", lambda: time.sleep(0.05))["target_met"] is False
    argv = ["--data", str(tmp_path), "--skip", "superb_pr", "--skip", "abx", "--out", str(tmp_path / "results")]
    yardsticks.main(argv)  # both left out: only the record of the run (nothing built, nothing measured)
    record = bench_results.read("yardsticks", str(tmp_path / "results"))
    assert record["results"] == {} and record["command"] == "python benchmarks/yardsticks.py " + " ".join(argv)
    assert record["settings"]["upstream"].endswith("tiny_progressive_hubert.pt")


def test_step_record_renders_the_printed_table():
    times = {"ours": {"trunk": 2.0, "blocks": 1.0, "loss": 0.1, "total": 3.1},
             "authors": {"trunk": 2.5, "blocks": 1.2, "loss": 1.5, "total": 5.2}}
    memory = {"ours": (300.0, 320.0), "authors": (400.0, 410.0)}
    stored = json.loads(json.dumps(training_step.step_results(times, memory, 4)))  # through JSON, as committed
    assert stored["speedup"] == pytest.approx(5.2 / 3.1) and stored["peak_ratio"] == pytest.approx(0.75)
    assert stored["styles"]["authors"]["loss_percent"] == pytest.approx(100 * 1.5 / 5.2)
    assert training_step.stored_table(stored, 4) == training_step.format_table(times, memory, 4) == stored["table"]
    assert "speed-up of ours: 1.68x; memory ours/authors: peak 0.75, tensors 0.78" in stored["table"]


def test_lookup_by_name_and_index():
    record = {"a": {"rows": [{"name": "x.y (z)", "v": 1}, {"name": "w", "v": 2}]}}
    assert bench_results.lookup(record, "a.rows[x.y (z)].v") == 1
    assert bench_results.lookup(record, "a.rows.1.v") == 2
    with pytest.raises(KeyError):
        bench_results.lookup(record, "a.rows[q].v")


def test_the_committed_folder_is_the_default_of_make_bench_only():
    makefile = open(os.path.join(REPO, "Makefile"), encoding="utf-8").read()
    assert "BENCH_OUT ?= benchmarks/results" in makefile
    bench = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    commands = [line for line in bench.splitlines() if "benchmarks/" in line and ".py" in line]
    assert commands and all("--out $(BENCH_OUT)" in line or line.rstrip().endswith("\\") for line in commands)
    assert bench_results.COMMITTED_FOLDER == RESULTS
