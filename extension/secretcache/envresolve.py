"""Resolving references: from a set of parsed references to values, through the extension.

All at once: one batch request per service and flag, single reads only where a batch cannot say
it (a version), one decrypt per KMS reference, each on its own socket in its own thread, so the
whole costs one round trip (plus one more if a batch is denied as a whole and is asked again item
by item). Every failure is a reason that names no value.
"""

from __future__ import annotations

from .envrefs import (
    KmsReference,
    ParameterReference,
    Reference,
    SecretReference,
    Template,
    parse_environment,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

BATCH_LIMIT = 100  # names or ids per batch request, the extension's limit
TIMEOUT_VARIABLE = "SECRETCACHE_ENV_TIMEOUT_MILLIS"


class ResolveFailure(Exception):
    """Why one reference could not be resolved; the text never holds a value."""


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
            try:
                _thread.start_new_thread(run_one, (index,))
            except RuntimeError:  # no thread to be had (a tight memory limit): ask in this one
                run_one(index)
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
