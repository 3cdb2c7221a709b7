"""The official google-genai SDK (and Gemini CLI's headers) through the running proxy against the stand-in:
generateContent, both stream forms, function-call threads, errors, and a `?key=` that is never stored."""

from __future__ import annotations

import json

import httpx2
import pytest
from google import genai
from google.genai import errors, types

from tests.support.daemon import Daemon
from tests.support.gemini_payloads import (
    gemini_chunks,
    gemini_error,
    gemini_json_array,
    gemini_response,
    gemini_sse,
    gemini_usage,
)
from tests.support.standin import Reply, StandIn

MODEL = "gemini-2.5-flash"
API_KEY = "AIzaSy" + "G" * 33  # the shape of a Gemini API key
GEMINI_CLI_HEADERS = {
    "User-Agent": "GeminiCLI/0.18.4/gemini-2.5-flash (linux; x64; terminal)",
    "x-gemini-api-privileged-user-id": "3f0b6a4e-8d0c-4f5e-9b7a-2c1d0e9f8a7b",
}
LIST_TOOL = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="list_directory", description="List a directory",
    parameters_json_schema={"type": "object", "properties": {"path": {"type": "string"}}})])


def client(headers: dict[str, str] | None = None, api_version: str | None = None) -> genai.Client:
    """As a user configures it: HTTPS_PROXY and SSL_CERT_FILE come from the environment (the proxy_env fixture);
    retries off so a failure is one request."""
    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(
        headers=headers, api_version=api_version, retry_options=types.HttpRetryOptions(attempts=1)))


def gemini_cli() -> genai.Client:
    """Gemini CLI's requests: its User-Agent, and the v1beta API (the JS SDK's default)."""
    return client(GEMINI_CLI_HEADERS, api_version="v1beta")


def gemini_cli_contents(prompt: str) -> list[types.Content]:
    """Gemini CLI's turn for `prompt @README.md`: the typed text first, then the referenced file's contents."""
    return [types.Content(role="user", parts=[
        types.Part(text=prompt),
        types.Part(text="\n--- Content from referenced files ---"),
        types.Part(text="\nContent from @README.md:\n"),
        types.Part(text="# aigw-proxy\nA forward proxy."),
        types.Part(text="\n--- End of content ---"),
    ])]


def test_gemini_cli_stream_with_thoughts_function_call_and_cached_tokens(proxy_env: Daemon,
                                                                         upstream: StandIn) -> None:
    usage = gemini_usage(5012, 18, cached=4096, thoughts=124)
    upstream.queue(gemini_sse(gemini_chunks("resp-G1", MODEL, [
        {"text": "**Listing the directory**\n\nThe user wants to see the files, so I will list them.",
         "thought": True},
        {"text": "Let me look."},
        {"functionCall": {"name": "list_directory", "args": {"path": "/work"}}, "thoughtSignature": "CiQBVKhc"},
    ], usage)))
    c = gemini_cli()  # held: a genai.Client closes its connections when collected
    stream = c.models.generate_content_stream(
        model=MODEL, contents=gemini_cli_contents("what is in this repo? @README.md"),
        config=types.GenerateContentConfig(tools=[LIST_TOOL],
                                           thinking_config=types.ThinkingConfig(include_thoughts=True)))
    chunks = list(stream)
    assert chunks[-1].function_calls[0].name == "list_directory"  # type: ignore[index]
    ix = proxy_env.one(response_id="resp-G1")
    assert ix["initiator"]["username"] == "alice"
    assert (ix["provider"], ix["provider_name"], ix["model"]) == ("gemini", "gemini", MODEL)
    assert ix["client"] == "Gemini CLI"
    assert ix["client_session_id"] is None and ix["session_id"] == ix["id"]  # Gemini CLI sends no session id
    assert ix["status"] == "completed"
    assert ix["metadata"]["route"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert ix["metadata"]["streaming"] is True
    # google-genai for Python puts its label before a caller's User-Agent (Gemini CLI's JS SDK sends it as is).
    assert ix["metadata"]["request_user_agent"].endswith(GEMINI_CLI_HEADERS["User-Agent"])
    assert [p["prompt"] for p in ix["user_prompts"]] == ["what is in this repo? @README.md"]
    [tu] = ix["token_usages"]
    assert tu["provider_response_id"] == "resp-G1"
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (916, 18 + 124, 4096)
    assert tu["cache_write_input_tokens"] == 0
    assert tu["metadata"] == {"output_reasoning": 124, "total_tokens": 5154}
    [tool] = ix["tool_usages"]
    assert (tool["tool"], tool["provider_tool_call_id"], tool["input"]) == (
        "list_directory", "list_directory", '{"path":"/work"}')
    assert [(t["content"], t["metadata"]["source"]) for t in ix["model_thoughts"]] == [
        ("**Listing the directory**\n\nThe user wants to see the files, so I will list them.", "reasoning_summary")]
    assert ix["credential_kind"] == "api_key" and ix["credential_hint"] == "AIza...GGGG"
    assert API_KEY not in json.dumps(ix)
    seen = upstream.requests[-1]
    assert seen.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert seen.headers["host"] == "generativelanguage.googleapis.com"
    assert seen.headers["x-goog-api-key"] == API_KEY and "proxy-authorization" not in seen.headers


def test_sdk_generate_content_then_function_response_joins_the_thread(proxy_env: Daemon,
                                                                       upstream: StandIn) -> None:
    call = {"functionCall": {"id": "fc-7Qm2", "name": "list_directory", "args": {"path": "."}}}
    upstream.queue(
        Reply.json(gemini_response("resp-T1", MODEL, [call], gemini_usage(300, 12))),
        Reply.json(gemini_response("resp-T2", MODEL, [{"text": "Two files."}], gemini_usage(340, 4))),
    )
    c = client()
    config = types.GenerateContentConfig(tools=[LIST_TOOL])
    first = c.models.generate_content(model=MODEL, contents="list the files", config=config)
    assert first.function_calls and first.function_calls[0].id == "fc-7Qm2"
    c.models.generate_content(model=MODEL, config=config, contents=[
        types.Content(role="user", parts=[types.Part(text="list the files")]),
        first.candidates[0].content,  # type: ignore[index]
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            id="fc-7Qm2", name="list_directory", response={"output": "a.txt b.txt"}))]),
    ])
    parent, child = proxy_env.one(response_id="resp-T1"), proxy_env.one(response_id="resp-T2")
    assert parent["client"] == "Unknown"  # the bare SDK is not a coding agent
    assert parent["metadata"]["request_user_agent"].startswith("google-genai-sdk/")
    assert parent["metadata"]["streaming"] is False
    # google-genai 3.x calls v1 unless told otherwise (older versions: v1beta); the route is the path it used.
    assert parent["metadata"]["route"] in (f"/{v}/models/{MODEL}:generateContent" for v in ("v1", "v1beta"))
    assert parent["metadata"]["route"] == upstream.requests[0].path
    assert [p["prompt"] for p in parent["user_prompts"]] == ["list the files"]
    assert [(t["tool"], t["provider_tool_call_id"], t["input"]) for t in parent["tool_usages"]] == [
        ("list_directory", "fc-7Qm2", '{"path":"."}')]
    assert child["user_prompts"] == []
    assert (child["thread_parent_id"], child["thread_root_id"]) == (parent["id"], parent["id"])
    [tu] = child["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"], tu["metadata"]) == (
        340, 4, 0, {"total_tokens": 344})
    assert "x-goog-api-client" in upstream.requests[-1].headers


