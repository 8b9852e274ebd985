"""The store's error type."""

from driftwarden.errors import UserError


class StoreError(UserError):
    """The store cannot be opened or used; the message says why and what to do."""
