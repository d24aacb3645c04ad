"""Docs that agree with the code: every error code the server can send is in docs/http-api.md's
table (found by reading the server's source), and the facts users copy from the docs hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "realtime_tts" / "server"
DOCS = ROOT / "docs"
CODE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# Calls whose first string arguments are an error code: ``StreamError("idle_timeout", ...)``,
# ``InputError(...)``, the sessions' ``_send_error(code, ...)`` and ``_fail(turn, code, ...)``.
CODE_CALLS = re.compile(r"(Error|^_send_error|^_fail|^_error)$")


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and CODE.match(n.value)]


def _call_name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def error_codes(source: str) -> set[str]:
    """The error codes a module can send.

    Found as: ``code=`` arguments (every code-like string in the expression, and in a dict the
    expression looks up by name), ``code`` parameter defaults, code-first calls (CODE_CALLS), and
    dict literals with ``"type": "error"`` and a literal ``"code"``.
    """
    tree = ast.parse(source)
    dicts = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)
             for t in n.targets if isinstance(t, ast.Name)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "code":
                    found.update(_strings(kw.value))
                    for name in (x.id for x in ast.walk(kw.value) if isinstance(x, ast.Name)):
                        if name in dicts:
                            found.update(_strings(dicts[name]))
            if CODE_CALLS.search(_call_name(node)):
                found.update(s for a in node.args[:2] for s in _strings(a) if "_" in s)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = node.args.args + node.args.kwonlyargs
            defaults = ([None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults)
                        + list(node.args.kw_defaults))
            found.update(d.value for p, d in zip(params, defaults)
                         if p.arg == "code" and isinstance(d, ast.Constant) and isinstance(d.value, str))
        elif isinstance(node, ast.Dict):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
            if "type" in keys and "code" in keys:
                kind, code = node.values[keys.index("type")], node.values[keys.index("code")]
                if isinstance(kind, ast.Constant) and kind.value == "error":
                    found.update(_strings(code))
    return found


def server_error_codes() -> dict[str, str]:
    codes: dict[str, str] = {}
    for path in sorted(SERVER.glob("*.py")):
        for code in error_codes(path.read_text(encoding="utf-8")):
            codes.setdefault(code, path.name)
    return codes


def documented_codes() -> set[str]:
    text = (DOCS / "http-api.md").read_text(encoding="utf-8")
    table = text[text.index("## Error codes"):]
    rows = [line for line in table.splitlines() if line.startswith("| `") and not line.startswith("| `code`")]
    return {code for row in rows for code in re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])}


def test_the_scanner_finds_codes_in_every_form():
    source = '''
def invalid(message, param=None, code="default_code"): ...
codes = {404: "from_dict"}
def handler():
    raise ApiError(400, "x", code="keyword_code")
    error_response(404, "y", code=codes.get(404, "dict_fallback"))
    raise StreamError("stream_code", "message")
    await self._fail(turn, "failed_code", "message")
    await self._send_error(e.code or "fallback_code", "message")
    send({"type": "error", "code": "event_code", "message": "m"})
    send({"type": "warning", "code": "not_an_error"})
    log.info("plain_text_is_no_code")
'''
    assert error_codes(source) == {"default_code", "from_dict", "keyword_code", "dict_fallback", "stream_code",
                                   "failed_code", "fallback_code", "event_code"}


def test_every_error_code_the_server_sends_is_in_the_table():
    codes = server_error_codes()
    # The scan must see the codes we know are there, or it proves nothing.
    for known in ("string_above_max_length", "invalid_api_key", "voice_not_found", "idle_timeout",
                  "invalid_frame", "not_found", "invalid_value", "missing_device_id"):
        assert known in codes, known
    missing = {code: where for code, where in codes.items() if code not in documented_codes()}
    assert missing == {}, f"add these to the table in docs/http-api.md: {missing}"


def test_agent_stream_doc_shows_both_ready_messages():
    text = (DOCS / "agent-stream.md").read_text(encoding="utf-8")
    example = text[text.index("```text"):text.index("```", text.index("```text") + 3)]
    lines = [ln.strip() for ln in example.splitlines()]
    readies = [i for i, ln in enumerate(lines) if ln.startswith('<- {"type":"ready"')]
    config = next(i for i, ln in enumerate(lines) if ln.startswith('-> {"type":"config"'))
    assert len(readies) == 2 and readies[0] < config < readies[1]


def test_http_api_doc_points_to_the_right_protocol_documents():
    text = (DOCS / "http-api.md").read_text(encoding="utf-8")
    stream_row = next(ln for ln in text.splitlines() if ln.startswith("| `WS /v1/tts/stream`"))
    assert "agent-stream.md" in stream_row and "architecture" not in stream_row
    for link in re.findall(r"\]\(([a-z\-]+\.md)(?:#[a-z\-]+)?\)", text):
        assert (DOCS / link).is_file(), link


def test_docs_claim_no_page_feature_the_page_lacks():
    page = "".join(p.read_text(encoding="utf-8") for p in (SERVER / "static").glob("*.js"))
    for doc in DOCS.glob("*.md"):
        if "WebCodecs" in doc.read_text(encoding="utf-8"):
            assert "AudioDecoder" in page, f"{doc.name} mentions WebCodecs, the page does not use it"


def test_every_setting_in_the_deployment_table_exists():
    from realtime_tts.config import Settings

    names = {f.name for f in Settings.fields()}
    text = (DOCS / "deployment.md").read_text(encoding="utf-8")
    table = [ln for ln in text.splitlines() if ln.startswith("| `")]
    for row in table:
        for name in re.findall(r"`([a-z_]+)`", row.split("|")[1]):
            assert name in names, name
