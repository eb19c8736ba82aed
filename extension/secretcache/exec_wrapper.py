"""The exec wrapper: resolve ``{{resolve:...}}`` references in the environment, exec the runtime.

Lambda runs ``$AWS_LAMBDA_EXEC_WRAPPER <runtime command line>`` instead of the runtime itself;
the layer's ``/opt/secretcache/exec-wrapper`` runs ``python -m secretcache --exec-wrapper
<runtime command line>``, which lands here. The references of every variable are fetched from the
running extension over HTTP on 127.0.0.1, as any client would (the extension binds its socket
before it registers, and Lambda starts the runtime only after every extension registered), all at
once: one batch request per service and flag, single reads only where a batch cannot say it
(a version), each on its own socket in its own thread. The values go only into the environment
given to ``execve``, so only the runtime's ``/proc/<pid>/environ`` ever holds them. Messages name
variables and references, never a value.

Standard library only and no asyncio: it runs on the critical path of every cold start.
"""

from __future__ import annotations

import os
import sys
import time

from .envrefs import (
    KmsReference,
    ParameterReference,
    Reference,
    SecretReference,
    Template,
    has_reference,
    parse_environment,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

ERROR_TYPE = "Secretcache.EnvReferenceFailed"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
BATCH_LIMIT = 100  # names or ids per batch request, the extension's limit
ON_ERROR_VARIABLE = "SECRETCACHE_ENV_ON_ERROR"
TIMEOUT_VARIABLE = "SECRETCACHE_ENV_TIMEOUT_MILLIS"
DEFAULT_TIMEOUT_MS = 8000
CONNECT_RETRY_SECONDS = 2.0


class ResolveFailure(Exception):
    """Why one reference could not be resolved; the text never holds a value."""


class SettingsError(ValueError):
    """An invalid SECRETCACHE_ENV_* option."""


class Settings:
    """The wrapper's options, read from the environment once (a plain class: no dataclasses
    import on the cold-start path)."""

    __slots__ = ("leave_unresolved", "log_level", "port", "runtime_api", "timeout", "token")

    def __init__(
        self,
        *,
        port: int,
        token: str | None,
        leave_unresolved: bool,
        timeout: float,
        runtime_api: str | None,
        log_level: str,
    ) -> None:
        self.port = port
        self.token = token
        self.leave_unresolved = leave_unresolved
        self.timeout = timeout
        self.runtime_api = runtime_api
        self.log_level = log_level


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build the options; raise :class:`SettingsError` naming the variable on a bad value."""
    raw_port = (env.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT") or "").strip() or "2773"
    if not (raw_port.isascii() and raw_port.isdigit() and 1 <= int(raw_port) <= 65535):
        raise SettingsError("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT must be a port (1-65535)")
    on_error = (env.get(ON_ERROR_VARIABLE) or "fail").strip().lower()
    if on_error not in ("fail", "leave"):
        raise SettingsError(f"{ON_ERROR_VARIABLE} must be fail or leave")
    raw_timeout = (env.get(TIMEOUT_VARIABLE) or "").strip() or str(DEFAULT_TIMEOUT_MS)
    if not (raw_timeout.isascii() and raw_timeout.isdigit() and 1 <= int(raw_timeout) <= 600000):
        raise SettingsError(f"{TIMEOUT_VARIABLE} must be milliseconds (1-600000)")
    level = (env.get("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL") or "info").strip().lower()
    return Settings(
        port=int(raw_port),
        token=env.get("AWS_SESSION_TOKEN") or None,
        leave_unresolved=on_error == "leave",
        timeout=int(raw_timeout) / 1000.0,
        runtime_api=(env.get("AWS_LAMBDA_RUNTIME_API") or "").strip() or None,
        log_level=level if level in ("debug", "info", "warn", "error", "none") else "info",
    )


# --------------------------------------------------------------------------- HTTP on loopback


def http_call(
    address: tuple[str, int],
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own socket; the response read by its Content-Length.

    No ``Connection: close``: the extension's fast path serves plain GETs only, and the wrapper
    must not wait for aiohttp to load when it need not.
    """
    import _socket  # socket.py imports enum, selectors, ...: milliseconds this does not need

    give_up = min(deadline, time.monotonic() + CONNECT_RETRY_SECONDS)
    while True:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect(address)
            break
        except ConnectionRefusedError:
            sock.close()
            # Lambda starts the runtime after the extension bound its socket; elsewhere (RIE,
            # a by-hand run) the extension may still be starting: wait a little, not forever.
            if time.monotonic() + 0.02 > give_up:
                raise
            time.sleep(0.02)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        data = b""
        while b"\r\n\r\n" not in data:
            data += _recv(sock, deadline)
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            while True:
                chunk = _recv(sock, deadline, allow_eof=True)
                if not chunk:
                    return status, rest
                rest += chunk
        while len(rest) < length:
            rest += _recv(sock, deadline)
        return status, rest[:length]
    finally:
        sock.close()


def _recv(sock: object, deadline: float, allow_eof: bool = False) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(remaining)  # type: ignore[attr-defined]
    chunk: bytes = sock.recv(65536)  # type: ignore[attr-defined]
    if not chunk and not allow_eof:
        raise ConnectionError("the connection closed mid-response")
    return chunk


# --------------------------------------------------------------------------- resolving


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(value: str) -> str:
    """Percent-encode a query value (urllib.parse would cost an import of its own)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def _describe_error(status: int, body: bytes) -> str:
    """A reason from the extension's status and errorType (its message is not repeated)."""
    import json

    error_type = ""
    try:
        decoded = json.loads(body)
        if isinstance(decoded, dict):
            error_type = str(decoded.get("errorType") or "")
    except ValueError:
        pass
    what = {
        400: "bad request",
        401: "the extension refused the token",
        403: "access denied",
        404: "not found",
        429: "throttled",
        502: "AWS answered with an error",
        503: "the extension is not serving",
        504: "AWS did not answer in time",
    }.get(status, f"HTTP {status}")
    return f"{what} ({error_type})" if error_type else what


class _Call:
    """One request to the extension and what to do with its answer."""

    __slots__ = ("body", "method", "on_answer", "on_failure", "target")

    def __init__(
        self,
        method: str,
        target: str,
        body: bytes | None,
        on_answer: Callable[[int, bytes], list[_Call]],
        on_failure: Callable[[str], None],
    ) -> None:
        self.method = method
        self.target = target
        self.body = body
        self.on_answer = on_answer
        self.on_failure = on_failure


class Resolver:
    """Turns references into values (or reasons), in as few concurrent requests as it can."""

    def __init__(self, fetch: Callable[[str, str, bytes | None], tuple[int, bytes]]) -> None:
        self._fetch = fetch
        self.requests = 0
        self._secrets: dict[tuple[str, str | None, str | None], object] = {}
        self._parameters: dict[tuple[str, int | None, bool], object] = {}
        self._kms: dict[tuple[str, tuple[tuple[str, str], ...]], object] = {}

    def resolve(
        self, references: Iterable[Reference], environ: Mapping[str, str]
    ) -> dict[Reference, str | ResolveFailure]:
        """The value of each reference, or a :class:`ResolveFailure` saying why not."""
        refs = sorted(set(references), key=lambda r: r.text)
        calls = self._plan(refs, environ)
        while calls:
            calls = self._run(calls)
        return {ref: self._value(ref) for ref in refs}

    # -- planning: one batch per service and flag, singles where a batch cannot say it

    def _plan(self, refs: list[Reference], environ: Mapping[str, str]) -> list[_Call]:
        calls: list[_Call] = []
        batch_secrets: list[str] = []
        batch_parameters: dict[bool, list[str]] = {False: [], True: []}
        for ref in refs:
            if isinstance(ref, SecretReference):
                key = (ref.secret_id, ref.version_stage, ref.version_id)
                if key in self._secrets:
                    continue
                self._secrets[key] = ResolveFailure("the extension did not answer for it")
                if ref.version_stage or ref.version_id:
                    calls.append(self._secret_single(*key))
                else:
                    batch_secrets.append(ref.secret_id)
            elif isinstance(ref, ParameterReference):
                pkey = (ref.name, ref.version, ref.secure)
                if pkey in self._parameters:
                    continue
                self._parameters[pkey] = ResolveFailure("the extension did not answer for it")
                if ref.version is not None:
                    calls.append(self._parameter_single(*pkey))
                else:
                    batch_parameters[ref.secure].append(ref.name)
            else:
                kkey = (ref.variable, ref.context)
                if kkey in self._kms:
                    continue
                call = self._kms_call(ref, environ)
                if call is not None:
                    calls.append(call)
        for i in range(0, len(batch_secrets), BATCH_LIMIT):
            calls.append(self._secret_batch(batch_secrets[i : i + BATCH_LIMIT]))
        for decrypt, names in batch_parameters.items():
            for i in range(0, len(names), BATCH_LIMIT):
                calls.append(self._parameter_batch(names[i : i + BATCH_LIMIT], decrypt))
        return calls

    def _secret_single(self, secret_id: str, stage: str | None, version_id: str | None) -> _Call:
        import json

        key = (secret_id, stage, version_id)
        target = f"/secretsmanager/get?secretId={_quote(secret_id)}"
        if stage:
            target += f"&versionStage={_quote(stage)}"
        if version_id:
            target += f"&versionId={_quote(version_id)}"

        def on_answer(status: int, body: bytes) -> list[_Call]:
            if status != 200:
                self._secrets[key] = ResolveFailure(_describe_error(status, body))
            else:
                self._secrets[key] = json.loads(body)
            return []

        def on_failure(why: str) -> None:
            self._secrets[key] = ResolveFailure(why)

        return _Call("GET", target, None, on_answer, on_failure)

    def _secret_batch(self, ids: list[str]) -> _Call:
        import json

        target = "/secretsmanager/batchget?" + "&".join(f"secretId={_quote(i)}" for i in ids)

        def on_answer(status: int, body: bytes) -> list[_Call]:
            if status == 403:
                # The role may allow GetSecretValue but not BatchGetSecretValue: ask one by one,
                # which also tells which secret is denied.
                return [self._secret_single(i, None, None) for i in ids]
            if status != 200:
                for i in ids:
                    self._secrets[(i, None, None)] = ResolveFailure(_describe_error(status, body))
                return []
            decoded = json.loads(body)
            for error in decoded.get("Errors") or []:
                code = str(error.get("ErrorCode") or "error")
                reason = "not found" if code == "ResourceNotFoundException" else "failed"
                if code == "AccessDeniedException":
                    reason = "access denied"
                self._secrets[(str(error.get("SecretId")), None, None)] = ResolveFailure(
                    f"{reason} ({code})"
                )
            for i in ids:
                matches = [v for v in decoded.get("SecretValues") or [] if i in _secret_forms(v)]
                if len(matches) == 1:
                    self._secrets[(i, None, None)] = matches[0]
            return []

        def on_failure(why: str) -> None:
            for i in ids:
                self._secrets[(i, None, None)] = ResolveFailure(why)

        return _Call("GET", target, None, on_answer, on_failure)

    def _parameter_single(self, name: str, version: int | None, decrypt: bool) -> _Call:
        import json

        key = (name, version, decrypt)
        target = f"/systemsmanager/parameters/get?name={_quote(name)}"
        if version is not None:
            target += f"&version={version}"
        target += f"&withDecryption={'true' if decrypt else 'false'}"

        def on_answer(status: int, body: bytes) -> list[_Call]:
            if status != 200:
                self._parameters[key] = ResolveFailure(_describe_error(status, body))
            else:
                self._parameters[key] = json.loads(body).get("Parameter") or {}
            return []

        def on_failure(why: str) -> None:
            self._parameters[key] = ResolveFailure(why)

        return _Call("GET", target, None, on_answer, on_failure)

    def _parameter_batch(self, names: list[str], decrypt: bool) -> _Call:
        import json

        target = "/systemsmanager/parameters/getbatch?" + "&".join(
            f"name={_quote(n)}" for n in names
        )
        target += f"&withDecryption={'true' if decrypt else 'false'}"

        def on_answer(status: int, body: bytes) -> list[_Call]:
            if status == 403:
                # ssm:GetParameters is a permission of its own; GetParameter may still be allowed.
                return [self._parameter_single(n, None, decrypt) for n in names]
            if status != 200:
                for n in names:
                    self._parameters[(n, None, decrypt)] = ResolveFailure(
                        _describe_error(status, body)
                    )
                return []
            decoded = json.loads(body)
            invalid = set(decoded.get("InvalidParameters") or [])
            for n in names:
                found = [
                    p for p in decoded.get("Parameters") or [] if n in (p.get("Name"), p.get("ARN"))
                ]
                if len(found) == 1:
                    self._parameters[(n, None, decrypt)] = found[0]
                elif n in invalid:
                    self._parameters[(n, None, decrypt)] = ResolveFailure(
                        "not found (ParameterNotFound)"
                    )
            return []

        def on_failure(why: str) -> None:
            for n in names:
                self._parameters[(n, None, decrypt)] = ResolveFailure(why)

        return _Call("GET", target, None, on_answer, on_failure)

    def _kms_call(self, ref: KmsReference, environ: Mapping[str, str]) -> _Call | None:
        import binascii
        import json

        key = (ref.variable, ref.context)
        ciphertext = environ.get(ref.variable)
        if ciphertext is None:
            self._kms[key] = ResolveFailure(f"the variable {ref.variable} is not set")
            return None
        if not _is_base64(ciphertext.strip()):
            self._kms[key] = ResolveFailure(f"the variable {ref.variable} does not hold base64")
            return None
        self._kms[key] = ResolveFailure("the extension did not answer for it")
        request: dict[str, object] = {"CiphertextBlob": ciphertext.strip()}
        if ref.context:
            request["EncryptionContext"] = dict(ref.context)

        def on_answer(status: int, body: bytes) -> list[_Call]:
            if status != 200:
                self._kms[key] = ResolveFailure(_describe_error(status, body))
            else:
                self._kms[key] = binascii.a2b_base64(json.loads(body)["Plaintext"])
            return []

        def on_failure(why: str) -> None:
            self._kms[key] = ResolveFailure(why)

        return _Call("POST", "/kms/decrypt", json.dumps(request).encode(), on_answer, on_failure)

    # -- running: every call of a round at once, one thread each

    def _run(self, calls: list[_Call]) -> list[_Call]:
        import _thread  # threading.py would cost an import of its own

        self.requests += len(calls)
        answers: list[tuple[int, bytes] | BaseException] = [TimeoutError()] * len(calls)
        done = [_thread.allocate_lock() for _ in calls]

        def run_one(index: int) -> None:
            call = calls[index]
            try:
                answers[index] = self._fetch(call.method, call.target, call.body)
            except BaseException as exc:  # reported per reference below, never raised
                answers[index] = exc
            finally:
                done[index].release()

        for index, lock in enumerate(done):
            lock.acquire()
            _thread.start_new_thread(run_one, (index,))
        import json  # noqa: F401  (the answers' parser, loaded while the requests are out)

        for lock in done:
            lock.acquire()
        follow_up: list[_Call] = []
        for call, answer in zip(calls, answers, strict=True):
            if isinstance(answer, BaseException):
                call.on_failure(_transport_reason(answer))
                continue
            try:
                follow_up += call.on_answer(*answer)
            except (ValueError, KeyError, TypeError, AttributeError):
                call.on_failure("the extension's answer could not be read")
        return follow_up

    # -- values

    def _value(self, ref: Reference) -> str | ResolveFailure:
        try:
            value = self._extract(ref)
        except ResolveFailure as exc:
            return exc
        if "\x00" in value:
            return ResolveFailure("the value holds a NUL character, which no variable can hold")
        return value

    def _extract(self, ref: Reference) -> str:
        if isinstance(ref, SecretReference):
            got = self._secrets[(ref.secret_id, ref.version_stage, ref.version_id)]
            if isinstance(got, ResolveFailure):
                raise got
            assert isinstance(got, dict)
            text = got.get("SecretString")
            if not isinstance(text, str):
                raise ResolveFailure("the secret has no SecretString (a binary secret)")
            return text if ref.json_key is None else _json_field(text, ref.json_key)
        if isinstance(ref, ParameterReference):
            got = self._parameters[(ref.name, ref.version, ref.secure)]
            if isinstance(got, ResolveFailure):
                raise got
            assert isinstance(got, dict)
            if got.get("Type") == "SecureString" and not ref.secure:
                raise ResolveFailure("a SecureString parameter: use {{resolve:ssm-secure:...}}")
            value = got.get("Value")
            if not isinstance(value, str):
                raise ResolveFailure("the extension's answer has no Value")
            return value
        got = self._kms[(ref.variable, ref.context)]
        if isinstance(got, ResolveFailure):
            raise got
        assert isinstance(got, bytes)
        try:
            return got.decode("utf-8")
        except UnicodeDecodeError:
            raise ResolveFailure("the plaintext is not UTF-8 text") from None


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _is_base64(text: str) -> bool:
    body = text.rstrip("=")
    return (
        bool(body)
        and len(text) % 4 == 0
        and len(text) - len(body) <= 2
        and all(c in _BASE64 for c in body)
    )


def _secret_forms(value: dict[str, object]) -> set[str]:
    """The ids a returned secret answers to: its name, its ARN and its ARN without the suffix."""
    forms = {str(value["Name"])} if value.get("Name") else set()
    arn = str(value.get("ARN") or "")
    if arn:
        forms.add(arn)
        tail = arn.rsplit("-", 1)
        if len(tail) == 2 and len(tail[1]) == 6 and tail[1].isalnum():
            forms.add(tail[0])
    return forms


def _json_field(text: str, key: str) -> str:
    import json

    try:
        decoded = json.loads(text)
    except ValueError:
        raise ResolveFailure("the SecretString is not JSON, so it has no key") from None
    if not isinstance(decoded, dict):
        raise ResolveFailure("the SecretString is not a JSON object, so it has no key")
    if key not in decoded:
        raise ResolveFailure(f"the secret's JSON has no key {key}")
    field = decoded[key]
    return field if isinstance(field, str) else json.dumps(field, separators=(",", ":"))


def _transport_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "the secretcache extension is not listening (is its layer attached?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from the extension within {TIMEOUT_VARIABLE}"
    return f"the request to the extension failed ({type(exc).__name__})"


# --------------------------------------------------------------------------- the wrapper


class Outcome:
    """What resolving the environment produced: new values and one line per failed variable."""

    __slots__ = ("failures", "references", "requests", "resolved")

    def __init__(
        self, resolved: dict[str, str], failures: list[str], references: int, requests: int
    ) -> None:
        self.resolved = resolved
        self.failures = failures
        self.references = references
        self.requests = requests


def resolve_environment(
    environ: Mapping[str, str],
    fetch: Callable[[str, str, bytes | None], tuple[int, bytes]] | None,
    missing_token: bool = False,
) -> Outcome:
    """Resolve every variable holding a reference; failures as ``VAR: reference: reason``."""
    templates, malformed = parse_environment(environ)
    failures: dict[str, str] = {m.variable: str(m) for m in malformed}
    references = {r for t in templates for r in t.references}
    values: dict[Reference, str | ResolveFailure]
    requests = 0
    if not references:
        values = {}
    elif missing_token or fetch is None:
        reason = ResolveFailure("AWS_SESSION_TOKEN is not set (the extension's token)")
        values = dict.fromkeys(references, reason)
    else:
        resolver = Resolver(fetch)
        values = resolver.resolve(references, environ)
        requests = resolver.requests
    resolved: dict[str, str] = {}
    for template in templates:
        failed = _first_failure(template, values)
        if failed is None:
            resolved[template.variable] = template.render(values)  # type: ignore[arg-type]
        else:
            written, why = failed
            failures[template.variable] = f"{template.variable}: {written}: {why}"
    return Outcome(resolved, [failures[k] for k in sorted(failures)], len(references), requests)


def _first_failure(
    template: Template, values: Mapping[Reference, str | ResolveFailure]
) -> tuple[str, ResolveFailure] | None:
    """The first reference that failed, as written in the value, and why."""
    for ref, written in zip(template.references, template.sources, strict=True):
        value = values[ref]
        if isinstance(value, ResolveFailure):
            return written, value
    return None


def report_init_error(runtime_api: str | None, message: str) -> None:
    """Tell Lambda why INIT failed (POST /runtime/init/error), as a runtime would; best effort."""
    if not runtime_api:
        return
    import json

    host, _, port = runtime_api.rpartition(":")
    body = json.dumps({"errorMessage": message, "errorType": ERROR_TYPE, "stackTrace": []})
    try:
        http_call(
            (host, int(port)),
            "POST",
            "/2018-06-01/runtime/init/error",
            {"Lambda-Runtime-Function-Error-Type": ERROR_TYPE},
            body.encode(),
            time.monotonic() + 2.0,
        )
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"secretcache: could not report the init error ({type(exc).__name__})\n")


