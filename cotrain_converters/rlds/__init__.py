"""RLDS / Open X-Embodiment TFRecords: the `rlds` converter and its TFRecord readers."""
