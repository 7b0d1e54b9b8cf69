"""The OpenAPI document of both dialects (`/openapi.json`): each route's request body
(bounded, from the dialects' request models) and its answers (the response models), so
storefronts, and the fuzzing in the suite, know every field and its limits."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_REQUEST_MODELS: set[type[BaseModel]] = set()


def request_body(model: type[BaseModel], *, form: bool = True) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is `model`, as JSON (or as a form, for Solidus)."""
    _REQUEST_MODELS.add(model)
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    content = {"application/json": {"schema": schema}}
    if form:
        content["application/x-www-form-urlencoded"] = {"schema": schema}
    return {"requestBody": {"required": False, "content": content}}


def install(app: FastAPI) -> None:
    """Request models are read by hand (Solidus merges query, form and JSON as Rails does),
    so FastAPI does not see them: their schemas join the generated document's components."""
    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version="1.0.0", routes=app.routes,
                                 description="Solidus's checkout API under /api and GetCandy's order lifecycle "
                                             "under /api/v1, over one event-sourced domain.")
            _, definitions = models_json_schema([(m, "validation") for m in sorted(_REQUEST_MODELS,
                                                                                     key=lambda m: m.__name__)],
                                                ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in definitions.get("$defs", {}).items():
                components.setdefault(name, definition)
            _document_guest_tokens(schema)
            _link_flows(schema)
            app.openapi_schema = schema
        return app.openapi_schema
    app.openapi = document


ORDER_TOKEN = {"name": "X-Spree-Order-Token", "in": "header", "required": False,
               "description": "The order's guest token (the order JSON's `token`)",
               "schema": {"type": "string", "maxLength": 64}}


def _document_guest_tokens(schema: dict) -> None:
    """Every Solidus route about one order takes its guest token in a header."""
    for path, operations in schema["paths"].items():
        if path.startswith("/api/") and not path.startswith("/api/v1/") and "{number}" in path:
            for operation in operations.values():
                operation.setdefault("parameters", []).append(ORDER_TOKEN)


# How a storefront goes on from what an answer holds (OpenAPI links): the fuzzing follows
# them, so its requests reach real orders and baskets rather than unknown ids.
SOLIDUS_ORDER_ROUTES = ("/api/orders/{number}", "/api/checkouts/{number}/line_items", "/api/checkouts/{number}/next",
                        "/api/checkouts/{number}", "/api/checkouts/{number}/complete",
                        "/api/orders/{number}/coupon_codes", "/api/orders/{number}/payments",
                        "/api/orders/{number}/empty", "/api/orders/{number}/payments/new")
CANDY_BASKET_ROUTES = ("/api/v1/baskets/{basket_id}", "/api/v1/baskets/{basket_id}/discounts")
CANDY_ORDER_ROUTES = ("/api/v1/orders/{order_hash}", "/api/v1/orders/{order_hash}/shipping/address",
                      "/api/v1/orders/{order_hash}/billing/address", "/api/v1/orders/{order_hash}/shipping/methods",
                      "/api/v1/orders/{order_hash}/shipping/cost", "/api/v1/orders/{order_hash}/contact")


def _links(schema: dict, routes: tuple[str, ...], parameters: dict[str, str]) -> dict[str, dict]:
    links = {}
    for path in routes:
        for method in schema["paths"].get(path, {}):
            reference = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + f"/{method}"
            names = {p["name"] for p in schema["paths"][path][method].get("parameters", [])}
            links[f"{method}{path}".replace("/", "_").replace("{", "").replace("}", "")] = {
                "operationRef": reference,
                "parameters": {k: v for k, v in parameters.items() if k.split(".")[-1] in names}}
    return links


def _link_flows(schema: dict) -> None:
    created = schema["paths"]["/api/orders"]["post"]["responses"]["201"]
    created["links"] = _links(schema, SOLIDUS_ORDER_ROUTES, {"number": "$response.body#/number",
                                                              "header.X-Spree-Order-Token": "$response.body#/token"})
    for path in ("/api/v1/basket-lines", "/api/v1/baskets"):
        schema["paths"][path]["post"]["responses"]["200"]["links"] = _links(
            schema, CANDY_BASKET_ROUTES, {"basket_id": "$response.body#/data/id"})
    schema["paths"]["/api/v1/orders"]["post"]["responses"]["200"]["links"] = _links(
        schema, CANDY_ORDER_ROUTES, {"order_hash": "$response.body#/data/id"})
