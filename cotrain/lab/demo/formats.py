"""The format tour of `make demo`: small samples of every supported source format, converted and checked.

The samples are written by the repository's sample writers (tests/fixtures/, real formats written with
the real libraries: h5py, pyarrow, PyAV, mcap, tarfile), so the tour exercises exactly the code paths
real data takes. It needs the repository checkout (tests/fixtures) and takes ~5 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["convert_all"]


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


def convert_all(console: Console, out: Path) -> list[tuple[str, Path]]:
    """Write, convert, summarise and validate one sample per format; prints a table."""
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import CONVERTERS
    from cotrain.dataset.summary import summarise
    from cotrain.dataset.validate import validate

    table = Table(title="format tour: one sample of every supported format, converted", title_justify="left")
    for col in ("format", "dataset", "modality", "embodiment", "episodes", "samples", "shards", "state/action dims",
                "cameras", "valid", "s"):
        table.add_column(col)
    done = []
    for fmt, name, write, options in _sources(out / "raw"):
        started = time.perf_counter()
        src = write()
        conv = CONVERTERS.get(fmt)
        opts = conv.options.model_validate({k: v for k, v in {**options, "name": name}.items() if v is not None})
        dest = out / "data" / name
        convert(fmt, src, dest, opts)
        s, report = summarise(dest), validate(dest)
        dims = f"{len(s.manifest.state_names)}/{len(s.manifest.action_names)}"
        table.add_row(fmt, name, s.manifest.modality, s.manifest.embodiment or "-", str(s.manifest.num_episodes),
                      str(s.manifest.num_samples), str(len(s.manifest.shards)), dims,
                      ",".join(s.manifest.cameras) or "-", "ok" if report.ok else f"{len(report.problems)} problems",
                      f"{time.perf_counter() - started:.1f}")
        done.append((name, dest))
    console.print(table)
    return done
