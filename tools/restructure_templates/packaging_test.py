def test_every_package_is_found_and_shipped() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in config  # the folders are the import names
    include = config["packages"]["find"]["include"]  # found, not listed
    found = {".".join(p.parent.relative_to(ROOT).parts) for pkg in ("cotrain", "cotrain_converters")
             for p in (ROOT / pkg).rglob("__init__.py")}
    assert all(any(fnmatch(name, pattern) for pattern in include) for name in found)
    assert not any(fnmatch(name, pattern) for pattern in include for name in ("converters", "tests", "benchmarks"))
    assert "py.typed" in config["package-data"]["*"] and (ROOT / "cotrain" / "py.typed").is_file()
    assert "*.yaml" in config["package-data"]["*"]  # the RLDS standardisation table ships with its converter
