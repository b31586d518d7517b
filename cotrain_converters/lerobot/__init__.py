"""LeRobot datasets (v2.1 and v3.0): the `lerobot` converter and its metadata reader."""
