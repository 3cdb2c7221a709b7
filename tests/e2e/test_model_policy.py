"""`[[model_policy]]` through the running proxy with the real SDKs (docs/spend.md#model-policy): a refused model
gets the SDK's PermissionDeniedError (403, the provider's shape) naming the rule, never reaches the upstream and
is recorded as a failed interception (`model_denied`); roles, per-user exceptions and allow lists."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import scrape
from tests.support.payloads import anthropic_message, anthropic_usage, chat_completion, chat_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import anthropic_client, openai_client

OPUS = "claude-opus-4-1-20250805"
SONNET = "claude-sonnet-4-5-20250929"
POLICY = """
[[model_policy]]
name = "no-opus-for-members"
provider = "anthropic"
role = "member"
deny = ["claude-opus-*"]

[[model_policy]]
name = "opus-for-the-lead"
user = "lead"
allow = ["claude-opus-*"]

[[model_policy]]
name = "small-openai-models"
provider = "openai"
allow = ["gpt-4.1-mini*", "gpt-5-mini*"]
"""


@pytest.fixture(scope="module")
def pdaemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("model-policy"),
                     provider_config(standin_server, upstream_pki.ca_file, extra=POLICY))
    d.tokens["ada"] = d.cli("users", "add", "ada", "--role", "admin").stdout.strip()
    yield d
    stop_daemon(d)


def ask(d: Daemon, user: str, model: str, prompt: str) -> anthropic.types.Message:
    return anthropic_client(d, user).messages.create(model=model, max_tokens=16,
                                                     messages=[{"role": "user", "content": prompt}])


def message(msg_id: str, model: str) -> Reply:
    return Reply.json(anthropic_message(msg_id, model, [{"type": "text", "text": "ok"}], anthropic_usage(10, 2)))


def upstream_models(standin: StandIn) -> list[str]:
    return [json.loads(r.body)["model"] for r in standin.requests if r.method == "POST"]


def test_a_member_may_not_use_the_expensive_model(pdaemon: Daemon, upstream: StandIn) -> None:
    d = pdaemon
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        ask(d, "mia", OPUS, "mia wants opus")
    expected = (f"model_denied: model {OPUS!r} is not allowed: model_policy rule 'no-opus-for-members' denies "
                "claude-opus-* for role member")
    assert err.value.status_code == 403
    assert err.value.body == {"type": "error", "error": {"type": "permission_error", "message": expected}}
    assert upstream_models(upstream) == []

    refused = d.one(prompt="mia wants opus")
    assert (refused["status"], refused["upstream_status"], refused["error_type"], refused["model"]) == (
        "failed", 403, "model_denied", OPUS)
    assert expected in refused["error_message"]

    upstream.queue(message("msg_mia_sonnet", SONNET), message("msg_lead_opus", OPUS), message("msg_ada_opus", OPUS))
    assert ask(d, "mia", SONNET, "mia takes sonnet").id == "msg_mia_sonnet"
    assert ask(d, "lead", OPUS, "the lead's exception").id == "msg_lead_opus"  # a user rule beats the role's
    assert ask(d, "ada", OPUS, "an admin is no member").id == "msg_ada_opus"
    assert upstream_models(upstream) == [SONNET, OPUS, OPUS]
    s = scrape(d.admin_port)
    assert s.value("aigw_proxy_model_policy_denied_total", provider="anthropic", rule="no-opus-for-members") == 1


def test_an_allow_list_refuses_every_other_model_in_the_openai_shape(pdaemon: Daemon, upstream: StandIn) -> None:
    d = pdaemon
    client = openai_client(d, "ada")  # an allow list for everyone holds admins too
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "big model please"}])
    assert err.value.status_code == 403
    assert err.value.body == {
        "message": "model_denied: model 'gpt-4.1' is not allowed: model_policy rule 'small-openai-models' allows "
                   "only gpt-4.1-mini*, gpt-5-mini* for everyone",
        "type": "invalid_request_error", "code": "model_denied"}
    upstream.queue(Reply.json(chat_completion("chatcmpl-mini", "gpt-4.1-mini", {"role": "assistant", "content": "ok"},
                                              chat_usage(5, 1))))
    reply = client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "small"}])
    assert reply.id == "chatcmpl-mini"
    assert upstream_models(upstream) == ["gpt-4.1-mini"]
    refused = d.one(prompt="big model please")
    assert (refused["status"], refused["error_type"], refused["provider"]) == ("failed", "model_denied", "openai")