def test_function_call_without_id_threads_by_name(proxy_env: Daemon, upstream: StandIn) -> None:
    """Gemini 2.x sends calls without ids; Gemini CLI then invents `<name>-<ms>-<hex>` for the response."""
    call = {"functionCall": {"name": "read_file", "args": {"absolute_path": "/work/README.md"}}}
    upstream.queue(
        gemini_sse(gemini_chunks("resp-N1", MODEL, [call], gemini_usage(200, 9))),
        gemini_sse(gemini_chunks("resp-N2", MODEL, [{"text": "Done."}], gemini_usage(260, 2))),
    )
    c = gemini_cli()
    list(c.models.generate_content_stream(model=MODEL, contents="read the readme"))
    list(c.models.generate_content_stream(model=MODEL, contents=[
        types.Content(role="user", parts=[types.Part(text="read the readme")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
            name="read_file", args={"absolute_path": "/work/README.md"}))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            id="read_file-1763800000123-5f3a9c2e1b7d", name="read_file", response={"output": "# aigw"}))]),
    ]))
    parent, child = proxy_env.one(response_id="resp-N1"), proxy_env.one(response_id="resp-N2")
    assert [(t["tool"], t["provider_tool_call_id"]) for t in parent["tool_usages"]] == [("read_file", "read_file")]
    assert child["thread_parent_id"] == parent["id"]


