"""Elementwise math for the kernels: an ``exp`` that LLVM can vectorise.

numba calls libm's scalar ``expf`` for ``np.exp`` (the PyPI llvmlite has no
SVML), which made the fused softmax-cross-entropy slower than numpy's SIMD
``exp``. :func:`exp` here is Cephes' ``expf`` (range reduction and a degree-6
polynomial, within 2 ulp) with the ``2**n`` scale applied to the exponent bits, all
plain arithmetic that vectorises. Results below float32's smallest normal
are 0. float32 only; float64 keeps ``np.exp``, except in :func:`exp_nonpos`: the
exponential of max-shifted scores (``x <= 0``), which the narrow softmax
cross-entropy takes over whole blocks of rows; its float64 form is Cephes' ``exp``
(within 2 ulp, tests/test_math.py), 0 below ``exp(-707)``.

:func:`exp_shifted` is the max-shifted row exponential that softmax and the
fused losses share. Editing this file is safe: fastbp's kernel cache is keyed
by a hash of every kernel file (:func:`fastbp.jit.cache_dir`).
"""

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

from ..jit import jit


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no work in machine code)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_from_f32(typingctx, value):
    """Reinterpret a float32 as an int32 (no work in machine code)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


def exp(x):
    """``exp(x)``; inside numba kernels, the vectorisable version for float32."""
    return np.exp(x)


@overload(exp, inline="always")
def _exp_overload(x):
    if x != types.float32:
        return lambda x: np.exp(x)

    def impl(x):
        f = np.float32
        # Below lo the result is 0 (float32's normals end at exp(-87.3365)); above hi, inf.
        lo, hi = f(-87.33), f(88.72283)
        v = min(max(x, lo), hi)
        k = np.floor(v * f(1.44269504088896341) + f(0.5))
        r = v - k * f(0.693359375) + k * f(2.12194440e-4)  # v - k ln2, in two parts for precision
        p = f(1.9875691500e-4)
        p = p * r + f(1.3981999507e-3)
        p = p * r + f(8.3334519073e-3)
        p = p * r + f(4.1665795894e-2)
        p = p * r + f(1.6666665459e-1)
        p = p * r + f(5.0000001201e-1)
        q = p * r * r + r + f(1.0)  # exp(r), |r| <= ln2 / 2
        # Scale by 2**k by adding k to the exponent bits: an integer add, so fastmath's
        # reassociation cannot turn it into an overflowing 2**128; q and the result stay normal.
        y = _f32_from_bits(_bits_from_f32(q) + (np.int32(k) << 23))
        y = f(0.0) if x < lo else y  # exp(-inf) == 0 exactly, as softmax masking needs
        y = f(np.inf) if x > hi else y
        return x if x != x else y  # NaN passes through

    return impl


@intrinsic
def _f64_from_bits(typingctx, bits):
    """Reinterpret an int64 as a float64 (no work in machine code)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _bits_from_f64(typingctx, value):
    """Reinterpret a float64 as an int64 (no work in machine code)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


# exp_nonpos's float64 range: below LO_64 the result is 0. exp(-707) is 9.6e-308, just above
# float64's smallest normal (2.2e-308), so the 2**k scale below never leaves the normals. Above
# HI_64 (outside its use) it gives inf rather than a wrong finite number.
LO_64 = -707.0
HI_64 = 709.0


def exp_nonpos(x):
    """``exp(x)`` for ``x <= 0`` (a max-shifted score), or NaN; vectorisable in both dtypes in kernels.

    float64: within 2 ulp on ``[-707, 0]``, 0 below -707 (where the true value is below 1e-307),
    inf above 709 (where it is below 1.8e308: not this function's use).
    """
    return np.exp(x)


@overload(exp_nonpos, inline="always")
def _exp_nonpos_overload(x):
    if x == types.float32:
        return lambda x: exp(x)
    if x != types.float64:
        return lambda x: np.exp(x)

    def impl(x):
        # Cephes' exp (range reduction, then a (2, 3) Pade form of exp(r) on |r| <= ln2 / 2;
        # 1.7 ulp at worst against long double, tests/test_math.py), the 2**k scale added to
        # the exponent bits as in ``exp``. libm's scalar exp, which numba calls for np.exp,
        # kept the narrow softmax at 4 ns an element; this loop vectorises.
        v = min(max(x, LO_64), HI_64)
        k = np.floor(v * 1.4426950408889634073599 + 0.5)
        r = v - k * 6.93145751953125e-1 - k * 1.42860682030941723212e-6
        rr = r * r
        p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1)
        q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr
        q += 2.00000000000000000009e0
        e = 1.0 + 2.0 * (p / (q - p))
        y = _f64_from_bits(_bits_from_f64(e) + (np.int64(k) << 52))
        y = 0.0 if x < LO_64 else y  # and exp(-inf) == 0 exactly
        y = np.inf if x > HI_64 else y
        return x if x != x else y

    return impl


# Row sums run in float32 blocks of BLOCK columns whose partial sums are added in float64:
# the vectorised float32 sum of one block (BLOCK / lanes terms per lane) stays within a few
# ulps, and the float64 total of the blocks keeps that for any row width (a plain float32
# sum of 5M squares was off by 2.5e-3). A row of up to BLOCK columns costs one conversion.
BLOCK = 256


def _exp_shifted(zr, out):
    """``out = exp(zr - max(zr))`` for one row; returns ``(max, sum(out))``, the sum in float64."""
    n = zr.shape[0]
    m = zr[0]
    for j in range(1, n):
        if zr[j] > m:
            m = zr[j]
    total = 0.0
    for b in range((n + BLOCK - 1) // BLOCK):  # not range(0, n, BLOCK): that stops vectorising
        j0 = b * BLOCK
        w = min(BLOCK, n - j0)
        for jj in range(w):
            out[j0 + jj] = exp(zr[j0 + jj] - m)
        # The sum in a loop of its own that only reads: summed in the loop that also stores to
        # ``out`` (which may alias ``zr``), LLVM guards its vectorised sum with a run-time overlap
        # check and falls back to a scalar sum, a different rounding, for some addresses of
        # the two rows; the same row then gave results 1 ulp apart from call to call.
        s = zr.dtype.type(0.0)
        for jj in range(w):
            s += out[j0 + jj]
        total += s
    return m, total


exp_shifted = jit(_exp_shifted, inline="always")
