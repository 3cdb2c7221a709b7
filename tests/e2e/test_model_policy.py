"""`[[model_policy]]` through the running proxy with the real SDKs (docs/spend.md#model-policy): a refused model
gets the SDK's own permission error (403 in the provider's shape: Anthropic, OpenAI, Google GenAI) naming the rule,
never reaches the upstream and is recorded as a failed interception (`model_denied`); roles, per-user exceptions
and allow lists."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors, types

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.gemini_payloads import gemini_response, gemini_usage
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
name = "no-pro-gemini"
provider = "gemini"
deny = ["gemini-*-pro*"]

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


def test_a_gemini_refusal_in_googles_shape(pdaemon: Daemon, upstream: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", pdaemon.proxy_url("mia"))
    monkeypatch.setenv("SSL_CERT_FILE", str(pdaemon.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    client = genai.Client(api_key="AIzaSy" + "G" * 33,
                          http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1)))
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.5-pro", contents="the pro model please")
    assert err.value.code == 403 and err.value.status == "PERMISSION_DENIED"
    assert err.value.message == ("model_denied: model 'gemini-2.5-pro' is not allowed: model_policy rule "
                                 "'no-pro-gemini' denies gemini-*-pro* for everyone")
    upstream.queue(Reply.json(gemini_response("resp-flash", "gemini-2.5-flash", [{"text": "ok"}],
                                              gemini_usage(4, 1))))
    reply = client.models.generate_content(model="gemini-2.5-flash", contents="flash is fine")
    assert reply.text == "ok"
    assert upstream_models_gemini(upstream) == ["gemini-2.5-flash"]
    refused = pdaemon.one(prompt="the pro model please")
    assert (refused["status"], refused["error_type"], refused["model"]) == ("failed", "model_denied",
                                                                            "gemini-2.5-pro")


def upstream_models_gemini(standin: StandIn) -> list[str]:
    return [r.path.split("/models/", 1)[1].split(":", 1)[0] for r in standin.requests if "/models/" in r.path]
