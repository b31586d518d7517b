"""Bridges to other robot-learning stacks (LeRobot): batch adapters, dataset exporters and policy export.

Nothing here imports those stacks: the adapters produce plain dicts of torch tensors and lists,
the exporters write files in the other stack's layout, so cotrain needs neither installed.
"""
