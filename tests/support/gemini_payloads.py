"""Gemini API responses as generativelanguage.googleapis.com shapes them, for the stand-in to play back: whole
`GenerateContentResponse` bodies and both stream forms (SSE with `alt=sse`, a streamed JSON array without it)."""

from __future__ import annotations

import json

from tests.support.standin import Reply


def gemini_usage(prompt: int, candidates: int, *, cached: int | None = None, thoughts: int | None = None,
                 tool_use_prompt: int | None = None) -> dict:
    usage: dict = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                   "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if cached is not None:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts is not None:
        usage["thoughtsTokenCount"] = thoughts
    if tool_use_prompt is not None:
        usage["toolUsePromptTokenCount"] = tool_use_prompt
    usage["totalTokenCount"] = prompt + candidates + (thoughts or 0) + (tool_use_prompt or 0)
    return usage


def gemini_response(response_id: str, model: str, parts: list[dict], usage: dict | None,
                    finish: str | None = "STOP") -> dict:
    candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict = {"candidates": [candidate], "modelVersion": model, "responseId": response_id}
    if usage is not None:
        body["usageMetadata"] = usage
    return body


def gemini_chunks(response_id: str, model: str, parts: list[dict], usage: dict) -> list[dict]:
    """How the API streams `parts`: thought and answer text in pieces, a function call whole; usage on every
    chunk (prompt figures first, the full figures on the last chunk, which carries the finishReason)."""
    pieces: list[dict] = []
    for part in parts:
        if "text" in part:
            words = part["text"].split(" ")
            for i in range(0, len(words), 3):
                text = " ".join(words[i:i + 3]) + (" " if i + 3 < len(words) else "")
                pieces.append({**part, "text": text})
        else:
            pieces.append(part)
    early = {k: v for k, v in usage.items() if k in ("promptTokenCount", "promptTokensDetails")}
    early["totalTokenCount"] = usage["promptTokenCount"]
    chunks = [gemini_response(response_id, model, [p], early, finish=None) for p in pieces]
    last = chunks.pop() if chunks else gemini_response(response_id, model, [], early, finish=None)
    chunks.append(gemini_response(response_id, model, last["candidates"][0]["content"]["parts"], usage))
    return chunks


def gemini_sse(chunks: list[dict], **kw: object) -> Reply:
    """`:streamGenerateContent?alt=sse`: one `data:` event per chunk, CRLF-framed as Google sends them."""
    return Reply(chunks=[f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks],
                 content_type="text/event-stream", **kw)  # type: ignore[arg-type]


def gemini_json_array(chunks: list[dict], **kw: object) -> Reply:
    """`:streamGenerateContent` without `alt=sse`: a JSON array, one element per network chunk."""
    body = [("[" if i == 0 else ",\r\n").encode() + json.dumps(c, indent=2).encode() + b"\n"
            for i, c in enumerate(chunks)]
    return Reply(chunks=[*body, b"]"], content_type="application/json; charset=UTF-8", **kw)  # type: ignore[arg-type]


def gemini_error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}