def test_json_array_stream_with_key_in_query_is_parsed_and_the_key_never_stored(proxy_env: Daemon,
                                                                                  upstream: StandIn) -> None:
    """Without `alt=sse` the API streams a JSON array; `?key=` is how curl users pass the key."""
    secret = "AIzaSy" + "Q" * 33
    usage = gemini_usage(77, 21, thoughts=40)
    reply = gemini_json_array(gemini_chunks("resp-A1", MODEL, [
        {"text": "Thinking about haiku.", "thought": True},
        {"text": "Leaves fall, proxies log / every token in its place"},
    ], usage), delay=0.01)
    upstream.queue(reply)
    body = {"contents": [{"role": "user", "parts": [{"text": "write a haiku"}]}]}
    url = f"https://generativelanguage.googleapis.com/v1beta/models/{MODEL}:streamGenerateContent?key={secret}"
    with httpx2.Client(proxy=proxy_env.proxy_url(), verify=proxy_env.client_ssl_context()) as h, h.stream(
            "POST", url, json=body) as r:
        relayed = b"".join(r.iter_bytes())
    assert relayed == b"".join(reply.chunks)
    ix = proxy_env.one(response_id="resp-A1")
    assert ix["status"] == "completed" and ix["metadata"]["streaming"] is True
    assert ix["metadata"]["route"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert [p["prompt"] for p in ix["user_prompts"]] == ["write a haiku"]
    [tu] = ix["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["metadata"]["output_reasoning"]) == (77, 21 + 40, 40)
    assert [t["content"] for t in ix["model_thoughts"]] == ["Thinking about haiku."]
    assert ix["credential_kind"] == "api_key" and ix["credential_hint"] == "AIza...QQQQ"
    assert ix["client"] == "Unknown"
    # Not in the record, the database files (WAL included) or the log.
    assert secret not in json.dumps(ix)
    for f in proxy_env.data_dir.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert secret not in proxy_env.log()


def test_google_oauth_bearer_is_an_oauth_credential(proxy_env: Daemon, upstream: StandIn) -> None:
    token = "ya29.a0AfB_byC" + "x" * 60
    upstream.queue(Reply.json(gemini_response("resp-O1", "gemini-2.5-pro", [{"text": "hi"}], gemini_usage(3, 1))))
    with httpx2.Client(proxy=proxy_env.proxy_url(), verify=proxy_env.client_ssl_context()) as h:
        r = h.post("https://generativelanguage.googleapis.com/v1/models/gemini-2.5-pro:generateContent",
                   json={"contents": [{"parts": [{"text": "hello"}]}]}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    ix = proxy_env.one(response_id="resp-O1")
    assert (ix["model"], ix["metadata"]["route"]) == ("gemini-2.5-pro", "/v1/models/gemini-2.5-pro:generateContent")
    assert [p["prompt"] for p in ix["user_prompts"]] == ["hello"]  # a Content without a role is the user's
    assert ix["credential_kind"] == "oauth" and token not in json.dumps(ix)


def test_api_error_is_relayed_and_recorded_failed(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json(gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
                              status=400))
    with pytest.raises(errors.ClientError) as err:
        c = client()
        c.models.generate_content(model=MODEL, contents="bad key?")
    assert err.value.code == 400
    ix = proxy_env.one(prompt="bad key?")
    assert ix["status"] == "failed" and ix["upstream_status"] == 400
    assert ix["error_message"] == "INVALID_ARGUMENT: API key not valid. Please pass a valid API key."
    assert ix["token_usages"] == []


def test_stream_cut_mid_way_is_a_failed_partial_record(proxy_env: Daemon, upstream: StandIn) -> None:
    reply = gemini_sse(gemini_chunks("resp-C1", MODEL, [
        {"text": "one two three four five six seven eight nine"}], gemini_usage(50, 9)))
    reply.cut_after = 2
    upstream.queue(reply)
    with pytest.raises(Exception):  # noqa: B017 (the SDK surfaces a broken stream as a transport error)
        c = client()
        list(c.models.generate_content_stream(model=MODEL, contents="count to nine"))
    ix = proxy_env.one(prompt="count to nine")
    assert ix["status"] == "failed" and "incomplete" in ix["error_message"]  # the connection broke
    assert ix["token_usages"][0]["output_tokens"] == 0  # only the prompt figures had arrived
    assert ix["token_usages"][0]["input_tokens"] == 50


def test_count_tokens_passes_through_unrecorded(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json({"totalTokens": 7}))
    before = len(proxy_env.interceptions())
    c = client()
    assert c.models.count_tokens(model=MODEL, contents="count me").total_tokens == 7
    assert upstream.requests[-1].path.endswith(f"/models/{MODEL}:countTokens")
    assert len(proxy_env.interceptions(timeout=0.5)) == before


def test_gzipped_stream_is_relayed_unchanged_and_parsed(proxy_env: Daemon, upstream: StandIn) -> None:
    reply = gemini_sse(gemini_chunks("resp-Z1", MODEL, [{"text": "compressed hello from gemini"}],
                                     gemini_usage(8, 5)), encoding="gzip")
    upstream.queue(reply)
    c = client()
    text = "".join(ch.text or "" for ch in c.models.generate_content_stream(model=MODEL, contents="gzip please"))
    assert text == "compressed hello from gemini"
    ix = proxy_env.one(response_id="resp-Z1")
    assert ix["status"] == "completed" and [p["prompt"] for p in ix["user_prompts"]] == ["gzip please"]
    assert (ix["token_usages"][0]["input_tokens"], ix["token_usages"][0]["output_tokens"]) == (8, 5)


def test_rate_limited_stream_request_is_recorded_failed(proxy_env: Daemon, upstream: StandIn) -> None:
    """An error on a streaming route comes as a JSON body, not a stream: it is still read."""
    upstream.queue(Reply.json([gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric: requests")],
                              status=429))
    c = client(GEMINI_CLI_HEADERS)
    with pytest.raises(errors.ClientError) as err:
        list(c.models.generate_content_stream(model=MODEL, contents="too fast?"))
    assert err.value.code == 429
    ix = proxy_env.one(prompt="too fast?")
    assert (ix["status"], ix["upstream_status"]) == ("failed", 429)
    assert ix["error_message"] == "RESOURCE_EXHAUSTED: Quota exceeded for metric: requests"
    assert ix["error_type"] == "rate_limited"
