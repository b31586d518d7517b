"""The typer CLI: a thin shell over the library (parse, call one function, print a summary)."""
