"""The benchmark report (`fastmlp bench`, report.py) and the cases it and the pytest-benchmark
suite in bench/ time (cases.py).  Imported only by `fastmlp bench` and bench/: it pulls in
the optional peers (PyTorch, scikit-learn) it compares against."""
