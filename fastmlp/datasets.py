"""Dataset loaders: IDX files (MNIST / Fashion-MNIST) and scikit-learn's bundled digits.

Design: `load_idx` reads and validates one IDX file (gzip or raw).  `_locate` finds the four
standard files in the first folder of a search list that holds all of them; `_to_xy` turns
uint8 images and integer labels into the shared return convention.  Every loader returns
``(X_train, y_train, X_test, y_test)``: X float32 of shape (n_samples, n_features) in [0, 1],
y int64 of shape (n_samples,).  Nothing is downloaded.
"""
import gzip
import numbers
import os
import zlib

import numpy as np

# IDX dtype code -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The four standard files, keyed by role; see _variants for the spellings accepted.
_STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
          "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
# Where Debian's packages install the data (dataset-fashion-mnist; there is no MNIST package).
SYSTEM_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist",
               "mnist": "/usr/share/datasets/mnist"}
DATASETS = ("digits", "fashion-mnist", "mnist")


def _path(name, value):
    """os.fspath(value), or a TypeError naming the argument."""
    try:
        return os.fspath(value)
    except TypeError:
        raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                        f"{type(value).__name__}") from None


def load_idx(path):
    """Read one IDX file, gzip-compressed (detected by its 1f 8b magic) or raw.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    array of shape (d0, ..., d{ndim-1}) as given by the header, in native byte order, of the
    header's dtype (uint8, int8, int16, int32, float32 or float64).

    Raises
    ------
    FileNotFoundError if the file is missing; ValueError naming the file and the fault if it
    is empty, a corrupt gzip stream, has a bad magic number, unknown dtype code or truncated
    header, or its data is shorter or longer than the header's shape says.
    """
    path = _path("path", path)
    with open(path, "rb") as f:
        data = f.read()

    def bad(msg):
        return ValueError(f"invalid IDX file {path!r}: {msg}")

    if not data:
        raise bad("file is empty (0 bytes)")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise bad(f"corrupt gzip stream ({type(e).__name__}: {e})") from e
    if len(data) < 4:
        raise bad(f"truncated header: {len(data)} bytes, the magic number needs 4")
    if data[0] != 0 or data[1] != 0:
        raise bad(f"bad magic number 0x{data[:4].hex()}: must start with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise bad(f"unknown dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise bad("header says 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"truncated header: {len(data)} bytes, {ndim} dimensions need {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = dtype.itemsize * int(np.prod(shape, dtype=object))
    got = len(data) - header
    if got < expected:
        raise bad(f"data truncated: shape {shape} of {dtype.name} needs {expected} bytes, "
                  f"only {got} follow the header")
    if got > expected:
        raise bad(f"{got - expected} bytes of trailing data after the {expected} bytes "
                  f"that shape {shape} of {dtype.name} needs")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable native-order copy


def _variants(stem):
    """File names accepted for one standard stem: .gz first, then raw, dotted spelling too."""
    dotted = stem.replace("-idx", ".idx")
    return (stem + ".gz", stem, dotted + ".gz", dotted)


def _find_files(folder):
    """Map role -> path for the files of `folder`; returns (found, missing stems)."""
    found, missing = {}, []
    for role, stem in _STEMS.items():
        hits = [os.path.join(folder, n) for n in _variants(stem)
                if os.path.isfile(os.path.join(folder, n))]
        if hits:
            found[role] = hits[0]
        else:
            missing.append(stem + "[.gz]")
    return found, missing


def _locate(places, what, hint):
    """First (label, folder) of `places` that holds all four files -> role -> path."""
    looked = []
    for label, folder in places:
        if not os.path.isdir(folder):
            looked.append(f"  {folder} ({label}): no such directory")
            continue
        found, missing = _find_files(folder)
        if not missing:
            return found
        looked.append(f"  {folder} ({label}): missing {', '.join(missing)}")
    raise FileNotFoundError(f"{what} not found. Looked in:\n" + "\n".join(looked) + "\n" + hint)


def _to_xy(images, labels, where, n_classes):
    """uint8 images (N, ...) and integer labels (N,) -> X (N, prod(...)) float32, y (N,) int64."""
    if images.dtype != np.uint8 or images.ndim < 2:
        raise ValueError(f"{where}: images must be unsigned bytes (IDX 0x08) of shape "
                         f"(n_images, ...), got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be 1-D integers, got {labels.dtype} of "
                         f"shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0 or images[0].size == 0:
        raise ValueError(f"{where}: no data: images of shape {images.shape}")
    if labels.size and (labels.min() < 0 or (n_classes and labels.max() >= n_classes)):
        top = f"{n_classes - 1}" if n_classes else "any"
        raise ValueError(f"{where}: labels span [{labels.min()}, {labels.max()}], "
                         f"expected [0, {top}]")
    X = images.reshape(len(images), -1).astype(np.float32)
    np.divide(X, 255, out=X)
    return X, labels.astype(np.int64)


def _load_found(files, n_classes):
    """Load the four located files -> (X_train, y_train, X_test, y_test)."""
    X_tr, y_tr = _to_xy(load_idx(files["train_images"]), load_idx(files["train_labels"]),
                        f"training set {files['train_images']!r}", n_classes)
    X_te, y_te = _to_xy(load_idx(files["test_images"]), load_idx(files["test_labels"]),
                        f"test set {files['test_images']!r}", n_classes)
    if X_tr.shape[1] != X_te.shape[1]:
        raise ValueError(f"training images have {X_tr.shape[1]} pixels, test images "
                         f"{X_te.shape[1]}")
    return X_tr, y_tr, X_te, y_te


def _places(name, root):
    """The search list for `name`: root, $FASTMLP_DATA, $FASTMLP_DATA/name, system folder."""
    places = [("root", _path("root", root))] if root is not None else []
    env = os.environ.get("FASTMLP_DATA")
    if env:
        places += [("$FASTMLP_DATA", env), ("$FASTMLP_DATA", os.path.join(env, name))]
    return places + [("system", SYSTEM_DIRS[name])]


def load_fashion_mnist(root=None):
    """Fashion-MNIST from IDX files: 60000 training and 10000 test images of 28x28, 10 classes.

    Looks in `root`, then $FASTMLP_DATA, then $FASTMLP_DATA/fashion-mnist, then
    /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist); the first folder
    holding all four files wins.

    Returns
    -------
    X_train : float32 array of shape (n_train, 784), pixel / 255 in [0, 1]
    y_train : int64 array of shape (n_train,), in [0, 9]
    X_test : float32 array of shape (n_test, 784)
    y_test : int64 array of shape (n_test,)
    """
    hint = ("Install it with `apt-get install dataset-fashion-mnist`, or put the four IDX "
            "files in a folder and set FASTMLP_DATA to it or pass root=.")
    return _load_found(_locate(_places("fashion-mnist", root), "Fashion-MNIST", hint), 10)


def load_mnist(root=None):
    """MNIST from IDX files (same names and shapes as `load_fashion_mnist`).

    Looks in `root`, $FASTMLP_DATA, $FASTMLP_DATA/mnist, then /usr/share/datasets/mnist.
    Returns (X_train (n_train, 784) float32, y_train (n_train,) int64, X_test, y_test).
    """
    hint = ("Debian has no MNIST package: put MNIST's four IDX files in a folder and set "
            "FASTMLP_DATA to it or pass root=.")
    return _load_found(_locate(_places("mnist", root), "MNIST", hint), 10)


def load_idx_dir(path):
    """Load the four standard IDX files (.gz or raw) from the folder `path` only.

    Images must be uint8 of shape (n, ...); labels non-negative integers of shape (n,).
    Returns (X_train (n_train, n_pixels) float32 in [0, 1], y_train (n_train,) int64,
    X_test (n_test, n_pixels), y_test (n_test,)).
    """
    hint = ("Expected " + ", ".join(s + "[.gz]" for s in _STEMS.values()) + ".")
    return _load_found(_locate([("--dataset", _path("path", path))], "IDX dataset", hint), None)


def load_digits(test_size=0.25, seed=0):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), stratified split.

    Parameters
    ----------
    test_size : float in (0, 1) or int, passed to `sklearn.model_selection.train_test_split`
    seed : int, the split's random_state; the same seed gives the same split

    Returns
    -------
    X_train : float32 array of shape (n_train, 64), pixel / 16 in [0, 1]
    y_train : int64 array of shape (n_train,), in [0, 9]
    X_test : float32 array of shape (n_test, 64)
    y_test : int64 array of shape (n_test,)
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    if seed is not None and not isinstance(seed, np.random.RandomState):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        if not 0 <= seed < 2 ** 32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if test_size is not None:
        if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
            raise TypeError(f"test_size must be a number, got {type(test_size).__name__}")
        whole = isinstance(test_size, numbers.Integral)
        if not (0 < test_size < 1797 if whole else 0 < test_size < 1):
            raise ValueError(f"test_size must be a float in (0, 1) or an integer in "
                             f"[1, 1797), got {test_size}")

    X, y = _sk_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    X_tr, X_te = (np.ascontiguousarray(a / 16.0, dtype=np.float32) for a in (X_tr, X_te))
    return X_tr, y_tr.astype(np.int64), X_te, y_te.astype(np.int64)


def load_dataset(name_or_dir, root=None):
    """Load 'digits', 'fashion-mnist', 'mnist' or a folder of IDX files by name.

    A known name wins over a folder of the same name (pass './mnist' for the folder); `root`
    is passed to the MNIST loaders and ignored for digits.  Returns
    (X_train (n_train, n_features) float32, y_train (n_train,) int64, X_test, y_test).
    """
    key = _path("name_or_dir", name_or_dir)
    name = key.lower().replace("_", "-")
    if name == "digits":
        return load_digits()
    if name in ("fashion-mnist", "fashionmnist"):
        return load_fashion_mnist(root)
    if name == "mnist":
        return load_mnist(root)
    if os.path.isdir(key):
        return load_idx_dir(key)
    raise ValueError(f"unknown dataset {key!r}: choose one of {', '.join(map(repr, DATASETS))}"
                     " or give a directory holding the four IDX files")
