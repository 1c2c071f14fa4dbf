"""Text every front door refuses before storing or querying: what PostgreSQL text cannot hold."""


def text_unstorable(value: str) -> str | None:
    """What makes a string impossible to store as text (PostgreSQL takes no NUL; JSON can carry
    lone surrogates that are not characters), or None."""
    if "\x00" in value:
        return "must not contain the NUL character."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (a lone surrogate is not)."
    return None
