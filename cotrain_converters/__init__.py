"""Source-format converters for cotrain, installed as the `cotrain_converters` package.

One module per source family; each exposes `CONVERTER` and is registered under the
`cotrain.converters` entry point. This package depends on `cotrain`, never the reverse.
"""
