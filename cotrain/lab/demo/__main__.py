"""`python -m cotrain.lab.demo`: run the demo (cotrain/lab/demo/run.py)."""

from cotrain.lab.demo.run import main

main()
