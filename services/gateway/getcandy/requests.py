"""Reading a GetCandy request: a JSON object body, bounded in size (the admission layer)
and depth, and the headers and query parameters GetCandy reads."""
from __future__ import annotations

from fastapi import Request

from services.gateway.getcandy.errors import error, invalid
from shared.validation import BadJson, ascii_int, parse_json_object, valid_email

DEFAULT_CURRENCY = "GBP"


async def body_of(request: Request) -> dict:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return parse_json_object(raw)
    except BadJson as bad:
        raise error(400, str(bad)) from None


def currency_of(request: Request, body: dict | None = None) -> str:
    currency = (request.headers.get("x-candy-currency") or request.query_params.get("currency")
                or (body or {}).get("currency") or DEFAULT_CURRENCY)
    return currency.upper()[:3] if isinstance(currency, str) else DEFAULT_CURRENCY


def includes_of(request: Request, body: dict | None = None) -> set[str]:
    raw = request.query_params.get("include") or request.query_params.get("includes") or (body or {}).get(
        "include") or ""
    return {part.strip() for part in str(raw)[:200].split(",") if part.strip()}


def quantity_of(body: dict, *, default: int | None) -> int:
    quantity = body.get("quantity", default)
    if isinstance(quantity, str) and ascii_int(quantity) is not None:
        quantity = ascii_int(quantity)
    if quantity is None:
        raise invalid({"quantity": ["The quantity field is required."]})
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise invalid({"quantity": ["The quantity must be a number."]})
    return quantity


ADDRESS_RULES = (("firstname", 20, True), ("lastname", 20, True), ("address", 40, True), ("city", 40, True),
                 ("address_two", 40, False), ("address_three", 40, False), ("zip", 8, False), ("phone", 40, False),
                 ("county", 40, False), ("state", 40, False), ("country", 60, False), ("company_name", 255, False),
                 ("email", 254, False))


def validate_address(body: dict) -> dict:
    """GetCandy's address rules (§3), every field bounded."""
    errors: dict[str, list[str]] = {}
    for name, limit, required in ADDRESS_RULES:
        value = body.get(name)
        if value in (None, ""):
            if required:
                errors[name] = [f"The {name} field is required."]
        elif not isinstance(value, (str, int)) or isinstance(value, bool) or len(str(value)) > limit:
            errors[name] = [f"The {name} may not be greater than {limit} characters."]
    if not body.get("county") and not body.get("state"):
        errors["county"] = ["The county field is required when state is not present."]
    if not body.get("country"):
        errors["country"] = ["The country field is required."]
    if body.get("email") and "email" not in errors and not valid_email(body["email"]):
        errors["email"] = ["The email must be a valid email address."]
    if errors:
        raise invalid(errors)
    return {"name": f"{body['firstname']} {body['lastname']}", "firstname": str(body["firstname"]),
            "lastname": str(body["lastname"]), "address1": str(body["address"]),
            "address2": body.get("address_two"), "city": str(body["city"]), "zipcode": str(body.get("zip") or ""),
            "phone": body.get("phone"), "country_name": str(body["country"]),
            "state_name": body.get("county") or body.get("state"), "email": body.get("email"),
            "company": body.get("company_name")}
