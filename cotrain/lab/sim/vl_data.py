"""Vision-language data about rendered scenes: captions (COCO layout) and question answering (HF parquet).

Text comes from the scene alone, so it is exact: captions list the objects and goal zones and say
where each object lies (a 3 x 3 grid: top / middle / bottom x left / centre / right); questions ask
an object's colour, shape, place or point ("0.31 0.72", x then y as fractions of the image), whether
a combination is present, and how many objects there are. Point answers give the language model
the same grounding a policy needs: which pixels a colour or shape word refers to.

Layouts written:
- COCO captions: `annotations/captions_<split>.json` ({images, annotations}) + `<split>/<id:012d>.jpg`;
- HF parquet: `<split>-00000-of-00001.parquet` with `id`, `image` (struct {bytes, path}, feature
  `Image`) and `conversations` ([{from: human|gpt, value}], the LLaVA form; one question per row),
  with the `huggingface` schema metadata `datasets` writes, so `cotrain convert hf-parquet` finds the
  columns by itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cotrain.lab.sim.scene import Item, Palette, Scene

_NUMBERS = ("zero", "one", "two", "three", "four", "five")


def place_words(pos: Sequence[float]) -> str:
    """(x, y) in [0, 1] -> 'top left', 'bottom centre', 'middle right', or 'centre'."""
    row = ("top", "middle", "bottom")[min(int(pos[1] * 3), 2)]
    col = ("left", "centre", "right")[min(int(pos[0] * 3), 2)]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _name(item: Item) -> str:
    return f"{item.colour} {item.shape}"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def scene_captions(scene: Scene) -> list[str]:
    """Three captions: what is on the table, where the objects are, and the goal zones."""
    objects = [f"a {_name(o)}" for o in scene.objects]
    goals = [f"a {_name(g)}" for g in scene.goals]
    where = "; ".join(f"the {_name(o)} is at the {place_words(o.pos)}" for o in scene.objects)
    return [f"{_join(objects)} on a table, next to {_join(goals)}.",
            f"A tabletop scene: {where}.",
            f"{_join(goals).capitalize()} lie on the table among {len(scene.objects)} objects."]


def scene_questions(scene: Scene, rng: np.random.Generator, pal: Palette, count: int = 3) -> list[tuple[str, str]]:
    """`count` distinct (question, answer) pairs about the scene, drawn with `rng`."""
    objs = list(scene.objects)
    pool: list[tuple[str, str]] = []
    for o in objs:
        if sum(p.shape == o.shape for p in objs) == 1:
            pool.append((f"What colour is the {o.shape}?", o.colour))
        if sum(p.colour == o.colour for p in objs) == 1:
            pool.append((f"What shape is the {o.colour} object?", o.shape))
        pool.append((f"Where is the {_name(o)}?", f"at the {place_words(o.pos)}"))
        pool.append((f"Point to the {_name(o)}.", f"{o.pos[0]:.2f} {o.pos[1]:.2f}"))
    present = {(o.colour, o.shape) for o in objs}
    absent = [(c, s) for c in pal.colours for s in pal.shapes if (c, s) not in present]
    c, s = absent[int(rng.integers(len(absent)))]
    pool.append((f"Is there a {c} {s} on the table?", "no"))
    o = objs[int(rng.integers(len(objs)))]
    pool.append((f"Is there a {_name(o)} on the table?", "yes"))
    pool.append(("How many objects are on the table?", _NUMBERS[len(objs)]))
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[int(i)] for i in sorted(picks)]


def _jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_coco_captions(root: Path, images: Sequence[np.ndarray], captions: Sequence[Sequence[str]], *,
                        split: str = "train2017") -> Path:
    """COCO captions: image ids 1..N, annotation ids counting up across all captions. Returns root."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    doc_images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for n, (image, texts) in enumerate(zip(images, captions), start=1):
        name = f"{n:012d}.jpg"
        (root / split / name).write_bytes(_jpeg(image))
        doc_images.append({"id": n, "file_name": name, "height": int(image.shape[0]), "width": int(image.shape[1]),
                           "license": 0, "coco_url": "", "date_captured": ""})
        annotations += [{"id": len(annotations) + 1 + k, "image_id": n, "caption": t} for k, t in enumerate(texts)]
    doc = {"info": {"description": "cotrain sim tabletop captions", "version": "1.0"}, "licenses": [],
           "images": doc_images, "annotations": annotations}
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(doc))
    return root


def write_hf_conversations(path: Path, images: Sequence[np.ndarray], qa: Sequence[Sequence[tuple[str, str]]],
                           *, row_group: int = 256) -> Path:
    """One row per question: the scene's image and a two-turn LLaVA conversation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, pictures, conversations = [], [], []
    for n, (image, pairs) in enumerate(zip(images, qa)):
        jpeg = _jpeg(image)
        for k, (question, answer) in enumerate(pairs):
            ids.append(f"scene-{n}-q{k}")
            pictures.append({"bytes": jpeg, "path": f"scene-{n}.jpg"})
            conversations.append([{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}])
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn_type = pa.struct([("from", pa.string()), ("value", pa.string())])
    features = {"id": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"},
                "conversations": {"feature": {"from": {"dtype": "string", "_type": "Value"},
                                              "value": {"dtype": "string", "_type": "Value"}}, "_type": "List"}}
    schema = pa.schema([("id", pa.string()), ("image", image_type), ("conversations", pa.list_(turn_type))],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    table = pa.Table.from_arrays([pa.array(ids), pa.array(pictures, image_type),
                                  pa.array(conversations, pa.list_(turn_type))], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)
    return path
