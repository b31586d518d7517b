"""Open a LeRobotDataset v3.0 folder with LeRobot's own `LeRobotDataset` and dump every frame to .npz.

Runs in a LeRobot environment (no cotrain needed). The caller compares the dump with the cotrain
data it exported. Arrays: `observation.state`, `action` [N, D]; `chunk` [N, H, D] and
`chunk_is_pad` [N, H] from `delta_timestamps` over the next H frames; each camera as uint8
[N, H, W, 3]; `timestamp`, `frame_index`, `episode_index`, `index`, `source` (when present); `task`
as a JSON list.

    python read_exported_dataset.py ROOT OUT.npz --horizon H
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--horizon", type=int, required=True)
    args = parser.parse_args()

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    plain = LeRobotDataset("local/export", root=args.root)
    fps = plain.fps
    chunked = LeRobotDataset("local/export", root=args.root,
                             delta_timestamps={"action": [i / fps for i in range(args.horizon)]})
    scalars = ["timestamp", "frame_index", "episode_index", "index"]
    scalars += ["source"] if "source" in plain.features else []
    out: dict[str, list] = {k: [] for k in ["observation.state", "action", "chunk", "chunk_is_pad", *scalars,
                                            *plain.meta.camera_keys]}
    tasks = []
    for i in range(len(plain)):
        item, chunk = plain[i], chunked[i]
        for k in ["observation.state", "action", *scalars]:
            out[k].append(item[k].numpy())
        out["chunk"].append(chunk["action"].numpy())
        out["chunk_is_pad"].append(chunk["action_is_pad"].numpy())
        for cam in plain.meta.camera_keys:  # float [3, H, W] in [0, 1] -> the uint8 pixels LeRobot decoded
            out[cam].append(np.rint(item[cam].numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
        tasks.append(item["task"])
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["task"] = np.asarray(json.dumps(tasks))
    arrays["info"] = np.asarray(json.dumps({"num_episodes": plain.num_episodes, "fps": fps,
                                            "stats_keys": sorted(plain.meta.stats)}))
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
