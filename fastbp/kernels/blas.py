"""numpy's own BLAS ``gemm``, callable from numba kernels through a function address.

numba's ``np.dot`` calls scipy's BLAS, a second OpenBLAS in the process with its own
thread pool: interleaved with numpy's matmuls on the 2-core development machine,
the two pools' spinning threads starved each other (the digits step's matmuls took
3 ms instead of 0.5 ms; ``docs/threading.md``). So compiled kernels call the
``cblas_?gemm`` of the library numpy itself uses, found by :func:`gemm_addresses`
and passed to the kernel as an integer: nothing machine-specific is compiled into
the cached code. Only the ILP64 OpenBLAS of numpy's PyPI wheels
(``scipy_cblas_sgemm64_``) is recognised; elsewhere :func:`gemm_addresses` returns
None and callers keep their numpy matmuls.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from threadpoolctl import threadpool_info

from ..jit import jit

__all__ = ["ROW_MAJOR", "NO_TRANS", "TRANS", "gemm", "gemm_addresses"]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values
_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"), ("cblas_sgemm64_", "cblas_dgemm64_"))


@functools.cache
def gemm_addresses() -> tuple[int, int] | None:
    """Addresses of numpy's ILP64 ``cblas_sgemm`` and ``cblas_dgemm``, or None if numpy's BLAS is not one."""
    try:
        paths = [i["filepath"] for i in threadpool_info() if i.get("user_api") == "blas" and "numpy" in i["filepath"]]
        for path in paths:
            lib = ctypes.CDLL(path)
            for s, d in _SYMBOLS:
                if hasattr(lib, s) and hasattr(lib, d):
                    fs, fd = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in (s, d))
                    if fs and fd:
                        return fs, fd
    except OSError:
        return None
    return None


@intrinsic
def _call_gemm(typingctx, fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """``cblas_?gemm`` at address ``fn``: int arguments as int64 (pointers too), ``alpha``/``beta`` in the dtype."""
    sig = types.void(fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        real = ir.FloatType() if signature.args[7] == types.float32 else ir.DoubleType()
        ptr = real.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        enums = [builder.trunc(x, i32) for x in args[1:4]]
        a_, b_, c_ = (builder.inttoptr(args[i], ptr) for i in (8, 10, 13))
        builder.call(f, [*enums, args[4], args[5], args[6], args[7], a_, args[9], b_, args[11], args[12], c_, args[14]])
        return context.get_dummy_value()

    return sig, codegen


def _gemm_py(fn, a, trans_a, b, trans_b, c):
    """``c = op(a) @ op(b)`` through the ``cblas_?gemm`` at ``fn``; op transposes when ``trans_*``.

    ``a``, ``b``, ``c``: C-contiguous 2-D arrays of one dtype, shapes agreeing (unchecked).
    """
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    one, zero = c.dtype.type(1.0), c.dtype.type(0.0)
    _call_gemm(
        fn, np.int64(ROW_MAJOR), np.int64(TRANS if trans_a else NO_TRANS), np.int64(TRANS if trans_b else NO_TRANS),
        np.int64(m), np.int64(n), np.int64(k), one, np.int64(a.ctypes.data), np.int64(a.shape[1]),
        np.int64(b.ctypes.data), np.int64(b.shape[1]), zero, np.int64(c.ctypes.data), np.int64(n),
    )  # fmt: skip


gemm = jit(_gemm_py, inline="always")
