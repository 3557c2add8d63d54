"""A reader of pickles that hold plain data, which never runs the pickle machine.

Old ``vae_module`` files (``<stem>_meta_data.pkl``), the threshold file beside a
``.skvae`` model and ``.pkl`` transition datasets are pickles of plain data: dicts,
lists, tuples, sets, numbers, strings, bytes, NumPy arrays and scalars of numeric
dtypes. This module reads exactly that subset from the opcode stream
(:func:`pickletools.genops`, which parses without executing), builds each value itself
and checks each one before it is built:

- only the opcodes plain data needs; no code, no objects, no extensions, no
  out-of-band buffers;
- memo reads only of indices already written, and never of a list, dict or set (so no
  cycles); nesting at most :data:`MAX_DEPTH` deep;
- every length within the bytes the file holds;
- arrays only of plain numeric or bool dtypes named by a simple dtype string (no fields,
  no object, no void, no subarray), whose shape times itemsize equals the bytes they
  carry;
- a running estimate of the memory built, refused past ``MEMORY_FACTOR`` times the
  file's size plus :data:`MEMORY_ALLOWANCE`.

Every failure is one ValueError naming the file.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ._inputs import check_regular_file

MAX_DEPTH = 64
MEMORY_FACTOR = 10
MEMORY_ALLOWANCE = 8 * 2**20
# Estimated bytes one more item costs a container (a list's slot, a dict's or set's
# entry with its share of the hash table), and one memo entry.
ITEM_COST = {list: 16, tuple: 8, dict: 64, set: 64, frozenset: 64, OrderedDict: 128}
MEMO_COST = 64
STACK_COST = 8  # a slot on the reader's stack
DEPTH_COST = 128  # the reader's record of a container's depth

# NumPy dtype strings that name a plain number (what pickles of numeric arrays carry).
_DTYPE = re.compile(r"^(b1|\?|[iu][1248]|f[248]|c(8|16))$")
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_FROMBUFFER_MODULES = ("numpy.core.numeric", "numpy._core.numeric")

_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK",
    "NONE", "NEWTRUE", "NEWFALSE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
}  # fmt: skip


# Opcodes that push the value genops parsed from their argument.
_SCALARS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
}  # fmt: skip


class _Refused(Exception):
    """Raised inside the reader; turned into one ValueError naming the file."""


class _Global:
    """A name a pickle refers to (``numpy dtype``, ``_codecs encode``, ...): only ever
    called by REDUCE or passed as ``_reconstruct``'s ``numpy.ndarray`` argument."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _DType:
    """A dtype under construction: ``numpy.dtype(kind, False, True)``, then BUILD with
    its byte order."""

    __slots__ = ("value",)

    def __init__(self, value: np.dtype) -> None:
        self.value = value


