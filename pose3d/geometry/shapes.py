"""A one-line shape check for public boundaries: ``check_shape(x, "* J 3")``."""

from __future__ import annotations


def check_shape(x, spec: str, name: str = "input") -> None:
    """Raise ValueError naming ``name`` and the actual shape unless ``x.shape`` fits ``spec``.

    ``spec`` is space-separated: ``*`` = any leading dims (only first), an integer = that exact
    size, a letter = any size. Example: ``check_shape(x, "* J 3")``.
    """
    dims = spec.split()
    shape = tuple(x.shape)
    lead = dims[0] == "*"
    fixed = dims[1:] if lead else dims
    ok = len(shape) >= len(fixed) if lead else len(shape) == len(fixed)
    if ok:
        tail = shape[len(shape) - len(fixed):] if fixed else ()
        ok = all(not d.isdigit() or int(d) == s for d, s in zip(fixed, tail))
    if not ok:
        raise ValueError(f"{name}: expected shape ({', '.join(dims)}), got {shape}")
