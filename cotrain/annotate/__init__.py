"""Dense per-frame language for robot datasets: segment files and trajectory primitives."""
