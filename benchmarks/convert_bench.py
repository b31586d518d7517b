"""Conversion throughput against its decoding floor, measured in the same run on the same frames.

Case `lerobot`: a LeRobot v2.1 folder (written with tests/fixtures/lerobot.py; the mp4s are then
re-encoded with textured camera-like frames, because the fixture's flat colour frames decode
unrealistically fast) is converted with `cotrain convert lerobot ... --image-size 224` (the library
call `cotrain.convert.pipeline.convert`). Its floor is the work no converter can avoid: PyAV decode of
the same mp4s, the same resize inside `frame.to_ndarray(width, height)` (swscale, as cotrain/media/video.py
does) and `cotrain.media.image.encode_jpeg` at the same quality, nothing around them.

Cases `mcap` and `rlds` (convert_cases.py; run when their converters are installed) do the same for
ROS 2 MCAP logs (CompressedImage JPEG + JointState + command topics) and an RLDS TFRecord folder,
each against its own decoding floor. All cases use the same episodes, frames, cameras and frame size.

Reported per case: camera frames per second of the floor and of the converter with 1 and 2 workers,
the ratio converter / floor (target >= 0.8), the scaling of 2 workers over 1 (target ~1.8 on 2 cores)
and, for reference, the floor's own scaling with 2 processes each decoding half of the files.

Per process means one core per process: these variants run with COTRAIN_DECODE_THREADS=1, because
FFmpeg's default starts a decoder thread per core and a single process then already uses ~1.5 of 2
cores, which hides both the converter's overhead and its scaling. The LeRobot case also reports the
converter against the floor with FFmpeg's default threads (`ffmpeg_threads`), what a one-worker
`cotrain convert` does out of the box.

    python benchmarks/convert_bench.py            # full size, writes benchmarks/results/convert-*.json
    python benchmarks/convert_bench.py --quick    # tiny, a few seconds (used by the smoke test)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PeakMemory,
    Variant,
    import_fixtures,
    machine_info,
    median_of,
    median_rate,
    parse_with_variant_args,
    ratio,
    run_rounds,
    wait_for_go,
    write_child_result,
    write_results,
)

SIZES: dict[str, dict[str, Any]] = {
    # 16 episodes x 150..165 frames x 2 cameras = 5,040 camera frames of 320x240 h264: long enough that
    # the ~0.8 s each spawned worker spends starting up (Python, imports) is a small part of a run.
    "full": {"episodes": 16, "frames": 150, "hw": (240, 320), "image_size": "224"},
    "quick": {"episodes": 2, "frames": 12, "hw": (48, 64), "image_size": "32"},
}
CAMERAS = ("front", "wrist")
JPEG_QUALITY = 90  # RobotOptions.jpeg_quality default; the floor encodes at the same quality


# --- data -------------------------------------------------------------------------------------------


def camera_frame(episode: int, frame: int, camera: int, hw: tuple[int, int]) -> np.ndarray:
    """A camera-like frame: a textured static scene, a moving object, and mild sensor noise."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = 90 + 40 * np.sin(xx / (7 + camera)) * np.cos(yy / 11) + 0.25 * xx + 0.15 * yy
    img = np.stack([scene, scene * 0.9 + 20, scene * 0.7 + 40], axis=-1)
    cy, cx = h * (0.3 + 0.4 * np.sin(frame / 20 + episode)), w * (0.5 + 0.3 * np.cos(frame / 15))
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < (min(h, w) / 6) ** 2
    img[blob] = (200, 60 + 10 * episode, 50)
    noise = np.random.default_rng([episode, frame, camera]).normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def write_lerobot_data(root: Path, size: dict[str, Any]) -> Path:
    import_fixtures()
    from tests.fixtures.lerobot import episode_length, write_lerobot_v21, write_video

    write_lerobot_v21(root, episodes=size["episodes"], frames=size["frames"], size=size["hw"], cameras=CAMERAS)
    for e in range(size["episodes"]):
        for c, cam in enumerate(CAMERAS):
            frames = [camera_frame(e, f, c, size["hw"]) for f in range(episode_length(e, size["frames"]))]
            write_video(root / f"videos/chunk-000/observation.images.{cam}/episode_{e:06d}.mp4", frames, fps=30)
    return root


# --- variant processes ------------------------------------------------------------------------------


def lerobot_floor_tasks(data: Path) -> list[Path]:
    return sorted((data / "videos").rglob("*.mp4"))


