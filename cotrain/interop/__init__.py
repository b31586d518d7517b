"""Exchange with other robot-learning stacks: LeRobot policies (and datasets)."""
