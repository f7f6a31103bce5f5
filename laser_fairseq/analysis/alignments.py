"""Forced-aligner output -> frame phone labels (``{split}.phn`` + ``dict.phn.txt``, see ``phone_labels``).

Two inputs:

- Praat TextGrids in the text format (long or short, UTF-8 or UTF-16), one per utterance, as the Montreal
  Forced Aligner writes them; the phone tier is ``phones`` (or ``<speaker> - phones``) unless named;
- a CTM-like text file, one phone per line: ``utterance_id start_seconds end_seconds phone``.

An utterance's id is its audio file name without extension (``103-1240-0000.flac`` -> ``103-1240-0000``),
which is how MFA names its TextGrids. Frame t takes the phone of the segment that contains its label time
(sample 320 t + 200, a segment holding [start, end)); frames no segment covers are silence. Phones are
mapped: silence names (and empty labels) -> ``sil``, optionally ARPAbet stress digits stripped (AH0 -> AH),
then an optional ``from to`` table. Every problem is reported with the file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.manifest import Manifest, summarize_problems
from ..data.audio import SAMPLE_RATE
from ..data.frames import SILENCE, frame_count
from .phone_labels import frame_label_times

DEFAULT_SILENCE_NAMES = ("sil", "sp", "spn", "SIL", "<eps>")
DEFAULT_TIER = "phones"
DEFAULT_DURATION_TOLERANCE = 0.05  # seconds an alignment may end after (or a TextGrid differ from) the audio
OVERLAP_TOLERANCE = 1e-6  # seconds: adjacent segments written with rounded times still touch


class AlignmentError(ValueError):
    """Aligner output that cannot be converted; the message names the file and line."""


class MissingAlignments(AlignmentError):
    """Audio lines without an alignment; ``unaligned`` holds (manifest, its relative audio path) pairs."""

    def __init__(self, message: str, unaligned: List[Tuple[Manifest, str]]):
        super().__init__(message)
        self.unaligned = unaligned


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    phone: str
    where: str  # "file:line" of the segment


@dataclass(frozen=True)
class Alignment:
    segments: List[Segment]
    duration: Optional[float]  # the TextGrid's xmax (None for CTM)
    where: str  # the file it came from


# ------------------------------------------------------------------------------------------- TextGrid

_TOKEN = re.compile(
    r'"(?:[^"]|"")*"'  # a string ("" is an escaped quote)
    r"|<[A-Za-z]+>"  # a flag: <exists>, <absent>
    r"|\[[^\]\n]*\]"  # an index in brackets (long format: item [1]:), not a value
    r"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_])"  # a number
    r"|[A-Za-z_][A-Za-z_0-9?]*"  # a label of the long format (xmin, intervals, size, ...), not a value
    r"|\S"  # punctuation (=, :) -- or an unterminated string's quote
)


@dataclass
class _Tokens:
    """The values of a Praat text file (strings, numbers, flags) with their line numbers."""

    path: str
    values: List[Tuple[str, object, int]] = field(default_factory=list)  # (kind, value, line)
    position: int = 0

    @classmethod
    def of(cls, text: str, path: str) -> "_Tokens":
        tokens, line, last = cls(path), 1, 0
        for match in _TOKEN.finditer(text):
            line += text.count("\n", last, match.start())
            last = match.start()
            token = match.group()
            if token.startswith('"') and (len(token) == 1 or not token.endswith('"')):
                raise AlignmentError(f"{path}:{line}: unterminated string")
            if token.startswith('"'):
                tokens.values.append(("string", token[1:-1].replace('""', '"'), line))
            elif token.startswith("<"):
                tokens.values.append(("flag", token, line))
            elif token[0].isdigit() or token[0] in "+-.":
                tokens.values.append(("number", float(token), line))
        return tokens

    def take(self, kind: str, what: str):
        if self.position >= len(self.values):
            last_line = self.values[-1][2] if self.values else 1
            raise AlignmentError(f"{self.path}:{last_line}: the file ends where {what} should be (truncated?)")
        found_kind, value, line = self.values[self.position]
        if found_kind != kind:
            raise AlignmentError(f"{self.path}:{line}: expected {what} (a {kind}), found {value!r}")
        self.position += 1
        return value, line


@dataclass(frozen=True)
class Tier:
    name: str
    interval_tier: bool
    segments: List[Segment]  # intervals of an IntervalTier (empty for a TextTier)


@dataclass(frozen=True)
class TextGrid:
    xmin: float
    xmax: float
    tiers: List[Tier]


def read_textgrid(path: str) -> TextGrid:
    """Parse a Praat TextGrid written in the long or the short text format."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw.startswith(b"ooBinaryFile"):
        raise AlignmentError(f"{path}: binary TextGrid; save it as a text file (Praat: Save as text file)")
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig", "replace")
    tokens = _Tokens.of(text, path)
    file_type, line = tokens.take("string", "the file type 'ooTextFile'")
    object_class, _ = tokens.take("string", "the object class 'TextGrid'")
    if file_type != "ooTextFile" or object_class != "TextGrid":
        raise AlignmentError(
            f"{path}:{line}: not a TextGrid text file (File type {file_type!r}, class {object_class!r})"
        )
    xmin, _ = tokens.take("number", "the TextGrid's xmin")
    xmax, _ = tokens.take("number", "the TextGrid's xmax")
    exists, _ = tokens.take("flag", "<exists> or <absent>")
    tiers = []
    if exists == "<exists>":
        count, _ = tokens.take("number", "the number of tiers")
        tiers = [_read_tier(tokens, index + 1) for index in range(int(count))]
    return TextGrid(xmin, xmax, tiers)


