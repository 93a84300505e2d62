"""Request bodies: marshmallow schemas and how their errors become Taler errors, and
the integer parameters of paths and queries.

Every schema ignores members it does not know (newer clients send more) and treats an
explicit ``null`` like an absent member, as some SDKs send ``null`` for every optional
field.  Types are strict: ``"5"`` is not a number and ``1`` is not a boolean.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

from .errors import EC, TalerError, bad_parameter

#: Largest number clients may send in a JSON number (2^53 - 1).
MAX_SAFE_INTEGER = 2**53 - 1
INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]+$")
RESERVED_IDS = frozenset({"default"})
#: No blanks or control characters (the address becomes a helper's argument, where
#: a NUL cannot go), and no leading "-" (a helper could take it for an option).
_ADDRESS_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
EMAIL = re.compile(
    rf"^(?!-){_ADDRESS_CHAR}{{1,64}}@{_ADDRESS_CHAR}+\.{_ADDRESS_CHAR}+$"
)
#: Plain ASCII decimal integers; ``int()`` alone would take " 5", "+5", "1_0" and
#: digits of other scripts.
DECIMAL = re.compile(r"-?[0-9]{1,19}")
INT64_MAX = 2**63 - 1
PHONE = re.compile(r"^\+[1-9][0-9]{4,14}$")
ROUNDING_INTERVALS = (
    "NONE", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "QUARTER", "YEAR",
)  # fmt: skip
_REQUIRED = "Missing data for required field."


class StrictBool(fields.Boolean):
    """A JSON ``true`` or ``false``, nothing else."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class RelativeTime(fields.Field):  # type: ignore[type-arg]
    """``{"d_us": <microseconds> | "forever"}``; loads to an int or ``None``."""

    def __init__(self, *, allow_forever: bool = True, **kwargs: Any) -> None:
        self.allow_forever = allow_forever
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict) or set(value) != {"d_us"}:
            raise ValidationError('expected {"d_us": <integer> or "forever"}')
        d_us = value["d_us"]
        if d_us == "forever":
            if not self.allow_forever:
                raise ValidationError('"forever" is not allowed here')
            return None
        if isinstance(d_us, bool) or not isinstance(d_us, int):
            raise ValidationError('d_us must be an integer or "forever"')
        if not 0 <= d_us <= MAX_SAFE_INTEGER:
            raise ValidationError("d_us out of range")
        return d_us


def relative_time(d_us: int | None) -> dict[str, Any]:
    """The JSON form of a relative time."""
    return {"d_us": "forever" if d_us is None else d_us}


def timestamp(t_s: int | None) -> dict[str, Any]:
    """The JSON form of an absolute time (``None``: never)."""
    return {"t_s": "never" if t_s is None else t_s}


def _text(max_length: int, **kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(max=max_length), **kwargs)


