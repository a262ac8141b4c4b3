"""Every loranet error, one tree; each class carries the wire's error code for it.

    LoranetError                      code            what it means
    ├── Invalid (also a ValueError)   invalid         malformed input: a message, a file, an argument, a setting
    │   ├── codec.DecodeError                         bytes that are not the subject's message
    │   ├── signing.SignatureInvalid                  a signature that does not verify
    │   ├── settings.SettingsError, natsauth.AuthError, confidential.ConfidentialError (NotARecipient, Tampered)
    │   └── model.*: ModelRefused, TokenizerError, TrainingRefused, InvalidSafetensors
    ├── Refused                       invalid         a well-formed message the service will not act on; the
    │   │                                             runtime dead-letters one a pull handler raises, with why
    │   ├── AdmissionRefused (scheduler)              the job is rejected at admission
    │   ├── JobRefused, AdapterRefused (inference)    the node fails the job
    │   ├── VerdictRefused (settlement)               the verdict is not settled
    │   └── ResultForged, NotOurs (verifier)
    ├── NotFound                      not_found       no record by that id or name
    ├── Conflict                      conflict        the request contradicts what is recorded
    ├── Forbidden                     forbidden       the caller may not ask this
    ├── HashMismatch                  hash_mismatch   content that is not what its id says (ContentHashMismatch,
    │                                                 BlobCorrupted)
    ├── Unavailable                   unavailable     a peer is down or slow: retry later (runtime.Transient,
    │                                                 ModelUnavailable)
    ├── ServiceError                  (its own code)  a request-reply error raised with an explicit code;
    │   └── RemoteError                               such an error as the caller receives it
    └── (internal)                    internal        JobFailed (client), ChainError, JournalError (settlement),
                                                      ApiError (gateway, OpenAI's shape), NotInCommittee (verifier:
                                                      handed back for another verifier)

`code_of(exc)` gives the wire code of any exception (internal for a non-loranet one), and
`STATUS` the status text request-reply puts in its error header: the one place codes map to
the wire (protocol.ErrorReply carries the code).
"""

from __future__ import annotations

# The wire's error codes (protocol.ErrorReply.code) and the status each travels with.
STATUS: dict[str, str] = {
    "invalid": "400",
    "forbidden": "403",
    "not_found": "404",
    "conflict": "409",
    "hash_mismatch": "422",
    "unavailable": "503",
    "internal": "500",
}
CODES: tuple[str, ...] = tuple(STATUS)


class LoranetError(Exception):
    """The root: `message` says what went wrong and what to do; `field` names the input at fault, if one is."""

    code: str = "internal"  # the wire's error code (STATUS)

    def __init__(self, message: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(LoranetError, ValueError):
    code: str = "invalid"


class Refused(LoranetError):
    """A well-formed message the service will not act on; `reason` says why."""

    code: str = "invalid"

    @property
    def reason(self) -> str:
        return self.message


class NotFound(LoranetError):
    code: str = "not_found"


class Conflict(LoranetError):
    code: str = "conflict"


class Forbidden(LoranetError):
    code: str = "forbidden"


class HashMismatch(LoranetError):
    code: str = "hash_mismatch"


class Unavailable(LoranetError):
    code: str = "unavailable"


class ServiceError(LoranetError):
    """A request-reply error with an explicit wire `code` (one of CODES)."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        if code not in STATUS:
            raise ValueError(f"unknown error code {code!r}; one of {', '.join(CODES)}")
        super().__init__(message, field)
        self.args = (f"{code}: {message}",)
        self.code = code


class RemoteError(ServiceError):
    """A request-reply endpoint answered with an error."""


def code_of(exc: BaseException) -> str:
    """The wire error code for `exc`: its class's, or internal for anything that is not a LoranetError."""
    return exc.code if isinstance(exc, LoranetError) else "internal"