def _read_tier(tokens: _Tokens, number: int) -> Tier:
    kind, line = tokens.take("string", f"the class of tier {number}")
    if kind not in ("IntervalTier", "TextTier"):
        raise AlignmentError(f"{tokens.path}:{line}: tier {number} has unknown class {kind!r}")
    name, _ = tokens.take("string", f"the name of tier {number}")
    tokens.take("number", f"the xmin of tier {name!r}")
    tokens.take("number", f"the xmax of tier {name!r}")
    count, _ = tokens.take("number", f"the number of intervals/points of tier {name!r}")
    segments = []
    for item in range(1, int(count) + 1):
        what = f"of item {item} of {int(count)} in tier {name!r}"
        if kind == "IntervalTier":
            start, line = tokens.take("number", f"the xmin {what}")
            end, _ = tokens.take("number", f"the xmax {what}")
            text, _ = tokens.take("string", f"the text {what}")
            segments.append(Segment(start, end, text, f"{tokens.path}:{line}"))
        else:
            tokens.take("number", f"the time {what}")
            tokens.take("string", f"the mark {what}")
    return Tier(name, kind == "IntervalTier", segments)


def phone_tier(grid: TextGrid, path: str, tier: Optional[str] = None) -> Tier:
    """The tier named ``tier``, or by default ``phones`` / ``<speaker> - phones`` (exactly one)."""
    if tier is not None:
        matches = [t for t in grid.tiers if t.name == tier]
    else:
        matches = [t for t in grid.tiers if t.name == DEFAULT_TIER or t.name.endswith(f" - {DEFAULT_TIER}")]
    names = ", ".join(repr(t.name) for t in grid.tiers) or "none"
    if len(matches) != 1:
        wanted = repr(tier) if tier is not None else f"'{DEFAULT_TIER}' (or '<speaker> - {DEFAULT_TIER}')"
        count = "no" if not matches else f"{len(matches)}"
        raise AlignmentError(f"{path}: {count} tier(s) named {wanted}; its tiers: {names}; choose one with --tier")
    if not matches[0].interval_tier:
        raise AlignmentError(f"{path}: tier {matches[0].name!r} is a point tier, phones need an interval tier")
    return matches[0]


def textgrid_index(folder: str) -> Dict[str, str]:
    """utterance id (file name without extension) -> TextGrid path, for every *.TextGrid under ``folder``."""
    if not os.path.isdir(folder):
        raise AlignmentError(f"{folder}: TextGrid folder not found")
    index: Dict[str, str] = {}
    problems = []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            stem, extension = os.path.splitext(name)
            if extension.lower() != ".textgrid":
                continue
            path = os.path.join(root, name)
            if stem in index:
                problems.append(f"{path}: utterance id {stem!r} also has {index[stem]}")
            index[stem] = path
    if problems:
        raise AlignmentError(summarize_problems(folder, problems))
    return index


