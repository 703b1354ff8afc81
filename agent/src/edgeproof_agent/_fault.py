"""The one error a verb raises: a code for programs and a message for people, sent as the reply."""

from __future__ import annotations


class Fault(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
