"""HDF5 robot sources: the `robomimic` and `aloha` converters and opening HDF5 files."""