def textgrid_alignment(path: str, tier: Optional[str] = None) -> Alignment:
    grid = read_textgrid(path)
    return Alignment(phone_tier(grid, path, tier).segments, grid.xmax, path)


# ------------------------------------------------------------------------------------------------ CTM


def _data_lines(path: str) -> Iterator[Tuple[int, List[str]]]:
    """(line number, whitespace-separated fields) of a text file, skipping blank lines and # comments."""
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            fields = text.split()
            if fields and not fields[0].startswith("#"):
                yield number, fields


def read_ctm(path: str) -> Dict[str, Alignment]:
    """``utterance_id start end phone`` lines (times in seconds; blank lines and # comments skipped)."""
    segments: Dict[str, List[Segment]] = {}
    problems = []
    for number, fields in _data_lines(path):
        where = f"{path}:{number}"
        if len(fields) != 4:
            problems.append(f"{where}: expected 'utterance_id start end phone', got {len(fields)} field(s)")
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            problems.append(f"{where}: start and end must be numbers (seconds), got {fields[1]!r} {fields[2]!r}")
            continue
        segments.setdefault(fields[0], []).append(Segment(start, end, fields[3], where))
    if problems:
        raise AlignmentError(summarize_problems(path, problems))
    return {utterance: Alignment(items, None, path) for utterance, items in segments.items()}


def alignment_lookup(textgrids: Optional[str], ctm_paths: Optional[Sequence[str]], tier: Optional[str] = None):
    """(utterance id -> Alignment or None, the set of ids available) from a folder searched for TextGrids, or
    else from CTM-like files (an utterance in two of them is an AlignmentError naming both)."""
    if textgrids:
        index = textgrid_index(textgrids)

        def alignment_of(utterance: str) -> Optional[Alignment]:
            return textgrid_alignment(index[utterance], tier) if utterance in index else None

        return alignment_of, set(index)
    alignments: Dict[str, Alignment] = {}
    for path in ctm_paths or ():
        for utterance, alignment in read_ctm(path).items():
            if utterance in alignments:
                raise AlignmentError(f"{path}: utterance {utterance!r} is also in {alignments[utterance].where}")
            alignments[utterance] = alignment
    return alignments.get, set(alignments)


# -------------------------------------------------------------------------------------- phone mapping



@dataclass(frozen=True)
class PhoneMapping:
    """Aligner phone -> label symbol: silence names and empty labels -> ``sil``; stress digits stripped
    (``AH0`` -> ``AH``) when asked; then the ``table``."""

    silence_names: frozenset = frozenset(DEFAULT_SILENCE_NAMES)
    strip_stress: bool = False
    table: Dict[str, str] = field(default_factory=dict)

    def __call__(self, phone: str) -> str:
        phone = phone.strip()
        if not phone or phone in self.silence_names:
            return SILENCE
        if self.strip_stress:
            phone = re.sub(r"^([A-Za-z]+)[012]$", r"\1", phone)
        return self.table.get(phone, phone)


def read_phone_map(path: str) -> Dict[str, str]:
    """``from to`` lines (blank lines and # comments skipped)."""
    table: Dict[str, str] = {}
    problems = []
    for number, fields in _data_lines(path):
        if len(fields) != 2:
            problems.append(f"{path}:{number}: expected 'from to', got {len(fields)} field(s)")
        elif fields[0] in table:
            problems.append(f"{path}:{number}: {fields[0]!r} is mapped twice")
        else:
            table[fields[0]] = fields[1]
    if problems:
        raise AlignmentError(summarize_problems(path, problems))
    return table


# --------------------------------------------------------------------------------- segments -> frames


@dataclass(frozen=True)
class FrameLabelling:
    labels: List[str]  # one symbol per frame
    uncovered: int  # frames no segment covers (labelled silence)


