"""The mixture engine: YAML spec, phase schedule, exact slot allocation, readers, collation, loader.

Everything that decides *which* sample fills *which* slot is a pure function of (seed, step,
schedule); readers and collation only fetch and shape what the plan names. That is what makes batch
composition exact, resume exact, and both independent of the number of ranks and workers.
"""
