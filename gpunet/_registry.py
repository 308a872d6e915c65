"""Name registries shared by activations, losses, metrics, optimizers and initializers."""
from __future__ import annotations


def lookup(kind: str, identifier, table: dict, allow_callable: bool = True):
    """Resolve ``identifier`` (a name, an object or a callable) through ``table``.

    Raises a ValueError that lists every valid name when the name is unknown, and a
    TypeError for things that are neither names nor callables.
    """
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in table:
            return table[key]
        raise ValueError(f"unknown {kind} {identifier!r}; valid names: {', '.join(sorted(table))}")
    if allow_callable and callable(identifier):
        return identifier
    raise TypeError(f"{kind} must be a name (one of {', '.join(sorted(table))}) or a callable, "
                    f"got {type(identifier).__name__}")