class _Array:
    """``_reconstruct(ndarray, (0,), b'b')``: an array whose BUILD gives shape, dtype
    and the bytes of its values."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: np.ndarray | None = None


_ALLOWED_GLOBALS = {
    *(f"{m} _reconstruct" for m in _NUMPY_MODULES),
    *(f"{m} scalar" for m in _NUMPY_MODULES),
    *(f"{m} _frombuffer" for m in _FROMBUFFER_MODULES),
    "numpy dtype",
    "numpy ndarray",
    "_codecs encode",
    "builtins complex",
    "builtins set",
    "builtins frozenset",
    "collections OrderedDict",
    # protocol 0 and 1 spell builtins this way
    "__builtin__ complex",
    "__builtin__ set",
    "__builtin__ frozenset",
}


def _dtype(kind, byteorder: str = "=") -> np.dtype:
    if not isinstance(kind, str) or not _DTYPE.match(kind):
        raise _Refused(f"dtype {kind!r} is not a plain number type")
    if byteorder not in "<>|=" or len(byteorder) != 1:
        raise _Refused(f"byte order {byteorder!r} is invalid")
    dtype = np.dtype(kind)
    return dtype if byteorder == "|" else dtype.newbyteorder(byteorder)


def _build_dtype(target: _DType, state) -> None:
    """BUILD on a dtype: the state NumPy pickles for a plain number type only."""
    if (
        not isinstance(state, tuple)
        or len(state) not in (8, 9)
        or state[0] not in (3, 4)
        or not isinstance(state[1], str)
        or state[2:5] != (None, None, None)
        or state[5:8] != (-1, -1, 0)
        or (len(state) == 9 and state[8] is not None)
    ):
        raise _Refused("a dtype state other than a plain number type's")
    target.value = _dtype(target.value.str[1:], state[1])


def _array(data, dtype, shape, fortran: bool) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` from ``data``, whose length must be exactly
    what they imply."""
    if not isinstance(dtype, np.dtype):
        raise _Refused("an array without a plain dtype")
    if (
        not isinstance(shape, tuple)
        or len(shape) > 32
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise _Refused(f"array shape {shape!r} is invalid")
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("array values that are not bytes")
    n_values = 1
    for n in shape:
        n_values *= n
    if n_values * dtype.itemsize != len(data):
        raise _Refused(
            f"an array of shape {shape} and dtype {dtype} needs "
            f"{n_values * dtype.itemsize} bytes; the file holds {len(data)}"
        )
    flat = np.frombuffer(data, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


def _call(func: _Global, args) -> Any:
    """REDUCE: ``func(*args)`` for the few plain-data constructors pickles use."""
    if not isinstance(args, tuple):
        raise _Refused("REDUCE arguments that are not a tuple")
    module, _, name = func.name.partition(" ")
    if name == "dtype":
        if len(args) != 3 or args[1:] not in ((False, True), (0, 1)):
            raise _Refused("numpy.dtype called with unexpected arguments")
        return _DType(_dtype(args[0]))
    if name == "_reconstruct":
        if (
            len(args) != 3
            or not isinstance(args[0], _Global)
            or args[0].name != "numpy ndarray"
            or args[1] != (0,)
            or args[2] not in (b"b", "b")
        ):
            raise _Refused("an array reconstructed with a shape or a subclass")
        return _Array()
    if name == "scalar":
        if len(args) != 2:
            raise _Refused("numpy scalar called with unexpected arguments")
        return _array(args[1], args[0], (), False)[()]
    if name == "_frombuffer":
        if len(args) != 4 or args[3] not in ("C", "F"):
            raise _Refused("numpy _frombuffer called with unexpected arguments")
        return _array(args[0], args[1], args[2], args[3] == "F")
    if name == "encode":  # protocol 2's bytes: latin-1 text, one byte a character
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise _Refused("_codecs.encode other than of text to latin-1")
        try:
            return args[0].encode("latin-1")
        except UnicodeEncodeError:
            raise _Refused("_codecs.encode of text beyond latin-1") from None
    if name == "complex":
        if len(args) not in (1, 2) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args
        ):
            raise _Refused("complex called with unexpected arguments")
        try:
            return complex(*args)
        except OverflowError:
            raise _Refused("a complex number beyond float range") from None
    if name in ("set", "frozenset"):
        if len(args) > 1 or (args and not isinstance(args[0], list)):
            raise _Refused(f"{name} called with unexpected arguments")
        try:
            return (set if name == "set" else frozenset)(args[0] if args else ())
        except TypeError as exc:  # unhashable items
            raise _Refused(str(exc)) from None
    if name == "OrderedDict":
        if args:
            raise _Refused("OrderedDict called with arguments")
        return OrderedDict()
    raise _Refused(f"{module}.{name} cannot be called")  # numpy.ndarray itself


class _Reader:
    """The state of one read: stack, marks, memo, depths and the memory estimate."""

    def __init__(self, budget: int) -> None:
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}  # by id: a container's id is its own while alive
        self.budget = budget
        self.used = 0

    def charge(self, n_bytes: int) -> None:
        self.used += n_bytes
        if self.used > self.budget:
            raise _Refused(
                f"it would build more than {self.budget} bytes of data "
                f"({MEMORY_FACTOR}x the file's size plus {MEMORY_ALLOWANCE})"
            )

    def push(self, value: Any) -> None:
        self.charge(STACK_COST)
        if isinstance(value, (bytes, bytearray, str, int, float, complex, np.generic)):
            self.charge(sys.getsizeof(value))
        elif isinstance(value, np.ndarray):
            self.charge(value.nbytes + 128)
        elif isinstance(value, (list, dict, set, frozenset, tuple)):
            self.charge(sys.getsizeof(value) + DEPTH_COST)
            self.depth[id(value)] = 1  # a new container (an earlier one's id is reused)
        self.stack.append(value)

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise _Refused("an opcode that needs a MARK without one")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def pop(self, n: int = 1) -> list[Any]:
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            raise _Refused("stack underflow")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def item(self, value: Any) -> Any:
        """``value`` as an element of a container: placeholders become what they
        built (or are refused when unfinished)."""
        if isinstance(value, (_DType, _Array)):
            if value.value is None:
                raise _Refused("an array used before its values were given")
            return value.value
        return value

    def depth_of(self, value: Any) -> int:
        if isinstance(value, (list, dict, set, frozenset, tuple, OrderedDict)):
            return self.depth.get(id(value), 1)
        return 0

    def contain(self, container: Any, items: list[Any]) -> None:
        """Record ``container``'s depth after ``items`` went into it, and charge for them."""
        self.charge(ITEM_COST.get(type(container), 64) * len(items))
        deepest = max((self.depth_of(v) for v in items), default=0)
        depth = max(self.depth.get(id(container), 1), deepest + 1)
        if depth > MAX_DEPTH:
            raise _Refused(f"data nested more than {MAX_DEPTH} deep")
        self.depth[id(container)] = depth

    def container(self, value: Any, items: list[Any]) -> Any:
        self.push(value)
        self.contain(value, items)
        return value

    def top_mutable(self, kinds: tuple[type, ...]) -> Any:
        base = self.marks[-1] if self.marks else 0
        if len(self.stack) <= base or not isinstance(self.stack[-1], kinds):
            raise _Refused("items added to something that is not a container of that kind")
        return self.stack[-1]