def lerobot_floor(path: Path, bound: tuple[int, int] | None) -> int:
    """Decode every frame of one mp4, resize it in swscale and JPEG-encode it: the floor's unit of work."""
    import av

    from cotrain.media.image import encode_jpeg, fit_size
    from cotrain.media.video import decode_threads

    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if decode_threads():
            stream.codec_context.thread_count = decode_threads()
        for frame in container.decode(stream):
            h, w = fit_size(frame.height, frame.width, bound)
            encode_jpeg(frame.to_ndarray(format="rgb24", width=w, height=h), JPEG_QUALITY)
            frames += 1
    return frames


def lerobot_convert(data: Path, out: Path, workers: int, image_size: str) -> int:
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import RunOptions
    from cotrain.media.video import decode_threads
    from cotrain_converters.lerobot.converter import LeRobotOptions

    opts = LeRobotOptions(embodiment="so101", image_size=image_size, jpeg_quality=JPEG_QUALITY)
    run = RunOptions(workers=workers, progress=False, decode_threads=decode_threads())
    report = convert("lerobot", data, out, opts, run)
    return report.samples * len(CAMERAS)


def run_variant(args: argparse.Namespace) -> None:
    """Inside a fresh process: set up, wait for the parent's go, do this part of the work, report."""
    from cotrain.media.image import parse_size

    data, size = Path(args.data), SIZES[args.size]
    case, kind = args.variant.split("-", 1)
    if kind == "floor":
        tasks = FLOOR_TASKS[case](data)[args.part :: args.parts]
        bound = parse_size(size["image_size"])
        work: Callable[[], int] = lambda: sum(FLOORS[case](t, bound) for t in tasks)  # noqa: E731
    else:
        workers = int(kind.removeprefix("convert-w"))
        out = Path(args.workdir) / f"out-{args.variant}-{time.monotonic_ns()}"
        work = lambda: CONVERTS[case](data, out, workers, size["image_size"])  # noqa: E731
    # One-off imports happen before the clock in every variant alike: a real conversion pays them once
    # per process and then runs for minutes. (pyarrow imports pandas on its first to_numpy, ~0.3 s.)
    # Spawned workers of the w2 variants still pay theirs inside the clock.
    import av  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import cotrain.convert.pipeline  # noqa: F401

    clock = wait_for_go()
    with PeakMemory(interval_s=0.25) as peak:
        frames = work()
    timing = clock.stop()
    if kind != "floor":
        shutil.rmtree(out, ignore_errors=True)
    write_child_result(args.result, {"frames": frames, **timing, "peak_pss_bytes": peak.peak})


# --- cases ------------------------------------------------------------------------------------------

WRITERS: dict[str, Callable[[Path, dict[str, Any]], Path]] = {"lerobot": write_lerobot_data}
FLOOR_TASKS: dict[str, Callable[[Path], Sequence[Any]]] = {"lerobot": lerobot_floor_tasks}
FLOORS: dict[str, Callable[[Any, tuple[int, int] | None], int]] = {"lerobot": lerobot_floor}
CONVERTS: dict[str, Callable[[Path, Path, int, str], int]] = {"lerobot": lerobot_convert}
FLOOR_NOTES = {
    "lerobot": "PyAV decode of every mp4 frame + to_ndarray(width, height) resize + cotrain.media.image.encode_jpeg",
}


def _register_optional_cases() -> list[str]:
    """MCAP and RLDS cases exist only when their converters and fixture writers are importable."""
    try:
        import convert_cases
    except ImportError:
        return []
    names = []
    for case in convert_cases.available():
        WRITERS[case.name], FLOOR_TASKS[case.name] = case.write, case.floor_tasks
        FLOORS[case.name], CONVERTS[case.name], FLOOR_NOTES[case.name] = case.floor, case.convert, case.floor_note
        names.append(case.name)
    return names


# --- parent -----------------------------------------------------------------------------------------


ONE_THREAD = (("COTRAIN_DECODE_THREADS", "1"),)
FFMPEG_THREADS = (("COTRAIN_DECODE_THREADS", "0"),)


def case_variants(case: str) -> list[Variant]:
    variants = [
        Variant(f"{case}-floor", items_key="frames", env=ONE_THREAD),
        Variant(f"{case}-convert-w1", items_key="frames", env=ONE_THREAD),
        Variant(f"{case}-floor", parts=2, items_key="frames", label=f"{case}-floor-x2", env=ONE_THREAD),
        Variant(f"{case}-convert-w2", items_key="frames", env=ONE_THREAD),
    ]
    if case == "lerobot":  # the only case that decodes video: also FFmpeg's default threads
        variants += [Variant("lerobot-floor", items_key="frames", label="lerobot-floor-ffmpeg-threads",
                             env=FFMPEG_THREADS),
                     Variant("lerobot-convert-w1", items_key="frames", label="lerobot-convert-w1-ffmpeg-threads",
                             env=FFMPEG_THREADS)]
    return variants


