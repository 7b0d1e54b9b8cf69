"""The OpenAPI document of both dialects (`/openapi.json`): each route's request body
(bounded, from the dialects' request models) and its answers (the response models), so
storefronts, and the fuzzing in the suite, know every field and its limits. `/docs` (Swagger
UI) and `/redoc` render it from assets the gateway serves itself, so they work offline."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
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
            _document_security(schema)
            _tag_and_name_operations(schema)
            _link_flows(schema)
            app.openapi_schema = schema
        return app.openapi_schema
    app.openapi = document
    _serve_docs(app)


DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from the packaged assets (the app is made with docs_url=None and
    redoc_url=None: FastAPI's own pages load them from a CDN, blank without a network)."""
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title}: Swagger UI",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title}: ReDoc",
                              redoc_js_url="/docs/assets/redoc.standalone.js",
                              redoc_favicon_url="/docs/assets/favicon.png", with_google_fonts=False)


SECURITY_SCHEMES = {
    "adminKey": {"type": "http", "scheme": "bearer",
                 "description": "An admin API key (`Authorization: Bearer <key>`): any order, and the admin "
                                "operations. Never in the query string."},
    "orderToken": {"type": "apiKey", "in": "header", "name": "X-Spree-Order-Token",
                   "description": "A Solidus order's guest token (the `token` of the order created by "
                                  "`POST /api/orders`): that order only, until it is placed."},
}

TAGS = [
    {"name": "Solidus: orders", "description": "Solidus's order API (`/api/orders`)."},
    {"name": "Solidus: checkout", "description": "Solidus's checkout steps and line items (`/api/checkouts`)."},
    {"name": "Solidus: shipments", "description": "Shipping rates and methods of an order's shipments."},
    {"name": "Solidus: catalog", "description": "Variants, products and countries."},
    {"name": "GetCandy: baskets", "description": "GetCandy's baskets, their lines and discounts "
                                                 "(ids are capabilities)."},
    {"name": "GetCandy: orders", "description": "GetCandy's order lifecycle, from basket to `process`."},
    {"name": "GetCandy: catalog", "description": "Products, variants, payment types and providers."},
    {"name": "Operations", "description": "Probes and metrics for operators."},
]


def _tag(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        area = parts[2] if len(parts) > 2 else ""
        return ("GetCandy: baskets" if area.startswith("basket") else
                "GetCandy: orders" if area == "orders" else "GetCandy: catalog")
    if parts[:1] == ["api"]:
        area = parts[1] if len(parts) > 1 else ""
        if area == "checkouts":
            return "Solidus: checkout"
        if area == "orders":
            return "Solidus: orders"
        return "Solidus: shipments" if area == "shipments" else "Solidus: catalog"
    return "Operations"


def _tag_and_name_operations(schema: dict) -> None:
    """Each operation under its dialect's tag, with a summary no other operation has."""
    schema["tags"] = TAGS
    operations = [(path, method, operation) for path, methods in schema["paths"].items()
                  for method, operation in methods.items()]
    for path, _, operation in operations:
        tag = _tag(path)
        operation["tags"] = [tag]
        operation["summary"] = f"{tag.split(':')[0]}: {operation.get('summary', '').strip()}"
        if path == "/metrics":
            operation["responses"] = {"200": {"description": "Prometheus's text exposition format", "content": {
                "text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}}}}
    seen = Counter(operation["summary"] for _, _, operation in operations)
    for path, method, operation in operations:
        if seen[operation["summary"]] > 1:
            operation["summary"] += f" ({method.upper()} {path})"


def _document_security(schema: dict) -> None:
    """Solidus routes about one order take its guest token or an admin key; the others take
    an admin key when they have one (GetCandy's ids are themselves the capability)."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema["paths"].items():
        if path.startswith("/api/") and not path.startswith("/api/v1/"):
            for operation in operations.values():
                operation["security"] = ([{"orderToken": []}, {"adminKey": []}] if "{number}" in path
                                         else [{}, {"adminKey": []}])


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