def _setitems(reader: _Reader, target, items: list[Any]) -> None:
    if len(items) % 2:
        raise _Refused("SETITEMS with an odd number of items")
    items = [reader.item(v) for v in items]
    try:
        for key, value in zip(items[::2], items[1::2]):
            target[key] = value
    except TypeError as exc:  # unhashable key
        raise _Refused(str(exc)) from None
    reader.contain(target, items[1::2] + items[::2])


def _run(data: bytes, budget: int) -> Any:
    reader = _Reader(budget)
    stream = io.BytesIO(data)
    for op, arg, pos in pickletools.genops(stream):
        name = op.name
        if name not in _OPCODES:
            raise _Refused(f"opcode {name} at byte {pos} is not plain data")
        stack = reader.stack
        if name == "PROTO":
            if not 0 <= arg <= 5:
                raise _Refused(f"pickle protocol {arg}")
        elif name == "FRAME":
            if arg > len(data) - stream.tell():
                raise _Refused(f"a frame of {arg} bytes at byte {pos}; the file ends before")
        elif name == "STOP":
            if len(stack) != 1 or reader.marks:
                raise _Refused("the pickle does not end with one value")
            return _finish(reader.item(stack[0]))
        elif name == "MARK":
            reader.marks.append(len(stack))
        elif name == "POP":
            if stack and reader.marks and reader.marks[-1] == len(stack):
                reader.marks.pop()  # POP of a MARK, as the pickle machine allows
            else:
                reader.pop()
        elif name == "POP_MARK":
            reader.pop_mark()
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in _SCALARS:
            value = arg
            if name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):  # Python 2's str
                try:
                    value = arg.decode("ascii")
                except UnicodeDecodeError:
                    raise _Refused(f"a Python 2 string at byte {pos} that is not ASCII") from None
            reader.push(value)
        elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET"):
            reader.container({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_SET": set()}[name], [])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "LIST", "FROZENSET"):
            items = (
                reader.pop_mark()
                if name in ("TUPLE", "LIST", "FROZENSET")
                else reader.pop(int(name[-1]))
            )
            items = [reader.item(v) if not isinstance(v, _Global) else v for v in items]
            if name == "LIST":
                reader.container(list(items), items)
            elif name == "FROZENSET":
                try:
                    reader.container(frozenset(items), items)
                except TypeError as exc:
                    raise _Refused(str(exc)) from None
            else:
                reader.container(tuple(items), items)
        elif name == "DICT":
            items = reader.pop_mark()
            _setitems(reader, reader.container({}, []), items)
        elif name in ("SETITEM", "SETITEMS"):
            items = reader.pop(2) if name == "SETITEM" else reader.pop_mark()
            _setitems(reader, reader.top_mutable((dict,)), items)
        elif name in ("APPEND", "APPENDS"):
            items = reader.pop(1) if name == "APPEND" else reader.pop_mark()
            target = reader.top_mutable((list,))
            items = [reader.item(v) for v in items]
            target.extend(items)
            reader.contain(target, items)
        elif name == "ADDITEMS":
            items = [reader.item(v) for v in reader.pop_mark()]
            target = reader.top_mutable((set,))
            try:
                target.update(items)
            except TypeError as exc:
                raise _Refused(str(exc)) from None
            reader.contain(target, items)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack or (reader.marks and reader.marks[-1] == len(stack)):
                raise _Refused(f"a memo write with nothing to store at byte {pos}")
            key = len(reader.memo) if name == "MEMOIZE" else arg
            reader.charge(MEMO_COST)
            reader.memo[key] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in reader.memo:
                raise _Refused(f"a memo read of index {arg} that was never written")
            value = reader.memo[arg]
            if isinstance(value, (list, dict, set)):
                raise _Refused("a list, dict or set referred to twice (shared or cyclic)")
            stack.append(value)
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":
                module, attr = reader.pop(2)
                if not isinstance(module, str) or not isinstance(attr, str):
                    raise _Refused("STACK_GLOBAL of something other than two names")
                arg = f"{module} {attr}"
            if arg not in _ALLOWED_GLOBALS:
                raise _Refused(f"{arg.replace(' ', '.')} is not plain data")
            stack.append(_Global(arg))
        elif name == "REDUCE":
            func, args = reader.pop(2)
            if not isinstance(func, _Global):
                raise _Refused("REDUCE of something that is not an allowed name")
            reader.push(_call(func, args))
            if isinstance(stack[-1], (set, frozenset, OrderedDict)):
                reader.contain(stack[-1], list(stack[-1]))
        elif name == "BUILD":
            (state,) = reader.pop(1)
            target = reader.pop(1)[0]
            if isinstance(target, _DType):
                _build_dtype(target, state)
            elif isinstance(target, _Array) and target.value is None:
                if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
                    raise _Refused("an array state other than NumPy's")
                _, shape, dtype, fortran, values = state
                if not isinstance(fortran, bool):
                    raise _Refused("an array state other than NumPy's")
                target.value = _array(values, dtype, shape, fortran)
                reader.charge(target.value.nbytes + 128)
            else:
                raise _Refused("BUILD of something other than a NumPy array or dtype")
            stack.append(target)
        else:  # pragma: no cover - every opcode in _OPCODES is handled above
            raise _Refused(f"opcode {name}")
    raise _Refused("the pickle has no STOP")


def _finish(value: Any) -> Any:
    """Refuse a result that still holds a name or an unfinished placeholder (walked
    iteratively; nesting is already bounded)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, (_Global, _DType, _Array)):
            raise _Refused("the data holds a reference to code or a bare dtype")
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
    return value


def loads_plain(data: bytes, where: str | os.PathLike = "the pickle") -> Any:
    """The plain data pickled in ``data``; ValueError (naming ``where``) for anything
    else, or for data that would take more than ten times ``len(data)`` (plus
    :data:`MEMORY_ALLOWANCE`) in memory.

    Examples
    --------
    >>> import pickle
    >>> loads_plain(pickle.dumps({"threshold": 1.5, "hidden_dims": [8, 4]}))
    {'threshold': 1.5, 'hidden_dims': [8, 4]}
    """
    budget = MEMORY_FACTOR * len(data) + MEMORY_ALLOWANCE
    try:
        return _run(bytes(data), budget)
    except _Refused as exc:
        reason = str(exc)
    except (ValueError, EOFError, IndexError, KeyError, TypeError, MemoryError) as exc:
        # genops' own errors: truncated data, lengths past the end, unknown opcodes,
        # text that does not decode, numbers with too many digits
        reason = f"not a readable pickle ({' '.join(str(exc).split())[:200]})"
    raise ValueError(
        f"{where}: not a pickle of plain data: {reason}. Only if you trust its source, "
        "pass allow_code_execution=True (--allow-code-execution)."
    )


def read_regular_file(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file (a FIFO, device or socket,
    directly or behind a link, is refused) of at most ``limit`` bytes."""
    path = Path(path)
    check_regular_file(path)
    # O_NONBLOCK: a FIFO put in the file's place since the check does not hang the open
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as fh:
        size = check_regular_file(path, os.fstat(fh.fileno()))
        if limit is not None and size > limit:
            raise ValueError(f"{path} is {size} bytes, over the limit of {limit}")
        return fh.read(size)  # what the file held when checked, never more


def load_plain_pickle(path: str | os.PathLike, limit: int | None = None) -> Any:
    """Read the plain data pickled in the regular file ``path`` (see
    :func:`loads_plain`), at most ``limit`` bytes of it."""
    return loads_plain(read_regular_file(path, limit), path)