def summarise(case: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    floor, w1 = median_rate(runs[f"{case}-floor"]), median_rate(runs[f"{case}-convert-w1"])
    floor2, w2 = median_rate(runs[f"{case}-floor-x2"]), median_rate(runs[f"{case}-convert-w2"])
    frames = {r["frames"] for v in runs.values() for r in v}
    if len(frames) != 1:
        raise RuntimeError(f"{case}: the variants handled different frame counts {sorted(frames)}")
    out = {
        "camera_frames": frames.pop(),
        "floor": FLOOR_NOTES[case],
        "floor_fps": floor,
        "convert_w1_fps": w1,
        "ratio_w1": ratio(w1, floor),
        "target_ratio_w1": 0.8,
        "floor_x2_fps": floor2,
        "convert_w2_fps": w2,
        "scaling_w2": ratio(w2, w1),
        "floor_scaling_x2": ratio(floor2, floor),
        "ratio_w2_to_floor_x2": ratio(w2, floor2),
        "target_scaling_w2": 1.8,
    }
    out["meets_ratio_w1"] = out["ratio_w1"] >= 0.8
    out["meets_scaling_w2"] = out["scaling_w2"] >= 1.8
    # Frames per CPU-second: much less sensitive to load from other processes than wall-clock rates.
    cpu = {k: median_rate(v, "cpu_rate") for k, v in runs.items()}
    out["cpu_fps"] = cpu
    out["cpu_ratio_w1"] = ratio(cpu[f"{case}-convert-w1"], cpu[f"{case}-floor"])
    out["cpu_ratio_w2"] = ratio(cpu[f"{case}-convert-w2"], cpu[f"{case}-floor"])
    if f"{case}-floor-ffmpeg-threads" in runs:
        auto_floor = median_rate(runs[f"{case}-floor-ffmpeg-threads"])
        auto_w1 = median_rate(runs[f"{case}-convert-w1-ffmpeg-threads"])
        out["ffmpeg_threads"] = {"floor_fps": auto_floor, "convert_w1_fps": auto_w1,
                                 "ratio_w1": ratio(auto_w1, auto_floor)}
    out["peak_pss_mib"] = {k: round(median_of(v, "peak_pss_bytes") / 2**20, 1) for k, v in runs.items()}
    return out


def run_parent(args: argparse.Namespace) -> Path:
    machine = machine_info()
    size = SIZES[args.size]
    optional = _register_optional_cases()
    cases = args.cases.split(",") if args.cases else ["lerobot", *optional]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cotrain-convert-bench-"))
    doc: dict[str, Any] = {"size": args.size, "config": {**size, "cameras": list(CAMERAS), "repeats": args.repeats,
                                                         "jpeg_quality": JPEG_QUALITY}, "cases": {}}
    try:
        for case in cases:
            data = workdir / f"data-{case}"
            if not data.exists():
                t0 = time.monotonic()
                WRITERS[case](data, size)
                print(f"{case}: wrote source data in {time.monotonic() - t0:.1f} s", flush=True)
            common_args = ["--data", str(data), "--size", args.size, "--workdir", str(workdir)]
            runs = run_rounds(Path(__file__), case_variants(case), common_args, workdir, repeats=args.repeats)
            summary = summarise(case, runs)
            doc["cases"][case] = {"summary": summary, "runs": runs}
            print(f"{case}: {summary}", flush=True)
        missing = sorted({"mcap", "rlds"} - set(optional))
        doc["cases_missing"] = {m: "converter or fixture writer not importable" for m in missing}
        return write_results("convert", doc, machine, args.out)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and one round (smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="rounds per variant (default 3; 1 with --quick)")
    p.add_argument("--cases", default=None, help="comma list of cases (default: lerobot + mcap/rlds when available)")
    p.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/convert-<time>.json)")
    p.add_argument("--workdir", default=None, help="keep data and outputs here (default: a temp dir, removed)")
    # Internal: the variant processes.
    return parse_with_variant_args(p, argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variant:
        _register_optional_cases()
        run_variant(args)
    else:
        print(f"results: {run_parent(args)}")


if __name__ == "__main__":
    main()
