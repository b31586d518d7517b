"""Dense per-frame language for robot datasets: segments -> the text of each frame, with a report.

`cotrain annotate ROBOT_SHARDS OUT` makes an `annotation` dataset: one sample per annotated frame
with `target.txt` (the frame's text), `prompt.txt`, the frame's camera JPEGs, `instruction.txt`,
`state.npy` and `meta.json` copied from the robot sample. It runs as the `annotations` converter
(cotrain_converters/annotations.py: the annotation file formats) whose units are the input's shards, so the
pipeline gives it workers, resume, parts and atomic, deterministic output.

Rules (docs/annotations.md):
- a segment covers frames start <= f < end (half-open, like AgiBot's action_config where one
  segment's end_frame is the next one's start_frame); frame numbers are the source recording's
  frames (`meta.source_frame_index`), seconds (`start_s`/`end_s`) are converted with the dataset fps
  to converted frames (`meta.frame_index`): frame f is covered when start_s <= f / fps < end_s;
- a segment reaching outside the episode is clipped to it and counted as out of range; one with
  end <= start is counted as empty and ignored; where segments overlap, the later-starting one
  (then the later one in the file) gives the text, and the overlap is counted;
- robot episodes without any segment, annotation episodes matching no robot episode, and frames no
  segment covers are counted; uncovered frames are skipped (`--uncovered skip`) or kept with an empty
  target (`--uncovered empty`). Counts and the first problems go to the manifest's `extra.annotation`.
- annotation episode ids match the robot samples' `meta.episode`; an integer id that equals no
  episode id matches `meta.episode_index` instead.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cotrain.annotate.options import DEFAULT_PROMPT, AnnotateOptions  # noqa: F401  (re-exported: their old home)
from cotrain.convert.spec import RunOptions
from cotrain.dataset import keys
from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, load_manifest
from cotrain.dataset.shards import index_shard
from cotrain.errors import ConfigError, DataError

MAX_LISTED = 100  # ids and problem lines kept in the report; the counts are always complete


@dataclass(frozen=True)
class Segment:
    """One annotated span: frames [start, end) of the source, or seconds [start, end) when `seconds`."""

    episode: str | int
    start: float
    end: float
    text: str
    origin: str
    seconds: bool = False

    def label(self) -> str:
        unit = " s" if self.seconds else ""
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"[{self.start:g}{unit}, {self.end:g}{unit}) {text!r} ({self.origin})"


@dataclass(frozen=True)
class EpisodeFrames:
    """The samples of one robot episode, in order: their frame and source frame indices."""

    id: str
    index: int
    frames: tuple[int, ...]
    source_frames: tuple[int, ...]


@dataclass
class Coverage:
    """Per sample of an episode: its text (None: uncovered) and covering segment; problem counts."""

    texts: list[str | None]
    segments: list[Segment | None]
    out_of_range: int = 0
    overlapping: int = 0
    empty: int = 0
    problems: list[str] = field(default_factory=list)


def episodes_from_metas(metas: Sequence[Mapping[str, Any]], where: str) -> list[EpisodeFrames]:
    """Group consecutive sample metas into episodes; an episode must not reappear later."""
    out: list[EpisodeFrames] = []
    seen: set[str] = set()
    rows: list[Mapping[str, Any]] = []

    def close() -> None:
        if rows:
            ep = str(rows[0]["episode"])
            out.append(EpisodeFrames(ep, int(rows[0].get("episode_index", -1)),
                                     tuple(int(m["frame_index"]) for m in rows),
                                     tuple(int(m.get("source_frame_index", m["frame_index"])) for m in rows)))
            seen.add(ep)

    for meta in metas:
        if "episode" not in meta or "frame_index" not in meta:
            raise DataError(where, "sample meta.json has no 'episode' or 'frame_index': not a robot dataset",
                            key=keys.META)
        if rows and str(meta["episode"]) != str(rows[0]["episode"]):
            close()
            rows = []
        if str(meta["episode"]) in seen:
            raise DataError(where, "episode's samples are not consecutive", episode=meta["episode"])
        rows.append(meta)
    close()
    return out


def read_members(path: Path, exts: Sequence[str]) -> list[dict[str, bytes]]:
    """The named members of every sample of a shard, read by offset from the tar index (so the
    camera images are not read); each dict also holds `__key__`."""
    out = []
    with open(path, "rb") as fh:
        for key, members in index_shard(path):
            sample = {"__key__": key.encode()}
            for ext in exts:
                span = members.get(ext)
                if span is None:
                    raise DataError(path, f"sample without {ext}", key=key)
                fh.seek(span.offset)
                sample[ext] = fh.read(span.size)
            out.append(sample)
    return out


def _read_metas(path: Path) -> list[dict[str, Any]]:
    return [json.loads(s[keys.META]) for s in read_members(path, [keys.META])]


@lru_cache(maxsize=4)
def _scan(root: str, manifest_sha: str) -> tuple[tuple[str, tuple[EpisodeFrames, ...]], ...]:
    manifest = load_manifest(root)
    seen: set[str] = set()
    out = []
    for entry in manifest.shards:
        episodes = episodes_from_metas(_read_metas(Path(root) / entry.name), str(Path(root) / entry.name))
        for ep in episodes:
            if ep.id in seen:
                raise DataError(Path(root) / entry.name, "episode appears in two shards", episode=ep.id)
            seen.add(ep.id)
        out.append((entry.name, tuple(episodes)))
    return tuple(out)


def scan_episodes(root: str | Path) -> dict[str, tuple[EpisodeFrames, ...]]:
    """Shard name -> its episodes, from the samples' meta.json (cached on the manifest's content)."""
    root = Path(root)
    sha = hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest() if (root / MANIFEST_NAME).is_file() else ""
    return dict(_scan(str(root.resolve()), sha))


def match_segments(episodes: Sequence[EpisodeFrames],
                   segments: Sequence[Segment]) -> tuple[dict[str, list[int]], list[str]]:
    """Episode id -> indices of its segments (file order), and annotation episode ids matching nothing."""
    by_id = {ep.id: ep.id for ep in episodes}
    by_index = {ep.index: ep.id for ep in episodes}
    matched: dict[str, list[int]] = {}
    unmatched: list[str] = []
    for i, seg in enumerate(segments):
        key = str(seg.episode)
        target = by_id.get(key)
        if target is None and (isinstance(seg.episode, int) or key.isdigit()):
            target = by_index.get(int(key))
        if target is None:
            if key not in unmatched:
                unmatched.append(key)
            continue
        matched.setdefault(target, []).append(i)
    return matched, unmatched


def _frame_span(seg: Segment, fps: float | None) -> tuple[int, int]:
    if not seg.seconds:
        return int(seg.start), int(seg.end)
    if not fps:
        raise ConfigError(f"{seg.origin}: segment in seconds, but the dataset has no fps; give frames instead")
    # Frame f (time f / fps) is covered when start_s <= f / fps < end_s; 1e-6 absorbs float error.
    return math.ceil(seg.start * fps - 1e-6), math.ceil(seg.end * fps - 1e-6)


def resolve_episode(ep: EpisodeFrames, segments: Sequence[Segment], fps: float | None) -> Coverage:
    """The text of each sample of `ep` from its segments (see the module docstring for the rules)."""
    cov = Coverage([None] * len(ep.frames), [None] * len(ep.frames))
    spans = [_frame_span(s, fps) for s in segments]
    last_end, last_seg = -math.inf, None
    for i in sorted(range(len(segments)), key=lambda k: (spans[k][0], k)):
        seg, (start, end) = segments[i], spans[i]
        positions = ep.frames if seg.seconds else ep.source_frames
        extent = max(positions) + 1
        if end <= start:
            cov.empty += 1
            cov.problems.append(f"episode {ep.id}: empty segment {seg.label()} (end <= start)")
            continue
        if start < 0 or end > extent:
            cov.out_of_range += 1
            cov.problems.append(f"episode {ep.id}: segment {seg.label()} outside the episode's frames [0, {extent}); "
                                "clipped")
        if start < last_end and last_seg is not None:
            cov.overlapping += 1
            cov.problems.append(f"episode {ep.id}: segment {seg.label()} overlaps {last_seg.label()}; "
                                "the later one wins")
        if end > last_end:
            last_end, last_seg = end, seg
        # Positions are non-decreasing (frames in order; resampling may repeat a source frame).
        for k in range(bisect.bisect_left(positions, start), bisect.bisect_left(positions, end)):
            cov.texts[k], cov.segments[k] = seg.text, seg
    return cov


def build_report(episodes: Sequence[EpisodeFrames], segments: Sequence[Segment], fps: float | None,
                 uncovered: str, source: Mapping[str, Any]) -> dict[str, Any]:
    """Counts over the whole dataset: what `cotrain annotate` prints and the manifest keeps."""
    matched, unmatched = match_segments(episodes, segments)
    report: dict[str, Any] = {
        "source": dict(source), "uncovered": uncovered, "episodes": len(episodes), "episodes_annotated": 0,
        "episodes_unannotated": 0, "unannotated_episode_ids": [], "segments": 0, "segments_out_of_range": 0,
        "segments_overlapping": 0, "segments_empty": 0, "segments_unmatched": 0,
        "annotation_episodes_unmatched": len(unmatched), "unmatched_episode_ids": unmatched[:MAX_LISTED],
        "frames": 0, "frames_annotated": 0, "frames_uncovered": 0, "samples": 0, "problems_total": 0, "problems": [],
    }
    report["segments_unmatched"] = len(segments) - sum(len(v) for v in matched.values())
    for ep in episodes:
        idx = matched.get(ep.id, [])
        cov = resolve_episode(ep, [segments[i] for i in idx], fps)
        annotated = sum(t is not None for t in cov.texts)
        report["episodes_annotated" if idx else "episodes_unannotated"] += 1
        if not idx and len(report["unannotated_episode_ids"]) < MAX_LISTED:
            report["unannotated_episode_ids"].append(ep.id)
        for name, value in (("segments", len(idx)), ("segments_out_of_range", cov.out_of_range),
                            ("segments_overlapping", cov.overlapping), ("segments_empty", cov.empty),
                            ("frames", len(ep.frames)), ("frames_annotated", annotated),
                            ("frames_uncovered", len(ep.frames) - annotated), ("problems_total", len(cov.problems))):
            report[name] += value
        report["problems"].extend(cov.problems[: MAX_LISTED - len(report["problems"])])
    report["samples"] = report["frames"] if uncovered == "empty" else report["frames_annotated"]
    return report


def render_prompt(template: str, instruction: str) -> str:
    """The prompt with `{instruction}` replaced (other braces are kept as they are)."""
    # str.replace, not str.format: prompts may contain other braces.
    return template.replace("{instruction}", instruction)


def annotate(src: str | Path, out: str | Path, options: AnnotateOptions,
             run: RunOptions | None = None) -> tuple[Any, dict[str, Any] | None]:
    """Convert a robot shard dataset into an annotation dataset; returns the ConvertReport and the
    annotation report (None until the manifest exists, i.e. after the last part's merge)."""
    from cotrain.convert.pipeline import convert

    run = run or RunOptions()
    if options.name is None:  # a derived dataset is named after its folder, not after its source's
        options = options.model_copy(update={"name": Path(out).resolve().name})
    _refuse_changed_source(Path(out), options, run)
    report = convert("annotations", src, out, options, run)
    manifest_path = Path(out) / MANIFEST_NAME
    if not manifest_path.is_file():
        return report, None
    return report, load_manifest(out).extra.get("annotation")


def _refuse_changed_source(out: Path, options: AnnotateOptions, run: RunOptions) -> None:
    """A finished OUT made from another version of the same --from file is not 'already done'."""
    if run.overwrite or options.from_file is None or not (out / MANIFEST_NAME).is_file():
        return
    from cotrain.convert.plan import fingerprint_source

    manifest: Manifest = load_manifest(out)
    made_from = manifest.extra.get("annotation", {}).get("source", {}).get("sha256")
    path = Path(options.from_file)
    if made_from and path.exists() and fingerprint_source(path) != made_from:
        raise ConfigError(f"{out} was annotated from an earlier version of {path}; pass --overwrite to redo it")
