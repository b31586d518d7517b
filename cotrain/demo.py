"""`make demo`: generate small samples of every supported source format, convert, check, mix.

The samples are written by the repository's sample writers (tests/fixtures/, real formats written with
the real libraries: h5py, pyarrow, PyAV, mcap, tarfile), so the demo exercises exactly the code paths
real data takes. It runs from the repository root and writes to `demo-out/`.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OUT = Path("demo-out")


def _sources(raw: Path) -> list[tuple[str, str, Callable[[], Path], dict[str, Any]]]:
    """(format, dataset name, writer returning the source path, converter options)."""
    from tests.fixtures import aloha, egodex, lbm, lerobot, mcap, rlds, robomimic, vl

    robot = {"image_size": "96"}
    return [
        ("lerobot", "so101_v30", lambda: lerobot.write_lerobot_v30(raw / "lerobot_v30", episodes=4, frames=30),
         {"embodiment": "so101", **robot}),
        ("lerobot", "so101_v21", lambda: lerobot.write_lerobot_v21(raw / "lerobot_v21", episodes=3, frames=30),
         {"embodiment": "so101", **robot}),
        ("aloha", "aloha_sim", lambda: aloha.write_aloha(raw / "aloha", episodes=3, frames=40, compressed=True),
         {"embodiment": "aloha", **robot}),
        ("robomimic", "robomimic_lift", lambda: robomimic.write_robomimic(raw / "robomimic" / "lift.hdf5"),
         {"embodiment": "panda", **robot}),
        ("mcap", "ros2_arm", lambda: mcap.write_ros2(raw / "mcap" / "arm.mcap"),
         {"embodiment": "ros2_arm", "fps": 10, "state_topic": "/joint_states", "action_topic": "/joint_commands",
          "image_topics": "front=/cam_front/image_raw/compressed,wrist=/cam_wrist/image_raw",
          "instruction_topic": "/instruction"}),
        ("rlds", "oxe_demo", lambda: rlds.write_rlds(raw / "rlds").root,
         {"embodiment": "oxe_arm", "source_fps": 10, **robot}),
        ("lbm", "lbm_bimanual", lambda: lbm.write_lbm(raw / "lbm"), {"embodiment": "lbm_franka"}),
        ("egodex", "egodex_hands", lambda: egodex.write_egodex(raw / "egodex"), {}),
        ("coco", "coco_captions", lambda: vl.write_coco(raw / "coco").root, {"captions": "all"}),
        ("img2dataset", "laion_like", lambda: (vl.write_img2dataset(raw / "img2dataset"), raw / "img2dataset")[1], {}),
        ("hf-parquet", "hf_captions", lambda: (vl.write_hf_captions(raw / "hf_parquet"), raw / "hf_parquet")[1], {}),
    ]


def convert_all(console: Console) -> list[tuple[str, Path]]:
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import CONVERTERS
    from cotrain.inspect import summarise
    from cotrain.validate import validate

    table = Table(title="converted samples", title_justify="left")
    for col in ("format", "dataset", "modality", "embodiment", "episodes", "samples", "shards", "state/action dims",
                "cameras", "valid", "s"):
        table.add_column(col)
    done = []
    for fmt, name, write, options in _sources(OUT / "raw"):
        started = time.perf_counter()
        src = write()
        conv = CONVERTERS.get(fmt)
        opts = conv.options.model_validate({k: v for k, v in {**options, "name": name}.items() if v is not None})
        out = OUT / "data" / name
        convert(fmt, src, out, opts)
        s, report = summarise(out), validate(out)
        dims = f"{len(s.manifest.state_names)}/{len(s.manifest.action_names)}"
        table.add_row(fmt, name, s.manifest.modality, s.manifest.embodiment or "-", str(s.manifest.num_episodes),
                      str(s.manifest.num_samples), str(len(s.manifest.shards)), dims,
                      ",".join(s.manifest.cameras) or "-", "ok" if report.ok else f"{len(report.problems)} problems",
                      f"{time.perf_counter() - started:.1f}")
        done.append((name, out))
    console.print(table)
    return done


def mix_demo(console: Console) -> None:
    """A two-phase mixture over the converted data: plan summary and one real batch."""
    import yaml

    from cotrain.mix.loader import MixtureLoader
    from cotrain.mix.report import check_mixture
    from cotrain.mix.resolve import load_mixture

    doc = {
        "name": "demo_two_phase", "seed": 0, "batch_size": 16, "image_size": 96,
        "sources": {"target": {"path": "data/so101_v30"}, "xemb": {"path": "data/aloha_sim"},
                    "vl": {"path": "data/coco_captions", "loss_weight": 0.5}, "human": {"path": "data/egodex_hands"}},
        "phases": [{"name": "cotrain", "steps": 200, "weights": {"target": 0.2, "xemb": 0.3, "vl": 0.3, "human": 0.2}},
                   {"name": "finetune", "steps": 100, "weights": {"target": 0.8, "vl": 0.2}, "ramp_steps": 20}],
    }
    path = OUT / "mix.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    mixture = load_mixture(path)
    report = check_mixture(mixture)
    table = Table(title=f"mixture {mixture.spec.name}: realised vs target share per phase", title_justify="left")
    table.add_column("phase")
    for name in mixture.names:
        table.add_column(name)
    for phase in report.phases:
        table.add_row(phase.name, *[f"{phase.realised[n]:.3f} / {phase.target[n]:.3f}" for n in mixture.names])
    console.print(table)
    batch = next(iter(MixtureLoader(mixture)))
    shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
    console.print(f"first batch: sources {batch['source'].tolist()}")
    console.print("tensor shapes: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    console.print(f"worst {int(report.worst_window['window_samples'])}-sample window deviation from target: "
                  f"{report.worst_window['max_deviation']:.4f}")


def main() -> None:
    if not Path("tests/fixtures").is_dir():
        sys.exit("run the demo from the repository root (make demo)")
    sys.path.insert(0, str(Path.cwd()))
    shutil.rmtree(OUT, ignore_errors=True)
    import datasets

    datasets.disable_progress_bars()  # the HF parquet sample writer would print bars
    console = Console(width=160)
    started = time.perf_counter()
    convert_all(console)
    mix_demo(console)
    console.print(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s[/]; outputs in {OUT}/ "
                  f"(try: .venv/bin/cotrain inspect {OUT}/data/so101_v30)")


if __name__ == "__main__":
    main()