def initial_environment(path: str = "/proc/self/environ") -> dict[bytes, bytes]:
    """The environment this process was started with, as the launcher passed it on.

    Not ``os.environ``: the interpreter may have added to it before any of our code ran (PEP 538
    sets ``LC_CTYPE=C.UTF-8`` when the locale is C or missing), and that must not reach the
    runtime. The kernel keeps the block ``execve`` received, which ``setenv`` never rewrites.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environb)
    env: dict[bytes, bytes] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name and name not in env:  # the first of duplicates, as getenv() reads
            env[name] = value
    return env


def _exec_runtime(
    argv: list[str], environb: dict[bytes, bytes], resolved: Mapping[str, str]
) -> int:
    for name, value in resolved.items():
        environb[os.fsencode(name)] = value.encode("utf-8")
    try:
        # The runtime's own command line, as Lambda gave it to the wrapper: nothing to quote.
        os.execvpe(argv[0], argv, environb)  # noqa: S606
    except OSError as exc:
        sys.stderr.write(f"secretcache: cannot exec the runtime {argv[0]}: {exc.strerror}\n")
    return 127


def main(argv: list[str]) -> int:
    """``--exec-wrapper [--] RUNTIME ARG...``: resolve, then exec; returns only on failure."""
    started = time.monotonic()
    environb = initial_environment()
    env = {os.fsdecode(k): os.fsdecode(v) for k, v in environb.items()}
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write("secretcache: the exec wrapper needs the runtime's command line\n")
        return 2
    if not any(has_reference(v) for v in env.values()):
        return _exec_runtime(argv, environb, {})
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        message = f"secretcache: {exc}"
        sys.stderr.write(message + "\n")
        report_init_error(env.get("AWS_LAMBDA_RUNTIME_API"), message)
        return 1
    deadline = started + settings.timeout
    headers = {TOKEN_HEADER: settings.token or ""}

    def fetch(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        return http_call(("127.0.0.1", settings.port), method, target, headers, body, deadline)

    outcome = resolve_environment(env, fetch, missing_token=settings.token is None)
    from .log import log

    log.set_level(settings.log_level)
    if settings.token:
        log.never_print(settings.token)
    if outcome.failures and not settings.leave_unresolved:
        for line in outcome.failures:
            sys.stderr.write(f"secretcache: cannot resolve {line}\n")
        sys.stderr.flush()
        first = f"secretcache: cannot resolve {outcome.failures[0]}"
        more = len(outcome.failures) - 1
        report_init_error(
            settings.runtime_api, first + (f" (and {more} more variables)" if more else "")
        )
        return 1
    for line in outcome.failures:
        sys.stderr.write(f"secretcache: left unresolved ({ON_ERROR_VARIABLE}=leave): {line}\n")
    log.info(
        "env.resolved",
        variables=len(outcome.resolved),
        unresolved=len(outcome.failures),
        references=outcome.references,
        requests=outcome.requests,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    sys.stdout.flush()
    sys.stderr.flush()
    return _exec_runtime(argv, environb, outcome.resolved)
