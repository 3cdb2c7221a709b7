"""People (admins only): users, their roles and tokens; every change written to the audit log."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aigw_proxy.admin.console.auth import PATH, Viewer
from aigw_proxy.admin.console.core import Console
from aigw_proxy.storage import StorageError, UserExistsError
from aigw_proxy.storage.audit import set_role, token_owner
from aigw_proxy.storage.schema.tables import ROLES

PEOPLE_PAGE = 100


async def people_page(console: Console, request: Request, viewer: Viewer) -> Response:
    shown: dict[str, Any] | None = None
    error = None
    status = 200
    if request.method == "POST":
        try:
            shown = await _action(console, request, viewer, request.state.form)
        except (StorageError, ValueError) as exc:
            error, status = str(exc), 400
        if shown is None and error is None:
            return RedirectResponse(PATH + "/people", 303)
    people = await console.users.list_users()
    find = (request.query_params.get("find") or "").strip()
    if find:
        people = [p for p in people if find.lower() in p["username"].lower()]
    try:
        page_no = max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        page_no = 1
    pages = max(1, -(-len(people) // PEOPLE_PAGE))
    page_no = min(page_no, pages)
    return console.render(request, viewer, "people.html", {
        "people": people[(page_no - 1) * PEOPLE_PAGE:page_no * PEOPLE_PAGE], "total": len(people),
        "page_no": page_no, "pages": pages, "find": find, "roles": ROLES, "shown": shown, "error": error,
        "proxy": console.proxy_for(request) or "PROXY_HOST:8888"}, status)


async def _action(console: Console, request: Request, viewer: Viewer, form: FormData) -> dict[str, Any] | None:
    """One People form's change; a token to show once, or None (redirect back)."""
    users = console.users
    action = str(form.get("action") or "")
    if action == "add":
        username = str(form.get("username") or "").strip()
        role = str(form.get("role") or "member")
        try:
            user, token = await users.create_user(username, role)
        except UserExistsError as exc:
            raise ValueError(str(exc)) from None
        hint = user["tokens"][0]["hint"] if user.get("tokens") else ""
        await console.audit(request, viewer, "user.create", target_user_id=user["id"], target=username,
                            detail={"role": role, "token_hint": hint})
        return {"username": username, "token": token, "new_user": True}
    if action == "issue":
        found = await users.get_user(str(form.get("user_id") or ""))
        if found is None:
            raise ValueError("no such user")
        name = str(form.get("name") or "").strip() or None
        token_id, token = await users.create_token(found["id"], name)
        await console.audit(request, viewer, "token.issue", target_user_id=found["id"], target=found["username"],
                            detail={"token_id": token_id, "name": name})
        return {"username": found["username"], "token": token, "new_user": False}
    if action == "revoke":
        token_id = str(form.get("token_id") or "")
        owner = await token_owner(console.db, token_id)
        if owner is None:
            raise ValueError("no such token")
        await users.revoke_token(token_id)
        await console.audit(request, viewer, "token.revoke", target_user_id=owner[0], target=owner[1],
                            detail={"token_id": token_id, "hint": owner[2]})
        return None
    if action == "role":
        role = str(form.get("role") or "")
        found = await users.get_user(str(form.get("user_id") or ""))
        if found is None:
            raise ValueError("no such user")
        if found["id"] == viewer.user_id and role != "admin":
            raise ValueError("you cannot take away your own admin role (ask another admin)")
        old = await set_role(console.db, found["id"], role)
        await console.audit(request, viewer, "user.role", target_user_id=found["id"], target=found["username"],
                            detail={"from": old, "to": role})
        return None
    raise ValueError(f"unknown action {action!r}")
