"""One ABX run folder (``laser-abx`` / scripts/abx.py): ``DIR/abx.json`` of an upstream on one split, and the
item file fastabx read (``DIR/SPLIT.item``). See docs/abx.md.

``abx.json`` = ``{"layers": {name: {"within": %, "across": %}}, "inputs": {"log-mel": ..., "mfcc": ...},
"upstream", "upstream_sha256", "split", "manifest", "items", "abx": settings, "seconds", ...}``. A finished DIR
of the same upstream bytes, manifest and utterance limit is left as it is; one of another is never
overwritten (:class:`AbxRunError`).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from ..checkpoint_io import CheckpointError
from ..files import read_json, sha256_of, write_json
from ..models.trained_upstream import open_upstream
from .abx import abx_of_upstream, abx_settings, load_abx_split

RESULT = "abx.json"


class AbxRunError(RuntimeError):
    """A DIR that holds another run (or cannot be read); the message names the file and what to do."""


def finished_result(out_dir: str, upstream_sha256: str, manifest: str, max_utterances: Optional[int]):
    """The finished abx.json of the same run, None when there is none; AbxRunError when DIR holds another run's."""
    path = os.path.join(out_dir, RESULT)
    if not os.path.exists(path):
        return None
    try:
        done = read_json(path)
    except (OSError, ValueError) as error:
        raise AbxRunError(f"{path}: exists but cannot be read ({error}); delete it or choose another --out") from None
    same = (done.get("upstream_sha256") == upstream_sha256 and done.get("manifest") == os.path.abspath(manifest)
            and done.get("max_utterances") == max_utterances)
    if not same:
        raise AbxRunError(
            f"{path}: a finished ABX run of another upstream or split ({done.get('upstream')}, sha256 "
            f"{str(done.get('upstream_sha256'))[:12]}…, {done.get('manifest')}); it is not overwritten: choose "
            f"another --out, or delete {path} to measure again there")
    return done


def open_for_abx(path: str, device: str):
    try:
        return open_upstream(path).upstream.to(device).eval()
    except Exception as error:  # any failure to load is reported with the file and the fix
        raise CheckpointError(
            f"{path}: cannot be loaded as an upstream ({type(error).__name__}: {error}); give a fairseq HuBERT, "
            f"unilm WavLM or LASER checkpoint, or a Hugging Face HuBERT/WavLM directory (docs/checkpoints.md)"
        ) from error


def run_abx(upstream: str, data: str, split: str, out: str, max_utterances: Optional[int] = None,
            device: str = "cpu", inputs_only: bool = False,
            progress: Optional[Callable[[str, int, int], None]] = None, log=print) -> Optional[dict]:
    """Measures and writes ``out/abx.json`` (returned); None when ``out`` already holds this run."""
    if not os.path.exists(upstream):
        raise CheckpointError(f"{upstream}: upstream not found (--upstream): give a HuBERT/WavLM/LASER checkpoint "
                              f"file or a Hugging Face directory")
    upstream_sha256 = sha256_of(upstream)
    manifest = os.path.join(data, f"{split}.tsv")
    if finished_result(out, upstream_sha256, manifest, max_utterances) is not None:
        return None
    abx_split = load_abx_split(data, split, max_utterances)
    model = None if inputs_only else open_for_abx(upstream, device)
    os.makedirs(out, exist_ok=True)
    item_path = os.path.join(out, f"{split}.item")
    log(f"{len(abx_split.items)} triphone items in {len(abx_split.utterances)} utterances of {manifest}")
    result = abx_of_upstream(model, abx_split, item_path, device, progress)
    record = {
        "layers": result["layers"], "inputs": result["inputs"], "upstream": upstream,
        "upstream_sha256": upstream_sha256, "corpus": data, "split": split, "manifest": os.path.abspath(manifest),
        "max_utterances": max_utterances, "utterances": len(abx_split.utterances), "items": result["items"],
        "item_file": item_path, "abx": abx_settings(), "device": device, "seconds": result["seconds"],
    }
    write_json(os.path.join(out, RESULT), record)  # written whole, then renamed: finished or absent
    return record


def format_table(record: dict) -> str:
    """The markdown table of an abx.json: the input rows, then every layer."""
    rows = [("input " + name, scores) for name, scores in record["inputs"].items()]
    rows += list(record["layers"].items())
    lines = ["| features | within-voice ABX % | across-voice ABX % |", "|---|---:|---:|"]
    lines += [f"| {name} | {scores['within']:.2f} | {scores['across']:.2f} |" for name, scores in rows]
    return "\n".join(lines)
