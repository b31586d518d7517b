"""The end-to-end demo behind `make demo` (`python -m cotrain.lab.demo`)."""
