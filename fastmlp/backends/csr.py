"""Sparse input: the CSR matrix the sparse kernels take, made once from scipy.sparse input.

Design: the compiled kernels read a sparse X as three arrays -- data (nnz,) of the model's
dtype, indices (nnz,) int64 column numbers, indptr (N + 1,) int64 offsets into data/indices
(row i is data[indptr[i]:indptr[i + 1]]) -- so `CSR` is just those three and a shape.  Offsets
are absolute: rows s..e of a CSR are `CSR(data, indices, indptr[s:e + 1], ...)`, a view, no
copy.  `as_csr` converts any scipy.sparse matrix or array (CSR, CSC, COO, ...) once; a
`CSR` with room for `capacity` stored entries is the workspace a mini-batch is gathered into
(`csr_gather_rows`), so a training step allocates nothing.
"""
import numpy as np

try:
    import scipy.sparse as _sp
except ImportError:  # scipy is a core dependency; keep the module importable regardless
    _sp = None


def issparse(X):
    """True for a scipy.sparse matrix or array, or a CSR."""
    return isinstance(X, CSR) or (_sp is not None and _sp.issparse(X))


class CSR:
    """A compressed-sparse-row matrix of shape (n_rows, n_cols): data (nnz,), indices (nnz,)
    int64 in [0, n_cols), indptr (n_rows + 1,) int64 non-decreasing offsets into them."""

    __slots__ = ("data", "indices", "indptr", "shape", "__weakref__")

    def __init__(self, data, indices, indptr, shape):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (int(shape[0]), int(shape[1]))

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self):
        return int(self.indptr[-1] - self.indptr[0])

    def rows(self, start, stop):
        """Rows start..stop-1 as a CSR view (no copy)."""
        return CSR(self.data, self.indices, self.indptr[start:stop + 1],
                   (stop - start, self.shape[1]))

    def toarray(self):
        """The dense (n_rows, n_cols) array."""
        out = np.zeros(self.shape, self.data.dtype)
        p = self.indptr
        for i in range(self.shape[0]):
            np.add.at(out[i], self.indices[p[i]:p[i + 1]], self.data[p[i]:p[i + 1]])
        return out

    def to_scipy(self):
        """The same matrix as a scipy.sparse.csr_array (offsets rebased to 0)."""
        p = self.indptr
        return _sp.csr_array((self.data[p[0]:p[-1]], self.indices[p[0]:p[-1]], p - p[0]),
                             shape=self.shape)

    def __repr__(self):
        return f"CSR(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype})"

    @classmethod
    def empty(cls, n_rows, n_cols, capacity, dtype):
        """A CSR buffer of n_rows rows with room for `capacity` stored entries."""
        return cls(np.zeros(max(capacity, 1), dtype), np.zeros(max(capacity, 1), np.int64),
                   np.zeros(n_rows + 1, np.int64), (n_rows, n_cols))


def as_csr(X, dtype):
    """A scipy.sparse matrix/array (or a CSR) as a CSR of `dtype` with int64 indices; copies
    only what needs converting."""
    if isinstance(X, CSR):
        if X.data.dtype == dtype:
            return X
        return CSR(X.data.astype(dtype), X.indices, X.indptr, X.shape)
    X = X.tocsr()
    return CSR(np.ascontiguousarray(X.data, dtype=dtype),
               np.ascontiguousarray(X.indices, dtype=np.int64),
               np.ascontiguousarray(X.indptr, dtype=np.int64), X.shape)


def batch_capacity(X, batch_size):
    """Stored entries the largest mini-batch of `batch_size` rows of CSR X can hold: the sum
    of its batch_size longest rows."""
    lengths = np.diff(X.indptr)
    k = min(batch_size, lengths.size)
    if k == 0:
        return 0
    return int(np.partition(lengths, lengths.size - k)[lengths.size - k:].sum())
