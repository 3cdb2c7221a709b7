"""The OpenAPI 3.0 document served at `/api/v2/openapi.json`, written as data next to the handlers it describes.

tests/api/test_schemathesis.py checks the live server against it, so a handler that drifts from it fails CI.
"""

from __future__ import annotations

from typing import Any

from aigw_proxy.admin.api.search import KEYS
from aigw_proxy.storage import SPEND_GROUPINGS

_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": "string", "format": "date-time", "nullable": True}
_NSTR = {"type": "string", "nullable": True}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_BOOL = {"type": "boolean"}
_NINT = {"type": "integer", "nullable": True}
_NNUM = {"type": "number", "nullable": True}


def _obj(props: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "required": [k for k in props if k not in optional], "properties": props}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_TOKENS = {k: _INT for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")}
_TOOL = {
    "id": _STR, "interception_id": _STR, "provider_response_id": _STR, "provider_tool_call_id": _NSTR,
    "tool": _STR, "input": _STR, "injected": {"type": "boolean"}, "server_url": _NSTR, "invocation_error": _NSTR,
    "metadata": _ANY_OBJECT, "created_at": _TIME,
}

# A token-usage row's stored price: micro-dollars (1 USD = 1,000,000), all null when the model has no price.
_TOKEN_PRICE = {
    **{k: _NINT for k in ("input_price_micros", "output_price_micros", "cache_read_price_micros",
                          "cache_write_price_micros", "other_price_micros", "cost_micros")},
    "price_source": _NSTR, "price_version": _NSTR, "price_ref": _NSTR, "api_equivalent": _BOOL,
    "effective_group_id": _NSTR, "priced": _BOOL,
}
_COST = {
    "description": "Summed stored cost. cost_*: API calls (billed per token); api_equivalent_*: subscription calls "
                   "(OAuth) at the API list price, reported apart. Unpriced rows count in unpriced_records and "
                   "make priced false; a figure is null when every row it sums is unpriced (never 0).",
    **_obj({"priced": _BOOL, "unpriced_records": _INT, "cost_micros": _NINT, "cost_usd": _NNUM,
            "api_equivalent_micros": _NINT, "api_equivalent_usd": _NNUM}),
}
_SPEND_FIGURES = {
    "records": _INT, **_TOKENS, "cost": _ref("Cost"),
    "price_components": {**_obj({k: _INT for k in ("input_micros", "output_micros", "cache_read_micros",
                                                   "cache_write_micros", "other_micros")}), "nullable": True},
}

SCHEMAS: dict[str, Any] = {
    "Cost": _COST,
    "Error": _obj({"message": _STR, "detail": _STR}, optional=("detail",)),
    "User": _obj({"id": _STR, "username": _NSTR}),
    "TokenUsage": _obj({"id": _STR, "interception_id": _STR, "provider_response_id": _STR, **_TOKENS,
                        "metadata": _ANY_OBJECT, "created_at": _TIME, **_TOKEN_PRICE}),
    "UserPrompt": _obj({"id": _STR, "interception_id": _STR, "provider_response_id": _STR, "prompt": _STR,
                        "metadata": _ANY_OBJECT, "created_at": _TIME}),
    "ToolUsage": _obj({**_TOOL, "provider_item_id": _NSTR}),
    "ModelThought": _obj({"interception_id": _STR, "content": _STR, "metadata": _ANY_OBJECT, "created_at": _TIME}),
    "Interception": _obj({
        "id": _STR, "initiator": _ref("User"), "api_key_id": _NSTR, "provider": _STR, "provider_name": _STR,
        "model": _STR, "client": _STR, "client_session_id": _NSTR, "session_id": _STR, "thread_parent_id": _NSTR,
        "thread_root_id": _NSTR, "status": _NSTR,
        "upstream_status": {"type": "integer", "nullable": True}, "error_type": _NSTR, "error_message": _NSTR,
        "credential_kind": _STR, "credential_hint": _STR, "started_at": _TIME, "ended_at": _TIME,
        "metadata": _ANY_OBJECT, "token_usages": _array(_ref("TokenUsage")),
        "user_prompts": _array(_ref("UserPrompt")), "tool_usages": _array(_ref("ToolUsage")),
        "model_thoughts": _array(_ref("ModelThought")), "cost": _ref("Cost"),
    }),
    "InterceptionList": _obj({"count": _INT, "results": _array(_ref("Interception"))}),
    "Session": _obj({
        "id": _STR, "initiator": _ref("User"), "providers": _array(_STR), "models": _array(_STR),
        "client": _NSTR, "metadata": _ANY_OBJECT, "started_at": _TIME, "ended_at": _TIME, "threads": _INT,
        "interceptions": _INT, "token_usage_summary": _obj(_TOKENS), "cost": _ref("Cost"), "last_prompt": _NSTR,
        "last_active_at": _TIME,
    }),
    "SessionList": _obj({"count": _INT, "sessions": _array(_ref("Session"))}),
    "Usage": _obj({**_TOKENS, "metadata": {"type": "object", "additionalProperties": _INT}}),
    "AgenticAction": _obj({
        "interception_id": _STR, "model": _STR, "token_usage": _ref("Usage"), "cost": _ref("Cost"),
        "thinking": _array(_obj({"text": _STR, "source": _NSTR})),
        "tool_calls": _array(_obj(_TOOL)),
    }),
    "Thread": _obj({
        "id": _STR, "prompt": _NSTR, "model": _STR, "provider": _STR, "provider_name": _STR, "client": _STR,
        "credential_kind": _STR, "credential_hint": _STR, "status": _STR, "started_at": _TIME, "ended_at": _TIME,
        "interceptions": _INT, "token_usage": _ref("Usage"), "cost": _ref("Cost"),
        "agentic_actions": _array(_ref("AgenticAction")),
    }),
    "SessionThreads": _obj({
        "id": _STR, "initiator": _ref("User"), "providers": _array(_STR), "models": _array(_STR),
        "client": _NSTR, "metadata": _ANY_OBJECT, "page_started_at": _NTIME, "page_ended_at": _NTIME,
        "started_at": _TIME, "ended_at": _TIME, "threads_total": _INT, "token_usage_summary": _ref("Usage"),
        "cost": _ref("Cost"), "threads": _array(_ref("Thread")),
    }),
    "SpendFigures": _obj(_SPEND_FIGURES),
    "SpendGroup": _obj({"key": _STR, "initiator": _ref("User"), "provider": _STR, "provider_name": _STR,
                        **_SPEND_FIGURES}, optional=("initiator", "provider", "provider_name")),
    "SpendReport": _obj({
        "by": {"type": "string", "enum": list(SPEND_GROUPINGS)}, "started_after": _NTIME, "started_before": _NTIME,
        "total": _ref("SpendFigures"), "groups": _array(_ref("SpendGroup")),
    }),
    "StringList": _array(_STR),
    "Budget": _obj({
        "scope": _STR, "daily": {"type": "number", "nullable": True}, "monthly": {"type": "number", "nullable": True},
        "daily_micros": {"type": "integer", "nullable": True}, "monthly_micros": {"type": "integer", "nullable": True},
        "soft_fraction": {"type": "number"}, "source": {"type": "string", "enum": ["config", "database"]},
    }),
    "BudgetList": _array(_ref("Budget")),
    "BudgetInput": {"type": "object", "required": ["scope"], "additionalProperties": False, "properties": {
        "scope": {"type": "string", "description": "default, user:NAME or group:NAME"},
        "daily": {"type": "number", "minimum": 0, "description": "USD per UTC day"},
        "monthly": {"type": "number", "minimum": 0, "description": "USD per UTC calendar month"},
        "soft_fraction": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
    }},
    "Group": _obj({"id": _STR, "name": _STR, "created_at": _TIME,
                   "members": _array(_obj({"id": _STR, "username": _STR}))}),
    "GroupList": _array(_ref("Group")),
    "Capture": {
        "description": "One interception's raw capture (--capture-bodies): bodies as relayed (decoded), credential "
                       "headers removed, secrets redacted, each cut at --capture-max-bytes (size: as relayed; "
                       "stored_bytes: kept; truncated: it was cut).",
        **_obj({
            "interception_id": _STR, "created_at": _TIME, "transport": _STR, "encoding": _STR,
            "redactions": {"type": "object", "additionalProperties": _INT},
            "request": _obj({"method": _STR, "route": _STR, "headers": {"type": "object",
                                                                      "additionalProperties": _STR},
                             "body": _STR, "size": _INT, "stored_bytes": _INT, "compressed_bytes": _INT,
                             "truncated": _BOOL}),
            "response": _obj({"status": _NINT, "headers": {"type": "object", "additionalProperties": _STR},
                              "streamed": _BOOL, "body": _STR, "size": _INT, "stored_bytes": _INT,
                              "compressed_bytes": _INT, "truncated": _BOOL}),
        }),
    },
}


def _param(name: str, schema: dict[str, Any], description: str, where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema, "description": description}


_Q = _param("q", _STR, "Search terms `key:value` separated by spaces (quotes keep spaces); keys: "
            + ", ".join(KEYS) + ". A bare word means initiator; `initiator:me` is the caller.")
_LIMIT = _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size.")
_OFFSET = _param("offset", {"type": "integer", "minimum": 0, "default": 0}, "Rows to skip (not with a cursor).")


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    descriptions = {400: "Invalid parameters", 401: "Missing or invalid token", 403: "Admins only",
                    404: "Not found"}
    for code in codes:
        out[str(code)] = {"description": descriptions[code], **error}
    return out


def _operations(prefix: str, tag: str) -> dict[str, Any]:
    ops: dict[str, Any] = {
        f"{prefix}/interceptions": {"get": {
            "summary": "Ended interceptions, newest first", "operationId": f"{tag}ListInterceptions",
            "parameters": [_Q, _LIMIT, _OFFSET, _param("after_id", _STR, "Cursor: the last id of the previous page.")],
            "responses": _responses(_ref("InterceptionList"), 400, 401),
        }},
        f"{prefix}/interceptions/{{interception_id}}/capture": {"get": {
            "summary": "An interception's raw capture (members: their own)", "operationId": f"{tag}GetCapture",
            "parameters": [_param("interception_id", _STR, "Interception id.", "path")],
            "responses": _responses(_ref("Capture"), 401, 404),
        }},
        f"{prefix}/sessions": {"get": {
            "summary": "Sessions, most recently active first", "operationId": f"{tag}ListSessions",
            "parameters": [_Q, _LIMIT, _OFFSET,
                           _param("after_session_id", _STR, "Cursor: the last session id of the previous page.")],
            "responses": _responses(_ref("SessionList"), 400, 401),
        }},
        f"{prefix}/sessions/{{session_id}}": {"get": {
            "summary": "One session with a page of its threads", "operationId": f"{tag}GetSession",
            "parameters": [
                _param("session_id", _STR, "Client session id or interception id.", "path"),
                _param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Threads per page."),
                _param("after_id", _STR, "Threads after this thread id."),
                _param("before_id", _STR, "Threads before this thread id."),
            ],
            "responses": _responses(_ref("SessionThreads"), 400, 401, 404),
        }},
        f"{prefix}/spend": {"get": {
            "summary": "Token usage and cost, in total and grouped (members: their own)",
            "operationId": f"{tag}Spend",
            "parameters": [_Q, _param("by", {"type": "string", "enum": list(SPEND_GROUPINGS), "default": "user"},
                                      "Group by user, model, client, provider (name) or UTC day.")],
            "responses": _responses(_ref("SpendReport"), 400, 401),
        }},
        f"{prefix}/proxy/ca-cert.pem": {"get": {
            "summary": "The CA certificate clients must trust (public)", "operationId": f"{tag}CaCert",
            "security": [],
            "responses": {"200": {"description": "PEM", "content": {"application/x-pem-file": {
                "schema": {"type": "string"}}}}, "404": {"description": "No CA",
                                                          "content": {"application/json": {"schema": _ref("Error")}}}},
        }},
    }
    ops[f"{prefix}/budgets"] = {
        "get": {"summary": "Budgets in force (admins: all; members: those that apply to them)",
                "operationId": f"{tag}ListBudgets", "responses": _responses(_ref("BudgetList"), 401)},
        "post": {"summary": "Set a budget (admins)", "operationId": f"{tag}SetBudget",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BudgetInput")}}},
                 "responses": _responses(_ref("Budget"), 400, 401, 403, 404)},
    }
    no_content = _responses(_ref("Error"), 400, 401, 403, 404)
    no_content["204"] = {"description": "Deleted"}
    del no_content["200"]
    ops[f"{prefix}/budgets/{{scope}}"] = {"delete": {
        "summary": "Delete a database budget (admins)", "operationId": f"{tag}DeleteBudget",
        "parameters": [_param("scope", _STR, "default, user:NAME or group:NAME", "path")],
        "responses": no_content,
    }}
    ops[f"{prefix}/groups"] = {"get": {"summary": "Groups and their members (admins)",
                                       "operationId": f"{tag}ListGroups",
                                       "responses": _responses(_ref("GroupList"), 401, 403)}}
    for kind in ("models", "clients"):
        ops[f"{prefix}/{kind}"] = {"get": {
            "summary": f"Distinct {kind} (prefix filter `q`)", "operationId": f"{tag}List{kind.title()}",
            "parameters": [_param("q", _STR, f"A prefix, or `{kind[:-1]}:<prefix>`."), _LIMIT, _OFFSET],
            "responses": _responses(_ref("StringList"), 400, 401),
        }}
    return ops


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "aigw-proxy API", "version": "2",
                 "description": "Interceptions and sessions recorded by aigw-proxy (Coder AI Gateway contract)."},
        "paths": {**_operations("/api/v2/aibridge", "aibridge"), **_operations("/api/v2/ai-gateway", "aiGateway")},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "CoderSessionToken": {"type": "apiKey", "in": "header", "name": "Coder-Session-Token"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"CoderSessionToken": []}, {"Bearer": []}],
    }
