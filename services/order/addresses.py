"""Solidus's address rules for an order's bill and ship addresses: `validate_address` turns the
submitted fields (with the country they name, looked up by services/order/commands.py) into an
`Address`, or refuses them field by field (`InvalidFields`). Pure: no I/O."""
from __future__ import annotations

from dataclasses import dataclass

from shared.aggregate import DomainError
from shared.contracts.order import Address


class InvalidFields(DomainError):
    """Submitted fields are invalid (Solidus's invalid_resource)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid_resource", "Invalid resource.", errors=errors)
        self.errors = errors


@dataclass(frozen=True)
class Country:
    id: int
    iso: str
    states_required: bool
    state_ids: frozenset[int]
    state_names: dict[str, int]  # lower-case name or abbreviation → state id


ADDRESS_REQUIRED = ("name", "address1", "city", "zipcode", "phone")
ADDRESS_TEXT = ("name", "address1", "address2", "city", "zipcode", "phone", "alternative_phone", "company",
                "state_name", "firstname", "lastname", "email")
MAX_TEXT = 255  # Solidus's varchar(255) columns


def validate_address(prefix: str, fields: dict, country: Country | None, address_id: int, *,
                     require_phone: bool = True) -> Address:
    """Solidus's address rules: the error keys are `<prefix>.<field>`."""
    errors: dict[str, list[str]] = {}
    for name in ADDRESS_TEXT:
        value = fields.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            if value is not None:
                errors[f"{prefix}.{name}"] = ["is invalid"]
        elif len(str(value)) > MAX_TEXT:
            errors[f"{prefix}.{name}"] = [f"is too long (maximum is {MAX_TEXT} characters)"]
    for name in ADDRESS_REQUIRED if require_phone else ADDRESS_REQUIRED[:-1]:
        value = fields.get(name)
        if f"{prefix}.{name}" not in errors and (not isinstance(value, (str, int)) or not str(value).strip()):
            errors[f"{prefix}.{name}"] = ["can't be blank"]
    if country is None:
        errors[f"{prefix}.country"] = ["can't be blank"]
    state_id = fields.get("state_id")
    if country is not None:
        if state_id is None and isinstance(fields.get("state_name"), str) and f"{prefix}.state_name" not in errors:
            state_id = country.state_names.get(fields["state_name"].strip().lower())
        if state_id is not None and state_id not in country.state_ids:
            errors[f"{prefix}.state"] = ["is invalid"]
        elif country.states_required and state_id is None:
            errors[f"{prefix}.state"] = ["can't be blank"]
    if errors or country is None:  # a missing country has its error
        raise InvalidFields(errors)

    def text(name: str) -> str | None:
        return None if fields.get(name) in (None, "") else str(fields[name]).strip()

    def required(name: str) -> str:  # checked above: present and not blank
        return str(fields[name]).strip()

    return Address(id=address_id, name=required("name"), address1=required("address1"), address2=text("address2"),
                   city=required("city"), zipcode=required("zipcode"), phone=text("phone"),
                   alternative_phone=text("alternative_phone"), company=text("company"),
                   country_id=country.id, country_iso=country.iso, state_id=state_id,
                   state_name=None if state_id else text("state_name"), firstname=text("firstname"),
                   lastname=text("lastname"), email=text("email"))
