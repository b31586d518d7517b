"""Vision-language sources: the `coco`, `img2dataset` and `hf-parquet` converters."""