def segments_to_frames(
    alignment: Alignment, num_samples: int, mapping: PhoneMapping, tolerance: float = DEFAULT_DURATION_TOLERANCE
) -> FrameLabelling:
    """The frame labels of one utterance of ``num_samples`` samples; AlignmentError naming file and line
    for inverted or overlapping segments and for alignments longer (or, for a TextGrid, shorter) than the
    audio by more than ``tolerance`` seconds."""
    duration = num_samples / SAMPLE_RATE
    if alignment.duration is not None and abs(alignment.duration - duration) > tolerance:
        raise AlignmentError(
            f"{alignment.where}: the TextGrid lasts {alignment.duration:.3f} s but the audio {duration:.3f} s "
            f"({num_samples} samples); is it the alignment of this file, at {SAMPLE_RATE} Hz?"
        )
    segments = sorted((s for s in alignment.segments if s.end != s.start), key=lambda s: s.start)
    for previous, segment in zip([None] + segments[:-1], segments):
        if not segment.end > segment.start:
            raise AlignmentError(f"{segment.where}: segment ends ({segment.end}) before it starts ({segment.start})")
        if segment.end > duration + tolerance:
            raise AlignmentError(
                f"{segment.where}: segment ends at {segment.end:.3f} s, after the audio's end ({duration:.3f} s, "
                f"{num_samples} samples); is it the alignment of this file, at {SAMPLE_RATE} Hz?"
            )
        if previous is not None and segment.start < previous.end - OVERLAP_TOLERANCE:
            raise AlignmentError(
                f"{segment.where}: segment [{segment.start}, {segment.end}) overlaps [{previous.start}, "
                f"{previous.end}) of {previous.where}"
            )
    times = frame_label_times(frame_count(num_samples))
    inside = np.full(len(times), -1)
    covered = np.zeros(len(times), dtype=bool)
    if segments:
        ends = np.array([s.end for s in segments])
        inside = np.searchsorted([s.start for s in segments], times, side="right") - 1
        covered = (inside >= 0) & (times < ends[np.maximum(inside, 0)])
    mapped = [mapping(s.phone) for s in segments]
    labels = [mapped[i] if ok else SILENCE for i, ok in zip(inside.tolist(), covered.tolist())]
    return FrameLabelling(labels, int(np.count_nonzero(~covered)))


def utterance_id(audio_path: str) -> str:
    return os.path.splitext(os.path.basename(audio_path))[0]


@dataclass
class ConvertedManifest:
    manifest: Manifest
    lines: List[str] = field(default_factory=list)  # one line of space-separated labels per audio line
    frames: int = 0
    uncovered: int = 0


def convert_manifests(
    manifests: Sequence[Manifest],
    alignment_of,  # utterance id -> Optional[Alignment]
    mapping: PhoneMapping,
    tolerance: float = DEFAULT_DURATION_TOLERANCE,
) -> List[ConvertedManifest]:
    """Frame label lines of every audio line of every manifest; one AlignmentError lists every problem."""
    converted, problems, missing, unaligned = [], [], [], []
    seen: Dict[str, str] = {}
    for manifest in manifests:
        result = ConvertedManifest(manifest)
        for entry in manifest.entries:
            where = f"{manifest.path}:{entry.line}"
            utterance = utterance_id(entry.path)
            if utterance in seen:
                problems.append(f"{where}: utterance id {utterance!r} also on {seen[utterance]}; ids must be unique")
                continue
            seen[utterance] = where
            try:
                alignment = alignment_of(utterance)
                if alignment is None:
                    missing.append(f"{where}: no alignment for utterance {utterance!r}")
                    unaligned.append((manifest, os.path.relpath(entry.path, manifest.root)))
                    continue
                labelling = segments_to_frames(alignment, entry.num_samples, mapping, tolerance)
            except AlignmentError as problem:
                problems.append(f"{where} ({utterance}): {problem}")
                continue
            bad = sorted({label for label in labelling.labels if not label or label.split() != [label]})
            if bad:
                problems.append(f"{where} ({utterance}): phone symbols {bad!r} are empty or contain spaces")
                continue
            result.lines.append(" ".join(labelling.labels))
            result.frames += len(labelling.labels)
            result.uncovered += labelling.uncovered
        converted.append(result)
    if missing:
        problems.append(
            f"{len(missing)} audio line(s) have no alignment (the aligner skipped them, or their ids differ); "
            f"first: {missing[0]}. Remove them from the manifest (and its side files) or align them"
        )
    if unaligned and len(problems) == 1:
        raise MissingAlignments(problems[0], unaligned)
    if problems:
        raise AlignmentError(summarize_problems("alignments", problems))
    return converted


def symbol_counts(converted: Iterable[ConvertedManifest]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for result in converted:
        for line in result.lines:
            for symbol in line.split():
                counts[symbol] = counts.get(symbol, 0) + 1
    return counts
