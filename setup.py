"""Build the Cython kernels in csrc/ as fastmlp.backends._cython.

Flags: -O3 -fno-math-errno -fno-trapping-math (neither changes a result) -ffp-contract=off
(no FMA contraction), no -ffast-math, no -march=native.  Set FASTMLP_NATIVE=1 to add
-march=native for a build that only runs on this CPU.  OpenMP is used when the
compiler accepts -fopenmp (probed below); otherwise the kernels build serial.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts_openmp():
    """Try to compile and link a tiny OpenMP program with the default C compiler."""
    if os.environ.get("FASTMLP_NO_OPENMP"):
        return False
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return False
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            res = subprocess.run(
                cc.split() + ["-fopenmp", path, "-o", os.path.join(tmp, "t")],
                capture_output=True, timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


use_openmp = _compiler_accepts_openmp()
# -fno-math-errno only stops libm from setting errno (results are unchanged); without it GCC
# cannot vectorise a loop that calls sqrt, as Adam's update does.  -fno-trapping-math only
# lets GCC assume no one reads the floating-point exception flags our loops raise (results
# are unchanged: no reassociation, no flush to zero, NaN and inf keep IEEE semantics);
# without it GCC will not if-convert the clamps and selects of the tanh/logistic passes
# (step_loops.h), and those loops stay scalar: 10 ns an element instead of under 1.
# -ffp-contract=off: no fused multiply-adds, so every clone of a loop (AVX-512, AVX2, the
# baseline; updates.h) rounds alike and a model trains to the same bits on every x86-64 CPU.
compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
link_args = []
if use_openmp:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
if os.environ.get("FASTMLP_NATIVE"):
    compile_args.append("-march=native")
print(f"fastmlp build: openmp={'yes' if use_openmp else 'no'} flags={compile_args}", file=sys.stderr)

extensions = [
    Extension(
        "fastmlp.backends._cython",
        ["csrc/kernels.pyx"],
        include_dirs=[np.get_include(), "csrc"],
        depends=["csrc/updates.h", "csrc/step_loops.h", "csrc/sparse_loops.h", "csrc/gather.h",
                 "csrc/pool.h", "csrc/post.h", "csrc/bf16.h", "csrc/dropout.h",
                 "csrc/train_step.pxi"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

# fastmlp's own threads for the fused steps' large GEMMs (plain C, no Cython)
# (and the optimiser updates of updates.h that its jobs may carry: the same flags as above)
pool = Extension("fastmlp.backends._pool", ["csrc/pool.c"], include_dirs=["csrc"],
                 depends=["csrc/pool.h", "csrc/post.h", "csrc/bf16.h", "csrc/updates.h"],
                 extra_compile_args=[a for a in compile_args if a != "-fopenmp"],
                 extra_link_args=["-pthread"])

setup(
    ext_modules=[pool] + cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