class Base(Schema):
    """Shared behaviour: unknown members ignored, ``null`` means absent."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def drop_nulls(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


class AuthConfig(Base):
    """``InstanceAuthConfigurationMessage``."""

    method = fields.String(
        required=True, validate=validate.OneOf(["token", "external"])
    )
    password = fields.String(validate=validate.Length(min=1, max=4096))
    token = fields.String(validate=validate.Length(min=14, max=4096))

    @validates_schema
    def check_method(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["method"] != "token":
            return
        if "password" in data and "token" in data:
            raise ValidationError("give either password or token", "password")
        if "password" not in data and "token" not in data:
            raise ValidationError(_REQUIRED, "password")
        token = data.get("token")
        if token is not None and not token.startswith("secret-token:"):
            raise ValidationError("must start with secret-token:", "token")


class Location(Base):
    """A postal ``Location``."""

    country = _text(256)
    country_subdivision = _text(256)
    district = _text(256)
    town = _text(256)
    town_location = _text(256)
    post_code = _text(64)
    street = _text(256)
    building_number = _text(64)
    building_name = _text(256)
    address_lines = fields.List(_text(256), validate=validate.Length(max=7))


def _check_email(value: str) -> None:
    if value and not EMAIL.fullmatch(value):
        raise ValidationError("not an e-mail address")


def _check_phone(value: str) -> None:
    if value and not PHONE.fullmatch(value):
        raise ValidationError("expected an international number such as +41790000000")


def _check_logo(value: str) -> None:
    if value and not value.startswith("data:image/"):
        raise ValidationError("expected a data:image/... URL")


class InstanceReconfiguration(Base):
    """``InstanceReconfigurationMessage`` (PATCH): absent members keep their value.

    An empty string removes an optional text member (email, phone, website, logo).
    """

    name = fields.String(validate=validate.Length(min=1, max=1024))
    email = fields.String(validate=[validate.Length(max=254), _check_email])
    phone_number = fields.String(validate=_check_phone)
    website = _text(2048)
    logo = fields.String(validate=_check_logo)
    address = fields.Nested(Location)
    jurisdiction = fields.Nested(Location)
    use_stefan = StrictBool()
    default_pay_delay = RelativeTime(allow_forever=False)
    default_refund_delay = RelativeTime(allow_forever=False)
    default_wire_transfer_delay = RelativeTime(allow_forever=False)
    default_wire_transfer_rounding_interval = fields.String(
        validate=validate.OneOf(ROUNDING_INTERVALS)
    )


def _check_id(value: str) -> None:
    if len(value) > 255 or not INSTANCE_ID.fullmatch(value):
        raise ValidationError("instance ids are letters, digits and _ . @ -")
    if value.lower() in RESERVED_IDS:
        raise ValidationError("this instance id is reserved")


class InstanceConfiguration(InstanceReconfiguration):
    """``InstanceConfigurationMessage`` (creating an instance)."""

    id = fields.String(required=True, validate=_check_id)
    name = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    auth = fields.Nested(AuthConfig, required=True)


class LoginTokenRequest(Base):
    """``LoginTokenRequest``."""

    scope = fields.String(required=True, validate=validate.Length(max=64))
    duration = RelativeTime()
    description = _text(1024)
    refreshable = StrictBool()


class ChallengeSolve(Base):
    """``MerchantChallengeSolveRequest``."""

    tan = fields.String(required=True, validate=validate.Length(min=1, max=64))


def integer_parameter(name: str, raw: str, lowest: int, highest: int) -> int:
    """A path or query parameter that must be an ASCII decimal integer in
    ``[lowest, highest]``; 400 ``GENERIC_PARAMETER_MALFORMED`` otherwise."""
    value = int(raw, 10) if DECIMAL.fullmatch(raw) else None
    if value is None or not lowest <= value <= highest:
        raise bad_parameter(name, f"expected an integer from {lowest} to {highest}")
    return value


def load(
    schema: Schema,
    data: Any,
    code: EC = EC.GENERIC_PARAMETER_MALFORMED,
    member_codes: Mapping[str, EC] | None = None,
) -> dict[str, Any]:
    """Validate ``data``; a failure becomes a 400 naming the first bad member.

    A missing required member is ``GENERIC_PARAMETER_MISSING``; anything else gets
    ``code``.  ``member_codes`` gives members with a code of their own (such as
    ``auth`` when creating an instance).
    """
    try:
        result: dict[str, Any] = schema.load(data)
        return result
    except ValidationError as exc:
        path, message = _first_error(exc.messages)
    code = (member_codes or {}).get(path.split(".")[0], code)
    if message == _REQUIRED and code == EC.GENERIC_PARAMETER_MALFORMED:
        code = EC.GENERIC_PARAMETER_MISSING
    raise TalerError(400, code, detail=f"{path}: {message}", extra={"parameter": path})


def _first_error(messages: Any, prefix: str = "") -> tuple[str, str]:
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = str(key) if key != "_schema" else ""
            path = f"{prefix}.{name}" if prefix and name else prefix or name
            return _first_error(value, path)
    if isinstance(messages, list) and messages:
        return _first_error(messages[0], prefix)
    return prefix or "body", str(messages)
