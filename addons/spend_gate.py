"""Model policy and budgets on model calls, before they reach the upstream (docs/spend.md): registered before the
Interceptor's request hook (and before the circuit breaker, so a refused call never counts as a breaker outcome).

- Model policy (`[[model_policy]]`): a call whose model a rule refuses gets a 403 in its API's own error shape,
  naming the rule; recorded as a failed interception, `error_type` `model_denied`. The request is parsed here for
  its model only when a rule could apply to the provider and user.
- Budgets: a call by a user whose budget's hard limit is used up gets a 429 (`Retry-After`: seconds until the
  window resets) naming the budget and when it resets; recorded failed, `error_type` `budget_exceeded`, and
  counted in `cost_control_blocked_requests_total{group_id}`. Passthrough paths are not model calls and keep
  working; a call already running when the limit is crossed finishes. A Responses WebSocket (Codex) cannot be
  opened by a user over budget (429 on the upgrade); turns on a socket opened before are not refused one by one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable

from mitmproxy import http

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.intercept import INTERCEPTION
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.intercept.interception import Interception
from aigw_proxy.policy.provider_errors import provider_error_body
from aigw_proxy.policy.providers import Api, Provider
from aigw_proxy.recording.records import Initiator
from aigw_proxy.spend.enforcer import BudgetVerdict, Check, SpendControls
from aigw_proxy.spend.policy import Denial
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.spend")

REFUSED = "aigw.spend.refused"
BUDGET_EXCEEDED = "budget_exceeded"
MODEL_DENIED = "model_denied"


def _refuse(flow: http.HTTPFlow, ix: Interception, status: int, message: str, error_type: str,
            headers: dict[str, str], *, code: str, openai_type: str | None = None) -> None:
    ix.request_received(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"))
    ix.parse_request()  # never raises; records the start (prompt, model) before the refusal
    ix.error_type = error_type
    flow.metadata[REFUSED] = error_type
    flow.response = http.Response.make(
        status, provider_error_body(ix.api, status, message, code=code, openai_type=openai_type),
        {"Content-Type": "application/json", **headers},
    )


class SpendGate:
    def __init__(self, controls: SpendControls, metrics: Metrics | None = None) -> None:
        self.controls = controls
        self.m = metrics

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Sync on the hot path: only a first call whose user's role or budget figures are not known yet awaits.
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or flow.response is not None:
            if flow.response is None and flow.request.headers.get("upgrade", "").lower() == "websocket":
                return self._check_socket(flow)
            return None
        c = self.controls
        who = ix.initiator
        if c.policy and c.policy.may_refuse(ix.provider.type, ix.provider.name, who.username):
            role = c.role_of(who.user_id)
            if role is None and c.policy.uses_roles:
                return self._slow(flow, ix)
            if self._check_model(flow, ix, role):
                return None
        return self._check_budget(flow, ix)

    async def _slow(self, flow: http.HTTPFlow, ix: Interception) -> None:
        role = await self.controls.role_lookup(ix.initiator.user_id)
        if not self._check_model(flow, ix, role):
            pending = self._check_budget(flow, ix)
            if pending is not None:
                await pending

    def _check_model(self, flow: http.HTTPFlow, ix: Interception, role: str | None) -> bool:
        """Refuse the call if the model policy does; True if refused."""
        ix.request_received(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"))
        ix.parse_request()  # the model the request names
        model = ix.request.model if ix.request is not None else None
        denial = self.controls.check_model(provider_type=ix.provider.type, provider_name=ix.provider.name,
                                           model=model, username=ix.initiator.username, role=role)
        if denial is None:
            return False
        self._deny(flow, ix, denial)
        return True

    def _deny(self, flow: http.HTTPFlow, ix: Interception, denial: Denial) -> None:
        log.info("interception %s: model %s refused for %s by model_policy rule %r", ix.id, denial.model,
                 ix.initiator.username, denial.rule.name)
        if self.m is not None:
            self.m.model_denied.labels(ix.provider.name, denial.rule.name).inc()
        _refuse(flow, ix, 403, denial.message(), MODEL_DENIED, {}, code=MODEL_DENIED)

    def _check_budget(self, flow: http.HTTPFlow, ix: Interception) -> Awaitable[None] | None:
        verdict = self.controls.check_budget(ix.initiator)
        if inspect.isawaitable(verdict):
            return self._await_budget(flow, ix, verdict)
        if verdict is not None:
            self._over_budget(flow, ix, verdict)
        return None

    async def _await_budget(self, flow: http.HTTPFlow, ix: Interception, pending: Awaitable[Check]) -> None:
        verdict = await pending
        if verdict is not None and flow.response is None:
            self._over_budget(flow, ix, verdict)

    def _check_socket(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """A Responses socket (Codex) carries model calls the proxy cannot refuse one by one: a user over budget
        cannot open one (429 on the upgrade, in the OpenAI shape; not an interception: no call was made)."""
        provider: Provider | None = flow.metadata.get(PROVIDER)
        who: Initiator | None = flow.metadata.get(INITIATOR)
        if provider is None or who is None:
            return None
        if provider.api_for("POST", flow.request.path.split("?", 1)[0]) is not Api.OPENAI_RESPONSES:
            return None
        verdict = self.controls.check_budget(who)
        if inspect.isawaitable(verdict):
            return self._await_socket(flow, verdict)
        if verdict is not None:
            self._refuse_socket(flow, verdict)
        return None

    async def _await_socket(self, flow: http.HTTPFlow, pending: Awaitable[Check]) -> None:
        verdict = await pending
        if verdict is not None and flow.response is None:
            self._refuse_socket(flow, verdict)

    def _refuse_socket(self, flow: http.HTTPFlow, verdict: BudgetVerdict) -> None:
        retry = verdict.retry_after(self.controls.now())
        flow.metadata[REFUSED] = BUDGET_EXCEEDED
        flow.response = http.Response.make(
            429, provider_error_body(Api.OPENAI_RESPONSES, 429, verdict.message, code=BUDGET_EXCEEDED,
                                     openai_type="insufficient_quota"),
            {"Content-Type": "application/json", "Retry-After": str(retry)})

    def _over_budget(self, flow: http.HTTPFlow, ix: Interception, verdict: BudgetVerdict) -> None:
        log.info("interception %s: refused, %s", ix.id, verdict.message)
        retry = verdict.retry_after(self.controls.now())
        _refuse(flow, ix, 429, verdict.message, BUDGET_EXCEEDED, {"Retry-After": str(retry)},
                code=BUDGET_EXCEEDED, openai_type="insufficient_quota")
