"""The one error type the converter raises for bad input."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit SAM; the message says what and why."""


def name_list(names, limit: int = 25) -> str:
    """'a, b, c' capped at `limit` names, with the count of the rest."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")
