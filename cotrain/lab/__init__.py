"""The lab: the tabletop simulator, the ablation runner and the demo.

Built on the library and never imported by it (tests/unit/test_architecture.py checks the direction).
"""
